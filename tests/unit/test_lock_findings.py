"""``cpinspect.findings.locks.lock_findings`` on hand-built snapshots (agent and py-spy shapes),
and the threads reader's ``wait``/``holds``."""

from __future__ import annotations

import json
from typing import Optional, Sequence, Tuple

from cpinspect.findings.locks import lock_expr_of_line, lock_findings
from cpinspect.model import (
    FindingSeverity,
    Frame,
    LockHeld,
    LockWait,
    Phase,
    PoolInfo,
    RequestInfo,
    Role,
    Snapshot,
    SourceKind,
    SourceLine,
    ThreadInfo,
    ThreadsSnapshot,
)
from cpinspect.protocol import (
    snapshots_document,
    snapshots_from_document,
    thread_from_json,
    threads_from_json,
)

LEDGER = "/srv/app/ledger.py"
NOW = 1000.0


def worker(
    ident: int,
    path: str = "/transfer",
    elapsed: float = 12.3,
    wait: Optional[LockWait] = None,
    holds: Tuple[LockHeld, ...] = (),
    stack: Tuple[Frame, ...] = (),
    method: str = "POST",
) -> ThreadInfo:
    return ThreadInfo(
        ident=ident,
        name="CP Server Thread-%d" % ident,
        role=Role.WORKER,
        busy=True,
        phase=Phase.HANDLER,
        request=RequestInfo(method=method, path=path, started_at=NOW - elapsed),
        elapsed=elapsed,
        pool="127.0.0.1:8080",
        wait=wait,
        holds=holds,
        stack=stack or (Frame(LEDGER, 41, "transfer", is_app=True),),
    )


def ledger_wait(obj: str = "tok1", owner: Optional[int] = None, kind: str = "_thread.lock"):
    return LockWait("LEDGER_LOCK", obj, kind, LEDGER, 41, owner)


def snapshot(
    threads: Sequence[ThreadInfo],
    size: int = 10,
    source: SourceKind = SourceKind.AGENT,
    lines: Sequence[SourceLine] = (),
    taken_at: float = NOW,
) -> Snapshot:
    pool = PoolInfo("127.0.0.1:8080", size, len(threads), max(0, size - len(threads)), 0, size)
    return Snapshot(
        taken_at=taken_at,
        source=source,
        threads=ThreadsSnapshot(taken_at=taken_at, threads=tuple(threads), pools=(pool,)),
        source_lines=tuple(lines),
    )


def test_waiters_on_one_lock_name_it_and_the_likely_holder():
    # GIVEN four workers waiting on LEDGER_LOCK and a fifth inside `with LEDGER_LOCK:`
    holder = worker(7, holds=(LockHeld("LEDGER_LOCK", "tok1", LEDGER, 41),), elapsed=12.3)
    waiters = [worker(i, elapsed=8.0, wait=ledger_wait()) for i in (3, 4, 5, 6)]
    # WHEN the locks family looks at the snapshot (pool of 10: 5 held by the lock)
    (finding,) = lock_findings(snapshot([holder, *waiters], size=12), ())
    # THEN one finding names the lock, the line, the likely holder and its request
    assert finding.id == "lock-contention:%s:41" % LEDGER
    assert finding.kind == "lock-contention"
    assert finding.title == (
        "4 workers wait on LEDGER_LOCK at ledger.py:41 "
        "(likely held by CP Server Thread-7 in POST /transfer for 12.3 s)"
    )
    # the holder first, then the waiters, each with its request
    assert [e.ref for e in finding.evidence] == ["7", "3", "4", "5", "6"]
    assert finding.evidence[0].kind == "thread"
    assert "likely holds LEDGER_LOCK" in finding.evidence[0].label
    assert "POST /transfer" in finding.evidence[0].label
    assert "waits" in finding.evidence[1].label and "ledger.py:41" in finding.evidence[1].label
    # waited 8 s (at most: no earlier poll): long -> critical
    assert finding.severity is FindingSeverity.CRITICAL
    assert any("inside `with LEDGER_LOCK:` at ledger.py:41" in d for d in finding.details)


def test_an_rlock_owner_is_the_certain_holder():
    # GIVEN two waiters on an RLock whose owner (from its repr) is thread 9
    owner = worker(9, path="/audit", method="GET", elapsed=3.0)
    waiters = [
        worker(
            i, path="/audit", method="GET", elapsed=1.0, wait=ledger_wait("r", 9, "_thread.RLock")
        )
        for i in (1, 2)
    ]
    # WHEN findings are computed, in a large pool and short waits
    (finding,) = lock_findings(snapshot([owner, *waiters], size=40), ())
    # THEN the holder is named without "likely"; a warning (short, small share of the pool)
    assert "(held by CP Server Thread-9 in GET /audit for 3.0 s)" in finding.title
    assert "likely" not in finding.title
    assert finding.severity is FindingSeverity.WARNING
    assert finding.evidence[0].ref == "9" and "holds LEDGER_LOCK" in finding.evidence[0].label


