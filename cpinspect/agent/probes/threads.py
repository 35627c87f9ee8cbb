"""``GET /v1/threads``: pool numbers and every thread, busy workers joined with their requests.

Everything here reads shared structures without taking the app's locks: ``list(...)`` copies,
``sys._current_frames()``, attribute reads. Each part is guarded: a failing probe adds a line to
``errors`` and the rest of the answer stands.
"""

import os
import sys
import threading
import time
from collections import OrderedDict
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

from ..jsonparts import JsonArray, dumps
from ..procfs import task_cpu_time
from ..redact import redact_query
from ..tracking import RequestTracker
from ..wire import MAX_STACK_DEPTH, THREADS_CURSORS_KEPT
from . import locks
from .frames import FrameClassifier, FrameLine, FrameTable
from .servers import finite, format_bind, pool_of, running_servers

# Request.stage values and the phase they mean (cherrypy-internals.md 1.7).
_READING_STAGES = {"before_request_body"}
_WRITING_STAGES = {"on_end_resource", "on_end_request", "close"}

_ACCEPTOR_TARGETS = {"_start_http_thread"}
_OVERFLOW_TARGET = "_serve_unservicable"
"""cheroot's thread that answers 503 to the connections the full worker queue cannot take."""


def _thread_clock(native_id: int) -> int:
    """The kernel's CPU-time clock id of thread ``native_id`` (MAKE_THREAD_CPUCLOCK, SCHED).

    Reading it is one clock_gettime that never releases the GIL, where opening
    /proc/self/task/<tid>/stat would: with every app thread burning CPU, each release costs the
    agent a wait in line for the GIL again.
    """
    return ((~native_id) << 3) | 6


def cpu_time(native_id: Optional[int]) -> Optional[float]:
    """User + system seconds of one OS thread (Linux; /proc as a fallback; None elsewhere)."""
    if not native_id:
        return None
    try:
        return time.clock_gettime(_thread_clock(native_id))
    except (OSError, AttributeError, OverflowError):
        pass
    return task_cpu_time("self", native_id)


_clock_gettime_ns = getattr(time, "clock_gettime_ns", None)


def _cpu_clock(t: Optional[threading.Thread]) -> Optional[int]:
    """The CPU-time clock id of a Thread's OS thread, or None (not started, not Linux).

    Read with ``clock_gettime_ns`` it gives the thread's exact CPU time: unlike /proc's 10 ms
    ticks it moves whenever the thread ran at all, so a value equal to the last answer's means
    the thread executed nothing since (its frames, request, stage and connection are as they
    were), which the threads probe's fast path relies on.
    """
    native_id = getattr(t, "native_id", None)
    if not native_id or not sys.platform.startswith("linux"):
        return None
    return _thread_clock(native_id)


def qualified_name(obj: Any) -> Optional[str]:
    func = getattr(obj, "__func__", obj)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        cls = type(obj)
        name = cls.__qualname__ + ".__call__" if cls is not type else None
    return name


_HAS_ATTR: Dict[Tuple[type, str], bool] = {}
"""Whether instances of a type have an attribute (one every instance sets in ``__init__``:
PageHandler.callable, ResponseEncoder.oldhandler), learnt once per (type, name): a getattr()
that misses raises and catches an AttributeError inside, the dearest step of describing a
request, and the log capture describes every logged one. Bounded by the handler and wrapper
types an app has (a few)."""


def _attr(obj: Any, name: str) -> Any:
    key = (type(obj), name)
    has = _HAS_ATTR.get(key)
    if has is None:
        has = hasattr(obj, name)
        if len(_HAS_ATTR) < 256:
            _HAS_ATTR[key] = has
    return getattr(obj, name, None) if has else None


def _page_handler(handler: Any) -> Tuple[Optional[str], Any]:
    """The qualified name of the PageHandler's callable reached from ``handler`` through
    wrappers (encode's ``oldhandler``, ``__wrapped__``), or None and where the chain ended."""
    for _ in range(8):
        if handler is None:
            return None, None
        target = _attr(handler, "callable")
        if target is not None:
            return qualified_name(target), handler
        # __wrapped__ varies per function (functools.wraps), so it is not learnt per type.
        inner = _attr(handler, "oldhandler") or getattr(handler, "__wrapped__", None)
        if inner is None:
            break
        handler = inner
    return None, handler


