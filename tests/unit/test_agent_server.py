"""The agent's HTTP server on a real Unix socket, with endpoints of our own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from cpinspect.agent.server import AgentServer
from tests.conftest import wait_for
from tests.helpers import raw_exchange, read_until_close


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


# -- slow, idle, half-open and greedy clients (issue 14) -----------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connected(path, data=b""):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    if data:
        s.sendall(data)
    return s


def read_all(s) -> bytes:
    return read_until_close(s)


@pytest.fixture
def make_server(short_tmp):
    made = []

    def make(endpoints=None, **kw):
        eps = endpoints or {"/v1/echo": lambda q: (200, {"query": q})}
        srv = AgentServer(str(short_tmp / ("s%d.sock" % len(made))), eps, **kw)
        srv.start()
        made.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in made:
            srv.stop()


def test_half_open_and_idle_clients_never_hold_the_only_thread(make_server):
    # GIVEN an agent with ONE handler thread, and clients that connect and stop mid-way
    srv = make_server(handler_threads=1)
    stuck = [connected(srv.path, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]
    stuck += [connected(srv.path) for _ in range(10)]
    stuck += [connected(srv.path, b"G") for _ in range(10)]
    try:
        # WHEN a well-formed request comes after them
        # THEN it is answered well within the inspector's 1 s timeout
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=srv.path), base_url="http://x", timeout=1.0
        ) as c:
            for _ in range(5):
                assert c.get("/v1/echo").status_code == 200
    finally:
        for s in stuck:
            s.close()


def send_buffer_cap() -> int:
    """The most a socket's send buffer holds here: the agent asks for room for a big answer
    (up to 16 MB), the kernel doubles it and caps the ask at net.core.wmem_max."""
    try:
        with open("/proc/sys/net/core/wmem_max") as f:
            wmem_max = int(f.read())
    except (OSError, ValueError):
        wmem_max = 16 << 20
    return 2 * min(wmem_max, 16 << 20)


def test_a_client_that_does_not_read_its_answer_holds_no_thread(make_server):
    # (an answer bigger than any send buffer the agent can get: part of it must wait)
    blob = "x" * (send_buffer_cap() + (4 << 20))
    big = {"/v1/big": lambda q: (200, {"blob": blob}), "/v1/echo": lambda q: (200, {})}
    srv = make_server(endpoints=big, handler_threads=1, read_timeout=0.5)
    greedy = connected(srv.path, b"GET /v1/big HTTP/1.1\r\n\r\n")  # and never reads
    try:
        assert agent_get_raw(srv.path, "/v1/echo").startswith(b"HTTP/1.1 200 ")
        # and the stalled answer is dropped after read_timeout
        wait_for(lambda: srv.stats["timed_out"] == 1, timeout=5, what="the stalled answer dropped")
    finally:
        greedy.close()


def agent_get_raw(path, target) -> bytes:
    s = connected(path, b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n" % target.encode())
    s.settimeout(1.0)
    try:
        return read_all(s)
    finally:
        s.close()


def test_a_request_head_unfinished_after_the_read_timeout_gets_408(make_server):
    srv = make_server(read_timeout=0.5, sweep_interval=0.1)
    s = connected(srv.path, b"GET /v1/echo HTTP/1.1\r\n")
    try:
        reply = read_all(s)
    finally:
        s.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["status"] == 408


def test_an_idle_connection_is_closed_after_the_idle_timeout(make_server):
    srv = make_server(idle_timeout=0.5, sweep_interval=0.1)
    s = connected(srv.path, b"GET /v1/echo HTTP/1.1\r\n\r\n")
    try:
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert read_all(s) == b""  # then silence, and the agent closes (no answer to give)
    finally:
        s.close()


def _hold_the_gil(seconds: float) -> None:
    """Keep this process's GIL for about ``seconds`` inside one C call (``sum`` over a range
    of small ints never lets it go), as a handler stuck in a C extension does."""
    began = time.perf_counter()
    sum(range(2_000_000))
    per_item = (time.perf_counter() - began) / 2_000_000
    sum(range(int(seconds / per_item)))


def test_a_request_sent_while_the_agent_could_not_run_is_answered_not_closed_as_idle(
    make_server,
):
    # GIVEN a kept-alive connection, answered once, and an idle timeout of 0.5 s
    srv = make_server(idle_timeout=0.5, sweep_interval=0.1)
    s = connected(srv.path, b"GET /v1/echo HTTP/1.1\r\n\r\n")
    try:
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        # WHEN the GIL is held for 3 s (the agent's threads cannot run) and, 0.5 s into it,
        # another process sends the next request on that connection
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import os, sys, time; time.sleep(0.5); "
                "os.write(int(sys.argv[1]), b'GET /v1/echo HTTP/1.1\\r\\n\\r\\n')",
                str(s.fileno()),
            ],
            pass_fds=[s.fileno()],
        )
        time.sleep(0.2)  # the child starts and sleeps (the agent sweeps meanwhile: idle 0.2 s)
        _hold_the_gil(3.0)
        assert writer.wait(timeout=10) == 0
        # THEN once it runs again the agent answers it: the stall was not the client's silence
        reply = s.recv(65536)
    finally:
        s.close()
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert srv.stats["timed_out"] == 0


def test_past_the_bound_the_oldest_silent_connection_is_shed_with_a_503(make_server):
    srv = make_server(max_connections=4)
    # An active keep-alive client connected first: answering moves it to the back of the line.
    active = connected(srv.path)
    silent = [connected(srv.path) for _ in range(3)]
    wait_for(lambda: len(srv._conns) == 4, what="four connections accepted")
    active.sendall(b"GET /v1/echo HTTP/1.1\r\n\r\n")
    assert active.recv(65536).startswith(b"HTTP/1.1 200 ")
    newcomer = connected(srv.path, b"GET /v1/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
    try:
        assert read_all(newcomer).startswith(b"HTTP/1.1 200 ")
        reply = read_all(silent[0])
        assert reply.startswith(b"HTTP/1.1 503 "), reply
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["message"] == (
            "too many connections: shed oldest"
        )
        assert srv.stats["shed"] == 1
        active.sendall(b"GET /v1/echo HTTP/1.1\r\n\r\n")
        assert active.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in [active, newcomer, *silent]:
            s.close()


def test_stop_gives_back_every_thread_and_descriptor(short_tmp):
    threads, fds = threading.active_count(), open_fds()
    srv = AgentServer(str(short_tmp / "b.sock"), {"/v1/echo": lambda q: (200, {})})
    srv.start()
    clients = [connected(srv.path, b"GET /v1/echo HTTP/1.1\r\n") for _ in range(20)]
    assert raw_exchange(srv.path, b"GET /v1/echo HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    srv.stop()
    for s in clients:
        s.close()
    assert threading.active_count() == threads
    assert open_fds() == fds
