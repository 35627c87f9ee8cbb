"""JSON <-> model. Tolerant reader: unknown keys are ignored, missing ones take defaults.

Standard library only. The agent emits the shapes documented in ``cpinspect/agent/wire.py``;
an agent of another version may add or drop keys, and the inspector degrades per field instead
of failing (invariant 5). ``schema_warning`` says when versions differ.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from cpinspect.agent.wire import AGENT_VERSION, SCHEMA_VERSION
from cpinspect.model import (
    AppInfo,
    AppRoutes,
    ConfigSection,
    Frame,
    LoggingInfo,
    Phase,
    PoolInfo,
    ProcessInfo,
    RequestInfo,
    Resolution,
    Role,
    RouteEntry,
    RouteNode,
    RoutesSnapshot,
    ServerInfo,
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
        stack=tuple(frame_from_json(f) for f in _list(d, "stack") if isinstance(f, dict)),
        stack_truncated=_i(d, "stack_truncated"),
        pool=_opt_s(d, "pool"),
        owns_gil=_opt_b(d, "owns_gil"),
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


def threads_from_json(payload: Any) -> ThreadsSnapshot:
    d = _require_object(payload)
    if not isinstance(d.get("threads"), list):
        raise ProtocolError("threads payload without a 'threads' list")
    return ThreadsSnapshot(
        taken_at=_opt_f(d, "taken_at") or 0.0,
        threads=tuple(thread_from_json(t) for t in _list(d, "threads") if isinstance(t, dict)),
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
        warnings=_strs(d, "warnings"),
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
    )


def to_json(obj: Any) -> Any:
    """Model object -> JSON-able structure, field names as in ``model.py`` (snapshot files)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
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
    origin = typing.get_origin(cls)
    if origin is typing.Union:
        if data is None:
            return None
        present = [a for a in typing.get_args(cls) if a is not type(None)]
        return from_json(present[0], data, where)
    if origin is tuple:
        args = typing.get_args(cls)
        if not isinstance(data, list):
            raise FileFormatError("%s: expected a list, got %s" % (where, _type_name(data)))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v, "%s[%d]" % (where, i)) for i, v in enumerate(data))
        if len(args) != len(data):
            raise FileFormatError("%s: expected %d items, got %d" % (where, len(args), len(data)))
        return tuple(
            from_json(t, v, "%s[%d]" % (where, i)) for i, (t, v) in enumerate(zip(args, data))
        )
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise FileFormatError("%s: expected an object, got %s" % (where, _type_name(data)))
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = from_json(hints[f.name], data[f.name], "%s.%s" % (where, f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FileFormatError("%s: missing %r" % (where or cls.__name__, f.name))
        return cls(**kwargs)
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        try:
            return cls(data)
        except ValueError:
            raise FileFormatError("%s: unknown %s %r" % (where, cls.__name__, data)) from None
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise FileFormatError("%s: expected a number, got %s" % (where, _type_name(data)))
        return float(data)
    if cls is int or cls is str or cls is bool:
        if type(data) is not cls:
            raise FileFormatError(
                "%s: expected %s, got %s" % (where, cls.__name__, _type_name(data))
            )
        return data
    raise TypeError("no JSON reader for %r" % (cls,))  # a model type this module does not know


def snapshots_document(snapshots: Sequence[Snapshot]) -> Dict[str, Any]:
    """The JSON document of a snapshot file (also what ``dump --json`` prints)."""
    return {
        "kind": FILE_KIND,
        "schema": FILE_SCHEMA,
        "cpinspect": AGENT_VERSION,
        "snapshots": [to_json(s) for s in snapshots],
    }


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
            "written by a newer cpinspect (%s, file schema %d; this one reads schemas %d-%d): "
            "upgrade cpinspect to open it"
            % (doc.get("cpinspect", "?"), schema, OLDEST_FILE_SCHEMA, FILE_SCHEMA)
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
