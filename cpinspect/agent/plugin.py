"""Installing and removing the agent: the ``inspector`` config namespace, a bus plugin, hooks.

``install()`` works before or after ``engine.start()``, and twice is harmless. It attaches the
request hooks, starts the private socket server on the agent's own threads, and subscribes a
plugin so that the server follows the process through the engine's life: it is rebound after a
daemonizing fork (new pid, new socket) and closed on ``exit`` (which also precedes the
Autoreloader's re-exec). ``uninstall()`` removes hooks, plugin, server and socket file; it never
touches the agent's own files (the Autoreloader would restart the app).

Bus listeners are added and removed copy-on-write: ``Bus.publish`` iterates the listener set, and
mutating it in place from another thread can fail a publish (cherrypy-internals.md 1.7 C).
"""

import atexit
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import cherrypy
from cherrypy.process import plugins

from .logcapture import LogCapture, access_from, capacity_from
from .paths import default_socket_dir, default_socket_path, ensure_private_dir
from .probes.frames import FrameClassifier
from .probes.info import InfoProbe
from .probes.resolve import MAX_PATH, ResolveProbe
from .probes.routes import RoutesProbe
from .probes.sessions import SessionsProbe
from .probes.threads import ThreadsProbe
from .server import AgentServer, Endpoint
from .tracking import RequestTracker
from .wire import (
    ENDPOINT_INFO,
    ENDPOINT_LOG,
    ENDPOINT_RESOLVE,
    ENDPOINT_ROUTES,
    ENDPOINT_SESSIONS,
    ENDPOINT_THREADS,
    LOG_DEFAULT_LIMIT,
    LOG_LEVELS,
    LOG_MAX_LIMIT,
    LOG_MAX_PATHS,
    LOG_MAX_PATHS_CHARS,
    LOG_ONLY,
    MAX_CURSOR_LENGTH,
)

_lock = threading.Lock()
_agent: Optional["Agent"] = None


