"""/v1/sessions on real CherryPy processes: every backend, lock contention, redaction, a hung path.

Each test starts ``tests/apps/sessions_app.py`` with one backend, logs users in over real HTTP
(the session ids come from the real Set-Cookie headers) and reads the agent over its Unix socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest

from tests.conftest import wait_for
from tests.helpers import spawn_ready


class SessionsTarget:
    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path

    def raw(self, path: str, timeout: float = 10.0) -> Tuple[int, bytes]:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=self.socket_path()),
            base_url="http://x",
            timeout=timeout,
        ) as client:
            r = client.get(path)
            return r.status_code, r.content

    def get(self, path: str, timeout: float = 10.0) -> Tuple[int, Dict[str, Any]]:
        status, body = self.raw(path, timeout)
        return status, json.loads(body)

    def sessions(self, query: str = "") -> Dict[str, Any]:
        status, body = self.get("/v1/sessions" + query)
        assert status == 200, body
        return body

    def login(self, user: str, secret: str) -> str:
        """Log ``user`` in; the real session id from the Set-Cookie header."""
        r = httpx.get(self.url + "/login", params={"user": user, "secret": secret}, timeout=10)
        assert r.status_code == 200, r.text
        return str(r.cookies["session_id"])


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., SessionsTarget]]:
    with contextlib.ExitStack() as stack:

        def start(backend: str, *args: str) -> SessionsTarget:
            log = tmp_path / ("sessions-%s.log" % backend)
            m = stack.enter_context(
                spawn_ready(["-m", "tests.apps.sessions_app", backend, *args], log, backend)
            )
            return SessionsTarget(int(m.group(1)), int(m.group(2)))

        yield start


def only_app(answer: Dict[str, Any]) -> Dict[str, Any]:
    assert len(answer["apps"]) == 1, answer
    return answer["apps"][0]


# --- Backends --------------------------------------------------------------------------------


def test_ram_backend_lists_sessions_by_fingerprint(
    start_app: Callable[..., SessionsTarget],
) -> None:
    # GIVEN a RAM-session app with three users logged in
    app = start_app("ram")
    ids = [app.login("user%d" % i, "secret-%d" % i) for i in range(3)]
    # WHEN the agent is asked for the sessions
    answer = app.sessions()
    entry = only_app(answer)
    # THEN the backend, its settings and every session are there, by fingerprint only
    assert entry["backend"] == "ram" and entry["listable"] is True
    assert entry["storage_class"] == "cherrypy.lib.sessions.RamSession"
    assert entry["where"] == ["/"]
    assert entry["settings"]["timeout"] == 60.0
    assert entry["settings"]["clean_thread"] == "running"
    assert entry["settings"]["name"] == "session_id"
    assert entry["count"] == 3 and entry["page"]["total"] == 3
    fps = [s["fp"] for s in entry["sessions"]]
    assert len(set(fps)) == 3 and all(len(fp) == 12 for fp in fps)
    first = entry["sessions"][0]
    assert {k["key"] for k in first["keys"]} == {"user", "secret"}
    assert all(k["type"] == "str" and "value" not in k for k in first["keys"])
    assert first["time_left"] > 3000 and first["size"] > 0
    assert first["lock"]["state"] == "free" and first["lock"]["waiters"] == []
    assert entry["summary"]["sizes"]["total"] == sum(s["size"] for s in entry["sessions"])
    assert len(answer["key_id"]) == 8
    assert answer["request_durations"]["count"] >= 3
    # AND no raw id leaves the process
    raw = app.raw("/v1/sessions")[1]
    assert not any(sid.encode() in raw for sid in ids)


@pytest.mark.parametrize("backend", ["file", "file-old"])
def test_file_backend_both_spellings(
    start_app: Callable[..., SessionsTarget], tmp_path: Path, backend: str
) -> None:
    # GIVEN file sessions configured with storage_class (or the older storage_type="file")
    store = tmp_path / "store"
    store.mkdir()
    app = start_app(backend, "--path", str(store))
    ids = [app.login("user%d" % i, "secret-%d" % i) for i in range(2)]
    # (CherryPy leaves a .lock file beside each session file; they are not sessions)
    assert len(list(store.glob("*.lock"))) == 2
    # WHEN the agent is asked
    entry = only_app(app.sessions())
    # THEN both sessions are listed from the path in the app config, sized as their files
    assert entry["backend"] == "file"
    assert entry["storage_class"] == "cherrypy.lib.sessions.FileSession"
    settings = entry["settings"]
    assert settings["storage_path"] == str(store)
    assert settings["path_exists"] is True and settings["path_writable"] is True
    assert entry["count"] == 2
    sizes = sorted(s["size"] for s in entry["sessions"])
    assert sizes == sorted((store / ("session-" + sid)).stat().st_size for sid in ids)
    for session in entry["sessions"]:
        assert {k["key"] for k in session["keys"]} == {"user", "secret"}
        lock = session["lock"]
        assert lock["state"] == "free"
        assert lock["file"]["pid"] == app.pid and lock["file"]["age"] >= 0


def test_file_backend_stale_and_orphan_lock_files(
    start_app: Callable[..., SessionsTarget], tmp_path: Path
) -> None:
    # GIVEN file sessions with two users logged in (each leaves a .lock file with the app's pid)
    import subprocess

    from cpinspect.analysis import session_findings
    from cpinspect.protocol import sessions_from_json

    store = tmp_path / "store"
    store.mkdir()
    app = start_app("file", "--path", str(store))
    ids = [app.login("user%d" % i, "secret-%d" % i) for i in range(2)]
    # AND one lock file last written by a process that is gone (as after a restart) ...
    gone = subprocess.Popen(["true"])
    gone.wait()
    (store / ("session-%s.lock" % ids[0])).write_text("%d\n" % gone.pid)
    # ... and an orphan lock file: its session file was deleted (expired) and the lock stayed
    (store / ("session-%s.lock" % ("ab" * 20))).write_text("%d\n" % app.pid)
    # WHEN the agent is asked
    answer = app.sessions()
    entry = only_app(answer)
    # THEN the stale lock file is flagged with its dead pid, the live one is not
    by_pid = {s["lock"]["file"]["pid"]: s["lock"]["file"] for s in entry["sessions"]}
    assert set(by_pid) == {gone.pid, app.pid}
    assert by_pid[gone.pid]["stale"] is True and by_pid[app.pid]["stale"] is False
    # AND the store's answer counts the stale and the orphan lock files (orphans are no sessions)
    assert entry["count"] == 2
    assert entry["summary"]["stale_locks"] == 1 and entry["summary"]["orphan_locks"] == 1
    # AND the inspector names it as a finding that says the pid is gone and to delete the file
    snapshot = sessions_from_json(answer)
    (finding,) = [f for f in session_findings(snapshot) if f.id.startswith("sessions-stale-lock")]
    assert "pid %d is gone" % gone.pid in finding.title and "delete it" in finding.title
    assert "1 more .lock file" in finding.title and str(store) in finding.title
    stale_fp = next(s["fp"] for s in entry["sessions"] if s["lock"]["file"]["stale"])
    assert [(e.kind, e.ref) for e in finding.evidence] == [("session", "%s|%s" % ("", stale_fp))]
    # AND no raw id is in the answer (the lock file names carry them)
    raw = app.raw("/v1/sessions")[1]
    assert not any(sid.encode() in raw for sid in ids)


def test_file_backend_missing_storage_path(
    start_app: Callable[..., SessionsTarget], tmp_path: Path
) -> None:
    # GIVEN file sessions configured with a storage path that does not exist
    missing = tmp_path / "nowhere"
    app = start_app("file", "--path", str(missing))
    # WHEN the agent is asked
    entry = only_app(app.sessions())
    # THEN the settings say the path is missing, and the app's entry says why it lists nothing
    assert entry["settings"]["storage_path"] == str(missing)
    assert entry["settings"]["path_exists"] is False
    assert entry["count"] == 0
    assert "does not exist" in entry["error"] and str(missing) in entry["error"]


def test_memcached_backend_from_seen_ids(
    start_app: Callable[..., SessionsTarget], memcached_server: str
) -> None:
    # GIVEN an app storing sessions in a real memcached, two users logged in
    app = start_app("memcached", "--servers", memcached_server)
    ids = [app.login("mc%d" % i, "mc-secret-%d" % i) for i in range(2)]
    # WHEN the agent is asked
    entry = only_app(app.sessions())
    # THEN it found them from the ids its hooks saw, looked up in memcached, and says so
    assert entry["backend"] == "memcached" and entry["listable"] is True
    assert entry["settings"]["servers"] == [memcached_server]
    assert entry["count"] == 2
    assert entry["partial"] is True and "only the 2 session ids" in entry["partial_reason"]
    for session in entry["sessions"]:
        assert {k["key"] for k in session["keys"]} == {"user", "secret"}
        assert session["size"] > 0 and session["time_left"] > 3000
    raw = app.raw("/v1/sessions")[1]
    assert not any(sid.encode() in raw for sid in ids)
    assert b"mc-secret-" not in raw


def test_custom_backend_with_enumeration(start_app: Callable[..., SessionsTarget]) -> None:
    # GIVEN a custom storage class offering cpinspect_sessions()
    app = start_app("custom")
    app.login("carol", "custom-secret")
    # WHEN the agent is asked
    entry = only_app(app.sessions())
    # THEN its sessions are listed through that method
    assert entry["backend"] == "custom" and entry["listable"] is True
    assert entry["storage_class"].endswith(".ListedStore")  # __main__ when run with -m
    assert entry["count"] == 1
    assert {k["key"] for k in entry["sessions"][0]["keys"]} == {"user", "secret"}


def test_custom_backend_without_enumeration(start_app: Callable[..., SessionsTarget]) -> None:
    # GIVEN a custom storage class without the enumeration method
    app = start_app("custom-nolist")
    app.login("dave", "hidden")
    # WHEN the agent is asked
    entry = only_app(app.sessions())
    # THEN it says it cannot list this backend, and why
    assert entry["backend"] == "custom" and entry["listable"] is False
    assert "cpinspect_sessions" in entry["not_listable"]
    assert "UnlistedStore" in entry["not_listable"]
    assert entry["count"] is None and entry["sessions"] == []


# --- Lock contention -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["ram", "file"])
def test_lock_holder_and_two_waiters_named(
    start_app: Callable[..., SessionsTarget], tmp_path: Path, backend: str
) -> None:
    # GIVEN one user's slow request holding the session lock and two more of theirs queued on it
    args: List[str] = []
    if backend == "file":
        (tmp_path / "store").mkdir()
        args = ["--path", str(tmp_path / "store")]
    app = start_app(backend, *args)
    app.login("other", "x")
    sid = app.login("erin", "erin-secret")
    cookies = {"session_id": sid}
    results: List[Any] = []

    def call(path: str) -> None:
        try:
            results.append(httpx.get(app.url + path, cookies=cookies, timeout=60).status_code)
        except Exception as exc:  # noqa: BLE001
            results.append(exc)

    slow = threading.Thread(target=call, args=("/slow",), daemon=True)
    slow.start()

    def holder_seen() -> Optional[Dict[str, Any]]:
        entry = only_app(app.sessions("?sort=lock"))
        top = entry["sessions"][0]
        return top if top["lock"]["holder"] else None

    wait_for(holder_seen, timeout=10, what="the slow request to hold the lock")
    waiters = [threading.Thread(target=call, args=("/whoami",), daemon=True) for _ in range(2)]
    for t in waiters:
        t.start()
    try:

        def two_waiting() -> Optional[Dict[str, Any]]:
            entry = only_app(app.sessions("?sort=lock"))
            top = entry["sessions"][0]
            return entry if len(top["lock"]["waiters"]) == 2 else None

        entry = wait_for(two_waiting, timeout=10, what="two requests waiting on the lock")
        assert isinstance(entry, dict)
        # WHEN the agent is asked, sorted by lock state
        top = entry["sessions"][0]
        lock = top["lock"]
        # THEN the held session comes first, with the holder's request and both waiters'
        assert lock["state"] == "held"
        assert lock["holder"]["request"]["path"] == "/slow"
        assert lock["holder"]["request"]["handler"] == "Root.slow"
        assert lock["holder"]["name"].startswith("CP Server Thread-")
        assert lock["holder"]["held_for"] is not None and lock["holder"]["held_for_basis"]
        assert [w["request"]["path"] for w in lock["waiters"]] == ["/whoami", "/whoami"]
        assert all(w["name"].startswith("CP Server Thread-") for w in lock["waiters"])
        assert all(w["waiting_for"] is not None for w in lock["waiters"])
        assert entry["summary"]["locked"] == 1 and entry["summary"]["waiters"] == 2
        if backend == "file":
            assert lock["file"]["pid"] == app.pid
        # AND the holder's ident is the thread /v1/threads shows on that request
        status, threads = app.get("/v1/threads")
        assert status == 200
        by_ident = {t["ident"]: t for t in threads["threads"]}
        assert by_ident[lock["holder"]["ident"]]["request"] == lock["holder"]["request"]
        for w in lock["waiters"]:
            assert by_ident[w["ident"]]["request"]["path"] == "/whoami"
        # (the other user's session is not locked)
        assert entry["sessions"][1]["lock"]["state"] == "free"
        # AND a page that does not hold the locked session still lists its lock in "locks"
        other_page = only_app(app.sessions("?sort=size&limit=1&offset=5"))
        assert other_page["sessions"] == []
        assert [x["fp"] for x in other_page["locks"]] == [top["fp"]]
        assert len(other_page["locks"][0]["lock"]["waiters"]) == 2
    finally:
        httpx.get(app.url + "/release", timeout=10)
        for t in [slow, *waiters]:
            t.join(30)
    assert results == [200, 200, 200]


# --- Redaction -------------------------------------------------------------------------------


def test_no_raw_id_or_value_unless_revealed(start_app: Callable[..., SessionsTarget]) -> None:
    # GIVEN users logged in with known session ids and secret values
    app = start_app("ram")
    users = {"u%d" % i: "VALUE-%d-zz" % i for i in range(4)}
    ids = {user: app.login(user, secret) for user, secret in users.items()}
    # WHEN every kind of answer is fetched
    answers = [
        app.raw("/v1/sessions" + q)[1]
        for q in ("", "?sort=size", "?sort=-expiry", "?sort=lock", "?limit=1&offset=2")
    ]
    answers.append(app.raw("/v1/threads")[1])
    answers.append(app.raw("/v1/info")[1])
    # THEN neither the ids nor the values (nor the user names stored) appear anywhere
    for raw in answers:
        for user, sid in ids.items():
            assert sid.encode() not in raw
            assert users[user].encode() not in raw
    # WHEN one session is revealed by its fingerprint
    entry = only_app(app.sessions())
    target_fp = entry["sessions"][1]["fp"]
    status, raw = app.raw("/v1/sessions?reveal=" + target_fp)
    assert status == 200
    revealed = [s for s in only_app(json.loads(raw))["sessions"] if s["revealed"]]
    # THEN exactly that session shows its values, and still no raw id anywhere
    assert len(revealed) == 1 and revealed[0]["fp"] == target_fp
    shown = {k["key"]: k["value"] for k in revealed[0]["keys"]}
    secret = shown["secret"].strip("'")
    assert secret in users.values()
    others = [v for v in users.values() if v != secret]
    assert not any(v.encode() in raw for v in others)
    assert not any(sid.encode() in raw for sid in ids.values())
    # AND a fingerprint that matches nothing reveals nothing
    status, raw = app.raw("/v1/sessions?reveal=000000000000")
    assert status == 200 and not any(v.encode() in raw for v in users.values())


# --- A hung storage path ---------------------------------------------------------------------


def test_hung_storage_path_times_out_while_threads_answer(
    start_app: Callable[..., SessionsTarget], tmp_path: Path
) -> None:
    # GIVEN file sessions in a directory where one "session file" blocks open() (a FIFO with no
    # writer, like a file on a hung NFS mount)
    store = tmp_path / "store"
    store.mkdir()
    app = start_app("file", "--path", str(store))
    app.login("frank", "x")
    os.mkfifo(store / "session-stuck")
    # WHEN the sessions are asked for (twice)
    first_status, first = app.get("/v1/sessions")
    second_status, second = app.get("/v1/sessions")
    # THEN the answer is a time-limit error naming the path, and the agent keeps answering
    assert first_status == 504, first
    assert str(store) in first["error"]["message"]
    assert "within 2.0 s" in first["error"]["message"]
    assert second_status == 504 and "stuck" in second["error"]["message"]
    status, threads = app.get("/v1/threads", timeout=5)
    assert status == 200
    # AND only one reader thread is stuck: the second request did not start another
    readers = [t for t in threads["threads"] if t["name"].startswith("cpinspect-sessions")]
    assert len(readers) == 1, [t["name"] for t in readers]


def test_unreadable_session_file_reported_without_its_id(
    start_app: Callable[..., SessionsTarget], tmp_path: Path
) -> None:
    # GIVEN a file store holding one real session and one entry that cannot be read (a
    # directory named like a session file: open() fails, as on a broken mount)
    store = tmp_path / "store"
    store.mkdir()
    app = start_app("file", "--path", str(store))
    sid = app.login("gina", "g-secret")
    fake_id = "f" * 40
    (store / ("session-" + fake_id)).mkdir()
    # WHEN the agent is asked
    status, raw = app.raw("/v1/sessions")
    entry = only_app(json.loads(raw))
    # THEN the readable session is listed, the other is reported, and no id is in the answer
    assert status == 200
    assert entry["count"] == 2
    assert "1 session file(s) unreadable" in entry["error"]
    assert fake_id.encode() not in raw and sid.encode() not in raw


def test_error_texts_are_scrubbed_of_ids() -> None:
    # GIVEN error texts as an OSError or a backend would word them (pure function, no process)
    from cpinspect.agent.probes.sessions import scrub

    sid = "a8f66a07573bdfc8c96def3d3a2afb1a86c41d11"
    # WHEN scrubbed THEN the id is gone and the rest (a path, a limit) stays
    assert scrub("Permission denied: '/srv/s/session-%s.lock'" % sid) == (
        "Permission denied: '/srv/s/session-***'"
    )
    assert scrub("key %s not set" % sid) == "key *** not set"
    assert scrub("/var/lib/session-files: within 2.0 s") == "/var/lib/session-files: within 2.0 s"


def test_reveal_of_a_hanging_repr_is_abandoned(start_app: Callable[..., SessionsTarget]) -> None:
    # GIVEN a session holding a value whose repr() blocks (the app's code, run by a reveal)
    app = start_app("ram")
    r = httpx.get(app.url + "/trap", timeout=10)
    assert r.status_code == 200
    fp = only_app(app.sessions())["sessions"][0]["fp"]
    try:
        # WHEN that session is revealed
        status, body = app.get("/v1/sessions?reveal=" + fp)
        # THEN the answer comes with the time limit named instead of the values
        assert status == 200
        entry = only_app(body)
        assert "did not finish within 2.0 s" in entry["error"]
        assert entry["count"] == 1 and entry["sessions"][0]["keys"] == []
        # AND the agent keeps answering, the next page saying the reader is stuck
        assert app.get("/v1/threads", timeout=5)[0] == 200
        again = only_app(app.sessions())
        assert "stuck" in again["error"]
    finally:
        httpx.get(app.url + "/release", timeout=10)
    # AND once the app's code returns, pages are whole again
    wait_for(
        lambda: only_app(app.sessions())["sessions"][0]["keys"],
        timeout=10,
        what="the reader to come back",
    )


# --- Paging, sorting, bad input --------------------------------------------------------------


def test_paging_and_sorting_in_the_agent(start_app: Callable[..., SessionsTarget]) -> None:
    # GIVEN 120 RAM sessions of varied size and expiry
    app = start_app("ram", "--prefill", "120")
    # WHEN they are read in pages of 50, by expiry
    pages = [only_app(app.sessions("?limit=50&offset=%d" % off)) for off in (0, 50, 100)]
    # THEN the pages are disjoint, cover all, and are in expiry order across page boundaries
    rows = [s for p in pages for s in p["sessions"]]
    assert [len(p["sessions"]) for p in pages] == [50, 50, 20]
    assert all(p["page"]["total"] == 120 for p in pages)
    assert len({s["fp"] for s in rows}) == 120
    expiries = [s["expires_at"] for s in rows]
    assert expiries == sorted(expiries)
    # (some of the prefilled sessions are already past their expiry and are counted)
    assert pages[0]["expired"] == sum(1 for s in rows if s["time_left"] < 0) > 0
    # WHEN sorted the other ways
    back = only_app(app.sessions("?limit=120&sort=-expiry"))["sessions"]
    by_size = only_app(app.sessions("?limit=120&sort=size"))["sessions"]
    # THEN -expiry is the exact reverse and size is largest first, matching the summary
    assert [s["fp"] for s in back] == [s["fp"] for s in reversed(rows)]
    sizes = [s["size"] for s in by_size]
    assert sizes == sorted(sizes, reverse=True)
    summary = pages[0]["summary"]
    assert [x["size"] for x in summary["largest"]] == sizes[:3]
    assert summary["sizes"]["max"] == sizes[0] and summary["sizes"]["min"] == sizes[-1]
    # AND an offset past the end gives an empty page with the total
    past = only_app(app.sessions("?offset=500"))
    assert past["sessions"] == [] and past["page"]["total"] == 120


@pytest.mark.parametrize(
    "query, status, words",
    [
        ("?limit=501", 400, "limit must be between 1 and 500"),
        ("?limit=abc", 400, "limit must be an integer"),
        ("?offset=-1", 400, "offset must be between"),
        ("?sort=bogus", 400, "sort must be one of"),
        ("?reveal=not-a-fingerprint", 400, "reveal must be"),
        ("?colour=red", 400, "unknown parameter"),
        ("?limit=1&limit=2", 400, "at most once"),
        ("?app=/nope", 404, "no mounted app"),
    ],
)
def test_bad_params_one_line_error(
    ram_app: SessionsTarget, query: str, status: int, words: str
) -> None:
    # GIVEN a sessions app; WHEN a bad query is sent
    got, body = ram_app.get("/v1/sessions" + query)
    # THEN the status and a one-line message saying what is wrong
    assert got == status
    message = body["error"]["message"]
    assert words in message and "\n" not in message


@pytest.fixture(scope="module")
def ram_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionsTarget]:
    log = tmp_path_factory.mktemp("ram") / "ram.log"
    with spawn_ready(["-m", "tests.apps.sessions_app", "ram"], log, "ram app") as m:
        yield SessionsTarget(int(m.group(1)), int(m.group(2)))


def _ram_store_with(count: int, seed: int) -> Tuple[Any, Any, List[str]]:
    """A RamSession subclass with its own cache of ``count`` sessions (ties in expiry on
    purpose: whole seconds), and the agent's store for it. In-process: the index is pure logic
    over the store's dict, the same code a target runs (no process needed to check orders)."""
    import datetime
    import random

    from cherrypy.lib import sessions as cp_sessions

    from cpinspect.agent.probes.sessions import RamStore

    class Ram(cp_sessions.RamSession):
        cache: Dict[str, Any] = {}
        locks: Dict[str, Any] = {}

    rng = random.Random(seed)
    now = datetime.datetime(2026, 12, 1, 10, 0, 0)
    for i in range(count):
        data = {"user": "u%d" % i, "note": "x" * rng.randint(0, 300)}
        Ram.cache["%040x" % rng.getrandbits(160)] = (
            data,
            now + datetime.timedelta(seconds=rng.randint(-600, 3600)),
        )
    return Ram, RamStore(Ram, {}), list(Ram.cache)


