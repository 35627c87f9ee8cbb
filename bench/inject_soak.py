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
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    Load,
    Target,
    counts,
    fmt_window,
    inject_cycles,
    machine,
    median,
    settled_counts,
    start_target,
    window,
)

SETTLE = 2.0
"""Seconds of load before the baseline window opens (connections made, caches warm)."""
QUIESCE_TIMEOUT = 10.0
"""How long the thread and fd counts get to come back after the last detach."""


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
    args = parser.parse_args()
    if args.cycles < 1 or args.connections < 1 or args.baseline <= 0 or args.after <= 0:
        parser.error("--cycles and --connections must be positive, --baseline and --after > 0")

    print(f"inject_soak: {machine()}")
    with tempfile.TemporaryDirectory(prefix="inject-soak-") as tmp:
        target = start_target(args.threads, str(Path(tmp) / "target.err"), "inject_soak")
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
    try:
        load = Load(target.port, args.connections, max_load, out)
    except RuntimeError as exc:
        raise SystemExit(f"inject_soak: {exc}") from None
    try:
        time.sleep(SETTLE)
        base_lo = time.monotonic()
        base_counts = counts(target.pid)
        time.sleep(args.baseline)
        base_hi = cyc_lo = time.monotonic()
        cycles = inject_cycles(target.pid, args.cycles, args.budget)
        cyc_hi = time.monotonic()
        after_counts, settle_s = settled_counts(target.pid, base_counts, QUIESCE_TIMEOUT)
        after_lo = time.monotonic()
        time.sleep(args.after)
        after_hi = time.monotonic()
        final_counts = counts(target.pid) if target.alive() else (-1, -1)
        record = load.finish()
    finally:
        load.kill()
    starts, lats, failures = record.starts, record.latencies, record.failures

    done = len(cycles.inject_s)
    alive = target.alive()
    time.sleep(0.3)  # let the stdout reader catch up with a late BOOT line
    tracebacks = target.tracebacks()
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
