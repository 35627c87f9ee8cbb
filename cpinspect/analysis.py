"""What the model means: pure functions from model objects to plain results, no text.

Grouping identical stacks, busy requests by route, saturation, the effective config of a route,
and what a series of snapshots (or two of them) says: which requests are stuck, which routes are
merely hot, which threads spin. Standard library and ``cpinspect.model`` only, so the findings
engine, the TUI and every text renderer (``formatting.py``) share one answer.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from operator import attrgetter
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from cpinspect.model import (
    AppRoutes,
    AppSessions,
    Evidence,
    Finding,
    FindingSeverity,
    Frame,
    LogRecord,
    PoolInfo,
    RequestInfo,
    Role,
    RouteNode,
    SessionInfo,
    SessionsSnapshot,
    Snapshot,
    ThreadInfo,
    ThreadsSnapshot,
)

SPINNING_SHARE = 0.5
"""A thread that used at least this share of one core between two snapshots is spinning."""
START_TOLERANCE = 1.0
"""Seconds two derived start times (``taken_at - elapsed``) may differ and be one request."""

# --- threads -----------------------------------------------------------------------------------


def thread_order(thread: ThreadInfo) -> Tuple[int, int, float, str, int]:
    """The display order of threads, as a sort key.

    The GIL holder first, then busy before idle, then the longest elapsed first, then by name.
    """
    return (
        0 if thread.owns_gil else 1,
        0 if thread.busy else 1,
        -(thread.elapsed or 0.0),
        thread.name,
        thread.ident,
    )


def busy_workers(threads: Iterable[ThreadInfo]) -> List[ThreadInfo]:
    """The pool workers holding a request (or reading one), in display order."""
    return sorted((t for t in threads if t.role is Role.WORKER and t.busy), key=thread_order)


@dataclass(frozen=True)
class StackGroup:
    """Threads whose stacks are identical by file and line (names may differ between sources)."""

    threads: Tuple[ThreadInfo, ...]
    """In display order (longest-running first)."""
    stack: Tuple[Frame, ...]
    """The first thread's stack, innermost first."""

    @property
    def key(self) -> Tuple[Tuple[str, int], ...]:
        return tuple(f.location for f in self.stack)

    @property
    def count(self) -> int:
        return len(self.threads)

    @property
    def busy(self) -> int:
        return sum(1 for t in self.threads if t.busy)

    @property
    def oldest(self) -> Optional[float]:
        ages = [t.elapsed for t in self.threads if t.elapsed is not None]
        return max(ages) if ages else None

    @property
    def gil_holder(self) -> Optional[ThreadInfo]:
        """The thread of this group that holds the GIL, if py-spy saw one here."""
        for thread in self.threads:
            if thread.owns_gil:
                return thread
        return None


StackKey = Tuple[Tuple[str, int], ...]
"""``ThreadInfo.stack_key``: the file and line of every frame, innermost first."""


def group_stacks(
    threads: Iterable[ThreadInfo], key: Optional[Callable[[ThreadInfo], StackKey]] = None
) -> List[StackGroup]:
    """Group threads by ``stack_key`` (file and line of every frame), the largest group first.

    The group holding the GIL comes before all others (as its thread does in ``thread_order``);
    ties go to the group holding the longest-running request, then to the first thread's name.
    ``key``: where the caller keeps each thread's ``stack_key`` (``StackKeys``), so stacks it
    has seen are not walked again.
    """
    by_key: Dict[StackKey, List[ThreadInfo]] = {}
    if key is None:
        for thread in threads:
            by_key.setdefault(thread.stack_key, []).append(thread)
    else:
        for thread in threads:
            by_key.setdefault(key(thread), []).append(thread)
    groups = []
    for members in by_key.values():
        ordered = tuple(sorted(members, key=thread_order))
        groups.append(StackGroup(ordered, ordered[0].stack))
    groups.sort(
        key=lambda g: (
            g.gil_holder is None,
            -g.count,
            -(g.oldest or 0.0),
            thread_order(g.threads[0]),
        )
    )
    return groups


def largest_shared_stack(
    threads: Iterable[ThreadInfo], key: Optional[Callable[[ThreadInfo], StackKey]] = None
) -> Optional[StackGroup]:
    """The biggest group of two or more threads with the same non-empty stack, if any."""
    groups = [g for g in group_stacks(threads, key) if g.stack and g.count >= 2]
    # Not simply the first group: the one holding the GIL comes first, whatever its size.
    return max(groups, key=lambda g: g.count, default=None)


_LOCATION = attrgetter("filename", "lineno")
"""``Frame.location``, read in C."""


class StackKeys:
    """``stack_key`` of each stack seen in the last ``KEY_ROUNDS`` rounds, by stack object: a
    view that groups the same threads at every poll walks only the stacks that are new objects
    (100 spinning workers' at each reading), not the 500 busy workers' ~25 frames each. More
    than two rounds: when py-spy carries a poll or two while the agent is slow, the agent's
    stacks come back as the objects they were (``protocol.Stacks``), keyed before the switch.

    ``key(thread)`` is the thread's key; ``next_round()`` forgets the stacks not asked for in
    the last ``KEY_ROUNDS`` rounds (the memory stays that of the stacks on show lately).
    """

    def __init__(self) -> None:
        self._now: Dict[int, Tuple[Tuple[Frame, ...], StackKey]] = {}
        self._before: List[Dict[int, Tuple[Tuple[Frame, ...], StackKey]]] = []
        """The rounds before this one, the latest first."""

    def key(self, thread: ThreadInfo) -> StackKey:
        stack = thread.stack
        found = self._now.get(id(stack))
        if found is None or found[0] is not stack:
            found = None
            for before in self._before:
                found = before.get(id(stack))
                if found is not None and found[0] is stack:
                    break
                found = None
            if found is None:
                found = (stack, tuple(map(_LOCATION, stack)))
            # The stack is held beside its key: its id cannot be reused while remembered.
            self._now[id(stack)] = found
        return found[1]

    def next_round(self) -> None:
        self._before = [self._now, *self._before[: KEY_ROUNDS - 2]]
        self._now = {}


