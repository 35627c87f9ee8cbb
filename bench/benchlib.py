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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

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


def run_json_child(
    script: str, args: Sequence[str], timeout: float, what: str, root: Optional[Path] = None
) -> Dict[str, Any]:
    """Run ``script`` in a child interpreter (from ``root``, another checkout, when given: on
    ``PYTHONPATH`` and as the working directory) and return the JSON of its ``RESULT `` line;
    exit saying ``what`` failed, with the end of its stderr, when there is none."""
    env = dict(os.environ, PYTHONPATH=str(root)) if root is not None else None
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=str(root or ROOT),
        env=env,
        timeout=timeout,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit("%s failed:\n%s" % (what, done.stderr[-3000:]))
    result: Dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


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


def keep_alive_load(port: int, path: str, seconds: float, connections: int) -> Tuple[int, int]:
    """``GET path`` back to back for ``seconds`` on ``connections`` keep-alive connections (one
    thread each): (answered 200, failed)."""
    end = time.monotonic() + seconds
    done = [0] * connections
    failed = [0] * connections

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < end:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    done[i] += 1
                else:
                    failed[i] += 1
            except (OSError, http.client.HTTPException):
                failed[i] += 1
                conn.close()
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(done), sum(failed)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


# --- soaks: a load generator, a target without cpinspect, its resources -------------------------
# (bench/inject_soak.py and bench/soak.py)


def load_main(port: int, connections: int, max_seconds: float, out: str) -> int:
    """Send ``GET /`` back to back until stdin closes or ``max_seconds`` pass; write records.

    Run in a process of its own by ``start_load``: ``connections`` keep-alive ``http.client``
    connections to 127.0.0.1:``port``, each request's start time and latency recorded, every
    failure (not a 200 ``hello``) counted with its time and reason.
    """
    stop = threading.Event()
    end = time.monotonic() + max_seconds
    starts: List[List[float]] = [[] for _ in range(connections)]
    latencies: List[List[float]] = [[] for _ in range(connections)]
    failures: List[List[Tuple[float, str]]] = [[] for _ in range(connections)]

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # EOF: the driver is done
        stop.set()

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and body == b"hello"
                why = "" if ok else f"status {response.status}: {body[:60]!r}"
            except (OSError, http.client.HTTPException) as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
                conn.close()  # http.client reconnects on the next request
            t1 = time.monotonic()
            if ok:
                starts[i].append(t0)
                latencies[i].append(t1 - t0)
            else:
                failures[i].append((t0, why))
                time.sleep(0.01)
        conn.close()

    threading.Thread(target=watch_stdin, daemon=True).start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    print("GO", flush=True)
    for t in threads:
        t.join(max_seconds + 30)
    result = {
        "starts": [v for part in starts for v in part],
        "latencies": [v for part in latencies for v in part],
        "failures": [v for part in failures for v in part],
    }
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


@dataclass
class LoadRecord:
    """What the load generator saw: successful requests (start, latency) and failures."""

    starts: List[float]
    latencies: List[float]
    failures: List[Tuple[float, str]]


