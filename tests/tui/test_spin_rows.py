"""What a poll behind spinning workers makes again (issue 13): every reading brings the spinners'
stacks and requests, and after a change of source (py-spy carrying, then the agent again) every
thread, as new objects of the same text. The table keeps their rows, the shared-stack line keeps
each stack's key, and a banner line whose seconds change is not a layout. Real Textual
(``run_test`` + Pilot) on a scripted poller, and the pure parts alone; asserted through counters
and what the screen shows, never timings."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, List, Sequence

import pytest

from cpinspect.analysis import KEY_ROUNDS, StackKeys
from cpinspect.formatting import largest_shared_stack
from cpinspect.model import Frame, RequestInfo, ThreadInfo
from cpinspect.sources.base import Update
from cpinspect.tui.widgets import banner as banner_module
from cpinspect.tui.widgets import threads_table
from cpinspect.tui.widgets.banner import Banner
from cpinspect.tui.widgets.stack_view import StackView

from .fakes import (
    CART_STACK,
    EXPORT_STACK,
    T0,
    FakePoller,
    other_threads,
    pool,
    snapshot,
    update,
    worker,
)
from .helpers import column, first_data, make_app, poll, settled, wait_until

SPIN_STACK = (
    Frame("/srv/shop/shop/hot.py", 12, "spin", is_app=True),
    *EXPORT_STACK[1:],
)


def rebuilt(thread: ThreadInfo, seconds: float, owns_gil: Any = None) -> ThreadInfo:
    """``thread`` read again ``seconds`` later by another source: a new object, with a new
    request object of the same cells (its start seen at another instant) and a new stack
    tuple of new frames at the same lines."""
    request = thread.request
    if request is not None:
        request = dataclasses.replace(request, started_at=(request.started_at or 0) + 0.01)
    stack = tuple(dataclasses.replace(f) for f in thread.stack)
    elapsed = thread.elapsed + seconds if thread.elapsed is not None else None
    return dataclasses.replace(
        thread, request=request, stack=stack, elapsed=elapsed, owns_gil=owns_gil
    )


def busy_workers(n: int) -> List[ThreadInfo]:
    threads = []
    for i in range(1, n + 1):
        stack = SPIN_STACK if i % 3 == 0 else EXPORT_STACK
        threads.append(worker(i, 10.0 + i, f"/job/{i}", stack=stack, handler="Jobs.run"))
    return threads


def as_update(threads: Sequence[ThreadInfo], at: float) -> Update:
    return update(snapshot([*threads, *other_threads()], taken_at=at, pools=[pool(busy=9)]))


@pytest.fixture
def formatted(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """The idents of the threads the table formats (``thread_row``), in order."""
    made: List[int] = []
    original = threads_table.thread_row

    def counting(thread: ThreadInfo) -> Any:
        made.append(thread.ident)
        return original(thread)

    monkeypatch.setattr(threads_table, "thread_row", counting)
    return made


async def test_threads_read_again_as_new_objects_keep_their_rows(formatted: List[int]) -> None:
    # GIVEN nine busy workers on screen, read by the agent (GIL unknown)
    first = busy_workers(9)
    poller = FakePoller([as_update(first, T0)])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        assert "/job/9" in " ".join(column(app, "request"))
        formatted.clear()
        # WHEN py-spy carries the next poll: every thread a new object, its request a new one
        # of the same cells, its stack new frames at the same lines, the GIL False, not None
        second = [rebuilt(t, 1.0, owns_gil=False) for t in first]
        poller.set(as_update(second, T0 + 1))
        await poll(pilot)
        # THEN no row was formatted again, and every elapsed cell moved on by a second
        assert formatted == []
        assert column(app, "elapsed")[:9] == [f"{11 + n}.0 s" for n in range(9, 0, -1)]
        # WHEN one of them now serves another request (same thread, new path)
        third = [rebuilt(t, 1.0, owns_gil=False) for t in second]
        moved = third[4]
        assert moved.request is not None
        third[4] = dataclasses.replace(
            moved, request=dataclasses.replace(moved.request, path="/other")
        )
        poller.set(as_update(third, T0 + 2))
        await poll(pilot)
        # THEN that row alone was formatted, and it shows the new request
        assert formatted == [moved.ident]
        assert "GET /other" in column(app, "request")
        assert "GET /job/5" not in column(app, "request")


async def test_the_shared_stack_line_follows_stacks_that_move_between_polls() -> None:
    # GIVEN nine busy workers: six in export (at the same lines), three spinning
    threads = busy_workers(9)
    poller = FakePoller([as_update(threads, T0)])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        panel = app.threads_panel
        assert "6 threads share this stack: extras.py:146 execute" in panel.summary_text
        # WHEN a poll brings every stack as new frame objects at the same lines
        threads = [rebuilt(t, 1.0) for t in threads]
        poller.set(as_update(threads, T0 + 1))
        await poll(pilot)
        # THEN the line is the same
        assert "6 threads share this stack: extras.py:146 execute" in panel.summary_text
        # WHEN four export workers move to the spinners' line (now 7 against 2)
        moved = {1, 2, 4, 5}
        threads = [
            dataclasses.replace(rebuilt(t, 1.0), stack=SPIN_STACK) if i + 1 in moved else t
            for i, t in enumerate(threads)
        ]
        poller.set(as_update(threads, T0 + 2))
        await poll(pilot)
        # THEN the line names the spinners' stack and its seven threads
        assert "7 threads share this stack: hot.py:12 spin" in panel.summary_text


async def test_the_shared_stack_line_is_the_one_worked_out_from_scratch() -> None:
    # GIVEN busy workers on three stacks (two of them tied at times), on screen
    rng = random.Random(13)
    stacks = [EXPORT_STACK, SPIN_STACK, CART_STACK]
    threads = [
        worker(i, 5.0 + i, f"/job/{i}", stack=stacks[i % 3], handler="Jobs.run")
        for i in range(1, 13)
    ]
    poller = FakePoller([as_update(threads, T0)])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        panel = app.threads_panel
        for n in range(1, 16):
            # WHEN each poll moves some threads to other stacks, some to new requests (their
            # elapsed starts over), hands the GIL to one of them, and rebuilds the rest
            gil = rng.randrange(len(threads))
            nxt = []
            for i, t in enumerate(threads):
                t = rebuilt(t, 1.0, owns_gil=(i == gil))
                if rng.random() < 0.2:
                    t = dataclasses.replace(t, stack=rng.choice(stacks))
                if rng.random() < 0.1:
                    t = dataclasses.replace(t, elapsed=0.1)
                nxt.append(t)
            threads = nxt
            poller.set(as_update(threads, T0 + n))
            await poll(pilot)
            # THEN the line says what the pure function says of this poll's busy threads
            shared = largest_shared_stack(
                t
                for t in app.store.threads.workers
                if t.busy  # type: ignore[union-attr]
            )
            assert shared is not None
            assert shared.summary in panel.summary_text, f"poll {n}"


def test_stack_keys_are_the_stack_key_and_remember_a_few_rounds_only() -> None:
    # GIVEN the keys of two threads' stacks
    keys = StackKeys()
    a = worker(1, 3.0, "/a", stack=EXPORT_STACK)
    b = worker(2, 3.0, "/b", stack=SPIN_STACK)
    assert keys.key(a) == a.stack_key and keys.key(b) == b.stack_key
    # WHEN a new stack object at other lines takes the place of one of them
    moved = dataclasses.replace(b, stack=CART_STACK)
    keys.next_round()
    # THEN its key is its own, never the old object's
    assert keys.key(moved) == moved.stack_key != b.stack_key
    # AND a stack not asked for in KEY_ROUNDS rounds is forgotten (the memory is the stacks
    # on show lately)
    for _ in range(KEY_ROUNDS):
        keys.next_round()
    assert all(entry[0] is not a.stack for r in keys._before for entry in r.values())
    assert len(keys._before) == KEY_ROUNDS - 1


def test_stack_keys_outlast_a_poll_or_two_of_another_source() -> None:
    # GIVEN the agent's stacks keyed at one poll
    keys = StackKeys()
    agent = [worker(n, 3.0, "/a", stack=tuple(EXPORT_STACK)) for n in range(3)]
    first = [keys.key(t) for t in agent]
    # WHEN py-spy carries the next two polls (its stacks other objects), then the agent's
    # answer brings the same stack objects back (protocol.Stacks)
    for _ in range(2):
        keys.next_round()
        for n in range(3):
            keys.key(worker(n, 3.0, "/a", stack=EXPORT_STACK[:-1] + EXPORT_STACK[-1:]))
    keys.next_round()
    again = [keys.key(t) for t in agent]
    # THEN their keys are those made before the switch, not made again
    assert all(x is y for x, y in zip(again, first))


def count_banner_layouts(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """From now on, the banner's text at each refresh of it that asks for a layout."""
    layouts: List[str] = []
    original = Banner.refresh

    def counting(self: Banner, *regions: Any, **kwargs: Any) -> Any:
        if kwargs.get("layout"):
            layouts.append(self.plain)
        return original(self, *regions, **kwargs)

    monkeypatch.setattr(Banner, "refresh", counting)
    return layouts


