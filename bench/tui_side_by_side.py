"""Two TUIs attached to ONE target in the same window: their CPU side by side (issue 13).

    python bench/tui_side_by_side.py --old /tmp/old-tui [--threads 1000] [--busy 500]
                                     [--spin 0] [--seconds 30] [--hold 0] [--rounds 3]

The machine is shared and noisy, so a TUI's CPU is only comparable with another TUI's measured
over the same seconds on the same target. This starts ``bench_server.py`` with the agent (pool
``--threads``, ``--busy`` requests held in ``/sleep``, ``--spin`` of them spinning in ``/spin``),
then ``cpinspect attach PID`` twice in 160x50 pseudo-terminals: the tree at ``--old`` (e.g.
``git -C /work/main archive COMMIT | tar -x -C /tmp/old-tui``) and this checkout, both polling at
1 Hz. After a 5 s warm-up it prints each one's CPU in % of one core over ``--seconds`` (psutil
``cpu_times``: user + system of the process, every thread) and its RSS, and new/old, for
``--rounds`` windows in a row, then the medians; and each window's CPU by thread of each TUI
(``/proc/<tui>/task/*/stat``, named by one ``py-spy dump`` of the TUI at the window's end).

``--session`` runs no UI: the live session ``cpinspect attach`` opens, polled once a second in a
child process per tree, both on the same target over the same seconds; it prints each one's
process CPU (% of a core and ms per poll) and, per poll, what was made again: threads read
from the agent's JSON, stacks joined (``merge._restack``), py-spy threads parsed. What the
poll threads cost apart from Textual.

``--hold N`` only starts the target and one TUI of this checkout and prints their pids, for N
seconds, to profile them (``py-spy record --pid TUI``).

The UI thread alone, the same data for both trees (what a poll costs the screen, apart from
the session's reads and the machine's load):

    python bench/tui_side_by_side.py --record FILE [--threads 1000 --busy 500 --spin 100]
                                     [--polls 24]
    python bench/tui_side_by_side.py --replay FILE --old /tmp/old-tui [--rounds 3]

``--record`` polls a fresh target with the live session ``cpinspect attach`` opens (agent, py-spy
standing in while it is slow) once a second and pickles the ``Update``s together (the objects
they share stay shared, as a delta and a carried reading share them). ``--replay`` feeds them in
turn (``--rounds`` times) to the real App under Textual's headless Pilot (160x45) in one process
per tree, each through a scripted poller, and prints the UI thread's CPU per poll
(``time.thread_time``, the compositor's repaints included) and, once with no poll at all, what
the same waiting costs, for the old tree and this one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from benchlib import ROOT, machine
from scale import PtyTui, Shape, cpu_of, start_target

from cpinspect.sources.pyspy import find_pyspy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the other tree (a git archive of the old commit)")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--spin", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--record", metavar="FILE", help="pickle --polls live updates to FILE")
    parser.add_argument("--polls", type=int, default=24)
    parser.add_argument("--replay", metavar="FILE", help="replay FILE into both trees' App")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--session", action="store_true", help="the live session alone (no UI), both trees"
    )
    args = parser.parse_args()
    if args.record:
        return record(args)
    if args.replay:
        return replay(args)
    if args.session:
        return session_cpu(args)
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
        runs: List[Tuple[float, float]] = []
        for n in range(args.rounds):
            t0 = time.monotonic()
            c_old, c_new = cpu_of(old.proc), cpu_of(new.proc)
            k_old, k_new = task_ticks(old.pid), task_ticks(new.pid)
            time.sleep(args.seconds)
            elapsed = time.monotonic() - t0
            p_old = 100 * (cpu_of(old.proc) - c_old) / elapsed
            p_new = 100 * (cpu_of(new.proc) - c_new) / elapsed
            runs.append((p_old, p_new))
            rss_old = old.proc.memory_info().rss / 2**20
            rss_new = new.proc.memory_info().rss / 2**20
            load = os.getloadavg()[0]
            print(f"== {shape.label}, round {n + 1}, {elapsed:.0f} s window, load avg {load:.2f}")
            print(f"old TUI ({args.old}): {p_old:5.1f} % of a core, RSS {rss_old:.0f} MB")
            ratio = p_new / p_old if p_old else float("nan")
            print(
                f"new TUI ({ROOT}): {p_new:5.1f} % of a core, RSS {rss_new:.0f} MB   {ratio:.2f}x"
            )
            for label, tui, before, total in (
                ("old", old, k_old, p_old),
                ("new", new, k_new, p_new),
            ):
                print(f"   {label} by thread: " + by_thread(tui.pid, before, elapsed, total))
        if len(runs) > 1:
            olds = [r[0] for r in runs]
            news = [r[1] for r in runs]
            print(
                f"== medians of {len(runs)}: old {statistics.median(olds):.1f} % "
                f"({min(olds):.1f}-{max(olds):.1f}), new {statistics.median(news):.1f} % "
                f"({min(news):.1f}-{max(news):.1f}), "
                f"{statistics.median(news) / statistics.median(olds):.2f}x"
            )
        return 0
    finally:
        for tui in (old, new):
            if tui is not None:
                tui.stop()
        for sock in held:
            sock.close()
        server.stop()


def task_ticks(pid: int) -> Dict[int, int]:
    """utime + stime (clock ticks) of each thread of ``pid``, by native id."""
    out: Dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


def thread_names(pid: int) -> Dict[int, str]:
    """Each thread's Python name (one ``py-spy dump``, nonblocking), numbers of pools' threads
    dropped (``ThreadPoolExecutor-3_1`` -> ``ThreadPoolExecutor``): Python 3.11 leaves the
    kernel's names alone."""
    try:
        out = subprocess.run(
            [find_pyspy(), "dump", "--json", "--nonblocking", "--pid", str(pid)],
            capture_output=True,
            timeout=20,
        ).stdout
        threads = json.loads(out)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    names: Dict[int, str] = {}
    for t in threads:
        tid = t.get("os_thread_id")
        name = t.get("thread_name") or "?"
        if isinstance(tid, int):
            names[tid] = "UI (main)" if tid == pid else re.sub(r"[-_]?[0-9_-]+$", "", name)
    return names


