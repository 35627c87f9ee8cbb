"""The HTTP servers subscribed to the engine, and their cheroot worker pools."""

import math
import weakref
from typing import Any, Iterator, List, Optional


def server_adapters() -> List[Any]:
    """Every ``ServerAdapter`` subscribed to the bus (``cherrypy.server`` and any others)."""
    import cherrypy
    from cherrypy.process import servers

    found: List[Any] = []
    for callback in list(cherrypy.engine.listeners.get("start", ())):
        adapter = getattr(callback, "__self__", None)
        if isinstance(adapter, servers.ServerAdapter) and adapter not in found:
            found.append(adapter)
    return found


def running_servers() -> Iterator[Any]:
    """Adapters whose cheroot server exists (it is created lazily on first start)."""
    for adapter in server_adapters():
        if getattr(adapter, "httpserver", None) is not None:
            yield adapter


_bind_cache: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def format_bind(adapter: Any) -> str:
    """``host:port`` the server is bound to, cached per listening socket.

    ``ServerAdapter.bound_addr`` calls getsockname(), which releases the GIL: under CPU load
    every release costs the agent a wait in line for it again (see AgentServer in server.py).
    """
    sock = getattr(getattr(adapter, "httpserver", None), "socket", None)
    if sock is not None:
        try:
            cached = _bind_cache.get(sock)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
    text = _format_bind(adapter)
    if sock is not None:
        try:
            _bind_cache[sock] = text
        except TypeError:
            pass
    return text


def _format_bind(adapter: Any) -> str:
    addr = None
    try:
        addr = adapter.bound_addr
    except Exception:  # noqa: BLE001 - bound_addr resolves sockets; tolerate any failure
        addr = getattr(adapter, "bind_addr", None)
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        if ":" in str(host):
            return "[%s]:%s" % (host, port)
        return "%s:%s" % (host, port)
    return str(addr)


def pool_of(adapter: Any) -> Optional[Any]:
    """The cheroot ThreadPool, or None when the server is not cheroot (or not built yet)."""
    hs = getattr(adapter, "httpserver", None)
    pool = getattr(hs, "requests", None)
    if pool is None or not hasattr(pool, "_threads"):
        return None
    return pool


def finite(value: Any) -> Optional[int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
            return None
        return int(value)
    return None