KEY_ROUNDS = 4
"""Rounds of stacks ``StackKeys`` remembers, this one included."""


# --- busy requests by route --------------------------------------------------------------------

RouteKey = Tuple[Optional[str], Optional[str], Optional[Tuple[str, int]]]
"""``(method, path without query, top app frame location)``; ``None`` where unknown."""


@dataclass(frozen=True)
class RouteGroup:
    """Busy workers on the same route, stopped at the same application frame."""

    method: Optional[str]
    """``None`` for workers still reading a request CherryPy has not parsed yet."""
    path: Optional[str]
    """Without the query string."""
    frame: Optional[Frame]
    """The innermost application frame of the first thread; ``None`` without app frames."""
    threads: Tuple[ThreadInfo, ...]
    """In display order (longest-running first)."""
    workers: int
    """How many pool workers there were in all (the "of 16" in "12 of 16 workers")."""

    @property
    def count(self) -> int:
        return len(self.threads)

    @property
    def oldest(self) -> Optional[float]:
        ages = [t.elapsed for t in self.threads if t.elapsed is not None]
        return max(ages) if ages else None


def route_key(thread: ThreadInfo) -> RouteKey:
    request = thread.request
    frame = thread.top_app_frame
    return (
        request.method if request is not None else None,
        request.path if request is not None else None,
        frame.location if frame is not None else None,
    )


def route_groups(threads: Iterable[ThreadInfo]) -> List[RouteGroup]:
    """Busy workers grouped by method, path and top app frame: the most workers first.

    Ties go to the group holding the oldest request.
    """
    threads = list(threads)
    workers = sum(1 for t in threads if t.role is Role.WORKER)
    by_key: Dict[RouteKey, List[ThreadInfo]] = {}
    for thread in busy_workers(threads):
        by_key.setdefault(route_key(thread), []).append(thread)
    groups = [
        RouteGroup(method, path, members[0].top_app_frame, tuple(members), workers)
        for (method, path, _), members in by_key.items()
    ]
    groups.sort(key=lambda g: (-g.count, -(g.oldest or 0.0), thread_order(g.threads[0])))
    return groups


# --- pools -------------------------------------------------------------------------------------


def is_saturated(pool: PoolInfo) -> bool:
    """Every worker busy and connections waiting: new requests are not being served."""
    return pool.size > 0 and pool.busy >= pool.size and pool.queued > 0


# --- one request across snapshots --------------------------------------------------------------


def request_start(thread: ThreadInfo, taken_at: float) -> Optional[float]:
    """When the thread's request started: the source's own time, else ``taken_at - elapsed``."""
    if thread.request is not None and thread.request.started_at is not None:
        return thread.request.started_at
    if thread.elapsed is not None:
        return taken_at - thread.elapsed
    return None


def same_request(a: ThreadInfo, a_taken: float, b: ThreadInfo, b_taken: float) -> bool:
    """Whether ``a`` (seen at ``a_taken``) and ``b`` (at ``b_taken``) hold one request.

    One request is one thread ident, method, path and start time. When the sources gave start
    times they must be equal; start times derived from ``elapsed`` may differ by
    ``START_TOLERANCE``. With no time known at all the request counts as the same one (nothing
    tells them apart), unless ``b`` is younger than ``a`` was.
    """
    ra, rb = a.request, b.request
    if ra is None or rb is None or a.ident != b.ident:
        return False
    if (ra.method, ra.path) != (rb.method, rb.path):
        return False
    if ra.started_at is not None and rb.started_at is not None:
        return ra.started_at == rb.started_at
    start_a, start_b = request_start(a, a_taken), request_start(b, b_taken)
    if start_a is not None and start_b is not None:
        return abs(start_a - start_b) <= START_TOLERANCE
    return True


def _threads(snapshot: Snapshot) -> Tuple[ThreadInfo, ...]:
    return snapshot.threads.threads if snapshot.threads is not None else ()


def _threads_at(snapshot: Snapshot) -> float:
    """When the threads were read (the CPU times are as of then)."""
    return snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at


# --- CPU ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuUse:
    """CPU one thread used between two snapshots."""

    thread: ThreadInfo
    """The thread as the later snapshot saw it (its request, its stack)."""
    seconds: Optional[float]
    """CPU seconds used in between; ``None`` when either snapshot lacks the thread's CPU time."""
    wall: float
    """Wall-clock seconds between the two snapshots' threads."""

    @property
    def ident(self) -> int:
        return self.thread.ident

    @property
    def name(self) -> str:
        return self.thread.name

    @property
    def share(self) -> Optional[float]:
        """Share of one core (1.0 = a whole core); ``None`` when unknown."""
        if self.seconds is None or self.wall <= 0:
            return None
        return self.seconds / self.wall

    @property
    def spinning(self) -> Optional[bool]:
        """True when it used at least ``SPINNING_SHARE`` of a core, False when it mostly waited,
        ``None`` when unknown."""
        share = self.share
        return None if share is None else share >= SPINNING_SHARE


def cpu_use(before: ThreadInfo, after: ThreadInfo, wall: float) -> CpuUse:
    seconds = None
    if before.cpu_time is not None and after.cpu_time is not None:
        # A thread ident reused by a new OS thread starts again from zero.
        seconds = max(0.0, after.cpu_time - before.cpu_time)
    return CpuUse(after, seconds, wall)


# --- a series of snapshots ---------------------------------------------------------------------


