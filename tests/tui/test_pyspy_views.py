"""py-spy in the inspector, driven like a person: the fallback when the agent stops answering,
the GIL holder, local variables on demand and native frames (``run_test`` + Pilot, fake poller).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.widgets import Static

from cpinspect.errors import CpinspectError, PySpyMissing
from cpinspect.model import Frame, SourceKind
from cpinspect.sources.base import LinkState
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.screens.confirm import ConfirmScreen
from cpinspect.tui.screens.help import HelpScreen
from cpinspect.tui.screens.locals import LocalsScreen
from cpinspect.tui.widgets.banner import Banner
from cpinspect.tui.widgets.header_bar import HeaderBar
from cpinspect.tui.widgets.locals_list import LocalsList
from cpinspect.tui.widgets.pool_bar import PoolBar
from cpinspect.tui.widgets.stack_view import StackView
from cpinspect.tui.widgets.threads_panel import ThreadsPanel

from .fakes import (
    FALLBACK_MESSAGE,
    GIL_HOLDER,
    NATIVE_REGEX_STACK,
    T0,
    FakePoller,
    fallback_update,
    incident_update,
    other_threads,
    snapshot,
    stuck_threads,
    thread_locals,
    update,
    worker,
)
from .helpers import column, first_data, make_app, names, poll, table, wait_until


def header(app: InspectorApp) -> str:
    return app.query_one(HeaderBar).render().plain


def pool_bar(app: InspectorApp) -> str:
    return app.query_one(PoolBar).render().plain


# --- the agent stops answering -----------------------------------------------------------------


async def test_when_the_agent_stops_answering_py_spy_stands_in_and_says_so() -> None:
    # GIVEN the agent's view of the incident, five seconds before the interpreter got stuck
    poller = FakePoller([incident_update(T0 - 5)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        assert "agent /run/user/1000/cpinspect/" in header(app)
        # WHEN the agent stops answering and py-spy's threads stand in
        poller.set(fallback_update(T0))
        await poll(pilot)
        # THEN the banner warns, naming the thread holding the GIL
        banner = app.query_one(Banner)
        assert banner.plain == f"⚠ {FALLBACK_MESSAGE}"
        assert banner.has_class("-warning")
        # AND the header names the source honestly
        assert "py-spy (agent not answering)" in header(app)
        assert "4121.sock" not in header(app)
        # AND the pool numbers, which only the agent knows, are marked stale with their age
        assert app.query_one(PoolBar).has_class("-stale")
        assert pool_bar(app).startswith("Pool stale 5.4 s old  ██████████ 10/10 busy")
        assert "10/10 busy" in pool_bar(app)
        # AND the threads are py-spy's, fresh: not dimmed
        assert not app.query_one(ThreadsPanel).has_class("-stale")
        assert "GET /search?q=(a%2B)%2Bb" in column(app, "request")
        # WHEN the agent answers again
        back = replace(
            incident_update(T0 + 1),
            state=LinkState.RECONNECTED,
            message="agent answering again",
        )
        poller.set(back)
        await poll(pilot)
        # THEN the news is good, the source is the agent, and the pool numbers are fresh
        assert banner.plain == "↻ agent answering again"
        assert banner.has_class("-info")
        assert "agent /run/user" in header(app)
        assert not app.query_one(PoolBar).has_class("-stale")
        assert "stale" not in pool_bar(app)


async def test_stale_pool_numbers_say_stale_in_words_without_colour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN NO_COLOR, and py-spy standing in from the start (no fresh pool numbers seen yet)
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FakePoller([fallback_update(T0)]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # THEN the word says it first, even at 80 columns, and no age is made up
        assert app.no_color
        assert pool_bar(app).startswith("Pool stale  ████ 10/10 busy")
        assert "GIL" in column(app, "state")[0]
        assert "py-spy (agent not answering)" in header(app)


async def test_stale_pool_numbers_add_nothing_to_the_history() -> None:
    # GIVEN one live sample, then two polls of py-spy standing in
    poller = FakePoller([incident_update(T0 - 5), fallback_update(T0 - 1), fallback_update(T0)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await poll(pilot, times=2)
        # THEN the sparkline has the one real sample, not three copies of it
        assert list(app.store.busy_history["127.0.0.1:8080"]) == [10]


async def test_py_spy_alone_shows_workers_and_explains_the_missing_pool_numbers() -> None:
    # GIVEN a process without the agent: py-spy classified the workers from their stacks
    snap = snapshot(
        stuck_threads(T0),
        served=None,
        pools_available=False,
        pools_note="py-spy reads no pool numbers; enable the agent for them",
    )
    only_spy = replace(
        update(snap, info=None, message="no agent in pid 4121: threads from py-spy"),
        source_kind=SourceKind.PYSPY,
        source_label="py-spy pid 4121",
    )
    app = make_app(FakePoller([only_spy]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN worker rows show, the pool bar says why it has no numbers, the source is py-spy
        assert len(table(app).row_keys) == 10
        assert "pool numbers unavailable: py-spy reads no pool numbers" in pool_bar(app)
        assert "  py-spy  " in header(app)
        assert "py-spy pid" not in header(app)
        assert app.query_one(Banner).plain == "⚠ no agent in pid 4121: threads from py-spy"


# --- the GIL holder ----------------------------------------------------------------------------


async def test_the_gil_holder_is_marked_and_sorted_first_even_when_only_the_update_names_it() -> (
    None
):
    # GIVEN py-spy's threads where the update (not the thread) names the GIL holder
    fallback = fallback_update(T0)
    assert fallback.threads is not None
    assert not any(t.owns_gil for t in fallback.threads.threads)
    app = make_app(FakePoller([fallback]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN it leads the table, marked in words, though others have been busy longer
        assert names(app)[0] == "CP Server Thread-3"
        assert column(app, "state")[0] == "● busy GIL"
        assert column(app, "elapsed")[:2] == ["40.1 s", "48.2 s"]
        # AND the stack pane, which shows it, says so in its title line
        view = app.query_one(StackView)
        assert view.plain.splitlines()[0] == "CP Server Thread-3  ● busy 40.1 s  holds the GIL"
        assert "app  search.py:12  Search.find" in view.plain
        # WHEN stacks are grouped
        await pilot.press("g")
        # THEN the group holding the GIL comes first and is marked, before the biggest one
        assert column(app, "state")[0] == "● 1 busy GIL"
        assert column(app, "count")[:2] == ["1", "7"]
        assert "GIL held by CP Server Thread-3" in view.plain.splitlines()[0]


async def test_a_gil_holder_outside_the_view_is_named_above_the_table() -> None:
    # GIVEN the main thread holds the GIL while the table lists workers only
    threads = [worker(1, 2.0, "/a"), *other_threads()]
    snap = snapshot(threads)
    app = make_app(FakePoller([update(snap, gil_holder=threads[1].ident)]))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # THEN the line above the table names it and the key that lists it
        panel = app.query_one(ThreadsPanel)
        assert panel.summary_text.startswith("GIL held by MainThread (a lists it) │ ")
        # WHEN a lists all threads THEN it is first
        await pilot.press("a")
        assert names(app)[0] == "MainThread"
        assert not panel.summary_text.startswith("GIL")


# --- local variables ---------------------------------------------------------------------------


async def open_locals(pilot: object, app: InspectorApp) -> LocalsScreen:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await pilot.press("v")
    screen = app.screen
    assert isinstance(screen, LocalsScreen)
    await wait_until(pilot, lambda: screen.loaded, what="the locals")
    await pilot.pause()
    return screen


async def test_v_shows_the_selected_threads_locals_with_secrets_hidden() -> None:
    # GIVEN the stuck worker selected, and a poller whose locals hold two secrets
    poller = FakePoller([fallback_update(T0)], locals_answer=thread_locals())
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        assert names(app)[0] == "CP Server Thread-3"
        # WHEN v is pressed
        screen = await open_locals(pilot, app)
        # THEN the locals of that thread were read, off the UI thread
        assert poller.locals_calls == [(GIL_HOLDER, False)]
        listing = screen.query_one(LocalsList)
        text = listing.plain
        # AND every frame shows innermost first, arguments marked
        order = [
            text.index("lib  re/__init__.py:176  search"),
            text.index("app  search.py:12  Search.find"),
            text.index("lib  _cprequest.py:635  run"),
            text.index("lib  threading.py:1038  _bootstrap_inner"),
        ]
        assert order == sorted(order)
        assert "arg pattern = '(a+)+b'" in text
        assert "    limit = 50" in text
        assert "(no local variables)" in text
        # AND the secrets are hidden, each saying why, on screen as in the text
        assert "api_token = ***  secret-looking name" in text
        assert "environ = ***  cookie or authorization" in text
        assert "1 hidden (r reveals)" in text
        screen_text = app.export_screenshot()
        assert "SECRET" not in text and "SECRET" not in screen_text
        assert "r or enter reveals the selected frame" in screen.status_text
        # WHEN escape is pressed THEN the view closes
        await pilot.press("escape")
        assert not isinstance(app.screen, LocalsScreen)


async def test_revealing_shows_one_frame_at_a_time() -> None:
    # GIVEN the locals view on a thread with a secret in two frames
    app = make_app(FakePoller([fallback_update(T0)], locals_answer=thread_locals()))
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        screen = await open_locals(pilot, app)
        listing = screen.query_one(LocalsList)
        # WHEN the second frame is selected and r pressed
        await pilot.press("down", "r")
        # THEN that frame's secret shows, the other frame's stays hidden
        assert "api_token = 'tok-SECRET-1234'" in listing.plain
        assert "1 revealed (r hides)" in listing.plain
        assert "COOKIE-SECRET" not in listing.plain
        # WHEN the third frame is revealed with enter
        await pilot.press("down", "enter")
        assert "session_id=COOKIE-SECRET-99" in listing.plain
        # AND the second is hidden again with r
        await pilot.press("up", "r")
        # THEN only the third stays revealed
        assert "tok-SECRET" not in listing.plain
        assert "api_token = ***" in listing.plain
        assert "session_id=COOKIE-SECRET-99" in listing.plain
        assert listing.revealed == {2}


async def test_locals_that_cannot_be_read_say_why_in_one_line() -> None:
    # GIVEN py-spy is missing
    error = PySpyMissing("py-spy not found next to the interpreter or on PATH: pip install py-spy")
    poller = FakePoller([incident_update()], locals_answer=error)
    app = make_app(poller)
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # WHEN v is pressed on the third thread
        await pilot.press("down", "down")
        screen = await open_locals(pilot, app)
        assert screen.thread.name == names(app)[2] == "CP Server Thread-3"
        assert [ident for ident, _ in poller.locals_calls] == [screen.thread.ident]
        # THEN one line says why, and no list shows
        assert screen.status_text == (
            "✖ locals unavailable: py-spy not found next to the interpreter or on PATH: "
            "pip install py-spy"
        )
        assert screen.query_one("#locals-status", Static).has_class("-error")
        assert not screen.query_one(LocalsList).display
        assert screen.error is not None and "\n" not in screen.error
        # AND v closes it like escape
        await pilot.press("v")
        assert not isinstance(app.screen, LocalsScreen)


async def test_the_locals_view_fits_80x24() -> None:
    # GIVEN a classic terminal and the locals view open on the stuck thread
    app = make_app(FakePoller([fallback_update(T0)], locals_answer=thread_locals()))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        screen = await open_locals(pilot, app)
        # THEN title, note and list are on screen, inside the terminal
        for selector in ("#locals-title", "#locals-status", "#locals-list"):
            region = screen.query_one(selector).region
            assert region.width > 0 and region.height > 0, selector
            assert region.right <= 80 and region.bottom <= 23, selector
        title = screen.query_one("#locals-title", Static).content
        assert str(title).startswith("Local variables · CP Server Thread-3 · read 15:06:40")
        # AND updates keep arriving underneath without breaking it
        await poll(pilot, key=False)
        assert isinstance(app.screen, LocalsScreen)


async def test_v_without_a_thread_says_so() -> None:
    # GIVEN nothing to select
    app = make_app(FakePoller([update(snapshot([]))]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # WHEN v is pressed THEN no view opens and nothing is asked of the poller
        await pilot.press("v")
        assert not isinstance(app.screen, LocalsScreen)
        assert isinstance(app.poller, FakePoller) and app.poller.locals_calls == []


# --- native frames -----------------------------------------------------------------------------


async def test_n_turns_native_frames_on_and_off() -> None:
    # GIVEN the stuck thread selected
    poller = FakePoller([fallback_update(T0)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        polls = poller.polls
        # WHEN n is pressed, and the next polls carry native frames
        native = fallback_update(T0 + 1)
        assert native.threads is not None
        threads = tuple(
            replace(t, stack=NATIVE_REGEX_STACK) if t.ident == GIL_HOLDER else t
            for t in native.threads.threads
        )
        poller.set(replace(native, threads=replace(native.threads, threads=threads)))
        await pilot.press("n")
        await wait_until(pilot, lambda: app.native, what="native frames on")
        # THEN the poller was asked for them, off the UI thread, and polled again at once
        assert poller.native_calls == [(True, False)]
        await wait_until(pilot, lambda: poller.polls > polls and not app.poll_in_flight)
        await pilot.pause()
        assert "native on" in header(app)
        # AND native frames show tagged c, the innermost C calls unfolded, not as app frames
        view = app.query_one(StackView).plain
        stack = view.split("innermost first", 1)[1].splitlines()[1:]
        assert stack[:5] == [
            "c    sre_lib.h:1062  sre_ucs1_search",
            "c    sre.c:772  _sre_SRE_Pattern_search_impl",
            "c    libpython3.11.so.1.0  PyObject_Vectorcall",
            "lib  re/__init__.py:176  search",
            "app  search.py:12  Search.find",
        ]
        assert "lib  … 8 library frames (2 native) (l shows them)" in view
        # WHEN n is pressed again THEN native frames are turned off
        await pilot.press("n")
        await wait_until(pilot, lambda: not app.native, what="native frames off")
        assert poller.native_calls == [(True, False), (False, False)]
        assert "native on" not in header(app)


async def test_native_frames_that_cannot_be_had_leave_the_setting_alone() -> None:
    # GIVEN a poller without py-spy
    poller = FakePoller([incident_update()])
    poller.native_error = PySpyMissing("py-spy not found: pip install py-spy")
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN n is pressed
        await pilot.press("n")
        await wait_until(pilot, lambda: not app.native_pending, what="set_native")
        await pilot.pause()
        # THEN the setting stays off and the reason is shown
        assert poller.native_calls == [(True, False)]
        assert not app.native
        assert "native on" not in header(app)
        messages = [n.message for n in app._notifications]
        assert "py-spy not found: pip install py-spy" in messages


def test_native_frames_in_a_stack_are_never_app_frames() -> None:
    # GIVEN a native frame (py-spy marks none as app; the view must not either)
    frame = Frame("/usr/lib/libpython3.11.so.1.0", 0, "PyObject_Call", native=True)
    from cpinspect.formatting import frame_kind, frame_location

    assert (frame_kind(frame), frame_location(frame)) == ("c", "libpython3.11.so.1.0")


# --- keys --------------------------------------------------------------------------------------


async def test_help_and_footer_list_the_new_keys() -> None:
    app = make_app(FakePoller([incident_update()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await first_data(pilot)
        # THEN the footer shows v and n even at 80 columns
        footer = app.export_screenshot()
        assert "Locals" in footer and "Native" in footer
        # AND ? lists them with what they do
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        assert "Local variables of the selected thread" in keys["v"]
        assert "Native (C) frames" in keys["n"]
        assert "reveal" in keys["r, enter"]


# --- loading the agent from the py-spy-only view -------------------------------------------------


def pyspy_only_update():
    return replace(incident_update(), source_kind=SourceKind.PYSPY, source_label="py-spy pid 4121")


async def test_i_asks_then_loads_the_agent_in_a_worker() -> None:
    # GIVEN a process read by py-spy only
    poller = FakePoller([pyspy_only_update()])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        # WHEN i is pressed
        await pilot.press("i")
        await pilot.pause()
        # THEN a question comes first, and escape loads nothing
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert poller.load_calls == []
        # WHEN asked again and answered y
        await pilot.press("i")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(
            pilot, lambda: poller.load_calls and not app.agent_loading, what="load_agent"
        )
        # THEN load_agent ran once, off the UI thread
        assert poller.load_calls == [False]


async def test_routes_refused_before_the_agent_are_read_again_once_it_is_loaded() -> None:
    # GIVEN a py-spy-only process whose Routes tab was shown: routes need the agent (the words
    # of PySpySession), as salt-api's Routes tab said
    poller = FakePoller([pyspy_only_update()])
    good = poller.routes_answer
    poller.routes_answer = CpinspectError(
        "routes need the agent: press i to load it, or `cpinspect inject 4121`"
    )
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("2")
        await wait_until(pilot, lambda: app.store.part("routes").error, what="the refusal")
        assert len(poller.routes_calls) == 1
        # WHEN the agent is loaded (i, y) and can answer
        poller.routes_answer = good
        await pilot.press("i")
        await pilot.pause()
        await pilot.press("y")
        # THEN the routes are read again and the tab shows them, the refusal gone
        await wait_until(
            pilot, lambda: app.store.part("routes").value is not None, what="the routes again"
        )
        assert len(poller.routes_calls) == 2
        assert app.store.part("routes").error is None


async def test_a_failed_load_is_said_and_py_spy_goes_on() -> None:
    poller = FakePoller([pyspy_only_update()])
    poller.load_error = PySpyMissing("gdb not found: apt-get install gdb")
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("i")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(
            pilot, lambda: poller.load_calls and not app.agent_loading, what="load_agent"
        )
        await pilot.pause()
        assert any("gdb not found" in str(n.message) for n in app._notifications)
        assert app.is_running


async def test_i_with_the_agent_already_there_asks_nothing() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("i")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert poller.load_calls == []
