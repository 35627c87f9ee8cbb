"""The TUI's pure parts: state across updates, banner lines, column layout, stack folding."""

from __future__ import annotations

from dataclasses import replace

from cpinspect.model import Frame, SourceKind
from cpinspect.sources.base import LinkState
from cpinspect.tui.messages import Polled, SourceLinesLoaded
from cpinspect.tui.store import Store, with_gil_holder
from cpinspect.tui.widgets.banner import BannerLine, Severity, banner_lines
from cpinspect.tui.widgets.stack_view import Folded, fold_library_runs
from cpinspect.tui.widgets.threads_table import THREAD_COLUMNS, layout_columns

from .fakes import INFO, T0, incident_update, snapshot, update, worker


def test_state_keeps_a_bounded_busy_history_per_pool() -> None:
    # GIVEN a state keeping three samples
    state = Store(history=3)
    # WHEN five updates with new data arrive
    for i, busy in enumerate([1, 2, 3, 4, 5]):
        state.apply(incident_update(T0 + i, busy=busy))
    # THEN the newest three remain, oldest first
    assert list(state.busy_history["127.0.0.1:8080"]) == [3, 4, 5]


def test_repeated_data_adds_no_sample() -> None:
    # GIVEN one live update, then the same data again as the link is lost
    state = Store()
    live = incident_update(T0)
    state.apply(live)
    state.apply(replace(live, state=LinkState.LOST, message="gone"))
    # THEN the history has one sample and the state holds the newest update
    assert list(state.busy_history["127.0.0.1:8080"]) == [10]
    assert state.update is not None and state.update.state is LinkState.LOST


def test_requests_per_second_from_successive_counters() -> None:
    state = Store()
    state.apply(incident_update(T0, served=100))
    assert state.requests_per_second() is None
    state.apply(incident_update(T0 + 2, served=110))
    assert state.requests_per_second() == 5.0
    # WHEN the counter goes backwards (the agent was reinstalled) THEN it starts over
    state.apply(incident_update(T0 + 3, served=4))
    assert state.requests_per_second() is None
    state.apply(incident_update(T0 + 4, served=6))
    assert state.requests_per_second() == 2.0


def test_a_new_pid_restarts_the_rate() -> None:
    state = Store()
    state.apply(incident_update(T0, served=100))
    state.apply(incident_update(T0 + 1, served=200))
    restarted = incident_update(T0 + 2, served=300)
    state.apply(replace(restarted, info=replace(INFO, pid=4250)))
    assert state.requests_per_second() is None


def test_a_newer_poll_result_supersedes_a_queued_one() -> None:
    # GIVEN two poll results queued for a UI that fell behind
    older, newer = Polled(incident_update(T0)), Polled(None, "OSError: refused")
    # THEN the newer replaces the older, and nothing else is swallowed
    assert older.can_replace(newer)
    assert not older.can_replace(SourceLinesLoaded({}))


def test_banner_lines() -> None:
    live = update(snapshot([worker(1, 1.0, "/")]))
    assert banner_lines(live, None) == []
    assert banner_lines(None, "OSError: refused") == [
        BannerLine(Severity.ERROR, "poll failed: OSError: refused")
    ]
    lost = replace(live, state=LinkState.LOST, message="")
    assert banner_lines(lost, None) == [
        BannerLine(Severity.ERROR, "target stopped answering — showing the last data")
    ]
    warned = replace(live, warnings=("a", "a", "b"))
    assert [line.text for line in banner_lines(warned, None)] == ["a", "b"]


def test_columns_fit_the_width_dropping_the_least_useful_first() -> None:
    content = {"state": 6, "elapsed": 6, "request": 60, "client": 9, "handler": 14}
    wide = layout_columns(THREAD_COLUMNS, 120, content)
    assert [c.key for c in wide] == ["state", "elapsed", "request", "client", "handler"]
    # fixed columns shrink to their content (at least their label); request takes the rest
    assert [c.width for c in wide] == [6, 7, 120 - 6 - 7 - 9 - 14 - 10, 9, 14]
    assert [c.key for c in layout_columns(THREAD_COLUMNS, 60, content)] == [
        "state",
        "elapsed",
        "request",
        "client",
    ]
    assert [c.key for c in layout_columns(THREAD_COLUMNS, 40, content)] == [
        "state",
        "elapsed",
        "request",
    ]


