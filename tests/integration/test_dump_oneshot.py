"""``dump --json`` and ``snapshot`` build their output while py-spy still reads (issue 13).

The poll returns with the agent's answer; the output is built and encoded meanwhile; then
py-spy's GIL holder is joined and only what changed is built again. These tests make py-spy's
read end after the agent's answer for sure — the real py-spy, started by a wrapper that waits
a second first (at 1,000 threads py-spy's own read takes that long) — and check that the
holder still reaches the output, on a real target where one worker spins in pure Python (the
only runnable thread: it holds the GIL while py-spy reads).

One target for the module; the CLI runs in-process (``cli.main``) so that the session's py-spy
can be the wrapper.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import httpx
import pytest

import cpinspect.sources.open as open_module
from cpinspect.cli import build_parser, early, main
from cpinspect.errors import PySpyMissing
from cpinspect.model import SourceKind, ThreadInfo
from cpinspect.protocol import DocumentEncoder, snapshots_from_document
from cpinspect.snapshots import read_snapshots
from cpinspect.sources import early_info
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.open import open_session
from cpinspect.sources.pyspy import PySpySource, find_pyspy
from tests.conftest import TargetProcess, start_target, wait_for
from tests.helpers import BackgroundRequests, agent_get

DELAY = 1.0
"""Seconds the wrapper waits before py-spy starts reading."""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    """4 workers: one spinning in ``/spin``, one held in ``/block``."""
    try:
        find_pyspy()
    except PySpyMissing:
        pytest.skip("py-spy is not installed here")
    proc = start_target(["--threads", "4"], tmp_path_factory.mktemp("oneshot"))
    try:
        BackgroundRequests(proc.port, "/spin?seconds=90", 1)
        BackgroundRequests(proc.port, "/block?seconds=90", 1)

        def both_busy() -> bool:
            _, body = agent_get(proc.socket_path(), "/v1/threads")
            paths = {(t.get("request") or {}).get("path") for t in body["threads"]}
            return {"/spin", "/block"} <= paths

        wait_for(both_busy, timeout=30, what="one worker spinning and one blocked")
        yield proc
    finally:
        try:
            httpx.get("http://127.0.0.1:%d/release" % proc.port, timeout=10)
        finally:
            proc.stop()


@pytest.fixture
def slow_pyspy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's py-spy: the real one, started ``DELAY`` seconds late, its output kept in
    ``tmp_path/pyspy.*``. The agent's grace is long, so every poll waits for the agent's answer
    (what is tested is the join after it)."""
    wrapper = tmp_path / "py-spy"
    # Its output is also kept in a file per run, named by its start, so that a test can see
    # what py-spy itself saw.
    wrapper.write_text(
        '#!/bin/sh\nrun="%s/pyspy.$(date +%%s%%N)"\nsleep %s\n"%s" "$@" > "$run"\ncode=$?\n'
        'cat "$run"\nexit $code\n' % (tmp_path, DELAY, find_pyspy())
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(open_module, "find_pyspy", lambda: str(wrapper))
    monkeypatch.setenv("CPINSPECT_AGENT_GRACE", "30")
    return str(wrapper)


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """How many threads each ``DocumentEncoder.encode`` call was given, in order."""
    calls: List[int] = []
    real = DocumentEncoder.encode

    def counted(self: DocumentEncoder, snapshots):  # type: ignore[no-untyped-def]
        calls.append(sum(len(s.threads.threads) for s in snapshots if s.threads is not None))
        return real(self, snapshots)

    monkeypatch.setattr(DocumentEncoder, "encode", counted)
    return calls


ATTEMPTS = 5
"""Runs of a command until py-spy's own reading names a GIL holder (see ``pyspy_read``)."""


def pyspy_read(tmp_path: Path) -> Tuple[Optional[int], str]:
    """The GIL holder py-spy named in the command's read (the first the wrapper started, its
    output copied), if any; and what each of the command's runs of py-spy named, said for an
    assertion's message. The runs' files are removed for the next command.

    One read is one instant: when it falls in a hand-off of the GIL (the spinner dropped it for
    another thread that the kernel has not run yet: seen under load, 1 run in 8 with 4 busy
    loops beside the suite) py-spy names no holder, and rightly neither does the output; a read
    past py-spy's timeout on a loaded box is no reading. Either way the run shows nothing of
    the join being tested, so the tests run the command again (``ATTEMPTS``)."""
    holders: List[Optional[int]] = []
    said: List[str] = []
    for run in sorted(tmp_path.glob("pyspy.*")):
        try:
            named = [t["thread_id"] for t in json.loads(run.read_bytes()) if t.get("owns_gil")]
        except (ValueError, TypeError, KeyError) as exc:
            named = []
            said.append("%s: unreadable (%s)" % (run.name, exc))
        else:
            said.append("%s: holder %s" % (run.name, named or "none"))
        holders.append(named[0] if named else None)
        run.unlink()
    return (holders[0] if holders else None), "py-spy's runs: " + ("; ".join(said) or "none")


def spinner_of(threads: List[ThreadInfo]) -> ThreadInfo:
    [spinner] = [t for t in threads if t.request is not None and t.request.path == "/spin"]
    return spinner


def test_the_session_returns_at_the_agents_answer_and_joins_py_spy_after(target, slow_pyspy):
    # GIVEN a session whose py-spy reads after the agent has answered
    opened = open_session(str(target.pid))
    session = opened.session
    try:
        session.pyspy_wait = 0.0  # as dump and snapshot set it
        # WHEN it polls
        update = session.poll()
        # THEN the poll brings the agent's threads without py-spy's reading yet
        assert update.threads is not None and not update.pyspy_joined
        assert update.threads_source is not SourceKind.PYSPY
        ran: List[bool] = []
        # WHEN py-spy's reading is joined, with work to do meanwhile
        joined = session.join_pyspy(update, meanwhile=lambda: ran.append(True))
        # THEN that work ran while py-spy still read, and the update now names the spinning
        # worker as the GIL holder, marked on its thread, the agent's requests kept
        assert ran == [True]
        assert joined.pyspy_joined and joined.threads is not None
        spinner = spinner_of(list(joined.threads.threads))
        assert joined.gil_holder == spinner.ident and spinner.owns_gil
        assert any(t.request and t.request.path == "/block" for t in joined.threads.threads)
        # AND a second join has nothing left to join
        assert session.join_pyspy(joined) is joined
    finally:
        session.close()


def test_dump_json_is_encoded_while_py_spy_reads_and_carries_its_gil_holder(
    target, slow_pyspy, encodings, tmp_path, capsys
):
    # GIVEN py-spy's read ending after the agent's answer
    # WHEN `cpinspect dump PID --json` runs (again while py-spy's own read named no holder)
    for _ in range(ATTEMPTS):
        encodings.clear()
        code = main(["dump", str(target.pid), "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        holder, said = pyspy_read(tmp_path)
        if holder is not None:
            break
        # (a read that named no holder: none is made up)
        made_up = [s.gil_holder for s in snapshots_from_document(json.loads(out.out))]
        assert made_up == [None], said
    else:
        pytest.fail("no GIL holder in %d reads of the spinning target (%s)" % (ATTEMPTS, said))
    # THEN it exits 0 after encoding twice: once while py-spy read, once with its holder
    # (the cycle collector, off during the command, on again after it)
    assert code == 0, out.err
    assert gc.isenabled()
    assert len(encodings) == 2 and encodings[0] == encodings[1] > 0
    # AND the document is the agent's threads joined with py-spy's GIL holder (the spinner,
    # unless py-spy's instant fell on another thread's moment with the GIL)
    [snapshot] = snapshots_from_document(json.loads(out.out))
    assert snapshot.source is SourceKind.BOTH and snapshot.threads is not None
    assert snapshot.gil_holder == holder, said
    assert [t.ident for t in snapshot.threads.threads if t.owns_gil] == [holder], said
    # AND what the agent alone knows is there: the blocked worker's request and the pool
    assert any(t.request and t.request.path == "/block" for t in snapshot.threads.threads)
    assert snapshot.threads.pools


def test_snapshot_is_encoded_while_py_spy_reads_and_saves_its_gil_holder(
    target, slow_pyspy, encodings, tmp_path, capsys
):
    # GIVEN py-spy's read ending after the agent's answer
    # WHEN `cpinspect snapshot PID -o DIR` runs (again while py-spy's own read named no holder)
    for attempt in range(ATTEMPTS):
        encodings.clear()
        (tmp_path / str(attempt)).mkdir()
        code = main(["snapshot", str(target.pid), "-o", str(tmp_path / str(attempt))])
        out = capsys.readouterr()
        assert code == 0, out.err
        holder, said = pyspy_read(tmp_path)
        if holder is not None:
            break
    else:
        pytest.fail("no GIL holder in %d reads of the spinning target (%s)" % (ATTEMPTS, said))
    # THEN it writes the file after encoding twice (while py-spy read, and with its holder)
    assert code == 0, out.err
    assert gc.isenabled()
    assert len(encodings) == 2 and encodings[0] == encodings[1] > 0
    json_path = Path(out.out.splitlines()[0])
    # AND the saved snapshot carries py-spy's GIL holder on the agent's threads
    [snapshot] = read_snapshots(json_path)
    assert snapshot.source is SourceKind.BOTH and snapshot.threads is not None
    assert snapshot.gil_holder == holder, said
    assert [t.ident for t in snapshot.threads.threads if t.owns_gil] == [holder], said
    assert any(t.request and t.request.path == "/block" for t in snapshot.threads.threads)
    # AND the report beside it says who holds the GIL
    report = Path(out.out.splitlines()[1]).read_text(encoding="utf-8")
    assert "holds the GIL" in report


def test_an_early_py_spy_no_command_took_is_stopped(monkeypatch, tmp_path, capsys):
    # GIVEN the early py-spy of `dump PID` started from the raw command line (a process that
    # would run for a minute stands in for it)
    monkeypatch.setattr(early, "pyspy_command", lambda executable, pid: ["sleep", "60"])
    started: List[early.Early] = []
    real_spawn = early.spawn

    def spawn(command: List[str]):  # type: ignore[no-untyped-def]
        result = real_spawn(command)
        if result is not None:
            started.append(result)
        return result

    monkeypatch.setattr(early, "spawn", spawn)
    monkeypatch.setattr(early, "find_executable", lambda: "/bin/true")
    # WHEN the command line turns out to be a usage error
    with pytest.raises(SystemExit) as exc:
        main(["dump", str(os.getpid()), "--no-such-option"])
    # THEN the command fails as argparse says, and the early process was stopped and reaped
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    assert len(started) == 1 and started[0][1].returncode is not None
    assert early.take(None) is None  # nothing left behind for the next command


def test_the_readers_py_spy_is_the_one_started_early(target, monkeypatch):
    # GIVEN `dump PID --json` by pid, py-spy installed beside the inspector
    # WHEN main starts py-spy from the raw command line
    early.spawn_for_words(["dump", str(target.pid), "--json"])
    started = early.take(early.pyspy_command(find_pyspy(), target.pid))
    # THEN it is the command the session's reader runs beside the agent, so it is adopted
    try:
        assert started is not None
        reader = PySpySource(target.pid, executable=find_pyspy())
        assert started[0] == reader.command(with_locals=False, native=False)
    finally:
        if started is not None:
            early.stop(started[1])


def test_the_agents_info_asked_at_the_start_is_the_one_used(target, monkeypatch, capsys):
    # GIVEN `dump PID --json` by pid (its info is asked for beside py-spy's early read)
    asked: List[str] = []
    for name in ("info", "info_answered"):
        real = getattr(AgentSource, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            asked.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(AgentSource, name, counted)
    # WHEN it runs
    code = main(["dump", str(target.pid), "--json"])
    out = capsys.readouterr()
    # THEN the info came from the early request, not from a second one after the imports
    assert code == 0, out.err
    assert asked == ["info_answered"]
    # AND it is the target's
    [snapshot] = snapshots_from_document(json.loads(out.out))
    assert snapshot.info is not None and snapshot.info.pid == target.pid


@pytest.fixture
def asked_in_flight(monkeypatch: pytest.MonkeyPatch) -> List[bool]:
    """The agent's ``/v1/threads`` call held until ``/v1/sessions`` and ``/v1/routes`` have
    been asked (10 s at most): one entry per threads call, whether both were asked while it
    was still in flight. Asked one after another, they would never be (the entry is False)."""
    seen = {path: threading.Event() for path in ("/v1/sessions", "/v1/routes")}
    real_get = AgentSource._get

    def get(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path in seen:
            seen[path].set()
        return real_get(self, path, *args, **kwargs)

    real_threads = AgentSource.threads
    overlapped: List[bool] = []

    def threads(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        overlapped.append(all(event.wait(10) for event in seen.values()))
        return real_threads(self, *args, **kwargs)

    monkeypatch.setattr(AgentSource, "_get", get)
    monkeypatch.setattr(AgentSource, "threads", threads)
    monkeypatch.setenv("CPINSPECT_AGENT_GRACE", "30")  # the held threads call is waited for
    return overlapped


def test_dump_asks_the_sessions_and_routes_while_the_threads_are_read(
    target, asked_in_flight, capsys
):
    # GIVEN the agent's threads answer held until the sessions and routes are asked
    # WHEN `cpinspect dump PID --json` runs
    code = main(["dump", str(target.pid), "--json"])
    out = capsys.readouterr()
    # THEN both were asked while the threads call was in flight, not after the poll
    assert code == 0, out.err
    assert asked_in_flight == [True]
    # AND their answers were joined: the sessions are in the document (no note about them)
    [snapshot] = snapshots_from_document(json.loads(out.out))
    assert snapshot.sessions is not None
    assert "not captured" not in out.err and "routes not read" not in out.err


def test_snapshot_asks_the_sessions_and_routes_while_the_threads_are_read(
    target, asked_in_flight, tmp_path, capsys
):
    # GIVEN the agent's threads answer held until the sessions and routes are asked
    # WHEN `cpinspect snapshot PID -o DIR` runs
    code = main(["snapshot", str(target.pid), "-o", str(tmp_path)])
    out = capsys.readouterr()
    # THEN both were asked while the threads call was in flight
    assert code == 0, out.err
    assert asked_in_flight == [True]
    # AND the file has the agent's routes and sessions, and the threads with their requests
    [snapshot] = read_snapshots(Path(out.out.splitlines()[0]))
    assert snapshot.routes is not None and snapshot.routes.apps
    assert snapshot.sessions is not None
    assert snapshot.threads is not None
    assert any(t.request and t.request.path == "/block" for t in snapshot.threads.threads)
    assert "not captured" not in out.err


def test_the_collector_stays_off_when_the_process_ends_right_after(target, capsys):
    # GIVEN `dump PID --json` run as the program is (os._exit follows the command)
    args = build_parser().parse_args(["dump", str(target.pid), "--json"])
    early.exit_follows(True)
    try:
        # WHEN it runs
        code = args.func(args)
        # THEN the cycle collector is left off: turned on, it would walk every object of the
        # 1,000-thread poll once more before the exit
        assert code == 0, capsys.readouterr().err
        assert not gc.isenabled()
    finally:
        early.exit_follows(False)
        gc.enable()
    # AND called as a function (no exit after it), the command turns it back on
    assert main(["dump", str(target.pid), "--json"]) == 0
    assert gc.isenabled()


def test_the_threads_asked_at_the_start_are_the_ones_the_poll_reads(target, monkeypatch, capsys):
    # GIVEN `dump PID --json` by pid (its threads are asked beside the info, at the start)
    asked: List[str] = []
    real_get = AgentSource._get

    def get(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(path)
        return real_get(self, path, *args, **kwargs)

    monkeypatch.setattr(AgentSource, "_get", get)
    # WHEN it runs
    code = main(["dump", str(target.pid), "--json"])
    out = capsys.readouterr()
    # THEN the poll read the early answer: no second /v1/threads request after the imports
    assert code == 0, out.err
    assert "/v1/threads" not in asked
    # AND it is the target's whole answer: the blocked worker's request and the pool are there
    [snapshot] = snapshots_from_document(json.loads(out.out))
    assert snapshot.threads is not None and snapshot.threads.pools
    assert any(t.request and t.request.path == "/block" for t in snapshot.threads.threads)


def test_an_early_threads_answer_that_is_not_readable_is_asked_again(target):
    # GIVEN the agent's source handed an early /v1/threads answer that came back broken
    # (a 500 cut short: anything but a readable 200)
    source = AgentSource(target.socket_path())
    broken = early_info.Prefetch(target.pid, early_info.THREADS)
    broken.path, broken.sent, broken.status = source.connect_path, 0.0, None
    broken.asked.set()
    broken.done.set()
    try:
        source.prefetch_threads(broken)
        # WHEN the session reads the threads
        threads = source.threads()
        # THEN it asked the agent itself, and has its answer
        assert any(t.request and t.request.path == "/block" for t in threads.threads)
    finally:
        source.close()


def test_the_early_threads_are_asked_only_once_the_info_is_in(target):
    # GIVEN the early requests of `dump PID` started
    early_info.start(target.pid)
    with early_info._lock:
        info = early_info._pending[target.pid, early_info.INFO]
        threads = early_info._pending[target.pid, early_info.THREADS]
    try:
        # WHEN both are answered
        assert threads.done.wait(30) and info.done.is_set()
        # THEN the threads were sent after the info's answer came (never both at once: the
        # tiny info decides whether the agent is silent), and both are whole answers
        assert info.answered is not None and threads.sent is not None
        assert threads.sent >= info.answered
        assert info.status == threads.status == 200
    finally:
        early_info.clear()


def test_an_early_request_nobody_took_in_time_is_called_off(target):
    # GIVEN an early threads request whose info has not come yet (held until the take)
    held = early_info.Prefetch(target.pid)
    fetch = early_info.Prefetch(target.pid, early_info.THREADS)
    with early_info._lock:
        early_info._pending[target.pid, early_info.THREADS] = fetch
    runner = threading.Thread(target=early_info._run, args=(fetch, held), daemon=True)
    runner.start()
    # WHEN the command takes it before it was sent
    taken = early_info.take(target.pid, "/any/path", early_info.THREADS)
    # THEN it is not handed over, and called off: once the info comes it is never sent
    assert taken is None and fetch.cancelled
    held.status, held.body = 200, b"{}"
    held.done.set()
    runner.join(30)
    assert fetch.done.is_set() and fetch.sent is None
