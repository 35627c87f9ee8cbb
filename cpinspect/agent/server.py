"""The agent's private HTTP/1.1 server: its own threads, its own Unix socket.

Not cheroot (whose workers are named like the app's and share its code paths) and not
``socketserver.ThreadingMixIn`` (a thread per connection is unbounded). One accept thread hands
connections to a fixed number of handler threads through a bounded queue; when the queue is full
the connection gets a 503 at once. Requests are parsed here with hard limits: a request line and
headers of at most ``MAX_REQUEST_BYTES``, a read timeout, GET/HEAD only, no bodies.

Every connection's peer is checked with SO_PEERCRED: only our own uid and root may talk to us.
File modes (0700 directory, 0600 socket) already stop other users; this is the second lock.
"""

import collections
import json
import os
import selectors
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

from .paths import bind_private, unlink_if_ours
from .wire import AGENT_VERSION, MAX_REQUEST_BYTES, SCHEMA_VERSION

# An endpoint gets the parsed query ({name: [values]}) and returns (status, JSON-able dict).
Endpoint = Callable[[Dict[str, List[str]]], Tuple[int, Dict[str, Any]]]

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_UCRED = struct.Struct("3i")
_TIMEVAL = struct.Struct("@ll")


def kernel_timeouts(sock: socket.socket, recv: float, send: Optional[float] = None) -> None:
    """Time out blocking calls in the kernel (SO_RCVTIMEO/SO_SNDTIMEO), not in Python.

    A socket with a Python-level timeout polls before each recv/send/accept: two system calls,
    each releasing the GIL and queueing for it again behind busy app threads; ``settimeout``
    itself is an fcntl that does the same. A blocking socket with kernel timeouts makes one
    call, and raises BlockingIOError (EAGAIN) when the time is up.
    """
    sec = int(recv)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(sec, int((recv - sec) * 1e6))
    )
    if send is not None:
        sec = int(send)
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.pack(sec, int((send - sec) * 1e6))
        )


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> Dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "agent": AGENT_VERSION,
        "error": {"status": status, "message": message},
    }


def peer_uid(conn: socket.socket) -> Optional[int]:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = _UCRED.unpack(creds)
    return int(uid)


