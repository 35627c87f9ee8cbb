"""The agent's private HTTP/1.1 server: its own threads, its own Unix socket.

Not cheroot (whose workers are named like the app's and share its code paths) and not
``socketserver.ThreadingMixIn`` (a thread per connection is unbounded). A fixed number of
handler threads share one epoll instance and never block on a client: slow, idle, half-open and
garbage connections wait as buffered state, not on a thread (see ``AgentServer``). Requests are
parsed here with hard limits: a request line and headers of at most ``MAX_REQUEST_BYTES``, a
read deadline, GET/HEAD only, no bodies; connections are bounded, the oldest shed first.

Every connection's peer is checked with SO_PEERCRED: only our own uid and root may talk to us.
File modes (0700 directory, 0600 socket) already stop other users; this is the second lock.
"""

import collections
import errno
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from .jsonparts import encode_parts
from .paths import bind_private, file_identity, unlink_if_ours
from .wire import (
    AGENT_VERSION,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    REQUEST_READ_TIMEOUT,
    SCHEMA_VERSION,
)

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
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

SHED_MESSAGE = "too many connections: shed oldest"

_UCRED = struct.Struct("3i")


_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ONESHOT = select.EPOLLONESHOT
_DONTWAIT = socket.MSG_DONTWAIT
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
_RECV_SIZE = 65536
_ACCEPTS_PER_TURN = 16
STALL_GRACE = 1.0
"""A sweep this late (seconds) means the agent's threads could not run: see ``_sweep``."""
_SOCK_CLOEXEC = getattr(socket, "SOCK_CLOEXEC", 0o2000000)
_SNDBUF_ASK_ABOVE = 128 * 1024
"""Answers longer than this ask for a send buffer that holds them whole (``_grow_sndbuf``)."""
_SNDBUF_ASK_MAX = 16 * 1024 * 1024
_REQUESTS_PER_TURN = 8
"""Pipelined requests answered on one connection before it goes back in line."""
_OUT_OF_RESOURCES = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
    if hasattr(errno, name)
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


_CTL_ADD, _CTL_DEL, _CTL_MOD = 1, 2, 3  # EPOLL_CTL_* (linux/eventpoll.h)


