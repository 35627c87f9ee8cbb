"""From py-spy only to the agent, in one session: what the TUI's `i` key does."""

from __future__ import annotations

from cpinspect.model import SourceKind
from cpinspect.sources.base import LinkState
from cpinspect.sources.live import PySpySession
from cpinspect.sources.pyspy import PySpySource
from tests.conftest import wait_for
from tests.helpers import BackgroundRequests


def test_load_agent_switches_a_pyspy_session_to_the_agent(spawn_target):
    # GIVEN a CherryPy process without the agent, one request in flight, read by py-spy only
    target = spawn_target("--agent", "none", "--autoreload")
    BackgroundRequests(target.port, "/block?seconds=30", 1)
    session = PySpySession(PySpySource(target.pid), target.pid)
    first = wait_for(
        lambda: (lambda u: u if u.threads and any(t.busy for t in u.threads.threads) else None)(
            session.poll()
        ),
        what="the request seen by py-spy",
    )
    assert first.source_kind is SourceKind.PYSPY and "i here" in first.message

    # WHEN the agent is loaded
    note = session.load_agent()

    # THEN the next polls come from the agent, with the request already in flight and the pools
    update = session.poll()
    assert "agent loaded into pid %d" % target.pid in note
    assert update.source_kind is SourceKind.AGENT and update.state is LinkState.RECONNECTED
    busy = [t for t in update.threads.threads if t.busy]
    assert [t.request.path for t in busy] == ["/block"]
    assert update.threads.pools and update.threads.pools[0].busy == 1
    assert session.load_agent() == "the agent is already loaded"
    session.close()
    assert target.boots() == 1  # the Autoreloader did not restart it