def handler_name(request: Any) -> Optional[str]:
    """The page handler's qualified name, seen through tool wrappers (encode, gzip ...)."""
    # tools.json_out wraps the handler, per request: read from the instance, not learnt per type.
    attrs = getattr(request, "__dict__", None)
    if isinstance(attrs, dict):
        inner = attrs.get("_json_inner_handler")
    else:
        inner = getattr(request, "_json_inner_handler", None)
    name, handler = _page_handler(inner if inner is not None else getattr(request, "handler", None))
    if name is not None or handler is None:
        return name
    if isinstance(handler, BaseException):
        return type(handler).__name__  # NotFound(), HTTPError(405) set by the dispatcher
    if isinstance(attrs, dict):
        # An app's own tool that wraps the handler as json_out does, keeping the page handler
        # on the request as ``_<tool>_inner_handler`` (Salt's rest_cherrypy hypermedia_out):
        # every request would otherwise be named after the one wrapper function.
        for key in [k for k in attrs if type(k) is str and k.endswith("_inner_handler")]:
            found, _end = _page_handler(attrs.get(key))
            if found is not None:
                return found
    return qualified_name(handler)


def _first_header(request: Any, name: str) -> str:
    """``name`` must be given title-cased: HeaderMap stores its keys so, and a plain dict
    lookup skips its per-call key transform (this runs for every logged request)."""
    try:
        headers = request.headers
        value = dict.get(headers, name) if isinstance(headers, dict) else headers.get(name)
    except Exception:  # noqa: BLE001
        return ""
    return str(value) if value else ""


RequestAtoms = Tuple[str, str, str, str, str, Any, Optional[str], Any, str, Any]
"""What a request's wire dict is built from, read cheaply off the live objects: (method,
script_name, path_info, query_string, client, started, handler, stage, remote ip, remote
port). The log capture keeps these per record and builds the dict when it is read."""


def request_atoms(request: Any, response: Any) -> RequestAtoms:
    """The raw fields of a CherryPy request (attribute reads only; no formatting).

    Plain attribute reads first (this runs for every logged request: a getattr() with a
    default costs several times more); anything unusual takes the careful path.
    """
    try:
        remote = request.remote
        remote_ip = remote.ip or ""
        forwarded = ""
        headers = request.headers
        if isinstance(headers, dict):
            forwarded = dict.get(headers, "X-Forwarded-For") or ""
        if forwarded or not isinstance(headers, dict):
            forwarded = _first_header(request, "X-Forwarded-For").split(",")[0].strip()
        method = request.method or ""
        script = request.script_name or ""
        path_info = request.path_info or ""
        query = request.query_string or ""
        client = forwarded or remote_ip
        if (
            type(method) is str
            and type(script) is str
            and type(path_info) is str
            and type(query) is str
            and type(client) is str
        ):
            return (
                method,
                script,
                path_info,
                query,
                client,
                response.time if response is not None else None,
                handler_name(request),
                request.stage,
                remote_ip,
                remote.port,
            )
    except Exception:  # noqa: BLE001 - not a CherryPy request as we know it
        pass
    return _request_atoms_careful(request, response)


def _request_atoms_careful(request: Any, response: Any) -> RequestAtoms:
    remote = getattr(request, "remote", None)
    remote_ip = str(getattr(remote, "ip", "") or "")
    forwarded = _first_header(request, "X-Forwarded-For").split(",")[0].strip()
    started = getattr(response, "time", None) if response is not None else None
    return (
        str(getattr(request, "method", "") or ""),
        str(getattr(request, "script_name", "") or ""),
        str(getattr(request, "path_info", "") or ""),
        str(getattr(request, "query_string", "") or ""),
        forwarded or remote_ip,
        started,
        handler_name(request),
        getattr(request, "stage", None),
        remote_ip,
        getattr(remote, "port", None),
    )


def request_from_atoms(atoms: RequestAtoms, peer: str, source: str) -> Dict[str, Any]:
    """The wire dict (``/v1/threads`` "request"): redacted, cut. Never headers."""
    method, script, path_info, query, client, started, handler, stage, _ip, _port = atoms
    return {
        "method": method,
        "path": (script + path_info)[:2048],
        "query": redact_query(query),
        "client": client[:256],
        "peer": peer,
        "started_at": started if isinstance(started, float) else None,
        "handler": handler,
        "stage": stage,
        "app": script,
        "source": source,
    }


def describe_request(request: Any, response: Any, peer: str, source: str) -> Dict[str, Any]:
    """The wire dict of a CherryPy request. Never headers: Cookie/Authorization stay inside."""
    return request_from_atoms(request_atoms(request, response), peer, source)


