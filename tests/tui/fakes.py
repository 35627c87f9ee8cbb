"""Hand-built model objects and a scripted poller: exact states for the TUI tests."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from cpinspect.model import (
    AppRoutes,
    AppSessions,
    ConfigSection,
    Frame,
    FrameLocals,
    LocalVar,
    LockHolder,
    LockWaiter,
    LogEntry,
    LogRecord,
    LogRouting,
    LogState,
    Phase,
    PoolInfo,
    ProcessInfo,
    RequestDurations,
    RequestInfo,
    Resolution,
    Role,
    RouteNode,
    RoutesSnapshot,
    ServerInfo,
    SessionInfo,
    SessionKey,
    SessionLock,
    SessionPage,
    SessionSettings,
    SessionSize,
    SessionSizes,
    SessionsSnapshot,
    SessionsSummary,
    SourceKind,
    StaticMount,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
)
from cpinspect.sources.base import Capability, LinkState, Update

T0 = 1_750_000_000.0
"""A fixed instant (2025-06-15 15:06:40 UTC): every test time is relative to it."""
NOW = T0 + 0.4
"""What the fixed clock says: the data is 0.4 s old."""

APP = "/srv/shop/shop"
LIB = "/usr/lib/python3/dist-packages"

SOURCE: Dict[Tuple[str, int], str] = {
    (f"{APP}/db.py", 41): "        return cur.fetchall()",
    (f"{APP}/reports.py", 88): "        rows = db.fetch_all(sql)",
    (f"{APP}/cart.py", 30): "        with CART_LOCK:",
}


def app_frame(name: str, line: int, function: str, qualname: Optional[str] = None) -> Frame:
    return Frame(f"{APP}/{name}", line, function, qualname=qualname, is_app=True)


def lib_frame(path: str, line: int, function: str) -> Frame:
    return Frame(f"{LIB}/{path}", line, function, is_app=False)


CHERRYPY_OUTER = (
    lib_frame("cherrypy/_cpdispatch.py", 54, "__call__"),
    lib_frame("cherrypy/_cprequest.py", 659, "respond"),
    lib_frame("cherrypy/_cprequest.py", 635, "run"),
    lib_frame("cheroot/server.py", 1290, "communicate"),
    lib_frame("cheroot/workers/threadpool.py", 125, "run"),
    Frame("/usr/lib/python3.11/threading.py", 1038, "_bootstrap_inner"),
)
EXPORT_STACK = (
    lib_frame("psycopg2/extras.py", 146, "execute"),
    app_frame("db.py", 41, "fetch_all", "Database.fetch_all"),
    app_frame("reports.py", 88, "export", "Reports.export"),
    *CHERRYPY_OUTER,
)
CART_STACK = (app_frame("cart.py", 30, "add", "Cart.add"), *CHERRYPY_OUTER)
UPLOAD_STACK = (
    Frame("/usr/lib/python3.11/socket.py", 706, "readinto"),
    lib_frame("cheroot/makefile.py", 320, "read"),
    lib_frame("cheroot/server.py", 1204, "read_request_body"),
    *CHERRYPY_OUTER[3:],
)
IDLE_STACK = (
    Frame("/usr/lib/python3.11/threading.py", 320, "wait"),
    Frame("/usr/lib/python3.11/queue.py", 171, "get"),
    lib_frame("cheroot/workers/threadpool.py", 113, "run"),
    CHERRYPY_OUTER[-1],
)


def worker(
    n: int,
    elapsed: Optional[float],
    target: str = "",
    *,
    method: str = "GET",
    stack: Sequence[Frame] = IDLE_STACK,
    phase: Phase = Phase.HANDLER,
    handler: Optional[str] = None,
    client: str = "",
    taken_at: float = T0,
) -> ThreadInfo:
    """Worker ``CP Server Thread-<n>``: busy when given a ``target``, idle otherwise."""
    request = None
    if target:
        path, _, query = target.partition("?")
        request = RequestInfo(
            method=method,
            path=path,
            query=query,
            client=client or f"10.0.0.{n}",
            peer=f"127.0.0.1:{51000 + n}",
            started_at=taken_at - (elapsed or 0.0),
            handler=handler,
            stage="handler" if handler else None,
        )
    busy = request is not None
    return ThreadInfo(
        ident=140_000_000_000_000 + n,
        name=f"CP Server Thread-{n}",
        role=Role.WORKER,
        native_id=4200 + n,
        busy=busy,
        phase=phase if busy else Phase.IDLE,
        request=request,
        elapsed=elapsed if busy else None,
        cpu_time=0.1 * n,
        stack=tuple(stack),
        pool="127.0.0.1:8080",
    )


def other_threads() -> Tuple[ThreadInfo, ...]:
    return (
        ThreadInfo(
            ident=139_000_000_000_001,
            name="MainThread",
            role=Role.MAIN,
            native_id=4121,
            stack=(Frame("/usr/lib/python3.11/threading.py", 331, "wait"),),
        ),
        ThreadInfo(
            ident=139_000_000_000_002,
            name="HTTPServer Thread-2",
            role=Role.ACCEPTOR,
            native_id=4122,
            stack=(lib_frame("cheroot/connections.py", 273, "_run"),),
        ),
        ThreadInfo(
            ident=139_000_000_000_003,
            name="cpinspect-server",
            role=Role.AGENT,
            native_id=4123,
            stack=(Frame("/usr/lib/python3.11/selectors.py", 415, "select"),),
        ),
    )


EXPORT_ELAPSED = (48.2, 47.9, 40.1, 33.0, 25.5, 20.2, 12.0, 5.5)


def incident_threads(taken_at: float = T0, shift: float = 0.0) -> Tuple[ThreadInfo, ...]:
    """Ten busy workers: eight in the same export stack, one on a lock, one reading a body."""
    workers = [
        worker(
            n + 1,
            elapsed + shift,
            f"/reports/export?year={2025 - n % 2}&token=***",
            # The same place under two names (py-spy without qualnames): one group regardless.
            stack=EXPORT_STACK
            if n % 3
            else (replace(EXPORT_STACK[0], function="execute_q"), *EXPORT_STACK[1:]),
            handler="Reports.export",
            taken_at=taken_at,
        )
        for n, elapsed in enumerate(EXPORT_ELAPSED)
    ]
    workers.append(
        worker(
            9,
            31.0 + shift,
            "/cart/add",
            method="POST",
            stack=CART_STACK,
            handler="Cart.add",
            taken_at=taken_at,
        )
    )
    workers.append(
        worker(
            10,
            30.6 + shift,
            "/upload",
            method="POST",
            stack=UPLOAD_STACK,
            phase=Phase.READING,
            taken_at=taken_at,
        )
    )
    return (*workers, *other_threads())


def pool(
    busy: int = 10, queued: int = 17, oldest: Optional[float] = 48.2, size: int = 10
) -> PoolInfo:
    return PoolInfo(
        bind="127.0.0.1:8080",
        size=size,
        busy=busy,
        idle=size - busy,
        queued=queued,
        min_threads=size,
        oldest_busy=oldest,
        keepalive=3,
    )


def snapshot(
    threads: Sequence[ThreadInfo],
    *,
    taken_at: float = T0,
    pools: Sequence[PoolInfo] = (),
    served: Optional[int] = 1200,
    **extra: object,
) -> ThreadsSnapshot:
    return ThreadsSnapshot(
        taken_at=taken_at,
        threads=tuple(threads),
        pools=tuple(pools),
        requests_served=served,
        **extra,  # type: ignore[arg-type]
    )


INFO = ProcessInfo(
    pid=4121,
    cmdline=("/usr/bin/python3", "-u", "shop.py", "--port", "8080"),
    python="3.11.7",
    cherrypy="18.10.0",
    cheroot="10.0.1",
    agent_version="0.1.0",
    schema=1,
    engine_state="STARTED",
    servers=(ServerInfo("127.0.0.1:8080", 10),),
)


def update(
    threads: Optional[ThreadsSnapshot],
    *,
    state: LinkState = LinkState.LIVE,
    message: str = "",
    warnings: Tuple[str, ...] = (),
    info: Optional[ProcessInfo] = INFO,
    **extra: object,
) -> Update:
    fetched_at = threads.taken_at if threads is not None else T0
    return Update(
        fetched_at=fetched_at,
        state=state,
        source_kind=SourceKind.AGENT,
        source_label="/run/user/1000/cpinspect/4121.sock",
        info=info,
        threads=threads,
        message=message,
        warnings=warnings,
        **extra,  # type: ignore[arg-type]
    )


def incident_update(taken_at: float = T0, busy: int = 10, served: int = 1200) -> Update:
    """The middle of the incident: a saturated pool with 17 connections queued."""
    return update(
        snapshot(
            incident_threads(taken_at),
            taken_at=taken_at,
            pools=[pool(busy=busy, queued=17 if busy == 10 else 0)],
            served=served,
        )
    )


def build_up(samples: int = 12) -> List[Update]:
    """Updates one second apart as the pool fills up, ending in the incident."""
    busy_levels = [2, 2, 3, 5, 6, 8, 9, 10, 10, 10, 10, 10]
    out = []
    for i in range(samples):
        taken = T0 - (samples - 1 - i)
        out.append(
            incident_update(taken, busy=busy_levels[i % len(busy_levels)], served=1000 + 5 * i)
        )
    return out


# --- py-spy: the interpreter stuck with the GIL held ---------------------------------------

FALLBACK_MESSAGE = (
    "agent not answering — the interpreter may be stuck (GIL held by thread CP Server Thread-3)"
)
REGEX_STACK = (
    Frame("/usr/lib/python3.11/re/__init__.py", 176, "search"),
    app_frame("search.py", 12, "find", "Search.find"),
    *CHERRYPY_OUTER,
)
NATIVE_REGEX_STACK = (
    Frame("Modules/_sre/sre_lib.h", 1062, "sre_ucs1_search", native=True),
    Frame("Modules/_sre/sre.c", 772, "_sre_SRE_Pattern_search_impl", native=True),
    Frame("/usr/lib/libpython3.11.so.1.0", 0, "PyObject_Vectorcall", native=True),
    *REGEX_STACK,
    Frame("/usr/lib/x86_64-linux-gnu/libc.so.6", 0, "start_thread", native=True),
    Frame("/usr/lib/x86_64-linux-gnu/libc.so.6", 0, "clone3", native=True),
)
GIL_HOLDER = 140_000_000_000_003
"""Ident of ``CP Server Thread-3``, holding the GIL in the regex engine."""


def stuck_threads(taken_at: float = T0, stack: Sequence[Frame] = REGEX_STACK) -> List[ThreadInfo]:
    """What py-spy sees: worker 3 in a catastrophic regex holding the GIL, the rest waiting.

    py-spy gives no elapsed times; requests come from the agent's last answer (or ``Request.run``
    locals) and GIL ownership only from py-spy (``owns_gil`` left unset here: the update's
    ``gil_holder`` names the thread, as a session may).
    """
    threads = list(incident_threads(taken_at))
    stuck = threads[2]
    assert stuck.request is not None
    request = replace(stuck.request, path="/search", query="q=(a%2B)%2Bb", handler="Search.find")
    threads[2] = replace(stuck, stack=tuple(stack), request=request)
    return threads


def fallback_update(taken_at: float = T0, *, pools_at: Optional[float] = None) -> Update:
    """py-spy standing in for a silent agent: threads are fresh, pool numbers are stale."""
    snap = snapshot(
        stuck_threads(taken_at),
        taken_at=taken_at,
        pools=[pool(busy=10, queued=17)],
        served=1200,
    )
    return update(
        snap,
        message=FALLBACK_MESSAGE,
        threads_source=SourceKind.PYSPY,
        stale=("pools",),
        gil_holder=GIL_HOLDER,
    )


def thread_locals(ident: int = GIL_HOLDER, name: str = "CP Server Thread-3") -> ThreadLocals:
    """Locals of the stuck worker, innermost first: a secret in two frames, an environ."""
    return ThreadLocals(
        ident=ident,
        name=name,
        taken_at=T0,
        frames=(
            FrameLocals(
                REGEX_STACK[0],
                (
                    LocalVar("pattern", "'(a+)+b'", is_arg=True),
                    LocalVar("string", "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac'", is_arg=True),
                    LocalVar("flags", "0", is_arg=True),
                ),
            ),
            FrameLocals(
                REGEX_STACK[1],
                (
                    LocalVar("self", "<Search at 0x7f3e2c1b5d10>", is_arg=True),
                    LocalVar("q", "'(a+)+b'", is_arg=True),
                    LocalVar("api_token", "'tok-SECRET-1234'", sensitive=True),
                    LocalVar("limit", "50"),
                ),
            ),
            FrameLocals(
                REGEX_STACK[4],
                (
                    LocalVar("self", "<Request at 0x7f3e2c0a1f50>", is_arg=True),
                    LocalVar("method", "'GET'", is_arg=True),
                    LocalVar("path", "'/search'", is_arg=True),
                    LocalVar(
                        "environ",
                        "{'HTTP_COOKIE': 'session_id=COOKIE-SECRET-99', 'REQUEST_METHOD': 'GET'}",
                        sensitive=True,
                    ),
                ),
            ),
            FrameLocals(REGEX_STACK[-1], ()),
        ),
    )


# --- routes ------------------------------------------------------------------------------------

NOT_EXPOSED = "would 404: not exposed"
RELATIVE_STATIC = "relative path without root: CherryPy answers 500 (ValueError)"


def shop_routes(taken_at: float = T0) -> RoutesSnapshot:
    """Two apps: the shop (an unexposed method, a misconfigured static dir) and a REST api."""
    shop = AppRoutes(
        script_name="",
        root="shop.app.Root",
        nodes=(
            RouteNode("/", "", "object", qualname="shop.app.Root"),
            RouteNode(
                "/index",
                "index",
                "index",
                exposed=True,
                qualname="shop.app.Root.index",
                filename=f"{APP}/app.py",
                lineno=20,
                signature="(self)",
            ),
            RouteNode("/admin", "admin", "object", qualname="shop.admin.Admin"),
            RouteNode(
                "/admin/index",
                "index",
                "index",
                exposed=True,
                qualname="shop.admin.Admin.index",
                filename=f"{APP}/admin.py",
                lineno=12,
                signature="(self)",
            ),
            RouteNode(
                "/admin/users",
                "users",
                "unexposed",
                qualname="shop.admin.Admin.users",
                filename=f"{APP}/admin.py",
                lineno=18,
                signature="(self, id=None)",
                warnings=(NOT_EXPOSED,),
            ),
            RouteNode(
                "/admin/delete",
                "delete",
                "handler",
                exposed=True,
                qualname="shop.admin.Admin.delete",
                filename=f"{APP}/admin.py",
                lineno=30,
                signature="(self, ident)",
                tools=("auth_basic",),
                config=(
                    ("tools.auth_basic.checkpassword", "<function check at 0x7f>"),
                    ("tools.auth_basic.on", "True"),
                    ("tools.auth_basic.realm", "'admin'"),
                ),
            ),
        ),
        static=(
            StaticMount(
                "/static",
                "staticdir",
                configured="static",
                warnings=(RELATIVE_STATIC,),
            ),
        ),
        config=(
            ConfigSection(
                "/",
                settings=(("tools.sessions.on", "True"), ("tools.sessions.timeout", "60")),
            ),
            ConfigSection(
                "/static",
                settings=(("tools.staticdir.dir", "'static'"), ("tools.staticdir.on", "True")),
            ),
        ),
    )
    api = AppRoutes(
        script_name="/api",
        root="shop.api.Api",
        dispatcher="MethodDispatcher",
        nodes=(
            RouteNode("/", "", "object", exposed=True, qualname="shop.api.Api"),
            RouteNode(
                "/orders",
                "orders",
                "object",
                exposed=True,
                qualname="shop.api.Orders",
                methods=("GET", "POST"),
                filename=f"{APP}/api.py",
                lineno=9,
            ),
        ),
    )
    return RoutesSnapshot(taken_at=taken_at, apps=(shop, api), global_tools=("encode",), cap=10000)


RESOLUTIONS: Dict[str, Resolution] = {
    "/admin/delete/7": Resolution(
        "/admin/delete/7",
        "POST",
        "localhost",
        "handler",
        status=200,
        reason="the handler would be called",
        steps=("root.admin found, exposed ✓", "admin.delete found, exposed ✓"),
        app="",
        handler="shop.admin.Admin.delete",
        filename=f"{APP}/admin.py",
        lineno=30,
        args=("'7'",),
        tools=("auth_basic", "encode", "sessions"),
    ),
    "/admin/users": Resolution(
        "/admin/users",
        "GET",
        "localhost",
        "not_found",
        status=404,
        reason="users is not exposed",
        steps=("root.admin found, exposed ✓", "users found but not exposed ✗ → 404"),
        app="",
    ),
    "/admin": Resolution(
        "/admin",
        "GET",
        "localhost",
        "redirect",
        status=301,
        reason="trailing slash added (tools.trailing_slash)",
        steps=("root.admin found, exposed ✓", "index found: missing trailing slash → 301"),
        location="http://localhost/admin/",
    ),
    "/static/logo.PNG": Resolution(
        "/static/logo.PNG",
        "GET",
        "shop.example",
        "static",
        status=200,
        reason="staticdir serves the file",
        steps=("tools.staticdir on at /static", "file found"),
        static_file="/srv/shop/static/logo.PNG",
        mime="image/png",
    ),
}


def resolution(path: str, method: str = "GET", host: str = "localhost") -> Resolution:
    """The scripted verdict for ``path`` (any method and host); unknown paths 404."""
    known = RESOLUTIONS.get(path)
    if known is not None:
        return replace(known, method=method, host=host)
    return Resolution(path, method, host, "not_found", status=404, reason="no such object")


SESSION_COUNT = 120
"""Sessions in the fake RAM store (three pages of 50)."""
LOCKED_FP = "a1b2c3d4e5f6"
"""The session whose lock worker 9 (POST /cart/add) holds while workers 1 and 2 wait."""
SECRET_VALUE = "'hunter2-card-4111'"
MEMCACHED_FP = "feedfacecafe"
"""The one session the memcached app (which cannot be listed) knows: locked by a request now."""
"""A value only ever sent for the revealed session."""


def _fp(n: int) -> str:
    return LOCKED_FP if n == 7 else "%012x" % ((n + 1) * 2654435761 * 40503 % 16**12)


def _session(n: int, taken_at: float, reveal: Optional[str]) -> SessionInfo:
    fp = _fp(n)
    revealed = reveal == fp
    keys = (
        SessionKey("user_id", "int", 28, "4%03d" % n if revealed else None),
        SessionKey("cart", "list", 40 + 37 * n, SECRET_VALUE if revealed else None),
    )
    lock = SessionLock(state="free")
    if fp == LOCKED_FP:
        holder_thread = worker(9, 31.0, "/cart/add", method="POST", handler="Cart.add")
        lock = SessionLock(
            state="held",
            holder=LockHolder(
                holder_thread.ident,
                holder_thread.name,
                holder_thread.request,
                31.0,
                "since the request started",
            ),
            waiters=tuple(
                LockWaiter(
                    w.ident,
                    w.name,
                    w.request,
                    wait,
                )
                for w, wait in (
                    (worker(1, 12.0, "/cart", handler="Cart.index"), 12.0),
                    (worker(2, 5.5, "/cart/count", handler="Cart.count"), 5.5),
                )
            ),
        )
    return SessionInfo(
        fp=fp,
        expires_at=taken_at + 30 * n,
        time_left=30.0 * n,
        size=120 + 40 * n + (200_000 if n == 99 else 0),
        keys=keys,
        revealed=revealed,
        lock=lock,
    )


def shop_sessions(
    offset: int = 0,
    limit: int = 50,
    sort: str = "expiry",
    reveal: Optional[str] = None,
    taken_at: float = T0,
    count: int = SESSION_COUNT,
) -> SessionsSnapshot:
    """A RAM store of ``count`` sessions paged and sorted like the agent, one with a held lock
    and two waiters, one far larger than the rest, and a memcached app that cannot be listed."""
    every = [_session(n, taken_at, reveal) for n in range(count)]
    if sort == "-expiry":
        every.sort(key=lambda x: -(x.time_left or 0))
    elif sort == "size":
        every.sort(key=lambda x: -(x.size or 0))
    elif sort == "lock":
        every.sort(key=lambda x: (x.lock.state != "held", -len(x.lock.waiters)))
    sizes = sorted(x.size or 0 for x in every)
    largest = sorted(every, key=lambda x: -(x.size or 0))[:3]
    ram = AppSessions(
        app="",
        backend="ram",
        storage_class="cherrypy.lib.sessions.RamSession",
        where=("/",),
        settings=SessionSettings(
            timeout=60.0,
            clean_freq=5.0,
            clean_thread="running",
            locking="implicit",
            httponly=True,
        ),
        count=count,
        expired=0,
        summary=SessionsSummary(
            expiring_soon=sum(1 for x in every if (x.time_left or 0) <= 300),
            locked=1,
            waiters=2,
            sizes=SessionSizes(
                sizes[0],
                sizes[len(sizes) // 2],
                sizes[len(sizes) * 9 // 10],
                sizes[-1],
                sum(sizes),
            )
            if sizes
            else None,
            largest=tuple(SessionSize(x.fp, x.size or 0) for x in largest),
            as_of=taken_at,
        ),
        page=SessionPage(offset, limit, sort, count),
        sessions=tuple(every[offset : offset + limit]),
    )
    memcached = AppSessions(
        app="/api",
        backend="memcached",
        storage_class="cherrypy.lib.sessions.MemcachedSession",
        settings=SessionSettings(servers=("127.0.0.1:11211",), clean_thread="not started"),
        listable=False,
        not_listable="memcached cannot list its keys; only sessions in use now are known",
        summary=SessionsSummary(locked=1),
        page=SessionPage(offset, limit, sort, 0),
        sessions=(
            SessionInfo(
                fp=MEMCACHED_FP,
                lock=SessionLock(
                    state="held",
                    holder=LockHolder(
                        worker(3, 2.0).ident, "CP Server Thread-3", None, 2.0, "since …"
                    ),
                ),
            ),
        ),
    )
    return SessionsSnapshot(
        taken_at=taken_at,
        apps=(ram, memcached),
        key_id="5eed1e55",
        request_durations=RequestDurations(count=1000, p50=0.02, p95=0.4, max=31.0),
        revealed=reveal,
    )


Scripted = Union[Update, BaseException]


class FakePoller:
    """Returns scripted updates in order, then repeats the last; an exception entry is raised.

    ``set()`` replaces what the next polls return, as a changing target would.
    ``thread_locals`` answers ``locals_answer`` (or raises it) and records who asked from where;
    ``set_native`` records its calls (or raises ``native_error``).
    """

    def __init__(
        self,
        script: Sequence[Scripted],
        locals_answer: Union[ThreadLocals, BaseException, None] = None,
    ) -> None:
        self._script: List[Scripted] = list(script)
        self._lock = threading.Lock()
        self.polls = 0
        self.closed = False
        self.locals_answer = locals_answer
        self.locals_calls: List[Tuple[int, bool]] = []
        """``(ident, called on the main thread)`` per ``thread_locals`` call."""
        self.native_calls: List[Tuple[bool, bool]] = []
        """``(native, called on the main thread)`` per ``set_native`` call."""
        self.native_error: Optional[BaseException] = None
        self.load_calls: List[bool] = []
        """``called on the main thread`` per ``load_agent`` call."""
        self.load_error: Optional[BaseException] = None
        self.routes_answer: Union[RoutesSnapshot, BaseException] = shop_routes()
        self.routes_calls: List[bool] = []
        """``called on the main thread`` per ``routes`` call."""
        self.sessions_error: Optional[BaseException] = None
        self.sessions_calls: List[Tuple[int, str, Optional[str], bool]] = []
        """``(offset, sort, reveal, called on the main thread)`` per ``sessions`` call."""
        self.resolve_error: Optional[BaseException] = None
        self.resolve_calls: List[Tuple[str, str, str, bool]] = []
        """``(path, method, host, called on the main thread)`` per ``resolve`` call."""
        self.capabilities: FrozenSet[Capability] = frozenset(Capability) - {Capability.SERIES}
        """What the fake says it can do: what a live agent session with py-spy can (and loading
        the agent), unless a test narrows it."""

    def set(self, *script: Scripted) -> None:
        with self._lock:
            self._script = list(script)

    def poll(self) -> Update:
        with self._lock:
            self.polls += 1
            item = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(item, BaseException):
            raise item
        return item

    def thread_locals(self, ident: int) -> ThreadLocals:
        on_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            self.locals_calls.append((ident, on_main))
            answer = self.locals_answer
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            return thread_locals(ident, f"thread {ident}")
        return answer

    def set_native(self, native: bool) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            self.native_calls.append((native, on_main))
            error = self.native_error
        if error is not None:
            raise error

    def load_agent(self) -> str:
        with self._lock:
            self.load_calls.append(threading.current_thread() is threading.main_thread())
            error = self.load_error
        if error is not None:
            raise error
        return "agent loaded into pid 4121"

    def routes(self) -> RoutesSnapshot:
        with self._lock:
            self.routes_calls.append(threading.current_thread() is threading.main_thread())
            answer = self.routes_answer
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        on_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            self.sessions_calls.append((offset, sort, reveal, on_main))
            error = self.sessions_error
        if error is not None:
            raise error
        answer = shop_sessions(offset, limit, sort, reveal)
        if app is not None:
            answer = replace(answer, apps=tuple(a for a in answer.apps if a.app == app))
        return answer

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        on_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            self.resolve_calls.append((path, method, host, on_main))
            error = self.resolve_error
        if error is not None:
            raise error
        return resolution(path, method, host)

    def close(self) -> None:
        self.closed = True


class FakeLines:
    """A ``LineReader`` over a dict, for snapshots (the real one reads files)."""

    def __init__(self, lines: Dict[Tuple[str, int], str]) -> None:
        self.lines = dict(lines)

    def line(self, filename: str, lineno: int) -> Optional[str]:
        return self.lines.get((filename, lineno))


# --- log records -------------------------------------------------------------------------------

CART_IDENT = 140_000_000_000_009
"""``CP Server Thread-9``: busy in ``POST /cart/add`` (31 s) in ``incident_threads``."""
CART_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/shop/shop/cart.py", line 30, in add\n'
    "    with CART_LOCK:\n"
    "KeyError: 'sku-17'"
)
GOES_NOWHERE_FIX = 'log.error_file = "/var/log/shop/error.log"'


def _stamp(at: float) -> str:
    import time as _time

    return _time.strftime("[%d/%b/%Y:%H:%M:%S]", _time.gmtime(at))


def error_record(
    seq: int,
    at: float,
    message: str,
    *,
    traceback: Optional[str] = None,
    level: str = "ERROR",
    levelno: int = 40,
    logger: str = "cherrypy.error.1400",
    ident: Optional[int] = None,
    request: Optional[RequestInfo] = None,
) -> LogRecord:
    return LogRecord(
        seq=seq,
        time=at,
        level=level,
        levelno=levelno,
        logger=logger,
        message=f"{_stamp(at)} {message}",
        traceback=traceback,
        thread_ident=ident,
        thread_name=f"CP Server Thread-{ident % 1000}" if ident else "MainThread",
        request=request,
        app="" if logger != "cherrypy.error" else None,
    )


def access_log(seq: int, at: float, method: str, path: str, status: int) -> LogRecord:
    return LogRecord(
        seq=seq,
        time=at,
        level="INFO",
        logger="cherrypy.access.1400",
        message=f'10.0.0.5 - - {_stamp(at)} "{method} {path} HTTP/1.1" {status} 120 "" ""',
        request=RequestInfo(method, path, client="10.0.0.5", started_at=at - 0.05),
        status=status,
        size=120,
        duration=0.05,
        access=True,
    )


def cart_request() -> RequestInfo:
    """The request worker 9 is still serving (its ``started_at`` as the threads say)."""
    thread = incident_threads()[8]
    assert thread.request is not None
    return thread.request


def log_records(base: float = T0 - 40) -> Tuple[LogRecord, ...]:
    """A short incident: the engine starting, traffic, a warning, a 404, a handler error during
    the cart request still running, its 500, and an error of a request that has finished on
    the same worker (same thread ident, another start)."""
    finished = replace(cart_request(), started_at=base + 1.0, path="/cart/view")
    return (
        error_record(
            1, base, "ENGINE Bus STARTED", level="INFO", levelno=20, logger="cherrypy.error"
        ),
        access_log(2, base + 1, "GET", "/", 200),
        error_record(
            3,
            base + 2,
            "HTTP ",
            traceback="Traceback (most recent call last):\nValueError: old",
            ident=CART_IDENT,
            request=finished,
        ),
        access_log(4, base + 3, "GET", "/cart/view", 500),
        error_record(5, base + 4, "slow query: 2.1 s", level="WARNING", levelno=30),
        access_log(6, base + 5, "GET", "/missing", 404),
        error_record(
            7, base + 9, "HTTP ", traceback=CART_TRACEBACK, ident=CART_IDENT, request=cart_request()
        ),
        access_log(8, base + 10, "POST", "/cart/add", 500),
    )


def log_state(goes_nowhere: bool = False, missed: int = 0) -> LogState:
    routing = LogRouting(
        screen=False,
        goes_nowhere=goes_nowhere,
        fix=GOES_NOWHERE_FIX if goes_nowhere else None,
    )
    return LogState(buffer="b1", latest=8, missed=missed, capacity=10_000, routing=routing)


def log_update(
    entries: Sequence[LogEntry],
    *,
    taken_at: float = T0,
    goes_nowhere: bool = False,
    missed: int = 0,
) -> Update:
    """The incident's threads with log entries arrived since the previous poll."""
    base = incident_update(taken_at)
    return replace(base, log=tuple(entries), log_state=log_state(goes_nowhere, missed))
