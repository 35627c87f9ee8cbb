"""``PySpySource`` against real processes: real py-spy, real CherryPy apps, real failures.

A few failure cases need py-spy to behave in a way it cannot be made to on demand (hang, print
garbage, meet a Python it does not know): those run a small stand-in script as the executable,
and say so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import httpx
import pytest

from cpinspect.errors import (
    NoSuchProcess,
    NotPython,
    PermissionDenied,
    PySpyFailed,
    PySpyMissing,
    UnsupportedPython,
)
from cpinspect.model import Phase, Role, ThreadInfo, ThreadsSnapshot
from cpinspect.sources import pyspy
from cpinspect.sources.pyspy import (
    MISSING_MESSAGE,
    PySpySource,
    looks_like_cherrypy,
    process_state,
)
from tests.conftest import ROOT, TargetProcess, wait_for
from tests.helpers import (
    BackgroundRequests,
    agent_get,
    assert_left_stopped,
    http_answers,
    python_as,
    spawn_ready,
)

THREADS = 4


def release(target: TargetProcess) -> None:
    """Let blocked and spinning handlers return (teardown is faster with free workers)."""
    try:
        httpx.get("http://127.0.0.1:%d/release" % target.port, timeout=5)
    except httpx.HTTPError:
        pass


@pytest.fixture
def busy_target(spawn_target) -> Iterator[Callable[..., TargetProcess]]:
    """A target with one worker blocked on /block (token in the query) and one spinning."""
    started: List[TargetProcess] = []

    def start(agent: str = "none") -> TargetProcess:
        target = spawn_target("--agent", agent, "--threads", str(THREADS))
        started.append(target)
        BackgroundRequests(target.port, "/block?seconds=60&token=s3cret&x=1", 1)
        BackgroundRequests(target.port, "/spin?seconds=60", 1)
        source = PySpySource(target.pid)

        def both_seen() -> bool:
            functions = {f.function for t in source.threads().workers for f in t.stack}
            return {"block", "spin"} <= functions

        wait_for(both_seen, timeout=15, what="a worker in Root.block and one in Root.spin")
        return target

    try:
        yield start
    finally:
        for target in started:
            release(target)


def worker_in(snap: ThreadsSnapshot, function: str):
    found = [t for t in snap.workers if any(f.function == function for f in t.stack)]
    assert len(found) == 1, [t.name for t in snap.workers]
    return found[0]


def stand_in(tmp_path: Path, body: str) -> str:
    """An executable script standing in for py-spy; ``pid`` is the --pid argument, ``log`` a
    file it may write to, ``args`` its command line."""
    script = tmp_path / "fake-py-spy"
    script.write_text(
        "#!%s\n" % sys.executable
        + textwrap.dedent(
            """\
            import os, signal, sys, time
            args = sys.argv[1:]
            pid = int(args[args.index("--pid") + 1])
            log = open(%r, "a", buffering=1)
            log.write("args %%s\\n" %% " ".join(args))
            log.write("self %%d\\n" %% os.getpid())
            """
            % str(tmp_path / "stand-in.log")
        )
        + textwrap.dedent(body)
    )
    script.chmod(0o755)
    return str(script)


def stand_in_log(tmp_path: Path) -> str:
    path = tmp_path / "stand-in.log"
    return path.read_text() if path.exists() else ""


# --- reading real processes ---------------------------------------------------------------------


def test_threads_of_a_real_app_with_blocked_and_spinning_workers(busy_target):
    # GIVEN a CherryPy app without the agent: one worker blocked, one spinning, two idle
    target = busy_target()
    source = PySpySource(target.pid)
    # WHEN py-spy reads it
    snap = source.threads()
    # THEN workers are classified from their stacks, requests read from Request.run's locals
    assert looks_like_cherrypy(snap)
    assert len(snap.workers) == THREADS
    blocked = worker_in(snap, "block")
    spinning = worker_in(snap, "spin")
    for t in (blocked, spinning):
        assert t.busy and t.phase is Phase.HANDLER and t.role is Role.WORKER
        assert t.request is not None and t.request.source == "py-spy"
        assert t.native_id is not None and t.cpu_time is not None
        top = t.top_app_frame
        assert top is not None and top.filename.endswith("tests/apps/target.py")
    assert (
        blocked.request is not None and blocked.request.target == "/block?seconds=60&token=***&x=1"
    )
    assert blocked.request.handler == "Root.block"
    assert spinning.request is not None and spinning.request.path == "/spin"
    idle = [t for t in snap.workers if not t.busy]
    assert len(idle) == 2 and all(t.phase is Phase.IDLE for t in idle)
    assert {t.role for t in snap.threads} >= {Role.WORKER, Role.ACCEPTOR, Role.MAIN}
    assert "s3cret" not in repr(snap)
    # AND a later snapshot times the same requests from the first one that saw them
    later = source.threads()
    assert worker_in(later, "block").elapsed >= later.taken_at - snap.taken_at - 1e-6


def test_a_session_without_the_agent_first_shows_the_reading_that_opened_it(busy_target):
    from cpinspect.sources.open import open_session

    # GIVEN a CherryPy app without the agent, its session opened (py-spy's reading that found
    # it to be CherryPy: with --locals, ~1 s at 1,000 threads)
    target = busy_target()
    told: List[str] = []
    opened = open_session(str(target.pid), no_agent=lambda: told.append("no agent"))
    session = opened.session
    # (told first, so a dump stops its early py-spy run without locals: no use without the agent)
    assert told == ["no agent"]
    spy = session.pyspy
    reads: List[object] = []
    read = spy._dump_bytes

    def counted(*args: object) -> bytes:
        reads.append(args)
        return read(*args)

    spy._dump_bytes = counted  # type: ignore[method-assign]
    try:
        # WHEN it is polled (a one-shot dump polls once)
        first = session.poll()
        # THEN the opening reading is shown, py-spy not run again, the requests in it
        assert reads == []
        assert first.threads is not None
        blocked = worker_in(first.threads, "block")
        assert blocked.request is not None and blocked.request.handler == "Root.block"
        # found running by that first look: how long it ran is not known (no "0.0 s")
        assert blocked.request.started_before and blocked.elapsed is None
        # AND the next poll reads again, and times it from the first look on (a lower bound)
        second = session.poll()
        assert len(reads) == 1
        assert second.threads is not None
        again = worker_in(second.threads, "block").elapsed
        assert (
            again is not None and again >= second.threads.taken_at - first.threads.taken_at - 1e-6
        )
    finally:
        session.close()


def test_thread_idents_are_the_agents_idents(busy_target):
    # GIVEN a target with the agent, read both through the agent and through py-spy
    target = busy_target(agent="config")
    source = PySpySource(target.pid)

    def agree() -> bool:
        _, body = agent_get(target.socket_path(), "/v1/threads")
        by_agent = {t["ident"]: t["name"] for t in body["threads"]}
        by_pyspy = {t.ident: t.name for t in source.threads().threads}
        return by_agent == by_pyspy

    # THEN both see the same threads under the same idents and names
    wait_for(agree, timeout=10, what="the agent and py-spy to list the same threads")
    _, body = agent_get(target.socket_path(), "/v1/threads")
    snap = source.threads().by_ident()
    for t in body["threads"]:
        assert snap[t["ident"]].role.value == t["role"], t["name"]
        if t["role"] == "worker":
            assert snap[t["ident"]].busy == t["busy"], t["name"]


def test_locals_of_a_blocked_worker(busy_target):
    # GIVEN a worker blocked in Root.block(seconds="60", token="s3cret", x="1")
    target = busy_target()
    source = PySpySource(target.pid)
    blocked = worker_in(source.threads(), "block")
    # WHEN its locals are read
    tl = source.thread_locals(blocked.ident)
    # THEN the handler frame shows `seconds`, and `params` (holding the token) is hidden
    assert tl.ident == blocked.ident
    frame = next(fl for fl in tl.frames if fl.frame.function == "block")
    variables = {v.name: v for v in frame.variables}
    assert variables["seconds"].value == '"60"' and not variables["seconds"].sensitive
    assert variables["params"].sensitive


def test_locals_of_a_thread_that_has_gone(busy_target):
    target = busy_target()
    with pytest.raises(
        NoSuchProcess, match="thread 12345 is no longer running in pid %d" % target.pid
    ):
        PySpySource(target.pid).thread_locals(12345)


def test_native_toggle(busy_target):
    # GIVEN a live source
    target = busy_target()
    source = PySpySource(target.pid)
    assert not any(f.native for t in source.threads().threads for f in t.stack)
    # WHEN native frames are turned on (py-spy pauses the target briefly for them)
    source.native = True
    snap = source.threads()
    # THEN C frames appear, the workers are still classified, and the target runs on
    assert any(f.native for t in snap.threads for f in t.stack)
    assert worker_in(snap, "block").phase is Phase.HANDLER
    assert process_state(target.pid) != "T"
    # AND turning them off removes them again
    source.native = False
    assert not any(f.native for t in source.threads().threads for f in t.stack)


def test_raw_dump_is_pyspy_json(busy_target):
    target = busy_target()
    raw = PySpySource(target.pid).raw_dump(locals=True)
    assert all({"thread_id", "thread_name", "frames"} <= set(t) for t in raw)
    assert any(f.get("locals") for t in raw for f in t["frames"])


# --- failures -------------------------------------------------------------------------------------


def test_pyspy_missing_at_a_given_path(spawn_target):
    target = spawn_target("--agent", "none")
    source = PySpySource(target.pid, executable="/nonexistent/py-spy")
    with pytest.raises(PySpyMissing) as err:
        source.threads()
    assert str(err.value) == (
        "py-spy not found at /nonexistent/py-spy: `pip install py-spy` into the inspector's "
        "environment (it is a cpinspect dependency)"
    )


def test_pyspy_missing_next_to_the_interpreter_and_on_path(tmp_path):
    # GIVEN an interpreter with no py-spy beside it or in its scripts directory, and empty PATH
    base = Path(getattr(sys, "_base_executable", sys.executable))
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.symlink_to(base)  # unresolved: sys.executable is tmp/bin/python3, a dir with no py-spy
    scripts = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('scripts'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not (Path(scripts) / "py-spy").exists(), "this test needs a base Python without py-spy"
    env = {
        "PATH": "",
        "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
    }
    code = (
        "from cpinspect.errors import PySpyMissing\n"
        "from cpinspect.sources.pyspy import PySpySource\n"
        "try:\n"
        "    PySpySource(1)\n"
        "except PySpyMissing as exc:\n"
        "    print('%s: %s' % (type(exc).__name__, exc))\n"
    )
    # WHEN a source is created there
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    # THEN it says how to install py-spy
    assert result.stdout.strip() == "PySpyMissing: " + MISSING_MESSAGE, result.stderr


SOURCE_AS = """
import sys
from cpinspect.errors import CpinspectError
from cpinspect.sources.pyspy import PySpySource
try:
    PySpySource(int(sys.argv[1])).threads()
