"""The TUI's memory over a long attach (issue 13: <= 150 MB at 1,000 threads after 10 minutes,
no growth with time).

    python bench/rss_soak.py [--minutes 10] [--shape 1000:500] [--spin 100] [--every 30]
                             [--tui-env NAME=VALUE ...]

Starts the same real target as ``bench/scale.py`` (a pool of ``--shape`` workers, the busy ones
held in ``/sleep``, ``--spin`` of them spinning in pure Python instead), attaches
``cpinspect attach PID`` in a pseudo-terminal at 1 Hz and prints its RSS every ``--every``
seconds, then the growth over the second half of the run and per minute over it (a leak grows
steadily; a warm-up levels off). Each sample also says where the RSS lives
(``cpinspect.memory.rss_kinds``: the main heap, the threads' malloc arenas, other anonymous
memory, files). The TUI's CPU over the whole run is printed too. ``--tui-env`` sets a variable
in the TUI's environment only (A/B of allocator settings: ``MALLOC_ARENA_MAX=1``, or
``CPINSPECT_MALLOC=0``, which leaves glibc's allocator as it is).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchlib import machine
from scale import PtyTui, Shape, cpu_of, start_target, with_bytecode

from cpinspect.memory import rss_kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--shape", default="1000:500", help="pool:busy")
    parser.add_argument("--spin", type=int, default=100, help="busy workers spinning instead")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument(
        "--tui-env", action="append", default=[], help="NAME=VALUE in the TUI's environment"
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.tui_env)
    threads, busy = (int(x) for x in args.shape.split(":"))
    shape = Shape(threads, busy, min(args.spin, busy))
    with_bytecode()
    print(machine())
    print(f"{shape.label}: the TUI attached for {args.minutes:g} min, RSS every {args.every:g} s")
    if extra:
        print("TUI environment: " + " ".join(f"{k}={v}" for k, v in extra.items()))
    server, held = start_target(shape)
    try:
        os.environ.update(extra)  # the target has started: only the TUI sees these
        tui = PtyTui(server.pid)
        try:
            time.sleep(5.0)  # start-up and first screens (as scale.py waits)
            start = time.monotonic()
            cpu0 = cpu_of(tui.proc)
            samples = []
            end = start + args.minutes * 60
            while True:
                now = time.monotonic()
                rss = tui.proc.memory_info().rss / 2**20
                samples.append((now - start, rss))
                kinds = rss_kinds(tui.proc.pid)
                where = "  ".join(f"{k} {v:5.1f}" for k, v in kinds.items() if k != "arena_count")
                print(
                    f"  {now - start:6.0f} s  RSS {rss:6.1f} MB   {where}"
                    f"  ({kinds.get('arena_count', 0):.0f} arenas)",
                    flush=True,
                )
                if now >= end:
                    break
                time.sleep(min(args.every, max(0.0, end - now)))
            cpu = 100 * (cpu_of(tui.proc) - cpu0) / (time.monotonic() - start)
        finally:
            tui.stop()
    finally:
        for sock in held:
            sock.close()
        server.stop()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    growth = half[-1][1] - half[0][1]
    span = (half[-1][0] - half[0][0]) / 60 or 1.0
    last = samples[-1][1]
    print(
        f"RSS at the end {last:.1f} MB (goal <= 150 MB: {last / 150:.2f}x), peak "
        f"{max(r for _, r in samples):.1f} MB; over the second half {growth:+.1f} MB "
        f"({growth / span:+.2f} MB/min); TUI CPU over the run {cpu:.1f} % of a core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
