"""The log cursor: one ``/v1/log?after=`` read per poll, history limited at the start, missed
records shown as a gap in place, a restarted agent's ring read from 0, an agent without the
endpoint said once, and file lines that the ring also holds shown once.

The agent here is a stand-in ring (``Ring``) answering pages shaped like the wire contract
(``cpinspect/agent/wire.py``) through the real reader: the cursor arithmetic under exact states
(a wrap between two reads) cannot be staged reliably on a live process; the end-to-end tests in
tests/integration/test_logs_cli.py use the real agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from cpinspect.errors import EndpointError
from cpinspect.model import LogGap, LogOrigin, LogPage, LogRecord
from cpinspect.protocol import log_page_from_json
from cpinspect.sources.logfeed import LogFeed

STAMP = "[01/Dec/2026:09:40:%02d]"


class Ring:
    """A ring of ``capacity`` records as the agent keeps it, answering ``log(after, limit)``."""

    def __init__(self, capacity: int = 10, buffer: str = "b1") -> None:
        self.capacity = capacity
        self.buffer = buffer
        self.records: List[Dict[str, Any]] = []
        self.seq = 0
        self.calls: List[int] = []
        self.missing = False

    def emit(self, n: int, second: int = 1) -> None:
        for _ in range(n):
            self.seq += 1
            self.records.append(
                {
                    "seq": self.seq,
                    "time": 1.0 * self.seq,
                    "level": "ERROR",
                    "levelno": 40,
                    "logger": "cherrypy.error",
                    "message": (STAMP % second) + " ENGINE record %d" % self.seq,
                    "cut": 0,
                    "traceback": None,
                    "thread": {"ident": 7, "name": "MainThread"},
                    "request": None,
                    "access": None,
                }
            )
        self.records = self.records[-self.capacity :]

    def log(self, after: int = 0, limit: int = 500, level: Optional[str] = None) -> LogPage:
        if self.missing:
            raise EndpointError("this agent has no /v1/log (it may be older than the inspector)")
        self.calls.append(after)
        first = self.records[0]["seq"] if self.records else 0
        held = [r for r in self.records if r["seq"] > after]
        more = len(held) > limit
        returned = held[:limit]
        return log_page_from_json(
            {
                "schema": 1,
                "agent": "0.1.0",
                "taken_at": 100.0,
                "buffer": self.buffer,
                "capacity": self.capacity,
                "max_message": 8192,
                "first": first,
                "latest": self.seq,
                "missed": max(0, first - after - 1) if after < first - 1 else 0,
                "more": more,
                "next": returned[-1]["seq"] if more else self.seq,
                "routing": {
                    "screen": False,
                    "error_file": None,
                    "access_file": None,
                    "other_handlers": [],
                    "goes_nowhere": True,
                    "fix": 'log.error_file = "/var/log/app/error.log"',
                },
                "records": returned,
                "errors": [],
            }
        )


def feed_on(ring: Ring, history: int = 3) -> LogFeed:
    return LogFeed(ring, pid=None, history=history)  # type: ignore[arg-type]


def records(entries: Any) -> List[int]:
    return [e.seq for e in entries if isinstance(e, LogRecord)]


def test_the_first_read_starts_a_few_records_back_then_follows() -> None:
    # GIVEN a ring holding 8 records
    ring = Ring()
    ring.emit(8)
    feed = feed_on(ring, history=3)
    # WHEN read: the last 3 only (history), no gap (older history is not "missed")
    batch = feed.read()
    assert records(batch.entries) == [6, 7, 8]
    assert not any(isinstance(e, LogGap) for e in batch.entries)
    # AND later reads bring exactly the new ones
    ring.emit(2)
    assert records(feed.read().entries) == [9, 10]
    assert feed.read().entries == ()
    assert batch.state.routing is not None and batch.state.routing.goes_nowhere


def test_records_lost_to_the_ring_wrapping_are_a_gap_in_place() -> None:
    ring = Ring(capacity=10)
    ring.emit(2)
    feed = feed_on(ring)
    assert records(feed.read().entries) == [1, 2]
    # GIVEN 25 records logged between two reads into a ring of 10
    ring.emit(25)
    # WHEN read
    batch = feed.read()
    # THEN the 15 that wrapped out are one gap before the 10 still held, and counted
    gap = batch.entries[0]
    assert isinstance(gap, LogGap) and gap.count == 15
    assert records(batch.entries) == list(range(18, 28))
    assert batch.state.missed == 15


def test_a_restarted_agent_is_read_from_the_start_of_its_new_ring() -> None:
    ring = Ring()
    ring.emit(5)
    feed = feed_on(ring, history=10)
    assert records(feed.read().entries) == [1, 2, 3, 4, 5]
    # GIVEN the agent restarted: a new ring, sequence numbers from 1 again
    restarted = Ring(buffer="b2")
    restarted.emit(2)
    feed.set_source(restarted)  # type: ignore[arg-type]
    # WHEN read
    batch = feed.read()
    # THEN its records are read (the old cursor, 5, would have skipped them) and it is said
    assert records(batch.entries) == [1, 2]
    assert any("restarted" in w for w in batch.warnings)


def test_an_agent_without_the_endpoint_is_said_once_and_not_asked_again() -> None:
    ring = Ring()
    ring.missing = True
    feed = feed_on(ring)
    first = feed.read()
    assert any("newer agent" in w for w in first.warnings)
    ring.missing = False
    feed.read()
    assert ring.calls == []  # not asked again


def test_a_record_in_the_ring_and_in_the_error_file_is_shown_once(tmp_path: Path) -> None:
    # GIVEN the error file holding the ring's record 1 and one more line the ring lost
    ring = Ring()
    ring.emit(1, second=5)
    path = tmp_path / "error.log"
    path.write_text(ring.records[0]["message"] + "\n" + (STAMP % 6) + " ENGINE only in the file\n")
    feed = LogFeed(ring, pid=None, history=10)  # type: ignore[arg-type]
    feed.routing = None
    feed._info_files = (str(path), None)
    # WHEN read (twice: the file's last record completes on a quiet read)
    entries = list(feed.read().entries) + list(feed.read().entries)
    # THEN record 1 once (from the ring), the file-only line from the file
    got = [(e.origin, e.message) for e in entries if isinstance(e, LogRecord)]
    assert got == [
        (LogOrigin.BUFFER, ring.records[0]["message"]),
        (LogOrigin.ERROR_FILE, (STAMP % 6) + " ENGINE only in the file"),
    ]
