"""Sessions without a terminal: the /v1/sessions reader, the diagnoses, the text, redaction, a
file session's captured page and the other processes serving the same port (hand-built data)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from cpinspect.analysis import LOCK_FLOOR, NO_DURATIONS_LIMIT, lock_limit, session_findings
from cpinspect.errors import CpinspectError
from cpinspect.formatting import format_report, format_sessions, session_details, session_row
from cpinspect.model import (
    RequestDurations,
    ServingPeer,
    SessionsSnapshot,
    Snapshot,
    SourceKind,
)
from cpinspect.protocol import ProtocolError, sessions_from_json
from cpinspect.snapshots import read_snapshots, redacted, write_snapshots
from cpinspect.sources.file import FileSession
from cpinspect.sources.peers import PeerCache, serving_peers

T0 = 1_750_000_000.0
HELD_FP = "0123456789ab"
FREE_FP = "ba9876543210"


def req(path: str, started: float) -> Dict[str, Any]:
    return {
        "method": "GET",
        "path": path,
        "query": "token=***",
        "client": "10.0.0.7",
        "peer": "127.0.0.1:50000",
        "started_at": started,
        "handler": "Root." + path.strip("/"),
        "stage": "handler",
        "app": "",
        "source": "hook",
    }


def session(fp: str, size: int, held: Optional[float] = None, waiters: int = 0) -> Dict[str, Any]:
    lock: Dict[str, Any] = {"state": "free", "holder": None, "file": None, "waiters": []}
    if held is not None:
        lock = {
            "state": "held",
            "holder": {
                "ident": 7001,
                "name": "CP Server Thread-4",
                "request": req("/slow", T0 - held),
                "held_for": held,
                "held_for_basis": "since its request started",
            },
            "file": None,
            "waiters": [
                {
                    "ident": 7002 + i,
                    "name": "CP Server Thread-%d" % (5 + i),
                    "request": req("/whoami", T0 - 2.0),
                    "waiting_for": 2.0 - i,
                }
                for i in range(waiters)
            ],
        }
    return {
        "fp": fp,
        "expires_at": T0 + 120,
        "time_left": 120.0,
        "size": size,
        "keys": [{"key": "user", "type": "str", "size": 30}],
        "revealed": False,
        "lock": lock,
    }


def payload(**app_changes: Any) -> Dict[str, Any]:
    """An answer shaped like the wire contract (cpinspect/agent/wire.py)."""
    app = {
        "app": "",
        "where": ["/"],
        "backend": "ram",
        "storage_class": "cherrypy.lib.sessions.RamSession",
        "settings": {
            "timeout": 60.0,
            "clean_freq": 5.0,
            "clean_thread": "running",
            "storage_path": None,
            "path_exists": None,
            "path_writable": None,
            "locking": "implicit",
            "name": "session_id",
            "secure": False,
            "httponly": True,
            "persistent": True,
            "domain": None,
            "servers": None,
        },
        "listable": True,
        "not_listable": None,
        "partial": False,
        "partial_reason": None,
        "count": 2,
        "expired": 0,
        "summary": {
            "expiring_soon": 2,
            "locked": 1,
            "waiters": 2,
            "sizes": {"min": 100, "p50": 100, "p90": 200, "max": 200, "total": 300},
            "largest": [{"fp": HELD_FP, "size": 200}, {"fp": FREE_FP, "size": 100}],
            "as_of": T0,
        },
        "page": {"offset": 0, "limit": 50, "sort": "expiry", "total": 2},
        "sessions": [session(HELD_FP, 200, held=12.0, waiters=2), session(FREE_FP, 100)],
        "error": None,
    }
    app.update(app_changes)
    return {
        "schema": 1,
        "agent": "0.1.0",
        "taken_at": T0,
        "key_id": "abcd1234",
        "errors": [],
        "request_durations": {"count": 500, "p50": 0.01, "p95": 0.2, "max": 12.0},
        "apps": [app],
    }


def read(**app_changes: Any) -> SessionsSnapshot:
    return sessions_from_json(payload(**app_changes))


def ids(snapshot: SessionsSnapshot) -> List[str]:
    return [f.id.split(":")[0] for f in session_findings(snapshot)]


# --- the reader --------------------------------------------------------------------------------


def test_the_reader_takes_every_part_of_the_contract() -> None:
    # GIVEN an answer shaped like the contract WHEN it is read
    snap = read()
    (app,) = snap.apps
    # THEN settings, summary, page, sessions with keys and the lock's people are all there
    assert snap.key_id == "abcd1234" and snap.request_durations == RequestDurations(
        500, 0.01, 0.2, 12.0
    )
    assert app.backend == "ram" and app.settings.locking == "implicit"
    assert app.settings.httponly is True and app.settings.servers is None
    assert app.summary.sizes is not None and app.summary.sizes.max == 200
    assert [x.fp for x in app.summary.largest] == [HELD_FP, FREE_FP]
    assert app.page.total == 2
    held = app.sessions[0]
    assert held.lock.state == "held" and held.lock.holder is not None
    assert held.lock.holder.request is not None and held.lock.holder.request.path == "/slow"
    assert held.lock.holder.held_for_basis == "since its request started"
    assert [w.waiting_for for w in held.lock.waiters] == [2.0, 1.0]
    assert held.keys[0].value is None and not held.revealed


def test_the_reader_is_tolerant_of_missing_and_odd_fields() -> None:
    # GIVEN an app entry with almost nothing and wrong types in places
    raw = payload()
    raw["apps"] = [{"app": "/x", "summary": {"sizes": "?"}, "sessions": [{"lock": None}, 3]}]
    raw["request_durations"] = None
    # WHEN read THEN defaults fill in, nothing raises
    snap = sessions_from_json(raw)
    (app,) = snap.apps
    assert app.app == "/x" and app.listable is False and app.summary.sizes is None
    assert len(app.sessions) == 1 and app.sessions[0].lock.state == "unknown"
    assert snap.request_durations is None
    # AND a payload without apps, or an error body, is a protocol error
    with pytest.raises(ProtocolError):
        sessions_from_json({"schema": 1})
    with pytest.raises(ProtocolError, match="time limit"):
        sessions_from_json({"error": {"status": 504, "message": "time limit 2.0 s on /mnt"}})


# --- diagnoses ---------------------------------------------------------------------------------


def test_a_lock_held_past_the_p95_with_waiters_is_critical_with_its_numbers() -> None:
    (finding,) = [f for f in session_findings(read()) if f.id.startswith("sessions-lock")]
    assert finding.severity.value == "critical"
    assert "held 12.0 s by GET /slow?token=*** (CP Server Thread-4)" in finding.title
    assert "95% of the last 500 requests took under 0.2 s, the slowest 12.0 s" in finding.title
    assert "2 requests of the same user wait behind it (the longest for 2.0 s)" in finding.title
    assert [(e.kind, e.ref) for e in finding.evidence] == [
        ("thread", "7001"),
        ("thread", "7002"),
        ("thread", "7003"),
    ]
    assert finding.evidence[0].label.startswith("holder CP Server Thread-4  GET /slow")
    assert "release_lock()" in finding.fix and "'implicit'" in finding.fix


def test_a_p95_made_of_the_incidents_own_slow_requests_is_not_taken_as_normal() -> None:
    # GIVEN a saturated app: the last requests completed include the lock's earlier holders and
    # waiters (20 s each), so the p95 is as long as the lock itself, while half took 6 ms
    durations = {"count": 30, "p50": 0.006, "p95": 20.0, "max": 20.0}
    snapshot = read(sessions=[session(HELD_FP, 200, held=12.0, waiters=2)])
    polluted = sessions_from_json(dict(payload(), request_durations=durations))
    polluted = replace(polluted, apps=snapshot.apps)
    # THEN the held lock is still diagnosed, measured against the median
    (finding,) = [f for f in session_findings(polluted) if f.id.startswith("sessions-lock")]
    assert "half of the last 30 requests took under 6 ms" in finding.title


def test_a_held_lock_on_another_page_is_diagnosed_from_the_locks_list() -> None:
    # GIVEN a page of free sessions, the held one being on another page (sent in "locks")
    held = session(HELD_FP, 200, held=12.0, waiters=2)
    snapshot = read(sessions=[session(FREE_FP, 100)], locks=[{"fp": HELD_FP, "lock": held["lock"]}])
    # THEN the held lock is diagnosed all the same, once
    found = [f for f in session_findings(snapshot) if f.id.startswith("sessions-lock")]
    assert [f.id for f in found] == ["sessions-lock::%s" % HELD_FP]
    # AND once too when the page holds it as well
    both = read(sessions=[held], locks=[{"fp": HELD_FP, "lock": held["lock"]}])
    assert ids(both).count("sessions-lock") == 1


def test_a_held_lock_without_waiters_or_within_normal_is_no_finding() -> None:
    no_waiters = read(sessions=[session(HELD_FP, 200, held=12.0, waiters=0)])
    assert "sessions-lock" not in ids(no_waiters)
    short = read(sessions=[session(HELD_FP, 200, held=0.5, waiters=2)])
    assert "sessions-lock" not in ids(short)  # under the 1 s floor though over the p95
    # WHEN the process has completed no request THEN a fixed limit stands in, said so
    none = replace(read(), request_durations=None)
    assert lock_limit(none) == (
        NO_DURATIONS_LIMIT,
        "no request has completed since the agent came, to compare with",
    )
    assert lock_limit(read())[0] == LOCK_FLOOR


def test_ram_sessions_with_other_processes_serving_the_port() -> None:
    peers = (ServingPeer(4242, "listens on port 8080 too"),)
    snap = replace(read(), peers=peers)
    (finding,) = [f for f in session_findings(snap) if f.id.startswith("sessions-ram")]
    assert "1 other process serves the same service (pid 4242: listens on port 8080" in (
        finding.title
    )
    assert "FileSession" in finding.fix and "sticky" in finding.fix
    # AND file sessions shared by the processes are not a problem
    file_app = replace(snap.apps[0], backend="file")
    assert "sessions-ram-not-shared" not in ids(replace(snap, apps=(file_app,)))


def test_a_storage_path_missing_or_not_writable() -> None:
    base = payload()["apps"][0]["settings"]
    missing = dict(base, storage_path="/var/sess", path_exists=False, path_writable=False)
    snap = read(backend="file", settings=missing)
    (finding,) = [f for f in session_findings(snap) if f.id.startswith("sessions-path")]
    assert finding.id == "sessions-path-missing:" and "/var/sess" in finding.title
    assert "mkdir -p /var/sess" in finding.fix
    readonly = dict(base, storage_path="/var/sess", path_exists=True, path_writable=False)
    assert "sessions-path-not-writable" in ids(read(backend="file", settings=readonly))
    fine = dict(base, storage_path="/var/sess", path_exists=True, path_writable=True)
    assert not [i for i in ids(read(backend="file", settings=fine)) if "path" in i]


def test_cleanup_stopped_or_expired_sessions_piling_up() -> None:
    base = payload()["apps"][0]["settings"]
    stopped = read(settings=dict(base, clean_thread="stopped"))
    assert "sessions-cleanup" in ids(stopped)
    # RAM sessions without the thread that starts with the first one: wrong
    assert "sessions-cleanup" in ids(read(settings=dict(base, clean_thread="not started")))
    # File sessions on disk from before this process, none loaded yet: fine
    file_app = read(backend="file", settings=dict(base, clean_thread="not started"))
    assert "sessions-cleanup" not in ids(file_app)
    piling = read(count=1000, expired=400)
    (finding,) = [f for f in session_findings(piling) if f.id.startswith("sessions-cleanup")]
    assert "400 of 1000 stored sessions are already expired" in finding.title
    assert "sessions-cleanup" not in ids(read(count=1000, expired=20))


def test_one_session_far_larger_than_the_rest() -> None:
    summary = payload()["apps"][0]["summary"]
    big = dict(
        summary,
        sizes={"min": 90, "p50": 100, "p90": 150, "max": 300_000, "total": 400_000},
        largest=[{"fp": FREE_FP, "size": 300_000}],
    )
    (finding,) = [
        f for f in session_findings(read(count=50, summary=big)) if f.id.startswith("sessions-lar")
    ]
    assert finding.id == "sessions-large::%s" % FREE_FP
    assert "session ba987654 holds 293.0 KB, 3000 times the median session (100 B)" in (
        finding.title
    )
    # A small store, or a big one that is not far from the median, is no finding
    assert "sessions-large" not in ids(read(count=2, summary=big))
    even = dict(big, sizes={"min": 90, "p50": 200_000, "p90": 250_000, "max": 300_000, "total": 1})
    assert "sessions-large" not in ids(read(count=50, summary=even))


# --- text --------------------------------------------------------------------------------------


def test_the_text_has_summary_diagnosis_page_and_the_lock_people() -> None:
    snap = read()
    lines = format_sessions(snap, session_findings(snap))
    text = "\n".join(lines)
    assert lines[0] == "app '/' · RAM · 2 sessions"
    assert "2 sessions · 2 expiring in 5 min · 1 locked now · 2 waiting for a lock" in text
    assert "CRITICAL  session 01234567" in text
    assert "sessions 1-2 of 2, expiring soonest first" in text
    assert "held by        CP Server Thread-4 (thread 7001)" in text
    assert text.count("GET /whoami?token=*** from 10.0.0.7") == 2
    assert session_row(snap.apps[0].sessions[0]) == (
        "01234567",
        "2 m 0 s",
        "200 B",
        "user",
        "held 12.0 s · 2 waiting",
    )


def test_a_store_that_cannot_be_listed_and_an_app_error() -> None:
    snap = read(listable=False, not_listable="memcached cannot list its keys", sessions=[])
    assert "this backend cannot be listed: memcached cannot list its keys" in "\n".join(
        format_sessions(snap, ())
    )
    failed = read(error="reading /mnt/sess did not finish within 2.0 s", sessions=[])
    assert "error: reading /mnt/sess did not finish within 2.0 s" in "\n".join(
        format_sessions(failed, ())
    )


def test_an_unlistable_store_still_shows_the_sessions_locked_now() -> None:
    # GIVEN memcached: no listing, but the one session a request holds, with its waiters
    snap = read(
        backend="memcached",
        listable=False,
        not_listable="memcached cannot list its keys",
        count=None,
        sessions=[session(HELD_FP, 200, held=12.0, waiters=2)],
    )
    text = "\n".join(format_sessions(snap, session_findings(snap)))
    # THEN the reason, the lock counts, the held session and its people are all printed
    assert "this backend cannot be listed: memcached cannot list its keys" in text
    assert "1 locked now · 2 waiting for a lock (from the requests in flight)" in text
    assert "1 session locked or waited on now" in text
    assert "held by        CP Server Thread-4 (thread 7001)" in text
    assert "sessions-lock" in ids(snap)


def test_values_show_only_for_the_revealed_session() -> None:
    raw = payload()
    raw["apps"][0]["sessions"][1]["revealed"] = True
    raw["apps"][0]["sessions"][1]["keys"][0]["value"] = "'bob'"
    snap = sessions_from_json(raw, revealed=FREE_FP)
    held, free = snap.apps[0].sessions
    assert ("key", "user  str  30 B = 'bob'") in session_details(free)
    assert not any("'bob'" in v for _, v in session_details(held))
    assert any(label == "values" and "hidden" in v for label, v in session_details(held))


# --- snapshots ---------------------------------------------------------------------------------


def revealed_snapshot() -> Snapshot:
    raw = payload()
    raw["apps"][0]["sessions"][1]["revealed"] = True
    raw["apps"][0]["sessions"][1]["keys"][0]["value"] = "'SECRET-bob'"
    return Snapshot(
        taken_at=T0,
        source=SourceKind.AGENT,
        sessions=sessions_from_json(raw, revealed=FREE_FP),
    )


def test_redaction_strips_revealed_values_unless_reveal(tmp_path: Path) -> None:
    snap = revealed_snapshot()
    # WHEN written without --reveal THEN no value is in the file or the report
    written = write_snapshots([snap], tmp_path)
    assert "SECRET-bob" not in written.json_path.read_text()
    assert written.report_path is not None
    report = written.report_path.read_text()
    assert "SECRET-bob" not in report and "Sessions (2 in 1 app(s))" in report
    (back,) = read_snapshots(written.json_path)
    assert back.sessions is not None and back.sessions.revealed is None
    assert all(not s.revealed for s in back.sessions.apps[0].sessions)
    # WHEN kept with reveal THEN the value stays
    kept = redacted(snap, reveal=True)
    assert kept.sessions is not None and kept.sessions.apps[0].sessions[1].keys[0].value


def test_a_file_session_answers_with_its_captured_page(tmp_path: Path) -> None:
    written = write_snapshots([revealed_snapshot()], tmp_path)
    session = FileSession.open(written.json_path)
    # THEN the first page is what was captured, values gone
    answer = session.sessions()
    assert [s.fp for s in answer.apps[0].sessions] == [HELD_FP, FREE_FP]
    assert session.sessions(app="").apps == answer.apps
    assert session.sessions(app="/other").apps == ()
    # AND another page, order or a reveal is for the live process: one line each
    for call in (
        lambda: session.sessions(offset=50),
        lambda: session.sessions(sort="size"),
        lambda: session.sessions(reveal=FREE_FP),
    ):
        with pytest.raises(CpinspectError, match="attach to the live process"):
            call()
    # AND a snapshot without sessions says so
    (tmp_path / "b").mkdir()
    bare = write_snapshots([Snapshot(taken_at=T0, source=SourceKind.AGENT)], tmp_path / "b")
    with pytest.raises(CpinspectError, match="no sessions"):
        FileSession.open(bare.json_path).sessions()


def test_the_report_names_the_lock_people_and_no_value() -> None:
    text = format_report([redacted(revealed_snapshot(), reveal=False)], T0)
    assert "held by        CP Server Thread-4" in text and "SECRET-bob" not in text


# --- the other processes -----------------------------------------------------------------------


def test_serving_peers_by_port_and_by_command_line() -> None:
    listeners = [(8080, 100), (8080, 200), (8080, 200), (9090, 300), (8080, None)]
    cmdlines = {100: ("python", "shop.py"), 300: ("python", "shop.py"), 400: ("python", "x")}
    peers = serving_peers(100, (8080,), ("python", "shop.py"), listeners, cmdlines, exclude=(1,))
    assert peers == (
        ServingPeer(200, "listens on port 8080 too"),
        ServingPeer(300, "runs the same command line"),
    )
    # AND nobody else: no peers
    assert serving_peers(100, (8080,), ("python", "shop.py"), [(8080, 100)], {}) == ()


def test_peers_are_looked_up_at_most_once_per_ttl() -> None:
    calls: List[int] = []
    now = [0.0]

    def find(pid: int, ports: Any, cmdline: Any) -> Any:
        calls.append(pid)
        return ()

    cache = PeerCache(find, ttl=10.0, clock=lambda: now[0])
    cache.get(1, (8080,), ("a",))
    cache.get(1, (8080,), ("a",))
    now[0] = 11.0
    cache.get(1, (8080,), ("a",))
    cache.get(2, (8080,), ("a",))
    assert calls == [1, 1, 2]


def test_stale_lock_files_of_a_path_two_apps_share_are_one_finding() -> None:
    from cpinspect.analysis import session_findings
    from cpinspect.model import AppSessions, SessionSettings, SessionsSnapshot, SessionsSummary

    # GIVEN two apps whose file sessions live in the same directory (CherryMusic mounts '/' and
    # '/api/v1' on one store), with stale lock files in it
    def app(name: str) -> AppSessions:
        return AppSessions(
            app=name,
            backend="file",
            settings=SessionSettings(storage_path="/var/sessions"),
            summary=SessionsSummary(stale_locks=20),
            count=40,
        )

    found = session_findings(SessionsSnapshot(taken_at=0.0, apps=(app(""), app("/api/v1"))))
    # THEN the stale lock files are said once, not once per app
    stale = [f for f in found if f.kind == "sessions-stale-lock"]
    assert len(stale) == 1 and "20 stale lock files in /var/sessions" in stale[0].title


def test_one_orphan_lock_file_is_said_in_the_singular() -> None:
    from cpinspect.analysis import session_findings
    from cpinspect.model import AppSessions, SessionSettings, SessionsSnapshot, SessionsSummary

    # GIVEN a file store with stale lock files and one .lock with no session beside it (seen
    # on cherrymusic after a restart)
    def app(orphans: int) -> AppSessions:
        return AppSessions(
            app="",
            backend="file",
            settings=SessionSettings(storage_path="/var/sessions"),
            summary=SessionsSummary(stale_locks=6, orphan_locks=orphans),
            count=6,
        )

    def title(orphans: int) -> str:
        snap = SessionsSnapshot(taken_at=0.0, apps=(app(orphans),))
        (found,) = [f for f in session_findings(snap) if f.kind == "sessions-stale-lock"]
        return found.title

    # THEN one is 'has ... beside it', two are 'have ... beside them'
    assert title(1).endswith("(1 more .lock file has no session file beside it)")
    assert title(2).endswith("(2 more .lock files have no session file beside them)")
