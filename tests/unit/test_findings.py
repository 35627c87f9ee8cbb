"""The findings engine on hand-built snapshots: each family's edge cases (no pools, py-spy only,
old files), what must not be called a finding, and a micro-measure of ``find_all`` at 1,000
threads (printed, not asserted). The staged real processes are in
tests/integration/test_findings.py."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

from cpinspect.findings import find_all
from cpinspect.findings.history import lean
from cpinspect.findings.threads import wait_kind
from cpinspect.model import (
    AppRoutes,
    AppSessions,
    Evidence,
    Finding,
    FindingSeverity,
    Frame,
    ListenQueue,
    LoggingInfo,
    LogRecord,
    LogRouting,
    LogState,
    Phase,
    PoolInfo,
    ProcessInfo,
    RequestInfo,
    Role,
    RouteNode,
    RoutesSnapshot,
    ServingPeer,
    SessionsSnapshot,
    Snapshot,
    SourceKind,
    StaticMount,
    ThreadInfo,
    ThreadsSnapshot,
)
from cpinspect.protocol import snapshots_document, snapshots_from_document
from cpinspect.sources.listenq import (
    listen_queues,
    parse_listeners,
    parse_waiting,
    with_waiting,
)

BIND = "127.0.0.1:8080"
DB = Frame("/srv/shop/db.py", 80, "fetch_all", is_app=True)
HANDLER = Frame("/srv/shop/reports.py", 22, "export", qualname="Reports.export", is_app=True)
SOCKET = Frame("/usr/lib/python3.11/socket.py", 705, "readinto")


def worker(
    i: int,
    path: Optional[str] = "/reports/export",
    elapsed: Optional[float] = 30.0,
    cpu: Optional[float] = 1.0,
    stack: Tuple[Frame, ...] = (SOCKET, DB, HANDLER),
    phase: Phase = Phase.HANDLER,
    started: Optional[float] = None,
) -> ThreadInfo:
    busy = path is not None or phase is Phase.READING
    request = None
    if path is not None:
        request = RequestInfo("GET", path, client="10.0.0.%d" % i, started_at=started)
    return ThreadInfo(
        ident=1000 + i,
        name="CP Server Thread-%d" % i,
        role=Role.WORKER,
        busy=busy,
        phase=phase if busy else Phase.IDLE,
        request=request,
        elapsed=elapsed if busy else None,
        cpu_time=cpu,
        stack=stack if busy else (),
        pool=BIND,
    )


def snap(
    threads: Sequence[ThreadInfo],
    at: float = 100.0,
    queued: int = 0,
    size: Optional[int] = None,
    served: Optional[int] = None,
    pools: bool = True,
    **kw: object,
) -> Snapshot:
    busy = sum(1 for t in threads if t.busy)
    n = size if size is not None else len(threads)
    pool = PoolInfo(BIND, n, busy, n - busy, queued, n)
    return Snapshot(
        taken_at=at,
        source=SourceKind.AGENT,
        threads=ThreadsSnapshot(
            at, tuple(threads), pools=(pool,) if pools else (), requests_served=served
        ),
        **kw,  # type: ignore[arg-type]
    )


def ids(findings: Sequence[Finding]) -> List[str]:
    return [f.id for f in findings]


def cpu_later(threads: Sequence[ThreadInfo], seconds: float, wall: float) -> List[ThreadInfo]:
    """The same threads, ``wall`` seconds older in their request, ``seconds`` of CPU more."""
    return [
        replace(t, cpu_time=(t.cpu_time or 0.0) + seconds, elapsed=(t.elapsed or 0.0) + wall)
        for t in threads
    ]


# --- pool starvation ------------------------------------------------------------------------


def test_a_saturated_pool_waiting_in_io_is_starved_and_named_by_route_and_frame() -> None:
    # GIVEN 5 of 6 workers in the export at db.py:80, one on /health, 3 queued, two polls
    before = [worker(i, elapsed=10.0 + i) for i in range(5)] + [worker(5, "/health", 0.5)]
    now = cpu_later(before, 0.02, 2.0)
    # WHEN the findings are named
    found = find_all(snap(now, at=102.0, queued=3), [snap(before, at=100.0, queued=3)])
    # THEN one critical starvation, its numbers and whether they wait in the title
    (f,) = found
    assert f.id == "pool-starvation:" + BIND and f.severity is FindingSeverity.CRITICAL
    assert f.title == (
        "5 of 6 workers are in GET /reports/export at db.py:80 fetch_all, waiting on I/O "
        "(1 % of a core each) (1 more elsewhere); 3 queued — the pool is starved"
    )
    # AND the export's workers first, the longest first, then the other one
    assert [e.ref for e in f.evidence] == ["1004", "1003", "1002", "1001", "1000", "1005"]
    assert f.evidence[0].label == (
        "CP Server Thread-4  GET /reports/export  16.0 s  db.py:80 fetch_all"
    )
    assert "timeout" in f.fix
    assert "connections queued for ≥ 2.0 s (seen in 2 polls, up to 3)" in f.details


def test_spinning_workers_are_said_to_spin_with_their_share_of_a_core() -> None:
    before = [worker(i, stack=(DB, HANDLER)) for i in range(4)]
    now = cpu_later(before, 1.9, 2.0)
    (f,) = find_all(snap(now, at=102.0, queued=1), [snap(before, at=100.0, queued=1)])
    assert "spinning on the CPU (95 % of a core each)" in f.title
    assert "GIL" in f.fix


def test_pure_python_spinners_sharing_the_gil_are_spinning_together() -> None:
    # GIVEN 4 workers using 24 % of a core each: one core between them (the GIL)
    before = [worker(i, stack=(DB, HANDLER)) for i in range(4)]
    now = cpu_later(before, 0.48, 2.0)
    (f,) = find_all(snap(now, at=102.0, queued=1), [snap(before, at=100.0, queued=1)])
    assert "spinning on the CPU (96 % of a core together: they take turns holding the GIL)" in (
        f.title
    )
    # AND one busy thread among waiting ones is not the group spinning
    mixed = cpu_later(before[:1], 1.9, 2.0) + cpu_later(before[1:], 0.01, 2.0)
    (g,) = find_all(snap(mixed, at=102.0, queued=1), [snap(before, at=100.0, queued=1)])
    assert "spinning" not in g.title


def test_a_full_pool_without_a_queue_counts_only_after_two_earlier_polls() -> None:
    threads = [worker(i, cpu=None) for i in range(4)]
    one = snap(threads, at=100.0)
    two = snap(threads, at=101.0)
    three = snap(threads, at=102.0)
    # a single full poll, or two, is load
    assert find_all(three, [two]) == ()
    # three in a row is starvation
    (f,) = find_all(three, [one, two])
    assert f.title.endswith("every worker busy for 3 polls — the pool is starved")
    # AND without CPU times or waiting frames it does not claim either
    assert "waiting" in f.title  # the socket frame says it waits
    bare = [worker(i, cpu=None, stack=(HANDLER,)) for i in range(4)]
    (g,) = find_all(snap(bare, at=102.0), [snap(bare, at=100.0), snap(bare, at=101.0)])
    assert "waiting" not in g.title and "spinning" not in g.title


def test_short_requests_turning_over_are_a_small_pool_not_a_starved_one() -> None:
    # GIVEN a queue in three polls in a row, the workers on new short requests each time
    polls = []
    for k in range(3):
        threads = [worker(i, "/page%d" % i, elapsed=0.05) for i in range(4)]
        polls.append(snap(threads, at=100.0 + k, queued=6, served=100 + 40 * k))
    found = find_all(polls[-1], polls[:-1])
    # THEN the queue is the finding, not starvation
    assert ids(found) == ["queue-wait:" + BIND]
    assert found[0].title == (
        "6 connections queued for ≥ 2.0 s (seen in 3 polls) while all 4 workers serve short "
        "requests — the pool is too small for the load"
    )
    assert found[0].severity is FindingSeverity.CRITICAL  # more queued than workers
    assert "server.thread_pool (4 now)" in found[0].fix
    # AND a queue seen once is nothing yet
    assert find_all(polls[-1], polls[-2:-1]) == ()


def test_workers_reading_are_slow_clients_not_starvation() -> None:
    readers = [worker(i, None, elapsed=12.0 + 9 * i, phase=Phase.READING) for i in range(3)]
    others = [worker(3, None), worker(4, None), worker(5, None), worker(6, None), worker(7, None)]
    (f,) = find_all(snap(readers + others))
    assert f.id == "slow-clients:" + BIND and f.severity is FindingSeverity.WARNING
    assert f.title == "3 of 8 workers held 12–30 s by clients still sending their request"
    assert "nginx" in f.fix and "server.socket_timeout" in f.fix
    # half the pool or more is critical, and a full pool of readers is not called starved
    full = [worker(i, None, elapsed=5.0, phase=Phase.READING) for i in range(4)]
    found = find_all(snap(full, queued=2))
    assert ids(found) == ["slow-clients:" + BIND]
    assert found[0].severity is FindingSeverity.CRITICAL
    # a read under 2 s is just a read
    assert find_all(snap([worker(0, None, elapsed=1.5, phase=Phase.READING)])) == ()


def test_no_pools_py_spy_only_and_no_threads_find_nothing_about_pools() -> None:
    busy = [worker(i, elapsed=None, cpu=None) for i in range(4)]
    spy = replace(snap(busy, pools=False), source=SourceKind.PYSPY)
    assert find_all(spy) == ()
    assert find_all(Snapshot(taken_at=1.0, source=SourceKind.FILE)) == ()


def test_wait_kinds_from_the_innermost_frames() -> None:
    lock = Frame("/usr/lib/python3.11/threading.py", 320, "wait")
    driver = Frame("/venv/lib/python3.11/site-packages/psycopg2/extras.py", 9, "execute")
    assert wait_kind(worker(0, stack=(SOCKET, DB))) == "I/O"
    assert wait_kind(worker(0, stack=(lock, DB))) == "a lock"
    assert wait_kind(worker(0, stack=(driver, DB))) == "the database"
    assert wait_kind(worker(0, stack=(DB, SOCKET))) is None  # the app's own frame on top
    line = Snapshot(taken_at=1.0, source=SourceKind.FILE, source_lines=())
    assert wait_kind(worker(0, stack=(DB,)), line) is None


# --- interpreter stuck ----------------------------------------------------------------------

REGEX = Frame("/usr/lib/python3.11/re/__init__.py", 166, "match")
REGEX_HANDLER = Frame("/srv/app.py", 70, "regex", is_app=True)


def stuck(**kw: object) -> Snapshot:
    holder = ThreadInfo(
        ident=1002,
        name="CP Server Thread-2",
        role=Role.WORKER,
        busy=True,
        stack=(REGEX, REGEX_HANDLER),
        pool=BIND,
        owns_gil=True,
    )
    base = snap([worker(0, None), worker(1, None), holder], pools=False)
    return replace(base, source=SourceKind.PYSPY, gil_holder=holder.ident, **kw)  # type: ignore[arg-type]


def test_a_stuck_interpreter_names_the_holder_its_last_request_and_the_regex() -> None:
    # GIVEN py-spy standing in for a silent agent, and the agent's last poll before it
    earlier = snap([worker(2, "/regex", elapsed=0.2, stack=(REGEX_HANDLER,))], at=90.0)
    (f,) = find_all(stuck(agent_unresponsive=True), [earlier])
    assert f.id == "interpreter-stuck" and f.severity is FindingSeverity.CRITICAL
    assert f.title == (
        "the interpreter is stuck: CP Server Thread-2 holds the GIL in a regular expression at "
        "__init__.py:166 match, serving GET /regex (at app.py:70 regex); no other thread "
        "runs and the agent cannot answer"
    )
    assert f.evidence[0] == Evidence(
        "thread", "1002", "CP Server Thread-2  GET /regex  __init__.py:166 match"
    )
    assert "the last one the agent saw" in f.details[0]


def test_stuck_read_from_an_old_files_notes_but_never_for_a_stopped_process() -> None:
    note = "agent not answering within 1.0 s — the interpreter may be stuck (GIL held by x)"
    assert ids(find_all(stuck(notes=(note,)))) == ["interpreter-stuck"]
    stopped = "pid 7 is stopped (state T: SIGSTOP or Ctrl-Z), so its agent cannot answer"
    assert find_all(stuck(notes=(stopped,))) == ()
    # the agent answering (py-spy merged in) is not stuck, GIL holder or not
    assert find_all(stuck()) == ()


def test_the_gil_passing_between_spinning_threads_is_contention_not_a_stuck_interpreter() -> None:
    # GIVEN two polls the agent did not answer (100 workers spinning in pure Python make it
    # queue for the GIL), py-spy naming another holder in each
    spin = Frame("/srv/app.py", 40, "spin", is_app=True)

    def spinning(ident: int, at: float) -> Snapshot:
        holder = ThreadInfo(
            ident=ident,
            name="CP Server Thread-%d" % ident,
            role=Role.WORKER,
            busy=True,
            stack=(spin,),
            pool=BIND,
            owns_gil=True,
        )
        other = replace(holder, ident=ident + 1, name="x", owns_gil=False)
        base = snap([worker(0, None), holder, other], pools=False, at=at)
        return replace(base, source=SourceKind.PYSPY, gil_holder=ident, agent_unresponsive=True)

    earlier = lean(spinning(7, 99.0))
    # WHEN the findings read the second
    (f,) = find_all(spinning(9, 100.0), [earlier])
    # THEN they say the agent waits its turn, not that one call holds the GIL
    assert f.id == "gil-contention" and f.severity is FindingSeverity.WARNING
    assert f.title == (
        "the agent waits for the GIL: it passes between threads running Python "
        "(CP Server Thread-9 now, CP Server Thread-7 a poll ago), 2 busy in app.py:40 spin"
    )
    # AND the same holder poll after poll is still a stuck interpreter
    (g,) = find_all(spinning(9, 100.0), [lean(spinning(9, 99.0))])
    assert g.id == "interpreter-stuck"


def test_at_the_first_poll_threads_that_ran_during_py_spys_read_say_contention() -> None:
    # GIVEN the first poll of an agent that never answered, py-spy naming one holder, and the
    # session's banner saying several threads ran during py-spy's read (no earlier poll)
    from cpinspect.findings.threads import GIL_MOVING_NOTE
    from cpinspect.sources.live import GIL_MOVING

    assert GIL_MOVING == GIL_MOVING_NOTE  # the session's words are the ones read here
    note = (
        "agent not answering within 1.0 s — busy, not stuck: %s (37 ran during py-spy's "
        "read) (GIL held by thread CP Server Thread-2); threads from py-spy" % GIL_MOVING
    )
    # WHEN the findings read it
    (f,) = find_all(stuck(agent_unresponsive=True, notes=(note,)))
    # THEN they say the agent waits its turn, not that the interpreter is stuck
    assert f.id == "gil-contention" and f.severity is FindingSeverity.WARNING
    assert f.title.startswith(
        "the agent waits for the GIL: it passes between threads running Python "
        "(CP Server Thread-2 now, others while py-spy read)"
    )
    # AND without that note the same first poll is a stuck interpreter
    assert ids(find_all(stuck(agent_unresponsive=True))) == ["interpreter-stuck"]
    # AND an agent only slow so far (not past its timeout) with the same note is contention too
    slow = (
        "agent slow: no answer within 0.5 s — busy, not stuck: %s (9 ran during py-spy's "
        "read); threads from py-spy" % GIL_MOVING
    )
    assert ids(find_all(stuck(agent_unresponsive=False, notes=(slow,)))) == ["gil-contention"]
    # AND a slow agent without it is no finding yet
    assert find_all(stuck(agent_unresponsive=False)) == ()
    # AND when py-spy's read fell between two turns (no holder named), the note alone says it
    base = stuck(agent_unresponsive=True, notes=(note,))
    nobody = replace(
        base,
        gil_holder=None,
        threads=replace(
            base.threads,
            threads=tuple(replace(t, owns_gil=False) for t in base.threads.threads),
        ),
    )
    (g,) = find_all(nobody)
    assert g.id == "gil-contention" and g.title == (
        "the agent waits for the GIL: it passes between threads running Python "
        "(37 ran during py-spy's read; none held it at py-spy's read)"
    )


# --- the kernel's accept queue --------------------------------------------------------------


def test_the_accept_queue_filling_over_polls() -> None:
    def at(t: float, n: int) -> Snapshot:
        return snap([worker(0, None)], at=t, listen_queues=(ListenQueue(BIND, n),))

    (f,) = find_all(at(103.0, 5), [at(100.0, 0), at(101.0, 2), at(102.0, 4)])
    assert f.id == "socket-queue:" + BIND and f.severity is FindingSeverity.WARNING
    assert f.title == (
        "5 connections wait in the kernel's accept queue of 127.0.0.1:8080 for ≥ 2.0 s "
        "(seen in 3 polls)"
    )
    assert find_all(at(103.0, 5), [at(102.0, 4)]) == ()
    full = snap([worker(0, None)], listen_queues=(ListenQueue(BIND, 6, backlog=6),))
    (g,) = find_all(full)
    assert g.severity is FindingSeverity.CRITICAL and g.title == (
        "6 connections wait in the kernel's accept queue of 127.0.0.1:8080 (room for 6) for "
        "≥ 0 ms (seen in 1 poll) — it is full: new connections are dropped"
    )


def test_a_busy_server_accepting_as_they_come_is_no_finding() -> None:
    # GIVEN one connection in the accept queue at every poll, each time another one (what a
    # busy, healthy server shows between two accept() calls)
    def at(t: float, *peers: str) -> Snapshot:
        queue = ListenQueue(BIND, len(peers), 64, waiting=tuple(sorted(peers)))
        return snap([worker(0, None)], at=t, listen_queues=(queue,))

    history = [at(100.0, "10.0.0.1:50000"), at(101.0, "10.0.0.2:50001")]
    # THEN it is no finding
    assert find_all(at(102.0, "10.0.0.3:50002"), history) == ()
    # WHEN one of them is still there three polls on, beside others
    history = [
        at(100.0, "10.0.0.1:50000", "10.0.0.9:50009"),
        at(101.0, "10.0.0.2:50001", "10.0.0.9:50009"),
    ]
    (f,) = find_all(at(102.0, "10.0.0.9:50009", "10.0.0.3:50002"), history)
    # THEN it waited that long: a finding, timed from the poll it was first seen in
    assert f.title == (
        "2 connections wait in the kernel's accept queue of 127.0.0.1:8080 (room for 64) for "
        "≥ 2.0 s (seen in 3 polls)"
    )
    # AND a poll that could not read the peers counts by its number, as before
    unknown = snap([worker(0, None)], at=101.0, listen_queues=(ListenQueue(BIND, 1, 64),))
    (g,) = find_all(at(102.0, "10.0.0.3:50002"), [at(100.0, "10.0.0.1:50000"), unknown])
    assert g.id == "socket-queue:" + BIND


def test_waiting_connections_parsed_from_proc_net_tcp() -> None:
    # GIVEN /proc/net/tcp lines: a listener, an accepted connection (it has an inode), one not
    # accepted yet (inode 0) and one not accepted whose client left (close-wait, inode 0)
    v4 = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
        "  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000  1000"
        "        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000"
        "        0 4243 1 0000000000000000 20 4 30 10 -1\n"
        "   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0"
        "        0 0 1 0000000000000000 20 4 30 10 -1\n"
        "   3: 0100007F:1F90 0100007F:D433 08 00000000:00000000 00:00000000 00000000     0"
        "        0 0 1 0000000000000000 20 4 30 10 -1\n"
    )
    # WHEN they are read
    waiting = parse_waiting(v4, False)
    # THEN the two not accepted are the ones waiting in the listener's queue
    assert waiting == [
        ("127.0.0.1", 8080, "127.0.0.1:54322"),
        ("127.0.0.1", 8080, "127.0.0.1:54323"),
    ]
    (queue,) = with_waiting(tuple(parse_listeners(v4, False)), waiting)
    assert queue.queued == 2 and queue.waiting == ("127.0.0.1:54322", "127.0.0.1:54323")
    # AND a listener on another address of that port does not take them
    (other,) = with_waiting((ListenQueue("10.0.0.1:8080", 0),), waiting)
    assert other.waiting == ()


def test_listeners_parsed_from_proc_net_tcp() -> None:
    v4 = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
        "  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000"
        "        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000"
        "        0 4243 1 0000000000000000 20 4 30 10 -1\n"
    )
    assert parse_listeners(v4, False) == [ListenQueue("127.0.0.1:8080", 3)]
    assert parse_listeners(v4, False, ports={9090}) == []
    assert parse_listeners(v4, False, inodes={"4242"}) == [ListenQueue("127.0.0.1:8080", 3)]
    v6 = (
        "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt uid"
        "  timeout inode\n"
        "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A"
        " 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0\n"
    )
    assert parse_listeners(v6, True) == [ListenQueue("[::]:8080", 0)]


def test_listen_queues_of_this_process_with_their_backlog() -> None:
    # GIVEN a listening socket of ours with a backlog of 7 and 2 connections not accepted
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(7)
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    peers = tuple(sorted("127.0.0.1:%d" % c.getsockname()[1] for c in clients))
    try:
        # WHEN the queues are read as the inspector reads a target's (netlink: one namespace)
        by_port = listen_queues(os.getpid(), [port])
        by_fd = [q for q in listen_queues(os.getpid()) if q.bind.endswith(":%d" % port)]
    finally:
        for c in clients:
            c.close()
        server.close()
    # THEN the queue and its room are known, found by port or among our open sockets alike,
    # with the two connections that wait in it, by their peers
    assert by_port == (ListenQueue("127.0.0.1:%d" % port, 2, 7, waiting=peers),)
    assert by_fd == list(by_port)


def test_a_connection_accepted_leaves_the_waiting_peers() -> None:
    # GIVEN a listening socket with two connections in its queue
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(7)
    port = server.getsockname()[1]
    first, second = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
    ports = {s.getsockname(): "127.0.0.1:%d" % s.getsockname()[1] for s in (first, second)}
    try:
        # WHEN the server accepts one
        accepted, peer = server.accept()
        (queue,) = listen_queues(os.getpid(), [port])
        # AND then the other
        other, _ = server.accept()
        (empty,) = listen_queues(os.getpid(), [port])
    finally:
        for s in (first, second, accepted, other, server):
            s.close()
    # THEN only the one not accepted yet waits, and nothing once both are
    left = {name for address, name in ports.items() if address != peer}
    assert queue.queued == 1 and queue.waiting == tuple(left)
    assert empty.queued == 0 and empty.waiting is None


# --- configuration --------------------------------------------------------------------------


def info(autoreload: Optional[bool], environment: Optional[str]) -> ProcessInfo:
    return ProcessInfo(
        pid=7,
        cmdline=("python", "app.py"),
        python="3.11",
        cherrypy="18.10",
        cheroot="11",
        agent_version="0.1.0",
        schema=1,
        engine_state="started",
        logging=LoggingInfo(),
        autoreload=autoreload,
        environment=environment,
    )


def plain(**kw: object) -> Snapshot:
    return Snapshot(taken_at=100.0, source=SourceKind.AGENT, **kw)  # type: ignore[arg-type]


def test_the_autoreloader_is_a_finding_outside_development_only() -> None:
    (f,) = find_all(plain(info=info(True, None)))
    assert f.id == "autoreload-on" and f.severity is FindingSeverity.WARNING
    assert "(no environment set)" in f.title
    assert ids(find_all(plain(info=info(True, "production")))) == ["autoreload-on"]
    assert find_all(plain(info=info(True, "development"))) == ()
    assert find_all(plain(info=info(False, None))) == ()
    assert find_all(plain(info=info(None, None))) == ()


def record(seq: int, **kw: object) -> LogRecord:
    fields: dict = {"time": 100.0 + seq, "level": "INFO", "logger": "cherrypy.access"}
    fields.update(kw)
    return LogRecord(seq=seq, message=fields.pop("message", ""), **fields)


def access(
    seq: int, path: str, status: int, ctype: Optional[str] = None, app: str = ""
) -> LogRecord:
    return record(
        seq,
        request=RequestInfo("GET", path, app=app),
        status=status,
        content_type=ctype,
        access=True,
    )


def test_errors_nowhere_counts_the_error_records_only() -> None:
    routing = LogRouting(screen=False, goes_nowhere=True, fix='log.error_file = "/var/log/x.log"')
    log = (
        record(
            1,
            level="ERROR",
            levelno=40,
            logger="cherrypy.error",
            message="[d] HTTP ",
            traceback="Traceback ...\nValueError: no",
        ),
        access(2, "/x", 500),
        record(3, level="INFO", logger="cherrypy.error", message="ENGINE started"),
    )
    (f,) = find_all(plain(log=log, log_state=LogState(routing=routing)))
    assert f.title.endswith("the agent's buffer caught 1 error so far that nobody else saw")
    assert f.evidence == (Evidence("log", "1", "ERROR HTTP  ValueError: no"),)
    assert f.fix == 'log.error_file = "/var/log/x.log"'
    fine = LogState(routing=replace(routing, goes_nowhere=False))
    assert find_all(plain(log=log, log_state=fine)) == ()


def routes(*apps: AppRoutes) -> RoutesSnapshot:
    return RoutesSnapshot(taken_at=100.0, apps=apps)


def test_a_static_mount_is_critical_once_requests_under_it_fail() -> None:
    unreadable = StaticMount(
        "/media",
        "staticdir",
        resolved="/srv/media",
        exists=True,
        readable=False,
        warnings=("unreadable by this process: /srv/media",),
    )
    good = StaticMount("/static", "staticdir", resolved="/srv/static", exists=True, readable=True)
    app = AppRoutes("/shop", static=(unreadable, good))
    (warn,) = find_all(plain(routes=routes(app)))
    assert warn.id == "static-unreadable:/shop|/media" and warn.severity is FindingSeverity.WARNING
    log = (
        access(1, "/shop/media/a.png", 403, app="/shop"),
        access(2, "/shop/static/a.png", 404, app="/shop"),  # another mount: not this one
        access(3, "/media/a.png", 403, app=""),  # another app
    )
    (crit,) = find_all(plain(routes=routes(app), log=log))
    assert crit.severity is FindingSeverity.CRITICAL and "(1 request ended 403)" in crit.title
    assert [e.ref for e in crit.evidence] == ["/shop|/media", "1"]


def test_mime_mismatch_ignores_charsets_failures_and_unknown_extensions() -> None:
    app = AppRoutes("", static=(StaticMount("/static", "staticdir", exists=True, readable=True),))
    log = (
        access(1, "/static/a.js", 200, "text/javascript; charset=utf-8"),
        access(2, "/static/b.js", 200, "application/javascript"),
        access(3, "/static/c.css", 404, "text/html"),
        access(4, "/static/d.xyz", 200, "text/html"),
        access(5, "/other/e.js", 200, "text/html"),  # not under a static mount
        access(6, "/static/f.woff2", 200, "text/html;charset=utf-8"),
        access(7, "/static/g.woff2", 200, "text/html;charset=utf-8"),
    )
    (f,) = find_all(plain(routes=routes(app), log=log))
    assert f.id == "static-mime:|/static|.woff2"
    assert f.title == (
        ".woff2 files under /static are served as text/html, not font/woff2: 2 requests "
        "(e.g. /static/f.woff2)"
    )
    assert "content_types = {'woff2': 'font/woff2'}" in f.fix


def node(path: str, kind: str, qualname: str) -> RouteNode:
    return RouteNode(path=path, name=path.rsplit("/", 1)[-1], kind=kind, qualname=qualname)


def test_forgotten_expose_matches_paths_like_the_dispatcher() -> None:
    app = AppRoutes(
        "/shop",
        nodes=(
            node("/reports/summary", "unexposed", "shop.Reports.summary"),
            node("/admin/index", "unexposed", "shop.Admin.index"),
            node("/reports/export", "handler", "shop.Reports.export"),
        ),
    )
    log = (
        access(1, "/shop/reports/summary/", 404, app="/shop"),
        access(2, "/shop/reports/summary", 404, app="/shop"),
        access(3, "/shop/admin/", 404, app="/shop"),
        access(4, "/shop/reports/export", 404, app="/shop"),  # exposed: the handler's 404
        access(5, "/shop/reports/summary", 200, app="/shop"),
        access(6, "/reports/summary", 404, app=""),  # another app
    )
    found = find_all(plain(routes=routes(app), log=log))
    assert ids(found) == [
        "forgotten-expose:/shop|/admin/index",
        "forgotten-expose:/shop|/reports/summary",
    ]
    assert found[1].title == (
        "GET /shop/reports/summary ended 404 ×2: Reports.summary exists but is not exposed — "
        "add @cherrypy.expose to Reports.summary"
    )
    # no 404, no finding: an unexposed helper nobody asked for is not an alarm
    assert find_all(plain(routes=routes(app))) == ()


def test_session_findings_come_with_navigable_evidence() -> None:
    sessions = SessionsSnapshot(
        taken_at=100.0,
        apps=(AppSessions(app="", backend="ram"),),
        peers=(ServingPeer(4242, "listens on port 8080 too"),),
    )
    (f,) = find_all(plain(sessions=sessions))
    assert f.id == "sessions-ram-not-shared:" and f.kind == "sessions-ram-not-shared"
    assert f.evidence == (Evidence("process", "4242", "pid 4242: listens on port 8080 too"),)


# --- the whole -----------------------------------------------------------------------------


def test_most_severe_first_then_by_id_and_old_files_string_evidence_still_opens() -> None:
    before = [worker(i) for i in range(4)]
    now = snap(
        cpu_later(before, 0.0, 1.0),
        at=101.0,
        queued=1,
        info=info(True, None),
    )
    found = find_all(now, [snap(before, queued=1)])
    assert ids(found) == ["pool-starvation:" + BIND, "autoreload-on"]
    # a file written before Evidence: evidence as strings
    doc = snapshots_document([replace(now, findings=found)])
    doc["snapshots"][0]["findings"][0]["evidence"] = ["thread:1000", "pid:7"]
    (read,) = snapshots_from_document(doc)
    assert read.findings[0].evidence == (
        Evidence("thread", "1000", "thread:1000"),
        Evidence("pid", "7", "pid:7"),
    )
    assert read.findings[1] == found[1]


def test_find_all_at_1000_threads_micro_measure() -> None:
    # GIVEN a 1,000-worker pool, every worker busy on 10 routes, with a 60-snapshot history
    def build(at: float, extra_cpu: float) -> Snapshot:
        threads = [
            worker(i, "/route%d" % (i % 10), elapsed=at - 50.0, cpu=1.0 + extra_cpu, started=50.0)
            for i in range(1000)
        ]
        return snap(threads, at=at, queued=5)

    history = [build(100.0 + k, 0.01 * k) for k in range(60)]
    now = build(160.0, 0.6)
    find_all(now, history)  # warm
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        found = find_all(now, history)
    per_call = (time.perf_counter() - started) / runs
    healthy = [worker(i, None) for i in range(1000)]
    quiet_history = [snap(healthy, at=100.0 + k) for k in range(60)]
    started = time.perf_counter()
    for _ in range(runs):
        quiet = find_all(snap(healthy, at=160.0), quiet_history)
    quiet_call = (time.perf_counter() - started) / runs
    print(
        "\nfind_all at 1,000 threads: starved %.2f ms, healthy %.2f ms per call"
        % (per_call * 1000, quiet_call * 1000)
    )
    # THEN the starvation is found (the numbers are printed, not asserted) and healthy is quiet
    assert ids(found) == ["pool-starvation:" + BIND] and quiet == ()
    assert found[0].title.startswith("100 of 1000 workers are in GET /route")


def test_a_family_that_fails_is_said_and_the_others_still_show(monkeypatch) -> None:
    # GIVEN the config family broken (a bug meeting data it did not expect)
    import cpinspect.findings as findings

    def broken(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
        raise KeyError("surprise")

    broken.__module__ = "cpinspect.findings.config"
    families = (findings.FAMILIES[0], findings.FAMILIES[1], broken)
    monkeypatch.setattr(findings, "FAMILIES", families)
    before = [worker(i) for i in range(4)]
    now = snap(cpu_later(before, 0.0, 1.0), at=101.0, queued=1)
    # WHEN the findings are named
    found = find_all(now, [snap(before, queued=1)])
    # THEN the starvation still shows, and the failure is said in one line
    assert ids(found) == ["pool-starvation:" + BIND, "findings-error:config"]
    assert found[1].severity is FindingSeverity.INFO
    assert found[1].title == "the config findings could not be worked out: KeyError: 'surprise'"


def test_py_spy_alone_every_worker_on_the_same_requests_poll_after_poll_is_starved() -> None:
    # GIVEN no pool numbers (py-spy alone, no agent): 4 of 4 workers on the export in three
    # polls running, the same requests each time
    def spied(threads: Sequence[ThreadInfo], at: float) -> Snapshot:
        return replace(
            snap([replace(t, pool=None) for t in threads], at=at, pools=False),
            source=SourceKind.PYSPY,
        )

    polls = [[worker(i, elapsed=10.0 + i + k) for i in range(4)] for k in range(3)]
    history = [spied(polls[0], 100.0), spied(polls[1], 101.0)]
    found = find_all(spied(polls[2], 102.0), history)
    # THEN the pool counted from the workers is starved, said to be counted so
    (f,) = [f for f in found if f.kind == "pool-starvation"]
    assert f.id == "pool-starvation:workers" and f.severity is FindingSeverity.CRITICAL
    assert f.title.startswith("4 of 4 workers are in GET /reports/export at db.py:80 fetch_all")
    assert f.title.endswith("every worker busy for 3 polls — the pool is starved")
    assert "counted from py-spy's stacks" in f.details[0]
    # AND busy workers on other requests in each poll (short ones turning over) are not
    turning = [[worker(i, path="/fast?n=%d" % (k * 4 + i)) for i in range(4)] for k in range(3)]
    history = [spied(turning[0], 100.0), spied(turning[1], 101.0)]
    assert not [
        f for f in find_all(spied(turning[2], 102.0), history) if f.kind == "pool-starvation"
    ]
    # AND one poll alone says nothing
    assert not find_all(spied(polls[2], 102.0), [])
