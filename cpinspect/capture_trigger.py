"""When to take a snapshot series with nobody watching, and the directory the series go to.

One implementation for ``cpinspect watch`` and ``attach --auto-snapshot``: after every poll the
caller hands ``CaptureTrigger.observe`` the time, the findings of that poll and its threads; it
answers a ``Reason`` when a capture is due — a CRITICAL finding has held for ``after`` seconds,
or a request has run longer than ``slow`` seconds — and never twice within ``cooldown``. Pure:
no clock of its own (tests drive it with numbers), no I/O.

The directory part (``prepare_directory``, ``capture_stem``, ``enforce_cap``) is what a capture
writes beside the snapshot files: names that say when and why
(``20261201-130501-pool-starvation.json``), and a size cap that removes the oldest captures —
only files that are ours by name, regular files owned by this user, never the newest capture.

``take_capture`` is the capture both run (``snapshots.capture_series`` and the writer), in a
worker or ``watch``'s loop. No Textual, no CherryPy; the trigger and the directory part are
standard library and ``cpinspect.model`` only.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from cpinspect.model import Finding, FindingSeverity, ThreadInfo

if TYPE_CHECKING:  # the capture itself loads these when it runs
    from cpinspect.model import LogRecord, Snapshot
    from cpinspect.sources.base import Poller, Update
    from cpinspect.sources.source_lines import LineReader

DEFAULT_AFTER = 10.0
"""Seconds a critical finding must hold before it is captured."""
DEFAULT_SLOW = 30.0
"""A request running longer than this many seconds is captured."""
DEFAULT_COOLDOWN = 300.0
"""At most one capture per this many seconds."""
DEFAULT_MAX_SIZE = 100 * 1024 * 1024
"""Bytes the captures of a directory may take; the oldest are removed past it."""
DEFAULT_DIR = "cpinspect-captures"
SLOW_KIND = "slow-request"
"""The ``Reason.kind`` of a capture taken for a slow request (not a finding)."""


@dataclass(frozen=True)
class TriggerConfig:
    after: float = DEFAULT_AFTER
    slow: float = DEFAULT_SLOW
    cooldown: float = DEFAULT_COOLDOWN

    def problems(self, prefix: str = "--") -> List[str]:
        """What is wrong with these settings, one line each naming the option (``--after``,
        or ``--auto-after`` with ``prefix="--auto-"``); empty: usable."""
        out = []
        if self.after < 0:
            out.append("%safter takes seconds (0 or more), not %s" % (prefix, self.after))
        if self.slow <= 0:
            out.append("%sslow takes seconds (more than 0), not %s" % (prefix, self.slow))
        if self.cooldown < 0:
            out.append("%scooldown takes seconds (0 or more), not %s" % (prefix, self.cooldown))
        return out


@dataclass(frozen=True)
class Reason:
    """Why a capture is taken now."""

    kind: str
    """The finding's kind (``pool-starvation``) or ``slow-request``; names the files."""
    text: str
    """``pool starvation held 10 s`` / ``GET /reports/export running 31 s``."""
    held: float
    """Seconds the finding has held, or the request has run."""
    finding_id: Optional[str] = None
    title: str = ""
    """The finding's title, or the slow request's thread and request."""


def _kind_of(finding: Finding) -> str:
    return finding.kind or finding.id.split(":", 1)[0]


