"""The agent's lock probe (``cpinspect.agent.probes.locks``) on real threads of this process:
blocked on real locks, read from their real frames (no fakes: the bytecode is this Python's)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from cpinspect.agent.probes import locks
from cpinspect.agent.probes.threads import _codes, stack_key
from tests.conftest import wait_for

MODULE_LOCK = threading.Lock()
MODULE_RLOCK = threading.RLock()
COND = threading.Condition()


class Box:
    def __init__(self) -> None:
        self.lock = threading.Lock()


class Slotted:
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()


class Tricky:
    """Attributes whose reading would run code: the probe must not read them."""

    calls: List[str] = []
    cls_lock = threading.Lock()

    @property
    def lock(self) -> Any:
        Tricky.calls.append("property")
        return MODULE_LOCK

    def __getattr__(self, name: str) -> Any:
        Tricky.calls.append("getattr " + name)
        return MODULE_LOCK


@pytest.fixture
def started() -> Iterator[Callable[[Callable[[], None]], threading.Thread]]:
    """Start daemon threads; ``STOP`` releases every one at the end."""
    stop = threading.Event()
    threads: List[threading.Thread] = []

    def start(fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, args=(), daemon=True)
        t.stop = stop  # type: ignore[attr-defined]
        t.start()
        threads.append(t)
        return t

    start.stop = stop  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def site_of(t: threading.Thread) -> Optional[locks.Site]:
    frame = sys._current_frames()[t.ident]  # type: ignore[index]
    return locks.lock_site(_codes(frame), stack_key(frame))


def wait_dict(t: threading.Thread) -> Optional[Dict[str, Any]]:
    site = site_of(t)
    if site is None:
        return None
    found = locks.wait_of(t.ident or 0, sys._current_frames()[t.ident], site)  # type: ignore[index]
    return found[1] if found is not None else None


def blocked(t: threading.Thread) -> Dict[str, Any]:
    found = wait_for(lambda: wait_dict(t), what="thread %s blocked on its lock" % t.name)
    assert isinstance(found, dict)
    return found


def test_static_attr_reads_dicts_slots_and_class_attributes_but_runs_no_code() -> None:
    # GIVEN objects of each kind
    box, slotted, tricky = Box(), Slotted(), Tricky()
    Tricky.calls.clear()
    # WHEN / THEN instance dicts, slots, class attributes and module attributes are read
    assert locks.static_attr(box, "lock") is box.lock
    assert locks.static_attr(slotted, "lock") is slotted.lock
    assert locks.static_attr(tricky, "cls_lock") is Tricky.cls_lock
    assert locks.static_attr(Tricky, "cls_lock") is Tricky.cls_lock
    assert locks.static_attr(sys.modules[__name__], "MODULE_LOCK") is MODULE_LOCK
    # AND a property or a __getattr__ is refused without being called
    assert locks.static_attr(tricky, "lock") is locks._MISSING
    assert locks.static_attr(tricky, "missing") is locks._MISSING
    assert locks.static_attr(Slotted(), "nothing") is locks._MISSING
    assert Tricky.calls == []


def test_with_on_a_module_lock_names_it_and_finds_the_holder(started: Any) -> None:
    # GIVEN a thread inside `with MODULE_LOCK:` (a try/except nested in its body) and another
    # blocked entering it
    stop = started.stop
    in_body = threading.Event()

    def holder() -> None:
        with MODULE_LOCK:
            try:
                in_body.set()
                stop.wait(30)
            except ValueError:
                pass

    def waiter() -> None:
        with MODULE_LOCK:
            pass

    h = started(holder)
    assert in_body.wait(5)
    w = started(waiter)
    # WHEN the waiter's frame is read
    wait = blocked(w)
    # THEN it names MODULE_LOCK at the waiter's with line, a plain lock with no owner
    assert wait["expr"] == "MODULE_LOCK" and wait["type"] == "_thread.lock"
    assert wait["owner"] is None and wait["filename"] == __file__
    # AND the holder's frames are inside `with MODULE_LOCK:` on that very object
    frames = sys._current_frames()
    holds = locks.holds_of(frames[h.ident], {id(MODULE_LOCK): wait["obj"]})  # type: ignore[index]
    assert [(x["expr"], x["obj"]) for x in holds] == [("MODULE_LOCK", wait["obj"])]
    assert holds[0]["lineno"] == holder.__code__.co_firstlineno + 1
    # AND the waiter is not taken for a holder; the token is stable and opaque
    assert locks.holds_of(frames[w.ident], {id(MODULE_LOCK): wait["obj"]}) == []  # type: ignore[index]
    assert locks.token(MODULE_LOCK) == wait["obj"] != hex(id(MODULE_LOCK))


def test_acquire_calls_and_rlock_owners(started: Any) -> None:
    # GIVEN x.lock held via acquire() and a thread in x.lock.acquire(timeout=...); an RLock held
    # by one thread and wanted by another
    stop = started.stop
    box = Box()
    box.lock.acquire()
    held = threading.Event()

    def acquirer() -> None:
        x = box
        if x.lock.acquire(True, 30):
            x.lock.release()

    def rlock_holder() -> None:
        with MODULE_RLOCK:
            held.set()
            stop.wait(30)

    def rlock_waiter() -> None:
        with MODULE_RLOCK:
            pass

    try:
        a = started(acquirer)
        owner = started(rlock_holder)
        assert held.wait(5)
        r = started(rlock_waiter)
        # WHEN read
        acquire_wait, rlock_wait = blocked(a), blocked(r)
        # THEN the acquire() call names x.lock; the RLock wait names its owner thread
        assert acquire_wait["expr"] == "x.lock" and acquire_wait["owner"] is None
        assert rlock_wait["expr"] == "MODULE_RLOCK" and rlock_wait["type"] == "_thread.RLock"
        assert rlock_wait["owner"] == owner.ident
    finally:
        box.lock.release()


def test_condition_enter_is_a_wait_but_condition_wait_and_events_are_not(started: Any) -> None:
    # GIVEN a thread holding COND, one blocked in `with COND:`, one in COND.wait() (released
    # the lock, waits for a notify) and one on an Event
    stop = started.stop
    held = threading.Event()
    notified = threading.Event()

    def cond_holder() -> None:
        with COND:
            held.set()
            stop.wait(30)

    def cond_enter() -> None:
        with COND:
            pass

    def cond_wait() -> None:
        with COND:
            COND.wait(30)
        notified.set()

    waiter_on_wait = started(cond_wait)
    time.sleep(0.2)  # it is in COND.wait, which released COND's lock
    started(cond_holder)
    assert held.wait(5)
    enter = started(cond_enter)
    event = started(lambda: stop.wait(30))
    try:
        # WHEN read
        wait = blocked(enter)
        # THEN `with COND:` waits on the Condition (one frame out of Condition.__enter__)
        assert wait["expr"] == "COND" and wait["type"] == "threading.Condition"
        assert wait["filename"] == __file__
        # AND a thread in Condition.wait or Event.wait has no lock site at all
        assert site_of(event) is None
        if not notified.is_set():
            assert site_of(waiter_on_wait) is None
    finally:
        stop.set()
        with COND:
            COND.notify_all()


def test_a_free_lock_or_a_thread_elsewhere_is_no_wait(started: Any) -> None:
    # GIVEN a thread sleeping with nobody holding anything
    t = started(lambda: started.stop.wait(30))
    wait_for(lambda: t.ident in sys._current_frames(), what="the thread")
    time.sleep(0.1)
    # WHEN / THEN it has no lock site; and annotate with no sites adds nothing
    assert wait_dict(t) is None
    entries = [{"ident": t.ident}]
    locks.annotate(entries, {}, sys._current_frames(), [])
    assert entries == [{"ident": t.ident}]


def test_only_a_frame_inside_the_with_body_holds_it(started: Any) -> None:
    # GIVEN a thread inside two nested with blocks, and one past the end of a with block
    # (both now waiting on an Event, the second later in the same function)
    stop = started.stop
    outer, inner, done = threading.Lock(), threading.RLock(), threading.Lock()
    ready = threading.Barrier(3)

    def nested() -> None:
        with outer:  # noqa: SIM117 - two with statements on purpose: two lines, two blocks
            with inner:
                ready.wait(5)
                stop.wait(30)

    def after() -> None:
        with done:
            pass
        ready.wait(5)
        stop.wait(30)

    a, b = started(nested), started(after)
    ready.wait(5)
    time.sleep(0.05)
    waited = {id(outer): "o", id(inner): "i", id(done): "d"}
    frames = sys._current_frames()
    # WHEN their frames are searched for with blocks on those objects
    in_both = locks.holds_of(frames[a.ident], waited)  # type: ignore[index]
    past = locks.holds_of(frames[b.ident], waited)  # type: ignore[index]
    del frames
    # THEN the nested thread holds both (outer first in the with order of its frame), the
    # other none: its frame is past the with body
    assert sorted((h["expr"], h["obj"]) for h in in_both) == [("inner", "i"), ("outer", "o")]
    assert past == []


KEYED = {"alice": threading.Lock()}


def test_a_lock_in_a_dict_by_key_is_named_and_its_holder_found(started: Any) -> None:
    # GIVEN per-user locks in a module dict: one thread inside `with KEYED[user]:`, another
    # blocked entering it (the key a local, the dict read with dict.get, never __getitem__)
    stop = started.stop
    held = threading.Event()

    def holder() -> None:
        user = "alice"
        with KEYED[user]:
            held.set()
            stop.wait(30)

    def waiter() -> None:
        user = "alice"
        with KEYED[user]:
            pass

    h = started(holder)
    assert held.wait(5)
    w = started(waiter)
    # WHEN read
    wait = blocked(w)
    # THEN the expression keeps the subscript; the holder is in a with block on that lock
    assert wait["expr"] == "KEYED[user]"
    holds = locks.holds_of(sys._current_frames()[h.ident], {id(KEYED["alice"]): wait["obj"]})  # type: ignore[index]
    assert [x["expr"] for x in holds] == ["KEYED[user]"]
