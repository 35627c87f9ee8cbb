"""Injecting the agent into real, unmodified CherryPy processes, and taking it out again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cpinspect.attach.inject import Injector, schedule_with_gdb
from cpinspect.errors import (
    BootstrapFailed,
    GdbMissing,
    MainThreadBusy,
    NotCherryPy,
    NotPython,
    PermissionDenied,
    RemoteDebugDisabled,
    TargetGone,
)
from cpinspect.model import SourceKind
from tests.conftest import IN_CI, as_user, wait_for
from tests.helpers import (
    BackgroundRequests,
    agent_get,
    assert_first_restart_is_the_touch,
    http_answers,
    run_cli,
    wait_for_frame,
    watched_module,
)


@pytest.fixture(autouse=True, scope="module")
def _needs_gdb() -> None:
    if shutil.which("gdb") is None:
        if IN_CI:
            pytest.fail("gdb missing in CI: `make system-deps` installs it")
        pytest.skip("gdb missing (apt-get install gdb, or `make system-deps` as root)")


def get(target, path: str) -> httpx.Response:
    return httpx.get("http://127.0.0.1:%d%s" % (target.port, path), timeout=10)


def agent_threads(target) -> list:
    return [n for n in get(target, "/debug_state").json()["threads"] if n.startswith("cpinspect-")]


def plain_python(setup: str, run: str) -> subprocess.Popen:
    """A Python process (not a CherryPy server), ready once ``setup`` has run."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "\n".join([setup, "print('up', flush=True)", run])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return proc


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_inject_inspect_detach_with_autoreload_on(spawn_target, tmp_path):
    # GIVEN a target with no cpinspect code, the Autoreloader on, and a request already running
    # (py-spy, from outside, sees its handler frame before anything is injected)
    watched = watched_module(tmp_path)
    target = spawn_target(
        "--agent", "none", "--autoreload", "--app-modules", "--engine-log", "--watch", str(watched)
    )
    before = get(target, "/debug_state").json()
    BackgroundRequests(target.port, "/block?seconds=30", 1)
    wait_for_frame(target.pid, "block")

    # WHEN `cpinspect inject PID` loads the agent
    result = run_cli("inject", str(target.pid))
    assert result.returncode == 0, result.stderr
    socket_path = result.stdout.strip()
    status, threads = agent_get(target.socket_path(), "/v1/threads")
    info = agent_get(target.socket_path(), "/v1/info")[1]

    # THEN the agent answers and shows the request that was in flight before it was installed:
    # found by walking frames (no hook saw it start), started before the agent's install time
    assert status == 200 and socket_path.endswith("/%d.sock" % target.pid)
    busy = [t for t in threads["threads"] if t["busy"]]
    assert [t["request"]["path"] for t in busy] == ["/block"], busy
    [request] = [t["request"] for t in busy]
    assert request["source"] == "frame", request
    assert request["started_at"] is not None and request["started_at"] < info["agent_installed_at"]
    # ... the app's __main__ is untouched and its own `server`/`plugin` modules are not shadowed
    during = get(target, "/debug_state").json()
    assert during["main_globals"] == before["main_globals"]
    assert during["hooks"] == 2 and during["listeners"] == 2
    assert get(target, "/app_modules").text == "app server module; app plugin module"

    # WHEN injected again: nothing changes
    again = run_cli("inject", str(target.pid))
    assert again.returncode == 0 and again.stdout.strip() == socket_path
    assert agent_threads(target) == [n for n in during["threads"] if n.startswith("cpinspect-")]

    # WHEN detached
    detached = run_cli("detach", str(target.pid))
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout.strip() == "agent removed from pid %d" % target.pid

    # THEN hooks, threads and socket are gone, and the app serves
    wait_for(lambda: not agent_threads(target), what="the agent's threads to stop")
    after = get(target, "/debug_state").json()
    assert after["hooks"] == 0 and after["listeners"] == 0
    assert after["main_globals"] == before["main_globals"]
    assert not os.path.exists(socket_path)
    assert http_answers(target.port, "/")
    # ... and detaching what is not there says so
    nothing = run_cli("detach", str(target.pid))
    assert nothing.returncode == 6 and "no cpinspect agent loaded" in nothing.stderr
    # ... and nothing ever restarted: the first restart is the one a touched module causes
    assert_first_restart_is_the_touch(target, watched)


def test_inject_into_a_process_whose_agent_came_by_config_is_a_no_op(spawn_target):
    # GIVEN an app that loaded the agent itself
    target = spawn_target("--agent", "config")
    path = target.socket_path()
    threads = agent_threads(target)
    # WHEN injected
    result = Injector(target.pid).inject()
    # THEN nothing was scheduled: the same agent, the same threads
    assert result.already and result.schedule_seconds == 0.0
    assert result.endpoint is not None and result.endpoint.connect_path == path
    assert agent_threads(target) == threads


