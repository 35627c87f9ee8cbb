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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from cpinspect.errors import CpinspectError, EndpointError
from cpinspect.model import (
    LogEntry,
    LogGap,
    LogPage,
    LogRecord,
    LogRouting,
    LogState,
    ProcessInfo,
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

    def set_source(self, source: Optional[AgentSource], pid: Optional[int] = None) -> None:
        """The session reconnected (perhaps to a restarted process): ask the new agent; its
        ring's id says whether the cursor still holds."""
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

    # --- reading -------------------------------------------------------------------------------

    def read(self, agent: bool = True) -> LogBatch:
        """New entries since the last read; ``agent=False``: the files only (the agent is not
        answering, and must not be waited for again)."""
        warnings: List[str] = []
        self._reads += 1
        file_records, gaps = self._read_files(warnings)
        entries: List[LogEntry] = list(gaps)
        if agent and self.source is not None and not self.no_endpoint:
            entries.extend(self._read_ring(warnings))
        entries.extend(r for r in file_records if not self._dedupe.duplicate(r))
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
            for _ in range(MAX_PAGES):
                page = self.source.log(after=self.cursor, limit=PAGE, level=self.level)
                if page.buffer != self.buffer and self.buffer:
                    # The agent restarted: its sequence numbers start over.
                    warnings.append("the agent restarted: its log buffer starts over")
                    self.buffer = page.buffer
                    self.cursor = 0
                    continue
                self._take_page_facts(page)
                warnings.extend("log: %s" % e for e in page.errors)
                if page.missed:
                    self.missed += page.missed
                    when = page.records[0].time if page.records else page.taken_at
                    out.append(LogGap(page.missed, when))
                for record in page.records:
                    self.cursor = max(self.cursor, record.seq)
                    self._dedupe.seen(record)
                    out.append(record)
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
        if self.files is not None:
            self.files.close()


def _entry_time(entry: LogEntry) -> float:
    return entry.time
