"""Soak: 1,000 inspector sessions and 1,000 agent restarts in a CherryPy app serving traffic.

    python bench/soak.py [--attach 1000] [--attach-pyspy 1000] [--restarts 1000] [--injects 50]
    python bench/soak.py --quick          # 100 / 100 / 100 / 5 cycles, about a minute

One target for every phase: tests/apps/target.py started *without* cpinspect code (``--agent
none``, pool of 8, Autoreloader on), and a load generator in a process of its own
(benchlib.Load: ``--connections`` keep-alive connections sending ``GET /`` back to back on
127.0.0.1, every failure counted, stopped by us or after its time bound). Load alone for
``--baseline`` seconds, then the phases in this order, then ``--after`` seconds of load alone:

``inject``    a real ``inject(pid)`` (gdb schedules the bootstrap on the main thread, which
              imports the agent's private copy and calls ``install()``), one ``GET /v1/threads``
              through it that must list threads, a real ``detach(pid)`` (gdb again; the
              bootstrap calls ``uninstall()``). benchlib.inject_cycles, as bench/inject_soak.py.
``restart``   the same ``install()`` / ``uninstall()`` without gdb: ``GET /install_agent`` on
              the app (tests/apps/target.py calls ``cpinspect.agent.install()`` in a request
              thread and answers the socket path), one ``GET /v1/threads`` through the new
              agent that must list threads, ``GET /uninstall_agent`` (``uninstall()``), and the
              socket file must be gone.
``attach``    with one agent installed (``GET /install_agent`` once before, uninstalled after
              the last attach phase): what ``cpinspect attach PID`` does without its screen --
              ``open_session(str(pid))`` (find the socket, check it, ``/v1/info``), two
              ``session.poll()`` (each: ``/v1/threads`` and, every few polls, ``/v1/info``),
              ``session.close()`` -- with py-spy withheld (``pyspy_for`` returning None, as when
              py-spy is missing), so the agent's side alone is soaked fast;
``attach+py-spy`` the same with py-spy beside the agent, as the inspector really runs: each
              poll also runs ``py-spy dump --nonblocking`` and must join its threads.

Printed per phase: cycles done, failed cycles (number and reason), seconds per cycle (median,
max) and cycles per second; the target's threads, open fds and RSS before the phase, after it
(threads and fds given up to 10 s to come back) and the most seen during it (sampled every
0.1 s), and, when a count did not come back, which thread names and fd targets differ. Then
the load: requests and failed requests per phase (goal 0), latency windows, and crashes (the
target gone, a second ``BOOT`` line, tracebacks on its stderr).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import psutil
from benchlib import (
    ROOT,
    Load,
    LoadRecord,
    Target,
    agent_get,
    fmt_window,
    inject_cycles,
    machine,
    median,
    settled_counts,
    start_target,
    window,
)

sys.path.insert(0, str(ROOT))

import cpinspect.sources.open as opener
from cpinspect.model import SourceKind
from cpinspect.sources.base import LinkState

SETTLE = 2.0
"""Seconds of load before the baseline window opens (connections made, caches warm)."""
QUIESCE_TIMEOUT = 10.0
"""How long the thread and fd counts get to come back after a phase."""
MAX_ERRORS = 10
"""A phase stops after this many failed cycles (the rest would say the same)."""
MIB = 1024 * 1024


# --- the target's resources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    threads: int
    fds: int
    rss: int


def usage(pid: int) -> Usage:
    p = psutil.Process(pid)
    with p.oneshot():
        return Usage(p.num_threads(), p.num_fds(), p.memory_info().rss)


class Sampler:
    """Samples the target's threads, fds and RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: List[Tuple[float, Usage]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), usage(self.pid)))
            except psutil.Error:
                return

    def peak(self, lo: float, hi: float) -> Optional[Usage]:
        seen = [u for t, u in self.samples if lo <= t < hi]
        if not seen:
            return None
        return Usage(
            max(u.threads for u in seen), max(u.fds for u in seen), max(u.rss for u in seen)
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def quiet_usage(pid: int, timeout: float = 3.0) -> Usage:
    """The usage once two readings 0.2 s apart agree on threads and fds (a control request's
    connection may still be closing), or the last reading after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = usage(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = usage(pid)
        if (now.threads, now.fds) == (last.threads, last.fds):
            return now
        last = now
    return last


def fd_targets(pid: int) -> List[str]:
    """What each open fd of ``pid`` leads to (``socket:[…]``, a path, ``anon_inode:…``)."""
    out = []
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"{base}/{name}"))
    return sorted(out)


def app_get(port: int, path: str, timeout: float = 10.0) -> str:
    """The body of a 200 answer from the target's own HTTP port (127.0.0.1)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:120]!r}")
    return body


def thread_names(port: int) -> List[str]:
    """The target's ``threading.enumerate()`` names (its ``/debug_state``)."""
    names: List[str] = json.loads(app_get(port, "/debug_state"))["threads"]
    return names


def multiset_diff(before: List[str], after: List[str]) -> List[str]:
    """``+x`` for what ``after`` has more of, ``-x`` for what it has fewer of."""
    b, a = collections.Counter(before), collections.Counter(after)
    plus = [f"+{k}" for k, n in (a - b).items() for _ in range(n)]
    minus = [f"-{k}" for k, n in (b - a).items() for _ in range(n)]
    return sorted(plus) + sorted(minus)


# --- the phases ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    wanted: int
    durations: List[float] = field(default_factory=list)
    """Seconds of each completed cycle."""
    errors: List[str] = field(default_factory=list)
    failed: int = 0
    lo: float = 0.0
    hi: float = 0.0
    before: Optional[Usage] = None
    after: Optional[Usage] = None
    peak: Optional[Usage] = None
    settle_s: float = 0.0
    diff_threads: List[str] = field(default_factory=list)
    diff_fds: List[str] = field(default_factory=list)
    warm: Optional[Usage] = None
    """The usage after the first tenth of the cycles (imports and caches done)."""
    warm_at: int = 0
    extra: List[str] = field(default_factory=list)
    """Lines of phase-specific figures (the inject phase's gdb times, py-spy's misses)."""

    @property
    def back(self) -> bool:
        return (
            self.before is not None
            and self.after is not None
            and (self.before.threads, self.before.fds) == (self.after.threads, self.after.fds)
        )


class Soak:
    def __init__(self, target: Target, sampler: Sampler, budget: float) -> None:
        self.target = target
        self.sampler = sampler
        self.budget = budget
        self.phases: List[Phase] = []
        self.aborted = ""
        """Why the phases stopped early (the target restarted or went away...)."""

    def target_trouble(self) -> str:
        """Why the target cannot be soaked any more, or ''."""
        if not self.target.alive():
            return "the target is gone"
        if self.target.boots > 1:
            why = [x for x in self.target.lines if "Restarting because" in x]
            return "the target restarted (Autoreloader%s)" % (
                ": " + why[0].replace("ENGINE-LOG ", "") if why else ""
            )
        return ""

    @contextlib.contextmanager
    def phase(self, name: str, wanted: int) -> Iterator[Phase]:
        """Measure the target around one phase; report what did not come back."""
        pid, port = self.target.pid, self.target.port
        ph = Phase(name, wanted)
        ph.before = quiet_usage(pid)
        fds_before = fd_targets(pid)
        names_before = thread_names(port)
        ph.lo = time.monotonic()
        try:
            yield ph
        finally:
            ph.hi = time.monotonic()
            self.phases.append(ph)
            trouble = self.target_trouble()
            if trouble:
                ph.errors.append(trouble)
            else:
                try:
                    want = (ph.before.threads, ph.before.fds)
                    _, ph.settle_s = settled_counts(pid, want, QUIESCE_TIMEOUT)
                    ph.after = usage(pid)
                    ph.peak = self.sampler.peak(ph.lo, time.monotonic())
                    if not ph.back:
                        # Read as at the start: fds first, then /debug_state (a pool thread).
                        ph.diff_fds = multiset_diff(fds_before, fd_targets(pid))
                        ph.diff_threads = multiset_diff(names_before, thread_names(port))
                except (OSError, RuntimeError, psutil.Error) as exc:
                    ph.errors.append(f"measuring after the phase: {type(exc).__name__}: {exc}")
            print(f"  {name}: {len(ph.durations)}/{wanted} cycles in {ph.hi - ph.lo:.1f} s")

    def cycles(self, ph: Phase, one: Callable[[], None]) -> None:
        """Run ``one`` ``ph.wanted`` times; a failure is recorded and the next cycle runs."""
        give_up = time.monotonic() + self.budget
        warm_at = max(1, ph.wanted // 10)
        for n in range(ph.wanted):
            if n == warm_at:
                ph.warm, ph.warm_at = usage(self.target.pid), n
            if time.monotonic() > give_up:
                ph.errors.append(f"budget of {self.budget:g} s reached after {n} cycles")
                break
            if self.target.boots > 1 or (n % 50 == 0 and not self.target.alive()):
                break  # said by phase() with the reason
            t0 = time.perf_counter()
            try:
                one()
            except Exception as exc:  # noqa: BLE001 - reported with the cycle's number
                ph.failed += 1
                ph.errors.append(f"cycle {n + 1}: {type(exc).__name__}: {exc}")
                if ph.failed >= MAX_ERRORS:
                    ph.errors.append(f"stopped after {MAX_ERRORS} failed cycles")
                    break
                continue
            ph.durations.append(time.perf_counter() - t0)


def restart_cycle(port: int) -> None:
    path = app_get(port, "/install_agent")
    answer = agent_get(path, "/v1/threads", timeout=5.0)
    if not answer.get("threads"):
        raise RuntimeError("the agent answered /v1/threads without threads")
    said = app_get(port, "/uninstall_agent")
    if said != "uninstalled":
        raise RuntimeError(f"/uninstall_agent answered {said!r}")
    if os.path.lexists(path):
        raise RuntimeError(f"uninstall() left its socket file {path}")


@dataclass
class PySpyMisses:
    """Polls whose update did not join py-spy's threads (the poll itself was LIVE)."""

    polls: int = 0
    missed: collections.Counter[str] = field(default_factory=collections.Counter)


def attach_cycle(pid: int, polls: int, misses: Optional[PySpyMisses]) -> None:
    """One session as ``cpinspect attach`` opens it; with ``misses``, py-spy must be beside the
    agent (a poll it failed is counted there: the inspector says so and shows the agent's)."""
    opened = opener.open_session(str(pid))
    try:
        if opened.kind is not SourceKind.AGENT:
            raise RuntimeError(f"opened a {opened.kind.value} session, not the agent's")
        for i in range(polls):
            update = opened.session.poll()
            if update.state is not LinkState.LIVE or update.threads is None:
                raise RuntimeError(f"poll {i + 1}: {update.state.value}: {update.message}")
            if not update.threads.threads:
                raise RuntimeError(f"poll {i + 1}: no threads")
            if misses is not None:
                if getattr(opened.session, "pyspy", None) is None:
                    raise RuntimeError(f"poll {i + 1}: no py-spy beside the agent")
                misses.polls += 1
                if not update.pyspy_joined:
                    misses.missed["; ".join(update.warnings) or "(no warning)"] += 1
    finally:
        opened.session.close()


@contextlib.contextmanager
def without_pyspy() -> Iterator[None]:
    """``open_session`` as when py-spy is missing: ``pyspy_for`` finds none."""
    real = opener.pyspy_for
    opener.pyspy_for = lambda pid: None
    try:
        yield
    finally:
        opener.pyspy_for = real


def run_phases(args: argparse.Namespace, soak: Soak) -> None:
    """The phases in order; the first that cannot go on stops the rest (``soak.aborted``)."""
    try:
        _run_phases(args, soak)
    except (OSError, RuntimeError, psutil.Error) as exc:
        soak.aborted = f"{type(exc).__name__}: {exc}"
    trouble = soak.target_trouble()
    if trouble:
        soak.aborted = f"{trouble}; {soak.aborted}" if soak.aborted else trouble


def _run_phases(args: argparse.Namespace, soak: Soak) -> None:
    target = soak.target
    if args.injects:
        with soak.phase("inject", args.injects) as ph:
            got = inject_cycles(target.pid, args.injects, args.budget)
            ph.durations = [a + b + c for a, b, c in zip(got.inject_s, got.probe_s, got.detach_s)]
            ph.errors, ph.failed = got.errors, int(bool(got.errors))
            for what, values in (
                ("inject", got.inject_s),
                ("  of it gdb", got.gdb_s),
                ("probe", got.probe_s),
                ("detach", got.detach_s),
            ):
                if values:
                    ms = [v * 1000 for v in values]
                    ph.extra.append(
                        f"{what:<11} median {median(ms):7.1f} ms   max {max(ms):7.1f} ms"
                    )
    if args.restarts:
        with soak.phase("restart", args.restarts) as ph:
            soak.cycles(ph, lambda: restart_cycle(target.port))
    if args.attach or args.attach_pyspy:
        path = app_get(target.port, "/install_agent")
        try:
            if args.attach:
                with soak.phase("attach", args.attach) as ph, without_pyspy():
                    soak.cycles(ph, lambda: attach_cycle(target.pid, args.polls, None))
            if args.attach_pyspy:
                misses = PySpyMisses()
                with soak.phase("attach+py-spy", args.attach_pyspy) as ph:
                    soak.cycles(ph, lambda: attach_cycle(target.pid, args.polls, misses))
                    missed = sum(misses.missed.values())
                    ph.extra.append(
                        f"py-spy joined in {misses.polls - missed} of {misses.polls} polls "
                        "(each missed poll was LIVE with the agent's threads and said why:)"
                    )
                    for why, n in misses.missed.most_common(5):
                        ph.extra.append(f"  {n} x {why}")
        finally:
            app_get(target.port, "/uninstall_agent")
        if os.path.lexists(path):
            print(f"  note: the agent's socket {path} is still there after /uninstall_agent")


# --- the report ---------------------------------------------------------------------------------


def fmt_usage(name: str, b: Optional[Usage], a: Optional[Usage], p: Optional[Usage]) -> str:
    def one(u: Optional[Usage], attr: str) -> str:
        if u is None:
            return "?"
        v = getattr(u, attr)
        return f"{v / MIB:.1f}" if attr == "rss" else str(v)

    return "   ".join(
        f"{label} {one(b, attr)} -> {one(a, attr)} (max {one(p, attr)})"
        for label, attr in (("threads", "threads"), ("fds", "fds"), ("RSS MiB", "rss"))
    )


def report(args: argparse.Namespace, soak: Soak, record: LoadRecord, times: Dict[str, Any]) -> bool:
    target = soak.target
    starts, lats, failures = record.starts, record.latencies, record.failures
    met = True
    print()
    for ph in soak.phases:
        done = len(ph.durations)
        took = ph.hi - ph.lo
        rate = done / took if took > 0 else 0.0
        print(f"{ph.name}: {done}/{ph.wanted} cycles, {ph.failed} failed, in {took:.1f} s")
        if ph.durations:
            ms = [d * 1000 for d in ph.durations]
            print(
                f"  per cycle   median {median(ms):7.1f} ms   max {max(ms):7.1f} ms   "
                f"{rate:6.1f} cycles/s"
            )
        for line in ph.extra:
            print(f"  {line}")
        for err in ph.errors[: MAX_ERRORS + 1]:
            print(f"  failed: {err}")
        print(f"  {fmt_usage('', ph.before, ph.after, ph.peak).strip()}")
        if ph.warm is not None and ph.after is not None and done > ph.warm_at:
            grew = (ph.after.rss - ph.warm.rss) / 1024
            print(
                f"  RSS after cycle {ph.warm_at} (warm) {ph.warm.rss / MIB:.1f} MiB; from there "
                f"to the end {grew:+.0f} KiB over {done - ph.warm_at} cycles "
                f"({grew / (done - ph.warm_at):+.2f} KiB per cycle)"
            )
        print(
            f"  threads and fds back to the phase's start: {'yes' if ph.back else 'NO'}"
            + (f" (settled in {ph.settle_s:.1f} s)" if ph.back else "")
        )
        if ph.diff_threads:
            print(f"  threads that differ: {', '.join(ph.diff_threads)}")
        if ph.diff_fds:
            print(f"  fds that differ: {', '.join(ph.diff_fds)}")
        in_phase = sum(1 for t, _ in failures if ph.lo <= t < ph.hi)
        print(f"  {fmt_window('requests', window(starts, lats, ph.lo, ph.hi), took)}")
        print(f"  failed app requests during the phase: {in_phase}")
        met = met and ph.back and ph.failed == 0 and done == ph.wanted
        print()

    if soak.aborted:
        print(f"phases stopped early: {soak.aborted}\n")
        met = False
    base_lo, base_hi = times["base"]
    after_lo, after_hi = times["after"]
    print(fmt_window("baseline", window(starts, lats, base_lo, base_hi), base_hi - base_lo))
    print(fmt_window("after", window(starts, lats, after_lo, after_hi), after_hi - after_lo))
    print(
        f"requests  {len(starts) + len(failures)} total, {len(failures)} failed "
        f"(goal 0; requests sent over {times['end'] - times['start']:.0f} s)"
    )
    for t, why in failures[:5]:
        print(f"          failure at +{t - base_lo:.2f} s: {why}")
    alive = target.alive()
    time.sleep(0.3)  # let the stdout reader catch up with a late BOOT line
    crashes = int(not alive) + (target.boots - 1)
    print(
        f"crashes   {crashes} (target alive: {'yes' if alive else 'NO'}, BOOT printed "
        f"{target.boots} time(s), tracebacks on its stderr: {target.tracebacks()})"
    )
    b, e = times["baseline_usage"], times["end_usage"]
    print(
        "whole run (no agent at either end): "
        + fmt_usage("", b, e, soak.sampler.peak(times["start"], times["end"])).strip()
    )
    end_back = e is not None and (b.threads, b.fds) == (e.threads, e.fds)
    print(f"threads and fds back to the baseline: {'yes' if end_back else 'NO'}")
    met = met and end_back and not failures and crashes == 0
    print(
        "\ngoal: 0 failed app requests, 0 failed cycles, 0 crashes, threads and fds back "
        "after every phase -> " + ("met" if met else "NOT met")
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attach", type=int, default=1000, help="attach cycles (1000)")
    parser.add_argument(
        "--attach-pyspy", type=int, default=1000, help="attach cycles with py-spy (1000)"
    )
    parser.add_argument("--restarts", type=int, default=1000, help="agent restarts (1000)")
    parser.add_argument("--injects", type=int, default=50, help="real gdb cycles (50)")
    parser.add_argument("--polls", type=int, default=2, help="polls per attach cycle (2)")
    parser.add_argument(
        "--quick", action="store_true", help="100 / 100 / 100 / 5 cycles (about a minute)"
    )
    parser.add_argument("--connections", type=int, default=4, help="load connections (4)")
    parser.add_argument("--threads", type=int, default=8, help="the target's pool size (8)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load alone (5)")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after the cycles (5)")
    parser.add_argument("--budget", type=float, default=600.0, help="max seconds per phase (600)")
    args = parser.parse_args()
    if args.quick:
        args.attach, args.attach_pyspy, args.restarts, args.injects = 100, 100, 100, 5
    counts_given = (args.attach, args.attach_pyspy, args.restarts, args.injects)
    if min(counts_given) < 0 or args.polls < 1 or args.baseline <= 0 or args.after <= 0:
        parser.error("cycle counts must be >= 0, --polls >= 1, --baseline and --after > 0")

    print(f"soak: {machine()}")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        target = start_target(
            args.threads, str(Path(tmp) / "target.err"), "soak", extra=["--engine-log"]
        )
        try:
            return 0 if soak(args, target, str(Path(tmp) / "load.json")) else 1
        finally:
            target.stop()


def soak(args: argparse.Namespace, target: Target, out: str) -> bool:
    print(
        f"target pid {target.pid} (tests/apps/target.py, pool {args.threads}, Autoreloader on, "
        f"no agent); load: {args.connections} keep-alive connections, GET / back to back; "
        f"cycles: inject {args.injects}, restart {args.restarts}, attach {args.attach}, "
        f"attach+py-spy {args.attach_pyspy} ({args.polls} polls each)",
        flush=True,
    )
    phases = sum(1 for n in (args.injects, args.restarts, args.attach, args.attach_pyspy) if n)
    max_load = SETTLE + args.baseline + phases * (args.budget + QUIESCE_TIMEOUT + 5) + args.after
    try:
        load = Load(target.port, args.connections, max_load + 30, out)
    except RuntimeError as exc:
        raise SystemExit(f"soak: {exc}") from None
    sampler = Sampler(target.pid)
    times: Dict[str, Any] = {}
    try:
        times["start"] = time.monotonic()
        time.sleep(SETTLE)
        base_lo = time.monotonic()
        times["baseline_usage"] = usage(target.pid)
        time.sleep(args.baseline)
        times["base"] = (base_lo, time.monotonic())
        s = Soak(target, sampler, args.budget)
        run_phases(args, s)
        if target.alive():
            base = times["baseline_usage"]
            settled_counts(target.pid, (base.threads, base.fds), QUIESCE_TIMEOUT)
        after_lo = time.monotonic()
        time.sleep(args.after)
        times["after"] = (after_lo, time.monotonic())
        times["end_usage"] = usage(target.pid) if target.alive() else None
        times["end"] = time.monotonic()
        record = load.finish()
    finally:
        load.kill()
        sampler.stop()
    return report(args, s, record, times)


if __name__ == "__main__":
    sys.exit(main())
