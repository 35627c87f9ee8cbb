"""Log capture: a handler on CherryPy's loggers feeding a bounded ring, read by ``GET /v1/log``.

The handler sits on ``cherrypy.error`` and ``cherrypy.access`` (every app logger propagates
into them by default) and on the app loggers that do not propagate (cherrypy-internals.md 4).
It is appended last and added and removed copy-on-write: ``Logger.callHandlers`` iterates the
handler list without a lock, and removing an entry in place could make a thread logging at that
moment skip the app's own next handler. It never changes a logger's level, never formats for
anyone else, never raises, and never writes to stderr: failures are counted.

What ``handle`` does runs in the app's thread, once per record (an access record per
request: ``AccessHandler``, on the access loggers, reads the usual one without the general
path's checks), so it does as little as it can: read the record's fields, find the request in flight
on this thread (the tracker's table, else ``cherrypy.serving``), read that request's and
response's fields with plain attribute reads, and store them as one flat tuple in a
preallocated-as-it-fills list used as a ring. Everything derived (the request's wire dict as
``/v1/threads`` builds it, the redacted query, status, size, duration) is built when the ring is
read (``/v1/log``, about once a second); for the socket each record is written as JSON text
straight from its tuple (``record_json``: no dicts, the members that repeat between records
written once per read), since a follower reads every access record the app logs and that read
cost the target more per request than capturing it. Long text is cut on arrival (memory bounds).
A traceback from ``exc_info`` must be formatted now (its frames die with the request); it is
formatted without reading any source file (linecache's cache only: no file I/O on the request
path, invariant 2), unless one of the app's own handlers already formatted it (``exc_text``).

Memory is bounded three ways: ``capacity`` records, ``LOG_MAX_MESSAGE`` characters per message
and per traceback, and ``MAX_TOTAL_CHARS`` characters over the whole ring; the oldest records
go first and the cursor's ``missed`` counts them.
"""

import logging
import os
import re
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from itertools import repeat
from json.encoder import encode_basestring_ascii as _esc
from operator import itemgetter
from threading import get_ident
from types import FunctionType, MethodType, TracebackType
from typing import Any, Dict, List, Optional, Set, Tuple

from .jsonparts import JsonArray, dumps
from .probes.threads import RequestAtoms, handler_name, request_atoms, request_from_atoms
from .redact import redact_log_text, redact_query
from .tracking import RequestTracker
from .wire import LOG_DEFAULT_CAPACITY, LOG_MAX_MESSAGE

CAPACITY_ENV = "CPINSPECT_LOG_CAPACITY"
ACCESS_ENV = "CPINSPECT_LOG_ACCESS"
MIN_CAPACITY = 10
MAX_CAPACITY = 1000000
MAX_TOTAL_CHARS = 16 * 1024 * 1024
"""Characters of message and traceback text the ring holds at most, over all its records."""
MAX_CHAINED = 8
"""Chained exceptions (``__cause__`` / ``__context__``) formatted per traceback at most."""
MAX_FRAMES = 200
"""Frames formatted per exception at most (a deep recursion keeps its innermost ones)."""

TRACEBACK_MARK = "Traceback (most recent call last):"
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_ACCESS_TAIL = re.compile(r'" (\d{3}|-) (\d+|-)(?: |$)')

# One stored record: ONE flat tuple of raw values, built in the app's thread with attribute
# reads only; everything derived (the request's client and peer, redaction, status, size,
# duration) is computed when the ring is read (GET /v1/log: about once a second). Its slots:
#   0 created  1 levelno  2 levelname  3 logger name  4 message  5 cut  6 traceback or None
#   7 thread ident  8 thread name  9 request source ("hook", "serving"; "" = no request)
#   10 method  11 script_name  12 path_info  13 query_string (raw: redacted when read)
#   14 remote ip  15 remote port  16 X-Forwarded-For's first address (or the careful
#      path's client; None: no such header)
#   17 response.time  18 handler name  19 stage
#   20 status raw  21 access kind (0 not an access record; 1 slot 20 is response.output_status;
#      2 it is response.status; 3 no response: status and size parsed from the message)
#   22 Content-Length raw  23 Content-Type raw (access records; what the response said it
#      served: the findings compare it with a static file's extension)
# Plain atoms (str, int, float, bytes, None): no dicts, no per-record object but the tuple,
# invisible to the cyclic GC once untracked. The ring reads only slots 0, 4 and 6.
Fields = Tuple[Any, ...]
_NO_REQUEST = ("", None, None, None, None, None, None, None, None, None, None)
"""Slots 9-19 of a record logged outside any request."""

_END_KEY = itemgetter(0, 1)
_END_TIME = itemgetter(2)
"""A tracker end ``(thread ident, response.time, end)``: its key and its end."""

ACCESS_NONE = 0
ACCESS_OUTPUT_STATUS = 1
ACCESS_STATUS = 2
ACCESS_FROM_MESSAGE = 3


def _chars_of(fields: Fields) -> int:
    tb = fields[6]
    return len(fields[4]) + (len(tb) if tb is not None else 0)


def capacity_from(value: Any) -> int:
    """A capacity from config or the environment, clamped; the default when unset or bad."""
    if value is None or value == "":
        value = os.environ.get(CAPACITY_ENV, "")
    try:
        n = int(value)
    except (TypeError, ValueError):
        return LOG_DEFAULT_CAPACITY
    return max(MIN_CAPACITY, min(MAX_CAPACITY, n))


def access_from(value: Any) -> bool:
    """Whether to capture access records (config, else the environment; default yes)."""
    if value is None or value == "":
        value = os.environ.get(ACCESS_ENV, "")
    if value is None or value == "":
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def _cached_line(filename: str, lineno: int) -> Optional[str]:
    """The source line if linecache already holds the file: never read a file for it."""
    try:
        import linecache

        entry = linecache.cache.get(filename)
        if entry is None or len(entry) < 3:
            return None
        lines = entry[2]
        if 0 < lineno <= len(lines):
            return str(lines[lineno - 1]).strip() or None
    except Exception:  # noqa: BLE001
        pass
    return None


