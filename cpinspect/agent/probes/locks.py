"""Which threads wait on a lock, and which thread likely holds it — read, never acquired.

A thread blocked on ``with LEDGER_LOCK:`` or ``x.lock.acquire()`` sits in C (the lock's acquire)
with its innermost Python frame at the instruction that called it: SETUP_WITH (3.8-3.10),
BEFORE_WITH (3.11+), or a call (CALL_METHOD, CALL, CALL_KW ...) of a method named ``acquire`` or
``__enter__``. The loads before that instruction name the lock (``LEDGER_LOCK``, ``self.lock``);
the name is looked up in the frame's namespaces and attributes are read only through an
instance's ``__dict__`` or a slot (never a property, ``__getattr__`` or any other user code).
Only ``threading.Lock``, ``RLock`` and ``Condition`` objects that are locked right now count
(``locked()`` is C; an RLock's owner comes from its C repr, like the sessions probe does).

When some thread waits, the other threads' frames are searched for a ``with`` block on the same
object whose body holds the frame's current instruction (the exception table on 3.11+, the
SETUP_WITH target on 3.8-3.10): that thread likely holds it. A lock taken by ``acquire()``
without ``with`` leaves no such trace: its holder is not found.

Everything is cached per code object (bounded) and costs nothing while no thread waits beyond
one attribute test per thread (the site is found once per stack change, see ``threads.py``).
"""

import dis
import hashlib
import os
import queue
import re
import sys
import threading
import types
from collections import OrderedDict
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

from ..wire import MAX_STACK_DEPTH

_WITH_OPS = frozenset(("SETUP_WITH", "BEFORE_WITH"))
_CALL_OPS = frozenset(("CALL_METHOD", "CALL", "CALL_FUNCTION", "CALL_FUNCTION_KW", "CALL_KW"))
_KW_CALLS = frozenset(("CALL_FUNCTION_KW", "CALL_KW"))  # the names tuple is one more load
_SKIP = frozenset(("PRECALL", "KW_NAMES", "CACHE", "EXTENDED_ARG", "NOP", "PUSH_NULL"))
_ARG_LOADS = frozenset(
    ("LOAD_CONST", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF")
)
_METHOD_LOADS = frozenset(("LOAD_METHOD", "LOAD_ATTR"))
_ACQUIRE = frozenset(("acquire", "__enter__"))
_BASES = {
    "LOAD_FAST": "local",
    "LOAD_FAST_CHECK": "local",
    "LOAD_DEREF": "local",
    "LOAD_CLASSDEREF": "local",
    "LOAD_GLOBAL": "global",
    "LOAD_NAME": "name",
}
_MAX_ATTRS = 6
CODES_MAX = 4096
"""Code objects the probe remembers (their lock sites and with blocks; each entry keeps its
code object alive, so that no id in the cache can be reused by another code)."""

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())
_THREADING_FILE = getattr(threading, "__file__", "") or ""
_INTERNAL_FILES = frozenset((_THREADING_FILE, getattr(queue, "__file__", "") or ""))
"""Their ``with`` blocks are on their own Conditions (every idle worker sits inside one, in
``queue.get`` or ``Event.wait``): never a lock an app waits for, and resolving them per thread
would make the holder search cost what the whole answer costs."""
_SALT = os.urandom(16)


def _locals_type() -> type:
    return type(sys._getframe().f_locals)


_LOCALS_PROXY = _locals_type()
"""``FrameLocalsProxy`` on 3.13+ (PEP 667); ``dict`` before, where f_locals is a plain dict."""

Path = Tuple[str, str, Tuple[Any, ...]]
"""(base kind: local|global|name, base name, steps): a step is an attribute name, or
``("[]", kind, key)`` for a subscript whose key is a name of that kind or a ``const``."""
Site = Tuple[int, Path, str]
"""(frame depth from the innermost, the lock expression's path, "with" | "call")."""


def expr_of(path: Path) -> str:
    """``LEDGER_LOCK``, ``self.lock``, ``self._locks[key]``: the expression as the code reads."""
    parts = [path[1]]
    for step in path[2]:
        if isinstance(step, str):
            parts.append("." + step)
        else:
            _sub, kind, key = step
            parts.append("[%s]" % (repr(key) if kind == "const" else key))
    return "".join(parts)


def token(obj: Any) -> str:
    """An opaque name for ``obj``, equal for the same object within this agent's lifetime."""
    return hashlib.blake2b(str(id(obj)).encode("ascii"), key=_SALT, digest_size=6).hexdigest()