def test_no_finding_for_one_waiter_different_locks_or_brief_waits():
    # GIVEN one waiter; two waiters on different objects; two waiters of 0.1 s
    one = [worker(1, wait=ledger_wait())]
    different = [worker(1, wait=ledger_wait("a")), worker(2, wait=ledger_wait("b"))]
    brief = [worker(1, elapsed=0.1, wait=ledger_wait()), worker(2, elapsed=0.1, wait=ledger_wait())]
    # WHEN / THEN nothing is found: a hand-over, no shared lock, an ordinary moment of a busy app
    assert lock_findings(snapshot(one), ()) == []
    assert lock_findings(snapshot(different), ()) == []
    assert lock_findings(snapshot(brief), ()) == []


def test_history_tells_how_long_they_waited():
    # GIVEN two waiters whose requests are old (30 s) but who waited only since the last poll
    # (1 s ago), then the same two seen waiting in 7 earlier polls
    now = [worker(i, elapsed=30.0, wait=ledger_wait()) for i in (1, 2)]
    before_free = snapshot([worker(i, elapsed=29.0) for i in (1, 2)], size=50, taken_at=NOW - 1)
    # WHEN computed with a history in which they did not wait
    (fresh,) = lock_findings(snapshot(now, size=50), [before_free])
    # THEN the wait is bounded by the poll gap: a warning, at most 1.0 s
    assert fresh.severity is FindingSeverity.WARNING
    assert fresh.details[0].startswith("longest wait ≤1.0 s (at most")
    assert "waits ≤1.0 s on LEDGER_LOCK" in fresh.evidence[0].label
    # WHEN the earlier polls saw them waiting on the same lock for 7 s
    history = [snapshot(now, size=50, taken_at=NOW - k) for k in range(7, 0, -1)]
    (long_,) = lock_findings(snapshot(now, size=50), history)
    # THEN it is critical: they have waited 7 s at least (already in the oldest poll kept)
    assert long_.severity is FindingSeverity.CRITICAL
    assert long_.details[0].startswith("longest wait ≥7.0 s (already waiting")
    # WHEN the earlier polls saw them free, then waiting for the last 4 s
    free = [
        snapshot([worker(i, elapsed=30.0) for i in (1, 2)], taken_at=NOW - k) for k in (7, 6, 5)
    ]
    waiting = [snapshot(now, size=50, taken_at=NOW - k) for k in (4, 3, 2, 1)]
    (started,) = lock_findings(snapshot(now, size=50), free + waiting)
    # THEN the wait is about 4 s (seen starting between two polls): a warning
    assert started.severity is FindingSeverity.WARNING
    assert started.details[0].startswith("longest wait 4.0 s (seen starting")


def test_a_plain_lock_without_a_with_holder_says_holder_unknown():
    # GIVEN two waiters at `x.lock.acquire()` and no thread inside a with on it
    waiters = [worker(i, wait=LockWait("x.lock", "t", "_thread.lock", LEDGER, 60)) for i in (1, 2)]
    # WHEN computed
    (finding,) = lock_findings(snapshot(waiters), ())
    # THEN the holder is said to be unknown, and why
    assert finding.title.startswith("2 workers wait on x.lock at ledger.py:60 (holder unknown")
    assert finding.id == "lock-contention:%s:60" % LEDGER


def test_pyspy_only_the_same_with_line_in_the_source():
    # GIVEN py-spy's stacks (no agent): three threads whose innermost Python frame is on a line
    # that reads `with LEDGER_LOCK:`, under a native frame; one more elsewhere
    native = Frame("<native>", 0, "lock_PyThread_acquire_lock", native=True)
    at_with = (native, Frame(LEDGER, 41, "transfer"), Frame("/srv/app/api.py", 9, "post"))
    threads = [
        ThreadInfo(ident=i, name="CP Server Thread-%d" % i, role=Role.WORKER, stack=at_with)
        for i in (1, 2, 3)
    ]
    threads.append(worker(4, stack=(Frame(LEDGER, 50, "other"),)))
    lines = [
        SourceLine(LEDGER, 41, "        with LEDGER_LOCK:"),
        SourceLine(LEDGER, 50, "        total = compute()"),
    ]
    # WHEN computed from one py-spy look (no request ages, no history)
    (finding,) = lock_findings(snapshot(threads, source=SourceKind.PYSPY, lines=lines), ())
    # THEN the line names the lock; the holder is unknown; how long is not known
    assert finding.id == "lock-contention:%s:41" % LEDGER
    assert finding.title == "3 workers wait on LEDGER_LOCK at ledger.py:41 (holder unknown)"
    assert [e.ref for e in finding.evidence] == ["1", "2", "3"]
    assert any("py-spy" in d for d in finding.details)


def test_pyspy_only_no_finding_when_the_line_takes_no_lock_or_is_unknown():
    # GIVEN three py-spy threads on the same line, which is a plain call / was not captured
    stack = (Frame(LEDGER, 80, "fetch_all"),)
    threads = [
        ThreadInfo(ident=i, name="t%d" % i, role=Role.WORKER, stack=stack) for i in (1, 2, 3)
    ]
    plain = [SourceLine(LEDGER, 80, "    rows = cursor.fetchall()")]
    # WHEN / THEN no lock contention is claimed
    assert lock_findings(snapshot(threads, source=SourceKind.PYSPY, lines=plain), ()) == []
    assert lock_findings(snapshot(threads, source=SourceKind.PYSPY), ()) == []