except CpinspectError as exc:
    print("%s: %s" % (type(exc).__name__, exc))
else:
    print("no error")
"""


def _source_as(pw, runtime, pid: int) -> str:
    """As user ``pw``, read ``pid`` with a PySpySource; return the error it raised.

    Exec'd from files that user can read (its own venv's py-spy), not forked from us: the
    checkout and its .venv may be root's alone.
    """
    return python_as(pw, runtime, SOURCE_AS, str(pid)).rstrip("\n")


def test_permission_denied_for_another_users_process(spawn_target, other_user, other_user_runtime):
    # GIVEN a target owned by root, and the inspector running as another user
    target = spawn_target("--agent", "none")
    # WHEN it reads the target with py-spy
    text = _source_as(other_user, other_user_runtime, target.pid)
    # THEN it is refused with the fix in words
    kind, _, message = text.partition(": ")
    assert kind == PermissionDenied.__name__, text
    assert message.startswith("not allowed to read the memory of pid %d (ptrace): " % target.pid)
    assert "--cap-add=SYS_PTRACE" in message and "root" in message
    assert "\n" not in message


def test_no_such_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid is free
    with pytest.raises(NoSuchProcess) as err:
        PySpySource(proc.pid).threads()
    assert str(err.value) == "no process with pid %d (it has exited)" % proc.pid


def test_a_process_that_is_not_python():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(NotPython) as err:
            PySpySource(proc.pid).threads()
        assert str(err.value) == (
            "pid %d is not a Python process (sleep); pick a CherryPy server's pid" % proc.pid
        )
    finally:
        proc.kill()
        proc.wait()


def test_a_stopped_target_is_read_and_left_stopped(spawn_target):
    # GIVEN a target someone stopped with SIGSTOP
    target = spawn_target("--agent", "none", "--threads", "2")
    os.kill(target.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: process_state(target.pid) == "T", timeout=5, what="state T")
        source = PySpySource(target.pid)
        # WHEN py-spy reads it without pausing (the default)
        snap = source.threads()
        # THEN the stacks are there
        assert len(snap.workers) == 2 and all(t.phase is Phase.IDLE for t in snap.workers)
        # WHEN native frames are asked for (they need py-spy to pause the target)
        source.native = True
        with pytest.raises(PySpyFailed) as err:
            source.threads()
        # THEN the failure says why and what to do
        assert str(err.value) == (
            "pid %d is stopped (state T) and py-spy cannot pause it for native frames: resume "
            "it (`kill -CONT %d`) or turn native frames off" % (target.pid, target.pid)
        )
        # AND we did not resume a process someone else stopped
        assert_left_stopped(target.pid)
    finally:
        os.kill(target.pid, signal.SIGCONT)
    wait_for(lambda: process_state(target.pid) != "T", timeout=5, what="the target to run again")


@pytest.mark.parametrize("obeys_sigint", [True, False], ids=["exits-on-sigint", "needs-sigkill"])
def test_timeout_stops_pyspy_and_resumes_the_target_it_left_paused(
    spawn_target, tmp_path, obeys_sigint
):
    # A stand-in, because the real py-spy cannot be made to hang on demand: like py-spy#390/#587
    # it leaves the target stopped (SIGSTOP) and then hangs.
    target = spawn_target("--agent", "none", "--threads", "2")
    on_sigint = "sys.exit(1)" if obeys_sigint else "pass"
    script = stand_in(
        tmp_path,
        """
        def sigint(signum, frame):
            log.write("SIGINT\\n")
            %s
        signal.signal(signal.SIGINT, sigint)
        os.kill(pid, signal.SIGSTOP)
        log.write("stopped the target\\n")
        while True:
            time.sleep(0.05)
        """
        % on_sigint,
    )
    source = PySpySource(target.pid, executable=script, timeout=1.0)
    # WHEN the source waits for it
    with pytest.raises(PySpyFailed) as err:
        source.threads()
    # THEN it says so in one line, naming what it did
    assert str(err.value) == (
        "py-spy did not answer within 1 s on pid %d and was stopped (it had left the target "
        "paused: resumed it); try again (a busy machine or a huge process can slow it)" % target.pid
    )
    log = stand_in_log(tmp_path)
    # AND the stand-in got SIGINT first, then (when it ignored it) SIGKILL: it is gone
    assert "stopped the target" in log and "SIGINT" in log
    assert "args dump --pid %d --json --nonblocking --locals" % target.pid in log
    stand_in_pid = int(log.split("self ")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(stand_in_pid, 0)
    # AND the target runs again and serves
    assert process_state(target.pid) != "T"
    wait_for(lambda: http_answers(target.port, "/"), timeout=10, what="the target to serve again")


def test_timeout_never_resumes_a_target_someone_else_stopped(spawn_target, tmp_path):
    # GIVEN a target already stopped before we ran (a stand-in that just hangs, see above)
    target = spawn_target("--agent", "none", "--threads", "2")
    script = stand_in(tmp_path, "while True:\n    time.sleep(0.05)\n")
    os.kill(target.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: process_state(target.pid) == "T", timeout=5, what="state T")
        with pytest.raises(PySpyFailed) as err:
            PySpySource(target.pid, executable=script, timeout=0.5).threads()
        # THEN the message says it was left stopped, and it still is
        assert "the target was already stopped, state T, and is left so" in str(err.value)
        assert process_state(target.pid) == "T"
    finally:
        os.kill(target.pid, signal.SIGCONT)


def test_unparseable_output(spawn_target, tmp_path):
    # A stand-in: the real py-spy does not print garbage on demand.
    target = spawn_target("--agent", "none", "--threads", "2")
    script = stand_in(tmp_path, "print('garbage, not JSON')\nprint('[more')\n")
    with pytest.raises(PySpyFailed) as err:
        PySpySource(target.pid, executable=script).threads()
    assert str(err.value) == (
        "py-spy printed something that is not a JSON thread list: garbage, not JSON"
    )


def test_an_unknown_error_gives_pyspys_first_line(spawn_target, tmp_path):
    target = spawn_target("--agent", "none", "--threads", "2")
    script = stand_in(
        tmp_path,
        "sys.stderr.write('Error: Failed to copy PyThreadState\\n\\nCaused by:\\n  0: x\\n')\n"
        "sys.exit(1)\n",
    )
    with pytest.raises(PySpyFailed) as err:
        PySpySource(target.pid, executable=script).threads()
    assert str(err.value) == "py-spy failed on pid %d: Failed to copy PyThreadState" % target.pid
    # AND it was tried twice: a nonblocking read can fail on a stack that changed under it
    assert stand_in_log(tmp_path).count("args dump") == 2


def test_a_failed_nonblocking_read_is_tried_once_more(spawn_target, tmp_path):
    # A stand-in failing once like a nonblocking read of a changing stack can, then answering
    # with real py-spy JSON (the real py-spy cannot be made to fail on demand).
    target = spawn_target("--agent", "none", "--threads", "2")
    fixture = ROOT / "tests" / "fixtures" / "pyspy_cherrypy_311.json"
    script = stand_in(
        tmp_path,
        """
        if open(%r).read().count("args dump") == 1:
            sys.stderr.write("Error: Failed to get stack traces\\n")
            sys.exit(1)
        sys.stdout.write(open(%r).read())
        """
        % (str(tmp_path / "stand-in.log"), str(fixture)),
    )
    snap = PySpySource(target.pid, executable=script).threads()
    assert len(snap.workers) == 7
    assert stand_in_log(tmp_path).count("args dump") == 2


def test_unsupported_python(spawn_target, tmp_path):
    # A stand-in printing py-spy 0.4.3's message for this case: no Python on this machine is one
    # py-spy does not support.
    target = spawn_target("--agent", "none", "--threads", "2")
    script = stand_in(
        tmp_path,
        "sys.stderr.write('Error: Unsupported version of Python: 3.16.0a1\\n')\nsys.exit(1)\n",
    )
    with pytest.raises(UnsupportedPython) as err:
        PySpySource(target.pid, executable=script).threads()
    assert str(err.value) == (
        "this py-spy cannot read Python 3.16.0a1 (pid %d): upgrade it with "
        "`pip install -U py-spy`, or load the agent, which works on any Python" % target.pid
    )


def test_a_nonblocking_read_out_of_time_gets_longer_next_time_a_pausing_one_does_not(
    tmp_path, monkeypatch
):
    # GIVEN a stand-in py-spy that never answers (it touches nothing: the "target" is this
    # test's own process, which it does not read), read without pausing, and with native
    # frames (blocking: it may pause the target); the longest limit made short here
    monkeypatch.setattr(pyspy, "LONGEST_TIMEOUT", 0.5)
    script = stand_in(tmp_path, "while True:\n    time.sleep(0.05)\n")
    quiet = PySpySource(os.getpid(), executable=script, timeout=0.2, requests=False)
    native = PySpySource(os.getpid(), executable=script, timeout=0.2, native=True)
    # WHEN each runs out of time, again and again
    limits = []
    messages = []
    for _ in range(3):
        with pytest.raises(PySpyFailed) as err:
            quiet.threads()
        limits.append(quiet.timeout)
        messages.append(str(err.value))
    # THEN each failure says the limit it ran under, and the nonblocking read's limit doubled
    # each time up to the longest (a read that cannot pause the target may take longer on a
    # loaded box)
    assert [m.split(" s on pid")[0].rsplit(" ", 1)[1] for m in messages] == ["0.2", "0.4", "0.5"]
    assert limits == [0.4, 0.5, 0.5]
    # AND the blocking read keeps its limit: it may pause the target for that long
    with pytest.raises(PySpyFailed):
        native.threads()
    assert native.timeout == 0.2


INSTALLED_APP = """
import os, time
import cherrypy


