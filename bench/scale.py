"""The inspector at scale: a pool of 1,000 workers (500 busy) and of 200 (100 busy) — issue 13.

    python bench/scale.py [--seconds 30] [--rss-minutes 1] [--shapes 1000:500,200:100]
                          [--spin 100] [--rounds 5] [--dumps-only]

For each shape, on a real CherryPy process (``bench_server.py`` with the agent, ``busy`` workers
held in ``/sleep``, or ``--spin`` of them spinning in pure Python in ``/spin``), measured side by
side in one run and printed as ratios against each goal:

- **TUI CPU**: ``cpinspect attach PID`` in a pseudo-terminal (160x50, output read and dropped)
  for ``--seconds`` after a warm-up: its CPU in % of one core (goal <= 5 % at 1,000 threads).
- **target extra CPU**: the target's CPU over the same window with the TUI attached minus the
  same window unpolled just before (goal <= 1 % of a core).
- **data age and key latency**: the real App on the real session under Textual's Pilot in a
  child process: every 100 ms, the age of the threads on screen (``now - taken_at``; goal p95
  <= 1.2 s at 1 Hz), and key presses (``b``, ``w``, ``a``, ``g``, ``down``) from the press to
  the first frame the app writes after the key's handler changed the rows or moved the cursor
  (goal p95 <= 100 ms). Before 2026-12-01 13:00 this was the press plus the Pilot's wait for
  the app to go idle, which also waited for the poll worker and py-spy's thread.
- **RSS**: the pty TUI's resident memory after ``--rss-minutes`` attached, and its growth over
  the second half of that time (goal <= 150 MB, no growth).
- **dump and snapshot**: ``cpinspect dump PID --json`` and ``cpinspect snapshot PID`` against
  ``py-spy dump --pid PID`` (no locals), interleaved ``--rounds`` times, medians (goal <= 1.0x
  at 1,000 threads, <= 0.5 s at 200); also ``py-spy dump --json --nonblocking``, the read they
  run beside the agent (their floor). ``--dumps-only`` measures only these.
- ``cpinspect --help`` wall time (goal well under 0.5 s).

Every ``cpinspect`` started here runs on bytecode compiled once into a temporary
``PYTHONPYCACHEPREFIX`` (as an installed package has it), since 2026-12-01 15:20; before, this
environment's ``PYTHONDONTWRITEBYTECODE`` made each start compile ~55 modules from source.

The per-request cost of the agent on a small app (polled at 1 Hz against no agent, paired
rounds) is ``bench/agent_overhead.py``; ``make bench`` runs both.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import psutil
from benchlib import (
    ROOT,
    Server,
    machine,
    open_requests,
    percentile,
    run_json_child,
    start_ready,
)

CPINSPECT = [sys.executable, "-m", "cpinspect"]
TUI_SIZE = (160, 50)


@dataclass
class Shape:
    threads: int
    busy: int
    spin: int = 0

    @property
    def label(self) -> str:
        spin = f", {self.spin} spinning" if self.spin else ""
        return f"pool {self.threads}, {self.busy} busy{spin}"


@dataclass
class Result:
    shape: Shape
    tui_cpu: float = 0.0
    target_idle_cpu: float = 0.0
    target_polled_cpu: float = 0.0
    rss_mb: float = 0.0
    rss_growth_mb: float = 0.0
    ages: List[float] = field(default_factory=list)
    keys: List[float] = field(default_factory=list)
    dump: List[float] = field(default_factory=list)
    capture: List[float] = field(default_factory=list)
    pyspy: List[float] = field(default_factory=list)
    pyspy_nonblocking: List[float] = field(default_factory=list)
    other_dump: List[float] = field(default_factory=list)
    """``--compare ROOT``: the same commands run from another checkout, in the same rounds."""
    other_capture: List[float] = field(default_factory=list)
    """``py-spy dump --json --nonblocking``: the read dump and snapshot run beside the agent."""
    failures: List[str] = field(default_factory=list)


def start_target(shape: Shape, agent_root: Optional[Path] = None) -> Tuple[Server, list]:
    """``agent_root``: the target imports ``cpinspect`` (its agent) from that checkout."""
    argv = [str(ROOT / "bench" / "bench_server.py"), "--threads", str(shape.threads), "--agent"]
    if agent_root is not None:
        code = (
            "import runpy, sys; sys.path.insert(0, %r); sys.argv = sys.argv[1:]; " % str(agent_root)
            + "runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        argv = ["-c", code, *argv]
    server = start_ready(argv, "bench server", timeout=60)
    held = open_requests(server.port, "/sleep?s=900", shape.busy - shape.spin)
    held += open_requests(server.port, "/spin?s=900", shape.spin)
    deadline = time.monotonic() + 60
    proc = psutil.Process(server.pid)
    while time.monotonic() < deadline and proc.num_threads() < shape.threads:
        time.sleep(0.2)
    time.sleep(2.0)  # the held requests reach their handlers
    return server, held


def cpu_of(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class PtyTui:
    """``cpinspect attach PID`` in a pseudo-terminal whose output is read and dropped."""

    def __init__(self, pid: int, root: Optional[str] = None) -> None:
        """``root``: another source tree to run (on ``PYTHONPATH`` and the working directory,
        which ``python -m`` puts first on ``sys.path``); this checkout by default."""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the inspector, as a user runs it
            os.environ["TERM"] = "xterm-256color"
            if root is not None:
                os.environ["PYTHONPATH"] = root
            os.chdir(root or str(ROOT))
            os.execv(sys.executable, [*CPINSPECT, "attach", str(pid)])
        cols, rows = TUI_SIZE
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = psutil.Process(self.pid)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    if not os.read(self.fd, 65536):
                        return
                except OSError:
                    return

    def stop(self) -> None:
        try:
            os.write(self.fd, b"q")
            self.proc.wait(5)
        except (OSError, psutil.TimeoutExpired):
            self.proc.kill()
        self._stop.set()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.fd)


def measure_tui(
    server: Server, result: Result, seconds: float, rss_seconds: float, root: Optional[Path] = None
) -> None:
    target = psutil.Process(server.pid)
    # The target alone, unpolled, over the same length of time.
    c0 = cpu_of(target)
    time.sleep(seconds)
    result.target_idle_cpu = 100 * (cpu_of(target) - c0) / seconds
    tui = PtyTui(server.pid, str(root) if root is not None else None)
    try:
        time.sleep(5.0)  # start-up and first screens
        c0, t0, tui0 = cpu_of(target), time.monotonic(), cpu_of(tui.proc)
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        result.tui_cpu = 100 * (cpu_of(tui.proc) - tui0) / elapsed
        result.target_polled_cpu = 100 * (cpu_of(target) - c0) / elapsed
        remaining = max(0.0, rss_seconds - seconds - 5.0)
        time.sleep(remaining / 2)
        half = tui.proc.memory_info().rss
        time.sleep(remaining / 2)
        rss = tui.proc.memory_info().rss
        result.rss_mb = rss / 2**20
        result.rss_growth_mb = (rss - half) / 2**20
    finally:
        tui.stop()


PILOT = r"""
import asyncio, json, sys, time
from cpinspect.sources.open import open_session
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.threads_panel import ThreadsPanel
from cpinspect.tui.widgets.threads_table import ThreadsTable

