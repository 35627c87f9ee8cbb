"""Each busy worker's phase, with real slow clients: reading the request, handler, writing."""

from __future__ import annotations

import socket
import time

from tests.conftest import wait_for
from tests.helpers import agent_get


def busy_workers(target):
    _, body = agent_get(target.socket_path(), "/v1/threads")
    return [t for t in body["threads"] if t["role"] == "worker" and t["busy"]]


def connect(target) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", target.port), timeout=10)
    return s


def test_slow_headers_hold_a_worker_in_the_reading_phase(spawn_target):
    # GIVEN a client that sends a request line and one header, then stalls (slowloris)
    target = spawn_target()
    s = connect(target)
    s.sendall(b"GET /index?token=secret HTTP/1.1\r\nHost: x\r\n")
    try:
        # THEN one worker is busy reading, and the request line is already known
        workers = wait_for(lambda: busy_workers(target), what="a busy worker")
        w = workers[0]
        assert w["phase"] == "reading"
        assert w["request"]["source"] == "cheroot"
        assert w["request"]["method"] == "GET" and w["request"]["path"] == "/index"
        assert w["request"]["query"] == "token=***"
        time.sleep(0.3)
        again = busy_workers(target)[0]
        assert again["elapsed"] >= w["elapsed"]  # age kept across polls
    finally:
        s.close()


def test_slow_body_holds_a_worker_in_the_reading_phase(spawn_target):
    # GIVEN a POST whose urlencoded body arrives a few bytes at a time
    target = spawn_target()
    s = connect(target)
    s.sendall(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: 1000\r\n\r\na=1&b="
    )
    try:

        def reading():
            ws = busy_workers(target)
            return ws if ws and ws[0]["request"] and ws[0]["request"]["source"] == "hook" else None

        w = wait_for(reading, what="the upload being read")[0]
        # THEN the request is known (CherryPy dispatched it) and the phase is reading
        assert w["phase"] == "reading"
        assert w["request"]["method"] == "POST" and w["request"]["path"] == "/upload"
        assert w["request"]["stage"] == "before_request_body"
        assert w["request"]["handler"] == "Root.upload"
    finally:
        s.close()


def test_a_client_that_does_not_read_holds_a_worker_writing(spawn_target):
    # GIVEN a streamed response to a client that never reads it
    target = spawn_target()
    s = connect(target)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    try:

        def writing():
            ws = busy_workers(target)
            return ws if ws and ws[0]["phase"] == "writing" else None

        # THEN the worker shows the writing phase once the socket buffers fill
        w = wait_for(writing, timeout=15, what="the worker blocked writing")[0]
        assert w["request"]["path"] == "/stream"
    finally:
        s.close()