def _exception_only(etype: Any, value: Any) -> str:
    import traceback

    try:
        return "".join(traceback.format_exception_only(etype, value))
    except Exception:  # noqa: BLE001 - a __str__ that raises
        name = getattr(etype, "__qualname__", None) or str(etype)
        return "%s: <str() failed>\n" % name


def _format_one(etype: Any, value: Any, tb: Optional[TracebackType]) -> str:
    frames: List[str] = []
    skipped = 0
    while tb is not None:
        if len(frames) >= MAX_FRAMES:
            frames.pop(0)
            skipped += 1
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno
        entry = '  File "%s", line %d, in %s\n' % (code.co_filename, lineno, code.co_name)
        line = _cached_line(code.co_filename, lineno)
        if line:
            entry += "    %s\n" % line
        frames.append(entry)
        tb = tb.tb_next
    head = TRACEBACK_MARK + "\n"
    if skipped:
        head += "  [%d outer frames not shown]\n" % skipped
    return head + "".join(frames) + _exception_only(etype, value)


def format_exc_info(exc_info: Any) -> str:
    """``traceback.format_exception`` without reading source files (chains included, bounded)."""
    etype, value, tb = exc_info
    chain: List[Tuple[Any, Any, Optional[TracebackType]]] = [(etype, value, tb)]
    links: List[str] = []  # links[i] sits between chain[i + 1] (printed first) and chain[i]
    seen: Set[int] = {id(value)}
    while value is not None and len(chain) < MAX_CHAINED:
        cause = getattr(value, "__cause__", None)
        context = getattr(value, "__context__", None)
        if cause is not None and id(cause) not in seen:
            value, link = cause, _CAUSE
        elif (
            context is not None
            and id(context) not in seen
            and not getattr(value, "__suppress_context__", False)
        ):
            value, link = context, _CONTEXT
        else:
            break
        seen.add(id(value))
        chain.append((type(value), value, value.__traceback__))
        links.append(link)
    out: List[str] = []
    for i in range(len(chain) - 1, -1, -1):  # the outermost cause first, as Python prints it
        out.append(_format_one(*chain[i]))
        if i > 0:
            out.append(links[i - 1])
    return "".join(out)


def split_traceback(message: str) -> Tuple[str, Optional[str]]:
    """``(text before, traceback)`` when the message carries a traceback as text."""
    i = message.find(TRACEBACK_MARK)
    if i < 0:
        return message, None
    return message[:i].rstrip(), message[i:].rstrip("\n")


def cut_head(text: str, limit: int) -> Tuple[str, int]:
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def cut_traceback(text: str, limit: int) -> Tuple[str, int]:
    """Keep the first line and the end (the exception line): the middle goes, counted."""
    if len(text) <= limit:
        return text, 0
    first, _, rest = text.partition("\n")
    note = "\n  [...]\n"
    keep = max(0, limit - len(first) - len(note))
    if keep <= 0 or len(first) >= limit:
        return text[-limit:], len(text) - limit
    return first + note + rest[-keep:], len(rest) - keep


def _status_value(status: Any) -> Optional[int]:
    if isinstance(status, bytes):
        status = status.decode("latin-1", "replace")
    if status is None:
        return None
    if isinstance(status, int):
        return status
    head = str(status).split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def status_from(raw: Any, kind: int) -> Optional[int]:
    """The status code from what ``handle`` kept: ``response.output_status`` (kind 1,
    b"404 Not Found") or, when that was empty, ``response.status`` (kind 2)."""
    if kind == ACCESS_OUTPUT_STATUS:
        try:
            return int(raw[:3])
        except Exception:  # noqa: BLE001 - not CherryPy's bytes
            pass
    try:
        return _status_value(raw)
    except Exception:  # noqa: BLE001
        return None


def size_from(raw: Any) -> Optional[int]:
    """Body bytes from the kept Content-Length value (None: absent, a streamed body)."""
    try:
        return int(raw)
    except Exception:  # noqa: BLE001
        return None


def parse_access_line(message: str) -> Tuple[Optional[int], Optional[int], Optional[float]]:
    """(status, size, None) from a Combined Log Format line (when no request is seen)."""
    m = _ACCESS_TAIL.search(message)
    if m is None:
        return None, None, None
    status, size = m.group(1), m.group(2)
    return (int(status) if status.isdigit() else None, int(size) if size.isdigit() else None, None)


