"""The interpreter itself stuck: a handler holds the GIL in a C call, the agent cannot answer,
and py-spy, reading the process from outside, shows who holds it and where."""

from __future__ import annotations

from cpinspect.attach.discovery import find_agent
from cpinspect.model import SourceKind
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState
from cpinspect.sources.live import AgentSession
from cpinspect.sources.pyspy import PySpySource
from tests.conftest import wait_for
from tests.helpers import BackgroundRequests


def session_on(target) -> AgentSession:
    source = AgentSource(find_agent(target.pid).connect_path, timeout=1.0)
    return AgentSession(source, source.info(), pid=target.pid, pyspy=PySpySource(target.pid))


def test_gil_held_in_c_falls_back_to_pyspy_and_back(spawn_target):
    # GIVEN a live session (agent + py-spy) on an app with 4 workers
    target = spawn_target("--threads", "4")
    session = session_on(target)
    # (a poll waits at most 0.25 s for py-spy beside the agent: a slower reading joins the next)
    normal = wait_for(
        lambda: (lambda u: u if u.pyspy_joined else None)(session.poll()),
        timeout=15,
        interval=0.2,
        what="py-spy joined beside the agent",
    )
    assert normal.state is LinkState.LIVE and normal.effective_threads_source is SourceKind.AGENT
    assert normal.threads is not None

    # WHEN a handler starts a catastrophic regex (GIL held in C: 4-11 s here when quiet, a
    # minute with the suite's other tests beside it)
    regex = BackgroundRequests(target.port, "/regex?n=27", 1, timeout=300)

    # THEN the session falls back to py-spy with a banner naming the GIL holder
    last_from_agent = [normal]

    def fallen_back():
        update = session.poll()
        if update.effective_threads_source is SourceKind.PYSPY:
            return update
        last_from_agent[0] = update
        return None

    update = wait_for(fallen_back, timeout=15, interval=0.2, what="the py-spy fallback")
    assert "interpreter may be stuck" in update.message
    assert "GIL held by thread CP Server Thread-" in update.message
    assert set(update.stale) == {"info", "pools"}
    holder = next(t for t in update.threads.threads if t.ident == update.gil_holder)
    assert holder.owns_gil is True
    # the regex frame on top of the holder's stack, the handler right under it
    assert holder.stack[0].filename.endswith(("re/__init__.py", "re.py"))
    assert holder.top_app_frame is not None and holder.top_app_frame.function == "regex"
    # pool numbers are the agent's last ones, kept (the UI marks them stale); the last answer
    # may have come after the regex request arrived (CI saw it queued for one poll: queued=1)
    assert last_from_agent[0].threads is not None
    assert update.threads.pools == last_from_agent[0].threads.pools

    # WHEN the regex finishes (polled meanwhile, as the TUI does)
    # THEN the agent takes over again and says so
    def agent_again():
        u = session.poll()
        return (
            u
            if u.effective_threads_source is SourceKind.AGENT and u.state is not LinkState.LOST
            else None
        )

    back = wait_for(agent_again, timeout=300, interval=0.2, what="the agent answering again")
    assert back.state is LinkState.RECONNECTED and "answering again" in back.message
    wait_for(lambda: regex.results, timeout=30, what="the regex request's answer")
    assert regex.results == [200]
    session.close()
