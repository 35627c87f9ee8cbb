"""The findings on the first screen: the strip under the pool bar, the list (``f``) and the
jumps from a finding's evidence to its tab, driven with Pilot on the scripted poller.

The strip and the list are shown on the real findings engine (``find_all``) over the fakes'
incident; the jumps use scripted findings (``Store(find=…)``), one per kind of evidence,
because no single fake incident carries a route, a static mount, a session, a log record and
a config key at once — the jump is the App's, whichever family names the evidence.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import pytest

from cpinspect.model import Evidence, Finding, FindingSeverity, LogRecord, Snapshot
from cpinspect.sources.base import Capability
from cpinspect.tui.screens.findings import FindingsScreen
from cpinspect.tui.store import Store
from cpinspect.tui.widgets.findings_strip import FindingsStrip
from cpinspect.tui.widgets.log_panel import LogPanel
from cpinspect.tui.widgets.routes_panel import RoutesPanel
from cpinspect.tui.widgets.sessions_panel import SessionsPanel
from cpinspect.tui.widgets.threads_table import ThreadsTable

from .fakes import (
    LOCKED_FP,
    FakePoller,
    incident_update,
    log_records,
    log_update,
    pool,
    snapshot,
    update,
    worker,
)
from .helpers import first_data, make_app, wait_until


def healthy_update():  # type: ignore[no-untyped-def]
    """A quiet pool: two fast requests running, the rest idle, nothing queued."""
    threads = [
        worker(1, 0.02, "/index", handler="Root.index"),
        worker(2, 0.01, "/cart/view", handler="Cart.view"),
        *(worker(n, None) for n in range(3, 9)),
    ]
    return update(snapshot(threads, pools=[pool(size=8, busy=2, queued=0)]))


def scripted(findings: Sequence[Finding]) -> Store:
    """A store whose findings are these, whatever the data (the jumps' tests)."""

    def find(snap: Snapshot, history: Sequence[Snapshot]) -> Tuple[Finding, ...]:
        return tuple(findings)

    return Store(find=find)


def finding(
    severity: FindingSeverity, fid: str, title: str, *evidence: Evidence, fix: str = ""
) -> Finding:
    return Finding(
        id=fid,
        severity=severity,
        title=title,
        evidence=tuple(evidence),
        fix=fix,
        kind=fid.split(":")[0],
    )


THREAD_1 = 140_000_000_000_001
"""``CP Server Thread-1`` of the fakes' incident."""

EVERY_KIND = (
    finding(
        FindingSeverity.CRITICAL,
        "pool-starvation:127.0.0.1:8080",
        "8 of 10 workers are in GET /reports/export — the pool is starved",
        Evidence("thread", str(THREAD_1), "CP Server Thread-1  GET /reports/export  48.2 s"),
        fix="bound the query with a timeout",
    ),
    finding(
        FindingSeverity.WARNING,
        "forgotten-expose:|/admin/users",
        "3 requests ended 404 on /admin/users: Admin.users is not exposed",
        Evidence("route", "|/admin/users", "route /admin/users → shop.admin.Admin.users"),
        Evidence("log", "6", "GET /missing 404"),
        fix="add @cherrypy.expose to Admin.users",
    ),
    finding(
        FindingSeverity.WARNING,
        "static-relative:|/static",
        "/static serves a relative directory without tools.staticdir.root",
        Evidence("static", "|/static", "staticdir /static → static"),
    ),
    finding(
        FindingSeverity.CRITICAL,
        "session-lock::" + LOCKED_FP,
        "session %s held 31.0 s by POST /cart/add, 2 requests wait" % LOCKED_FP,
        Evidence("session", "|" + LOCKED_FP, "session %s" % LOCKED_FP),
    ),
    finding(
        FindingSeverity.INFO,
        "autoreload-on",
        "the Autoreloader is on",
        Evidence("config", "engine.autoreload.on", "engine.autoreload.on = True"),
    ),
)


# --- the strip ---------------------------------------------------------------------------------


async def test_strip_names_the_starvation_from_the_real_engine() -> None:
    # GIVEN the incident: 10 of 10 workers busy, 8 in GET /reports/export, 17 queued
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        strip = app.query_one(FindingsStrip)
        # THEN the strip under the pool bar shows the critical finding, its glyph first
        assert strip.display
        assert strip.lines_text[0].startswith("✖ ")
        assert "GET /reports/export" in strip.lines_text[0]
        assert "starved" in strip.lines_text[0]
        # AND it is the store's finding, with the time it was first seen
        assert app.store.findings[0].id == "pool-starvation:127.0.0.1:8080"
        assert app.store.finding_since("pool-starvation:127.0.0.1:8080") is not None


async def test_strip_hidden_when_healthy_and_takes_no_line() -> None:
    # GIVEN a healthy pool (two fast requests, six idle workers, nothing queued), and a session
    # that reads no routes or sessions (the fakes' have a relative static dir and a held lock)
    poller = FakePoller([healthy_update()])
    poller.capabilities -= {Capability.ROUTES, Capability.SESSIONS}
    app = make_app(poller)
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        strip = app.query_one(FindingsStrip)
        # THEN no finding, and the strip takes no line ("no findings" is not said there)
        assert app.store.findings == ()
        assert not strip.display
        assert strip.region.height == 0


async def test_strip_most_severe_first_at_most_three_then_more() -> None:
    # GIVEN five findings given out of order (warnings, an info and two criticals)
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND[1:] + EVERY_KIND[:1])
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        lines = app.query_one(FindingsStrip).lines_text
        # THEN the two critical ones lead, then a warning, then the count of the rest
        assert [line[0] for line in lines[:3]] == ["✖", "✖", "⚠"]
        assert lines[3] == "+2 more — f lists them"
        assert len(lines) == 4
        # AND at 80x24 the table still shows rows under the strip
        assert app.query_one(ThreadsTable).region.height >= 5