def by_thread(pid: int, before: Dict[int, int], elapsed: float, total: float) -> str:
    """The process's CPU over the window by thread name, % of a core; threads that ended
    within it (their ticks are no longer listed) as the rest of ``total`` (% of a core)."""
    after = task_ticks(pid)
    names = thread_names(pid)
    groups: Dict[str, int] = {}
    for tid, ticks in after.items():
        name = names.get(tid, "UI (main)" if tid == pid else "not Python")
        groups[name] = groups.get(name, 0) + ticks - before.get(tid, 0)
    tck = os.sysconf("SC_CLK_TCK")
    parts = sorted(groups.items(), key=lambda kv: -kv[1])
    shown = [(k, 100 * v / tck / elapsed) for k, v in parts if v]
    rest = total - sum(v for _, v in shown)
    return ", ".join(f"{k} {v:.1f} %" for k, v in shown) + f", threads that ended {rest:.1f} %"


RECORD = r"""
import pickle, sys, time
from cpinspect.memory import tune_malloc
from cpinspect.sources.open import open_session
tune_malloc()
pid, polls, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
session = open_session(pid).session
updates = []
for n in range(polls):
    start = time.monotonic()
    updates.append(session.poll())
    time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
session.close()
with open(out, "wb") as f:
    pickle.dump(updates, f)
carried = sum(1 for u in updates if u.threads_source is not None)
print(f"{len(updates)} updates, {carried} with py-spy's threads standing in")
"""

COUNTED = r"""
def counted(owner, name, key):
    # ``owner.name`` counted in ``counts[key]`` at each call (``counts``: the script's own)
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)
"""
"""A helper both child scripts start with."""


REPLAY = (
    COUNTED
    + r"""
import asyncio, pickle, sys, time
sys.path.insert(0, ".")
from tests.tui.fakes import FakePoller
from cpinspect.tui.app import InspectorApp

path, rounds, idle = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "idle"
# What a poll makes again, counted (the same in any load): rows formatted, screen layouts and
# stack views' lines.
from textual._compositor import Compositor
from cpinspect.tui.widgets import stack_view, threads_table
counts = {"rows": 0, "layouts": 0, "stacks": 0}

counted(threads_table, "thread_row", "rows")
counted(Compositor, "reflow", "layouts")
counted(stack_view.StackView, "_stack_lines", "stacks")
with open(path, "rb") as f:
    updates = [u for u in pickle.load(f) if u.threads is not None]
now = {"t": updates[0].fetched_at + 0.3}

async def main():
    poller = FakePoller([updates[0]])
    app = InspectorApp(poller, interval=3600.0, clock=lambda: now["t"])
    async with app.run_test(size=(160, 45)) as pilot:
        while app.polls_received < 1:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        n = 0
        for key in counts:
            counts[key] = 0
        start = time.thread_time()
        for _ in range(rounds):
            for update in updates[1:]:
                now["t"] = update.fetched_at + 0.3
                if not idle:
                    poller.set(update)
                    before = app.polls_received
                    app.poll_now()
                    while app.polls_received == before:
                        await asyncio.sleep(0.001)
                await pilot.pause()
                await asyncio.sleep(0.03)
                n += 1
        cpu = 1000 * (time.thread_time() - start) / n
        print("RESULT", cpu, *(counts[k] / n for k in ("rows", "layouts", "stacks")))

asyncio.run(main())
"""
)