Instructions = List[Tuple[int, str, Any, Any]]
"""(offset, opname, arg, argval) of each instruction."""


class _Code:
    """What the probe learnt of one code object: its lock sites by offset and its with blocks.

    The instructions themselves are kept only for the last INSTRUCTIONS_KEPT code objects (a
    few KiB each): a spinning thread stops at a new offset of the same code every poll.
    """

    __slots__ = ("blocks", "code", "sites")

    def __init__(self, code: Any) -> None:
        self.code = code
        self.sites: Dict[int, Optional[Tuple[Path, str]]] = {}
        self.blocks: Optional[List[Tuple[int, int, Path, int]]] = None

    def instructions(self) -> Instructions:
        key = id(self.code)
        kept = _INSTRUCTIONS.get(key)
        if kept is not None and kept[0] is self.code:
            _INSTRUCTIONS.move_to_end(key)
            return kept[1]
        ins = [(i.offset, i.opname, i.arg, i.argval) for i in dis.get_instructions(self.code)]
        _INSTRUCTIONS[key] = (self.code, ins)
        while len(_INSTRUCTIONS) > INSTRUCTIONS_KEPT:
            _INSTRUCTIONS.popitem(last=False)
        return ins


INSTRUCTIONS_KEPT = 64
_INSTRUCTIONS: "OrderedDict[int, Tuple[Any, Instructions]]" = OrderedDict()


_CODES: Dict[int, _Code] = {}


def _code_info(code: Any) -> _Code:
    info = _CODES.get(id(code))
    if info is None or info.code is not code:
        if len(_CODES) >= CODES_MAX:
            _CODES.clear()
        info = _Code(code)
        _CODES[id(code)] = info
    return info


def _path_before(ins: Instructions, end: int) -> Optional[Path]:
    """The ``NAME.attr[key].attr`` loaded by the instructions just before index ``end``."""
    steps: List[Any] = []  # innermost last, read backwards
    n = end - 1
    while n >= 0 and len(steps) <= _MAX_ATTRS:
        _off, op, _arg, val = ins[n]
        if op in _SKIP:
            n -= 1
            continue
        if op == "LOAD_ATTR" and isinstance(val, str):
            steps.append(val)
            n -= 1
            continue
        if op == "BINARY_SUBSCR":
            m = n - 1
            while m >= 0 and ins[m][1] in _SKIP:
                m -= 1
            if m < 0:
                return None
            kop, kval = ins[m][1], ins[m][3]
            if kop == "LOAD_FAST_LOAD_FAST" and isinstance(kval, tuple) and len(kval) == 2:
                steps.append(("[]", "local", kval[1]))  # 3.13: d[key] with both local
                return ("local", kval[0], tuple(reversed(steps)))
            if kop == "LOAD_CONST" and type(kval) in (str, int):
                steps.append(("[]", "const", kval))
            elif _BASES.get(kop) is not None and isinstance(kval, str):
                steps.append(("[]", _BASES[kop], kval))
            else:
                return None
            n = m - 1
            continue
        base = _BASES.get(op)
        if base is not None and isinstance(val, str):
            return (base, val, tuple(reversed(steps)))
        return None
    return None


def _parse_site(info: _Code, lasti: int) -> Optional[Tuple[Path, str]]:
    code = info.code
    raw = code.co_code
    if lasti < 0 or lasti >= len(raw):
        return None
    opname = dis.opname[raw[lasti]]
    if opname not in _WITH_OPS and opname not in _CALL_OPS:
        return None  # the common case, decided without disassembling
    ins = info.instructions()
    n = next((k for k, item in enumerate(ins) if item[0] == lasti), None)
    if n is None:
        return None
    if opname in _WITH_OPS:
        path = _path_before(ins, n)
        return (path, "with") if path is not None else None
    # A call: skip its arguments (simple loads only), then the method must be acquire/__enter__.
    argc = ins[n][2] or 0
    if opname in _KW_CALLS:
        argc += 1
    m = n - 1
    while m >= 0 and ins[m][1] in _SKIP:
        m -= 1
    while argc > 0 and m >= 0:
        if ins[m][1] in _SKIP:
            m -= 1
            continue
        if ins[m][1] not in _ARG_LOADS:
            return None
        argc -= 1
        m -= 1
    while m >= 0 and ins[m][1] in _SKIP:
        m -= 1
    if m < 0 or ins[m][1] not in _METHOD_LOADS or ins[m][3] not in _ACQUIRE:
        return None
    path = _path_before(ins, m)
    return (path, "call") if path is not None else None


