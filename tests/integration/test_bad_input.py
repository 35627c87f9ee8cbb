"""Every user mistake or hostile input: one clear line, a non-zero exit code, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import agent_get, http_answers, raw_exchange, run_cli


def assert_one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpinspect: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_no_such_process():
    assert_one_line(run_cli("attach", "999999"), 3, "no process with pid 999999")
    assert_one_line(run_cli("dump", "999999"), 3, "no process with pid 999999")


def test_not_a_pid():
    assert_one_line(run_cli("attach", "abc"), 2, "'abc' is not a pid")


def test_not_a_python_process():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert_one_line(run_cli("attach", str(sleeper.pid)), 4, "not a Python process", "sleep")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cherrypy_without_the_agent_is_read_by_pyspy_and_says_how_to_enable_it(spawn_target):
    # GIVEN a CherryPy app without the agent
    target = spawn_target("--agent", "none")
    # WHEN it is dumped
    result = run_cli("dump", str(target.pid))
    # THEN py-spy reads its threads, and one line says how to get the rest from the agent
    assert result.returncode == 0, result.stderr
    assert "CP Server Thread" in result.stdout
    notes = result.stderr.strip().splitlines()
    assert len(notes) == 1 and "no cpinspect agent" in notes[0]
    assert "inspector.on = True" in notes[0] and "cpinspect.agent.install()" in notes[0]


def test_python_that_is_not_cherrypy():
    code = "import sys, time; print('ready', flush=True); time.sleep(60)"
    plain = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert plain.stdout is not None and plain.stdout.readline() == "ready\n"
        assert_one_line(run_cli("attach", str(plain.pid)), 4, "runs Python but no CherryPy")
        assert_one_line(run_cli("dump", str(plain.pid)), 4, "runs Python but no CherryPy")
    finally:
        plain.kill()
        plain.wait()


def test_stale_socket_file(short_tmp):
    # GIVEN a socket file left behind by a process that died without removing it
    path = str(short_tmp / "4242.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    # WHEN it is given to attach
    # THEN a clear line says it is stale
    assert_one_line(run_cli("attach", "--socket", path), 7, "stale socket", path)


def test_socket_option_given_a_regular_file(short_tmp):
    path = short_tmp / "notes.txt"
    path.write_text("hello")
    assert_one_line(run_cli("attach", "--socket", str(path)), 7, "is not a socket", "regular file")


def test_socket_option_given_a_missing_path(short_tmp):
    assert_one_line(run_cli("dump", "--socket", str(short_tmp / "nope.sock")), 3, "no such socket")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /v1/threads HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"\x00\xff\xfe binary \r\n\r\n", 400),
        (b"POST /v1/threads HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"DELETE /v1/threads HTTP/1.1\r\n\r\n", 405),
        (b"GET /v1/nothing HTTP/1.1\r\n\r\n", 404),
        (b"GET /v1/threads HTTP/2.0\r\n\r\n", 505),
        (b"GET /v1/threads HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_json_errors_and_the_app_keeps_serving(
    spawn_target, payload, status
):
    # GIVEN a running app with its agent
    target = spawn_target()
    path = target.socket_path()
    # WHEN the agent gets a malformed or oversized request
    reply = raw_exchange(path, payload)
    # THEN it answers with that status and a JSON error body
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b'"error"' in reply
    # AND the agent and the app keep serving
    assert agent_get(path, "/v1/threads")[0] == 200
    assert http_answers(target.port, "/")


def test_a_client_that_sends_nothing_is_dropped_and_others_are_served(spawn_target):
    target = spawn_target()
    path = target.socket_path()
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(12)]
    try:
        for s in idle:
            s.connect(path)
        # Handler threads are few; idle clients past the queue get 503 at once, never a hang.
        status = None
        for _ in range(3):
            try:
                status = agent_get(path, "/v1/threads", timeout=10)[0]
            except Exception:  # noqa: BLE001 - the 503 path closes the connection
                status = None
            if status == 200:
                break
        assert status == 200
    finally:
        for s in idle:
            s.close()
    assert http_answers(target.port, "/")
    assert os.path.exists(path)