class AgentServer:
    """Serves ``endpoints`` on a private Unix socket at ``path`` until ``stop()``.

    Built for the worst moment: every app thread burning CPU in pure Python. Then each time an
    agent thread gives up the GIL (any system call, any hand-off to another thread) it waits in
    line behind the busy threads for it again, ~5 ms (the switch interval) per thread in line.
    So the common path makes as few of those trips as possible:

    - ``handler_threads`` threads each block in ``accept()`` and serve the connection they get
      themselves: no selector wake-up, no queue hand-off between threads;
    - a keep-alive connection (the inspector polls once a second) is served by the same thread,
      which waits for its next request in ``recv`` for up to ``keepalive_wait`` seconds.

    A connection that stays silent longer (or a new one that sends nothing within
    ``first_byte_wait``) is handed to the parker thread, whose selector holds idle connections
    (at most ``max_parked``, each for at most ``idle_timeout``) and serves them when they speak:
    idle clients never pin the few handler threads.
    """

    def __init__(
        self,
        path: str,
        endpoints: Dict[str, Endpoint],
        handler_threads: int = 3,
        read_timeout: float = 5.0,
        first_byte_wait: float = 0.25,
        keepalive_wait: float = 2.0,
        idle_timeout: float = 30.0,
        max_parked: int = 64,
    ) -> None:
        self.path = path
        self.endpoints = endpoints
        self.handler_threads = handler_threads
        self.read_timeout = read_timeout
        self.first_byte_wait = first_byte_wait
        self.keepalive_wait = keepalive_wait
        self.idle_timeout = idle_timeout
        self.max_parked = max_parked
        self.allowed_uids = {0, os.getuid(), os.geteuid()}
        self.stats = {"connections": 0, "refused_peer": 0, "rejected_busy": 0, "bad_requests": 0}
        self._to_park: collections.deque[Tuple[socket.socket, bytes]] = collections.deque()
        self._serving: Set[socket.socket] = set()
        """Connections a handler thread is on right now: stop() shuts them to wake it."""
        self._stopping = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._identity = (0, 0, 0)
        self._wake_r = self._wake_w = -1
        self._threads: List[threading.Thread] = []
        self.pid = os.getpid()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._sock, self._identity = bind_private(self.path)
        # Blocking accept() that wakes up every second to notice stop() (see kernel_timeouts).
        self._sock.settimeout(None)
        kernel_timeouts(self._sock, 1.0)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._threads = [
            threading.Thread(target=self._park_loop, name="cpinspect-parker", daemon=True)
        ]
        for n in range(self.handler_threads):
            self._threads.append(
                threading.Thread(
                    target=self._accept_loop, name="cpinspect-http-%d" % (n + 1), daemon=True
                )
            )
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, remove our socket file, let the threads finish."""
        self._stopping.set()
        if self.pid == os.getpid():
            unlink_if_ours(self.path, self._identity)
        if self._sock is not None:
            try:
                # Wakes the threads blocked in accept() at once.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for conn in list(self._serving):
            try:
                conn.shutdown(socket.SHUT_RDWR)  # a recv() waiting for a keep-alive request ends
            except OSError:
                pass
        self._wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
        while self._to_park:
            self._to_park.popleft()[0].close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1

    @property
    def running(self) -> bool:
        return not self._stopping.is_set() and any(t.is_alive() for t in self._threads)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the fast path: accept and serve on one thread ----------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, socket.timeout):
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            self.stats["connections"] += 1
            uid = peer_uid(conn)
            if uid is None or uid not in self.allowed_uids:
                self.stats["refused_peer"] += 1
                _reply_and_close(
                    conn,
                    403,
                    "peer uid %s may not inspect this process (uid %d); run as that user or root"
                    % (uid, os.geteuid()),
                )
                continue
            self._serving.add(conn)
            try:
                if conn.gettimeout() is not None:  # an app's socket.setdefaulttimeout()
                    conn.settimeout(None)
                self._serve(conn, b"", self.first_byte_wait)
            except Exception:  # noqa: BLE001 - a handler thread must survive any connection
                conn.close()
            finally:
                self._serving.discard(conn)

    def _serve(self, conn: socket.socket, buf: bytes, wait: float) -> None:
        """Serve requests on ``conn`` while it keeps talking; park it when it goes quiet."""
        while not self._stopping.is_set():
            if b"\r\n\r\n" not in buf:
                kernel_timeouts(conn, wait, send=self.read_timeout)
                try:
                    chunk = conn.recv(65536)
                except (BlockingIOError, socket.timeout):
                    self._park(conn, buf)
                    return
                except OSError:
                    conn.close()
                    return
                if not chunk:
                    if buf.strip():
                        self.stats["bad_requests"] += 1
                        _send(conn, _error_response(400, "connection closed mid-request"))
                    conn.close()
                    return
                buf += chunk
            keep, buf = self._serve_one(conn, buf)
            if not keep:
                conn.close()
                return
            wait = self.keepalive_wait
        conn.close()

    def _serve_one(self, conn: socket.socket, buf: bytes) -> Tuple[bool, bytes]:
        """Read (the rest of) one request from ``buf``/``conn`` and answer it.

        Returns whether to keep the connection, and the bytes already read past the request.
        """
        try:
            head, buf = _read_head(conn, buf, self.read_timeout)
            method, target, version, headers = _parse_head(head)
        except _BadRequest as exc:
            self.stats["bad_requests"] += 1
            _send(conn, _error_response(exc.status, exc.message))
            return False, b""
        except OSError:
            return False, b""
        keep_alive = _wants_keep_alive(version, headers)
        length = headers.get("content-length", "0").strip() or "0"
        if headers.get("transfer-encoding") or not length.isdigit() or int(length) > 0:
            # We take no bodies, and the rest of the stream cannot be framed: close after.
            self.stats["bad_requests"] += 1
            _send(conn, _error_response(413, "request bodies are not accepted"))
            return False, b""
        status, body = self._dispatch(method, target)
        payload = _response(status, body, keep_alive, head_only=(method == "HEAD"))
        return _send(conn, payload) and keep_alive, buf

    # -- the slow path: idle connections wait in a selector -----------------------------------

    def _park(self, conn: socket.socket, buf: bytes) -> None:
        self._to_park.append((conn, buf))
        self._wake()

    def _park_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        parked: Dict[socket.socket, Tuple[float, bytes]] = {}
        try:
            while not self._stopping.is_set():
                events = sel.select(timeout=1.0)
                for key, _ in events:
                    if key.data is None:
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                        continue
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    sel.unregister(conn)
                    _deadline, buf = parked.pop(conn)
                    self._serve_parked(conn, buf)
                while self._to_park:
                    conn, buf = self._to_park.popleft()
                    if len(parked) >= self.max_parked:
                        self.stats["rejected_busy"] += 1
                        _reply_and_close(conn, 503, "agent busy: too many open connections")
                        continue
                    parked[conn] = (time.monotonic() + self.idle_timeout, buf)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                now = time.monotonic()
                for conn, (deadline, _buf) in list(parked.items()):
                    if now >= deadline:
                        sel.unregister(conn)
                        del parked[conn]
                        conn.close()
        finally:
            for conn in parked:
                conn.close()
            sel.close()

    def _serve_parked(self, conn: socket.socket, buf: bytes) -> None:
        """One request from a connection that woke up in the selector, then back to park."""
        try:
            kernel_timeouts(conn, self.read_timeout, send=self.read_timeout)
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            keep, buf = self._serve_one(conn, buf + chunk)
        except Exception:  # noqa: BLE001 - the parker must survive any connection
            keep = False
        if keep and not self._stopping.is_set():
            self._to_park.append((conn, buf))
        else:
            conn.close()

    def _dispatch(self, method: str, target: str) -> Tuple[int, Dict[str, Any]]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        if path in ("/", "/v1"):
            return 200, {
                "schema": SCHEMA_VERSION,
                "agent": AGENT_VERSION,
                "endpoints": sorted(self.endpoints),
            }
        endpoint = self.endpoints.get(path)
        if endpoint is None:
            return 404, error_body(404, "no such endpoint: %s" % path[:200])
        if method not in ("GET", "HEAD"):
            return 405, error_body(405, "method %s not allowed; use GET" % method[:20])
        try:
            query = parse_qs(parts.query, keep_blank_values=True)
            status, body = endpoint(query)
        except Exception as exc:  # noqa: BLE001 - report, never die
            return 500, error_body(500, "%s failed: %s: %s" % (path, type(exc).__name__, exc))
        body.setdefault("schema", SCHEMA_VERSION)
        body.setdefault("agent", AGENT_VERSION)
        return status, body


def _read_head(conn: socket.socket, buf: bytes, timeout: float) -> Tuple[bytes, bytes]:
    """Read up to the blank line ending the headers; return (head, leftover)."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_REQUEST_BYTES:
            raise _BadRequest(431, "request head over %d bytes" % MAX_REQUEST_BYTES)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _BadRequest(408, "timed out reading the request")
        kernel_timeouts(conn, max(remaining, 0.001))
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, socket.timeout):
            raise _BadRequest(408, "timed out reading the request") from None
        if not chunk:
            raise _BadRequest(400, "connection closed mid-request")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if len(head) > MAX_REQUEST_BYTES:
        raise _BadRequest(431, "request head over %d bytes" % MAX_REQUEST_BYTES)
    return head, rest


