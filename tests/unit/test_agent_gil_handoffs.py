"""The agent's server hands the GIL away only to wait for its next event.

Behind workers spinning in pure Python, each time an agent thread gives up the GIL it may wait
up to ~5 ms per spinner to get it back (bench/gil_floor.py), so serving a request must make no
system call through a Python method that releases it: only the epoll wait itself. Watched with
a profile hook on the server's own threads (``threading.setprofile``): it sees every call of a
built-in function or method they make; the system calls made through ctypes' PyDLL (which keep
the GIL) are not built-ins and do not show.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import List, Tuple

import pytest

from cpinspect.agent.server import AgentServer
from tests.helpers import read_until_close

RELEASING = {
    "socket": {"send", "sendall", "recv", "recv_into", "_accept", "accept", "close", "connect"},
    "epoll": {"register", "modify", "unregister", "close", "poll"},
    "posix": {"close", "read", "write", "stat", "fstat"},
    "time": {"sleep"},
}
"""Built-ins that release the GIL around a system call, by the type or module that has them."""


def _owner(fn) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is None or isinstance(owner, type(select)):
        return getattr(fn, "__module__", None) or getattr(owner, "__name__", "") or ""
    return type(owner).__name__


class Watch:
    """The GIL-releasing built-ins the agent's threads call while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.calls: List[Tuple[str, str, str]] = []

    def hook(self, frame, event, arg) -> None:
        if not self.on or event != "c_call":
            return
        thread = threading.current_thread().name
        if not thread.startswith("cpinspect-http-"):
            return
        owner, name = _owner(arg), getattr(arg, "__name__", "")
        if name in RELEASING.get(owner, ()):
            self.calls.append((thread, owner, name))

    def releasing(self) -> List[Tuple[str, str]]:
        """What was called, the epoll waits aside."""
        return [(o, n) for _t, o, n in self.calls if (o, n) != ("epoll", "poll")]

    def waits(self) -> int:
        return sum(1 for _t, o, n in self.calls if (o, n) == ("epoll", "poll"))


BIG = 3_000_000
"""About a /v1/threads answer at 1,000 threads."""


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gil") / "a.sock")
    if len(path) > 100:  # pragma: no cover - AF_UNIX paths are short
        pytest.skip("temporary directory too deep for a Unix socket")
    watch = Watch()
    endpoints = {
        "/v1/echo": lambda q: (200, {"query": q}),
        "/v1/big": lambda q: (200, {"blob": "x" * BIG}),
    }
    threading.setprofile(watch.hook)
    try:
        srv = AgentServer(path, endpoints, handler_threads=2, sweep_interval=3600.0)
        srv.start()
    finally:
        threading.setprofile(None)  # (only the server's threads, started above, have it)
    try:
        yield srv, watch
    finally:
        srv.stop()


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``; read one answer with a Content-Length (keep-alive)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(1 << 20)
    return head


def settle() -> None:
    time.sleep(0.3)  # the serving thread re-arms the connection and goes back to its wait


def answer_watched(srv, watch, request: bytes, timeout: float) -> bytes:
    """``request``'s answer head on a kept-alive connection answered once already (a small
    request first), with the server's calls recorded from just before it was sent until the
    connection was re-armed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(srv.path)
    try:
        assert exchange(sock, b"GET /v1/echo HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        settle()
        watch.calls.clear()
        watch.on = True
        head = exchange(sock, request)
        settle()
        watch.on = False
    finally:
        sock.close()
    return head


def test_a_keep_alive_request_releases_the_gil_only_in_the_epoll_wait(watched):
    srv, watch = watched
    # GIVEN a kept-alive connection, answered once already
    # WHEN the next request is read, answered and the connection re-armed
    head = answer_watched(srv, watch, b"GET /v1/echo?x=1 HTTP/1.1\r\n\r\n", timeout=5)
    # THEN it was answered, and the only GIL-releasing call was the wait for the next event
    assert head.startswith(b"HTTP/1.1 200 ")
    assert watch.releasing() == []
    assert watch.waits() >= 1


def test_a_new_connection_is_accepted_and_answered_without_releasing_the_gil(watched):
    srv, watch = watched
    # GIVEN the server waiting
    settle()
    watch.calls.clear()
    watch.on = True
    # WHEN a client connects and sends its request at once, then the server closes after answering
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(srv.path)
    try:
        sock.sendall(b"GET /v1/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
        answer = read_until_close(sock)
    finally:
        sock.close()
    settle()
    watch.on = False
    # THEN accept, read, answer, re-arming the listener and closing kept the GIL
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert watch.releasing() == []


def _send_buffer_cap() -> int:
    try:
        with open("/proc/sys/net/core/wmem_max") as f:
            return 2 * int(f.read())
    except (OSError, ValueError):
        return 0


def test_a_three_megabyte_answer_goes_out_in_one_send_with_no_wait_for_room(watched):
    srv, watch = watched
    if _send_buffer_cap() < 2 * BIG:
        pytest.skip("net.core.wmem_max too small here for a 3 MB send buffer")
    settle()
    # GIVEN a kept-alive connection (its first answer small)
    # WHEN a big answer is asked for
    head = answer_watched(srv, watch, b"GET /v1/big HTTP/1.1\r\n\r\n", timeout=10)
    # THEN it came whole, and the server went back to wait once: for the next request, never
    # for room in the socket (each such wait is one more turn in line for the GIL)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert watch.releasing() == []
    assert watch.waits() == 1


def test_without_libc_through_ctypes_the_python_methods_serve_the_same(short_tmp):
    # GIVEN a server whose system calls fall back to the socket and epoll methods (as where
    # ctypes, libffi or a libc symbol is missing: a fake of that absence, set by hand)
    srv = AgentServer(str(short_tmp / "f.sock"), {"/v1/echo": lambda q: (200, {"query": q})})
    calls = srv._sys
    calls._recv = calls._accept4 = calls._send = calls._close = calls._ctl = None
    srv.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        # WHEN a client connects and asks twice on one connection, then once more and closes
        sock.connect(srv.path)
        first = exchange(sock, b"GET /v1/echo?n=1 HTTP/1.1\r\n\r\n")
        second = exchange(sock, b"GET /v1/echo?n=2 HTTP/1.1\r\n\r\n")
        sock.sendall(b"GET /v1/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
        last = read_until_close(sock)
    finally:
        sock.close()
        srv.stop()
    # THEN every answer came, and the last one ended with the connection
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")
    assert last.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in last