def _reference_orders(cache: Dict[str, Any]) -> Tuple[List[int], List[int]]:
    """Expiry order (stable) and size order (largest first, later place first) by full sorts."""
    from cpinspect.agent.probes.sessions import size_of

    entries = list(cache.values())
    sizes = [size_of(e[0]) for e in entries]
    by_exp = sorted(range(len(entries)), key=lambda p: entries[p][1])
    by_size = sorted(range(len(entries)), key=lambda p: (sizes[p], p), reverse=True)
    return by_exp, by_size


def test_index_updated_in_place_matches_a_full_sort() -> None:
    # GIVEN an index of 10,000 RAM sessions (more than one sort chunk: the merge runs)
    import datetime

    from cpinspect.agent.probes.sessions import SORT_CHUNK

    Ram, store, keys = _ram_store_with(10000, 7)
    assert len(keys) > 2 * SORT_CHUNK
    first = store.build(None)
    exp0, size0 = _reference_orders(Ram.cache)
    assert list(first.order_exp) == exp0 and list(first.order_size) == size0
    # WHEN 300 users log in and 100 existing sessions are saved again (some to equal expiries)
    # and the index is rebuilt
    when = datetime.datetime(2026, 12, 1, 10, 30, 0)
    for i in range(300):
        Ram.cache["%040x" % (i + 1)] = ({"new": "y" * (i % 50)}, when)
    for k in keys[::100]:
        Ram.cache[k] = ({"saved": "z" * 700}, when + datetime.timedelta(seconds=len(k) % 3))
    updated = store.build(first)
    # THEN it was updated in place of the old one (its lists grown, not copied) ...
    assert updated.sids is first.sids and updated.tags is first.tags
    assert len(updated) == 10300 and len(first) == 10000
    # ... and its orders, sizes and summary are exactly those of sorting everything again
    exp1, size1 = _reference_orders(Ram.cache)
    assert list(updated.order_exp) == exp1
    assert list(updated.order_size) == size1
    full = store.build(None)
    assert list(full.sizes) == list(updated.sizes)
    assert full.sizes_summary == updated.sizes_summary
    # AND the old index, possibly still serving a page, only ever names its own positions
    assert max(first.order_exp) < 10000 and sorted(first.order_size) == list(range(10000))
    # AND nothing saved since: the same index is confirmed, nothing sorted again
    assert store.build(updated) is updated


