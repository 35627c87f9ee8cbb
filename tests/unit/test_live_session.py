"""AgentSession against agents of other versions: degrade per endpoint, never go dark.

Another agent version cannot be installed here side by side, so the real agent server code
(``AgentServer``, real Unix socket) serves payloads shaped like such an agent's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Tuple

import pytest

from cpinspect.agent.server import AgentServer
from cpinspect.errors import NoSuchProcess
from cpinspect.model import LogOrigin, LogRecord, SourceKind
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState
from cpinspect.sources.live import CPU_REUSE, AgentSession, spy_wait
from cpinspect.sources.pyspy import KEEP_FLOOR

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def payload(name: str, **changes: object) -> dict:
    data = json.loads((FIXTURES / name).read_text())
    data.update(changes)
    return data


@pytest.fixture
def serve(short_tmp):
    servers = []

    def start(endpoints):
        srv = AgentServer(str(short_tmp / ("%d.sock" % len(servers))), endpoints)
        srv.start()
        servers.append(srv)
        return srv.path

    yield start
    for srv in servers:
        srv.stop()


def test_an_agent_without_info_still_shows_threads_and_says_why(serve):
    # GIVEN an (older) agent that only has /v1/threads
    path = serve({"/v1/threads": lambda q: (200, payload("agent_threads_v1.json"))})
    session = AgentSession(AgentSource(path), None, pid=None)
    # WHEN the session polls
    update = session.poll()
    # THEN threads show, the link is live, and a warning names the missing endpoint
    assert update.state is LinkState.LIVE
    assert update.threads is not None and len(update.threads.workers) == 3
    assert update.info is None
    assert any("no /v1/info" in w for w in update.warnings)


def test_a_failing_threads_probe_keeps_the_last_threads_with_a_warning(serve):
    calls = {"n": 0}

    def threads(query):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("frames went away")
        return 200, payload("agent_threads_v1.json")

    path = serve(
        {"/v1/threads": threads, "/v1/info": lambda q: (200, payload("agent_info_v1.json"))}
    )
    session = AgentSession(AgentSource(path), None, pid=None)
    first = session.poll()
    second = session.poll()
    assert second.state is LinkState.LIVE
    assert second.threads is first.threads
    assert any("frames went away" in w for w in second.warnings)


def test_a_newer_schema_is_read_tolerantly_and_flagged(serve):
    newer = payload("agent_threads_v1.json", schema=2, agent="9.0.0", brand_new_field=[1, 2])
    path = serve(
        {
            "/v1/threads": lambda q: (200, newer),
            "/v1/info": lambda q: (200, payload("agent_info_v1.json", schema=2, agent="9.0.0")),
        }
    )
    update = AgentSession(AgentSource(path), None, pid=None).poll()
    assert update.state is LinkState.LIVE and update.threads is not None
    assert any("upgrade cpinspect" in w for w in update.warnings)


def test_a_missing_socket_is_a_clear_error(short_tmp):
    with pytest.raises(NoSuchProcess, match="no such socket"):
        AgentSource(str(short_tmp / "gone.sock")).info()


class FakeSpy:
    """Stands in for ``PySpySource``: py-spy's threads from a captured dump, calls counted."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.requests = False
        self.native = False
        self.calls: list = []
        from cpinspect.sources.pyspy import TaskTimes

        self.task_times = TaskTimes()  # real: the CPU times of ``pid``'s threads

    def threads(self):
        from cpinspect.sources.pyspy import threads_from_dump

        return threads_from_dump(self.raw_dump(self.requests), time.time(), pid=self.pid)

    def raw_dump(self, locals: bool = False):
        self.calls.append(locals)
        return json.loads((FIXTURES / "pyspy_cherrypy_311.json").read_text())

    def gil_dump(self):
        from cpinspect.sources.pyspy import GilDump

        return GilDump(json.dumps(self.raw_dump(False)).encode())

    def clock(self) -> float:
        return time.time()

    def close(self) -> None:
        self.task_times.close()  # as PySpySource.close