def test_a_process_that_is_not_python():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        result = run_cli("inject", str(proc.pid))
        assert result.returncode == NotPython.exit_code
        assert result.stderr == (
            "cpinspect: pid %d is not a Python process (sleep); pick a CherryPy server's pid\n"
            % proc.pid
        )
    finally:
        reap(proc)


def test_python_without_cherrypy():
    # GIVEN a Python process that never imported cherrypy (its main thread runs bytecode)
    proc = plain_python("import time", "while True: time.sleep(0.05)")
    try:
        # WHEN injected
        result = run_cli("inject", str(proc.pid))
        # THEN the bootstrap ran, found no cherrypy, and said so; nothing was loaded
        assert result.returncode == NotCherryPy.exit_code, result.stderr
        assert "runs Python but has not imported cherrypy" in result.stderr
        assert result.stderr.count("\n") == 1
        assert proc.poll() is None
    finally:
        reap(proc)


def test_main_thread_stuck_in_c_reports_after_the_pickup_timeout():
    # GIVEN a CherryPy-importing process whose main thread waits in C forever (no bytecode runs)
    proc = plain_python("import cherrypy, threading", "threading.Event().wait()")
    try:
        # WHEN injected with a short pickup timeout
        with pytest.raises(MainThreadBusy) as err:
            Injector(proc.pid, pickup_timeout=1.0).inject()
        # THEN it says so (after that timeout: bench/attach_time.py times it), the process unharmed
        assert "has not run the scheduled bootstrap in 1 s" in str(err.value)
        assert "cpinspect attach %d" % proc.pid in str(err.value)
        assert proc.poll() is None
    finally:
        reap(proc)


def test_a_late_pending_call_is_harmless(spawn_target):
    # GIVEN a CherryPy app whose main thread is held off bytecode for seconds: a regex holding
    # the GIL in one C call (n=28: about 8 s), seen running by py-spy before we inject
    target = spawn_target("--agent", "none")
    BackgroundRequests(target.port, "/regex?n=28", 1)
    wait_for_frame(target.pid, "regex")
    # WHEN injection gives up waiting for the bootstrap to run
    with pytest.raises(MainThreadBusy):
        Injector(target.pid, pickup_timeout=0.5).inject()
    gave_up_at = time.time()
    # THEN the call stays pending and runs late, once the GIL is free: the agent loads after the
    # injector gave up (its own install time says so), once, and the app serves
    wait_for(lambda: agent_threads(target), timeout=60, what="the late bootstrap")
    info = agent_get(target.socket_path(), "/v1/info")[1]
    assert info["agent_installed_at"] > gave_up_at, (info["agent_installed_at"], gave_up_at)
    assert get(target, "/debug_state").json()["hooks"] == 2
    assert Injector(target.pid).inject().already


def test_the_bootstrap_failing_inside_the_target_is_shown(spawn_target, short_tmp):
    # GIVEN a target whose socket directory cannot be created ($XDG_RUNTIME_DIR/cpinspect is a file)
    (short_tmp / "cpinspect").write_text("in the way")
    target = spawn_target("--agent", "none", env={"XDG_RUNTIME_DIR": str(short_tmp)})
    # WHEN injected
    result = run_cli("inject", str(target.pid))
    # THEN the target's own error reaches the user in words, on one line
    assert result.returncode == BootstrapFailed.exit_code, result.stderr
    assert result.stderr.startswith(
        "cpinspect: the agent's bootstrap failed inside pid %d (Python 3." % target.pid
    )
    assert "SocketPathError" in result.stderr and "is not a directory" in result.stderr
    assert result.stderr.count("\n") == 1
    assert http_answers(target.port, "/")


def test_the_target_exiting_during_injection(spawn_target):
    # GIVEN a target that dies right after the bootstrap is scheduled
    target = spawn_target("--agent", "none")

    def schedule_then_die(argv, timeout):
        os.kill(target.pid, signal.SIGKILL)
        target.proc.wait(5)
        return subprocess.CompletedProcess(argv, 0, "CPINSPECT-SCHEDULED 0\n", "")

    # WHEN injecting
    with pytest.raises(TargetGone) as err:
        Injector(target.pid, runner=schedule_then_die).inject()
    # THEN it says the process exited
    assert str(err.value) == "process %d exited during injection" % target.pid


def test_gdb_missing(spawn_target, tmp_path):
    # GIVEN a PATH without gdb
    target = spawn_target("--agent", "none")
    env = dict(os.environ, PATH=str(tmp_path))
    # WHEN injecting
    result = run_cli("inject", str(target.pid), env=env)
    # THEN it says how to install gdb
    assert result.returncode == GdbMissing.exit_code
    assert "apt-get install gdb" in result.stderr and result.stderr.count("\n") == 1


