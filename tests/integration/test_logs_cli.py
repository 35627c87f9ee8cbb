"""`cpinspect logs PID` as a user runs it, on real CherryPy processes (``tests/apps/log_app.py``):
following new records with ``--json`` lines, tracebacks whole under their record, the agent's
ring and the error file shown once, no agent at all (the log files the process has open), and
bad input, Ctrl-C and the target exiting as one line and an exit code."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from cpinspect.errors import NoSuchProcess, TargetGone, UsageError
from tests.conftest import ROOT, wait_for
from tests.helpers import CliProcess, run_cli, spawn_ready


class App:
    def __init__(self, port: int, pid: int, proc_dir: Path) -> None:
        self.port = port
        self.pid = pid
        self.dir = proc_dir

    def get(self, path: str) -> int:
        return httpx.get("http://127.0.0.1:%d%s" % (self.port, path), timeout=10).status_code


@contextlib.contextmanager
def log_app(tmp: Path, *args: str) -> Iterator[App]:
    with spawn_ready(["-m", "tests.apps.log_app", *args], tmp / "app.out", "log app") as m:
        yield App(int(m.group(1)), int(m.group(2)), tmp)


class Follower(CliProcess):
    """``cpinspect logs ARGS`` running, its stdout lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        super().__init__("logs", *args)

    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_record(self, pred: Any, what: str) -> Dict[str, Any]:
        def found() -> Any:
            return next((r for r in self.records() if pred(r)), None)

        record = wait_for(found, timeout=15, what=what)
        assert isinstance(record, dict)
        return record

    def finish(self, timeout: float = 15) -> subprocess.CompletedProcess:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        return subprocess.CompletedProcess(self.proc.args, code, "\n".join(self.lines), err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def marker() -> str:
    return uuid.uuid4().hex[:10]


def assert_one_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, stderr)


def test_follows_new_records_as_json_lines_until_the_target_exits(tmp_path: Path) -> None:
    # GIVEN a CherryPy app with the agent, writing an error file too
    error_file = tmp_path / "error.log"
    with log_app(tmp_path, "--error-file", str(error_file)) as app:
        # AND `cpinspect logs PID --json` following it (one past record first: it is running)
        follower = Follower(str(app.pid), "--json", "-n", "1", "--interval", "0.2")
        try:
            wait_for(lambda: follower.lines, timeout=15, what="the first past record")
            # WHEN a handler fails and a 404 is answered
            tag = marker()
            assert app.get("/boom?marker=" + tag) == 500
            assert app.get("/nowhere-" + tag) == 404
            # THEN the error arrives as one JSON line, its traceback whole, tagged with its request
            error = follower.wait_record(
                lambda r: "handler failed: " + tag in (r["traceback"] or ""), "the error"
            )
            assert error["level"] == "ERROR" and error["origin"] == "buffer"
            assert error["traceback"].startswith("Traceback (most recent call last):")
            assert error["request"]["path"] == "/boom" and error["request"]["method"] == "GET"
            assert error["thread_name"].startswith("CP Server Thread-")
            # AND the access records with their status
            denied = follower.wait_record(
                lambda r: r["access"] and r["request"]["path"] == "/nowhere-" + tag, "the 404"
            )
            assert denied["status"] == 404
            failed = follower.wait_record(
                lambda r: r["access"] and r["request"]["path"] == "/boom", "the 500"
            )
            assert failed["status"] == 500
            # AND the error, also written to the error file, is printed once
            assert error_file.read_text().count("handler failed: " + tag) == 1
            same = [
                r for r in follower.records() if "handler failed: " + tag in (r["traceback"] or "")
            ]
            assert len(same) == 1
        except BaseException:
            follower.stop()
            raise
    # WHEN the target exits (the context ended: terminated)
    # THEN the follower says so in one line and exits with the target-gone code
    try:
        result = follower.finish()
    finally:
        follower.stop()
    assert result.returncode == TargetGone.exit_code, result
    assert_one_line(result.stderr, "exited")


def test_without_the_agent_it_reads_the_log_files_the_process_has_open(tmp_path: Path) -> None:
    # GIVEN an app with no agent, writing CherryPy's error and access files
    error_file, access_file = tmp_path / "site-error.log", tmp_path / "site-access.log"
    with log_app(
        tmp_path,
        "--agent",
        "none",
        "--error-file",
        str(error_file),
        "--access-file",
        str(access_file),
    ) as app:
        tag = marker()
        assert app.get("/boom?marker=" + tag) == 500
        wait_for(lambda: tag in error_file.read_text(), what="the error in the file")
        # WHEN `logs` prints the past records
        result = run_cli("logs", str(app.pid), "-n", "20", "--no-follow", "--level", "WARNING")
    # THEN it found the files among the process's open files and says it follows them
    assert result.returncode == 0, result.stderr
    assert "no agent in pid %d: following" % app.pid in result.stderr
    assert str(error_file) in result.stderr and str(access_file) in result.stderr
    # AND the error is one record: its line, then the traceback indented under it
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "ValueError: handler failed: " + tag in line)
    assert " ERROR " in lines[head] and "(file)" in lines[head]
    assert lines[head + 1] == "    Traceback (most recent call last):"
    assert "    ValueError: handler failed: " + tag in lines[head + 2 :]
    # AND the 500 answer (a 5xx counts as an error) from the access file, INFO lines left out
    assert any(" 500 " in line and "/boom?marker=" + tag in line for line in lines)
    assert not any(" INFO " in line for line in lines)