def test_an_agent_silent_at_open_gives_py_spy_at_the_first_poll_then_takes_over(serve):
    # GIVEN an agent that does not answer at first (the GIL held), then does
    silent = threading.Event()
    silent.set()
    asked = []

    def slow(name):
        def answer(query):
            asked.append(name)
            if silent.is_set():
                time.sleep(1.0)
            return 200, payload(name)

        return answer

    path = serve(
        {"/v1/info": slow("agent_info_v1.json"), "/v1/threads": slow("agent_threads_v1.json")}
    )
    spy = FakeSpy(os.getpid())
    session = AgentSession(
        AgentSource(path, timeout=0.3),
        None,
        pid=os.getpid(),
        timeout=0.3,
        pyspy=spy,  # type: ignore[arg-type]
        silent="agent did not answer within 0.3 s — the interpreter may be stuck",
    )
    # WHEN it polls for the first time
    first = session.poll()
    # THEN py-spy's threads stand in at once, without asking the silent agent again
    assert asked == []
    assert first.effective_threads_source is SourceKind.PYSPY
    # a plain read first, then --locals (20 threads: cheap): requests come from py-spy
    assert spy.calls == [False, True]
    assert "(GIL held by thread CP Server Thread-7); threads from py-spy" in first.message
    assert "pool numbers from before" not in first.message and first.stale == ()
    # AND the header has the process, read from outside
    assert first.info is not None and first.info.pid == os.getpid()
    assert first.info.engine_state == "? (agent not answering)"
    # WHEN it polls again, the agent still silent: py-spy again, the agent asked once only
    second = session.poll()
    assert second.effective_threads_source is SourceKind.PYSPY
    # (the call runs in a background thread: on a loaded box it may not have asked yet)
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == ["agent_info_v1.json"]  # info still unanswered: threads not asked yet
    third = session.poll()
    assert third.effective_threads_source is SourceKind.PYSPY
    assert asked == ["agent_info_v1.json"]  # no second call queued behind the first
    # WHEN the agent answers
    silent.clear()
    # THEN it takes over (at the latest once the call still in flight has ended), says so,
    # and py-spy's reading is joined to its threads
    deadline = time.monotonic() + 10
    back = session.poll()
    while back.effective_threads_source is not SourceKind.AGENT and time.monotonic() < deadline:
        back = session.poll()
    assert back.state is LinkState.RECONNECTED and back.message == "agent answering again"
    assert back.effective_threads_source is SourceKind.AGENT and back.pyspy_joined
    assert back.info is not None and back.info.schema == 1
    assert session.pid == os.getpid()  # the pid given stays, whatever the agent reports
    session.close()


