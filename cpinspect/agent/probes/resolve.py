"""``GET /v1/resolve``: what CherryPy would do with one request, and why — without sending it.

CherryPy's own dispatcher runs with a private ``Request`` loaded into the resolving thread's own
``cherrypy.serving`` (cherrypy-internals.md 2.4): the app's shared state is untouched. The tools
that decide before the handler (staticdir/staticfile at priority 50, then trailing_slash at 60)
are mirrored from ``cherrypy/lib``; the handler's signature is checked with CherryPy's own
``test_callable_spec``, which never calls the handler. Dispatching can run user code
(``_cp_dispatch``, properties, Routes controllers), so it runs only when asked, on its own
thread, one at a time; past ``RESOLVE_TIMEOUT`` the answer says it was abandoned.
"""

import mimetypes
import os
import re
import string
import threading
import time
import types
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote

from ..redact import REDACTED, is_sensitive, redact_target
from .routes import (
    closure_vars,
    dispatcher_kind,
    is_exposed,
    qualname_of,
    run_bounded,
    short_repr,
    source_of,
    static_attr,
    static_handler_args,
    unwrap_descriptor,
)

RESOLVE_TIMEOUT = 2.0
MAX_PATH = 4096
_MISSING = object()
_TRANSLATE = str.maketrans(string.punctuation, "_" * len(string.punctuation))


def _verdict(kind: str, status: Optional[int], reason: str) -> Dict[str, Any]:
    return {
        "kind": kind,
        "status": status,
        "reason": reason,
        "handler": None,
        "location": None,
        "static": None,
        "tools": [],
        "decided_by": None,
        "verdict": reason if status is None else "%s (%d)" % (reason, status),
        "guards": [],
    }


EARLY_POINTS = ("on_start_resource", "before_request_body", "before_handler")
"""Hook points that run before the handler: a tool there may answer the request itself."""
HARMLESS_TOOLS = frozenset(
    (
        "autovary",
        "caching",
        "decode",
        "encode",
        "gzip",
        "ignore_headers",
        "json_in",
        "json_out",
        "params",
        "proxy",
        "response_headers",
        "sessions",
        "staticdir",
        "staticfile",
        "trailing_slash",
    )
)
"""CherryPy's own tools (from ``cherrypy._cptools``' default toolbox) that run before the
handler without deciding the status for it (the static tools and trailing_slash the resolver
mirrors itself). A tool of the same name whose callable is not CherryPy's is not on this list."""
KNOWN_ANSWERS = {
    "auth_basic": "401 without credentials",
    "auth_digest": "401 without credentials",
    "session_auth": "a login form without a session login",
    "allow": "405 for another method",
    "accept": "406 for a media type it does not offer",
    "referer": "403 for a refused Referer",
    "redirect": "a redirect",
}
"""What CherryPy's own deciding tools answer."""
_HOOK_ORDER = {point: index for index, point in enumerate(EARLY_POINTS)}
_AFTER_ALL_HOOKS = 1e9
"""The priority of a decision taken once every before_handler hook ran (the handler's)."""


def guarding_tools(app: Any, config: Dict[str, Any], steps: List[str]) -> List[Dict[str, Any]]:
    """The tools switched on in the merged ``config`` that hook a point before the handler and
    may answer themselves: CherryPy's auth-like tools and every tool the app registered, read
    from the toolboxes (``Tool._point``, ``_priority``, ``callable``) without running one."""
    toolboxes = static_attr(app, "toolboxes")
    if type(toolboxes) is not dict:
        return []
    out: List[Dict[str, Any]] = []
    for key in sorted(str(k) for k in config):
        parts = key.split(".")
        if len(parts) != 3 or parts[2] != "on" or not config.get(key):
            continue
        namespace, name = parts[0], parts[1]
        box = toolboxes.get(namespace)
        if box is None:
            continue
        tool = static_attr(box, name)
        if tool is None:
            steps.append(
                "%s.%s.on but no such tool is registered: CherryPy answers 500 ✗"
                % (namespace, name)
            )
            out.append(
                {"tool": name, "point": None, "priority": None, "custom": True, "missing": True}
            )
            continue
        point = static_attr(tool, "_point")
        func = _plain_callable(static_attr(tool, "callable"))
        module = _module_of(func)
        builtin = module == "cherrypy" or module.startswith("cherrypy.")
        if point not in EARLY_POINTS or (builtin and name in HARMLESS_TOOLS):
            continue
        priority = config.get("%s.%s.priority" % (namespace, name))
        if not isinstance(priority, (int, float)):
            own = static_attr(func, "priority")
            priority = own if isinstance(own, (int, float)) else static_attr(tool, "_priority")
        out.append(
            {
                "tool": name if namespace == "tools" else "%s.%s" % (namespace, name),
                "point": point,
                "priority": priority if isinstance(priority, (int, float)) else 50,
                "custom": not builtin,
                "missing": False,
            }
        )
    out.sort(key=lambda g: (_HOOK_ORDER.get(g["point"], -1), g["priority"] or 0))
    return out


