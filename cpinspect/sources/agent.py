"""``AgentSource``: the live agent, over its private Unix socket (HTTP/1.1 + JSON via httpx)."""

from __future__ import annotations

import errno
import json
import ssl
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from cpinspect.agent.wire import (
    ENDPOINT_INFO,
    ENDPOINT_LOG,
    ENDPOINT_RESOLVE,
    ENDPOINT_ROUTES,
    ENDPOINT_SESSIONS,
    ENDPOINT_THREADS,
    LOG_DEFAULT_LIMIT,
    LOG_LEVELS,
    LOG_MAX_LIMIT,
)
from cpinspect.errors import (
    AgentUnavailable,
    CpinspectError,
    EndpointError,
    NoSuchProcess,
    PermissionDenied,
    StaleSocket,
    TargetGone,
)
from cpinspect.model import (
    LogPage,
    LogRecord,
    ProcessInfo,
    Resolution,
    RoutesSnapshot,
    SessionsSnapshot,
    SourceKind,
    ThreadsSnapshot,
)
from cpinspect.protocol import (
    ProtocolError,
    info_from_json,
    log_page_from_json,
    resolution_from_json,
    routes_from_json,
    schema_warning,
    sessions_from_json,
    threads_cursor,
    threads_from_json,
)
from cpinspect.sources import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT  # re-exported
from cpinspect.sources.early_info import Prefetch

# httpx's own command-line client (click, pygments, rich: installed here for the TUI) is never
# used, and importing it was half of httpx's import (~100 -> ~50 ms, measured 2026-12-01): a
# None entry makes httpx take the fallback it has for an install without its CLI extra.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402

if TYPE_CHECKING:  # the analysis is loaded by ``answered`` only
    from cpinspect.analysis import Answered

AnsweredRead = Tuple[Optional["Answered"], int, str]
"""``AgentSource.answered``: how a path was answered (None: the log cannot say), the records
the agent's ring holds, and why the log could not be read ("" when it could, or has none)."""
ANSWERED_PAGES = 4
"""Pages of ``/v1/log`` (``LOG_MAX_LIMIT`` records each) ``answered`` reads at most: the whole
default ring (10,000 records) in notable records and the path's own."""

_NO_TLS: Optional[ssl.SSLContext] = None


def _no_tls() -> ssl.SSLContext:
    """The TLS context httpx wants for a transport: the agent speaks plain HTTP on a Unix
    socket, so this one trusts no certificate at all (any TLS would fail). httpx's default
    loads certifi's CA bundle for every client: 65 ms per connect (measured 2026-12-01)."""
    global _NO_TLS
    if _NO_TLS is None:
        _NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _NO_TLS


NO_ENDPOINT = "no such endpoint"
"""A 404 saying so (or saying nothing) means the agent lacks the endpoint (it may be older);
any other 404 is the endpoint's own answer (an unknown app …) and is said as it is."""
SESSIONS_TIMEOUT = 5.0
"""How long a ``/v1/sessions`` answer may take: the agent gives a store's I/O (a file listing on
a slow mount) its own 2 s limit, for the index and again for the page, and answers with the time
limit named (504) past that — the inspector waits for that answer rather than calling a slow
store a stuck interpreter."""
LOG_PAGE = LOG_DEFAULT_LIMIT
"""Records asked for per ``/v1/log`` read unless told (the agent's default)."""


def _os_error(exc: BaseException) -> Optional[OSError]:
    seen = 0
    cur: Optional[BaseException] = exc
    while cur is not None and seen < 8:
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