class GatedSpy(FakeSpy):
    """``FakeSpy`` whose reads wait for ``gate``: py-spy slow at 1,000 threads on a busy box."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.gate = threading.Event()
        self.finished = threading.Event()
        self.started = 0

    def raw_dump(self, locals: bool = False):
        self.started += 1
        self.gate.wait(10)
        try:
            return super().raw_dump(locals)
        finally:
            self.finished.set()


def test_a_slow_py_spy_joins_the_next_poll_instead_of_holding_this_one(serve):
    # GIVEN an agent that answers at once, and py-spy that has not finished its read
    path = serve(
        {
            "/v1/info": lambda q: (200, payload("agent_info_v1.json")),
            "/v1/threads": lambda q: (200, payload("agent_threads_v1.json")),
        }
    )
    spy = GatedSpy(os.getpid())
    session = AgentSession(
        AgentSource(path),
        None,
        pid=os.getpid(),
        pyspy=spy,  # type: ignore[arg-type]
    )
    session.pyspy_wait = 0.05  # as the TUI sets it
    try:
        # WHEN it polls while py-spy reads
        first = session.poll()
        # THEN the agent's threads show without py-spy's reading
        assert first.state is LinkState.LIVE and first.threads is not None
        assert not first.pyspy_joined
        # WHEN it polls again, py-spy still reading
        second = session.poll()
        # THEN no second py-spy was started beside the first
        assert spy.started == 1 and not second.pyspy_joined
        # WHEN py-spy finishes, and the next poll comes
        spy.gate.set()
        assert spy.finished.wait(10)
        third = session.poll()
        # THEN that reading is joined
        assert third.pyspy_joined
        # AND the next poll reads again (at the latest: the third may still have waited for
        # the first read to hand its result over)
        fourth = session.poll()
        assert fourth.pyspy_joined
        deadline = time.monotonic() + 10
        while spy.started < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spy.started >= 2
    finally:
        spy.gate.set()
        session.close()


def test_beside_an_answering_agent_only_the_gil_holder_is_read_from_py_spy(serve):
    # GIVEN an agent that answers, and py-spy reading the process (a GIL holder among 20)
    path = serve(
        {
            "/v1/info": lambda q: (200, payload("agent_info_v1.json")),
            "/v1/threads": lambda q: (200, payload("agent_threads_v1.json")),
        }
    )
    spy = FakeSpy(os.getpid())
    session = AgentSession(AgentSource(path), None, pid=os.getpid(), pyspy=spy)  # type: ignore[arg-type]
    try:
        # WHEN it polls
        update = session.poll()
        # THEN py-spy was read without locals and joined, its GIL holder named
        assert spy.calls == [False] and update.pyspy_joined
        whole = spy.threads()
        holder = next(t for t in whole.threads if t.owns_gil)
        assert update.gil_holder == holder.ident
        # ... and no thread of py-spy's other than the holder was added to the agent's
        agent_idents = {t["ident"] for t in payload("agent_threads_v1.json")["threads"]}
        extra = {t.ident for t in update.threads.threads} - agent_idents
        assert extra <= {holder.ident}
    finally:
        session.close()


class ClockedSpy(FakeSpy):
    """``FakeSpy`` whose readings are stamped by its own clock (py-spy's read time)."""

    def __init__(self, pid: int, read_at: float) -> None:
        super().__init__(pid)
        self.read_at = read_at

    def clock(self) -> float:
        return self.read_at


def test_a_slow_agent_leaves_the_poll_to_py_spy_then_takes_over_when_it_answers(serve):
    # GIVEN an agent that answers, then is slow (its /v1/threads waits for a gate), and
    # py-spy whose readings are stamped 20 s after the agent's last answer
    gate = threading.Event()
    gate.set()
    asked = []

    def threads(query):
        asked.append(query)
        gate.wait(10)
        return 200, payload("agent_threads_v1.json")

    path = serve(
        {"/v1/info": lambda q: (200, payload("agent_info_v1.json")), "/v1/threads": threads}
    )
    first_answer = payload("agent_threads_v1.json")["taken_at"]
    spy = ClockedSpy(os.getpid(), read_at=first_answer + 20.0)
    session = AgentSession(
        AgentSource(path),
        None,
        pid=os.getpid(),
        pyspy=spy,  # type: ignore[arg-type]
        clock=lambda: first_answer + 21.0,  # the session's clock: when the polls run
    )
    session.agent_grace = 0.05
    try:
        answered = session.poll()
        assert answered.effective_threads_source is SourceKind.AGENT
        # WHEN the agent becomes slow and the session polls
        gate.clear()
        carried = session.poll()
        # THEN py-spy's reading carries the poll, stamped with the time py-spy read it (not
        # the time the poll ended), with the agent's last pools kept and said to be older
        assert carried.state is LinkState.LIVE
        assert carried.effective_threads_source is SourceKind.PYSPY
        assert carried.threads is not None and carried.threads.taken_at == first_answer + 20.0
        assert carried.threads.pools == answered.threads.pools
        assert set(carried.stale) == {"info", "pools"}
        when = time.strftime("%H:%M:%S", time.localtime(first_answer))
        assert carried.message.startswith("agent slow: no answer within 0.1 s")
        assert carried.message.endswith(
            "; threads from py-spy; requests and pool numbers from %s" % when
        )
        assert carried.gil_holder is not None and not carried.agent_unresponsive
        # WHEN it polls again, the agent still slow
        cpu_reads = []
        cpu_now = session._cpu_now
        session._cpu_now = lambda: cpu_reads.append(1) or cpu_now()  # type: ignore[method-assign]
        again = session.poll()
        # THEN the threads' CPU times were read before py-spy's read, to tell busy from stuck
        # (the first slow poll could not know it would be slow)
        assert cpu_reads
        # THEN py-spy carries it again, and the agent was not asked a second time meanwhile
        assert again.effective_threads_source is SourceKind.PYSPY
        assert len(asked) == 2
        # WHEN the agent answers again
        gate.set()
        deadline = time.monotonic() + 10
        back = session.poll()
        while back.effective_threads_source is not SourceKind.AGENT and time.monotonic() < deadline:
            back = session.poll()
        # THEN it takes over: its threads, nothing marked older
        assert back.effective_threads_source is SourceKind.AGENT and back.stale == ()
        assert not back.message.startswith("agent slow")
    finally:
        gate.set()
        session.close()


def test_an_agent_whose_answers_are_slow_is_said_slow_not_stuck_until_twice_its_last(serve):
    # GIVEN an agent whose /v1/threads answers take 0.3 s (timeout 0.2 s), then never come
    delay = {"seconds": 0.3}
    gate = threading.Event()

    def threads(query):
        if delay["seconds"] is None:
            gate.wait(10)
        else:
            time.sleep(delay["seconds"])
        return 200, payload("agent_threads_v1.json")

    path = serve(
        {"/v1/info": lambda q: (200, payload("agent_info_v1.json")), "/v1/threads": threads}
    )
    spy = FakeSpy(os.getpid())
    session = AgentSession(
        AgentSource(path, timeout=0.2),
        None,
        pid=os.getpid(),
        timeout=0.2,
        pyspy=spy,  # type: ignore[arg-type]
    )
    session.agent_grace = 0.05
    try:
        # WHEN it polls: py-spy carries the poll, and the slow answer comes in afterwards
        first = session.poll()
        assert first.effective_threads_source is SourceKind.PYSPY
        assert first.message.startswith("agent slow") and not first.agent_unresponsive
        time.sleep(0.5)  # (the 0.3 s answer ends meanwhile: it becomes the last known)
        delay["seconds"] = None  # the next answers do not come
        # WHEN it polls again, soon after asking again
        second = session.poll()
        # THEN the agent is slow, not silent: its last answer took longer than its timeout
        assert second.effective_threads_source is SourceKind.PYSPY
        assert second.message.startswith("agent slow: no answer within 0.1 s (its last answer")
        assert not second.agent_unresponsive
        assert second.threads is not None and second.threads.pools  # the late answer's pools
        # WHEN twice that last answer's duration has passed without an answer
        time.sleep(0.7)
        third = session.poll()
        # THEN the interpreter may be stuck (the findings may say it is)
        assert third.effective_threads_source is SourceKind.PYSPY
        assert third.message.startswith("agent not answering within 0.2 s")
        assert third.agent_unresponsive
    finally:
        gate.set()
        session.close()


def test_a_poll_waits_for_py_spy_only_when_its_read_can_end_within_the_wait() -> None:
    # GIVEN the TUI's wait of 0.25 s for py-spy beside an answering agent
    # WHEN the last read took 0.1 s (200 threads) and this one began 0.05 s ago
    # THEN the poll waits for it
    assert spy_wait(0.25, 0.1, began=10.0, now=10.05) == 0.25
    # WHEN the last read took 0.8 s (1,000 threads): it cannot end within the wait
    # THEN the poll does not wait (the last reading joins), until the read is due to end
    assert spy_wait(0.25, 0.8, began=10.0, now=10.05) == 0.0
    assert spy_wait(0.25, 0.8, began=10.0, now=10.6) == 0.25
    # AND before any read has ended it waits as before
    assert spy_wait(0.25, None, began=10.0, now=10.0) == 0.25


def agent_held(serve: Any) -> Tuple[threading.Event, str]:
    """An agent whose /v1/threads waits for the gate returned (set it to let it answer), and
    the path it serves on."""
    gate = threading.Event()

    def threads(query: Any) -> Tuple[int, Any]:
        gate.wait(10)
        return 200, payload("agent_threads_v1.json")

    path = serve(
        {"/v1/info": lambda q: (200, payload("agent_info_v1.json")), "/v1/threads": threads}
    )
    return gate, path


def test_while_py_spy_carries_the_polls_its_next_read_starts_as_a_poll_ends(serve):
    # GIVEN an agent that never answers in time, and py-spy reading the process for the TUI
    # (``pyspy_wait`` set), each read counted
    gate, path = agent_held(serve)
    spy = FakeSpy(os.getpid())
    session = AgentSession(
        AgentSource(path),
        None,
        pid=os.getpid(),
        timeout=0.2,
        pyspy=spy,  # type: ignore[arg-type]
    )
    session.pyspy_wait = 0.05  # as the TUI sets it
    session.read_every = 0.0  # the TUI's interval (none here: each read begins at once)
    session.agent_grace = 0.0
    try:
        # WHEN a poll is carried by py-spy
        first = session.poll()
        assert first.effective_threads_source is SourceKind.PYSPY
        # THEN the next read has started as it ended, before any other poll
        deadline = time.monotonic() + 10
        while len(spy.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(spy.calls) == 2
        # WHEN the next poll comes
        second = session.poll()
        # THEN it shows that reading (no third read started for it), and starts the next
        assert second.effective_threads_source is SourceKind.PYSPY
        assert second.threads is not None and first.threads is not None
        assert second.threads.taken_at >= first.threads.taken_at
        deadline = time.monotonic() + 10
        while len(spy.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(spy.calls) == 3
        # AND a one-shot reader starts none ahead: ``pyspy_wait`` None, or 0 (a dump joins
        # the poll's own read) without the TUI's ``read_every``
        session.pyspy_wait = None
        session.poll()
        time.sleep(0.2)
        assert len(spy.calls) == 3
        session.pyspy_wait = 0.0
        session.read_every = None
        session.poll()
        calls = len(spy.calls)  # (the poll's own read, begun with its agent call)
        time.sleep(0.2)
        assert len(spy.calls) == calls and session._spy_pending is None
        # AND with the TUI's interval set (``read_every``) the read ahead waits for its start,
        # that long after the last read began: one reading per interval, not back to back
        session.pyspy_wait = 0.05
        session.read_every = 60.0
        session.poll()
        deadline = time.monotonic() + 10
        while not (session._spy_took is not None and session._spy_pending) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        calls = len(spy.calls)
        time.sleep(0.2)
        waiting = session._spy_pending
        assert waiting is not None and not waiting.done() and len(spy.calls) == calls
        # (the TUI's tick skips a poll while that reading is due: ``reading_due``, with a
        # listener to hand it over)
        session.on_landed = lambda: None
        assert session.reading_due()
        session.on_landed = None
        assert not session.reading_due()
        # WHEN the next poll comes before that start
        session.poll()
        # THEN that read begins at once for it (still one at a time)
        assert waiting.result(timeout=10) is not None and len(spy.calls) > calls
    finally:
        gate.set()
        session.close()


def test_a_reading_that_lands_while_py_spy_carries_is_handed_over_then_shown(serve):
    # GIVEN an agent that never answers in time, py-spy read for the TUI, and a listener for
    # readings that land with no poll waiting (the TUI's ``on_landed``)
    gate, path = agent_held(serve)
    spy = GatedSpy(os.getpid())
    spy.gate.set()
    session = AgentSession(
        AgentSource(path),
        None,
        pid=os.getpid(),
        timeout=5.0,
        pyspy=spy,  # type: ignore[arg-type]
    )
    session.pyspy_wait = 0.05
    session.agent_grace = 0.0
    session.read_every = 0.0
    landed = threading.Event()
    session.on_landed = landed.set
    try:
        # WHEN a poll is carried by py-spy, and the read it started ahead lands
        first = session.poll()
        assert first.effective_threads_source is SourceKind.PYSPY
        assert landed.wait(10)
        # THEN the session says it holds a reading no poll has shown
        assert session.landed()
        reading = session._spy_pending
        assert reading is not None and reading.done()
        # WHEN the TUI polls for it (the next read, begun ahead as that poll ends, held)
        spy.gate.clear()
        spy.finished.clear()
        second = session.poll()
        # THEN that very reading is shown, carried by py-spy, the banner still saying the
        # agent is slow
        assert second.effective_threads_source is SourceKind.PYSPY
        assert second.message.startswith("agent slow")
        assert second.threads is not None
        assert second.threads.taken_at == reading.result().taken_at
        # AND the read begun ahead is the only one running: nothing landed unseen yet
        ahead = session._spy_pending
        assert ahead is not None and not ahead.done() and not session.landed()
        # WHEN the session closes while that read runs (or before it began), and it ends after
        landed.clear()
    finally:
        session.close()
        gate.set()
    spy.gate.set()
    ahead.result(timeout=10)  # (None when close() came before it began: nothing read)
    # THEN nothing is handed over after close()
    assert not landed.wait(0.3)
    assert not session.landed()


def test_an_agent_answering_in_time_after_a_landed_reading_takes_over_at_once(serve):
    # GIVEN an agent whose first /v1/threads is held (slow), and whose next ones answer at
    # once; py-spy read for the TUI, and a listener for what lands with no poll waiting
    gate = threading.Event()
    asked = []

    def threads(query):
        asked.append(query)
        if len(asked) == 1:
            gate.wait(10)
        return 200, payload("agent_threads_v1.json", taken_at=time.time())  # read now

    path = serve(
        {"/v1/info": lambda q: (200, payload("agent_info_v1.json")), "/v1/threads": threads}
    )
    session = AgentSession(
        AgentSource(path),
        None,
        pid=os.getpid(),
        timeout=5.0,
        pyspy=FakeSpy(os.getpid()),  # type: ignore[arg-type]
    )
    session.pyspy_wait = 0.05
    session.agent_grace = 0.5
    session.read_every = 0.0
    landed = threading.Event()
    session.on_landed = landed.set
    try:
        # WHEN a poll is carried by py-spy (the agent held), its read ahead lands, and the
        # held call ends (late: it took longer than the grace)
        first = session.poll()
        assert first.effective_threads_source is SourceKind.PYSPY
        assert landed.wait(10)
        # (late for sure: the call's own length, from its thread's start, passes the grace;
        # a thread started late on a loaded box once made it "in time", asked once only)
        time.sleep(session.agent_grace + 0.1)
        gate.set()
        deadline = time.monotonic() + 10
        while not session._agent_pending.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        landed.clear()
        session.read_every = 60.0  # (no further reading lands during the test)
        # WHEN the TUI polls for the landed reading
        second = session.poll()
        # THEN it is shown at once, without waiting the agent's grace for its new call
        # (unless that call had already answered, when the agent takes over right here)
        if second.effective_threads_source is SourceKind.PYSPY:
            assert second.threads is not None
            # AND the new call, answering within its grace, is handed over as it ends
            assert landed.wait(10) and session.landed()
            second = session.poll()
        # THEN the agent's answer is this poll's: it takes over, nothing marked older
        assert second.effective_threads_source is SourceKind.AGENT
        assert second.stale == () and not second.message.startswith("agent slow")
        assert len(asked) == 2  # the late call and the one in time, no third
    finally:
        gate.set()
        session.close()


def test_the_cpu_times_of_the_last_build_start_the_next_reads_window(short_tmp):
    # GIVEN a session whose last whole py-spy reading was built a moment ago, with the CPU
    # times that build read from /proc
    session = AgentSession(
        AgentSource(str(short_tmp / "none.sock")),
        None,
        pid=os.getpid(),
        pyspy=FakeSpy(os.getpid()),  # type: ignore[arg-type]
    )
    built = {threading.get_native_id(): 1.5}
    try:
        session._spy_cache.cpus = (time.monotonic(), built)
        # WHEN a read begins now (read ahead, as that poll ended) and wants CPU times first
        # THEN those of the build are taken: no second pass over /proc
        assert session._cpu_now() is built
        # WHEN the build is older than CPU_REUSE (a read begun by the next poll)
        session._spy_cache.cpus = (time.monotonic() - 2 * CPU_REUSE, built)
        fresh = session._cpu_now()
        # THEN /proc is read again: every thread of this process, this one's own time
        assert fresh is not None and fresh is not built
        assert threading.get_native_id() in fresh and os.getpid() in fresh
    finally:
        session.close()


def test_the_sessions_cpu_times_come_from_kept_files_closed_with_the_session(short_tmp):
    # GIVEN a session beside py-spy on this process, no recent build's CPU times (and the
    # kept files other tests' sessions in this process may hold: not this test's to close)
    held_before = {n for n in os.listdir("/proc/self/fd") if int(n) >= KEEP_FLOOR}
    spy = FakeSpy(os.getpid())
    session = AgentSession(
        AgentSource(str(short_tmp / "none.sock")),
        None,
        pid=os.getpid(),
        pyspy=spy,  # type: ignore[arg-type]
    )
    try:
        # WHEN it reads every thread's CPU time before a read
        cpus = session._cpu_now()
        # THEN they were read through py-spy's source's TaskTimes, each thread's file kept
        # open above select()'s 1,024, and the session's builds read there too
        assert cpus is not None and threading.get_native_id() in cpus
        assert set(spy.task_times._fds) == set(cpus)
        assert all(fd >= KEEP_FLOOR for fd in spy.task_times._fds.values())
        assert session._spy_cache.times is spy.task_times
    finally:
        session.close()
    # AND closing the session closed them all
    assert len(spy.task_times) == 0
    assert [
        n for n in os.listdir("/proc/self/fd") if int(n) >= KEEP_FLOOR and n not in held_before
    ] == []


class Ring:
    """A ring of log records served as the agent's ``/v1/log`` serves them (``after``,
    ``limit``, ``latest``, ``more``), each request counted; ``gate`` holds the answers while
    clear (a log request queued for the GIL behind spinning workers)."""

    def __init__(self) -> None:
        self.records: list = []
        self.asked = 0
        self.answered = 0
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            for _ in range(count):
                seq = len(self.records) + 1
                self.records.append(
                    {
                        "seq": seq,
                        "time": time.time(),
                        "level": "INFO",
                        "logger": "app",
                        "message": "record %d" % seq,
                    }
                )

    def __call__(self, query: Any) -> Tuple[int, Any]:
        self.asked += 1
        self.gate.wait(10)
        after = int(query.get("after", ["0"])[0])
        limit = int(query.get("limit", ["1000"])[0])
        with self.lock:
            newer = [r for r in self.records if r["seq"] > after]
            latest = len(self.records)
        self.answered += 1
        return 200, {
            "taken_at": time.time(),
            "buffer": "b1",
            "capacity": 10_000,
            "first": 1,
            "latest": latest,
            "missed": 0,
            "more": len(newer) > limit,
            "records": newer[:limit],
        }


def test_an_answered_poll_is_not_held_behind_the_log_read(serve):
    # GIVEN an agent whose threads answer at once and whose /v1/log answers are held (queued
    # for the GIL), polled as the TUI polls it (the log read in the background)
    ring = Ring()
    ring.add(5)
    path = serve(
        {
            "/v1/info": lambda q: (200, payload("agent_info_v1.json")),
            "/v1/threads": lambda q: (200, payload("agent_threads_v1.json")),
            "/v1/log": ring,
        }
    )
    session = AgentSession(AgentSource(path, timeout=5.0), None, pid=None, timeout=5.0)
    session.log_wait = 0.0
    ring.gate.clear()
    try:
        # WHEN it polls while the log request is held
        first = session.poll()
        # THEN the agent's threads are shown without waiting for it: the log request was
        # asked and has not been answered
        assert first.state is LinkState.LIVE and first.threads is not None
        assert len(first.threads.workers) == 3
        assert first.log == () and ring.answered == 0
        deadline = time.monotonic() + 10
        while ring.asked == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ring.asked == 1
        # WHEN it polls again, the log still held
        second = session.poll()
        # THEN the threads come again, and no second log read was asked beside the first
        assert second.threads is not None and second.log == ()
        assert ring.asked == 1
        # WHEN the log answers
        ring.gate.set()
        # THEN a later poll brings its records, each once
        seen: list = []
        deadline = time.monotonic() + 10
        while len(seen) < 5 and time.monotonic() < deadline:
            seen.extend(e.seq for e in session.poll().log if isinstance(e, LogRecord))
            time.sleep(0.02)
        assert seen == [1, 2, 3, 4, 5]
        # AND a one-shot reader (``log_wait`` None, no interval set) waits for its log
        ring.add(2)
        session.log_wait = None
        deadline = time.monotonic() + 10
        while session._log_pending is not None and time.monotonic() < deadline:
            session.poll()  # (a read begun by the last poll is taken first)
            time.sleep(0.02)
        ring.add(1)
        update = session.poll()
        assert [e.seq for e in update.log if isinstance(e, LogRecord)][-1] == 8
    finally:
        ring.gate.set()
        session.close()


def test_no_record_is_lost_or_doubled_when_the_agent_and_py_spy_alternate(serve, tmp_path):
    # GIVEN an agent whose threads answer in time at some polls and not at others (py-spy
    # carries those), whose log answers are sometimes held past a poll, a ring that grows
    # between polls, and an error file it names that grows too (read by the carried polls
    # and by the background reads alike). (The real agent's ring and GIL waits cannot be
    # made to alternate on cue: the real agent server serves a ring shaped like its own.)
    error_file = tmp_path / "error.log"
    error_file.write_text("")
    info = payload("agent_info_v1.json")
    info["logging"] = dict(info["logging"], error_file=str(error_file))
    ring = Ring()
    threads_gate = threading.Event()
    threads_gate.set()

    def threads(query):
        threads_gate.wait(10)
        return 200, payload("agent_threads_v1.json", taken_at=time.time())

    path = serve(
        {
            "/v1/info": lambda q: (200, info),
            "/v1/threads": threads,
            "/v1/log": ring,
        }
    )
    session = AgentSession(
        AgentSource(path, timeout=5.0),
        None,
        pid=os.getpid(),
        timeout=5.0,
        pyspy=FakeSpy(os.getpid()),  # type: ignore[arg-type]
    )
    session.pyspy_wait = 0.05
    session.agent_grace = 0.05
    session.log_wait = 0.0
    seen: list = []
    lines: list = []
    sources = set()

    def take(update):
        for entry in update.log:
            if isinstance(entry, LogRecord) and entry.origin is LogOrigin.BUFFER:
                seen.append(entry.seq)
            elif isinstance(entry, LogRecord):
                lines.append(entry.message)

    try:
        # WHEN the polls alternate between the agent and py-spy, the log held at some
        for n in range(24):
            ring.add(3)
            with error_file.open("a") as f:
                f.write(time.strftime("[%d/%b/%Y:%H:%M:%S] ") + "file line %d\n" % n)
            if n % 3 == 1:
                threads_gate.clear()  # this poll is carried by py-spy
            if n % 4 == 2:
                ring.gate.clear()  # the log read asked now ends after this poll
            update = session.poll()
            sources.add(update.effective_threads_source)
            take(update)
            threads_gate.set()
            ring.gate.set()
            time.sleep(0.02)
        # THEN, the agent answering again, the last records come
        deadline = time.monotonic() + 15
        while (not seen or seen[-1] < len(ring.records) or len(lines) < 24) and (
            time.monotonic() < deadline
        ):
            take(session.poll())
            time.sleep(0.02)
        # AND every record came once, in order: none lost, none doubled
        assert SourceKind.PYSPY in sources and SourceKind.AGENT in sources
        assert seen == list(range(1, len(ring.records) + 1))
        assert [line.rsplit(" ", 1)[-1] for line in lines] == [str(n) for n in range(24)]
    finally:
        threads_gate.set()
        ring.gate.set()
        session.close()
