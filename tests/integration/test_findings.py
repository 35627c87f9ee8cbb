"""Issue 12: every finding staged on a real CherryPy process, read the way the inspector reads it
(``open_session`` and its polls, like ``cpinspect dump``; the routes, the sessions' first pages
and the log records of the session), and named by ``find_all`` with its numbers and evidence.
A healthy busy app shows no finding at all: a false alarm is a defect.

Two processes of ``tests/apps/incidents.py`` are shared by the module (the incidents one, each
test staging its own incident and undoing it; a healthy one), plus one ``tests.apps.target``
whose interpreter a regular expression holds.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import httpx
import pytest

from cpinspect.errors import CpinspectError
from cpinspect.findings import find_all
from cpinspect.model import Finding, FindingSeverity, LogRecord, RoutesSnapshot, Snapshot
from cpinspect.snapshots import read_sessions, snapshot_from_update
from cpinspect.sources.open import open_session
from cpinspect.sources.pyspy import PySpySource
from tests.conftest import wait_for
from tests.helpers import BackgroundRequests, RequestLoop, agent_get, spawn_ready


@dataclass
class App:
    port: int
    pid: int
    static: Path
    release: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get("http://127.0.0.1:%d%s" % (self.port, path), timeout=10)

    def pool(self) -> dict:
        from cpinspect.attach.discovery import find_agent

        _, body = agent_get(find_agent(self.pid).connect_path, "/v1/threads")
        return body["pools"][0]


def _start(tmp: Path, stage: str, threads: int) -> Iterator[App]:
    static = tmp / "static"
    release = tmp / "release"
    args = ["-m", "tests.apps.incidents", "--stage", stage, "--threads", str(threads)]
    args += ["--static-dir", str(static), "--release-file", str(release)]
    with spawn_ready(args, tmp / "app.log", "incidents app (%s)" % stage) as m:
        yield App(int(m.group(1)), int(m.group(2)), static, release)


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from _start(tmp_path_factory.mktemp("incidents"), "incidents", 4)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from _start(tmp_path_factory.mktemp("healthy"), "healthy", 8)


def observe(pid: int, polls: int = 3, every: float = 0.4) -> Tuple[Snapshot, List[Snapshot]]:
    """``polls`` snapshots of ``pid`` through one live session: the last, and the earlier ones
    (the history the store keeps), oldest first."""
    opened = open_session(str(pid))
    session = opened.session
    records: List[LogRecord] = []
    taken: List[Snapshot] = []
    try:
        try:
            routes: Optional[RoutesSnapshot] = session.routes()
        except CpinspectError:
            routes = None  # an agent that does not answer (the interpreter stuck)
        sessions, _ = read_sessions(session)
        for i in range(polls):
            if i:
                time.sleep(every)
            update = session.poll()
            records.extend(e for e in update.log if isinstance(e, LogRecord))
            snap = snapshot_from_update(update, routes=routes, sessions=sessions, log=records)
            taken.append(snap)
    finally:
        session.close()
    return taken[-1], taken[:-1]


def one(findings: Sequence[Finding], prefix: str) -> Finding:
    found = [f for f in findings if f.id.startswith(prefix)]
    assert len(found) == 1, [f.id for f in findings]
    return found[0]


# --- configuration and records --------------------------------------------------------------


def test_config_findings_name_the_autoreloader_the_lost_errors_static_mounts_and_a_missing_expose(
    incidents: App,
) -> None:
    # GIVEN the incidents process (CherryPy's defaults: the Autoreloader on, no environment;
    # no screen, no error file) and requests that meet its mistakes
    assert incidents.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert incidents.get("/static/site.css").status_code == 200
    assert incidents.get("/static/app.mjs").headers["content-type"] == "text/plain"
    assert incidents.get("/static/font.woff2").status_code == 200
    for _ in range(2):
        assert incidents.get("/assets/app.js").status_code == 500
    for _ in range(3):
        assert incidents.get("/reports/summary").status_code == 404
    assert incidents.get("/boom").status_code == 500

    # WHEN the inspector reads it and names its findings
    snapshot, history = observe(incidents.pid, polls=1)
    findings = find_all(snapshot, history)
    ids = [f.id for f in findings]

    # THEN the Autoreloader on in a production-looking process is a warning with its fix
    auto = one(findings, "autoreload-on")
    assert auto.severity is FindingSeverity.WARNING and auto.kind == "autoreload-on"
    assert "re-executes the process when a .py file changes" in auto.title
    assert "engine.autoreload.on = False" in auto.fix

    # AND the errors that go nowhere are counted (the 500s' tracebacks), with the records
    nowhere = one(findings, "errors-nowhere")
    caught = re.search(r"caught (\d+) errors? so far", nowhere.title)
    assert caught is not None and int(caught.group(1)) >= 1
    assert nowhere.evidence and all(e.kind == "log" for e in nowhere.evidence)
    assert any("the export failed" in e.label for e in nowhere.evidence)
    assert "log.error_file" in nowhere.fix

    # AND the relative staticdir without a root is critical: requests under it failed
    relative = one(findings, "static-relative:|/assets")
    assert relative.severity is FindingSeverity.CRITICAL
    assert "'assets' is relative" in relative.title and "2 requests ended 500" in relative.title
    assert relative.evidence[0].kind == "static" and relative.evidence[0].ref == "|/assets"
    assert [e.kind for e in relative.evidence[1:]] == ["log", "log"]
    assert "tools.staticdir.root" in relative.fix

    # AND the missing directory nobody asked for is a warning
    missing = one(findings, "static-missing:|/gone")
    assert missing.severity is FindingSeverity.WARNING and "does not exist" in missing.title

    # AND the .mjs and .woff2 files served with the wrong type are named, not the .js or .css
    mjs = one(findings, "static-mime:|/static|.mjs")
    assert "served as text/plain, not text/javascript" in mjs.title
    assert "1 request (e.g. /static/app.mjs)" in mjs.title
    assert any("/static/app.mjs → 200 (text/plain)" in e.label for e in mjs.evidence)
    woff2 = one(findings, "static-mime:|/static|.woff2")
    assert "served as application/octet-stream, not font/woff2" in woff2.title
    assert not [i for i in ids if i.endswith((".js", ".css"))]

    # AND the 404s on the unexposed method say to expose it
    expose = one(findings, "forgotten-expose:|/reports/summary")
    assert expose.title == (
        "GET /reports/summary ended 404 ×3: Reports.summary exists but is not exposed — "
        "add @cherrypy.expose to Reports.summary"
    )
    assert expose.evidence[0].kind == "route" and expose.evidence[0].ref == "|/reports/summary"
    assert len([e for e in expose.evidence if e.kind == "log"]) == 3

    # AND nothing about threads: the pool is idle
    assert not [i for i in ids if i.startswith(("pool-", "slow-", "queue-", "socket-"))]
    # AND the order is most severe first
    ranks = [0 if f.severity is FindingSeverity.CRITICAL else 1 for f in findings]
    assert ranks == sorted(ranks)


# --- threads --------------------------------------------------------------------------------


def _idle(app: App) -> Optional[bool]:
    pool = app.pool()
    return True if pool["busy"] == 0 and pool["queued"] == 0 else None


def test_a_starved_pool_is_named_by_its_route_and_frame_and_said_to_wait(incidents: App) -> None:
    # GIVEN 6 requests to an export that waits on a database that never answers, 4 workers
    if incidents.release.exists():
        incidents.release.unlink()
    BackgroundRequests(incidents.port, "/reports/export?seconds=40", 6, timeout=60)
    try:
        wait_for(
            lambda: (lambda p: p["busy"] == 4 and p["queued"] == 2)(incidents.pool()),
            timeout=20,
            what="4 busy workers and 2 queued",
        )
        # WHEN the inspector polls it three times (the history tells waiting from spinning)
        snapshot, history = observe(incidents.pid, polls=3, every=0.5)
        findings = find_all(snapshot, history)
    finally:
        incidents.release.touch()
        wait_for(lambda: _idle(incidents), timeout=20, what="the pool idle again")
        incidents.release.unlink()

    # THEN the pool is starved: 4 of 4 workers in the export, at fetch_all, waiting on I/O
    starved = one(findings, "pool-starvation:127.0.0.1:%d" % incidents.port)
    assert starved.severity is FindingSeverity.CRITICAL and starved.kind == "pool-starvation"
    assert re.match(
        r"4 of 4 workers are in GET /reports/export at incidents\.py:\d+ fetch_all, "
        r"waiting on I/O \(\d+ % of a core each\); 2 queued — the pool is starved$",
        starved.title,
    ), starved.title
    # AND each busy worker is evidence, labelled with its name, request, age and frame
    assert len(starved.evidence) == 4
    for evidence in starved.evidence:
        assert evidence.kind == "thread" and evidence.ref.isdigit()
        assert re.match(
            r"CP Server Thread-\d+  GET /reports/export\?seconds=40  [\d.]+ m?s  "
            r"incidents\.py:\d+ fetch_all$",
            evidence.label,
        ), evidence.label
    assert "timeout" in starved.fix
    assert any("CPU over" in d for d in starved.details)


def test_a_pool_starved_by_cpu_bound_handlers_is_said_to_spin(incidents: App) -> None:
    # GIVEN 6 requests to a report computed in pure Python, 4 workers
    BackgroundRequests(incidents.port, "/reports/totals?seconds=40", 6, timeout=60)
    try:
        wait_for(
            lambda: (lambda p: p["busy"] == 4 and p["queued"] == 2)(incidents.pool()),
            timeout=20,
            what="4 busy workers and 2 queued",
        )
        # WHEN the inspector polls it three times (again, up to 3 times, while the shared
        # machine gives the process too little CPU to tell: spinners get < 1/n of a core)
        for _ in range(3):
            snapshot, history = observe(incidents.pid, polls=3, every=0.7)
            findings = find_all(snapshot, history)
            if any("spinning" in f.title for f in findings):
                break
    finally:
        incidents.release.touch()
        wait_for(lambda: _idle(incidents), timeout=20, what="the pool idle again")
        incidents.release.unlink()

    # THEN the starvation says they spin (sharing the GIL), at crunch, and the fix says why
    starved = one(findings, "pool-starvation:127.0.0.1:%d" % incidents.port)
    assert re.match(
        r"4 of 4 workers are in GET /reports/totals at incidents\.py:\d+ crunch, spinning on "
        r"the CPU \(\d+ % of a core (each|together: they take turns holding the GIL)\); "
        r"2 queued — the pool is starved$",
        starved.title,
    ), starved.title
    assert "GIL" in starved.fix


def test_slow_clients_holding_workers_while_reading(incidents: App) -> None:
    # GIVEN 3 clients that sent half a request and then nothing, on a pool of 4
    clients = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", incidents.port), timeout=10)
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
        clients.append(s)
    try:
        wait_for(lambda: incidents.pool()["busy"] == 3 or None, timeout=10, what="3 readers")
        time.sleep(2.2)  # past the 2 s a read may take before its client is slow
        # WHEN the inspector looks
        snapshot, history = observe(incidents.pid, polls=1)
        findings = find_all(snapshot, history)
    finally:
        for s in clients:
            s.close()

    # THEN three slow clients hold half the pool or more: critical, with the fix
    slow = one(findings, "slow-clients:127.0.0.1:%d" % incidents.port)
    assert slow.severity is FindingSeverity.CRITICAL
    assert re.match(
        r"3 of 4 workers held \d+–\d+ s by clients still sending their request — half the "
        r"pool or more$",
        slow.title,
    ), slow.title
    assert [e.kind for e in slow.evidence] == ["thread"] * 3
    assert all("GET /fast" in e.label for e in slow.evidence)
    assert "nginx" in slow.fix and "server.socket_timeout" in slow.fix
    # AND it is not called a starved pool
    assert not [f for f in findings if f.id.startswith("pool-starvation")]


REGEX = "/regex?n=31"


def test_a_stuck_interpreter_names_the_gil_holder_its_request_and_the_regex(
    spawn_target,
) -> None:
    # GIVEN an app whose handler holds the GIL in a catastrophic regular expression
    target = spawn_target("--threads", "4")
    BackgroundRequests(target.port, REGEX, 1)
    spy = PySpySource(target.pid, requests=False)
    try:
        wait_for(
            lambda: (
                any(
                    t.owns_gil and t.top_app_frame and t.top_app_frame.function == "regex"
                    for t in spy.threads().threads
                )
                or None
            ),
            timeout=15,
            interval=0.1,
            what="the regex holding the GIL",
        )
    finally:
        spy.close()
    # AND 3 connections the server cannot accept (its acceptor waits for the GIL too)
    waiting = [socket.create_connection(("127.0.0.1", target.port), timeout=5) for _ in range(3)]
    try:
        # WHEN the inspector attaches and polls three times, until the agent has been silent
        # for its timeout (1 s; polls shown from py-spy's readings come back without waiting
        # for the agent, so three at 0.2 s would end before it counts as stuck, not slow)
        snapshot, history = observe(target.pid, polls=3, every=0.7)
        findings = find_all(snapshot, history)
    finally:
        for s in waiting:
            s.close()

    # THEN the interpreter is stuck, the holder, its request and the C-level frame named
    stuck = one(findings, "interpreter-stuck")
    assert stuck.severity is FindingSeverity.CRITICAL
    assert re.match(
        r"the interpreter is stuck: CP Server Thread-\d+ holds the GIL in a regular expression "
        r"at (re\.py|__init__\.py):\d+ \w+, serving GET /regex \(.*regex.*\); no other thread "
        r"runs and the agent cannot answer$",
        stuck.title,
    ), stuck.title
    assert stuck.evidence[0].kind == "thread"
    assert ("process", str(target.pid)) in [(e.kind, e.ref) for e in stuck.evidence]
    assert "subprocess with a timeout" in stuck.fix
    # AND the connections waiting in the kernel's accept queue are seen from outside
    queue = one(findings, "socket-queue:127.0.0.1:%d" % target.port)
    assert re.match(
        r"3 connections wait in the kernel's accept queue of 127\.0\.0\.1:%d \(room for 64\) "
        r"for ≥ [\d.]+ m?s \(seen in 3 polls\)$" % target.port,
        queue.title,
    ), queue.title


# --- no false alarm -------------------------------------------------------------------------


def test_a_pool_too_small_for_its_load_is_named_by_its_queue(tmp_path: Path) -> None:
    # GIVEN 2 workers and 8 clients asking, one request after another, for a page that takes
    # about half a second: the workers keep finishing requests, and connections keep waiting
    with contextlib.contextmanager(_start)(tmp_path, "healthy", 2) as app:
        loops = [
            RequestLoop(app.port, "/reports/export?seconds=0.3", max_seconds=30) for _ in range(8)
        ]
        try:
            wait_for(
                lambda: (
                    (sum(loop.served for loop in loops) > 8 and app.pool()["queued"] > 0) or None
                ),
                timeout=20,
                what="requests served and connections queued",
            )
            # WHEN the inspector polls it for a few seconds
            snapshot, history = observe(app.pid, polls=6, every=0.5)
            served = sum(loop.served for loop in loops)
        finally:
            for loop in loops:
                loop.stop()
        findings = find_all(snapshot, history)
    # THEN the queue is named, with how long it has lasted, and the pool said to be too small;
    # it is not called starved (the workers turn over), and requests were really served
    waiting = one(findings, "queue-wait:127.0.0.1:%d" % app.port)
    assert re.match(
        r"\d+ connections? queued for ≥ [\d.]+ m?s \(seen in \d+ polls\) while all 2 workers "
        r"serve short requests — the pool is too small for the load$",
        waiting.title,
    ), waiting.title
    assert "server.thread_pool (2 now)" in waiting.fix
    assert not [f for f in findings if f.kind == "pool-starvation"], [f.id for f in findings]
    assert served > 8


def test_ram_sessions_while_another_process_serves_the_same_app(tmp_path: Path) -> None:
    # GIVEN two processes of the same app, each keeping its sessions in RAM (what two workers
    # behind a load balancer, or a second copy started by mistake, look like)
    args = ["-m", "tests.apps.sessions_app", "ram"]
    with spawn_ready(args, tmp_path / "a.log", "sessions app A") as a, spawn_ready(
        args, tmp_path / "b.log", "sessions app B"
    ) as b:
        pid_a, pid_b = int(a.group(2)), int(b.group(2))
        # WHEN the inspector looks at the first
        snapshot, history = observe(pid_a, polls=1)
    # THEN the sessions are said to be lost between them, naming the other process and why
    ram = one(find_all(snapshot, history), "sessions-ram-not-shared:")
    assert ram.severity is FindingSeverity.CRITICAL
    assert "keeps sessions in RAM while" in ram.title and str(pid_b) in ram.title
    assert "runs the same command line" in ram.title
    assert ("process", str(pid_b)) in [(e.kind, e.ref) for e in ram.evidence]
    assert "storage_class" in ram.fix


def test_a_healthy_busy_app_shows_no_finding(healthy: App) -> None:
    # GIVEN a well-configured app under load: fast pages and static files, one after another
    for path in ("/static/app.js", "/static/site.css", "/reports/", "/fast"):
        assert healthy.get(path).status_code == 200
    loops = [RequestLoop(healthy.port, p, max_seconds=20) for p in ("/fast", "/static/app.js")]
    try:
        wait_for(lambda: all(loop.served > 20 for loop in loops) or None, what="load running")
        # WHEN the inspector polls it like the TUI does
        snapshot, history = observe(healthy.pid, polls=4, every=0.3)
        served = [loop.served for loop in loops]
    finally:
        for loop in loops:
            loop.stop()

    # THEN there is nothing to report, and the load was real
    assert find_all(snapshot, history) == ()
    assert all(n > 20 for n in served)
    assert snapshot.threads is not None and snapshot.threads.requests_served
    assert snapshot.routes is not None and snapshot.log
    assert not [loop.failures for loop in loops if loop.failures]


def test_the_idle_demo_shows_only_its_staged_static_mistake(tmp_path: Path) -> None:
    # GIVEN the demo shop without its load generator, answering a few fast pages
    with spawn_ready(
        ["-m", "cpinspect.demo.app", "--port", "0", "--threads", "8"], tmp_path / "demo.log", "demo"
    ) as m:
        port, pid = int(m.group(1)), int(m.group(2))
        for path in ("/", "/products", "/health"):
            assert httpx.get("http://127.0.0.1:%d%s" % (port, path), timeout=10).status_code == 200
        # WHEN the inspector looks
        snapshot, history = observe(pid, polls=2)
    # THEN the one finding is the mistake the demo stages on purpose (a relative staticdir and
    # no root: see cpinspect/demo/app.py), a warning while nobody asked for a static file.
    # (Left out: RAM sessions "not shared" when another helper's demo runs the same command
    # line on this machine: the peers are real processes then.)
    found = [f for f in find_all(snapshot, history) if f.id != "sessions-ram-not-shared:"]
    assert [(f.id, f.severity) for f in found] == [
        ("static-relative:|/static", FindingSeverity.WARNING)
    ]
