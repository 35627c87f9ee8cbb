"""Two TUIs attached to ONE target in the same window: their CPU side by side (issue 13).

    python bench/tui_side_by_side.py --old /tmp/old-tui [--threads 1000] [--busy 500]
                                     [--spin 0] [--seconds 30] [--hold 0]

The machine is shared and noisy, so a TUI's CPU is only comparable with another TUI's measured
over the same seconds on the same target. This starts ``bench_server.py`` with the agent (pool
``--threads``, ``--busy`` requests held in ``/sleep``, ``--spin`` of them spinning in ``/spin``),
then ``cpinspect attach PID`` twice in 160x50 pseudo-terminals: the tree at ``--old`` (e.g.
``git -C /work/main archive COMMIT | tar -x -C /tmp/old-tui``) and this checkout, both polling at
1 Hz. After a 5 s warm-up it prints each one's CPU in % of one core over ``--seconds`` (psutil
``cpu_times``: user + system of the process, every thread) and its RSS, and new/old.

``--hold N`` only starts the target and one TUI of this checkout and prints their pids, for N
seconds, to profile them (``py-spy record --pid TUI``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from benchlib import ROOT, machine
from scale import PtyTui, Shape, cpu_of, start_target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the other tree (a git archive of the old commit)")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--spin", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=0.0)
    args = parser.parse_args()
    if not args.hold and not args.old:
        print("error: --old TREE is needed (or --hold SECONDS)", file=sys.stderr)
        return 2
    if args.old and not os.path.isdir(os.path.join(args.old, "cpinspect")):
        print(f"error: {args.old} has no cpinspect/ directory", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    shape = Shape(args.threads, args.busy, args.spin)
    server, held = start_target(shape)
    old: Optional[PtyTui] = None
    new: Optional[PtyTui] = None
    try:
        new = PtyTui(server.pid, str(ROOT))
        if args.hold:
            print(f"target pid {server.pid}  tui pid {new.pid}", flush=True)
            time.sleep(args.hold)
            return 0
        old = PtyTui(server.pid, args.old)
        time.sleep(5.0)
        t0 = time.monotonic()
        c_old, c_new = cpu_of(old.proc), cpu_of(new.proc)
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        p_old = 100 * (cpu_of(old.proc) - c_old) / elapsed
        p_new = 100 * (cpu_of(new.proc) - c_new) / elapsed
        rss_old = old.proc.memory_info().rss / 2**20
        rss_new = new.proc.memory_info().rss / 2**20
        print(f"== {shape.label}, {elapsed:.0f} s window, load avg {os.getloadavg()[0]:.2f}")
        print(f"old TUI ({args.old}): {p_old:5.1f} % of a core, RSS {rss_old:.0f} MB")
        ratio = p_new / p_old if p_old else float("nan")
        print(f"new TUI ({ROOT}): {p_new:5.1f} % of a core, RSS {rss_new:.0f} MB   {ratio:.2f}x")
        return 0
    finally:
        for tui in (old, new):
            if tui is not None:
                tui.stop()
        for sock in held:
            sock.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