class _Syscalls:
    """The system calls of serving a request, made *without* releasing the GIL.

    Every socket and epoll method of Python releases the GIL around its system call. Under CPU
    load the thread that releases it may find it taken when the call returns, and then waits in
    line behind the app's threads (BENCHMARKS.md: up to ~5 ms per spinning thread), and the
    longer the call (a send of megabytes copies them), the likelier. None of the calls made
    here can block: ``recv``/``send`` with ``MSG_DONTWAIT``, ``accept4`` on a non-blocking
    listener that epoll reported ready, ``epoll_ctl``, ``close`` of a socket without
    ``SO_LINGER``. So holding the GIL through them costs the app nothing and keeps a request at
    one wait for the GIL: the epoll wake-up. libc's functions through ``ctypes.PyDLL`` do that
    (PyDLL functions keep the GIL). Without ctypes (or libffi, or a symbol), or if the
    ``epoll_event`` layout does not check out, each falls back to the socket or epoll method:
    correct, with a chance of one more wait per call.

    One instance serves every handler thread: ``recv`` reads into a buffer of the calling
    thread's own (``errno`` is per thread in ctypes too).
    """

    def __init__(self) -> None:
        self._recv: Any = None
        self._accept4: Any = None
        self._send: Any = None
        self._close: Any = None
        self._ctl: Any = None
        self._make_buf: Callable[[], Any] = lambda: None
        self._local = threading.local()
        self._errno: Callable[[], int] = lambda: 0
        try:
            import ctypes

            libc = ctypes.PyDLL(None, use_errno=True)
            recv = libc.recv
            recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            recv.restype = ctypes.c_ssize_t
            accept4 = libc.accept4
            accept4.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
            accept4.restype = ctypes.c_int
            send = libc.send
            send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
            send.restype = ctypes.c_ssize_t
            close = libc.close
            close.argtypes = (ctypes.c_int,)
            close.restype = ctypes.c_int
            self._errno = ctypes.get_errno
            self._make_buf = lambda: ctypes.create_string_buffer(_RECV_SIZE)
            self._recv, self._accept4, self._send, self._close = recv, accept4, send, close
        except Exception:  # noqa: BLE001 - fall back to the socket module
            self._recv = self._accept4 = self._send = self._close = None
        try:
            self._ctl = _epoll_ctl()
        except Exception:  # noqa: BLE001 - fall back to the epoll object's methods
            self._ctl = None

    def _fail(self) -> OSError:
        err = self._errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            # (EINTR: re-arming in epoll brings us back at once if there is more)
            return BlockingIOError(err, os.strerror(err))
        return OSError(err, os.strerror(err))

    def accept(self, listener: socket.socket) -> socket.socket:
        """Like ``listener.accept()[0]`` on a non-blocking listener."""
        if self._accept4 is None:
            return listener.accept()[0]
        fd = self._accept4(listener.fileno(), None, None, _SOCK_CLOEXEC)
        if fd < 0:
            raise self._fail()
        try:
            # Family, type and proto given: no system call to find them out.
            return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
        except BaseException:
            os.close(fd)
            raise

    def recv(self, sock: socket.socket) -> bytes:
        """Like ``sock.recv(_RECV_SIZE, MSG_DONTWAIT)`` (BlockingIOError when nothing is there)."""
        if self._recv is None:
            return sock.recv(_RECV_SIZE, _DONTWAIT)
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = self._make_buf()
        n = self._recv(sock.fileno(), buf, _RECV_SIZE, _DONTWAIT)
        if n < 0:
            raise self._fail()
        data: bytes = buf[:n]
        return data

    def send(self, sock: socket.socket, data: bytes) -> int:
        """Like ``sock.send(data, MSG_DONTWAIT | MSG_NOSIGNAL)``: bytes sent, 0 when full."""
        if self._send is None:
            try:
                return sock.send(data, _SEND_FLAGS)
            except BlockingIOError:
                return 0
        n = self._send(sock.fileno(), data, len(data), _SEND_FLAGS)
        if n < 0:
            err = self._fail()
            if isinstance(err, BlockingIOError):
                return 0
            raise err
        return int(n)

    def close(self, sock: socket.socket) -> None:
        """Like ``sock.close()``."""
        if self._close is None:
            sock.close()
            return
        fd = sock.detach()
        if fd >= 0:
            self._close(fd)

    def ctl(self, ep: Any, op: int, fd: int, mask: int) -> None:
        """``ep.register`` (``_CTL_ADD``), ``ep.modify`` (``_CTL_MOD``) or ``ep.unregister``
        (``_CTL_DEL``) of ``fd``; OSError or ValueError (closed) like them."""
        if self._ctl is None:
            if op == _CTL_ADD:
                ep.register(fd, mask)
            elif op == _CTL_MOD:
                ep.modify(fd, mask)
            else:
                ep.unregister(fd)
            return
        if self._ctl(ep.fileno(), op, fd, mask) < 0:  # fileno(): ValueError once closed
            raise self._fail()


def _epoll_ctl() -> Callable[[int, int, int, int], int]:
    """libc's ``epoll_ctl`` through PyDLL, as ``ctl(epfd, op, fd, mask) -> 0 or -1``, checked.

    ``struct epoll_event`` is packed on x86-64 (12 bytes), naturally aligned elsewhere. Python's
    epoll reads ``data.fd`` back: an event armed here on a pipe must come back from ``poll()``
    with that fd and mask, or this raises and the caller keeps the epoll object's methods.
    """
    import ctypes
    import platform

    class _Data(ctypes.Union):
        _fields_ = [("fd", ctypes.c_int), ("u64", ctypes.c_uint64)]

    fields = [("events", ctypes.c_uint32), ("data", _Data)]
    attrs: Dict[str, Any] = {"_fields_": fields}
    if platform.machine().lower() in ("x86_64", "amd64") and ctypes.sizeof(ctypes.c_void_p) == 8:
        attrs = {"_pack_": 1, "_fields_": fields}  # (_pack_ must come before _fields_)
    event_type: Any = type("_EpollEvent", (ctypes.Structure,), attrs)
    libc = ctypes.PyDLL(None, use_errno=True)
    epoll_ctl = libc.epoll_ctl
    epoll_ctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    epoll_ctl.restype = ctypes.c_int
    byref = ctypes.byref

    def ctl(epfd: int, op: int, fd: int, mask: int) -> int:
        event = event_type()
        event.events = mask
        event.data.fd = fd
        return int(epoll_ctl(epfd, op, fd, byref(event)))

    ep = select.epoll()
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        if ctl(ep.fileno(), _CTL_ADD, r, _IN) < 0:
            raise OSError(ctypes.get_errno(), "epoll_ctl")
        if ep.poll(0) != [(r, _IN)]:
            raise OSError(errno.EINVAL, "struct epoll_event layout")
    finally:
        ep.close()
        os.close(r)
        os.close(w)
    return ctl


