"""The inspector driven like a person: real Textual (``run_test`` + Pilot) on a scripted poller."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Dict

import pytest
from textual.widgets import TabbedContent

from cpinspect.model import Frame, Phase, Role
from cpinspect.sources.base import LinkState, Update
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.messages import ShowThread
from cpinspect.tui.screens.help import HelpScreen
from cpinspect.tui.widgets import banner as banner_module
from cpinspect.tui.widgets.banner import Banner
from cpinspect.tui.widgets.header_bar import HeaderBar
from cpinspect.tui.widgets.pool_bar import PoolBar
from cpinspect.tui.widgets.stack_view import StackView
from cpinspect.tui.widgets.threads_panel import ThreadsPanel
from cpinspect.tui.widgets.threads_table import ThreadsTable

from .fakes import (
    EXPORT_STACK,
    NOW,
    T0,
    FakePoller,
    incident_update,
    other_threads,
    pool,
    snapshot,
    update,
    worker,
)
from .helpers import column, first_data, make_app, names, poll, table, wait_until


def mixed_update(taken_at: float = T0) -> Update:
    """Four busy workers, three idle ones and three non-worker threads."""
    threads = [
        worker(1, 12.0, "/slow?token=***", stack=EXPORT_STACK, handler="Reports.export"),
        worker(2, 48.2, "/reports/export", stack=EXPORT_STACK, handler="Reports.export"),
        worker(3, 3.5, "/cart/add", method="POST", handler="Cart.add"),
        worker(4, 30.6, "/upload", method="POST", phase=Phase.READING),
        worker(5, None),
        worker(6, None),
        worker(7, None),
        *other_threads(),
    ]
    return update(snapshot(threads, taken_at=taken_at, pools=[pool(busy=4, queued=0)]))


# --- order and views ---------------------------------------------------------------------------


async def test_busy_workers_come_first_longest_running_first() -> None:
    # GIVEN workers busy for 12.0, 48.2, 3.5 and 30.6 seconds and three idle ones
    app = make_app(FakePoller([mixed_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        # WHEN the first poll reaches the screen
        await first_data(pilot)
        # THEN the longest-running request is on top, busy before idle, idle last
        assert column(app, "elapsed")[:4] == ["48.2 s", "30.6 s", "12.0 s", "3.5 s"]
        assert column(app, "state")[:4] == ["● busy", "◔ read", "● busy", "● busy"]
        assert column(app, "state")[4:] == ["○ idle"] * 3
        assert column(app, "request")[0] == "GET /reports/export"
        assert column(app, "request")[1] == "POST /upload  (reading body)"


async def test_the_gil_holder_is_listed_first() -> None:
    # GIVEN py-spy says a short request's thread holds the GIL
    base = mixed_update()
    assert base.threads is not None
    threads = [
        replace(t, owns_gil=True) if t.name == "CP Server Thread-3" else t
        for t in base.threads.threads
    ]
    app = make_app(FakePoller([update(snapshot(threads))]))
    async with app.run_test(size=(120, 40)) as pilot:
        # WHEN it is shown
        await first_data(pilot)
        # THEN it comes first, marked in words as well as colour
        assert names(app)[0] == "CP Server Thread-3"
        assert column(app, "state")[0] == "● busy GIL"


async def test_b_w_a_switch_between_busy_workers_and_all_threads() -> None:
    # GIVEN four busy workers, three idle ones and three other threads
    app = make_app(FakePoller([mixed_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN workers are listed by default
        assert len(table(app).row_keys) == 7
        # WHEN b is pressed THEN only the busy workers remain
        await pilot.press("b")
        assert len(table(app).row_keys) == 4
        assert all(s.startswith(("●", "◔")) for s in column(app, "state"))
        # WHEN a is pressed THEN every thread shows, with its role
        await pilot.press("a")
        assert len(table(app).row_keys) == 10
        assert set(column(app, "role")) == {"worker", "main", "acceptor", "agent"}
        assert "MainThread" in column(app, "name")
        # WHEN w is pressed THEN back to the workers, without the role column
        await pilot.press("w")
        assert len(table(app).row_keys) == 7
        assert "role" not in table(app).column_keys
        # AND the tab says which view is on
        tabs = app.query_one("#tabs", TabbedContent)
        assert "Workers (7)" in str(tabs.get_tab("threads").label)


async def test_g_groups_identical_stacks_largest_group_first() -> None:
    # GIVEN eight export requests in one stack (two frames named differently, same file:line),
    # one on the cart lock and one reading an upload
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        panel = app.query_one(ThreadsPanel)
        # THEN the line above the table already names the shared stack
        assert panel.summary_text.startswith("8 threads share this stack: ")
        assert "db.py:41 fetch_all ← reports.py:88 export" in panel.summary_text
        # WHEN g is pressed
        await pilot.press("g")
        # THEN there is one row per stack, the biggest group first
        assert column(app, "count") == ["8", "1", "1"]
        assert column(app, "state")[0] == "● 8 busy"
        assert column(app, "oldest")[0] == "48.2 s"
        assert "db.py:41 fetch_all" in column(app, "stack")[0]
        # AND the stack pane shows the group's stack
        assert "8 threads share this stack" in app.query_one(StackView).plain
        # WHEN g is pressed again THEN one row per thread again
        await pilot.press("g")
        assert len(table(app).row_keys) == 10


async def test_selection_stays_on_the_same_thread_when_rows_reorder() -> None:
    # GIVEN the inspector showing the incident, the cursor moved to the third row
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("down", "down")
        chosen = names(app)[2]
        assert chosen == "CP Server Thread-3"
        # WHEN the next poll makes that thread the longest-running one
        base = incident_update()
        assert base.threads is not None
        threads = tuple(
            replace(t, elapsed=99.0) if t.name == chosen else t for t in base.threads.threads
        )
        poller.set(update(replace(base.threads, threads=threads, taken_at=T0 + 1)))
        await poll(pilot)
        # THEN it moved to the top and the cursor moved with it
        assert names(app)[0] == chosen
        assert table(app).cursor_row == 0
        assert app.query_one(StackView).plain.startswith(chosen)


# --- pause -------------------------------------------------------------------------------------


async def test_space_freezes_the_rows_and_space_again_applies_the_newest() -> None:
    # GIVEN the incident on screen
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        before = column(app, "elapsed")
        # WHEN space pauses, and the target moves on while polls continue
        await pilot.press("space")
        calm = update(snapshot([worker(1, 0.2, "/health"), worker(2, None)], taken_at=T0 + 5))
        poller.set(calm)
        await poll(pilot, times=2)
        # THEN the rows have not changed and the header says paused
        assert column(app, "elapsed") == before
        assert "⏸ paused" in app.query_one(HeaderBar).render().plain
        assert "paused" in app.query_one(ThreadsPanel).summary_text
        assert poller.polls >= 3
        # WHEN space is pressed again
        await pilot.press("space")
        # THEN the newest data shows at once
        assert column(app, "request") == ["GET /health", ""]
        assert "● live" in app.query_one(HeaderBar).render().plain


# --- the stack pane ----------------------------------------------------------------------------


def write_source(directory: Path, name: str, lines: Dict[int, str]) -> str:
    path = directory / name
    body = [f"# line {n}" for n in range(1, max(lines) + 1)]
    for number, text in lines.items():
        body[number - 1] = text
    path.write_text("\n".join(body) + "\n")
    return str(path)


async def test_the_stack_pane_shows_the_selected_threads_frames_and_source(
    tmp_path: Path,
) -> None:
    # GIVEN real source files and two busy workers with different stacks
    db = write_source(tmp_path, "db.py", {41: "    return cur.fetchall()  # slow query"})
    reports = write_source(tmp_path, "reports.py", {88: "    rows = db.fetch_all(sql)"})
    cart = write_source(tmp_path, "cart.py", {30: "    with CART_LOCK:"})
    export_stack = (
        Frame("/usr/lib/python3/dist-packages/psycopg2/extras.py", 146, "execute"),
        Frame(db, 41, "fetch_all", "Database.fetch_all", is_app=True),
        Frame(reports, 88, "export", "Reports.export", is_app=True),
        Frame("/usr/lib/python3/dist-packages/cherrypy/_cprequest.py", 659, "respond"),
        Frame("/usr/lib/python3/dist-packages/cheroot/server.py", 1290, "communicate"),
        Frame("/usr/lib/python3.11/threading.py", 1038, "_bootstrap_inner"),
    )
    cart_stack = (Frame(cart, 30, "add", "Cart.add", is_app=True), *export_stack[3:])
    threads = [
        worker(1, 48.2, "/reports/export?year=2025", stack=export_stack, handler="Reports.export"),
        worker(2, 31.0, "/cart/add", method="POST", stack=cart_stack, handler="Cart.add"),
    ]
    app = make_app(FakePoller([update(snapshot(threads))]), source_lines=SourceLines(None))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        view = app.query_one(StackView)
        # WHEN the first row is selected (it is, at start)
        # THEN its frames show innermost first, app frames with their source line (read by a
        # worker thread, so wait for it)
        await wait_until(pilot, lambda: "# slow query" in view.plain, what="source lines")
        text = view.plain
        assert text.startswith("CP Server Thread-1")
        assert "GET /reports/export?year=2025" in text
        order = [
            text.index("lib  extras.py:146  execute"),
            text.index("app  db.py:41  Database.fetch_all"),
            text.index("return cur.fetchall()  # slow query"),
            text.index("app  reports.py:88  Reports.export"),
            text.index("rows = db.fetch_all(sql)"),
            text.index("lib  … 3 library frames"),
        ]
        assert order == sorted(order)
        assert "client   10.0.0.1  (peer 127.0.0.1:51001)" in text
        assert "handler  Reports.export" in text
        # WHEN l is pressed THEN the library frames unfold
        await pilot.press("l")
        assert "lib  threading.py:1038  _bootstrap_inner" in view.plain
        # WHEN the cursor moves to the second thread
        await pilot.press("down")
        # THEN its stack replaces the first one
        await wait_until(pilot, lambda: "with CART_LOCK:" in view.plain, what="cart source")
        assert view.plain.startswith("CP Server Thread-2")
        assert "app  cart.py:30  Cart.add" in view.plain
        assert "reports.py" not in view.plain


# --- trouble -----------------------------------------------------------------------------------


async def test_a_lost_target_shows_a_banner_and_keeps_the_last_data() -> None:
    # GIVEN the incident on screen
    live = incident_update()
    poller = FakePoller([live])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        rows = column(app, "request")
        banner = app.query_one(Banner)
        assert not banner.display
        # WHEN the target exits (the poller keeps the last good data)
        message = "target exited — showing last data; reconnecting…"
        poller.set(replace(live, state=LinkState.LOST, message=message, fetched_at=T0 - 30))
        await poll(pilot)
        # THEN a red banner says so, the header says lost, and the rows are still there
        assert banner.display
        assert banner.plain == f"✖ {message}"
        assert banner.has_class("-error")
        assert "✖ lost" in app.query_one(HeaderBar).render().plain
        assert "30.4 s ago" in app.query_one(HeaderBar).render().plain
        assert column(app, "request") == rows
        assert app.query_one(ThreadsPanel).has_class("-stale")
        # WHEN it comes back as a new pid of the same service
        back = replace(live, state=LinkState.RECONNECTED, message="reconnected to pid 4250")
        poller.set(back)
        await poll(pilot)
        # THEN the banner says that instead, as good news
        assert banner.plain == "↻ reconnected to pid 4250"
        assert banner.has_class("-info")
        assert not app.query_one(ThreadsPanel).has_class("-stale")


async def test_a_poll_that_raises_is_shown_and_the_app_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a poller that answers once, then fails, then answers again (a banner that just
    # grew keeps its height for FLAP_HOLD seconds after its lines go: shortened here)
    monkeypatch.setattr(banner_module, "FLAP_HOLD", 0.5)
    poller = FakePoller([incident_update(), OSError("agent socket timed out"), incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        rows = column(app, "request")
        # WHEN the next poll raises
        await poll(pilot)
        # THEN the banner names the error, the last data stays and the app goes on
        banner = app.query_one(Banner)
        assert banner.plain == (
            "✖ poll failed: OSError: agent socket timed out — showing the last data"
        )
        assert "✖ error" in app.query_one(HeaderBar).render().plain
        assert column(app, "request") == rows
        assert app.is_running
        # WHEN the following poll succeeds THEN the banner says nothing at once, its row held
        # blank for a moment (the error may come back at the next poll), then goes away
        await poll(pilot)
        assert banner.plain == "" and not banner.has_class("-error")
        await wait_until(pilot, lambda: not banner.display, timeout=5.0)


async def test_the_first_poll_failing_leaves_a_usable_empty_screen() -> None:
    # GIVEN a poller that fails from the start
    app = make_app(FakePoller([RuntimeError("boom")]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # THEN the banner explains, the table is empty and keys still work
        assert app.query_one(Banner).plain == "✖ poll failed: RuntimeError: boom"
        assert table(app).row_keys == []
        await pilot.press("g", "a", "b", "space", "space")
        assert app.is_running


async def test_warnings_and_probe_errors_are_listed_in_the_banner() -> None:
    # GIVEN an agent of another version and a probe that failed
    snap = snapshot([worker(1, 2.0, "/")], errors=("sessions: KeyError 'x'",))
    poller = FakePoller([update(snap, warnings=("agent 0.2.0 is newer than this inspector",))])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN both show, as warnings
        banner = app.query_one(Banner)
        assert banner.plain.splitlines() == [
            "⚠ agent 0.2.0 is newer than this inspector",
            "⚠ probe failed: sessions: KeyError 'x'",
        ]
        assert banner.has_class("-warning")


# --- header and pool bar -----------------------------------------------------------------------


async def test_the_header_names_the_target_and_the_age_of_the_data() -> None:
    # GIVEN a clock that the test moves
    now = [NOW]
    app = make_app(FakePoller([incident_update()]), clock=lambda: now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        header = app.query_one(HeaderBar)
        text = header.render().plain
        # THEN who, what and how fresh
        for part in ("pid 4121 shop.py", "CherryPy 18.10.0", "engine STARTED", "agent /run/user"):
            assert part in text
        assert text.rstrip().endswith("● live  0.4 s ago")
        # WHEN five seconds pass without new data THEN the age follows within a second
        now[0] = T0 + 5.0
        await wait_until(pilot, lambda: "5.0 s ago" in header.render().plain, timeout=3)


class _StampedPoller(FakePoller):
    """Each poll's update fetched now (the real clock), as a live session's is."""

    def poll(self) -> Update:
        return replace(super().poll(), fetched_at=time.time())


async def test_the_age_moves_between_polls_at_one_hertz() -> None:
    # GIVEN the app polling once a second on the real clock
    app = make_app(_StampedPoller([incident_update()]), interval=1.0, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        header = app.query_one(HeaderBar)
        seen = set()
        # WHEN three seconds of polls pass
        for _ in range(30):
            await pilot.pause(0.1)
            seen.add(header.render().plain.rstrip().rpartition("live  ")[2])
        # THEN the header also showed the age half-way between two polls, not only the fresh
        # "0.0 s ago" of each poll (Textual's Timer.reset() had put its one repaint just
        # before the next poll)
        assert any(a in seen for a in ("0.4 s ago", "0.5 s ago", "0.6 s ago", "0.7 s ago")), seen


async def test_the_pool_bar_shows_saturation_history_and_rate() -> None:
    # GIVEN twelve polls while the pool fills up, 5 requests served per second
    from .fakes import build_up

    poller = FakePoller(build_up())
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await poll(pilot, times=11)
        text = app.query_one(PoolBar).render().plain
        # THEN busy/size, queue, oldest, the sparkline, the rate and the saturation marker
        assert "██████████ 10/10 busy" in text
        assert "queued 17" in text
        assert "oldest 48.2 s" in text
        assert "▂▂▃▅▅▇▇█████" in text
        assert "5.0 req/s" in text
        assert text.rstrip().endswith("⚠ pool saturated")


async def test_the_pool_bar_explains_missing_pool_numbers() -> None:
    # GIVEN an app served without cheroot
    snap = snapshot(
        [worker(1, 1.0, "/")],
        pools_available=False,
        pools_note="no cheroot server (served by another WSGI server)",
    )
    app = make_app(FakePoller([update(snap)]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN the pool bar says why instead of showing zeros
        text = app.query_one(PoolBar).render().plain
        assert "pool numbers unavailable: no cheroot server" in text


# --- size, colour, keys ------------------------------------------------------------------------


async def test_it_renders_at_80x24() -> None:
    # GIVEN a classic 80x24 terminal
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        await pilot.press("g", "g", "a")
        # THEN everything is on screen, the stack pane below the table, nothing off the edge
        assert app.screen.has_class("-narrow")
        for widget in (HeaderBar, PoolBar, ThreadsTable, StackView):
            region = app.query_one(widget).region
            assert region.width > 0 and region.height > 0, widget
            assert region.right <= 80
        table_region = table(app).region
        stack_region = app.query_one("#stack-scroll").region
        assert stack_region.y >= table_region.bottom
        assert stack_region.bottom <= 23
        assert "⚠ pool saturated" in app.query_one(PoolBar).render().plain
        assert app.is_running


async def test_no_color_keeps_the_meaning_in_glyphs_and_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN NO_COLOR is set
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FakePoller([mixed_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN Textual renders without colour, and state is still readable
        assert app.no_color
        states = set(column(app, "state"))
        assert states == {"● busy", "◔ read", "○ idle"}
        assert "● live" in app.query_one(HeaderBar).render().plain


async def test_question_mark_lists_the_keys_and_q_quits() -> None:
    # GIVEN the inspector
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # WHEN ? is pressed THEN a modal lists the keys
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        assert {"b", "w", "a", "g", "space", "q", "?"} <= set(keys)
        assert "One row per distinct stack" in keys["g"]
        # WHEN escape is pressed THEN it closes
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # WHEN q is pressed THEN the app exits and closes the poller
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert poller.closed
    assert app.return_code == 0


async def test_updates_keep_coming_while_the_help_is_open() -> None:
    # GIVEN the help screen open over the incident
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        await pilot.press("question_mark")
        # WHEN new data and then an error arrive
        poller.set(update(snapshot([worker(1, 0.5, "/health")], taken_at=T0 + 3)))
        await poll(pilot, key=False)
        poller.set(OSError("gone"))
        await poll(pilot, key=False)
        # THEN nothing breaks, and closing the help shows where things stand
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert column(app, "request") == ["GET /health"]
        assert app.query_one(Banner).plain.startswith("✖ poll failed: OSError: gone")


async def test_the_command_palette_offers_the_inspectors_actions() -> None:
    # GIVEN the incident on screen
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(100, 30)) as pilot:
        await first_data(pilot)
        # WHEN the palette is opened and "group" chosen
        await pilot.press("ctrl+p")
        await pilot.press(*"group identical")
        await wait_until(pilot, lambda: _palette_has_matches(app), what="palette matches")
        await pilot.press("enter")
        # THEN the table groups stacks
        await wait_until(pilot, lambda: app.threads_panel.grouped, what="grouped view")
        assert column(app, "count") == ["8", "1", "1"]


def _palette_has_matches(app: InspectorApp) -> bool:
    from textual.command import CommandList

    lists = app.screen.query(CommandList)
    return bool(lists) and lists.first().option_count > 0


async def test_non_worker_threads_are_not_called_idle() -> None:
    # GIVEN only non-worker threads
    app = make_app(FakePoller([update(snapshot(other_threads()))]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("a")
        # THEN they show a neutral mark and their role, not "idle"
        assert set(column(app, "state")) == {"· —"}
        assert {t.role for t in other_threads()} == {Role.MAIN, Role.ACCEPTOR, Role.AGENT}


async def test_a_jump_to_a_thread_selects_it_even_when_the_view_hides_it() -> None:
    # GIVEN the grouped view of busy workers only, on the threads tab
    app = make_app(FakePoller([mixed_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("b", "g")
        panel = app.query_one(ThreadsPanel)
        main = other_threads()[0]
        # WHEN another panel asks to show the main thread (hidden by both)
        app.post_message(ShowThread(main.ident))
        await pilot.pause()
        # THEN the view widens to every thread, ungrouped, with the cursor on it
        assert not panel.grouped
        assert panel.selected_thread is not None
        assert panel.selected_thread.ident == main.ident
        assert app.query_one("#tabs", TabbedContent).active == "threads"
        # WHEN a thread that is not in the data is asked for THEN the cursor stays put
        app.post_message(ShowThread(12345))
        await pilot.pause()
        assert panel.selected_thread.ident == main.ident


async def test_tabs_are_in_the_order_of_their_keys() -> None:
    # GIVEN the app on a live session (every panel but the saved-series one)
    app = make_app(FakePoller([mixed_update()]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN the tab bar reads 1, 2, 3, 4 from left to right
        keys = [spec.key for spec in app.panel_specs]
        assert keys == sorted(keys) == ["1", "2", "3", "4"]
        tabs = app.query_one("#tabs", TabbedContent)
        labels = [str(tabs.get_tab(spec.id).label) for spec in app.panel_specs]
        assert [label.split()[0] for label in labels] == keys