@dataclass(frozen=True)
class StuckRequest:
    """A request one thread held in every snapshot of a series: a hang, not load."""

    thread: ThreadInfo
    """The thread as the last snapshot saw it (its stack, its elapsed)."""
    request: RequestInfo
    first_elapsed: Optional[float]
    """Elapsed in the first snapshot."""
    cpu: CpuUse
    """Between the first and the last snapshot: spinning or waiting."""


@dataclass(frozen=True)
class HotRoute:
    """A route busy in every snapshot, but on new requests: load, not a hang."""

    method: str
    path: str
    requests: int
    """Distinct requests seen on it over the series (stuck ones not counted)."""
    most_busy: int
    """The most workers it held at once in one snapshot."""
    stuck: int
    """Requests on it stuck throughout (listed in ``SeriesAnalysis.stuck``)."""
    frame: Optional[Frame]
    """The top app frame of its most recent request."""


@dataclass(frozen=True)
class BusyCount:
    """How busy the pool was in one snapshot."""

    taken_at: float
    busy: int
    """Busy workers (threads), over every pool."""
    workers: int
    """Worker threads seen."""
    pool_size: Optional[int]
    """Pool size over every server; ``None`` without pool numbers."""
    queued: Optional[int]
    """Connections waiting for a worker; ``None`` without pool numbers."""
    saturated: bool


@dataclass(frozen=True)
class SeriesAnalysis:
    """What a series of snapshots of one process says that a single snapshot cannot."""

    snapshots: int
    """Snapshots with threads that the analysis rests on."""
    wall: float
    """Seconds between the first and the last of them."""
    stuck: Tuple[StuckRequest, ...]
    """Requests held by the same thread in every snapshot, the oldest first."""
    hot: Tuple[HotRoute, ...]
    """Routes busy in every snapshot on new requests, the most requests first."""
    cpu: Tuple[CpuUse, ...]
    """Every thread present in the first and the last snapshot, the most CPU first."""
    busy: Tuple[BusyCount, ...]
    """One per snapshot, in order."""
    skipped: int = 0
    """Snapshots left out because they have no threads."""

    @property
    def spinning(self) -> Tuple[CpuUse, ...]:
        return tuple(c for c in self.cpu if c.spinning)

    def cpu_of(self, ident: int) -> Optional[CpuUse]:
        return next((c for c in self.cpu if c.ident == ident), None)


def busy_count(snapshot: Snapshot) -> BusyCount:
    threads = snapshot.threads
    workers = [t for t in _threads(snapshot) if t.role is Role.WORKER]
    pools = threads.pools if threads is not None else ()
    return BusyCount(
        taken_at=snapshot.taken_at,
        busy=sum(1 for t in workers if t.busy),
        workers=len(workers),
        pool_size=sum(p.size for p in pools) if pools else None,
        queued=sum(p.queued for p in pools) if pools else None,
        saturated=any(is_saturated(p) for p in pools),
    )


def _cpu_between(first: Snapshot, last: Snapshot) -> List[CpuUse]:
    wall = _threads_at(last) - _threads_at(first)
    before = {t.ident: t for t in _threads(first)}
    uses = [cpu_use(before[t.ident], t, wall) for t in _threads(last) if t.ident in before]
    uses.sort(key=lambda c: (c.seconds is None, -(c.seconds or 0.0), c.name, c.ident))
    return uses


def analyze_series(snapshots: Sequence[Snapshot]) -> SeriesAnalysis:
    """Stuck requests, hot routes, CPU and busy counts over snapshots taken in time order.

    A request is stuck throughout when the same thread holds the same request (ident, method,
    path, start) in every snapshot; the same route on a new request each time is hot instead.
    A series of one snapshot has nothing stuck or hot (there is no "throughout" yet).
    """
    usable = [s for s in snapshots if s.threads is not None]
    skipped = len(snapshots) - len(usable)
    busy = tuple(busy_count(s) for s in usable)
    if len(usable) < 2:
        return SeriesAnalysis(len(usable), 0.0, (), (), (), busy, skipped)
    first, last = usable[0], usable[-1]
    cpu = _cpu_between(first, last)
    cpu_by_ident = {c.ident: c for c in cpu}

    indexes = [{t.ident: t for t in _threads(s)} for s in usable[1:]]
    stuck: List[StuckRequest] = []
    for thread in _threads(first):
        if thread.request is None:
            continue
        held, held_at = thread, _threads_at(first)
        for snap, index in zip(usable[1:], indexes):
            later = index.get(thread.ident)
            if later is None or not same_request(held, held_at, later, _threads_at(snap)):
                break
            held, held_at = later, _threads_at(snap)
        else:
            assert held.request is not None
            stuck.append(StuckRequest(held, held.request, thread.elapsed, cpu_by_ident[held.ident]))
    stuck.sort(key=lambda s: (-(s.thread.elapsed or 0.0), thread_order(s.thread)))
    stuck_keys: Set[Tuple[int, str, str]] = {
        (s.thread.ident, s.request.method, s.request.path) for s in stuck
    }

    hot = _hot_routes(usable, stuck_keys)
    return SeriesAnalysis(
        len(usable),
        _threads_at(last) - _threads_at(first),
        tuple(stuck),
        hot,
        tuple(cpu),
        busy,
        skipped,
    )


