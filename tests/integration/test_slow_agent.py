"""Workers spinning in pure Python: the agent queues for the GIL behind them and answers late,
while py-spy, reading the process from outside, still has every thread at once (issue 13).

One target for the module (24 workers, the agent loaded); each test sets 16 of them spinning
in ``/spin``, each keeping the GIL 20 ms at a time (``SLOW_SWITCH``), and releases them at the
end. The session's grace for the agent is set to 0 here
so that py-spy's reading carries a poll whenever the agent has not answered by the time py-spy
has (how long the agent takes depends on this box; nothing here asserts a duration).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future
from typing import Iterator, List, Optional, Tuple

import httpx
import psutil
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.model import SourceKind
from cpinspect.protocol import snapshots_from_document
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState, Update
from cpinspect.sources.live import NO_POOLS, NO_REQUESTS, AgentSession
from cpinspect.sources.open import open_session
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.banner import Banner
from tests.conftest import TargetProcess, start_target, wait_for
from tests.helpers import BackgroundRequests, run_cli
from tests.tui.helpers import wait_until

WORKERS = 24
SPINNING = 16
SLOW_SWITCH = 0.02
"""The target's switch interval while its workers spin: each thread running Python keeps the
GIL 20 ms (CPython's default is 5 ms) before the next waiter, the agent's or a spinner's, may
take it. The agent waits that long at each of the few times it takes the GIL again to answer
(measured here: 88-907 ms for an answer, against 19-34 ms for py-spy's read), so py-spy's
reading is in first whatever the box's load; at 5 ms the two raced (3-351 ms against 17-36 ms)
and a test could wait in vain for either outcome."""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    proc = start_target(["--threads", str(WORKERS)], tmp_path_factory.mktemp("slow-agent"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def spinning(target: TargetProcess) -> Iterator[TargetProcess]:
    """``SPINNING`` workers in ``/spin`` until the test ends (or ``release``)."""
    httpx.get("http://127.0.0.1:%d/rearm" % target.port, timeout=30)
    httpx.get("http://127.0.0.1:%d/switch?seconds=%s" % (target.port, SLOW_SWITCH), timeout=30)
    BackgroundRequests(target.port, "/spin?seconds=60", SPINNING)
    agent = AgentSource(find_agent(target.pid).connect_path)

    def all_spinning() -> bool:
        threads = agent.threads(timeout=30).threads
        return sum(1 for t in threads if t.request and t.request.path == "/spin") >= SPINNING

    try:
        wait_for(all_spinning, timeout=60, interval=0.1, what="the workers spinning")
    finally:
        agent.close()
    try:
        yield target
    finally:
        release(target)


CARRIED = ("agent slow: no answer within ", "agent not answering within ")
"""How the banner begins while py-spy carries the polls: the agent slow, or silent since the
session opened (under load, 8 busy loops beside, its first question outlasted the 1 s timeout)."""


def release(target: TargetProcess) -> None:
    """End every ``/spin`` (the app's RELEASE event), the switch interval back at 5 ms."""
    httpx.get("http://127.0.0.1:%d/release" % target.port, timeout=30)
    httpx.get("http://127.0.0.1:%d/switch?seconds=0.005" % target.port, timeout=30)


def spinning_seen(update: Update) -> int:
    threads = update.threads
    if threads is None:
        return 0
    return sum(
        1
        for t in threads.threads
        if t.top_app_frame is not None and t.top_app_frame.function == "spin"
    )


def agent_takes_over(session: AgentSession) -> Update:
    """Poll until the agent's threads are shown again (the spinning released): that update."""

    def agent_again() -> Optional[Update]:
        u = session.poll()
        return u if u.effective_threads_source is SourceKind.AGENT else None

    back = wait_for(agent_again, timeout=60, interval=0.1, what="the agent taking over")
    assert isinstance(back, Update)
    return back


def test_py_spy_carries_the_polls_while_the_agent_is_slow_then_the_agent_takes_over(spinning):
    # GIVEN a live session (agent + py-spy) on an app with 16 of its 24 workers spinning
    opened = open_session(str(spinning.pid))
    session = opened.session
    assert isinstance(session, AgentSession)
    session.pyspy_wait = 0.25  # as the TUI sets it
    try:
        # (one answer from the agent first, with the spinning requests in it: the session
        # waits for it as long as it takes)
        session.agent_grace = 30.0

        def agent_with_spinners() -> Optional[Update]:
            u = session.poll()
            ok = u.effective_threads_source is SourceKind.AGENT and spinning_seen(u) >= SPINNING
            return u if ok else None

        answered = wait_for(agent_with_spinners, timeout=60, interval=0.1, what="the agent")
        assert isinstance(answered, Update)
        session.agent_grace = 0.0

        # WHEN the session polls on while the agent is slow to answer
        def carried() -> Optional[Update]:
            before = time.time()
            u = session.poll()
            if u.effective_threads_source is not SourceKind.PYSPY:
                return None
            # THEN the threads shown were read by py-spy during this very poll
            assert u.threads is not None and u.threads.taken_at >= before
            return u

        update = wait_for(carried, timeout=60, interval=0.1, what="py-spy carrying a poll")
        assert isinstance(update, Update)
        # AND the banner says the agent is slow, and where requests and pools come from
        assert update.state is LinkState.LIVE
        assert update.message.startswith("agent slow: no answer within ")
        assert "; threads from py-spy; requests and pool numbers from " in update.message
        assert set(update.stale) == {"info", "pools"}
        assert update.threads is not None
        # the agent's last pool numbers, kept (a late answer may have brought newer ones)
        assert session.threads is not None and update.threads.pools == session.threads.pools
        assert update.threads.pools[0].busy >= SPINNING
        # AND the spinning workers keep the requests the agent last saw them serve
        spinners = [
            t
            for t in update.threads.threads
            if t.top_app_frame is not None and t.top_app_frame.function == "spin"
        ]
        assert len(spinners) == SPINNING
        assert all(t.request is not None and t.request.path == "/spin" for t in spinners)
        # AND a slow agent is not a stuck interpreter (the findings would say so)
        assert not update.agent_unresponsive

        # WHEN the spinning ends
        release(spinning)

        # THEN the agent answers in time again and takes over
        back = agent_takes_over(session)
        assert back.state in (LinkState.LIVE, LinkState.RECONNECTED)
        assert not back.message.startswith("agent slow")
        assert back.stale == ()
    finally:
        session.close()


async def test_the_tui_shows_py_spy_threads_while_the_agent_is_slow_then_the_agents(spinning):
    # GIVEN the TUI on a session whose agent is slow (16 workers spinning)
    opened = open_session(str(spinning.pid))
    session = opened.session
    assert isinstance(session, AgentSession)
    session.agent_grace = 0.0
    app = InspectorApp(session, interval=0.5, source_lines=opened.source_lines)
    async with app.run_test(size=(140, 40)) as pilot:
        banner = app.query_one(Banner)
        # WHEN a poll is carried by py-spy
        await wait_until(
            pilot,
            lambda: (
                app.store.update is not None
                and app.store.update.effective_threads_source is SourceKind.PYSPY
            ),
            timeout=60,
            what="a poll carried by py-spy",
        )
        # THEN the banner says the agent is slow and the threads are py-spy's
        await wait_until(
            pilot,
            lambda: "agent slow" in banner.plain,
            timeout=30,
            what="the banner saying the agent is slow",
        )
        assert "threads from py-spy" in banner.plain
        # AND the threads on screen are py-spy's reading
        threads = app.store.threads
        assert threads is not None and len(threads.threads) >= WORKERS

        # WHEN the spinning ends
        release(spinning)
        # THEN the agent's data comes back and the banner no longer says it is slow
        await wait_until(
            pilot,
            lambda: (
                app.store.update is not None
                and app.store.update.effective_threads_source is SourceKind.AGENT
                and "agent slow" not in banner.plain
            ),
            timeout=60,
            what="the agent's data back on screen",
        )
    session.close()


def test_dump_on_a_slow_agent_prints_py_spy_threads_and_says_what_it_left_out(spinning):
    # GIVEN an app whose agent answers slowly (16 workers spinning), and the agent's grace
    # set to 0 so that the dump gives up on it as soon as py-spy has read the process
    def dump_carried() -> Optional[dict]:
        done = run_cli("dump", "--json", str(spinning.pid), env=_env(grace="0"))
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        [snapshot] = snapshots_from_document(doc)
        if snapshot.source is not SourceKind.PYSPY:
            return None
        return {"snapshot": snapshot, "stderr": done.stderr}

    # WHEN `cpinspect dump --json PID` runs (until one run finds the agent slower than py-spy)
    found = wait_for(dump_carried, timeout=90, interval=0.1, what="a dump carried by py-spy")
    assert isinstance(found, dict)
    snapshot, stderr = found["snapshot"], found["stderr"]
    # THEN it exits 0 with py-spy's threads, the spinning workers among them
    assert snapshot.threads is not None
    spinners = [
        t
        for t in snapshot.threads.threads
        if t.top_app_frame is not None and t.top_app_frame.function == "spin"
    ]
    assert len(spinners) == SPINNING
    # AND one line on stderr says the agent was slow (or, on a loaded box, that it did not
    # answer the dump's first question in time either: the session opened on its silence) and
    # that requests and pools are missing
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    heads = ("note: agent slow: no answer within ", "note: agent not answering within ")
    assert lines[0].startswith(heads), lines[0]
    # (py-spy reads the locals of a process this small: the requests are its, when it found them)
    has_requests = any(t.request is not None for t in spinners)
    missing = NO_POOLS if has_requests else NO_REQUESTS
    assert lines[0].endswith("; threads from py-spy; " + missing), lines[0]
    assert any(note.startswith(("agent slow", "agent not answering")) for note in snapshot.notes)


def test_the_first_poll_on_an_agent_that_never_answered_tells_busy_from_stuck(spinning):
    # GIVEN 16 of 24 workers spinning, and a session opened on an agent that did not answer
    # (as open_session opens it when the agent was silent: its first poll shows py-spy's
    # threads without waiting for the agent again; no earlier poll to compare a holder with),
    # the GIL passed on every 5 ms as by default (py-spy's short read sees several threads run)
    httpx.get("http://127.0.0.1:%d/switch?seconds=0.005" % spinning.port, timeout=30)
    from cpinspect.findings import find_all
    from cpinspect.findings.threads import GIL_MOVING_NOTE
    from cpinspect.snapshots import snapshot_from_update
    from cpinspect.sources.pyspy import PySpySource

    def first_poll() -> Update:
        source = AgentSource(find_agent(spinning.pid).connect_path)
        session = AgentSession(
            source, pid=spinning.pid, pyspy=PySpySource(spinning.pid), silent="no answer"
        )
        try:
            return session.poll()
        finally:
            session.close()

    # WHEN it polls once
    update = first_poll()
    # THEN py-spy's threads stand in for the agent, and the banner says the GIL moves
    # between threads running Python: busy, not stuck
    assert update.effective_threads_source is SourceKind.PYSPY
    assert update.agent_unresponsive
    assert "busy, not stuck: " + GIL_MOVING_NOTE in update.message, update.message
    assert "the interpreter may be stuck" not in update.message
    # AND the findings of that first screen say contention, never a stuck interpreter
    found = [f.id for f in find_all(snapshot_from_update(update))]
    assert "gil-contention" in found and "interpreter-stuck" not in found, found


def _env(grace: str) -> dict:
    return dict(os.environ, CPINSPECT_AGENT_GRACE=grace)


def _py_spies() -> list:
    """This process's py-spy children still running."""
    children = psutil.Process().children(recursive=True)
    return [c for c in children if c.is_running() and c.name() == "py-spy"]


def _carried_session(target: TargetProcess, landed: threading.Event) -> AgentSession:
    """A live session as the TUI sets it, reads ahead paced at 0.2 s, ``landed`` set for each
    reading handed over, polled until py-spy carries a poll (the agent behind the spinners
    not answering by the time py-spy has)."""
    session = open_session(str(target.pid)).session
    assert isinstance(session, AgentSession)
    session.agent_grace = 0.0
    session.pyspy_wait = 0.25  # as the TUI sets it
    session.read_every = 0.2
    session.on_landed = landed.set

    def carried() -> Optional[Update]:
        u = session.poll()
        return u if u.effective_threads_source is SourceKind.PYSPY else None

    try:
        wait_for(carried, timeout=60, interval=0.1, what="py-spy carrying a poll")
    except BaseException:
        session.close()
        raise
    return session


def test_py_spy_readings_are_handed_over_as_they_land_then_the_agent_takes_over(spinning):
    # GIVEN a live session whose polls py-spy carries (16 of 24 workers spinning), and a
    # listener for readings that land while no poll waits (the TUI's ``on_landed``)
    landed = threading.Event()
    session = _carried_session(spinning, landed)
    try:
        # WHEN the read begun as the last poll ended lands
        def shown_as_landed() -> Optional[Update]:
            if not landed.wait(30) or not session.landed():
                landed.clear()
                session.poll()  # (the agent's late answer ended the carry: carry again)
                return None
            landed.clear()
            # THEN the session holds that reading, and the next poll shows it as it is
            pending = session._spy_pending
            assert pending is not None and pending.done()
            reading = pending.result()
            u = session.poll()
            if u.effective_threads_source is not SourceKind.PYSPY:
                return None  # the agent answered in time just then
            assert reading is not None and u.threads is not None
            assert u.threads.taken_at == reading.taken_at
            return u

        update = wait_for(shown_as_landed, timeout=90, interval=0.0, what="a landed reading")
        assert isinstance(update, Update)
        # AND the header still says py-spy carries: the agent slow, requests from before
        assert update.state is LinkState.LIVE
        # (a session opened behind the spinners when the agent did not answer its first
        # question within the timeout says "not answering", as a loaded box showed)
        assert update.message.startswith(CARRIED), update.message
        # (what the agent last said, or that it has not answered yet: a session opened behind
        # the spinners may never have had its answer)
        assert (
            "; threads from py-spy; requests and pool numbers from " in update.message
            or update.message.endswith(("; threads from py-spy; " + NO_REQUESTS, NO_POOLS))
        ), update.message
        assert spinning_seen(update) == SPINNING

        # WHEN the spinning ends
        release(spinning)

        # THEN the agent answers in time again and takes over, and from then on no reading
        # is handed over on its own (py-spy only joins the agent's answers)
        back = agent_takes_over(session)
        assert not back.message.startswith("agent slow") and back.stale == ()
        landed.clear()
        following = session.poll()
        assert following.effective_threads_source is SourceKind.AGENT
        assert not session.landed() and not landed.is_set()
    finally:
        session.close()


def test_closing_while_py_spy_reads_ahead_leaves_no_py_spy_and_drops_the_reading(spinning):
    # GIVEN a live session whose polls py-spy carries, its next read started as a poll ended
    session = _carried_session(spinning, threading.Event())
    session.read_every = 0.0
    handed: List[bool] = []
    session.on_landed = lambda: handed.append(session._closed)

    def read_ahead() -> Optional[Future]:
        u = session.poll()
        ahead = session._spy_pending
        carried = u.effective_threads_source is SourceKind.PYSPY
        return ahead if carried and ahead is not None and not ahead.done() else None

    try:
        ahead = wait_for(read_ahead, timeout=60, interval=0.0, what="a read ahead running")
        assert isinstance(ahead, Future)
        runners = [t for t in threading.enumerate() if t.name.startswith("cpinspect-pyspy")]
    finally:
        # WHEN the session closes while py-spy reads ahead (or is about to)
        session.close()
    # THEN that read ends without a reading handed over after close(), no py-spy process is
    # left, and the thread that ran py-spy ends
    ahead.exception(timeout=30)  # (ended, whichever way)
    assert True not in handed and not session.landed()
    wait_for(lambda: not _py_spies(), timeout=10, what="no py-spy left")
    wait_for(
        lambda: not any(t.is_alive() for t in runners), timeout=10, what="py-spy's thread ended"
    )


async def test_the_tui_shows_py_spys_readings_as_they_land_not_at_its_next_poll(spinning):
    # GIVEN the TUI polling every 30 s on a session whose agent is slow (16 workers
    # spinning), py-spy's reads ahead paced at 0.3 s
    opened = open_session(str(spinning.pid))
    session = opened.session
    assert isinstance(session, AgentSession)
    session.agent_grace = 0.0
    app = InspectorApp(session, interval=30.0, source_lines=opened.source_lines)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.polls_received > 0, timeout=30, what="a poll")
        session.read_every = 0.3  # (the app set its 30 s: faster here, to see several)
        received = app.polls_received
        app.poll_now()  # (takes the read ahead the first poll left waiting for its 30 s)
        await wait_until(pilot, lambda: app.polls_received > received, timeout=30, what="a poll")
        seen = {"last": None, "by_hand": False}
        followed: List[Tuple[Update, Update]] = []

        def watch() -> bool:
            # Polled by hand only while the agent's data is shown (py-spy not carrying: no
            # read ahead then); a carried update followed by another with no poll by hand
            # between came from a reading that landed (the 30 s tick is not due).
            u = app.store.update
            if u is not None and u is not seen["last"]:
                before, seen["last"] = seen["last"], u
                if (
                    isinstance(before, Update)
                    and not seen["by_hand"]
                    and before.effective_threads_source is SourceKind.PYSPY
                    and u.effective_threads_source is SourceKind.PYSPY
                ):
                    followed.append((before, u))
                seen["by_hand"] = False
            carrying = u is not None and u.effective_threads_source is SourceKind.PYSPY
            if not carrying and not app.poll_in_flight:
                app.poll_now()
                seen["by_hand"] = True
            return len(followed) >= 2

        # WHEN py-spy carries the polls
        # THEN its readings reach the screen as they land, well before the next 30 s tick:
        # each carried by py-spy and newer than the one before, the banner saying so
        await wait_until(pilot, watch, timeout=60, what="readings shown as they land")
        for before, after in followed:
            assert before.threads is not None and after.threads is not None
            assert after.threads.taken_at > before.threads.taken_at
            assert after.message.startswith(CARRIED), after.message
            assert "threads from py-spy" in after.message
    session.close()
