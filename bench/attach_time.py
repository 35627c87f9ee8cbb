"""Time from ``cpinspect attach --inject PID`` to the first full screen.

    python bench/attach_time.py [--rounds 5]

Each round starts a fresh CherryPy app (tests/apps/target.py, pool of 8, *no* agent) and does
what ``cpinspect attach --inject PID`` does, with the same functions: ``inject(pid)``, then
``connect()`` and the ``AgentSession`` + ``InspectorApp`` that ``cli/attach.py``'s ``run_tui``
builds; the real TUI runs headless (``App.run_test``, 120x34). Measured: from the start of the
injection to the first poll applied with threads on screen (``polls_received >= 1``, the
thread model non-empty, rows in the threads table); the injection part is printed apart.
Not included: starting the ``cpinspect`` process and importing Textual, which this script does
before timing; their cost, measured once in a fresh interpreter, is printed at the end.
Goal: <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Tuple

from benchlib import ROOT, machine, median

sys.path.insert(0, str(ROOT))

from cpinspect.attach.inject import inject
from cpinspect.cli.common import connect, pyspy_for
from cpinspect.sources.agent import DEFAULT_TIMEOUT
from cpinspect.sources.live import AgentSession
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp

SCREEN_TIMEOUT = 30.0
"""A round gives up (and the run fails) if no full screen appears within this many seconds."""


@dataclass
class Round:
    total_s: float
    inject_s: float
    gdb_s: float
    threads: int


def start_target(threads: int) -> Tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.target", "--agent", "none", "--threads", str(threads)],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        m = re.search(r"READY port=(\d+) pid=(\d+)", line)
        if m:
            return proc, int(m.group(2))
    stop_target(proc)
    raise SystemExit("attach_time: the target did not start")


def stop_target(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


async def one_round(pid: int) -> Round:
    """``cpinspect attach --inject PID`` as ``cli/attach.py`` runs it, up to the first screen."""
    t0 = time.perf_counter()
    result = inject(pid)
    t_inject = time.perf_counter() - t0
    assert not result.already, "the target already had an agent"
    args = argparse.Namespace(pid=str(pid), socket=None, timeout=DEFAULT_TIMEOUT)
    conn = connect(args)
    lines = SourceLines(conn.pid)
    session = AgentSession(
        conn.source,
        conn.info,
        pid=conn.pid,
        timeout=DEFAULT_TIMEOUT,
        on_new_pid=lines.retarget,
        pyspy=pyspy_for(conn.pid),
    )
    app = InspectorApp(session, interval=1.0, source_lines=lines, clock=time.time)
    try:
        async with app.run_test(size=(120, 34)) as pilot:

            def full_screen() -> bool:
                snap = app.store.threads
                return bool(
                    app.polls_received >= 1
                    and app.updates_applied >= 1
                    and snap is not None
                    and snap.threads
                    and app.threads_panel.table.row_count > 0
                )

            while not full_screen():
                if time.perf_counter() - t0 > SCREEN_TIMEOUT:
                    raise SystemExit(
                        f"attach_time: no full screen after {SCREEN_TIMEOUT:g} s "
                        f"(polls received {app.polls_received}, error {app.poll_error!r})"
                    )
                await pilot.pause(0.005)
            total = time.perf_counter() - t0
            shown = app.threads_panel.table.row_count
            await pilot.press("q")
    finally:
        session.close()
    return Round(total, t_inject, result.schedule_seconds, shown)


def cold_start_seconds() -> float:
    """What this script leaves out: a fresh interpreter importing the CLI and the TUI."""
    code = "import cpinspect.cli, cpinspect.cli.attach, cpinspect.tui.app"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=str(ROOT))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each a fresh target (5)")
    parser.add_argument("--threads", type=int, default=8, help="the target's pool size (8)")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be positive")

    print(f"attach_time: {machine()}")
    print(
        f"{args.rounds} rounds, each on a fresh target (pool {args.threads}, no agent); "
        "inject -> connect -> InspectorApp headless -> first poll with threads on screen\n"
    )
    rounds: List[Round] = []
    for n in range(args.rounds):
        proc, pid = start_target(args.threads)
        try:
            time.sleep(0.5)  # the engine settled, as a target that has been running would be
            r = asyncio.run(one_round(pid))
        finally:
            stop_target(proc)
        rounds.append(r)
        print(
            f"round {n + 1}: {r.total_s:5.2f} s to the first full screen "
            f"(inject {r.inject_s:5.2f} s, of it gdb {r.gdb_s:5.2f} s; "
            f"{r.total_s - r.inject_s:5.2f} s connect + TUI + first poll; "
            f"{r.threads} rows on screen)",
            flush=True,
        )
    totals = [r.total_s for r in rounds]
    injects = [r.inject_s for r in rounds]
    print(
        f"\nattach --inject -> first full screen: median {median(totals):.2f} s, "
        f"max {max(totals):.2f} s ({len(rounds)} rounds)"
    )
    print(f"of it the injection:                 median {median(injects):.2f} s, ", end="")
    print(f"max {max(injects):.2f} s")
    cold = cold_start_seconds()
    print(f"not timed above: a fresh interpreter importing the CLI and the TUI, {cold:.2f} s")
    met = max(totals) <= 3.0
    print(f"\ngoal: <= 3 s -> {'met' if met else 'NOT met'} (max {max(totals):.2f} s)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