def _hot_routes(
    snaps: Sequence[Snapshot], stuck_keys: Set[Tuple[int, str, str]]
) -> Tuple[HotRoute, ...]:
    """Routes holding, in every snapshot, at least one request that is not stuck throughout."""
    Seen = Tuple[ThreadInfo, float]  # a thread on the route, and when its snapshot was taken
    busy: List[Dict[Tuple[str, str], List[Seen]]] = []
    moving: List[Dict[Tuple[str, str], List[Seen]]] = []
    for snap in snaps:
        busy.append({})
        moving.append({})
        for thread in _threads(snap):
            if thread.request is None or not thread.busy:
                continue
            key = (thread.request.method, thread.request.path)
            busy[-1].setdefault(key, []).append((thread, _threads_at(snap)))
            if (thread.ident, *key) not in stuck_keys:
                moving[-1].setdefault(key, []).append((thread, _threads_at(snap)))

    hot: List[HotRoute] = []
    for key in moving[-1]:
        if not all(key in routes for routes in moving):
            continue
        distinct: List[Seen] = []
        for routes in moving:
            for thread, at in routes[key]:
                if not any(same_request(t, t_at, thread, at) for t, t_at in distinct):
                    distinct.append((thread, at))
        youngest = min(moving[-1][key], key=lambda seen: seen[0].elapsed or 0.0)[0]
        hot.append(
            HotRoute(
                method=key[0],
                path=key[1],
                requests=len(distinct),
                most_busy=max(len(routes[key]) for routes in busy),
                stuck=sum(1 for _, method, path in stuck_keys if (method, path) == key),
                frame=youngest.top_app_frame,
            )
        )
    hot.sort(key=lambda h: (-h.requests, -h.most_busy, h.path, h.method))
    return tuple(hot)


# --- two snapshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadChange:
    """One thread in two snapshots; ``before`` or ``after`` is ``None`` when it is absent."""

    before: Optional[ThreadInfo]
    after: Optional[ThreadInfo]

    @property
    def thread(self) -> ThreadInfo:
        """The latest view of the thread."""
        latest = self.after if self.after is not None else self.before
        assert latest is not None, "a ThreadChange holds at least one side"
        return latest


@dataclass(frozen=True)
class SnapshotDiff:
    """What changed between snapshot ``a`` and the later snapshot ``b``."""

    a: Snapshot
    b: Snapshot
    wall: float
    """Seconds between the two snapshots' threads."""
    new: Tuple[ThreadChange, ...]
    """Threads in ``b`` and not in ``a`` (``before`` is ``None``)."""
    gone: Tuple[ThreadChange, ...]
    """Threads in ``a`` and not in ``b`` (``after`` is ``None``)."""
    stuck: Tuple[ThreadChange, ...]
    """Threads holding the same request in both, the oldest first."""
    new_request: Tuple[ThreadChange, ...]
    """Threads on a request in ``b`` that they did not hold in ``a`` (``before.request`` is
    another request, or ``None`` when the thread was idle)."""
    finished: Tuple[ThreadChange, ...]
    """Threads that held a request in ``a`` and are idle in ``b``."""
    cpu: Tuple[CpuUse, ...]
    """Every thread present in both, the most CPU first."""


def diff_snapshots(a: Snapshot, b: Snapshot) -> SnapshotDiff:
    """Compare two snapshots of one process, ``a`` taken before ``b``."""
    at_a, at_b = _threads_at(a), _threads_at(b)
    in_a = {t.ident: t for t in _threads(a)}
    in_b = {t.ident: t for t in _threads(b)}
    new = [ThreadChange(None, t) for t in _threads(b) if t.ident not in in_a]
    gone = [ThreadChange(t, None) for t in _threads(a) if t.ident not in in_b]
    stuck: List[ThreadChange] = []
    new_request: List[ThreadChange] = []
    finished: List[ThreadChange] = []
    for after in _threads(b):
        before = in_a.get(after.ident)
        if before is None:
            continue
        change = ThreadChange(before, after)
        if after.request is not None:
            if same_request(before, at_a, after, at_b):
                stuck.append(change)
            else:
                new_request.append(change)
        elif before.request is not None:
            finished.append(change)
    for changes in (new, gone, stuck, new_request, finished):
        changes.sort(key=lambda c: thread_order(c.thread))
    return SnapshotDiff(
        a=a,
        b=b,
        wall=at_b - at_a,
        new=tuple(new),
        gone=tuple(gone),
        stuck=tuple(stuck),
        new_request=tuple(new_request),
        finished=tuple(finished),
        cpu=tuple(_cpu_between(a, b)),
    )


# --- the config a route runs with --------------------------------------------------------------

GLOBAL_ORIGIN = "global config"

FALSE_REPRS = frozenset(("False", "None", "0", "''", '""'))
"""Reprs of config values CherryPy treats as off (``if conf.get('tools.x.on')``)."""


def _ancestors(path: str) -> List[str]:
    """``/a/b`` → ``["/", "/a", "/a/b"]``: the paths whose config a request to ``path`` meets."""
    out = ["/"]
    current = ""
    for segment in [s for s in path.split("/") if s]:
        current += "/" + segment
        out.append(current)
    return out


def effective_config(
    app: AppRoutes, node: RouteNode, global_tools: Sequence[str] = ()
) -> List[Tuple[str, str, str]]:
    """The config a request ending on ``node`` runs with: ``(key, value, where it comes from)``.

    Merged as CherryPy's ``Dispatcher.find_handler`` does: the global tools first, then for
    each path from ``/`` down to the node, that object's ``_cp_config`` and then the app's
    config section for the path (the section wins over the object); an object's ``index``
    comes last, since a URL ending on an object is served by it. Sorted by key.
    """
    nodes = {n.path: n for n in app.nodes}
    sections = {section.path: section for section in app.config}
    merged: Dict[str, Tuple[str, str]] = {
        "tools.%s.on" % tool: ("True", GLOBAL_ORIGIN) for tool in global_tools
    }
    layers: List[Tuple[str, Tuple[Tuple[str, str], ...]]] = []
    for path in _ancestors(node.path):
        own = nodes.get(path)
        if own is not None and (own.config or own.tools):
            layers.append(("_cp_config %s" % path, own_settings(own)))
        section = sections.get(path)
        if section is not None and section.settings:
            layers.append(("app.config %s" % path, section.settings))
    if node.kind == "object":
        index = nodes.get(node.path.rstrip("/") + "/index")
        if index is not None and (index.config or index.tools):
            layers.append(("_cp_config %s" % index.path, own_settings(index)))
    for origin, settings in layers:
        for key, value in settings:
            merged[key] = (value, origin)
    return [(key, value, origin) for key, (value, origin) in sorted(merged.items())]