class Agent:
    """Everything one installation owns; ``close()`` undoes all of it."""

    def __init__(
        self, socket_path: Optional[str], log_capacity: Any = None, log_access: Any = None
    ) -> None:
        self.requested_path = socket_path
        self.installed_at = time.time()
        self.tracker = RequestTracker()
        self.classifier = FrameClassifier()
        self.threads_probe = ThreadsProbe(self.tracker, self.classifier)
        self.info_probe = InfoProbe(self.installed_at)
        self.routes_probe = RoutesProbe()
        self.resolve_probe = ResolveProbe()
        self.sessions_probe = SessionsProbe(self.tracker)
        self.log_capture = LogCapture(
            self.tracker, capacity_from(log_capacity), access_from(log_access)
        )
        self.server: Optional[AgentServer] = None
        self.plugin = InspectorPlugin(cherrypy.engine, self)
        self._probe_lock = threading.Lock()

    @property
    def socket_path(self) -> Optional[str]:
        return self.server.path if self.server is not None else None

    def endpoints(self) -> Dict[str, Endpoint]:
        return {
            ENDPOINT_INFO: self._info,
            ENDPOINT_THREADS: self._threads,
            ENDPOINT_ROUTES: self._routes,
            ENDPOINT_RESOLVE: self._resolve,
            ENDPOINT_SESSIONS: self._sessions,
            ENDPOINT_LOG: self._log,
        }

    def _info(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        out = self.info_probe.snapshot()
        out["socket"] = self.socket_path
        return 200, out

    def _threads(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        since = (query.get("since") or [""])[0]
        if len(since) > MAX_CURSOR_LENGTH:
            return 400, {
                "error": {
                    "status": 400,
                    "message": "?since= takes a cursor from a previous answer (at most %d "
                    "characters)" % MAX_CURSOR_LENGTH,
                }
            }
        # One snapshot at a time: they share the classifier cache, the connection ages, the
        # stack cache and the cursors.
        with self._probe_lock:
            return 200, self.threads_probe.snapshot(since or None)

    def _routes(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        return 200, self.routes_probe.snapshot()

    def _sessions(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        """Paged in the agent; file/memcached/custom reads on the probe's threads, time-limited."""
        return self.sessions_probe.snapshot(query)

    def _resolve(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        """Explicit only (never polled): dispatching may run user code, see probes/resolve.py."""
        path = (query.get("path") or [""])[0]
        if not path or len(path) > MAX_PATH:
            return 400, {
                "error": {
                    "status": 400,
                    "message": "give ?path=/some/path (at most %d characters)" % MAX_PATH,
                }
            }
        method = ((query.get("method") or ["GET"])[0] or "GET").upper()
        host = (query.get("host") or ["localhost"])[0] or "localhost"
        return 200, self.resolve_probe.resolve(path, method, host)

    def _log(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        """The cursor over the log ring (wire.py); bad parameters: 400 with one line."""
        try:
            after = _int_param(query, "after", 0, 0, None)
            limit = _int_param(query, "limit", LOG_DEFAULT_LIMIT, 1, LOG_MAX_LIMIT)
        except ValueError as exc:
            return 400, {"error": {"status": 400, "message": str(exc)}}
        level = (query.get("level") or [""])[0].strip().upper()
        if level and level not in LOG_LEVELS:
            return 400, {
                "error": {
                    "status": 400,
                    "message": "level must be one of %s, not %r"
                    % ("/".join(LOG_LEVELS), level[:20]),
                }
            }
        min_level = logging.getLevelName(level) if level else 0
        try:
            notable, paths = _log_only(query)
        except ValueError as exc:
            return 400, {"error": {"status": 400, "message": str(exc)}}
        return 200, self.log_capture.read(
            after, limit, int(min_level), encoded=True, notable=notable, paths=paths
        )

    def start_server(self) -> str:
        path = self.requested_path
        if path is None:
            ensure_private_dir(default_socket_dir())
            path = default_socket_path()
        server = AgentServer(path, self.endpoints())
        server.start()
        self.server = server
        return path

    def ensure_server_for_this_process(self) -> None:
        """After a fork (daemonizer), the child has none of our threads: serve again."""
        server = self.server
        if server is not None and server.pid == os.getpid() and server.running:
            return
        if server is not None and server.pid != os.getpid() and self.requested_path is None:
            # The parent's socket is named after the parent's pid; it exits without cleaning up.
            old = server.path
            self.server = None
            try:
                os.unlink(old)
            except OSError:
                pass
        elif server is not None:
            server.stop(timeout=0.5)
            self.server = None
        self.start_server()

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.plugin.unsubscribe_cow()
        self.log_capture.detach()
        self.tracker.detach()
        self.stop_server()


def _log_only(query: Dict[str, List[str]]) -> Tuple[bool, Tuple[str, ...]]:
    """``/v1/log``'s ``only`` and ``paths`` (wire.py): (notable, path prefixes); ValueError with
    one line when bad."""
    only = (query.get("only") or [""])[0].strip().lower()
    if only and only not in LOG_ONLY:
        raise ValueError("only must be %s, not %r" % ("/".join(LOG_ONLY), only[:20]))
    raw = (query.get("paths") or [""])[0]
    if not raw:
        return bool(only), ()
    if not only:
        raise ValueError("paths needs only=notable")
    if len(raw) > LOG_MAX_PATHS_CHARS:
        raise ValueError("paths must be at most %d characters" % LOG_MAX_PATHS_CHARS)
    paths = tuple(p for p in (item.strip() for item in raw.split(",")) if p)
    if len(paths) > LOG_MAX_PATHS:
        raise ValueError("paths takes at most %d prefixes, not %d" % (LOG_MAX_PATHS, len(paths)))
    for path in paths:
        if not path.startswith("/"):
            raise ValueError("each of paths must start with /, not %r" % path[:40])
    return True, paths


def _int_param(
    query: Dict[str, List[str]], name: str, default: int, low: int, high: Optional[int]
) -> int:
    raw = (query.get(name) or [""])[0].strip()
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError("%s must be a whole number, not %r" % (name, raw[:20]))
    value = int(raw)
    if value < low or (high is not None and value > high):
        if high is None:
            raise ValueError("%s must be at least %d" % (name, low))
        raise ValueError("%s must be between %d and %d, not %d" % (name, low, high, value))
    return value


class InspectorPlugin(plugins.SimplePlugin):  # type: ignore[misc]
    """Follows the engine: rebinds after a fork on ``start``, closes the socket on ``exit``."""

    def __init__(self, bus: Any, agent: Agent) -> None:
        super().__init__(bus)
        self.agent = agent
        self._subscribed: List[Tuple[str, Any]] = []

    def start(self) -> None:
        try:
            self.agent.log_capture.refresh()  # apps mounted since install
        except Exception:  # noqa: BLE001 - never fail the engine start
            pass
        try:
            self.agent.ensure_server_for_this_process()
        except Exception as exc:  # noqa: BLE001 - never fail the engine start
            self.bus.log("cpinspect agent could not serve: %s" % exc, level=30)

    # Above the HTTP server (75) and the daemonizer (65): we run in the final process.
    start.priority = 80  # type: ignore[attr-defined]

    def exit(self) -> None:
        try:
            self.agent.stop_server()
        except Exception:  # noqa: BLE001
            pass

    def subscribe_cow(self) -> None:
        """Subscribe ``start`` and ``exit`` without mutating sets a publish may be iterating."""
        bus = self.bus
        _drop_stale_priorities(bus)
        for channel in ("start", "exit"):
            callback = getattr(self, channel)
            bus._priorities[(channel, callback)] = getattr(callback, "priority", 50)
            bus.listeners[channel] = set(bus.listeners.get(channel, set())) | {callback}
            self._subscribed.append((channel, callback))

    def unsubscribe_cow(self) -> None:
        # The priority entries stay: a publish that copied the old listener set may still look
        # them up. The next install drops them (``_drop_stale_priorities``), so at most one
        # uninstalled agent is kept alive by them, not one per inject/detach cycle.
        bus = self.bus
        for channel, callback in self._subscribed:
            bus.listeners[channel] = set(bus.listeners.get(channel, set())) - {callback}
        self._subscribed = []


def _drop_stale_priorities(bus: Any) -> None:
    """Forget the priorities of earlier agents' callbacks no longer subscribed (any copy of the
    agent: injected ones live under other package names)."""
    try:
        for key in list(bus._priorities):
            channel, callback = key
            owner = getattr(callback, "__self__", None)
            if type(owner).__name__ != "InspectorPlugin":
                continue
            if callback not in bus.listeners.get(channel, ()):
                bus._priorities.pop(key, None)
    except Exception:  # noqa: BLE001 - housekeeping only: never fail an install over it
        pass


def install(
    socket_path: Optional[str] = None, log_capacity: Any = None, log_access: Any = None
) -> str:
    """Install the agent in this process and return its socket path.

    ``log_capacity``: records the log ring holds (``inspector.log_capacity``); unset, the
    ``CPINSPECT_LOG_CAPACITY`` environment variable, else ``wire.LOG_DEFAULT_CAPACITY``. Given
    to an agent already installed, it resizes that agent's ring. ``log_access``: capture access
    records too (``inspector.log_access``, else ``CPINSPECT_LOG_ACCESS``; default True): one
    per request, most of the capture's cost per request (BENCHMARKS.md, "Error log").

    Installing twice returns the running agent's path; when its socket file was removed or
    replaced meanwhile (nobody can reach it), the server binds a fresh one first. Raises
    ``SocketPathError`` (from ``paths``) when the socket cannot be created safely; the message
    says why.
    """
    global _agent
    with _lock:
        if _agent is not None:
            if log_capacity is not None:
                _agent.log_capture.ring.resize(capacity_from(log_capacity))
            if _agent.server is not None and _agent.server.pid != os.getpid():
                _agent.ensure_server_for_this_process()
            server = _agent.server
            if server is not None and not server.socket_is_ours():
                _agent.stop_server()  # its file is gone: `cpinspect inject` again must work
            path = _agent.socket_path
            if path is not None:
                return path
            return _agent.start_server()
        agent = Agent(socket_path, log_capacity, log_access)
        agent.tracker.attach()
        agent.sessions_probe.arm()
        try:
            agent.log_capture.attach()
            path = agent.start_server()
        except BaseException:
            agent.log_capture.detach()
            agent.tracker.detach()
            raise
        agent.plugin.subscribe_cow()
        _agent = agent
        return path


def uninstall() -> None:
    """Remove hooks, plugin, server threads and socket file. The target keeps serving."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.close()


def installed() -> Optional[Agent]:
    return _agent


def _at_exit() -> None:
    agent = _agent
    if agent is not None and agent.server is not None:
        agent.server.stop(timeout=0.2)


atexit.register(_at_exit)


class _Namespace:
    """``inspector.*`` config keys: ``inspector.on = True``, ``inspector.socket = PATH``,
    ``inspector.log_capacity = N`` (log records kept; default ``wire.LOG_DEFAULT_CAPACITY``),
    ``inspector.log_access = False`` (capture error records only; read at install).

    A context manager, so CherryPy hands us every key of one ``config.update`` before we act:
    the order of ``on`` and ``socket`` in the user's dict does not matter.
    """

    def __init__(self) -> None:
        self._pending: Dict[str, Any] = {}

    def __enter__(self) -> Any:
        self._pending = {}
        return self._pending.__setitem__

    def __exit__(self, *exc: Any) -> None:
        settings, self._pending = self._pending, {}
        if not settings:
            return
        on = settings.get("on")
        try:
            if on is True or (isinstance(on, str) and on.lower() in ("1", "true", "yes", "on")):
                install(
                    settings.get("socket"), settings.get("log_capacity"), settings.get("log_access")
                )
            elif on is not None and not on:
                uninstall()
            elif on is None and "log_capacity" in settings and _agent is not None:
                _agent.log_capture.ring.resize(capacity_from(settings["log_capacity"]))
        except Exception as exc:  # noqa: BLE001 - a config update must not fail the app
            cherrypy.log("cpinspect agent not installed: %s" % exc, "INSPECTOR", severity=30)


cherrypy.config.namespaces["inspector"] = _Namespace()
