"""The one vocabulary of cpinspect: frozen dataclasses, standard library only.

Every source (the in-process agent, py-spy, a saved snapshot) produces these objects and every
view (TUI panels, ``dump``, snapshot reports) renders them, without knowing where they came from.
Times are seconds; absolute times are Unix epoch seconds (``time.time()``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Dict, FrozenSet, Optional, Tuple, Type, TypeVar, Union

_M = TypeVar("_M")
_FIELD_NAMES: Dict[type, FrozenSet[str]] = {}


def evolve(obj: _M, **changes: Any) -> _M:
    """``dataclasses.replace(obj, **changes)`` for the frozen, ``__post_init__``-free classes
    here, without running their ``__init__``: a copy of the instance's ``__dict__`` with
    ``changes`` over it. A poll at 1,000 threads makes hundreds of these (a carried request's
    elapsed time, py-spy's CPU times), where ``replace`` costs several times as much. Unknown
    names raise ``TypeError`` as ``replace`` does."""
    cls: Type[Any] = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    if not names.issuperset(changes):
        raise TypeError(
            "%s has no field %s" % (cls.__name__, ", ".join(sorted(set(changes) - names)))
        )
    new = object.__new__(cls)
    state = new.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return new  # type: ignore[no-any-return]


class Role(str, enum.Enum):
    """What a thread is for, in CherryPy terms."""

    WORKER = "worker"
    ACCEPTOR = "acceptor"
    """cheroot's ``HTTPServer`` thread: it accepts connections and queues them for the pool."""
    OVERFLOW = "overflow"
    """cheroot's ``_serve_unservicable`` thread (cheroot 8.5+): it answers ``503 Service
    Unavailable`` to the connections the pool's full queue cannot take, then closes them."""
    AGENT = "agent"
    PLUGIN = "plugin"
    MAIN = "main"
    OTHER = "other"


class Phase(str, enum.Enum):
    """Where a worker is in the life of the request it holds."""

    IDLE = "idle"
    READING = "reading"
    """Reading the request line, headers or body: a slow client can hold a worker here."""
    HANDLER = "handler"
    """Dispatching, running tools and the page handler."""
    WRITING = "writing"
    """The handler returned; the response body is being written to the client."""
    UNKNOWN = "unknown"


class SourceKind(str, enum.Enum):
    """Where data came from. A snapshot's threads may come from both live sources at once."""

    AGENT = "agent"
    PYSPY = "py-spy"
    BOTH = "agent+py-spy"
    """The agent's threads joined with py-spy's (GIL holder, native frames)."""
    FILE = "file"


@dataclass(frozen=True)
class Frame:
    """One Python frame. Frames are merged and grouped by ``(filename, lineno)``, not by name."""

    filename: str
    lineno: int
    function: str
    qualname: Optional[str] = None
    """Qualified name where the source knows it (agent on 3.11+, py-spy on 3.11+)."""
    is_app: bool = False
    """True when the frame belongs to the application, not to the stdlib or a library."""
    native: bool = False
    """A C/C++ frame (py-spy ``--native``); ``filename`` is then a library or source file."""

    @property
    def location(self) -> Tuple[str, int]:
        return (self.filename, self.lineno)

    @property
    def display_name(self) -> str:
        return self.qualname or self.function


@dataclass(frozen=True)
class LocalVar:
    """One local variable of a frame, as py-spy ``--locals`` shows it."""

    name: str
    value: str
    """py-spy's repr: simple values decoded, other objects as ``<Type at 0x...>``."""
    is_arg: bool = False
    sensitive: bool = False
    """Hidden unless the user reveals the frame: a secret-looking name, a Cookie or
    Authorization value inside a WSGI environ, or anything long."""


@dataclass(frozen=True)
class FrameLocals:
    frame: Frame
    variables: Tuple[LocalVar, ...]


@dataclass(frozen=True)
class ThreadLocals:
    """The local variables of every frame of one thread, innermost first."""

    ident: int
    name: str
    taken_at: float
    frames: Tuple[FrameLocals, ...]


@dataclass(frozen=True)
class RequestInfo:
    """The request a busy worker holds."""

    method: str
    path: str
    query: str = ""
    """Query string with the values of sensitive parameters already redacted."""
    client: str = ""
    """The real client: the first X-Forwarded-For hop when present, else the remote address."""
    peer: str = ""
    """The socket peer as ``host:port`` (the proxy, when there is one)."""
    started_at: Optional[float] = None
    handler: Optional[str] = None
    """Qualified name of the page handler once dispatched, e.g. ``Reports.export``."""
    stage: Optional[str] = None
    """CherryPy's ``Request.stage`` (``'handler'``, ``'before_request_body'`` ...), if known."""
    app: Optional[str] = None
    """Script name of the mounted application (``''`` for the root app)."""
    source: str = "hook"
    """How the agent found the request: ``hook``, ``frame`` (frame walk) or ``cheroot``."""
    started_before: bool = False
    """``started_at`` is when py-spy first saw the request, in the first reading it took: the
    request was running already and began earlier, by how much nobody knows (an inspector
    attached to an interpreter stuck before it came). Its elapsed time is a lower bound."""

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")


@dataclass(frozen=True)
class LockWait:
    """The lock a thread is blocked on, named from its frame's current instruction (agent)."""

    expr: str
    """The lock expression as the code spells it: ``LEDGER_LOCK``, ``self.lock``."""
    obj: str
    """Opaque token of the lock object, equal for the same object within one agent lifetime."""
    type: str
    """``_thread.lock``, ``_thread.RLock``, ``threading.Condition``."""
    filename: str
    lineno: int
    owner: Optional[int] = None
    """Ident of the thread holding it, when the lock records one (an ``RLock``)."""


@dataclass(frozen=True)
class LockHeld:
    """A ``with`` block on a lock some thread waits for, that this thread's frame is inside."""

    expr: str
    obj: str
    """Same token as the waiters' ``LockWait.obj``."""
    filename: str
    lineno: int
    """Line of the ``with`` statement."""


@dataclass(frozen=True)
class ThreadInfo:
    ident: int
    """``threading.get_ident()``: the key shared with py-spy's ``thread_id``."""
    name: str
    role: Role
    native_id: Optional[int] = None
    busy: bool = False
    phase: Phase = Phase.UNKNOWN
    request: Optional[RequestInfo] = None
    elapsed: Optional[float] = None
    """Seconds since the request (or the connection, while reading it) started."""
    cpu_time: Optional[float] = None
    """User + system CPU seconds of the OS thread."""
    daemon: Optional[bool] = None
    stack: Tuple[Frame, ...] = ()
    """Innermost frame first."""
    stack_truncated: int = 0
    """How many outer frames were left out by the source's depth cap."""
    pool: Optional[str] = None
    """Bind address of the server whose pool this worker belongs to."""
    owns_gil: Optional[bool] = None
    """Known only from py-spy."""
    wait: Optional[LockWait] = None
    """The lock this thread is blocked on (agent only)."""
    holds: Tuple[LockHeld, ...] = ()
    """``with`` blocks it is inside on locks others wait for: it likely holds them (agent)."""

    @property
    def top_app_frame(self) -> Optional[Frame]:
        for frame in self.stack:
            if frame.is_app:
                return frame
        return None

    @property
    def stack_key(self) -> Tuple[Tuple[str, int], ...]:
        return tuple(f.location for f in self.stack)


@dataclass(frozen=True)
class PoolInfo:
    """One cheroot server's worker pool."""

    bind: str
    size: int
    busy: int
    idle: int
    queued: int
    min_threads: int
    max_threads: Optional[int] = None
    """``None`` when unbounded; cheroot never grows the pool past ``min`` on its own."""
    queue_limit: Optional[int] = None
    oldest_busy: Optional[float] = None
    """Age in seconds of the oldest request a worker holds."""
    keepalive: Optional[int] = None
    """Idle keep-alive connections parked in the selector (they hold no worker)."""


@dataclass(frozen=True)
class ListenQueue:
    """The kernel's accept queue of one listening TCP socket of the target, read by the
    inspector from ``/proc/<pid>/net/tcp{,6}`` (no agent needed)."""

    bind: str
    """``host:port`` as the kernel lists it (``0.0.0.0:8080``, ``[::]:8080``)."""
    queued: int
    """Connections the kernel accepted that the server has not ``accept()``-ed yet."""
    backlog: Optional[int] = None
    """The queue's length (``listen()``'s backlog, capped by ``net.core.somaxconn``): past it
    the kernel drops new connections. ``None`` when read from ``/proc/net/tcp`` (a target in
    another network namespace), which does not show it."""
    waiting: Optional[Tuple[str, ...]] = None
    """The peers (``host:port``, sorted) of the connections in the queue, when they were read
    (``None``: not read). A connection is the same one poll after poll only by its peer: a
    count above zero in every poll is also what a busy, healthy server shows, each time
    another one."""


@dataclass(frozen=True)
class ThreadsSnapshot:
    """What ``/v1/threads`` (or py-spy, or a file) says at one instant."""

    taken_at: float
    threads: Tuple[ThreadInfo, ...]
    pools: Tuple[PoolInfo, ...] = ()
    pools_available: bool = True
    pools_note: str = ""
    """Why pool numbers are missing (no cheroot server, server not started ...)."""
    requests_served: Optional[int] = None
    """Requests completed since the agent was installed."""
    errors: Tuple[str, ...] = ()
    """Probes that failed; the rest of the answer is still valid."""

    @property
    def workers(self) -> Tuple[ThreadInfo, ...]:
        return tuple(t for t in self.threads if t.role is Role.WORKER)

    def by_ident(self) -> dict[int, ThreadInfo]:
        return {t.ident: t for t in self.threads}


@dataclass(frozen=True)
class ServerInfo:
    bind: str
    pool_size: Optional[int] = None
    kind: str = "cheroot"
    running: bool = True


@dataclass(frozen=True)
class AppInfo:
    script_name: str
    root: Optional[str]
    """Qualified name of the root controller's class; ``None`` for a grafted WSGI app."""
    kind: str = "cherrypy"


@dataclass(frozen=True)
class LoggingInfo:
    screen: Optional[bool] = None
    error_file: Optional[str] = None
    access_file: Optional[str] = None
    handlers: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessInfo:
    """What ``/v1/info`` says: who the target is."""

    pid: int
    cmdline: Tuple[str, ...]
    python: str
    cherrypy: Optional[str]
    cheroot: Optional[str]
    agent_version: str
    schema: int
    engine_state: str
    started_at: Optional[float] = None
    servers: Tuple[ServerInfo, ...] = ()
    apps: Tuple[AppInfo, ...] = ()
    logging: LoggingInfo = field(default_factory=LoggingInfo)
    autoreload: Optional[bool] = None
    environment: Optional[str] = None
    agent_installed_at: Optional[float] = None

    @property
    def ports(self) -> Tuple[int, ...]:
        out = []
        for server in self.servers:
            host, _, port = server.bind.rpartition(":")
            if host and port.isdigit():
                out.append(int(port))
        return tuple(out)


@dataclass(frozen=True)
class ProcessSummary:
    """One line of ``cpinspect ps`` and of the picker: a (maybe) CherryPy process on the box."""

    pid: int
    user: str
    cmdline: Tuple[str, ...] = ()
    ports: Tuple[int, ...] = ()
    """Listening TCP ports (unknown ones are simply absent)."""
    uptime: Optional[float] = None
    """Seconds since the process started, when the listing was taken."""
    cpu_percent: Optional[float] = None
    """Share of one CPU over the listing's measuring interval (may exceed 100)."""
    rss: Optional[int] = None
    """Resident memory in bytes."""
    agent: bool = False
    """A cpinspect agent socket is open in the process."""
    apps: Tuple[str, ...] = ()
    """Script names of the mounted applications (``''`` is the root app); agent only."""
    busy: Optional[int] = None
    size: Optional[int] = None
    """Busy workers and pool size over every server; agent only."""
    cherrypy: bool = True
    """False when we could not look inside: a Python process that may be CherryPy."""
    reason: Optional[str] = None
    """Why the user may not inspect it (another user, ptrace refused); None when they may."""
    note: str = ""
    """Something worth knowing that does not prevent inspecting (agent not answering ...)."""

    @property
    def inspectable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class RouteNode:
    """One object or callable on an app's tree, as ``/v1/routes`` reads it (statically)."""

    path: str
    name: str
    kind: str
    """``object``, ``handler``, ``index``, ``default``, ``unexposed``, ``internal``, ``property``,
    ``static``. ``internal``: an unexposed method reached on purpose through an exposed
    dispatching method or ``default`` (``reached_via``); ``unexposed``: no dispatcher reaches it
    (a request for it ends 404: the ``forgotten-expose`` finding says so when one does)."""
    exposed: bool = False
    qualname: str = ""
    filename: Optional[str] = None
    lineno: Optional[int] = None
    signature: Optional[str] = None
    alias_of: Optional[str] = None
    methods: Tuple[str, ...] = ()
    """Upper-case HTTP verbs (MethodDispatcher resources)."""
    popargs: Optional[Tuple[str, ...]] = None
    dynamic: bool = False
    """Has a ``_cp_dispatch``: what lies below is decided at request time."""
    tools: Tuple[str, ...] = ()
    """Tools its own ``_cp_config`` switches on."""
    config: Tuple[Tuple[str, str], ...] = ()
    """Its own ``_cp_config`` (key, repr of the value; sensitive values redacted)."""
    warnings: Tuple[str, ...] = ()
    reached_via: Optional[str] = None
    """For an ``internal`` method: the qualname of the exposed method that dispatches to it."""
    reached_at: Optional[str] = None
    """For an ``internal`` method: the path under the app a request for it takes through the
    dispatcher (``/api/adduser`` for ``api_adduser``; its own ``path`` answers 404), when the
    dispatcher's table or name prefix says it; ``None`` when unknown (or an older agent)."""
    app_code: Optional[bool] = None
    """Defined in the app's own code (the agent's app-frame rule applied to ``filename``), not
    in a library, the standard library or a frozen module; ``None`` from an older agent."""


@dataclass(frozen=True)
class ConfigSection:
    """One path's section of an app's config (``app.config``), as the agent read it."""

    path: str
    settings: Tuple[Tuple[str, str], ...] = ()
    """(key, repr of the value; sensitive values redacted), sorted by key."""
    dispatcher: Optional[str] = None
    """The dispatcher this section sets with ``request.dispatch``, if any."""


@dataclass(frozen=True)
class RouteEntry:
    """One RoutesDispatcher mapper route."""

    path: str
    name: Optional[str] = None
    controller: Optional[str] = None
    action: Optional[str] = None
    qualname: Optional[str] = None
    filename: Optional[str] = None
    lineno: Optional[int] = None


@dataclass(frozen=True)
class StaticMount:
    path: str
    kind: str
    """``staticdir`` or ``staticfile``."""
    source: str = "app.config"
    configured: Optional[str] = None
    root: Optional[str] = None
    resolved: Optional[str] = None
    index: Optional[str] = None
    content_types: Tuple[Tuple[str, str], ...] = ()
    exists: Optional[bool] = None
    readable: Optional[bool] = None
    file_count: Optional[int] = None
    """Entries at the directory's top level that are not directories (every entry when
    ``dir_count`` is ``None``: an older agent counted them all)."""
    dir_count: Optional[int] = None
    """Subdirectories at the directory's top level."""
    file_count_capped: bool = False
    """The count stopped at the agent's cap (files and directories together)."""
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class AppRoutes:
    script_name: str
    kind: str = "cherrypy"
    root: Optional[str] = None
    dispatcher: str = "default"
    nodes: Tuple[RouteNode, ...] = ()
    routes: Tuple[RouteEntry, ...] = ()
    static: Tuple[StaticMount, ...] = ()
    config: Tuple[ConfigSection, ...] = ()
    """``app.config`` by path, sorted by path."""
    truncated: bool = False
    errors: Tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutesSnapshot:
    taken_at: float
    apps: Tuple[AppRoutes, ...]
    global_tools: Tuple[str, ...] = ()
    """Tools the global config (``cherrypy.config``) switches on for every app."""
    cap: int = 0
    truncated: bool = False
    errors: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolution:
    """What CherryPy would do with one request (``/v1/resolve``), and the steps behind it."""

    path: str
    method: str
    host: str
    kind: str
    """``handler``, ``static``, ``redirect``, ``not_found``, ``error``, ``wsgi``, ``busy``,
    ``abandoned``."""
    status: Optional[int] = None
    reason: str = ""
    steps: Tuple[str, ...] = ()
    app: Optional[str] = None
    dispatcher: Optional[str] = None
    handler: Optional[str] = None
    filename: Optional[str] = None
    lineno: Optional[int] = None
    args: Tuple[str, ...] = ()
    kwargs: Tuple[Tuple[str, str], ...] = ()
    location: Optional[str] = None
    static_file: Optional[str] = None
    mime: Optional[str] = None
    tools: Tuple[str, ...] = ()
    """Tools switched on for this request by the merged config (sessions, auth_basic …)."""
    abandoned: bool = False
    decided_by: Optional[str] = None
    """Who decides the status when the resolver cannot: ``handler`` or ``tool:<name>`` (a tool
    that runs before the answer and may answer itself); ``None`` when ``status`` is known."""
    verdict: str = ""
    """The verdict as a sentence: ``Root.account handles it; the handler decides the status``."""
    guards: Tuple[str, ...] = ()
    """Tools in effect that run before the answer and may answer themselves (auth-like)."""


@dataclass(frozen=True)
class SessionSettings:
    """The ``tools.sessions.*`` settings in force for one application."""

    timeout: Optional[float] = None
    """Minutes a session lives without being used."""
    clean_freq: Optional[float] = None
    """Minutes between two runs of the clean-up thread."""
    clean_thread: str = "not started"
    """``running``, ``stopped`` or ``not started``."""
    storage_path: Optional[str] = None
    path_exists: Optional[bool] = None
    path_writable: Optional[bool] = None
    locking: str = "implicit"
    """``implicit`` (the default: locked before the handler), ``early`` or ``explicit``."""
    name: str = "session_id"
    """The cookie's name."""
    secure: bool = False
    httponly: bool = False
    persistent: bool = True
    domain: Optional[str] = None
    servers: Optional[Tuple[str, ...]] = None
    """memcached servers."""


@dataclass(frozen=True)
class SessionSizes:
    """Bytes per session over the whole store (not only the page shown)."""

    min: int
    p50: int
    p90: int
    max: int
    total: int


@dataclass(frozen=True)
class SessionSize:
    fp: str
    size: int


@dataclass(frozen=True)
class SessionsSummary:
    """What the whole store holds, above the table."""

    expiring_soon: int = 0
    """Sessions expiring within five minutes."""
    locked: int = 0
    waiters: int = 0
    sizes: Optional[SessionSizes] = None
    largest: Tuple[SessionSize, ...] = ()
    """Up to three, largest first."""
    as_of: Optional[float] = None
    """When the agent built the index these numbers come from."""
    stale_locks: Optional[int] = None
    """File sessions: ``.lock`` files whose writer's pid is gone (``None``: not a file store,
    or not counted)."""
    orphan_locks: Optional[int] = None
    """File sessions: ``.lock`` files with no session file beside them."""


@dataclass(frozen=True)
class SessionPage:
    offset: int = 0
    limit: int = 50
    sort: str = "expiry"
    total: int = 0


@dataclass(frozen=True)
class SessionKey:
    """One key of a session: its value's type and size; the value only when revealed."""

    key: str
    type: str = ""
    size: Optional[int] = None
    value: Optional[str] = None
    """A bounded repr, present only for the one session revealed."""


@dataclass(frozen=True)
class LockHolder:
    """The thread holding a session's lock, with the request it serves."""

    ident: int
    name: Optional[str] = None
    request: Optional[RequestInfo] = None
    held_for: Optional[float] = None
    held_for_basis: str = ""
    """How ``held_for`` was measured (``since the request started`` …)."""


@dataclass(frozen=True)
class LockWaiter:
    """A thread queued on a session's lock."""

    ident: int
    name: Optional[str] = None
    request: Optional[RequestInfo] = None
    waiting_for: Optional[float] = None
    clean_up: bool = False
    """The store's clean-up thread, not a request (CherryPy's FileSession clean-up takes every
    session's lock in turn, so one held lock stops it)."""


@dataclass(frozen=True)
class LockFile:
    """A file session's ``.lock`` file."""

    age: Optional[float] = None
    pid: Optional[int] = None
    stale: bool = False
    """The pid written in it is gone (and the lock is not held): a leftover to delete."""


@dataclass(frozen=True)
class SessionLock:
    state: str = "unknown"
    """``free``, ``held`` or ``unknown``."""
    holder: Optional[LockHolder] = None
    file: Optional[LockFile] = None
    waiters: Tuple[LockWaiter, ...] = ()


@dataclass(frozen=True)
class SessionInfo:
    """One stored session. ``fp`` is a keyed hash of its id: the id itself is never sent."""

    fp: str
    expires_at: Optional[float] = None
    time_left: Optional[float] = None
    """Seconds (negative: already expired), as of the answer's ``taken_at``."""
    size: Optional[int] = None
    keys: Tuple[SessionKey, ...] = ()
    revealed: bool = False
    """Its keys carry their values (the user asked for this one session)."""
    lock: SessionLock = field(default_factory=SessionLock)


@dataclass(frozen=True)
class AppSessions:
    """One application's session store and one page of its sessions (``/v1/sessions``)."""

    app: str
    """Script name of the application (``''`` for the root app)."""
    backend: str
    """``ram``, ``file``, ``memcached`` or ``custom``."""
    storage_class: str = ""
    where: Tuple[str, ...] = ()
    """The config sections that switch sessions on."""
    settings: SessionSettings = field(default_factory=SessionSettings)
    listable: bool = True
    not_listable: Optional[str] = None
    """Why the store cannot be listed (when ``listable`` is false)."""
    partial: bool = False
    partial_reason: Optional[str] = None
    count: Optional[int] = None
    """Sessions in the store; ``None`` when the backend cannot be listed."""
    expired: Optional[int] = None
    """Stored entries already past their expiry (the clean-up has not removed them)."""
    summary: SessionsSummary = field(default_factory=SessionsSummary)
    page: SessionPage = field(default_factory=SessionPage)
    sessions: Tuple[SessionInfo, ...] = ()
    locks: Tuple[SessionInfo, ...] = ()
    """Every session locked or waited on now, whatever the page (fingerprint and lock only)."""
    error: Optional[str] = None
    """Why this app could not be read (the time limit on a hung storage path …)."""


@dataclass(frozen=True)
class RequestDurations:
    """Seconds the last (up to 1,000) completed requests took: what "normal" is."""

    count: int
    p50: float
    p95: float
    max: float


@dataclass(frozen=True)
class ServingPeer:
    """Another process serving the same thing as the target (found by the inspector)."""

    pid: int
    why: str
    """``listens on port 8080 too``, ``runs the same command line``."""


@dataclass(frozen=True)
class SessionsSnapshot:
    taken_at: float
    apps: Tuple[AppSessions, ...] = ()
    errors: Tuple[str, ...] = ()
    key_id: str = ""
    """Names the agent's fingerprint key: fingerprints under two key ids are not comparable."""
    request_durations: Optional[RequestDurations] = None
    peers: Tuple[ServingPeer, ...] = ()
    """Other processes serving the same port or command line (RAM sessions are not shared)."""
    revealed: Optional[str] = None
    """The fingerprint whose values this answer carries, if any."""

    def app(self, name: str) -> Optional[AppSessions]:
        for app in self.apps:
            if app.app == name:
                return app
        return None


class LogOrigin(str, enum.Enum):
    """Where a log record was read."""

    BUFFER = "buffer"
    """The agent's ring buffer (``/v1/log``): the record before it was formatted."""
    ERROR_FILE = "error_file"
    """A line (and its traceback lines) of ``log.error_file``, tailed by the inspector."""
    ACCESS_FILE = "access_file"
    """A line of ``log.access_file``, tailed by the inspector."""
    INSPECTOR = "inspector"
    """Said by the inspector itself, not the target (an automatic capture taken)."""


@dataclass(frozen=True)
class LogRecord:
    """One record of ``cherrypy.error`` / ``cherrypy.access`` (or of their files)."""

    seq: int
    """The agent's sequence number; 0 for a record read from a file."""
    time: float
    level: str
    logger: str
    message: str
    """The first line (or the whole text when there is no traceback), cut to the agent's
    ``max_message``."""
    traceback: Optional[str] = None
    """The formatted traceback, one record with its message (never split into lines)."""
    thread_ident: Optional[int] = None
    thread_name: Optional[str] = None
    request: Optional[RequestInfo] = None
    """The request it was logged during: the same identity the Threads panel shows."""
    app: Optional[str] = None
    status: Optional[int] = None
    """Access records: the response status."""
    size: Optional[int] = None
    """Access records: bytes sent."""
    duration: Optional[float] = None
    """Access records: seconds the request took."""
    content_type: Optional[str] = None
    """Access records from the agent: the response's ``Content-Type`` as sent."""
    levelno: int = 20
    cut: int = 0
    """Characters the agent cut from the message or traceback (its ``max_message``)."""
    origin: LogOrigin = LogOrigin.BUFFER
    access: bool = False
    """An access record (a request's line), not an error-log record."""

    @property
    def is_error(self) -> bool:
        """ERROR or worse, or an access record of a 5xx answer."""
        return self.levelno >= 40 or (self.status is not None and self.status >= 500)


@dataclass(frozen=True)
class LogGap:
    """Records that could not be had between two others: the agent's ring wrapped past them
    before they were read (or a file grew faster than it was followed)."""

    count: int
    time: float
    why: str = "buffer wrapped"


LogEntry = Union[LogRecord, LogGap]
"""What a log view lists: records, and gaps where records were lost."""


@dataclass(frozen=True)
class LogRouting:
    """Where CherryPy writes its error and access records (``/v1/log``'s ``routing``)."""

    screen: Optional[bool] = None
    error_file: Optional[str] = None
    access_file: Optional[str] = None
    other_handlers: Tuple[str, ...] = ()
    goes_nowhere: bool = False
    """Errors are written nowhere (no screen, no file, no other handler): only the agent's
    buffer has them."""
    fix: Optional[str] = None
    """The configuration line that fixes it, when ``goes_nowhere``."""


@dataclass(frozen=True)
class LogPage:
    """One ``/v1/log?after=`` answer: a slice of the agent's ring buffer."""

    taken_at: float
    buffer: str
    """Id of the ring; a new one means the agent restarted and sequence numbers start over."""
    capacity: int
    max_message: int
    first: int
    latest: int
    missed: int
    """Records after the cursor that wrapped out of the ring before this read."""
    more: bool
    records: Tuple[LogRecord, ...] = ()
    routing: Optional[LogRouting] = None
    dropped: int = 0
    """Records lost inside the agent (formatting failed); normally 0."""
    next: Optional[int] = None
    """The ``after`` to send next (an older agent may not say: then the last seq returned)."""
    errors: Tuple[str, ...] = ()


@dataclass(frozen=True)
class LogFileStatus:
    """How the inspector follows one log file of the target."""

    kind: str
    """``error`` or ``access``."""
    path: str
    """The path as the target names it."""
    found_by: str = "agent"
    """``agent`` (``/v1/info``'s logging block) or ``fd`` (an open file of the process)."""
    following: bool = False
    note: str = ""
    """Why it is not followed, or what happened last (``rotated (renamed)``, ``truncated``)."""
    rotations: int = 0
    offset: int = 0
    """Bytes read so far of the current file."""


@dataclass(frozen=True)
class LogState:
    """What the log records on screen rest on, beside the records themselves."""

    buffer: str = ""
    latest: int = 0
    """The newest sequence number read from the agent's buffer."""
    missed: int = 0
    """Records lost to the buffer wrapping since the inspector started reading it."""
    capacity: int = 0
    routing: Optional[LogRouting] = None
    files: Tuple[LogFileStatus, ...] = ()
    total: int = 0
    """Records received (in a snapshot: before the cut to the last ones)."""


class FindingSeverity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Evidence:
    """One thing a finding rests on, navigable: the UI jumps to it, reports print its label."""

    kind: str
    """``thread`` | ``route`` | ``session`` | ``log`` | ``static`` | ``config`` | ``process``."""
    ref: str
    """What to jump to. thread: ``str(ident)``; route: ``"<app>|<path>"`` (app ``''`` = root);
    session: ``"<app>|<fp>"`` (fp ``''``: the app's store); log: ``"<seq>"`` for a buffer record,
    ``"@<time>"`` (repr of the float) for a file record; static: ``"<app>|<mount path>"``;
    config: the config key; process: ``str(pid)``."""
    label: str
    """One line shown in the findings list: ``CP Server Thread-7  GET /reports/export  48.2 s
    db.py:80 fetch_all``."""


@dataclass(frozen=True)
class Finding:
    """A diagnosis named from the data (filled by the findings engine, ``cpinspect.findings``)."""

    id: str
    """Stable across polls and snapshots: ``<kind>:<scope>``, e.g.
    ``pool-starvation:127.0.0.1:8080``."""
    severity: FindingSeverity
    title: str
    """One line with numbers: ``5 of 6 workers are in GET /reports/export …``."""
    evidence: Tuple[Evidence, ...] = ()
    """What it rests on (threads, routes, sessions, log records …), each navigable. Files
    written before ``Evidence`` carry strings (``thread:7``): the reader turns them into
    ``Evidence(kind, ref, label=the string)``."""
    fix: str = ""
    kind: str = ""
    """The id's prefix: ``pool-starvation``, ``lock-contention`` …"""
    details: Tuple[str, ...] = ()
    """Optional extra lines (numbers, the breakdown) for the findings list and reports."""


@dataclass(frozen=True)
class SourceLine:
    """One line of source as it read when a snapshot was captured (code changes on deploy)."""

    filename: str
    lineno: int
    text: Optional[str]
    """``None`` when the file could not be read then."""


SNAPSHOT_LOG_RECORDS = 1000
"""Log records kept in a snapshot: the most recent ones."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the inspector knows about a process at one instant.

    The live store builds one on demand; capture writes it to a file; ``cpinspect open`` reads it
    back into a file session that every panel renders exactly like live data.
    """

    taken_at: float
    source: SourceKind
    """Where the threads came from: ``agent``, ``py-spy`` or both joined."""
    info: Optional[ProcessInfo] = None
    threads: Optional[ThreadsSnapshot] = None
    """Every thread (with the pools); the GIL holder is marked on its thread."""
    routes: Optional[RoutesSnapshot] = None
    sessions: Optional[SessionsSnapshot] = None
    log: Tuple[LogRecord, ...] = ()
    """The most recent log records (the last ``SNAPSHOT_LOG_RECORDS``), oldest first."""
    log_state: Optional[LogState] = None
    """Cursor, missed counts, where errors are written, files followed."""
    findings: Tuple[Finding, ...] = ()
    locals: Tuple[ThreadLocals, ...] = ()
    """Local variables read by py-spy, when asked for; hidden values already replaced unless
    the capture was revealed."""
    source_lines: Tuple[SourceLine, ...] = ()
    """The line of every frame, read at capture time."""
    notes: Tuple[str, ...] = ()
    """What was true of the link when it was taken (agent not answering, py-spy unavailable)."""
    stale: Tuple[str, ...] = ()
    """Parts older than ``taken_at`` (``info``, ``pools``, ``routes``)."""
    gil_holder: Optional[int] = None
    revealed: bool = False
    """Captured with ``--reveal``: hidden values are in the file."""
    cpinspect: str = ""
    """Version of the cpinspect that captured it."""
    agent_unresponsive: bool = False
    """The target has an agent that did not answer this poll (the threads are py-spy's): the
    interpreter may be stuck. Older files and builders leave it False; ``notes`` say it too."""
    listen_queues: Tuple[ListenQueue, ...] = ()
    """The accept queues of the target's listening sockets, when the inspector could read them."""

    @property
    def pid(self) -> Optional[int]:
        return self.info.pid if self.info is not None else None

    def line(self, filename: str, lineno: int) -> Optional[str]:
        """The captured source line (a ``SourceLine`` callable for the formatters)."""
        for entry in self.source_lines:
            if entry.lineno == lineno and entry.filename == filename:
                return entry.text
        return None
