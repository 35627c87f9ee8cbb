"""End to end: the real TUI on the real demo process, through the real agent socket."""

from __future__ import annotations

from typing import Iterator

import pytest

from cpinspect.demo.load import SECRET_AUTH, SECRET_COOKIE, SECRET_TOKEN
from cpinspect.demo.runner import DemoProcesses
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.log_panel import LogPanel
from cpinspect.tui.widgets.pool_bar import PoolBar
from cpinspect.tui.widgets.stack_view import StackView
from cpinspect.tui.widgets.threads_table import ThreadsTable

from .helpers import real_app, wait_until


@pytest.fixture
def demo() -> Iterator[DemoProcesses]:
    with DemoProcesses(threads=6) as processes:
        yield processes


def column(app: InspectorApp, key: str) -> list[str]:
    t = app.query_one(ThreadsTable)
    return [t.cell_text(row, key) for row in range(len(t.row_keys))]


async def test_the_inspector_shows_the_staged_incident(demo):
    # GIVEN the demo app with its incident under way, and the inspector attached to it
    app = real_app(demo)
    async with app.run_test(size=(120, 34)) as pilot:
        # WHEN the first polls arrive
        def saturated() -> bool:
            snap = app.store.threads
            return bool(snap and snap.pools and snap.pools[0].busy == 6 and snap.pools[0].queued)

        await wait_until(pilot, saturated, timeout=20, what="the pool saturated on screen")
        await wait_until(
            pilot,
            lambda: (
                any("/reports/export" in r for r in column(app, "request"))
                and any("/cart/add" in r for r in column(app, "request"))
            ),
            timeout=10,
            what="the blocked requests in the table",
        )
        await pilot.pause()

        # THEN the pool bar says saturated, and the rows name the blocked requests
        assert "saturated" in str(app.query_one(PoolBar).render())
        requests = column(app, "request")
        assert len(requests) == 6
        assert any("/upload" in r for r in requests)

        # WHEN the export row is selected
        table = app.query_one(ThreadsTable)
        row = next(i for i, r in enumerate(column(app, "request")) if "/reports/export" in r)
        table.move_cursor(row=row)
        stack = app.query_one(StackView)
        await wait_until(
            pilot,
            lambda: "recv" in stack.plain,
            timeout=10,
            what="the source line of the blocking recv",
        )
        await pilot.pause()

        # THEN the full request line (the table's column is too narrow for it at 120 columns)
        # is on screen with its token redacted, and no secret the requests carry is anywhere
        screen = app.export_screenshot()
        assert "token=***" in screen
        for secret in (SECRET_TOKEN, SECRET_COOKIE, SECRET_AUTH):
            assert secret not in screen

        # THEN the stack shows the app frames with their source lines, innermost first
        frames = stack.plain.split("innermost first", 1)[1]
        assert "db.py:80" in frames and "chunk = self._sock.recv(" in frames
        assert frames.index("fetch_all") < frames.index("Reports.export")

        # WHEN the stacks are grouped
        await pilot.press("g")
        await pilot.pause()
        # THEN the largest group comes first and says how many threads share it
        counts = [int(c.strip() or 0) for c in column(app, "count")]
        assert counts == sorted(counts, reverse=True) and sum(counts) == 6

        # WHEN the Log tab is shown, searched for the failing coupon and narrowed to errors
        await pilot.press("4")
        log = app.query_one(LogPanel)
        await wait_until(
            pilot,
            lambda: any("KeyError: 'WINTER'" in line for line in log.view.lines_text()),
            timeout=20,
            what="the demo's failing handler in the Log tab",
        )
        await pilot.press("slash", *"WINTER", "enter", "l", "l", "home", "enter")
        await pilot.pause()
        # THEN the error is one record tagged with its request, its traceback whole when opened
        shown = log.view.lines_text()
        assert "ERROR    GET /products/price?sku=CUP-010&coupon=WINTER" in shown[0]
        assert any("in discounted" in line for line in shown)
        source = next(line for line in shown if line.startswith("    — "))
        assert source.startswith("    — cherrypy.error") and "thread CP Server Thread-" in source
        # AND the access record of its 500 is there too (all records, filters cleared)
        await pilot.press("escape", "x")
        await pilot.pause()
        assert any("500      GET /products/price" in line for line in log.view.lines_text())

        await pilot.press("q")
