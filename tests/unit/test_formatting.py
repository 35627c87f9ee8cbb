"""Pure renderers from the model: hand-built objects in, text out, no Textual."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from cpinspect.analysis import diff_snapshots
from cpinspect.formatting import (
    ThreadView,
    compact_names,
    display_value,
    format_age,
    format_diff,
    format_dump,
    format_duration,
    format_locals,
    format_report,
    format_stack_lines,
    frame_kind,
    frame_location,
    gauge,
    group_stacks,
    hidden_count,
    hidden_reason,
    is_saturated,
    largest_shared_stack,
    local_value,
    most_common_requests,
    pool_line,
    process_name,
    short_filename,
    sort_threads,
    source_description,
    sparkline,
    stack_summary,
    thread_row,
)
from cpinspect.model import (
    Frame,
    FrameLocals,
    LocalVar,
    Phase,
    PoolInfo,
    ProcessInfo,
    RequestInfo,
    Role,
    Snapshot,
    SourceKind,
    SourceLine,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
)

T0 = 1_750_000_000.0


def app(name: str, line: int, function: str, qualname: Optional[str] = None) -> Frame:
    return Frame(f"/srv/shop/{name}", line, function, qualname=qualname, is_app=True)


def lib(path: str, line: int, function: str) -> Frame:
    return Frame(f"/usr/lib/python3.11/{path}", line, function)


DB = app("db.py", 41, "fetch_all", "Database.fetch_all")
REPORTS = app("reports.py", 88, "export", "Reports.export")
RESPOND = lib("site-packages/cherrypy/_cprequest.py", 659, "respond")
BOOTSTRAP = lib("threading.py", 1038, "_bootstrap_inner")
EXPORT = (DB, REPORTS, RESPOND, BOOTSTRAP)


def thread(
    n: int,
    elapsed: Optional[float] = None,
    target: str = "",
    *,
    role: Role = Role.WORKER,
    stack: Sequence[Frame] = (),
    phase: Phase = Phase.HANDLER,
    gil: Optional[bool] = None,
    handler: Optional[str] = None,
) -> ThreadInfo:
    request = None
    if target:
        path, _, query = target.partition("?")
        request = RequestInfo(
            "GET", path, query, client="10.0.0.1", peer="127.0.0.1:5123", handler=handler
        )
    return ThreadInfo(
        ident=1000 + n,
        name=f"CP Server Thread-{n}",
        role=role,
        native_id=2000 + n,
        busy=request is not None,
        phase=phase if request is not None else Phase.IDLE,
        request=request,
        elapsed=elapsed,
        stack=tuple(stack),
        owns_gil=gil,
    )


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0, "0.0 s"),
        (0.43, "0.4 s"),
        (48.24, "48.2 s"),
        (59.96, "1 m 0 s"),
        (192.0, "3 m 12 s"),
        (7500.0, "2 h 5 m"),
        (2 * 86400 + 3 * 3600, "2 d 3 h"),
        (-1.5, "0.0 s"),
    ],
)
def test_format_duration(seconds: Optional[float], text: str) -> None:
    # GIVEN a number of seconds WHEN formatted THEN it reads as a short duration
    assert format_duration(seconds) == text


def test_format_age() -> None:
    assert format_age(0.4) == "0.4 s ago"
    assert format_age(None) == "—"


@pytest.mark.parametrize(
    ("cmdline", "name"),
    [
        (("/usr/bin/python3", "-u", "shop.py", "--port", "80"), "shop.py"),
        (("python3.11", "-X", "dev", "/srv/app/main.py"), "main.py"),
        (("python", "-m", "shop.app"), "shop.app"),
        (("python", "-mshop"), "shop"),
        (("python3", "-c", "import x"), "python3 -c"),
        (("/usr/bin/cherryd", "-c", "site.conf"), "cherryd"),
        (("python3",), "python3"),
        ((), "?"),
    ],
)
def test_process_name(cmdline: Tuple[str, ...], name: str) -> None:
    assert process_name(cmdline) == name


def test_short_filename_keeps_the_package_of_init_files() -> None:
    assert short_filename("/srv/shop/reports.py") == "reports.py"
    assert short_filename("/srv/shop/__init__.py") == "shop/__init__.py"


# --- sorting -----------------------------------------------------------------------------------


def test_sort_puts_the_gil_holder_then_busy_longest_first_then_idle_by_name() -> None:
    # GIVEN busy, idle and non-worker threads in no particular order
    threads = [
        thread(5),  # idle
        thread(1, 3.0, "/a"),
        thread(2, 48.2, "/b"),
        thread(3, 0.1, "/c", gil=True),
        thread(4),  # idle
        thread(9, role=Role.MAIN),
        thread(6, 48.2, "/d"),
    ]
    # WHEN sorted for each view
    busy = [t.name[-1] for t in sort_threads(threads, ThreadView.BUSY)]
    workers = [t.name[-1] for t in sort_threads(threads, ThreadView.WORKERS)]
    everything = [t.name[-1] for t in sort_threads(threads, ThreadView.ALL)]
    # THEN the GIL holder leads, then busy longest first (ties by name), then idle by name
    assert busy == ["3", "2", "6", "1"]
    assert workers == ["3", "2", "6", "1", "4", "5"]
    assert everything == ["3", "2", "6", "1", "4", "5", "9"]


# --- grouping ----------------------------------------------------------------------------------


def test_group_by_file_and_line_not_by_function_name() -> None:
    # GIVEN three threads at the same file:line, one of them reported under another name
    # (py-spy before 3.11 gives no qualified names), and one at another line of the same function
    renamed = (Frame(DB.filename, DB.lineno, "fetch_all_rows", is_app=True), *EXPORT[1:])
    other_line = (app("db.py", 43, "fetch_all"), *EXPORT[1:])
    threads = [
        thread(1, 10.0, "/r", stack=EXPORT),
        thread(2, 20.0, "/r", stack=renamed),
        thread(3, 5.0, "/r", stack=EXPORT),
        thread(4, 99.0, "/r", stack=other_line),
    ]
    # WHEN grouped
    groups = group_stacks(threads)
    # THEN the same locations make one group whatever the names, the largest group first
    assert [g.count for g in groups] == [3, 1]
    assert [t.name for t in groups[0].threads] == [
        "CP Server Thread-2",
        "CP Server Thread-1",
        "CP Server Thread-3",
    ]
    assert groups[0].oldest == 20.0
    assert groups[0].busy == 3
    assert groups[0].summary == (
        "3 threads share this stack: db.py:41 fetch_all_rows ← reports.py:88 export"
    )
    assert groups[1].summary == "1 thread: db.py:43 fetch_all ← reports.py:88 export"


def test_groups_of_equal_size_are_ordered_by_their_oldest_request() -> None:
    threads = [
        thread(1, 5.0, "/a", stack=(REPORTS,)),
        thread(2, 50.0, "/b", stack=(DB,)),
    ]
    assert [g.stack for g in group_stacks(threads)] == [(DB,), (REPORTS,)]


def test_threads_without_a_stack_form_their_own_group() -> None:
    groups = group_stacks([thread(1), thread(2)])
    assert groups[0].summary == "2 threads without a Python stack"
    assert largest_shared_stack([thread(1), thread(2)]) is None


def test_stack_summary_names_where_it_waits_then_the_app_frames() -> None:
    # GIVEN a stack whose innermost frame is a library call made by app code
    execute = lib("site-packages/psycopg2/extras.py", 146, "execute")
    # THEN the summary starts where the thread waits and goes on through the app frames
    assert stack_summary((execute, DB, RESPOND, REPORTS, BOOTSTRAP)) == (
        "extras.py:146 execute ← db.py:41 fetch_all ← reports.py:88 export"
    )
    # AND a stack without app frames shows its innermost frames
    assert stack_summary((RESPOND, BOOTSTRAP)) == (
        "_cprequest.py:659 respond ← threading.py:1038 _bootstrap_inner"
    )
    assert stack_summary(()) == "no Python stack"


def test_largest_shared_stack_needs_two_threads() -> None:
    one = [thread(1, 1.0, "/a", stack=EXPORT), thread(2, 1.0, "/b", stack=(DB,))]
    two = [*one, thread(3, 1.0, "/c", stack=EXPORT)]
    assert largest_shared_stack(one) is None
    shared = largest_shared_stack(two)
    assert shared is not None and shared.count == 2


def test_most_common_requests() -> None:
    threads = [thread(1, 1.0, "/a?x=1"), thread(2, 1.0, "/a?x=2"), thread(3, 1.0, "/b")]
    assert most_common_requests(threads) == "GET /a ×2 +1 more"
    assert most_common_requests([thread(4)]) == ""


# --- table cells -------------------------------------------------------------------------------


def test_thread_row_cells() -> None:
    busy = thread_row(thread(1, 12.34, "/slow?token=***", handler="Root.slow", gil=True))
    assert busy.state_cell == "● busy GIL"
    assert (busy.elapsed, busy.request, busy.client, busy.handler) == (
        "12.3 s",
        "GET /slow?token=***",
        "10.0.0.1",
        "Root.slow",
    )
    idle = thread_row(thread(2))
    assert (idle.state_cell, idle.elapsed, idle.request, idle.client) == ("○ idle", "", "", "")
    reading = ThreadInfo(3, "w", Role.WORKER, busy=True, phase=Phase.READING, elapsed=30.6)
    row = thread_row(reading)
    assert (row.state_cell, row.request, row.elapsed) == ("◔ read", "(reading request)", "30.6 s")
    writing = thread_row(thread(4, 1.0, "/big", phase=Phase.WRITING))
    assert writing.state_cell == "◑ write"
    assert thread_row(thread(5, role=Role.ACCEPTOR)).state_cell == "· —"


# --- pools -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy", "total", "cells"),
    [(0, 10, (0, 10)), (1, 40, (1, 9)), (5, 10, (5, 5)), (39, 40, (9, 1)), (10, 10, (10, 0))],
)
def test_gauge_shows_any_busy_worker_and_is_full_only_when_all_are(
    busy: int, total: int, cells: Tuple[int, int]
) -> None:
    assert gauge(busy, total, 10) == cells


def test_gauge_of_an_empty_pool() -> None:
    assert gauge(0, 0, 4) == (0, 4)
    assert gauge(3, 10, 0) == (0, 0)


def test_sparkline_uses_an_absolute_scale_newest_on_the_right() -> None:
    # GIVEN samples of busy workers in a pool of 10
    # THEN 0 is the lowest bar and 10 the highest, padded on the left while history is short
    assert sparkline([0, 5, 10], 5, top=10) == "  ▁▅█"
    # AND only the newest samples that fit are drawn
    assert sparkline([10, 10, 0, 0], 2, top=10) == "▁▁"
    # AND without a known top, the largest sample is the top
    assert sparkline([1, 2], 2) == "▅█"
    assert sparkline([], 3) == "   "
    assert sparkline([1], 0) == ""


def pool(busy: int, queued: int, size: int = 10) -> PoolInfo:
    return PoolInfo(
        bind="127.0.0.1:8080",
        size=size,
        busy=busy,
        idle=size - busy,
        queued=queued,
        min_threads=size,
        oldest_busy=48.2,
        keepalive=3,
    )


def test_a_pool_is_saturated_when_all_workers_are_busy_and_connections_wait() -> None:
    assert is_saturated(pool(10, 17))
    assert not is_saturated(pool(10, 0))
    assert not is_saturated(pool(9, 5))
    assert pool_line(pool(10, 17)) == (
        "Pool 127.0.0.1:8080  busy 10/10  idle 0  queued 17  oldest 48.2 s  keep-alive 3"
        "  ⚠ pool saturated"
    )


# --- dump --------------------------------------------------------------------------------------

INFO = ProcessInfo(
    pid=4121,
    cmdline=("/usr/bin/python3", "shop.py"),
    python="3.11.7",
    cherrypy="18.10.0",
    cheroot="10.0.1",
    agent_version="0.1.0",
    schema=1,
    engine_state="STARTED",
    autoreload=False,
)
SOURCE: Dict[Tuple[str, int], str] = {
    (DB.filename, DB.lineno): "        return cur.fetchall()",
    (REPORTS.filename, REPORTS.lineno): "        rows = db.fetch_all(sql)",
    (RESPOND.filename, RESPOND.lineno): "    LIBRARY LINE, NEVER SHOWN",
}


def source_line(filename: str, lineno: int) -> Optional[str]:
    return SOURCE.get((filename, lineno))


def dump_snapshot(**extra: object) -> ThreadsSnapshot:
    threads = (
        thread(
            1, 3.0, "/reports/export?year=2025&token=***", stack=EXPORT, handler="Reports.export"
        ),
        thread(2, 12.3, "/slow?password=***&q=shoes", stack=EXPORT, handler="Root.slow"),
        thread(3, stack=(lib("queue.py", 171, "get"), BOOTSTRAP)),
        thread(4, role=Role.MAIN),
    )
    fields: Dict[str, object] = {
        "taken_at": T0,
        "threads": threads,
        "pools": (pool(2, 0),),
        "requests_served": 1234,
    }
    fields.update(extra)
    return ThreadsSnapshot(**fields)  # type: ignore[arg-type]


def test_dump_lists_the_process_pools_and_busy_threads_longest_first() -> None:
    # GIVEN a snapshot with two busy workers, one idle worker and the main thread
    # WHEN dumped
    text = format_dump(INFO, dump_snapshot(), source_line, now=T0 + 0.5)
    lines = text.splitlines()
    # THEN a header says who the process is
    assert lines[0] == "Process 4121: /usr/bin/python3 shop.py"
    assert lines[1] == "Python 3.11.7  CherryPy 18.10.0  cheroot 10.0.1  agent 0.1.0 (schema 1)"
    assert lines[2] == "Engine STARTED  autoreload off"
    assert "(0.5 s ago)" in lines[3]
    # AND the pool numbers and the shared stack follow
    assert "Pool 127.0.0.1:8080  busy 2/10  idle 8  queued 0  oldest 48.2 s" in text
    assert "Requests served since the agent started: 1234" in text
    assert "4 threads, 3 workers, 2 busy" in text
    assert "2 threads share this stack: db.py:41 fetch_all ← reports.py:88 export" in text
    # AND threads come busy first, the longest first, each with its request and stack
    headers = [line for line in lines if line.startswith("Thread ")]
    assert headers == [
        'Thread 1002 (native 2002) "CP Server Thread-2" (worker, busy 12.3 s, handler)',
        'Thread 1001 (native 2001) "CP Server Thread-1" (worker, busy 3.0 s, handler)',
        'Thread 1003 (native 2003) "CP Server Thread-3" (worker, idle)',
        'Thread 1004 (native 2004) "CP Server Thread-4" (main)',
    ]
    assert "    GET /slow?password=***&q=shoes from 10.0.0.1 (peer 127.0.0.1:5123) → Root.slow" in (
        lines
    )


def test_dump_contains_the_path_and_passes_the_redacted_query_through_unchanged() -> None:
    text = format_dump(INFO, dump_snapshot(), source_line, now=T0)
    assert "GET /reports/export?year=2025&token=*** from 10.0.0.1" in text


def test_dump_puts_source_lines_under_app_frames_only() -> None:
    # GIVEN source for two app frames and (wrongly) for a library frame
    text = format_dump(INFO, dump_snapshot(), source_line, now=T0)
    block = text.split('"CP Server Thread-2"')[1].split("\n\n")[0].splitlines()
    # THEN the stack is innermost first, each app frame followed by its line, stripped
    assert block[2:] == [
        "    Database.fetch_all (/srv/shop/db.py:41)",
        "        return cur.fetchall()",
        "    Reports.export (/srv/shop/reports.py:88)",
        "        rows = db.fetch_all(sql)",
        "    respond (/usr/lib/python3.11/site-packages/cherrypy/_cprequest.py:659)",
        "    _bootstrap_inner (/usr/lib/python3.11/threading.py:1038)",
    ]
    assert "LIBRARY LINE" not in text


def test_dump_without_source_lines_or_stacks() -> None:
    text = format_dump(INFO, dump_snapshot(), lambda f, n: None, now=T0)
    assert "return cur.fetchall()" not in text
    assert "    (no Python stack)" in text


def test_dump_explains_missing_pools_and_lists_probe_errors() -> None:
    snap = dump_snapshot(
        pools=(),
        pools_available=False,
        pools_note="no cheroot server found",
        errors=("routes: RuntimeError('x')",),
    )
    text = format_dump(None, snap, source_line, now=T0)
    assert text.startswith("Process: unknown")
    assert "pool numbers unavailable: no cheroot server found" in text
    assert text.endswith(
        "Probe errors (the rest of the data is valid):\n  - routes: RuntimeError('x')\n"
    )


def test_dump_says_when_outer_frames_were_cut() -> None:
    snap = dump_snapshot(
        threads=(ThreadInfo(7, "deep", Role.WORKER, busy=True, stack=(DB,), stack_truncated=12),)
    )
    assert "    … 12 outer frames not shown" in format_dump(INFO, snap, source_line, now=T0)


# --- py-spy: sources, native frames, the GIL, local variables ----------------------------------


def test_source_description_says_when_py_spy_stands_in_for_the_agent() -> None:
    assert source_description(SourceKind.AGENT) == "agent"
    assert source_description(SourceKind.PYSPY, None) == "py-spy"
    assert source_description(SourceKind.AGENT, SourceKind.AGENT) == "agent"
    assert source_description(SourceKind.AGENT, SourceKind.PYSPY) == (
        "py-spy (agent not answering)"
    )
    assert source_description(SourceKind.FILE, SourceKind.PYSPY) == "py-spy (instead of file)"


def test_native_frames_are_tagged_c_and_located_by_library_when_they_have_no_line() -> None:
    libpython = Frame("/usr/lib/libpython3.11.so.1.0", 0, "PyObject_Call", native=True)
    sre = Frame("Modules/_sre/sre.c", 772, "pattern_search", native=True)
    assert (frame_kind(libpython), frame_location(libpython)) == ("c", "libpython3.11.so.1.0")
    assert (frame_kind(sre), frame_location(sre)) == ("c", "sre.c:772")
    assert (frame_kind(DB), frame_kind(RESPOND)) == ("app", "lib")
    assert format_stack_lines((libpython, sre, DB), None) == [
        "    PyObject_Call (/usr/lib/libpython3.11.so.1.0) [native]",
        "    pattern_search (Modules/_sre/sre.c:772) [native]",
        "    Database.fetch_all (/srv/shop/db.py:41)",
    ]


def test_the_group_holding_the_gil_comes_first_and_knows_its_holder() -> None:
    # GIVEN three threads sharing a stack and one, alone in a regex, holding the GIL
    regex = (lib("re/__init__.py", 176, "search"), REPORTS)
    threads = [
        thread(1, 30.0, "/r", stack=EXPORT),
        thread(2, 20.0, "/r", stack=EXPORT),
        thread(3, 10.0, "/r", stack=EXPORT),
        thread(4, 1.0, "/s", stack=regex, gil=True),
    ]
    groups = group_stacks(threads)
    # THEN its group leads, though smaller
    assert [g.count for g in groups] == [1, 3]
    holder = groups[0].gil_holder
    assert holder is not None and holder.name == "CP Server Thread-4"
    assert groups[1].gil_holder is None


def var(name: str, value: str, sensitive: bool = False, is_arg: bool = False) -> LocalVar:
    return LocalVar(name, value, is_arg=is_arg, sensitive=sensitive)


@pytest.mark.parametrize(
    ("variable", "reason"),
    [
        (var("api_token", "'x'", True), "secret-looking name"),
        (var("password", "'x'", True), "secret-looking name"),
        (var("environ", "{'HTTP_COOKIE': 'sid=1'}", True), "cookie or authorization"),
        (var("headers", "{'Authorization': 'Basic x'}", True), "cookie or authorization"),
        (var("hdr", '"Bearer abc.def"', True), "cookie or authorization"),
        (var("body", "'" + "x" * 300 + "'", True), "long value"),
        (var("text", '"aaaa..."', True), "long value"),
        (var("params", '{"api_key": "x"}', True), "secret-looking key inside"),
    ],
)
def test_a_hidden_value_says_why(variable: LocalVar, reason: str) -> None:
    assert hidden_reason(variable) == reason


def test_local_values_are_hidden_until_revealed_and_always_made_safe_for_a_terminal() -> None:
    secret = var("token", "'abc'", sensitive=True)
    assert local_value(secret, revealed=False) == "***"
    assert local_value(secret, revealed=True) == "'abc'"
    # control characters never reach the terminal raw; huge values are capped
    assert display_value("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\nc"
    capped = display_value("x" * 30, limit=10)
    assert capped == "x" * 10 + "… (20 more characters)"
    assert hidden_count([secret, var("a", "1"), var("b", "2", True)]) == 2


def test_format_locals_lists_frames_innermost_first_with_secrets_hidden() -> None:
    locals_ = ThreadLocals(
        ident=1003,
        name="CP Server Thread-3",
        taken_at=T0,
        frames=(
            FrameLocals(DB, (var("sql", "'SELECT 1'", is_arg=True), var("pwd", "'hunter2'", True))),
            FrameLocals(REPORTS, ()),
        ),
    )
    assert format_locals(locals_) == [
        'Locals of thread 1003 "CP Server Thread-3" (innermost frame first)',
        "    Database.fetch_all (db.py:41)",
        "        arg sql = 'SELECT 1'",
        "            pwd = ***  (hidden: secret-looking name)",
        "    Reports.export (reports.py:88)",
        "        (no local variables)",
    ]
    assert "            pwd = 'hunter2'" in format_locals(locals_, reveal=True)


def test_the_largest_shared_stack_is_found_behind_a_smaller_group_holding_the_gil() -> None:
    regex = (lib("re/__init__.py", 176, "search"), REPORTS)
    threads = [
        thread(1, 3.0, "/r", stack=EXPORT),
        thread(2, 2.0, "/r", stack=EXPORT),
        thread(3, 1.0, "/s", stack=regex, gil=True),
    ]
    shared = largest_shared_stack(threads)
    assert shared is not None and shared.count == 2 and shared.stack == EXPORT


# --- dump: identical stacks without a request --------------------------------------------------

IDLE_STACK = (
    lib("threading.py", 320, "wait"),
    lib("queue.py", 171, "get"),
    lib("site-packages/cheroot/workers/threadpool.py", 113, "run"),
    BOOTSTRAP,
)


def test_dump_prints_the_stack_of_thirty_idle_workers_once() -> None:
    # GIVEN one busy worker and thirty idle workers waiting in the same place
    idle = tuple(thread(n, stack=IDLE_STACK) for n in range(2, 32))
    busy = thread(1, 3.0, "/reports/export", stack=EXPORT, handler="Reports.export")
    snap = dump_snapshot(threads=(busy, *idle))
    # WHEN dumped
    text = format_dump(INFO, snap, source_line, now=T0)
    lines = text.splitlines()
    # THEN the busy worker keeps its own entry, with its request and stack
    assert 'Thread 1001 (native 2001) "CP Server Thread-1" (worker, busy 3.0 s, handler)' in lines
    # AND the idle workers share one header naming them all, then the stack once
    assert "30 threads share this stack: CP Server Thread-2…-31 (idle)" in lines
    assert text.count("    get (/usr/lib/python3.11/queue.py:171)") == 1
    assert not [line for line in lines if "(worker, idle)" in line]


def test_dump_groups_only_threads_with_the_same_stack_and_no_request() -> None:
    # GIVEN two idle workers in one stack, one alone in another, and two busy in the same stack
    threads = (
        thread(1, 3.0, "/a", stack=EXPORT),
        thread(2, 2.0, "/b", stack=EXPORT),
        thread(3, stack=IDLE_STACK),
        thread(4, stack=IDLE_STACK),
        thread(5, stack=(BOOTSTRAP,)),
    )
    text = format_dump(INFO, dump_snapshot(threads=threads), source_line, now=T0)
    # THEN the busy ones keep their entries, the two idle ones share one, the lone one is alone
    assert text.count("(worker, busy") == 2
    assert "2 threads share this stack: CP Server Thread-3, -4 (idle)" in text
    assert '"CP Server Thread-5" (worker, idle)' in text


def test_compact_names_run_numbers_together() -> None:
    names = [f"CP Server Thread-{n}" for n in (1, 2, 4, 5, 6, 9)] + ["MainThread"]
    assert compact_names(names) == "CP Server Thread-1, -2, -4…-6, -9, MainThread"
    assert compact_names(["a", "b", "c"], limit=2) == "a, b, … and 1 more"


# --- the report beside a snapshot file ---------------------------------------------------------


def report_snapshot(taken_at: float = T0, **extra: object) -> Snapshot:
    """Two busy workers in one stack, one on another holding the GIL, two idle, the main thread."""
    threads = (
        thread(1, 3.0, "/reports/export?year=2025&token=***", stack=EXPORT, handler="R.export"),
        thread(2, 12.3, "/reports/export?year=2024", stack=EXPORT, handler="R.export"),
        thread(3, 0.5, "/regex", stack=(app("regex.py", 7, "match"), BOOTSTRAP), gil=True),
        thread(4, stack=IDLE_STACK),
        thread(5, stack=IDLE_STACK),
        thread(6, role=Role.MAIN, stack=(lib("threading.py", 331, "wait"),)),
    )
    fields: Dict[str, object] = {
        "taken_at": taken_at,
        "source": SourceKind.BOTH,
        "info": INFO,
        "threads": ThreadsSnapshot(taken_at, threads, pools=(pool(3, 4, size=5),)),
        "source_lines": tuple(SourceLine(f, n, t) for (f, n), t in SOURCE.items()),
        "notes": ("agent not answering: threads from py-spy",),
        "gil_holder": 1003,
    }
    fields.update(extra)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_report_opens_with_who_when_and_how_it_was_captured() -> None:
    # GIVEN a snapshot taken while the agent did not answer
    text = format_report([report_snapshot()], now=T0 + 60)
    lines = text.splitlines()
    # THEN the title names the process, versions, time with its UTC offset, source and notes
    assert lines[0] == "cpinspect report: process 4121 shop.py"
    assert (
        "  versions  Python 3.11.7  CherryPy 18.10.0  cheroot 10.0.1  agent 0.1.0 (schema 1)"
        in (lines)
    )
    captured = next(line for line in lines if line.startswith("  captured  "))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \(1 m 0 s ago\)$", captured)
    assert "  source    agent+py-spy" in lines
    assert "  note      agent not answering: threads from py-spy" in lines
    assert "  GIL       held by CP Server Thread-3 (thread 1003)" in lines
    assert "\x1b" not in text


def test_report_lists_busy_workers_first_grouped_with_requests_and_source_lines() -> None:
    # GIVEN the snapshot WHEN reported
    text = format_report([report_snapshot()], now=T0)
    # THEN pools, the busy routes, busy workers, idle workers and other threads come in order
    order = [
        "── Pools",
        "── Busy workers by route",
        "── Busy workers (3)",
        "── Idle workers (2)",
        "── Other threads (1)",
    ]
    assert [text.index(heading) for heading in order] == sorted(text.index(h) for h in order)
    assert "2 of 5 workers: GET /reports/export → db.py:41 fetch_all  (oldest 12.3 s)" in text
    busy = text.split("── Busy workers (3)")[1].split("── Idle workers")[0]
    # AND the GIL holder's group leads, marked; then the two workers sharing a stack, once
    assert busy.index("1 thread: regex.py:7 match") < busy.index("2 threads share this stack")
    assert "◆ holds the GIL" in busy.split("2 threads share this stack")[0]
    group = busy.split("2 threads share this stack")[1]
    assert group.index("CP Server Thread-2") < group.index("CP Server Thread-1")
    assert (
        "GET /reports/export?year=2025&token=*** from 10.0.0.1 (peer 127.0.0.1:5123) → R.export"
        in (group)
    )
    assert group.count("Database.fetch_all (/srv/shop/db.py:41)") == 1
    # AND the source lines captured with the snapshot sit under the app frames
    assert "    Database.fetch_all (/srv/shop/db.py:41)\n        return cur.fetchall()" in group
    assert "LIBRARY LINE" not in text
    # AND idle workers are named compactly over one stack
    idle = text.split("── Idle workers (2)")[1]
    assert "2 threads share this stack" in idle and "  CP Server Thread-4, -5\n" in idle


def test_report_of_a_snapshot_without_threads_says_so() -> None:
    text = format_report([report_snapshot(threads=None, gil_holder=None)], now=T0)
    assert "no thread data in this snapshot" in text
    assert format_report([], now=T0) == "cpinspect report: no snapshot\n"


def series() -> List[Snapshot]:
    """Three snapshots 10 s apart: worker 1 stuck on one export (waiting), worker 2 stuck and
    spinning, worker 3 on a new search each time."""
    out = []
    for i in range(3):
        at = T0 + 10 * i
        threads = (
            stuck_worker(1, "/reports/export", at, cpu=1.0),
            stuck_worker(2, "/regex", at, cpu=1.0 + 9 * i),
            ThreadInfo(
                1003,
                "CP Server Thread-3",
                Role.WORKER,
                busy=True,
                phase=Phase.HANDLER,
                request=RequestInfo("GET", "/search", f"q={i}", started_at=at - 0.1),
                elapsed=0.1,
                cpu_time=2.0,
                stack=(app("search.py", 12, "query"), BOOTSTRAP),
            ),
        )
        out.append(Snapshot(at, SourceKind.AGENT, info=INFO, threads=ThreadsSnapshot(at, threads)))
    return out


def stuck_worker(n: int, path: str, at: float, cpu: float) -> ThreadInfo:
    return ThreadInfo(
        1000 + n,
        f"CP Server Thread-{n}",
        Role.WORKER,
        busy=True,
        phase=Phase.HANDLER,
        request=RequestInfo("GET", path, started_at=T0 - 40 + n),
        elapsed=at - (T0 - 40 + n),
        cpu_time=cpu,
        stack=EXPORT,
    )


def test_report_of_a_series_starts_with_what_only_a_series_tells() -> None:
    # GIVEN three snapshots WHEN reported together
    text = format_report(series(), now=T0 + 20)
    # THEN the stuck requests, hot routes, CPU and busy counts come before the last snapshot
    stuck = text.split("── Stuck throughout: the same request in all 3 snapshots (2)")[1]
    stuck = stuck.split("── Hot routes")[0]
    assert "CP Server Thread-1  39.0 s → 59.0 s  GET /reports/export" in stuck
    assert "at db.py:41 fetch_all · CPU 0.0 s, 0% of a core (waiting)" in stuck
    assert "CPU 18.0 s, 90% of a core (spinning)" in stuck
    assert "/search" not in stuck
    assert "  GET /search  3 requests in all 3 snapshots, up to 1 worker at once" in text
    assert "  spinning  CP Server Thread-2  CPU 18.0 s, 90% of a core (spinning)" in text
    assert "── Busy workers over time" in text
    # AND one line per snapshot, then the report of the last snapshot
    assert "  3. " in text.split("── Snapshots")[1]
    last = text.split("── The last snapshot")[1]
    assert "── Busy workers (3)" in last and "59.0 s" in last
    assert text.index("── Stuck throughout") < text.index("── The last snapshot")


def test_format_diff_names_thread_request_and_top_app_frame_in_each_section() -> None:
    # GIVEN the first and the last snapshot of the series
    first, _, last = series()
    # WHEN the diff is rendered
    lines = format_diff(diff_snapshots(first, last))
    text = "\n".join(lines)
    # THEN every section is there, each line naming the thread, its request and where it is
    for title in (
        "New threads (0)",
        "Gone (0)",
        "Still stuck: the same request in both (2)",
        "On a new request (1)",
        "Finished: idle now (0)",
    ):
        assert f"── {title}" in text
    assert any(
        line.startswith("  CP Server Thread-1")
        and "GET /reports/export" in line
        and "at db.py:41 fetch_all" in line
        for line in lines
    )
    assert "was: GET /search?q=0" in text
    assert "  CP Server Thread-2  CPU 18.0 s, 90% of a core (spinning)" in text


def test_the_report_shows_captured_locals_as_they_were_saved():
    # GIVEN a snapshot with one thread's locals, redacted as every file is
    from dataclasses import replace

    from cpinspect.formatting import format_report
    from cpinspect.snapshots import redacted, snapshot_from_update
    from tests.tui.fakes import incident_update, thread_locals

    snap = snapshot_from_update(incident_update())
    saved = redacted(replace(snap, locals=(thread_locals(),)), reveal=False)
    # WHEN the report is made
    text = format_report([saved], saved.taken_at)
    # THEN the locals are there, frame by frame, the hidden ones as ***
    part = text.split("Local variables (1 thread)", 1)[1]
    assert "Search.find (search.py:12)" in part
    assert "api_token = ***" in part and "limit = 50" in part


def test_lock_lines_say_what_a_thread_waits_on_and_holds() -> None:
    from cpinspect.formatting import lock_lines
    from cpinspect.model import LockHeld, LockWait, Role, ThreadInfo

    # GIVEN a thread the agent saw waiting on an RLock, and one inside a with-block on a lock
    waiter = ThreadInfo(
        1,
        "CP Server Thread-4",
        Role.WORKER,
        wait=LockWait("self.lock", "L1", "_thread.RLock", "/srv/app/ledger.py", 41, owner=7),
    )
    holder = ThreadInfo(
        7,
        "CP Server Thread-7",
        Role.WORKER,
        holds=(LockHeld("self.lock", "L1", "/srv/app/ledger.py", 37),),
    )
    # THEN each says it in one line, the file shortened; a thread with neither says nothing
    assert lock_lines(waiter) == [
        "waits on self.lock (_thread.RLock) at ledger.py:41  owner ident 7"
    ]
    assert lock_lines(holder) == [
        "holds self.lock (with-block at ledger.py:37) — other threads wait for it"
    ]
    assert lock_lines(ThreadInfo(2, "idle", Role.WORKER)) == []
