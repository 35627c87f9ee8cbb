"""The log ring under many threads appending while readers copy, resize and follow the cursor:
nothing may be lost silently, seqs stay consecutive, ``missed`` is exact. (Written for a ring
that appended without a lock, which measured no gain and is not here; the locked ring must pass
the same.)

Real threads in this process (the ring's interleavings are under test, and they only exist in
one process); the thread switch interval is shortened so that the writers interleave at every
few bytecodes instead of every 5 ms.
"""

import logging
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cpinspect.agent.logcapture import LogCapture, LogRing
from cpinspect.agent.tracking import RequestTracker

WRITERS = 8


@pytest.fixture(autouse=True)
def _fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _record(writer: int, n: int, size: int = 8) -> Tuple[Any, ...]:
    # Slot 0 (the time) carries who wrote it; slot 4 the text (the ring counts slots 4 and 6).
    text = ("w%d-%d " % (writer, n)).ljust(size, "x")
    tb = "Traceback (most recent call last):\n" if n % 7 == 0 else None
    return ((writer, n), 20, "INFO", "cherrypy.error", text, 0, tb, 1, "t")


class Follower:
    """A reader following the cursor as ``LogCapture.read`` does: after, first, missed."""

    def __init__(self) -> None:
        self.after = 0
        self.seen: List[Tuple[int, int]] = []
        self.missed = 0
        self.copies = 0

    def follow(self, ring: LogRing) -> None:
        items, first, latest = ring.copy()
        self.copies += 1
        if not items:
            assert latest >= self.after
            self.missed += latest - self.after
            self.after = latest
            return
        # THEN (every copy) the held records are exactly the seqs first..latest
        assert latest - first + 1 == len(items)
        assert first >= 1 and latest >= self.after
        missed = first - self.after - 1 if self.after < first - 1 else 0
        self.missed += missed
        start = max(0, self.after - first + 1)
        self.seen.extend(item[0] for item in items[start:])
        self.after = latest


def _run_writers(append: Any, per_writer: int, size_of: Any = None) -> List[threading.Thread]:
    go = threading.Event()

    def write(w: int) -> None:
        go.wait(10)
        for n in range(per_writer):
            append(w, n, size_of(n) if size_of else 8)

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    go.set()
    return threads


def _check(follower: Follower, per_writer: int) -> None:
    # THEN nothing is lost silently: every record was seen once or counted as missed
    assert len(follower.seen) + follower.missed == WRITERS * per_writer
    assert len(set(follower.seen)) == len(follower.seen)
    # AND each writer's records came in the order it wrote them (seq order = arrival order)
    last: Dict[int, int] = {}
    for w, n in follower.seen:
        assert n > last.get(w, -1)
        last[w] = n


@pytest.mark.parametrize("capacity", [100, 5000, 100000])
def test_eight_writers_and_a_follower_lose_nothing_silently(capacity: int) -> None:
    # GIVEN a ring (small: it wraps between copies; large: it never does)
    ring = LogRing(capacity)
    per_writer = 5000
    # WHEN 8 threads append 5,000 records each while a reader follows the cursor
    threads = _run_writers(lambda w, n, size: ring.append(_record(w, n, size)), per_writer)
    follower = Follower()
    while any(t.is_alive() for t in threads):
        follower.follow(ring)
        time.sleep(0.0005)
    for t in threads:
        t.join(120)
    follower.follow(ring)
    # THEN all 40,000 were seqs, the newest `capacity` held, the rest counted
    _check(follower, per_writer)
    assert follower.after == WRITERS * per_writer
    assert len(ring) == min(capacity, WRITERS * per_writer)
    if capacity >= WRITERS * per_writer:
        assert follower.missed == 0
    assert follower.copies > 2


def test_the_text_budget_and_resizes_under_concurrent_appends_stay_exact() -> None:
    # GIVEN a ring whose text budget binds (records of 10-2,000 characters, room for 50,000)
    ring = LogRing(2000, max_total_chars=50000)
    per_writer = 3000
    threads = _run_writers(
        lambda w, n, size: ring.append(_record(w, n, size)),
        per_writer,
        size_of=lambda n: 10 + (n * 37) % 1990,
    )
    follower = Follower()
    sizes = [2000, 300, 1000, 50, 3000]
    i = 0
    # WHEN a reader follows the cursor and resizes the ring meanwhile
    while any(t.is_alive() for t in threads):
        follower.follow(ring)
        ring.resize(sizes[i % len(sizes)])
        i += 1
        time.sleep(0.0005)
    for t in threads:
        t.join(120)
    follower.follow(ring)
    # THEN nothing went silently, and the text count is that of the records held
    _check(follower, per_writer)
    items, first, latest = ring.copy()
    assert latest == WRITERS * per_writer and latest - first + 1 == len(items)
    held_chars = sum(len(it[4]) + (len(it[6]) if it[6] else 0) for it in items)
    assert ring.chars == held_chars <= 50000
    assert len(items) <= ring.capacity


def test_threads_logging_through_the_handler_and_the_cursor_agree_exactly() -> None:
    # GIVEN the capture attached to cherrypy.error (a ring of 500 records, wrapping)
    capture = LogCapture(RequestTracker(), 500, access=False)
    capture.attach()
    logger = logging.getLogger("cherrypy.error")
    level = logger.level
    logger.setLevel(logging.INFO)
    per_writer = 2000
    try:
        # WHEN 8 threads log while a reader follows GET /v1/log's cursor (pages of 200)
        threads = _run_writers(lambda w, n, size: logger.info("w%d-%d", w, n), per_writer)
        after = 0
        seen: List[Tuple[int, int]] = []
        missed = 0

        def read_all() -> None:
            nonlocal after, missed
            while True:
                page = capture.read(after, 200, 0)
                missed += page["missed"]
                for rec in page["records"]:
                    assert rec["seq"] > after
                    w, n = rec["message"][1:].split("-")
                    seen.append((int(w), int(n)))
                    after = rec["seq"]
                after = page["next"]
                if not page["more"]:
                    return

        while any(t.is_alive() for t in threads):
            read_all()
            time.sleep(0.001)
        for t in threads:
            t.join(120)
        read_all()
    finally:
        capture.detach()
        logger.setLevel(level)
    # THEN every record was read or counted as missed, once, in each thread's order
    follower = Follower()
    follower.seen, follower.missed = seen, missed
    _check(follower, per_writer)
    assert after == WRITERS * per_writer
    assert capture.handler.failed == 0