def app(n: int) -> Frame:
    return Frame(f"/srv/app/m{n}.py", n, f"f{n}", is_app=True)


def lib(n: int) -> Frame:
    return Frame(f"/usr/lib/l{n}.py", n, f"g{n}")


def test_runs_of_library_frames_fold_but_the_innermost_frame_always_shows() -> None:
    stack = (lib(1), lib(2), app(3), lib(4), app(5), lib(6), lib(7), lib(8))
    assert fold_library_runs(stack, expanded=False) == [
        lib(1),
        lib(2),
        app(3),
        lib(4),
        app(5),
        Folded(3),
    ]
    assert fold_library_runs(stack, expanded=True) == list(stack)
    # a stack without app frames shows everything: there is nothing to fold around
    assert fold_library_runs((lib(1), lib(2), lib(3)), expanded=False) == [lib(1), lib(2), lib(3)]


def native(n: int, line: int = 0) -> Frame:
    return Frame(f"/usr/lib/libc{n}.so", line, f"c{n}", native=True)


def test_the_innermost_run_of_native_frames_shows_and_outer_ones_fold_with_library_frames() -> None:
    # GIVEN a thread stuck in C (a regex engine) called from app code, with C frames outermost
    stack = (native(1), native(2), lib(3), app(4), lib(5), native(6), native(7))
    # THEN the C calls where it is stuck show, the outer run folds and says how many are native
    assert fold_library_runs(stack, expanded=False) == [
        native(1),
        native(2),
        lib(3),
        app(4),
        Folded(3, native=2),
    ]
    assert Folded(3, native=2).text == "… 3 library frames (2 native) (l shows them)"
    assert Folded(2, native=2).text == "… 2 native frames (l shows them)"
    # AND a native frame is never taken for an app frame, even if a source says so
    odd = (lib(1), Frame("/srv/app/ext.c", 9, "ext", is_app=True, native=True), lib(2))
    assert fold_library_runs(odd, expanded=False) == list(odd)


def test_the_fallback_message_is_a_warning_and_the_agent_answering_again_is_good_news() -> None:
    fallback = replace(
        update(snapshot([worker(1, 1.0, "/")])),
        message="agent not answering — the interpreter may be stuck",
        threads_source=SourceKind.PYSPY,
        stale=("pools",),
    )
    assert banner_lines(fallback, None) == [
        BannerLine(Severity.WARNING, "agent not answering — the interpreter may be stuck")
    ]
    # even if the session calls it a reconnection while py-spy still stands in
    assert banner_lines(replace(fallback, state=LinkState.RECONNECTED), None)[0].severity is (
        Severity.WARNING
    )
    back = replace(
        fallback, state=LinkState.RECONNECTED, message="agent answering again", threads_source=None
    )
    assert banner_lines(back, None) == [BannerLine(Severity.INFO, "agent answering again")]


def test_stale_pool_numbers_keep_their_age_and_add_no_sample() -> None:
    # GIVEN fresh pool numbers at T0, then py-spy standing in at T0+2 and T0+4
    state = Store()
    state.apply(incident_update(T0, served=100))
    for t in (T0 + 2, T0 + 4):
        state.apply(replace(incident_update(t, served=100), stale=("pools",)))
    # THEN the age counts from T0, the history holds one sample, no rate is made up
    assert state.pools_stale
    assert state.pools_age(T0 + 5.5) == 5.5
    assert list(state.busy_history["127.0.0.1:8080"]) == [10]
    assert state.requests_per_second() is None
    # AND fresh numbers end the staleness
    state.apply(incident_update(T0 + 6, served=130))
    assert not state.pools_stale
    assert state.pools_age(T0 + 6) == 0.0
    assert state.requests_per_second() == 5.0


def test_the_update_can_name_the_gil_holder_for_its_threads() -> None:
    # GIVEN threads without GIL ownership and an update naming one of them
    snap = snapshot([worker(1, 1.0, "/"), worker(2, 2.0, "/")])
    marked = with_gil_holder(snap, worker(2, 2.0).ident)
    assert marked is not None
    assert [t.owns_gil for t in marked.threads] == [None, True]
    # AND no holder, or an unknown ident, changes nothing
    assert with_gil_holder(snap, None) is snap
    state = Store()
    state.apply(replace(update(snap), gil_holder=worker(1, 1.0).ident))
    assert state.threads is not None and state.threads.threads[0].owns_gil