def _plain_callable(func: Any) -> Any:
    """A bound method's function; anything else as it is (no attribute of it is read)."""
    return func.__func__ if type(func) is types.MethodType else func


def _module_of(func: Any) -> str:
    """The module a tool's callable comes from: a function's own, else its class's (no
    ``getattr`` on the object: a ``__getattr__`` would be user code)."""
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType)):
        return str(func.__module__ or "")
    klass = func if isinstance(func, type) else type(func)  # encode's callable is a class
    return str(type.__getattribute__(klass, "__module__") or "")


def _short_name(func: Any) -> str:
    """``Root.account`` for a handler (its ``__qualname__``; a callable object's class)."""
    inner = _plain_callable(func)
    if isinstance(inner, (types.FunctionType, types.BuiltinFunctionType)):
        return str(inner.__qualname__ or qualname_of(func))
    return str(type.__getattribute__(type(inner), "__qualname__") or qualname_of(func))


def decide(verdict: Dict[str, Any], guards: List[Dict[str, Any]], handler: Any) -> None:
    """Fill ``decided_by``/``verdict`` (and clear ``status`` where nobody can know it): a
    guarding tool that runs before the decision may answer itself; a handler decides its own
    status. ``verdict["_at"]``: the before_handler priority the decision is taken at."""
    at = verdict.pop("_at", _AFTER_ALL_HOOKS)
    before = [
        g
        for g in guards
        if g["missing"] or g["point"] != "before_handler" or (g["priority"] or 0) < at
    ]
    if verdict["kind"] == "handler":
        name = _short_name(handler.callable)
        verdict["decided_by"] = "handler"
        verdict["status"] = None
        verdict["verdict"] = "%s handles it; the handler decides the status" % name
    if not before:
        return
    # A tool switched on but not registered fails every request (500), whatever runs first.
    first = next((g for g in before if g["missing"]), before[0])
    verdict["guards"] = [g["tool"] for g in before]
    # Machine-readable, as older inspectors read it: the first of the guards (not a claim that
    # it is the one that answers: any of them may), or the missing one.
    verdict["decided_by"] = "tool:%s" % first["tool"]
    otherwise = verdict["verdict"]
    verdict["status"] = None
    if first["missing"]:
        verdict["verdict"] = (
            "tool %s is switched on but not registered: CherryPy fails the request (500)"
            % first["tool"]
        )
        return
    if len(before) == 1:
        # One tool: it is the one that may answer. What it answers is known only for
        # CherryPy's own (auth_basic: 401); an app's tool is code nobody read.
        known = KNOWN_ANSWERS.get(first["tool"]) if not first["custom"] else None
        later = first["point"] == "before_handler" and verdict["kind"] == "static"
        verdict["verdict"] = "tool %s runs %s (%s%s) and may answer itself%s; otherwise: %s" % (
            first["tool"],
            "before the answer is sent" if later and first["priority"] >= 50 else "first",
            first["point"],
            ", priority %s" % first["priority"] if first["point"] == "before_handler" else "",
            " (%s)" % known if known else "",
            otherwise,
        )
        return
    # Several: a tool's name does not say what it does, so none is singled out, except
    # CherryPy's own deciding tools, whose answer is known.
    names = []
    for guard in before:
        known = KNOWN_ANSWERS.get(guard["tool"]) if not guard["custom"] else None
        names.append("%s (%s)" % (guard["tool"], known) if known else guard["tool"])
    verdict["verdict"] = (
        "%d tools run before the %s, any of which may answer instead: %s; otherwise: %s"
    ) % (
        len(before),
        "handler" if verdict["kind"] == "handler" else "answer",
        ", ".join(names),
        otherwise,
    )


