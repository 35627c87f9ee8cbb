"""`cpinspect snapshot` and `cpinspect open` as a user runs them: real targets, the CLI as a
subprocess (stdin closed, no terminal), the files it writes read back."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import httpx
import pytest

from cpinspect.analysis import analyze_series
from cpinspect.errors import (
    NoSuchProcess,
    NotPython,
    SnapshotFileError,
    SnapshotWriteError,
    TargetGone,
    UsageError,
)
from cpinspect.formatting import RULE
from cpinspect.model import SourceKind
from cpinspect.snapshots import read_snapshots
from tests.conftest import ROOT, TargetProcess, start_target, wait_for
from tests.helpers import BackgroundRequests, RequestLoop, agent_get, run_cli

WORKERS = 4


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -m cpinspect ARGS`` with stdin closed and stdout/stderr piped: no terminal."""
    return run_cli(*args, timeout=timeout, stdin=subprocess.DEVNULL)


def written(result: subprocess.CompletedProcess) -> Tuple[Path, Path]:
    """The .json and .txt paths a successful ``snapshot`` printed, one a line."""
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    json_path, txt_path = Path(lines[0]), Path(lines[1])
    assert json_path.suffix == ".json" and txt_path.suffix == ".txt", lines
    assert json_path.stem == txt_path.stem
    return json_path, txt_path


def busy_on(target: TargetProcess, path: str, count: int) -> Callable[[], List[dict]]:
    """A predicate: ``count`` workers inside the handler of ``path`` (its frame on the stack)."""

    def check() -> List[dict]:
        _, body = agent_get(target.socket_path(), "/v1/threads")
        held = [
            t
            for t in body["threads"]
            if t["busy"]
            and (t.get("request") or {}).get("path") == path
            and any(f["app"] and f["function"] == path.strip("/") for f in t["stack"])
        ]
        if len(held) != count:
            # Said, not just falsy: a timed-out wait then reports what the agent last saw.
            busy = [
                "%s %s [%s]"
                % (
                    t["name"],
                    (t.get("request") or {}).get("path"),
                    ",".join(f["function"] for f in t["stack"] if f["app"]),
                )
                for t in body["threads"]
                if t["busy"]
            ]
            raise AssertionError(
                "%d of %d in %s; %d threads, busy: %s"
                % (len(held), count, path, len(body["threads"]), busy or "none")
            )
        return held

    return check


def release(target: TargetProcess, blocked: BackgroundRequests) -> None:
    """Let the held workers go (one worker is always left free for this) and wait for them."""
    httpx.get("http://127.0.0.1:%d/release" % target.port, timeout=10)
    for t in blocked.threads:
        t.join(15)


def section_lines(report: str, title_start: str) -> List[str]:
    """The lines of the report's section whose heading starts with ``title_start``, up to the
    next heading."""
    lines = report.splitlines()
    head = RULE * 2 + " " + title_start
    starts = [i for i, line in enumerate(lines) if line.startswith(head)]
    assert len(starts) == 1, "no single section %r in:\n%s" % (title_start, report)
    body = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith(RULE * 2):
            break
        body.append(line)
    return body