class _Conn:
    """One client connection and what has been read from or is still to be written to it.

    At any moment a connection is either *owned* by the one handler thread that took its epoll
    event (and only that thread touches its socket and buffers) or *armed* in epoll with
    ``EPOLLONESHOT``, waiting for its next event. Nobody else closes an owned connection.
    """

    __slots__ = (
        "active_at",
        "buf",
        "closed",
        "eof",
        "fd",
        "head_at",
        "keep",
        "missed",
        "out",
        "out_at",
        "owned",
        "registered",
        "sndbuf",
        "sock",
    )

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        """Bytes read and not yet answered: at most one partial head (<= MAX_REQUEST_BYTES)
        plus one recv, since nothing more is read while a complete head is waiting."""
        self.out = b""
        """The unsent rest of the current response; nothing is read while there is one."""
        self.keep = True
        self.eof = False
        self.owned = True  # the accepting thread serves it first
        self.missed = False
        """An event came while the owner was re-arming it: the owner serves again."""
        self.closed = False
        self.registered = False
        self.sndbuf = 0
        """The SO_SNDBUF asked for (0: the system's default)."""
        self.active_at = now
        """Accepted, or last request answered: the idle deadline and the shedding order."""
        self.head_at = 0.0
        """When the first byte of the request now being read arrived (the read deadline)."""
        self.out_at = 0.0
        """When the response being written last made progress (the write deadline)."""