def find_cherrypy_request(frame: Optional[FrameType]) -> Tuple[Any, Any]:
    """Walk out from ``frame`` to ``_cprequest.Request.run``; return its (self, response).

    ``HookMap.run(self, point)`` lives in the same file under the same name, and a request
    waiting in a tool (a session lock, a login check) is inside it: only a ``run`` taking
    ``method`` is ``Request.run``."""
    f = frame
    while f is not None:
        code = f.f_code
        if (
            code.co_name == "run"
            and code.co_filename.endswith("_cprequest.py")
            and "method" in code.co_varnames[: code.co_argcount]
        ):
            local = f.f_locals
            return local.get("self"), local.get("response")
        f = f.f_back
    return None, None


def find_cheroot_request(frame: Optional[FrameType]) -> Any:
    """The cheroot ``HTTPRequest`` being read (local ``req`` of ``HTTPConnection.communicate``)."""
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_name == "communicate" and code.co_filename.endswith(
            ("cheroot/server.py", "cheroot\\server.py")
        ):
            return f.f_locals.get("req")
        f = f.f_back
    return None


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return str(value or "")


def phase_from_stack(stack: List[Dict[str, Any]]) -> Optional[str]:
    """Refine the phase from where the thread actually is (internals 1.5 stack signatures)."""
    for index, frame in enumerate(stack[:40]):
        filename = frame["file"]
        if filename.endswith("_cpreqbody.py"):
            return "reading"
        if frame["function"] in ("read_request_headers", "read_request_line"):
            return "reading"
        if filename.endswith(("cherrypy/_cprequest.py", "cherrypy\\_cprequest.py")):
            # Still inside Request.run (hooks and tools, e.g. waiting for a session lock,
            # before any app frame): not writing, whatever cheroot frame lies further out.
            return None
        if filename.endswith(("cheroot/wsgi.py", "cheroot\\wsgi.py")):
            if frame["function"] == "write":
                return "writing"
            if frame["function"] == "respond":
                # Gateway.respond both calls the app and iterates the body it returned; the
                # iteration shows as __next__/close frames inside it.
                inner = stack[:index]
                if any(f["function"] in ("__next__", "close") for f in inner):
                    return "writing"
                return None
        if frame["app"]:
            return None
    return None


def stack_key(frame: Optional[FrameType], limit: int = MAX_STACK_DEPTH) -> List[int]:
    """What a thread's extracted stack depends on, cheap to build: (id(code), f_lasti) per frame.

    The cache keeps the code objects of a key alive (never frames, which hold locals), so that
    no id in a remembered key can be reused by another code object.
    """
    key: List[int] = []
    append = key.append
    depth = 0
    f = frame
    while f is not None and depth < limit:
        append(id(f.f_code))
        append(f.f_lasti)
        depth += 1
        f = f.f_back
    while f is not None:
        depth += 1
        f = f.f_back
    append(depth)
    return key


def _codes(frame: Optional[FrameType], limit: int = MAX_STACK_DEPTH) -> List[Any]:
    codes: List[Any] = []
    f = frame
    while f is not None and len(codes) < limit:
        codes.append(f.f_code)
        f = f.f_back
    return codes


class _CachedStack:
    """One thread's last extracted stack and what depends only on it.

    ``lines``: its frames as the shared ``FrameLine`` objects of the probe's frame table. A
    stack that moved only inside its lines (``like``: the last one, with the same lines) keeps
    the wire list, JSON text, phase and digest of that one: a move inside one line changes
    nothing the inspector sees. The lock site depends on the instruction: found again.
    """

    __slots__ = ("codes", "digest", "key", "lines", "phase", "site", "stack", "text", "truncated")

    def __init__(
        self,
        key: List[int],
        lines: List[FrameLine],
        truncated: int,
        like: "Optional[_CachedStack]" = None,
    ) -> None:
        self.key = key
        self.lines = lines
        self.truncated = truncated
        # The code objects of the key's ids, kept so that none of them is reused meanwhile.
        self.codes = codes = [line.code for line in lines]
        self.stack: List[Dict[str, Any]]
        self.text: str
        self.phase: Optional[str]
        self.digest: int
        if like is not None:
            self.stack = like.stack
            self.text = like.text
            self.phase = like.phase
            self.digest = like.digest
        else:
            stack = [line.wire for line in lines]
            self.stack = stack
            self.text = "[" + ",".join([line.text for line in lines]) + "]"  # dumps(stack)
            self.phase = phase_from_stack(stack)
            # What the inspector sees of the stack (every frame's text: file, line, names, app).
            self.digest = hash(tuple([line.hash for line in lines]))
        # Where the innermost frame would take a lock (found once per stack change; usually None).
        try:
            self.site = locks.lock_site(codes, key)
        except Exception:  # noqa: BLE001
            self.site = None


