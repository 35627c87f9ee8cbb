"""``cpinspect sessions``, and sessions in ``dump --json`` and ``snapshot``, on a real CherryPy
process (``tests/apps/sessions_app.py``, RAM sessions): one user's slow request holds the session
lock while two more of theirs wait, and real session ids and values are searched for in every
output.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest

from cpinspect.analysis import LOCK_FLOOR
from tests.conftest import wait_for
from tests.helpers import agent_get, run_cli, spawn_ready


class Contended:
    """The app, the users' real session ids and secret values, and the contended session."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.url = "http://127.0.0.1:%d" % port
        self.ids: Dict[str, str] = {}
        self.values: Dict[str, str] = {}
        self.threads: List[threading.Thread] = []
        self.results: List[Any] = []

    def login(self, user: str, secret: str) -> str:
        r = httpx.get(self.url + "/login", params={"user": user, "secret": secret}, timeout=10)
        assert r.status_code == 200, r.text
        self.ids[user] = str(r.cookies["session_id"])
        self.values[user] = secret
        return self.ids[user]

    def call(self, path: str, user: str) -> None:
        def run() -> None:
            try:
                cookies = {"session_id": self.ids[user]}
                r = httpx.get(self.url + path, cookies=cookies, timeout=90)
                self.results.append(r.status_code)
            except Exception as exc:  # noqa: BLE001 - the test says what happened
                self.results.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def top_lock(self) -> Dict[str, Any]:
        from cpinspect.attach.discovery import find_agent

        status, body = agent_get(find_agent(self.pid).connect_path, "/v1/sessions?sort=lock")
        assert status == 200, body
        return dict(body["apps"][0]["sessions"][0]["lock"])


@pytest.fixture(scope="module")
def contended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contended]:
    """GIVEN a RAM-session app where erin's /slow holds her session's lock and two more of her
    requests (/whoami) wait on it, and two other users are logged in."""
    log = tmp_path_factory.mktemp("sessions-cli") / "app.log"
    with spawn_ready(["-m", "tests.apps.sessions_app", "ram"], log, "sessions app") as m:
        app = Contended(int(m.group(1)), int(m.group(2)))
        app.login("frank", "FRANK-VALUE-93x")
        app.login("grace", "GRACE-VALUE-17q")
        app.login("erin", "ERIN-VALUE-42k")
        app.call("/slow", "erin")
        wait_for(lambda: app.top_lock()["holder"], timeout=15, what="the slow request's lock")
        app.call("/whoami", "erin")
        app.call("/whoami", "erin")
        wait_for(lambda: len(app.top_lock()["waiters"]) == 2, timeout=15, what="two waiters on it")
        # Held past what is never called long (whatever the other requests took).
        wait_for(
            lambda: app.top_lock()["holder"]["held_for"] > LOCK_FLOOR + 0.5,
            timeout=15,
            what="the lock held a while",
        )
        try:
            yield app
        finally:
            httpx.get(app.url + "/release", timeout=10)
            for thread in app.threads:
                thread.join(30)
    assert app.results == [200, 200, 200]


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=90, stdin=subprocess.DEVNULL)


def assert_nothing_secret(app: Contended, *outputs: str) -> None:
    for text in outputs:
        for user in app.ids:
            assert app.ids[user] not in text, user
            assert app.values[user] not in text, user


def test_text_names_the_holders_request_and_both_waiters(contended: Contended) -> None:
    # WHEN `cpinspect sessions PID` runs, sorted by lock
    result = cli("sessions", str(contended.pid), "--sort", "lock")
    # THEN it succeeds with the summary, the diagnosis and the held session first
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "app '/' · RAM · 3 sessions" in out
    assert "3 sessions · " in out and "1 locked now · 2 waiting for a lock" in out
    assert "CRITICAL  session " in out and "by GET /slow" in out, out
    assert "2 requests of the same user wait behind it" in out
    assert "release_lock()" in out
    # AND the holder's request and both waiters', each with its thread
    lines = out.splitlines()
    holder = [i for i, line in enumerate(lines) if line.strip().startswith("held by")]
    assert len(holder) == 1
    block = "\n".join(lines[holder[0] : holder[0] + 9])
    assert "CP Server Thread-" in block and "GET /slow from 127.0.0.1" in block
    assert block.count("GET /whoami from 127.0.0.1") == 2
    assert "waiter 1" in block and "waiter 2" in block
    # AND no session id or value is printed
    assert_nothing_secret(contended, out, result.stderr)


