"""Runs inside the target, on its main thread, when ``cpinspect inject`` schedules it.

The scheduled text (``bootstrap_text``) ``exec``s this file in a fresh dict holding
``CPINSPECT_ARGS = (lib_dir, package, status_path, action)``, never in ``__main__``'s globals.
It must be quick (the main thread is the app's) and must never raise: every outcome, failures
included, goes to the status file the inspector waits for.

- ``install``: when an agent is already installed (by config, by ``install()`` or by an earlier
  injection), report its socket; else put ``lib_dir`` on ``sys.path`` just long enough to import
  the agent under its unique package name (``lib_dir`` holds nothing but that package, so no app
  module can be shadowed even meanwhile), then ``install()``.
- ``uninstall``: uninstall every agent installed in this process (hooks, threads, socket). The
  files stay: the Autoreloader would restart the app if an imported file changed or vanished.

Standard library only, Python 3.8 syntax.
"""

import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Tuple

STATUS_SCHEMA = 1


def bootstrap_text(script: str, args: Tuple[str, str, str, str]) -> str:
    """The source handed to ``PyRun_SimpleString`` / ``sys.remote_exec``.

    It binds no name in ``__main__`` (a ``try`` without ``as`` binds nothing; the file is read
    and run inside the fresh dict) and never lets an exception out: a pending call that fails
    would raise ``SystemError`` in the main thread.
    """
    inner = (
        "with open(%r, 'rb') as f:\n    s = f.read()\nexec(compile(s, %r, 'exec'), globals())"
        % (
            script,
            script,
        )
    )
    return (
        "try:\n"
        " exec(%r, {'__name__': '__cpinspect_bootstrap__', 'CPINSPECT_ARGS': %r})\n"
        "except BaseException:\n"
        " pass\n" % (inner, tuple(args))
    )


def _installed_agents() -> List[Tuple[str, Any]]:
    """``(module name, plugin module)`` of every agent copy imported in this process."""
    out = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.endswith(".plugin"):
            continue
        package = name[: -len(".plugin")]
        ours = package == "cpinspect.agent" or package.startswith("cpinspect_agent_")
        if ours and callable(getattr(module, "installed", None)):
            out.append((name, module))
    return out


def _import_agent(lib_dir: str, package: str) -> Any:
    module = sys.modules.get(package)
    if module is not None:
        return module
    import importlib

    sys.path.insert(0, lib_dir)
    try:
        return importlib.import_module(package)
    finally:
        # Only our entry goes: another thread may have changed sys.path meanwhile.
        try:
            sys.path.remove(lib_dir)
        except ValueError:
            pass


def _running_agent() -> Any:
    """The plugin module of the agent installed in this process, if any."""
    for _, module in _installed_agents():
        if module.installed() is not None:
            return module
    return None


def _install(lib_dir: str, package: str, result: Dict[str, Any]) -> None:
    running = _running_agent()
    if running is not None:
        # Its install() is idempotent, and binds its socket again when the file was removed or
        # replaced meanwhile (a tmp cleaner): reporting the gone path would be a dead end.
        result.update(ok=True, socket=str(running.install()), already=True)
        return
    if "cherrypy" not in sys.modules:
        result.update(
            kind="no-cherrypy",
            error="this Python process has not imported cherrypy (is it a CherryPy server?)",
        )
        return
    cherrypy = sys.modules["cherrypy"]
    if not all(hasattr(cherrypy, name) for name in ("config", "engine", "tree")):
        # We run on the main thread, between two bytecodes: maybe in the middle of its import.
        result.update(
            kind="not-ready", error="cherrypy is still being imported here; try again in a moment"
        )
        return
    agent = _import_agent(lib_dir, package)
    result.update(ok=True, socket=agent.install(), already=False)


def _uninstall(result: Dict[str, Any]) -> None:
    removed = 0
    for _, module in _installed_agents():
        if module.installed() is not None:
            module.uninstall()
            removed += 1
    result.update(ok=True, removed=removed)


def write_status(path: str, result: Dict[str, Any]) -> None:
    """Write ``result`` atomically; never follow a symlink, never let an error out."""
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    try:
        data = json.dumps(result).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except Exception:  # noqa: BLE001 - nothing may reach the app's main thread
        try:
            os.unlink(tmp)
        except OSError:
            pass


def run(lib_dir: str, package: str, status_path: str, action: str) -> Dict[str, Any]:
    """Do ``action`` and write the status file; return what was written."""
    started = time.time()
    result = {
        "schema": STATUS_SCHEMA,
        "action": action,
        "pid": os.getpid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "thread": threading.current_thread().name,
        "ok": False,
        "socket": None,
        "kind": None,
        "error": None,
    }  # type: Dict[str, Any]
    try:
        if action == "install":
            _install(lib_dir, package, result)
        elif action == "uninstall":
            _uninstall(result)
        else:
            result.update(kind="usage", error="unknown action %r" % action)
    except Exception as exc:  # noqa: BLE001 - reported in words through the status file
        result.update(
            ok=False,
            kind="raised",
            error="%s: %s" % (type(exc).__name__, exc),
            traceback=traceback.format_exc(limit=8),
        )
    result["seconds"] = time.time() - started
    write_status(status_path, result)
    return result


_ARGS = globals().get("CPINSPECT_ARGS")
if isinstance(_ARGS, tuple) and len(_ARGS) == 4:
    run(*_ARGS)