def test_agent_snapshot_without_waits_claims_nothing_from_lines():
    # GIVEN the agent's threads (which carry waits when there are) standing on a with line
    stack = (Frame(LEDGER, 41, "transfer"),)
    threads = [worker(i, stack=stack) for i in (1, 2, 3)]
    lines = [SourceLine(LEDGER, 41, "with LEDGER_LOCK:")]
    # WHEN / THEN the agent said nobody waits: no finding
    assert lock_findings(snapshot(threads, lines=lines), ()) == []


def test_lock_expressions_read_from_a_source_line():
    assert lock_expr_of_line("    with LEDGER_LOCK:") == "LEDGER_LOCK"
    assert lock_expr_of_line("with self.lock as held:  # x") == "self.lock"
    assert lock_expr_of_line("    x.lock.acquire()") == "x.lock"
    assert lock_expr_of_line("    ok = self._cache_lock.acquire(timeout=5)") == "self._cache_lock"
    assert lock_expr_of_line("    with LOCKS[key]:") == "LOCKS[key]"
    assert lock_expr_of_line("    rows = fetch()") is None
    # a with on a call's result (a file, a connection) or on two things is no lock claim
    assert lock_expr_of_line("    with open(path) as f:") is None
    assert lock_expr_of_line("    with a, b:") is None
    assert lock_expr_of_line(None) is None


def test_reader_reads_wait_and_holds_and_a_delta_carries_them():
    # GIVEN a thread entry with wait and one with holds, as the agent sends them
    base = {"ident": 1, "name": "w", "role": "worker", "stack": []}
    waiting = dict(
        base,
        wait={
            "expr": "LEDGER_LOCK",
            "obj": "ab12",
            "type": "_thread.lock",
            "filename": LEDGER,
            "lineno": 41,
            "owner": None,
        },
    )
    holding = dict(
        base,
        ident=2,
        holds=[{"expr": "LEDGER_LOCK", "obj": "ab12", "filename": LEDGER, "lineno": 40}],
    )
    # WHEN read
    t1, t2 = thread_from_json(waiting), thread_from_json(holding)
    # THEN the model carries them; a thread without either has none
    assert t1.wait == LockWait("LEDGER_LOCK", "ab12", "_thread.lock", LEDGER, 41, None)
    assert t2.holds == (LockHeld("LEDGER_LOCK", "ab12", LEDGER, 40),)
    assert thread_from_json(base).wait is None and thread_from_json(base).holds == ()
    assert thread_from_json(dict(base, wait="junk", holds=[3])).wait is None
    # AND a delta that resends the waiting thread without its wait clears it
    full = threads_from_json({"taken_at": 1.0, "threads": [waiting, holding], "cursor": "c-1"})
    delta = threads_from_json(
        {"taken_at": 2.0, "delta": True, "threads": [base], "gone": [], "cursor": "c-2"}, full
    )
    assert [t.wait for t in delta.threads] == [None, None]
    assert delta.threads[1].holds == t2.holds


def test_a_snapshot_file_keeps_wait_and_holds():
    # GIVEN a snapshot whose threads wait on / hold a lock
    holder = worker(7, holds=(LockHeld("LEDGER_LOCK", "tok1", LEDGER, 41),))
    waiters = [worker(i, wait=ledger_wait(owner=7)) for i in (3, 4)]
    snap = snapshot([holder, *waiters])
    # WHEN written as a snapshot document (JSON) and read back
    (back,) = snapshots_from_document(json.loads(json.dumps(snapshots_document([snap]))))
    # THEN the lock data is intact, and so is the finding computed from it
    assert back.threads == snap.threads
    assert lock_findings(back, ()) == lock_findings(snap, ()) != []


def test_the_holder_evidence_points_at_its_with_on_this_lock_and_a_gone_owner_is_said():
    # GIVEN a holder inside with blocks on two locks, with waiters on the second only
    holds = (
        LockHeld("OTHER", "tok0", LEDGER, 30),
        LockHeld("LEDGER_LOCK", "tok1", LEDGER, 40),
    )
    holder = worker(7, holds=holds)
    waiters = [worker(i, wait=ledger_wait()) for i in (1, 2)]
    # WHEN computed
    (finding,) = lock_findings(snapshot([holder, *waiters]), ())
    # THEN the holder's line is its with on LEDGER_LOCK, and its request's age is explained
    assert finding.evidence[0].label.endswith("ledger.py:40")
    assert any("how long the holder's request has run" in d for d in finding.details)
    # AND an RLock whose owner is not among the threads is said so, by ident
    gone = [worker(i, wait=ledger_wait("r", 4242, "_thread.RLock")) for i in (1, 2)]
    (finding,) = lock_findings(snapshot(gone), ())
    assert finding.title.endswith("(held by thread 4242, not in this snapshot)")
