"""Pilot helpers: wait on conditions with deadlines, poll like a user pressing ``r``."""

from __future__ import annotations

import time
from typing import Any, Callable

from textual.pilot import Pilot

from cpinspect.tui.app import InspectorApp


async def wait_until(
    pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> None:
    """Let the app run until ``predicate()`` is true; fail at the deadline, never sleep blind."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.01)


async def first_data(pilot: Pilot[Any]) -> InspectorApp:
    """Wait for the poll that runs at start-up to reach the screen."""
    app = pilot.app
    assert isinstance(app, InspectorApp)
    await wait_until(pilot, lambda: app.polls_received >= 1, what="the first poll")
    await pilot.pause()
    return app


async def poll(pilot: Pilot[Any], times: int = 1, key: bool = True) -> None:
    """Press ``r`` (poll now) and wait for each result, as a user refreshing would.

    With ``key=False`` the poll is started as the interval timer would (``r`` does not reach
    the app under a modal screen).
    """
    app = pilot.app
    assert isinstance(app, InspectorApp)
    for _ in range(times):
        await wait_until(pilot, lambda: not app.poll_in_flight, what="the previous poll")
        received = app.polls_received
        if key:
            await pilot.press("r")
        else:
            app.poll_now()
        await wait_until(pilot, _more_than(app, received), what="a poll")
    await pilot.pause()


def _more_than(app: InspectorApp, received: int) -> Callable[[], bool]:
    return lambda: app.polls_received > received
