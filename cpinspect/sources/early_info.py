"""The agent's ``/v1/info`` asked for at a one-shot command's start, beside py-spy's early read.

``connect_agent`` asks the agent for its info before anything else, and waits for it: an agent
queued for the GIL behind workers spinning in pure Python takes 0.35-0.8 s for that tiny
answer (measured 2026-12-01), and a stuck one the whole timeout. Asked from a thread at the
start of ``dump`` and ``snapshot`` (``cli.early``), that wait runs beside the command's
imports (~0.3 s) instead of after them. ``connect_agent`` then takes the answer (``take``)
when it came from the very socket it would have asked, and otherwise asks as always.

The agent's ``/v1/threads`` is asked as soon as the info is in, on a second connection, rather
than after the imports and the session's opening (~0.1-0.3 s): without spinners its answer is
in before the imports are done. ``connect_agent`` hands it to the source (``AgentSource.
prefetched``), whose first ``threads()`` reads it instead of asking again.

Standard library only; a plain HTTP/1.1 request on the Unix socket, ``Connection: close``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Dict, Optional, Tuple

ANSWER_LIMIT = 1 << 20
"""Bytes read at most of the info (a few hundred)."""
THREADS_LIMIT = 64 << 20
"""Bytes read at most of the threads (1,000 threads: 2.9 MB); past that the answer is dropped
and the session asks as always."""
INFO = "/v1/info"
THREADS = "/v1/threads"
ASK_WAIT = 0.5
"""How long ``take`` waits for the request to be sent (finding the socket takes milliseconds)."""
WAIT_LIMIT = 30.0
"""Seconds the request's thread waits for the answer at most (nobody may be waiting on it)."""


class Prefetch:
    """One ``/v1/info`` request sent early, and what came back."""

    def __init__(self, pid: int, endpoint: str = INFO) -> None:
        self.pid = pid
        self.endpoint = endpoint
        """What is asked: ``INFO`` or ``THREADS``."""
        self.path: Optional[str] = None
        """The socket asked (``find_agent(pid).connect_path``); None if it could not be."""
        self.sent: Optional[float] = None
        """``time.monotonic()`` when the request was sent."""
        self.answered: Optional[float] = None
        self.status: Optional[int] = None
        self.headers: Dict[str, str] = {}
        self.body = b""
        self.asked = threading.Event()
        """Set once the request is sent, or could not be."""
        self.done = threading.Event()
        """Set once the answer is in, or there will be none."""
        self.claimed = False
        """The request is being sent (under ``_lock``): too late to call it off."""
        self.cancelled = False
        """Called off before it was sent (under ``_lock``): nobody would read the answer, and
        the agent must not build it for nothing (1,000 threads: 2.9 MB)."""

    def wait(self, timeout: float) -> bool:
        """Wait until ``timeout`` seconds after the request was sent; whether it was answered
        (a 200 with a body)."""
        if self.sent is not None:
            self.done.wait(max(0.0, self.sent + timeout - time.monotonic()))
        return self.done.is_set() and self.status == 200 and bool(self.body)

    def took(self) -> Optional[float]:
        if self.sent is None or self.answered is None:
            return None
        return self.answered - self.sent


_pending: Dict[Tuple[int, str], Prefetch] = {}
_lock = threading.Lock()


def start(pid: int, threads: bool = True) -> None:
    """Ask the agent of ``pid`` for its info (and its threads) from daemon threads. Never
    raises."""
    first: Optional[Prefetch] = None
    for endpoint in (INFO, THREADS) if threads else (INFO,):
        fetch = Prefetch(pid, endpoint)
        with _lock:
            if (pid, endpoint) in _pending:
                continue
            _pending[pid, endpoint] = fetch
        try:
            threading.Thread(
                target=_run, args=(fetch, first), name="cpinspect-early", daemon=True
            ).start()
        except RuntimeError:
            fetch.done.set()
        first = fetch


def take(pid: int, path: str, endpoint: str = INFO) -> Optional[Prefetch]:
    """The early request of ``endpoint`` for ``pid`` if it went to ``path`` (once); None
    otherwise."""
    with _lock:
        fetch = _pending.pop((pid, endpoint), None)
    if fetch is None:
        return None
    fetch.asked.wait(ASK_WAIT)  # still finding the socket, or connecting
    with _lock:
        if not fetch.claimed:
            fetch.cancelled = True  # too late: the caller asks itself
            return None
    fetch.asked.wait(ASK_WAIT)  # being sent right now
    return fetch if fetch.path == path and fetch.sent is not None else None


def clear() -> None:
    """Forget the requests nobody took (a command that failed before connecting), calling
    off those not sent yet."""
    with _lock:
        for fetch in _pending.values():
            fetch.cancelled = fetch.cancelled or not fetch.claimed
        _pending.clear()


def _run(fetch: Prefetch, after: Optional[Prefetch] = None) -> None:
    """Ask for ``fetch``, once ``after`` is answered: the threads once the info is in, never
    both at once. The info decides whether the agent is silent (``connect_agent`` waits its
    timeout for it): the agent building 1,000 threads' answer beside it, behind spinning
    workers, could push the tiny answer past that limit."""
    sock: Optional[socket.socket] = None
    try:
        from cpinspect.attach.discovery import find_agent

        if after is not None:
            after.done.wait(WAIT_LIMIT)
            if after.status != 200 or not after.body:
                return  # no info: an agent silent or answering badly, asked by the session
        path = find_agent(fetch.pid).connect_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(WAIT_LIMIT)
        sock.connect(path)
        # Only to the agent of this very process: a socket file replaced by another process's
        # socket hears nothing from us (``connect_agent`` then says what stands there).
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[0] != fetch.pid:
            return
        request = "GET %s HTTP/1.1\r\nHost: cpinspect\r\nConnection: close\r\n\r\n"
        with _lock:
            if fetch.cancelled:
                return
            fetch.claimed = True
        sock.sendall((request % fetch.endpoint).encode("ascii"))
        fetch.path = path
        fetch.sent = time.monotonic()
        fetch.asked.set()
        chunks = []
        size = 0
        limit = THREADS_LIMIT if fetch.endpoint == THREADS else ANSWER_LIMIT
        while size < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        fetch.answered = time.monotonic()
        fetch.status, fetch.headers, fetch.body = _parse(b"".join(chunks))
    except Exception:  # noqa: BLE001 - connect_agent asks again, and says what is wrong
        fetch.status = None
    finally:
        if sock is not None:
            sock.close()
        fetch.asked.set()
        fetch.done.set()


def _parse(data: bytes) -> Tuple[Optional[int], Dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(" ", 2)
    if len(words) < 2 or not words[1].isdigit():
        return None, {}, b""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    if not length.isdigit() or int(length) != len(body):
        return None, headers, b""  # cut short
    return int(words[1]), headers, body