def own_settings(node: RouteNode) -> Tuple[Tuple[str, str], ...]:
    """A node's ``_cp_config``; from its tool names alone when the settings were not sent."""
    if node.config:
        return node.config
    return tuple(("tools.%s.on" % tool, "True") for tool in node.tools)


def tools_in_effect(merged: Sequence[Tuple[str, str, str]]) -> List[str]:
    """Tool names whose ``tools.<name>.on`` is true in a merged config."""
    out = []
    for key, value, _origin in merged:
        parts = key.split(".")
        is_switch = len(parts) == 3 and parts[0] == "tools" and parts[2] == "on"
        if is_switch and value not in FALSE_REPRS:
            out.append(parts[1])
    return sorted(out)


# --- sessions ----------------------------------------------------------------------------------

LARGE_SESSION_RATIO = 10
"""The largest session is "far larger than the rest" at this many times the median ..."""
LARGE_SESSION_BYTES = 64 * 1024
"""... and at least this big (a 2 KB session among 100-byte ones is nobody's problem)."""
EXPIRED_PILE = 100
"""Expired entries still stored, at least this many ..."""
EXPIRED_SHARE = 0.2
"""... and at least this share of the store: the clean-up is not keeping up."""
LOCK_FLOOR = 1.0
TYPICAL_FACTOR = 50
"""A p95 beyond this many medians is the incident's slow requests, not a normal one's time."""
"""A lock held less than this many seconds is never called long, whatever the p95."""
NO_DURATIONS_LIMIT = 10.0
"""What "longer than normal" means when the process has completed no request to compare with."""


def _short_fp(fp: str) -> str:
    return fp[:8]


def _app_name(app: AppSessions) -> str:
    return "app %r" % (app.app or "/")


def _seconds(value: float) -> str:
    return "%.1f s" % value if value >= 0.1 else "%.0f ms" % (value * 1000)


def _kib(size: int) -> str:
    return "%.1f KB" % (size / 1024) if size >= 1024 else "%d B" % size


def _request_words(req: Optional[RequestInfo]) -> str:
    if req is None:
        return "an unknown request"
    return "%s %s" % (req.method, req.target)


def _store_evidence(app: AppSessions) -> Evidence:
    """The app's session store (a ``session`` reference with no fingerprint)."""
    where = app.settings.storage_path if app.backend == "file" else None
    label = "%s: %s sessions%s" % (_app_name(app), app.backend, " in %s" % where if where else "")
    return Evidence("session", "%s|" % app.app, label)


def _lock_thread_evidence(
    what: str,
    ident: int,
    name: Optional[str],
    request: Optional[RequestInfo],
    seconds: Optional[float],
) -> Evidence:
    parts = [name or "thread %d" % ident, _request_words(request)]
    if seconds is not None:
        parts.append(_seconds(seconds))
    return Evidence("thread", str(ident), "%s %s" % (what, "  ".join(parts)))


def store_identity(app: AppSessions) -> Optional[Tuple[str, ...]]:
    """What names one app's session store among the apps of one process, or None when two
    apps' stores cannot be told to be one: a file store is its class and directory; RAM keeps
    its sessions in the class (``RamSession.cache``), so every app with that class shares them;
    memcached, its class and servers. A custom class may keep them anywhere."""
    st = app.settings
    if app.backend == "file" and st.storage_path:
        return ("file", app.storage_class, posixpath.normpath(st.storage_path))
    if app.backend == "ram":
        return ("ram", app.storage_class)
    if app.backend == "memcached" and st.servers is not None:
        return ("memcached", app.storage_class, *sorted(st.servers))
    return None


def shared_stores(sessions: SessionsSnapshot) -> Dict[str, str]:
    """``{app: the first app listed whose store it is}`` for every app whose session store is
    an earlier app's: two apps with FileSession on one storage path list the same sessions,
    which are not twice as many."""
    first: Dict[Tuple[str, ...], str] = {}
    out: Dict[str, str] = {}
    for app in sessions.apps:
        key = store_identity(app)
        if key is None:
            continue
        if key in first:
            out[app.app] = first[key]
        else:
            first[key] = app.app
    return out


def session_findings(sessions: SessionsSnapshot) -> Tuple[Finding, ...]:
    """What is wrong with the session stores, each with its numbers and the fix in words.

    Rests on the answer alone (``peers``, the other processes serving the same port or command
    line, is found by the inspector and carried in it). Locks: the page's sessions and every
    session locked or waited on now (``locks``, whatever the page); the store's sizes and counts
    come from the agent's summary of the whole store.
    """
    out: List[Finding] = []
    stale_paths = set()
    for app in sessions.apps:
        out.extend(_store_findings(app, sessions))
        out.extend(_lock_findings(app, sessions))
        # Apps that share one storage path share its lock files: said once, for the first.
        path = app.settings.storage_path if app.backend == "file" else None
        if path is None or path not in stale_paths:
            out.extend(_stale_lock_file_findings(app))
            if path is not None:
                stale_paths.add(path)
    return tuple(out)


