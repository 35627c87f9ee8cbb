"""py-spy carrying the polls of a live session while workers spin in pure Python (issue 13).

    python bench/spin_carry.py [--threads 1000] [--busy 500] [--spin 100] [--seconds 60]
                               [--pid PID] [--tracemalloc] [--no-ahead] [--parts N]

The session the TUI polls (``open_session`` + ``AgentSession`` with the TUI's py-spy wait), run
without a terminal at the TUI's pace (``sources.pacing.Pace``, 1 s) on a real CherryPy process
(``bench_server.py``: ``--busy`` workers in ``/sleep``, ``--spin`` in ``/spin``), or on ``--pid``.
Printed: this process's CPU over the run (the session's own work: parsing, joining, /proc; not
py-spy's, which is another process), the data age of every update as the screen would show it
sampled every 100 ms (``now - threads.taken_at``, taken_at being the end of py-spy's read) and
from the start of the read that produced it, py-spy's read times, RSS at each tenth of the run
and its growth over the second half, and what the first update said (banner, carried or not).
``--tracemalloc`` prints the top allocation sites still alive at the end. ``--parts N`` then
reads the target N more times back to back and prints what each step of a carried poll costs
this process's CPU (``time.thread_time``, medians): py-spy's read (the pipe), the holder's cut
(``GilDump``), the build (``threads_from_reading``, with its ``/proc`` CPU times shown apart),
and the carried join (``fallback_threads`` against the first reading, standing in for the
agent's last answer), with how many threads' text moved between two readings.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import tracemalloc
from typing import Dict, List, Optional, Tuple

import psutil
from benchlib import machine, open_requests, percentile, start_server

from cpinspect.model import SourceKind
from cpinspect.sources.live import AgentSession
from cpinspect.sources.merge import Carried, fallback_threads
from cpinspect.sources.open import open_session
from cpinspect.sources.pacing import Pace
from cpinspect.sources.pyspy import (
    DumpCache,
    GilDump,
    PySpySource,
    cpu_times,
    threads_from_reading,
)

PYSPY_WAIT = 0.25  # tui/app.py's PYSPY_WAIT


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--spin", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pid", type=int, default=0, help="an existing target instead")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--no-ahead", action="store_true", help="no py-spy read started as a poll ends (A/B)"
    )
    parser.add_argument("--parts", type=int, default=0, help="then time N reads step by step")
    args = parser.parse_args()
    if args.no_ahead:
        AgentSession._read_ahead = lambda self: None  # type: ignore[method-assign]
    print(machine(), f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    server = None
    socks = []
    if args.pid:
        pid = args.pid
    else:
        server = start_server(agent=True, threads=args.threads)
        # As scale.py: --busy counts the spinners too.
        socks = open_requests(server.port, "/sleep?s=900", max(0, args.busy - args.spin))
        socks += open_requests(server.port, "/spin?s=900", args.spin)
        pid = server.pid
        time.sleep(3.0)  # the requests reach their handlers
    if args.tracemalloc:
        tracemalloc.start(8)
    try:
        if args.seconds > 0:
            run(pid, args.seconds, args.tracemalloc)
        if args.parts:
            parts(pid, args.parts)
    finally:
        for s in socks:
            s.close()
        if server is not None:
            server.stop()
    return 0


def run(pid: int, seconds: float, trace: bool) -> None:
    me = psutil.Process()
    cpu0 = time.process_time()
    opened = open_session(str(pid))
    session = opened.session
    if isinstance(session, AgentSession):
        session.pyspy_wait = PYSPY_WAIT
    latest: List[Optional[Tuple[float, float]]] = [None]  # (taken_at, read began) on screen
    ages: List[float] = []
    ages_from_start: List[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            shown = latest[0]
            if shown is not None:
                now = time.time()
                ages.append(now - shown[0])
                ages_from_start.append(now - shown[1])

    spans: List[Tuple[float, float]] = []  # every py-spy read: (start, end), wall clock
    spy = getattr(session, "pyspy", None)
    if spy is not None:
        read = spy._dump_bytes

        def timed(with_locals: bool, native: bool) -> bytes:
            start = time.time()
            try:
                return read(with_locals, native)
            finally:
                spans.append((start, time.time()))

        spy._dump_bytes = timed
    shown_after: List[float] = []  # a new reading on screen: how long after its read ended
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    pace = Pace(1.0)
    began = time.monotonic()
    rss: List[Tuple[float, float]] = []
    carried = polls = 0
    first = None
    reads: List[float] = []
    try:
        while time.monotonic() - began < seconds:
            started = time.monotonic()
            update = session.poll()
            polls += 1
            if first is None:
                first = (time.monotonic() - started, update)
            if update.effective_threads_source is SourceKind.PYSPY:
                carried += 1
            took = getattr(session, "_spy_took", None)
            if took is not None and (not reads or took != reads[-1]):
                reads.append(took)
            if update.threads is not None:
                t = update.threads.taken_at
                if update.effective_threads_source is SourceKind.PYSPY and (
                    latest[0] is None or latest[0][0] != t
                ):
                    shown_after.append(time.time() - t)
                latest[0] = (t, t - (took or 0.0))
            rss.append((time.monotonic() - began, me.memory_info().rss / 1e6))
            pace = pace.after(time.monotonic() - started)
            time.sleep(pace.delay(time.monotonic() - started))
    finally:
        stop.set()
        session.close()
    wall = time.monotonic() - began
    cpu = time.process_time() - cpu0
    assert first is not None
    print(f"first update after {first[0]:.2f} s: source {first[1].effective_threads_source.value}")
    print(f"  banner: {first[1].message[:160]}")
    print(f"{polls} polls in {wall:.0f} s, {carried} carried by py-spy")
    print(f"session CPU {100 * cpu / wall:.1f} % of a core (goal for the whole TUI: 5 %)")
    if reads:
        print(
            f"py-spy read  p50 {percentile(reads, 50):.2f} s  max {max(reads):.2f} s"
            f"  ({len(reads)} reads)"
        )
    if len(spans) > 1:
        lengths = [end - start for start, end in spans]
        gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        print(
            f"py-spy reads (every one) p50 {percentile(lengths, 50):.2f} s  p95 "
            f"{percentile(lengths, 95):.2f} s  max {max(lengths):.2f} s ({len(spans)} reads);"
            f" idle between two reads p50 {percentile(gaps, 50):.2f} s  p95 "
            f"{percentile(gaps, 95):.2f} s"
        )
    if shown_after:
        print(
            f"a carried reading reached the screen after its read ended: p50 "
            f"{percentile(shown_after, 50):.2f} s  p95 {percentile(shown_after, 95):.2f} s"
        )
    if ages:
        print(
            f"data age (end of read)    p50 {percentile(ages, 50):.2f} s  "
            f"p95 {percentile(ages, 95):.2f} s  max {max(ages):.2f} s  ({len(ages)} samples)"
            f"   {percentile(ages, 95) / 1.2:.2f}x of goal 1.2 s"
        )
        print(
            f"data age (start of read)  p50 {percentile(ages_from_start, 50):.2f} s  "
            f"p95 {percentile(ages_from_start, 95):.2f} s"
        )
    tenth = [r for r in rss if r[0] >= 0.1 * wall]
    half = [r for r in rss if r[0] >= 0.5 * wall]
    if tenth and half:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(
            f"RSS {rss[-1][1]:.0f} MB (peak {peak:.0f} MB), second half "
            f"{half[0][1]:.1f} -> {half[-1][1]:.1f} MB "
            f"({half[-1][1] - half[0][1]:+.1f})"
        )
    if trace:
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        print(f"tracemalloc: {current / 1e6:.1f} MB alive, peak {peak / 1e6:.1f} MB")
        for stat in snap.statistics("lineno")[:8]:
            print("  ", stat)


def parts(pid: int, n: int) -> None:
    """What each step of a carried poll costs, reading ``pid`` ``n`` times back to back."""
    spy = PySpySource(pid, requests=False, timeout=30.0)  # a loaded box: slow, not failed
    cache = DumpCache()
    memo: Carried = {}
    steps: Dict[str, List[float]] = {k: [] for k in ("read", "cut", "build", "proc", "join")}
    walls: List[float] = []
    moved: List[int] = []
    sizes: List[int] = []
    last = None
    texts: set = set()
    try:
        for _ in range(n + 1):
            wall, cpu = time.monotonic(), time.thread_time()
            out = spy._dump_bytes(with_locals=False, native=False)
            read = (time.monotonic() - wall, time.thread_time() - cpu)
            cpu = time.thread_time()
            dump = GilDump(out)
            cut = time.thread_time() - cpu
            cpu = time.thread_time()
            snap = threads_from_reading(dump, time.time(), pid=pid, cache=cache)
            build = time.thread_time() - cpu
            cpu = time.thread_time()
            cpu_times(pid, [t.native_id for t in snap.threads if t.native_id])
            proc = time.thread_time() - cpu
            cpu = time.thread_time()
            fallback_threads(snap, last if last is not None else snap, memo)
            join = time.thread_time() - cpu
            pieces = dump.pieces() or []
            if last is None:
                last = snap  # the first reading stands for the agent's last answer
            else:
                walls.append(read[0])
                for key, value in zip(steps, (read[1], cut, build, proc, join)):
                    steps[key].append(value)
                moved.append(sum(1 for p in pieces if p not in texts))
                sizes.append(len(out))
            texts = set(pieces)
    finally:
        spy.close()
    print(
        f"parts: {n} readings of {len(last.threads) if last else 0} threads, "
        f"{percentile(sizes, 50) / 1e6:.1f} MB each, {percentile(moved, 50)} threads' text moved"
        f" (median); py-spy's read p50 {percentile(walls, 50):.2f} s p95 "
        f"{percentile(walls, 95):.2f} s max {max(walls):.2f} s"
    )
    ms = {k: 1000 * percentile(v, 50) for k, v in steps.items()}
    print(
        "  CPU ms per reading (medians): pipe {read:.1f}  cut {cut:.1f}  build {build:.1f}"
        " (of which /proc CPU times ~{proc:.1f})  join {join:.1f}".format(**ms)
    )
    total = ms["read"] + ms["cut"] + ms["build"] + ms["join"]
    print(f"  total {total:.1f} ms a reading: {total / 10:.1f} % of a core at one reading a second")


if __name__ == "__main__":
    sys.exit(main())
