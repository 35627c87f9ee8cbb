"""The threads probe's fast path on real threads of this process (no server, no fakes).

A thread whose exact CPU clock did not move since the last answer has run nothing: its entry is
reused as it was. These tests prove what must still come back: a thread that moved, a lock
holder whose ``holds`` changed because another thread began to wait (it did not run itself),
and ``elapsed``-free entries identical to a fresh build.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List

from cpinspect.agent.probes.threads import ThreadsProbe
from tests.agent.probe_threads import STOP, by_ident, start
from tests.conftest import wait_for


def innermost_line(t: threading.Thread) -> int:
    frame = sys._current_frames().get(t.ident or 0)
    # skip threading.py frames (Event.wait, Condition.wait): the line in this module
    while frame is not None and frame.f_code.co_filename != __file__:
        frame = frame.f_back
    return frame.f_lineno if frame is not None else -1


def settled(probe: ThreadsProbe, *threads: threading.Thread) -> Dict[str, Any]:
    """An answer after which ``threads`` are parked: their entries were reused once (their
    CPU clock stopped moving; a thread just started may still be on its way to its wait)."""
    answer = probe.snapshot()

    def reused() -> bool:
        nonlocal answer
        before = {t.ident: probe._seen.get(t.ident or 0) for t in threads}
        time.sleep(0.05)  # the GIL released: a thread on its way to its wait gets there
        answer = probe.snapshot()
        return all(probe._seen.get(i or 0) is r and r is not None for i, r in before.items())

    wait_for(reused, what="the threads parked")
    return answer


def two_steps(first: threading.Event, second: threading.Event) -> None:
    first.wait(30)  # step one
    second.wait(30)  # step two


def test_a_thread_that_moved_is_sent_and_one_that_stood_still_is_not(probe):
    # GIVEN a thread waiting at step one and another waiting all along, answered once
    first, second = threading.Event(), threading.Event()
    mover = start(two_steps, first, second)
    still = start(STOP.wait)
    before = settled(probe, mover, still)
    step_one = innermost_line(mover)
    record = probe._seen[still.ident]

    # WHEN the mover goes on to step two (and nothing else happens to the other)
    first.set()
    wait_for(lambda: innermost_line(mover) == step_one + 1, what="the mover at step two")
    delta = probe.snapshot(before["cursor"])

    # THEN the delta sends the mover with its new line, and not the thread that stood still,
    # whose entry was reused as it was (the fast path) rather than built again
    sent = by_ident(delta)
    assert delta["delta"] is True
    assert mover.ident in sent and still.ident not in sent
    lines = [f["line"] for f in sent[mover.ident]["stack"] if f["file"] == __file__]
    assert lines and lines[0] == step_one + 1
    assert probe._seen[still.ident] is record
    # ... and a full answer now holds the same entry for it as the first one did
    full = by_ident(probe.snapshot())
    assert full[still.ident] == by_ident(before)[still.ident]
    second.set()
    mover.join(5)


LOCK = threading.Lock()


def hold_lock(holding: threading.Event) -> None:
    with LOCK:
        holding.set()
        STOP.wait(30)


def take_lock() -> None:
    with LOCK:
        pass


def test_a_lock_holder_that_did_not_run_is_sent_when_someone_waits_on_it(probe):
    # GIVEN a thread holding a lock and standing still, answered once with nobody waiting
    holding = threading.Event()
    holder = start(hold_lock, holding)
    holding.wait(5)
    first = settled(probe, holder)
    assert "holds" not in by_ident(first)[holder.ident]
    holder_record = probe._seen[holder.ident]

    # WHEN another thread starts waiting for that lock
    waiter = start(take_lock)
    answers: List[Dict[str, Any]] = []

    def waiting() -> bool:
        answers.append(probe.snapshot(first["cursor"]))
        return "wait" in by_ident(answers[-1]).get(waiter.ident, {})

    wait_for(waiting, what="the waiter seen waiting")
    delta = answers[-1]

    # THEN the holder, whose own entry was reused (it did not run), comes back with "holds"
    sent = by_ident(delta)
    assert probe._seen[holder.ident] is holder_record
    assert holder.ident in sent and sent[holder.ident]["holds"]
    assert sent[waiter.ident]["wait"]["obj"] == sent[holder.ident]["holds"][0]["obj"]
    # ... and the entry the probe keeps for the next answers was not changed by the lock probe
    assert "holds" not in holder_record.entry

    # WHEN the holder lets go and the waiter gets the lock and ends
    STOP.set()
    waiter.join(5)
    holder.join(5)
    after = probe.snapshot(delta["cursor"])

    # THEN both are gone from the answer
    assert {holder.ident, waiter.ident} <= set(after["gone"])


def test_the_answer_sent_is_the_answer_built(probe):
    # GIVEN real threads: one standing still, one holding a lock another waits for
    import json

    from cpinspect.agent.jsonparts import JsonArray, encode

    holding = threading.Event()
    holder = start(hold_lock, holding)
    holding.wait(5)
    start(STOP.wait)
    waiter = start(take_lock)
    wait_for(lambda: "wait" in by_ident(probe.snapshot()).get(waiter.ident, {}), what="a wait")

    # WHEN answers are built (a first and a reused one) and encoded as the server sends them
    first = probe.snapshot()
    again = probe.snapshot()

    # THEN the text decodes to exactly the answer built, pre-encoded entries and all
    for answer in (first, again):
        assert isinstance(answer["threads"], JsonArray)
        assert json.loads(encode(answer)) == json.loads(json.dumps(answer, default=str))
    assert by_ident(json.loads(encode(again)))[holder.ident]["holds"]
    # ... and a plain list appended to (no texts kept) is encoded in full
    odd = JsonArray()
    odd.append({"a": 1})
    assert json.loads(encode({"x": odd, "y": 2})) == {"x": [{"a": 1}], "y": 2}