# --- 1. a series on a real app --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_series_names_the_blocked_requests_stuck_and_not_the_fast_ones(spawn_target, tmp_path):
    # GIVEN 4 workers: 2 held in /block, the others serving /fast to a client in a loop
    target = spawn_target("--threads", str(WORKERS))
    blocked = BackgroundRequests(target.port, "/block?seconds=60&n=1", 2)
    loop = None
    try:
        held = wait_for(busy_on(target, "/block", 2), timeout=15, what="2 workers in /block")
        held_idents = {t["ident"] for t in held}
        loop = RequestLoop(target.port, "/fast", max_requests=20000, max_seconds=40)
        wait_for(lambda: loop.served >= 5, timeout=10, what="the /fast loop answered")
        served_before = loop.served
        out_dir = tmp_path / "out"
        out_dir.mkdir()

        # WHEN a series of 4 snapshots is taken, one every 0.5 s
        result = cli(
            "snapshot", str(target.pid), "--count", "4", "--every", "0.5", "-o", str(out_dir)
        )

        # THEN it succeeds, says each step on stderr and writes one .json and one .txt
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        for i in range(1, 5):
            assert "snapshot %d/4: " % i in result.stderr, result.stderr
        json_path, txt_path = written(result)
        assert sorted(p.name for p in out_dir.iterdir()) == sorted([json_path.name, txt_path.name])
        # AND the fast requests were being served while it ran
        assert loop.served > served_before
        assert not loop.failures, loop.failures[:3]

        # AND the analysis of the file finds the two held requests stuck, and nothing else
        snapshots = read_snapshots(json_path)
        assert len(snapshots) == 4
        series = analyze_series(snapshots)
        report = txt_path.read_text(encoding="utf-8")
        assert series.snapshots == 4
        assert {s.thread.ident for s in series.stuck} == held_idents, report
        assert [s.request.path for s in series.stuck] == ["/block", "/block"]
        assert not [s for s in series.stuck if s.request.path == "/fast"]

        # AND the report names them under "Stuck throughout", with no /fast there
        stuck = section_lines(report, "Stuck throughout: the same request in all 4 snapshots (2)")
        assert sum("GET /block?seconds=60&n=1" in line for line in stuck) == 2, stuck
        assert not [line for line in stuck if "/fast" in line], stuck
    finally:
        if loop is not None:
            loop.stop()
        release(target, blocked)
    assert blocked.results == [200, 200]


# --- 2. dump --json opens ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dump_json_output_opens_as_a_snapshot(spawn_target, tmp_path):
    # GIVEN an app with one worker held in /block
    target = spawn_target("--threads", str(WORKERS))
    blocked = BackgroundRequests(target.port, "/block?seconds=60", 1)
    try:
        wait_for(busy_on(target, "/block", 1), timeout=15, what="a worker in /block")

        # WHEN `dump --json` is saved to a file and that file is opened
        dumped = cli("dump", "--json", str(target.pid))
        assert dumped.returncode == 0, dumped.stderr
        saved = tmp_path / "dump.json"
        saved.write_text(dumped.stdout, encoding="utf-8")
        text = cli("open", "--text", str(saved))
        no_tty = cli("open", str(saved))

        # THEN the report shows the threads and the held request
        assert text.returncode == 0, text.stderr
        assert text.stderr == ""
        assert text.stdout.startswith("cpinspect report: process %d" % target.pid)
        assert "CP Server Thread-" in text.stdout
        assert "GET /block?seconds=60" in text.stdout
        assert "Root.block" in text.stdout
        # AND without a terminal, `open` prints the same report instead of starting the UI
        assert no_tty.returncode == 0, no_tty.stderr
        assert no_tty.stdout.splitlines()[0] == text.stdout.splitlines()[0]
        assert "GET /block?seconds=60" in no_tty.stdout
        # AND read_snapshots reads it: one snapshot, the held worker on /block
        [snapshot] = read_snapshots(saved)
        assert snapshot.threads is not None
        busy = [t for t in snapshot.threads.workers if t.busy]
        assert [t.request.path for t in busy if t.request] == ["/block"]
    finally:
        release(target, blocked)


# --- 3. secrets of a real process -------------------------------------------------------------

TOKEN = "REALSECRET123"
COOKIE = "COOKIE-REAL-456"
PASSWORD = "hunter2-REAL"  # the `password` local of Root.hold_secret in tests/apps/target.py