def _stale_lock_file_findings(app: AppSessions) -> List[Finding]:
    """File sessions' ``.lock`` files left by a process that is gone (CherryPy never deletes
    them): one finding per app, naming the pid(s) seen on the page and the store's count."""
    if app.backend != "file":
        return []
    stale = [
        s
        for s in (*app.sessions, *app.locks)
        if s.lock.file is not None and s.lock.file.stale and s.lock.state != "held"
    ]
    count = app.summary.stale_locks or 0
    if not stale and not count:
        return []
    count = max(count, len({s.fp for s in stale}))
    pids = sorted({s.lock.file.pid for s in stale if s.lock.file and s.lock.file.pid})
    path = app.settings.storage_path or "the storage path"
    if count == 1 and len(pids) == 1:
        what = "stale lock file of session %s in %s: pid %d is gone" % (
            _short_fp(stale[0].fp),
            path,
            pids[0],
        )
    else:
        what = "%d stale lock files in %s: %s gone" % (
            count,
            path,
            "pid %s is" % ", ".join(str(p) for p in pids)
            if len(pids) == 1
            else (
                "pids %s are" % ", ".join(str(p) for p in pids[:5]) if pids else "their pids are"
            ),
        )
    orphans = app.summary.orphan_locks or 0
    return [
        Finding(
            id="sessions-stale-lock:%s" % app.app,
            severity=FindingSeverity.INFO,
            title="%s: %s — delete %s%s"
            % (
                _app_name(app),
                what,
                "it" if count == 1 else "them",
                " (%d more .lock file%s no session file beside %s)"
                % (orphans, " has" if orphans == 1 else "s have", "it" if orphans == 1 else "them")
                if orphans
                else "",
            ),
            evidence=tuple(
                Evidence(
                    "session",
                    "%s|%s" % (app.app, s.fp),
                    "session %s  lock file of pid %s"
                    % (_short_fp(s.fp), s.lock.file.pid if s.lock.file else "?"),
                )
                for s in stale[:10]
            ),
            kind="sessions-stale-lock",
            fix="CherryPy never deletes a session's .lock file, and every restart leaves its "
            "own; a stale one is no longer locked (its process is gone), so deleting it is "
            "safe: rm the session-*.lock files in %s whose pid (their content) is not running"
            % path,
        )
    ]


def _store_findings(app: AppSessions, sessions: SessionsSnapshot) -> List[Finding]:
    out: List[Finding] = []
    name = _app_name(app)
    settings = app.settings
    if app.backend == "ram" and sessions.peers:
        pids = ", ".join(str(p.pid) for p in sessions.peers)
        whys = sorted({p.why for p in sessions.peers})
        out.append(
            Finding(
                id="sessions-ram-not-shared:%s" % app.app,
                severity=FindingSeverity.CRITICAL,
                title="%s keeps sessions in RAM while %d other process%s serve%s the same "
                "service (pid %s: %s): each has its own sessions, so a user sent to another "
                "process is logged out; a restart loses them all"
                % (
                    name,
                    len(sessions.peers),
                    "" if len(sessions.peers) == 1 else "es",
                    "s" if len(sessions.peers) == 1 else "",
                    pids,
                    "; ".join(whys),
                ),
                evidence=tuple(
                    Evidence("process", str(p.pid), "pid %d: %s" % (p.pid, p.why))
                    for p in sessions.peers
                ),
                kind="sessions-ram-not-shared",
                fix="share one store between the processes: tools.sessions.storage_class = "
                "cherrypy.lib.sessions.FileSession with a storage_path every process reads "
                "(or MemcachedSession), or make the load balancer keep each user on one process "
                "(sticky sessions)",
            )
        )
    if app.backend == "file":
        path = settings.storage_path or "(no storage_path set)"
        if settings.path_exists is False or not settings.storage_path:
            out.append(
                Finding(
                    id="sessions-path-missing:%s" % app.app,
                    severity=FindingSeverity.CRITICAL,
                    title="%s stores sessions in files under %s, which does not exist: every "
                    "request that saves its session fails" % (name, path),
                    evidence=(_store_evidence(app),),
                    kind="sessions-path-missing",
                    fix="create the directory, owned by the server's user and mode 0700 "
                    "(mkdir -p %s), or point tools.sessions.storage_path at one that exists" % path,
                )
            )
        elif settings.path_writable is False:
            out.append(
                Finding(
                    id="sessions-path-not-writable:%s" % app.app,
                    severity=FindingSeverity.CRITICAL,
                    title="%s stores sessions in files under %s, which the server cannot write: "
                    "sessions are not saved and logins do not stick" % (name, path),
                    evidence=(_store_evidence(app),),
                    kind="sessions-path-not-writable",
                    fix="give the server's user write access to %s (chown it to that user), or "
                    "use another storage_path" % path,
                )
            )
    if app.backend in ("ram", "file"):
        count = app.count or 0
        expired = app.expired or 0
        thread = settings.clean_thread
        # RAM: the thread starts with the first session, so sessions without it are wrong; file
        # sessions on disk may predate this process (nothing loaded yet, nothing started).
        stopped = thread == "stopped" or (
            thread == "not started" and count > 0 and app.backend == "ram"
        )
        piling = expired >= EXPIRED_PILE and expired >= EXPIRED_SHARE * max(count, 1)
        if stopped or piling:
            what = []
            if stopped:
                what.append("the clean-up thread is %s" % thread)
            if expired:
                what.append(
                    "%d of %d stored sessions are already expired and still kept" % (expired, count)
                )
            freq = settings.clean_freq
            out.append(
                Finding(
                    id="sessions-cleanup:%s" % app.app,
                    severity=FindingSeverity.WARNING,
                    title="%s: %s — expired sessions are not being removed, so the store only "
                    "grows" % (name, "; ".join(what)),
                    evidence=(_store_evidence(app),),
                    kind="sessions-cleanup",
                    fix="the clean-up runs every tools.sessions.clean_freq minutes (%s here) on "
                    "a thread started with the first session; it stops with the engine (a "
                    "stopped thread means the engine was stopped or the thread died: see the "
                    "error log); restart the engine, or lower clean_freq if it cannot keep up"
                    % ("%g" % freq if freq is not None else "unknown"),
                )
            )
    sizes = app.summary.sizes
    if (
        sizes is not None
        and (app.count or 0) >= 3
        and sizes.max >= LARGE_SESSION_BYTES
        and sizes.max >= LARGE_SESSION_RATIO * max(sizes.p50, 1)
    ):
        largest = app.summary.largest[0].fp if app.summary.largest else "?"
        out.append(
            Finding(
                id="sessions-large:%s:%s" % (app.app, largest),
                severity=FindingSeverity.WARNING,
                title="%s: session %s holds %s, %d times the median session (%s)"
                % (
                    name,
                    _short_fp(largest),
                    _kib(sizes.max),
                    sizes.max // max(sizes.p50, 1),
                    _kib(sizes.p50),
                ),
                evidence=(
                    Evidence(
                        "session",
                        "%s|%s" % (app.app, largest),
                        "session %s  %s" % (_short_fp(largest), _kib(sizes.max)),
                    ),
                ),
                kind="sessions-large",
                fix="keep big data out of the session: it is pickled on every save (file "
                "sessions read and write it whole on every request); store an id in the "
                "session and the data in a database or cache",
            )
        )
    return out