async def test_no_color_keeps_the_severity_in_the_glyph(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN NO_COLOR and the incident
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # THEN the strip renders without colour and the glyph still says "critical"
        assert app.no_color
        strip = app.query_one(FindingsStrip)
        assert strip.lines_text[0].startswith("✖ ")
        assert "✖" in str(strip.render())


# --- the list and the jumps --------------------------------------------------------------------


async def test_f_lists_every_finding_with_evidence_and_fix() -> None:
    # GIVEN the incident, on the real engine
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN f is pressed
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, FindingsScreen), what="the list")
        screen = app.screen
        assert isinstance(screen, FindingsScreen)
        await pilot.pause()
        lines = screen.list.plain
        # THEN the finding's line, then one line per evidence item (its threads)
        assert "CRITICAL" in lines[0] and "starved" in lines[0]
        assert any("CP Server Thread-1" in line and "thread" in line for line in lines[1:])
        # AND the pane shows its details and its fix
        assert "fix: " in screen.detail_text
        assert "10 workers, 10 busy, 17 queued" in screen.detail_text
        # WHEN escape is pressed THEN the list closes
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, FindingsScreen))


async def open_list_on(pilot, app, index: int) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(app.screen, FindingsScreen), what="the list")
    await pilot.pause()
    screen = app.screen
    screen.list.highlighted = index
    await pilot.pause()
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(app.screen, FindingsScreen), what="the jump")
    await pilot.pause()


def row_of(app, kind: str, ref: str) -> int:  # type: ignore[no-untyped-def]
    """The list's line of the evidence ``kind``/``ref`` (the order EVERY_KIND gives)."""
    n = 0
    for f in EVERY_KIND:
        n += 1
        for e in f.evidence:
            if (e.kind, e.ref) == (kind, ref):
                return n
            n += 1
    raise AssertionError((kind, ref))