@pytest.mark.timeout(60)
def test_snapshot_files_hide_secrets_unless_revealed(spawn_target, tmp_path):
    # GIVEN a request in flight with a secret query value and a Cookie, its handler holding a
    # local named `password`
    target = spawn_target("--threads", str(WORKERS))
    blocked = BackgroundRequests(
        target.port,
        "/hold_secret?token=%s&user=bob" % TOKEN,
        1,
        headers={"Cookie": "session_id=%s" % COOKIE},
    )
    try:
        # In Event.wait under the handler: `password` is assigned by then.
        def waiting() -> List[dict]:
            held = busy_on(target, "/hold_secret", 1)()
            return held if held and held[0]["stack"][0]["function"] == "wait" else []

        wait_for(waiting, timeout=15, what="a worker waiting in /hold_secret")
        hidden_dir, shown_dir = tmp_path / "hidden", tmp_path / "shown"
        hidden_dir.mkdir()
        shown_dir.mkdir()

        # WHEN a snapshot with locals is taken, then another with --reveal
        hidden = cli("snapshot", str(target.pid), "--locals", "-o", str(hidden_dir))
        shown = cli("snapshot", str(target.pid), "--locals", "--reveal", "-o", str(shown_dir))
        assert hidden.returncode == 0, hidden.stderr
        assert shown.returncode == 0, shown.stderr
        hidden_files, shown_files = written(hidden), written(shown)

        # THEN every file is private (0600)
        for path in (*hidden_files, *shown_files):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # AND without --reveal no secret is in the bytes on disk
        for path in hidden_files:
            raw = path.read_bytes()
            for secret in (TOKEN, COOKIE, PASSWORD):
                assert secret.encode() not in raw, "%s in %s" % (secret, path)
        # AND the locals were captured all the same, the password's value hidden (else the
        # check above would prove nothing)
        [snap] = read_snapshots(hidden_files[0])
        assert snap.revealed is False
        assert _local(snap, "hold_secret", "password") == "***"
        assert _request_query(snap, "/hold_secret") == "token=***&user=bob"

        # AND with --reveal the local's value is there
        [snap] = read_snapshots(shown_files[0])
        assert snap.revealed is True
        assert _local(snap, "hold_secret", "password") == '"%s"' % PASSWORD
        assert PASSWORD.encode() in shown_files[0].read_bytes()
        # while the request's query stays redacted: the agent redacts it inside the target and
        # never sends the value, so --reveal has nothing to show there. (The raw query does
        # reach the file under --reveal through py-spy's locals — `query_string`, `params` —
        # which is what --reveal asks for.)
        assert _request_query(snap, "/hold_secret") == "token=***&user=bob"
    finally:
        release(target, blocked)


def _local(snapshot, function: str, name: str) -> str:
    values = [
        v.value
        for tl in snapshot.locals
        for fl in tl.frames
        if fl.frame.function == function
        for v in fl.variables
        if v.name == name
    ]
    assert len(values) == 1, "local %s of %s: %r" % (name, function, values)
    return values[0]


def _request_query(snapshot, path: str) -> str:
    assert snapshot.threads is not None
    [query] = [
        t.request.query
        for t in snapshot.threads.threads
        if t.request is not None and t.request.path == path
    ]
    return query


# --- 4. bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idle_target(tmp_path_factory) -> Iterator[Tuple[TargetProcess, Path]]:
    """One live target for the bad-input cases, and a real snapshot file of it."""
    tmp = tmp_path_factory.mktemp("bad-input")
    target = start_target(["--threads", "2"], tmp)
    try:
        result = cli("snapshot", str(target.pid), "-o", str(tmp))
        assert result.returncode == 0, result.stderr
        json_path, _ = written(result)
        yield target, json_path
    finally:
        target.stop()