SESSION = (
    COUNTED
    + r"""
import sys, time
from cpinspect.memory import tune_malloc
from cpinspect import protocol
from cpinspect.sources import merge, pyspy
from cpinspect.sources.open import open_session

counts = {"json": 0, "restack": 0, "parsed": 0}

counted(protocol, "thread_from_json", "json")
counted(merge, "_restack", "restack")
counted(pyspy, "_parse_thread", "parsed")
tune_malloc()
pid, seconds = sys.argv[1], float(sys.argv[2])
session = open_session(pid).session
def poll_for(length):
    n, end = 0, time.monotonic() + length
    while time.monotonic() < end:
        start = time.monotonic()
        session.poll()
        n += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
    return n
poll_for(5.0)  # the first full answers and readings
for key in counts:
    counts[key] = 0
c0, t0 = time.process_time(), time.monotonic()
n = poll_for(seconds)
cpu, wall = time.process_time() - c0, time.monotonic() - t0
session.close()
print("RESULT", 100 * cpu / wall, 1000 * cpu / n, n, *(counts[k] / n for k in counts))
"""
)


def session_cpu(args: argparse.Namespace) -> int:
    if not args.old or not os.path.isdir(os.path.join(args.old, "cpinspect")):
        print("error: --session needs --old TREE", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    shape = Shape(args.threads, args.busy, args.spin)
    server, held = start_target(shape)
    try:
        procs = {}
        for name, root in (("old", args.old), ("new", str(ROOT))):
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", SESSION, str(server.pid), str(args.seconds)],
                cwd=root,
                env=dict(os.environ, PYTHONPATH=root),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=args.seconds + 180)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"the {name} session failed:\n" + err[-2000:])
            results[name] = [float(x) for x in line.split()[1:]]
        print(
            f"== {shape.label}, sessions alone, {args.seconds:.0f} s, load avg "
            f"{os.getloadavg()[0]:.2f}"
        )
        for name in ("old", "new"):
            pct, per, n, json_, restack, parsed = results[name]
            print(
                f"{name}: {pct:5.1f} % of a core, {per:5.1f} ms per poll ({n:.0f} polls); per poll"
                f" threads from JSON {json_:.0f}, stacks joined {restack:.0f},"
                f" py-spy threads parsed {parsed:.0f}"
            )
        return 0
    finally:
        for sock in held:
            sock.close()
        server.stop()


def record(args: argparse.Namespace) -> int:
    print(machine(), flush=True)
    shape = Shape(args.threads, args.busy, args.spin)
    server, held = start_target(shape)
    try:
        done = subprocess.run(
            [sys.executable, "-c", RECORD, str(server.pid), str(args.polls), args.record],
            cwd=str(ROOT),
            timeout=args.polls * 15 + 60,
        )
        return done.returncode
    finally:
        for sock in held:
            sock.close()
        server.stop()


def replay_one(root: str, path: str, rounds: int, idle: bool) -> List[float]:
    """The UI thread's ms of CPU per poll, then per poll: rows formatted, layouts of the
    screen, stack views' stacks made."""
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run(
        [sys.executable, "-c", REPLAY, os.path.abspath(path), str(rounds), "idle" if idle else ""],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the replay in {root} failed:\n" + done.stderr[-2000:])
    return [float(x) for x in line.split()[1:]]


def replay(args: argparse.Namespace) -> int:
    if not args.old or not os.path.isdir(os.path.join(args.old, "cpinspect")):
        print(
            "error: --replay needs --old TREE (a tree with a cpinspect/ directory)", file=sys.stderr
        )
        return 2
    if not os.path.isfile(args.replay):
        print(f"error: no such file: {args.replay}", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    idle = replay_one(str(ROOT), args.replay, args.rounds, idle=True)[0]
    old = replay_one(args.old, args.replay, args.rounds, idle=False)
    new = replay_one(str(ROOT), args.replay, args.rounds, idle=False)
    print(f"replay of {args.replay}, {args.rounds} rounds, load avg {os.getloadavg()[0]:.2f}")
    print(
        f"UI thread CPU per poll: old {old[0]:.1f} ms  new {new[0]:.1f} ms  {new[0] / old[0]:.2f}x"
    )
    print(
        f"  (the same waiting with no poll: {idle:.1f} ms; without it old {old[0] - idle:.1f} ms, "
        f"new {new[0] - idle:.1f} ms, {(new[0] - idle) / (old[0] - idle):.2f}x)"
    )
    names = ("rows formatted", "layouts of the screen", "stack views' stacks made")
    for name, a, b in zip(names, old[1:], new[1:]):
        print(f"  per poll, {name}: old {a:.1f}  new {b:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
