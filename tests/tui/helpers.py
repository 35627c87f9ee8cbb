"""Pilot helpers: the app on a fake poller or the real demo, what the table and the routes tree
show, waiting with deadlines."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from cpinspect.attach.discovery import find_agent
from cpinspect.demo.runner import DemoProcesses
from cpinspect.model import ThreadInfo
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.routes_panel import RouteItem, RoutesPanel
from cpinspect.tui.widgets.threads_table import ThreadsTable

from .fakes import NOW, SOURCE, FakeLines, FakePoller


def make_app(poller: FakePoller, **kwargs: object) -> InspectorApp:
    """The app as the CLI builds it, with a fixed clock and no timer-driven polls."""
    options: Dict[str, Any] = {
        "interval": 3600.0,
        "source_lines": FakeLines(SOURCE),
        "clock": lambda: NOW,
    }
    options.update(kwargs)
    return InspectorApp(poller, **options)


def real_app(demo: DemoProcesses) -> InspectorApp:
    """The app as ``cpinspect attach`` builds it on the real demo, through the agent socket."""
    source = AgentSource(find_agent(demo.pid).connect_path)
    session = AgentSession(source, source.info(), pid=demo.pid)
    return InspectorApp(session, interval=0.5, source_lines=SourceLines(demo.pid), clock=time.time)


def table(app: InspectorApp) -> ThreadsTable:
    return app.query_one(ThreadsTable)


def column(app: InspectorApp, key: str) -> List[str]:
    """The plain text of one column, top to bottom."""
    t = table(app)
    return [t.cell_text(row, key) for row in range(len(t.row_keys))]


def names(app: InspectorApp) -> List[str]:
    """Thread names in display order (thread rows only)."""
    t = table(app)
    selections = [t.object_at(k) for k in t.row_keys]
    return [s.name for s in selections if isinstance(s, ThreadInfo)]


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
    # The first update starts the reads for the findings (routes, sessions) in workers: the
    # first screen is the one with their findings (a loaded machine answered a snapshot test's
    # next poll before them, and its screen had no findings strip).
    await wait_until(
        pilot,
        lambda: app.updates_applied == 0 or not any(p.reading for p in app.store.parts.values()),
        what="the reads at start",
    )
    await settled(pilot)
    return app


def _layout_pending(app: InspectorApp) -> bool:
    screen = app.screen
    if screen._layout_required:
        return True
    return any(w._layout_required for w in screen.walk_children())


async def settled(pilot: Pilot[Any]) -> None:
    """Let the app lay out what its last messages changed (a findings strip that grew a line
    asks for a layout, which Textual runs on its update timer: on a loaded machine a screenshot
    taken right after ``pause()`` once showed the strip at its old height)."""
    app = pilot.app
    assert isinstance(app, InspectorApp)
    await pilot.pause()
    await wait_until(pilot, lambda: not _layout_pending(app), timeout=5.0, what="the layout")
    await pilot.pause()


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
    await settled(pilot)


def _more_than(app: InspectorApp, received: int) -> Callable[[], bool]:
    return lambda: app.polls_received > received


# --- the Routes tab ----------------------------------------------------------------------------


def labels(node: TreeNode[RouteItem]) -> List[str]:
    """The plain labels of a tree node's children."""
    return [child.label.plain for child in node.children]


def find(node: TreeNode[RouteItem], prefix: str) -> TreeNode[RouteItem]:
    """The first child whose label starts with ``prefix``."""
    for child in node.children:
        if child.label.plain.startswith(prefix):
            return child
    raise AssertionError(f"no child starting {prefix!r} in {labels(node)}")


async def open_routes(pilot: Pilot[Any]) -> RoutesPanel:
    """Press ``2`` and wait for the routes to arrive."""
    app = await first_data(pilot)
    await pilot.press("2")
    routes = app.query_one(RoutesPanel)
    await wait_until(pilot, lambda: routes.loads >= 1, what="the routes")
    await pilot.pause()
    return routes


async def expand(pilot: Pilot[Any], node: TreeNode[RouteItem], key: str = "space") -> None:
    """Put the cursor on ``node`` and press ``key`` (space toggles, enter selects and opens)."""
    pilot.app.query_one(RoutesPanel).routes_tree.move_cursor(node)
    await pilot.press(key)
    await pilot.pause()


async def resolve(pilot: Pilot[Any], query: str) -> str:
    """Open the resolve box, type ``query``, press enter and wait for the verdict."""
    routes = pilot.app.query_one(RoutesPanel)
    before = routes.resolves
    await pilot.press("r")
    routes.resolve_input.value = ""
    await pilot.press(*query, "enter")
    await wait_until(pilot, lambda: routes.resolves > before, what="the verdict")
    await pilot.pause()
    return routes.result_text
