"""What the data means: hand-built snapshots in, plain results out (no text, no Textual)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from cpinspect import analysis, formatting
from cpinspect.analysis import (
    analyze_series,
    diff_snapshots,
    group_stacks,
    is_saturated,
    largest_shared_stack,
    route_groups,
    same_request,
)
from cpinspect.model import (
    Frame,
    Phase,
    PoolInfo,
    RequestInfo,
    Role,
    Snapshot,
    SourceKind,
    ThreadInfo,
    ThreadsSnapshot,
)

T0 = 1_750_000_000.0
APP = "/srv/shop"


def app(name: str, line: int, function: str) -> Frame:
    return Frame(f"{APP}/{name}", line, function, is_app=True)


def lib(name: str, line: int, function: str) -> Frame:
    return Frame(f"/usr/lib/python3.11/{name}", line, function)


OUTER = (lib("cherrypy/_cprequest.py", 659, "respond"), lib("threading.py", 1038, "_bootstrap"))
EXPORT = (lib("psycopg2/extras.py", 146, "execute"), app("db.py", 80, "fetchall"), *OUTER)
SEARCH = (app("search.py", 12, "query"), *OUTER)
SPIN = (app("regex.py", 7, "match"), *OUTER)
IDLE = (lib("threading.py", 320, "wait"), lib("queue.py", 171, "get"), OUTER[-1])


def worker(
    n: int,
    target: str = "",
    *,
    started: Optional[float] = None,
    at: float = T0,
    stack: Sequence[Frame] = IDLE,
    cpu: Optional[float] = 1.0,
    method: str = "GET",
) -> ThreadInfo:
    """Worker ``n``; busy on ``target`` since ``started`` when given one, seen at ``at``."""
    request = None
    elapsed = None
    if target:
        path, _, query = target.partition("?")
        begun = at - 1.0 if started is None else started
        request = RequestInfo(method, path, query, client="10.0.0.1", started_at=begun)
        elapsed = at - begun
    return ThreadInfo(
        ident=100 + n,
        name=f"CP Server Thread-{n}",
        role=Role.WORKER,
        busy=request is not None,
        phase=Phase.HANDLER if request is not None else Phase.IDLE,
        request=request,
        elapsed=elapsed,
        cpu_time=cpu,
        stack=tuple(stack),
    )


def snap(at: float, threads: Sequence[ThreadInfo], pools: Sequence[PoolInfo] = ()) -> Snapshot:
    return Snapshot(
        taken_at=at,
        source=SourceKind.AGENT,
        threads=ThreadsSnapshot(taken_at=at, threads=tuple(threads), pools=tuple(pools)),
    )


def pool(busy: int, queued: int, size: int = 4) -> PoolInfo:
    return PoolInfo("127.0.0.1:8080", size, busy, size - busy, queued, size)


# --- one snapshot ------------------------------------------------------------------------------


def test_route_groups_count_busy_workers_by_route_and_top_app_frame() -> None:
    # GIVEN 16 workers: 12 exporting (queries differ), 2 searching, 2 idle
    threads = [worker(n, f"/reports/export?year={n}", stack=EXPORT) for n in range(1, 13)]
    threads += [worker(13, "/search", stack=SEARCH), worker(14, "/search?q=x", stack=SEARCH)]
    threads += [worker(15), worker(16)]
    # WHEN grouped by route
    groups = route_groups(threads)
    # THEN the export group comes first, with its count out of all workers and its app frame
    assert [(g.method, g.path, g.count, g.workers) for g in groups] == [
        ("GET", "/reports/export", 12, 16),
        ("GET", "/search", 2, 16),
    ]
    assert groups[0].frame == EXPORT[1]
    assert groups[0].oldest == 1.0
    # AND formatting builds the one-line summary from it
    assert formatting.route_group_summary(groups[0]) == (
        "12 of 16 workers: GET /reports/export → db.py:80 fetchall"
    )


def test_the_same_route_stopped_in_two_places_makes_two_groups() -> None:
    # GIVEN two searches, one of them in another app frame
    threads = [worker(1, "/search", stack=SEARCH), worker(2, "/search", stack=SPIN)]
    # THEN they are grouped apart
    assert [g.frame for g in route_groups(threads)] == [SEARCH[0], SPIN[0]]


def test_grouping_and_saturation_live_in_analysis_and_are_still_importable_from_formatting() -> (
    None
):
    # GIVEN three threads, two in one stack
    threads = [worker(1, "/a", stack=EXPORT), worker(2, "/b", stack=EXPORT), worker(3)]
    # WHEN grouped by either module
    plain = group_stacks(threads)
    worded = formatting.group_stacks(threads)
    # THEN both find the same groups, and formatting's also carry their sentence
    assert [(g.count, g.stack) for g in plain] == [(g.count, g.stack) for g in worded]
    assert worded[0].summary.startswith("2 threads share this stack: extras.py:146 execute")
    shared = largest_shared_stack(threads)
    assert shared is not None and shared.count == 2
    assert formatting.is_saturated is is_saturated
    assert is_saturated(pool(4, 2)) and not is_saturated(pool(4, 0))


# --- one request across snapshots --------------------------------------------------------------


def test_one_request_is_one_thread_method_path_and_start() -> None:
    # GIVEN a worker seen twice on a request begun at T0, then on a new one to the same path
    first = worker(1, "/a", started=T0, at=T0 + 1)
    again = worker(1, "/a", started=T0, at=T0 + 5)
    newer = worker(1, "/a", started=T0 + 4, at=T0 + 5)
    other = worker(2, "/a", started=T0, at=T0 + 5)
    # THEN only the same start on the same thread is the same request
    assert same_request(first, T0 + 1, again, T0 + 5)
    assert not same_request(first, T0 + 1, newer, T0 + 5)
    assert not same_request(first, T0 + 1, other, T0 + 5)


def test_without_start_times_the_elapsed_time_tells_requests_apart() -> None:
    # GIVEN py-spy-like threads with elapsed but no start time
    def seen(elapsed: float) -> ThreadInfo:
        request = RequestInfo("GET", "/a")
        return ThreadInfo(1, "w", Role.WORKER, busy=True, request=request, elapsed=elapsed)

    # THEN 10 s later, 12 s elapsed is the same request, 3 s elapsed is a new one
    assert same_request(seen(2.0), T0, seen(12.0), T0 + 10)
    assert not same_request(seen(2.0), T0, seen(3.0), T0 + 10)


# --- a series ----------------------------------------------------------------------------------


def incident_series() -> Tuple[Snapshot, ...]:
    """Three snapshots 10 s apart: workers 1-2 stuck on one export each (1 spinning), workers
    3-4 on a new search each time, worker 5 on an export that ends before the last."""
    snaps = []
    for i in range(3):
        at = T0 + 10 * i
        threads = [
            worker(1, "/reports/export?year=2025", started=T0 - 30, at=at, stack=EXPORT, cpu=1.0),
            worker(
                2, "/reports/export?year=2024", started=T0 - 20, at=at, stack=SPIN, cpu=2 + 8 * i
            ),
            worker(3, f"/search?q={i}", started=at - 0.2, at=at, stack=SEARCH, cpu=5 + 0.1 * i),
            worker(4, f"/search?q=b{i}", started=at - 0.1, at=at, stack=SEARCH, cpu=None),
        ]
        threads.append(
            worker(5, "/reports/export", started=T0 - 1, at=at, stack=EXPORT)
            if i < 2
            else worker(5)
        )
        snaps.append(snap(at, threads, [pool(5 if i < 2 else 4, 3 - i, size=5)]))
    return tuple(snaps)


def test_a_request_held_in_every_snapshot_is_stuck_and_a_new_request_each_time_is_not() -> None:
    # GIVEN the series
    # WHEN analysed
    result = analyze_series(incident_series())
    # THEN workers 1 and 2 are stuck throughout, the oldest first, with their requests
    assert [(s.thread.name, s.request.path) for s in result.stuck] == [
        ("CP Server Thread-1", "/reports/export"),
        ("CP Server Thread-2", "/reports/export"),
    ]
    assert result.stuck[0].first_elapsed == 30.0
    assert result.stuck[0].thread.elapsed == 50.0
    # AND neither the searches (new each time) nor worker 5 (gone idle at the end) are stuck
    assert all(s.thread.ident not in (103, 104, 105) for s in result.stuck)


def test_a_route_busy_in_every_snapshot_on_new_requests_is_hot() -> None:
    # GIVEN the series WHEN analysed
    result = analyze_series(incident_series())
    # THEN /search is hot: six distinct requests, two workers at once, not stuck
    assert [(h.method, h.path, h.requests, h.most_busy, h.stuck) for h in result.hot] == [
        ("GET", "/search", 6, 2, 0)
    ]
    assert result.hot[0].frame == SEARCH[0]
    # AND /reports/export, busy throughout only through its stuck requests, is not hot


def test_cpu_between_the_first_and_the_last_snapshot_tells_spinning_from_waiting() -> None:
    # GIVEN the series (20 s): worker 2 used 16 s of CPU, worker 1 none, worker 4 has no times
    result = analyze_series(incident_series())
    # THEN worker 2 spins, 1 and 3 wait, 4 is unknown
    assert result.wall == 20.0
    spinning = result.cpu_of(102)
    assert spinning is not None and spinning.seconds == 16.0 and spinning.share == 0.8
    assert [c.name for c in result.spinning] == ["CP Server Thread-2"]
    waiting = [result.cpu_of(101), result.cpu_of(103)]
    assert [c.spinning if c else "missing" for c in waiting] == [False, False]
    unknown = result.cpu_of(104)
    assert unknown is not None and (unknown.seconds, unknown.spinning) == (None, None)
    # AND a stuck request carries its own CPU verdict
    assert [s.cpu.spinning for s in result.stuck] == [False, True]


def test_busy_counts_per_snapshot() -> None:
    result = analyze_series(incident_series())
    assert [(b.busy, b.workers, b.pool_size, b.queued, b.saturated) for b in result.busy] == [
        (5, 5, 5, 3, True),
        (5, 5, 5, 2, True),
        (4, 5, 5, 1, False),
    ]


def test_a_single_snapshot_or_one_without_threads_has_nothing_throughout() -> None:
    # GIVEN one snapshot, and a series where one snapshot lost its threads
    one = analyze_series(incident_series()[:1])
    holed = analyze_series((*incident_series()[:2], Snapshot(T0 + 30, SourceKind.PYSPY)))
    # THEN one snapshot says nothing about "throughout", and the empty one is skipped
    assert (one.snapshots, one.stuck, one.hot, one.cpu) == (1, (), (), ())
    assert (holed.snapshots, holed.skipped, len(holed.stuck)) == (2, 1, 3)


# --- two snapshots -----------------------------------------------------------------------------


def test_diff_sorts_threads_into_new_gone_stuck_new_request_and_finished() -> None:
    # GIVEN two snapshots 10 s apart
    a = snap(
        T0,
        [
            worker(1, "/export", started=T0 - 5, at=T0, stack=EXPORT, cpu=1.0),
            worker(2, "/search?q=1", at=T0, stack=SEARCH, cpu=1.0),
            worker(3, "/cart", at=T0, stack=SEARCH),
            worker(4),
            worker(9),
        ],
    )
    b = snap(
        T0 + 10,
        [
            worker(1, "/export", started=T0 - 5, at=T0 + 10, stack=EXPORT, cpu=1.5),
            worker(2, "/search?q=2", at=T0 + 10, stack=SEARCH, cpu=9.0),
            worker(3),
            worker(4, "/new", at=T0 + 10, stack=SEARCH),
            worker(7),
        ],
    )
    # WHEN compared
    diff = diff_snapshots(a, b)

    # THEN each thread lands where it belongs
    def names(changes: Sequence[analysis.ThreadChange]) -> List[str]:
        return [c.thread.name[-1] for c in changes]

    assert names(diff.new) == ["7"]
    assert names(diff.gone) == ["9"]
    assert names(diff.stuck) == ["1"]
    assert names(diff.new_request) == ["2", "4"]
    assert names(diff.finished) == ["3"]
    # AND a new request remembers the one before (or that the thread was idle)
    before = {c.thread.name[-1]: c.before for c in diff.new_request}
    assert before["2"] is not None and before["2"].request is not None
    assert before["2"].request.query == "q=1"
    assert before["4"] is not None and before["4"].request is None
    # AND the CPU each thread in both used, as seconds and share of a core, the most first
    assert diff.wall == 10.0
    top = diff.cpu[0]
    assert (top.name, top.seconds, top.share, top.spinning) == (
        "CP Server Thread-2",
        8.0,
        0.8,
        True,
    )
    one = next(c for c in diff.cpu if c.ident == 101)
    assert (one.seconds, one.share, one.spinning) == (0.5, 0.05, False)
    assert {c.ident for c in diff.cpu} == {101, 102, 103, 104}


def test_effective_config_moved_to_analysis() -> None:
    # GIVEN the names that used to live in formatting
    # THEN they are the analysis functions
    assert formatting.effective_config is analysis.effective_config
    assert formatting.tools_in_effect is analysis.tools_in_effect
    assert formatting.GLOBAL_ORIGIN == analysis.GLOBAL_ORIGIN
