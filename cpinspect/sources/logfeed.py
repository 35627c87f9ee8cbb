"""The target's log records as they arrive: the agent's ring (a ``/v1/log?after=`` cursor) and
the log files the inspector follows itself (``logfiles.py``), joined and de-duplicated.

One ``LogFeed.read()`` per poll (live sessions fold it into ``poll()``; ``cpinspect logs``
loops on it). It never raises: what went wrong is a warning line in the batch, so a log problem
never breaks the threads poll.

- The first read starts ``history`` records back from the newest (not the whole ring).
- Each later read asks for the records after the last one seen, a few pages at most; what the
  ring lost before it was read comes back as ``missed`` and becomes a ``LogGap`` in place.
- A new ``buffer`` id means the agent restarted: the cursor starts over at 0.
- An agent without ``/v1/log`` (older than the inspector) is said once and not asked again.
- Files are read before the ring, so a record written to both is already in the ring when its
  file line is compared (``Deduper``) and is shown once.
- Filtered while nobody looks (``set_full(False)``: the TUI with its Log tab hidden): the ring
  is asked only for the notable records (``/v1/log?only=notable&paths=``, wire.py: warnings
  and up, failed requests, the access records under the static mounts the findings read), so
  the target no longer pays for the 200s nobody reads. The cursor still moves to ``latest``.
  ``set_full(True)`` (the tab shown): the next read first fetches, once, every record after
  the cursor filtering began at up to the cursor (``missed`` then counts only the records that
  wrapped out of the ring meanwhile) and then follows everything; those older records come in
  the same batch, and ``merge_backfill`` puts them in their place by seq (the store does).
  An older agent ignores ``only`` and answers everything (its ``_log`` reads only ``after``,
  ``limit`` and ``level``): nothing is lost, and the catch-up's records already held are left
  out (here by the seqs read while filtered, in the store by ``merge_backfill``). The catch-up
  reads at most what the ring holds (10,000 records by default) once per opening of the tab.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cpinspect.errors import CpinspectError, EndpointError
from cpinspect.model import (
    LogEntry,
    LogGap,
    LogOrigin,
    LogPage,
    LogRecord,
    LogRouting,
    LogState,
    ProcessInfo,
    RoutesSnapshot,
)
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.logfiles import Deduper, LogFiles

HISTORY = 1000
"""Records read from the ring at the first read (the rest of the ring is older history)."""
PAGE = 2000
"""Records per ``/v1/log`` request."""
MAX_PAGES = 5
"""Requests per read at most (10,000 records): past that, the next poll goes on."""
DISCOVER_EVERY = 10
"""Without the agent, look for the process's log files every N reads (an fd walk)."""
BACKFILL_PAGES = 50
"""Requests one fetch of the records skipped while filtered makes at most (100,000 records:
more than the largest default ring; a bigger ring's older part is left, said as missed)."""
MAX_PATHS = 32
MAX_PATHS_CHARS = 2048
"""``/v1/log?paths=`` limits (wire.py ``LOG_MAX_PATHS``, ``LOG_MAX_PATHS_CHARS``): past them
the feed asks for every path ("/")."""
NOTABLE = "notable"
MAX_DELIVERED = 100_000
"""Seqs of the records read while filtered kept at most (to count the missed ones right)."""


@dataclass(frozen=True)
class LogBatch:
    """What one read brought."""

    entries: Tuple[LogEntry, ...]
    """New records (and gaps where records were lost), oldest first."""
    state: LogState
    warnings: Tuple[str, ...] = ()


