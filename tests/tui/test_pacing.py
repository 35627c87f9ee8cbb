"""The poll timer under a target that answers slowly (issue 13): the interval stretches, the
header says so, polls never overlap, and the rate comes back when answers are fast again.

The poller is the scripted fake with a delay: a real target this slow cannot be made to order
(a CherryPy process at 1,000 threads on a loaded box is what ``bench/scale.py`` measures).
"""

from __future__ import annotations

import threading
import time

from cpinspect.sources.base import Update
from cpinspect.tui.widgets.header_bar import HeaderBar

from .fakes import FakePoller, incident_update
from .helpers import first_data, make_app, wait_until


class SlowPoller(FakePoller):
    """The fake, taking ``delay`` seconds per poll; counts polls running at the same time."""

    def __init__(self, delay: float) -> None:
        super().__init__([incident_update()])
        self.delay = delay
        self.running = 0
        self.most_at_once = 0
        self._count = threading.Lock()

    def poll(self) -> Update:
        with self._count:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.delay)
            return super().poll()
        finally:
            with self._count:
                self.running -= 1


def header(app: object) -> str:
    return app.query_one(HeaderBar).render().plain  # type: ignore[attr-defined, no-any-return]


async def test_slow_polls_stretch_the_interval_and_the_header_says_so() -> None:
    # GIVEN polls every 0.05 s of a target that takes 0.2 s to answer each
    poller = SlowPoller(0.2)
    app = make_app(poller, interval=0.05)
    async with app.run_test(size=(160, 40)) as pilot:
        await first_data(pilot)
        # WHEN a few polls have come back
        await wait_until(pilot, lambda: poller.polls >= 3, what="three polls")
        await pilot.pause()
        # THEN the interval is stretched to 1.5 times the poll's duration and the header says so
        assert app.pace.stretched
        assert app.pace.interval >= 0.3
        assert app.pace.note is not None and app.pace.note.startswith("polling every ")
        assert app.pace.note in header(app)
        assert "the target answers slowly" in header(app)
        # ... and polls never ran two at a time
        assert poller.most_at_once == 1

        # WHEN the target answers fast again
        poller.delay = 0.0
        # THEN the interval comes back down to the configured one and the note goes
        await wait_until(pilot, lambda: not app.pace.stretched, what="the configured rate")
        await wait_until(pilot, lambda: "answers slowly" not in header(app), what="the header")
        assert app.pace.interval == 0.05
        # ... and polling goes on at that rate
        polls = poller.polls
        await wait_until(pilot, lambda: poller.polls >= polls + 3, what="more polls")
        assert poller.most_at_once == 1


async def test_a_key_poll_does_not_add_a_second_timer() -> None:
    # GIVEN polls every 0.1 s of a target that answers at once
    poller = SlowPoller(0.0)
    app = make_app(poller, interval=0.1)
    async with app.run_test(size=(160, 40)) as pilot:
        await first_data(pilot)
        # WHEN r is pressed a few times between timed polls
        for _ in range(5):
            await pilot.press("r")
        await wait_until(pilot, lambda: not app.poll_in_flight, what="the polls")
        # THEN there is still one poll timer, and the pace is the configured one
        timers = [t for t in app._timers if t.name == "poll" and t._active.is_set()]
        assert len(timers) <= 1
        # a poll slowed by a loaded machine may stretch the pace for a while; the fast polls
        # that follow bring it back to the configured one (the presses never stretch it)
        await wait_until(pilot, lambda: not app.pace.stretched, what="the configured pace")
        assert poller.most_at_once == 1
