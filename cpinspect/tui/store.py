"""The store: everything the inspector knows about the target now. Pure data, no Textual.

Workers the App owns fill it: every applied ``Update`` (threads, pools, info) goes through
``Store.apply``, and every other part (routes, and next sessions, log records, findings) through
``Store.set_part`` when the session method that reads it answers. Panels are views of the store:
each renders from it the same way whether the data came live or from a file, and ``snapshot()``
is the one ``Snapshot`` a capture writes. Kept apart from the widgets so history, rates and
snapshots are tested without a terminal.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Deque, Dict, Optional, Sequence, Tuple

from cpinspect import __version__
from cpinspect.findings.history import HISTORY_MAX, History
from cpinspect.model import (
    SNAPSHOT_LOG_RECORDS,
    Finding,
    LogEntry,
    LogOrigin,
    LogRecord,
    LogState,
    RoutesSnapshot,
    Snapshot,
    SourceKind,
    ThreadsSnapshot,
)
from cpinspect.sources.base import Update
from cpinspect.sources.logfeed import merge_backfill, split_backfill
from cpinspect.sources.merge import with_gil_holder

FROM_THE_UPDATE = frozenset(
    (
        "taken_at",
        "source",
        "info",
        "threads",
        "notes",
        "stale",
        "gil_holder",
        "cpinspect",
        "log",
        "log_state",
        "agent_unresponsive",
        "listen_queues",
    )
)
SNAPSHOT_PARTS = frozenset(f.name for f in fields(Snapshot)) - FROM_THE_UPDATE
"""``Snapshot`` fields a store part of the same name fills (routes, sessions, log, findings …):
a new part is carried into every capture by naming it after its field."""
HISTORY_SAMPLES = 120
"""Busy-worker samples kept per pool for the sparkline (two minutes at one poll a second)."""
RATE_WINDOW = 10
"""Requests/s is measured over up to this many successive samples."""
LOG_KEEP = 10_000
"""Log entries kept (records and gaps), the newest; older ones fall off the front."""
FINDINGS_HISTORY_MAX = HISTORY_MAX
"""Earlier snapshots kept for the findings (``cpinspect.findings.history``)."""

FindAll = Callable[[Snapshot, Sequence[Snapshot]], Tuple[Finding, ...]]


def _find_all(snapshot: Snapshot, history: Sequence[Snapshot]) -> Tuple[Finding, ...]:
    from cpinspect.findings import find_all

    return find_all(snapshot, history)


@dataclass(frozen=True)
class Part:
    """One part of the store other than the polled threads: its last value and how it is read.

    ``value`` is kept when a later read fails (``error`` says why) so a panel shows its last data
    with the reason beside it.
    """

    value: Any = None
    error: Optional[str] = None
    reading: bool = False
    """A read is running in a worker."""
    loads: int = 0
    """Answers received (values and errors)."""
    fetched_at: Optional[float] = None
    """When the value was read."""


class Store:
    """The last applied update, the other parts, and what is derived across updates."""

    def __init__(
        self,
        history: int = HISTORY_SAMPLES,
        log_keep: int = LOG_KEEP,
        find: Optional[FindAll] = _find_all,
    ) -> None:
        self.update: Optional[Update] = None
        """The update on screen (not the newest one received while paused)."""
        self.busy_history: Dict[str, Deque[int]] = {}
        """Busy workers per pool bind, oldest first."""
        self._threads: Optional[ThreadsSnapshot] = None
        self.pools_taken_at: Optional[float] = None
        """When the pool numbers on screen were read; they go stale while the agent is silent."""
        self._history_len = history
        self._served: Deque[Tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        self._last_taken_at: Optional[float] = None
        self._last_pid: Optional[int] = None
        self.parts: Dict[str, Part] = {}
        """Parts by name (``routes`` …), as their session methods last answered."""
        self.version = 0
        """Bumped by every change; a panel re-renders only when it moved."""
        self.log: Deque[LogEntry] = deque(maxlen=log_keep)
        """The latest log records (and gaps), oldest first; filled by every update received,
        paused or not, so follow mode, the sparkline and snapshots always have them."""
        self.log_appended = 0
        """Entries ever appended: ``log[i]`` is entry number ``log_appended - len(log) + i``."""
        self.log_generation = 0
        """Bumped when the log is replaced rather than appended to (a file session stepped)."""
        self.log_state: Optional[LogState] = None
        self._log_top = 0
        """The highest seq of the agent's ring records held (of ``log_state.buffer``): a record
        at or below it is one of a catch-up (``LogFeed.set_full``), merged in its place."""
        self._find = find
        self.findings: Tuple[Finding, ...] = ()
        """What ``find_all`` names in the data on screen, most severe first."""
        self.findings_error: Optional[str] = None
        """Why the findings could not be computed (a bug in one family): shown, never raised."""
        self.findings_cost = 0.0
        """Seconds the last ``find_all`` took (the strip's cost, measured)."""
        self._since: Dict[str, float] = {}
        self._findings_history = History()

    @property
    def threads(self) -> Optional[ThreadsSnapshot]:
        """The threads on screen, the GIL holder marked even when only the update names it."""
        return self._threads

    @property
    def pools_stale(self) -> bool:
        """The pool numbers are older than the threads (the agent does not answer)."""
        return self.update is not None and "pools" in self.update.stale

    def pools_age(self, now: float) -> Optional[float]:
        """Seconds since the pool numbers on screen were read, if known."""
        if self.pools_taken_at is None:
            return None
        return max(0.0, now - self.pools_taken_at)

    def apply(self, update: Update) -> None:
        """Take ``update`` as the data on screen and record one sample if its data is new.

        A lost link repeats the last snapshot: it adds no sample, so history and rate stay honest.
        Stale pool numbers (kept while py-spy stands in for the agent) add none either.
        The findings are computed again after it (``findings``, ``finding_since``).
        """
        new = self._take(update)
        self.refresh_findings(new)

    def _take(self, update: Update) -> bool:
        """``apply`` without the findings: True when the update brought new thread data."""
        self.update = update
        self.version += 1
        self._threads = with_gil_holder(update.threads, update.gil_holder)
        snap = update.threads
        pools_fresh = "pools" not in update.stale
        pid = update.info.pid if update.info is not None else None
        if pid is not None and self._last_pid is not None and pid != self._last_pid:
            self._served.clear()  # a restarted process counts from zero again
        if pid is not None:
            self._last_pid = pid
        if snap is None or snap.taken_at == self._last_taken_at:
            return False
        self._last_taken_at = snap.taken_at
        if not pools_fresh:
            return True
        self.pools_taken_at = snap.taken_at
        for pool in snap.pools:
            samples = self.busy_history.setdefault(pool.bind, deque(maxlen=self._history_len))
            samples.append(pool.busy)
        if snap.requests_served is not None:
            if self._served and snap.requests_served < self._served[-1][1]:
                self._served.clear()
            self._served.append((snap.taken_at, snap.requests_served))
        return True

    # --- findings ----------------------------------------------------------------------------

    def refresh_findings(self, new_threads: bool = False) -> None:
        """Compute the findings of the data on screen again (after an update, or a part read).

        ``new_threads``: the update brought new thread data, which joins the history the
        findings compare against (spin vs wait, how long a finding has held): the last
        ``findings.history.HISTORY_SECONDS`` of it, threads and pools only, oldest first.
        """
        if self._find is None:
            return
        snapshot = self.snapshot()
        if snapshot is None:
            return
        history = self._findings_history.snapshots()
        started = time.perf_counter()
        try:
            found = tuple(self._find(snapshot, history))
        except Exception as error:  # noqa: BLE001 - one family's bug must not stop the screen
            self.findings_error = "%s: %s" % (type(error).__name__, error)
            found = ()
        else:
            self.findings_error = None
        self.findings_cost = time.perf_counter() - started
        self.set_findings(found, snapshot.taken_at)
        if new_threads and snapshot.threads is not None:
            self._findings_history.remember(snapshot)

    def set_findings(self, found: Sequence[Finding], at: float) -> None:
        """Take ``found`` as the findings now; a finding first seen now is dated ``at``."""
        ids = {f.id for f in found}
        self._since = {k: v for k, v in self._since.items() if k in ids}
        for finding in found:
            self._since.setdefault(finding.id, at)
        if tuple(found) != self.findings:
            self.findings = tuple(found)
            self.version += 1

    def findings_history(self) -> Tuple[Snapshot, ...]:
        """The earlier snapshots the findings compare against, oldest first."""
        return self._findings_history.snapshots()

    def finding_since(self, finding_id: str) -> Optional[float]:
        """When the finding ``finding_id`` was first seen in the run of polls that still shows
        it (the time of that poll's data); ``None`` when it is not a finding now."""
        return self._since.get(finding_id)

    def take_log(self, update: Update) -> None:
        """Keep the log records ``update`` brought (called for every update received, also
        while the screen is paused: records are never skipped like stale thread data)."""
        before = self.log_state.buffer if self.log_state is not None else ""
        if update.log_state is not None or update.log_replace:
            self.log_state = update.log_state
        now = self.log_state.buffer if self.log_state is not None else ""
        if update.log_replace or now != before:
            self._log_top = 0  # a new ring (the agent restarted): its seqs start over
        if update.log_replace:
            self.log.clear()
            self.log_appended = 0
            self.log_generation += 1
            self.log.extend(update.log)
            self.log_appended = len(update.log)
            self._log_top = _top_seq(update.log, 0)
            self.version += 1
        elif update.log:
            older, newer = split_backfill(update.log, self._log_top) if self._log_top else ((), ())
            merged = merge_backfill(list(self.log), older) if older else []
            if len(merged) > len(self.log):
                # Records the Log tab missed while hidden, fetched when it opened: in their
                # place by seq (the panel lists the whole log again: a new generation).
                merged.extend(newer)
                added = len(merged) - len(self.log)
                self.log = deque(merged, maxlen=self.log.maxlen)
                self.log_appended += added
                self.log_generation += 1
            else:
                # (Ring records held already, e.g. an older agent's full answer to a catch-up,
                # are not appended twice.)
                entries = newer if older else update.log
                self.log.extend(entries)
                self.log_appended += len(entries)
            self._log_top = _top_seq(update.log, self._log_top)
            self.version += 1

    def add_log(self, entry: LogEntry) -> None:
        """Append one entry the inspector itself says (an automatic capture taken), after the
        target's records received so far."""
        self.log.append(entry)
        self.log_appended += 1
        self.version += 1

    @property
    def log_first(self) -> int:
        """The entry number of ``log[0]``."""
        return self.log_appended - len(self.log)

    def log_records(self, limit: Optional[int] = None) -> Tuple[LogRecord, ...]:
        """The records held (gaps left out), the last ``limit`` of them."""
        records = [e for e in self.log if isinstance(e, LogRecord)]
        if limit is not None:
            records = records[-limit:]
        return tuple(records)

    # --- the other parts -----------------------------------------------------------------------

    def part(self, name: str) -> Part:
        """The part ``name`` (an empty one before it was first asked for)."""
        return self.parts.get(name, Part())

    def start_reading(self, name: str) -> None:
        self.parts[name] = replace(self.part(name), reading=True)
        self.version += 1

    def set_part(
        self, name: str, value: Any, error: Optional[str] = None, at: Optional[float] = None
    ) -> None:
        """A read of ``name`` answered: a new value, or the error (the old value is kept)."""
        old = self.part(name)
        if error is None:
            self.parts[name] = Part(value, None, False, old.loads + 1, at)
        else:
            self.parts[name] = Part(old.value, error, False, old.loads + 1, old.fetched_at)
        self.version += 1
        if error is None and name in SNAPSHOT_PARTS:
            self.refresh_findings()  # sessions, routes: some findings read them

    def reset_parts(self) -> None:
        """Forget every part (a file session stepped to another snapshot of its series)."""
        self.parts = {}
        self.version += 1

    @property
    def routes(self) -> Optional[RoutesSnapshot]:
        value = self.part("routes").value
        return value if isinstance(value, RoutesSnapshot) else None

    def snapshot(self, notes: Tuple[str, ...] = ()) -> Optional[Snapshot]:
        """Everything on screen as one ``Snapshot`` (``None`` before the first update)."""
        update = self.update
        if update is None:
            return None
        threads = self._threads
        source = update.effective_threads_source
        if update.pyspy_joined and source is SourceKind.AGENT:
            source = SourceKind.BOTH
        messages = tuple(m for m in (update.message, *update.warnings) if m)
        # Every part named like a Snapshot field (routes, sessions, log, findings) is carried:
        # a new panel's data reaches the snapshot files without touching this method.
        carried = {
            name: part.value
            for name, part in self.parts.items()
            if name in SNAPSHOT_PARTS and part.value is not None
        }
        carried.setdefault("findings", self.findings)
        return Snapshot(
            taken_at=threads.taken_at if threads is not None else update.fetched_at,
            source=source,
            info=update.info,
            threads=threads,
            notes=messages + tuple(notes),
            stale=update.stale,
            gil_holder=update.gil_holder,
            cpinspect=__version__,
            log=self.log_records(SNAPSHOT_LOG_RECORDS),
            log_state=self.log_state,
            agent_unresponsive=update.agent_unresponsive,
            listen_queues=update.listen_queues,
            **carried,
        )

    def requests_per_second(self) -> Optional[float]:
        """Requests completed per second over the last few samples, ``None`` until two exist."""
        if len(self._served) < 2:
            return None
        (t0, n0), (t1, n1) = self._served[0], self._served[-1]
        if t1 <= t0:
            return None
        return (n1 - n0) / (t1 - t0)


def _top_seq(entries: Sequence[LogEntry], top: int) -> int:
    """``top`` or the highest seq of the ring records among ``entries``."""
    for entry in entries:
        if isinstance(entry, LogRecord) and entry.origin is LogOrigin.BUFFER and entry.seq > top:
            top = entry.seq
    return top
