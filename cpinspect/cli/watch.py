"""``cpinspect watch PID``: capture the evidence when nobody is watching.

Headless, for a terminal or a systemd unit: polls the target like every command (the agent, or
py-spy when the agent does not answer), names its findings after every poll, and when a
CRITICAL finding has held for ``--after`` seconds or a request has run longer than ``--slow``
seconds, takes a short snapshot series (``cpinspect snapshot``'s capture) into ``--dir`` —
at most once per ``--cooldown``, the oldest captures removed past ``--max-size``. The files say
when and why: ``20261201-130501-pool-starvation.json`` and its ``.txt`` report. Nothing is
written while the target is healthy.

One line on stdout per event (a finding raised or gone, the link changing, a capture, a file
removed for the cap), flushed at once; ``--quiet`` keeps only the captures. SIGINT or SIGTERM
ends it with exit 0 and a one-line summary; the target exiting ends it with one line and a
non-zero exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from cpinspect.cli.common import add_target_arguments
from cpinspect.errors import CpinspectError, TargetGone, UsageError

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from cpinspect.capture_trigger import CaptureTrigger, Reason
    from cpinspect.model import Finding, LogRecord, Snapshot
    from cpinspect.sources.base import Poller, Update
    from cpinspect.sources.open import OpenedSession

MAX_SERIES = 20


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="headless: watch the process and save a snapshot series when a critical finding "
        "holds or a request is slow (for a terminal or a systemd unit)",
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls (default 1)"
    )
    parser.add_argument(
        "--after",
        type=float,
        default=10.0,
        metavar="N",
        help="capture when a critical finding has held N seconds (default 10)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=30.0,
        metavar="M",
        help="capture when a request has run longer than M seconds (default 30)",
    )
    parser.add_argument(
        "--cooldown",
        type=float,
        default=300.0,
        metavar="S",
        help="at most one capture per S seconds (default 300)",
    )
    parser.add_argument(
        "--series", type=int, default=3, help="snapshots in each capture (default 3)"
    )
    parser.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between the snapshots of a capture (default 1)",
    )
    parser.add_argument(
        "--dir",
        default="cpinspect-captures",
        help="directory of the captures, created 0700 (default ./cpinspect-captures)",
    )
    parser.add_argument(
        "--max-size",
        default="100M",
        metavar="SIZE",
        help="the captures' total size; the oldest are removed past it (default 100M)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the captures and the summary"
    )
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from cpinspect.capture_trigger import TriggerConfig, parse_size

    problems = TriggerConfig(args.after, args.slow, args.cooldown).problems()
    if args.interval < 0.1:
        problems.append("--interval takes at least 0.1 seconds, not %s" % args.interval)
    if not 1 <= args.series <= MAX_SERIES:
        problems.append("--series takes 1 to %d snapshots, not %d" % (MAX_SERIES, args.series))
    if args.every < 0.1:
        problems.append("--every takes at least 0.1 seconds, not %s" % args.every)
    size = parse_size(str(args.max_size))  # (a string: argparse would print its usage)
    if size is None or size < 1:
        problems.append("--max-size takes a size such as 100M, 512k or 2G, not %r" % args.max_size)
    else:
        args.max_size = size
    if problems:
        raise UsageError(problems[0])


class _Stop:
    """SIGINT / SIGTERM: the loop ends after what it is doing; a second one ends it now."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt  # asked twice: stop waiting for the poll in flight
        self.signal = signum
        self.event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when asked to stop."""
        return self.event.wait(max(0.0, seconds))

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


class Watcher:
    """The loop of ``cpinspect watch``, apart from the command line (tests drive ``run``)."""

    def __init__(
        self,
        opened: OpenedSession,
        args: argparse.Namespace,
        out: Callable[[str], None],
        stop: _Stop,
    ) -> None:
        from cpinspect.capture_trigger import CaptureTrigger, TriggerConfig
        from cpinspect.findings.history import History

        self.opened = opened
        self.session: Poller = opened.session
        self.args = args
        self.out = out
        self.stop = stop
        self.trigger: CaptureTrigger = CaptureTrigger(
            TriggerConfig(after=args.after, slow=args.slow, cooldown=args.cooldown)
        )
        self.history = History()
        self.records: List[LogRecord] = []
        self.findings: Dict[str, Finding] = {}
        self.link_message = ""
        self.captured: List[str] = []
        self.snapshots_written = 0
        self.removed: List[str] = []
        self.held_said = 0
        """Cool-downs that held a capture back, said so far (once each)."""
        self.started = time.monotonic()

    # --- output ---------------------------------------------------------------------------------

    def say(self, text: str, always: bool = False) -> None:
        if always or not self.args.quiet:
            self.out("%s %s" % (time.strftime("%H:%M:%S"), text))

    def summary(self) -> str:
        took = time.monotonic() - self.started
        captures = len(self.captured)
        text = "watched %s: %d capture%s (%d snapshots) in %s" % (
            _duration(took),
            captures,
            "" if captures == 1 else "s",
            self.snapshots_written,
            self.args.dir,
        )
        if self.removed:
            text += ", %d old file%s removed for the %s cap" % (
                len(self.removed),
                "" if len(self.removed) == 1 else "s",
                _size(self.args.max_size),
            )
        if self.trigger.held_back:
            text += ", %d held back by the cool-down" % self.trigger.held_back
        return text

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Poll until stopped (0) or the target is gone (``TargetGone.exit_code``)."""
        args = self.args
        self.say(
            "watching %s (%s) every %g s: %d snapshot%s when a critical finding holds %g s or a "
            "request runs %g s, at most once per %g s, into %s (cap %s)"
            % (
                "pid %d" % self.opened.pid if self.opened.pid is not None else self.opened.label,
                self.opened.kind.value,
                args.interval,
                args.series,
                "" if args.series == 1 else "s",
                args.after,
                args.slow,
                args.cooldown,
                args.dir,
                _size(args.max_size),
            )
        )
        next_poll = time.monotonic()
        while not self.stop.stopped:
            gone = self.poll_once()
            if gone is not None:
                print("cpinspect: %s; %s" % (gone, self.summary()), file=sys.stderr)
                return TargetGone.exit_code
            next_poll += args.interval
            now = time.monotonic()
            if next_poll < now:  # a capture or a slow poll took longer: no burst to catch up
                next_poll = now
            if self.stop.wait(next_poll - now):
                break
        self.say("stopped: %s" % self.summary(), always=True)
        return 0

    def poll_once(self) -> Optional[str]:
        """One poll: findings, the trigger, perhaps a capture. The reason the target is gone,
        or None to go on."""
        from cpinspect.model import LogRecord
        from cpinspect.sources.base import LinkState

        try:
            update = self.session.poll()
        except CpinspectError as exc:
            self._link("poll failed: %s" % exc)
            return None
        if update.state is LinkState.LOST:
            message = (update.message or "the target stopped answering").split(" — ")[0]
            if not self._alive():
                return "the target is gone (%s)" % message
            self._link(message)
            return None
        self._link(update.message)
        self.records.extend(e for e in update.log if isinstance(e, LogRecord))
        del self.records[: max(0, len(self.records) - 2000)]
        snapshot = self._snapshot(update)
        findings = self._find(snapshot)
        self._report_findings(findings)
        threads = snapshot.threads.threads if snapshot.threads is not None else ()
        reason = self.trigger.observe(time.monotonic(), findings, threads)
        self.history.remember(snapshot)
        if reason is not None:
            self.capture(reason)
        elif self.trigger.held_back > self.held_said:
            self.held_said = self.trigger.held_back
            until = self.trigger.cooling_until()
            left = (until - time.monotonic()) if until is not None else 0.0
            self.say("a capture is due; held back by the cool-down for %s more" % _duration(left))
        return None

    def _alive(self) -> bool:
        from cpinspect.sources.pyspy import process_state

        pid = getattr(self.session, "pid", None) or self.opened.pid
        if pid is None:
            return False  # a socket whose process we cannot see: lost is all we can know
        return process_state(pid) not in (None, "Z", "X")

    def _link(self, message: str) -> None:
        if message != self.link_message:
            self.link_message = message
            if message:
                self.say("link: %s" % message)

    def _snapshot(self, update: Update) -> Snapshot:
        from cpinspect.snapshots import snapshot_from_update

        return snapshot_from_update(update, log=self.records)

    def _find(self, snapshot: Snapshot) -> Tuple[Finding, ...]:
        from cpinspect.findings import find_all

        try:
            return find_all(snapshot, self.history.snapshots())
        except Exception as exc:  # noqa: BLE001 - a bug in one diagnosis never stops the watch
            self._link("findings failed: %s: %s" % (type(exc).__name__, exc))
            return ()

    def _report_findings(self, findings: Sequence[Finding]) -> None:
        now = {f.id: f for f in findings}
        for fid, finding in now.items():
            if fid not in self.findings:
                self.say("%s %s: %s" % (finding.severity.value, fid, finding.title))
        for fid in self.findings:
            if fid not in now:
                self.say("gone %s" % fid)
        self.findings = now

    # --- a capture ------------------------------------------------------------------------------

    def capture(self, reason: Reason) -> None:
        from cpinspect.capture_trigger import CaptureSettings, take_capture

        args = self.args
        result = take_capture(
            self.session,
            reason,
            CaptureSettings(
                series=args.series, every=args.every, directory=args.dir, max_size=args.max_size
            ),
            source_lines=self.opened.source_lines,
            log=self.records,
            history=self.history.snapshots(),
            wait=self.stop.wait,
            note=self.say,
        )
        self.say(result.text, always=True)
        if result.json_path is None:
            return
        self.captured.append(result.json_path)
        self.snapshots_written += result.count
        if result.removed:
            self.removed.extend(result.removed)
            self.say(
                "removed %s to keep the captures under %s"
                % (", ".join(result.removed), _size(args.max_size))
            )


def _size(size: int) -> str:
    from cpinspect.capture_trigger import size_text

    return size_text(size)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return "%d s" % round(seconds)
    if seconds < 7200:
        return "%d min" % round(seconds / 60)
    return "%.1f h" % (seconds / 3600)


def _print_line(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    _check(args)
    from cpinspect.memory import tune_malloc

    tune_malloc()  # a long watch parses py-spy's readings in threads too (memory.py)
    from cpinspect.capture_trigger import CaptureDirError, prepare_directory
    from cpinspect.cli.common import open_from_args
    from cpinspect.errors import SnapshotWriteError
    from cpinspect.snapshots import check_directory

    try:
        prepare_directory(args.dir)
    except CaptureDirError as exc:
        raise SnapshotWriteError("cannot save captures: %s" % exc) from None
    check_directory(args.dir)  # writable: said now, not at the first incident
    stop = _Stop()
    stop.install()
    try:
        opened = open_from_args(args)
        try:
            for note in opened.notes:
                print("note: %s" % note, file=sys.stderr)
            return Watcher(opened, args, _print_line, stop).run()
        finally:
            opened.session.close()
    finally:
        stop.restore()


__all__ = ["Watcher", "register", "run"]