_RINGS: "weakref.WeakSet[LogRing]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a ring's lock at fork(): in the child that thread
    # does not exist, and the first record logged would wait for the lock forever.
    for ring in list(_RINGS):
        ring._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    # Once per module (not per ring: callbacks cannot be unregistered, they would pile up).
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LogRing:
    """Records in arrival order with consecutive sequence numbers; the oldest drop out first.

    A list used as a ring: the record of seq ``s`` sits at slot ``(s - 1) % capacity`` and is
    overwritten in place by seq ``s + capacity`` (no deque append/popleft, no reallocation
    once full). The list grows to ``capacity`` as records arrive, so an idle ring costs
    nothing. A slot holds a record exactly when that record is held (trimmed ones are None).
    Seqs are not stored: a record's seq is ``first`` plus its index in ``copy()``.
    """

    def __init__(self, capacity: int, max_total_chars: int = MAX_TOTAL_CHARS) -> None:
        self.capacity = capacity
        self.max_total_chars = max_total_chars
        self.buffer_id = os.urandom(8).hex()
        self._items: List[Optional[Fields]] = []
        self._chars = 0
        self._seq = 0  # the newest seq
        self._first = 1  # the oldest held seq (``_seq + 1`` when none is held)
        self._lock = threading.Lock()
        _RINGS.add(self)

    def append(self, fields: Fields) -> None:
        """Store a record's fields under the next seq (one slot write; the record it
        overwrites, the oldest, is let go)."""
        size = len(fields[4])
        tb = fields[6]
        if tb is not None:
            size += len(tb)
        # acquire/release, not ``with``: half the instructions (this runs per record).
        lock = self._lock
        lock.acquire()
        try:
            seq = self._seq + 1
            self._seq = seq
            items = self._items
            slot = (seq - 1) % self.capacity
            if slot == len(items):  # still filling
                items.append(fields)
            else:
                old = items[slot]
                items[slot] = fields
                if old is not None:  # full: the usual case, the oldest goes
                    tb = old[6]
                    size -= len(old[4]) if tb is None else len(old[4]) + len(tb)
                    self._first += 1
            self._chars += size
            if self._chars > self.max_total_chars:
                self._trim()
        finally:
            lock.release()

    def _trim(self) -> None:
        """Let the oldest go while over the text budget (keeping the newest record)."""
        items = self._items
        capacity = self.capacity
        while self._seq > self._first and self._chars > self.max_total_chars:
            slot = (self._first - 1) % capacity
            old = items[slot]
            items[slot] = None
            if old is not None:
                self._chars -= _chars_of(old)
            self._first += 1

    def resize(self, capacity: int) -> None:
        with self._lock:
            if capacity == self.capacity:
                return
            held = self._held()
            if len(held) > capacity:
                for old in held[: len(held) - capacity]:
                    self._chars -= _chars_of(old)
                held = held[len(held) - capacity :]
            self._first = self._seq - len(held) + 1
            items: List[Optional[Fields]] = [None] * min(capacity, self._seq)
            for i, fields in enumerate(held):
                items[(self._first + i - 1) % capacity] = fields
            self.capacity = capacity
            self._items = items
            self._trim()

    def _held(self, first: int = 0) -> List[Fields]:
        """The held records from seq ``first`` (the oldest held when it is older)."""
        first = max(first, self._first)
        count = self._seq - first + 1
        if count <= 0:
            return []
        items = self._items
        start = (first - 1) % self.capacity
        end = start + count
        out = (
            items[start:end] if end <= len(items) else items[start:] + items[: end - self.capacity]
        )
        return out  # type: ignore[return-value]  # held slots are never None

    def copy(self, after: int = 0) -> Tuple[List[Fields], int, int]:
        """The held records newer than seq ``after`` (all held by default), the seq of the
        first one, and the newest seq (0, 0 when none), copied under the lock (pointer
        copies only: a cursor's read copies what it has not seen, not the whole ring)."""
        with self._lock:
            held = self._held(after + 1)
            if not held:
                return [], 0, self._seq
            return held, max(self._first, after + 1), self._seq

    @property
    def chars(self) -> int:
        return self._chars

    def __len__(self) -> int:
        return max(0, self._seq - self._first + 1)


