"""The core promise: every worker stuck, the app's port silent, and the agent still answers."""

from __future__ import annotations

import json

from cpinspect.model import SourceKind
from cpinspect.protocol import snapshots_from_document
from tests.conftest import wait_for
from tests.helpers import BackgroundRequests, agent_get, http_answers, run_cli

WORKERS = 4


def saturate(target) -> BackgroundRequests:
    blocked = BackgroundRequests(
        target.port,
        "/block?seconds=60&token=secret&n=1",
        WORKERS + 2,
        headers={"Cookie": "session_id=cookie-value-xyz", "Authorization": "Bearer auth-value-xyz"},
    )

    def saturated():
        _, body = agent_get(target.socket_path(), "/v1/threads")
        pool = body["pools"][0]
        return pool["busy"] == WORKERS and pool["queued"] >= 2

    wait_for(saturated, timeout=15, what="all workers busy and 2 connections queued")
    return blocked


def test_agent_answers_while_every_worker_is_blocked(spawn_target):
    # GIVEN a real CherryPy app with 4 workers, all blocked in a handler, 2 more connections queued
    target = spawn_target("--threads", str(WORKERS))
    saturate(target)

    # WHEN the app's own port is asked for a page
    # THEN it does not answer within 2 s
    assert not http_answers(target.port, "/", timeout=2.0)

    # WHEN the agent is asked for threads
    status, body = agent_get(target.socket_path(), "/v1/threads", timeout=2.0)

    # THEN it answers, names every blocked request with its path, handler frame on top of the app
    assert status == 200
    assert body["schema"] == 1
    workers = [t for t in body["threads"] if t["role"] == "worker"]
    assert len(workers) == WORKERS
    for w in workers:
        assert w["busy"] is True
        assert w["phase"] == "handler"
        assert w["request"]["method"] == "GET"
        assert w["request"]["path"] == "/block"
        assert w["request"]["handler"] == "Root.block"
        assert w["elapsed"] is not None and w["elapsed"] >= 0
        app_frames = [f for f in w["stack"] if f["app"]]
        assert app_frames, "no app frame in %r" % w["stack"]
        assert app_frames[0]["function"] == "block"
        assert app_frames[0]["file"].endswith("tests/apps/target.py")
    pool = body["pools"][0]
    assert pool["size"] == WORKERS and pool["busy"] == WORKERS and pool["idle"] == 0
    assert pool["queued"] >= 2
    assert pool["oldest_busy"] >= max(w["elapsed"] for w in workers) - 0.5
    roles = {t["role"] for t in body["threads"]}
    assert {"worker", "acceptor", "agent", "main"} <= roles


def test_dump_shows_the_blocked_requests(spawn_target):
    # GIVEN a saturated app
    target = spawn_target("--threads", str(WORKERS))
    saturate(target)

    # WHEN `cpinspect dump PID` runs
    text = run_cli("dump", str(target.pid))
    as_json = run_cli("dump", "--json", str(target.pid))

    # THEN the text names every blocked request and the handler frame with its source line
    assert text.returncode == 0, text.stderr
    # (counted under the threads: the findings at the top name the starved route too)
    assert text.stdout.split("── Threads")[-1].count("GET /block") == WORKERS
    assert "pool is starved" in text.stdout.split("── Threads")[0]
    assert "Root.block" in text.stdout
    assert "RELEASE.wait(" in text.stdout  # the source line under the app frame
    assert "token=***" in text.stdout
    # AND the JSON has the same requests
    assert as_json.returncode == 0, as_json.stderr
    [snapshot] = snapshots_from_document(json.loads(as_json.stdout))
    assert snapshot.source in (SourceKind.AGENT, SourceKind.BOTH)  # BOTH: py-spy joined
    assert snapshot.threads is not None
    busy = [t for t in snapshot.threads.threads if t.busy]
    assert len(busy) == WORKERS
    assert all(t.request is not None and t.request.path == "/block" for t in busy)


def test_requests_in_flight_before_install_are_found_by_frame_walk(spawn_target):
    # GIVEN an app without the agent whose workers are all blocked
    target = spawn_target("--threads", "3", "--agent", "none")
    BackgroundRequests(target.port, "/block?seconds=60", 2)
    # Both must be inside the handler before the agent arrives: py-spy sees it from outside.
    from cpinspect.sources.pyspy import PySpySource

    spy = PySpySource(target.pid)
    wait_for(
        lambda: sum(1 for t in spy.threads().threads if t.busy and t.request) == 2,
        what="two requests in flight before the install",
    )

    # WHEN the agent is installed at runtime (through the one free worker)
    import httpx

    socket_path = httpx.get("http://127.0.0.1:%d/install_agent" % target.port, timeout=10).text

    # THEN the two requests that started before it are reported, found by walking frames
    def found():
        _, body = agent_get(socket_path, "/v1/threads")
        reqs = [t["request"] for t in body["threads"] if t["busy"] and t["request"]]
        return [r for r in reqs if r["path"] == "/block"]

    reqs = wait_for(found, timeout=10, what="in-flight requests")
    assert len(reqs) == 2
    assert {r["source"] for r in reqs} == {"frame"}
    assert all(r["handler"] == "Root.block" for r in reqs)
