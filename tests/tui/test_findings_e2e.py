"""End to end: the real TUI attached to a real CherryPy process whose pool is starved (the
``tests/apps/incidents.py`` export waiting on a database that never answers): the strip names
the starvation, and ``f`` then enter lands on one of the starved workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.screens.findings import FindingsScreen
from cpinspect.tui.widgets.findings_strip import FindingsStrip
from tests.helpers import BackgroundRequests, spawn_ready

from .helpers import wait_until

WORKERS = 3


@pytest.fixture
def starved(tmp_path: Path) -> Iterator[Tuple[int, int, Path]]:
    """The incidents app on 3 workers, 5 requests to the hanging export: 3 busy, 2 queued.
    Released (the release file) before the process is stopped."""
    release = tmp_path / "release"
    args = ["-m", "tests.apps.incidents", "--threads", str(WORKERS)]
    args += ["--static-dir", str(tmp_path / "static"), "--release-file", str(release)]
    with spawn_ready(args, tmp_path / "app.log", "incidents app") as m:
        port, pid = int(m.group(1)), int(m.group(2))
        BackgroundRequests(port, "/reports/export?seconds=30", WORKERS + 2, timeout=40)
        try:
            yield port, pid, release
        finally:
            release.touch()


async def test_the_strip_names_a_real_starved_pool_and_enter_shows_a_worker(starved) -> None:
    port, pid, _ = starved
    source = AgentSource(find_agent(pid).connect_path)
    session = AgentSession(source, source.info(), pid=pid)
    app = InspectorApp(session, interval=0.5, source_lines=SourceLines(pid), clock=time.time)
    async with app.run_test(size=(100, 30)) as pilot:
        strip = app.query_one(FindingsStrip)
        # WHEN the polls show the pool full with connections queued
        await wait_until(
            pilot,
            lambda: any(f.id.startswith("pool-starvation:") for f in app.store.findings),
            timeout=30,
            what="the starvation finding",
        )
        await pilot.pause()
        # THEN the strip's first line is the critical starvation, naming the route and frame
        first = strip.lines_text[0]
        assert first.startswith("✖ %d of %d workers are in GET /reports/export" % (3, 3))
        assert "fetch_all" in first
        starved_id = next(f.id for f in app.store.findings if f.id.startswith("pool-starv"))
        assert starved_id == "pool-starvation:127.0.0.1:%d" % port
        assert app.store.finding_since(starved_id) is not None
        # WHEN f then enter (on the finding's line: its first evidence, a starved worker)
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, FindingsScreen))
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, FindingsScreen))
        await pilot.pause()
        # THEN the Threads tab shows that worker, in the export
        assert app.tabs.active == "threads"
        thread = app.threads_panel.selected_thread
        assert thread is not None and thread.request is not None
        assert thread.request.path == "/reports/export"
