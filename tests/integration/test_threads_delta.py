"""``/v1/threads?since=CURSOR`` on real CherryPy processes: only what changed comes back.

Requests start and end between two polls; the delta must name the workers they touched and no
worker that stayed as it was. Unknown, expired, foreign and oversized cursors are tried too, and
``AgentSource`` (the inspector's reader) must build from deltas what a full answer says.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional

from cpinspect.agent.wire import MAX_CURSOR_LENGTH, THREADS_CURSORS_KEPT
from cpinspect.model import Role, ThreadInfo, ThreadsSnapshot
from cpinspect.sources.agent import AgentSource
from tests.conftest import wait_for
from tests.helpers import BackgroundRequests, agent_get


def threads(sock: str, since: Optional[str] = None) -> Dict[str, Any]:
    status, body = agent_get(sock, "/v1/threads" + ("?since=" + since if since else ""))
    assert status == 200, body
    return body


def holding(body: Dict[str, Any], marker: str) -> List[Dict[str, Any]]:
    """Workers whose request carries ``marker`` in its query."""
    return [
        t
        for t in body["threads"]
        if t["request"] is not None and marker in (t["request"]["query"] or "")
    ]


def without_elapsed(entry: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "elapsed"}


def test_a_delta_answers_the_workers_that_changed_and_only_them(spawn_target):
    # GIVEN two workers held by long requests, one by a short one, and five idle
    target = spawn_target("--threads", "8")
    sock = target.socket_path()
    long = BackgroundRequests(target.port, "/block?seconds=60&tag=long", 2)
    short = BackgroundRequests(target.port, "/block?seconds=1&tag=short", 1)
    wait_for(
        lambda: len(holding(threads(sock), "long")) == 2 and holding(threads(sock), "short"),
        what="three busy workers",
    )
    first = threads(sock)
    assert first["delta"] is False and first["gone"] == []
    by_ident = {t["ident"]: t for t in first["threads"]}
    long_idents = {t["ident"] for t in holding(first, "long")}
    short_ident = holding(first, "short")[0]["ident"]
    idle_idents = {t["ident"] for t in first["threads"] if t["phase"] == "idle"}
    assert len(long_idents) == 2 and len(idle_idents) == 5

    # WHEN the short request ends and a new one starts, then the agent is asked since `first`
    wait_for(lambda: short.results, what="the short request to end")
    fresh = BackgroundRequests(target.port, "/block?seconds=60&tag=fresh", 1)

    def delta_with_fresh() -> Optional[Dict[str, Any]]:
        body = threads(sock, first["cursor"])  # the cursor in use stays remembered
        return body if holding(body, "fresh") else None

    delta = wait_for(delta_with_fresh, what="a delta showing the new request")

    # THEN it is a delta naming the worker that finished and the one that took the new request
    assert delta["delta"] is True and delta["cursor"] != first["cursor"]
    sent = {t["ident"]: t for t in delta["threads"]}
    fresh_ident = holding(delta, "fresh")[0]["ident"]
    assert short_ident in sent and fresh_ident in sent
    # ... no worker held all along by a long request, no worker idle all along
    assert not long_idents & set(sent)
    # (an idle worker comes back when it did work: the closing of the short request's
    # keep-alive connection is handed to a worker, which reads EOF; its cpu_time moved)
    for ident in (idle_idents - {fresh_ident}) & set(sent):
        assert sent[ident]["phase"] == "idle"
        assert sent[ident]["cpu_time"] != by_ident[ident]["cpu_time"]
    assert len(idle_idents - {fresh_ident} - set(sent)) >= 2
    # ... and everything sent really differs from the `first` answer (elapsed aside)
    for ident, entry in sent.items():
        if ident in by_ident:
            assert without_elapsed(entry) != without_elapsed(by_ident[ident]), entry["name"]
    assert delta["gone"] == []  # a fixed pool: no thread ended
    # ... while pools and counters come in full
    assert delta["pools"][0]["busy"] == 3 and delta["requests_served"] >= 1
    assert len(long.threads) == 2 and fresh.threads


def test_a_thread_that_ended_is_listed_as_gone(spawn_target):
    # GIVEN a wsgiref server (one new thread per request) serving one short request
    target = spawn_target("--server", "wsgiref")
    sock = target.socket_path()
    short = BackgroundRequests(target.port, "/block?seconds=1&tag=short", 1)
    during = wait_for(
        lambda: (lambda b: b if holding(b, "short") else None)(threads(sock)),
        what="the request's thread",
    )
    ident = holding(during, "short")[0]["ident"]

    # WHEN the request ends and its thread with it
    wait_for(lambda: short.results, what="the short request to end")
    after = wait_for(
        lambda: (lambda b: b if ident in b["gone"] else None)(threads(sock, during["cursor"])),
        what="the thread listed as gone",
    )

    # THEN the delta lists it as gone and sends no entry for it
    assert after["delta"] is True
    assert ident not in {t["ident"] for t in after["threads"]}


def test_unknown_expired_and_oversized_cursors(spawn_target):
    # GIVEN a target and a cursor it issued
    target = spawn_target()
    sock = target.socket_path()
    oldest = threads(sock)["cursor"]
    full_count = len(threads(sock)["threads"])

    # WHEN the cursor is garbage, or well formed for this agent with a counter never issued
    lifetime = oldest.rsplit("-", 1)[0]
    for since in ("garbage", lifetime + "-999999", "-"):
        body = threads(sock, since)
        # THEN the answer is a full one (never an error)
        assert body["delta"] is False and body["gone"] == []
        assert len(body["threads"]) >= full_count - 1

    # WHEN more cursors were issued than the agent keeps
    latest = [threads(sock)["cursor"] for _ in range(THREADS_CURSORS_KEPT)]
    # THEN the newest still gives a delta, the first one issued is forgotten (a full answer),
    # and so is the oldest of the latest once that delta's own cursor took a place: the store
    # holds THREADS_CURSORS_KEPT cursors however many polls there were
    assert threads(sock, latest[-1])["delta"] is True
    assert threads(sock, oldest)["delta"] is False
    assert threads(sock, latest[0])["delta"] is False

    # WHEN the value is longer than the limit THEN a 400 with a clear message
    status, body = agent_get(sock, "/v1/threads?since=" + "x" * (MAX_CURSOR_LENGTH + 1))
    assert status == 400
    assert "since" in body["error"]["message"]


def test_a_cursor_from_another_agent_lifetime_gets_a_full_answer(spawn_target):
    # GIVEN a cursor from one target, which then stops (a restart is a new process)
    first = spawn_target()
    cursor = threads(first.socket_path())["cursor"]
    first.stop()
    second = spawn_target()

    # WHEN the new process is asked since the old cursor
    body = threads(second.socket_path(), cursor)

    # THEN a full answer, with a cursor of the new lifetime
    assert body["delta"] is False
    assert body["cursor"].rsplit("-", 1)[0] != cursor.rsplit("-", 1)[0]
    assert any(t["role"] == "worker" for t in body["threads"])


def workers(snapshot: ThreadsSnapshot) -> Dict[int, ThreadInfo]:
    return {t.ident: t for t in snapshot.threads if t.role is Role.WORKER}


def test_agent_source_builds_from_deltas_what_a_full_read_says(spawn_target):
    # GIVEN an AgentSource that polled once, with one worker held
    target = spawn_target("--threads", "5")
    sock = target.socket_path()
    BackgroundRequests(target.port, "/block?seconds=60&tag=a", 1)
    wait_for(lambda: holding(threads(sock), "tag=a"), what="a busy worker")
    source = AgentSource(sock)
    asked: List[str] = []
    source._client.event_hooks["request"].append(lambda r: asked.append(str(r.url)))
    try:
        source.threads()
        # WHEN threads change (a short request comes and goes, two more are held) and it polls
        short = BackgroundRequests(target.port, "/block?seconds=0.5&tag=s", 1)
        wait_for(lambda: short.results, what="the short request to end")
        BackgroundRequests(target.port, "/block?seconds=60&tag=b", 2)
        wait_for(lambda: len(holding(threads(sock), "tag=b")) == 2, what="two more busy")
        applied = source.threads()
        full_source = AgentSource(sock)
        try:
            full = full_source.threads()
        finally:
            full_source.close()
    finally:
        source.close()

    # THEN the second poll asked since the first answer's cursor
    assert "since=" not in asked[0] and "since=" in asked[1]
    # ... and the workers it built equal a fresh full read's (elapsed moves between the reads)
    got, want = workers(applied), workers(full)
    assert set(got) == set(want) and len(got) == 5
    for ident, t in want.items():
        assert replace(got[ident], elapsed=None) == replace(t, elapsed=None)
    # ... the threads come in the agent's order, and busy ones carry this answer's elapsed
    assert [t.ident for t in applied.threads] == sorted(t.ident for t in applied.threads)
    busy = [t for t in got.values() if t.busy]
    assert len(busy) == 3
    for t in busy:
        assert t.request is not None and t.request.started_at is not None
        assert t.elapsed == max(0.0, applied.taken_at - t.request.started_at)
