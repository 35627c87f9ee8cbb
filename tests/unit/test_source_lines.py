"""SourceLines: the inspector reads the target's source files itself, carefully."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import List, Optional

from cpinspect.sources.source_lines import (
    MAX_FILE_BYTES,
    RETRY_AFTER,
    Credentials,
    SourceLines,
    process_credentials,
)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_reads_a_line_by_number(tmp_path: Path) -> None:
    # GIVEN a source file
    name = write(tmp_path / "app.py", "import time\n\ndef slow():\n    time.sleep(60)\n")
    lines = SourceLines(None)
    # THEN lines come 1-based, without their line ending
    assert lines.line(name, 4) == "    time.sleep(60)"
    assert lines.line(name, 1) == "import time"
    # AND numbers outside the file give None
    assert lines.line(name, 0) is None
    assert lines.line(name, 99) is None


def test_line_numbers_match_pythons_even_with_form_feeds_and_crlf(tmp_path: Path) -> None:
    # GIVEN a file with CRLF endings and a form feed (str.splitlines would split there too)
    path = tmp_path / "ff.py"
    path.write_bytes(b"a = 1\r\n\x0c\r\nb = 2\rc = 3\n")
    lines = SourceLines(None)
    # THEN lines are counted as Python counts them
    assert lines.line(str(path), 2) == "\x0c"
    assert lines.line(str(path), 3) == "b = 2"
    assert lines.line(str(path), 4) == "c = 3"


def test_undecodable_bytes_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b"name = '\xe9t\xe9'\n")
    assert SourceLines(None).line(str(path), 1) == "name = '\ufffdt\ufffd'"


def test_a_missing_file_gives_none(tmp_path: Path) -> None:
    lines = SourceLines(None)
    assert lines.line(str(tmp_path / "gone.py"), 1) is None
    assert lines.line("<frozen importlib._bootstrap>", 1) is None
    assert lines.line("", 1) is None


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    # GIVEN a symlink the target could have planted, pointing at a file it may not read
    secret = write(tmp_path / "secret.txt", "root-only secret\n")
    link = tmp_path / "innocent.py"
    link.symlink_to(secret)
    # THEN the inspector (maybe root) does not follow it
    assert SourceLines(None).line(str(link), 1) is None
    assert SourceLines(None).line(secret, 1) == "root-only secret"


def test_non_regular_files_are_refused_without_blocking(tmp_path: Path) -> None:
    # GIVEN a FIFO where a source file should be (opening it for reading would block forever)
    fifo = tmp_path / "app.py"
    os.mkfifo(fifo)
    result: List[Optional[str]] = ["unset"]

    def read() -> None:
        result[0] = SourceLines(None).line(str(fifo), 1)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=5)
    # THEN it returns at once with None
    assert not worker.is_alive()
    assert result[0] is None
    # AND so does a directory
    assert SourceLines(None).line(str(tmp_path), 1) is None


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "generated.py"
    with big.open("wb") as handle:
        handle.write(b"x = 1\n")
        handle.truncate(MAX_FILE_BYTES + 1)
    assert SourceLines(None).line(str(big), 1) is None


def test_each_file_is_read_once_and_cached(tmp_path: Path) -> None:
    # GIVEN a file read once
    name = write(tmp_path / "app.py", "one\ntwo\n")
    lines = SourceLines(None)
    assert lines.line(name, 1) == "one"
    # WHEN it is asked for again, even after it changed on disk
    Path(name).write_text("changed\n")
    # THEN the cached text answers and the disk is not read again
    assert lines.line(name, 2) == "two"
    assert lines.reads == 1
    # AND a failure is cached too (a bad path is not retried on every refresh)
    missing = str(tmp_path / "missing.py")
    assert lines.line(missing, 1) is None
    assert lines.line(missing, 1) is None
    assert lines.reads == 2


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    # GIVEN a cache of two files
    lines = SourceLines(None, max_files=2)
    a, b, c = (write(tmp_path / f"{n}.py", f"{n}\n") for n in "abc")
    lines.line(a, 1)
    lines.line(b, 1)
    lines.line(a, 1)  # a is now the most recently used
    # WHEN a third file is read
    lines.line(c, 1)
    # THEN the least recently used (b) was dropped and must be read again; a was kept
    reads = lines.reads
    lines.line(a, 1)
    assert lines.reads == reads
    lines.line(b, 1)
    assert lines.reads == reads + 1


def test_the_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    lines = SourceLines(None, max_bytes=100)
    first = write(tmp_path / "first.py", "x" * 80 + "\n")
    second = write(tmp_path / "second.py", "y" * 80 + "\n")
    lines.line(first, 1)
    lines.line(second, 1)
    reads = lines.reads
    lines.line(first, 1)
    assert lines.reads == reads + 1


def test_reads_through_proc_pid_root(tmp_path: Path) -> None:
    # GIVEN this process as the "target" (its /proc/<pid>/root is our own root)
    name = write(tmp_path / "app.py", "hello\n")
    lines = SourceLines(os.getpid())
    # THEN absolute paths are read through /proc/<pid>/root
    assert lines.path_for(name) == f"/proc/{os.getpid()}/root{name}"
    assert lines.line(name, 1) == "hello"
    # AND relative paths cannot be resolved for another process
    assert lines.path_for("app.py") is None
    assert lines.line("app.py", 1) is None


def test_concurrent_readers_get_consistent_answers(tmp_path: Path) -> None:
    # GIVEN several files and threads reading them all at once
    names = [write(tmp_path / f"m{i}.py", f"line {i}\n") for i in range(20)]
    lines = SourceLines(None, max_files=5)
    errors: List[str] = []

    def read() -> None:
        for _ in range(20):
            for i, name in enumerate(names):
                if lines.line(name, 1) != f"line {i}":
                    errors.append(name)

    workers = [threading.Thread(target=read) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    # THEN every answer was right and the cache stayed within its bound
    assert errors == []
    assert len(lines._cache) <= 5


def fake_stat(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 10, 0, 0, 0))


def test_only_files_the_target_could_read_are_shown() -> None:
    # GIVEN a target running as uid 1000 in groups 1000 and 27
    target = Credentials(uid=1000, gids=frozenset({1000, 27}))
    # THEN mode bits decide, as the kernel would for that process
    assert target.can_read(fake_stat(1000, 0, 0o600))
    assert not target.can_read(fake_stat(1000, 0, 0o060))  # the owner class decides for owners
    assert target.can_read(fake_stat(0, 27, 0o640))
    assert not target.can_read(fake_stat(0, 0, 0o640))  # e.g. /etc/shadow named in a frame
    assert target.can_read(fake_stat(0, 0, 0o644))
    # AND a root target may read anything
    assert Credentials(uid=0, gids=frozenset()).can_read(fake_stat(5, 5, 0o000))


def test_credentials_come_from_proc_status() -> None:
    creds = process_credentials(os.getpid())
    assert creds is not None
    assert creds.uid == os.getuid()
    assert os.getgid() in creds.gids
    assert process_credentials(2**22 + 12345) is None  # no such process: show nothing


def test_without_a_pid_root_shows_world_readable_files_only(tmp_path: Path) -> None:
    # GIVEN a private file and a world-readable one, and no target pid (--socket)
    private = write(tmp_path / "private.py", "secret = 1\n")
    os.chmod(private, 0o600)
    public = write(tmp_path / "public.py", "x = 1\n")
    os.chmod(public, 0o644)
    lines = SourceLines(None)
    # THEN the public one shows; the private one only when the OS lets a non-root inspector
    # read it itself (as root nothing says the target could)
    assert lines.line(public, 1) == "x = 1"
    expected = None if os.geteuid() == 0 else "secret = 1"
    assert lines.line(private, 1) == expected


def test_a_failed_read_is_retried_after_a_while(tmp_path: Path) -> None:
    # GIVEN a file missing at first (a deploy under way) and a clock the test moves
    now = [100.0]
    lines = SourceLines(None, clock=lambda: now[0])
    name = str(tmp_path / "late.py")
    assert lines.line(name, 1) is None
    write(tmp_path / "late.py", "arrived\n")
    # WHEN asked again soon THEN the cached failure answers
    assert lines.line(name, 1) is None
    # WHEN asked after RETRY_AFTER THEN the file is read again
    now[0] += RETRY_AFTER + 1
    assert lines.line(name, 1) == "arrived"


def test_retarget_reads_the_new_process_and_forgets_the_old(tmp_path: Path) -> None:
    name = write(tmp_path / "app.py", "v1\n")
    lines = SourceLines(2**22 + 12345)  # a pid that does not exist
    assert lines.line(name, 1) is None
    lines.retarget(os.getpid())
    assert lines.pid == os.getpid()
    assert lines.line(name, 1) == "v1"