def test_another_users_process_is_refused_with_the_fix(
    spawn_target, other_user, other_user_runtime
):
    # GIVEN a root-owned target, and the inspector running as another user (from files that
    # user can read: the checkout may be root's alone)
    target = spawn_target("--agent", "none")
    cmd = as_user(
        other_user, [other_user_runtime.python, "-m", "cpinspect", "inject", str(target.pid)]
    )
    env = other_user_runtime.env()
    # WHEN it injects
    result = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=env, timeout=60)
    # THEN it is refused in one line that says what to do
    assert result.returncode == PermissionDenied.exit_code, result.stderr
    assert "run cpinspect as that user" in result.stderr or "as its user or root" in result.stderr
    assert result.stderr.count("\n") == 1


def test_python_314_path_with_remote_exec_faked(spawn_target):
    # GIVEN a target we pretend runs Python 3.14, and a stand-in for the target's interpreter
    # calling sys.remote_exec(pid, script) -- gdb runs the same script text instead
    target = spawn_target("--agent", "none")
    calls = []

    def fake_interpreter(argv, timeout):
        calls.append(list(argv))
        script = argv[-1].split(", ", 1)[1].rstrip(")").strip("'")
        schedule_with_gdb(target.pid, Path("/proc/%d/root%s" % (target.pid, script)).read_text())
        return subprocess.CompletedProcess(argv, 0, "", "")

    # WHEN injected
    result = Injector(target.pid, runner=fake_interpreter, python=(3, 14)).inject()
    # THEN the target's own interpreter was asked, isolated, to call sys.remote_exec
    [argv] = calls
    assert argv[:4] == ["/proc/%d/exe" % target.pid, "-I", "-S", "-c"]
    assert argv[4].startswith("import sys; sys.remote_exec(%d, '/tmp/cpinspect-" % target.pid)
    assert result.endpoint is not None
    assert agent_get(result.endpoint.connect_path, "/v1/info")[1]["pid"] == target.pid


def test_python_314_with_remote_debugging_disabled(spawn_target):
    # GIVEN a (pretend) 3.14 target started with PYTHON_DISABLE_REMOTE_DEBUG
    target = spawn_target("--agent", "none", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"})

    def never(argv, timeout):
        raise AssertionError("the interpreter must not be called")

    # WHEN injecting
    with pytest.raises(RemoteDebugDisabled) as err:
        Injector(target.pid, runner=never, python=(3, 14)).inject()
    # THEN it says why and what to do
    assert "remote debugging is disabled in pid %d" % target.pid in str(err.value)
    assert "PYTHON_DISABLE_REMOTE_DEBUG" in str(err.value)


def test_attach_with_inject_opens_the_inspector_on_the_injected_agent(spawn_target, monkeypatch):
    # GIVEN a target without the agent, and the TUI replaced by a recorder
    from cpinspect.cli import attach, main

    target = spawn_target("--agent", "none")
    seen = []

    def fake_tui(opened, interval, **options):
        seen.append(opened)
        opened.session.close()
        return 0

    monkeypatch.setattr(attach, "run_tui", fake_tui)
    # WHEN `cpinspect attach --inject PID` runs
    assert main(["attach", "--inject", str(target.pid)]) == 0
    # THEN the inspector opened on the agent it just loaded (not the py-spy-only view)
    [opened] = seen
    assert opened.kind is SourceKind.AGENT and opened.pid == target.pid
    assert opened.session.info is not None and opened.session.info.pid == target.pid
    assert agent_threads(target)


def test_root_injects_into_another_users_process_with_files_that_user_owns(
    other_user, other_user_runtime, tmp_path
):
    # GIVEN a target running as an unprivileged user (we are root), from files that user can read
    log = tmp_path / "target.log"
    os.chmod(tmp_path, 0o755)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            as_user(
                other_user,
                [other_user_runtime.python, "-m", "tests.apps.target", "--agent", "none"],
            ),
            cwd="/",
            stdout=out,
            stderr=subprocess.STDOUT,
            env=other_user_runtime.env(),
        )
    try:
        wait_for(lambda: "READY" in log.read_text(), what="the target's READY line")
        # WHEN root injects
        result = Injector(proc.pid).inject()
        # THEN the agent runs as that user, from files that user owns, in its private directory
        assert result.endpoint is not None
        private = "/tmp/cpinspect-%d" % other_user.pw_uid
        assert result.endpoint.socket_path == "%s/%d.sock" % (private, proc.pid)
        for path in (private, private + "/lib", os.path.dirname(result.status["socket"])):
            st = os.stat(path)
            assert (st.st_uid, st.st_mode & 0o777) == (other_user.pw_uid, 0o700), path
        assert agent_get(result.endpoint.connect_path, "/v1/info")[0] == 200
        Injector(proc.pid).detach()
    finally:
        reap(proc)
