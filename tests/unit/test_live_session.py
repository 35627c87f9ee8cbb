"""AgentSession against agents of other versions: degrade per endpoint, never go dark.

Another agent version cannot be installed here side by side, so the real agent server code
(``AgentServer``, real Unix socket) serves payloads shaped like such an agent's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpinspect.agent.server import AgentServer
from cpinspect.errors import NoSuchProcess
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState
from cpinspect.sources.live import AgentSession

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
