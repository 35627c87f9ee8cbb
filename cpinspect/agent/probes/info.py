"""``GET /v1/info``: who this process is, and how CherryPy is set up in it."""

import logging
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

from .servers import format_bind, pool_of, server_adapters
from .threads import _state_name


def parse_cmdline(raw: bytes) -> List[str]:
    """``/proc/<pid>/cmdline``'s arguments. A process that retitled itself (setproctitle: Salt,
    gunicorn, celery ...) leaves one string with its words separated by spaces: split on
    them, as psutil does, so its name is ``salt-api``, not the tail of the last path in it."""
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    if len(args) == 1 and " " in args[0]:
        return [a for a in args[0].split(" ") if a]
    return args


def process_cmdline() -> List[str]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = parse_cmdline(f.read())
        if args:
            return args
    except OSError:
        pass
    return [sys.executable, *sys.argv]


def process_started_at() -> Optional[float]:
    """Process start time as epoch seconds, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rfind(b")") + 2 :].split()[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return int(line.split()[1]) + ticks / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    return None


def _subscribed(engine: Any, plugin: Any) -> bool:
    """Whether ``plugin`` listens on ``start`` (``engine.autoreload.on`` subscribes it)."""
    return any(getattr(cb, "__self__", None) is plugin for cb in list(engine.listeners["start"]))


class InfoProbe:
    def __init__(self, installed_at: float) -> None:
        self.installed_at = installed_at
        self.cmdline = process_cmdline()
        self.started_at = process_started_at()

    def snapshot(self) -> Dict[str, Any]:
        import cherrypy

        errors: List[str] = []
        try:
            import cheroot

            cheroot_version: Optional[str] = getattr(cheroot, "__version__", None)
        except Exception:  # noqa: BLE001
            cheroot_version = None
        out: Dict[str, Any] = {
            "pid": os.getpid(),
            "cmdline": self.cmdline,
            "python": platform.python_version(),
            "cherrypy": getattr(cherrypy, "__version__", None),
            "cheroot": cheroot_version,
            "started_at": self.started_at,
            "agent_installed_at": self.installed_at,
            "taken_at": time.time(),
            "engine": {"state": "UNKNOWN", "autoreload": None, "environment": None},
            "servers": [],
            "apps": [],
            "logging": {"screen": None, "error_file": None, "access_file": None, "handlers": []},
            "errors": errors,
        }
        try:
            engine = cherrypy.engine
            autoreload = getattr(engine, "autoreload", None)
            out["engine"] = {
                "state": _state_name(engine.state),
                "autoreload": _subscribed(engine, autoreload) if autoreload is not None else None,
                "environment": cherrypy.config.get("environment"),
            }
        except Exception as exc:  # noqa: BLE001
            errors.append("engine: %s" % exc)
        try:
            servers = []
            for adapter in server_adapters():
                pool = pool_of(adapter)
                hs = getattr(adapter, "httpserver", None)
                kind = "cheroot" if pool is not None else ("none" if hs is None else "other")
                servers.append(
                    {
                        "bind": format_bind(adapter),
                        "pool_size": len(list(pool._threads)) if pool is not None else None,
                        "kind": kind,
                        "running": bool(getattr(adapter, "running", False)),
                    }
                )
            out["servers"] = servers
        except Exception as exc:  # noqa: BLE001
            errors.append("servers: %s" % exc)
        try:
            apps = []
            for script_name, app in sorted(cherrypy.tree.apps.items()):
                root = getattr(app, "root", None)
                is_cp = isinstance(app, cherrypy.Application)
                root_name = None
                if is_cp and root is not None:
                    cls = type(root)
                    root_name = "%s.%s" % (cls.__module__, cls.__qualname__)
                elif not is_cp:
                    root_name = getattr(app, "__qualname__", None) or type(app).__qualname__
                apps.append(
                    {
                        "script_name": script_name,
                        "root": root_name,
                        "kind": "cherrypy" if is_cp else "wsgi",
                    }
                )
            out["apps"] = apps
        except Exception as exc:  # noqa: BLE001
            errors.append("apps: %s" % exc)
        try:
            log = cherrypy.log
            handlers = []
            for name in ("cherrypy.error", "cherrypy.access"):
                for h in list(logging.getLogger(name).handlers):
                    if type(h).__name__ in ("NullHandler", "CaptureHandler", "AccessHandler"):
                        continue
                    target = getattr(h, "baseFilename", None) or getattr(
                        getattr(h, "stream", None), "name", ""
                    )
                    handlers.append("%s: %s %s" % (name, type(h).__name__, target or ""))
            out["logging"] = {
                "screen": bool(log.screen),
                "error_file": log.error_file or None,
                "access_file": log.access_file or None,
                "handlers": handlers,
            }
        except Exception as exc:  # noqa: BLE001
            errors.append("logging: %s" % exc)
        return out
