"""Safety under load: repeated inject/detach cycles into a CherryPy app that is serving traffic.

    python bench/inject_soak.py [--cycles 50] [--connections 4] [--baseline 5] [--after 5]

A real CherryPy app (tests/apps/target.py, started *without* any cpinspect code, pool of 8,
Autoreloader on) and a load generator in a separate process: ``--connections`` keep-alive
``http.client`` connections sending ``GET /`` back to back, each request's start time and
latency recorded, every failure counted (bounded: it stops after ``--max-load-seconds``). After a
``--baseline``-second window of load alone, ``--cycles`` inject/detach cycles run (each: inject
the agent with gdb, one ``GET /v1/threads`` through it that must list threads, detach), then
``--after`` more seconds of load alone.

Printed: requests and failed requests (goal 0), crashes (the target alive, the same pid, and
``BOOT`` printed once: no Autoreloader restart; goal 0), p99 and worst request latency during
the cycles against the baseline window, inject and detach times per cycle, and the target's
thread and open-fd counts at the baseline and after the last detach (goal: equal).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import psutil
from benchlib import ROOT, agent_get, machine, median, percentile

sys.path.insert(0, str(ROOT))

from cpinspect.attach.inject import detach, inject

SETTLE = 2.0
"""Seconds of load before the baseline window opens (connections made, caches warm)."""
QUIESCE_TIMEOUT = 10.0
"""How long the thread and fd counts get to come back after the last detach."""


# --- the load generator (a separate process) ---------------------------------------------------


def load_main(port: int, connections: int, max_seconds: float, out: str) -> int:
    """Send ``GET /`` back to back until stdin closes or ``max_seconds`` pass; write records."""
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


# --- the target --------------------------------------------------------------------------------


@dataclass
class Target:
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
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def start_target(threads: int, stderr_path: str) -> Target:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "tests.apps.target", "--agent", "none"]
    args += ["--threads", str(threads), "--autoreload"]
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
    raise SystemExit("inject_soak: the target did not start")


def counts(pid: int) -> Tuple[int, int]:
    p = psutil.Process(pid)
    return p.num_threads(), p.num_fds()


def settled_counts(pid: int, baseline: Tuple[int, int]) -> Tuple[Tuple[int, int], float]:
    """The counts once back at ``baseline`` (or after ``QUIESCE_TIMEOUT``), and how long it took."""
    t0 = time.monotonic()
    now = counts(pid)
    while now != baseline and time.monotonic() - t0 < QUIESCE_TIMEOUT:
        time.sleep(0.1)
        now = counts(pid)
    return now, time.monotonic() - t0


# --- the driver --------------------------------------------------------------------------------


@dataclass
class Cycles:
    inject_s: List[float] = field(default_factory=list)
    gdb_s: List[float] = field(default_factory=list)
    probe_s: List[float] = field(default_factory=list)
    detach_s: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


def run_cycles(pid: int, cycles: int, budget: float) -> Cycles:
    out = Cycles()
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
            answer: Dict[str, Any] = agent_get(result.endpoint.connect_path, timeout=5.0)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50, help="inject/detach cycles (50)")
    parser.add_argument("--connections", type=int, default=4, help="load connections (4)")
    parser.add_argument("--threads", type=int, default=8, help="the target's pool size (8)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load alone (5)")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after the cycles (5)")
    parser.add_argument(
        "--budget", type=float, default=300.0, help="max seconds for the cycles (300)"
    )
    parser.add_argument("--load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--max-load-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load is not None:
        return load_main(args.load, args.connections, args.max_load_seconds, args.out)
    if args.cycles < 1 or args.connections < 1 or args.baseline <= 0 or args.after <= 0:
        parser.error("--cycles and --connections must be positive, --baseline and --after > 0")

    print(f"inject_soak: {machine()}")
    with tempfile.TemporaryDirectory(prefix="inject-soak-") as tmp:
        target = start_target(args.threads, str(Path(tmp) / "target.err"))
        try:
            return soak(args, target, str(Path(tmp) / "load.json"))
        finally:
            target.stop()


def soak(args: argparse.Namespace, target: Target, out: str) -> int:
    print(
        f"target pid {target.pid} (tests/apps/target.py, pool {args.threads}, Autoreloader on, "
        f"no agent); load: {args.connections} keep-alive connections, GET / back to back; "
        f"{args.cycles} cycles\n",
        flush=True,
    )
    max_load = SETTLE + args.baseline + args.budget + args.after + QUIESCE_TIMEOUT + 30
    load = subprocess.Popen(
        [
            *(sys.executable, __file__, "--load", str(target.port)),
            *("--connections", str(args.connections), "--out", out),
            *("--max-load-seconds", str(max_load)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert load.stdout is not None and load.stdin is not None
        if load.stdout.readline().strip() != "GO":
            raise SystemExit("inject_soak: the load generator failed to start")
        time.sleep(SETTLE)
        base_lo = time.monotonic()
        base_counts = counts(target.pid)
        time.sleep(args.baseline)
        base_hi = cyc_lo = time.monotonic()
        cycles = run_cycles(target.pid, args.cycles, args.budget)
        cyc_hi = time.monotonic()
        after_counts, settle_s = settled_counts(target.pid, base_counts)
        after_lo = time.monotonic()
        time.sleep(args.after)
        after_hi = time.monotonic()
        final_counts = counts(target.pid) if target.alive() else (-1, -1)
        load.stdin.close()
        load.wait(60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    with open(out) as f:
        data = json.load(f)
    starts: List[float] = data["starts"]
    lats: List[float] = data["latencies"]
    failures: List[Tuple[float, str]] = data["failures"]

    done = len(cycles.inject_s)
    alive = target.alive()
    time.sleep(0.3)  # let the stdout reader catch up with a late BOOT line
    with open(target.stderr_path, "rb") as f:
        tracebacks = f.read().count(b"Traceback")
    crashes = int(not alive) + (target.boots - 1)

    print(f"cycles    {done}/{args.cycles} completed", end="")
    print("" if not cycles.errors else f"; stopped: {cycles.errors[0]}")
    for name, values in (
        ("inject", cycles.inject_s),
        ("  of it gdb", cycles.gdb_s),
        ("probe", cycles.probe_s),
        ("detach", cycles.detach_s),
    ):
        if values:
            ms = [v * 1000 for v in values]
            print(f"{name:<11} median {median(ms):7.1f} ms   max {max(ms):7.1f} ms")
    print()
    print(fmt_window("baseline", window(starts, lats, base_lo, base_hi), base_hi - base_lo))
    print(fmt_window("cycles", window(starts, lats, cyc_lo, cyc_hi), cyc_hi - cyc_lo))
    print(fmt_window("after", window(starts, lats, after_lo, after_hi), after_hi - after_lo))
    print()
    in_cycles = sum(1 for t, _ in failures if cyc_lo <= t < cyc_hi)
    print(
        f"requests  {len(starts) + len(failures)} total, {len(failures)} failed "
        f"({in_cycles} during the cycles)"
    )
    for t, why in failures[:5]:
        print(f"          failure at +{t - base_lo:.2f} s: {why}")
    print(
        f"crashes   {crashes} (target alive: {'yes' if alive else 'NO'}, BOOT printed "
        f"{target.boots} time(s), tracebacks on its stderr: {tracebacks})"
    )
    print(
        f"threads   baseline {base_counts[0]}, after the last detach {after_counts[0]} "
        f"(settled in {settle_s:.1f} s), at the end {final_counts[0]}"
    )
    print(
        f"open fds  baseline {base_counts[1]}, after the last detach {after_counts[1]}, "
        f"at the end {final_counts[1]}"
    )
    met = (
        not failures
        and crashes == 0
        and done == args.cycles
        and after_counts == base_counts
        and final_counts == base_counts
    )
    print(
        "\ngoal: 0 failed requests, 0 crashes, threads and fds back to baseline -> "
        + ("met" if met else "NOT met")
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
