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
import queue
import selectors
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
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

    The accept thread owns a selector of parked connections: new ones, and keep-alive ones
    between requests. A connection goes to a handler thread only once it has bytes to read, so
    idle clients never pin the few handler threads; parked connections expire after
    ``idle_timeout`` and at most ``max_parked`` are kept.
    """

    def __init__(
        self,
        path: str,
        endpoints: Dict[str, Endpoint],
        handler_threads: int = 3,
        queue_size: int = 8,
        read_timeout: float = 5.0,
        idle_timeout: float = 15.0,
        max_parked: int = 64,
    ) -> None:
        self.path = path
        self.endpoints = endpoints
        self.handler_threads = handler_threads
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_parked = max_parked
        self.allowed_uids = {0, os.getuid(), os.geteuid()}
        self.stats = {"connections": 0, "refused_peer": 0, "rejected_busy": 0, "bad_requests": 0}
        self._queue: queue.Queue[Optional[Tuple[socket.socket, bytes]]] = queue.Queue(
            maxsize=queue_size
        )
        self._returned: collections.deque[Tuple[socket.socket, bytes]] = collections.deque()
        self._stopping = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._identity = (0, 0, 0)
        self._wake_r = self._wake_w = -1
        self._threads: List[threading.Thread] = []
        self.pid = os.getpid()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._sock, self._identity = bind_private(self.path)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        accept = threading.Thread(target=self._accept_loop, name="cpinspect-accept", daemon=True)
        self._threads = [accept]
        for n in range(self.handler_threads):
            self._threads.append(
                threading.Thread(
                    target=self._handler_loop, name="cpinspect-http-%d" % (n + 1), daemon=True
                )
            )
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, remove our socket file, let the handler threads finish."""
        self._stopping.set()
        if self.pid == os.getpid():
            unlink_if_ours(self.path, self._identity)
        self._wake()
        for _ in range(self.handler_threads):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
        while True:  # connections still queued were never served: close them
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].close()
        while self._returned:
            self._returned.popleft()[0].close()
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

    # -- accept and park ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        parked: Dict[socket.socket, Tuple[float, bytes]] = {}
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select(timeout=0.5):
                    if key.data == "listen":
                        self._accept_one(sel, parked)
                    elif key.data == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                    else:
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        sel.unregister(conn)
                        _deadline, buf = parked.pop(conn)
                        self._hand_over(conn, buf)
                while self._returned:
                    conn, buf = self._returned.popleft()
                    self._park(sel, parked, conn, buf, self.idle_timeout)
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

    def _accept_one(self, sel: "selectors.BaseSelector", parked: Dict[Any, Any]) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            time.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
            return
        self.stats["connections"] += 1
        uid = peer_uid(conn)
        if uid is None or uid not in self.allowed_uids:
            self.stats["refused_peer"] += 1
            self._reply_and_close(
                conn,
                403,
                "peer uid %s may not inspect this process (uid %d); run as that user or root"
                % (uid, os.geteuid()),
            )
            return
        self._park(sel, parked, conn, b"", self.read_timeout)

    def _park(
        self,
        sel: "selectors.BaseSelector",
        parked: Dict[Any, Any],
        conn: socket.socket,
        buf: bytes,
        timeout: float,
    ) -> None:
        if len(parked) >= self.max_parked:
            self.stats["rejected_busy"] += 1
            self._reply_and_close(conn, 503, "agent busy: too many open connections")
            return
        conn.setblocking(False)
        parked[conn] = (time.monotonic() + timeout, buf)
        sel.register(conn, selectors.EVENT_READ, "conn")

    def _hand_over(self, conn: socket.socket, buf: bytes) -> None:
        try:
            self._queue.put_nowait((conn, buf))
        except queue.Full:
            self.stats["rejected_busy"] += 1
            self._reply_and_close(conn, 503, "agent busy: too many requests at once")

    def _reply_and_close(self, conn: socket.socket, status: int, message: str) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(_response(status, error_body(status, message), keep_alive=False))
        except OSError:
            pass
        finally:
            conn.close()

    # -- handlers -----------------------------------------------------------------------------

    def _handler_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping.is_set():
                if item is not None:
                    item[0].close()
                return
            conn, buf = item
            keep: Optional[bytes] = None
            try:
                conn.setblocking(True)
                keep = self._serve_requests(conn, buf)
            except Exception:  # noqa: BLE001 - a handler thread must survive any connection
                keep = None
            if keep is None or self._stopping.is_set():
                try:
                    conn.close()
                except OSError:
                    pass
            else:
                self._returned.append((conn, keep))
                self._wake()

    def _serve_requests(self, conn: socket.socket, buf: bytes) -> Optional[bytes]:
        """Serve the request(s) that arrived; return leftover bytes to park, or None to close."""
        while True:
            try:
                head, buf = _read_head(conn, buf, self.read_timeout, self.read_timeout)
            except _BadRequest as exc:
                self.stats["bad_requests"] += 1
                _send(conn, _response(exc.status, error_body(exc.status, exc.message), False))
                return None
            except OSError:
                return None
            if head is None:  # the client closed the connection
                return None
            try:
                method, target, version, headers = _parse_head(head)
            except _BadRequest as exc:
                self.stats["bad_requests"] += 1
                _send(conn, _response(exc.status, error_body(exc.status, exc.message), False))
                return None
            keep_alive = _wants_keep_alive(version, headers)
            length = headers.get("content-length", "0").strip() or "0"
            if headers.get("transfer-encoding") or not length.isdigit() or int(length) > 0:
                # We take no bodies, and the rest of the stream cannot be framed: close after.
                self.stats["bad_requests"] += 1
                body = error_body(413, "request bodies are not accepted")
                _send(conn, _response(413, body, False))
                return None
            status, body = self._dispatch(method, target)
            payload = _response(status, body, keep_alive, head_only=(method == "HEAD"))
            if not _send(conn, payload) or not keep_alive:
                return None
            if b"\r\n\r\n" not in buf:
                return buf  # wait for the next request in the selector, not on this thread

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


def _read_head(
    conn: socket.socket, buf: bytes, first_timeout: float, timeout: float
) -> Tuple[Optional[bytes], bytes]:
    """Read up to the blank line ending the headers; return (head, leftover)."""
    deadline = time.monotonic() + first_timeout
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_REQUEST_BYTES:
            raise _BadRequest(431, "request head over %d bytes" % MAX_REQUEST_BYTES)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if buf:
                raise _BadRequest(408, "timed out reading the request")
            raise socket.timeout()
        conn.settimeout(remaining)
        chunk = conn.recv(4096)
        if not chunk:
            if buf.strip():
                raise _BadRequest(400, "connection closed mid-request")
            return None, b""
        if not buf:
            deadline = time.monotonic() + timeout  # the client started a request: tighter limit
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


def _send(conn: socket.socket, payload: bytes) -> bool:
    try:
        conn.settimeout(5.0)
        conn.sendall(payload)
        return True
    except OSError:
        return False
