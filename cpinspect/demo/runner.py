"""Run the demo shop and its load generator as child processes, and always clean them up.

``DemoProcesses`` is what ``cpinspect demo`` and the integration tests use::

    with DemoProcesses(threads=8) as demo:
        inspect(demo.pid, demo.port)

Cleanup is layered, because the parent may leave in any way:

* ``stop()`` (from ``__exit__``, a ``finally`` or ``atexit``) sends SIGTERM to each child's
  process group, waits briefly, then SIGKILLs and reaps;
* each child asks the kernel for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, see
  ``_lifeline``), which covers a parent killed with SIGKILL. Linux ties that signal to the
  *thread* that forked the child, so create ``DemoProcesses`` on a thread that outlives it
  (normally the main thread);
* the children run in their own session and process group, so a Ctrl-C typed in the terminal
  reaches only the parent and the children do not print tracebacks over the TUI.

The children's stdout and stderr go to log files in a temporary directory, never to the terminal.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, List, Optional, Type

import cpinspect
from cpinspect.demo._lifeline import PARENT_ENV
from cpinspect.errors import CpinspectError

READY_TIMEOUT = 15.0
STOP_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL."""

_READY = re.compile(rb"^READY port=(\d+) pid=(\d+)")


class DemoFailed(CpinspectError):
    """The demo app could not be started."""

    exit_code = 11


class DemoProcesses:
    """The demo app (``.pid``, ``.port``) and, with ``load=True``, the incident's load."""

    def __init__(
        self,
        threads: int = 8,
        load: bool = True,
        duration: float = 600.0,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.threads = threads
        self.load = load
        self.duration = duration
        self.ready_timeout = ready_timeout
        self.pid = 0
        self.port = 0
        self.log_dir = ""
        self.app_process: Optional[subprocess.Popen[bytes]] = None
        self.load_process: Optional[subprocess.Popen[bytes]] = None
        self._logs: List[IO[bytes]] = []
        self._drain: Optional[threading.Thread] = None
        self._stopped = False

    # --- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> DemoProcesses:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def start(self) -> DemoProcesses:
        if self.app_process is not None:
            raise RuntimeError("DemoProcesses.start() called twice")
        self.log_dir = tempfile.mkdtemp(prefix="cpinspect-demo-")
        atexit.register(self.stop)
        try:
            self._start_app()
            if self.load:
                self._start_load()
        except DemoFailed:
            self.stop(keep_logs=True)  # the message points at the logs
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, keep_logs: bool = False) -> None:
        """Terminate, then kill, and reap every child. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        children = [p for p in (self.load_process, self.app_process) if p is not None]
        try:
            for proc in children:
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for proc in children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
        finally:  # also when a second Ctrl-C interrupts the grace period
            for proc in children:
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5.0)
        if self._drain is not None:
            self._drain.join(1.0)  # the app is gone, so its stdout is at EOF
        for proc in children:
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()
        if self.log_dir and not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL every child's process group now, without waiting: for a parent about to end
        with ``os._exit``, where no ``finally`` or ``atexit`` runs. From any thread."""
        for proc in self.children():
            _signal_group(proc, signal.SIGKILL)

    def children(self) -> List[subprocess.Popen[bytes]]:
        return [p for p in (self.app_process, self.load_process) if p is not None]

    # --- helpers ------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The children import cpinspect from wherever this process found it, installed or not.
        root = os.path.dirname(os.path.dirname(os.path.abspath(cpinspect.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        env[PARENT_ENV] = str(os.getpid())
        return env

    def _log(self, name: str) -> IO[bytes]:
        log = open(os.path.join(self.log_dir, name), "ab")  # noqa: SIM115 (closed in stop())
        self._logs.append(log)
        return log

    def _spawn(
        self, module: str, args: List[str], log: IO[bytes], pipe_stdout: bool = False
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            env=self._env(),
            close_fds=True,
            start_new_session=True,
        )

    def _start_app(self) -> None:
        log = self._log("app.log")
        self.app_process = proc = self._spawn(
            "cpinspect.demo.app",
            ["--port", "0", "--threads", str(self.threads)],
            log,
            pipe_stdout=True,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        buffer = b""
        while True:
            match = next(filter(None, map(_READY.match, buffer.splitlines())), None)
            if match is not None:
                self.port, self.pid = int(match.group(1)), int(match.group(2))
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoFailed(
                    f"the demo app did not start within {self.ready_timeout:g} s"
                    + self._tail("app.log")
                )
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            chunk = os.read(fd, 65536) if readable else b""
            if readable and not chunk:  # stdout closed: the app exited
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)
                raise DemoFailed(
                    f"the demo app exited with code {proc.returncode} before it was ready"
                    + self._tail("app.log")
                )
            buffer += chunk
        # The app keeps writing (CherryPy's access log goes to stdout); a full pipe would block
        # its workers, so copy the rest into the log file.
        log.write(buffer)
        log.flush()
        self._drain = threading.Thread(
            target=_copy, args=(fd, log), name="cpinspect-demo-log", daemon=True
        )
        self._drain.start()

    def _start_load(self) -> None:
        args = ["--port", str(self.port), "--workers", str(self.threads)]
        args += ["--duration", f"{self.duration:g}"]
        self.load_process = self._spawn("cpinspect.demo.load", args, self._log("load.log"))

    def _tail(self, name: str, lines: int = 3) -> str:
        """The last lines of a child's log, for a one-line error message."""
        path = os.path.join(self.log_dir, name)
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 4096))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        return (": " + " | ".join(tail) if tail else "") + f" (log: {path})"


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only while the child is unreaped: its pid (= its process group id, from
    # start_new_session) cannot have been reused yet.
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(OSError):
            proc.send_signal(sig)


def _copy(fd: int, log: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            log.write(chunk)
            log.flush()