class LogFeed:
    """The records of one target, from its agent (when there is one) and its files."""

    def __init__(
        self,
        source: Optional[AgentSource],
        pid: Optional[int],
        history: int = HISTORY,
        level: Optional[str] = None,
        files: bool = True,
    ) -> None:
        self.source = source
        self.pid = pid
        self.history = history
        self.level = level
        """A minimum level asked of the agent (``cpinspect logs --level``)."""
        self.files = LogFiles(pid) if files else None
        self.cursor: Optional[int] = None
        """The last sequence number read; None before the first read."""
        self.buffer = ""
        self.capacity = 0
        self.latest = 0
        self.missed = 0
        self.dropped = 0
        self.total = 0
        self.routing: Optional[LogRouting] = None
        self.no_endpoint = ""
        """Why the agent is not asked (it has no /v1/log)."""
        self.last_error: Optional[CpinspectError] = None
        """What the last ring read failed with (None when it answered)."""
        self._dedupe = Deduper()
        self._reads = 0
        self._info_files: Tuple[Optional[str], Optional[str]] = (None, None)
        self.full = True
        """Every record is read (False: only the notable ones, ``set_full``)."""
        self.paths: Tuple[str, ...] = ()
        """Access-path prefixes read while filtered (the static mounts, ``static_prefixes``)."""
        self._filtered_after: Optional[int] = None
        """While filtered: every record up to this seq was read in full (the cursor when
        filtering began)."""
        self._backfill_from: Optional[int] = None
        """A fetch of every record after this seq up to the cursor is due at the next read."""
        self._file_shown = Deduper()
        """File records shown while filtered: the ring's copies fetched later are not shown
        twice."""
        self._paths_from: Optional[int] = None
        """A fetch of the records under ``paths`` after this seq up to the cursor is due."""
        self._delivered: List[int] = []
        """Seqs read while filtered (the notable ones): not missed if they wrapped out later."""
        self._missed_filtered = 0
        """Records the filtered reads already counted as missed (wrapped out before them)."""
        self._mode_lock = threading.Lock()
        self._read_lock = threading.Lock()
        """Held through every read of the ring and the files (``read``, ``skipped_records``):
        a live session reads in the background (``AgentSession``), never two at once."""
        self._closed = False
        self._files_closed = False
        self.backfilled = 0
        """Records fetched by the catch-ups so far (for tests and the bench)."""

    def set_source(self, source: Optional[AgentSource], pid: Optional[int] = None) -> None:
        """The session reconnected (perhaps to a restarted process): ask the new agent; its
        ring's id says whether the cursor still holds. Waits for a read still running (its
        source was lost: it ends at once)."""
        with self._read_lock:
            self._set_source(source, pid)

    def _set_source(self, source: Optional[AgentSource], pid: Optional[int]) -> None:
        if source is not self.source:
            self.source = source
            self.no_endpoint = ""
        if pid is not None and pid != self.pid:
            had_files = self.files is not None
            self.pid = pid
            if self.files is not None:
                self.files.close()
            self.files = LogFiles(pid) if had_files else None

    def configure(self, info: Optional[ProcessInfo]) -> None:
        """The files ``/v1/info`` names (the agent's view of ``log.error_file`` and
        ``log.access_file``)."""
        if info is not None:
            self._info_files = (info.logging.error_file, info.logging.access_file)

    # --- full or filtered ------------------------------------------------------------------------

    def set_full(self, full: bool) -> bool:
        """Read every record (someone looks at the log) or only the notable ones. Called from
        any thread; the next read acts on it. Back to full, the records skipped meanwhile are
        fetched once by the next read. True when a catch-up became due."""
        with self._mode_lock:
            if full == self.full:
                return False
            self.full = full
            if full:
                self._backfill_from = self._filtered_after
                self._filtered_after = None
                self._paths_from = None  # the full catch-up brings those too
                return self._backfill_from is not None
            else:
                # A catch-up still due (shown and hidden again before a read) starts there.
                pending = self._backfill_from
                self._backfill_from = None
                if pending is None:
                    self._delivered = []
                    self._missed_filtered = 0
                self._filtered_after = pending if pending is not None else self.cursor
                return False

    def set_paths(self, paths: Sequence[str]) -> None:
        """The access-path prefixes read while filtered (past the wire's limits: every path).
        New ones while filtered: the next read fetches, once, the records under them that the
        filter skipped so far (the routes arrive after the first reads)."""
        clean = tuple(dict.fromkeys(p for p in paths if p.startswith("/")))
        if len(clean) > MAX_PATHS or len(",".join(clean)) > MAX_PATHS_CHARS:
            clean = ("/",)
        with self._mode_lock:
            if clean == self.paths:
                return
            added = set(clean) - set(self.paths)
            self.paths = clean
            start = self._filtered_after
            if added and start is not None and self._paths_from is None:
                self._paths_from = start

    @property
    def filtered(self) -> bool:
        """Records were skipped since the last full read (a catch-up is due or would be)."""
        return self._filtered_after is not None or self._backfill_from is not None

    def skipped_records(self, newest: int = 0) -> List[LogEntry]:
        """The records the filter skipped (every record after the cursor filtering began at, up
        to the cursor), fetched from the ring now without moving anything (a snapshot's recent
        records must be complete). ``newest``: only the last ``newest`` seqs. Call it where
        ``read`` cannot run at the same time (the TUI: under its poll lock). [] when nothing
        was skipped; raises nothing (a failure is an empty list)."""
        with self._mode_lock:
            lo = self._backfill_from if self._backfill_from is not None else self._filtered_after
            hi = self.cursor
        if lo is None or hi is None or self.source is None or self.no_endpoint:
            return []
        if newest > 0:
            lo = max(lo, hi - newest)
        try:
            with self._read_lock:  # a background read of a live session ends first
                entries, _ = self._fetch_range(lo, hi, [])
        except Exception:  # noqa: BLE001 - the snapshot goes on with what is held
            return []
        return entries

    def _fetch_range(
        self, after: int, upto: int, warnings: List[str], notable: bool = False
    ) -> Tuple[List[LogEntry], int]:
        """Every record with ``after < seq <= upto`` still in the ring (a ``LogGap`` first for
        the ones that wrapped out), and how many wrapped out; ``notable``: only the notable
        ones (under ``paths``), no gap. The same ring (buffer id) only."""
        assert self.source is not None
        out: List[LogEntry] = []
        missed = 0
        cursor = after
        for page_number in range(BACKFILL_PAGES):
            if cursor >= upto:
                break
            if notable:
                page = self.source.log(after=cursor, limit=PAGE, only=NOTABLE, paths=self.paths)
            else:
                page = self.source.log(after=cursor, limit=PAGE)
            if self.buffer and page.buffer != self.buffer:
                return [], 0  # the agent restarted: what was skipped is gone with it
            if page_number == 0 and page.missed and not notable:
                # Those read while filtered were not missed (they are held, or were shown).
                # Nor those the filtered reads already said were missed.
                read = sum(1 for seq in self._delivered if after < seq < page.first)
                read += self._missed_filtered
                missed = max(0, min(page.missed, upto - after) - read)
                if missed:
                    when = page.records[0].time if page.records else page.taken_at
                    out.append(LogGap(missed, when))
            for record in page.records:
                if record.seq > upto:
                    return out, missed
                out.append(record)
                cursor = record.seq
            if not page.more or not page.records:
                break
        else:
            warnings.append(
                "log: the records skipped while the Log tab was hidden were not all read"
            )
        return out, missed

    def _paths_catch_up(self, warnings: List[str]) -> List[LogEntry]:
        """The due fetch of the records under paths added while filtered (``set_paths``)."""
        with self._mode_lock:
            start, self._paths_from = self._paths_from, None
        if start is None or self.cursor is None or start >= self.cursor or self.full:
            return []
        entries, _ = self._fetch_range(start, self.cursor, warnings, notable=True)
        read = set(self._delivered)
        out: List[LogEntry] = []
        for entry in entries:
            if not isinstance(entry, LogRecord) or entry.seq in read:
                continue
            if self._file_shown.duplicate(entry):
                continue
            self._dedupe.seen(entry)
            self._delivered.append(entry.seq)
            self.backfilled += 1
            out.append(entry)
        return out

    def _catch_up(self, warnings: List[str]) -> List[LogEntry]:
        """The due fetch of the records skipped while filtered (``set_full(True)``): the ones
        read while filtered are not brought again (the store's merge would drop them too)."""
        with self._mode_lock:
            start, self._backfill_from = self._backfill_from, None
        out: List[LogEntry] = []
        if start is not None and self.cursor is not None and start < self.cursor:
            entries, missed = self._fetch_range(start, self.cursor, warnings)
            self.missed += missed
            read = set(self._delivered)
            for entry in entries:
                if isinstance(entry, LogRecord):
                    if entry.seq in read:
                        continue
                    if self._file_shown.duplicate(entry):
                        continue  # shown from its file while the ring was filtered
                    self._dedupe.seen(entry)
                    self.backfilled += 1
                out.append(entry)
        self._file_shown = Deduper()
        self._delivered = []
        self._missed_filtered = 0
        return out

    # --- reading -------------------------------------------------------------------------------

    def read(self, agent: bool = True) -> LogBatch:
        """New entries since the last read; ``agent=False``: the files only (the agent is not
        answering, and must not be waited for again). Callable from any thread, one read at a
        time (a second waits for the first); after ``close()`` an empty batch."""
        with self._read_lock:
            batch = self._read(agent) if not self._closed else None
        if self._closed:
            self._close_files()  # closed while this read ran: its files are closed now
        return batch if batch is not None else LogBatch((), self.state)

    def _read(self, agent: bool) -> LogBatch:
        warnings: List[str] = []
        self._reads += 1
        file_records, gaps = self._read_files(warnings)
        entries: List[LogEntry] = list(gaps)
        if agent and self.source is not None and not self.no_endpoint:
            entries.extend(self._read_ring(warnings))
        shown = [r for r in file_records if not self._dedupe.duplicate(r)]
        if self.filtered:
            for record in shown:
                self._file_shown.seen(record)
        entries.extend(shown)
        entries.sort(key=_entry_time)
        self.total += sum(1 for e in entries if isinstance(e, LogRecord))
        if self.no_endpoint:
            warnings.append(self.no_endpoint)
        return LogBatch(tuple(entries), self.state, tuple(warnings))

    @property
    def files_followed(self) -> bool:
        """Some log file is known to follow."""
        return self.files is not None and bool(self.files.tails)

    @property
    def state(self) -> LogState:
        return LogState(
            buffer=self.buffer,
            latest=self.latest,
            missed=self.missed,
            capacity=self.capacity,
            routing=self.routing,
            files=self.files.statuses if self.files is not None else (),
            total=self.total,
        )

    def _read_files(self, warnings: List[str]) -> Tuple[List[LogRecord], List[LogGap]]:
        if self.files is None:
            return [], []
        error, access = self._info_files
        if self.routing is not None:
            error = self.routing.error_file or error
            access = self.routing.access_file or access
        try:
            if self.source is not None and (error or access):
                self.files.configure(error, access, found_by="agent")
            elif self.source is None and (self._reads == 1 or self._reads % DISCOVER_EVERY == 0):
                self.files.discover()
            records, gaps = self.files.read()
        except Exception as exc:  # noqa: BLE001 - a file problem never breaks the poll
            warnings.append("log files not read: %s" % exc)
            return [], []
        if self.files.note:
            warnings.append(self.files.note)
        return records, gaps

    def _read_ring(self, warnings: List[str]) -> List[LogEntry]:
        assert self.source is not None
        out: List[LogEntry] = []
        self.last_error = None
        try:
            if self.cursor is None:
                probe = self.source.log(after=0, limit=1)
                self._take_page_facts(probe)
                start = probe.latest - self.history
                self.cursor = max(0, start, probe.first - 1)
                with self._mode_lock:
                    if not self.full:
                        self._filtered_after = self.cursor
            elif self._backfill_from is not None:
                out.extend(self._catch_up(warnings))
            elif self._paths_from is not None:
                out.extend(self._paths_catch_up(warnings))
            for _ in range(MAX_PAGES):
                full = self.full
                if full:
                    page = self.source.log(after=self.cursor, limit=PAGE, level=self.level)
                else:
                    page = self.source.log(
                        after=self.cursor,
                        limit=PAGE,
                        level=self.level,
                        only=NOTABLE,
                        paths=self.paths,
                    )
                if page.buffer != self.buffer and self.buffer:
                    # The agent restarted: its sequence numbers start over.
                    warnings.append("the agent restarted: its log buffer starts over")
                    self.buffer = page.buffer
                    self.cursor = 0
                    with self._mode_lock:
                        # What was skipped went with the old ring; the new one from its start.
                        self._backfill_from = None
                        self._paths_from = None
                        self._delivered = []
                        self._missed_filtered = 0
                        if self._filtered_after is not None:
                            self._filtered_after = 0
                    continue
                self._take_page_facts(page)
                warnings.extend("log: %s" % e for e in page.errors)
                if page.missed:
                    self.missed += page.missed
                    if not full:
                        self._missed_filtered += page.missed
                    when = page.records[0].time if page.records else page.taken_at
                    out.append(LogGap(page.missed, when))
                for record in page.records:
                    self.cursor = max(self.cursor, record.seq)
                    self._dedupe.seen(record)
                    out.append(record)
                if not full and page.records:
                    self._delivered.extend(r.seq for r in page.records)
                    if len(self._delivered) > MAX_DELIVERED:
                        del self._delivered[: len(self._delivered) - MAX_DELIVERED]
                if page.next is not None and page.next >= self.cursor:
                    # Past the records a level filter left out, too.
                    self.cursor = page.next
                elif not page.records:
                    # Nothing after the cursor (a level filter may hide the rest): move on.
                    self.cursor = max(self.cursor, page.latest)
                if page.dropped > self.dropped:
                    warnings.append(
                        "the agent failed to capture %d log records (formatting failed)"
                        % page.dropped
                    )
                    self.dropped = page.dropped
                if not page.more:
                    break
        except EndpointError as exc:
            self.last_error = exc
            if "has no" in str(exc):
                self.no_endpoint = "log records need a newer agent: %s" % exc
            else:
                warnings.append("log not read: %s" % exc)
        except CpinspectError as exc:
            self.last_error = exc
            warnings.append("log not read: %s" % exc)
        except Exception as exc:  # noqa: BLE001 - never break the threads poll
            warnings.append("log not read: %s: %s" % (type(exc).__name__, exc))
        return out

    def _take_page_facts(self, page: LogPage) -> None:
        if not self.buffer:
            self.buffer = page.buffer
        self.capacity = page.capacity
        self.latest = page.latest
        if page.routing is not None:
            self.routing = page.routing

    def close(self) -> None:
        """Close the files followed; a read running in another thread closes them as it ends
        (``close`` never waits for it: it may be waiting for a slow agent)."""
        self._closed = True
        self._close_files()

    def _close_files(self) -> None:
        if not self._read_lock.acquire(blocking=False):
            return  # a read runs: it closes them as it ends (``read``)
        try:
            if self.files is not None and not self._files_closed:
                self._files_closed = True
                self.files.close()
        finally:
            self._read_lock.release()


