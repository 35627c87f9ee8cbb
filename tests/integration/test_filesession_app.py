"""An app shaped like rdiffweb 2.4 (``tests/apps/filesession_app.py``, a real CherryPy process):
file sessions with implicit locking, its own login tool, its log on the root logger in its own
format. One user's slow download holds the session's lock; the same user's other requests and
CherryPy's session clean-up thread wait for it in ``FileSession.acquire_lock``.

Seen on rdiffweb 2.4.10 with a restore of a large file in flight: the waiting workers had no
request (py-spy and the injected agent alike took ``HookMap.run`` for ``Request.run``), their
time was counted from the agent's arrival, and the clean-up thread was listed as one more
request of the same user.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from cpinspect.protocol import snapshots_from_document
from tests.conftest import IN_CI, wait_for
from tests.helpers import agent_get, run_cli, spawn_ready, wait_for_frame

PASSWORD = "RDW-PASSWORD-9qk"


class App:
    def __init__(self, port: int, pid: int, tmp: Path) -> None:
        self.port = port
        self.pid = pid
        self.tmp = tmp
        self.url = "http://127.0.0.1:%d" % port
        self.cookie = ""
        self.results: List[Any] = []

    def get(self, path: str, timeout: float = 90) -> None:
        r = httpx.get(self.url + path, cookies={"session_id": self.cookie}, timeout=timeout)
        self.results.append((path, r.status_code))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """GIVEN the app without the agent, a user logged in, GET /restore holding the session's
    lock and two GET /page of the same user waiting for it"""
    tmp = tmp_path_factory.mktemp("rdw")
    (tmp / "sessions").mkdir()
    args = ["-m", "tests.apps.filesession_app", str(tmp / "sessions"), "--agent", "none"]
    args += ["--clean-freq", "0.02", "--log-file", str(tmp / "rdw.log")]
    with spawn_ready(args, tmp / "stdout.log", "file-session app") as m:
        a = App(int(m.group(1)), int(m.group(2)), tmp)
        r = httpx.post(a.url + "/login", data={"login": "dana", "password": PASSWORD}, timeout=10)
        assert r.status_code == 303, r.text
        a.cookie = str(r.cookies["session_id"])
        assert httpx.get(a.url + "/boom", cookies={"session_id": a.cookie}).status_code == 500
        threads = [threading.Thread(target=a.get, args=("/restore",), daemon=True)]
        threads[0].start()
        wait_for_frame(a.pid, "restore")
        for _ in range(2):
            threads.append(threading.Thread(target=a.get, args=("/page",), daemon=True))
            threads[-1].start()

        def waiting() -> bool:
            found = wait_for_frame(a.pid, "acquire_lock")
            return len(found) >= 3  # two requests and the clean-up thread (every 1.2 s)

        wait_for(waiting, timeout=30, what="two requests and the clean-up in acquire_lock")
        try:
            yield a
        finally:
            httpx.get(a.url + "/release", timeout=10)
            for t in threads:
                t.join(30)
    assert sorted(a.results) == [("/page", 200), ("/page", 200), ("/restore", 200)]


def cli(*args: str) -> Any:
    return run_cli(*args, timeout=90)


def busy_requests(document: Dict[str, Any]) -> List[Any]:
    [snapshot] = snapshots_from_document(document)
    assert snapshot.threads is not None
    return [t.request for t in snapshot.threads.threads if t.busy]


def test_py_spy_alone_names_the_requests_waiting_in_a_tool(app: App) -> None:
    # WHEN the process without the agent is dumped (py-spy)
    result = cli("dump", str(app.pid), "--json")
    assert result.returncode == 0, result.stderr

    # THEN every busy worker has its request, the two waiting for the lock too (they sat in
    # HookMap.run, which py-spy's reading took for Request.run: no method, no path, no request),
    # each a lower bound (running already at py-spy's first look)
    requests = busy_requests(json.loads(result.stdout))
    assert sorted(r.path for r in requests if r is not None) == ["/page", "/page", "/restore"]
    assert all(r.started_before for r in requests if r is not None)


def test_without_the_agent_logs_follow_the_apps_own_log_file(app: App) -> None:
    # GIVEN (the fixture) the app's log in its own file and format, stdout sent to a file
    # holding one line; GET /boom answered 500 with a traceback
    # WHEN its log is read without the agent
    result = cli("logs", str(app.pid), "--no-follow", "-n", "50", "--json")
    assert result.returncode == 0, result.stderr

    # THEN it is the app's log file that is followed (it was the stdout redirect, fd 1), and its
    # records are read, each traceback one ERROR record with its time (none matched CherryPy's
    # date, so every line was dropped)
    assert "following %s" % (app.tmp / "rdw.log") in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    [boom] = [r for r in records if "restore failed" in (r.get("traceback") or "")]
    assert boom["level"] == "ERROR" and boom["time"] > 0, boom
    assert any(r["level"] == "INFO" and "ENGINE Bus STARTED" in r["message"] for r in records)


@pytest.fixture(scope="module")
def injected(app: App) -> str:
    if shutil.which("gdb") is None:
        if IN_CI:
            pytest.fail("gdb missing in CI: `make system-deps` installs it")
        pytest.skip("gdb missing (apt-get install gdb, or `make system-deps` as root)")
    result = cli("inject", str(app.pid))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_agent_injected_later_names_them_with_their_start(app: App, injected: str) -> None:
    # WHEN the agent arrives while the requests wait
    _, info = agent_get(injected, "/v1/info")
    _, threads = agent_get(injected, "/v1/threads")

    # THEN it finds each one's request by walking its frames (no hook saw them start), with the
    # time CherryPy started it, before the agent came (it was the agent's first sight, and an
    # empty method and path)
    busy = [t["request"] for t in threads["threads"] if t["busy"]]
    assert sorted((r["method"], r["path"]) for r in busy) == [
        ("GET", "/page"),
        ("GET", "/page"),
        ("GET", "/restore"),
    ], busy
    assert all(r["source"] == "frame" for r in busy)
    assert all(r["started_at"] < info["agent_installed_at"] for r in busy), busy


def test_the_session_waiters_are_the_users_requests_and_the_clean_up(
    app: App, injected: str
) -> None:
    # WHEN other users' requests complete (what a normal request takes) and the sessions are
    # listed
    for _ in range(5):
        assert httpx.get(app.url + "/login", timeout=10).status_code == 200
    _, body = agent_get(injected, "/v1/sessions")
    [store] = body["apps"]
    [held] = [s for s in store["sessions"] if s["lock"]["state"] == "held"]
    waiters = held["lock"]["waiters"]

    # THEN the two requests wait with their requests, and CherryPy's clean-up thread is named
    # as such (it waits for every held lock in turn; no expired session goes meanwhile)
    assert sorted((w["request"] or {}).get("path") for w in waiters if not w.get("clean_up")) == [
        "/page",
        "/page",
    ]
    [cleaner] = [w for w in waiters if w.get("clean_up")]
    assert cleaner["request"] is None and cleaner["name"] == "Session cleanup"

    # ... and the text says so: two requests of the user, and the clean-up held up too
    result = cli("sessions", str(app.pid))
    assert result.returncode == 0, result.stderr
    assert "2 requests of the same user wait behind it" in result.stdout, result.stdout
    assert "CherryPy's session clean-up waits behind it too" in result.stdout, result.stdout
    assert "no request known" not in result.stdout, result.stdout
    assert "thread running, waiting for session %s's lock" % held["fp"][:8] in result.stdout
    # ... and nothing of the user's session leaks: not its id, not the password
    for secret in (app.cookie, PASSWORD):
        assert secret not in result.stdout


def test_a_session_is_revealed_by_the_fingerprint_the_text_shows(app: App, injected: str) -> None:
    # GIVEN the 8 hex digits `cpinspect sessions` shows of the held session's fingerprint
    _, body = agent_get(injected, "/v1/sessions?sort=lock")
    [held] = [s for s in body["apps"][0]["sessions"] if s["lock"]["state"] == "held"]
    short = held["fp"][:8]
    assert short in cli("sessions", str(app.pid)).stdout

    # WHEN it is given to --reveal
    result = cli("sessions", str(app.pid), "--reveal", short, "--sort", "lock")

    # THEN that session's values are printed (the agent took only all 12 digits: 'agent error
    # 400 on /v1/sessions: reveal must be a 12-hex-digit fingerprint')
    assert result.returncode == 0, result.stderr
    assert "_cp_username = 'dana'" in result.stdout, result.stdout

    # ... and a fingerprint that names no session, or is no fingerprint, is one line and exit 2
    for wrong in ("00000000", "not-a-fp"):
        bad = cli("sessions", str(app.pid), "--reveal", wrong)
        assert bad.returncode == 2 and bad.stdout == "", (bad.stdout, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_pool_starved_by_one_users_session_lock_says_so_without_the_agent(
    tmp_path: Path,
) -> None:
    # GIVEN the app with 3 workers, without the agent: one user's GET /restore holds the
    # session's lock, two more requests of that user wait for it: every worker busy
    (tmp_path / "sessions").mkdir()
    args = ["-m", "tests.apps.filesession_app", str(tmp_path / "sessions"), "--agent", "none"]
    args += ["--threads", "3", "--hold", "25"]
    with spawn_ready(args, tmp_path / "out.log", "file-session app") as m:
        a = App(int(m.group(1)), int(m.group(2)), tmp_path)
        r = httpx.post(a.url + "/login", data={"login": "dana", "password": PASSWORD}, timeout=10)
        a.cookie = str(r.cookies["session_id"])
        threads = [threading.Thread(target=a.get, args=("/restore",), daemon=True)]
        threads[0].start()
        wait_for_frame(a.pid, "restore")
        for _ in range(2):
            threads.append(threading.Thread(target=a.get, args=("/page",), daemon=True))
            threads[-1].start()
        wait_for(
            lambda: len(wait_for_frame(a.pid, "acquire_lock")) >= 2,
            timeout=30,
            what="two requests in acquire_lock",
        )
        try:
            # WHEN doctor reads it with py-spy alone
            result = cli("doctor", str(a.pid))

            # THEN the starved pool's finding says that two workers only wait for a session's
            # lock (it named the route and the handler, and pointed at the handler alone)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "the pool is starved" in result.stdout, result.stdout
            assert "2 of them only wait for a session's lock (sessions.py:" in result.stdout, (
                result.stdout
            )
            assert "cherrypy.session.release_lock()" in result.stdout
        finally:
            # GET /restore ends by itself (--hold): /release needs a free worker
            for t in threads:
                t.join(60)
            httpx.get(a.url + "/release", timeout=30)
            for t in threads:
                t.join(30)
