"""``lock_findings`` at 1,000 threads: the budget is 5 ms (it runs after every poll).

    python bench/lock_findings.py [--rounds 50]

Hand-built snapshots (pure function, no process): 900 idle workers, 50 busy elsewhere and 50
waiting on one lock (30-frame stacks), read from the agent (with no history, and with 60 earlier
snapshots in which the same 50 waited), without any waiter, and from py-spy's stacks with
source lines. Printed (median ms per call), not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpinspect.findings.locks import lock_findings
from cpinspect.model import (
    Frame,
    LockHeld,
    LockWait,
    PoolInfo,
    RequestInfo,
    Role,
    Snapshot,
    SourceKind,
    SourceLine,
    ThreadInfo,
    ThreadsSnapshot,
)

NOW = 1000.0
LEDGER = "/srv/app/ledger.py"
OUTER = tuple(Frame("/srv/lib/f%d.py" % i, i, "fn%d" % i) for i in range(30))


def thread(ident: int, top: Frame, wait: bool = False, holds: bool = False) -> ThreadInfo:
    return ThreadInfo(
        ident=ident,
        name="CP Server Thread-%d" % ident,
        role=Role.WORKER,
        busy=True,
        request=RequestInfo("POST", "/transfer", started_at=NOW - 20),
        elapsed=20.0,
        pool="127.0.0.1:8080",
        wait=LockWait("LEDGER_LOCK", "tok", "_thread.lock", LEDGER, 41) if wait else None,
        holds=(LockHeld("LEDGER_LOCK", "tok", LEDGER, 41),) if holds else (),
        stack=(top, *OUTER),
    )


def snap(threads: Sequence[ThreadInfo], taken_at: float = NOW, **kw: object) -> Snapshot:
    pool = PoolInfo("127.0.0.1:8080", 1000, 100, 900, 0, 1000)
    ts = ThreadsSnapshot(taken_at=taken_at, threads=tuple(threads), pools=(pool,))
    return Snapshot(taken_at=taken_at, threads=ts, **kw)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    idle = [thread(i, Frame("/usr/lib/python3.11/threading.py", 320, "wait")) for i in range(900)]
    busy = [thread(1000 + i, Frame("/srv/app/db.py", 80, "fetch")) for i in range(49)]
    holder = [thread(1999, Frame("/srv/app/ledger.py", 42, "transfer"), holds=True)]
    waiters = [thread(2000 + i, Frame(LEDGER, 41, "transfer"), wait=True) for i in range(50)]
    everyone = idle + busy + holder + waiters
    lines = [SourceLine(f.filename, f.lineno, "x = 1") for f in OUTER]
    lines.append(SourceLine(LEDGER, 41, "    with LEDGER_LOCK:"))
    history = [snap(everyone, NOW - k, source=SourceKind.AGENT) for k in range(60, 0, -1)]
    cases = [
        ("agent, 50 waiters", snap(everyone, source=SourceKind.AGENT), []),
        ("agent, 50 waiters, 60 earlier", snap(everyone, source=SourceKind.AGENT), history),
        ("agent, nobody waits", snap(idle + busy + holder, source=SourceKind.AGENT), []),
        ("py-spy + source lines", snap(everyone, source=SourceKind.PYSPY, source_lines=lines), []),
    ]
    print("lock_findings, %d threads, median of %d calls" % (len(everyone), args.rounds))
    for name, snapshot, hist in cases:
        times: List[float] = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            found = lock_findings(snapshot, hist)
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        print("  %-32s %6.2f ms  (%.2fx of 5 ms)  %d finding(s)" % (name, ms, ms / 5, len(found)))


if __name__ == "__main__":
    main()
