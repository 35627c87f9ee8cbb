"""What ``find_all`` costs after every poll: 1,000 and 200 workers, starved and healthy (issue 12).

    python bench/findings_cost.py [--workers 1000,200] [--history 60] [--runs 50]

Hand-built snapshots (no process: the function is pure): a pool of N workers, every one busy on
10 routes in a socket read with 5 connections queued (the pool-starvation finding, the costliest
family: route grouping, CPU deltas against the history, thread evidence), and the same pool idle
(what a healthy poll pays). ``--history`` earlier snapshots (the store keeps ~60 s at 1 Hz).
Printed: min and median ms per call, and the ratio to the goal (5 ms at 1,000 threads).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import List

from cpinspect.findings import find_all
from cpinspect.model import (
    Frame,
    Phase,
    PoolInfo,
    RequestInfo,
    Role,
    Snapshot,
    SourceKind,
    ThreadInfo,
    ThreadsSnapshot,
)

GOAL_MS = 5.0
BIND = "127.0.0.1:8080"
STACK = (
    Frame("/usr/lib/python3.11/socket.py", 705, "readinto"),
    Frame("/srv/shop/db.py", 80, "fetch_all", is_app=True),
    Frame("/srv/shop/reports.py", 22, "export", is_app=True),
)


def snapshot(workers: int, at: float, cpu: float, busy: bool) -> Snapshot:
    threads = [
        ThreadInfo(
            ident=1000 + i,
            name="CP Server Thread-%d" % i,
            role=Role.WORKER,
            busy=busy,
            phase=Phase.HANDLER if busy else Phase.IDLE,
            request=RequestInfo("GET", "/route%d" % (i % 10), started_at=50.0) if busy else None,
            elapsed=at - 50.0 if busy else None,
            cpu_time=cpu,
            stack=STACK if busy else (),
            pool=BIND,
        )
        for i in range(workers)
    ]
    n = workers if busy else 0
    pool = PoolInfo(BIND, workers, n, workers - n, 5 if busy else 0, workers)
    return Snapshot(
        taken_at=at,
        source=SourceKind.AGENT,
        threads=ThreadsSnapshot(at, tuple(threads), pools=(pool,)),
    )


def measure(now: Snapshot, history: List[Snapshot], runs: int) -> List[float]:
    find_all(now, history)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        find_all(now, history)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1000,200")
    parser.add_argument("--history", type=int, default=60)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    for workers in (int(w) for w in args.workers.split(",")):
        for busy in (True, False):
            history = [
                snapshot(workers, 100.0 + k, 1.0 + 0.01 * k, busy) for k in range(args.history)
            ]
            now = snapshot(workers, 100.0 + args.history, 1.0 + 0.01 * args.history, busy)
            found = find_all(now, history)
            times = measure(now, history, args.runs)
            print(
                "%5d workers %-8s %d finding(s)  min %.2f ms  median %.2f ms  (median/goal %.2fx)"
                % (
                    workers,
                    "starved" if busy else "healthy",
                    len(found),
                    min(times),
                    statistics.median(times),
                    statistics.median(times) / GOAL_MS,
                )
            )


if __name__ == "__main__":
    main()
