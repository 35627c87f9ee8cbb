"""`/v1/threads` full against `?since=` deltas at 1,000 workers (500 busy) and 200 (100): issue 13.

    python bench/threads_delta.py [--shapes 1000:500,200:100] [--rounds 5] [--polls 5]
                                  [--before REV]

For each shape, two real CherryPy processes (``bench_server.py --agent``, ``busy`` workers held in
``/sleep``) run side by side: one with this tree's agent, one with the agent of commit ``REV``
(default: the last commit before the delta, exported with ``git archive`` to a temp dir; ``-``
skips it). Rounds interleave three ways of polling, ``--polls`` polls each, back to back, all
through the inspector's real reader (``AgentSource.threads()``):

- **before**: the old agent, full answers (what every poll cost until now);
- **full**: this agent, no cursor (an old inspector, or the first poll);
- **delta**: this agent, each poll ``since=`` the previous answer (the steady state at 1 Hz: the
  held requests keep sleeping, nothing else changes).

Printed per way (medians over rounds): the target's CPU per poll (the kernel's CPU clock of the
process, user + system, minus its own idle rate measured before), the answer's bytes
(Content-Length) and threads sent, and the inspector's CPU per poll (this process: HTTP read +
JSON + model + delta applied), with the ratios against full and before.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import benchlib
import psutil
from benchlib import ROOT, Server, machine, open_requests, start_ready

sys.path.insert(0, str(ROOT))

from cpinspect.sources.agent import AgentSource

BEFORE_REV = "7658d03"
"""The last commit before the threads delta (its agent answers every thread, every poll)."""


@dataclass
class Way:
    name: str
    target_cpu: List[float] = field(default_factory=list)
    inspector_cpu: List[float] = field(default_factory=list)
    nbytes: List[int] = field(default_factory=list)
    sent: List[int] = field(default_factory=list)


def export(rev: str) -> Path:
    """``cpinspect`` and ``bench`` of commit ``rev`` in a fresh temp dir."""
    out = Path(tempfile.mkdtemp(prefix="cpi-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "cpinspect", "bench"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def start(tree: Path, threads: int, busy: int) -> Tuple[Server, list]:
    saved = benchlib.ROOT
    benchlib.ROOT = tree  # start_ready puts the tree first on the child's PYTHONPATH
    try:
        server = start_ready(
            [str(tree / "bench" / "bench_server.py"), "--threads", str(threads), "--agent"],
            "bench server",
            timeout=60,
        )
    finally:
        benchlib.ROOT = saved
    held = open_requests(server.port, "/sleep?s=900", busy)
    proc = psutil.Process(server.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.num_threads() < threads:
        time.sleep(0.2)
    time.sleep(2.0)  # the held requests reach their handlers
    return server, held


def cpu_of(proc: psutil.Process) -> float:
    """User + system seconds of the whole process, to the nanosecond (psutil counts 10 ms ticks).

    The kernel's CPU clock of another process: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
    """
    try:
        return time.clock_gettime(((~proc.pid) << 3) | 2)
    except OSError:
        t = proc.cpu_times()
        return t.user + t.system


def idle_rate(proc: psutil.Process, seconds: float = 2.0) -> float:
    c0, t0 = cpu_of(proc), time.monotonic()
    time.sleep(seconds)
    return (cpu_of(proc) - c0) / (time.monotonic() - t0)


def measure(
    source: AgentSource, proc: psutil.Process, idle: float, polls: int, full: bool, way: Way
) -> None:
    sizes: List[int] = []
    source._client.event_hooks["response"] = [
        lambda r: sizes.append(int(r.headers.get("content-length", "0")))
    ]
    source.threads()  # warm: the cursor (and the agent's stack cache) of the way measured
    sizes.clear()
    sent = 0
    c0, w0, p0 = cpu_of(proc), time.monotonic(), time.process_time()
    for _ in range(polls):
        if full:
            source._threads_cursor = None
        snap = source.threads()
        sent += len(snap.threads)
    p1, w1, c1 = time.process_time(), time.monotonic(), cpu_of(proc)
    if not full:
        sent = -1  # counted from the answers' sizes below, not the applied snapshots
    way.target_cpu.append(max(0.0, (c1 - c0) - idle * (w1 - w0)) / polls)
    way.inspector_cpu.append((p1 - p0) / polls)
    way.nbytes.append(int(statistics.median(sizes)))
    if sent >= 0:
        way.sent.append(sent // polls)


def delta_sent(sock: str, cursor: Optional[str]) -> int:
    body = benchlib.agent_get(sock, "/v1/threads" + ("?since=" + cursor if cursor else ""))
    return len(body["threads"])


def run_shape(
    threads: int, busy: int, rounds: int, polls: int, before: Optional[Path]
) -> Dict[str, Way]:
    print(f"\n== pool {threads}, {busy} busy: starting targets ...", flush=True)
    now_server, now_held = start(ROOT, threads, busy)
    old: Optional[Tuple[Server, list]] = start(before, threads, busy) if before else None
    ways = {name: Way(name) for name in ("before", "full", "delta")}
    sources: List[AgentSource] = []
    try:
        assert now_server.socket is not None
        now_proc = psutil.Process(now_server.pid)
        now_idle = idle_rate(now_proc)
        full_src, delta_src = AgentSource(now_server.socket), AgentSource(now_server.socket)
        sources += [full_src, delta_src]
        old_src = old_proc = None
        old_idle = 0.0
        if old is not None:
            assert old[0].socket is not None
            old_proc = psutil.Process(old[0].pid)
            old_idle = idle_rate(old_proc)
            old_src = AgentSource(old[0].socket)
            sources.append(old_src)
        print(
            f"   idle CPU: this agent's target {now_idle * 100:.2f} % of a core, "
            f"before's {old_idle * 100:.2f} %",
            flush=True,
        )
        for i in range(rounds):
            if old_src is not None and old_proc is not None:
                measure(old_src, old_proc, old_idle, polls, True, ways["before"])
            measure(full_src, now_proc, now_idle, polls, True, ways["full"])
            measure(delta_src, now_proc, now_idle, polls, False, ways["delta"])
            print(f"   round {i + 1}/{rounds} done", flush=True)
        # Threads a steady-state delta sends (the agent's own answering threads, mostly).
        first = benchlib.agent_get(now_server.socket, "/v1/threads")
        ways["delta"].sent.append(delta_sent(now_server.socket, first["cursor"]))
    finally:
        for s in sources:
            s.close()
        for sock in now_held + (old[1] if old else []):
            sock.close()
        now_server.stop()
        if old is not None:
            old[0].stop()
    return ways


def report(threads: int, busy: int, ways: Dict[str, Way]) -> None:
    med = statistics.median
    full = ways["full"]
    print(f"\npool {threads}, {busy} busy (medians of {len(full.target_cpu)} rounds)")
    print(
        f"  {'':8} {'target CPU/poll':>16} {'bytes/answer':>13} {'threads sent':>13} "
        f"{'inspector CPU/poll':>19}"
    )
    for way in ways.values():
        if not way.target_cpu:
            continue
        print(
            f"  {way.name:8} {med(way.target_cpu) * 1000:13.1f} ms {int(med(way.nbytes)):13,d} "
            f"{med(way.sent) if way.sent else 0:13.0f} {med(way.inspector_cpu) * 1000:16.1f} ms"
        )

    def ratio(a: List[float], b: List[float]) -> str:
        return f"{med(a) / med(b):.3f}x" if b and med(b) > 0 else "n/a"

    d, b = ways["delta"], ways["before"]
    print(
        f"  delta/full:   target CPU {ratio(d.target_cpu, full.target_cpu)}, "
        f"bytes {ratio([float(x) for x in d.nbytes], [float(x) for x in full.nbytes])}, "
        f"inspector CPU {ratio(d.inspector_cpu, full.inspector_cpu)}"
    )
    if b.target_cpu:
        print(
            f"  full/before:  target CPU {ratio(full.target_cpu, b.target_cpu)} "
            "(the stack cache; same answer)"
        )
        print(
            f"  delta/before: target CPU {ratio(d.target_cpu, b.target_cpu)}, "
            f"inspector CPU {ratio(d.inspector_cpu, b.inspector_cpu)}"
        )
        for name, pct in (("before", b), ("delta", d)):
            print(
                f"  at 1 Hz, {name}: the target spends {med(pct.target_cpu) * 100:.2f} % of a core"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1000:500,200:100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--before", default=BEFORE_REV, help="commit of the old agent; - to skip")
    args = parser.parse_args()
    try:
        shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
        if any(len(s) != 2 or s[1] > s[0] or s[1] < 0 for s in shapes):
            raise ValueError
    except ValueError:
        print(
            "threads_delta.py: --shapes takes POOL:BUSY[,POOL:BUSY...], BUSY <= POOL",
            file=sys.stderr,
        )
        return 2
    before: Optional[Path] = None
    if args.before != "-":
        try:
            before = export(args.before)
        except subprocess.CalledProcessError as exc:
            print(
                f"threads_delta.py: cannot export {args.before}: {exc.stderr.decode().strip()}",
                file=sys.stderr,
            )
            return 2
    print(machine())
    results: List[Tuple[int, int, Dict[str, Any]]] = []
    try:
        for threads, busy in shapes:
            ways = run_shape(threads, busy, args.rounds, args.polls, before)
            results.append((threads, busy, ways))
    finally:
        if before is not None:
            shutil.rmtree(before, ignore_errors=True)
    for threads, busy, ways in results:
        report(threads, busy, ways)
    return 0


if __name__ == "__main__":
    sys.exit(main())
