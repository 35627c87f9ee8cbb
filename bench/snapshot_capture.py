"""``cpinspect snapshot PID`` and ``cpinspect open FILE`` at 200 and 1,000 threads, beside py-spy.

    python bench/snapshot_capture.py [--rounds 5] [--threads 200 --threads 1000] [--open-runs 5]

One fresh ``bench_server.py`` per pool size (the agent installed, a cheroot pool of N workers,
N/2 of them held in ``/sleep`` by requests that outlast the run). The script waits until the
agent reports N/2 busy, then runs rounds; in each round every mode once, the order rotating
from round to round so drift on the machine hits all of them:

  cpinspect snapshot   the real command a user runs, ``cpinspect snapshot PID -o DIR`` as a
                       subprocess, from exec to exit (interpreter start, imports, the session,
                       the capture, the JSON and the text report on disk)
  py-spy dump          ``py-spy dump --pid P`` (the py-spy binary cpinspect itself runs,
                       ``find_pyspy()``), its text read from a pipe
  py-spy dump --locals ``py-spy dump --pid P --locals``
  in-process           the command's own steps called in this process, each timed: open the
                       session (agent socket + ``/v1/info``), ``routes()``, ``poll()`` (agent
                       threads, py-spy beside it), ``snapshot_from_update``,
                       ``with_source_lines`` and ``write_snapshots`` (redact, encode, the
                       text report, write, fsync and link both files); then, apart and not
                       in the total, its redact + ``encode_snapshots`` and ``format_report``
  cpinspect startup    ``cpinspect snapshot --help``: the interpreter and the CLI's imports,
                       the floor under the command

Then, on the JSON file the last ``cpinspect snapshot`` wrote at the largest pool size:
``read_snapshots`` (file read + ``json.loads`` + ``from_json``, with the two parts apart), and
``open`` to the first full screen: the real ``InspectorApp(FileSession.open(path),
source_lines=session)`` under headless ``App.run_test()``, each run in a fresh interpreter (as
``cpinspect open`` starts: empty heap, no app before it; its imports done before the clock
starts, and printed), timed from before ``FileSession.open`` until the threads table holds a
row for every busy thread of the snapshot and the screen has been refreshed after it
(``pilot.pause()``).

Goals (from the issue): capture <= 1 s at 200 threads; capture <= 1.5 x ``py-spy dump
--locals`` at 1,000 threads; open to the first full screen <= 1 s on the 1,000-thread file.
``--profile`` prints cProfile's top functions of the in-process capture and of the read.
``--against REV`` also loads ``cpinspect/protocol.py`` as it was at git revision ``REV`` and
times its ``snapshots_from_document`` and ``snapshots_document`` beside today's on the same
file, alternating, after checking that both give equal snapshots and equal documents.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchlib import (
    ROOT,
    agent_get,
    machine,
    median,
    open_requests,
    start_server,
    wait_until,
)

sys.path.insert(0, str(ROOT))

from cpinspect.sources.pyspy import find_pyspy

HOLD_SECONDS = 900
"""Handlers outlast the run; the server is killed afterwards, they never finish."""
CAPTURE_GOAL_S = 1.0
"""At 200 threads."""
CAPTURE_VS_LOCALS = 1.5
"""At 1,000 threads: capture / ``py-spy dump --locals``."""
OPEN_GOAL_S = 1.0
CLI = "cpinspect snapshot"
DUMP = "py-spy dump"
DUMP_LOCALS = "py-spy dump --locals"
INPROC = "in-process"
STARTUP = "cpinspect startup"
MODES = (CLI, DUMP, DUMP_LOCALS, INPROC, STARTUP)
PARTS = (
    "open session",
    "routes()",
    "poll()",
    "snapshot_from_update",
    "with_source_lines",
    "write_snapshots",
)
"""The command's steps; ``total`` is their sum."""
INSIDE_WRITE = ("redact + encode", "format_report")
"""Parts of ``write_snapshots``, timed apart on their own (not in ``total``)."""