def _parse_head(head: bytes) -> Tuple[str, str, str, Dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise _BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    words = lines[0].split(" ")
    if len(words) != 3 or not words[0].isalpha() or not words[1].startswith("/"):
        raise _BadRequest(400, "malformed request line")
    method, target, version = words
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    return method.upper(), target, version, headers


def _wants_keep_alive(version: str, headers: Dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def _response(
    status: int, body: Dict[str, Any], keep_alive: bool, head_only: bool = False
) -> bytes:
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    lines = [
        "HTTP/1.1 %d %s" % (status, REASONS.get(status, "Error")),
        "Content-Type: application/json",
        "Content-Length: %d" % len(data),
        "Cache-Control: no-store",
        "X-Cpinspect-Schema: %d" % SCHEMA_VERSION,
        "Connection: %s" % ("keep-alive" if keep_alive else "close"),
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + data


def _error_response(status: int, message: str) -> bytes:
    return _response(status, error_body(status, message), keep_alive=False)


def _reply_and_close(conn: socket.socket, status: int, message: str) -> None:
    try:
        conn.settimeout(1.0)
        conn.sendall(_error_response(status, message))
    except OSError:
        pass
    finally:
        conn.close()


def _send(conn: socket.socket, payload: bytes) -> bool:
    """Send on a socket whose send timeout is already set (no settimeout: see kernel_timeouts)."""
    try:
        conn.sendall(payload)
        return True
    except OSError:
        return False
