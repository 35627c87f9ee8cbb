"""Joining the agent's threads with py-spy's, thread by thread (pure functions)."""

from __future__ import annotations

from dataclasses import replace

from cpinspect.model import Frame, Phase, PoolInfo, RequestInfo, Role, ThreadInfo, ThreadsSnapshot
from cpinspect.sources.merge import fallback_threads, gil_holder, merge_threads

APP = Frame("/srv/app/shop.py", 80, "export", "Reports.export", is_app=True)
LIB = Frame("/usr/lib/python3.11/threading.py", 331, "wait", "Condition.wait")
C_FRAME = Frame("libpython3.11.so", 0, "PyObject_Call", native=True)
REQ = RequestInfo(method="GET", path="/reports/export", handler="Reports.export")
POOL = PoolInfo(bind="127.0.0.1:8080", size=2, busy=2, idle=0, queued=3, min_threads=2)


def thread(ident, stack, request=None, owns_gil=None, name="CP Server Thread-1"):
    return ThreadInfo(
        ident=ident,
        name=name,
        role=Role.WORKER,
        busy=request is not None,
        phase=Phase.HANDLER if request else Phase.IDLE,
        request=request,
        stack=tuple(stack),
        owns_gil=owns_gil,
    )


def snap(*threads, pools=()):
    return ThreadsSnapshot(taken_at=1.0, threads=tuple(threads), pools=tuple(pools))


def test_merge_adds_gil_ownership_by_ident_and_keeps_the_agents_requests():
    agent = snap(thread(1, [LIB, APP], REQ), thread(2, [LIB]), pools=[POOL])
    # py-spy calls its frames library (it cannot know the app) and knows nothing of requests
    spy = snap(
        thread(1, [LIB, Frame(APP.filename, 80, "export")], owns_gil=True),
        thread(2, [LIB], owns_gil=False),
        thread(3, [LIB], name="late"),
    )
    merged = merge_threads(agent, spy)
    by = merged.by_ident()
    assert by[1].owns_gil is True and by[1].request == REQ and by[1].stack[1].is_app
    assert by[2].owns_gil is False
    assert by[3].name == "late"  # a thread only py-spy saw still shows
    assert merged.pools == (POOL,)


def test_merge_with_native_takes_pyspys_stack_with_the_agents_app_verdict():
    agent = snap(thread(1, [LIB, APP], REQ))
    spy = snap(thread(1, [C_FRAME, LIB, Frame(APP.filename, 80, "export")], owns_gil=True))
    merged = merge_threads(agent, spy, native=True).by_ident()[1]
    assert merged.stack[0].native and not merged.stack[0].is_app
    assert merged.stack[2].is_app  # the agent said so, matched by file and line
    assert merge_threads(agent, spy, native=False).by_ident()[1].stack == agent.threads[0].stack


def test_fallback_keeps_the_last_pools_and_the_request_of_a_thread_still_in_its_handler():
    last = snap(thread(1, [LIB, APP], REQ), pools=[POOL])
    spy = snap(
        thread(
            1,
            [
                Frame("/usr/lib/python3.11/re/__init__.py", 166, "match"),
                Frame(APP.filename, 81, "export"),
            ],
            owns_gil=True,
        )
    )
    out = fallback_threads(spy, last)
    t = out.by_ident()[1]
    assert out.pools == (POOL,)
    assert t.request == REQ and t.owns_gil is True
    assert gil_holder(out) is t


def test_fallback_without_agent_history_is_pyspys_snapshot():
    spy = snap(thread(1, [LIB], owns_gil=False))
    assert fallback_threads(spy, None) is spy
    assert gil_holder(spy) is None


def test_fallback_with_a_memo_joins_again_only_the_threads_that_changed():
    # GIVEN the agent's last snapshot and py-spy's reading of the same threads, joined once
    # with a memo
    agent = snap(thread(1, [APP, LIB], request=REQ), thread(2, [LIB]))
    spy = snap(thread(1, [APP, LIB]), thread(2, [LIB]))
    memo: dict = {}
    first = fallback_threads(spy, agent, memo)
    # WHEN py-spy's next reading has thread 1 unchanged (the same object) and thread 2 moved
    moved_frame = Frame(LIB.filename, 99, LIB.function, LIB.qualname)
    moved = snap(spy.threads[0], thread(2, [moved_frame]))
    second = fallback_threads(moved, agent, memo)
    # THEN the joined thread 1 is the one of the first call, thread 2 is joined again
    assert second.threads[0] is first.threads[0]
    assert second.threads[0].request == REQ
    assert second.threads[1] is not first.threads[1]
    assert second.threads[1].stack[0].lineno == 99
    # AND it is what a join without the memo gives
    assert second == fallback_threads(moved, agent)
    assert set(memo) == {1, 2}