def _case_files(work: Path, real: Path) -> Dict[str, Path]:
    data = real.read_bytes()
    files = {
        "missing": work / "no-such-file.json",
        "directory": work,
        "empty": work / "empty.json",
        "truncated": work / "half.json",
        "garbage": work / "garbage.json",
        "not-json": work / "text.json",
        "py-spy": work / "py-spy.json",
        "newer": work / "newer.json",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["garbage"].write_bytes(bytes(range(256)) * 8)
    files["not-json"].write_text("snapshot of pid 4121, see attached\n")
    files["py-spy"].write_text(
        json.dumps(
            [
                {
                    "pid": 4121,
                    "thread_id": 140000000000,
                    "thread_name": "CP Server Thread-1",
                    "os_thread_id": 4122,
                    "active": False,
                    "owns_gil": False,
                    "frames": [
                        {"name": "wait", "filename": "threading.py", "line": 327, "locals": None}
                    ],
                }
            ]
        )
    )
    doc = json.loads(data)
    doc["schema"] = 99
    files["newer"].write_text(json.dumps(doc))
    return files


OPEN_CASES = [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("empty", "is empty"),
    ("truncated", "is cut short"),
    ("garbage", "is not a cpinspect snapshot"),
    ("not-json", "is not JSON"),
    ("py-spy", "py-spy's dump --json"),
    ("newer", "newer cpinspect"),
]


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpinspect: "), lines[0]
    assert words in lines[0], lines[0]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [False, True], ids=["ui", "text"])
def test_open_refuses_bad_files_in_one_line(idle_target, tmp_path, text):
    # GIVEN files that are no snapshot cpinspect can read (built from a real one where it helps)
    _, real = idle_target
    files = _case_files(tmp_path, real)
    for case, words in OPEN_CASES:
        # WHEN each is opened
        args = ["open", "--text", str(files[case])] if text else ["open", str(files[case])]
        result = cli(*args)
        # THEN one line on stderr says what is wrong, with the snapshot-file exit code
        assert_one_line_error(result, SnapshotFileError.exit_code, words)
        assert str(files[case]) in result.stderr, (case, result.stderr)


@pytest.mark.timeout(60)
def test_snapshot_refuses_bad_arguments_in_one_line(idle_target, tmp_path):
    target, _ = idle_target
    pid = str(target.pid)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    cases = [
        (["--count", "0"], UsageError.exit_code, "--count takes 1 to"),
        (["--every", "0"], UsageError.exit_code, "--every takes at least"),
        (["-o", str(tmp_path / "missing")], SnapshotWriteError.exit_code, "does not exist"),
        (["-o", str(a_file)], SnapshotWriteError.exit_code, "is not a directory"),
    ]
    for extra, code, words in cases:
        # WHEN `snapshot` is given a bad argument
        result = cli("snapshot", pid, "-o", str(tmp_path), *extra)
        # THEN one line says so, with the usage or write-error code, and nothing is written
        assert_one_line_error(result, code, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.timeout(60)
def test_snapshot_refuses_a_pid_that_is_gone_or_not_python(tmp_path):
    # GIVEN a pid whose process has exited and been reaped, and a live `sleep`
    gone = subprocess.Popen(["true"])
    gone.wait()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # WHEN `snapshot` is pointed at each
        no_pid = cli("snapshot", str(gone.pid), "-o", str(tmp_path))
        not_python = cli("snapshot", str(sleeper.pid), "-o", str(tmp_path))
    finally:
        sleeper.kill()
        sleeper.wait()
    # THEN one line each, with the codes for "no such process" and "not Python"
    assert_one_line_error(no_pid, NoSuchProcess.exit_code, "no process with pid %d" % gone.pid)
    assert_one_line_error(not_python, NotPython.exit_code, "not a Python process")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_snapshot_checks_the_output_directory_before_the_series(idle_target, tmp_path):
    target, _ = idle_target
    # WHEN a series is asked for into a directory that does not exist
    result = cli(
        "snapshot", str(target.pid), "--count", "3", "--every", "0.5", "-o", str(tmp_path / "no")
    )
    # THEN it refuses at once, before taking anything: one line, the write-error code
    assert "snapshot 1/3" not in result.stderr, result.stderr
    assert_one_line_error(result, SnapshotWriteError.exit_code, "does not exist")


# --- 5. a target that dies mid-series --------------------------------------------------------


SERIES_OF_20 = ("--count", "20", "--every", "0.3", "-o")


def _series_until_target_dies(
    spawn_target, out_dir: Path
) -> Tuple[subprocess.CompletedProcess, int]:
    """Start a 20-snapshot series on a target with one held request, kill the target (SIGKILL)
    once "snapshot 2/20" is on stderr; returns the finished command and how many progress lines
    were on stderr when the kill was sent."""
    target = spawn_target("--threads", str(WORKERS))
    BackgroundRequests(target.port, "/block?seconds=60", 1)
    wait_for(busy_on(target, "/block", 1), timeout=15, what="a worker in /block")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cpinspect",
            "snapshot",
            str(target.pid),
            *SERIES_OF_20,
            str(out_dir),
        ],
        cwd=str(ROOT),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: List[str] = []
    out_chunks: List[str] = []
    readers = [
        threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True),
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
    ]
    for r in readers:
        r.start()
    try:
        wait_for(
            lambda: any(line.startswith("snapshot 2/20") for line in err_lines),
            timeout=20,
            what="'snapshot 2/20' on stderr",
        )
        taken_before_kill = sum(1 for line in list(err_lines) if line.startswith("snapshot "))
        target.proc.send_signal(signal.SIGKILL)
        target.proc.wait(10)
        proc.wait(30)  # the command must end by itself once the target is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for r in readers:
        r.join(10)
    done = subprocess.CompletedProcess(
        proc.args, proc.returncode, "".join(out_chunks), "".join(err_lines)
    )
    return done, taken_before_kill