def _entry_time(entry: LogEntry) -> float:
    return entry.time


# --- what the filter keeps, and putting the skipped records back in their place ---------------


def static_prefixes(routes: Optional[RoutesSnapshot]) -> Tuple[str, ...]:
    """The request paths of every app's static mounts (``script_name`` + mount path): the
    access records of these the MIME finding reads (``findings/config.py``), 200s included."""
    if routes is None:
        return ()
    out: Dict[str, None] = {}
    for app in routes.apps:
        base = app.script_name.rstrip("/")
        for mount in app.static:
            path = mount.path if mount.path.startswith("/") else "/" + mount.path
            out[(base + path) or "/"] = None
    return tuple(out)


def _ring_seq(entry: LogEntry) -> int:
    """The seq of a record read from the agent's ring; 0 for anything else."""
    if isinstance(entry, LogRecord) and entry.origin is LogOrigin.BUFFER:
        return entry.seq
    return 0


def split_backfill(entries: Iterable[LogEntry], top: int) -> Tuple[List[LogEntry], List[LogEntry]]:
    """``(older, newer)``: the ring records with a seq at or below ``top`` (a catch-up of
    records skipped while filtered; a gap just before one goes with it), and the rest."""
    older: List[LogEntry] = []
    newer: List[LogEntry] = []
    gap: List[LogEntry] = []
    for entry in entries:
        if isinstance(entry, LogGap):
            gap.append(entry)
            continue
        seq = _ring_seq(entry)
        if 0 < seq <= top:
            older.extend(gap)
            older.append(entry)
        else:
            newer.extend(gap)
            newer.append(entry)
        gap = []
    newer.extend(gap)
    return older, newer


def merge_backfill(held: Sequence[LogEntry], older: Sequence[LogEntry]) -> List[LogEntry]:
    """``held`` with the ring records of ``older`` put in their place by seq: each before the
    first held ring record with a greater seq (held entries keep their order; file records
    and gaps stay where they were). Records already held (same seq) are left out, so an older
    agent that answered everything adds nothing twice."""
    have = {seq for seq in map(_ring_seq, held) if seq}
    pending = [e for e in older if not (_ring_seq(e) and _ring_seq(e) in have)]
    # A gap sorts with the record after it.
    keys: List[float] = [0.0] * len(pending)
    following = float("inf")
    for i in range(len(pending) - 1, -1, -1):
        seq = _ring_seq(pending[i])
        if seq:
            following = float(seq)
        keys[i] = following
    out: List[LogEntry] = []
    j = 0
    for entry in held:
        seq = _ring_seq(entry)
        if seq:
            while j < len(pending) and keys[j] < seq:
                out.append(pending[j])
                j += 1
        out.append(entry)
    out.extend(pending[j:])
    return out