# A key's repaint: the first frame written to the terminal after the key's handler changed
# the rows or moved the cursor (the age ticking in the header must not count as one).
marks = {"handled": None, "shown": None}

def mark_handled(cls, name):
    original = getattr(cls, name)
    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if marks["handled"] is None:
            marks["handled"] = time.perf_counter()
        return result
    setattr(cls, name, wrapper)

mark_handled(ThreadsPanel, "_refresh_rows")
mark_handled(ThreadsTable, "move_cursor")

async def main(pid, seconds):
    opened = open_session(str(pid))
    app = InspectorApp(opened.session, interval=1.0, source_lines=opened.source_lines,
                       clock=time.time)
    display = app._display
    def displayed(*args, **kwargs):
        result = display(*args, **kwargs)
        if marks["handled"] is not None and marks["shown"] is None:
            marks["shown"] = time.perf_counter()
        return result
    app._display = displayed
    ages, keys = [], []
    async with app.run_test(size=(160, 50)) as pilot:
        start = time.monotonic()
        while app.store.threads is None and time.monotonic() - start < 30:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        end = time.monotonic() + seconds
        presses = ["b", "w", "a", "g", "g", "down", "down", "up", "w"]
        n = 0
        while time.monotonic() < end:
            threads = app.store.threads
            if threads is not None:
                ages.append(time.time() - threads.taken_at)
            if n % 5 == 0:
                key = presses[(n // 5) % len(presses)]
                marks["handled"] = marks["shown"] = None
                t0 = time.perf_counter()
                await pilot.press(key)
                while marks["shown"] is None and time.perf_counter() - t0 < 5:
                    await asyncio.sleep(0.002)
                if marks["shown"] is not None:
                    keys.append(marks["shown"] - t0)
            n += 1
            await asyncio.sleep(0.1)
    print("RESULT " + json.dumps({"ages": ages, "keys": keys}))

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def measure_pilot(
    server: Server, result: Result, seconds: float, root: Optional[Path] = None
) -> None:
    data = run_json_child(
        PILOT, [str(server.pid), str(seconds)], seconds + 120, "the Pilot run", root
    )
    result.ages, result.keys = data["ages"], data["keys"]


def timed(
    argv: Sequence[str], failures: Optional[List[str]] = None, cwd: Optional[Path] = None
) -> float:
    """Wall seconds of one command; a failure exits, or is kept in ``failures`` (the last
    line it printed) when given: with 100 workers spinning a command may fail, and that is
    a result too."""
    t0 = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, cwd=str(cwd or ROOT), timeout=120)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        why = (done.stderr.decode().strip().splitlines() or ["(no message)"])[-1]
        if failures is None:
            raise SystemExit("%s failed: %s" % (" ".join(argv), why))
        failures.append("%s: %s" % (argv[3] if len(argv) > 3 else argv[0], why))
    return elapsed


def measure_dumps(
    server: Server, result: Result, rounds: int, other: Optional[Path] = None
) -> None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = tempfile.mkdtemp(prefix="cpinspect-scale-")
    try:
        for _ in range(rounds):
            result.pyspy.append(timed([pyspy, "dump", "--pid", str(server.pid)]))
            result.pyspy_nonblocking.append(
                timed([pyspy, "dump", "--pid", str(server.pid), "--json", "--nonblocking"])
            )
            result.dump.append(
                timed([*CPINSPECT, "dump", str(server.pid), "--json"], result.failures)
            )
            result.capture.append(
                timed(
                    [*CPINSPECT, "snapshot", str(server.pid), "-o", out, "--no-routes"],
                    result.failures,
                )
            )
            if other is not None:
                result.other_dump.append(
                    timed([*CPINSPECT, "dump", str(server.pid), "--json"], result.failures, other)
                )
                result.other_capture.append(
                    timed(
                        [*CPINSPECT, "snapshot", str(server.pid), "-o", out, "--no-routes"],
                        result.failures,
                        other,
                    )
                )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def verdict(value: float, goal: float) -> str:
    return "%.2fx of goal %s" % (
        value / goal if goal else float("inf"),
        "ok" if value <= goal else "MISSED",
    )


def report(r: Result, tui: bool = True) -> None:
    s = r.shape
    print(f"\n== {s.label}")
    if tui:
        report_tui(r)
    report_dumps(r)


def report_tui(r: Result) -> None:
    print(f"  TUI CPU attached at 1 Hz   {r.tui_cpu:6.1f} % of a core   {verdict(r.tui_cpu, 5.0)}")
    extra = r.target_polled_cpu - r.target_idle_cpu
    print(
        f"  target CPU unpolled {r.target_idle_cpu:5.1f} %, polled {r.target_polled_cpu:5.1f} %:"
        f" extra {extra:5.1f} % of a core   {verdict(max(extra, 0.0), 1.0)}"
    )
    if r.ages:
        p95 = percentile(r.ages, 95)
        print(
            f"  data age on screen  p50 {statistics.median(r.ages):.2f} s  p95 {p95:.2f} s"
            f"  max {max(r.ages):.2f} s   {verdict(p95, 1.2)}"
        )
    if r.keys:
        p95 = percentile(r.keys, 95) * 1000
        print(
            f"  key to repaint      p50 {statistics.median(r.keys) * 1000:.0f} ms  p95 "
            f"{p95:.0f} ms  ({len(r.keys)} presses)   {verdict(p95, 100.0)}"
        )
    print(
        f"  TUI RSS {r.rss_mb:.0f} MB, growth over the second half {r.rss_growth_mb:+.1f} MB   "
        f"{verdict(r.rss_mb, 150.0)}"
    )


def report_dumps(r: Result) -> None:
    s = r.shape
    if r.pyspy:
        spy, dump, cap = (statistics.median(x) for x in (r.pyspy, r.dump, r.capture))
        print(
            f"  py-spy dump {spy:.2f} s   dump --json {dump:.2f} s ({dump / spy:.2f}x)   "
            f"snapshot {cap:.2f} s ({cap / spy:.2f}x)   medians of {len(r.pyspy)}"
        )
        if r.pyspy_nonblocking:
            ours = statistics.median(r.pyspy_nonblocking)
            print(
                f"    py-spy dump --json --nonblocking (the read ours run) {ours:.2f} s "
                f"({ours / spy:.2f}x)"
            )
        if r.other_dump:
            od, oc = statistics.median(r.other_dump), statistics.median(r.other_capture)
            print(
                f"    --compare checkout: dump --json {od:.2f} s ({od / spy:.2f}x)   "
                f"snapshot {oc:.2f} s ({oc / spy:.2f}x)"
            )
        if s.threads <= 200:
            print(
                f"    at {s.threads} threads: dump {verdict(dump, 0.5)}, "
                f"snapshot {verdict(cap, 0.5)}"
            )
        else:
            print(f"    dump {verdict(dump / spy, 1.0)}, snapshot {verdict(cap / spy, 1.0)}")
    for failure in r.failures:
        print(f"    FAILED {failure}")


def with_bytecode(other: Optional[Path] = None) -> None:
    """The inspector's modules compiled once, as an installed package has them: this
    environment sets PYTHONDONTWRITEBYTECODE, and every ``cpinspect`` started here compiled
    ~55 modules from source (0.15 s a start under cProfile), which no user pays after ``pip
    install``. The bytecode goes to a temporary PYTHONPYCACHEPREFIX, never into the tree."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="cpinspect-scale-pyc-")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "cpinspect")]
        + ([str(other / "cpinspect")] if other is not None else []),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rss-minutes", type=float, default=1.0)
    parser.add_argument("--shapes", default="1000:500,200:100")
    parser.add_argument(
        "--spin",
        type=int,
        default=100,
        help="also each shape with this many of its busy workers spinning (0: skip)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compare",
        metavar="ROOT",
        type=Path,
        help="also run dump and snapshot from this checkout in the same rounds (before/after),"
        " and the TUI and Pilot measures on the same target, that checkout's first",
    )
    parser.add_argument(
        "--spin-only",
        action="store_true",
        help="only the shapes with workers spinning (--spin), not the same shapes without",
    )
    parser.add_argument(
        "--dumps-only",
        action="store_true",
        help="only `dump --json` and `snapshot` against py-spy (no TUI, Pilot or RSS measures)",
    )
    parser.add_argument(
        "--agent-root",
        metavar="ROOT",
        type=Path,
        help="each shape also on a target whose agent comes from this checkout, measured"
        " first (the inspector from this one for both): an agent change side by side",
    )
    args = parser.parse_args()
    with_bytecode(args.compare)
    print(machine())
    help_times = [timed([*CPINSPECT, "--help"]) for _ in range(5)]
    print(
        f"cpinspect --help: median {statistics.median(help_times):.3f} s "
        f"(goal well under 0.5 s: {statistics.median(help_times) / 0.5:.2f}x of 0.5 s)"
    )
    shapes: List[Shape] = []
    for item in args.shapes.split(","):
        threads, busy = (int(x) for x in item.split(":"))
        if not (args.spin_only and args.spin):
            shapes.append(Shape(threads, busy))
        if args.spin:
            shapes.append(Shape(threads, busy, min(args.spin, busy)))
    runs: List[Tuple[Shape, Optional[Path]]] = []
    for shape in shapes:
        if args.agent_root is not None:
            runs.append((shape, args.agent_root))
        runs.append((shape, None))
    for shape, agent_root in runs:
        if args.agent_root is not None:
            print(f"\n== target's agent from {agent_root or ROOT}")
        server, held = start_target(shape, agent_root)
        result = Result(shape)
        other = Result(shape) if args.compare is not None and not args.dumps_only else None
        try:
            if not args.dumps_only:
                if other is not None:  # the other checkout first, then this one: same target
                    measure_tui(server, other, args.seconds, args.rss_minutes * 60, args.compare)
                    measure_pilot(server, other, args.seconds, args.compare)
                measure_tui(server, result, args.seconds, args.rss_minutes * 60)
                measure_pilot(server, result, args.seconds)
            measure_dumps(server, result, args.rounds, args.compare)
        finally:
            for sock in held:
                sock.close()
            server.stop()
        if other is not None:
            print(f"\n== {shape.label}: the --compare checkout ({args.compare}), measured first")
            report_tui(other)
        report(result, tui=not args.dumps_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
