"""The threads probe's frame table and pre-encoded stacks, on real threads of this process.

Each frame is extracted once per (code object, instruction) and its JSON text made once per
line; each entry's text splices its stack's text in. These tests prove the cached answer is the
uncached extraction, field by field and byte for byte, across polls while threads move: a
spinner, a thread that returns and calls another function, a code object freed and another
allocated (no stale frame from a reused id); that the table stays bounded; and that deltas
still send exactly the threads that changed.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import weakref
from typing import Any, Dict, List

from cpinspect.agent.jsonparts import JsonArray, dumps, encode
from cpinspect.agent.probes.frames import FrameClassifier, FrameTable, extract_stack
from cpinspect.agent.probes.threads import ThreadsProbe
from tests.agent.probe_threads import STOP, by_ident, start
from tests.conftest import wait_for


def uncached_stack(t: threading.Thread) -> List[Dict[str, Any]]:
    return extract_stack(sys._current_frames().get(t.ident or 0), FrameClassifier())[0]


def assert_texts_are_the_entries(answer: Dict[str, Any]) -> None:
    """Every pre-encoded entry's text is, byte for byte, ``dumps`` of the entry sent with
    ``elapsed`` moved last (the text the agent made before it had a frame table)."""
    threads = answer["threads"]
    assert isinstance(threads, JsonArray)
    for item, text in zip(threads, threads.texts):
        if text is None:
            continue
        joined = text if isinstance(text, str) else "".join(text)
        rest = {k: v for k, v in item.items() if k != "elapsed"}
        assert joined == dumps(rest)[:-1] + ',"elapsed":' + dumps(item["elapsed"]) + "}"
    assert json.loads(encode(answer)) == json.loads(json.dumps(answer, default=str))


def steps(gates: List[threading.Event]) -> None:
    """Three waits on three lines: the thread moves inside one code object (it clears each
    gate as it passes it)."""
    gates[0].wait(30)
    gates[0].clear()
    gates[1].wait(30)
    gates[1].clear()
    gates[2].wait(30)
    gates[2].clear()
    STOP.wait(30)


def step_a(go: threading.Event) -> None:
    go.wait(30)


def step_b(go: threading.Event) -> None:
    x = 1
    go.wait(30 + x)


def returns_and_calls(first: threading.Event, second: threading.Event) -> None:
    step_a(first)  # returns, then the same thread calls another function
    step_b(second)


def spin() -> None:
    x = 0
    while not STOP.is_set():
        x = (x + 7) % 1000003


def parked(probe: ThreadsProbe, t: threading.Thread, line_of: Any) -> Dict[str, Any]:
    """An answer in which ``t`` stands where ``line_of`` says (its innermost frame here)."""
    answers: List[Dict[str, Any]] = []

    def there() -> bool:
        answers.append(probe.snapshot())
        entry = by_ident(answers[-1]).get(t.ident)
        return entry is not None and line_of(entry["stack"]) and uncached_stack(t) == entry["stack"]

    wait_for(there, what="the thread parked there")
    return answers[-1]


def ours(stack: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [f for f in stack if f["file"] == __file__]


def test_a_moving_thread_gets_the_uncached_stack_at_every_poll(probe):
    # GIVEN a thread stepping through the lines of one function, one that returns and then
    # calls another function, and a spinner beside them
    gates = [threading.Event() for _ in range(3)]
    stepper = start(steps, gates)
    first, second = threading.Event(), threading.Event()
    caller = start(returns_and_calls, first, second)
    spinner = start(spin)
    seen_lines = []

    # WHEN the probe answers after each move
    for n in range(len(gates) + 1):
        answer = parked(
            probe,
            stepper,
            lambda s, n=n: bool(ours(s)) and ours(s)[0]["function"] == "steps",
        )
        # THEN each answer holds, for the stepper, exactly what an uncached extraction gives,
        # and each entry's text is the entry byte for byte
        entry = by_ident(answer)[stepper.ident]
        assert entry["stack"] == uncached_stack(stepper)
        assert_texts_are_the_entries(answer)
        seen_lines.append(ours(entry["stack"])[0]["line"])
        if n < len(gates):
            gates[n].set()
            wait_for(lambda g=gates[n]: not g.is_set(), what="the stepper moved on")
    # ... at a new line each time (the gates' waits, then STOP.wait), in one code object
    assert len(set(seen_lines)) == len(gates) + 1

    # WHEN the other thread returns from step_a and calls step_b
    in_a = parked(probe, caller, lambda s: ours(s)[0]["function"] == "step_a")
    first.set()
    in_b = parked(probe, caller, lambda s: ours(s)[0]["function"] == "step_b")

    # THEN its frames are step_b's, not step_a's remembered ones, and the spinner's entry too
    # is the uncached extraction's shape (its frames in this file are spin's)
    a_stack = by_ident(in_a)[caller.ident]["stack"]
    b_stack = by_ident(in_b)[caller.ident]["stack"]
    assert ours(a_stack)[0]["function"] == "step_a"
    assert (
        ours(b_stack)[0]["function"] == "step_b"
        and ours(b_stack)[1]["line"] != ours(a_stack)[1]["line"]
    )
    spun = by_ident(in_b)[spinner.ident]["stack"]
    assert [f["function"] for f in ours(spun)] == ["spin"]
    assert_texts_are_the_entries(in_b)
    second.set()


SOURCE = """
def {name}(go):
{pad}    go.wait(30)
"""


def make_function(name: str, pad_lines: int) -> Any:
    """A function compiled here and now: its code object is new, its old one freed."""
    scope: Dict[str, Any] = {}
    source = SOURCE.format(name=name, pad="\n" * pad_lines)
    exec(compile(source, "<generated %s>" % name, "exec"), scope)
    return scope[name]


def generated(stack: List[Dict[str, Any]]) -> Dict[str, Any]:
    return next(f for f in stack if f["file"].startswith("<generated"))


def test_a_freed_code_object_never_comes_back_as_another_ones_frame(probe):
    # GIVEN a thread parked in a freshly compiled function, answered once
    go = threading.Event()
    old = make_function("old_function", 0)
    code_ref = weakref.ref(old.__code__)
    t = start(old, go)
    first = parked(probe, t, lambda s: generated(s)["function"] == "old_function")
    assert generated(by_ident(first)[t.ident]["stack"])["line"] == 3

    # WHEN it returns, the function is dropped, and many new code objects are made while another
    # thread parks in one of them (any of which could be given the old one's address)
    go.set()
    t.join(5)
    probe.snapshot()
    del old
    gc.collect()
    # THEN the table keeps the code object it found the frame under (so its id is not reused)
    assert code_ref() is not None
    made = [make_function("new_function_%d" % i, 5) for i in range(50)]
    go2 = threading.Event()
    t2 = start(made[-1], go2)
    second = parked(probe, t2, lambda s: generated(s)["function"] == "new_function_49")

    # ... and the new thread's frame is its own function's, as an uncached extraction has it
    entry = by_ident(second)[t2.ident]
    assert generated(entry["stack"]) == {
        "file": "<generated new_function_49>",
        "line": 8,
        "function": "new_function_49",
        "qualname": getattr(made[-1].__code__, "co_qualname", None),
        "app": False,
    }
    assert entry["stack"] == uncached_stack(t2)
    assert_texts_are_the_entries(second)
    go2.set()
    t2.join(5)


def test_the_frame_table_stays_bounded(probe, monkeypatch):
    # GIVEN a small table and a thread stepping through many more lines than it holds
    monkeypatch.setattr(FrameTable, "MAX", 16)
    source = "def wander(go, stop):\n" + "".join("    go.wait(30); go.clear()\n" for _ in range(60))
    scope: Dict[str, Any] = {}
    exec(compile(source, "<wander>", "exec"), scope)
    go, stop = threading.Event(), threading.Event()
    t = start(scope["wander"], go, stop)
    lines = set()
    sizes = []

    # WHEN the probe answers at each of its stops
    for _ in range(40):
        answer = parked(probe, t, lambda s: any(f["file"] == "<wander>" for f in s))
        entry = by_ident(answer)[t.ident]
        lines.add(next(f["line"] for f in entry["stack"] if f["file"] == "<wander>"))
        sizes.append(len(probe._frames))
        # THEN every answer is still the uncached extraction, byte for byte
        assert entry["stack"] == uncached_stack(t)
        assert_texts_are_the_entries(answer)
        go.set()
        wait_for(lambda: not go.is_set(), what="the thread moved on")
    # ... and the table never held more than its bound (two maps of at most MAX each)
    assert len(lines) == 40
    assert max(sizes) <= 2 * FrameTable.MAX
    stop.set()


def test_deltas_send_exactly_the_threads_that_moved(probe):
    # GIVEN three threads parked at their first step, answered once
    gates = {name: [threading.Event() for _ in range(3)] for name in "abc"}
    threads = {name: start(steps, g) for name, g in gates.items()}
    answers = [probe.snapshot()]

    def all_parked() -> bool:
        answers.append(probe.snapshot())
        now = by_ident(answers[-1])
        return all(
            t.ident in now
            and now[t.ident]["stack"] == uncached_stack(t)
            and ours(now[t.ident]["stack"])[0]["function"] == "steps"
            for t in threads.values()
        ) and all(probe._seen[t.ident] is not None for t in threads.values())

    wait_for(all_parked, what="the threads parked")
    mine = {t.ident for t in threads.values()}
    # A thread whose stack is parked may still run a few instructions on its way into the
    # lock's wait (its CPU clock moves, so it is rightly sent): settled is the first delta
    # that sends nothing of ours, which a parked thread must reach.
    pair: Dict[str, Any] = {}

    def nothing_of_ours_sent() -> bool:
        pair["base"] = probe.snapshot()
        pair["settled"] = probe.snapshot(pair["base"]["cursor"])
        return not mine & set(by_ident(pair["settled"]))

    wait_for(nothing_of_ours_sent, what="a delta without our parked threads")
    base, settled = pair["base"], pair["settled"]

    # WHEN only b moves on to its next line
    line_before = ours(by_ident(base)[threads["b"].ident]["stack"])[0]["line"]
    gates["b"][0].set()
    wait_for(lambda: not gates["b"][0].is_set(), what="b moved on")
    delta: Dict[str, Any] = {}

    def b_parked_again() -> bool:
        nonlocal delta
        delta = probe.snapshot(settled["cursor"])
        sent = by_ident(delta).get(threads["b"].ident)
        return sent is not None and sent["stack"] == uncached_stack(threads["b"])

    wait_for(b_parked_again, what="b parked at its next line")

    # THEN the delta sends b, with its new line, and neither a nor c
    sent = by_ident(delta)
    assert delta["delta"] is True
    assert set(sent) & mine == {threads["b"].ident}
    assert ours(sent[threads["b"].ident]["stack"])[0]["line"] == line_before + 2
    assert_texts_are_the_entries(delta)
    STOP.set()
