"""A poll costs what it changed (issue 13): no layout of the whole screen at every poll, and
no table line made again when its row did not change. Real Textual (``run_test`` + Pilot) on a
scripted poller; asserted through counters, never timings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, List

import pytest
from textual.widget import Widget

from cpinspect.sources.base import Update
from cpinspect.tui.widgets.threads_table import ThreadsTable

from .fakes import T0, FakePoller, other_threads, pool, snapshot, update, worker
from .helpers import column, first_data, make_app, poll, table


def busy_update(taken_at: float, busy: int = 4) -> Update:
    """Ten workers, ``busy`` of them busy (fixed elapsed times), and the other threads; every
    call builds new objects, as every poll of a real session does."""
    threads = [
        *(worker(n, 10.0 + n, f"/slow/{n}", handler="Reports.export") for n in range(busy)),
        *(worker(n, None) for n in range(busy, 10)),
        *other_threads(),
    ]
    return update(snapshot(threads, taken_at=taken_at, pools=[pool(busy=busy, queued=0)]))


@pytest.fixture
def layouts(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The widgets that ask for a layout of the screen (``refresh(layout=True)``), by class."""
    asked: List[str] = []
    original = Widget.refresh

    def refresh(self: Widget, *regions: Any, **kwargs: Any) -> Any:
        if kwargs.get("layout"):
            asked.append(type(self).__name__)
        return original(self, *regions, **kwargs)

    monkeypatch.setattr(Widget, "refresh", refresh)
    return asked