@pytest.mark.timeout(60)
def test_a_target_dying_mid_series_loses_no_snapshot(spawn_target, tmp_path):
    # GIVEN a series of 20 snapshots running
    # WHEN the target is killed after the first two
    result, taken = _series_until_target_dies(spawn_target, tmp_path)

    # THEN the command ends by itself without a traceback, and the file it wrote holds at
    # least every snapshot reported taken before the kill
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    json_path, _ = written(result)
    snapshots = read_snapshots(json_path)
    assert len(snapshots) >= taken >= 2


@pytest.mark.timeout(60)
def test_a_target_dying_mid_series_stops_it_and_says_so(spawn_target, tmp_path):
    # GIVEN a series of 20 snapshots running
    # WHEN the target is killed after the first two
    result, taken = _series_until_target_dies(spawn_target, tmp_path)

    # THEN it stops there, keeps what it took and says so in one last line, with the
    # "target gone" exit code (the series asked for was not completed: like an interrupt,
    # not a success)
    assert result.returncode == TargetGone.exit_code, (result.returncode, result.stderr)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("cpinspect: ") and "exited" in last, result.stderr
    json_path, _ = written(result)
    snapshots = read_snapshots(json_path)
    assert taken <= len(snapshots) < 20
    assert "%d snapshot" % len(snapshots) in last, last
    # AND every snapshot in the file is a real reading: none is a copy of the one before
    assert all(s.threads is not None for s in snapshots)
    reads = [s.threads.taken_at for s in snapshots if s.threads is not None]
    assert len(set(reads)) == len(reads), reads


def test_snapshot_native_keeps_the_c_frames_and_leaves_the_target_running(idle_target, tmp_path):
    # GIVEN a live target
    target, _ = idle_target
    # WHEN a snapshot is taken with --native (py-spy stops the process for a moment)
    result = cli("snapshot", str(target.pid), "--native", "-o", str(tmp_path))
    # THEN the saved stacks carry native frames, joined to the agent's threads
    assert result.returncode == 0, result.stderr
    json_path, _ = written(result)
    [snapshot] = read_snapshots(json_path)
    assert snapshot.source is SourceKind.BOTH and snapshot.threads is not None
    assert any(f.native for t in snapshot.threads.threads for f in t.stack)
    # AND the target was left running, not stopped
    with open("/proc/%d/stat" % target.pid) as f:
        assert f.read().rsplit(")", 1)[1].split()[0] in ("S", "R")