class Load:
    """The load generator in a process of its own (``python bench/benchlib.py --load PORT``).

    Bounded twice: it stops when ``finish`` closes its stdin, and after ``max_seconds`` anyway.
    Times are ``time.monotonic()``, comparable with the driver's (same clock, same machine).
    """

    def __init__(self, port: int, connections: int, max_seconds: float, out: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                *(sys.executable, str(HERE / "benchlib.py"), "--load", str(port)),
                *("--connections", str(connections), "--out", out),
                *("--max-load-seconds", str(max_seconds)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "GO":
            self.kill()
            raise RuntimeError("the load generator failed to start")

    def finish(self) -> LoadRecord:
        """Stop the load and read its records."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        finally:
            self.kill()
        with open(self.out) as f:
            data = json.load(f)
        return LoadRecord(data["starts"], data["latencies"], [tuple(v) for v in data["failures"]])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Target:
    """tests/apps/target.py in its own process group; ``boots`` counts its ``BOOT`` lines."""

    proc: subprocess.Popen[bytes]
    port: int
    pid: int
    stderr_path: str
    boots: int = 1
    lines: List[str] = field(default_factory=list)

    def read_rest(self) -> None:
        """Keep reading the target's stdout (BOOT lines) in a thread until it closes."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if len(self.lines) < 1000:
                self.lines.append(line)
            if line.startswith("BOOT "):
                self.boots += 1

    def alive(self) -> bool:
        import psutil

        try:
            return bool(psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def tracebacks(self) -> int:
        with open(self.stderr_path, "rb") as f:
            return f.read().count(b"Traceback")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_target(
    threads: int, stderr_path: str, what: str = "soak", extra: Sequence[str] = ()
) -> Target:
    """tests/apps/target.py with no cpinspect code (``--agent none``), Autoreloader on;
    ``extra``: more of its options (``--engine-log``: its restarts say why in ``lines``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "tests.apps.target", "--agent", "none"]
    args += ["--threads", str(threads), "--autoreload", *extra]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            args,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    boots = 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        boots += line.startswith("BOOT ")
        m = re.search(r"READY port=(\d+) pid=(\d+)", line)
        if m:
            target = Target(proc, int(m.group(1)), int(m.group(2)), stderr_path, boots=boots)
            threading.Thread(target=target.read_rest, daemon=True).start()
            return target
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    raise SystemExit(f"{what}: the target did not start")


def counts(pid: int) -> Tuple[int, int]:
    """The process's (thread count, open fd count)."""
    import psutil

    p = psutil.Process(pid)
    return p.num_threads(), p.num_fds()


def settled_counts(
    pid: int, baseline: Tuple[int, int], timeout: float = 10.0
) -> Tuple[Tuple[int, int], float]:
    """The counts once back at ``baseline`` (or after ``timeout``), and how long it took."""
    t0 = time.monotonic()
    now = counts(pid)
    while now != baseline and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
        now = counts(pid)
    return now, time.monotonic() - t0


def window(
    starts: List[float], latencies: List[float], lo: float, hi: float
) -> Optional[Tuple[int, float, float, float]]:
    """(count, p50, p99, max) in ms of the requests that started in [lo, hi)."""
    ms = [lat * 1000 for t, lat in zip(starts, latencies) if lo <= t < hi]
    if not ms:
        return None
    return len(ms), percentile(ms, 50), percentile(ms, 99), max(ms)


def fmt_window(name: str, w: Optional[Tuple[int, float, float, float]], seconds: float) -> str:
    if w is None:
        return f"{name:<9} no requests"
    n, p50, p99, worst = w
    return (
        f"{name:<9} {n:7d} requests in {seconds:5.1f} s ({n / seconds:6.0f} req/s)   "
        f"p50 {p50:6.2f} ms   p99 {p99:7.2f} ms   worst {worst:7.2f} ms"
    )


@dataclass
class InjectCycles:
    """Per-cycle times of ``inject_cycles`` (seconds) and why it stopped, if it did."""

    inject_s: List[float] = field(default_factory=list)
    gdb_s: List[float] = field(default_factory=list)
    probe_s: List[float] = field(default_factory=list)
    detach_s: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


def inject_cycles(pid: int, cycles: int, budget: float) -> InjectCycles:
    """``cycles`` real cycles of ``inject(pid)`` (gdb), one ``GET /v1/threads`` through the new
    agent that must list threads, ``detach(pid)`` (gdb). Stops at the first failure or when
    ``budget`` seconds have passed."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from cpinspect.attach.inject import detach, inject

    out = InjectCycles()
    give_up = time.monotonic() + budget
    for n in range(cycles):
        if time.monotonic() > give_up:
            out.errors.append(f"budget of {budget:g} s reached after {n} cycles")
            break
        try:
            t0 = time.perf_counter()
            result = inject(pid)
            t1 = time.perf_counter()
            assert result.endpoint is not None and not result.already
            answer = agent_get(result.endpoint.connect_path, timeout=5.0)
            t2 = time.perf_counter()
            if not answer.get("threads"):
                raise RuntimeError("the agent answered /v1/threads without threads")
            detach(pid)
            t3 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - reported, and the soak stops
            out.errors.append(f"cycle {n + 1}: {type(exc).__name__}: {exc}")
            break
        out.inject_s.append(t1 - t0)
        out.gdb_s.append(result.schedule_seconds)
        out.probe_s.append(t2 - t1)
        out.detach_s.append(t3 - t2)
    return out


if __name__ == "__main__":
    import argparse

    _parser = argparse.ArgumentParser(description="the soaks' load generator (see load_main)")
    _parser.add_argument("--load", type=int, metavar="PORT", required=True)
    _parser.add_argument("--connections", type=int, default=4)
    _parser.add_argument("--max-load-seconds", type=float, default=600.0)
    _parser.add_argument("--out", required=True)
    _args = _parser.parse_args()
    sys.exit(load_main(_args.load, _args.connections, _args.max_load_seconds, _args.out))