class CaptureHandler(logging.Handler):
    """Feeds the ring. ``handle`` skips logging's per-handler lock: the ring has its own."""

    def __init__(self, ring: LogRing, tracker: RequestTracker) -> None:
        super().__init__(logging.NOTSET)
        self.ring = ring
        self.tracker = tracker
        self._inflight = tracker.inflight  # never rebound
        self.max_message = LOG_MAX_MESSAGE
        self.failed = 0
        self.cut_records = 0
        self._serving: Any = None
        # The handler types handle() reads the name of directly (a page handler, perhaps inside
        # the encode tool's wrapper, calling a function or method; the rest go through
        # handler_name, same answer).
        self._encoder_type: Any = None
        self._page_types: Tuple[Any, ...] = ()
        try:
            import cherrypy

            self._serving = cherrypy.serving
            from cherrypy._cpdispatch import LateParamPageHandler, PageHandler
            from cherrypy.lib.encoding import ResponseEncoder

            self._encoder_type = ResponseEncoder
            self._page_types = (PageHandler, LateParamPageHandler)
        except Exception:  # noqa: BLE001
            pass

    def createLock(self) -> None:
        self.lock = None

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def handle(self, record: logging.LogRecord) -> Any:
        """Store the record: the app's thread runs this once per record, an access record per
        request, so it only reads attributes and builds one tuple (module docstring)."""
        try:
            if self.filters and not self.filter(record):
                return False
            msg = record.msg
            message = self._message_of(record) if record.args or type(msg) is not str else msg
            cut = 0
            tb: Optional[str] = None
            if (
                record.exc_info
                or record.exc_text
                or len(message) > self.max_message
                or TRACEBACK_MARK in message
            ):
                message, cut, tb = self._text_of(record, message)

            ident = record.thread or get_ident()
            # The request in flight on this thread: the tracker's (as /v1/threads uses), else
            # the thread's own cherrypy.serving (a record from before on_start_resource).
            tracked = self._inflight.get(ident)
            if tracked is not None:
                request, response = tracked
                source = "hook"
            else:
                request, response, source = self._serving_request()
            port: Any = None
            forwarded: Any = None
            started: Any = None
            handler: Optional[str] = None
            stage: Any = None
            if request is None:
                method = script = path_info = query = ip = None
            else:
                try:
                    # Attributes every cherrypy Request has (class defaults): direct reads,
                    # kept raw (``_text`` makes them strings when the ring is read).
                    remote = request.remote
                    ip = remote.ip
                    port = remote.port
                    method = request.method
                    script = request.script_name
                    path_info = request.path_info
                    query = request.query_string
                    forwarded = dict.get(request.headers, "X-Forwarded-For")
                    if forwarded:  # rare: kept as its first address (bounded, as before)
                        forwarded = str(forwarded).split(",")[0].strip()
                    started = response.time if response is not None else None
                    handler = self._handler_of(request)
                    stage = request.stage
                except Exception:  # noqa: BLE001 - the careful path (getattr with defaults)
                    (
                        source,
                        method,
                        script,
                        path_info,
                        query,
                        ip,
                        port,
                        forwarded,
                        started,
                        handler,
                        stage,
                    ) = self._careful_request(request, response, source)

            name = record.name
            kind = ACCESS_NONE
            status: Any = None
            length: Any = None
            ctype: Any = None
            if response is not None and name.startswith("cherrypy.access"):
                try:
                    status = response.output_status  # b"404 Not Found"
                    kind = ACCESS_OUTPUT_STATUS
                    if not status:
                        status = response.status
                        kind = ACCESS_STATUS
                    headers = response.headers
                    length = dict.get(headers, "Content-Length")
                    ctype = dict.get(headers, "Content-Type")
                except Exception:  # noqa: BLE001 - not CherryPy's
                    kind, status, length = _access_raw(response)
                if started is None:  # the request's fields failed: the duration is still wanted
                    started = getattr(response, "time", None)
            elif name.startswith("cherrypy.access"):
                kind = ACCESS_FROM_MESSAGE
            fields = (
                record.created,
                record.levelno,
                record.levelname,
                name,
                message,
                cut,
                tb,
                ident,
                record.threadName or "",
                source,
                method,
                script,
                path_info,
                query,
                ip,
                port,
                forwarded,
                started,
                handler,
                stage,
                status,
                kind,
                length,
                ctype,
            )
            self.ring.append(fields)
        except Exception:  # noqa: BLE001 - never raise into the app's logging call
            self.failed += 1
        return True

    def _handler_of(self, request: Any) -> Optional[str]:
        """The request's handler name, read directly for the usual shapes (a page handler,
        perhaps inside the encode tool's wrapper, calling a function or method):
        ``handler_name``'s answer."""
        target: Any = request.handler
        if type(target) is self._encoder_type:
            target = target.oldhandler
        if type(target) in self._page_types and "_json_inner_handler" not in request.__dict__:
            target = target.callable
            if type(target) is MethodType:
                target = target.__func__
            if type(target) is FunctionType:
                return target.__qualname__ or handler_name(request)
        return handler_name(request)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed += 1  # never print to the app's stderr

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _message_of(self, record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception as exc:  # noqa: BLE001 - bad %-args: keep what there is
            return "%r (formatting the message failed: %s)" % (record.msg, type(exc).__name__)

    def _text_of(self, record: logging.LogRecord, message: str) -> Tuple[str, int, Optional[str]]:
        """(message, characters cut, traceback) of a record with a traceback or long text."""
        limit = self.max_message
        tb: Optional[str] = None
        exc_info = record.exc_info
        if exc_info and exc_info[0] is not None:
            tb = record.exc_text or format_exc_info(exc_info)
            tb = tb.rstrip("\n")
        elif TRACEBACK_MARK in message:
            message, tb = split_traceback(message)
        elif record.exc_text:
            tb = record.exc_text
        message, cut = cut_head(message, limit)
        if tb is not None:
            tb, tb_cut = cut_traceback(tb, limit)
            cut += tb_cut
        if cut:
            self.cut_records += 1
        return message, cut, tb

    def _careful_request(self, request: Any, response: Any, source: str) -> Tuple[Any, ...]:
        try:
            atoms = request_atoms(request, response)
        except Exception:  # noqa: BLE001
            return _NO_REQUEST
        method, script, path_info, query, client, started, handler, stage, ip, port = atoms
        # The client goes where the raw X-Forwarded-For would: reading splits it again (same).
        return (source, method, script, path_info, query, ip, port, client, started, handler, stage)

    def _serving_request(self) -> Tuple[Any, Any, str]:
        serving = self._serving
        if serving is None:
            return None, None, ""
        # Only while serving does the thread-local hold its own request (else the class default).
        local = serving.__dict__
        request = local.get("request")
        if request is None or getattr(request, "app", None) is None:
            return None, None, ""
        return request, local.get("response"), "serving"


class AppLoggerHandler(CaptureHandler):
    """Warnings and errors of the app's own loggers (``salt.loaded...``, ``myshop.payments``)
    that never pass through CherryPy's: attached to the root logger, level WARNING, CherryPy's
    records left to the handler on its loggers (they propagate here too).

    Attached only while the root logger has a handler of its own (``LogCapture.refresh``):
    logging's ``lastResort`` prints a record no handler took to stderr, and a handler of ours
    alone on the root would silence that, changing what the app writes."""

    def __init__(self, ring: LogRing, tracker: RequestTracker) -> None:
        super().__init__(ring, tracker)
        self.level = logging.WARNING  # checked by the logger before handle(): INFO costs that

    def handle(self, record: logging.LogRecord) -> Any:
        name = record.name
        if name.startswith("cherrypy.") or name == "cherrypy":
            return False
        return CaptureHandler.handle(self, record)


class AccessHandler(CaptureHandler):
    """The handler on the access loggers: the usual access record (a plain line logged by
    CherryPy during a request the tracker holds, after finalize) takes a straight path, one
    per request; any other record takes ``CaptureHandler.handle``'s. The same tuple either way
    (``tests/agent/test_access_path.py`` compares them)."""

    def handle(self, record: logging.LogRecord) -> Any:
        try:
            msg = record.msg
            tracked = self._inflight.get(record.thread)  # type: ignore[arg-type]  # None: no entry
            if (
                tracked is None
                or self.filters
                or record.args
                or type(msg) is not str
                or record.exc_info
                or record.exc_text
                or len(msg) > self.max_message
                or TRACEBACK_MARK in msg
            ):
                return CaptureHandler.handle(self, record)
            request, response = tracked
            status = response.output_status
            if not status:
                return CaptureHandler.handle(self, record)
            remote = request.remote
            forwarded = dict.get(request.headers, "X-Forwarded-For")
            if forwarded:
                forwarded = str(forwarded).split(",")[0].strip()
            handler = self._handler_of(request)
            headers = response.headers
            fields = (
                record.created,
                record.levelno,
                record.levelname,
                record.name,
                msg,
                0,
                None,
                record.thread,
                record.threadName or "",
                "hook",
                request.method,
                request.script_name,
                request.path_info,
                request.query_string,
                remote.ip,
                remote.port,
                forwarded,
                response.time,
                handler,
                request.stage,
                status,
                ACCESS_OUTPUT_STATUS,
                dict.get(headers, "Content-Length"),
                dict.get(headers, "Content-Type"),
            )
        except Exception:  # noqa: BLE001 - not CherryPy's shapes: the careful path
            return CaptureHandler.handle(self, record)
        try:
            self.ring.append(fields)
        except Exception:  # noqa: BLE001 - never raise into the app's logging call
            self.failed += 1
        return True


def _access_raw(response: Any) -> Tuple[int, Any, Any]:
    """(kind, status raw, Content-Length raw) of a response that is not CherryPy's as we know
    it (``handle`` reads CherryPy's directly), parsed by ``status_from`` / ``size_from``."""
    status = getattr(response, "output_status", None)
    kind = ACCESS_OUTPUT_STATUS
    if not status:
        status = getattr(response, "status", None)
        kind = ACCESS_STATUS
    try:
        length = dict.get(response.headers, "Content-Length")
    except Exception:  # noqa: BLE001 - absent, or not a dict
        length = None
    return kind, status, length


def _text(value: Any) -> str:
    """A request field as ``request_atoms`` gives it: the string, or ``str(value or "")``."""
    return value if type(value) is str else str(value or "")


def _request_of(item: Fields) -> Optional[Dict[str, Any]]:
    """A record's request wire dict, as ``/v1/threads`` builds it."""
    source = item[9]
    if not source:
        return None
    ip = _text(item[14])
    atoms: RequestAtoms = (
        _text(item[10]),
        _text(item[11]),
        _text(item[12]),
        _text(item[13]),
        item[16] or ip,  # X-Forwarded-For's first address, else the remote ip
        item[17],
        item[18],
        item[19],
        ip,
        item[15],
    )
    return request_from_atoms(atoms, _peer_from_atoms(atoms), source)


class Timing:
    """What the tracker knew of request ends when a read began: an access record is logged
    before its body is sent, so its request's end (``ends``) gives its duration; a request still
    in flight (``sending``: its body still going out) has none yet. A request the tracker never
    saw end (begun before the agent came) keeps the time to its access line."""

    __slots__ = ("ends", "sending")

    def __init__(
        self, ends: Dict[Tuple[int, float], float], sending: Set[Tuple[int, float]]
    ) -> None:
        self.ends = ends
        self.sending = sending


def _access_duration(item: Fields, timing: Optional[Timing]) -> Optional[float]:
    started = item[17]
    if not isinstance(started, float):
        return None
    if timing is not None:
        key = (item[7], started)
        try:
            end = timing.ends.get(key)
            if end is not None:
                return max(0.0, end - started)
            if key in timing.sending:
                return None
        except TypeError:  # an unhashable thread slot: the time to the access line
            pass
    took: float = max(0.0, item[0] - started)
    return took


def _access_of(item: Fields, timing: Optional[Timing] = None) -> Optional[Dict[str, Any]]:
    """A record's access dict (status, bytes, duration), or None for other records."""
    kind = item[21]
    if kind == ACCESS_NONE:
        return None
    if kind == ACCESS_FROM_MESSAGE:
        status, size, duration = parse_access_line(item[4])
        return {"status": status, "size": size, "duration": duration}
    ctype = item[23]
    return {
        "status": status_from(item[20], kind),
        "size": size_from(item[22]),
        "duration": _access_duration(item, timing),
        "content_type": ctype[:200] if type(ctype) is str else None,
    }


def access_status(item: Fields) -> Optional[int]:
    """A stored record's status code: None for a record that is not an access record, or whose
    status is unknown."""
    kind = item[21]
    if kind == ACCESS_NONE:
        return None
    if kind == ACCESS_FROM_MESSAGE:
        return parse_access_line(item[4])[0]
    return status_from(item[20], kind)


def access_level(item: Fields) -> int:
    """The level an access record counts as for ``level=`` (the inspector's
    ``analysis.effective_level``): ERROR for a 5xx answer, WARNING for a 4xx (CherryPy logs
    every access line at INFO)."""
    levelno: int = item[1]
    status = access_status(item)
    if status is not None and status >= 500:
        return max(levelno, logging.ERROR)
    if status is not None and status >= 400:
        return max(levelno, logging.WARNING)
    return levelno


def record_path(item: Fields) -> str:
    """A stored record's request path (script_name + path_info), "" when logged outside a
    request."""
    if not item[9]:
        return ""
    return _text(item[11]) + _text(item[12])


NOTABLE_LEVEL = logging.WARNING
_LOW_STATUS = (b"1", b"2", b"3")
"""First bytes of an ``output_status`` below 400."""


def is_notable(item: Fields, paths: Tuple[str, ...]) -> bool:
    """``/v1/log?only=notable`` (wire.py): a record at WARNING or above, an access record whose
    status is 400 or more (or unknown), or an access record whose path starts with one of
    ``paths``. Cheap for the usual skipped one (an access record of a 200): a few slot reads,
    ``status_from`` and one ``startswith``."""
    if item[1] >= NOTABLE_LEVEL:
        return True
    if item[21] == ACCESS_NONE:
        return False
    status = access_status(item)
    if status is None or status >= 400:
        return True
    if not paths:
        return False
    try:
        return record_path(item).startswith(paths)
    except Exception:  # noqa: BLE001 - a path of an odd type: keep the record
        return True


def _peer_from_atoms(atoms: RequestAtoms) -> str:
    ip, port = atoms[8], atoms[9]
    if not ip:
        return ""
    return "%s:%s" % (ip, port) if port not in (None, "", -1) else str(ip)


# --- A record's JSON text, made without its dict (``/v1/log`` over the socket) -----------------
# ``read(encoded=True)`` answers a follower reading every access record the app logs: building
# each record's dicts and then encoding them cost the target ~9 us per record, more than the
# capture's own ~2 us per request (BENCHMARKS.md). These functions write the same JSON text
# (what ``jsonparts.dumps`` of ``record_dict`` gives, key order aside) straight from the ring's
# tuple; any value of an unusual type goes through ``dumps`` itself.


def _j(value: Any) -> str:
    """``dumps(value)``, with the common atoms written directly."""
    t = type(value)
    if t is str:
        return _esc(value)
    if value is None:
        return "null"
    if t is int:
        return int.__repr__(value)
    if t is float and value - value == 0.0:  # finite
        return float.__repr__(value)
    return dumps(value)


class _NoMemo(dict):  # type: ignore[type-arg]
    """A memo that keeps nothing (for a record with an unhashable value in a slot)."""

    def get(self, key: Any, default: Any = None) -> Any:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _f(value: Any) -> str:
    """A float as JSON that reads back as exactly the same float: 17 significant digits
    (always enough for a double), cheaper to make than its shortest repr (~6k instructions
    against ~8.7k; three per record); an integral value keeps its ".0" through ``_j``."""
    if type(value) is float and value - value == 0.0:
        text = "%.17g" % value
        if "." in text:
            return text
    return _j(value)


def _request_fixed(item: Fields) -> str:
    """The members of a record's request dict that repeat from request to request (all but
    path, query and started_at), as JSON text without braces."""
    ip = _text(item[14])
    port = item[15]
    if not ip:
        peer = ""
    elif port not in (None, "", -1):
        peer = "%s:%s" % (ip, port)
    else:
        peer = str(ip)
    return '"method":%s,"client":%s,"peer":%s,"handler":%s,"stage":%s,"app":%s,"source":%s' % (
        _esc(_text(item[10])),
        _j((item[16] or ip)[:256]),
        _esc(peer),
        _j(item[18]),
        _j(item[19]),
        _esc(_text(item[11])),
        _j(item[9]),
    )


def _request_json(item: Fields, memo: Dict[Any, str]) -> str:
    source = item[9]
    if not source:
        return "null"
    key = (1, source, item[10], item[11], item[14], item[15], item[16], item[18], item[19])
    fixed = memo.get(key)
    if fixed is None:
        fixed = memo[key] = _request_fixed(item)
    started = item[17]
    return '{%s,"path":%s,"query":%s,"started_at":%s}' % (
        fixed,
        _esc((_text(item[11]) + _text(item[12]))[:2048]),
        _esc(redact_query(_text(item[13]))),
        _f(started) if isinstance(started, float) else "null",
    )


def _access_json(item: Fields, memo: Dict[Any, str], timing: Optional[Timing] = None) -> str:
    kind = item[21]
    if kind == ACCESS_NONE:
        return "null"
    if kind == ACCESS_FROM_MESSAGE:
        status, size, _duration = parse_access_line(item[4])
        return '{"status":%s,"size":%s,"duration":null}' % (_j(status), _j(size))
    key = (2, kind, item[20], item[22], item[23])
    fixed = memo.get(key)
    if fixed is None:
        ctype = item[23]
        fixed = memo[key] = '"status":%s,"size":%s,"content_type":%s' % (
            _j(status_from(item[20], kind)),
            _j(size_from(item[22])),
            _esc(ctype[:200]) if type(ctype) is str else "null",
        )
    return '{%s,"duration":%s}' % (fixed, _f(_access_duration(item, timing)))


def record_json(
    seq: int,
    item: Fields,
    app: Optional[str],
    memo: Dict[Any, str],
    timing: Optional[Timing] = None,
) -> str:
    """The JSON text of ``record_dict(seq, item, app, timing)``. ``memo``: the texts of the
    members that repeat between records (a read's own dict, dropped with it; its keys are the
    raw values, so it holds at most three entries per record read)."""
    key = (0, item[1], item[2], item[3], app, item[7], item[8])
    fixed = memo.get(key)
    if fixed is None:
        fixed = memo[key] = (
            '"level":%s,"levelno":%s,"logger":%s,"app":%s,"thread":{"ident":%s,"name":%s}'
            % (_j(item[2]), _j(item[1]), _j(item[3]), _j(app), _j(item[7]), _j(item[8]))
        )
    tb = item[6]
    return (
        '{"seq":%d,"time":%s,%s,"message":%s,"cut":%s,"traceback":%s,"request":%s,"access":%s}'
        % (
            seq,
            _f(item[0]),
            fixed,
            _esc(redact_log_text(item[4])),
            _j(item[5]),
            "null" if tb is None else _esc(redact_log_text(tb)),
            _request_json(item, memo),
            _access_json(item, memo, timing),
        )
    )


def record_dict(
    seq: int, item: Fields, app: Optional[str], timing: Optional[Timing] = None
) -> Dict[str, Any]:
    """A stored record as the wire dict ``/v1/log`` answers (wire.py)."""
    return {
        "seq": seq,
        "time": item[0],
        "level": item[2],
        "levelno": item[1],
        "logger": item[3],
        "app": app,
        "message": redact_log_text(item[4]),
        "cut": item[5],
        "traceback": None if item[6] is None else redact_log_text(item[6]),
        "thread": {"ident": item[7], "name": item[8]},
        "request": _request_of(item),
        "access": _access_of(item, timing),
    }


# --- Attaching to the loggers ---------------------------------------------------------------


def _add_cow(logger: logging.Logger, handler: logging.Handler) -> None:
    if handler in logger.handlers:
        return
    logger.handlers = [*logger.handlers, handler]


def _remove_cow(logger: logging.Logger, handler: logging.Handler) -> None:
    if handler in logger.handlers:
        logger.handlers = [h for h in logger.handlers if h is not handler]


def _describe_handler(logger_name: str, h: logging.Handler) -> str:
    target = getattr(h, "baseFilename", None)
    if target is None:
        stream = getattr(h, "stream", None)
        target = getattr(stream, "name", None)
    kind = type(h).__name__
    return "%s: %s(%s)" % (logger_name, kind, target) if target else "%s: %s" % (logger_name, kind)


def _is_null(h: logging.Handler) -> bool:
    """logging's NullHandler or CherryPy's own (``_cplogging.NullHandler``, not a subclass)."""
    return isinstance(h, logging.NullHandler) or type(h).__name__ == "NullHandler"


def _ancestors(logger: logging.Logger) -> List[logging.Logger]:
    """The loggers a record from ``logger`` reaches (itself first), as ``callHandlers`` walks."""
    out = []
    c: Any = logger
    while c is not None:
        out.append(c)
        if not c.propagate:
            break
        c = c.parent
    return out


def _suggested_error_file() -> str:
    name = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "") or "app"
    name = re.sub(r"\.py[cw]?$", "", name)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "app"
    if name in ("-c", "_c", "__main__"):
        name = "app"
    return "/var/log/%s/error.log" % name