def test_ctrl_c_ends_it_with_one_line(tmp_path: Path) -> None:
    with log_app(tmp_path) as app:
        follower = Follower(str(app.pid), "-n", "1", "--interval", "0.2")
        try:
            wait_for(lambda: follower.lines, timeout=15, what="the first past record")
            follower.proc.send_signal(signal.SIGINT)
            result = follower.finish()
        finally:
            follower.stop()
    assert result.returncode == 130
    assert_one_line(result.stderr, "interrupted")


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["999999"], NoSuchProcess.exit_code, ["999999"]),
        (["not-a-pid"], UsageError.exit_code, ["not-a-pid"]),
        (["1", "-n", "-3"], UsageError.exit_code, ["-n"]),
        (["1", "--level", "LOUD"], 2, ["LOUD"]),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    args: List[str], code: int, words: List[str]
) -> None:
    result = run_cli("logs", *args, timeout=30)
    assert result.returncode == code, result
    if code == 2 and "--level" in args:
        assert "invalid choice" in result.stderr and "Traceback" not in result.stderr
    else:
        assert_one_line(result.stderr, *words)


def test_a_snapshot_and_dump_carry_the_recent_records(tmp_path: Path) -> None:
    # GIVEN an app with the agent whose handler just failed
    with log_app(tmp_path) as app:
        tag = marker()
        assert app.get("/boom?marker=" + tag) == 500
        # WHEN a snapshot is taken, and a JSON dump
        shot = run_cli("snapshot", str(app.pid), "-o", str(tmp_path), "--no-routes")
        dump = run_cli("dump", str(app.pid), "--json")
    assert shot.returncode == 0, shot.stderr
    json_path, txt_path = (Path(p) for p in shot.stdout.splitlines())
    # THEN the file holds the error record with its traceback and request, read at capture
    from cpinspect.snapshots import read_snapshots

    (snap,) = read_snapshots(json_path)
    (error,) = [r for r in snap.log if "handler failed: " + tag in (r.traceback or "")]
    assert error.request is not None and error.request.path == "/boom"
    assert snap.log_state is not None and snap.log_state.buffer
    # AND the report's log section shows it whole
    report = txt_path.read_text()
    section = report[report.index("Log (") :]
    assert "ValueError: handler failed: " + tag in section
    assert "    Traceback (most recent call last):" in section
    # AND dump --json has it too
    assert dump.returncode == 0, dump.stderr
    doc = json.loads(dump.stdout)
    logged = doc["snapshots"][0]["log"]
    assert any("handler failed: " + tag in (r["traceback"] or "") for r in logged)


def test_a_process_read_by_py_spy_alone_still_shows_its_log_files(tmp_path: Path) -> None:
    from cpinspect.model import LogOrigin, LogRecord
    from cpinspect.sources.live import PySpySession
    from cpinspect.sources.open import pyspy_for

    # GIVEN an app with no agent writing an error file, inspected as `attach` does (py-spy)
    error_file = tmp_path / "error.log"
    with log_app(tmp_path, "--agent", "none", "--error-file", str(error_file)) as app:
        spy = pyspy_for(app.pid)
        if spy is None:
            pytest.skip("py-spy cannot read processes here")
        session = PySpySession(spy, app.pid)
        try:
            session.poll()
            # WHEN a handler fails
            tag = marker()
            assert app.get("/boom?marker=" + tag) == 500

            # THEN the polls bring its record from the file, traceback whole
            def arrived() -> Any:
                update = session.poll()
                return [
                    e for e in update.log if isinstance(e, LogRecord) and tag in (e.traceback or "")
                ]

            (record,) = wait_for(arrived, timeout=15, what="the file's record")  # type: ignore[misc]
            assert record.origin is LogOrigin.ERROR_FILE and record.level == "ERROR"
            state = session.poll().log_state
            assert state is not None
            assert [(f.kind, f.path, f.found_by) for f in state.files] == [
                ("error", str(error_file), "fd")
            ]
        finally:
            session.close()


