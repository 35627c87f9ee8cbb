"""Fixtures shared by every test: real processes, started and always reaped."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        "timed out after %.1f s waiting for %s (last error: %r)" % (timeout, what, last_exc)
    )


@dataclass
class TargetProcess:
    proc: subprocess.Popen
    port: int
    pid: int
    log_path: Path
    lines: List[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def boots(self) -> int:
        return len(re.findall(r"^BOOT pid=", self.output(), flags=re.M))

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A target killed by a test cannot remove its socket: left behind, the file of a reused
        # pid would stand where a later target's (in another namespace) is expected not to be.
        if self.proc.poll() is not None:
            stale = Path("/tmp/cpinspect-%d/%d.sock" % (os.getuid(), self.pid))
            try:
                if stat.S_ISSOCK(stale.lstat().st_mode):
                    stale.unlink()
            except OSError:
                pass


def start_target(
    args: List[str],
    tmp: Path,
    env: Optional[dict] = None,
    timeout: float = 20.0,
    python: Optional[str] = None,
    prefix: Sequence[str] = (),
) -> TargetProcess:
    """Start the test app; ``prefix`` runs it through a wrapper (``unshare ...``) that execs it."""
    log_path = tmp / ("target-%d.log" % time.monotonic_ns())
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("XDG_RUNTIME_DIR", None)
    if env:
        full_env.update(env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*prefix, python or sys.executable, "-m", "tests.apps.target", *args],
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def ready() -> Optional[re.Match]:
        if proc.poll() is not None:
            raise RuntimeError("target exited early:\n" + log_path.read_text(errors="replace"))
        return re.search(r"READY port=(\d+) pid=(\d+)", log_path.read_text(errors="replace"))

    try:
        m = wait_for(ready, timeout=timeout, what="the target's READY line")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert isinstance(m, re.Match)
    return TargetProcess(proc=proc, port=int(m.group(1)), pid=int(m.group(2)), log_path=log_path)


@pytest.fixture
def spawn_target(tmp_path: Path) -> Iterator[Callable[..., TargetProcess]]:
    """Start ``tests/apps/target.py`` with the given options; every process is reaped after."""
    started: List[TargetProcess] = []

    def spawn(
        *args: str,
        env: Optional[dict] = None,
        python: Optional[str] = None,
        prefix: Sequence[str] = (),
    ) -> TargetProcess:
        target = start_target(list(args), tmp_path, env=env, python=python, prefix=prefix)
        started.append(target)
        return target

    try:
        yield spawn
    finally:
        for target in started:
            target.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must stay under 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="cpi-", dir="/tmp") as d:
        yield Path(d)


TEST_USER = "cpinspect-test"


@pytest.fixture(scope="session")
def other_user():
    """A throwaway unprivileged user (created when we are root)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; these tests need it")
        pytest.skip("needs root to create and become another user")
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            pytest.fail("useradd missing: `make system-deps` installs it")
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
        )
        pw = pwd.getpwnam(TEST_USER)
    return pw


# --- What another user runs -------------------------------------------------------------------
# The checkout may live where only root can go (cloned into /root, mode 0700), and so may its
# .venv and the interpreter that venv points at. A process dropped to another user must run
# something that user can read: a venv built from a world-readable interpreter, cached in a
# world-readable directory, with cherrypy and cpinspect's dependencies, and a per-session *copy*
# of cpinspect and tests/apps on PYTHONPATH (a copy, since the checkout may be unreachable).

OTHER_USER_CACHE = Path(
    os.environ.get("CPINSPECT_OTHER_USER_CACHE", "/var/tmp/cpinspect-test-venvs")
)
"""Where the other user's venvs live: outside the clone and outside root's 0700 home."""


def _world_reachable(path: Path) -> Optional[str]:
    """None if any user may execute or read ``path``; else the first place that stops them."""
    real = Path(os.path.realpath(path))
    for parent in reversed(real.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return "%s is not searchable by other users" % parent
    mode = os.stat(real).st_mode
    wanted = stat.S_IXOTH if stat.S_ISDIR(mode) or os.access(real, os.X_OK) else stat.S_IROTH
    if not mode & wanted:
        return "%s is mode %o" % (real, stat.S_IMODE(mode))
    return None


def _base_interpreter() -> str:
    """A Python >= 3.9 every user may run: the system's, else a pyenv one in a readable place."""
    candidates = ["/usr/bin/python3"]
    pyenv = Path(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))) / "versions"
    candidates += sorted(map(str, pyenv.glob("3.*/bin/python3")), reverse=True)
    for candidate in candidates:
        if not os.path.exists(candidate) or _world_reachable(Path(candidate)) is not None:
            continue
        probe = [candidate, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 9))"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError(
        "no Python >= 3.9 with venv that other users can run (tried %s): install python3-venv"
        % ", ".join(candidates)
    )


def _runtime_requirements() -> List[str]:
    """cpinspect's own dependencies (not the dev extras), as installed in our environment."""
    from importlib.metadata import requires

    return sorted(r for r in requires("cpinspect") or [] if "extra ==" not in r)


