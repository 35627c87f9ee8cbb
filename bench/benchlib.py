"""Helpers the benchmark scripts share: start the bench server, talk to its agent, summarise.

Every process started here runs in its own process group and is killed with it; only
127.0.0.1 and the agent's Unix socket are ever contacted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over the agent's Unix socket."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("cpinspect", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def agent_get_raw(path: str, endpoint: str, timeout: float = 5.0) -> bytes:
    """The body of a 200 answer from the agent at ``path`` (one fresh connection)."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", endpoint)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"agent answered {response.status}: {body[:200]!r}")
    return body


def agent_get(path: str, endpoint: str = "/v1/threads", timeout: float = 5.0) -> Dict[str, Any]:
    result: Dict[str, Any] = json.loads(agent_get_raw(path, endpoint, timeout))
    return result


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    pid: int
    socket: Optional[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def can_pin(cpus: int) -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= cpus


def pin(cpu: int) -> None:
    """Pin this process (and the threads it starts from now on) to CPU ``cpu``; -1: leave it."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def start_ready(
    args: Sequence[str], what: str, timeout: float = 15.0, unset: Sequence[str] = ()
) -> Server:
    """Start ``python *args`` in its own process group; wait for its first line, ``READY ...``.

    The child gets the repo on ``PYTHONPATH`` and not the environment variables in ``unset``; its
    first line must be ``READY port=<port> pid=<pid> socket=<agent socket or ->``, within
    ``timeout`` seconds. On failure the child is killed and ``RuntimeError`` names ``what``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    for name in unset:
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            Server(proc, 0, proc.pid, None).stop()
            raise RuntimeError(f"the {what} did not start")
        line += chunk
    m = re.match(rb"READY port=(\d+) pid=(\d+) socket=(\S+)", line)
    if m is None:
        Server(proc, 0, proc.pid, None).stop()
        raise RuntimeError(f"unexpected first line from the {what}: {line!r}")
    sock = m.group(3).decode()
    return Server(proc, int(m.group(1)), int(m.group(2)), None if sock == "-" else sock)


def start_server(agent: bool, threads: int = 8, cpu: int = -1, timeout: float = 15.0) -> Server:
    args = [str(HERE / "bench_server.py"), "--threads", str(threads), "--cpu", str(cpu)]
    if agent:
        args.append("--agent")
    return start_ready(args, "bench server", timeout)


@contextlib.contextmanager
def server(agent: bool, threads: int = 8, cpu: int = -1) -> Iterator[Server]:
    srv = start_server(agent, threads, cpu)
    try:
        yield srv
    finally:
        srv.stop()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 300 samples is the 297th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def machine() -> str:
    try:
        import cherrypy

        cp = cherrypy.__version__
    except ImportError:  # pragma: no cover
        cp = "?"
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, CherryPy {cp}, load avg {os.getloadavg()[0]:.2f}"
    )


def median(values: List[float]) -> float:
    return statistics.median(values)


def open_requests(port: int, path: str, count: int, timeout: float = 120.0) -> List[socket.socket]:
    """Send ``count`` requests and leave them unanswered (the caller closes the sockets)."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii"))
        socks.append(s)
    return socks


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
