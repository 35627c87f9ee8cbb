"""The TUI's pure parts: state across updates, banner lines, column layout, stack folding."""

from __future__ import annotations

from dataclasses import replace

from cpinspect.model import Frame
from cpinspect.sources.base import LinkState
from cpinspect.tui.messages import Polled, SourceLinesLoaded
from cpinspect.tui.state import InspectorState
from cpinspect.tui.widgets.banner import BannerLine, Severity, banner_lines
from cpinspect.tui.widgets.stack_view import fold_library_runs
from cpinspect.tui.widgets.threads_table import THREAD_COLUMNS, layout_columns

from .fakes import INFO, T0, incident_update, snapshot, update, worker


def test_state_keeps_a_bounded_busy_history_per_pool() -> None:
    # GIVEN a state keeping three samples
    state = InspectorState(history=3)
    # WHEN five updates with new data arrive
    for i, busy in enumerate([1, 2, 3, 4, 5]):
        state.apply(incident_update(T0 + i, busy=busy))
    # THEN the newest three remain, oldest first
    assert list(state.busy_history["127.0.0.1:8080"]) == [3, 4, 5]


def test_repeated_data_adds_no_sample() -> None:
    # GIVEN one live update, then the same data again as the link is lost
    state = InspectorState()
    live = incident_update(T0)
    state.apply(live)
    state.apply(replace(live, state=LinkState.LOST, message="gone"))
    # THEN the history has one sample and the state holds the newest update
    assert list(state.busy_history["127.0.0.1:8080"]) == [10]
    assert state.update is not None and state.update.state is LinkState.LOST


def test_requests_per_second_from_successive_counters() -> None:
    state = InspectorState()
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
    state = InspectorState()
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
    assert fold_library_runs(stack, expanded=False) == [lib(1), lib(2), app(3), lib(4), app(5), 3]
    assert fold_library_runs(stack, expanded=True) == list(stack)
    # a stack without app frames shows everything: there is nothing to fold around
    assert fold_library_runs((lib(1), lib(2), lib(3)), expanded=False) == [lib(1), lib(2), lib(3)]
