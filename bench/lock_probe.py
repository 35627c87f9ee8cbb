"""What the lock probe adds to a ``/v1/threads`` answer, in-process, at 1,000 threads.

    python bench/lock_probe.py [--threads 1000] [--waiters 50] [--rounds 20]

Builds the threads answer (``ThreadsProbe.snapshot()``, the agent's own code, no HTTP) in one
process with ``--threads`` threads in three states, timed per answer (median of ``--rounds``):

- **idle**: every thread waits on an Event (as idle workers wait on the pool's queue);
- **no waiter**: one of them also holds a lock inside ``with LOCK:`` (nobody wants it);
- **contended**: ``--waiters`` threads wait at ``with LOCK:`` behind that holder (the probe then
  also searches every thread's frames for ``with`` blocks on it).

The lock probe itself (``locks.annotate``) is timed alone too. Printed, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpinspect.agent.probes import locks
from cpinspect.agent.probes.frames import FrameClassifier
from cpinspect.agent.probes.threads import ThreadsProbe
from cpinspect.agent.tracking import RequestTracker

LOCK = threading.Lock()
STOP = threading.Event()
HOLDING = threading.Event()


def idle() -> None:
    STOP.wait()


def hold() -> None:
    with LOCK:
        HOLDING.set()
        STOP.wait()


def waiter() -> None:
    with LOCK:
        pass


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times: List[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    threading.stack_size(256 * 1024)
    probe = ThreadsProbe(RequestTracker(), FrameClassifier())
    started = [threading.Thread(target=idle, daemon=True) for _ in range(args.threads)]
    for t in started:
        t.start()
    probe.snapshot()  # warm the stack caches, as a polling inspector keeps them
    results = []
    results.append(("idle", median_ms(probe.snapshot, args.rounds)))
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    HOLDING.wait()
    probe.snapshot()
    results.append(("no waiter", median_ms(probe.snapshot, args.rounds)))
    waiters = [threading.Thread(target=waiter, daemon=True) for _ in range(args.waiters)]
    for t in waiters:
        t.start()
    time.sleep(0.5)
    answer = probe.snapshot()
    waiting = sum(1 for t in answer["threads"] if "wait" in t)
    holding = sum(1 for t in answer["threads"] if "holds" in t)
    results.append(("contended", median_ms(probe.snapshot, args.rounds)))

    frames = sys._current_frames()
    entries = [dict(t) for t in answer["threads"]]
    sites = {}
    for e in entries:
        cached = probe._stacks.get(e["ident"])
        if cached is not None and cached.site is not None:
            sites[e["ident"]] = cached.site
    annotate_ms = median_ms(lambda: locks.annotate(entries, sites, frames, []), args.rounds)
    frames.clear()  # frames keep every local of every thread alive

    print(
        "Python %s, %d threads (+%d waiters), %d rounds"
        % (sys.version.split()[0], args.threads, args.waiters, args.rounds)
    )
    base = results[0][1]
    for name, ms in results:
        print("  %-10s %7.2f ms per answer  (%.2fx idle)" % (name, ms, ms / base))
    print(
        "  contended: %d threads with wait, %d with holds; locks.annotate alone %.2f ms"
        % (waiting, holding, annotate_ms)
    )
    STOP.set()


if __name__ == "__main__":
    main()
