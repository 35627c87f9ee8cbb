"""Lock contention on a real CherryPy process (``tests/apps/locks_app.py``): the agent's
``wait``/``holds`` on ``/v1/threads`` and the lock-contention finding built from them.

One target process serves the tests of the inspector's Python (each stages its case on its own
gate and opens it after); the bytecode reading is also checked on Python 3.8 and 3.13 (cached
target venvs as in ``test_inject_versions.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest

from cpinspect.findings.locks import lock_findings
from cpinspect.model import Finding, Snapshot, SourceKind
from cpinspect.protocol import threads_cursor, threads_from_json
from cpinspect.snapshots import with_source_lines
from cpinspect.sources.pyspy import PySpySource
from cpinspect.sources.source_lines import SourceLines
from tests.conftest import ROOT, wait_for
from tests.helpers import agent_get
from tests.integration.test_inject_versions import target_python

APP_FILE = str(ROOT / "tests" / "apps" / "locks_app.py")


class LocksTarget:
    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self._socket: Optional[str] = None
        self._clients: List[threading.Thread] = []

    def socket_path(self) -> str:
        if self._socket is None:
            from cpinspect.attach.discovery import find_agent

            self._socket = find_agent(self.pid).connect_path
        return self._socket

    def threads(self, since: str = "") -> Dict[str, Any]:
        status, body = agent_get(
            self.socket_path(), "/v1/threads" + ("?since=" + since if since else "")
        )
        assert status == 200, body
        return body

    def fire(self, path: str, count: int) -> None:
        """``count`` requests in the background (they block until their gate opens)."""
        for _ in range(count):
            t = threading.Thread(target=self._get, args=(path, 90.0), daemon=True)
            t.start()
            self._clients.append(t)

    def _get(self, path: str, timeout: float) -> None:
        with contextlib.suppress(Exception):
            httpx.get("http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout)

    def release(self, gate: str) -> None:
        r = httpx.get("http://127.0.0.1:%d/release?gate=%s" % (self.port, gate), timeout=10)
        assert r.status_code == 200

    def on(self, path: str) -> List[Dict[str, Any]]:
        """The threads serving ``path`` now (its query included)."""
        return [
            t
            for t in self.threads()["threads"]
            if t["request"] is not None
            and t["request"]["path"]
            + ("?" + t["request"]["query"] if t["request"]["query"] else "")
            == path
        ]


@contextlib.contextmanager
def start_locks_app(python: str, log: Path) -> Iterator[LocksTarget]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XDG_RUNTIME_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "tests.apps.locks_app"],
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def ready() -> Optional[re.Match[str]]:
            if proc.poll() is not None:
                raise RuntimeError("locks app exited:\n" + log.read_text(errors="replace"))
            return re.search(r"READY port=(\d+) pid=(\d+)", log.read_text(errors="replace"))

        m = wait_for(ready, timeout=30, what="the locks app's READY line")
        assert isinstance(m, re.Match)
        yield LocksTarget(int(m.group(1)), int(m.group(2)))
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocksTarget]:
    log = tmp_path_factory.mktemp("locks") / "locks-app.log"
    with start_locks_app(sys.executable, log) as target:
        yield target


def findings_now(app: LocksTarget) -> List[Finding]:
    payload = app.threads()
    threads = threads_from_json(payload)
    return lock_findings(
        Snapshot(taken_at=threads.taken_at, source=SourceKind.AGENT, threads=threads), ()
    )


def waiting_and_holding(
    app: LocksTarget, path: str, waiters: int, holders: int
) -> List[Dict[str, Any]]:
    def staged() -> Optional[List[Dict[str, Any]]]:
        threads = app.on(path)
        w = [t for t in threads if t.get("wait")]
        h = [t for t in threads if t.get("holds")]
        return threads if len(w) == waiters and len(h) == holders else None

    found = wait_for(
        staged, timeout=20, what="%d waiters and %d holders on %s" % (waiters, holders, path)
    )
    assert isinstance(found, list)
    return found


# --- the inspector's Python: one shared process ------------------------------------------------


def test_idle_app_has_no_wait_anywhere(app: LocksTarget) -> None:
    # GIVEN the app idle (its workers wait for connections on a Condition, as idle workers do)
    # WHEN the threads are read
    threads = app.threads()["threads"]
    # THEN no thread waits on a lock or holds one
    assert len(threads) >= 12
    assert not [t for t in threads if "wait" in t or "holds" in t]
    assert findings_now(app) == []


def test_global_lock_waiters_name_it_and_the_holder_is_found(app: LocksTarget) -> None:
    # GIVEN one slow request inside `with LEDGER_LOCK:` and three more waiting at that line
    path = "/transfer?gate=g1"
    app.fire(path, 1)
    wait_for(lambda: app.on(path), what="the first transfer")
    app.fire(path, 3)
    try:
        # WHEN the agent's threads are read
        threads = waiting_and_holding(app, path, waiters=3, holders=1)
        waiters = [t for t in threads if t.get("wait")]
        (holder,) = [t for t in threads if t.get("holds")]
        # THEN each waiter names LEDGER_LOCK, the same object, at the with line of the handler
        assert {w["wait"]["expr"] for w in waiters} == {"LEDGER_LOCK"}
        assert len({w["wait"]["obj"] for w in waiters}) == 1
        wait = waiters[0]["wait"]
        assert wait["type"] == "_thread.lock" and wait["owner"] is None
        assert wait["filename"] == APP_FILE
        assert wait["lineno"] == waiters[0]["stack"][0]["line"]
        # AND the holder is inside `with LEDGER_LOCK:` on that same object and line
        (held,) = holder["holds"]
        assert held == {
            "expr": "LEDGER_LOCK",
            "obj": wait["obj"],
            "filename": APP_FILE,
            "lineno": wait["lineno"],
        }
        assert "wait" not in holder

        # AND the finding (once they have waited a moment) names the lock and the likely holder
        def contention() -> List[Finding]:
            return [
                f
                for f in findings_now(app)
                if f.id == "lock-contention:%s:%d" % (APP_FILE, wait["lineno"])
            ]

        found = wait_for(contention, what="the lock-contention finding")
        assert isinstance(found, list)
        (finding,) = found
        assert finding.title.startswith(
            "3 workers wait on LEDGER_LOCK at locks_app.py:%d (likely held by %s in GET "
            "/transfer for " % (wait["lineno"], holder["name"])
        )
        assert finding.evidence[0].ref == str(holder["ident"])
        assert {e.ref for e in finding.evidence[1:]} == {str(w["ident"]) for w in waiters}
        assert all("GET /transfer?gate=g1" in e.label for e in finding.evidence)
    finally:
        app.release("g1")
    # AND once the gate opens nobody waits any more
    wait_for(lambda: not app.on(path), what="the transfers to finish")
    assert not [t for t in app.threads()["threads"] if "wait" in t or "holds" in t]


def test_rlock_waiter_names_its_owner(app: LocksTarget) -> None:
    # GIVEN one request inside `with self.lock:` (an RLock) and one waiting on it
    path = "/audit?gate=g2"
    app.fire(path, 1)
    wait_for(lambda: app.on(path), what="the first audit")
    app.fire(path, 2)
    try:
        threads = waiting_and_holding(app, path, waiters=2, holders=1)
        (holder,) = [t for t in threads if t.get("holds")]
        waiters = [t for t in threads if t.get("wait")]
        # THEN the waiters name self.lock, an RLock owned by the holder's thread
        for w in waiters:
            assert w["wait"]["expr"] == "self.lock"
            assert w["wait"]["type"] == "_thread.RLock"
            assert w["wait"]["owner"] == holder["ident"]
        # AND the finding says who holds it, certainly (no "likely")
        found = wait_for(lambda: findings_now(app), what="the RLock finding")
        assert isinstance(found, list)
        (finding,) = found
        assert "wait on self.lock" in finding.title
        assert "(held by %s in GET /audit for" % holder["name"] in finding.title
        assert finding.evidence[0].ref == str(holder["ident"])
    finally:
        app.release("g2")
    wait_for(lambda: not app.on(path), what="the audits to finish")


def test_acquire_without_with_names_the_lock_but_not_its_holder(app: LocksTarget) -> None:
    # GIVEN a request holding x.lock via acquire() and two more blocked in x.lock.acquire()
    path = "/account?gate=g3"
    app.fire(path, 1)
    wait_for(lambda: app.on(path), what="the first account request")
    app.fire(path, 2)
    try:
        threads = waiting_and_holding(app, path, waiters=2, holders=0)
        waiters = [t for t in threads if t.get("wait")]
        # THEN the waiters name x.lock, one object; nobody is marked as holding it
        assert {w["wait"]["expr"] for w in waiters} == {"x.lock"}
        assert len({w["wait"]["obj"] for w in waiters}) == 1
        found = wait_for(lambda: findings_now(app), what="the acquire() finding")
        assert isinstance(found, list)
        (finding,) = found
        assert finding.title.startswith("2 workers wait on x.lock at locks_app.py:")
        assert "holder unknown" in finding.title
    finally:
        app.release("g3")
    wait_for(lambda: not app.on(path), what="the account requests to finish")


def test_one_thread_in_a_with_block_and_nobody_waiting_is_no_alarm(app: LocksTarget) -> None:
    # GIVEN one request inside `with QUIET_LOCK:` that no other thread wants
    path = "/quiet?gate=g4"
    app.fire(path, 1)
    try:
        wait_for(lambda: app.on(path), what="the quiet request")
        # WHEN the threads are read and findings computed
        threads = app.threads()["threads"]
        # THEN nothing waits, nothing is said to be held (holders are only looked for when
        # someone waits) and there is no finding
        assert not [t for t in threads if "wait" in t or "holds" in t]
        assert findings_now(app) == []
    finally:
        app.release("g4")
    wait_for(lambda: not app.on(path), what="the quiet request to finish")


def test_threads_delta_sends_wait_changes(app: LocksTarget) -> None:
    # GIVEN a cursor taken while nothing waits (every poll below names it, which keeps it
    # among the cursors the agent remembers)
    cursor = threads_cursor(app.threads())
    assert cursor is not None
    path = "/transfer?gate=g5"
    app.fire(path, 1)
    wait_for(lambda: app.on(path), what="the first transfer")
    app.fire(path, 2)

    def staged() -> Optional[Dict[str, Any]]:
        delta = app.threads(cursor)
        sent = delta["threads"]
        waits = [t for t in sent if "wait" in t]
        holds = [t for t in sent if "holds" in t]
        return delta if len(waits) == 2 and len(holds) == 1 else None

    try:
        # WHEN deltas since that cursor are read
        delta = wait_for(staged, timeout=20, what="a delta with 2 waiters and 1 holder")
        # THEN the waiters and the holder are in one, with their wait/holds
        assert isinstance(delta, dict) and delta["delta"] is True
        staged_cursor = delta["cursor"]
    finally:
        app.release("g5")

    def released() -> Optional[Dict[str, Any]]:
        after = app.threads(staged_cursor)
        sent = {t["ident"]: t for t in after["threads"]}
        changed = [sent.get(t["ident"]) for t in delta["threads"] if "wait" in t or "holds" in t]
        return after if all(c is not None and c["request"] is None for c in changed) else None

    # AND deltas after the release send those threads again, without wait/holds
    after = wait_for(released, timeout=20, what="a delta with the transfers finished")
    assert isinstance(after, dict) and after["delta"] is True
    assert not [t for t in after["threads"] if "wait" in t or "holds" in t]


def test_without_the_agent_pyspy_stacks_and_the_source_line_name_the_lock(
    app: LocksTarget,
) -> None:
    # GIVEN one transfer inside `with LEDGER_LOCK:` and three waiting at that line (the agent
    # only tells the test when they are in place)
    path = "/transfer?gate=g6"
    app.fire(path, 1)
    wait_for(lambda: app.on(path), what="the first transfer")
    app.fire(path, 3)
    try:
        threads = waiting_and_holding(app, path, waiters=3, holders=1)
        lineno = next(t["wait"]["lineno"] for t in threads if t.get("wait"))
        # WHEN py-spy's stacks are read from outside, with the source lines of their frames
        pyspy = PySpySource(app.pid).threads()
        snap = with_source_lines(
            Snapshot(taken_at=pyspy.taken_at, source=SourceKind.PYSPY, threads=pyspy),
            SourceLines(app.pid),
        )
        found = lock_findings(snap, ())
        # THEN the same `with LEDGER_LOCK:` line under three threads is named; no holder
        (finding,) = found
        assert finding.id == "lock-contention:%s:%d" % (APP_FILE, lineno)
        assert finding.title == (
            "3 workers wait on LEDGER_LOCK at locks_app.py:%d (holder unknown)" % lineno
        )
        waiting = {str(t["ident"]) for t in threads if t.get("wait")}
        assert {e.ref for e in finding.evidence} == waiting
    finally:
        app.release("g6")
    wait_for(lambda: not app.on(path), what="the transfers to finish")


# --- other Pythons: the bytecode of 3.8 and 3.13 -------------------------------------------------


@pytest.mark.parametrize("version", ("3.8", "3.13"))
def test_lock_waits_read_on_other_pythons(tmp_path: Path, version: str) -> None:
    # GIVEN the app on this Python, with a LEDGER_LOCK holder and two waiters, and two
    # waiters at x.lock.acquire()
    python = target_python(version)
    with start_locks_app(python, tmp_path / "locks-app.log") as target:
        target.fire("/transfer?gate=v", 1)
        target.fire("/account?gate=v", 1)
        wait_for(lambda: len(target.on("/transfer?gate=v")) == 1, what="the first transfer")
        wait_for(lambda: len(target.on("/account?gate=v")) == 1, what="the first account")
        target.fire("/transfer?gate=v", 2)
        target.fire("/account?gate=v", 2)
        try:
            # WHEN the threads are read
            ledger = waiting_and_holding(target, "/transfer?gate=v", waiters=2, holders=1)
            account = waiting_and_holding(target, "/account?gate=v", waiters=2, holders=0)
            # THEN the lock expressions are read from this version's bytecode
            waits = [t["wait"] for t in ledger if t.get("wait")]
            assert {w["expr"] for w in waits} == {"LEDGER_LOCK"}
            (holder,) = [t for t in ledger if t.get("holds")]
            assert holder["holds"][0]["obj"] == waits[0]["obj"]
            assert {t["wait"]["expr"] for t in account if t.get("wait")} == {"x.lock"}
        finally:
            target.release("v")
