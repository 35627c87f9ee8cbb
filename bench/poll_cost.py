"""What 1 Hz polling as the TUI does it costs the target, old agent against this one (issue 13).

    python bench/poll_cost.py [--shapes 1000:500] [--before 3536e2c] [--windows 6] [--seconds 10]
                              [--spin 0]

For each shape, two real CherryPy processes (``bench_server.py --agent``, ``busy`` workers held in
``/sleep``, ``--spin`` more burning CPU in ``/spin``) run side by side: one with this tree's
agent, one with the agent of commit ``--before`` (exported with ``git archive``). Windows of
``--seconds`` alternate: one target is polled while the other is left alone, so every window
gives one target's polled CPU and the other's unpolled CPU at the same moment on this noisy box.
The poll is what the TUI asks (``AgentSource``, the inspector's real reader): every second
``/v1/threads`` with the cursor (a delta) and ``/v1/log?after=``; every fifth second also
``/v1/info`` and the sessions' first page. CPU is the kernel's CPU clock of the target process.

Printed per target: medians over its windows of CPU % of a core unpolled and polled, the extra
(polled - unpolled, the goal: <= 1 % of a core at 1,000 threads), the wall time of a threads
answer, and the new/old ratio of the extra.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import psutil
from benchlib import ROOT, Server, machine, open_requests
from threads_delta import cpu_of, export, start

sys.path.insert(0, str(ROOT))

from cpinspect.errors import CpinspectError
from cpinspect.sources.agent import AgentSource

BEFORE_REV = "3536e2c"
"""The tree the agent-fast work started from."""


@dataclass
class Target:
    name: str
    server: Server
    held: list
    proc: psutil.Process
    source: AgentSource
    polled: List[float] = field(default_factory=list)
    unpolled: List[float] = field(default_factory=list)
    answer_ms: List[float] = field(default_factory=list)
    failures: int = 0
    log_next: int = 0


def poll_window(target: Target, other: Target, seconds: float) -> None:
    """Poll ``target`` at 1 Hz for ``seconds``; meanwhile ``other`` is measured unpolled."""
    c0, o0, w0 = cpu_of(target.proc), cpu_of(other.proc), time.monotonic()
    tick = 0
    while time.monotonic() - w0 < seconds:
        t = time.monotonic()
        try:
            target.source.threads()
            target.answer_ms.append((time.monotonic() - t) * 1000)
            page = target.source.log(after=target.log_next)
            target.log_next = page.next
            if tick % 5 == 0:
                target.source.info()
                target.source.sessions()
        except CpinspectError:  # e.g. no answer within the timeout (GIL-starved agent)
            target.failures += 1
        tick += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
    w1, c1, o1 = time.monotonic(), cpu_of(target.proc), cpu_of(other.proc)
    target.polled.append((c1 - c0) / (w1 - w0))
    other.unpolled.append((o1 - o0) / (w1 - w0))


def launch(name: str, tree: Path, threads: int, busy: int, spin: int, timeout: float) -> Target:
    server, held = start(tree, threads, busy)
    try:
        if spin:
            held += open_requests(server.port, "/spin?s=900", spin)
        assert server.socket is not None
        source = AgentSource(server.socket, timeout=timeout)
        source.threads()  # the first, full answer: from here on deltas
    except BaseException:
        for sock in held:
            sock.close()
        server.stop()  # never leave a target (spinning workers) behind
        raise
    return Target(name, server, held, psutil.Process(server.pid), source)


def stop(target: Target) -> None:
    target.source.close()
    for sock in target.held:
        sock.close()
    target.server.stop()


def report(threads: int, busy: int, spin: int, targets: Tuple[Target, Target]) -> None:
    med = statistics.median
    print(f"\npool {threads}, {busy} busy, {spin} spinning (medians of windows)")
    extras = {}
    for t in targets:
        extra = med(t.polled) - med(t.unpolled)
        extras[t.name] = extra
        print(
            f"  {t.name:6} unpolled {med(t.unpolled) * 100:5.2f} %  polled "
            f"{med(t.polled) * 100:5.2f} %  extra {extra * 100:5.2f} % of a core "
            f"(windows: polled {min(t.polled) * 100:.2f}-{max(t.polled) * 100:.2f}, unpolled "
            f"{min(t.unpolled) * 100:.2f}-{max(t.unpolled) * 100:.2f})   threads answer "
            + (
                f"p50 {med(t.answer_ms):.1f} ms max {max(t.answer_ms):.1f} ms ({len(t.answer_ms)})"
                if t.answer_ms
                else "none"
            )
            + (f", {t.failures} polls failed" if t.failures else "")
        )
    old, new = extras["old"], extras["new"]
    ratio = f"{new / old:.2f}x" if old > 0 else "n/a"
    verdict = "ok" if new <= 0.01 else "MISSED"
    print(f"  extra new/old {ratio}; new against the 1 % goal: {new / 0.01:.2f}x {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1000:500")
    parser.add_argument("--before", default=BEFORE_REV)
    parser.add_argument("--windows", type=int, default=6, help="per target (default 6)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spin", type=int, default=0, help="workers spinning in /spin")
    parser.add_argument("--timeout", type=float, default=10.0, help="per answer (s)")
    args = parser.parse_args()
    try:
        shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
        if any(len(s) != 2 or s[1] > s[0] or s[1] < 0 for s in shapes):
            raise ValueError
    except ValueError:
        print("poll_cost.py: --shapes takes POOL:BUSY[,POOL:BUSY...]", file=sys.stderr)
        return 2
    try:
        before = export(args.before)
    except subprocess.CalledProcessError as exc:
        print(f"poll_cost.py: cannot export {args.before}: {exc.stderr.decode().strip()}")
        return 2
    print(machine())
    print(f"old agent: {args.before}; new agent: this tree")
    try:
        for threads, busy in shapes:
            print(f"\n== pool {threads}, {busy} busy: starting targets ...", flush=True)
            old: Optional[Target] = None
            new: Optional[Target] = None
            try:
                old = launch("old", before, threads, busy, args.spin, args.timeout)
                new = launch("new", ROOT, threads, busy, args.spin, args.timeout)
                for i in range(args.windows):
                    first, second = (old, new) if i % 2 == 0 else (new, old)
                    poll_window(first, second, args.seconds)
                    poll_window(second, first, args.seconds)
                    print(f"   window pair {i + 1}/{args.windows} done", flush=True)
                report(threads, busy, args.spin, (old, new))
            finally:
                for t in (old, new):
                    if t is not None:
                        stop(t)
    finally:
        shutil.rmtree(before, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
