"""JSON <-> model. Tolerant reader: unknown keys are ignored, missing ones take defaults.

Standard library only. The agent emits the shapes documented in ``cpinspect/agent/wire.py``;
an agent of another version may add or drop keys, and the inspector degrades per field instead
of failing (invariant 5). ``schema_warning`` says when versions differ.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import typing
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from cpinspect.agent.wire import AGENT_VERSION, SCHEMA_VERSION
from cpinspect.model import (
    AppInfo,
    AppRoutes,
    AppSessions,
    ConfigSection,
    Evidence,
    Frame,
    LockFile,
    LockHeld,
    LockHolder,
    LockWait,
    LockWaiter,
    LoggingInfo,
    LogOrigin,
    LogPage,
    LogRecord,
    LogRouting,
    Phase,
    PoolInfo,
    ProcessInfo,
    RequestDurations,
    RequestInfo,
    Resolution,
    Role,
    RouteEntry,
    RouteNode,
    RoutesSnapshot,
    ServerInfo,
    SessionInfo,
    SessionKey,
    SessionLock,
    SessionPage,
    SessionSettings,
    SessionSize,
    SessionSizes,
    SessionsSnapshot,
    SessionsSummary,
    Snapshot,
    SourceKind,
    StaticMount,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
)


class ProtocolError(ValueError):
    """The payload is not something any agent version would send."""


def schema_warning(payload: Mapping[str, Any]) -> Optional[str]:
    """A one-line note when the agent's schema or version differs from ours, else None."""
    schema = payload.get("schema")
    agent = payload.get("agent")
    if schema != SCHEMA_VERSION:
        newer = isinstance(schema, int) and schema > SCHEMA_VERSION
        return "agent %s speaks schema %s, this inspector %d (%s): some fields may be missing" % (
            agent,
            schema,
            SCHEMA_VERSION,
            "upgrade cpinspect" if newer else "reload the agent to upgrade it",
        )
    if agent != AGENT_VERSION:
        return "agent version %s differs from inspector %s (same schema)" % (agent, AGENT_VERSION)
    return None


def _s(d: Mapping[str, Any], key: str, default: str = "") -> str:
    v = d.get(key)
    return default if v is None else str(v)


