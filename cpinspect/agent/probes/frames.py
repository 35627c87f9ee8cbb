"""Python stacks of other threads, with each frame marked as application or library code.

The rule (DESIGN.md): a frame is "app" when its file belongs to the code that defines the mounted
roots (their modules' package directories), or lies outside the standard library and the installed
distributions. Everything else, the agent's own files included, is library. Only path strings are
compared: no file is opened here.
"""

import os
import site
import sys
import sysconfig
from types import FrameType
from typing import Any, Dict, List, Optional, Set, Tuple

from ..wire import MAX_STACK_DEPTH

_AGENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path)).rstrip(os.sep) + os.sep


def _library_prefixes() -> Tuple[str, ...]:
    paths: Set[str] = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(name)
        if p:
            paths.add(p)
    try:
        paths.update(site.getsitepackages())
    except Exception:  # noqa: BLE001 - virtualenv's old site.py lacks it
        pass
    try:
        paths.add(site.getusersitepackages())
    except Exception:  # noqa: BLE001
        pass
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry):
            paths.add(entry)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.add(os.path.join(prefix, "lib", "python%d.%d" % sys.version_info[:2]))
    paths.add(_AGENT_DIR)
    return tuple(sorted({_norm(p) for p in paths}, key=len, reverse=True))


def module_dir(module_name: str) -> Optional[str]:
    """The package directory of ``module_name`` (or its file, for a top-level module)."""
    mod = sys.modules.get(module_name)
    filename = getattr(mod, "__file__", None)
    if not filename:
        return None
    filename = str(filename)
    if "." in module_name or os.path.basename(filename).startswith("__init__."):
        return _norm(os.path.dirname(filename))
    return os.path.normcase(os.path.abspath(filename))


class FrameClassifier:
    """Decides app vs library per file name; cached, bounded, refreshed when mounts change."""

    CACHE_MAX = 4096

    def __init__(self) -> None:
        self._libs = _library_prefixes()
        self._apps: Tuple[str, ...] = ()
        self._apps_key: Any = None
        self._cache: Dict[str, bool] = {}

    def refresh_apps(self) -> None:
        try:
            import cherrypy

            apps = list(cherrypy.tree.apps.items())
        except Exception:  # noqa: BLE001
            apps = []
        key = tuple((sn, id(app)) for sn, app in apps)
        if key == self._apps_key:
            return
        dirs: Set[str] = set()
        for _sn, app in apps:
            root = getattr(app, "root", None)
            candidates = [type(root).__module__] if root is not None else []
            if root is None:
                candidates.append(getattr(type(app), "__module__", ""))
            for name in candidates:
                if not name or name.startswith(("cherrypy", "cheroot")):
                    continue
                d = module_dir(name)
                if d and not d.startswith(_norm(_AGENT_DIR)):
                    dirs.add(d)
        self._apps = tuple(dirs)
        self._apps_key = key
        self._cache = {}

    def is_app(self, filename: str) -> bool:
        cached = self._cache.get(filename)
        if cached is not None:
            return cached
        result = self._classify(filename)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache = {}
        self._cache[filename] = result
        return result

    def _classify(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            return False
        path = os.path.normcase(filename if os.path.isabs(filename) else os.path.abspath(filename))
        for app in self._apps:
            if path == app or path.startswith(app):
                return True
        return not any(path.startswith(lib) for lib in self._libs)


def extract_stack(
    frame: Optional[FrameType], classifier: FrameClassifier, limit: int = MAX_STACK_DEPTH
) -> Tuple[List[Dict[str, Any]], int]:
    """Innermost-first frames as wire dicts, and how many outer frames the cap left out."""
    out: List[Dict[str, Any]] = []
    truncated = 0
    f = frame
    while f is not None:
        if len(out) >= limit:
            truncated += 1
        else:
            code = f.f_code
            out.append(
                {
                    "file": code.co_filename,
                    "line": f.f_lineno,
                    "function": code.co_name,
                    "qualname": getattr(code, "co_qualname", None),
                    "app": classifier.is_app(code.co_filename),
                }
            )
        f = f.f_back
    return out, truncated


class FrameLine:
    """One frame's wire dict as sent, its JSON text and a hash of it: shared by every frame of
    one code object stopped on one line (at whatever instruction of it).

    Holds the code object (never a frame: frames hold locals), so the ``id(code)`` it is found
    under cannot be given to another code object while it is remembered.
    """

    __slots__ = ("code", "hash", "text", "wire")

    def __init__(self, code: Any, wire: Dict[str, Any], text: str) -> None:
        self.code = code
        self.wire = wire
        self.text = text
        self.hash = hash(text)


class FrameTable:
    """Frames already extracted, found again by (id(code), f_lasti): a thread that moved
    re-extracts only its frames that stopped somewhere new (usually the innermost one or two).

    Bounded: both maps are emptied together when either reaches ``MAX`` (a thread spinning
    through a big function brings a new instruction offset per poll). Emptied too when the
    classifier's app marks change (``clear``). ``encode``: the answer's JSON encoding of a dict.
    """

    MAX = 8192

    def __init__(self, classifier: FrameClassifier, encode: Any) -> None:
        self.classifier = classifier
        self._encode = encode
        self._at: Dict[Tuple[int, int], FrameLine] = {}  # (id(code), f_lasti) -> line
        self._lines: Dict[Tuple[int, Any], FrameLine] = {}  # (id(code), f_lineno) -> line

    def __len__(self) -> int:
        return len(self._at) + len(self._lines)

    def clear(self) -> None:
        self._at = {}
        self._lines = {}

    def line(self, frame: FrameType) -> FrameLine:
        code = frame.f_code
        key = (id(code), frame.f_lasti)
        found = self._at.get(key)
        if found is not None:
            return found
        lineno = frame.f_lineno
        found = self._lines.get((key[0], lineno))
        if found is None:
            filename = code.co_filename
            wire = {
                "file": filename,
                "line": lineno,
                "function": code.co_name,
                "qualname": getattr(code, "co_qualname", None),
                "app": self.classifier.is_app(filename),
            }
            found = FrameLine(code, wire, self._encode(wire))
            if len(self._lines) >= self.MAX:
                self.clear()
            self._lines[(key[0], lineno)] = found
        if len(self._at) >= self.MAX:
            self.clear()
            self._lines[(key[0], lineno)] = found
        self._at[key] = found
        return found

    def lines(
        self, frame: Optional[FrameType], limit: int = MAX_STACK_DEPTH
    ) -> Tuple[List[FrameLine], int]:
        """``extract_stack`` through the table: innermost-first lines, and the outer frames
        the cap left out."""
        out: List[FrameLine] = []
        line = self.line
        f = frame
        while f is not None and len(out) < limit:
            out.append(line(f))
            f = f.f_back
        truncated = 0
        while f is not None:
            truncated += 1
            f = f.f_back
        return out, truncated
