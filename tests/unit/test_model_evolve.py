"""``model.evolve``: ``dataclasses.replace`` without ``__init__``, for the hot merge paths."""

import dataclasses

import pytest

from cpinspect import model
from cpinspect.model import Frame, RequestInfo, Role, ThreadInfo, ThreadsSnapshot, evolve

FRAME = Frame(function="index", filename="/app/root.py", lineno=12, is_app=True)
THREAD = ThreadInfo(
    ident=7,
    name="CP Server Thread-3",
    role=Role.WORKER,
    native_id=70,
    busy=True,
    request=RequestInfo(method="GET", path="/slow", started_at=100.0),
    elapsed=1.5,
    stack=(FRAME,),
)


@pytest.mark.parametrize(
    "obj, changes",
    [
        (THREAD, {"elapsed": 2.5}),
        (THREAD, {"request": None, "elapsed": None, "cpu_time": 0.25}),
        (THREAD, {"owns_gil": True, "stack": (), "stack_truncated": 0}),
        (FRAME, {"is_app": False}),
        (
            ThreadsSnapshot(taken_at=1.0, threads=(THREAD,)),
            {"threads": (), "pools_note": "stale"},
        ),
        (THREAD, {}),
    ],
)
def test_evolve_is_replace(obj: object, changes: dict) -> None:
    got = evolve(obj, **changes)
    want = dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    assert got == want
    assert hash(got) == hash(want)
    assert type(got) is type(want)
    assert got.__dict__ == want.__dict__
    assert got is not obj
    # The original is untouched and the copy stays frozen.
    assert obj == dataclasses.replace(obj)  # type: ignore[type-var]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.elapsed = 9.0  # type: ignore[misc, attr-defined]


def test_unknown_field_raises_like_replace() -> None:
    with pytest.raises(TypeError, match="no field colour"):
        evolve(THREAD, colour="red")
    with pytest.raises(TypeError):
        dataclasses.replace(THREAD, colour="red")  # type: ignore[call-arg]


def test_model_classes_have_no_post_init() -> None:
    """evolve skips ``__init__``: a class that computes or checks in ``__post_init__`` would be
    copied wrong. None of the model's does; this keeps it that way."""
    classes = [
        c for c in vars(model).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
    ]
    assert len(classes) > 10
    assert [c.__name__ for c in classes if hasattr(c, "__post_init__")] == []
