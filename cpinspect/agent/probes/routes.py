"""``GET /v1/routes``: the routing tree as CherryPy sees it, read without running user code.

Attributes are read with ``inspect.getattr_static``: properties, ``__getattr__`` and other
descriptors of the app are user code and are never evaluated (they are listed as such). The walk
remembers the ids it has seen (cycles), stops at ``MAX_DEPTH`` and at ``max_nodes`` nodes for the
whole answer (the cap and whether it was hit are reported). Filesystem checks of static mounts
(exists, readable, a bounded file count) run in ``fs_checks`` off the request path: a hung mount
must not hang the agent (DESIGN invariant 2).
"""

import inspect
import keyword
import os
import threading
import time
import types
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..redact import REDACTED, is_sensitive
from .frames import FrameClassifier

MAX_NODES = 20000
"""Nodes in one ``/v1/routes`` answer, all apps together (the walk stops there and says so).
Apps with 5,000 handlers must come whole, with room to spare: the walk adds a node per controller
and per non-exposed method too. Measured with the generated apps of ``bench/routes_scale.py``
(x86_64, Python 3.11): 9-12 µs of walk and 2.5 µs of JSON per node, about 960 bytes held per node
while the answer is built and 1.6-1.9 KB per node at the peak (with the encoded body). At this cap
one answer costs about 0.3 s of the target's CPU and 32 MB for its duration."""
MAX_DEPTH = 24
MAX_REPR = 160
MAX_SIGNATURE = 400
FILE_COUNT_CAP = 1000
FS_CHECK_TIMEOUT = 1.0
"""Seconds the filesystem checks of one ``/v1/routes`` answer may take before being abandoned."""

VERBS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
_LEAF_TYPES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    type(None),
    list,
    tuple,
    dict,
    set,
    frozenset,
    types.ModuleType,
)


def short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a user __repr__ may fail
        text = "<unrepresentable %s: %s>" % (type(value).__name__, exc)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"


def qualname_of(obj: Any) -> str:
    target = obj if isinstance(obj, (type, types.FunctionType, types.MethodType)) else type(obj)
    func = getattr(target, "__func__", target)
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", "?")
    return "%s.%s" % (module, name) if module else str(name)


def source_of(obj: Any) -> Tuple[Optional[str], Optional[int]]:
    """File and first line of a function, method or class, from the code object (no I/O)."""
    func = getattr(obj, "__func__", obj)
    code = getattr(func, "__code__", None)
    # Only a code object: on the class ``types.FunctionType`` met in the tree, ``__code__`` is
    # its getset_descriptor (salt-api's tree: the whole app's routes failed with an
    # AttributeError on co_filename).
    if isinstance(code, types.CodeType):
        return code.co_filename, code.co_firstlineno
    if isinstance(obj, type):
        return _class_source(obj)
    return None, None


def _class_source(klass: type) -> Tuple[Optional[str], Optional[int]]:
    """Where a class is defined, from its own methods' code objects (no source is read: that
    would be I/O): the file of the methods written in its body, and the class's
    ``__firstlineno__`` (3.13+) or, before 3.13, the first line of its first method."""
    try:
        attrs = dict(type.__getattribute__(klass, "__dict__"))
        prefix = "%s." % type.__getattribute__(klass, "__qualname__")
    except Exception:  # noqa: BLE001 - a hostile metaclass
        return None, None
    module = attrs.get("__module__")
    first: Optional[Tuple[str, int]] = None
    for member in attrs.values():
        func = unwrap_descriptor(member)
        if not isinstance(func, types.FunctionType):
            continue
        code = func.__code__
        # Only functions written in the class body: a decorator's wrapper (its code's
        # co_qualname, 3.11+, names the decorator) or a function assigned from elsewhere
        # would point into another place.
        if not str(getattr(code, "co_qualname", func.__qualname__)).startswith(prefix):
            continue
        if first is None or code.co_firstlineno < first[1]:
            first = (code.co_filename, code.co_firstlineno)
    line = attrs.get("__firstlineno__")
    line = line if isinstance(line, int) else None
    if first is not None:
        return first[0], line if line is not None else first[1]
    return (module, line) if isinstance(module, str) else (None, None)


def signature_of(obj: Any) -> Optional[str]:
    """The signature as text, or ``None``; default values are shown with their ``repr``, which
    is user code: one that raises must not lose the app's whole tree, one that is huge is cut."""
    try:
        text = plain_signature(obj)
        if text is None:
            text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return None
    except Exception as exc:  # noqa: BLE001 - a default value's __repr__ raised
        return "(<signature unavailable: %s: %s>)" % (type(exc).__name__, exc)
    return text if len(text) <= MAX_SIGNATURE else text[: MAX_SIGNATURE - 1] + "…"