def cpinspect_command() -> List[str]:
    """The ``cpinspect`` entry point of this interpreter's environment (what a user runs)."""
    script = Path(sys.executable).parent / "cpinspect"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "cpinspect"]


def run_timed(args: Sequence[str], timeout: float = 300.0) -> Tuple[float, bytes]:
    """Seconds from start to exit of ``args`` and its stdout; raises on a non-zero exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(args), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            "snapshot_capture: %s exited %d: %s"
            % (" ".join(args[:3]), proc.returncode, proc.stderr.decode(errors="replace")[-500:])
        )
    return elapsed, proc.stdout


# --- the in-process capture ---------------------------------------------------------------------


def capture_in_process(pid: int, out_dir: str) -> Dict[str, float]:
    """The steps of ``cpinspect snapshot PID -o DIR``, in its order, each timed (seconds)."""
    from cpinspect.formatting import format_report
    from cpinspect.snapshots import (
        encode_snapshots,
        redacted,
        snapshot_from_update,
        with_source_lines,
        write_snapshots,
    )
    from cpinspect.sources.open import open_session

    parts: Dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = call()
        parts[name] = time.perf_counter() - t0
        return value

    opened = timed("open session", lambda: open_session(str(pid)))
    session = opened.session
    try:
        routes = timed("routes()", session.routes)
        update = timed("poll()", session.poll)
        snap = timed("snapshot_from_update", lambda: snapshot_from_update(update, routes=routes))
        snap = timed("with_source_lines", lambda: with_source_lines(snap, opened.source_lines))
    finally:
        session.close()
    timed("write_snapshots", lambda: write_snapshots([snap], out_dir))
    parts["total"] = sum(parts.values())
    safe = [redacted(snap, False)]
    timed("redact + encode", lambda: encode_snapshots([redacted(snap, False)]))
    timed("format_report", lambda: format_report(safe, time.time()))
    return parts


# --- one pool size ------------------------------------------------------------------------------


@dataclass
class SizeResult:
    threads: int
    busy: int
    times: Dict[str, List[float]] = field(default_factory=dict)
    parts: Dict[str, List[float]] = field(default_factory=dict)
    json_bytes: int = 0
    report_bytes: int = 0
    dump_bytes: int = 0
    locals_bytes: int = 0
    kept: Optional[Path] = None
    """The JSON file of the last ``cpinspect snapshot`` (moved out of its temp dir)."""

    def med(self, mode: str) -> float:
        return median(self.times[mode])


def measure_size(threads: int, rounds: int, keep_dir: str) -> SizeResult:
    busy = threads // 2
    srv = start_server(agent=True, threads=threads, timeout=120.0)
    socks = []
    try:
        assert srv.socket is not None
        sock = srv.socket
        socks = open_requests(srv.port, "/sleep?s=%d" % HOLD_SECONDS, busy)

        def all_busy() -> bool:
            return bool(agent_get(sock, timeout=30)["pools"][0]["busy"] == busy)

        wait_until(all_busy, timeout=300, what="%d busy workers" % busy)
        return _rounds(srv.pid, threads, busy, rounds, keep_dir)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def _rounds(pid: int, threads: int, busy: int, rounds: int, keep_dir: str) -> SizeResult:
    result = SizeResult(
        threads, busy, {m: [] for m in MODES}, {p: [] for p in (*PARTS, "total", *INSIDE_WRITE)}
    )
    pyspy = find_pyspy()
    cli = cpinspect_command()
    scratch = tempfile.mkdtemp(prefix="cpi-capture-")
    last_json: Optional[Path] = None

    def cli_snapshot() -> float:
        nonlocal last_json
        out = tempfile.mkdtemp(dir=scratch)
        elapsed, stdout = run_timed([*cli, "snapshot", str(pid), "-o", out])
        paths = [Path(p) for p in stdout.decode().split()]
        json_path = next(p for p in paths if p.suffix == ".json")
        report = next(p for p in paths if p.suffix == ".txt")
        result.json_bytes = json_path.stat().st_size
        result.report_bytes = report.stat().st_size
        last_json = json_path
        return elapsed

    def dump(locals_: bool) -> float:
        args = [pyspy, "dump", "--pid", str(pid)] + (["--locals"] if locals_ else [])
        elapsed, stdout = run_timed(args)
        if locals_:
            result.locals_bytes = len(stdout)
        else:
            result.dump_bytes = len(stdout)
        return elapsed

    def in_process() -> float:
        parts = capture_in_process(pid, tempfile.mkdtemp(dir=scratch))
        for name, value in parts.items():
            result.parts[name].append(value)
        return parts["total"]

    modes: Dict[str, Callable[[], float]] = {
        CLI: cli_snapshot,
        DUMP: lambda: dump(False),
        DUMP_LOCALS: lambda: dump(True),
        INPROC: in_process,
        STARTUP: lambda: run_timed([*cli, "snapshot", "--help"])[0],
    }
    try:
        for fn in modes.values():
            fn()  # warm-up: page cache, py-spy's first read of the binary
        order = list(MODES)
        for i in range(rounds):
            shift = i % len(order)
            for mode in order[shift:] + order[:shift]:
                result.times[mode].append(modes[mode]())
                time.sleep(0.1)
        for name in result.parts:  # the warm-up's parts are not counted
            del result.parts[name][0]
        assert last_json is not None
        kept = Path(keep_dir) / ("%d-%s" % (threads, last_json.name))
        shutil.move(str(last_json), kept)
        result.kept = kept
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def profile_capture(pid_threads: int, keep_dir: str) -> None:
    """cProfile of the in-process capture on a fresh server of ``pid_threads`` threads."""
    srv = start_server(agent=True, threads=pid_threads, timeout=120.0)
    socks = []
    try:
        assert srv.socket is not None
        sock = srv.socket
        busy = pid_threads // 2
        socks = open_requests(srv.port, "/sleep?s=%d" % HOLD_SECONDS, busy)
        wait_until(
            lambda: bool(agent_get(sock, timeout=30)["pools"][0]["busy"] == busy),
            timeout=300,
            what="busy workers",
        )
        capture_in_process(srv.pid, tempfile.mkdtemp(dir=keep_dir))  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        capture_in_process(srv.pid, tempfile.mkdtemp(dir=keep_dir))
        profiler.disable()
        print_profile(profiler, "in-process capture, %d threads" % pid_threads)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def print_profile(profiler: cProfile.Profile, what: str, top: int = 25) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    print("--- cProfile: %s (cumulative, top %d) ---" % (what, top))
    print(out.getvalue())


# --- reading and opening the file ---------------------------------------------------------------


def measure_read(path: Path, runs: int) -> Dict[str, List[float]]:
    from cpinspect.model import Snapshot
    from cpinspect.protocol import from_json
    from cpinspect.snapshots import read_snapshots

    times: Dict[str, List[float]] = {"read_snapshots": [], "json.loads": [], "from_json": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        read_snapshots(path)
        times["read_snapshots"].append(time.perf_counter() - t0)
        data = path.read_bytes()
        t0 = time.perf_counter()
        doc = json.loads(data)
        times["json.loads"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i, s in enumerate(doc["snapshots"]):
            from_json(Snapshot, s, "snapshots[%d]" % i)
        times["from_json"].append(time.perf_counter() - t0)
    return times


@dataclass
class OpenRun:
    rows_s: float
    """To a row in the table for every busy thread."""
    screen_s: float
    """And the screen refreshed after it."""
    rows: int
    read_s: float
    """Of which ``FileSession.open`` (read + parse)."""
    show_s: float
    """Of which ``ThreadsPanel.show_snapshot`` (the table filled, the summary, the stack)."""
    fill_s: float
    """Of ``show_s``: ``ThreadsTable._fill`` (rows built and added)."""
    gc_s: float
    """Time in the cyclic GC during the run (part of ``screen_s``)."""


class GcTime:
    """Seconds spent in the cyclic GC while started (a collection over a large heap shows up
    as a pause in whatever code happened to allocate)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._since = 0.0

    def __call__(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._since

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class Timed:
    """Patches ``cls.name`` to add the seconds each call takes to ``total`` (undone on exit)."""

    def __init__(self, cls: Any, name: str) -> None:
        self.cls, self.name, self.total = cls, name, 0.0
        self.original = getattr(cls, name)

    def __enter__(self) -> Timed:
        original = self.original

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - t0

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.cls, self.name, self.original)