def _digest(entry: Dict[str, Any], stack_digest: int, started: Any) -> int:
    """A thread entry's fingerprint for deltas: everything sent except ``elapsed``.

    ``elapsed`` grows with every poll; what it is computed from (the start time) is in instead.
    """
    request = entry["request"]
    return hash(
        (
            entry["native_id"],
            entry["name"],
            entry["role"],
            entry["daemon"],
            entry["busy"],
            entry["phase"],
            entry["elapsed"] is None,
            started,
            entry["cpu_time"],
            entry["pool"],
            tuple(request.values()) if request is not None else None,
            stack_digest,
            entry["stack_truncated"],
            _lock_digest(entry),
        )
    )


def _text_without_elapsed(entry: Dict[str, Any], stack_text: Optional[str]) -> Tuple[str, ...]:
    """The entry's JSON with ``"elapsed":`` last and its value left off (added per answer), in
    pieces: ``stack_text`` (``dumps`` of ``entry["stack"]``, made once per stack) is spliced in
    as it is rather than encoded again. The same text, key for key, as ``dumps`` of the entry
    with ``elapsed`` moved last."""
    if stack_text is None or "stack" not in entry:
        rest = {k: v for k, v in entry.items() if k != "elapsed"}
        return (dumps(rest)[:-1] + ',"elapsed":',)
    head: Dict[str, Any] = {}
    tail: Dict[str, Any] = {}
    part = head
    for k, v in entry.items():
        if k == "stack":
            part = tail
        elif k != "elapsed":
            part[k] = v
    before = dumps(head)[:-1] + ',"stack":' if head else '{"stack":'
    after = "," + dumps(tail)[1:-1] if tail else ""
    return (before, stack_text, after + ',"elapsed":')


def _lock_digest(entry: Dict[str, Any]) -> Any:
    """``wait`` and ``holds`` as a hashable value (None for the usual thread with neither)."""
    wait = entry.get("wait")
    holds = entry.get("holds")
    if wait is None and holds is None:
        return None
    return (
        tuple(wait.values()) if wait is not None else None,
        tuple(tuple(h.values()) for h in holds) if holds else None,
    )


class _Seen:
    """One thread's entry as last built, reused while the thread has not run since.

    A thread that did not get the CPU between two answers (its exact CPU clock did not move:
    blocked in a lock, a sleep, a socket read) cannot have changed its own frames, request,
    stage or connection, so its entry is what it was; only ``elapsed`` is brought up to date,
    and the lock probe runs again (``holds`` depends on other threads). Holds the Thread object
    (never a frame or a request) so that another thread at a reused ident is not taken for it.
    """

    __slots__ = (
        "bind",
        "clock",
        "conn_key",
        "cpu_ns",
        "digest",
        "entry",
        "name",
        "site",
        "stack_digest",
        "stack_text",
        "started",
        "text",
        "thread",
    )

    def __init__(
        self,
        thread: Optional[threading.Thread],
        name: Optional[str],
        bind: Optional[str],
        clock: Optional[int],
        cpu_ns: Optional[int],
        entry: Dict[str, Any],
        started: Any,
        conn_key: Any,
        site: Any,
        stack_digest: int,
        digest: int,
        stack_text: Optional[str] = None,
    ) -> None:
        self.thread = thread
        self.name = name
        self.bind = bind
        self.clock = clock
        self.cpu_ns = cpu_ns
        self.entry = entry
        self.started = started
        self.conn_key = conn_key
        self.site = site
        self.stack_digest = stack_digest
        self.digest = digest
        self.stack_text = stack_text  # dumps(entry["stack"])
        # The entry's JSON but elapsed's value, in pieces, made when first sent.
        self.text: Optional[Tuple[str, ...]] = None


