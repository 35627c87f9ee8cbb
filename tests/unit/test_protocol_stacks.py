"""The agent's stacks made once (issue 13): ``protocol.Stacks`` makes a stack whose frames'
JSON was seen in the last two generations the same tuple of the same ``Frame`` objects, so a
full answer of 1,000 threads does not build ~14,500 frames again and the TUI's keys and joins
(which reuse what is the same object) see the stacks they saw. The result stays equal to the
frame-by-frame reading, including for values of the wrong type.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cpinspect import protocol
from cpinspect.analysis import StackKeys
from cpinspect.protocol import Stacks, frame_from_json, threads_from_json

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def answer() -> Dict[str, Any]:
    """A full /v1/threads answer as the agent sends it, decoded anew (new dicts each time)."""
    payload: Dict[str, Any] = json.loads((FIXTURES / "agent_threads_v1.json").read_text())
    return payload


def test_the_same_stacks_in_the_next_answer_are_the_same_objects() -> None:
    # GIVEN two full answers with the same threads, each decoded from its own text
    first = threads_from_json(answer())
    second = threads_from_json(answer())
    # THEN each thread's stack in the second is the first's tuple, of the same frames
    pairs = list(zip(first.threads, second.threads))
    assert pairs and all(a.stack for a, _ in pairs)
    for a, b in pairs:
        assert b.stack is a.stack
    # AND equal to the frames read one by one, as before
    for raw, thread in zip(answer()["threads"], second.threads):
        assert thread.stack == tuple(frame_from_json(f) for f in raw["stack"])
    # AND the TUI's stack keys find them made: the second answer's stacks are the objects
    # the first round keyed
    keys = StackKeys()
    before = [keys.key(t) for t in first.threads]
    keys.next_round()
    assert [keys.key(t) for t in second.threads] == before
    assert all(id(t.stack) in keys._now for t in second.threads)


def test_a_frame_that_moved_makes_a_new_stack_sharing_the_frames_that_did_not() -> None:
    first = threads_from_json(answer())
    moved = answer()
    stack: List[Dict[str, Any]] = moved["threads"][0]["stack"]
    stack[-1]["line"] += 1
    second = threads_from_json(moved)
    a, b = first.threads[0], second.threads[0]
    assert b.stack is not a.stack and b.stack != a.stack
    assert b.stack[-1].lineno == a.stack[-1].lineno + 1
    assert all(x is y for x, y in zip(a.stack[:-1], b.stack[:-1]))


@pytest.mark.parametrize(
    "change,field,value",
    [
        ({"line": True}, "lineno", 0),  # True == 1 as a key: must not be line 1's frame
        ({"line": "7"}, "lineno", 0),
        ({"file": None}, "filename", "?"),
        ({"file": 12}, "filename", "12"),
        ({"qualname": 3}, "qualname", "3"),
        ({"app": 1}, "is_app", True),
    ],
)
def test_values_of_another_type_read_as_frame_by_frame(
    change: Dict[str, Any], field: str, value: Any
) -> None:
    stacks = Stacks()
    good = {"file": "a.py", "line": 1, "function": "f", "qualname": "f", "app": False}
    made = stacks.stack([dict(good)])
    odd = dict(good, **change)
    got = stacks.stack([odd])
    assert got == (frame_from_json(odd),)
    assert getattr(got[0], field) == value
    assert got is not made and got[0] is not made[0]


def test_a_stack_without_frame_objects_skips_what_is_not_one() -> None:
    stacks = Stacks()
    raw: List[Any] = [{"file": "a.py", "line": 1, "function": "f"}, "junk", 3]
    assert stacks.stack(raw) == (frame_from_json(raw[0]),)


def test_memory_is_two_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN generations of 10 stacks
    monkeypatch.setattr(protocol, "STACKS_KEPT", 10)
    stacks = Stacks()
    frame = {"file": "a.py", "function": "f", "qualname": None, "app": True}
    first = stacks.stack([dict(frame, line=0)])
    # WHEN 25 other stacks are made
    for n in range(1, 26):
        stacks.stack([dict(frame, line=n)])
    # THEN at most two generations are remembered, and the first is made anew (equal)
    assert len(stacks._stacks) + len(stacks._older) <= 20
    again = stacks.stack([dict(frame, line=0)])
    assert again == first and again is not first
    # AND a stack of the older generation is kept when asked for again
    recent = stacks.stack([dict(frame, line=25)])
    assert stacks.stack([dict(frame, line=25)]) is recent


def test_deltas_keep_carrying_the_same_objects() -> None:
    full = answer()
    full["cursor"] = "c1"
    first = threads_from_json(full)
    delta = {
        "taken_at": full["taken_at"] + 1,
        "delta": True,
        "threads": [copy.deepcopy(full["threads"][0])],
        "gone": [],
        "pools": full["pools"],
    }
    second = threads_from_json(delta, first)
    assert second.threads[0].stack is first.threads[0].stack