def lock_limit(sessions: SessionsSnapshot) -> Tuple[float, str]:
    """How long a session lock may be held before it is "longer than normal", and why."""
    durations = sessions.request_durations
    if durations is None or durations.count == 0:
        return NO_DURATIONS_LIMIT, "no request has completed since the agent came, to compare with"
    # During the incident the slow requests are among the last ones completed (the lock's own
    # holder and waiters, the pool's stuck work): past TYPICAL_FACTOR times the median, the p95
    # no longer says what a normal request takes, and the median is the measure.
    if durations.p95 <= TYPICAL_FACTOR * durations.p50:
        limit = max(durations.p95, LOCK_FLOOR)
        return limit, "95%% of the last %s requests took under %s, the slowest %s" % (
            f"{durations.count:,}",
            _seconds(durations.p95),
            _seconds(durations.max),
        )
    limit = max(TYPICAL_FACTOR * durations.p50, LOCK_FLOOR)
    return (
        limit,
        "half of the last %s requests took under %s; the slow ones, up to %s, are the "
        "incident's own"
        % (f"{durations.count:,}", _seconds(durations.p50), _seconds(durations.max)),
    )


def _lock_findings(app: AppSessions, sessions: SessionsSnapshot) -> List[Finding]:
    out: List[Finding] = []
    limit, basis = lock_limit(sessions)
    # The page's sessions, and the locked ones on other pages (an older agent sends no "locks").
    on_page = {s.fp for s in app.sessions}
    for session in (*app.sessions, *(s for s in app.locks if s.fp not in on_page)):
        finding = _held_lock(app, session, limit, basis)
        if finding is not None:
            out.append(finding)
    return out


def _held_lock(
    app: AppSessions, session: SessionInfo, limit: float, basis: str
) -> Optional[Finding]:
    lock = session.lock
    holder = lock.holder
    if lock.state != "held" or holder is None or not lock.waiters:
        return None
    held = holder.held_for
    if held is None or held <= limit:
        return None
    requests = [w for w in lock.waiters if not w.clean_up]
    waits = [w.waiting_for for w in requests if w.waiting_for is not None]
    longest = " (the longest for %s)" % _seconds(max(waits)) if waits else ""
    who = holder.name or "thread %d" % holder.ident
    if requests:
        behind = "%d request%s of the same user wait%s behind it%s" % (
            len(requests),
            "" if len(requests) == 1 else "s",
            "s" if len(requests) == 1 else "",
            longest,
        )
    else:
        behind = "no request waits behind it"
    if len(requests) < len(lock.waiters):
        behind += (
            "; CherryPy's session clean-up waits behind it too (it takes every session's "
            "lock in turn: no expired session is deleted until this one is released)"
        )
    return Finding(
        id="sessions-lock:%s:%s" % (app.app, session.fp),
        severity=FindingSeverity.CRITICAL,
        title="session %s: its lock has been held %s by %s (%s), longer than a normal request "
        "(%s); %s"
        % (
            _short_fp(session.fp),
            _seconds(held),
            _request_words(holder.request),
            who,
            basis,
            behind,
        ),
        evidence=(
            _lock_thread_evidence("holder", holder.ident, holder.name, holder.request, held),
            *(
                _lock_thread_evidence("waiter", w.ident, w.name, w.request, w.waiting_for)
                if not w.clean_up
                else Evidence(
                    "thread",
                    str(w.ident),
                    "waiter %s  the session clean-up (not a request)"
                    % (w.name or "thread %d" % w.ident),
                )
                for w in lock.waiters
            ),
        ),
        kind="sessions-lock",
        fix="with tools.sessions.locking = %r a session stays locked for its whole request, so "
        "one slow request holds up every other request of that user and they fill the worker "
        "pool: call cherrypy.session.release_lock() before the slow work (after the last "
        "session change), or set locking = 'explicit' and lock only around the writes"
        % app.settings.locking,
    )


# --- log records ---------------------------------------------------------------------------------

LEVEL_STEPS = (0, 30, 40)
"""The level filter's steps: everything, WARNING and worse, ERROR and worse."""
STATUS_FILTERS = ("", "5xx", "404")
"""The access-status filter's steps: none, only 5xx answers, only 404s."""
REQUEST_TOLERANCE = 1e-3
"""Seconds two ``started_at`` of the same request may differ (both come from the agent)."""