class ResolveProbe:
    def __init__(self, timeout: float = RESOLVE_TIMEOUT) -> None:
        self.timeout = timeout
        self._busy = threading.Event()

    def resolve(self, path: str, method: str, host: str) -> Dict[str, Any]:
        started = time.monotonic()
        base: Dict[str, Any] = {
            "path": redact_target(path),  # echoed: may land in a screenshot or a ticket
            "method": method,
            "host": host,
            "abandoned": False,
            "errors": [],
        }
        if self._busy.is_set():
            base["verdict"] = _verdict(
                "busy", None, "an earlier resolution is still running (abandoned, user code)"
            )
            base["steps"] = []
            base["elapsed"] = 0.0
            return base
        self._busy.set()

        def work() -> Dict[str, Any]:
            try:
                return resolve_here(path, method, host)
            finally:
                self._busy.clear()

        done, result, error = run_bounded(work, self.timeout, "cpinspect-resolve")
        base["elapsed"] = time.monotonic() - started
        if not done:
            base["abandoned"] = True
            base["verdict"] = _verdict(
                "abandoned",
                None,
                "abandoned after %.1f s: user code (_cp_dispatch, a property, a Routes "
                "controller) did not return; the thread keeps running" % self.timeout,
            )
            base["steps"] = []
            return base
        if error is not None or not isinstance(result, dict):
            base["verdict"] = _verdict("error", None, "the resolver failed: %s" % error)
            base["steps"] = []
            base["errors"].append(str(error))
            return base
        base.update(result)
        return base


def _redacted_params(params: Dict[str, Any]) -> Dict[str, str]:
    return {
        str(k): (REDACTED if is_sensitive(str(k)) else short_repr(v)) for k, v in params.items()
    }


def resolve_here(raw: str, method: str, host: str) -> Dict[str, Any]:
    """Resolve on the calling thread (the resolver's own): its ``cherrypy.serving`` is private."""
    import cherrypy
    from cherrypy import _cpdispatch
    from cherrypy.lib import httputil

    steps: List[str] = []
    out: Dict[str, Any] = {"steps": steps, "app": None, "dispatcher": None, "errors": []}
    path_part, _, qs = raw.partition("?")
    path = unquote(path_part) or "/"
    if not path.startswith("/"):
        path = "/" + path
    sn = cherrypy.tree.script_name(path)
    if sn is None:
        steps.append("no application is mounted for %s ✗" % path)
        out["verdict"] = _verdict("not_found", 404, "no application mounted for this path")
        return out
    app = cherrypy.tree.apps[sn]
    out["app"] = sn
    if not isinstance(app, cherrypy.Application):
        steps.append("app %r: a grafted WSGI app (%s)" % (sn or "/", qualname_of(app)))
        out["verdict"] = _verdict(
            "wsgi", None, "handled by a grafted WSGI app: %s" % qualname_of(app)
        )
        return out
    path_info = path[len(sn.rstrip("/")) :]
    # The root app's script_name is '': shown as '/', the spelling every screen uses.
    steps.append("app %r (root %s), path_info %r" % (sn or "/", qualname_of(app.root), path_info))

    req = app.request_class(
        httputil.Host("127.0.0.1", 80, ""), httputil.Host("127.0.0.1", 0, ""), "http", "HTTP/1.1"
    )
    req.app = app
    req.method = method
    req.query_string = qs
    req.params = {}
    try:
        req.params.update(httputil.parse_query_string(qs))
    except Exception as exc:  # noqa: BLE001
        steps.append("query string not parsed: %s" % exc)
    query_keys = set(req.params)
    req.headers = httputil.HeaderMap({"Host": host})
    req.script_name = sn
    req.path_info = path_info
    req.body = types.SimpleNamespace(params={})
    req.show_mismatched_params = True
    response = app.response_class()
    cherrypy.serving.load(req, response)
    try:
        disp = app.find_config(path_info, "request.dispatch", req.dispatch)
        kind, detail = dispatcher_kind(disp)
        out["dispatcher"] = kind
        steps.extend(explain_walk(app, path_info, method, host, kind, detail, disp))
        try:
            disp(path_info)
        except cherrypy.HTTPRedirect as exc:
            steps.append("the dispatcher redirected (%s)" % exc.status)
            v = _verdict("redirect", int(exc.status), "redirect raised while dispatching")
            v["location"] = redact_target(str(exc.urls[0])) if exc.urls else None
            out["verdict"] = v
            return out
        except cherrypy.HTTPError as exc:
            steps.append("the dispatcher raised HTTP %s ✗" % exc.status)
            out["verdict"] = _verdict("error", int(exc.status), "raised while dispatching")
            return out
        except Exception as exc:  # noqa: BLE001 - user code in _cp_dispatch or a controller
            steps.append("the dispatcher raised %s: %s ✗" % (type(exc).__name__, exc))
            out["verdict"] = _verdict(
                "error", 500, "dispatching raised %s: %s" % (type(exc).__name__, exc)
            )
            return out
        config = dict(req.config or {})
        handler = req.handler
        tools = sorted(
            str(k).split(".")[1]
            for k, v in config.items()
            if str(k).startswith("tools.") and str(k).endswith(".on") and v
        )
        verdict = _after_dispatch(req, handler, config, path_info, qs, sn, steps, query_keys)
        verdict["tools"] = tools
        # A tool that answers at before_handler (a static file, a trailing-slash redirect)
        # leaves request.handler None: the handler the dispatcher found never runs.
        answered_first = verdict.pop("_answered_first", False)
        guards = guarding_tools(app, config, steps)
        decide(verdict, guards, handler)
        if (
            isinstance(handler, _cpdispatch.LateParamPageHandler)
            and verdict["handler"] is None
            and not answered_first
        ):
            verdict["handler"] = _handler_info(handler)
        out["verdict"] = verdict
        return out
    finally:
        cherrypy.serving.clear()