def _seconds(value: float) -> str:
    return "%d s" % int(value) if value < 600 else "%d min" % int(value // 60)


class CaptureTrigger:
    """Decides, poll after poll, when a capture is due. Feed it every poll with ``observe``."""

    def __init__(self, config: TriggerConfig = TriggerConfig()) -> None:
        self.config = config
        self.since: Dict[str, float] = {}
        """First time each critical finding now present was seen, by finding id."""
        self.last_capture: Optional[float] = None
        """When the last capture was decided (the cool-down runs from it)."""
        self.captures = 0
        """Captures decided so far."""
        self.held_back = 0
        """Cool-downs during which a capture was due (and not taken): counted once each."""
        self._held_this_time = False

    def cooling_until(self) -> Optional[float]:
        """The end of the current cool-down, if a capture was taken."""
        if self.last_capture is None:
            return None
        return self.last_capture + self.config.cooldown

    def observe(
        self, now: float, findings: Sequence[Finding], threads: Iterable[ThreadInfo] = ()
    ) -> Optional[Reason]:
        """The state after one poll at ``now``; a ``Reason`` when a capture is to be taken now.

        A critical finding's hold time counts from the first poll that showed it; a poll
        without it starts it over. ``threads``: the poll's threads (busy ones with their
        request's ``elapsed``).
        """
        critical = [f for f in findings if f.severity is FindingSeverity.CRITICAL]
        current = {f.id for f in critical}
        for gone in [fid for fid in self.since if fid not in current]:
            del self.since[gone]
        for finding in critical:
            self.since.setdefault(finding.id, now)
        reason = self._due(now, critical, threads)
        if reason is None:
            return None
        until = self.cooling_until()
        if until is not None and now < until:
            if not self._held_this_time:
                self._held_this_time = True
                self.held_back += 1
            return None
        self.last_capture = now
        self._held_this_time = False
        self.captures += 1
        return reason

    def _due(
        self, now: float, critical: Sequence[Finding], threads: Iterable[ThreadInfo]
    ) -> Optional[Reason]:
        held = [
            (now - self.since[f.id], f)
            for f in critical
            if now - self.since[f.id] >= self.config.after
        ]
        if held:
            # The one held longest (then the first: find_all lists the most severe first).
            seconds, finding = max(held, key=lambda pair: pair[0])
            kind = _kind_of(finding)
            return Reason(
                kind=kind,
                text="%s held %s" % (kind.replace("-", " "), _seconds(seconds)),
                held=seconds,
                finding_id=finding.id,
                title=finding.title,
            )
        slowest: Optional[Tuple[float, ThreadInfo]] = None
        for thread in threads:
            if not thread.busy or thread.request is None or thread.elapsed is None:
                continue
            if thread.elapsed > self.config.slow and (
                slowest is None or thread.elapsed > slowest[0]
            ):
                slowest = (thread.elapsed, thread)
        if slowest is None:
            return None
        elapsed, thread = slowest
        request = thread.request
        assert request is not None
        line = "%s %s" % (request.method, request.path)
        return Reason(
            kind=SLOW_KIND,
            text="%s running %s" % (line, _seconds(elapsed)),
            held=elapsed,
            title="%s  %s" % (thread.name, line),
        )


# --- the capture directory ------------------------------------------------------------------

_SLUG = re.compile(r"[^a-z0-9]+")
CAPTURE_NAME = re.compile(r"^(\d{8}-\d{6}-[a-z0-9][a-z0-9-]*?(?:-\d+)?)\.(json|txt)$")
"""A capture's file: ``<YYYYmmdd-HHMMSS>-<kind>[-N].json`` and its ``.txt`` report."""
DIR_MODE = 0o700


def capture_stem(reason: Reason, when: float) -> str:
    """``20261201-130501-pool-starvation``: local time of ``when``, then the reason's kind."""
    slug = _SLUG.sub("-", reason.kind.lower()).strip("-") or "capture"
    return "%s-%s" % (time.strftime("%Y%m%d-%H%M%S", time.localtime(when)), slug[:60])


class CaptureDirError(Exception):
    """The capture directory cannot be made or used: the message is one line for the user."""


def prepare_directory(path: str) -> None:
    """Create ``path`` (mode 0700) if it does not exist; an existing one is left as it is."""
    try:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    except FileExistsError:
        raise CaptureDirError("%s exists and is not a directory" % path) from None
    except OSError as exc:
        raise CaptureDirError("cannot create %s: %s" % (path, exc.strerror or exc)) from None
    if not os.path.isdir(path):
        raise CaptureDirError("%s exists and is not a directory" % path)


@dataclass(frozen=True)
class CaptureFiles:
    """One capture in the directory: the files sharing a stem."""

    stem: str
    names: Tuple[str, ...]
    sizes: Tuple[int, ...]
    size: int
    mtime: float


def captures_in(path: str) -> List[CaptureFiles]:
    """The captures in ``path``, oldest first: regular files named like a capture and owned by
    this user (anything else, a symlink included, is not ours and never counted or removed)."""
    groups: Dict[str, List[Tuple[str, os.stat_result]]] = {}
    uid = os.geteuid()
    try:
        names = os.listdir(path)
    except OSError:
        return []
    for name in names:
        match = CAPTURE_NAME.match(name)
        if match is None:
            continue
        try:
            info = os.lstat(os.path.join(path, name))
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            continue
        groups.setdefault(match.group(1), []).append((name, info))
    out = []
    for stem, files in groups.items():
        files.sort(key=lambda pair: pair[0])
        out.append(
            CaptureFiles(
                stem=stem,
                names=tuple(n for n, _ in files),
                sizes=tuple(i.st_size for _, i in files),
                size=sum(i.st_size for _, i in files),
                mtime=max(i.st_mtime for _, i in files),
            )
        )
    out.sort(key=lambda c: (c.mtime, c.stem))
    return out


def enforce_cap(path: str, max_size: int, keep: Sequence[str] = ()) -> List[str]:
    """Remove the oldest captures in ``path`` until ours take at most ``max_size`` bytes.

    The newest capture is always kept (and the stems in ``keep``), even alone over the cap.
    Returns the names of the files removed.
    """
    captures = captures_in(path)
    total = sum(c.size for c in captures)
    removed: List[str] = []
    protected = set(keep)
    if captures:
        protected.add(captures[-1].stem)
    for capture in captures:
        if total <= max_size:
            break
        if capture.stem in protected:
            continue
        left = 0
        for name, size in zip(capture.names, capture.sizes):
            try:
                os.unlink(os.path.join(path, name))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    left += size  # cannot be removed (read-only mount …): still counted
                    continue
            removed.append(name)
        total -= capture.size - left
    return removed


SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> Optional[int]:
    """``100M``, ``512k``, ``2G`` or bytes; None when it is not a size."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*", text.lower())
    if match is None:
        return None
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def size_text(size: int) -> str:
    """``100 MB``, ``512 kB``: a cap as the user said it."""
    if size >= 1024**2:
        return "%g MB" % round(size / 1024**2, 1)
    return "%g kB" % round(size / 1024, 1)


# --- one capture ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureSettings:
    """What a capture takes and where it goes (``watch``'s options, ``attach --auto-*``)."""

    series: int = 3
    every: float = 1.0
    directory: str = DEFAULT_DIR
    max_size: int = DEFAULT_MAX_SIZE


@dataclass(frozen=True)
class AutoSnapshot:
    """``attach --auto-snapshot``: when to capture, and what."""

    trigger: TriggerConfig = TriggerConfig()
    settings: CaptureSettings = CaptureSettings()


@dataclass(frozen=True)
class CaptureResult:
    """What one capture wrote (``json_path`` None: nothing), and the line that says so."""

    text: str
    """``captured 3 snapshots: pool starvation held 10 s → <path>``, or why nothing was."""
    json_path: Optional[str] = None
    report_path: Optional[str] = None
    count: int = 0
    removed: Tuple[str, ...] = ()
    """Files of older captures removed for the size cap."""
    lost: str = ""
    error: Optional[str] = None


def take_capture(
    poller: Poller,
    reason: Reason,
    settings: CaptureSettings,
    *,
    source_lines: Optional[LineReader] = None,
    log: Optional[List[LogRecord]] = None,
    history: Sequence[Snapshot] = (),
    when: Optional[float] = None,
    poll: Optional[Callable[[], Update]] = None,
    wait: Optional[Callable[[float], bool]] = None,
    note: Optional[Callable[[str], None]] = None,
) -> CaptureResult:
    """Take the snapshot series (``snapshots.capture_series``, with routes and each snapshot's
    findings), write it as ``<when>-<kind>.json`` + ``.txt`` in the directory, then hold the
    size cap. Blocking (a worker's or ``watch``'s loop); never raises: a failure is the
    result's ``error``."""
    from cpinspect.errors import CpinspectError
    from cpinspect.snapshots import capture_series, with_findings, write_snapshots
    from cpinspect.sources.base import Capability

    when = time.time() if when is None else when
    earlier = tuple(history)

    def findings_over_the_watch(snapshot: Snapshot) -> Snapshot:
        # Judged against the polls that led to the capture (the last minute of them).
        try:
            return with_findings(snapshot, earlier)
        except Exception:  # noqa: BLE001 - the capture goes on without them
            return snapshot

    try:
        routes = None
        if Capability.ROUTES in poller.capabilities:
            try:
                routes = poller.routes()
            except CpinspectError as exc:
                if note is not None:
                    note("routes not captured: %s" % exc)
        series = capture_series(
            poller,
            settings.series,
            settings.every,
            routes=routes,
            source_lines=source_lines,
            log=log,
            extra=findings_over_the_watch,
            note=note,
            poll=poll,
            wait=wait if wait is not None else _sleep,
        )
        if not series.taken:
            why = series.lost or "stopped before the first snapshot"
            return CaptureResult(
                text="capture for %s: nothing taken (%s)" % (reason.text, why), lost=series.lost
            )
        prepare_directory(settings.directory)  # again: it may have been removed since
        written = write_snapshots(series.taken, settings.directory, stem=capture_stem(reason, when))
    except (CpinspectError, CaptureDirError, OSError) as exc:
        return CaptureResult(
            text="capture for %s not saved: %s" % (reason.text, exc), error=str(exc)
        )
    removed = enforce_cap(settings.directory, settings.max_size, keep=(written.json_path.stem,))
    count = len(series.taken)
    return CaptureResult(
        text="captured %d snapshot%s: %s → %s"
        % (count, "" if count == 1 else "s", reason.text, written.json_path),
        json_path=str(written.json_path),
        report_path=str(written.report_path) if written.report_path is not None else None,
        count=count,
        removed=tuple(removed),
        lost=series.lost,
    )


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def inspector_record(text: str, when: float) -> LogRecord:
    """A log-view record the inspector itself says (``LogOrigin.INSPECTOR``)."""
    from cpinspect.model import LogOrigin, LogRecord

    return LogRecord(
        seq=0,
        time=when,
        level="INFO",
        logger="cpinspect",
        message=text,
        origin=LogOrigin.INSPECTOR,
    )


__all__ = [
    "CAPTURE_NAME",
    "AutoSnapshot",
    "CaptureDirError",
    "CaptureFiles",
    "CaptureResult",
    "CaptureSettings",
    "CaptureTrigger",
    "Reason",
    "TriggerConfig",
    "capture_stem",
    "captures_in",
    "enforce_cap",
    "inspector_record",
    "parse_size",
    "prepare_directory",
    "size_text",
    "take_capture",
]