@dataclass(frozen=True)
class LogFilter:
    """Which log records a view shows. Every condition set must hold."""

    min_level: int = 0
    logger: str = ""
    """A logger name, or a prefix of it (``cherrypy.error`` matches the apps' loggers too)."""
    route: str = ""
    """A path prefix of the record's request."""
    status: str = ""
    """``5xx`` or ``404`` (access records only), or ``""``."""
    text: str = ""
    """Case-insensitive text in the message or the traceback."""
    request: Optional[Tuple[int, float]] = None
    """Only records logged during one request: ``(thread ident, request started_at)``."""

    @property
    def active(self) -> bool:
        return self != LogFilter()


def request_key(record: LogRecord) -> Optional[Tuple[int, float]]:
    """The request a record was logged during, as ``(thread ident, started_at)``."""
    request = record.request
    if record.thread_ident is None or request is None or request.started_at is None:
        return None
    return (record.thread_ident, request.started_at)


def effective_level(record: LogRecord) -> int:
    """The level a record counts as: an access record of a 5xx answer is an error, of a 4xx a
    warning (CherryPy logs every access line at INFO)."""
    if record.access and record.status is not None:
        if record.status >= 500:
            return max(record.levelno, 40)
        if record.status >= 400:
            return max(record.levelno, 30)
    return record.levelno


def log_matches(record: LogRecord, flt: LogFilter) -> bool:
    """True when ``record`` passes every condition of ``flt``."""
    if flt.min_level and effective_level(record) < flt.min_level:
        return False
    if flt.logger and not (
        record.logger == flt.logger or record.logger.startswith(flt.logger + ".")
    ):
        return False
    if flt.route:
        path = record.request.path if record.request is not None else ""
        if not path.startswith(flt.route):
            return False
    if flt.status == "5xx" and not (record.status is not None and record.status >= 500):
        return False
    if flt.status == "404" and record.status != 404:
        return False
    if flt.text:
        needle = flt.text.lower()
        if needle not in record.message.lower() and needle not in (record.traceback or "").lower():
            return False
    if flt.request is not None:
        key = request_key(record)
        if key is None or key[0] != flt.request[0]:
            return False
        if abs(key[1] - flt.request[1]) > REQUEST_TOLERANCE:
            return False
    return True


def with_context(matches: Sequence[bool], context: int) -> List[Optional[Tuple[int, bool]]]:
    """``grep -C``: the positions to show, each ``(position, is a match)``, with ``None`` where
    records were left out (before, between and after the shown runs)."""
    keep = [False] * len(matches)
    for i, hit in enumerate(matches):
        if hit:
            for j in range(max(0, i - context), min(len(matches), i + context + 1)):
                keep[j] = True
    out: List[Optional[Tuple[int, bool]]] = []
    last = -1
    for i, shown in enumerate(keep):
        if shown:
            if i > last + 1:
                out.append(None)
            out.append((i, matches[i]))
            last = i
    if out and last < len(matches) - 1:
        out.append(None)
    return out


def errors_per_minute(records: Iterable[LogRecord], now: float, minutes: int = 30) -> List[int]:
    """Errors (ERROR and worse, and 5xx answers) per minute over the last ``minutes``, oldest
    first; the last bucket is the minute running now."""
    counts = [0] * minutes
    start = (int(now) // 60 - minutes + 1) * 60
    for record in records:
        if not record.is_error or record.time < start:
            continue
        bucket = int(record.time - start) // 60
        if 0 <= bucket < minutes:
            counts[bucket] += 1
    return counts


def errors_in_last(records: Iterable[LogRecord], now: float, seconds: float = 60.0) -> int:
    """Errors (ERROR and worse, and 5xx answers) in the ``seconds`` before ``now``: the rate a
    caption shows, which the minute running now (``errors_per_minute``'s last bucket) is not
    a few seconds into it."""
    since = now - seconds
    return sum(1 for record in records if record.is_error and since < record.time <= now)


def running_thread(record: LogRecord, threads: Optional[ThreadsSnapshot]) -> Optional[ThreadInfo]:
    """The thread still serving the request ``record`` was logged during, or None. Matched by
    thread ident AND request start, so a worker that moved on to another request is not it."""
    key = request_key(record)
    if key is None or threads is None:
        return None
    for thread in threads.threads:
        request = thread.request
        if thread.ident != key[0] or request is None or request.started_at is None:
            continue
        if abs(request.started_at - key[1]) <= REQUEST_TOLERANCE:
            return thread
    return None


# --- what a resolved request was answered, from the access records --------------------------


@dataclass(frozen=True)
class Answered:
    """How the access records at hand say requests with one method and path were answered:
    the routes tell what CherryPy's dispatch would do, these what the app's tools and handler
    did (an auth tool's redirect that the routes can only call possible)."""

    method: str
    path: str
    statuses: Tuple[Tuple[int, int], ...]
    """``(status, count)``, most frequent first (then lowest status)."""
    last_status: Optional[int] = None
    last_time: Optional[float] = None
    examined: int = 0
    """Access records looked at (of any request)."""

    @property
    def count(self) -> int:
        return sum(n for _, n in self.statuses)


def answered(method: str, target: str, records: Iterable[LogRecord]) -> Answered:
    """``Answered`` for ``method`` and the path of ``target`` (its query left out, as a record's
    request path has none), from the access records among ``records``."""
    path = target.split("?", 1)[0]
    counts: Dict[int, int] = {}
    last: Optional[LogRecord] = None
    examined = 0
    for record in records:
        if not record.access:
            continue
        examined += 1
        req = record.request
        if req is None or record.status is None or req.method != method or req.path != path:
            continue
        counts[record.status] = counts.get(record.status, 0) + 1
        if last is None or record.time >= last.time:
            last = record
    statuses = tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return Answered(
        method=method,
        path=path,
        statuses=statuses,
        last_status=last.status if last is not None else None,
        last_time=last.time if last is not None else None,
        examined=examined,
    )