_SIGNATURE_HOOKS = (
    "__wrapped__",
    "__signature__",
    "_partialmethod",
    "__partialmethod__",
    "__text_signature__",
)
"""Function attributes ``inspect.signature`` honours: with any of them, ``inspect`` decides."""


def plain_signature(func: Any) -> Optional[str]:
    """``str(inspect.signature(func))`` for a plain function, read from its code object.

    Same text as ``inspect`` (Python 3.8 to 3.13) for a ``def`` without annotations, wrapper
    attributes or a signature override; ``None`` for anything else (``inspect`` then decides).
    ``inspect.signature`` builds a ``Parameter`` object per argument and is most of the cost of a
    walk over thousands of handlers; this is about 5 times cheaper.
    """
    if type(func) is not types.FunctionType:
        return None
    attrs = func.__dict__
    if type(attrs) is not dict or any(name in attrs for name in _SIGNATURE_HOOKS):
        return None
    annotations = func.__annotations__
    if type(annotations) is not dict or annotations:
        return None
    code = func.__code__
    pos_count = code.co_argcount
    defaults = func.__defaults__
    if defaults is None:
        defaults = ()
    kwdefaults = func.__kwdefaults__
    if kwdefaults is None:
        kwdefaults = {}
    if type(defaults) is not tuple or len(defaults) > pos_count or type(kwdefaults) is not dict:
        return None
    names = code.co_varnames
    kw_count = code.co_kwonlyargcount
    posonly = code.co_posonlyargcount
    first_default = pos_count - len(defaults)
    parts: List[str] = []
    for index in range(pos_count):
        text = names[index]
        if index >= first_default:
            text += "=" + repr(defaults[index - first_default])
        parts.append(text)
        if posonly and index == posonly - 1:
            parts.append("/")
    after = pos_count + kw_count
    if code.co_flags & inspect.CO_VARARGS:
        parts.append("*" + names[after])
        after += 1
    elif kw_count:
        parts.append("*")
    for name in names[pos_count : pos_count + kw_count]:
        if name in kwdefaults:
            parts.append(name + "=" + repr(kwdefaults[name]))
        else:
            parts.append(name)
    if code.co_flags & inspect.CO_VARKEYWORDS:
        parts.append("**" + names[after])
        after += 1
    for name in names[:after]:
        if not name.isidentifier() or keyword.iskeyword(name):
            return None
    return "(" + ", ".join(parts) + ")"


_FUNCTION_TYPE_ATTRS = frozenset(types.FunctionType.__dict__) | frozenset(object.__dict__)


def static_attr(obj: Any, name: str, default: Any = None) -> Any:
    if type(obj) is types.FunctionType and name not in _FUNCTION_TYPE_ATTRS:
        # What getattr_static answers for a plain function and a name its type lacks: the
        # function's own __dict__ (5,000 handlers mean 10,000 such reads per walk).
        attrs = object.__getattribute__(obj, "__dict__")
        return dict.get(attrs, name, default)
    try:
        return inspect.getattr_static(obj, name, default)
    except Exception:  # noqa: BLE001 - a hostile metaclass
        return default


