"""Small clients the tests use to talk to real processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import httpx

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def spawn_ready(
    args: Sequence[str], log: Path, what: str, timeout: float = 20.0
) -> Iterator[re.Match[str]]:
    """Run ``python *args`` from the repo (stdout and stderr to ``log``) until it prints READY.

    The environment is ``start_target``'s: the repo on ``PYTHONPATH``, no ``XDG_RUNTIME_DIR``.
    Yields the ``READY port=(\\d+) pid=(\\d+)`` match; ``what`` names the process in failures
    (the log goes with an early exit). The process is terminated (killed if it lingers) after.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XDG_RUNTIME_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def ready() -> Optional[re.Match[str]]:
            if proc.poll() is not None:
                raise RuntimeError("%s exited:\n%s" % (what, log.read_text(errors="replace")))
            return re.search(r"READY port=(\d+) pid=(\d+)", log.read_text(errors="replace"))

        m = wait_for(ready, timeout=timeout, what="the %s's READY line" % what)
        assert isinstance(m, re.Match)
        yield m
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def agent_get(socket_path: str, path: str, timeout: float = 5.0) -> Tuple[int, Dict[str, Any]]:
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=socket_path), base_url="http://x", timeout=timeout
    ) as client:
        r = client.get(path)
        return r.status_code, r.json()