def _handler_info(handler: Any) -> Dict[str, Any]:
    func = handler.callable
    file, line = source_of(func)
    try:
        kwargs = dict(handler.kwargs)
    except Exception:  # noqa: BLE001
        kwargs = {}
    return {
        "qualname": qualname_of(func),
        "file": file,
        "line": line,
        "args": [short_repr(a) for a in handler.args],
        "kwargs": _redacted_params(kwargs),
    }


def _after_dispatch(
    req: Any,
    handler: Any,
    config: Dict[str, Any],
    path_info: str,
    qs: str,
    sn: str,
    steps: List[str],
    query_keys: Any,
) -> Dict[str, Any]:
    import cherrypy
    from cherrypy import _cpdispatch

    if isinstance(handler, _cpdispatch.LateParamPageHandler):
        info = _handler_info(handler)
        steps.append(
            "handler %s(%s)%s"
            % (
                info["qualname"],
                ", ".join(info["args"]),
                " with %s" % ", ".join(sorted(info["kwargs"])) if info["kwargs"] else "",
            )
        )
    elif isinstance(handler, cherrypy.HTTPError):
        pending = "HTTP %s" % handler.status
        if any(config.get("tools.%s.on" % t) for t in ("staticdir", "staticfile")):
            pending += " unless a static tool answers first"
        steps.append("the dispatcher found no handler: %s" % pending)
    # before_handler hooks in CherryPy's order: static tools (priority 50), trailing_slash (60).
    static: Optional[Dict[str, Any]] = None
    for tool in ("staticdir", "staticfile"):
        if not config.get("tools.%s.on" % tool):
            continue
        try:
            static = _static(tool, config, req, path_info, steps)
        except ValueError as exc:
            steps.append("%s raised ValueError: %s ✗" % (tool, exc))
            v = _verdict("error", 500, "%s is misconfigured: %s" % (tool, exc))
            v["_at"] = 50  # the static tools' priority at before_handler
            v["_answered_first"] = True
            return v
        except cherrypy.HTTPError as exc:
            steps.append("%s refused the path: HTTP %s ✗" % (tool, exc.status))
            v = _verdict("error", int(exc.status), "%s refused the path" % tool)
            v["_at"] = 50
            v["_answered_first"] = True
            return v
        if static is not None:
            break
    if config.get("tools.trailing_slash.on"):
        missing = config.get("tools.trailing_slash.missing", True)
        extra = config.get("tools.trailing_slash.extra", False)
        status = int(config.get("tools.trailing_slash.status") or 301)
        location = None
        if req.is_index is True and missing and not path_info.endswith("/"):
            location = sn.rstrip("/") + path_info + "/"
            steps.append("an index without its trailing slash: tools.trailing_slash redirects")
        elif req.is_index is False and extra and path_info.endswith("/") and path_info != "/":
            location = sn.rstrip("/") + path_info[:-1]
            steps.append("extra trailing slash (tools.trailing_slash.extra): redirect")
        if location is not None:
            v = _verdict("redirect", status, "trailing slash")
            v["location"] = redact_target(location + ("?" + qs if qs else ""))
            v["_at"] = 60  # tools.trailing_slash's priority at before_handler
            v["_answered_first"] = True
            _not_called(handler, "tools.trailing_slash redirects first", steps)
            return v
    if static is not None:
        v = _verdict("static", 200, "served by tools.%s" % static["tool"])
        v["static"] = static
        v["_answered_first"] = True
        _not_called(handler, "tools.%s answers first" % static["tool"], steps)
        return v
    if isinstance(handler, cherrypy.HTTPError):
        status = int(handler.status)
        reason = "method not allowed" if status == 405 else "no exposed handler on this path"
        return _verdict("not_found" if status == 404 else "error", status, reason)
    if not isinstance(handler, _cpdispatch.LateParamPageHandler):
        return _verdict("error", None, "unexpected handler %s" % short_repr(handler))
    tool_handler = static_handler_args(handler.callable)
    if tool_handler is not None:
        # tools.staticdir/staticfile.handler(...): serves the file, or raises NotFound.
        tool, kwargs = tool_handler
        cfg = {"tools.%s.%s" % (tool, k): v for k, v in kwargs.items()}
        try:
            served = _static(tool, cfg, req, path_info, steps)
        except ValueError as exc:
            return _verdict("error", 500, "%s handler is misconfigured: %s" % (tool, exc))
        if served is None:
            return _verdict("not_found", 404, "the %s handler found no file" % tool)
        v = _verdict("static", 200, "served by a tools.%s.handler" % tool)
        v["static"] = served
        return v
    try:
        _cpdispatch.test_callable_spec(handler.callable, handler.args, handler.kwargs)
    except cherrypy.HTTPError as exc:
        message = str(getattr(exc, "_message", "") or "")
        if not message and handler.args:
            message = "too many path segments for the signature"
        steps.append("the signature does not fit: %s ✗" % (message or "mismatch"))
        status = int(exc.status)
        return _verdict(
            "not_found" if status == 404 else "error",
            status,
            "signature mismatch: %s" % (message or "the handler cannot take these arguments"),
        )
    except Exception as exc:  # noqa: BLE001 - a callable inspect cannot read
        steps.append("signature not checked: %s" % exc)
    return _verdict("handler", 200, "the handler would be called")