async def open_once(path: Path, size: Tuple[int, int]) -> OpenRun:
    from cpinspect.sources.file import FileSession
    from cpinspect.tui.app import InspectorApp
    from cpinspect.tui.widgets.threads_panel import ThreadsPanel
    from cpinspect.tui.widgets.threads_table import ThreadsTable, thread_key

    with GcTime() as gc_time, Timed(ThreadsPanel, "show_snapshot") as show, Timed(
        ThreadsTable, "_fill"
    ) as fill:
        t0 = time.perf_counter()
        session = FileSession.open(path)
        read_s = time.perf_counter() - t0
        app = InspectorApp(session, source_lines=session)
        threads = session.current.threads
        assert threads is not None
        wanted = {thread_key(t.ident) for t in threads.threads if t.busy}
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 60
            while True:
                if app.updates_applied and wanted <= set(app.threads_panel.table.row_keys):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("snapshot_capture: the busy rows never showed")
                await asyncio.sleep(0)
            rows_s = time.perf_counter() - t0
            await pilot.pause()
            screen_s = time.perf_counter() - t0
            gc_s = gc_time.total
            rows = len(app.threads_panel.table.row_keys)
            await pilot.press("q")
    return OpenRun(rows_s, screen_s, rows, read_s, show.total, fill.total, gc_s)