async def test_a_banner_line_whose_words_change_is_not_a_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a one-line banner (the slow agent's seconds) on screen
    def slow(seconds: float, lines: int = 1) -> Update:
        warnings = tuple(f"agent slow: no answer within {seconds} s ({n})" for n in range(lines))
        return update(snapshot(busy_workers(3), taken_at=T0 + seconds), warnings=warnings)

    poller = FakePoller([slow(1.0)])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        banner = app.query_one(Banner)
        assert "within 1.0 s" in banner.plain
        layouts = count_banner_layouts(monkeypatch)
        # WHEN the next poll says other seconds in the same one line
        poller.set(slow(2.5))
        await poll(pilot)
        await settled(pilot)
        # THEN the banner shows them, one line high, without a layout
        assert "within 2.5 s" in banner.plain and "within 1.0 s" not in banner.plain
        assert banner.size.height == 1
        assert layouts == []
        # WHEN a poll brings two lines
        poller.set(slow(3.0, lines=2))
        await poll(pilot)
        await settled(pilot)
        # THEN that one is laid out, and the banner is two lines high
        assert layouts
        assert banner.size.height == 2


async def test_a_banner_that_comes_and_goes_with_the_agent_keeps_its_height(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN polls where the slow agent's line comes and goes (it answers every few polls
    # behind spinning workers), the hold shortened to 2 s
    monkeypatch.setattr(banner_module, "FLAP_HOLD", 2.0)
    slow = update(snapshot(busy_workers(3), taken_at=T0 + 1.0), warnings=("agent slow: no answer",))
    answered = update(snapshot(busy_workers(3), taken_at=T0 + 2.0))
    poller = FakePoller([answered])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        banner = app.query_one(Banner)
        assert not banner.display
        poller.set(slow)
        await poll(pilot)
        await settled(pilot)
        assert banner.plain.startswith("⚠ agent slow") and banner.size.height == 1
        layouts = count_banner_layouts(monkeypatch)
        # WHEN the agent answers, then is slow again, then answers, within the hold
        for now in (answered, slow, answered):
            poller.set(now)
            await poll(pilot)
            await settled(pilot)
            # THEN the banner keeps its one row (blank while the agent answers): no layout
            assert banner.display and banner.size.height == 1
            assert banner.plain == ("" if now is answered else "⚠ agent slow: no answer")
            assert banner.has_class("-warning") is (now is slow)
        assert layouts == []
        # AND once no line came back for the hold, the row goes (laid out then, blank)
        await wait_until(pilot, lambda: not banner.display, timeout=10.0)
        assert layouts and set(layouts) == {""}


def test_same_cells_compares_what_a_row_shows() -> None:
    # GIVEN a request and the same one seen starting at another instant
    a = RequestInfo("GET", "/x", "q=1", client="10.0.0.1", started_at=1.0, handler="X.x")
    b = dataclasses.replace(a, started_at=1.2, peer="127.0.0.1:1", source="frame")
    # THEN they give the same cells; another path, client or handler does not
    assert threads_table._same_cells(a, b)
    assert threads_table._same_cells(None, None)
    assert not threads_table._same_cells(a, None)
    for change in ({"path": "/y"}, {"query": "q=2"}, {"client": "x"}, {"handler": None}):
        assert not threads_table._same_cells(a, dataclasses.replace(a, **change))  # type: ignore[arg-type]


async def test_a_spinning_thread_selected_keeps_its_stack_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a spinning worker selected, its stack on screen
    spinner = worker(1, 30.0, "/spin", stack=SPIN_STACK, handler="Root.spin")
    poller = FakePoller([as_update([spinner], T0)])
    app = make_app(poller)
    made: List[int] = []
    original = StackView._stack_lines

    def counting(self: StackView, *args: Any) -> Any:
        made.append(1)
        return original(self, *args)

    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        view = app.query_one(StackView)
        assert "hot.py:12" in view.plain
        monkeypatch.setattr(StackView, "_stack_lines", counting)
        # WHEN a reading brings its stack as new frames at the same lines
        poller.set(as_update([rebuilt(spinner, 1.0)], T0 + 1))
        await poll(pilot)
        # THEN the lines are not made again, and the new elapsed time shows
        assert made == []
        assert "31.0 s" in view.plain and "hot.py:12" in view.plain
        # WHEN the next one finds it at another line
        moved = dataclasses.replace(spinner, elapsed=32.0, stack=CART_STACK)
        poller.set(as_update([moved], T0 + 2))
        await poll(pilot)
        # THEN they are made again (and once more when its source line comes), and say where
        # it is now
        assert made
        assert "cart.py:30" in view.plain and "hot.py:12" not in view.plain