class LogCapture:
    """The handler, the ring and the loggers they are attached to."""

    def __init__(self, tracker: RequestTracker, capacity: int, access: bool = True) -> None:
        self.access = access
        """Capture access records too (one per request: most of the capture's cost)."""
        self.ring = LogRing(capacity)
        self.handler = CaptureHandler(self.ring, tracker)
        self.access_handler = AccessHandler(self.ring, tracker)
        """On the access loggers (``handler`` on the error loggers)."""
        self.app_handler = AppLoggerHandler(self.ring, tracker)
        """On the root logger while it has a handler of its own (``refresh``)."""
        self._attached: List[logging.Logger] = []
        self._apps: Dict[str, Optional[str]] = {}  # logger name -> script_name
        self._lock = threading.Lock()
        self.reattached = 0
        """Times the handler was found removed from a logger it was attached to, and re-added."""
        self._ends: OrderedDict[Tuple[int, float], float] = OrderedDict()
        """``{(thread ident, response.time): end}`` of every request end a read has seen, the
        newest ``ring.capacity`` kept: an access record read again (another reader, a snapshot,
        ``logs`` later) keeps the duration its first read gave, after its end has left the
        tracker's last ``ENDS_KEPT``."""
        self._last_end: Optional[Tuple[int, float, float]] = None
        """The newest tracker end ``_known_ends`` has added."""

    # Installation.

    def attach(self) -> None:
        with self._lock:
            for name in (
                ("cherrypy.error", "cherrypy.access") if self.access else ("cherrypy.error",)
            ):
                logger = logging.getLogger(name)
                _add_cow(logger, self._handler_for(logger))
                if logger not in self._attached:
                    self._attached.append(logger)
        self.refresh()

    def detach(self) -> None:
        with self._lock:
            for logger in self._attached:
                _remove_cow(logger, self._handler_for(logger))
            self._attached = []
            _remove_cow(logging.getLogger(), self.app_handler)

    def refresh(self) -> None:
        """Follow the apps mounted since: name their loggers, attach to those that do not
        propagate (and leave those that propagate again, or records would arrive twice)."""
        try:
            import cherrypy

            apps = list(cherrypy.tree.apps.items())
        except Exception:  # noqa: BLE001
            return
        names: Dict[str, Optional[str]] = {"cherrypy.error": None, "cherrypy.access": None}
        with self._lock:
            if not self._attached:
                return  # detached meanwhile
            root = logging.getLogger()
            if any(h is not self.app_handler for h in root.handlers):
                _add_cow(root, self.app_handler)  # (last, as on CherryPy's loggers)
            else:
                _remove_cow(root, self.app_handler)  # alone there it would silence lastResort
            for attached in self._attached:
                ours = self._handler_for(attached)
                if ours not in attached.handlers:
                    # The app replaced the handler list (logging.config.dictConfig does): come
                    # back, last again, and count it (every answer's errors say so).
                    _add_cow(attached, ours)
                    self.reattached += 1
            for script_name, app in apps:
                log = getattr(app, "log", None)
                app_loggers = [getattr(log, "error_log", None)]
                if self.access:
                    app_loggers.append(getattr(log, "access_log", None))
                for logger in app_loggers:
                    if not isinstance(logger, logging.Logger):
                        continue
                    names[logger.name] = script_name
                    # Does a record from this logger reach our handler on an ancestor?
                    ours = self._handler_for(logger)
                    reached = any(ours in a.handlers for a in _ancestors(logger)[1:])
                    if logger in self._attached:
                        if reached:
                            _remove_cow(logger, ours)
                            self._attached.remove(logger)
                    elif not reached:
                        _add_cow(logger, ours)
                        self._attached.append(logger)
            self._apps = names

    def _handler_for(self, logger: logging.Logger) -> CaptureHandler:
        """Ours for this logger: the access handler on CherryPy's access loggers."""
        name = logger.name
        if name == "cherrypy.access" or name.startswith("cherrypy.access."):
            return self.access_handler
        return self.handler

    def _ours(self, h: logging.Handler) -> bool:
        return h is self.handler or h is self.access_handler or h is self.app_handler

    @property
    def failed(self) -> int:
        """Records that could not be captured (every handler of ours)."""
        return self.handler.failed + self.access_handler.failed + self.app_handler.failed

    def app_of(self, logger_name: str) -> Optional[str]:
        return self._apps.get(logger_name)

    # What the configuration does with errors.

    def routing(self) -> Dict[str, Any]:
        import cherrypy

        log = cherrypy.log
        screen: Optional[bool] = None
        error_file: Optional[str] = None
        access_file: Optional[str] = None
        try:
            screen = bool(log.screen)
            error_file = log.error_file or None
            access_file = log.access_file or None
        except Exception:  # noqa: BLE001
            pass
        global_loggers = {"cherrypy.error", "cherrypy.access"}
        error_loggers = [logging.getLogger("cherrypy.error")]
        loggers = [logging.getLogger("cherrypy.error"), logging.getLogger("cherrypy.access")]
        try:
            for _sn, app in list(cherrypy.tree.apps.items()):
                app_log = getattr(app, "log", None)
                el = getattr(app_log, "error_log", None)
                al = getattr(app_log, "access_log", None)
                if isinstance(el, logging.Logger):
                    error_loggers.append(el)
                    loggers.append(el)
                if isinstance(al, logging.Logger):
                    loggers.append(al)
        except Exception:  # noqa: BLE001
            pass
        other: List[str] = []
        seen: Set[int] = set()
        for logger in loggers:
            for chain_logger in _ancestors(logger):
                for h in list(chain_logger.handlers):
                    if id(h) in seen or self._ours(h):
                        continue
                    seen.add(id(h))
                    if _is_null(h):
                        continue
                    if chain_logger.name in global_loggers and getattr(h, "_cpbuiltin", None):
                        continue  # shown as screen / error_file / access_file
                    other.append(_describe_handler(chain_logger.name, h))
        writes = False
        for logger in error_loggers:
            for chain_logger in _ancestors(logger):
                for h in list(chain_logger.handlers):
                    if self._ours(h) or _is_null(h):
                        continue
                    if getattr(h, "level", 0) > logging.ERROR:
                        continue
                    writes = True
        goes_nowhere = not writes
        fix = None
        if goes_nowhere:
            fix = 'log.error_file = "%s"' % _suggested_error_file()
        return {
            "screen": screen,
            "error_file": error_file,
            "access_file": access_file,
            "other_handlers": other,
            "goes_nowhere": goes_nowhere,
            "fix": fix,
        }

    # The cursor.

    def _known_ends(self, tracker: RequestTracker) -> Dict[Tuple[int, float], float]:
        """The request ends seen so far, the tracker's newest added (no lock: concurrent
        readers add the same ends; each step is one C call under the GIL). Each read adds the
        hundreds of ends since the last in C-level steps (a read per second of a busy app)."""
        known = self._ends
        ended = list(tracker.ended)
        last = self._last_end
        start = 0
        if last is not None:
            try:
                start = ended.index(last) + 1
            except ValueError:  # gone from the tracker's last ENDS_KEPT: all of them are new
                start = 0
        new = ended[start:]
        if new:
            known.update(zip(map(_END_KEY, new), map(_END_TIME, new)))
            self._last_end = new[-1]
        over = len(known) - max(self.ring.capacity, 1)
        if over > 0:
            try:
                deque(map(known.popitem, repeat(False, over)), maxlen=0)
            except KeyError:  # emptied by another reader
                pass
        return known

    def read(
        self,
        after: int,
        limit: int,
        min_level: int,
        encoded: bool = False,
        notable: bool = False,
        paths: Tuple[str, ...] = (),
    ) -> Dict[str, Any]:
        """The cursor's answer (wire.py). ``encoded``: ``records`` is a ``JsonArray`` carrying
        each record's JSON text (``record_json``) for the socket server to splice in, and its
        items are the ring's raw tuples, not dicts (no in-process reader takes this form).
        ``notable``: only the records ``is_notable`` keeps (``only=notable``), ``paths`` the
        access-path prefixes it keeps beside the warnings and failures."""
        self.refresh()
        items, first, latest = self.ring.copy(after)
        missed = first - after - 1 if items and after < first - 1 else 0
        start = 0  # (seqs are consecutive: items[i] is seq first + i)
        records: Any = JsonArray() if encoded else []
        more = False
        last = after
        app_of = self._apps.get
        count = 0
        memo: Dict[Any, str] = {}
        tracker = self.handler.tracker
        timing = Timing(self._known_ends(tracker), tracker.sending())
        for i in range(start, len(items)):
            item = items[i]
            if item[1] < min_level and (item[21] == ACCESS_NONE or access_level(item) < min_level):
                continue
            if notable and item[1] < NOTABLE_LEVEL:
                kind = item[21]
                if kind == ACCESS_NONE:
                    continue
                raw = item[20]
                if (
                    not paths
                    and kind == ACCESS_OUTPUT_STATUS
                    and type(raw) is bytes
                    and raw[:1] in _LOW_STATUS
                ):
                    continue  # the usual one skipped, a 2xx/3xx access line: no call
                if not is_notable(item, paths):
                    continue
            if count >= limit:
                more = True
                break
            seq = first + i
            if encoded:
                try:
                    text = record_json(seq, item, app_of(item[3]), memo, timing)
                except TypeError:  # an unhashable value in a slot: no memo for this one
                    text = record_json(seq, item, app_of(item[3]), _NoMemo(), timing)
                records.add(item, text)
            else:
                records.append(record_dict(seq, item, app_of(item[3]), timing))
            count += 1
            last = seq
        routing: Dict[str, Any]
        errors: List[str] = []
        try:
            routing = self.routing()
        except Exception as exc:  # noqa: BLE001
            errors.append("routing: %s: %s" % (type(exc).__name__, exc))
            routing = {
                "screen": None,
                "error_file": None,
                "access_file": None,
                "other_handlers": [],
                "goes_nowhere": False,
                "fix": None,
            }
        failed = self.failed
        if failed:
            errors.append("%d records could not be captured" % failed)
        if self.reattached:
            errors.append(
                "the capture handler was removed from CherryPy's loggers %d time(s) (the app's"
                " logging configuration?) and put back: records logged meanwhile are not here"
                % self.reattached
            )
        return {
            "taken_at": time.time(),
            "buffer": self.ring.buffer_id,
            "capacity": self.ring.capacity,
            "captures_access": self.access,
            "max_message": self.handler.max_message,
            "first": first,
            "latest": latest,
            "missed": missed,
            "more": more,
            "next": last if more else latest,
            "dropped": failed,
            "routing": routing,
            "records": records,
            "errors": errors,
        }