def _not_called(handler: Any, why: str, steps: List[str]) -> None:
    """Say that the handler the dispatcher found is not called (a tool answered before it)."""
    from cherrypy import _cpdispatch

    if not isinstance(handler, _cpdispatch.LateParamPageHandler):
        return
    tool_handler = static_handler_args(handler.callable)
    if tool_handler is not None:
        tool, kwargs = tool_handler
        target = kwargs.get("filename") if tool == "staticfile" else kwargs.get("dir")
        name = "a tools.%s.handler(%s)" % (tool, short_repr(target))
    else:
        name = qualname_of(handler.callable)
    steps.append("the handler found, %s, is never called: %s" % (name, why))


def _static(
    tool: str, config: Dict[str, Any], req: Any, path_info: str, steps: List[str]
) -> Optional[Dict[str, Any]]:
    """Mirror ``cherrypy.lib.static.staticdir/staticfile``; a dict when it would serve a file."""
    import cherrypy

    prefix = "tools.%s." % tool
    if req.method not in ("GET", "HEAD"):
        steps.append("%s on, but only for GET/HEAD: falls through" % tool)
        return None
    match = config.get(prefix + "match") or ""
    if match and not re.search(match, path_info):
        steps.append("%s on, but the path does not match %r: falls through" % (tool, match))
        return None
    root = config.get(prefix + "root") or ""
    content_types = config.get(prefix + "content_types") or None
    candidates: List[Tuple[str, bool]] = []
    if tool == "staticdir":
        directory = os.path.expanduser(config.get(prefix + "dir") or "")
        if not os.path.isabs(directory):
            if not root:
                raise ValueError("Static dir requires an absolute dir (or root).")
            directory = os.path.join(root, directory)
        section = config.get(prefix + "section") or "/"
        if section == "global":
            section = "/"
        section = section.rstrip("\\/")
        branch = unquote(path_info[len(section) + 1 :].lstrip("\\/"))
        filename = os.path.join(directory, branch)
        if not os.path.normpath(filename).startswith(os.path.normpath(directory)):
            raise cherrypy.HTTPError(403)
        candidates.append((filename, False))
        index = config.get(prefix + "index") or ""
        if index:
            candidates.append((os.path.join(filename, index), True))
    else:
        filename = config.get(prefix + "filename") or ""
        if not os.path.isabs(filename):
            if not root:
                raise ValueError("Static tool requires an absolute filename (got '%s')." % filename)
            filename = os.path.join(root, filename)
        candidates.append((filename, False))
    for candidate, via_index in candidates:
        try:
            is_dir = os.path.isdir(candidate)
            exists = os.path.exists(candidate)
        except (OSError, ValueError, TypeError):
            exists, is_dir = False, False
        if not exists or is_dir:
            steps.append(
                "%s: %s %s: falls through"
                % (tool, candidate, "is a directory" if is_dir else "does not exist")
            )
            continue
        if via_index:
            req.is_index = filename[-1] in "\\/"
        mime, mime_source = static_mime(candidate, content_types)
        steps.append("%s serves %s as %s ✓" % (tool, candidate, mime))
        return {
            "tool": tool,
            "file": candidate,
            "exists": True,
            "readable": os.access(candidate, os.R_OK),
            "mime": mime,
            "mime_source": mime_source,
        }
    return None


