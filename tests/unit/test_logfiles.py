"""Following the target's log files from outside: CherryPy's formats parsed into records (a
traceback is one record), rename and copy-truncate rotation, starting near the end of a big
file, and buffer/file duplicates shown once. Real files in a temporary directory."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List

from cpinspect.model import LogOrigin, LogRecord
from cpinspect.sources.logfiles import (
    Deduper,
    FileTail,
    access_record,
    files_from_fds,
    parse_error_lines,
    parse_time,
    target_path,
)

STAMP = "[01/Dec/2026:09:40:02]"
TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/srv/shop/app.py", line 12, in boom',
    "    raise ValueError('no')",
    "ValueError: no",
]


def stamp(second: int) -> str:
    return "[01/Dec/2026:09:40:%02d]" % second


def write(path: Path, *lines: str) -> None:
    with open(path, "a") as f:
        for line in lines:
            f.write(line + "\n")


def read_all(tail: FileTail) -> List[LogRecord]:
    """Two reads: the second (with nothing new) completes the last error record."""
    records, _ = tail.read()
    more, _ = tail.read()
    return records + more


def test_error_lines_with_a_traceback_are_one_record() -> None:
    # GIVEN an engine line, an HTTP error with its traceback, and a continuation-only line
    lines = [
        "  File 'orphan.py' (a traceback that began before we started reading)",
        f"{STAMP} ENGINE Bus STARTED",
        f"{STAMP} HTTP ",
        *TRACEBACK,
        f"{STAMP} ENGINE Serving on http://127.0.0.1:8080",
    ]
    # WHEN parsed
    records = parse_error_lines(lines)
    # THEN three records: the orphan line dropped, the traceback kept whole under its header
    assert [r.message for r in records] == [
        f"{STAMP} ENGINE Bus STARTED",
        f"{STAMP} HTTP ",
        f"{STAMP} ENGINE Serving on http://127.0.0.1:8080",
    ]
    assert records[1].traceback == "\n".join(TRACEBACK)
    assert (records[1].level, records[1].levelno) == ("ERROR", 40)
    assert records[0].traceback is None and records[0].level == "INFO"
    assert all(r.origin is LogOrigin.ERROR_FILE for r in records)
    # AND the time is the bracketed date, local time, to the second
    assert time.localtime(records[0].time)[:6] == (2026, 12, 1, 9, 40, 2)


def test_access_lines_give_status_size_and_request() -> None:
    line = f'10.0.0.7 - - {STAMP} "GET /boom?id=3 HTTP/1.1" 500 1701 "" "curl/8"'
    record = access_record(line)
    assert (record.status, record.size, record.access) == (500, 1701, True)
    assert record.request is not None
    assert (record.request.method, record.request.path, record.request.query) == (
        "GET",
        "/boom",
        "id=3",
    )
    assert record.request.client == "10.0.0.7"
    assert record.time == parse_time("01/Dec/2026:09:40:02")
    # A 304 without a body writes "-" as the size; another format stays whole as the message
    assert access_record(f'h - - {STAMP} "GET / HTTP/1.1" 304 - "" ""').size is None
    odd = access_record("not an access line")
    assert odd.message == "not an access line" and odd.status is None


def test_following_starts_near_the_end_of_a_big_file(tmp_path: Path) -> None:
    # GIVEN an error file of ~1 MiB
    path = tmp_path / "error.log"
    write(path, *(f"{stamp(i % 60)} ENGINE line {i} " + "x" * 80 for i in range(10_000)))
    # WHEN followed with 8 KiB of history
    tail = FileTail("error", str(path), str(path), start_back=8192)
    records = read_all(tail)
    # THEN only the last records are read, each one whole (the partial first line skipped)
    assert 0 < len(records) <= 8192 // 90 + 1
    assert records[-1].message.startswith(f"{stamp(9999 % 60)} ENGINE line 9999 ")
    assert all(r.message.endswith("x" * 80) for r in records)


def test_a_record_is_complete_when_the_next_header_or_a_quiet_read_comes(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    path.write_text("")
    tail = FileTail("error", str(path), str(path))
    assert tail.read()[0] == []
    # GIVEN a header and half of its traceback written
    write(path, f"{stamp(1)} HTTP ", *TRACEBACK[:2])
    # WHEN read: the record is held (more lines may follow)
    assert tail.read()[0] == []
    # AND the rest of the traceback arrives, then a quiet read
    write(path, *TRACEBACK[2:])
    assert tail.read()[0] == []
    records, _ = tail.read()
    # THEN one record with the whole traceback
    assert len(records) == 1 and records[0].traceback == "\n".join(TRACEBACK)


def test_rename_rotation_drains_the_old_file_and_follows_the_new(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    tail = FileTail("access", str(path), str(path))
    line = '127.0.0.1 - - %s "GET /%s HTTP/1.1" 200 5 "" ""'
    write(path, line % (stamp(1), "a"))
    assert [r.request.path for r in tail.read()[0] if r.request] == ["/a"]
    # GIVEN the process writing on (through its open file) while logrotate renames it away
    with open(path, "a") as writer:
        writer.write(line % (stamp(2), "b") + "\n")
        writer.flush()
        os.rename(path, tmp_path / "access.log.1")
        writer.write(line % (stamp(3), "c") + "\n")  # still the old inode
        writer.flush()
        write(path, line % (stamp(4), "d"))  # a new file at the path (the process reopened)
        # WHEN read
        records, _ = tail.read()
        # THEN nothing lost: the old file's tail, then the new file from its start
        assert [r.request.path for r in records if r.request] == ["/b", "/c", "/d"]
        assert tail.rotations == 1 and "renamed" in tail.status.note
        # AND what is still written to the renamed file is read too
        writer.write(line % (stamp(5), "e") + "\n")
    assert [r.request.path for r in tail.read()[0] if r.request] == ["/e"]


def test_copy_truncate_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    write(path, *(f"{stamp(i)} ENGINE before {i}" for i in range(20)))
    tail = FileTail("error", str(path), str(path))
    assert len(read_all(tail)) == 20
    # GIVEN logrotate's copytruncate: same inode, emptied, then a new line
    with open(path, "r+") as f:
        f.truncate(0)
    write(path, f"{stamp(30)} ENGINE after")
    # WHEN read
    records = read_all(tail)
    # THEN the new line is read (from byte 0), and the rotation said
    assert [r.message for r in records] == [f"{stamp(30)} ENGINE after"]
    assert tail.rotations == 1 and "truncated" in tail.status.note


def test_truncated_and_rewritten_past_the_offset_is_noticed_by_its_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "error.log"
    write(path, f"{stamp(1)} ENGINE old")
    tail = FileTail("error", str(path), str(path))
    assert len(read_all(tail)) == 1
    # GIVEN the file truncated and more written than was there before, before the next read
    with open(path, "r+") as f:
        f.truncate(0)
    write(path, *(f"{stamp(2)} ENGINE new {i}" for i in range(5)))
    # THEN the new records are read from the start, none skipped
    records = read_all(tail)
    assert [r.message for r in records] == [f"{stamp(2)} ENGINE new {i}" for i in range(5)]


def test_a_symlinked_log_file_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.log"
    write(real, f"{stamp(1)} ENGINE secret")
    link = tmp_path / "error.log"
    link.symlink_to(real)
    tail = FileTail("error", str(link), str(link))
    assert read_all(tail) == []
    assert "symlink" in tail.status.note


def test_records_in_buffer_and_file_are_shown_once() -> None:
    # GIVEN the agent's record and the same text read from the error file
    buffered = LogRecord(1, 1.0, "ERROR", "cherrypy.error.1", f"{STAMP} HTTP ", "tb", levelno=40)
    from_file = parse_error_lines([f"{STAMP} HTTP ", *TRACEBACK])[0]
    again = parse_error_lines([f"{STAMP} HTTP ", *TRACEBACK])[0]
    other = parse_error_lines([f"{stamp(3)} HTTP ", *TRACEBACK])[0]
    dedupe = Deduper()
    dedupe.seen(buffered)
    # THEN the file's copy is dropped once; a second identical line (a second error in the
    # same second that the buffer did not have) and another second's are kept
    assert dedupe.duplicate(from_file)
    assert not dedupe.duplicate(again)
    assert not dedupe.duplicate(other)


def test_log_files_of_a_process_are_found_among_its_fds(tmp_path: Path) -> None:
    # GIVEN a process with an error and an access log open for appending, and a log read-only
    # (a child of its own: this test process's fds are the test runner's, its output may well
    # be a .log file open for writing)
    import subprocess
    import sys

    (tmp_path / "aaa-other.log").write_text("")
    error, access, other = (
        tmp_path / n for n in ("site-error.log", "site-access.log", "aaa-other.log")
    )
    code = (
        "import sys; files = [open(sys.argv[1], 'a'), open(sys.argv[2], 'a'), open(sys.argv[3])]"
        "; print('ready', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(error), str(access), str(other)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # THEN both are found by their fds, the read-only one ignored
        assert files_from_fds(child.pid) == (str(error), str(access))
    finally:
        child.kill()
        child.wait(10)
    # AND the target's paths are read through its root and cwd
    assert target_path(42, "/var/log/e.log") == "/proc/42/root/var/log/e.log"
    assert target_path(42, "logs/e.log") == "/proc/42/cwd/logs/e.log"


def test_a_file_read_that_blocks_never_holds_up_the_poll(tmp_path: Path) -> None:
    # GIVEN a followed file whose read blocks (a hung NFS mount, staged: a real one cannot be
    # had here) until released
    import threading

    from cpinspect.sources.logfiles import LogFiles

    path = tmp_path / "error.log"
    write(path, f"{stamp(1)} ENGINE one")
    files = LogFiles(None, timeout=0.2)
    files.configure(str(path), None)
    release = threading.Event()
    tail = files.tails["error"]
    real_read = tail.read

    def blocking_read() -> Any:
        release.wait(10)
        return real_read()

    tail.read = blocking_read  # type: ignore[method-assign]
    try:
        # WHEN read: it answers at its time limit with nothing, and says why
        assert files.read() == ([], [])
        assert "hung mount" in files.note
        # AND a later poll does not start a second read behind the stuck one
        assert files.read() == ([], [])
        # WHEN the read completes THEN a later poll collects what it read
        release.set()
        tail.read = real_read  # type: ignore[method-assign]
        records: List[LogRecord] = []
        for _ in range(50):
            got, _ = files.read()
            records += got
            if records:
                break
        assert [r.message for r in records] == [f"{stamp(1)} ENGINE one"]
        assert files.note == ""
    finally:
        release.set()
        files.close()
