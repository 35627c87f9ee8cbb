"""Applying a ``/v1/threads`` delta (``"delta": true``) to the previous snapshot.

The payloads are a real agent answer (tests/fixtures/agent_threads_v1.json) and the next answer
built from it the way the agent does (wire.py, threads section): the delta must read into the
same snapshot as the full answer it stands for.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from cpinspect.protocol import ProtocolError, threads_cursor, threads_from_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def first_answer() -> Dict[str, Any]:
    payload = json.loads((FIXTURES / "agent_threads_v1.json").read_text())
    payload.update(cursor="abc-1", delta=False, gone=[])
    return payload


def next_answers(first: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The full answer 1.5 s later, and the delta since ``first`` that stands for it.

    Changes: the first worker's request ended (idle now), one agent thread ended, a new
    thread started; the other busy workers only aged.
    """
    full = copy.deepcopy(first)
    full["taken_at"] = first["taken_at"] + 1.5
    full["cursor"] = "abc-2"
    threads: List[Dict[str, Any]] = full["threads"]
    changed: List[Dict[str, Any]] = []
    for t in threads:
        if t["request"] is not None and t["request"]["started_at"] is not None:
            t["elapsed"] = max(0.0, full["taken_at"] - t["request"]["started_at"])
    done = next(t for t in threads if t["busy"])
    done.update(busy=False, phase="idle", elapsed=None, request=None, cpu_time=1.25)
    changed.append(done)
    ended = next(t for t in threads if t["role"] == "agent")
    threads.remove(ended)
    new = copy.deepcopy(threads[0])
    new.update(ident=threads[-1]["ident"] + 8, name="new thread", role="other")
    threads.append(new)
    changed.append(new)
    threads.sort(key=lambda t: t["ident"])
    delta = dict(full, delta=True, gone=[ended["ident"]], threads=changed)
    return full, delta


def test_a_delta_applied_to_the_previous_snapshot_equals_the_full_answer():
    # GIVEN the snapshot of a first answer, and the next answer both in full and as a delta
    first = first_answer()
    previous = threads_from_json(first)
    full, delta = next_answers(first)

    # WHEN the delta is applied to the previous snapshot
    applied = threads_from_json(delta, previous)

    # THEN the result equals what the full answer reads into, in the agent's order
    assert applied == threads_from_json(full)
    assert [t.ident for t in applied.threads] == sorted(t.ident for t in applied.threads)
    assert "new thread" in {t.name for t in applied.threads}
    assert threads_cursor(delta) == "abc-2"


def test_unchanged_threads_are_the_previous_objects_aged_or_as_they_are():
    # GIVEN a previous snapshot and a delta that sends no entry for most threads
    first = first_answer()
    previous = threads_from_json(first)
    _full, delta = next_answers(first)

    # WHEN applied
    applied = threads_from_json(delta, previous).by_ident()

    # THEN a thread without elapsed is the very same object; a busy one is its copy, aged to
    # this answer's taken_at from its request's start (what the agent itself computes)
    for old in previous.threads:
        now = applied.get(old.ident)
        if now is None or now.name == "new thread" or old.busy != now.busy:
            continue
        if old.elapsed is None:
            assert now is old
        else:
            assert now.request is old.request and now.stack is old.stack
            assert old.request is not None and old.request.started_at is not None
            assert now.elapsed == delta["taken_at"] - old.request.started_at


def test_elapsed_without_a_known_start_moves_by_the_taken_at_difference():
    # GIVEN a worker reading a request whose line has not come yet (no request, only an age)
    first = first_answer()
    reader = next(t for t in first["threads"] if t["busy"])
    reader.update(request=None, phase="reading", elapsed=2.0)
    previous = threads_from_json(first)

    # WHEN a delta 3 s later sends nothing for it
    delta = dict(first, taken_at=first["taken_at"] + 3.0, delta=True, gone=[], threads=[])
    applied = threads_from_json(delta, previous).by_ident()

    # THEN its age grew by the 3 s between the answers
    assert applied[reader["ident"]].elapsed == pytest.approx(5.0)


def test_a_full_answer_replaces_the_previous_snapshot_entirely():
    # GIVEN a previous snapshot and a full answer ("delta": false) with only two threads
    first = first_answer()
    previous = threads_from_json(first)
    full = dict(first, threads=first["threads"][:2], delta=False, gone=[1, 2])

    # WHEN read with the previous snapshot at hand
    snap = threads_from_json(full, previous)

    # THEN only the answer's threads are there (and "gone" of a full answer means nothing)
    assert [t.ident for t in snap.threads] == [t["ident"] for t in first["threads"][:2]]


def test_a_delta_without_a_previous_snapshot_is_a_protocol_error():
    # GIVEN a delta answer WHEN read without the snapshot it applies to THEN a clear error
    delta = dict(first_answer(), delta=True, threads=[], gone=[])
    with pytest.raises(ProtocolError, match="no previous snapshot"):
        threads_from_json(delta)


def test_junk_in_a_delta_is_skipped_not_fatal():
    # GIVEN a delta whose "gone" and "threads" hold values of the wrong types
    first = first_answer()
    previous = threads_from_json(first)
    gone = first["threads"][0]["ident"]
    delta = dict(first, delta=True, gone=["x", None, gone], threads=["junk", 3])

    # WHEN applied THEN the valid part applies, the rest is ignored
    applied = threads_from_json(delta, previous)
    assert gone not in applied.by_ident()
    assert len(applied.threads) == len(previous.threads) - 1


def test_an_old_agent_without_cursors_gives_none():
    # GIVEN answers without a usable cursor WHEN asked for it THEN None (ask in full next time)
    assert threads_cursor({"threads": []}) is None
    assert threads_cursor({"cursor": ""}) is None
    assert threads_cursor({"cursor": 7}) is None
    assert threads_cursor([]) is None


def test_the_agent_probe_forgets_ended_threads_and_keeps_a_bounded_cursor_store():
    # GIVEN the agent's threads probe in this process (no server: threads and stacks only),
    # and a thread that runs while it answers once
    import threading

    from cpinspect.agent.probes.frames import FrameClassifier
    from cpinspect.agent.probes.threads import ThreadsProbe
    from cpinspect.agent.tracking import RequestTracker
    from cpinspect.agent.wire import THREADS_CURSORS_KEPT

    probe = ThreadsProbe(RequestTracker(), FrameClassifier())
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="short-lived")
    worker.start()
    try:
        during = probe.snapshot()
        assert worker.ident in {t["ident"] for t in during["threads"]}
        assert worker.ident in probe._stacks
    finally:
        stop.set()
        worker.join(5)

    # WHEN it has ended, and many more answers were given
    after = probe.snapshot(during["cursor"])
    for _ in range(3 * THREADS_CURSORS_KEPT):
        probe.snapshot()

    # THEN the delta listed it as gone, its cached stack is dropped, and the probe remembers
    # no more cursors than the limit (each one a digest per thread, not entries)
    assert after["delta"] is True and worker.ident in after["gone"]
    assert worker.ident not in probe._stacks
    assert len(probe._cursors) == THREADS_CURSORS_KEPT
    assert all(isinstance(v, int) for d in probe._cursors.values() for v in d.values())
    # ... and the cursor of that delta is forgotten: asking since it gives a full answer
    assert probe.snapshot(after["cursor"])["delta"] is False