def open_child(path: Path, size: Tuple[int, int]) -> int:
    """One open in this fresh process, as ``cpinspect open`` has it (no app before it); prints
    the ``OpenRun`` as JSON, with the seconds the imports took before the clock started."""
    t0 = time.perf_counter()
    import cpinspect.sources.file
    import cpinspect.tui.app  # noqa: F401

    imports_s = time.perf_counter() - t0
    run = asyncio.run(open_once(path, size))
    print(json.dumps(dict(run.__dict__, imports_s=imports_s)))
    return 0


def measure_open(path: Path, runs: int, size: Tuple[int, int]) -> List[Dict[str, float]]:
    """``runs`` opens, each in a fresh interpreter: a real ``cpinspect open`` starts with an
    empty heap and cold Textual caches, not with this script's data and earlier apps."""
    out = []
    for _ in range(runs):
        _, stdout = run_timed(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--open-child",
                str(path),
                "--size",
                "%dx%d" % size,
            ]
        )
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def compare_protocol(rev: str, path: Path, runs: int) -> None:
    """Today's file codec beside the one at git ``rev``, on the document in ``path``."""
    import importlib.util

    from cpinspect import protocol as today

    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", "%s:cpinspect/protocol.py" % rev],
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix="cpi-protocol-") as where:
        file = Path(where) / "protocol_at_rev.py"
        file.write_bytes(source)
        spec = importlib.util.spec_from_file_location("protocol_at_rev", file)
        assert spec is not None and spec.loader is not None
        then = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(then)
    doc = json.loads(path.read_bytes())
    snaps = today.snapshots_from_document(doc)
    if then.snapshots_from_document(doc) != snaps:
        raise SystemExit("snapshot_capture: the two codecs read the file differently")
    if then.snapshots_document(snaps) != today.snapshots_document(snaps):
        raise SystemExit("snapshot_capture: the two codecs write different documents")
    times: Dict[str, List[float]] = {}
    calls: Dict[str, Callable[[], Any]] = {
        "from_json at %s" % rev: lambda: then.snapshots_from_document(doc),
        "from_json now": lambda: today.snapshots_from_document(doc),
        "to_json at %s" % rev: lambda: then.snapshots_document(snaps),
        "to_json now": lambda: today.snapshots_document(snaps),
    }
    for i in range(runs):
        for name in list(calls)[i % 2 :] + list(calls)[: i % 2]:
            t0 = time.perf_counter()
            calls[name]()
            times.setdefault(name, []).append(time.perf_counter() - t0)
    print("file codec at %s vs now on the same file, %d runs each, alternating:" % (rev, runs))
    for name, values in times.items():
        print("  %-24s %s" % (name, ms(median(values))))
    for what in ("from_json", "to_json"):
        now = median(times["%s now" % what])
        before = median(times["%s at %s" % (what, rev)])
        print("  ratio %-18s %6.2f (now / at %s)" % (what, now / before, rev))
    print()