def test_logs_never_loads_textual(tmp_path: Path) -> None:
    # GIVEN an app with the agent  WHEN `logs` prints its records in a fresh interpreter
    with log_app(tmp_path) as app:
        code = (
            "import sys; from cpinspect.cli import main; "
            "rc = main(['logs', '%d', '-n', '3', '--no-follow']); "
            "print('RC', rc, sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))"
            % app.pid
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(ROOT)
        )
    # THEN it printed them and no Textual module was imported
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "RC 0 []"
    assert "ENGINE" in done.stdout


SECRET_COOKIE = "session_id=c00c1e5ec4e7a1f0b1e2"
SECRET_AUTH = "Basic YWRtaW46czNjcmV0cHc="


def fail_with_secret_headers(app: App, tag: str) -> None:
    """A 500 whose request carried a session cookie and credentials: CherryPy's
    ``tools.log_headers`` (on by default) writes every request header to the error log."""
    r = httpx.get(
        "http://127.0.0.1:%d/boom?marker=%s" % (app.port, tag),
        headers={"Cookie": SECRET_COOKIE, "Authorization": SECRET_AUTH},
        timeout=10,
    )
    assert r.status_code == 500


def test_the_request_headers_cherrypy_logs_after_a_500_keep_no_cookie_or_credentials(
    tmp_path: Path,
) -> None:
    # GIVEN an app with the agent, writing an error file, whose handler failed on a request
    # that carried a session cookie and an Authorization header (seen on CherryPy's own
    # tutorials: the log_headers record holds them as sent)
    error_file = tmp_path / "error.log"
    with log_app(tmp_path, "--error-file", str(error_file)) as app:
        tag = marker()
        fail_with_secret_headers(app, tag)
        wait_for(lambda: "Request Headers" in error_file.read_text(), what="the headers record")
        assert SECRET_COOKIE in error_file.read_text()  # the app wrote them: not ours to change
        # WHEN a snapshot is taken (the agent's ring and the error file both read)
        shot = run_cli("snapshot", str(app.pid), "-o", str(tmp_path), "--no-routes")
        printed = run_cli("logs", str(app.pid), "-n", "50", "--no-follow")
    assert shot.returncode == 0, shot.stderr
    json_path, txt_path = (Path(p) for p in shot.stdout.splitlines())
    # THEN neither the file nor its report nor `logs` holds the cookie or the credentials
    for text in (json_path.read_text(), txt_path.read_text(), printed.stdout):
        assert "c00c1e5ec4e7a1f0b1e2" not in text
        assert "YWRtaW46czNjcmV0cHc" not in text
    # AND the headers record is still there, the values replaced
    from cpinspect.snapshots import read_snapshots

    (snap,) = read_snapshots(json_path)
    headers = [r for r in snap.log if "Request Headers:" in r.message]
    assert headers, [r.message for r in snap.log]
    assert all(
        re.search(r"(?im)^\s*cookie: \*\*\*$", r.message)
        and re.search(r"(?im)^\s*authorization: \*\*\*$", r.message)
        for r in headers
    ), [r.message for r in headers]


def test_without_the_agent_the_error_file_s_request_headers_keep_no_cookie(
    tmp_path: Path,
) -> None:
    # GIVEN an app with no agent whose error file got a log_headers record with secrets
    error_file = tmp_path / "error.log"
    with log_app(tmp_path, "--agent", "none", "--error-file", str(error_file)) as app:
        fail_with_secret_headers(app, marker())
        wait_for(lambda: "Request Headers" in error_file.read_text(), what="the headers record")
        # WHEN `logs` prints the file's records
        result = run_cli("logs", str(app.pid), "-n", "50", "--no-follow")
    # THEN the record is there with the values replaced
    assert result.returncode == 0, result.stderr
    assert "c00c1e5ec4e7a1f0b1e2" not in result.stdout
    assert "YWRtaW46czNjcmV0cHc" not in result.stdout
    assert re.search(r"(?im)^\s*cookie: \*\*\*$", result.stdout), result.stdout


def test_with_a_level_the_last_n_matching_records_are_printed_not_the_matching_of_the_last_n(
    tmp_path: Path,
) -> None:
    # GIVEN an app with the agent that logged one error, then 300 INFO records after it
    with log_app(tmp_path) as app:
        tag = marker()
        assert app.get("/say?msg=%s&level=40" % tag) == 200
        assert app.get("/many?n=300") == 200
        # WHEN the last error is asked for (seen on salt-api: `-n 400 --level ERROR` printed
        # nothing while the busy server's last 400 records held no error)
        result = run_cli("logs", str(app.pid), "-n", "1", "--level", "ERROR", "--no-follow")
    # THEN that error is printed, and nothing else
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and tag in lines[0], result.stdout