def static_mime(filename: str, content_types: Any) -> Tuple[str, str]:
    """The Content-Type CherryPy's ``_attempt`` + ``serve_file`` would send for ``filename``."""
    if isinstance(content_types, dict) and content_types:
        ext = os.path.splitext(filename)[1][1:]
        if content_types.get(ext) is not None:
            return str(content_types[ext]), "content_types (case-sensitive: %r)" % ext
    i = filename.rfind(".")
    ext = filename[i:].lower() if i != -1 else ""
    found = mimetypes.types_map.get(ext)
    if found is not None:
        return found, "mimetypes %r" % ext
    return "text/html;charset=utf-8", "CherryPy's default (no type for %r)" % ext


def explain_walk(
    app: Any, path_info: str, method: str, host: str, kind: str, detail: Dict[str, Any], disp: Any
) -> List[str]:
    """The object walk step by step, read statically (no properties run, no _cp_dispatch), as
    ``cherrypy._cpdispatch.Dispatcher.find_handler`` does it: each segment looked up on the
    object before it, then ``index`` on the last one (CherryPy appends it to every path), then
    the objects found tried from the last back to the root — a ``default`` exposed on one first,
    then the object itself if exposed; the segments past the one picked are its arguments. A
    MethodDispatcher then calls the verb's method of what was picked (the resource)."""
    steps: List[str] = ["dispatcher: %s" % kind]
    if kind == "VirtualHost":
        domains = detail.get("domains") or {}
        bare = host.split(":")[0] if host else ""
        prefix = domains.get(host, domains.get(bare, ""))
        steps.append(
            "Host %r → %s"
            % (host, ("prefix %r" % prefix) if prefix else "no domain entry, no prefix")
        )
        path_info = prefix + path_info
        kind = detail.get("next") or "default"
    if kind == "RoutesDispatcher":
        steps.append("the Routes mapper matches %r (see the handler below)" % path_info)
        return steps
    if kind not in ("default", "MethodDispatcher"):
        return steps
    node = app.root
    if node is None:
        steps.append("no root object ✗")
        return steps
    by_method = kind == "MethodDispatcher"
    trail = "root"
    # (trail, object, segments consumed) for every object found, root first
    found: List[Tuple[str, Any, int]] = [(trail, node, 0)]
    segments = [s for s in path_info.strip("/").split("/") if s]
    missing: Optional[Tuple[str, str]] = None
    for consumed, seg in enumerate(segments, 1):
        name = seg.translate(_TRANSLATE)
        shown = name if name == seg else "%s (from %r: punctuation becomes _)" % (name, seg)
        raw = static_attr(node, name, _MISSING)
        if raw is _MISSING or name.startswith("__"):
            dispatch = static_attr(node, "_cp_dispatch")
            if dispatch is not None and not is_exposed(unwrap_descriptor(dispatch)):
                cv = closure_vars(unwrap_descriptor(dispatch))
                what = (
                    "popargs(%s)" % ", ".join(map(str, cv.get("args") or ()))
                    if "handler" in cv
                    else "_cp_dispatch"
                )
                steps.append(
                    "%s.%s not found: %s takes the remaining path (run by CherryPy)"
                    % (trail, shown, what)
                )
                return steps
            missing = (seg, shown)
            break
        if isinstance(raw, property):
            steps.append("%s.%s is a property: evaluated by CherryPy only" % (trail, shown))
            return steps
        value = unwrap_descriptor(raw)
        exposed = is_exposed(value)
        if by_method:
            steps.append("%s.%s found%s" % (trail, shown, ", exposed ✓" if exposed else ""))
        elif exposed:
            steps.append("%s.%s found, exposed ✓" % (trail, shown))
        elif not callable(value):
            # A container on the way: only what the path ends on must be exposed.
            steps.append("%s.%s found" % (trail, shown))
        else:
            steps.append("%s.%s found, not exposed ✗" % (trail, shown))
        trail = "%s.%s" % (trail, name)
        node = value
        found.append((trail, node, consumed))
    if missing is None:
        # Every segment found: CherryPy looks up `index` on the last object (a plain function
        # has none).
        index = static_attr(node, "index", _MISSING)
        if index is not _MISSING and not isinstance(index, property):
            idx = unwrap_descriptor(index)
            steps.append(
                "%s.index found%s (CherryPy looks up index at the end of every path)"
                % (trail, ", exposed ✓" if is_exposed(idx) else ", not exposed")
            )
            found.append(("%s.index" % trail, idx, len(segments)))
    picked: Optional[Tuple[str, Any, int]] = None
    via_default = False
    for name, obj, consumed in reversed(found):
        default = static_attr(obj, "default", _MISSING)
        if (
            default is not _MISSING
            and not isinstance(obj, types.FunctionType)
            and is_exposed(unwrap_descriptor(default))
        ):
            picked, via_default = ("%s.default" % name, unwrap_descriptor(default), consumed), True
            break
        if is_exposed(obj):
            picked = (name, obj, consumed)
            break
    if picked is None:
        if missing is not None:
            steps.append(
                "%s.%s not found ✗ (and no exposed object or default on the way)"
                % (trail, missing[1])
            )
        else:
            steps.append("nothing exposed on the way: no handler ✗")
        return steps
    name, obj, consumed = picked
    rest = segments[consumed:]
    args = ", ".join(repr(s) for s in rest)
    if missing is not None:
        if name == trail and not via_default:
            # CherryPy stops at the last exposed object on the way and hands it the rest of
            # the path as positional arguments (the vpath).
            target = "%s.%s" % (name, method.upper()) if by_method else name
            steps.append(
                "%s has no %s: %r and what follows are passed to %s as arguments"
                % (trail, missing[1], missing[0], target)
            )
        else:
            steps.append("%s.%s not found" % (trail, missing[1]))
    if missing is None or name != trail or via_default:
        if via_default:
            why = "a default exposed on the way takes the rest"
        elif name.endswith(".index") and not rest:
            why = "the path's index"
        elif rest:
            why = "the last exposed object on the way"
        else:
            why = "the object the path ends on"
        passed = ""
        if rest:
            passed = ": %s passed as %s" % (args, "an argument" if len(rest) == 1 else "arguments")
        steps.append("CherryPy picks %s (%s)%s" % (name, why, passed))
    if by_method:
        verb = method.upper()
        has = static_attr(obj, verb, _MISSING) is not _MISSING or (
            verb == "HEAD" and static_attr(obj, "GET", _MISSING) is not _MISSING
        )
        note = ""
        if not has and static_handler_args(obj) is not None:
            # tree.mount puts tools.staticfile.handler(...) on every root as favicon_ico
            note = " (a static tool's handler is a function: a MethodDispatcher never serves it)"
        steps.append("%s.%s %s%s" % (name, verb, "found ✓" if has else "missing ✗", note))
    return steps