def unwrap_descriptor(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    return value


def is_exposed(value: Any) -> bool:
    return bool(static_attr(value, "exposed", False) is True)


def closure_vars(func: Any) -> Dict[str, Any]:
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None)
    if code is None or not cells:
        return {}
    out: Dict[str, Any] = {}
    for name, cell in zip(code.co_freevars, cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:
            continue
    return out


def static_handler_args(func: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``tools.staticdir.handler(...)`` / ``staticfile.handler(...)``: (tool name, kwargs)."""
    if not isinstance(func, types.FunctionType):
        return None
    cv = closure_vars(func)
    tool = cv.get("self")
    name = getattr(tool, "_name", None) if tool is not None else None
    if name not in ("staticdir", "staticfile"):
        return None
    args = cv.get("args") or ()
    kwargs = dict(cv.get("kwargs") or {})
    params = ("filename", "root") if name == "staticfile" else ("section", "dir", "root")
    for pname, value in zip(params, args):
        kwargs.setdefault(pname, value)
    return str(name), kwargs


def redact_config(section: Dict[str, Any]) -> Dict[str, str]:
    out = {}
    for key, value in sorted(section.items(), key=lambda kv: str(kv[0])):
        last = str(key).rsplit(".", 1)[-1]
        out[str(key)] = REDACTED if is_sensitive(last) else short_repr(value)
    return out


def tools_on(section: Dict[str, Any]) -> List[str]:
    out = []
    for key, value in section.items():
        parts = str(key).split(".")
        if len(parts) == 3 and parts[0] == "tools" and parts[2] == "on" and value:
            out.append(parts[1])
    return sorted(out)


def dispatcher_kind(disp: Any) -> Tuple[str, Dict[str, Any]]:
    """Name the dispatcher CherryPy would use, with what it knows (domains, routes …)."""
    from cherrypy import _cpdispatch

    if isinstance(disp, _cpdispatch.MethodDispatcher):
        return "MethodDispatcher", {}
    if isinstance(disp, _cpdispatch.RoutesDispatcher):
        return "RoutesDispatcher", {}
    if isinstance(disp, _cpdispatch.Dispatcher):
        return ("default" if type(disp) is _cpdispatch.Dispatcher else qualname_of(disp)), {}
    name = getattr(disp, "__name__", "")
    cv = closure_vars(disp)
    if name == "vhost_dispatch":
        nxt = cv.get("next_dispatcher")
        next_kind = dispatcher_kind(nxt)[0] if nxt is not None else None
        domains = cv.get("domains") or {}
        return "VirtualHost", {
            "domains": {str(k): str(v) for k, v in dict(domains).items()},
            "use_x_forwarded_host": bool(cv.get("use_x_forwarded_host", True)),
            "next": next_kind,
        }
    if name == "xmlrpc_dispatch":
        return "XMLRPCDispatcher", {}
    return qualname_of(disp), {}


class _Walk:
    def __init__(self, budget: List[int]) -> None:
        self.budget = budget
        self.nodes: List[Dict[str, Any]] = []
        self.seen: Set[int] = set()
        self.truncated = False
        self.cp_configs: List[Tuple[str, Dict[str, Any]]] = []
        self.static_handlers: List[Tuple[str, str, Dict[str, Any]]] = []

    def take(self) -> bool:
        if self.budget[0] <= 0:
            self.truncated = True
            return False
        self.budget[0] -= 1
        return True


def member_names(obj: Any) -> List[str]:
    """Attribute names from the class hierarchy and the instance ``__dict__``, no ``__dir__``."""
    names: Set[str] = set()
    try:
        mro = type.__getattribute__(type(obj), "__mro__")
    except Exception:  # noqa: BLE001
        mro = (type(obj),)
    if isinstance(obj, type):
        mro = tuple(obj.__mro__) + tuple(mro)
    for klass in mro:
        if klass is object or klass is type:
            continue
        try:
            names.update(str(k) for k in list(type.__getattribute__(klass, "__dict__").keys()))
        except Exception:  # noqa: BLE001
            continue
    descriptor = static_attr(type(obj), "__dict__")
    if isinstance(descriptor, types.GetSetDescriptorType):
        try:
            inst = object.__getattribute__(obj, "__dict__")
            names.update(str(k) for k in list(inst.keys()))
        except Exception:  # noqa: BLE001
            pass
    return sorted(names)


def _node(path: str, name: str, kind: str, value: Any) -> Dict[str, Any]:
    file, line = source_of(value if not _is_instance(value) else type(value))
    return {
        "path": path,
        "name": name,
        "kind": kind,
        "exposed": False,
        "qualname": qualname_of(value),
        "file": file,
        "line": line,
        "signature": None,
        "alias_of": None,
        "methods": [],
        "popargs": None,
        "dynamic": False,
        "tools": [],
        "config": {},
        "warnings": [],
        "reached_via": None,
        "reached_at": None,
    }


def _is_instance(value: Any) -> bool:
    return not isinstance(
        value, (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType)
    )


def walk_tree(root: Any, walk: _Walk, method_dispatch: Callable[[str], bool]) -> None:
    """Walk the object tree from ``root``; ``method_dispatch(path)`` says whether requests under
    ``path`` go through a MethodDispatcher (per path: one section of an app may have its own)."""
    stack: List[Tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        obj, path, depth = stack.pop()
        if id(obj) in walk.seen:
            continue
        walk.seen.add(id(obj))
        if not walk.take():
            return
        by_method = method_dispatch(path or "/")
        node = _node(path or "/", path.rsplit("/", 1)[-1] if path else "", "object", obj)
        node["exposed"] = is_exposed(obj)
        if node["exposed"] and callable(obj):
            node["kind"] = "handler"
            call = static_attr(type(obj), "__call__")
            if call is not None:
                node["signature"] = signature_of(call)
                node["file"], node["line"] = source_of(call)
        cfg = static_attr(obj, "_cp_config")
        if isinstance(cfg, dict):
            node["tools"] = tools_on(cfg)
            node["config"] = redact_config(cfg)
            walk.cp_configs.append((path or "/", cfg))
        dispatch = static_attr(obj, "_cp_dispatch")
        if dispatch is not None:
            node["dynamic"] = True
            func = unwrap_descriptor(dispatch)
            cv = closure_vars(func)
            if "args" in cv and "handler" in cv:
                node["popargs"] = [str(a) for a in cv.get("args") or ()]
            if is_exposed(func):
                node["warnings"].append("_cp_dispatch is exposed: CherryPy will not call it")
        names = member_names(obj)
        verbs = [
            n for n in names if n in VERBS and callable(unwrap_descriptor(static_attr(obj, n)))
        ]
        node["methods"] = verbs
        if by_method and verbs and not node["exposed"]:
            node["warnings"].append(
                "would 404: has HTTP verbs but the object is not exposed (exposed = True)"
            )
        walk.nodes.append(node)
        if depth >= MAX_DEPTH:
            walk.truncated = True
            continue
        seen_funcs: Dict[int, str] = {}
        funcs: List[Tuple[Dict[str, Any], Any]] = []
        children: List[Tuple[Any, str]] = []
        for name in names:
            if name.startswith("_") or (by_method and name in VERBS) or name == "exposed":
                continue
            raw = static_attr(obj, name)
            if raw is None:
                continue
            child_path = (path + "/" + name) if path else "/" + name
            if isinstance(raw, property) or (
                not isinstance(raw, (types.FunctionType, staticmethod, classmethod, type))
                and hasattr(type(raw), "__get__")
                and not _is_instance_node(raw)
            ):
                if not walk.take():
                    return
                pnode = _node(child_path, name, "property", raw)
                pnode["qualname"] = qualname_of(obj) + "." + name
                # Not a warning: a property is user code, so it is listed and never evaluated,
                # as CherryMusic's handlers carry theirs (services looked up on access).
                walk.nodes.append(pnode)
                continue
            value = unwrap_descriptor(raw)
            if isinstance(value, types.FunctionType):
                if not walk.take():
                    return
                fnode = _node(child_path, name, "handler", value)
                fnode["exposed"] = is_exposed(value)
                fnode["signature"] = signature_of(value)
                static = static_handler_args(value)
                if static is not None:
                    fnode["kind"] = "static"
                    walk.static_handlers.append((child_path, static[0], static[1]))
                if id(value) in seen_funcs:
                    fnode["alias_of"] = seen_funcs[id(value)]
                else:
                    seen_funcs[id(value)] = name
                if name in ("index", "default") and fnode["kind"] == "handler":
                    fnode["kind"] = name
                fcfg = static_attr(value, "_cp_config")
                if isinstance(fcfg, dict):
                    fnode["tools"] = tools_on(fcfg)
                    fnode["config"] = redact_config(fcfg)
                    walk.cp_configs.append((child_path, fcfg))
                if not fnode["exposed"]:
                    # No warning here: a request for it ends 404, and that is what the
                    # forgotten-expose finding reports (from the access records).
                    fnode["kind"] = "unexposed"
                funcs.append((fnode, value))
                walk.nodes.append(fnode)
            elif isinstance(value, _LEAF_TYPES) or _builtin_class(value):
                continue
            else:
                children.append((value, child_path))
        mark_internal(obj, funcs, by_method)
        for value, child_path in reversed(children):
            stack.append((value, child_path, depth + 1))


MAX_CODE_OBJECTS = 64
"""Code objects read per dispatching method (its own and the nested ones: lambdas,
comprehensions, inner functions)."""
MAX_TABLE_ITEMS = 2000
"""Entries read from one dispatch table (a dict or list of methods on the object)."""
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def code_facts(code: Any) -> Tuple[Set[str], Set[str]]:
    """The names (``co_names``: globals and attributes) and the string constants a function's
    code uses, nested code objects included (bounded). Read from the code object: nothing runs."""
    names: Set[str] = set()
    consts: Set[str] = set()
    stack = [code]
    seen = 0
    while stack and seen < MAX_CODE_OBJECTS:
        current = stack.pop()
        seen += 1
        names.update(str(n) for n in getattr(current, "co_names", ()))
        for const in getattr(current, "co_consts", ()):
            if type(const) is str:
                consts.add(const)
            elif isinstance(const, types.CodeType):
                stack.append(const)
    return names, consts


def name_prefix(const: str) -> Optional[str]:
    """The identifier a string constant starts a method name with: ``'api_'`` from ``'api_'``,
    ``'api_%s'`` or the ``'api_'`` of ``f'api_{action}'``; ``None`` for anything else (a
    docstring, a message)."""
    end = len(const)
    for mark in ("%", "{"):
        at = const.find(mark)
        if at != -1:
            end = min(end, at)
    prefix = const[:end]
    if len(prefix) < 2 or prefix[0] not in _NAME_START or any(c not in _NAME_CHARS for c in prefix):
        return None
    return prefix


def takes_names(func: Any) -> bool:
    """Whether a method can receive the name of what to call: ``*args``/``**kwargs`` or a
    parameter besides ``self``."""
    code = getattr(func, "__code__", None)
    if code is None:
        return False
    if code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return True
    return bool(code.co_argcount + code.co_kwonlyargcount >= 2)


def table_functions(obj: Any, attr: str) -> Dict[int, Optional[str]]:
    """The functions a dispatch table on ``obj`` holds, by id, each with its key: a plain dict
    (its values, keyed by a ``str`` key), list or tuple (no key) of the object's bound methods
    or of functions. Builtin containers only (iterating them runs no user code); other values
    give nothing."""
    table = static_attr(obj, attr)
    if type(table) is dict:
        items: Any = list(dict.items(table))[:MAX_TABLE_ITEMS]
    elif type(table) in (list, tuple):
        items = [(None, item) for item in list(table)[:MAX_TABLE_ITEMS]]
    else:
        return {}
    out: Dict[int, Optional[str]] = {}
    for key, item in items:
        name = key if type(key) is str else None
        if type(item) is types.MethodType:
            if item.__self__ is obj:
                out.setdefault(id(item.__func__), name)
        elif type(item) is types.FunctionType:
            out.setdefault(id(item), name)
    return out


def takes_segment(func: Any) -> bool:
    """Whether a dispatching method receives the next path segment: it has ``*args`` or a
    positional parameter besides ``self`` (CherryPy passes the rest of the path as positional
    arguments); with only ``**kwargs`` the name comes from the query string."""
    code = getattr(func, "__code__", None)
    if code is None:
        return False
    return bool(code.co_flags & inspect.CO_VARARGS or code.co_argcount >= 2)


def reached_at(dispatcher_path: str, key: Optional[str]) -> Optional[str]:
    """``/api/adduser``: the path (under the app) that reaches an internal method whose
    dispatcher at ``dispatcher_path`` takes the name ``key`` from the next path segment."""
    if not key or "/" in key or key in (".", ".."):
        return None
    return dispatcher_path.rstrip("/") + "/" + key


def mark_internal(obj: Any, funcs: List[Tuple[Dict[str, Any], Any]], by_method: bool) -> None:
    """Unexposed methods that one of the object's exposed methods reaches on purpose become
    ``internal``, with ``reached_via`` the dispatcher's qualname. A dispatcher is an exposed
    method that can take a name (``*args``, ``**kwargs`` or a parameter) and either calls
    ``getattr`` with a string constant the method's name starts with (``getattr(self, 'api_' +
    action)``), or reads an attribute of the object that is a table of its methods
    (``self.handlers[action]``). Failing that, an exposed ``default`` receives the request for an
    unexposed method (the default dispatcher falls back to it). Read from code objects and
    builtin containers only: no app code runs."""
    unexposed = [(node, func) for node, func in funcs if node["kind"] == "unexposed"]
    if not unexposed:
        return
    dispatchers = []
    for node, func in funcs:
        if not node["exposed"] or not takes_names(func):
            continue
        names, consts = code_facts(func.__code__)
        prefixes: List[str] = []
        if "getattr" in names:
            prefixes = sorted({p for p in map(name_prefix, consts) if p is not None})
        tables: Dict[int, Optional[str]] = {}
        for attr in sorted(names):
            if not attr.startswith("__"):
                for fid, key in table_functions(obj, attr).items():
                    if tables.get(fid) is None:
                        tables[fid] = key
        if prefixes or tables:
            dispatchers.append((node, prefixes, tables, takes_segment(func)))
    default = None
    if not by_method:
        default = next(
            (node for node, _f in funcs if node["name"] == "default" and node["exposed"]), None
        )
    for node, func in unexposed:
        via = None
        for dnode, prefixes, tables, segment in dispatchers:
            prefix = next((p for p in prefixes if node["name"].startswith(p)), None)
            if id(func) in tables or prefix is not None:
                via = dnode
                # The URL a request takes: the table's key, or the name without its prefix,
                # as the next path segment after the dispatcher (when it takes one).
                key = tables.get(id(func)) if id(func) in tables else None
                if key is None and prefix is not None:
                    key = node["name"][len(prefix) :]
                if segment:
                    node["reached_at"] = reached_at(dnode["path"], key)
                break
        if via is None:
            via = default
        if via is not None:
            node["kind"] = "internal"
            node["reached_via"] = via["qualname"]


def method_dispatch_at(app: Any, default: Any) -> Callable[[str], bool]:
    """Whether a request under a path is dispatched by HTTP method: the ``request.dispatch``
    CherryPy reads for that path from app config (the nearest section up), a MethodDispatcher
    or a VirtualHost handing over to one. ``_cp_config`` cannot set it: it is read after."""
    from cherrypy import _cpdispatch

    kinds: Dict[int, bool] = {}

    def by_method(path: str) -> bool:
        disp = app.find_config(path, "request.dispatch", default)
        known = kinds.get(id(disp))
        if known is None:
            if isinstance(disp, _cpdispatch.MethodDispatcher):
                known = True
            else:
                kind, detail = dispatcher_kind(disp)
                known = kind == "VirtualHost" and detail.get("next") == "MethodDispatcher"
            kinds[id(disp)] = known
        return known

    return by_method


def _builtin_class(value: Any) -> bool:
    """A class of the interpreter's own (``dict``, ``types.FunctionType``) held by an object
    of the tree, as Salt's loaders keep ``mod_dict_class = dict``: no handler is reached through
    it, so it is a leaf (walked, its C methods were listed as properties of user code)."""
    if not isinstance(value, type):
        return False
    try:
        return bool(type.__getattribute__(value, "__module__") == "builtins")
    except Exception:  # noqa: BLE001 - a hostile metaclass
        return False


def _is_instance_node(value: Any) -> bool:
    """Objects with a ``__get__`` that still behave as tree nodes (rare): only plain classes."""
    return isinstance(value, type)


def config_sections(app: Any) -> List[Dict[str, Any]]:
    out = []
    copied = list(dict(app.config).items())
    copied.sort(key=lambda kv: str(kv[0]))
    for path, section in copied:
        if not isinstance(section, dict):
            continue
        out.append(
            {
                "path": str(path),
                "source": "app.config",
                "tools": tools_on(section),
                "settings": redact_config(section),
            }
        )
    return out


def static_mounts(app: Any, walk: _Walk) -> List[Dict[str, Any]]:
    """Static mounts from app config, ``_cp_config`` met on the tree and static handlers."""
    mounts: List[Dict[str, Any]] = []
    sections: List[Tuple[str, str, Dict[str, Any]]] = []
    for path, section in list(dict(app.config).items()):
        if isinstance(section, dict):
            sections.append((str(path), "app.config", section))
    sections.extend((p, "_cp_config", c) for p, c in walk.cp_configs)
    for path, source, section in sections:
        for kind in ("staticdir", "staticfile"):
            if not section.get("tools.%s.on" % kind):
                continue
            prefix = "tools.%s." % kind

            def get(
                key: str,
                section: Dict[str, Any] = section,
                prefix: str = prefix,
                source: str = source,
                path: str = path,
            ) -> Any:
                if prefix + key in section:
                    return section[prefix + key]
                if source == "app.config":
                    try:
                        return app.find_config(path, prefix + key, None)
                    except Exception:  # noqa: BLE001
                        return None
                return None

            target = get("dir") if kind == "staticdir" else get("filename")
            mounts.append(
                _mount(
                    path,
                    kind,
                    source,
                    target,
                    get("root"),
                    get("index"),
                    get("match"),
                    get("content_types"),
                )
            )
    for path, kind, kwargs in walk.static_handlers:
        target = kwargs.get("dir") if kind == "staticdir" else kwargs.get("filename")
        mounts.append(
            _mount(
                path,
                kind,
                "handler",
                target,
                kwargs.get("root"),
                kwargs.get("index"),
                kwargs.get("match"),
                kwargs.get("content_types"),
            )
        )
    return mounts


def _mount(
    path: str,
    kind: str,
    source: str,
    target: Any,
    root: Any,
    index: Any,
    match: Any,
    content_types: Any,
) -> Dict[str, Any]:
    warnings: List[str] = []
    resolved: Optional[str] = None
    if not isinstance(target, str) or (not target and not root):
        warnings.append("no %s configured" % ("dir" if kind == "staticdir" else "filename"))
    else:
        expanded = os.path.expanduser(target) if kind == "staticdir" else target
        if os.path.isabs(expanded):
            resolved = expanded
        elif isinstance(root, str) and root:
            resolved = os.path.join(root, expanded)
            if not os.path.isabs(resolved):
                warnings.append("root is relative: resolved against the process's cwd")
        else:
            warnings.append("relative path without root: CherryPy answers 500 (ValueError)")
    return {
        "path": path,
        "kind": kind,
        "source": source,
        "configured": target if isinstance(target, str) else None,
        "root": root if isinstance(root, str) else None,
        "resolved": resolved,
        "index": index if isinstance(index, str) and index else None,
        "match": match if isinstance(match, str) and match else None,
        "content_types": {str(k): str(v) for k, v in dict(content_types).items()}
        if isinstance(content_types, dict)
        else {},
        "exists": None,
        "readable": None,
        "is_dir": None,
        "file_count": None,
        "dir_count": None,
        "file_count_capped": False,
        "warnings": warnings,
    }


def check_mount(mount: Dict[str, Any]) -> None:
    """Fill in exists/readable/is_dir/file_count (filesystem I/O: call off the request path)."""
    path = mount.get("resolved")
    if not path:
        return
    exists = os.path.exists(path)
    mount["exists"] = exists
    if not exists:
        mount["warnings"].append("missing: %s does not exist" % path)
        return
    is_dir = os.path.isdir(path)
    mount["is_dir"] = is_dir
    readable = os.access(path, os.R_OK | (os.X_OK if is_dir else 0))
    mount["readable"] = readable
    if not readable:
        mount["warnings"].append("unreadable by this process: %s" % path)
    if mount["kind"] == "staticdir" and not is_dir:
        mount["warnings"].append("not a directory: %s" % path)
    if mount["kind"] == "staticfile" and is_dir:
        mount["warnings"].append("a directory, not a file: CherryPy answers 404")
    if is_dir and readable:
        # The top level only (bounded): files and subdirectories apart, as a music library
        # of one folder per artist holds no file at its top.
        files = dirs = 0
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        is_subdir = entry.is_dir()
                    except OSError:
                        is_subdir = False
                    if is_subdir:
                        dirs += 1
                    else:
                        files += 1
                    if files + dirs >= FILE_COUNT_CAP:
                        mount["file_count_capped"] = True
                        break
        except OSError as exc:
            mount["warnings"].append("cannot list: %s" % exc)
            return
        mount["file_count"] = files
        mount["dir_count"] = dirs


def run_bounded(
    func: Callable[[], Any], timeout: float, name: str
) -> Tuple[bool, Any, Optional[str]]:
    """Run ``func`` on a fresh daemon thread; (finished, result, error) after ``timeout`` at most.

    CPython cannot interrupt a thread: past the limit the thread is abandoned, still running.
    """
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = func()
        except BaseException as exc:  # noqa: BLE001 - reported, never raised into the target
            box["error"] = "%s: %s" % (type(exc).__name__, exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, None, None
    return True, box.get("result"), box.get("error")


class RoutesProbe:
    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.max_nodes = max_nodes
        self._fs_busy = threading.Event()
        self._classifier = FrameClassifier()

    def snapshot(self) -> Dict[str, Any]:
        import cherrypy

        errors: List[str] = []
        budget = [self.max_nodes]
        apps: List[Dict[str, Any]] = []
        truncated = False
        try:
            items = list(cherrypy.tree.apps.items())  # a copy: mounts may happen meanwhile
            items.sort(key=lambda kv: str(kv[0]))
        except Exception as exc:  # noqa: BLE001
            items = []
            errors.append("tree: %s" % exc)
        for script_name, app in items:
            try:
                entry = self._app(script_name, app, budget)
            except Exception as exc:  # noqa: BLE001
                errors.append("app %r: %s: %s" % (script_name or "/", type(exc).__name__, exc))
                continue
            truncated = truncated or bool(entry.get("truncated"))
            apps.append(entry)
        mounts = [m for a in apps for m in a.get("static", [])]
        fs_note = self._check_mounts(mounts)
        if fs_note:
            errors.append(fs_note)
        try:
            global_tools = tools_on(dict(cherrypy.config))
        except Exception as exc:  # noqa: BLE001
            global_tools = []
            errors.append("global config: %s" % exc)
        return {
            "taken_at": time.time(),
            "apps": apps,
            "global_tools": global_tools,
            "cap": self.max_nodes,
            "truncated": truncated,
            "errors": errors,
        }

    def _check_mounts(self, mounts: List[Dict[str, Any]]) -> Optional[str]:
        if not mounts:
            return None
        if self._fs_busy.is_set():
            return "static checks skipped: an earlier check is still stuck on the filesystem"
        self._fs_busy.set()

        def check_all() -> None:
            try:
                for mount in mounts:
                    check_mount(mount)
            finally:
                self._fs_busy.clear()

        done, _result, error = run_bounded(check_all, FS_CHECK_TIMEOUT, "cpinspect-fscheck")
        if not done:
            return "static checks abandoned after %.1f s (a hung mount?)" % FS_CHECK_TIMEOUT
        return "static checks: %s" % error if error else None

    def _app(self, script_name: str, app: Any, budget: List[int]) -> Dict[str, Any]:
        import cherrypy
        from cherrypy import _cprequest

        entry: Dict[str, Any] = {
            "script_name": script_name,
            "kind": "cherrypy",
            "root": None,
            "dispatcher": "default",
            "dispatcher_detail": {},
            "nodes": [],
            "routes": [],
            "config": [],
            "static": [],
            "truncated": False,
            "errors": [],
        }
        if not isinstance(app, cherrypy.Application):
            entry["kind"] = "wsgi"
            entry["dispatcher"] = "wsgi"
            entry["root"] = qualname_of(app)
            return entry
        root = app.root
        entry["root"] = qualname_of(root) if root is not None else None
        disp = app.find_config("/", "request.dispatch", _cprequest.Request.dispatch)
        kind, detail = dispatcher_kind(disp)
        entry["dispatcher"] = kind
        entry["dispatcher_detail"] = detail
        entry["config"] = config_sections(app)
        for section in entry["config"]:
            raw = dict(app.config).get(section["path"], {})
            if section["path"] != "/" and "request.dispatch" in raw:
                section["dispatcher"] = dispatcher_kind(raw["request.dispatch"])[0]
        routes_disp = disp
        if kind == "VirtualHost":
            routes_disp = closure_vars(disp).get("next_dispatcher")
        from cherrypy import _cpdispatch

        if isinstance(routes_disp, _cpdispatch.RoutesDispatcher):
            entry["routes"] = self._routes(routes_disp, entry["errors"])
        walk = _Walk(budget)
        if root is not None:
            walk_tree(root, walk, method_dispatch_at(app, _cprequest.Request.dispatch))
        # Whether each node is defined in the app's own code (the stack rule of frames.py):
        # a method of a library's helper object hanging off a handler is never a route anyone
        # forgot to expose. Path strings only, no file opened.
        self._classifier.refresh_apps()
        for node in walk.nodes:
            file = node.get("file")
            if file:  # unknown (a property, a C callable): left out, the reader says None
                node["app_code"] = self._classifier.is_app(str(file))
        entry["nodes"] = walk.nodes
        entry["truncated"] = walk.truncated
        entry["static"] = static_mounts(app, walk)
        return entry

    @staticmethod
    def _routes(disp: Any, errors: List[str]) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        try:
            controllers = dict(getattr(disp, "controllers", {}) or {})
            for route in list(disp.mapper.matchlist):
                defaults = dict(getattr(route, "defaults", {}) or {})
                cname = defaults.get("controller")
                action = defaults.get("action")
                ctl = controllers.get(cname)
                handler = None
                if ctl is not None and isinstance(action, str):
                    handler = unwrap_descriptor(static_attr(ctl, action))
                file, line = source_of(handler) if handler is not None else (None, None)
                conditions = getattr(route, "conditions", None) or {}
                out.append(
                    {
                        "name": getattr(route, "name", None),
                        "path": str(getattr(route, "routepath", "")),
                        "controller": None if cname is None else str(cname),
                        "action": None if action is None else str(action),
                        "methods": [str(m) for m in conditions.get("method", []) or []],
                        "qualname": qualname_of(handler) if handler is not None else None,
                        "file": file,
                        "line": line,
                        "signature": signature_of(handler) if handler is not None else None,
                    }
                )
        except Exception as exc:  # noqa: BLE001
            errors.append("routes mapper: %s: %s" % (type(exc).__name__, exc))
        return out