def _opt_s(d: Mapping[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    return None if v is None else str(v)


def _opt_f(d: Mapping[str, Any], key: str) -> Optional[float]:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _opt_i(d: Mapping[str, Any], key: str) -> Optional[int]:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


def _i(d: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = _opt_i(d, key)
    return default if v is None else v


def _opt_b(d: Mapping[str, Any], key: str) -> Optional[bool]:
    v = d.get(key)
    return v if isinstance(v, bool) else None


def _list(d: Mapping[str, Any], key: str) -> List[Any]:
    v = d.get(key)
    return v if isinstance(v, list) else []


def _dict(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _enum(cls: Any, value: Any, default: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        return default


def _require_object(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise ProtocolError("expected a JSON object, got %s" % type(payload).__name__)
    if "error" in payload and isinstance(payload["error"], dict):
        raise ProtocolError(_s(payload["error"], "message", "agent error"))
    return payload


def frame_from_json(d: Mapping[str, Any]) -> Frame:
    return Frame(
        filename=_s(d, "file", "?"),
        lineno=_i(d, "line"),
        function=_s(d, "function", "?"),
        qualname=_opt_s(d, "qualname"),
        is_app=bool(d.get("app", False)),
    )


_FrameKey = Tuple[str, int, str, Optional[str], bool]
_StackKey = Tuple[_FrameKey, ...]

STACKS_KEPT = 20_000
"""Stacks remembered by ``Stacks`` in each of its two generations."""


class Stacks:
    """The agent's stacks made once: a stack whose frames' JSON is the same as one made in the
    last two generations is the same tuple of the same ``Frame`` objects, and its frames are
    made once too. Each full answer of 1,000 threads brings ~14,500 frames, nearly all of them
    those of the last answer; equal either way, but made again they cost the inspector the
    ``Frame``s and the TUI keys and joins for stacks that are new objects (``StackKeys``,
    ``merge.fallback_threads`` reuse what is the same object).

    Only frames whose values have the types the agent sends are remembered (``line`` an
    ``int``, not ``True``, which equals 1 as a key); others are made as before. Each
    generation holds up to ``STACKS_KEPT`` stacks and as many frames; a full one becomes the
    older and the oldest is dropped. Not locked: a lost entry is only made again."""

    def __init__(self) -> None:
        self._stacks: Dict[_StackKey, Tuple[Frame, ...]] = {}
        self._older: Dict[_StackKey, Tuple[Frame, ...]] = {}
        self._frames: Dict[_FrameKey, Frame] = {}
        self._older_frames: Dict[_FrameKey, Frame] = {}

    def stack(self, frames: Sequence[Any]) -> Tuple[Frame, ...]:
        keys = []
        for f in frames:
            if not isinstance(f, dict):
                continue
            line = f.get("line")
            file = f.get("file")
            function = f.get("function")
            qualname = f.get("qualname")
            app = f.get("app", False)
            if not (
                type(line) is int
                and type(file) is str
                and type(function) is str
                and (qualname is None or type(qualname) is str)
                and type(app) is bool
            ):
                return tuple(frame_from_json(f) for f in frames if isinstance(f, dict))
            keys.append((file, line, function, qualname, app))
        key = tuple(keys)
        found = self._stacks.get(key)
        if found is None:
            found = self._older.get(key)
            if found is None:
                found = tuple(map(self._frame, keys))
            if len(self._stacks) >= STACKS_KEPT:
                self._older, self._stacks = self._stacks, {}
                self._older_frames, self._frames = self._frames, {}
            self._stacks[key] = found
        return found

    def _frame(self, key: _FrameKey) -> Frame:
        frame = self._frames.get(key)
        if frame is None:
            frame = self._older_frames.get(key)
            if frame is None:
                frame = Frame(
                    filename=key[0],
                    lineno=key[1],
                    function=key[2],
                    qualname=key[3],
                    is_app=key[4],
                )
            self._frames[key] = frame
        return frame


_STACKS = Stacks()


def request_from_json(d: Mapping[str, Any]) -> RequestInfo:
    return RequestInfo(
        method=_s(d, "method"),
        path=_s(d, "path"),
        query=_s(d, "query"),
        client=_s(d, "client"),
        peer=_s(d, "peer"),
        started_at=_opt_f(d, "started_at"),
        handler=_opt_s(d, "handler"),
        stage=_opt_s(d, "stage"),
        app=_opt_s(d, "app"),
        source=_s(d, "source", "hook"),
    )


def lock_wait_from_json(d: Any) -> Optional[LockWait]:
    """A thread's ``wait`` (None when absent or not an object)."""
    if not isinstance(d, dict):
        return None
    return LockWait(
        expr=_s(d, "expr", "?"),
        obj=_s(d, "obj"),
        type=_s(d, "type"),
        filename=_s(d, "filename", "?"),
        lineno=_i(d, "lineno"),
        owner=_opt_i(d, "owner"),
    )


def lock_held_from_json(d: Mapping[str, Any]) -> LockHeld:
    return LockHeld(
        expr=_s(d, "expr", "?"),
        obj=_s(d, "obj"),
        filename=_s(d, "filename", "?"),
        lineno=_i(d, "lineno"),
    )


def thread_from_json(d: Mapping[str, Any]) -> ThreadInfo:
    request = d.get("request")
    return ThreadInfo(
        ident=_i(d, "ident"),
        name=_s(d, "name", "?"),
        role=_enum(Role, d.get("role"), Role.OTHER),
        native_id=_opt_i(d, "native_id"),
        busy=bool(d.get("busy", False)),
        phase=_enum(Phase, d.get("phase"), Phase.UNKNOWN),
        request=request_from_json(request) if isinstance(request, dict) else None,
        elapsed=_opt_f(d, "elapsed"),
        cpu_time=_opt_f(d, "cpu_time"),
        daemon=_opt_b(d, "daemon"),
        stack=_STACKS.stack(_list(d, "stack")),
        stack_truncated=_i(d, "stack_truncated"),
        pool=_opt_s(d, "pool"),
        owns_gil=_opt_b(d, "owns_gil"),
        wait=lock_wait_from_json(d.get("wait")),
        holds=tuple(lock_held_from_json(h) for h in _list(d, "holds") if isinstance(h, dict)),
    )


def pool_from_json(d: Mapping[str, Any]) -> PoolInfo:
    return PoolInfo(
        bind=_s(d, "bind", "?"),
        size=_i(d, "size"),
        busy=_i(d, "busy"),
        idle=_i(d, "idle"),
        queued=_i(d, "queued"),
        min_threads=_i(d, "min"),
        max_threads=_opt_i(d, "max"),
        queue_limit=_opt_i(d, "queue_limit"),
        oldest_busy=_opt_f(d, "oldest_busy"),
        keepalive=_opt_i(d, "keepalive"),
    )


def threads_cursor(payload: Any) -> Optional[str]:
    """The cursor of a ``/v1/threads`` answer, to send back as ``?since=`` (None: an old agent)."""
    cursor = payload.get("cursor") if isinstance(payload, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _carried(t: ThreadInfo, taken_at: float, dt: float) -> ThreadInfo:
    """An unchanged thread of a delta: the previous object, with ``elapsed`` brought forward."""
    if t.elapsed is None:
        return t
    started = t.request.started_at if t.request is not None else None
    # The agent's own formula where the start is known (so equal to a full answer's value).
    elapsed = max(0.0, taken_at - started) if started is not None else max(0.0, t.elapsed + dt)
    return dataclasses.replace(t, elapsed=elapsed) if elapsed != t.elapsed else t


def _apply_delta(
    previous: ThreadsSnapshot, d: Mapping[str, Any], taken_at: float
) -> Tuple[ThreadInfo, ...]:
    gone = {i for i in _list(d, "gone") if isinstance(i, int)}
    changed = {
        t.ident: t
        for t in (thread_from_json(e) for e in _list(d, "threads") if isinstance(e, dict))
    }
    dt = taken_at - previous.taken_at
    merged: Dict[int, ThreadInfo] = {}
    for t in previous.threads:
        if t.ident not in gone and t.ident not in changed:
            merged[t.ident] = _carried(t, taken_at, dt)
    merged.update(changed)
    return tuple(merged[i] for i in sorted(merged))  # the agent sends threads sorted by ident


def threads_from_json(payload: Any, previous: Optional[ThreadsSnapshot] = None) -> ThreadsSnapshot:
    """A snapshot from a full answer, or from a delta (``"delta": true``) applied to ``previous``.

    ``previous`` must be the snapshot read from the answer whose cursor was sent as ``since``.
    """
    d = _require_object(payload)
    if not isinstance(d.get("threads"), list):
        raise ProtocolError("threads payload without a 'threads' list")
    taken_at = _opt_f(d, "taken_at") or 0.0
    if d.get("delta") is True:
        if previous is None:
            raise ProtocolError("a delta threads answer, but no previous snapshot to apply it to")
        threads = _apply_delta(previous, d, taken_at)
    else:
        threads = tuple(thread_from_json(t) for t in _list(d, "threads") if isinstance(t, dict))
    return ThreadsSnapshot(
        taken_at=taken_at,
        threads=threads,
        pools=tuple(pool_from_json(p) for p in _list(d, "pools") if isinstance(p, dict)),
        pools_available=bool(d.get("pools_available", bool(d.get("pools")))),
        pools_note=_s(d, "pools_note"),
        requests_served=_opt_i(d, "requests_served"),
        errors=tuple(str(e) for e in _list(d, "errors")),
    )


def info_from_json(payload: Any) -> ProcessInfo:
    d = _require_object(payload)
    if not isinstance(d.get("pid"), int):
        raise ProtocolError("info payload without a 'pid'")
    engine = _dict(d, "engine")
    log = _dict(d, "logging")
    return ProcessInfo(
        pid=_i(d, "pid"),
        cmdline=tuple(str(a) for a in _list(d, "cmdline")),
        python=_s(d, "python", "?"),
        cherrypy=_opt_s(d, "cherrypy"),
        cheroot=_opt_s(d, "cheroot"),
        agent_version=_s(d, "agent", "?"),
        schema=_i(d, "schema"),
        engine_state=_s(engine, "state", "UNKNOWN"),
        started_at=_opt_f(d, "started_at"),
        servers=tuple(
            ServerInfo(
                bind=_s(s, "bind", "?"),
                pool_size=_opt_i(s, "pool_size"),
                kind=_s(s, "kind", "cheroot"),
                running=bool(s.get("running", True)),
            )
            for s in _list(d, "servers")
            if isinstance(s, dict)
        ),
        apps=tuple(
            AppInfo(script_name=_s(a, "script_name"), root=_opt_s(a, "root"), kind=_s(a, "kind"))
            for a in _list(d, "apps")
            if isinstance(a, dict)
        ),
        logging=LoggingInfo(
            screen=_opt_b(log, "screen"),
            error_file=_opt_s(log, "error_file"),
            access_file=_opt_s(log, "access_file"),
            handlers=tuple(str(h) for h in _list(log, "handlers")),
        ),
        autoreload=_opt_b(engine, "autoreload"),
        environment=_opt_s(engine, "environment"),
        agent_installed_at=_opt_f(d, "agent_installed_at"),
    )


def _strs(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(v) for v in _list(d, key))


LEGACY_NOT_EXPOSED = "would 404: not exposed"
"""The warning agents before ``internal``/``reached_via`` put on every unexposed method (40 false
alarms on an app with one dispatcher): dropped when read, the kind says "not exposed" and the
forgotten-expose finding warns when a request hits one."""


def route_node_from_json(d: Mapping[str, Any]) -> RouteNode:
    popargs = d.get("popargs")
    return RouteNode(
        path=_s(d, "path", "/"),
        name=_s(d, "name"),
        kind=_s(d, "kind", "object"),
        exposed=bool(d.get("exposed", False)),
        qualname=_s(d, "qualname"),
        filename=_opt_s(d, "file"),
        lineno=_opt_i(d, "line"),
        signature=_opt_s(d, "signature"),
        alias_of=_opt_s(d, "alias_of"),
        methods=_strs(d, "methods"),
        popargs=tuple(str(p) for p in popargs) if isinstance(popargs, list) else None,
        dynamic=bool(d.get("dynamic", False)),
        tools=_strs(d, "tools"),
        config=_settings(d, "config"),
        warnings=tuple(w for w in _strs(d, "warnings") if w != LEGACY_NOT_EXPOSED),
        reached_via=_opt_s(d, "reached_via"),
        reached_at=_opt_s(d, "reached_at"),
        app_code=_opt_b(d, "app_code"),
    )


def _settings(d: Mapping[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in _dict(d, key).items()))


def config_section_from_json(d: Mapping[str, Any]) -> ConfigSection:
    return ConfigSection(
        path=_s(d, "path", "/"),
        settings=_settings(d, "settings"),
        dispatcher=_opt_s(d, "dispatcher"),
    )


def static_mount_from_json(d: Mapping[str, Any]) -> StaticMount:
    return StaticMount(
        path=_s(d, "path", "/"),
        kind=_s(d, "kind", "staticdir"),
        source=_s(d, "source", "app.config"),
        configured=_opt_s(d, "configured"),
        root=_opt_s(d, "root"),
        resolved=_opt_s(d, "resolved"),
        index=_opt_s(d, "index"),
        content_types=tuple(sorted((str(k), str(v)) for k, v in _dict(d, "content_types").items())),
        exists=_opt_b(d, "exists"),
        readable=_opt_b(d, "readable"),
        file_count=_opt_i(d, "file_count"),
        file_count_capped=bool(d.get("file_count_capped", False)),
        dir_count=_opt_i(d, "dir_count"),
        warnings=_strs(d, "warnings"),
    )


def routes_from_json(payload: Any) -> RoutesSnapshot:
    d = _require_object(payload)
    if not isinstance(d.get("apps"), list):
        raise ProtocolError("routes payload without an 'apps' list")
    apps = []
    for a in _list(d, "apps"):
        if not isinstance(a, dict):
            continue
        apps.append(
            AppRoutes(
                script_name=_s(a, "script_name"),
                kind=_s(a, "kind", "cherrypy"),
                root=_opt_s(a, "root"),
                dispatcher=_s(a, "dispatcher", "default"),
                nodes=tuple(
                    route_node_from_json(n) for n in _list(a, "nodes") if isinstance(n, dict)
                ),
                routes=tuple(
                    RouteEntry(
                        path=_s(r, "path"),
                        name=_opt_s(r, "name"),
                        controller=_opt_s(r, "controller"),
                        action=_opt_s(r, "action"),
                        qualname=_opt_s(r, "qualname"),
                        filename=_opt_s(r, "file"),
                        lineno=_opt_i(r, "line"),
                    )
                    for r in _list(a, "routes")
                    if isinstance(r, dict)
                ),
                static=tuple(
                    static_mount_from_json(m) for m in _list(a, "static") if isinstance(m, dict)
                ),
                config=tuple(
                    config_section_from_json(c) for c in _list(a, "config") if isinstance(c, dict)
                ),
                truncated=bool(a.get("truncated", False)),
                errors=_strs(a, "errors"),
            )
        )
    return RoutesSnapshot(
        taken_at=_opt_f(d, "taken_at") or 0.0,
        apps=tuple(apps),
        global_tools=_strs(d, "global_tools"),
        cap=_i(d, "cap"),
        truncated=bool(d.get("truncated", False)),
        errors=_strs(d, "errors"),
    )


LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVELNO = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def levelno_of(name: str) -> int:
    """The ``logging`` number of a level name (INFO for one we do not know)."""
    return _LEVELNO.get(name.upper(), 20)


def log_record_from_json(d: Mapping[str, Any]) -> LogRecord:
    """One record of ``/v1/log`` (see ``cpinspect/agent/wire.py``)."""
    thread = _dict(d, "thread")
    request = d.get("request")
    access = d.get("access")
    access_d: Mapping[str, Any] = access if isinstance(access, dict) else {}
    level = _s(d, "level", "INFO")
    levelno = _opt_i(d, "levelno")
    logger = _s(d, "logger", "?")
    return LogRecord(
        seq=_i(d, "seq"),
        time=_opt_f(d, "time") or 0.0,
        level=level,
        levelno=levelno if levelno is not None else levelno_of(level),
        logger=logger,
        message=_s(d, "message"),
        cut=_i(d, "cut"),
        traceback=_opt_s(d, "traceback") or None,
        thread_ident=_opt_i(thread, "ident"),
        thread_name=_opt_s(thread, "name"),
        request=request_from_json(request) if isinstance(request, dict) else None,
        app=_opt_s(d, "app"),
        status=_opt_i(access_d, "status"),
        size=_opt_i(access_d, "size"),
        duration=_opt_f(access_d, "duration"),
        content_type=_opt_s(access_d, "content_type"),
        origin=LogOrigin.BUFFER,
        access=isinstance(access, dict) or logger.startswith("cherrypy.access"),
    )


def log_routing_from_json(d: Mapping[str, Any]) -> LogRouting:
    return LogRouting(
        screen=_opt_b(d, "screen"),
        error_file=_opt_s(d, "error_file"),
        access_file=_opt_s(d, "access_file"),
        other_handlers=_strs(d, "other_handlers"),
        goes_nowhere=bool(d.get("goes_nowhere", False)),
        fix=_opt_s(d, "fix"),
    )


def log_page_from_json(payload: Any) -> LogPage:
    """A ``/v1/log`` answer. Records that are not objects are skipped, not fatal."""
    d = _require_object(payload)
    if not isinstance(d.get("records"), list):
        raise ProtocolError("log payload without a 'records' list")
    routing = d.get("routing")
    return LogPage(
        taken_at=_opt_f(d, "taken_at") or 0.0,
        buffer=_s(d, "buffer"),
        capacity=_i(d, "capacity"),
        max_message=_i(d, "max_message"),
        first=_i(d, "first"),
        latest=_i(d, "latest"),
        missed=max(0, _i(d, "missed")),
        more=bool(d.get("more", False)),
        records=tuple(log_record_from_json(r) for r in _list(d, "records") if isinstance(r, dict)),
        routing=log_routing_from_json(routing) if isinstance(routing, dict) else None,
        dropped=_i(d, "dropped"),
        next=_opt_i(d, "next"),
        errors=_strs(d, "errors"),
    )


def resolution_from_json(payload: Any) -> Resolution:
    d = _require_object(payload)
    v = _dict(d, "verdict")
    if not v:
        raise ProtocolError("resolve payload without a 'verdict'")
    h = _dict(v, "handler")
    st = _dict(v, "static")
    return Resolution(
        path=_s(d, "path"),
        method=_s(d, "method", "GET"),
        host=_s(d, "host"),
        kind=_s(v, "kind", "error"),
        status=_opt_i(v, "status"),
        reason=_s(v, "reason"),
        steps=_strs(d, "steps"),
        app=_opt_s(d, "app"),
        dispatcher=_opt_s(d, "dispatcher"),
        handler=_opt_s(h, "qualname"),
        filename=_opt_s(h, "file"),
        lineno=_opt_i(h, "line"),
        args=_strs(h, "args"),
        kwargs=tuple(sorted((str(k), str(val)) for k, val in _dict(h, "kwargs").items())),
        location=_opt_s(v, "location"),
        static_file=_opt_s(st, "file"),
        mime=_opt_s(st, "mime"),
        tools=_strs(v, "tools"),
        abandoned=bool(d.get("abandoned", False)),
        decided_by=_opt_s(v, "decided_by"),
        verdict=_s(v, "verdict"),
        guards=_strs(v, "guards"),
    )


def _opt_request(d: Mapping[str, Any], key: str) -> Optional[RequestInfo]:
    v = d.get(key)
    return request_from_json(v) if isinstance(v, dict) else None


def _session_lock_from_json(d: Mapping[str, Any]) -> SessionLock:
    holder = _dict(d, "holder")
    file_ = d.get("file")
    return SessionLock(
        state=_s(d, "state", "unknown"),
        holder=LockHolder(
            ident=_i(holder, "ident"),
            name=_opt_s(holder, "name"),
            request=_opt_request(holder, "request"),
            held_for=_opt_f(holder, "held_for"),
            held_for_basis=_s(holder, "held_for_basis"),
        )
        if holder
        else None,
        file=LockFile(
            age=_opt_f(file_, "age"),
            pid=_opt_i(file_, "pid"),
            stale=bool(file_.get("stale", False)),
        )
        if isinstance(file_, dict)
        else None,
        waiters=tuple(
            LockWaiter(
                ident=_i(w, "ident"),
                name=_opt_s(w, "name"),
                request=_opt_request(w, "request"),
                waiting_for=_opt_f(w, "waiting_for"),
                clean_up=w.get("clean_up") is True,
            )
            for w in _list(d, "waiters")
            if isinstance(w, dict)
        ),
    )


def session_from_json(d: Mapping[str, Any]) -> SessionInfo:
    return SessionInfo(
        fp=_s(d, "fp", "?"),
        expires_at=_opt_f(d, "expires_at"),
        time_left=_opt_f(d, "time_left"),
        size=_opt_i(d, "size"),
        keys=tuple(
            SessionKey(
                key=_s(k, "key"),
                type=_s(k, "type"),
                size=_opt_i(k, "size"),
                value=_opt_s(k, "value"),
            )
            for k in _list(d, "keys")
            if isinstance(k, dict)
        ),
        revealed=bool(d.get("revealed", False)),
        lock=_session_lock_from_json(_dict(d, "lock")),
    )


def _session_settings_from_json(d: Mapping[str, Any]) -> SessionSettings:
    servers = d.get("servers")
    return SessionSettings(
        timeout=_opt_f(d, "timeout"),
        clean_freq=_opt_f(d, "clean_freq"),
        clean_thread=_s(d, "clean_thread", "not started"),
        storage_path=_opt_s(d, "storage_path"),
        path_exists=_opt_b(d, "path_exists"),
        path_writable=_opt_b(d, "path_writable"),
        locking=_s(d, "locking", "implicit"),
        name=_s(d, "name", "session_id"),
        secure=bool(d.get("secure", False)),
        httponly=bool(d.get("httponly", False)),
        persistent=bool(d.get("persistent", True)),
        domain=_opt_s(d, "domain"),
        servers=tuple(str(x) for x in servers) if isinstance(servers, list) else None,
    )


def _sessions_summary_from_json(d: Mapping[str, Any]) -> SessionsSummary:
    sizes = d.get("sizes")
    return SessionsSummary(
        expiring_soon=_i(d, "expiring_soon"),
        locked=_i(d, "locked"),
        waiters=_i(d, "waiters"),
        sizes=SessionSizes(
            min=_i(sizes, "min"),
            p50=_i(sizes, "p50"),
            p90=_i(sizes, "p90"),
            max=_i(sizes, "max"),
            total=_i(sizes, "total"),
        )
        if isinstance(sizes, dict)
        else None,
        largest=tuple(
            SessionSize(fp=_s(x, "fp", "?"), size=_i(x, "size"))
            for x in _list(d, "largest")
            if isinstance(x, dict)
        ),
        as_of=_opt_f(d, "as_of"),
        stale_locks=_opt_i(d, "stale_locks"),
        orphan_locks=_opt_i(d, "orphan_locks"),
    )


def app_sessions_from_json(a: Mapping[str, Any]) -> AppSessions:
    page = _dict(a, "page")
    return AppSessions(
        app=_s(a, "app"),
        backend=_s(a, "backend", "custom"),
        storage_class=_s(a, "storage_class"),
        where=_strs(a, "where"),
        settings=_session_settings_from_json(_dict(a, "settings")),
        listable=bool(a.get("listable", False)),
        not_listable=_opt_s(a, "not_listable"),
        partial=bool(a.get("partial", False)),
        partial_reason=_opt_s(a, "partial_reason"),
        count=_opt_i(a, "count"),
        expired=_opt_i(a, "expired"),
        summary=_sessions_summary_from_json(_dict(a, "summary")),
        page=SessionPage(
            offset=_i(page, "offset"),
            limit=_i(page, "limit", 50),
            sort=_s(page, "sort", "expiry"),
            total=_i(page, "total"),
        ),
        sessions=tuple(session_from_json(x) for x in _list(a, "sessions") if isinstance(x, dict)),
        locks=tuple(session_from_json(x) for x in _list(a, "locks") if isinstance(x, dict)),
        error=_opt_s(a, "error"),
    )


def sessions_from_json(payload: Any, revealed: Optional[str] = None) -> SessionsSnapshot:
    """``/v1/sessions`` -> model; ``revealed`` is the fingerprint the request asked to reveal."""
    d = _require_object(payload)
    if not isinstance(d.get("apps"), list):
        raise ProtocolError("sessions payload without an 'apps' list")
    durations = d.get("request_durations")
    return SessionsSnapshot(
        taken_at=_opt_f(d, "taken_at") or 0.0,
        apps=tuple(app_sessions_from_json(a) for a in _list(d, "apps") if isinstance(a, dict)),
        errors=_strs(d, "errors"),
        key_id=_s(d, "key_id"),
        request_durations=RequestDurations(
            count=_i(durations, "count"),
            p50=_opt_f(durations, "p50") or 0.0,
            p95=_opt_f(durations, "p95") or 0.0,
            max=_opt_f(durations, "max") or 0.0,
        )
        if isinstance(durations, dict)
        else None,
        revealed=revealed,
    )


_SCALARS = frozenset((str, int, float, bool, type(None)))
"""Types ``to_json`` returns as they are (exact types: a ``str`` enum is not one of them)."""
_FIELD_NAMES: Dict[type, Tuple[str, ...]] = {}
"""Field names of each dataclass met, in declaration order (``dataclasses.fields`` is slow)."""


def to_json(obj: Any) -> Any:
    """Model object -> JSON-able structure, field names as in ``model.py`` (snapshot files)."""
    # A 1,000-thread snapshot is ~250,000 values: scalars are returned without a call, and
    # each dataclass's field names are looked up once per class.
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if cls in _SCALARS:
            return obj
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            return _to_json_other(obj)
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(obj))
    out = {}
    for name in names:
        value = getattr(obj, name)
        out[name] = value if type(value) in _SCALARS else to_json(value)
    return out


def _to_json_other(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [v if type(v) in _SCALARS else to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


# --- snapshot files ----------------------------------------------------------------------------
#
# A file is one JSON object: {"kind": FILE_KIND, "schema": FILE_SCHEMA, "cpinspect": version,
# "snapshots": [Snapshot, ...]} where every model object is written with its field names
# (``to_json``) and read back by ``from_json`` from the dataclass's own type hints, so writer and
# reader cannot disagree. One snapshot or a series (``snapshot --count N``) alike.

FILE_KIND = "cpinspect-snapshot"
FILE_SCHEMA = 2
"""Schema of snapshot files. Schema 1 was the ``dump --json`` document of cpinspect 0.1 (no
``kind``; one ``info`` and one ``threads``): it still opens."""
OLDEST_FILE_SCHEMA = 1


class FileFormatError(ProtocolError):
    """A document that is not a snapshot this cpinspect can read; the message says why."""


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def from_json(cls: Any, data: Any, where: str = "") -> Any:
    """JSON-able ``data`` -> an instance of the model type ``cls`` (the inverse of ``to_json``).

    Unknown keys are ignored and missing ones take the field's default; a value of the wrong
    type raises ``FileFormatError`` naming where it is (``snapshots[0].threads.threads[3]``).
    """
    try:
        return _reader(cls)(data)
    except _Bad as bad:
        raise bad.error(where) from None


# How ``from_json`` reads: each type hint is turned once into a reader, a function of the JSON
# value alone (a 1,000-thread file holds ~150,000 values: walking the hints for every one of
# them was most of the time it took to open). Where a value sits is worked out only when it is
# wrong: ``_Bad`` collects the path on its way out and ``from_json`` turns it into the message.

_Reader = Callable[[Any], Any]
_NONE = type(None)


class _Bad(Exception):
    """A value of the wrong type: the message without its place, the place built on unwind."""

    def __init__(self, message: str, fallback: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path: List[str] = []
        """Steps from the value up (``.name``, ``[3]``), innermost first."""
        self.fallback = fallback
        """What to name the place when it is empty (the class missing a field)."""

    def error(self, where: str) -> FileFormatError:
        place = where + "".join(reversed(self.path))
        return FileFormatError("%s: %s" % (place or self.fallback, self.message))


_READERS: Dict[Any, _Reader] = {}


def _reader(hint: Any) -> _Reader:
    reader = _READERS.get(hint)
    if reader is None:
        reader = _READERS[hint] = _make_reader(hint)
    return reader


def _passthrough(hint: Any) -> FrozenSet[type]:
    """Types of JSON value that ``hint``'s reader would return unchanged (checked inline)."""
    if hint is str or hint is int or hint is bool or hint is float:
        return frozenset((hint,))  # a float read stays the same float
    if typing.get_origin(hint) is typing.Union:
        present = [a for a in typing.get_args(hint) if a is not _NONE]
        return frozenset((_NONE,)) | _passthrough(present[0])
    return frozenset()


def _make_reader(hint: Any) -> _Reader:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        present = [a for a in typing.get_args(hint) if a is not _NONE]
        inner = _reader(present[0])

        def read_optional(data: Any) -> Any:
            return None if data is None else inner(data)

        return read_optional
    if origin is tuple:
        return _tuple_reader(typing.get_args(hint))
    if hint is Evidence:
        return _evidence_reader(_dataclass_reader(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_reader(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_reader(hint)
    if hint is float:
        return _read_float
    if hint is int or hint is str or hint is bool:
        return _exact_reader(hint)

    def unknown(data: Any) -> Any:
        raise TypeError("no JSON reader for %r" % (hint,))  # a model type this module lacks

    return unknown


def _tuple_reader(args: Tuple[Any, ...]) -> _Reader:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _reader(args[0])
        keep = _passthrough(args[0])

        def read_items(data: Any) -> Any:
            if not isinstance(data, list):
                raise _Bad("expected a list, got %s" % _type_name(data))
            out = []
            for i, v in enumerate(data):
                if type(v) in keep:
                    out.append(v)
                    continue
                try:
                    out.append(item(v))
                except _Bad as bad:
                    bad.path.append("[%d]" % i)
                    raise
            return tuple(out)

        return read_items
    items = tuple(_reader(a) for a in args)

    def read_fixed(data: Any) -> Any:
        if not isinstance(data, list):
            raise _Bad("expected a list, got %s" % _type_name(data))
        if len(items) != len(data):
            raise _Bad("expected %d items, got %d" % (len(items), len(data)))
        out = []
        for i, (read, v) in enumerate(zip(items, data)):
            try:
                out.append(read(v))
            except _Bad as bad:
                bad.path.append("[%d]" % i)
                raise
        return tuple(out)

    return read_fixed


_ABSENT = object()


def _dataclass_reader(cls: type) -> _Reader:
    # Filled at the first call, not here: a dataclass may refer to itself through its fields.
    plan: List[Tuple[str, FrozenSet[type], _Reader, bool]] = []
    planned = False

    def read_object(data: Any) -> Any:
        nonlocal planned
        if not planned:
            hints = _hints(cls)
            plan.extend(
                (
                    f.name,
                    _passthrough(hints[f.name]),
                    _reader(hints[f.name]),
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                )
                for f in dataclasses.fields(cls)
            )
            planned = True
        if not isinstance(data, dict):
            raise _Bad("expected an object, got %s" % _type_name(data))
        kwargs = {}
        for name, keep, read, required in plan:
            v = data.get(name, _ABSENT)
            if v is _ABSENT:
                if required:
                    raise _Bad("missing %r" % name, fallback=cls.__name__)
            elif type(v) in keep:
                kwargs[name] = v
            else:
                try:
                    kwargs[name] = read(v)
                except _Bad as bad:
                    bad.path.append("." + name)
                    raise
        return cls(**kwargs)

    return read_object


def _evidence_reader(read_object: _Reader) -> _Reader:
    """Files written before ``Evidence`` carry a finding's evidence as strings (``pid:123``,
    ``thread:7``): the kind before the first ``:``, the ref after it, the string as its label."""

    def read_evidence(data: Any) -> Any:
        if isinstance(data, str):
            kind, _, ref = data.partition(":")
            return Evidence(kind=kind, ref=ref, label=data)
        return read_object(data)

    return read_evidence


def _enum_reader(cls: Any) -> _Reader:
    members = cls._value2member_map_

    def read_enum(data: Any) -> Any:
        try:
            return members[data]
        except (KeyError, TypeError):
            pass  # not a value as such (or unhashable): let the enum decide, as cls(data) does
        try:
            return cls(data)
        except ValueError:
            raise _Bad("unknown %s %r" % (cls.__name__, data)) from None

    return read_enum


def _read_float(data: Any) -> float:
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise _Bad("expected a number, got %s" % _type_name(data))
    return float(data)


def _exact_reader(cls: type) -> _Reader:
    def read_exact(data: Any) -> Any:
        if type(data) is not cls:
            raise _Bad("expected %s, got %s" % (cls.__name__, _type_name(data)))
        return data

    return read_exact


def snapshots_document(snapshots: Sequence[Snapshot]) -> Dict[str, Any]:
    """The JSON document of a snapshot file (also what ``dump --json`` prints)."""
    return {
        "kind": FILE_KIND,
        "schema": FILE_SCHEMA,
        "cpinspect": AGENT_VERSION,
        "snapshots": [to_json(s) for s in snapshots],
    }


class DocumentEncoder:
    """``snapshots_document`` as compact JSON text, byte for byte ``json.dumps(..., separators=
    (",", ":"))`` of it, each thread's JSON kept by identity between two encodings.

    A one-shot command encodes its snapshot while py-spy still reads (the agent's threads),
    then again once py-spy's GIL holder is joined: the join leaves every other thread the same
    object, so the second encoding converts only the threads that changed (1,000 threads:
    ~40 ms -> a few ms). Only the last encoding's threads are kept.
    """

    def __init__(self) -> None:
        self._threads: Dict[int, Tuple[ThreadInfo, str]] = {}

    def encode(self, snapshots: Sequence[Snapshot]) -> str:
        token = os.urandom(12).hex()  # marks where each thread list goes: in no other value
        skeleton: List[Snapshot] = []
        lists: List[Tuple[str, Tuple[ThreadInfo, ...]]] = []
        for index, snapshot in enumerate(snapshots):
            threads = snapshot.threads
            if threads is None or not threads.threads:
                skeleton.append(snapshot)
                continue
            lists.append(("%s-%d" % (token, index), threads.threads))
            skeleton.append(dataclasses.replace(snapshot, threads=_without_threads(threads)))
        doc = snapshots_document(skeleton)
        marked = iter(lists)
        for snapshot, out in zip(snapshots, doc["snapshots"]):
            if snapshot.threads is not None and snapshot.threads.threads:
                out["threads"]["threads"] = next(marked)[0]
        text = json.dumps(doc, separators=(",", ":"))
        kept: Dict[int, Tuple[ThreadInfo, str]] = {}
        for marker, listed in lists:
            parts = []
            for thread in listed:
                known = self._threads.get(id(thread))
                if known is None or known[0] is not thread:
                    known = (thread, json.dumps(to_json(thread), separators=(",", ":")))
                kept[id(thread)] = known
                parts.append(known[1])
            text = text.replace('"%s"' % marker, "[%s]" % ",".join(parts), 1)
        self._threads = kept
        return text


def _without_threads(threads: ThreadsSnapshot) -> ThreadsSnapshot:
    return dataclasses.replace(threads, threads=())


def snapshots_from_document(doc: Any) -> Tuple[Snapshot, ...]:
    """The snapshots of a file's JSON document, oldest first. Raises ``FileFormatError``."""
    if not isinstance(doc, dict):
        what = "a list (py-spy's dump --json?)" if isinstance(doc, list) else _type_name(doc)
        raise FileFormatError("not a cpinspect snapshot: the JSON is %s, not an object" % what)
    schema = doc.get("schema")
    kind = doc.get("kind")
    if kind is None and schema == 1 and isinstance(doc.get("threads"), dict):
        return (_legacy_dump(doc),)
    if kind != FILE_KIND:
        raise FileFormatError(
            "not a cpinspect snapshot (its kind is %r, expected %r)" % (kind, FILE_KIND)
        )
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise FileFormatError("snapshot without a schema version")
    if schema > FILE_SCHEMA:
        raise FileFormatError(
            "file schema %d (written by cpinspect %s) needs a newer cpinspect (this one reads "
            "schemas %d-%d): upgrade cpinspect to open it"
            % (schema, doc.get("cpinspect", "?"), OLDEST_FILE_SCHEMA, FILE_SCHEMA)
        )
    items = doc.get("snapshots")
    if not isinstance(items, list) or not items:
        raise FileFormatError("a snapshot file with no snapshots in it")
    return tuple(from_json(Snapshot, s, "snapshots[%d]" % i) for i, s in enumerate(items))


def _legacy_dump(doc: Mapping[str, Any]) -> Snapshot:
    """Schema 1: ``{"schema": 1, "source", "info", "threads", "locals"?}`` of cpinspect 0.1."""
    threads = from_json(ThreadsSnapshot, doc["threads"], "threads")
    source = doc.get("source")
    return Snapshot(
        taken_at=threads.taken_at,
        source=SourceKind.PYSPY if source == "py-spy" else SourceKind.AGENT,
        info=from_json(Optional[ProcessInfo], doc.get("info"), "info"),
        threads=threads,
        locals=from_json(Tuple[ThreadLocals, ...], doc.get("locals") or [], "locals"),
        cpinspect=str(doc.get("cpinspect", "")),
    )
