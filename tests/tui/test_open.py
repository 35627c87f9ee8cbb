"""``cpinspect open``: saved snapshots in the same inspector, driven like a person would.

The snapshots are written to real files and read back through ``FileSession.open`` (the path
``cpinspect open`` takes); the live session for capture is the fake poller.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

from cpinspect.model import Snapshot
from cpinspect.snapshots import (
    read_snapshots,
    snapshot_from_update,
    with_source_lines,
    write_snapshots,
)
from cpinspect.sources.file import FileSession
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.screens.locals import LocalsScreen
from cpinspect.tui.widgets.header_bar import HeaderBar
from cpinspect.tui.widgets.series_panel import SeriesPanel

from .fakes import (
    NOW,
    SOURCE,
    T0,
    FakeLines,
    FakePoller,
    incident_threads,
    incident_update,
    pool,
    shop_routes,
    snapshot,
    update,
    worker,
)
from .helpers import first_data, make_app, names, wait_until


def saved(tmp_path: Path, snapshots: List[Snapshot]) -> FileSession:
    written = write_snapshots(snapshots, tmp_path, report=False)
    return FileSession.open(written.json_path)


def incident_snapshot(taken_at: float = T0, routes: bool = True) -> Snapshot:
    snap = snapshot_from_update(incident_update(taken_at), routes=shop_routes() if routes else None)
    return replace(snap, source_lines=())


def series(taken: List[float]) -> List[Snapshot]:
    """The incident at each time: the same stuck export requests, and /fast served anew each
    time by worker 11 (a hot route, not a hang)."""
    out = []
    for i, at in enumerate(taken):
        shift = at - T0
        fast = worker(11, 0.05, f"/fast?n={i}", taken_at=at, handler="Root.fast")
        threads = (*incident_threads(at, shift=shift), fast)
        snap = snapshot(threads, taken_at=at, pools=[pool(busy=11, size=12, queued=17)])
        out.append(snapshot_from_update(update(snap)))
    return out


def footer_keys(app: InspectorApp) -> List[str]:
    return [key for key, b in app.active_bindings.items() if b.binding.show and b.enabled]


def header(app: InspectorApp) -> str:
    return app.query_one(HeaderBar).render().plain


async def test_a_saved_snapshot_opens_offline_with_live_only_keys_hidden(tmp_path: Path) -> None:
    # GIVEN the incident saved to a file, with the source lines as they read at capture time
    session = saved(tmp_path, [with_source_lines(incident_snapshot(), FakeLines(SOURCE))])
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # THEN the header names the file and the capture time instead of "live"
        text = header(app)
        assert "file cpinspect-4121-" in text and "saved" in text and "captured" in text
        assert "live" not in text
        # AND the threads are those saved, busy first
        assert names(app)[:2] == ["CP Server Thread-1", "CP Server Thread-2"]
        # AND the keys of what a file cannot do are neither shown nor live
        keys = footer_keys(app)
        for hidden in ("space", "s", "v", "n", "i", "left_square_bracket"):
            assert hidden not in keys
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, LocalsScreen)
        # AND the stack pane shows the source lines captured with the snapshot (not read today)
        stack = app.threads_panel.stack_view
        await wait_until(pilot, lambda: "rows = db.fetch_all(sql)" in stack.plain, what="lines")


async def test_saved_routes_show_offline_without_the_resolve_box(tmp_path: Path) -> None:
    # GIVEN a snapshot that captured the routes
    session = saved(tmp_path, [incident_snapshot()])
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # WHEN the Routes tab is shown
        await pilot.press("2")
        panel = app.routes_panel
        await wait_until(pilot, lambda: panel.loads >= 1, what="the saved routes")
        await pilot.pause()
        # THEN the saved tree is there, and neither reload nor resolve is offered
        assert panel.routes is not None and panel.routes.apps
        assert "reload" not in panel.status_text and "resolve" not in panel.status_text
        assert not panel.resolve_input.display
        await pilot.press("r")
        await pilot.pause()
        assert not panel.resolve_input.display


async def test_a_snapshot_without_routes_says_so(tmp_path: Path) -> None:
    # GIVEN a snapshot taken without the agent's routes
    session = saved(tmp_path, [incident_snapshot(routes=False)])
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("2")
        panel = app.routes_panel
        await wait_until(pilot, lambda: panel.loads >= 1, what="the answer")
        await pilot.pause()
        # THEN one line says why there is nothing to show
        assert "routes unavailable" in panel.status_text
        assert "no routes" in panel.status_text


async def test_a_series_steps_with_brackets_and_shows_what_held(tmp_path: Path) -> None:
    # GIVEN a series of three snapshots one second apart
    session = saved(tmp_path, series([T0, T0 + 1, T0 + 2]))
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        assert "1/3" in header(app)
        assert "left_square_bracket" in footer_keys(app)
        # WHEN ] is pressed twice
        for expected in ("2/3", "3/3"):
            polls = app.polls_received
            await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda n=polls: app.polls_received > n, what="the next one")
            await pilot.pause()
            # THEN the header and the threads follow the snapshot shown
            assert expected in header(app)
        assert app.store.threads is not None and app.store.threads.taken_at == T0 + 2
        # AND past the end nothing moves
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert "3/3" in header(app)
        # WHEN the Series tab is shown
        await pilot.press("5")
        panel = app.query_one(SeriesPanel)
        await wait_until(pilot, lambda: "Across all 3" in panel.text, what="the series")
        # THEN the stuck export requests are named, and the fast route is not a hang
        text = panel.text
        assert "compared with snapshot 2" in text
        stuck = text.split("Across all 3", 1)[1]
        assert "Stuck throughout" in stuck and "/reports/export" in stuck
        assert "Hot routes" in stuck and "/fast" in stuck.split("Hot routes", 1)[1]


async def test_open_a_b_lands_on_the_difference(tmp_path: Path) -> None:
    # GIVEN two snapshots, the second with a new thread and one gone
    first, second = series([T0, T0 + 5])
    assert first.threads is not None and second.threads is not None
    gone = first.threads.threads[0]
    second = replace(
        second,
        threads=replace(
            second.threads,
            threads=(
                *(t for t in second.threads.threads if t.ident != gone.ident),
                worker(12, 1.0, "/new", taken_at=T0 + 5),
            ),
        ),
    )
    session = FileSession("a.json + b.json", [first, second])
    session.step(1)
    # WHEN opened as `cpinspect open A B` opens it
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW, initial_tab="series")
    async with app.run_test(size=(140, 40)) as pilot:
        panel = app.query_one(SeriesPanel)
        await wait_until(pilot, lambda: "compared with" in panel.text, what="the diff")
        # THEN the Series tab shows what is new, what is gone and what is still stuck
        text = panel.text
        assert app.tabs.active == "series"
        assert "Snapshot 2 of 2 compared with snapshot 1" in text
        new_part = text.split("New threads", 1)[1].split("Gone", 1)[0]
        assert "/new" in new_part
        gone_part = text.split("Gone", 1)[1].split("Still stuck", 1)[0]
        assert gone.name in gone_part
        assert "Still stuck" in text


async def test_s_saves_the_store_with_source_lines_and_shows_the_path(tmp_path: Path) -> None:
    # GIVEN the live inspector on the incident, with its routes read
    poller = FakePoller([incident_update()])
    app = make_app(poller, snapshot_dir=str(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        assert "s" in footer_keys(app) and "space" in footer_keys(app)  # live: offered
        # WHEN s is pressed
        await pilot.press("s")
        await wait_until(pilot, lambda: app.captures, what="the capture")
        # THEN a snapshot and its report are written, and the path is on screen
        json_path = Path(app.captures[0])
        assert json_path.parent == tmp_path and json_path.suffix == ".json"
        assert Path(app.captures[1]).suffix == ".txt"
        shown = [n.message for n in app._notifications]
        assert any(str(json_path) in m for m in shown)
        # AND the file holds what was on screen, the routes and the captured source lines
        (saved_snap,) = read_snapshots(json_path)
        assert saved_snap.threads == app.store.threads
        assert saved_snap.routes == poller.routes_answer
        (filename, lineno), text = next(iter(SOURCE.items()))
        assert saved_snap.line(filename, lineno) == text
        assert oct(json_path.stat().st_mode & 0o777) == "0o600"
        # AND the routes were read in a worker, not on the UI thread
        assert poller.routes_calls == [False]


async def test_s_into_a_directory_that_does_not_exist_says_so(tmp_path: Path) -> None:
    # GIVEN a snapshot directory that is not there
    poller = FakePoller([incident_update()])
    app = make_app(poller, snapshot_dir=str(tmp_path / "missing"))
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # WHEN s is pressed
        await pilot.press("s")
        await wait_until(pilot, lambda: not app.capturing, what="the capture to fail")
        await pilot.pause()
        # THEN one line says why, nothing is written, and the inspector goes on
        messages = [n.message for n in app._notifications]
        assert any("missing" in m for m in messages)
        assert app.captures == []
        assert not (tmp_path / "missing").exists()


async def test_a_saved_file_names_on_its_first_screen_what_rests_on_its_routes_and_sessions(
    tmp_path: Path,
) -> None:
    from .fakes import shop_sessions

    # GIVEN a saved snapshot carrying the routes (a relative staticdir) and the sessions (a
    # session lock held with two waiters)
    snap = replace(
        snapshot_from_update(incident_update(), routes=shop_routes(), sessions=shop_sessions()),
        source_lines=(),
    )
    session = saved(tmp_path, [snap])
    # WHEN it is opened, and neither the Routes nor the Sessions tab is shown
    app = InspectorApp(session, source_lines=session, clock=lambda: NOW)
    async with app.run_test(size=(140, 40)) as pilot:

        def strip() -> str:
            return "\n".join(app.findings_strip.lines_text)

        await wait_until(pilot, lambda: "its lock has been held" in strip(), what="the lock")
        # THEN the strip names the held session lock and the static mount, as the live screen did
        assert app.tabs.active == "threads"
        kinds = {f.kind for f in app.store.findings}
        assert {"sessions-lock", "pool-starvation"} <= kinds, kinds
        assert any(k.startswith("static") for k in kinds), kinds
