"""The target exits or restarts mid-session: last data kept, said so, reconnected."""

from __future__ import annotations

import socket

from cpinspect.attach.discovery import find_agent
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState
from cpinspect.sources.live import AgentSession
from tests.conftest import wait_for


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# These tests are about losing and finding the target, not about a slow answer: a target just
# started on a loaded CI box once took longer than the 1 s default to answer its first poll, which
# the session rightly calls LOST. A generous timeout keeps that out of what they test.
PATIENT = 10.0


def open_session(target, on_new_pid=None) -> AgentSession:
    source = AgentSource(find_agent(target.pid).connect_path, timeout=PATIENT)
    return AgentSession(
        source, source.info(), pid=target.pid, on_new_pid=on_new_pid, timeout=PATIENT
    )


def test_restart_of_the_same_service_is_followed_to_its_new_pid(spawn_target):
    # GIVEN a live session on a service listening on a fixed port
    port = free_port()
    first = spawn_target("--port", str(port))
    new_pids = []
    session = open_session(first, on_new_pid=new_pids.append)
    live = session.poll()
    assert live.state is LinkState.LIVE and live.threads is not None

    # WHEN the process exits
    first.stop()
    lost = session.poll()
    # THEN the session says so and keeps the last data
    assert lost.state is LinkState.LOST
    assert "reconnecting" in lost.message
    assert lost.threads is live.threads and lost.info is live.info

    # WHEN the same service (same command line, same port) starts again with a new pid
    second = spawn_target("--port", str(port))
    assert second.pid != first.pid
    update = wait_for(
        lambda: (lambda u: u if u.state is LinkState.RECONNECTED else None)(session.poll()),
        timeout=15,
        what="reconnection",
    )
    # THEN the session follows it and names both pids
    assert update.info.pid == second.pid
    assert "pid %d" % second.pid in update.message and "pid %d" % first.pid in update.message
    assert new_pids == [second.pid]  # e.g. source lines are read from the new process
    after = session.poll()
    assert after.state is LinkState.LIVE
    assert after.message == update.message  # the notice stays a while, then goes
    session.close()


def test_a_different_service_on_another_port_is_not_taken_for_it(spawn_target):
    port = free_port()
    first = spawn_target("--port", str(port))
    session = open_session(first)
    session.poll()
    first.stop()
    spawn_target("--port", str(free_port()))  # same command line shape, other port
    for _ in range(3):
        assert session.poll().state is LinkState.LOST
    session.close()


def test_session_by_socket_path_reconnects_to_the_same_path(spawn_target, short_tmp):
    path = str(short_tmp / "svc.sock")
    port = free_port()
    first = spawn_target("--port", str(port), "--socket", path)
    source = AgentSource(path, timeout=PATIENT)
    session = AgentSession(source, source.info(), pid=None, timeout=PATIENT)
    assert session.poll().state is LinkState.LIVE
    first.stop()
    assert session.poll().state is LinkState.LOST
    spawn_target("--port", str(port), "--socket", path)
    update = wait_for(
        lambda: (lambda u: u if u.state is LinkState.RECONNECTED else None)(session.poll()),
        timeout=15,
        what="reconnection by socket path",
    )
    assert update.threads is not None
    session.close()