def slow_work(seconds):
    time.sleep(seconds)


class Jobs:
    @cherrypy.expose
    def wait(self, s="30"):
        slow_work(float(s))
        return "done"


cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": 0,
                        "log.screen": False, "checker.on": False,
                        "engine.autoreload.on": False})
cherrypy.tree.mount(Jobs(), "")
cherrypy.engine.start()
print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
cherrypy.engine.block()
"""


def test_the_handler_of_an_app_installed_in_site_packages_is_app_code(tmp_path: Path) -> None:
    # GIVEN an app whose handlers live in site-packages (installed as a distribution, as
    # salt-api is), a request held in its handler's helper, and no agent
    package = tmp_path / "lib" / "site-packages" / "jobsapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "serve.py").write_text(INSTALLED_APP)
    with spawn_ready([str(package / "serve.py")], tmp_path / "app.out", "installed app") as m:
        port, pid = int(m.group(1)), int(m.group(2))
        BackgroundRequests(port, "/wait?s=30", 1)
        spy = PySpySource(pid, requests=False)
        try:
            # WHEN py-spy reads it
            def busy() -> Optional[ThreadInfo]:
                return next((t for t in spy.threads().threads if t.busy), None)

            worker = wait_for(busy, timeout=15, what="the held request in its handler")
        finally:
            spy.close()
    # THEN the handler and its helper in the same directory are app frames, CherryPy is not
    assert isinstance(worker, ThreadInfo)
    top = worker.top_app_frame
    assert top is not None and top.function == "slow_work", worker.stack
    apps = [f.function for f in worker.stack if f.is_app]
    assert apps == ["slow_work", "wait"], [(f.function, f.is_app) for f in worker.stack]