@pytest.mark.parametrize("share", [10, 50, 100])
def test_index_compacted_in_place_after_deletions(share: int) -> None:
    # GIVEN an index of 10,000 RAM sessions (several sort chunks, many deletion blocks)
    import datetime
    import random

    Ram, store, keys = _ram_store_with(10000, 8 + share)
    first = store.build(None)
    sids_list = first.sids
    # WHEN a clean-up deletes `share` % of the sessions, spread over the store
    rng = random.Random(share)
    doomed = rng.sample(keys, len(keys) * share // 100)
    for k in doomed:
        del Ram.cache[k]
    again = store.build(first)
    # THEN the index was compacted in place (the same lists, no second index) ...
    assert again is first and again.sids is sids_list
    assert len(again) == len(Ram.cache) == 10000 - len(doomed)
    assert again.sids == list(Ram.cache)
    # ... and its orders, sizes and summary are exactly those of sorting everything again
    exp, size = _reference_orders(Ram.cache)
    assert list(again.order_exp) == exp and list(again.order_size) == size
    full = store.build(None)
    assert list(full.sizes) == list(again.sizes)
    assert full.sizes_summary == again.sizes_summary
    later = datetime.datetime(2030, 1, 1).timestamp()
    assert again.count_before(later) == len(Ram.cache)
    # WHEN then more are deleted, some saved again and new ones log in (one update)
    left = list(Ram.cache)
    when = datetime.datetime(2026, 12, 1, 10, 30, 0)
    for k in left[::3]:
        del Ram.cache[k]
    for k in left[1::3][::17]:  # saved again: survivors only (a deleted id came back last)
        Ram.cache[k] = ({"saved": "z" * 500}, when)
    for i in range(200):
        Ram.cache["%040x" % (i + 1)] = ({"new": "y" * (i % 40)}, when)
    third = store.build(again)
    # THEN the update shares the compacted lists and still equals a full sort
    assert third.sids is sids_list and third.sids[: len(third)] == list(Ram.cache)
    exp, size = _reference_orders(Ram.cache)
    assert list(third.order_exp) == exp and list(third.order_size) == size
    assert store.build(None).sizes_summary == third.sizes_summary
    # WHEN a deleted id comes back (it is created again: last in the store's order)
    if len(Ram.cache) > 1:
        back = next(iter(Ram.cache))
        entry = Ram.cache.pop(back)
        Ram.cache[back] = entry
    fourth = store.build(third)
    # THEN the index still follows the store's order (here built anew) and a full sort
    assert fourth.sids[: len(fourth)] == list(Ram.cache)
    exp, size = _reference_orders(Ram.cache)
    assert list(fourth.order_exp) == exp and list(fourth.order_size) == size


def test_answer_waits_for_a_compaction_only_within_the_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an app with RAM sessions mounted in this process (its own storage class and
    # cache) and the agent's sessions probe over it, its index built
    import datetime

    import cherrypy
    from cherrypy.lib import sessions as cp_sessions

    from cpinspect.agent.probes import sessions as probe_mod
    from cpinspect.agent.tracking import RequestTracker

    class Ram(cp_sessions.RamSession):
        cache: Dict[str, Any] = {}
        locks: Dict[str, Any] = {}

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "ok"

    Ram.cache["a" * 40] = ({"user": "u"}, datetime.datetime(2030, 1, 1))
    script = "/compaction-wait-test"
    cherrypy.tree.mount(
        Root(), script, {"/": {"tools.sessions.on": True, "tools.sessions.storage_class": Ram}}
    )
    try:
        probe = probe_mod.SessionsProbe(RequestTracker())
        status, answer = probe.snapshot({"app": [script]})
        assert status == 200 and only_app(answer)["count"] == 1
        store = next(s for s in probe._stores.values() if s.cls is Ram)
        # WHEN an update holds the index (as a compaction does) past the time limit
        monkeypatch.setattr(probe_mod, "IO_TIMEOUT", 0.2)
        store.index_lock.acquire()
        try:
            status, answer = probe.snapshot({"app": [script]})
        finally:
            store.index_lock.release()
        # THEN the answer comes within the limit and says why it has no page, in one line
        entry = only_app(answer)
        assert status == 200 and entry["count"] is None and entry["sessions"] == []
        assert "being updated in place" in entry["error"] and "ask again" in entry["error"]
        # AND once the update is done the next answer is whole again
        status, answer = probe.snapshot({"app": [script]})
        assert only_app(answer)["count"] == 1
    finally:
        del cherrypy.tree.apps[script]


def test_two_apps_on_one_file_store_are_listed_once_with_where_they_are_switched_on(
    start_app: Callable[..., SessionsTarget], tmp_path: Path
) -> None:
    from tests.helpers import run_cli

    # GIVEN two apps whose FileSession config names one storage path (CherryMusic's shape, and
    # the tutorials mounted together), with three sessions in it
    store = tmp_path / "store"
    store.mkdir()
    app = start_app("file", "--path", str(store), "--second-app", "/api")
    for i in range(3):
        app.login("user%d" % i, "secret-%d" % i)
    # WHEN `cpinspect sessions` prints them
    result = run_cli("sessions", str(app.pid))
    # THEN the root app lists the three; the other says it is the same store, not three more
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "app '/' · files · 3 sessions\n" in text
    assert "app '/api' · files · 3 sessions · the same store as app '/'" in text
    assert "its sessions are those listed under app '/' (one store, not two)" in text
    assert text.count("sessions 1-3 of 3") == 1
    # AND where sessions are switched on is said in the words of the config
    assert "switched on in  config '/'" in text
