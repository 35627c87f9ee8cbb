"""What one wait for the GIL costs behind 100 spinning workers, and how many an answer takes.

    python bench/gil_floor.py [--shapes 200,1000] [--spin 100] [--floor-samples 12]
                              [--info 8] [--delta 6] [--full 3] [--dump 3] [--root DIR]

A real CherryPy process (``bench/bench_server.py`` with the agent, a pool of N, ``--spin`` of its
workers in ``/spin``, the rest of half the pool in ``/sleep``) with one more thread started in it
by this script (``--serve`` mode): the *prober*. It waits in ``recv`` on a Unix socket to us; we
write our ``time.monotonic()`` into it every ``--floor-every`` seconds (CLOCK_MONOTONIC is one
clock for every process); the prober, back from ``recv`` with the GIL, notes ``now - sent``: the
wait for the GIL of a thread woken by a socket. Then it sleeps 2 ms and notes the overshoot: the
wait of a thread woken from a short sleep. That is the floor: an agent thread woken by a request
waits that long at least before it can run a line of Python. A sample taken while an older
message was still unread is dropped (it would count the prober's own backlog).

Then, with the prober idle (blocked in ``recv``, not in the GIL's queue), the agent's answers,
each timed from the request's first byte to the answer's last, one after the other:
``/v1/info`` on a fresh connection with ``Connection: close`` (as ``dump`` asks it),
``/v1/threads`` in full on a fresh connection (as ``dump`` does), and ``/v1/threads?since=`` on
one keep-alive connection (as the TUI polls). Beside each: the CPU its handler threads spent
(``/proc/PID/task/TID/schedstat``, nanoseconds), the forced switches that CPU implies (one per
``sys.getswitchinterval()`` of 5 ms while others wait), and the acquisitions the wall time means
(wall / the floor's median wait, socket and sleep samples pooled). ``--dump`` also times
``cpinspect dump PID --json``.

``--root DIR``: the target imports ``cpinspect`` (its agent) from DIR instead, e.g. an archive of
an older commit, for before/after numbers from the same script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SWITCH_INTERVAL = 0.005
"""CPython's default ``sys.getswitchinterval()`` (the target never changes it)."""


# -- inside the target ---------------------------------------------------------------------


def _prober(path: str) -> None:
    """Wait in recv; note the GIL wait after each wake-up (socket, then a 2 ms sleep)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    socket_waits: List[float] = []
    sleep_waits: List[float] = []
    late = 0
    buf = b""
    while True:
        data = sock.recv(65536)
        now = time.monotonic()
        if not data:
            return
        buf += data
        lines = buf.split(b"\n")
        buf = lines.pop()
        if not lines:
            continue
        if lines[-1] == b"DONE":
            answer = {"socket": socket_waits, "sleep": sleep_waits, "late": late}
            answer["answers"], _ANSWERS[:] = list(_ANSWERS), []
            sock.sendall(json.dumps(answer).encode() + b"\n")
            socket_waits, sleep_waits, late = [], [], 0
            continue
        if len(lines) > 1:
            late += 1  # an older message waited unread: this wake-up measures our backlog
            continue
        socket_waits.append(now - float(lines[-1]))
        t0 = time.monotonic()
        time.sleep(0.002)
        sleep_waits.append(time.monotonic() - t0 - 0.002)


_ANSWERS: List[Dict[str, float]] = []
"""Each answer composed in the target: its wall and CPU from the request's parse to the
response in hand (``AgentServer._answer``) and the switch interval it ran under."""


def _watch_answers() -> None:
    """Wrap the agent server's ``_answer`` once it runs (bench only): ``_ANSWERS``."""
    from cpinspect.agent import installed

    while True:
        agent = installed()
        server = getattr(agent, "server", None)
        if server is not None:
            break
        time.sleep(0.1)
    inner = server._answer

    def answer(c: Any) -> None:
        interval = sys.getswitchinterval()
        w0, c0 = time.monotonic(), time.thread_time()
        try:
            inner(c)
        finally:
            cpu, wall = time.thread_time() - c0, time.monotonic() - w0
            _ANSWERS.append({"cpu": cpu, "wall": wall, "interval": interval})
            del _ANSWERS[:-1000]

    server._answer = answer