async def test_enter_on_a_thread_shows_it_in_the_threads_tab() -> None:
    # GIVEN the list, the cursor on a thread of the starvation
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("2")  # somewhere else first
        await pilot.pause()
        # WHEN enter is pressed on it
        await open_list_on(pilot, app, row_of(app, "thread", str(THREAD_1)))
        # THEN the Threads tab shows, that thread selected
        assert app.tabs.active == "threads"
        selected = app.threads_panel.selected_thread
        assert selected is not None and selected.ident == THREAD_1


async def test_enter_on_a_finding_line_jumps_to_its_first_evidence() -> None:
    # GIVEN the list, the cursor on the starvation's own line
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("2")
        await pilot.pause()
        await open_list_on(pilot, app, 0)
        # THEN its first evidence, the thread, is shown
        assert app.tabs.active == "threads"
        selected = app.threads_panel.selected_thread
        assert selected is not None and selected.ident == THREAD_1


async def test_enter_on_a_route_selects_its_node_in_the_routes_tab() -> None:
    # GIVEN the routes not read yet (they are read when the tab is first shown)
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN enter is pressed on the route /admin/users
        await open_list_on(pilot, app, row_of(app, "route", "|/admin/users"))
        routes = app.query_one(RoutesPanel)
        await wait_until(pilot, lambda: routes.loads >= 1, what="the routes")
        await pilot.pause()
        # THEN the Routes tab shows, the cursor on that node (its branch opened)
        assert app.tabs.active == "routes"
        node = routes.routes_tree.cursor_node
        assert node is not None and node.data is not None and node.data.node is not None
        assert node.data.node.path == "/admin/users"
        assert "shop.admin.Admin.users" in routes.details_text


async def test_enter_on_a_static_mount_and_on_config_lands_in_the_routes_tab() -> None:
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN enter is pressed on the static mount
        await open_list_on(pilot, app, row_of(app, "static", "|/static"))
        routes = app.query_one(RoutesPanel)
        await wait_until(pilot, lambda: routes.loads >= 1, what="the routes")
        await pilot.pause()
        # THEN the cursor is on the mount /static
        node = routes.routes_tree.cursor_node
        assert node is not None and node.data is not None and node.data.mount is not None
        assert node.data.mount.path == "/static"
        # WHEN enter is pressed on the config key
        await pilot.press("1")
        await open_list_on(pilot, app, row_of(app, "config", "engine.autoreload.on"))
        # THEN the Routes tab shows on the root app
        assert app.tabs.active == "routes"
        node = routes.routes_tree.cursor_node
        assert node is not None and node.data is not None and node.data.node is None


async def test_enter_on_a_session_selects_it_in_the_sessions_tab() -> None:
    app = make_app(FakePoller([incident_update()]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN enter is pressed on the locked session
        await open_list_on(pilot, app, row_of(app, "session", "|" + LOCKED_FP))
        panel = app.query_one(SessionsPanel)
        await wait_until(
            pilot,
            lambda: panel.selected is not None and panel.selected.fp == LOCKED_FP,
            what="the session selected",
        )
        # THEN the Sessions tab shows, the cursor on that session
        assert app.tabs.active == "sessions"


async def test_enter_on_a_log_record_puts_the_log_cursor_on_it() -> None:
    # GIVEN the incident's log records (seq 1..8), the Log tab following the newest
    app = make_app(FakePoller([log_update(log_records())]))
    app.store = scripted(EVERY_KIND)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN enter is pressed on the record seq 6 (GET /missing 404)
        await open_list_on(pilot, app, row_of(app, "log", "6"))
        # THEN the Log tab shows with the cursor on it, following stopped
        assert app.tabs.active == "log"
        selected = app.query_one(LogPanel).view.selected
        assert isinstance(selected, LogRecord) and selected.seq == 6
        assert not app.query_one(LogPanel).view.follow