def _publish(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` with modes any user may read, whatever the checkout's modes."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for dirpath, _, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


@dataclass(frozen=True)
class OtherUserRuntime:
    """An interpreter and a PYTHONPATH that another user can reach, none of it under ROOT."""

    python: str
    """The cached venv's interpreter (cherrypy and cpinspect's dependencies installed)."""
    path: str
    """This session's copy of ``cpinspect`` and ``tests/apps``, for PYTHONPATH."""

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "VIRTUAL_ENV")}
        env.update(PYTHONPATH=self.path, HOME="/tmp")
        env.update(extra or {})
        return env


def as_user(pw: pwd.struct_passwd, argv: Sequence[str], caps: Sequence[str] = ()) -> List[str]:
    """``argv`` run through setpriv as user ``pw`` (no supplementary groups; ``caps`` kept)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv missing: `make system-deps` installs util-linux")
    cmd = [setpriv, "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups"]
    for cap in caps:
        cmd += ["--inh-caps=+" + cap, "--ambient-caps=+" + cap]
    return [*cmd, *argv]


def _build_venv(base: str) -> Path:
    """The cached venv for ``base`` and our requirements, built once (flock'd: sessions race)."""
    version = subprocess.run(
        [base, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    ).stdout
    requirements = _runtime_requirements()
    key = hashlib.sha256(
        "\n".join([os.path.realpath(base), version, *requirements]).encode()
    ).hexdigest()[:16]
    old_umask = os.umask(0o022)
    try:
        OTHER_USER_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(OTHER_USER_CACHE, 0o755)
        venv = OTHER_USER_CACHE / key
        ready = venv / ".ready"
        with open(OTHER_USER_CACHE / (key + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not ready.exists():
                subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
                pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
                done = subprocess.run(
                    [*pip, *requirements], capture_output=True, text=True, timeout=600
                )
                if done.returncode != 0:
                    raise RuntimeError("pip install into %s failed:\n%s" % (venv, done.stderr))
                ready.write_text("\n".join(requirements) + "\n")
        return venv
    finally:
        os.umask(old_umask)


@pytest.fixture(scope="session")
def other_user_runtime(other_user: pwd.struct_passwd) -> Iterator[OtherUserRuntime]:
    """What a process dropped to ``other_user`` runs: never the checkout, never its .venv.

    Asserted by construction (the interpreter and the package copy live outside ROOT and outside
    this interpreter's prefix, and every directory above them is searchable by other users),
    then shown: the other user imports cherrypy, cpinspect and tests.apps from the copy.
    """
    venv = _build_venv(_base_interpreter())
    python = venv / "bin" / "python"
    src = Path(tempfile.mkdtemp(prefix="src-", dir=str(OTHER_USER_CACHE)))
    try:
        os.chmod(src, 0o755)
        _publish(ROOT / "cpinspect", src / "cpinspect")
        (src / "tests").mkdir(mode=0o755)
        shutil.copy(ROOT / "tests" / "__init__.py", src / "tests" / "__init__.py")
        os.chmod(src / "tests" / "__init__.py", 0o644)
        _publish(ROOT / "tests" / "apps", src / "tests" / "apps")
        runtime = OtherUserRuntime(python=str(python), path=str(src))
        for place in (python, src / "cpinspect" / "__init__.py", src / "tests" / "apps"):
            real = Path(os.path.realpath(place))
            for forbidden in (ROOT, Path(os.path.realpath(sys.prefix))):
                assert forbidden not in (real, *real.parents), "%s is under %s" % (real, forbidden)
            assert _world_reachable(real) is None, _world_reachable(real)
        probe = "import cherrypy, cpinspect, tests.apps, httpx, psutil; print(cpinspect.__file__)"
        seen = subprocess.run(
            as_user(other_user, [runtime.python, "-c", probe]),
            capture_output=True,
            text=True,
            cwd="/",
            env=runtime.env(),
            timeout=60,
        )
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.strip() == str(src / "cpinspect" / "__init__.py"), seen.stdout
        yield runtime
    finally:
        shutil.rmtree(src, ignore_errors=True)


_SESSION_STARTED = time.time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the agent sockets this run's targets left behind when tests killed them
    (SIGKILL runs no clean-up): in this uid's socket directory, made since the run started,
    whose pid is gone. Nothing reads them (discovery goes through the target's own fds), but
    without this every run left dozens in /tmp."""
    from cpinspect.agent.paths import default_socket_dir
    from cpinspect.agent.wire import SOCKET_SUFFIX

    try:
        directory = default_socket_dir()
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        stem = name[: -len(SOCKET_SUFFIX)]
        if not name.endswith(SOCKET_SUFFIX) or not stem.isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if st.st_mtime < _SESSION_STARTED or not stat.S_ISSOCK(st.st_mode):
                continue
            os.kill(int(stem), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        except OSError:
            continue


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """With CPINSPECT_OTHER_USER_ONLY=1, run only the tests that drop to another user.

    Used by test_unreachable_checkout.py, which runs them from a checkout that user cannot reach
    (and is itself left out here, or it would run itself).
    """
    if os.environ.get("CPINSPECT_OTHER_USER_ONLY") != "1":
        return
    import inspect

    def drops_to_another_user(item: pytest.Item) -> bool:
        if "test_unreachable_checkout" in item.nodeid:
            return False
        if "other_user" in getattr(item, "fixturenames", ()):
            return True
        function = getattr(item, "function", None)
        return function is not None and "_as_unprivileged(" in inspect.getsource(function)

    keep = [item for item in items if drops_to_another_user(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


# --- memcached (sessions, issue 10) -----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[str]:
    """A real memcached on a free loopback port for the module's tests: ``"127.0.0.1:PORT"``.

    Missing memcached (or the ``memcache`` client CherryPy imports) skips with the reason, except
    in CI, where it fails: ``make system-deps`` / the dev extras install both.
    """
    import socket

    binary = shutil.which("memcached")
    missing = None
    if binary is None:
        missing = "memcached is not installed (`make system-deps` installs it as root)"
    else:
        try:
            import memcache  # noqa: F401
        except ImportError:
            missing = "python-memcached is missing (pip install -e '.[dev]')"
    if missing is not None:
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    assert binary is not None
    port = _free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root without naming a user
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("memcached exited: %s" % proc.stderr.read().decode(errors="replace"))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(accepting, timeout=10, what="memcached to accept connections")
        yield "127.0.0.1:%d" % port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