def serve(argv: List[str]) -> None:
    root = os.environ.get("GIL_FLOOR_ROOT")
    if root:
        sys.path.insert(0, root)
    path = os.environ["GIL_FLOOR_SOCK"]
    threading.Thread(target=_prober, args=(path,), name="gil-floor-prober", daemon=True).start()
    threading.Thread(target=_watch_answers, name="gil-floor-answers", daemon=True).start()
    import bench_server

    sys.argv = [str(HERE / "bench_server.py"), *argv]
    sys.exit(bench_server.main())


# -- the measuring side --------------------------------------------------------------------

from benchlib import (  # noqa: E402
    Server,
    UnixHTTPConnection,
    agent_get,
    machine,
    open_requests,
    percentile,
    start_ready,
)


def start(threads: int, spin: int, root: Optional[str]) -> Tuple[Server, List[socket.socket], Any]:
    tmp = tempfile.mkdtemp(prefix="gil-floor-")
    path = os.path.join(tmp, "prober.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    os.environ["GIL_FLOOR_SOCK"] = path
    if root:
        os.environ["GIL_FLOOR_ROOT"] = root
    else:
        os.environ.pop("GIL_FLOOR_ROOT", None)
    srv = start_ready(
        [__file__, "--serve", "--agent", "--threads", str(threads)], "target", timeout=60
    )
    listener.settimeout(20)
    prober, _ = listener.accept()
    listener.close()
    os.unlink(path)
    os.rmdir(tmp)
    busy = threads // 2
    held = open_requests(srv.port, "/sleep?s=900", max(0, busy - spin))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(os.listdir(f"/proc/{srv.pid}/task")) < threads:
        time.sleep(0.2)
    return srv, held, prober


def agent_tids(srv: Server) -> List[int]:
    assert srv.socket is not None
    body = agent_get(srv.socket, "/v1/threads", timeout=30)
    return [t["native_id"] for t in body["threads"] if t["role"] == "agent"]


def task_cpu_ns(pid: int, tids: List[int]) -> int:
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def floor(prober: socket.socket, samples: int, every: float) -> Dict[str, Any]:
    for _ in range(samples):
        prober.sendall(b"%r\n" % time.monotonic())
        time.sleep(every * random.uniform(0.8, 1.2))
    time.sleep(every)
    prober.sendall(b"DONE\n")
    prober.settimeout(30)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = prober.recv(65536)
        if not chunk:
            raise RuntimeError("the prober closed its socket")
        buf += chunk
    result: Dict[str, Any] = json.loads(buf)
    return result


def raw_get(path: str, target: str, timeout: float) -> Tuple[float, int]:
    """A fresh connection, ``Connection: close``; (seconds to the last byte, bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    t0 = time.monotonic()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: cpinspect\r\nConnection: close\r\n\r\n" % target.encode())
    size = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    took = time.monotonic() - t0
    s.close()
    return took, size


class Timed:
    def __init__(self, name: str) -> None:
        self.name = name
        self.walls: List[float] = []
        self.cpus: List[float] = []
        self.sizes: List[int] = []
        self.answers: List[Dict[str, float]] = []


def measure(
    srv: Server,
    tids: List[int],
    name: str,
    count: int,
    call: Any,
    gap: float = 0.3,
    prober: Optional[socket.socket] = None,
) -> Timed:
    out = Timed(name)
    if prober is not None:
        floor(prober, 0, 0.0)  # (the answers composed before these: dropped)
    for _ in range(count):
        time.sleep(gap)
        c0 = task_cpu_ns(srv.pid, tids)
        wall, size = call()
        time.sleep(0.05)  # the handler thread's last steps after the send
        out.cpus.append((task_cpu_ns(srv.pid, tids) - c0) / 1e9)
        out.walls.append(wall)
        out.sizes.append(size)
    if prober is not None:
        out.answers = floor(prober, 0, 0.0)["answers"]
    return out


def delta_caller(path: str) -> Any:
    conn = UnixHTTPConnection(path, timeout=120)
    cursor: List[str] = []

    def call() -> Tuple[float, int]:
        target = "/v1/threads" + (f"?since={cursor[0]}" if cursor else "")
        t0 = time.monotonic()
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        took = time.monotonic() - t0
        cursor[:] = [json.loads(body)["cursor"]]
        return took, len(body)

    call()  # the first answer is a full one: the cursor to ask from
    return call


def timed_dump(pid: int) -> Tuple[float, int]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "cpinspect", "dump", str(pid), "--json"],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    took = time.monotonic() - t0
    return took, len(proc.stdout) if proc.returncode == 0 else -1


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def dist(values: List[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"median {ms(statistics.median(values))}  p95 {ms(percentile(values, 95))}  "
        f"max {ms(max(values))}  (n={len(values)})"
    )


def report(t: Timed, wait: float) -> None:
    wall = statistics.median(t.walls)
    cpu = statistics.median(t.cpus)
    forced = int(cpu / SWITCH_INTERVAL)
    size = statistics.median(t.sizes)
    print(
        f"  {t.name:<22} wall median {wall:6.2f} s (range {min(t.walls):.2f}-{max(t.walls):.2f})"
        f"  agent CPU {cpu * 1000:5.1f} ms (>= {forced} forced switches)"
        f"  ~{wall / wait:4.1f} acquisitions  {size / 1e6:.2f} MB  n={len(t.walls)}"
    )
    if t.answers:
        # Composing, inside the target: the wall beyond the CPU is waits for the GIL.
        big = [a for a in t.answers if a["cpu"] >= SWITCH_INTERVAL]
        lost = sorted(a["wall"] - a["cpu"] for a in t.answers)
        raised = sum(1 for a in t.answers if a["interval"] > SWITCH_INTERVAL)
        clean = sum(1 for a in big if a["wall"] - a["cpu"] < 0.003)
        print(
            f"  {'':<22} composing: lost to waits median {ms(statistics.median(lost))}"
            f" max {ms(lost[-1])}; {clean}/{len(big)} answers over 5 ms of CPU in one hold;"
            f" {raised}/{len(t.answers)} under a raised switch interval"
        )


def run_shape(threads: int, args: argparse.Namespace) -> None:
    srv, held, prober = start(threads, args.spin, args.root)
    try:
        assert srv.socket is not None
        tids = agent_tids(srv)  # (before the spinners: a quick answer)
        spinners = open_requests(srv.port, "/spin?s=900", args.spin)
        held += spinners
        time.sleep(2.0)  # the spinners reach their handlers
        print(f"== pool {threads}, {threads // 2} busy, {args.spin} spinning")
        f = floor(prober, args.floor_samples, args.floor_every)
        pooled = f["socket"] + f["sleep"]
        wait = statistics.median(pooled) if pooled else SWITCH_INTERVAL
        print(f"  GIL wait after a socket wake  {dist(f['socket'])}  ({f['late']} late, dropped)")
        print(f"  GIL wait after a 2 ms sleep   {dist(f['sleep'])}")
        print(f"  one acquisition (both pooled) median {ms(wait)}: the unit of ~acquisitions below")
        path = srv.socket
        results = [
            measure(
                srv,
                tids,
                "/v1/info (fresh conn)",
                args.info,
                lambda: raw_get(path, "/v1/info", 60),
                prober=prober,
            ),
        ]
        if args.delta:
            results.append(
                measure(
                    srv, tids, "/v1/threads delta", args.delta, delta_caller(path), prober=prober
                )
            )
        if args.full:
            results.append(
                measure(
                    srv,
                    tids,
                    "/v1/threads full",
                    args.full,
                    lambda: raw_get(path, "/v1/threads", 120),
                    prober=prober,
                )
            )
        for t in results:
            report(t, wait)
        if args.dump:
            d = measure(
                srv, tids, "dump --json", args.dump, lambda: timed_dump(srv.pid), 0.5, prober
            )
            report(d, wait)
    finally:
        for s in held:
            s.close()
        prober.close()
        srv.stop()


def main() -> int:
    if "--serve" in sys.argv[1:2]:
        serve(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="200,1000", help="pool sizes, comma-separated")
    parser.add_argument("--spin", type=int, default=100)
    parser.add_argument("--floor-samples", type=int, default=12)
    parser.add_argument("--floor-every", type=float, default=1.5)
    parser.add_argument("--info", type=int, default=8)
    parser.add_argument("--delta", type=int, default=6)
    parser.add_argument("--full", type=int, default=3)
    parser.add_argument("--dump", type=int, default=0, help="also time `cpinspect dump --json`")
    parser.add_argument("--root", default=None, help="the target's cpinspect from this directory")
    args = parser.parse_args()
    try:
        shapes = [int(x) for x in args.shapes.split(",") if x]
    except ValueError:
        print("gil_floor: --shapes takes pool sizes like 200,1000", file=sys.stderr)
        return 2
    print(f"gil_floor: {machine()}")
    print(f"agent from {args.root or ROOT}; switch interval {SWITCH_INTERVAL * 1000:.0f} ms")
    for threads in shapes:
        run_shape(threads, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