class AgentSource:
    """Talks to one agent socket. Raises ``CpinspectError`` subclasses, never httpx errors."""

    kind = SourceKind.AGENT

    def __init__(self, connect_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connect_path = connect_path
        self.label = connect_path
        self.timeout = timeout
        self.warnings: List[str] = []
        self._ever_connected = False
        # /v1/threads deltas: the last answer's cursor and the snapshot read from it. A reconnect
        # makes a new AgentSource, so a new agent (restart) is always asked in full first.
        self._threads_cursor: Optional[str] = None
        self._last_threads: Optional[ThreadsSnapshot] = None
        self._prefetch: Optional[Prefetch] = None
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=connect_path, retries=0, verify=_no_tls()),
            base_url="http://cpinspect",
            timeout=httpx.Timeout(timeout, connect=timeout),
        )

    def _get(
        self, path: str, params: Optional[Dict[str, str]] = None, timeout: Optional[float] = None
    ) -> Any:
        wait = self.timeout if timeout is None else max(timeout, self.timeout)
        try:
            response = self._client.get(
                path, params=params, timeout=httpx.Timeout(wait, connect=self.timeout)
            )
        except httpx.TimeoutException:
            raise AgentUnavailable(
                "agent did not answer within %.1f s — the interpreter may be stuck" % wait
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        self._ever_connected = True
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(
                "agent at %s answered %d with something that is not JSON"
                % (self.connect_path, response.status_code)
            ) from None
        if response.status_code == 403:
            message = (
                payload.get("error", {}).get("message", "") if isinstance(payload, dict) else ""
            )
            raise PermissionDenied("the agent refused us: %s" % message)
        if response.status_code >= 400:
            message = (
                payload.get("error", {}).get("message", "") if isinstance(payload, dict) else ""
            )
            if response.status_code == 404 and message and not message.startswith(NO_ENDPOINT):
                raise EndpointError("agent: %s" % message)
            if response.status_code == 404:
                raise EndpointError(
                    "this agent has no %s (it may be older than the inspector: reload it)" % path
                )
            raise EndpointError("agent error %d on %s: %s" % (response.status_code, path, message))
        if isinstance(payload, dict):
            warning = schema_warning(payload)
            if warning and warning not in self.warnings:
                self.warnings.append(warning)
        return payload

    def _transport_error(self, exc: Exception) -> CpinspectError:
        err = _os_error(exc)
        code = err.errno if err is not None else None
        if code in (errno.ECONNREFUSED, errno.ENOENT, errno.ECONNRESET, errno.EPIPE):
            if self._ever_connected:
                return TargetGone("the target closed the agent's socket (it exited or restarted)")
            if code == errno.ENOENT:
                return NoSuchProcess("no such socket: %s" % self.connect_path)
            return StaleSocket(
                "stale socket %s: nothing listens on it (its process has exited); "
                "remove it, or attach by pid" % self.connect_path
            )
        if code in (errno.EACCES, errno.EPERM):
            return PermissionDenied(
                "not allowed to connect to %s: run as the target's user or root" % self.connect_path
            )
        if self._ever_connected:
            return TargetGone("lost the agent: %s" % exc)
        return AgentUnavailable("cannot talk to the agent at %s: %s" % (self.connect_path, exc))

    def info(self, timeout: Optional[float] = None) -> ProcessInfo:
        """``timeout``: wait longer than the source's own limit (a call nobody waits on)."""
        try:
            return info_from_json(self._get(ENDPOINT_INFO, timeout=timeout))
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/info from the agent: %s" % exc) from None

    def info_answered(self, body: bytes) -> ProcessInfo:
        """``/v1/info`` from a 200 answer to a request sent on this source's socket without it
        (``sources.early_info``), read as ``info`` reads its own."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise EndpointError(
                "agent at %s answered 200 with something that is not JSON" % self.connect_path
            ) from None
        self._ever_connected = True
        if isinstance(payload, dict):
            warning = schema_warning(payload)
            if warning and warning not in self.warnings:
                self.warnings.append(warning)
        try:
            return info_from_json(payload)
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/info from the agent: %s" % exc) from None

    def threads(self, timeout: Optional[float] = None) -> ThreadsSnapshot:
        """The threads now: asks only for what changed since the last answer when it can.
        ``timeout``: wait longer than the source's own limit (a call nobody waits on)."""
        previous = self._last_threads
        since = self._threads_cursor if previous is not None else None
        # Forget the cursor until this answer is read: a failed poll asks in full next time.
        self._threads_cursor = self._last_threads = None
        prefetch, self._prefetch = self._prefetch, None
        payload = self._prefetched(prefetch, timeout) if prefetch and not since else None
        if payload is None:
            payload = self._get(ENDPOINT_THREADS, {"since": since} if since else None, timeout)
        try:
            snapshot = threads_from_json(payload, previous if since else None)
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/threads from the agent: %s" % exc) from None
        self._threads_cursor = threads_cursor(payload)
        self._last_threads = snapshot if self._threads_cursor is not None else None
        return snapshot

    def prefetch_threads(self, prefetch: Prefetch) -> None:
        """The next full ``threads()`` reads ``prefetch``: a ``/v1/threads`` request already
        sent on this source's socket (``sources.early_info``, at a one-shot command's start)."""
        self._prefetch = prefetch

    def prefetch_sent(self) -> Optional[float]:
        """When (``time.monotonic()``) the ``/v1/threads`` request the next ``threads()`` reads
        was sent, if one was (``prefetch_threads``): the agent has had that long already."""
        prefetch = self._prefetch
        return prefetch.sent if prefetch is not None else None

    def _prefetched(self, prefetch: Prefetch, timeout: Optional[float]) -> Optional[Any]:
        """The answer of ``prefetch`` as ``_get`` returns it, waited for as long as ``_get``
        would wait; None when it is anything but a readable 200 (the source then asks again,
        and says what is wrong as always)."""
        wait = self.timeout if timeout is None else max(timeout, self.timeout)
        if not prefetch.wait(wait):
            if not prefetch.done.is_set():
                raise AgentUnavailable(
                    "agent did not answer within %.1f s — the interpreter may be stuck" % wait
                )
            return None
        try:
            payload = json.loads(prefetch.body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict):
            return None
        self._ever_connected = True
        warning = schema_warning(payload)
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        return payload

    def routes(self) -> RoutesSnapshot:
        try:
            return routes_from_json(self._get(ENDPOINT_ROUTES))
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/routes from the agent: %s" % exc) from None

    def resolve(self, path: str, method: str = "GET", host: str = "localhost") -> Resolution:
        """Explicit only: the agent may run user code to answer (never call it on a timer)."""
        params = {"path": path, "method": method, "host": host}
        try:
            return resolution_from_json(self._get(ENDPOINT_RESOLVE, params))
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/resolve from the agent: %s" % exc) from None

    def answered(self, res: Resolution) -> AnsweredRead:
        """How the agent's access records say the method and path of ``res`` were answered,
        beside how many records its ring holds: only the records the path selects as a prefix
        (and the ring's other notable ones) are sent, ``ANSWERED_PAGES`` pages at most.
        ``(None, 0, why)`` when the log cannot say: an agent without log capture (no why), or
        an error."""
        from cpinspect.analysis import answered

        path = res.path.split("?", 1)[0] or "/"
        records: List[LogRecord] = []
        after, capacity, held = 0, 0, 0
        try:
            for _ in range(ANSWERED_PAGES):
                page = self.log(after=after, limit=LOG_MAX_LIMIT, only="notable", paths=[path])
                records.extend(page.records)
                capacity = page.capacity
                held = page.latest - page.first + 1 if page.latest >= page.first > 0 else 0
                if not page.more or page.next is None:
                    break
                after = page.next
        except CpinspectError as exc:
            return None, 0, "the agent's log could not be read (%s)" % exc
        if not capacity:
            return None, 0, ""
        return answered(res.method, path, records), held, ""

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        """One page of sessions per app. ``reveal`` only when the user asked (never polled)."""
        params = {"offset": str(offset), "limit": str(limit), "sort": sort}
        if app is not None:
            params["app"] = app
        if reveal is not None:
            params["reveal"] = reveal
        try:
            payload = self._get(ENDPOINT_SESSIONS, params, timeout=SESSIONS_TIMEOUT)
            return sessions_from_json(payload, revealed=reveal)
        except ProtocolError as exc:
            raise EndpointError("unreadable /v1/sessions from the agent: %s" % exc) from None

    def log(
        self,
        after: int = 0,
        limit: int = LOG_PAGE,
        level: Optional[str] = None,
        only: Optional[str] = None,
        paths: Sequence[str] = (),
    ) -> LogPage:
        """Records of the agent's ring with a sequence number above ``after`` (a cursor: ask
        again with the last one returned). ``level``: a minimum level name. ``only``:
        ``"notable"`` with ``paths`` (wire.py; an older agent ignores both and answers every
        record)."""
        params = {"after": str(max(0, int(after))), "limit": str(int(limit))}
        if only is not None:
            params["only"] = only
            if paths:
                params["paths"] = ",".join(paths)
        if level is not None:
            name = level.upper()
            if name not in LOG_LEVELS:
                raise CpinspectError(
                    "unknown log level %r: one of %s" % (level, ", ".join(LOG_LEVELS))
                )
            params["level"] = name
        try:
            return log_page_from_json(self._get(ENDPOINT_LOG, params))
        except ProtocolError as exc:
            raise EndpointError("unreadable %s from the agent: %s" % (ENDPOINT_LOG, exc)) from None

    def close(self) -> None:
        self._client.close()