# --- report -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "%8.1f ms" % (seconds * 1000)


def print_size(r: SizeResult) -> None:
    n = len(r.times[CLI])
    print("threads %d (%d busy), %d rounds, medians (min-max):" % (r.threads, r.busy, n))
    for mode in MODES:
        t = r.times[mode]
        print("  %-24s %s  (%s - %s)" % (mode, ms(median(t)), ms(min(t)), ms(max(t))))
    print("  in-process parts:")
    for name in (*PARTS, "total"):
        print("    %-22s %s" % (name, ms(median(r.parts[name]))))
    print("  of write_snapshots, timed apart:")
    for name in INSIDE_WRITE:
        print("    %-22s %s" % (name, ms(median(r.parts[name]))))
    print(
        "  sizes: snapshot .json %.2f MB (%d bytes), report .txt %.2f MB; py-spy dump text "
        "%.2f MB, --locals %.2f MB"
        % (
            r.json_bytes / 1e6,
            r.json_bytes,
            r.report_bytes / 1e6,
            r.dump_bytes / 1e6,
            r.locals_bytes / 1e6,
        )
    )
    cli = r.med(CLI)
    print("  ratios: cpinspect snapshot / py-spy dump          %6.2f" % (cli / r.med(DUMP)))
    print("          cpinspect snapshot / py-spy dump --locals %6.2f" % (cli / r.med(DUMP_LOCALS)))
    print(
        "          in-process total / py-spy dump --locals   %6.2f"
        % (r.med(INPROC) / r.med(DUMP_LOCALS))
    )
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per pool size (5)")
    parser.add_argument(
        "--threads", type=int, action="append", help="pool sizes (default: 200 and 1000)"
    )
    parser.add_argument("--open-runs", type=int, default=5, help="opens of the file (5)")
    parser.add_argument("--profile", action="store_true", help="also print cProfile tables")
    parser.add_argument(
        "--against", metavar="REV", help="also time protocol.py at git REV beside today's"
    )
    parser.add_argument("--size", default="120x40", help="terminal size for open (120x40)")
    parser.add_argument("--open-child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    columns, _, lines = args.size.partition("x")
    size = (int(columns), int(lines))
    if args.open_child:
        return open_child(Path(args.open_child), size)
    sizes = args.threads or [200, 1000]
    if args.rounds < 1 or args.open_runs < 1 or min(sizes) < 2:
        parser.error("--rounds and --open-runs must be positive, --threads at least 2")

    print("snapshot_capture: %s" % machine())
    print(
        "pools %s, half busy in /sleep; %d rounds, modes interleaved (order rotating), "
        "after one warm-up of each; py-spy %s\n"
        % (" and ".join(map(str, sizes)), args.rounds, find_pyspy())
    )
    keep = tempfile.mkdtemp(prefix="cpi-capture-keep-")
    try:
        results = []
        for threads in sizes:
            r = measure_size(threads, args.rounds, keep)
            results.append(r)
            print_size(r)
            sys.stdout.flush()
        largest = max(results, key=lambda r: r.threads)
        assert largest.kept is not None
        read = measure_read(largest.kept, args.open_runs)
        print(
            "read the %d-thread file (%.2f MB), %d runs, medians:"
            % (largest.threads, largest.json_bytes / 1e6, args.open_runs)
        )
        for name, values in read.items():
            print("  %-24s %s" % (name, ms(median(values))))
        print()
        if args.against:
            compare_protocol(args.against, largest.kept, max(args.open_runs, 5))
        opens = measure_open(largest.kept, args.open_runs, size)
        rows_med = median([o["rows_s"] for o in opens])
        screen_med = median([o["screen_s"] for o in opens])
        print(
            "open the %d-thread file in InspectorApp (run_test %dx%d), %d runs, each in a fresh "
            "interpreter:" % (largest.threads, size[0], size[1], len(opens))
        )
        print(
            "  %-24s %s  (%s - %s)"
            % (
                "busy rows in the table",
                ms(rows_med),
                ms(min(o["rows_s"] for o in opens)),
                ms(max(o["rows_s"] for o in opens)),
            )
        )
        print(
            "  %-24s %s  (%s - %s)   %d rows"
            % (
                "+ screen refreshed",
                ms(screen_med),
                ms(min(o["screen_s"] for o in opens)),
                ms(max(o["screen_s"] for o in opens)),
                opens[-1]["rows"],
            )
        )
        split: Dict[str, List[float]] = {
            "of which FileSession.open": [o["read_s"] for o in opens],
            "ThreadsPanel.show_snapshot": [o["show_s"] for o in opens],
            "of it ThreadsTable._fill": [o["fill_s"] for o in opens],
            "cyclic GC (anywhere)": [o["gc_s"] for o in opens],
            "(before the clock: imports)": [o["imports_s"] for o in opens],
        }
        for label, values in split.items():
            print("    %-26s %s" % (label, ms(median(values))))
        print()
        verdicts = []
        by_size = {r.threads: r for r in results}
        if 200 in by_size:
            c = by_size[200].med(CLI)
            ok = c <= CAPTURE_GOAL_S
            verdicts.append(ok)
            print(
                "goal: capture <= %.1f s at 200 threads -> %s (%.2f s, ratio to goal %.2f)"
                % (CAPTURE_GOAL_S, "met" if ok else "NOT met", c, c / CAPTURE_GOAL_S)
            )
        if 1000 in by_size:
            r = by_size[1000]
            ratio = r.med(CLI) / r.med(DUMP_LOCALS)
            ok = ratio <= CAPTURE_VS_LOCALS
            verdicts.append(ok)
            print(
                "goal: capture <= %.1f x py-spy dump --locals at 1000 threads -> %s "
                "(%.2f s / %.2f s = %.2f)"
                % (
                    CAPTURE_VS_LOCALS,
                    "met" if ok else "NOT met",
                    r.med(CLI),
                    r.med(DUMP_LOCALS),
                    ratio,
                )
            )
        ok = screen_med <= OPEN_GOAL_S
        verdicts.append(ok)
        print(
            "goal: open to the first full screen <= %.1f s (%d threads) -> %s (%.2f s, ratio to "
            "goal %.2f)"
            % (
                OPEN_GOAL_S,
                largest.threads,
                "met" if ok else "NOT met",
                screen_med,
                screen_med / OPEN_GOAL_S,
            )
        )
        if args.profile:
            print()
            profile_capture(largest.threads, keep)
            profiler = cProfile.Profile()
            from cpinspect.snapshots import read_snapshots

            profiler.enable()
            read_snapshots(largest.kept)
            profiler.disable()
            print_profile(profiler, "read_snapshots, %d threads" % largest.threads)
        print("all goals met" if all(verdicts) else "some goals NOT met")
        return 0  # the verdicts are printed; `make bench` goes on to the next script
    finally:
        shutil.rmtree(keep, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
