"""/v1/log on a real CherryPy process: what the agent's log ring captures, and the cursor over it.

The app (``tests/apps/log_app.py``) logs in every way CherryPy does; each test finds its own
records by a marker it sent, so the tests share one process where they can.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest

from tests.conftest import wait_for
from tests.helpers import agent_get, run_cli, spawn_ready


class LogApp:
    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self._socket: Optional[str] = None

    def socket_path(self) -> str:
        if self._socket is None:
            from cpinspect.attach.discovery import find_agent

            self._socket = find_agent(self.pid).connect_path
        return self._socket

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        return httpx.get("http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout)

    def log(self, query: str = "") -> Dict[str, Any]:
        status, body = agent_get(self.socket_path(), "/v1/log" + query)
        assert status == 200, body
        return body

    def all_records(self) -> List[Dict[str, Any]]:
        """Every record held, following ``more`` (the real cursor loop)."""
        records: List[Dict[str, Any]] = []
        after = 0
        while True:
            page = self.log("?after=%d&limit=5000" % after)
            records += page["records"]
            if not page["more"]:
                return records
            after = page["records"][-1]["seq"]

    def records_with(self, text: str, count: int = 1, access: bool = False) -> List[Dict[str, Any]]:
        """The error-log records (or access records) whose message or traceback holds ``text``
        (waits for ``count`` of them)."""

        def found() -> List[Dict[str, Any]]:
            hits = [
                r
                for r in self.all_records()
                if (text in r["message"] or text in (r["traceback"] or ""))
                and r["logger"].startswith("cherrypy.access") == access
            ]
            return hits if len(hits) >= count else []

        hits = wait_for(found, timeout=10, what="%d record(s) with %r" % (count, text))
        assert isinstance(hits, list)
        return hits


@contextlib.contextmanager
def _spawn(tmp: Path, *args: str) -> Iterator[LogApp]:
    with spawn_ready(["-m", "tests.apps.log_app", *args], tmp / "app.log", "log app") as m:
        yield LogApp(int(m.group(1)), int(m.group(2)))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogApp]:
    with _spawn(tmp_path_factory.mktemp("logapp")) as target:
        yield target


def _marker() -> str:
    return uuid.uuid4().hex[:12]


def _access_for(app: LogApp, path: str) -> Dict[str, Any]:
    hits = app.records_with('"GET %s HTTP/1.1"' % path, access=True)
    assert len(hits) == 1, hits
    return hits[0]


def test_handler_exception_is_one_error_record_with_its_traceback_and_request(app: LogApp) -> None:
    # GIVEN a handler that raises
    marker = _marker()
    # WHEN it is requested
    assert app.get("/boom?marker=" + marker).status_code == 500
    # THEN one ERROR record on the app's logger holds the whole traceback, ending in the error
    (rec,) = app.records_with("handler failed: " + marker)
    assert rec["level"] == "ERROR" and rec["levelno"] == 40
    assert rec["logger"].startswith("cherrypy.error.") and rec["app"] == ""
    tb = rec["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert tb.endswith("ValueError: handler failed: " + marker)
    assert 'log_app.py", line' in tb and "in boom" in tb
    assert "Traceback" not in rec["message"]
    # AND it is tagged with its request and worker thread
    assert rec["request"]["method"] == "GET" and rec["request"]["path"] == "/boom"
    assert rec["request"]["query"] == "marker=" + marker
    assert rec["request"]["started_at"] <= rec["time"]
    assert rec["thread"]["name"].startswith("CP Server Thread-")
    # AND its access record has the 500, the body size and the duration
    access = _access_for(app, "/boom?marker=" + marker)
    assert access["access"]["status"] == 500
    assert access["access"]["size"] > 0
    assert 0 <= access["access"]["duration"] < 10
    assert access["request"]["started_at"] == rec["request"]["started_at"]


def test_cherrypy_log_with_and_without_a_traceback(app: LogApp) -> None:
    # GIVEN cherrypy.log(msg), cherrypy.log(msg, traceback=True) outside any exception
    # (exc_info is the truthy (None, None, None)), and the same inside an except block
    plain, no_exc, caught = _marker(), _marker(), _marker()
    app.get("/say?msg=plain-" + plain)
    app.get("/say_tb?msg=noexc-" + no_exc)
    app.get("/caught?marker=" + caught)
    # THEN the first two have no traceback and keep their level
    (rec,) = app.records_with("plain-" + plain)
    assert rec["traceback"] is None and rec["level"] == "INFO"
    assert rec["message"].endswith("plain-" + plain)
    (rec,) = app.records_with("noexc-" + no_exc)
    assert rec["traceback"] is None
    # AND the third carries the chained traceback: the cause first, the logged error last
    (rec,) = app.records_with("caught it: " + caught)
    assert rec["level"] == "ERROR"
    tb = rec["traceback"]
    assert (
        tb.index("KeyError: 'missing'")
        < tb.index("direct cause")
        < tb.index("ValueError: wrapped: " + caught)
    )
    assert tb.endswith("ValueError: wrapped: " + caught)


def test_a_traceback_inside_the_message_text_stays_one_record(app: LogApp) -> None:
    # GIVEN engine.log(traceback=True), which appends the traceback to the message as text
    marker = _marker()
    app.get("/text_tb?marker=" + marker)
    # THEN one record: the text before the traceback is the message, the block its traceback
    (rec,) = app.records_with("disk on fire: " + marker)
    assert rec["logger"] == "cherrypy.error"
    assert rec["message"].endswith("ENGINE bus saw an error: " + marker)
    assert "Traceback" not in rec["message"]
    assert rec["traceback"].startswith("Traceback (most recent call last):")
    assert rec["traceback"].endswith("OSError: disk on fire: " + marker)
    assert rec["request"]["path"] == "/text_tb"


def test_404_and_http_errors_appear_as_access_records(app: LogApp) -> None:
    # GIVEN a path nobody serves and a handler raising HTTPError(503): no error record either way
    missing = "/nothing-here-" + _marker()
    assert app.get(missing).status_code == 404
    assert app.get("/http_error").status_code == 503
    # THEN their access records carry the status, the size CherryPy sent and a duration
    rec = _access_for(app, missing)
    assert rec["access"]["status"] == 404
    assert rec["access"]["size"] == len(app.get(missing).content)
    assert rec["access"]["duration"] is not None
    assert rec["request"]["path"] == missing
    assert any(
        r["access"] and r["access"]["status"] == 503 and r["request"]["path"] == "/http_error"
        for r in app.all_records()
    )


def test_a_secret_in_a_query_string_never_reaches_a_record(app: LogApp) -> None:
    # GIVEN a request whose query carries a credential (redacted in /v1/threads by its name)
    secret = "TOKEN-" + _marker()
    path = "/nothing-" + _marker()
    assert app.get("%s?token=%s&page=2" % (path, secret)).status_code == 404
    # THEN its access record names the request with the credential replaced, and no record of
    # the whole buffer holds the value
    rec = app.records_with('"GET %s?token=***&page=2 HTTP/1.1"' % path, access=True)[0]
    assert rec["request"]["query"] == "token=***&page=2"
    assert all(secret not in json.dumps(r) for r in app.all_records())


def test_engine_messages_are_captured_outside_any_request(app: LogApp) -> None:
    # GIVEN the agent installed by config before engine.start()
    # THEN the bus's own messages are in the ring, on cherrypy.error, with no request
    (started,) = app.records_with("ENGINE Bus STARTED")
    assert started["logger"] == "cherrypy.error"
    assert started["request"] is None and started["access"] is None
    assert started["app"] is None


def test_records_carry_the_request_identity_threads_shows(app: LogApp) -> None:
    # GIVEN a request that logs, then holds its worker
    marker = _marker()
    done = threading.Event()

    def hold() -> None:
        try:
            app.get("/hold?marker=%s&seconds=20" % marker, timeout=30)
        finally:
            done.set()

    threading.Thread(target=hold, daemon=True).start()
    try:
        # WHEN /v1/threads shows it running
        def running() -> Optional[Dict[str, Any]]:
            _status, body = agent_get(app.socket_path(), "/v1/threads")
            for t in body["threads"]:
                req = t["request"]
                if req and req["path"] == "/hold" and marker in req["query"]:
                    return t
            return None

        thread = wait_for(running, timeout=10, what="the /hold request in /v1/threads")
        assert isinstance(thread, dict)
        (rec,) = app.records_with("holding: " + marker)
    finally:
        app.get("/release")
        done.wait(10)
    # THEN the record joins that thread by (ident, started_at), with the same request
    assert rec["thread"]["ident"] == thread["ident"]
    assert rec["thread"]["name"] == thread["name"]
    shown = thread["request"]
    for key in ("method", "path", "query", "client", "peer", "started_at", "app", "source"):
        assert rec["request"][key] == shown[key], key
    assert rec["request"]["handler"] == shown["handler"] == "Root.hold"


def test_cursor_pages_with_after_limit_more_and_next(app: LogApp) -> None:
    # GIVEN 30 more records
    start = app.log("?limit=1")["latest"]
    marker = _marker()
    app.get("/many?n=30&m=" + marker)
    latest = app.log("?limit=1")["latest"]
    assert latest >= start + 31  # 30 records and the access line
    # WHEN read 10 at a time from where we were
    seen: List[int] = []
    after = start
    pages = 0
    while True:
        page = app.log("?after=%d&limit=10" % after)
        pages += 1
        assert len(page["records"]) <= 10 and page["missed"] == 0
        seen += [r["seq"] for r in page["records"]]
        if not page["more"]:
            break
        assert page["next"] == page["records"][-1]["seq"]
        after = page["next"]
    # THEN every seq comes once, in order, with no gap, and the last page says where to go on
    assert seen[: latest - start] == list(range(start + 1, latest + 1))
    assert pages >= 4
    assert page["next"] == page["latest"]
    # AND a cursor at the end gets nothing, more false
    end = app.log("?after=%d" % page["latest"])
    assert end["more"] is False and end["missed"] == 0
    assert all(r["seq"] > page["latest"] for r in end["records"])


def test_level_filter_keeps_the_cursor_arithmetic(app: LogApp) -> None:
    # GIVEN info and error records
    start = app.log("?limit=1")["latest"]
    marker = _marker()
    app.get("/say?msg=info-%s" % marker)
    app.get("/say?msg=error-%s&level=40" % marker)
    app.get("/say?msg=warn-%s&level=30" % marker)
    app.records_with("warn-" + marker)
    # WHEN read with level=error
    page = app.log("?after=%d&level=error" % start)
    # THEN only ERROR and above come, yet latest still counts everything
    assert page["records"] and all(r["levelno"] >= 40 for r in page["records"])
    assert any(("error-" + marker) in r["message"] for r in page["records"])
    assert not any(("info-" + marker) in r["message"] for r in page["records"])
    assert page["latest"] >= start + 6 and page["missed"] == 0 and page["more"] is False
    warn = app.log("?after=%d&level=WARNING" % start)["records"]
    assert {("warn-" + marker) in r["message"] for r in warn} == {True, False}


def test_level_filter_counts_a_failed_answer_by_its_status(app: LogApp) -> None:
    # GIVEN a 503 and a 404 whose only records are their access lines (CherryPy logs those at
    # INFO: an HTTPError is no traceback), as Salt's rest_cherrypy answers its own 500s
    start = app.log("?limit=1")["latest"]
    marker = _marker()
    assert app.get("/http_error").status_code == 503
    assert app.get("/missing-%s" % marker).status_code == 404
    app.records_with("/missing-" + marker, access=True)
    # WHEN read with level=ERROR and level=WARNING
    errors = app.log("?after=%d&level=ERROR" % start)["records"]
    warnings = app.log("?after=%d&level=WARNING" % start)["records"]
    # THEN the 5xx counts as an error and the 4xx as a warning (analysis.effective_level)
    assert [r["access"]["status"] for r in errors if r["access"]] == [503]
    assert sorted(r["access"]["status"] for r in warnings if r["access"]) == [404, 503]
    # AND `cpinspect logs --level ERROR` prints the 503 (it printed nothing)
    result = run_cli(
        "logs",
        str(app.pid),
        "--level",
        "ERROR",
        "--no-follow",
        "-n",
        "50",
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"503 +GET /http_error ", result.stdout), result.stdout
    assert "/missing-" + marker not in result.stdout


@pytest.mark.parametrize(
    "query, says",
    [
        ("?limit=5001", "limit must be between 1 and 5000"),
        ("?limit=0", "limit must be between 1 and 5000"),
        ("?limit=ten", "limit must be a whole number"),
        ("?after=-3", "after must be a whole number"),
        ("?level=LOUD", "level must be one of DEBUG/INFO/WARNING/ERROR/CRITICAL"),
    ],
)
def test_bad_parameters_get_400_and_one_line(app: LogApp, query: str, says: str) -> None:
    # WHEN /v1/log gets a bad parameter THEN 400 with one line saying what is allowed
    status, body = agent_get(app.socket_path(), "/v1/log" + query)
    assert status == 400
    message = body["error"]["message"]
    assert says in message and "\n" not in message


def test_huge_messages_are_cut_and_counted(app: LogApp) -> None:
    # GIVEN a 100,000-character message
    page = app.log("?limit=1")
    limit = page["max_message"]
    app.get("/huge?n=100000")
    (rec,) = [r for r in app.records_with("x" * 100) if r["request"]["path"] == "/huge"]
    # THEN it is cut to max_message, and the cut counts exactly what went
    assert len(rec["message"]) == limit
    prefix = rec["message"][: rec["message"].index("x")]
    assert rec["cut"] == len(prefix) + 100000 - limit


def test_a_message_that_cannot_be_formatted_never_fails_the_request(app: LogApp) -> None:
    # GIVEN a handler logging an object whose str() raises, and %-args that do not fit
    # WHEN it runs THEN the request still succeeds
    response = app.get("/bad_message")
    assert response.status_code == 200 and response.text == "still fine"
    # AND both records are kept, saying what went wrong, and nothing was dropped
    (bad_text,) = app.records_with("BadText object")
    assert "formatting the message failed: RuntimeError" in bad_text["message"]
    (bad_args,) = app.records_with("'%s and %s'")
    assert "formatting the message failed: TypeError" in bad_args["message"]
    assert app.log("?limit=1")["dropped"] == 0


def test_an_app_mounted_later_whose_loggers_do_not_propagate_is_captured(app: LogApp) -> None:
    # GIVEN an app mounted after the agent, its loggers set not to propagate
    app.get("/mount_late")
    # WHEN the inspector has read once (each read re-checks the mounted apps)
    app.log("?limit=1")
    marker = _marker()
    assert app.get("/late/say?msg=late-" + marker).status_code == 200
    assert app.get("/late/boom").status_code == 500
    # THEN its records arrive, named with its script_name, access records included
    (rec,) = app.records_with("late-" + marker)
    assert rec["app"] == "/late" and rec["logger"].startswith("cherrypy.error.")
    (boom,) = app.records_with("KeyError: 'late-boom'")
    assert boom["app"] == "/late" and boom["request"]["path"] == "/late/boom"
    access = _access_for(app, "/late/boom")
    assert access["app"] == "/late" and access["access"]["status"] == 500


def test_errors_that_go_nowhere_are_named_with_the_fix(app: LogApp) -> None:
    # GIVEN log.screen False, no error file, no other handler (the module's app)
    page = app.log("?limit=1")
    routing = page["routing"]
    assert page["captures_access"] is True  # the default
    # THEN the answer says errors go nowhere, and which config line fixes it
    assert routing["screen"] is False and routing["error_file"] is None
    assert routing["goes_nowhere"] is True
    assert re.fullmatch(r'log\.error_file = "/var/log/[\w.-]+/error\.log"', routing["fix"])
    assert routing["other_handlers"] == []


def test_wrap_around_counts_exactly_what_was_missed(tmp_path: Path) -> None:
    # GIVEN a ring of 20 records (inspector.log_capacity = 20)
    with _spawn(tmp_path, "--capacity", "20") as small:
        page = small.log("?limit=1")
        assert page["capacity"] == 20
        before = page["latest"]
        # WHEN 100 records arrive before the next read
        small.get("/many?n=100")
        page = small.log("?after=%d&limit=5000" % before)
        # THEN the 20 newest are held, and missed counts every one in between, exactly
        seqs = [r["seq"] for r in page["records"]]
        assert seqs == list(range(page["first"], page["latest"] + 1))
        assert len(seqs) == 20
        assert page["missed"] == page["first"] - before - 1
        assert page["missed"] + len(seqs) == page["latest"] - before
        assert page["missed"] >= 80
        # AND a reader starting at 0 is told the same way
        assert small.log("?after=0")["missed"] == page["first"] - 1


def _normalized(path: Path) -> List[str]:
    text = path.read_text(errors="replace")
    text = re.sub(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\]", "[DATE]", text)
    text = re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    return [line for line in text.splitlines() if "ENGINE" not in line]


def test_the_apps_own_log_files_are_unchanged_by_capture(tmp_path: Path) -> None:
    # GIVEN the same app writing error and access files, once with the agent and once without
    contents = {}
    for mode in ("config", "none"):
        run = tmp_path / mode
        run.mkdir()
        error_file, access_file = run / "error.log", run / "access.log"
        args = ["--agent", mode, "--error-file", str(error_file), "--access-file", str(access_file)]
        with _spawn(run, *args) as target:
            # WHEN the same requests arrive
            for path in ("/boom?marker=f", "/say?msg=file-line", "/caught?marker=f", "/nope"):
                target.get(path)
            target.get("/text_tb?marker=f")
            if mode == "config":
                routing = target.log("?limit=1")["routing"]
                # THEN (with the agent) errors go to the file, so nothing is "nowhere"
                assert routing["error_file"] == str(error_file)
                assert routing["access_file"] == str(access_file)
                assert routing["goes_nowhere"] is False and routing["fix"] is None
        contents[mode] = (_normalized(error_file), _normalized(access_file))
    # AND the files hold the same lines either way, tracebacks included
    assert contents["config"] == contents["none"]
    error_lines = contents["none"][0]
    assert any("ValueError: handler failed: f" in line for line in error_lines)
    assert any("raise ValueError" in line for line in error_lines)  # source lines, as always
    assert len(contents["none"][1]) == 5


def test_another_handler_on_the_chain_means_errors_go_somewhere(tmp_path: Path) -> None:
    # GIVEN the app's errors reach a root handler (logging.basicConfig)
    with _spawn(tmp_path, "--root-handler") as target:
        routing = target.log("?limit=1")["routing"]
        # THEN it is named, and errors do not go nowhere
        assert routing["goes_nowhere"] is False
        assert any(h.startswith("root: StreamHandler") for h in routing["other_handlers"])


def test_capture_attaches_last_keeps_levels_and_detaches_cleanly() -> None:
    # GIVEN CherryPy's loggers in this process as the app configured them (no agent process:
    # the handler's installation itself is what is checked here)
    import cherrypy  # noqa: F401 - creates the loggers

    from cpinspect.agent.logcapture import LogCapture
    from cpinspect.agent.tracking import RequestTracker

    names = ("cherrypy.error", "cherrypy.access")
    before = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    capture = LogCapture(RequestTracker(), 50)
    # WHEN attached
    capture.attach()
    try:
        for n in names:
            logger = logging.getLogger(n)
            # THEN ours comes after the app's handlers (the access loggers' own on those), and
            # no level changed
            ours = capture.access_handler if n == "cherrypy.access" else capture.handler
            assert logger.handlers == [*before[n][1], ours]
            assert logger.level == before[n][0]
        logging.getLogger("cherrypy.error").debug("below INFO: dropped by the logger, as before")
        assert len(capture.ring) == 0
    finally:
        capture.detach()
    # AND detached, the loggers are as found
    assert {
        n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names
    } == before


def test_the_ring_bounds_its_text_too_and_counts_what_went() -> None:
    # GIVEN a ring of 1,000 records but room for 10,000 characters of text (in this process:
    # the budget is a constructor argument, too big to fill through a real app in a test)
    from cpinspect.agent.logcapture import LogRing

    ring = LogRing(1000, max_total_chars=10000)
    # WHEN 100 records of 1,000 characters arrive
    for i in range(100):
        ring.append(
            (float(i), 20, "INFO", "cherrypy.error", "m" * 1000, 0, None, 1, "t", None, "", None)
        )
    # THEN only the newest 10 are held, within the budget, with consecutive seqs ending at 100
    items, first, latest = ring.copy()
    assert (first, latest, len(items)) == (91, 100, 10)
    assert [it[0] for it in items] == [float(i) for i in range(90, 100)]
    assert ring.chars == 10000


def test_a_cursor_copies_only_what_it_has_not_seen() -> None:
    # GIVEN a ring of 10 records that has taken 25 (seqs 16-25 held; in this process)
    from cpinspect.agent.logcapture import LogRing

    ring = LogRing(10)
    for i in range(1, 26):
        ring.append((float(i), 20, "INFO", "cherrypy.error", "m%d" % i, 0, None, 1, "t"))
    # WHEN copied after a seq still held, after the newest, and after one already gone
    tail, tail_first, latest = ring.copy(20)
    none, _, latest2 = ring.copy(25)
    wrapped, wrapped_first, _ = ring.copy(3)
    # THEN the first copy starts at the next seq, the second is empty, the third is all held
    assert (tail_first, latest, [it[0] for it in tail]) == (21, 25, [21.0, 22.0, 23.0, 24.0, 25.0])
    assert (none, latest2) == ([], 25)
    assert (wrapped_first, len(wrapped), wrapped[0][0]) == (16, 10, 16.0)
    assert ring.copy()[1:] == (16, 25)


def test_a_fork_while_another_thread_holds_the_ring_lock_does_not_hang_the_child() -> None:
    # GIVEN a ring whose lock another thread holds (as a worker logging at the moment a
    # daemonizer forks) -- in this process: fork() is the event under test
    import os
    import signal
    import time

    from cpinspect.agent.logcapture import LogRing

    ring = LogRing(100)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with ring._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(5)
    # WHEN the process forks and the child logs
    pid = os.fork()
    if pid == 0:  # the child: append once, exit 0 (a hang is killed by the parent below)
        try:
            ring.append(
                (0.0, 20, "INFO", "cherrypy.error", "child", 0, None, 1, "t", None, "", None)
            )
        finally:
            os._exit(0)
    release.set()
    t.join(5)
    # THEN the child finished on its own, promptly
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child hung on the ring's lock")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_logging_reconfiguration_that_drops_the_handler_is_undone_and_said(app: LogApp) -> None:
    # GIVEN the app replaces cherrypy.error's handler list (as logging.config.dictConfig does)
    assert app.get("/reset_logging").text == "reset"
    # WHEN the inspector reads
    page = app.log("?limit=1")
    # THEN the answer says capture was interrupted, and records are captured again
    assert any("capture handler was removed" in e for e in page["errors"])
    marker = _marker()
    app.get("/say?msg=after-reset-" + marker)
    app.records_with("after-reset-" + marker)


def test_access_records_can_be_left_out(tmp_path: Path) -> None:
    # GIVEN an app installing the agent with inspector.log_access = False
    with _spawn(tmp_path, "--no-access") as target:
        marker = _marker()
        # WHEN it logs and serves a 404 and a 500
        target.get("/say?msg=no-access-" + marker)
        target.get("/nothing-" + marker)
        target.get("/boom?marker=" + marker)
        # THEN its error records are captured, tagged with their requests, and no access record
        (rec,) = target.records_with("no-access-" + marker)
        assert rec["request"]["path"] == "/say"
        target.records_with("handler failed: " + marker)
        page = target.log("?limit=5000")
        assert page["captures_access"] is False
        assert not [r for r in page["records"] if r["logger"].startswith("cherrypy.access")]


def test_the_ring_wraps_and_resizes_keeping_the_newest_with_consecutive_seqs() -> None:
    # GIVEN a ring of 10 records (in this process: the ring's slot arithmetic is under test;
    # resizing is what inspector.log_capacity does to a running agent)
    from cpinspect.agent.logcapture import LogRing

    ring = LogRing(10)

    def add(n: int) -> None:
        ring.append((float(n), 20, "INFO", "cherrypy.error", "m%d" % n, 0, None, 1, "t"))

    def held() -> List[float]:
        items, first, latest = ring.copy()
        assert latest - first + 1 == len(items)  # consecutive seqs, the newest last
        assert [it[0] for it in items] == [float(s) for s in range(first, latest + 1)]
        return [it[0] for it in items]

    # WHEN 25 records arrive (the ring wraps twice and a half)
    for n in range(1, 26):
        add(n)
    # THEN the newest 10 are held, in order
    assert held() == [float(n) for n in range(16, 26)]
    # WHEN it shrinks to 4, then grows to 8 and 3 more arrive
    ring.resize(4)
    assert held() == [22.0, 23.0, 24.0, 25.0]
    ring.resize(8)
    for n in range(26, 29):
        add(n)
    # THEN nothing older than what was kept comes back, and the text count matches
    assert held() == [float(n) for n in range(22, 29)]
    assert ring.chars == sum(len("m%d" % n) for n in range(22, 29))
    # WHEN 20 more arrive at capacity 8: the newest 8
    for n in range(29, 49):
        add(n)
    assert held() == [float(n) for n in range(41, 49)]
    assert len(ring) == 8


def test_an_access_record_s_duration_counts_the_body_sent_after_the_access_line(
    app: LogApp,
) -> None:
    # GIVEN a handler whose body goes out over ~1 s after it returned: CherryPy writes the
    # access line when the handler returns, before the server sends the body (a file
    # served by staticdir, cherrymusic's 8 s download, showed 0.0 s)
    marker = _marker()
    r = app.get("/stream?seconds=1&marker=" + marker, timeout=30)
    assert r.status_code == 200 and r.text.count(marker) == 10
    # WHEN its access record is read, after the answer ended
    rec = _access_for(app, "/stream?seconds=1&marker=" + marker)
    # THEN its duration is the request's whole time, the body included
    assert rec["access"]["duration"] >= 0.9, rec["access"]


def test_an_access_record_read_again_keeps_its_duration_after_many_requests(app: LogApp) -> None:
    from cpinspect.agent.tracking import ENDS_KEPT

    # GIVEN an access record read once with its request's whole time (the body included)
    marker = _marker()
    path = "/stream?seconds=1&marker=" + marker
    assert app.get(path, timeout=30).status_code == 200
    first = _access_for(app, path)["access"]["duration"]
    assert first is not None and first >= 0.9, first
    # WHEN more requests than the tracker keeps ends of are served after it (a reader coming
    # later, a snapshot or `logs`, was then given the time to the access line: 0.0 s)
    with httpx.Client(base_url="http://127.0.0.1:%d" % app.port, timeout=10) as client:
        for _ in range(ENDS_KEPT + 100):
            assert client.get("/").status_code == 200
    # THEN the record read again says the same duration
    assert _access_for(app, path)["access"]["duration"] == first


def test_an_access_record_read_while_its_body_still_goes_out_has_no_duration_yet(
    app: LogApp,
) -> None:
    from tests.helpers import BackgroundRequests

    # GIVEN a response whose body takes ~8 s to go out, its access line already logged
    marker = _marker()
    path = "/stream?seconds=8&marker=" + marker
    pending = BackgroundRequests(app.port, path, 1, timeout=60)
    # WHEN its access record is read while the body is still being sent
    rec = _access_for(app, path)
    # THEN it says no duration (not the 0.0 s to the access line), and the status it has
    assert pending.results == [], "the body was sent before the record was read"
    assert rec["access"]["duration"] is None, rec["access"]
    assert rec["access"]["status"] == 200
    for t in pending.threads:
        t.join(30)


def test_the_app_s_own_loggers_warnings_and_errors_are_captured_with_their_request(
    tmp_path: Path,
) -> None:
    # GIVEN an app whose own logger ("shop.payments", not under CherryPy's) reaches a root
    # handler (salt-api logs its 500s' causes so, and CherryPy's loggers never see them)
    with _spawn(tmp_path, "--root-handler") as target:
        error, info, cp = _marker(), _marker(), _marker()
        assert target.get("/app_logger?msg=%s&level=40" % error).status_code == 200
        assert target.get("/app_logger?msg=%s&level=20" % info).status_code == 200
        assert target.get("/say?msg=%s&level=40" % cp).status_code == 200
        # WHEN the ring is read
        (record,) = target.records_with(error)
        # THEN the error is one record of that logger, tagged with its request
        assert record["logger"] == "shop.payments" and record["level"] == "ERROR"
        assert record["request"] is not None and record["request"]["path"] == "/app_logger"
        # AND an INFO record of that logger is not kept (warnings and up only)
        mine = [r for r in target.all_records() if r["logger"] == "shop.payments"]
        assert not [r for r in mine if info in r["message"]]
        # AND CherryPy's own records, which reach the root logger too, are not kept twice
        assert len(target.records_with(cp)) == 1
        # AND errors going to the root handler still go somewhere (ours is not counted)
        routing = target.log("?limit=1")["routing"]
        assert not any("AppLoggerHandler" in h for h in routing["other_handlers"])


def test_without_a_root_handler_the_app_s_loggers_are_left_to_logging_s_last_resort(
    tmp_path: Path,
) -> None:
    # GIVEN an app whose root logger has no handler: logging prints an unhandled warning to
    # stderr itself (lastResort), and a handler of ours there would silence that
    with _spawn(tmp_path) as target:
        tag = _marker()
        assert target.get("/app_logger?msg=%s&level=40" % tag).status_code == 200
        target.log("?limit=1")  # a read, which re-checks the root logger
        assert target.get("/app_logger?msg=%s-2&level=40" % tag).status_code == 200
        # THEN the app's stderr still has both, as without the agent
        wait_for(
            lambda: (tmp_path / "app.log").read_text().count(tag) >= 2,
            what="lastResort's lines on the app's stderr",
        )
        # AND the ring holds none of them (nothing of ours stood on the root logger)
        assert not [r for r in target.all_records() if r["logger"] == "shop.payments"]