async def test_polls_that_bring_the_same_rows_make_no_line_and_no_layout(
    layouts: List[str],
) -> None:
    # GIVEN a target whose polls bring new objects with the same threads in them (only the
    # time of the reading and the pool's sparkline move)
    poller = FakePoller([busy_update(T0)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        made = table(app).lines_rendered
        assert made > 0  # the first screen made its lines
        layouts.clear()
        # WHEN three more polls arrive
        for n in range(1, 4):
            poller.set(busy_update(T0 + n))
            await poll(pilot)
        await pilot.pause()
        # THEN they reached the store and the pool bar's history
        assert app.store.threads is not None and app.store.threads.taken_at == T0 + 3
        assert len(app.store.busy_history[pool().bind]) == 4
        # AND no table line was made again, and nothing asked to lay out the screen (a
        # layout re-renders every widget on it: ~40 % of the TUI's CPU at 1,000 threads)
        assert table(app).lines_rendered == made
        assert layouts == []


async def test_a_row_that_changes_is_the_line_made_again_and_the_pool_bar_needs_no_layout(
    layouts: List[str],
) -> None:
    # GIVEN four busy workers on screen
    poller = FakePoller([busy_update(T0)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        made = table(app).lines_rendered
        layouts.clear()
        # WHEN one more worker becomes busy (one row changes, the pool's numbers too)
        poller.set(busy_update(T0 + 1, busy=5))
        await poll(pilot)
        await pilot.pause()
        # THEN the screen shows it
        assert app.pool_bar.state is not None and app.pool_bar.state.snapshot is not None
        assert app.pool_bar.state.snapshot.pools[0].busy == 5
        assert table(app).cell_text(0, "request") == "GET /slow/4"
        # AND only the lines whose rows changed were made (the rows below the new one moved
        # down by one: each of them shows another thread now), not every line on screen
        shown = len(table(app).row_keys)
        assert 0 < table(app).lines_rendered - made <= shown
        # AND the pool bar, still one line high, asked for no layout
        assert "PoolBar" not in layouts


async def test_a_second_pool_lays_the_screen_out_again_for_the_pool_bar() -> None:
    # GIVEN one pool on screen
    first = busy_update(T0)
    poller = FakePoller([first])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        assert app.pool_bar.size.height == 1
        # WHEN the target starts a second server (the bar needs two lines)
        assert first.threads is not None
        two = replace(
            first.threads,
            taken_at=T0 + 1,
            pools=(pool(busy=4, queued=0), replace(pool(busy=0), bind="127.0.0.1:9090")),
        )
        poller.set(replace(first, threads=two))
        await poll(pilot)
        await pilot.pause()
        # THEN the bar grew to two lines (its height still follows its pools)
        assert app.pool_bar.size.height == 2


async def test_threads_that_only_moved_on_in_time_show_their_new_elapsed_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN four busy workers on screen, and the rows the table formats counted
    from cpinspect.tui.widgets import threads_table

    formatted: List[int] = []
    original = threads_table.thread_row

    def counted(thread: Any) -> Any:
        formatted.append(thread.ident)
        return original(thread)

    monkeypatch.setattr(threads_table, "thread_row", counted)
    first = busy_update(T0)
    assert first.threads is not None
    poller = FakePoller([first])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        formatted.clear()
        # WHEN the next poll carries them over as an agent's delta does (the same request and
        # stack objects, 1.5 s later) and one of them starts another request
        moved = [
            replace(t, elapsed=t.elapsed + 1.5) if t.busy and t.elapsed is not None else t
            for t in first.threads.threads
        ]
        other = worker(2, 0.3, "/cart/add", method="POST", handler="Cart.add")
        moved = [other if t.ident == other.ident else t for t in moved]
        poller.set(update(snapshot(moved, taken_at=T0 + 1.5, pools=[pool(busy=4, queued=0)])))
        await poll(pilot)
        await pilot.pause()
        # THEN every elapsed time on screen moved on, the rest of each row as it was
        rows = {
            table(app).cell_text(i, "request"): table(app).cell_text(i, "elapsed") for i in range(4)
        }
        assert rows == {
            "GET /slow/3": "14.5 s",
            "GET /slow/1": "12.5 s",
            "GET /slow/0": "11.5 s",
            "POST /cart/add": "0.3 s",
        }
        # AND only the thread with a new request was formatted again from scratch
        assert formatted == [other.ident]


def ticked(first: Update, seconds: float) -> Update:
    """``first``'s threads ``seconds`` later, carried over as an agent's delta does: the same
    request and stack objects, busy workers' elapsed times moved on."""
    assert first.threads is not None
    moved = [
        replace(t, elapsed=t.elapsed + seconds) if t.busy and t.elapsed is not None else t
        for t in first.threads.threads
    ]
    taken_at = first.threads.taken_at + seconds
    return update(snapshot(moved, taken_at=taken_at, pools=[pool(busy=4, queued=0)]))


def lines_from_scratch(t: Any) -> List[Any]:
    """The table's lines made again with every cache dropped (what a first paint shows)."""
    t._lines.clear()
    t._painted.clear()
    return [t.render_line(y) for y in range(t.size.height)]


async def test_polls_that_only_tick_elapsed_times_repaint_those_cells_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN four busy workers on screen, and the regions the table asks Textual to repaint
    regions: List[Any] = []
    original = ThreadsTable.refresh

    def refresh(self: ThreadsTable, *args: Any, **kwargs: Any) -> Any:
        regions.append(args or "whole")
        return original(self, *args, **kwargs)

    first = busy_update(T0)
    poller = FakePoller([first])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        t = table(app)
        monkeypatch.setattr(ThreadsTable, "refresh", refresh)
        repaints, patched = t.full_repaints, t.lines_patched
        # WHEN three polls carry them over, each a second later (as at 1,000 threads: every
        # busy row on screen changes in its elapsed cell only)
        for n in range(1, 4):
            poller.set(ticked(first, float(n)))
            await poll(pilot)
        await pilot.pause()
        # THEN the table shows the new times
        assert column(app, "elapsed")[:4] == ["16.0 s", "15.0 s", "14.0 s", "13.0 s"]
        # AND no poll repainted the whole table: each asked for the elapsed column of the
        # busy rows only, and their lines were patched rather than made again
        assert t.full_repaints == repaints
        assert t.lines_patched - patched == 3 * 4
        x = 0
        for spec in t._specs:
            if spec.key == "elapsed":
                break
            x += spec.width + 2
        span = (x, x + spec.width + 2)
        asked = [r for call in regions if call != "whole" for r in call]
        assert len(asked) == 3 and "whole" not in regions
        assert all((r.x, r.right, r.y, r.height) == (*span, 1, 4) for r in asked)
        # AND the patched lines are exactly the lines a first paint of this data makes
        shown = [t.render_line(y) for y in range(t.size.height)]
        assert shown == lines_from_scratch(t)


async def test_a_new_order_repaints_the_lines_that_moved_as_a_first_paint_would() -> None:
    # GIVEN four busy workers on screen
    first = busy_update(T0)
    poller = FakePoller([first])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        t = table(app)
        # WHEN the next poll brings a fifth busy worker (it sorts in among the others: the
        # rows under it move down by one) and then one more tick
        poller.set(busy_update(T0 + 1, busy=5))
        await poll(pilot)
        poller.set(busy_update(T0 + 2, busy=5))
        await poll(pilot)
        await pilot.pause()
        # THEN every line on screen is what a first paint of the same data makes
        assert column(app, "request")[0] == "GET /slow/4"
        shown = [t.render_line(y) for y in range(t.size.height)]
        assert shown == lines_from_scratch(t)


async def test_findings_that_say_the_same_lines_repaint_nothing_and_lay_nothing_out(
    layouts: List[str],
) -> None:
    # GIVEN the strip showing two findings
    from textual.app import App, ComposeResult

    from cpinspect.model import Finding, FindingSeverity
    from cpinspect.tui.widgets.findings_strip import FindingsStrip

    def found(details: str, title: str = "500 of 1000 workers are in GET /sleep") -> List[Finding]:
        return [
            Finding("pool:1", FindingSeverity.WARNING, title, details=(details,)),
            Finding("slow:1", FindingSeverity.INFO, "GET /sleep runs long", details=(details,)),
        ]

    class Strip(App[None]):
        def compose(self) -> ComposeResult:
            yield FindingsStrip()

    app = Strip()
    async with app.run_test(size=(80, 10)) as pilot:
        strip = app.query_one(FindingsStrip)
        strip.show(found("oldest 10.0 s"))
        await pilot.pause()
        assert strip.lines_text[0].endswith("500 of 1000 workers are in GET /sleep")
        assert strip.display and strip.size.height == 2
        shown = strip.content
        layouts.clear()
        # WHEN the next poll's findings differ only in their details (a duration moved on)
        strip.show(found("oldest 11.0 s"))
        await pilot.pause()
        # THEN the strip keeps its text and nothing asked for a layout
        assert strip.content is shown
        assert layouts == []
        # AND WHEN a title changes in place (same number of lines)
        strip.show(found("oldest 12.0 s", title="501 of 1000 workers are in GET /sleep"))
        await pilot.pause()
        # THEN the new line shows, still without a layout of the screen
        assert strip.lines_text[0].endswith("501 of 1000 workers are in GET /sleep")
        assert layouts == []
        # AND WHEN a finding goes away the strip shrinks (that needs a layout)
        strip.show(found("x")[:1])
        await pilot.pause()
        assert strip.size.height == 1 and "FindingsStrip" in layouts
        # AND WHEN none is left it hides
        strip.show([])
        await pilot.pause()
        assert not strip.display


async def test_a_ticking_selected_thread_repaints_only_the_changed_lines_of_its_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a busy worker selected: its stack view shows its elapsed time in the title and in
    # "started … (… ago)", and the regions the view asks Textual to repaint are recorded
    from textual.geometry import Region

    from cpinspect.tui.widgets.stack_view import StackView

    asked: List[Any] = []
    original = StackView.refresh

    def refresh(self: StackView, *regions: Any, **kwargs: Any) -> Any:
        asked.append((regions, kwargs))
        return original(self, *regions, **kwargs)

    first = busy_update(T0)
    poller = FakePoller([first])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        view = app.threads_panel.stack_view
        assert "busy 13.0 s" in view.plain
        monkeypatch.setattr(StackView, "refresh", refresh)
        partial = view.partial_repaints
        # WHEN the next poll carries the thread over, 2 s later
        poller.set(ticked(first, 2.0))
        await poll(pilot)
        await pilot.pause()
        # THEN the view shows the new time
        assert "busy 15.0 s" in view.plain and "(15.0 s ago)" in view.plain
        # AND it repainted the two lines that hold it, each from where its words changed,
        # with no layout and no repaint of the whole view
        assert view.partial_repaints == partial + 1
        assert len(asked) == 1 and not asked[0][1]
        regions = asked[0][0]
        assert len(regions) == 2 and all(r.height == 1 and r.x > 0 for r in regions)
        # AND what is on screen is what a repaint of the whole view makes
        whole = Region(0, 0, view.size.width, view.size.height)
        shown = view.render_lines(whole)
        original(view)
        assert shown == view.render_lines(whole)


async def test_start_up_objects_are_frozen_out_of_the_collector_and_thawed_after() -> None:
    # GIVEN nothing frozen before the app starts
    import gc

    from cpinspect.tui.app import GC_YOUNG

    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    app = make_app(FakePoller([busy_update(T0)]))
    async with app.run_test(size=(120, 40)) as pilot:
        # WHEN the first data is on screen
        await first_data(pilot)
        await pilot.pause()
        # THEN what start-up made is frozen (full collections no longer scan it), and the
        # youngest generation is collected less often
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG, *before[1:])
    # AND once the app is gone it is collectable again (a process running many apps, as the
    # tests do, does not keep each one's objects for ever) and the thresholds are as they were
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
