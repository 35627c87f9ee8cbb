"""What a poll that moves only times makes again (issue 13): the header lays out its left part
once per state (the age ticking draws the line from it), and the stack view makes a busy
thread's stack lines once per stack object. Real
Textual (``run_test`` + Pilot) on a scripted poller; asserted through counters, never timings."""

from __future__ import annotations

import dataclasses
from typing import Any, List

import pytest

from cpinspect.model import ThreadInfo
from cpinspect.sources.base import Update
from cpinspect.tui.widgets.header_bar import HeaderBar
from cpinspect.tui.widgets.stack_view import StackView

from .fakes import EXPORT_STACK, T0, FakePoller, other_threads, pool, snapshot, update, worker
from .helpers import first_data, make_app, poll, wait_until

BUSY = worker(1, 12.0, "/reports/export", stack=EXPORT_STACK, handler="Reports.export")


def moved_on(seconds: float) -> Update:
    """The same busy thread ``seconds`` later, as a delta carries it: a new object with a new
    ``elapsed``, the same request and stack objects."""
    thread = dataclasses.replace(BUSY, elapsed=BUSY.elapsed + seconds)  # type: ignore[operator]
    threads: List[ThreadInfo] = [thread, worker(2, None), *other_threads()]
    return update(snapshot(threads, taken_at=T0 + seconds, pools=[pool(busy=1, queued=0)]))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The header's layouts of its left part and the stack view's makings of stack lines."""
    made: List[str] = []
    for cls, name in ((HeaderBar, "_parts"), (StackView, "_stack_lines")):
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any, _o: Any = original, _n: str = name) -> Any:
            made.append(_n)
            return _o(self, *args)

        monkeypatch.setattr(cls, name, wrapper)
    return made


async def test_a_poll_that_moves_times_makes_no_stack_lines_and_no_header_layout(
    calls: List[str],
) -> None:
    # GIVEN a busy worker selected, its stack on screen
    poller = FakePoller([moved_on(0.0)])
    clock = {"now": T0 + 0.5}
    app = make_app(poller, clock=lambda: clock["now"])
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        view = app.query_one(StackView)
        assert "12.0 s" in view.plain and "fetch_all" in view.plain
        header = app.query_one(HeaderBar)
        await wait_until(pilot, lambda: "0.5 s ago" in header.render().plain, what="the age")
        calls.clear()
        # WHEN two polls bring it 1 and 2 s later (the same stack object) and the age ticks
        for n in (1, 2):
            poller.set(moved_on(float(n)))
            clock["now"] = T0 + n + 0.5
            await poll(pilot)
        clock["now"] = T0 + 3.7
        await wait_until(pilot, lambda: "1.7 s ago" in header.render().plain, what="a tick")
        # THEN the stack view shows the new elapsed time with the same stack
        assert "14.0 s" in view.plain and "fetch_all" in view.plain
        # AND its stack lines were not made again, and the header's left part was laid out
        # again only for the polls' new states (never for the age alone)
        assert "_stack_lines" not in calls
        assert calls.count("_parts") <= 2