def site_at(code: Any, lasti: int) -> Optional[Tuple[Path, str]]:
    """Where a frame stopped at ``lasti`` would take a lock: the expression and how; else None."""
    info = _code_info(code)
    if lasti in info.sites:
        return info.sites[lasti]
    try:
        site = _parse_site(info, lasti)
    except Exception:  # noqa: BLE001 - bytecode we do not know: no site
        site = None
    if len(info.sites) >= 256:
        info.sites.clear()  # a spinning thread: a new offset every poll
    info.sites[lasti] = site
    return site


def lock_site(codes: List[Any], key: List[int]) -> Optional[Site]:
    """The lock site of a thread's innermost frames (``codes``/``key`` of its cached stack).

    ``with cond:`` on a ``threading.Condition`` enters Python (``Condition.__enter__``) and
    blocks one frame further in: its caller's site is the one that names the lock.
    """
    if not codes:
        return None
    code = codes[0]
    depth = 0
    if code.co_filename == _THREADING_FILE:
        if code.co_name != "__enter__" or len(codes) < 2:
            return None  # Condition.wait, Event.wait, queue.get: waits for a notification
        code = codes[1]
        depth = 1
    site = site_at(code, key[2 * depth + 1])
    if site is None:
        return None
    return (depth, site[0], site[1])


# --- Reading objects without running their code ------------------------------------------------

_MISSING = object()
_TYPE_DICT = type.__dict__["__dict__"]
_TYPE_MRO = type.__dict__["__mro__"]


def _class_lookup(cls: type, name: str) -> Any:
    for klass in _TYPE_MRO.__get__(cls, type):
        d = _TYPE_DICT.__get__(klass, type)
        if name in d:
            return d[name]
    return _MISSING


def _has(cls: type, name: str) -> bool:
    return _class_lookup(cls, name) is not _MISSING


def static_attr(obj: Any, name: str) -> Any:
    """``obj.name`` through the instance ``__dict__``, a slot or a plain class attribute.

    Only type dicts (mapping proxies) and C descriptors are read: no ``hasattr``/``isinstance``
    on the object itself, which may reach a ``__getattr__`` or a ``__class__`` property.
    """
    cls = type(obj)
    if cls is types.ModuleType:
        d = _class_lookup(types.ModuleType, "__dict__").__get__(obj, types.ModuleType)
        return dict.get(d, name, _MISSING) if type(d) is dict else _MISSING
    if issubclass(cls, type):
        for klass in _TYPE_MRO.__get__(obj, type):
            d = _TYPE_DICT.__get__(klass, type)
            if name in d:
                value = d[name]
                return _MISSING if _has(type(value), "__get__") else value
        return _MISSING
    attr = _class_lookup(cls, name)
    if attr is not _MISSING:
        kind = type(attr)
        if kind is types.MemberDescriptorType:  # a slot
            try:
                return attr.__get__(obj, cls)
            except AttributeError:
                return _MISSING
        if _has(kind, "__set__") or _has(kind, "__delete__"):
            return _MISSING  # a property or another data descriptor: user code
    descr = _class_lookup(cls, "__dict__")
    if type(descr) is types.GetSetDescriptorType:
        try:
            d = descr.__get__(obj, cls)
        except Exception:  # noqa: BLE001
            d = None
        if type(d) is dict:
            value = dict.get(d, name, _MISSING)
            if value is not _MISSING:
                return value
    if attr is not _MISSING and not _has(type(attr), "__get__"):
        return attr  # a class attribute (``lock = threading.Lock()`` in the class body)
    return _MISSING


def _lookup(frame: FrameType, kind: str, name: str) -> Any:
    """``name`` in the frame's locals (``local``), globals then builtins (``global``) or all
    three (``name``): plain dict reads, or the 3.13 locals proxy (reads the frame's slots)."""
    obj: Any = _MISSING
    if kind in ("local", "name"):
        local = frame.f_locals
        if type(local) is dict:
            obj = dict.get(local, name, _MISSING)
        elif type(local) is _LOCALS_PROXY:
            try:
                obj = local.get(name, _MISSING)
            except Exception:  # noqa: BLE001
                obj = _MISSING
    if obj is _MISSING and kind in ("global", "name"):
        g = frame.f_globals
        obj = dict.get(g, name, _MISSING) if type(g) is dict else _MISSING
        if obj is _MISSING:
            b = frame.f_builtins
            obj = dict.get(b, name, _MISSING) if type(b) is dict else _MISSING
    return obj


