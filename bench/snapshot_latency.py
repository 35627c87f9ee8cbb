"""Time to hold every thread with its stack as model objects: the agent vs py-spy, side by side.

    python bench/snapshot_latency.py [--samples 30] [--threads 200] [--busy 100] [--scenario sleep]

One fresh ``bench_server.py`` per scenario: the agent installed, a cheroot pool of ``--threads``
workers, ``--busy`` of them held by requests that never finish within the run. Each sample asks
for a ``ThreadsSnapshot`` and stops the clock once the model objects are in hand:

  agent                 ``AgentSource(socket).threads()`` over one keep-alive connection
  py-spy nonblocking    ``PySpySource(pid, nonblocking=True).threads()`` (cpinspect's default)
  py-spy blocking       ``PySpySource(pid, nonblocking=False).threads()`` (py-spy pauses the
                        target while it reads)

Both py-spy modes run ``--locals`` (that is how ``PySpySource`` gets each busy worker's request,
which the agent's answer has too); ``--stacks-only`` adds the two py-spy modes without it, for
the cheapest py-spy can be. Modes are interleaved, and the order rotates each round, so drift on
the machine hits all of them. Every answer is checked: all threads present, each with a stack,
and ``--busy`` workers seen busy.

Scenarios:
  sleep  busy workers sleep in the handler (GIL released)
  spin   busy workers burn CPU in pure Python (the agent must win the GIL from them; py-spy
         needs no GIL)

Printed per scenario and mode: median and p90 in ms, then the ratio agent / py-spy of medians.
Goal: agent <= 0.5 x py-spy (both py-spy modes, both scenarios).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from benchlib import (
    Server,
    agent_get,
    machine,
    median,
    open_requests,
    percentile,
    server,
    wait_until,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpinspect.model import ThreadsSnapshot
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.pyspy import PySpySource

SCENARIOS = ("sleep", "spin")
HOLD_SECONDS = 900
"""Handlers outlast the run; the server is killed afterwards, they never finish."""
AGENT = "agent"
NONBLOCKING = "py-spy nonblocking"
BLOCKING = "py-spy blocking"
NONBLOCKING_STACKS = "py-spy nonblocking, stacks only"
BLOCKING_STACKS = "py-spy blocking, stacks only"


def check(snap: ThreadsSnapshot, threads: int, busy: int) -> str:
    """Why an answer is incomplete ('' when it holds every worker with its stack)."""
    workers = snap.workers
    if len(workers) != threads:
        return f"{len(workers)} workers"
    if not all(t.stack for t in workers):
        return "a worker without stack"
    seen_busy = sum(1 for t in workers if t.busy)
    if seen_busy != busy:
        return f"{seen_busy} busy"
    return ""


def run_scenario(
    scenario: str,
    samples: int,
    threads: int,
    busy: int,
    gap: float,
    stacks_only: bool,
    budget: float,
) -> Tuple[Dict[str, List[float]], Dict[str, int], int]:
    with server(agent=True, threads=threads) as srv:
        assert srv.socket is not None
        socks = open_requests(srv.port, f"/{scenario}?s={HOLD_SECONDS}", busy)
        try:
            return _sample(srv, samples, threads, busy, gap, stacks_only, budget)
        finally:
            for s in socks:
                s.close()


def _sample(
    srv: Server, samples: int, threads: int, busy: int, gap: float, stacks_only: bool, budget: float
) -> Tuple[Dict[str, List[float]], Dict[str, int], int]:
    assert srv.socket is not None
    sock = srv.socket

    def all_busy() -> bool:
        return bool(agent_get(sock, timeout=30)["pools"][0]["busy"] == busy)

    wait_until(all_busy, timeout=300, what=f"{busy} busy workers")
    agent = AgentSource(sock, timeout=30.0)
    sources: Dict[str, Callable[[], ThreadsSnapshot]] = {
        AGENT: agent.threads,
        NONBLOCKING: PySpySource(srv.pid, nonblocking=True, timeout=60.0).threads,
        BLOCKING: PySpySource(srv.pid, nonblocking=False, timeout=60.0).threads,
    }
    if stacks_only:
        sources[NONBLOCKING_STACKS] = PySpySource(
            srv.pid, nonblocking=True, timeout=60.0, requests=False
        ).threads
        sources[BLOCKING_STACKS] = PySpySource(
            srv.pid, nonblocking=False, timeout=60.0, requests=False
        ).threads
    for fetch in sources.values():
        fetch()  # warm-up: the agent's keep-alive connection, py-spy's page cache
    times: Dict[str, List[float]] = {mode: [] for mode in sources}
    incomplete: Dict[str, int] = dict.fromkeys(sources, 0)
    modes = list(sources)
    give_up = time.monotonic() + budget
    rounds = 0
    try:
        for i in range(samples):
            if time.monotonic() > give_up:
                break
            order = modes[i % len(modes) :] + modes[: i % len(modes)]
            for mode in order:
                t0 = time.perf_counter()
                snap = sources[mode]()
                times[mode].append(time.perf_counter() - t0)
                if check(snap, threads, busy):
                    incomplete[mode] += 1
                time.sleep(gap)
            rounds += 1
    finally:
        agent.close()
    return times, incomplete, rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="samples per mode (30)")
    parser.add_argument("--threads", type=int, default=200, help="worker pool size (200)")
    parser.add_argument("--busy", type=int, default=100, help="busy workers (100)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between calls (0.05)")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="max seconds of sampling per scenario (600)"
    )
    parser.add_argument(
        "--stacks-only", action="store_true", help="also time py-spy without --locals"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: both")
    args = parser.parse_args()
    if args.samples < 1 or args.threads < 1 or not 0 < args.busy <= args.threads:
        parser.error("--samples and --threads must be positive, 0 < --busy <= --threads")

    print(f"snapshot_latency: {machine()}")
    print(
        f"pool {args.threads}, {args.busy} busy, {args.samples} samples per mode, interleaved "
        f"(order rotating), {args.gap:g} s apart; py-spy with --locals unless 'stacks only'\n"
    )
    ratios: List[float] = []
    for scenario in args.scenario or SCENARIOS:
        times, incomplete, rounds = run_scenario(
            scenario,
            args.samples,
            args.threads,
            args.busy,
            args.gap,
            args.stacks_only,
            args.budget,
        )
        medians = {mode: median(t) * 1000 for mode, t in times.items()}
        for mode, t in times.items():
            ms = [v * 1000 for v in t]
            print(
                f"{scenario:<6} {mode:<32} median {medians[mode]:8.1f} ms   "
                f"p90 {percentile(ms, 90):8.1f} ms   ({len(ms)} samples, "
                f"{incomplete[mode]} incomplete)",
                flush=True,
            )
        for mode in medians:
            if mode == AGENT:
                continue
            ratio = medians[AGENT] / medians[mode]
            if mode in (NONBLOCKING, BLOCKING):
                ratios.append(ratio)
            print(f"{scenario:<6} agent / {mode:<32} {ratio:6.3f}")
        if rounds < args.samples:
            print(f"{scenario:<6} budget reached after {rounds} rounds")
        print()
    worst = max(ratios)
    verdict = "met" if worst <= 0.5 else "NOT met"
    print(
        f"goal: agent <= 0.5 x py-spy (both modes, both scenarios) -> {verdict} "
        f"(worst ratio {worst:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