class ThreadsProbe:
    """Builds the ``/v1/threads`` answer."""

    def __init__(self, tracker: RequestTracker, classifier: FrameClassifier) -> None:
        self.tracker = tracker
        self.classifier = classifier
        # When we first saw a worker busy on a given connection: the age of requests still being
        # read, for which cheroot keeps no start time unless server.statistics is on.
        self._conn_seen: Dict[Tuple[int, int], float] = {}
        # Per thread ident: the last extracted stack (bounded by the live threads: entries of
        # threads that are gone are dropped at each snapshot).
        self._stacks: Dict[int, _CachedStack] = {}
        # The frames of those stacks, by (code, instruction) and by line (bounded: FrameTable.MAX).
        self._frames = FrameTable(classifier, dumps)
        self._stacks_apps_key: Any = None
        # Per thread ident: its request's last description and what it depends on.
        self._requests: Dict[int, Tuple[Any, Dict[str, Any]]] = {}
        # Per thread ident: its last entry, reused while the thread did not run (bounded by the
        # live threads like the caches above).
        self._seen: Dict[int, _Seen] = {}
        # The idents of the last answer and their sorted list (usually the same set again).
        self._order: Tuple[Any, List[int]] = (None, [])
        # Cursors of the last few answers -> {ident: digest}; a random id per agent lifetime.
        self._lifetime = os.urandom(6).hex()
        self._counter = 0
        self._cursors: OrderedDict[str, Dict[int, int]] = OrderedDict()

    def snapshot(self, since: Optional[str] = None) -> Dict[str, Any]:
        """The answer; with ``since`` naming a remembered cursor, only what changed after it."""
        now = time.time()
        errors: List[str] = []
        try:
            self.classifier.refresh_apps()
        except Exception as exc:  # noqa: BLE001
            errors.append("app detection: %s" % exc)
        frames = sys._current_frames()
        by_ident = _threads_by_ident()
        main_ident = threading.main_thread().ident

        workers: Dict[int, Tuple[Any, str]] = {}  # ident -> (WorkerThread, pool bind)
        pools_raw: List[Tuple[str, Any, Any, List[Any]]] = []
        pools_note = ""
        try:
            for adapter in running_servers():
                pool = pool_of(adapter)
                bind = format_bind(adapter)
                if pool is None:
                    continue
                threads = list(pool._threads)
                pools_raw.append((bind, adapter, pool, threads))
                for w in threads:
                    w_ident = w.ident
                    if w_ident is not None:
                        workers[w_ident] = (w, bind)
        except Exception as exc:  # noqa: BLE001
            errors.append("pool probe: %s: %s" % (type(exc).__name__, exc))
        if not pools_raw:
            pools_note = self._why_no_pools()

        if self.classifier._apps_key != self._stacks_apps_key:
            self._stacks = {}  # app-vs-library marks may have changed with the mounted apps
            self._frames.clear()
            self._seen = {}
            self._stacks_apps_key = self.classifier._apps_key
        # Each thread's entry as built (or reused), never changed after: what is sent is a copy
        # (or the entry itself when it has no ``elapsed`` to bring up to date).
        built: List[Dict[str, Any]] = []
        oldest: Dict[str, Optional[float]] = {}
        seen_keys = set()
        sites: Dict[int, locks.Site] = {}
        seen_get = self._seen.get
        fresh: Dict[int, _Seen] = {}
        digests: Dict[int, int] = {}
        clock_ns = _clock_gettime_ns
        workers_get = workers.get
        threads_get = by_ident.get
        idents = frames.keys() | by_ident.keys()
        if idents != self._order[0]:
            self._order = (idents, sorted(idents))
        for ident in self._order[1]:
            t = threads_get(ident)
            worker = workers_get(ident)
            pool_bind = worker[1] if worker is not None else None
            try:
                last = seen_get(ident)
                cpu_ns: Optional[int] = None
                if last is not None and last.thread is t and last.clock is not None:
                    clock: Optional[int] = last.clock
                else:
                    clock = _cpu_clock(t)
                if clock is not None and clock_ns is not None:
                    try:
                        cpu_ns = clock_ns(clock)
                    except (OSError, OverflowError):
                        cpu_ns = clock = None
                if (
                    cpu_ns is not None
                    and last is not None
                    and last.cpu_ns == cpu_ns
                    and last.thread is t
                    and last.bind == pool_bind
                    and last.name == (t.name if t is not None else None)
                ):
                    record = last  # the fast path: the thread has not run since
                else:
                    native_id = getattr(t, "native_id", None)
                    cpu = cpu_ns / 1e9 if cpu_ns is not None else cpu_time(native_id)
                    record = self._record(
                        ident, t, frames.get(ident), worker, main_ident, now, cpu, cpu_ns, clock
                    )
            except Exception as exc:  # noqa: BLE001
                errors.append("thread %s: %s: %s" % (ident, type(exc).__name__, exc))
                continue
            fresh[ident] = record
            digests[ident] = record.digest
            entry = record.entry
            built.append(entry)
            started = record.started
            if started is not None and pool_bind is not None and entry["busy"]:
                elapsed = now - started
                prev = oldest.get(pool_bind)
                if prev is None or elapsed > prev:
                    oldest[pool_bind] = elapsed if elapsed > 0.0 else 0.0
            if record.conn_key is not None:
                seen_keys.add(record.conn_key)
            if record.site is not None:
                sites[ident] = record.site
        self._seen = fresh
        # Lock waits, and their likely holders only when some thread waits (usually: nothing).
        locked: Dict[int, Dict[str, Any]] = {}
        if sites:
            copies = [dict(e) for e in built]
            try:
                locks.annotate(copies, sites, frames, errors)
            except Exception as exc:  # noqa: BLE001
                errors.append("lock probe: %s: %s" % (type(exc).__name__, exc))
            locked = {e["ident"]: e for e in copies if "wait" in e or "holds" in e}
            for ident, annotated in locked.items():
                record = fresh[ident]
                digests[ident] = _digest(annotated, record.stack_digest, record.started)
        # Forget connections no worker holds any more (bounded by the pool size), and the
        # caches of threads that are gone.
        for key in self._conn_seen.keys() - seen_keys:
            self._conn_seen.pop(key, None)
        for ident in self._stacks.keys() - digests.keys():
            del self._stacks[ident]
        for ident in self._requests.keys() - digests.keys():
            del self._requests[ident]
        del frames  # frames keep every local of every thread alive: drop them promptly

        base = self._cursors.get(since) if since else None
        if since and base is not None:
            self._cursors.move_to_end(since)  # a cursor in use stays: evict the least recent
        self._counter += 1
        cursor = "%s-%d" % (self._lifetime, self._counter)
        self._cursors[cursor] = digests
        while len(self._cursors) > THREADS_CURSORS_KEPT:
            self._cursors.popitem(last=False)
        gone: List[int] = []
        if base is not None:
            base_get = base.get
            built = [e for e in built if base_get(e["ident"]) != digests[e["ident"]]]
            gone = sorted(i for i in base if i not in digests)
        # What is sent: a copy of each entry (itself when it has no start time), with the lock
        # probe's additions and ``elapsed`` brought up to now (the only field that moves while
        # a thread stands still). Each with its JSON text in pieces, made once per entry built
        # (the lock probe's copies aside), and ``elapsed`` the only piece made per answer.
        threads_out = JsonArray()
        add = threads_out.add
        repr_float = float.__repr__
        for entry in built:
            ident = entry["ident"]
            record = fresh[ident]
            out = locked.get(ident)
            if out is None:
                text = record.text
                if text is None:
                    text = record.text = _text_without_elapsed(entry, record.stack_text)
                started = record.started
                if started is not None:
                    out = dict(entry)
                    elapsed = now - started
                    out["elapsed"] = elapsed = elapsed if elapsed > 0.0 else 0.0
                    add(out, (*text, repr_float(elapsed) + "}"))
                else:
                    # Nothing to bring up to date: the entry itself (no reader changes one).
                    add(entry, (*text, "null}"))
                continue
            started = record.started
            if started is not None:
                elapsed = now - started
                out["elapsed"] = elapsed if elapsed > 0.0 else 0.0
            add(out)

        pools = []
        for bind, adapter, pool, threads in pools_raw:
            try:
                pools.append(self._pool_entry(bind, adapter, pool, threads, oldest.get(bind)))
            except Exception as exc:  # noqa: BLE001
                errors.append("pool %s: %s: %s" % (bind, type(exc).__name__, exc))
        return {
            "taken_at": now,
            "pools": pools,
            "pools_available": bool(pools_raw),
            "pools_note": pools_note,
            "requests_served": self.tracker.requests_served() if self.tracker.attached else None,
            "threads": threads_out,
            "errors": errors,
            "cursor": cursor,
            "delta": base is not None,
            "gone": gone,
        }

    def _record(
        self,
        ident: int,
        t: Optional[threading.Thread],
        frame: Optional[FrameType],
        worker: Optional[Tuple[Any, str]],
        main_ident: Optional[int],
        now: float,
        cpu: Optional[float],
        cpu_ns: Optional[int],
        clock: Optional[int],
    ) -> _Seen:
        """A thread's entry built from its frames and request, with what the next answer
        needs to reuse it."""
        entry = self._thread_entry(ident, t, frame, worker, main_ident, now, cpu)
        started = entry.pop("_started", None)
        conn_key = entry.pop("_conn_key", None)
        cached: _CachedStack = entry.pop("_cached")
        stack_digest = cached.digest
        return _Seen(
            t,
            t.name if t is not None else None,
            worker[1] if worker is not None else None,
            clock,
            cpu_ns,
            entry,
            started,
            conn_key,
            cached.site,
            stack_digest,
            _digest(entry, stack_digest, started),
            cached.text if entry["stack"] is cached.stack else None,
        )

    def _stack_of(self, ident: int, frame: Optional[FrameType]) -> _CachedStack:
        """The thread's extracted stack, reused as it is while no frame moved.

        The shared list is sent as it is; nothing downstream mutates a stack.
        """
        key = stack_key(frame)
        cached = self._stacks.get(ident)
        if cached is not None and cached.key == key:
            return cached
        lines, truncated = self._frames.lines(frame)
        like = None
        if cached is not None and cached.truncated == truncated and cached.lines == lines:
            like = cached  # the same FrameLine objects (compared by identity): the same lines
        cached = _CachedStack(key, lines, truncated, like)
        self._stacks[ident] = cached
        return cached

    def _describe(
        self, ident: int, request: Any, response: Any, peer: str, source: str
    ) -> Dict[str, Any]:
        """``describe_request``, reused while the request visibly stays the same.

        Keyed by what changes during a request (stage, handler, path and query after an
        internal redirect) and by the request's identity with its start time, so that a new
        request at a reused address is never taken for the old one. No object is kept.
        """
        try:
            key: Any = (
                id(request),
                id(response),
                getattr(response, "time", None) if response is not None else None,
                getattr(request, "stage", None),
                id(getattr(request, "handler", None)),
                getattr(request, "path_info", None),
                getattr(request, "query_string", None),
                peer,
                source,
            )
        except Exception:  # noqa: BLE001
            key = None
        cached = self._requests.get(ident)
        if key is not None and cached is not None and cached[0] == key:
            return dict(cached[1])
        info = describe_request(request, response, peer, source)
        if key is not None:
            self._requests[ident] = (key, info)
            return dict(info)
        return info

    def _stack_phase(self, entry: Dict[str, Any]) -> Optional[str]:
        cached = self._stacks.get(entry["ident"])
        return cached.phase if cached is not None else phase_from_stack(entry["stack"])

    def _why_no_pools(self) -> str:
        try:
            import cherrypy

            adapters = list(running_servers())
            if not adapters:
                state = cherrypy.engine.state
                if state != cherrypy.engine.states.STARTED:
                    return "no HTTP server started yet (engine %s)" % _state_name(state)
                return "no cheroot server in this process (served by another WSGI server?)"
            return "the HTTP server is not cheroot: pool numbers unavailable"
        except Exception as exc:  # noqa: BLE001
            return "pool numbers unavailable: %s" % exc

    def _fill_request(
        self,
        entry: Dict[str, Any],
        request: Any,
        response: Any,
        peer: str,
        source: str,
        stack: List[Dict[str, Any]],
        now: float,
    ) -> None:
        info = self._describe(entry["ident"], request, response, peer, source)
        entry["busy"] = True
        entry["request"] = info
        stage = info["stage"]
        if stage in _READING_STAGES:
            phase = "reading"
        elif stage in _WRITING_STAGES:
            phase = "writing"
        else:
            phase = "handler"
        refined = self._stack_phase(entry)
        entry["phase"] = refined if refined is not None else phase
        if info["started_at"] is not None:
            entry["elapsed"] = max(0.0, now - info["started_at"])
            entry["_started"] = info["started_at"]

    def _pool_entry(
        self, bind: str, adapter: Any, pool: Any, threads: List[Any], oldest: Optional[float]
    ) -> Dict[str, Any]:
        busy = sum(1 for w in threads if getattr(w, "conn", None) is not None)
        queued = _guard(lambda: int(pool.qsize), 0)
        idle = max(0, len(threads) - busy)
        queue_limit = _guard(lambda: finite(pool._queue.maxsize), None)
        if queue_limit is not None and queue_limit <= 0:
            queue_limit = None
        hs = adapter.httpserver
        keepalive = _guard(lambda: _parked_connections(hs), None)
        return {
            "bind": bind,
            "size": len(threads),
            "busy": busy,
            "idle": idle,
            "queued": queued,
            "min": finite(getattr(pool, "min", None)) or 0,
            "max": finite(getattr(pool, "max", None)),
            "queue_limit": queue_limit,
            "oldest_busy": oldest,
            "keepalive": keepalive,
        }

    def _thread_entry(
        self,
        ident: int,
        t: Optional[threading.Thread],
        frame: Optional[FrameType],
        worker: Optional[Tuple[Any, str]],
        main_ident: Optional[int],
        now: float,
        cpu: Optional[float],
    ) -> Dict[str, Any]:
        name = t.name if t is not None else "<thread %d>" % ident
        native_id = getattr(t, "native_id", None)
        cached = self._stack_of(ident, frame)
        stack = cached.stack
        role = _role(ident, t, worker is not None, main_ident)
        entry: Dict[str, Any] = {
            "ident": ident,
            "native_id": native_id,
            "name": name,
            "role": role,
            "daemon": t.daemon if t is not None else None,
            "busy": False,
            "phase": "unknown",
            "elapsed": None,
            "cpu_time": cpu,
            "pool": worker[1] if worker else None,
            "request": None,
            "stack": stack,
            "stack_truncated": cached.truncated,
            "_cached": cached,
        }
        tracked = self.tracker.get(ident)
        if worker is None:
            if tracked is not None:
                # A request on a server that is not cheroot (wsgiref, gunicorn threads ...).
                entry["role"] = "worker"
                self._fill_request(entry, tracked[0], tracked[1], "", "hook", stack, now)
            return entry
        w, _bind = worker
        conn = getattr(w, "conn", None)
        if conn is None:
            entry["phase"] = "idle"
            return entry
        peer = _peer(conn)
        request = response = None
        source = "hook"
        if tracked is not None:
            request, response = tracked
        else:
            request, response = find_cherrypy_request(frame)
            source = "frame"
        if request is not None:
            self._fill_request(entry, request, response, peer, source, stack, now)
        else:
            entry["busy"] = True
            phase = "reading"
            creq = find_cheroot_request(frame)
            if creq is not None and getattr(creq, "started_request", False):
                uri = _decode(getattr(creq, "uri", b""))
                path, _, query = uri.partition("?")
                entry["request"] = {
                    "method": _decode(getattr(creq, "method", b"")),
                    "path": path[:2048],
                    "query": redact_query(query),
                    "client": peer.rsplit(":", 1)[0],
                    "peer": peer,
                    "started_at": None,
                    "handler": None,
                    "stage": None,
                    "app": None,
                    "source": "cheroot",
                }
                if getattr(creq, "ready", False):
                    phase = "handler"  # parsed, inside a non-CherryPy WSGI app
            refined = self._stack_phase(entry)
            entry["phase"] = refined if refined is not None else phase
        if entry["elapsed"] is None:
            key = (ident, id(conn))
            started = getattr(w, "start_time", None)
            if not isinstance(started, float):
                started = self._conn_seen.setdefault(key, now)
            entry["elapsed"] = max(0.0, now - started)
            entry["_conn_key"] = key
            entry["_started"] = started
            if entry["request"] is not None:
                entry["request"]["started_at"] = started
        return entry