def raw_exchange(socket_path: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the agent and read until it closes (or the timeout)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(socket_path)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    try:
        return read_until_close(s)
    finally:
        s.close()


def read_until_close(s: socket.socket, wait: Optional[float] = None) -> bytes:
    """What the peer writes to ``s`` until it closes; stops quietly at the socket's timeout
    (``wait`` sets one) or a reset (a close right after its answer)."""
    if wait is not None:
        s.settimeout(wait)
    chunks = []
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:  # socket.timeout is an OSError
        pass
    return b"".join(chunks)


class BackgroundRequests:
    """Fire N HTTP requests at the app from threads; they may take long or never finish."""

    def __init__(
        self,
        port: int,
        path: str,
        count: int,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 90.0,
    ) -> None:
        self.results: List[Any] = []
        self.threads = [
            threading.Thread(
                target=self._one, args=(port, path, headers or {}, timeout), daemon=True
            )
            for _ in range(count)
        ]
        for t in self.threads:
            t.start()

    def _one(self, port: int, path: str, headers: Dict[str, str], timeout: float) -> None:
        try:
            r = httpx.get("http://127.0.0.1:%d%s" % (port, path), headers=headers, timeout=timeout)
            self.results.append(r.status_code)
        except Exception as exc:  # noqa: BLE001
            self.results.append(exc)


class RequestLoop:
    """One client thread asking for ``path`` on 127.0.0.1 again and again, each request on a new
    connection: load on new requests. Bounded in count and in time; ``stop()`` ends it sooner."""

    def __init__(
        self, port: int, path: str, max_requests: int = 5000, max_seconds: float = 60.0
    ) -> None:
        self.served = 0
        """Requests answered 200."""
        self.failures: List[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(port, path, max_requests, max_seconds), daemon=True
        )
        self._thread.start()

    def _run(self, port: int, path: str, max_requests: int, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url="http://127.0.0.1:%d" % port, timeout=5.0, limits=limits
        ) as client:
            while (
                not self._stop.is_set()
                and self.served < max_requests
                and time.monotonic() < deadline
            ):
                try:
                    r = client.get(path)
                except httpx.HTTPError as exc:
                    self.failures.append(exc)
                    self._stop.wait(0.05)  # a refused connection must not become a busy loop
                    continue
                if r.status_code == 200:
                    self.served += 1
                else:
                    self.failures.append(r.status_code)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def http_answers(port: int, path: str = "/", timeout: float = 2.0) -> bool:
    try:
        return httpx.get("http://127.0.0.1:%d%s" % (port, path), timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def run_cli(*args: str, timeout: float = 60.0, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cpinspect", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        **kw,
    )


def load_json(text: str) -> Any:
    return json.loads(text)


def run_as(pw: Any, func: Any) -> Any:
    """Run ``func()`` in a forked child dropped to user ``pw``; return what it returned.

    Forked, not exec'd: root's interpreter lives under /root (mode 0700), which another user
    cannot execute. The result comes back pickled through a pipe.
    """
    import os
    import pickle

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            os.write(write_end, pickle.dumps(func()))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pickle.loads(data)


def python_as(pw: Any, runtime: Any, code: str, *args: str, timeout: float = 60.0) -> str:
    """Run ``code`` with ``runtime``'s interpreter (an ``OtherUserRuntime``) as user ``pw``.

    Exec'd, not forked like ``run_as``: what runs is what that user can read, never the checkout
    or its .venv (which may be root's alone). Returns stdout; a failure shows stderr.
    """
    from tests.conftest import as_user

    result = subprocess.run(
        as_user(pw, [runtime.python, "-c", code, *args]),
        capture_output=True,
        text=True,
        cwd="/",
        env=runtime.env(),
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_left_stopped(pid: int) -> None:
    """Assert a stopped process is stopped after py-spy's ptrace let go of it, and stays so.

    The kernel wakes each thread py-spy detaches from, and it re-enters the group stop at once;
    under load ``/proc`` was seen reading "R" in that moment (2 of 150 runs beside 4
    spinners), then "T" again. A process someone resumed would stay "R".
    """
    from cpinspect.sources.pyspy import process_state

    wait_for(lambda: process_state(pid) == "T", timeout=5, what="pid %d stopped again" % pid)
    time.sleep(0.2)
    assert process_state(pid) == "T"


def wait_for_frame(pid: int, function: str, timeout: float = 20.0) -> List[Any]:
    """Wait until py-spy sees a thread of ``pid`` running ``function``; return those threads.

    From outside the process, so it proves a request is in a handler before anything (an agent,
    an injection) is loaded into the target.
    """
    from cpinspect.sources.pyspy import PySpySource

    source = PySpySource(pid)

    def seen() -> List[Any]:
        threads = source.threads().threads
        return [t for t in threads if any(f.function == function for f in t.stack)]

    found = wait_for(
        seen, timeout=timeout, what="py-spy to see %s() run in pid %d" % (function, pid)
    )
    assert isinstance(found, list)
    return found


def watched_module(tmp: Path) -> Path:
    """A module file for ``tests.apps.target --watch``: the Autoreloader watches it."""
    path = tmp / "cpi_watched.py"
    path.write_text("WATCHED = True\n")
    return path


def restart_reasons(output: str) -> List[str]:
    """Files CherryPy's Autoreloader restarted for, from a ``--engine-log`` target's output."""
    return re.findall(r"Restarting because (.+) changed\.", output)


def assert_first_restart_is_the_touch(target: Any, watched: Path, timeout: float = 30.0) -> None:
    """Touch ``watched`` and see the app restart for it: the positive control for "never
    restarted". The restart is detected by the target's own BOOT lines (an Autoreloader restart
    re-execs in place and prints BOOT again) and by the engine's log naming the file; that the
    touch causes the *first* restart, and the only one, shows the Autoreloader was running all
    along and restarted for nothing else before (it compares every watched file each 0.2 s, in
    one loop: a change made earlier would have restarted it first)."""
    assert target.boots() == 1 and restart_reasons(target.output()) == [], target.output()
    # The Autoreloader records a file's mtime the first time it scans it: touch only after that
    wait_for(
        lambda: (
            httpx.get(
                "http://127.0.0.1:%d/autoreload_watches" % target.port,
                params={"file": str(watched)},
                timeout=5,
            ).text
            == "yes"
        ),
        what="the Autoreloader to watch %s" % watched,
    )
    st = watched.stat()
    os.utime(watched, (st.st_atime, st.st_mtime + 10))

    def restarted() -> bool:
        text = target.output()
        return target.boots() == 2 and len(re.findall(r"^READY ", text, flags=re.M)) == 2

    wait_for(restarted, timeout=timeout, what="the Autoreloader to restart for %s" % watched)
    assert restart_reasons(target.output()) == [str(watched)], target.output()
    assert target.proc.poll() is None


class CliProcess:
    """``cpinspect ARGS`` running in the background, its stdout lines collected by a thread as
    they come (``lines``)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cpinspect", *args],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