def test_json_names_them_too_and_carries_the_diagnoses(contended: Contended) -> None:
    result = cli("sessions", str(contended.pid), "--json", "--sort", "lock", "--limit", "2")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    app = doc["apps"][0]
    # THEN the page is the first two, the held one first
    assert app["page"] == {"offset": 0, "limit": 2, "sort": "lock", "total": 3}
    assert len(app["sessions"]) == 2
    lock = app["sessions"][0]["lock"]
    assert lock["state"] == "held"
    assert lock["holder"]["request"]["path"] == "/slow"
    assert [w["request"]["path"] for w in lock["waiters"]] == ["/whoami", "/whoami"]
    assert lock["holder"]["ident"] not in [w["ident"] for w in lock["waiters"]]
    # AND the diagnosis names the holder's and the waiters' threads
    (finding,) = [f for f in doc["findings"] if f["id"].startswith("sessions-lock:")]
    assert finding["severity"] == "critical"
    idents = [lock["holder"]["ident"], *(w["ident"] for w in lock["waiters"])]
    assert [(e["kind"], e["ref"]) for e in finding["evidence"]] == [
        ("thread", str(i)) for i in idents
    ]
    assert_nothing_secret(contended, result.stdout)


def test_reveal_shows_that_one_sessions_values_only(contended: Contended) -> None:
    # GIVEN the fingerprint of the held session (erin's)
    listed = json.loads(cli("sessions", str(contended.pid), "--json", "--sort", "lock").stdout)
    fp = listed["apps"][0]["sessions"][0]["fp"]
    # WHEN it is revealed
    result = cli("sessions", str(contended.pid), "--sort", "lock", "--reveal", fp)
    assert result.returncode == 0, result.stderr
    # THEN erin's value is printed, nobody else's, and no id at all
    assert contended.values["erin"] in result.stdout
    assert contended.values["frank"] not in result.stdout
    assert contended.values["grace"] not in result.stdout
    assert not any(sid in result.stdout for sid in contended.ids.values())


def test_dump_json_and_snapshot_carry_sessions_without_ids_or_values(
    contended: Contended, tmp_path: Path
) -> None:
    # WHEN the process is dumped as JSON and snapshotted
    dump = cli("dump", str(contended.pid), "--json")
    assert dump.returncode == 0, dump.stderr
    snap = cli("snapshot", str(contended.pid), "-o", str(tmp_path))
    assert snap.returncode == 0, snap.stderr
    json_path, report_path = (Path(p) for p in snap.stdout.split())
    saved = json_path.read_text()
    report = report_path.read_text()
    # THEN both hold the sessions, the held lock with its holder's request
    for text in (dump.stdout, saved):
        sessions = json.loads(text)["snapshots"][0]["sessions"]
        (app,) = sessions["apps"]
        assert app["count"] == 3
        held = [s for s in app["sessions"] if s["lock"]["state"] == "held"]
        assert len(held) == 1 and held[0]["lock"]["holder"]["request"]["path"] == "/slow"
        assert all(k["value"] is None for s in app["sessions"] for k in s["keys"])
    # AND the report has a sessions section with the diagnosis
    assert "Sessions (3 in 1 app(s))" in report and "by GET /slow" in report
    # AND no session id or value is in any of them
    assert_nothing_secret(contended, dump.stdout, dump.stderr, saved, report, snap.stderr)


def assert_one_line_error(
    result: subprocess.CompletedProcess, code: Optional[int], words: str
) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpinspect: "), lines[0]
    assert words in lines[0], lines[0]
    assert result.stdout == ""
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    else:
        assert result.returncode != 0


def test_bad_input_is_one_line_and_an_exit_code(contended: Contended) -> None:
    pid = str(contended.pid)
    assert_one_line_error(cli("sessions", pid, "--limit", "0"), 2, "--limit takes 1 to 500")
    assert_one_line_error(cli("sessions", pid, "--limit", "501"), 2, "--limit takes 1 to 500")
    assert_one_line_error(cli("sessions", pid, "--offset", "-1"), 2, "--offset takes 0 or more")
    assert_one_line_error(cli("sessions", pid, "--app", "/nope"), None, "/nope")
    assert_one_line_error(cli("sessions", "999999"), None, "999999")