def _threads_by_ident() -> Dict[int, threading.Thread]:
    """``{t.ident: t for t in threading.enumerate()}`` (started threads), read off threading's
    own maps (one C-level copy, no per-thread property calls) where they are as we know them."""
    active = getattr(threading, "_active", None)
    limbo = getattr(threading, "_limbo", None)
    if type(active) is dict and type(limbo) is dict:
        try:
            found = dict(active)
            for t in list(limbo):
                if t.ident is not None:
                    found[t.ident] = t
            return found
        except Exception:  # noqa: BLE001
            pass
    return {t.ident: t for t in threading.enumerate() if t.ident is not None}


def _role(
    ident: int, t: Optional[threading.Thread], is_worker: bool, main_ident: Optional[int]
) -> str:
    if is_worker:
        return "worker"
    if ident == main_ident:
        return "main"
    if t is None:
        return "other"
    name = t.name or ""
    if name.startswith("cpinspect-"):
        return "agent"
    target = getattr(getattr(t, "_target", None), "__name__", "")
    if target == _OVERFLOW_TARGET or _OVERFLOW_TARGET in name:
        return "overflow"
    if name.startswith("HTTPServer ") or target in _ACCEPTOR_TARGETS:
        return "acceptor"
    if "_start_http_thread" in name:
        return "acceptor"
    try:
        from cherrypy.process.plugins import BackgroundTask

        if isinstance(t, BackgroundTask):
            return "plugin"
    except Exception:  # noqa: BLE001
        pass
    return "other"


def _peer(conn: Any) -> str:
    addr = getattr(conn, "remote_addr", None)
    port = getattr(conn, "remote_port", None)
    if addr is None:
        return ""
    return "%s:%s" % (addr, port) if port not in (None, "") else str(addr)


def _parked_connections(hs: Any) -> Optional[int]:
    manager = getattr(hs, "_connections", None)
    selector = getattr(manager, "_selector", None)
    if selector is None:
        return None
    # Drain the generator at once: it holds the selector's lock while iterating (internals 1.5).
    conns = list(selector.connections)
    return sum(1 for _fd, c in conns if c is not hs)


def _guard(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


def _state_name(state: Any) -> str:
    try:
        import cherrypy

        for name in ("STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING"):
            if state == getattr(cherrypy.engine.states, name):
                return name
    except Exception:  # noqa: BLE001
        pass
    return str(state)