class AgentServer:
    """Serves ``endpoints`` on a private Unix socket at ``path`` until ``stop()``.

    Built for the worst moments: every app thread burning CPU in pure Python, and clients that
    connect and then say nothing, or half a request, or one byte at a time.

    **Nobody who is not sending holds a thread.** ``handler_threads`` threads all wait in one
    epoll instance. The listening socket and every connection are registered with
    ``EPOLLONESHOT``, so each readiness event goes to exactly one thread, which then *owns* that
    connection: it reads what is there without blocking (``MSG_DONTWAIT``), answers every
    complete request in its buffer, writes without blocking, and re-arms the connection in epoll
    for its next event before going back to wait. A partial request head stays in the
    connection's buffer between events; a response the client does not read stays in its output
    buffer (and nothing more is read from it) until the socket is writable again. So a stuck
    client costs one buffered connection, never a thread, and any free thread answers the next
    complete request at once.

    **One wait for the GIL per keep-alive request.** Under CPU load each time an agent thread
    gives up the GIL it queues behind the busy app threads for it again (BENCHMARKS.md). The
    thread that takes a request's event serves it itself: the epoll wake-up is the one wait; the
    ``recv`` after it keeps the GIL, then the endpoint, and a ``send`` that hands
    the answer to the kernel (re-arming comes after). Every one of those calls keeps the GIL
    (``_Syscalls``), and a send buffer sized to the answer (``_grow_sndbuf``) takes even
    megabytes in one ``send``. No selector-to-worker hand-off, no per-call timeouts, no system
    call made while holding the table's lock. A new connection is served in the wake-up that
    accepted it when its request is already there (clients send it with the connect).

    **Bounded.** At most ``max_connections`` connections are kept. A new one past that sheds the
    connection that has gone longest without an answered request (``503 too many connections:
    shed oldest``, written without blocking, or just closed if it cannot be written or a
    response is half-written). One thread (the first) also sweeps once per ``sweep_interval``:
    a head unfinished ``read_timeout`` after its first byte gets 408 and is closed; a response
    that makes no progress for ``read_timeout`` is dropped; a connection silent for
    ``idle_timeout`` is closed.
    """

    def __init__(
        self,
        path: str,
        endpoints: Dict[str, Endpoint],
        handler_threads: int = 3,
        read_timeout: float = REQUEST_READ_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        sweep_interval: float = 0.5,
    ) -> None:
        self.path = path
        self.endpoints = endpoints
        self.handler_threads = max(1, handler_threads)
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max(1, max_connections)
        self.sweep_interval = sweep_interval
        self.allowed_uids = {0, os.getuid(), os.geteuid()}
        self.stats = {
            "connections": 0,
            "refused_peer": 0,
            "rejected_busy": 0,
            "bad_requests": 0,
            "shed": 0,
            "timed_out": 0,
        }
        self._lock = threading.Lock()
        """Guards ``_conns``, each connection's ``owned``/``closed`` and epoll (re-)arming."""
        self._conns: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        """fd -> connection, oldest first (moved to the end when a request is answered)."""
        self._stopping = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._listen_fd = -1
        self._ep: Optional[Any] = None  # select.epoll (Linux only, like SO_PEERCRED)
        self._identity = (0, 0, 0)
        self._wake_r = self._wake_w = -1
        self._accept_paused_until = 0.0
        self._next_sweep = 0.0
        self._resumed_at = 0.0
        """When the agent's threads last ran again after a stall (``_sweep``)."""
        self._threads: List[threading.Thread] = []
        self._sys = _Syscalls()
        self.pid = os.getpid()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._sock, self._identity = bind_private(self.path)
        try:
            self._sock.setblocking(False)  # accept() only when epoll says so; never waits
            try:
                # Room for a burst: clients connecting without waiting get EAGAIN when it is full.
                self._sock.listen(max(16, min(2 * self.max_connections, 1024)))
            except OSError:
                pass
            self._listen_fd = self._sock.fileno()
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._ep = select.epoll()
            # The wake pipe is level-triggered: one byte from stop() wakes every thread.
            self._ep.register(self._wake_r, select.EPOLLIN)
            self._ep.register(self._listen_fd, _IN | _ONESHOT)
        except BaseException:
            self._close_fds()
            if self.pid == os.getpid():
                unlink_if_ours(self.path, self._identity)
            raise
        self._threads = [
            threading.Thread(
                target=self._loop,
                args=(n == 0,),
                name="cpinspect-http-%d" % (n + 1),
                daemon=True,
            )
            for n in range(self.handler_threads)
        ]
        for t in self._threads:
            t.start()

    def socket_is_ours(self) -> bool:
        """The file at ``path`` is still the socket this server bound (not removed, not replaced
        by someone else's file): else nobody can reach us and ``install()`` binds again."""
        try:
            return file_identity(self.path) == self._identity
        except OSError:
            return False

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, remove our socket file, end the threads, close every descriptor.

        In a forked child (another pid) the descriptors are the parent's too: they are only
        closed here, never shut down or changed in the shared epoll, and the wake pipe is left
        alone, so the parent's agent keeps serving.
        """
        self._stopping.set()
        same_process = self.pid == os.getpid()
        if same_process:
            unlink_if_ours(self.path, self._identity)
            self._wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        stuck = any(t.is_alive() for t in self._threads if t is not threading.current_thread())
        with self._lock:
            # A thread still inside an endpoint closes the connection it owns when it returns.
            doomed = [c for c in self._conns.values() if not (stuck and c.owned)]
            for c in doomed:
                del self._conns[c.fd]
                c.closed = True
        for c in doomed:
            c.sock.close()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._ep is not None:
            self._ep.close()
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

    # -- the handler threads -------------------------------------------------------------------

    def _loop(self, sweeper: bool) -> None:
        """Wait for one event, serve it, repeat. The first thread also runs the sweep."""
        ep = self._ep
        assert ep is not None
        timeout = self.sweep_interval if sweeper else -1.0
        while not self._stopping.is_set():
            try:
                events = ep.poll(timeout, 1)
            except (OSError, ValueError):  # closed under us by stop()
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            try:
                for fd, _mask in events:
                    if fd == self._wake_r:
                        if self._stopping.is_set():
                            return
                        self._drain_wake()
                    elif fd == self._listen_fd:
                        self._accept_some()
                    else:
                        self._on_ready(fd)
                if sweeper and time.monotonic() >= self._next_sweep:
                    self._sweep()
            except Exception:  # noqa: BLE001 - a handler thread must survive anything
                time.sleep(0.01)

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def _accept_some(self) -> None:
        """Accept the clients waiting (a few at most), take them in, re-arm, serve each.

        Taking them in comes before re-arming, so that the table's order is the order of arrival
        (the shedding order), whichever thread accepts next. Accepting is cheap (the GIL is
        held through it, see ``_Syscalls``): a burst of connections empties the backlog at once,
        so clients that connect without waiting (httpx with a timeout) are not refused.
        A lone new client is served at once; a burst goes into epoll, for any free thread.
        """
        assert self._sock is not None
        admitted: List[_Conn] = []
        refused: List[Tuple[socket.socket, int, str]] = []
        shed: List[_Conn] = []
        rearm = True
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                conn = self._sys.accept(self._sock)
            except BlockingIOError:
                break
            except OSError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno in _OUT_OF_RESOURCES:
                    # Out of descriptors or memory: re-arming now would wake us again at once.
                    # The sweep re-arms after a pause; the pending clients wait in the backlog.
                    with self._lock:
                        self._accept_paused_until = time.monotonic() + 0.2
                    rearm = False
                    break
                continue  # e.g. ECONNABORTED: that client is gone, the next may be fine
            c, refusal, victims = self._admit(conn)
            shed.extend(victims)
            if c is None:
                refused.append((conn, refusal[0], refusal[1]))
            else:
                admitted.append(c)
        if rearm:
            self._arm_listener()  # before serving: another thread can accept meanwhile
        for victim in shed:  # (never one of this batch: they are ours, owned, until served)
            self._close_unowned(victim, 503, SHED_MESSAGE)
        for conn, status, message in refused:
            self._reply_nowait(conn, status, message)
        if len(admitted) == 1:
            # Clients like curl send the request with the connect: try it now, before any wait.
            self._serve_guarded(admitted[0])
            return
        # A burst: into epoll, all of them, in order. Serving them one by one here would keep
        # the later ones owned by this thread (not sheddable, not served by the free threads).
        for c in admitted:
            if self._release(c, _IN):
                self._serve_guarded(c)

    def _arm_listener(self) -> None:
        ep = self._ep
        if ep is None or self._stopping.is_set():
            return
        try:
            self._sys.ctl(ep, _CTL_MOD, self._listen_fd, _IN | _ONESHOT)
        except (OSError, ValueError):
            pass

    def _admit(self, conn: socket.socket) -> Tuple[Optional[_Conn], Tuple[int, str], List[_Conn]]:
        """(the new connection or None, why not, the connections it sheds). No GIL hand-off."""
        uid = peer_uid(conn)
        if uid is None or uid not in self.allowed_uids:
            with self._lock:
                self.stats["connections"] += 1
                self.stats["refused_peer"] += 1
            why = "peer uid %s may not inspect this process (uid %d); run as that user or root"
            return None, (403, why % (uid, os.geteuid())), []
        if conn.gettimeout() is not None:  # an app's socket.setdefaulttimeout()
            conn.settimeout(None)  # (MSG_DONTWAIT does the rest; no Python-level polling)
        c = _Conn(conn, time.monotonic())
        shed: List[_Conn] = []
        with self._lock:
            self.stats["connections"] += 1
            while len(self._conns) >= self.max_connections:
                victim = next((v for v in self._conns.values() if not v.owned), None)
                if victim is None:
                    break
                del self._conns[victim.fd]
                victim.closed = True
                shed.append(victim)
            self.stats["shed"] += len(shed)
            if len(self._conns) >= self.max_connections:
                # Only when every kept connection is being served at this very moment.
                self.stats["rejected_busy"] += 1
                return None, (503, "agent busy: too many open connections"), shed
            self._conns[c.fd] = c
        return c, (0, ""), shed

    def _on_ready(self, fd: int) -> None:
        with self._lock:
            c = self._conns.get(fd)
            if c is None:
                return  # closed meanwhile (or a stale event for a reused fd number)
            if c.owned:
                c.missed = True  # its owner is re-arming it: it serves again instead
                return
            c.owned = True
        self._serve_guarded(c)

    def _serve_guarded(self, c: _Conn) -> None:
        try:
            self._serve(c)
        except Exception:  # noqa: BLE001 - one connection's trouble ends that connection only
            self._discard(c)

    def _serve(self, c: _Conn) -> None:
        """Advance ``c`` as far as it goes without waiting; then re-arm it or close it.

        Reads at most once per event: a client trickling bytes gets one ``recv`` per wake-up.
        """
        did_read = False
        answered = 0
        while True:
            if self._stopping.is_set():
                self._discard(c)
                return
            if c.out:
                try:
                    sent = self._sys.send(c.sock, c.out)
                except OSError:
                    self._discard(c)
                    return
                if sent:
                    c.out = c.out[sent:]
                    c.out_at = time.monotonic()
                if c.out:
                    # The client is not reading: wait until it does.
                    if self._release(c, _OUT):
                        did_read = False
                        continue
                    return
                if not c.keep:
                    self._discard(c)
                    return
            if len(c.buf) > MAX_REQUEST_BYTES or b"\r\n\r\n" in c.buf:
                if answered >= _REQUESTS_PER_TURN:
                    # Pipelined requests: let other connections' events in, come back at once
                    # (a socket that is not writable is served when it is).
                    if self._release(c, _OUT):
                        did_read = False
                        answered = 0
                        continue
                    return
                self._answer(c)
                answered += 1
                continue
            if c.eof:
                if c.buf.strip():
                    self._bad(c, 400, "connection closed mid-request")
                    continue
                self._discard(c)
                return
            if did_read:
                if self._release(c, _IN):
                    did_read = False
                    continue
                return
            did_read = True
            try:
                chunk = self._sys.recv(c.sock)
            except BlockingIOError:
                if self._release(c, _IN):
                    did_read = False
                    continue
                return
            except OSError:  # e.g. ECONNRESET (a client that closed with SO_LINGER 0)
                self._discard(c)
                return
            if not chunk:
                c.eof = True
                continue
            if not c.buf:
                c.head_at = time.monotonic()
            c.buf += chunk

    def _answer(self, c: _Conn) -> None:
        """Answer the request at the start of ``c.buf`` (queue the response in ``c.out``)."""
        head, sep, rest = c.buf.partition(b"\r\n\r\n")
        if not sep or len(head) > MAX_REQUEST_BYTES:
            self._bad(c, 431, "request head over %d bytes" % MAX_REQUEST_BYTES)
            return
        try:
            method, target, version, headers = _parse_head(head)
        except _BadRequest as exc:
            self._bad(c, exc.status, exc.message)
            return
        length = headers.get("content-length", "0").strip() or "0"
        if headers.get("transfer-encoding") or not length.isdigit() or int(length) > 0:
            # We take no bodies, and the rest of the stream cannot be framed: close after.
            self._bad(c, 413, "request bodies are not accepted")
            return
        keep_alive = _wants_keep_alive(version, headers)
        status, body = self._dispatch(method, target)
        try:
            payload = _response(status, body, keep_alive, head_only=(method == "HEAD"))
        except Exception as exc:  # noqa: BLE001 - e.g. a probe returned something unencodable
            status = 500
            payload = _response(
                500,
                error_body(500, "encoding the answer failed: %s" % type(exc).__name__),
                keep_alive,
                head_only=(method == "HEAD"),
            )
        if len(payload) > _SNDBUF_ASK_ABOVE and len(payload) > c.sndbuf:
            self._grow_sndbuf(c, len(payload))
        now = time.monotonic()
        c.buf = rest
        c.head_at = now if rest else 0.0
        c.out = payload
        c.out_at = now
        c.keep = keep_alive
        with self._lock:
            c.active_at = now
            if not c.closed:
                self._conns.move_to_end(c.fd)  # answered: the last in line to be shed

    def _grow_sndbuf(self, c: _Conn, size: int) -> None:
        """Room in the socket for the whole answer, so that one ``send`` hands it over.

        Each time a send fills the buffer the rest waits for EPOLLOUT: a wake-up, and under
        CPU load a wait in line for the GIL (a 2.9 MB answer at 1,000 threads took 7 of them in
        the default 416 KB). The kernel doubles what is asked for and caps it at
        ``net.core.wmem_max`` (4 MB here; 208 KB on a stock kernel, where this helps less). It
        is a limit, not an allocation: the kernel holds only what is in flight, the answer we
        hold anyway. ``setsockopt`` keeps the GIL.
        """
        ask = min(size + 65536, _SNDBUF_ASK_MAX)
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ask)
        except OSError:
            pass
        c.sndbuf = ask

    def _bad(self, c: _Conn, status: int, message: str) -> None:
        with self._lock:
            self.stats["bad_requests"] += 1
        c.buf = b""
        c.out = _error_response(status, message)
        c.out_at = time.monotonic()
        c.keep = False

    def _release(self, c: _Conn, mask: int) -> bool:
        """Arm ``c`` for its next event and give up ownership; True: keep serving it.

        The arming (a system call) is made outside the lock: a thread holding the lock while it
        waits for the GIL again would make every other handler wait behind it. ``c`` stays owned
        meanwhile, so nobody closes it (and its fd number is never reused under us); an event
        arriving in that window is noted in ``missed`` by the thread that got it, and we serve
        again instead of letting go.
        """
        ep = self._ep
        try:
            if ep is None or self._stopping.is_set():
                raise ValueError("stopping")
            if c.registered:
                self._sys.ctl(ep, _CTL_MOD, c.fd, mask | _ONESHOT)
            else:
                self._sys.ctl(ep, _CTL_ADD, c.fd, mask | _ONESHOT)
                c.registered = True
        except (OSError, ValueError):
            self._discard(c)
            return False
        with self._lock:
            if c.missed:
                c.missed = False
                return True
            c.owned = False
        return False

    def _discard(self, c: _Conn) -> None:
        """Close a connection this thread owns (or that nobody can reach any more)."""
        with self._lock:
            if self._conns.get(c.fd) is c:
                del self._conns[c.fd]
            c.closed = True
        self._unregister(c)
        self._sys.close(c.sock)

    def _close_unowned(self, c: _Conn, status: int, message: str) -> None:
        """Close ``c``, already taken out of ``_conns`` under the lock while nobody owned it.

        A short error answer fits in any socket buffer: it is written without waiting, unless
        part of a response is already out (it would corrupt the stream), or it is just closed.
        """
        self._unregister(c)
        if status and not c.out:
            self._reply_nowait(c.sock, status, message)
        else:
            self._sys.close(c.sock)

    def _unregister(self, c: _Conn) -> None:
        # Explicitly: a descriptor a forked child still holds stays in our epoll after close.
        ep = self._ep
        if c.registered and ep is not None and self.pid == os.getpid():
            try:
                self._sys.ctl(ep, _CTL_DEL, c.fd, 0)
            except (OSError, ValueError):
                pass
            c.registered = False

    def _reply_nowait(self, conn: socket.socket, status: int, message: str) -> None:
        """Write a short error answer if the socket takes it at once, then close."""
        try:
            self._sys.send(conn, _error_response(status, message))
        except OSError:
            pass
        finally:
            self._sys.close(conn)

    def _sweep(self) -> None:
        now = time.monotonic()
        if self._next_sweep and now - self._next_sweep > STALL_GRACE:
            # This sweep runs late: the agent's threads could not run (a handler holding the
            # GIL in C, the process stopped). That time is nobody's silence: a request sent on a
            # kept-alive connection meanwhile waits in its buffer, unread, and closing that
            # connection as idle now would drop it (the inspector saw "lost the agent" after a
            # 40 s regex and reconnected). The timeouts count from the end of the stall.
            self._resumed_at = now
        self._next_sweep = now + self.sweep_interval
        resumed = self._resumed_at
        expired: List[Tuple[_Conn, int]] = []
        rearm = False
        with self._lock:
            if self._accept_paused_until and now >= self._accept_paused_until:
                self._accept_paused_until = 0.0
                rearm = True
            for c in self._conns.values():
                if c.owned:
                    continue
                if c.out:
                    if now - max(c.out_at, resumed) > self.read_timeout:
                        expired.append((c, 0))  # not reading its answer: just close
                elif c.buf:
                    if now - max(c.head_at, resumed) > self.read_timeout:
                        expired.append((c, 408))
                elif now - max(c.active_at, resumed) > self.idle_timeout:
                    expired.append((c, 0))
            for c, _status in expired:
                del self._conns[c.fd]
                c.closed = True
            self.stats["timed_out"] += len(expired)
        for c, status in expired:
            self._close_unowned(c, status, "timed out reading the request")
        if rearm:
            self._arm_listener()

    def _dispatch(self, method: str, target: str) -> Tuple[int, Dict[str, Any]]:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. "//[" (an unclosed IPv6 host)
            return 400, error_body(400, "malformed request target")
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
    # The body's pieces as bytes, joined once with the head (not text, bytes, head + bytes).
    chunks = [part.encode() for part in encode_parts(body)]
    lines = [
        "HTTP/1.1 %d %s" % (status, REASONS.get(status, "Error")),
        "Content-Type: application/json",
        "Content-Length: %d" % sum(map(len, chunks)),
        "Cache-Control: no-store",
        "X-Cpinspect-Schema: %d" % SCHEMA_VERSION,
        "Connection: %s" % ("keep-alive" if keep_alive else "close"),
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if head_only:
        return head
    chunks.insert(0, head)
    return b"".join(chunks)


def _error_response(status: int, message: str) -> bytes:
    return _response(status, error_body(status, message), keep_alive=False)
