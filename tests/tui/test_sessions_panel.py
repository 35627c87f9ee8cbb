"""The Sessions tab, driven like a person: the store read when the tab opens and every ~2 s while
it is shown, paging and sorting done by the agent, reveal after a confirmation for one session
only, the jump from a lock holder or waiter to its thread, a store that cannot be listed, errors
as one line (``run_test`` + Pilot, fake poller with a scripted store — a fake because these are
exact states: the same panel on a real agent is tests/tui/test_sessions_e2e.py).
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from cpinspect.errors import CpinspectError
from cpinspect.sources.base import Capability
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.screens.confirm import ConfirmScreen
from cpinspect.tui.widgets.sessions_panel import SessionsPanel

from .fakes import LOCKED_FP, MEMCACHED_FP, SECRET_VALUE, FakePoller, incident_update, worker
from .helpers import first_data, make_app, wait_until

HOLDER = worker(9, 31.0).ident
WAITERS = (worker(1, 1.0).ident, worker(2, 1.0).ident)


async def open_sessions(pilot: Pilot[Any], loads: int = 1) -> SessionsPanel:
    app = await first_data(pilot)
    assert isinstance(app, InspectorApp)
    await pilot.press("3")
    panel = app.query_one(SessionsPanel)
    await wait_until(pilot, lambda: panel.loads >= loads, what="the sessions")
    await pilot.pause()
    return panel


async def answered(pilot: Pilot[Any], panel: SessionsPanel, loads: int) -> None:
    await wait_until(pilot, lambda: panel.loads >= loads and not panel.reading, what="an answer")
    await pilot.pause()


async def test_the_store_is_summed_up_with_its_diagnoses_when_the_tab_opens() -> None:
    # GIVEN the inspector on a live session whose RAM store has 120 sessions, one locked
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        await first_data(pilot)
        # THEN the first page is read once after the first poll (for the findings: a held
        # session lock on the first screen), not again when the tab is shown
        await wait_until(pilot, lambda: app.store.part("sessions").loads >= 1, what="sessions")
        # WHEN the Sessions tab opens (key 3)
        panel = await open_sessions(pilot)
        # THEN the first page was read once, off the UI thread, expiring soonest first
        assert poller.sessions_calls == [(0, "expiry", None, False)]
        status = panel.status_text
        # AND the summary names the count, expiring soon, the sizes, locks and waiters
        assert "app '/' · RAM · 120 sessions (app 1 of 2" in status
        assert "11 expiring in 5 min" in status
        assert "1 locked now · 2 waiting for a lock" in status
        assert "largest 199.3 KB" in status
        # AND the diagnoses sit with the data: the long-held lock with its request and waiters,
        # and the one session far larger than the rest
        assert "lock has been held 31.0 s by POST /cart/add" in status
        assert "2 requests of the same user wait behind it" in status
        assert "release_lock()" in status
        assert "times the median session" in status
        # AND the table holds the first page, and the details name the store's settings
        assert len(panel.rows) == 50
        assert "locking       implicit" in panel.details_text


async def test_pages_and_orders_are_asked_of_the_agent() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        first_page = panel.rows
        # WHEN the next page is asked for, twice
        await pilot.press("greater_than_sign")
        await answered(pilot, panel, 2)
        await pilot.press("greater_than_sign")
        await answered(pilot, panel, 3)
        # THEN the agent was asked for offsets 50 and 100, and the last page has the 20 left
        assert [c[0] for c in poller.sessions_calls] == [0, 50, 100]
        assert len(panel.rows) == 20 and not set(panel.rows) & set(first_page)
        assert "sessions 101-120 of 120" in str(panel.table.border_title)
        # WHEN past the last page
        await pilot.press("greater_than_sign")
        await pilot.pause()
        # THEN nothing more is asked
        assert len(poller.sessions_calls) == 3
        # WHEN the order changes (o: expiry → -expiry → size)
        await pilot.press("o")
        await answered(pilot, panel, 4)
        await pilot.press("o")
        await answered(pilot, panel, 5)
        # THEN each order starts at the first page, and by size the largest session is first
        assert poller.sessions_calls[-2:] == [(0, "-expiry", None, False), (0, "size", None, False)]
        sessions = panel.sessions
        assert sessions is not None
        largest = sessions.apps[0].summary.largest[0].fp
        assert panel.rows[0] == largest
        # AND back one page from the first asks nothing
        await pilot.press("less_than_sign")
        await pilot.pause()
        assert len(poller.sessions_calls) == 5


async def test_reveal_asks_first_and_shows_one_sessions_values_until_the_cursor_leaves() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        # GIVEN the locked session first (o three times: by lock)
        for n in range(3):
            await pilot.press("o")
            await answered(pilot, panel, 2 + n)
        assert panel.rows[0] == LOCKED_FP
        assert panel.selected is not None and panel.selected.fp == LOCKED_FP
        # THEN its values are hidden: keys, types and sizes only
        assert "cart  list" in panel.details_text
        assert SECRET_VALUE not in panel.details_text
        calls = len(poller.sessions_calls)
        # WHEN x is pressed and the question declined
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        # THEN nothing was asked of the agent
        assert len(poller.sessions_calls) == calls
        assert SECRET_VALUE not in panel.details_text
        # WHEN x is pressed and confirmed
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: panel.revealed is not None, what="the reveal")
        await pilot.pause()
        # THEN that one session was asked for, once, and the page again without it at once
        # (the store holds no values: only the panel, while the cursor stays)
        await wait_until(pilot, lambda: poller.sessions_calls[-1][2] is None, what="re-read")
        assert poller.sessions_calls[-2:] == [
            (0, "lock", LOCKED_FP, False),
            (0, "lock", None, False),
        ]
        assert [c[2] for c in poller.sessions_calls].count(LOCKED_FP) == 1
        await wait_until(pilot, lambda: not panel.reading, what="the re-read's answer")
        await pilot.pause()
        part = app.store.part("sessions").value
        assert all(not s.revealed for a in part.apps for s in a.sessions)
        # AND its values show; no other session's do (the agent sent none)
        assert "cart  list  " in panel.details_text and SECRET_VALUE in panel.details_text
        sessions = panel.sessions
        assert sessions is not None
        others = [s for a in sessions.apps for s in a.sessions if s.fp != LOCKED_FP]
        assert others and all(not s.revealed for s in others)
        assert all(k.value is None for s in others for k in s.keys)
        # WHEN the cursor moves to the next session
        await pilot.press("down")
        await pilot.pause()
        # THEN the values are hidden again, and coming back does not show them
        assert panel.revealed is None
        assert SECRET_VALUE not in panel.details_text
        await pilot.press("up")
        await pilot.pause()
        assert SECRET_VALUE not in panel.details_text


async def test_the_reveal_key_is_not_offered_on_a_saved_snapshot() -> None:
    # GIVEN a session that is not live (a saved file with sessions)
    poller = FakePoller([incident_update()])
    poller.capabilities = frozenset({Capability.SESSIONS, Capability.ROUTES})
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        # WHEN x is pressed
        await pilot.press("x")
        await pilot.pause()
        # THEN no question is asked and nothing is read
        assert not isinstance(app.screen, ConfirmScreen)
        assert all(c[2] is None for c in poller.sessions_calls)
        assert panel.revealed is None


async def test_jump_from_the_lock_holder_and_each_waiter_to_its_thread() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        for n in range(3):
            await pilot.press("o")
            await answered(pilot, panel, 2 + n)
        # GIVEN the locked session selected, its holder and waiters in the details
        details = panel.details_text
        assert "held by       CP Server Thread-9" in details
        assert "POST /cart/add from 10.0.0.9" in details
        assert "waiter 1" in details and "waiter 2" in details
        assert "  waiting for 12.0 s" in details
        # WHEN t is pressed
        await pilot.press("t")
        await pilot.pause()
        # THEN the Threads tab shows, the cursor on the holder's thread
        assert app.tabs.active == "threads"
        thread = app.threads_panel.selected_thread
        assert thread is not None and thread.ident == HOLDER
        # WHEN back on Sessions, w twice: each waiter in turn
        seen = []
        for _ in WAITERS:
            await pilot.press("3")
            await pilot.pause()
            await pilot.press("w")
            await pilot.pause()
            assert app.tabs.active == "threads"
            thread = app.threads_panel.selected_thread
            assert thread is not None
            seen.append(thread.ident)
        assert tuple(seen) == WAITERS


async def test_a_store_that_cannot_be_listed_says_why() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        # WHEN the next app is shown (a: the memcached store)
        await pilot.press("a")
        await pilot.pause()
        # THEN the reason is the summary, with the locks known from the requests in flight
        assert "app '/api' · memcached (app 2 of 2" in panel.status_text
        assert "this backend cannot be listed: memcached cannot list its keys" in panel.status_text
        assert "1 locked now · 0 waiting for a lock" in panel.status_text
        # AND the table holds only the session locked now, said so above it
        assert panel.rows == (MEMCACHED_FP,)
        assert "1 session locked or waited on now" in str(panel.table.border_title)
        assert "servers       127.0.0.1:11211" in panel.details_text


async def test_a_failed_read_is_one_line_and_the_last_data_stays() -> None:
    poller = FakePoller([incident_update()])
    poller.sessions_error = CpinspectError("sessions need the agent, which is not answering")
    app = make_app(poller)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        # THEN the reason is said in one line
        assert panel.status_text == (
            "sessions could not be read: sessions need the agent, which is not answering"
        )
        # WHEN a later read works, and then one fails again
        poller.sessions_error = None
        await pilot.press("u")
        await answered(pilot, panel, 2)
        assert len(panel.rows) == 50
        poller.sessions_error = CpinspectError("agent error 504 on /v1/sessions: time limit")
        await pilot.press("u")
        await answered(pilot, panel, 3)
        # THEN the page stays on screen, the failure said beneath the summary
        assert len(panel.rows) == 50
        assert "last read failed: agent error 504 on /v1/sessions: time limit" in (
            panel.status_text
        )


async def test_the_tab_re_reads_while_shown_on_a_live_session_without_the_reveal() -> None:
    # GIVEN polls every 0.2 s (the other tests poll hourly: no timed re-read gets in their way)
    poller = FakePoller([incident_update()])
    app = make_app(poller, interval=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = await open_sessions(pilot)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: panel.revealed is not None, what="the reveal")
        # WHEN the refresh interval passes (~2 s) with the tab shown
        await wait_until(pilot, lambda: len(poller.sessions_calls) >= 3, what="a timed re-read")
        # THEN the re-read asked for the same page, and never for the values
        assert poller.sessions_calls[-1] == (0, "expiry", None, False)
        # WHEN another tab is shown, no more re-reads happen there
        await pilot.press("1")
        await pilot.pause()
        calls = len(poller.sessions_calls)
        assert app.part_args["sessions"] == {"offset": 0, "limit": 50, "sort": "expiry"}
        app.refresh_part(next(s for s in app.panel_specs if s.id == "sessions"))
        assert len(poller.sessions_calls) == calls