def _item(container: Any, key: Any) -> Any:
    """``container[key]`` for a plain dict (str/int key) or a list/tuple (int index) only."""
    if type(container) is dict and type(key) in (str, int):
        return dict.get(container, key, _MISSING)
    if (
        type(container) in (list, tuple)
        and type(key) is int
        and -len(container) <= key < len(container)
    ):
        return container[key]
    return _MISSING


def resolve(frame: FrameType, path: Path) -> Any:
    """The object ``path`` names in ``frame``; ``_MISSING`` when it cannot be read safely."""
    kind, name, steps = path
    obj = _lookup(frame, kind, name)
    for step in steps:
        if obj is _MISSING:
            break
        if isinstance(step, str):
            obj = static_attr(obj, step)
            continue
        _sub, key_kind, key = step
        if key_kind != "const":
            key = _lookup(frame, key_kind, key)
            if key is _MISSING:
                return _MISSING
        obj = _item(obj, key)
    return obj


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def lock_state(obj: Any) -> Optional[Tuple[bool, Optional[int]]]:
    """(locked, owner ident or None) of a Lock, RLock or Condition; None for anything else."""
    cls = type(obj)
    if cls is threading.Condition:
        inner = static_attr(obj, "_lock")
        return lock_state(inner) if type(inner) in (_LOCK, _RLOCK) else None
    if cls is _LOCK:
        return (bool(obj.locked()), None)
    if cls is _RLOCK:
        owner = lock_owner(obj)
        return (owner is not None, owner)
    return None


_OWNER = re.compile(r"owner=(\d+)")


def lock_owner(lock: Any) -> Optional[int]:
    """The ident holding a C ``RLock``, from its C repr (never acquired); None when free.

    The same reading as ``sessions.lock_owner`` (which imports this package's threads probe, so
    it cannot be imported from here).
    """
    text = repr(lock)
    if not text.startswith("<locked"):
        return None
    m = _OWNER.search(text)
    owner = int(m.group(1)) if m is not None else 0
    return owner or None


def _frame_at(frame: Optional[FrameType], depth: int) -> Optional[FrameType]:
    for _ in range(depth):
        if frame is None:
            return None
        frame = frame.f_back
    return frame


def wait_of(
    ident: int, frame: Optional[FrameType], site: Site
) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """The object thread ``ident`` waits for at ``site`` and its wire dict; None when it does not.

    Only a lock locked right now is waited on (a thread passing a free lock is not waiting), and
    never an RLock this thread already owns (it re-enters at once).
    """
    depth, path, _how = site
    f = _frame_at(frame, depth)
    if f is None:
        return None
    obj = resolve(f, path)
    if obj is _MISSING:
        return None
    state = lock_state(obj)
    if state is None or not state[0] or state[1] == ident:
        return None
    return obj, {
        "expr": expr_of(path),
        "obj": token(obj),
        "type": _type_name(obj),
        "filename": f.f_code.co_filename,
        "lineno": f.f_lineno,
        "owner": state[1],
    }


# --- With blocks: is a frame inside ``with X:``? -------------------------------------------