def test_a_carried_request_runs_on_from_its_start_not_from_zero():
    # GIVEN the agent's last answer: a request started at 100.0, seen 20 s in at 120.0, and one
    # whose start is unknown but 5 s in then
    started = RequestInfo(method="GET", path="/spin", handler="Root.spin", started_at=100.0)
    agent = ThreadsSnapshot(
        taken_at=120.0,
        threads=(
            replace(thread(1, [APP], request=started), elapsed=20.0),
            replace(thread(2, [APP], request=REQ), elapsed=5.0),
        ),
    )
    # WHEN py-spy reads both threads 10 s later, without locals (no request, no elapsed)
    spy = ThreadsSnapshot(taken_at=130.0, threads=(thread(1, [APP]), thread(2, [APP])))
    out = fallback_threads(spy, agent).by_ident()
    # THEN each carried request has run on: from its start, else from the agent's elapsed
    assert out[1].request == started and out[1].elapsed == 30.0
    assert out[2].request == REQ and out[2].elapsed == 15.0
    # AND with the memo, a reading of the same thread objects a second later runs them on too
    memo: dict = {}
    fallback_threads(spy, agent, memo)
    later = fallback_threads(replace(spy, taken_at=131.0), agent, memo).by_ident()
    assert later[1].elapsed == 31.0 and later[2].elapsed == 16.0


def test_fallback_memo_reuses_the_join_when_the_agents_thread_only_moved_on_in_time():
    # GIVEN the agent's answer (a busy worker with a known start, one with an unknown start,
    # an idle one) and py-spy's reading without locals, joined once with a memo
    started = RequestInfo(method="GET", path="/sleep", handler="Root.sleep", started_at=100.0)
    agent = ThreadsSnapshot(
        taken_at=120.0,
        threads=(
            replace(thread(1, [APP, LIB], request=started), elapsed=20.0),
            replace(thread(2, [APP, LIB], request=REQ), elapsed=5.0),
            thread(3, [LIB]),
        ),
    )
    spy = ThreadsSnapshot(
        taken_at=121.0,
        threads=(thread(1, [APP, LIB]), thread(2, [APP, LIB]), thread(3, [LIB])),
    )
    memo: dict = {}
    first = fallback_threads(spy, agent, memo).by_ident()
    # WHEN the agent's next answer brings each thread as a new object with the same stack and
    # request objects (a delta moved the elapsed times on, the GIL merge set owns_gil), and
    # py-spy's next reading is the same thread objects a second later
    answer = ThreadsSnapshot(
        taken_at=122.0,
        threads=(
            replace(agent.threads[0], elapsed=22.0),
            replace(agent.threads[1], elapsed=7.0, owns_gil=False),
            replace(agent.threads[2], owns_gil=False),
        ),
    )
    later = replace(spy, taken_at=123.0)
    second = fallback_threads(later, answer, memo)
    by = second.by_ident()
    # THEN every field is what a join without the memo gives, the elapsed times run on from the
    # new answer, and the stacks are the joined stacks of the first call (not joined again)
    assert second == fallback_threads(later, answer)
    assert by[1].elapsed == 23.0 and by[1].request is started
    assert by[2].elapsed == 8.0 and by[2].request is REQ
    assert all(by[i].stack is first[i].stack for i in (1, 2, 3))
    assert by[3] is first[3]
    # AND the memo now holds the new answer's threads
    assert all(memo[t.ident][1] is t for t in answer.threads)


def test_fallback_memo_joins_again_when_the_agents_stack_or_request_changed():
    # GIVEN a join with a memo
    agent = snap(thread(1, [APP, LIB], request=REQ), thread(2, [APP, LIB], request=REQ))
    spy = snap(thread(1, [Frame(APP.filename, 80, "export"), LIB]), thread(2, [APP, LIB]))
    memo: dict = {}
    fallback_threads(spy, agent, memo)
    # WHEN the agent's next answer has thread 1 in another request and thread 2 on a stack
    # whose app frame py-spy's path rule calls library code (an equal stack, a new object)
    other = RequestInfo(method="POST", path="/reports/export", handler="Reports.export")
    lib_app = Frame("/usr/lib/python3.11/site-packages/shop/export.py", 12, "run", is_app=True)
    answer = snap(
        replace(agent.threads[0], request=other),
        replace(agent.threads[1], stack=(lib_app, LIB)),
    )
    spy2 = snap(spy.threads[0], thread(2, [Frame(lib_app.filename, 12, "run"), LIB]))
    out = fallback_threads(spy2, answer, memo)
    # THEN both are joined again: the new request is carried, the agent's verdict applies
    assert out == fallback_threads(spy2, answer)
    by = out.by_ident()
    assert by[1].request is other
    assert by[2].stack[0].is_app
