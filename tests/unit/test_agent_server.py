"""The agent's HTTP server on a real Unix socket, with endpoints of our own."""

from __future__ import annotations

import json
import os
import socket
import threading

import httpx
import pytest

from cpinspect.agent.server import AgentServer
from tests.helpers import raw_exchange


def boom(query):
    raise RuntimeError("probe exploded")


@pytest.fixture
def server(short_tmp):
    calls = []

    def echo(query):
        calls.append(threading.current_thread().name)
        return 200, {"query": query}

    srv = AgentServer(str(short_tmp / "a.sock"), {"/v1/echo": echo, "/v1/boom": boom})
    srv.start()
    srv.calls = calls
    try:
        yield srv
    finally:
        srv.stop()


def client(srv):
    return httpx.Client(transport=httpx.HTTPTransport(uds=srv.path), base_url="http://x", timeout=5)


def test_answers_json_with_version_on_its_own_named_threads(server):
    with client(server) as c:
        r = c.get("/v1/echo", params={"a": "1"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["query"] == {"a": ["1"]} and body["schema"] == 1 and body["agent"]
    assert server.calls[0].startswith("cpinspect-http-")


def test_keep_alive_serves_many_requests_on_one_connection(server):
    with client(server) as c:
        for _ in range(20):
            assert c.get("/v1/echo").status_code == 200
    assert server.stats["connections"] == 1


def test_pipelined_requests_are_all_answered(server):
    req = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = raw_exchange(
        server.path, req * 3 + b"GET /v1/echo HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 4


def test_head_has_no_body(server):
    reply = raw_exchange(server.path, b"HEAD /v1/echo HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""


def test_a_failing_endpoint_is_a_json_500_and_the_server_lives_on(server):
    with client(server) as c:
        r = c.get("/v1/boom")
        assert r.status_code == 500
        assert "probe exploded" in r.json()["error"]["message"]
        assert c.get("/v1/echo").status_code == 200


def test_index_lists_endpoints(server):
    with client(server) as c:
        assert c.get("/v1").json()["endpoints"] == ["/v1/boom", "/v1/echo"]


def test_stop_removes_the_socket_and_refuses_connections(server):
    server.stop()
    assert not os.path.exists(server.path)
    s = socket.socket(socket.AF_UNIX)
    with pytest.raises(OSError):
        s.connect(server.path)
    s.close()


def test_a_client_cut_off_mid_request_does_not_hurt_others(server):
    raw_exchange(server.path, b"GET /v1/ec")
    with client(server) as c:
        assert json.loads(c.get("/v1/echo").text)["schema"] == 1
