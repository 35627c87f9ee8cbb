"""The log feed filtered while nobody looks (``set_full(False)``) and caught up when someone does:
the skipped records fetched once and put back in their place by seq, "missed" only for records
that really wrapped out, new static paths caught up, an older agent that ignores ``only``.

A stand-in ring (``FilterRing``, built on ``tests/unit/test_log_feed.py``'s ``Ring``) answers
pages shaped like the wire contract through the real reader, applying ``only=notable`` as
wire.py says (or ignoring it, as an agent older than the parameter does): a wrap between two
reads at an exact seq cannot be staged reliably on a live process. The live end to end is in
``tests/tui/test_log_hidden.py`` and ``tests/integration/test_log_filter.py``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from cpinspect.model import LogGap, LogOrigin, LogPage, LogRecord
from cpinspect.sources.logfeed import LogFeed, merge_backfill, split_backfill
from tests.unit.test_log_feed import Ring


class FilterRing(Ring):
    """Records of both kinds; ``only=notable`` applied as the agent does unless ``old``."""

    def __init__(self, capacity: int = 50, old: bool = False) -> None:
        super().__init__(capacity=capacity)
        self.old = old
        self.asked: List[Optional[str]] = []

    def add(self, kind: str, path: str = "/") -> int:
        """``info``, ``error``, or an access record ``200`` / ``404`` of ``path``."""
        self.emit(1)
        rec: Dict[str, Any] = self.records[-1]
        if kind == "info":
            rec.update(level="INFO", levelno=20)
        elif kind != "error":
            rec.update(level="INFO", levelno=20, logger="cherrypy.access")
            rec["message"] = '127.0.0.1 - - [x] "GET %s HTTP/1.1" %s 5 "" ""' % (path, kind)
            rec["access"] = {"status": int(kind), "size": 5, "duration": 0.001}
            rec["request"] = {
                "method": "GET",
                "path": path,
                "query": "",
                "client": "127.0.0.1",
                "peer": "127.0.0.1:1",
                "started_at": 1.0,
                "handler": None,
                "stage": None,
                "app": "",
                "source": "hook",
            }
        return int(rec["seq"])

    def log(  # type: ignore[override]
        self,
        after: int = 0,
        limit: int = 500,
        level: Optional[str] = None,
        only: Optional[str] = None,
        paths: Sequence[str] = (),
    ) -> LogPage:
        self.asked.append(only)
        if only is None or self.old:
            return super().log(after, limit, level)
        kept, self.records = self.records, [r for r in self.records if _notable(r, paths)]
        try:
            page = super().log(after, limit, level)
        finally:
            self.records = kept
        first = kept[0]["seq"] if kept else 0
        missed = max(0, first - after - 1) if after < first - 1 else 0
        # The cursor arithmetic over every record held, not the kept ones (wire.py).
        return LogPage(
            page.taken_at,
            page.buffer,
            page.capacity,
            page.max_message,
            first,
            self.seq,
            missed,
            page.more,
            page.records,
            page.routing,
            page.dropped,
            page.next,
            page.errors,
        )


def _notable(rec: Dict[str, Any], paths: Sequence[str]) -> bool:
    if rec["levelno"] >= 30:
        return True
    access = rec.get("access")
    if not access:
        return False
    if access["status"] is None or access["status"] >= 400:
        return True
    return any(rec["request"]["path"].startswith(p) for p in paths)


def feed_on(ring: Ring) -> LogFeed:
    return LogFeed(ring, pid=None, history=1000, files=False)  # type: ignore[arg-type]


def seqs(entries: Any) -> List[int]:
    return [e.seq for e in entries if isinstance(e, LogRecord)]


def test_hidden_only_the_notable_records_come_then_the_rest_in_place_once_shown() -> None:
    # GIVEN a feed filtered from its first read (the Log tab hidden)
    ring = FilterRing()
    feed = feed_on(ring)
    feed.set_full(False)
    ring.add("info")
    err = ring.add("error")
    assert seqs(feed.read().entries) == [err]
    # WHEN 200s, a 404 and an INFO message are logged and read filtered
    ok1, nf, info, ok2 = ring.add("200"), ring.add("404"), ring.add("info"), ring.add("200")
    assert seqs(feed.read().entries) == [nf]
    assert ring.asked[-1] == "notable"
    # THEN nothing was missed, and the cursor is at the end
    assert feed.cursor == ring.seq and feed.missed == 0
    # WHEN the tab is shown and the next read runs
    feed.set_full(True)
    late = ring.add("200")
    batch = feed.read()
    # THEN every skipped record comes once (the ones already read not again), then the new one
    assert seqs(batch.entries) == [1, ok1, info, ok2, late]
    assert not any(isinstance(e, LogGap) for e in batch.entries)
    assert ring.asked[-1] is None and feed.backfilled == 4
    # AND the store's merge puts them in place among the ones held
    held: List[Any] = list(feed_entries(ring, [err, nf]))
    older, newer = split_backfill(batch.entries, top=nf)
    assert seqs(older) == [1, ok1] and seqs(newer) == [info, ok2, late]
    assert seqs(merge_backfill(held, older) + newer) == list(range(1, late + 1))
    # AND hidden again then shown, only what came meanwhile is fetched
    feed.set_full(False)
    again = ring.add("200")
    assert feed.read().entries == ()
    feed.set_full(True)
    assert seqs(feed.read().entries) == [again]


def feed_entries(ring: FilterRing, wanted: List[int]) -> List[LogRecord]:
    page = Ring.log(ring, after=0, limit=5000)
    return [r for r in page.records if r.seq in wanted]


def test_missed_counts_only_the_records_that_wrapped_out_unread() -> None:
    # GIVEN a ring of 10 and a filtered feed that read one error
    ring = FilterRing(capacity=10)
    feed = feed_on(ring)
    feed.set_full(False)
    err = ring.add("error")
    assert seqs(feed.read().entries) == [err]
    # WHEN 5 INFO records, an error read filtered, then 8 more: the ring wraps past seqs 1-5
    for _ in range(5):
        ring.add("info")
    err2 = ring.add("error")
    assert seqs(feed.read().entries) == [err2]
    for _ in range(8):
        ring.add("info")
    assert ring.records[0]["seq"] == 6  # 1..5 wrapped out
    assert feed.read().entries == ()
    # AND the tab opens
    feed.set_full(True)
    batch = feed.read()
    # THEN "missed" is the 4 INFO records that wrapped out unread (not the error read before)
    gaps = [e for e in batch.entries if isinstance(e, LogGap)]
    assert [g.count for g in gaps] == [4] and feed.missed == 4
    # AND the rest still held comes, the error read before not again
    assert seqs(batch.entries) == [r for r in range(6, ring.seq + 1) if r != err2]


def test_static_paths_known_later_bring_the_access_records_under_them() -> None:
    # GIVEN a filtered feed that read before the routes (no paths yet)
    ring = FilterRing()
    feed = feed_on(ring)
    feed.set_full(False)
    css = ring.add("200", "/static/site.css")
    ring.add("200", "/cart")
    assert feed.read().entries == ()
    # WHEN the static mounts become known
    feed.set_paths(["/static", "/static", "relative"])
    assert feed.paths == ("/static",)
    js = ring.add("200", "/static/app.mjs")
    # THEN the next read brings the 200s under them, the one logged before too, once
    assert seqs(feed.read().entries) == [css, js]
    assert feed.read().entries == ()
    # AND past the wire's limits every path is asked for
    feed.set_paths(["/p%d" % i for i in range(40)])
    assert feed.paths == ("/",)


def test_an_older_agent_that_ignores_only_loses_nothing_and_shows_nothing_twice() -> None:
    # GIVEN an agent older than ``only``: it answers every record (it reads only the
    # parameters it knows: plugin._log before this change read after, limit and level)
    ring = FilterRing(old=True)
    feed = feed_on(ring)
    feed.set_full(False)
    ring.add("info")
    ring.add("200")
    ring.add("error")
    first = feed.read().entries
    # THEN the filtered read simply has everything
    assert seqs(first) == [1, 2, 3]
    # WHEN the tab opens: the catch-up fetches them again, and the store's merge drops the seqs
    # it holds
    feed.set_full(True)
    ring.add("200")
    batch = feed.read()
    older, newer = split_backfill(batch.entries, top=3)
    merged = merge_backfill(list(first), older) + newer
    assert seqs(merged) == [1, 2, 3, 4]


def test_merge_keeps_file_records_and_gaps_where_they_were() -> None:
    # GIVEN held: ring records 1 and 5, a file record between them, ring record 9
    ring = FilterRing()
    for _ in range(9):
        ring.add("info")
    every = {r.seq: r for r in Ring.log(ring, after=0, limit=100).records}
    from dataclasses import replace

    file_record = replace(every[5], seq=0, origin=LogOrigin.ERROR_FILE, message="from the file")
    held: List[Any] = [every[1], every[5], file_record, every[9]]
    # WHEN records 2-8 come back (5 again) with a gap before 2
    older: List[Any] = [LogGap(3, every[2].time)] + [every[s] for s in range(2, 9)]
    merged = merge_backfill(held, older)
    # THEN each sits before the first held one with a greater seq; 5 is not doubled; the
    # file record stays after 5, the gap before 2
    kinds = ["gap" if isinstance(e, LogGap) else ("file" if e.seq == 0 else e.seq) for e in merged]
    assert kinds == [1, "gap", 2, 3, 4, 5, "file", 6, 7, 8, 9]