def _exception_table(code: Any) -> List[Tuple[int, int, int]]:
    """(start, end, target) byte offsets of the 3.11+ exception table (varint encoded)."""
    table = getattr(code, "co_exceptiontable", b"")
    out: List[Tuple[int, int, int]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        b = table[pos]
        pos += 1
        value = b & 63
        while b & 64:
            b = table[pos]
            pos += 1
            value = (value << 6) | (b & 63)
        return value

    while pos < len(table):
        start = varint() * 2
        length = varint() * 2
        target = varint() * 2
        varint()  # depth and lasti
        out.append((start, start + length, target))
    return out


def _line_of(code: Any) -> Dict[int, int]:
    return {offset: line for offset, line in dis.findlinestarts(code) if line is not None}


def with_blocks(info: _Code) -> List[Tuple[int, int, Path, int]]:
    """The ``with`` statements of a code object: (with offset, handler/end offset, path, line).

    3.8-3.10: the body lies between SETUP_WITH and its target. 3.11+: the second item is the
    handler the exception table gives the body (see ``in_body``).
    """
    if info.blocks is not None:
        return info.blocks
    blocks: List[Tuple[int, int, Path, int]] = []
    code = info.code
    if code.co_filename not in _INTERNAL_FILES and any(
        dis.opname[op] in _WITH_OPS for op in code.co_code[::2]
    ):
        ins = info.instructions()
        starts = _line_of(code)
        table = _exception_table(code) if sys.version_info >= (3, 11) else []
        line = code.co_firstlineno
        for n, (offset, op, _arg, val) in enumerate(ins):
            line = starts.get(offset, line)
            if op not in _WITH_OPS:
                continue
            path = _path_before(ins, n)
            if path is None:
                continue
            if op == "SETUP_WITH":
                blocks.append((offset, int(val), path, line))
                continue
            after = offset + 2
            handler = next((t for s, e, t in table if s <= after < e), None)
            if handler is not None:
                blocks.append((offset, handler, path, line))
    info.blocks = blocks
    return blocks


def in_body(code: Any, block: Tuple[int, int, Path, int], lasti: int) -> bool:
    start, end, _path, _line = block
    if lasti <= start:
        return False
    if sys.version_info < (3, 11):
        return lasti < end
    # 3.11+: inside when the handler chain from lasti's entry reaches the with's handler (a
    # nested try's handler is itself covered by an entry leading, in the end, to it).
    table = _exception_table_cached(code)
    target: Optional[int] = _target(table, lasti)
    seen = 0
    while target is not None and seen < 32:
        if target == end:
            return True
        target = _target(table, target)
        seen += 1
    return False


_TABLES: Dict[int, Tuple[Any, List[Tuple[int, int, int]]]] = {}


def _exception_table_cached(code: Any) -> List[Tuple[int, int, int]]:
    cached = _TABLES.get(id(code))
    if cached is None or cached[0] is not code:
        if len(_TABLES) >= CODES_MAX:
            _TABLES.clear()
        cached = (code, _exception_table(code))
        _TABLES[id(code)] = cached
    return cached[1]


def _target(table: List[Tuple[int, int, int]], offset: int) -> Optional[int]:
    for start, end, target in table:
        if start <= offset < end:
            return target
    return None


def holds_of(frame: Optional[FrameType], waited: Dict[int, str]) -> List[Dict[str, Any]]:
    """The ``with`` blocks on a waited-for object (``id -> token``) a thread's frames are in."""
    out: List[Dict[str, Any]] = []
    f = frame
    depth = 0
    while f is not None and depth < MAX_STACK_DEPTH:
        code = f.f_code
        blocks = with_blocks(_code_info(code))
        if blocks:
            lasti = f.f_lasti
            for block in blocks:
                if not in_body(code, block, lasti):
                    continue
                obj = resolve(f, block[2])
                tok = waited.get(id(obj)) if obj is not _MISSING else None
                if tok is not None:
                    out.append(
                        {
                            "expr": expr_of(block[2]),
                            "obj": tok,
                            "filename": code.co_filename,
                            "lineno": block[3],
                        }
                    )
        f = f.f_back
        depth += 1
    return out


def annotate(
    entries: List[Dict[str, Any]],
    sites: Dict[int, Site],
    frames: Dict[int, FrameType],
    errors: List[str],
) -> None:
    """Add ``wait`` to the entries of threads blocked on a lock and, when any is, ``holds``.

    ``sites``: ident -> lock site of the threads whose innermost frame is at one (usually empty:
    then nothing at all happens here).
    """
    if not sites:
        return
    by_ident = {e["ident"]: e for e in entries}
    waited: Dict[int, str] = {}
    keep: List[Any] = []  # the waited objects stay alive while their ids are compared
    for ident, site in sites.items():
        entry = by_ident.get(ident)
        if entry is None:
            continue
        try:
            found = wait_of(ident, frames.get(ident), site)
        except Exception as exc:  # noqa: BLE001
            errors.append("lock wait of thread %s: %s: %s" % (ident, type(exc).__name__, exc))
            continue
        if found is not None:
            obj, wait = found
            entry["wait"] = wait
            waited[id(obj)] = wait["obj"]
            keep.append(obj)
    if not waited:
        return
    for entry in entries:
        ident = entry["ident"]
        try:
            holds = holds_of(frames.get(ident), waited)
        except Exception as exc:  # noqa: BLE001
            errors.append("lock holds of thread %s: %s: %s" % (ident, type(exc).__name__, exc))
            continue
        if holds:
            entry["holds"] = holds
    del keep
