"""Findings from the threads and pools: pool starvation, interpreter stuck, slow clients, a
pool too small for its load (connections queued for seconds) and the kernel's accept queue."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from cpinspect import analysis
from cpinspect.findings.common import (
    frame_words,
    plural,
    request_words,
    seconds,
    short_file,
    thread_evidence,
)
from cpinspect.model import (
    Evidence,
    Finding,
    FindingSeverity,
    Frame,
    ListenQueue,
    Phase,
    PoolInfo,
    Role,
    Snapshot,
    ThreadInfo,
)

MAX_THREAD_EVIDENCE = 200
"""Threads listed as one finding's evidence at most (the most telling first)."""
FULL_POLLS = 2
"""A pool at its size with every worker busy (no queue seen) for this many earlier polls too
is starved: cheroot does not always count the connections waiting for it."""


def thread_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    out: List[Finding] = []
    starved = pool_starvation(snapshot, history)
    out.extend(starved)
    out.extend(interpreter_stuck(snapshot, history))
    out.extend(slow_clients(snapshot, history))
    out.extend(queue_wait(snapshot, history, {f.id.split(":", 1)[1] for f in starved}))
    out.extend(socket_queue(snapshot, history))
    return out


# --- who a pool's workers are ----------------------------------------------------------------


def _threads(snapshot: Snapshot) -> Tuple[ThreadInfo, ...]:
    return snapshot.threads.threads if snapshot.threads is not None else ()


def _pools(snapshot: Snapshot) -> Tuple[PoolInfo, ...]:
    return snapshot.threads.pools if snapshot.threads is not None else ()


UNCOUNTED_POOL = "workers"
"""The bind given to the pool counted from the worker threads when no source has pool numbers
(py-spy alone, no agent): its size is the number of workers, its queue unknown."""


def pool_workers(snapshot: Snapshot, pool: PoolInfo) -> List[ThreadInfo]:
    """The worker threads of ``pool``: those the source tied to its bind address, or every
    worker when there is one pool and no thread says which it belongs to."""
    workers = [t for t in _threads(snapshot) if t.role is Role.WORKER]
    if pool.bind == UNCOUNTED_POOL and not _pools(snapshot):
        return workers
    mine = [t for t in workers if t.pool == pool.bind]
    if not mine and len(_pools(snapshot)) == 1:
        mine = [t for t in workers if t.pool is None]
    return mine


def _held_throughout(busy: Sequence[ThreadInfo], history: Sequence[Snapshot], polls: int) -> bool:
    """Most busy workers held the same request (method and target) in each of the last
    ``polls`` earlier snapshots: without a served count from the agent, that is what tells
    requests stuck in the pool from short ones turning over."""
    if len(history) < polls:
        return False
    for snap in history[-polls:]:
        before = {t.ident: t for t in _threads(snap)}
        same = 0
        for thread in busy:
            then = before.get(thread.ident)
            if (
                then is not None
                and then.busy
                and then.request is not None
                and thread.request is not None
                and then.request.method == thread.request.method
                and then.request.target == thread.request.target
            ):
                same += 1
        if same * 2 <= len(busy):
            return False
    return True


def uncounted_and_full(snapshot: Snapshot) -> bool:
    """No source has pool numbers (py-spy alone) and every worker is busy: only more polls
    of the same requests can tell a starved pool from a busy one."""
    pools = _counted_pools(snapshot)
    return len(pools) == 1 and pools[0].bind == UNCOUNTED_POOL and _full(pools[0])


def _counted_pools(snapshot: Snapshot) -> Tuple[PoolInfo, ...]:
    """The pools; without pool numbers (py-spy alone), one counted from the worker threads,
    so that every worker busy poll after poll is still seen without the agent."""
    pools = _pools(snapshot)
    if pools or snapshot.threads is None:
        return pools
    workers = [t for t in _threads(snapshot) if t.role is Role.WORKER]
    if not workers:
        return ()
    busy = sum(1 for t in workers if t.busy)
    size = len(workers)
    return (PoolInfo(UNCOUNTED_POOL, size, busy, size - busy, 0, size),)


def _full(pool: PoolInfo) -> bool:
    return pool.size > 0 and pool.busy >= pool.size


def _full_before(pool: PoolInfo, history: Sequence[Snapshot], polls: int) -> int:
    """How many of the last ``polls`` earlier snapshots had ``pool`` full (stops at a gap)."""
    count = 0
    for snap in reversed(history[-polls:]):
        before = next((p for p in _counted_pools(snap) if p.bind == pool.bind), None)
        if before is None or not _full(before):
            break
        count += 1
    return count


# --- waiting or spinning ---------------------------------------------------------------------

WAIT_FILES = {
    "socket.py": "I/O",
    "ssl.py": "I/O",
    "selectors.py": "I/O",
    "client.py": "I/O",
    "connection.py": "I/O",
    "connectionpool.py": "I/O",
    "threading.py": "a lock",
    "queue.py": "a lock",
    "subprocess.py": "a subprocess",
}
"""Innermost (stdlib or library) files whose frames mean the thread waits, and on what."""
WAIT_FUNCTIONS = {
    "recv": "I/O",
    "recv_into": "I/O",
    "readinto": "I/O",
    "read": "I/O",
    "readline": "I/O",
    "sendall": "I/O",
    "send": "I/O",
    "connect": "I/O",
    "create_connection": "I/O",
    "getresponse": "I/O",
    "select": "I/O",
    "poll": "I/O",
    "execute": "the database",
    "executemany": "the database",
    "fetchall": "the database",
    "fetchone": "the database",
    "fetchmany": "the database",
    "commit": "the database",
    "wait": "a lock",
    "acquire": "a lock",
    "_wait_for_tstate_lock": "a lock",
    "join": "a lock",
    "sleep": "sleep",
    "communicate": "a subprocess",
}
DB_DRIVERS = (
    "psycopg",
    "pymysql",
    "MySQLdb",
    "mysql/connector",
    "sqlite3",
    "cx_Oracle",
    "oracledb",
    "pymongo",
    "redis",
    "sqlalchemy",
    "pymssql",
    "asyncpg",
)
NATIVE_WAITS = ("recv", "poll", "select", "wait", "sleep", "futex", "accept", "read")


def wait_kind(thread: ThreadInfo, snapshot: Optional[Snapshot] = None) -> Optional[str]:
    """What the thread waits on from its innermost frames (``I/O``, ``a lock``, ``sleep``,
    ``the database``), ``None`` when its frames do not say it waits."""
    if getattr(thread, "wait", None) is not None:
        return "a lock"  # the agent read the lock its innermost frame is acquiring
    for depth, frame in enumerate(thread.stack[:4]):
        if frame.native:
            if any(w in frame.function for w in NATIVE_WAITS):
                return "I/O" if "recv" in frame.function or "poll" in frame.function else "a lock"
            continue
        path = frame.filename.replace("\\", "/")
        if not frame.is_app:
            if any(d in path for d in DB_DRIVERS):
                return "the database"
            kind = WAIT_FILES.get(short_file(path)) or WAIT_FUNCTIONS.get(frame.function)
            if kind is not None:
                return kind
            continue
        if depth == 0 and snapshot is not None:
            kind = _line_wait(snapshot.line(frame.filename, frame.lineno))
            if kind is not None:
                return kind
        break  # the app's own frame, not waiting in a library below it
    return None


def _line_wait(line: Optional[str]) -> Optional[str]:
    """The innermost frame's line calls ``time.sleep`` or takes a lock (C calls py-spy and
    the agent cannot see below the line)."""
    if not line:
        return None
    text = line.strip()
    if "sleep(" in text:
        return "sleep"
    if ".acquire(" in text or (text.startswith("with ") and "lock" in text.lower()):
        return "a lock"
    if ".recv(" in text or "urlopen(" in text or ".request(" in text:
        return "I/O"
    if ".execute(" in text or ".fetch" in text:
        return "the database"
    return None


SPIN_TOGETHER = 0.2
"""Share of a core a route's workers using together (each at least ``SPIN_FLOOR``) is them
spinning in turns on the GIL, not waiting (a waiting worker uses 1-2 % at most; spinners on a
machine busy with other work get far less than their 1/n of a core)."""
SPIN_FLOOR = 0.05


@dataclass(frozen=True)
class Activity:
    """Whether a set of threads waits or spins, and the numbers behind it."""

    spinning: Optional[bool]
    """True: they burn CPU; False: they wait; None: unknown."""
    waits_on: Optional[str]
    """The most common wait kind from the frames (``I/O`` …), when they wait."""
    share: Optional[float]
    """The median share of a core the measured threads used."""
    wall: float
    """Seconds the CPU was measured over."""
    measured: int
    total: Optional[float] = None
    """The share of a core they used together."""


def cpu_shares(
    threads: Sequence[ThreadInfo], snapshot: Snapshot, history: Sequence[Snapshot]
) -> Tuple[Dict[int, float], float]:
    """Share of a core each thread used since the oldest earlier snapshot in which it held the
    same request (its CPU time known in both), and the longest span measured."""
    now = snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at
    wanted = {t.ident: t for t in threads if t.cpu_time is not None}
    out: Dict[int, float] = {}
    wall = 0.0
    # Snapshots from before every wanted request started cannot hold one of them: skipped
    # without indexing their threads (60 s of history at 1,000 threads is 60,000 of them).
    starts = [analysis.request_start(t, now) for t in wanted.values()]
    earliest = min((s for s in starts if s is not None), default=None)
    if earliest is None or len(starts) != len([s for s in starts if s is not None]):
        earliest = None
    for snap in history:
        if not wanted:
            break
        if snap.threads is None:
            continue
        then = snap.threads.taken_at
        if now - then <= 0 or (earliest is not None and then < earliest - 1.0):
            continue
        index = {t.ident: t for t in snap.threads.threads if t.ident in wanted}
        for ident, thread in list(wanted.items()):
            before = index.get(ident)
            if before is None or before.cpu_time is None:
                continue
            if thread.request is not None and not analysis.same_request(before, then, thread, now):
                continue
            use = analysis.cpu_use(before, thread, now - then)
            if use.share is not None:
                out[ident] = use.share
                wall = max(wall, now - then)
                del wanted[ident]
    return out, wall


SAMPLE = 64
"""Threads of one route looked at to say where they are and what they do (a thousand on one
route say no more than their first 64, in display order)."""


def activity(
    threads: Sequence[ThreadInfo], snapshot: Snapshot, history: Sequence[Snapshot]
) -> Activity:
    threads = threads[:SAMPLE]
    shares, wall = cpu_shares(threads, snapshot, history)
    kinds: Dict[str, int] = {}
    for thread in threads:
        kind = wait_kind(thread, snapshot)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
    waits_on = max(sorted(kinds), key=lambda k: kinds[k]) if kinds else None
    if shares and len(shares) * 2 >= len(threads):
        values = sorted(shares.values())
        median = values[len(values) // 2]
        total = sum(values)
        spinning = sum(1 for v in values if v >= analysis.SPINNING_SHARE) * 2 > len(values)
        # Pure Python spinning shares one GIL: n threads get about 1/n of a core each, less
        # on a busy machine; threads waiting on I/O or a lock use next to none.
        together = total >= SPIN_TOGETHER and median >= SPIN_FLOOR
        spinning = spinning or together
        return Activity(spinning, None if spinning else waits_on, median, wall, len(shares), total)
    if kinds and sum(kinds.values()) * 2 > len(threads):
        return Activity(False, waits_on, None, 0.0, 0)
    return Activity(None, None, None, 0.0, 0)


def activity_words(act: Activity) -> str:
    """``waiting on I/O`` / ``spinning on the CPU (92 % of a core each)`` / ``""``."""
    if act.spinning:
        share = ""
        if act.share is not None and act.share >= analysis.SPINNING_SHARE:
            share = " (%.0f %% of a core each)" % (act.share * 100)
        elif act.total is not None:
            share = " (%.0f %% of a core together: they take turns holding the GIL)" % (
                act.total * 100
            )
        return "spinning on the CPU" + share
    if act.spinning is False:
        what = "waiting on %s" % act.waits_on if act.waits_on else "waiting"
        if act.waits_on == "sleep":
            what = "sleeping"
        if act.share is not None:
            what += " (%.0f %% of a core each)" % (act.share * 100)
        return what
    return ""


# --- pool starvation -------------------------------------------------------------------------


def pool_starvation(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    """A pool with every worker busy and connections queued (or full for ``FULL_POLLS``
    earlier polls), named by the route holding most of its workers."""
    out: List[Finding] = []
    for pool in _counted_pools(snapshot):
        if not _full(pool):
            continue
        held = _full_before(pool, history, FULL_POLLS)
        if pool.queued <= 0 and held < FULL_POLLS:
            continue
        busy = [t for t in pool_workers(snapshot, pool) if t.busy]
        reading = [t for t in busy if t.phase is Phase.READING]
        if busy and len(reading) * 2 >= len(busy):
            continue  # clients still sending hold them: the slow-clients finding says so
        if turning_over(snapshot, history, pool, busy):
            continue  # short requests, served one after another: the pool is too small
        if pool.bind == UNCOUNTED_POOL and not _held_throughout(busy, history, FULL_POLLS):
            continue  # py-spy alone: only requests seen in every poll say they are stuck
        out.append(_starved(snapshot, history, pool, busy, held))
    return out


def _starved(
    snapshot: Snapshot,
    history: Sequence[Snapshot],
    pool: PoolInfo,
    busy: List[ThreadInfo],
    held: int,
) -> Finding:
    groups = by_route(busy)
    size = pool.size
    where = ""
    if groups and groups[0].method is not None:
        top = groups[0]
        route = "%s %s" % (top.method, top.path)
        where = frame_words(top.frame or _innermost(top.threads[0]))
        head = "%d of %d workers are in %s%s" % (
            top.count,
            size,
            route,
            " at " + where if where else "",
        )
        members: Sequence[ThreadInfo] = top.threads
    else:
        head = "%d of %d workers are busy" % (pool.busy, size)
        members = busy
    act = activity(members, snapshot, history)
    doing = activity_words(act)
    if doing:
        head += ", " + doing
    others = len(busy) - len(members)
    if others > 0:
        head += " (%d more elsewhere)" % others
    if pool.queued > 0:
        tail = "%d queued — the pool is starved" % pool.queued
    else:
        tail = "every worker busy for %d polls — the pool is starved" % (held + 1)
    title = "%s; %s" % (head, tail)
    if pool.bind == UNCOUNTED_POOL:
        details = [
            "%d workers, %d busy (counted from py-spy's stacks: without the agent there are no "
            "pool numbers, and the connections waiting for a worker are not known)"
            % (size, pool.busy)
        ]
    else:
        details = ["%s: %d workers, %d busy, %d queued" % (pool.bind, size, pool.busy, pool.queued)]
    polls, since, most = _queued_run(pool.bind, history, _pool_queued)
    if pool.queued > 0 and polls and since is not None:
        now = snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at
        details.append(
            "connections queued for ≥ %s (seen in %d polls, up to %d)"
            % (seconds(now - since), polls + 1, max(most, pool.queued))
        )
    for group in groups:
        route = "%s %s" % (group.method, group.path) if group.method else "(reading a request)"
        details.append(
            "%s  %s%s"
            % (
                plural(group.count, "worker"),
                route,
                "  at " + frame_words(group.frame) if group.frame else "",
            )
        )
    if act.measured:
        details.append(
            "CPU over %.1f s: median %.0f %% of a core (%d workers measured)"
            % (act.wall, (act.share or 0.0) * 100, act.measured)
        )
    locked_out = [t for t in busy if session_lock_wait(t) is not None]
    if locked_out:
        details.append(
            "%d of them only wait%s for a session's lock (%s), not in their handler yet: "
            "another request of the same user holds it (implicit locking keeps it for the "
            "whole request)"
            % (
                len(locked_out),
                "s" if len(locked_out) == 1 else "",
                frame_words(session_lock_wait(locked_out[0])),
            )
        )
    first = {t.ident for t in members}
    ordered = list(members) + [t for t in busy if t.ident not in first]
    if len(ordered) > MAX_THREAD_EVIDENCE:
        details.append(
            "evidence: the first %d of %d busy workers" % (MAX_THREAD_EVIDENCE, len(ordered))
        )
        ordered = ordered[:MAX_THREAD_EVIDENCE]
    return Finding(
        id="pool-starvation:%s" % pool.bind,
        severity=FindingSeverity.CRITICAL,
        title=title,
        evidence=tuple(thread_evidence(t) for t in ordered),
        fix=_starvation_fix(act, where or "the handler")
        + (
            "; the workers waiting for a session's lock are held by that user's slow "
            "request: let it call cherrypy.session.release_lock() before its slow work"
            if locked_out
            else ""
        ),
        kind="pool-starvation",
        details=tuple(details),
    )


def session_lock_wait(thread: ThreadInfo) -> Optional[Frame]:
    """The frame of CherryPy's ``Session.acquire_lock`` (any storage class) the thread waits
    in, among its innermost frames, or None."""
    for frame in thread.stack[:4]:
        if frame.native:
            continue
        path = frame.filename.replace("\\", "/")
        if frame.function == "acquire_lock" and path.endswith("cherrypy/lib/sessions.py"):
            return frame
    return None


def _innermost(thread: ThreadInfo) -> Optional[Frame]:
    return thread.stack[0] if thread.stack else None


@dataclass(frozen=True)
class Route:
    """Busy workers on one route (method and path), and the app frame most of them are in."""

    method: Optional[str]
    path: Optional[str]
    frame: Optional[Frame]
    threads: Tuple[ThreadInfo, ...]

    @property
    def count(self) -> int:
        return len(self.threads)


NAMED_ROUTES = 5
"""Routes of a starved pool listed in its details (the first one names it)."""


def by_route(busy: Sequence[ThreadInfo]) -> List[Route]:
    """Busy workers grouped by method and path, the most workers first (ties: the oldest
    request), each named by ``shared_frame``: the first ``NAMED_ROUTES`` of them."""
    groups: Dict[Tuple[Optional[str], Optional[str]], List[ThreadInfo]] = {}
    for thread in sorted(busy, key=analysis.thread_order):
        request = thread.request
        key = (request.method, request.path) if request is not None else (None, None)
        groups.setdefault(key, []).append(thread)
    routes = [Route(m, p, None, tuple(ts)) for (m, p), ts in groups.items()]
    routes.sort(key=lambda r: (-r.count, -(r.threads[0].elapsed or 0.0)))
    # Only the routes shown are named (a thousand workers may be on hundreds of routes).
    return [replace(r, frame=shared_frame(r.threads)) for r in routes[:NAMED_ROUTES]]


def shared_frame(threads: Sequence[ThreadInfo]) -> Optional[Frame]:
    """The innermost application function that most of ``threads`` are in: where a route's
    workers are, even when each was caught on another line or a few calls deeper (a spinning
    loop). Its line is the one most of them are at."""
    threads = threads[:SAMPLE]
    counts: Dict[Tuple[str, str], int] = {}
    for thread in threads:
        for key in {(f.filename, f.function) for f in thread.stack if f.is_app}:
            counts[key] = counts.get(key, 0) + 1
    for thread in threads:
        for frame in thread.stack:
            if frame.is_app and counts.get((frame.filename, frame.function), 0) * 2 > len(threads):
                return _commonest_line(threads, frame)
    return threads[0].top_app_frame if threads else None


def _commonest_line(threads: Sequence[ThreadInfo], like: Frame) -> Frame:
    lines: Dict[int, Frame] = {}
    counts: Dict[int, int] = {}
    for thread in threads:
        for frame in thread.stack:
            if frame.filename == like.filename and frame.function == like.function:
                lines.setdefault(frame.lineno, frame)
                counts[frame.lineno] = counts.get(frame.lineno, 0) + 1
                break
    best = max(sorted(counts), key=lambda n: counts[n])
    return lines[best]


def _starvation_fix(act: Activity, where: str) -> str:
    if act.spinning:
        return (
            "the handler burns CPU at %s: more threads will not help (one GIL); make that "
            "work cheaper, cache it, or move it out of the request (a job queue or a process "
            "pool)" % where
        )
    return (
        "find what %s waits for (a slow query, a remote call without a timeout, a lock) and "
        "bound it with a timeout; more threads (server.thread_pool) only buy time, and a "
        "request that can take long belongs in a background job" % where
    )


def turning_over(
    snapshot: Snapshot, history: Sequence[Snapshot], pool: PoolInfo, busy: Sequence[ThreadInfo]
) -> bool:
    """The workers are busy with short requests that keep completing (at least a pool's worth
    since the oldest earlier poll, and half the busy ones younger than ``SHORT_REQUEST``): load
    on a pool too small for it, not requests stuck in it."""
    served = snapshot.threads.requests_served if snapshot.threads is not None else None
    first = next(
        (h for h in history if h.threads is not None and h.threads.requests_served is not None),
        None,
    )
    if served is None or first is None or first.threads is None:
        return False
    done = served - (first.threads.requests_served or 0)
    young = sum(1 for t in busy if t.elapsed is not None and t.elapsed < SHORT_REQUEST)
    return done >= max(pool.size, 1) and young * 2 >= len(busy)


SHORT_REQUEST = 1.0
"""Seconds: a request younger than this is one of many, not a stuck one."""

# --- interpreter stuck -----------------------------------------------------------------------

UNRESPONSIVE_NOTE = "agent not answering"
"""What the live session's banner says when the agent did not answer (``sources.live``)."""


GIL_MOVING_NOTE = "the GIL passes between threads running Python"
"""What the live session's banner adds when several threads ran during py-spy's read while the
agent did not answer (``sources.live.GIL_MOVING``): the GIL moves, nothing holds it — said at
the first poll already, before any earlier poll's holder can be compared."""


def gil_moving(snapshot: Snapshot) -> bool:
    """The link's notes say the GIL moved between threads during py-spy's read."""
    return any(GIL_MOVING_NOTE in n for n in snapshot.notes)


def agent_unresponsive(snapshot: Snapshot) -> bool:
    """The target's agent did not answer this poll (the flag, or the banner in the notes of a
    snapshot built before the flag existed); a stopped process (SIGSTOP, a debugger) is not."""
    if snapshot.agent_unresponsive:
        return True
    return any(UNRESPONSIVE_NOTE in n and "may be stuck" in n for n in snapshot.notes)


def _gil_holder(snapshot: Snapshot) -> Optional[ThreadInfo]:
    threads = _threads(snapshot)
    for thread in threads:
        if thread.owns_gil:
            return thread
    if snapshot.gil_holder is not None:
        return next((t for t in threads if t.ident == snapshot.gil_holder), None)
    return None


def _last_request(ident: int, history: Sequence[Snapshot]) -> Optional[ThreadInfo]:
    """The thread ``ident`` as the most recent earlier snapshot saw it with a request."""
    for snap in reversed(history):
        for thread in _threads(snap):
            if thread.ident == ident and thread.request is not None:
                return thread
    return None


def _c_call(frame: Optional[Frame]) -> str:
    """What the innermost frame's C call is, in words."""
    if frame is None:
        return "a C call"
    name = short_file(frame.filename)
    path = frame.filename.replace("\\", "/")
    if name == "re.py" or path.endswith("re/__init__.py") or "sre_" in name or "_sre" in path:
        return "a regular expression"
    if frame.native:
        return "native code"
    return "a C call"


def _earlier_holder(history: Sequence[Snapshot]) -> Optional[ThreadInfo]:
    """The GIL holder of the last earlier poll the agent did not answer either (None when the
    poll before answered, or py-spy named no holder)."""
    if not history or not agent_unresponsive(history[-1]):
        return None
    return _gil_holder(history[-1])


def _gil_passing(
    snapshot: Snapshot, holder: Optional[ThreadInfo], before: Optional[ThreadInfo]
) -> Finding:
    """The agent does not answer, and the GIL is held by another thread than a poll ago (or
    ``before`` None: several threads ran during py-spy's read, ``gil_moving``): not one call
    holding it, but threads running Python and taking turns — the agent waits its turn behind
    them (100 spinning workers make every answer take seconds)."""
    if holder is None:
        # py-spy read between two turns: nobody held the GIL at that instant.
        title = (
            "the agent waits for the GIL: it passes between threads running Python "
            "(%s; none held it at py-spy's read)" % _ran_words(snapshot)
        )
        return Finding(
            id="gil-contention",
            severity=FindingSeverity.WARNING,
            title=title,
            evidence=(),
            fix=GIL_PASSING_FIX,
            kind="gil-contention",
            details=GIL_PASSING_DETAILS,
        )
    running = [
        t
        for t in _threads(snapshot)
        if t.busy
        and t.top_app_frame is not None
        and holder.top_app_frame is not None
        and frame_words(t.top_app_frame) == frame_words(holder.top_app_frame)
    ]
    where = frame_words(holder.top_app_frame or (holder.stack[0] if holder.stack else None))
    if before is not None:
        turns = "%s now, %s a poll ago" % (holder.name or holder.ident, before.name or before.ident)
    else:
        turns = "%s now, others while py-spy read" % (holder.name or holder.ident)
    title = "the agent waits for the GIL: it passes between threads running Python (%s)" % turns
    if where:
        title += ", %d busy in %s" % (len(running), where) if running else ", at %s" % where
    return Finding(
        id="gil-contention",
        severity=FindingSeverity.WARNING,
        title=title,
        evidence=(thread_evidence(holder, holder.stack[0] if holder.stack else None, None),),
        fix=GIL_PASSING_FIX,
        kind="gil-contention",
        details=GIL_PASSING_DETAILS,
    )


GIL_PASSING_FIX = (
    "CPU-bound work in request handlers starves every other thread, the agent's too: "
    "move it out of the request (a task queue, a process pool) or bound its input"
)
GIL_PASSING_DETAILS = (
    "py-spy's threads stand in; requests and pool numbers are the agent's last",
    "one thread holding the GIL in a C call would hold it poll after poll",
)


def _ran_words(snapshot: Snapshot) -> str:
    """``37 ran during py-spy's read``, as the session's banner counted them."""
    for note in snapshot.notes:
        found = re.search(r"\((\d+) ran during py-spy's read\)", note)
        if found:
            return "%s ran during py-spy's read" % found.group(1)
    return "several ran during py-spy's read"


def interpreter_stuck(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    """The agent does not answer and py-spy sees one thread holding the GIL: a C call that
    never lets go of it stops every other thread, the agent's included."""
    if not agent_unresponsive(snapshot):
        # An agent only slow so far (not yet past its timeout) with threads seen taking turns
        # during py-spy's read: the contention is already known, say it at once.
        if not gil_moving(snapshot):
            return []
        return [_gil_passing(snapshot, _gil_holder(snapshot), None)]
    holder = _gil_holder(snapshot)
    if holder is None:
        # Several threads ran during the read: the GIL moves even if py-spy caught no holder.
        return [_gil_passing(snapshot, None, None)] if gil_moving(snapshot) else []
    before = _earlier_holder(history)
    if before is not None and before.ident != holder.ident:
        return [_gil_passing(snapshot, holder, before)]
    if gil_moving(snapshot):
        return [_gil_passing(snapshot, holder, None)]
    known = holder if holder.request is not None else _last_request(holder.ident, history)
    request = known.request if known is not None else None
    inner = holder.stack[0] if holder.stack else None
    app = holder.top_app_frame or (known.top_app_frame if known is not None else None)
    what = _c_call(inner)
    title = "the interpreter is stuck: %s holds the GIL in %s at %s" % (
        holder.name or "thread %d" % holder.ident,
        what,
        frame_words(inner) or "an unknown frame",
    )
    if request is not None:
        title += ", serving %s" % request_words(request)
    words = []
    if request is not None and request.handler:
        words.append("handler %s" % request.handler)
    if app is not None:
        words.append("at %s" % frame_words(app))
    if words:
        title += " (%s)" % ", ".join(words)
    title += "; no other thread runs and the agent cannot answer"
    details = []
    if known is not None and known is not holder:
        details.append("the request is the last one the agent saw on this thread")
    bound = holder.request is not None and holder.request.started_before
    if holder.elapsed is not None:
        if bound:
            details.append(
                "running for at least %s (it ran already when py-spy first looked)"
                % seconds(holder.elapsed)
            )
        else:
            details.append("running for %s" % seconds(holder.elapsed))
    elif bound:  # found running by the only reading (a dump): how long is not known
        details.append("it ran already when py-spy looked; since when is not known")
    evidence = [thread_evidence(holder, inner, request)]
    if snapshot.pid is not None:
        evidence.append(Evidence("process", str(snapshot.pid), "pid %d" % snapshot.pid))
    fix = (
        "%s at %s holds the GIL for as long as it runs: bound its input (its size, its "
        "pattern: nested quantifiers like (a+)+ backtrack exponentially), use a pattern that "
        "cannot backtrack, or run it in a subprocess with a timeout"
        % (what[0].upper() + what[1:], frame_words(app) if app is not None else "the handler")
    )
    return [
        Finding(
            id="interpreter-stuck",
            severity=FindingSeverity.CRITICAL,
            title=title,
            evidence=tuple(evidence),
            fix=fix,
            kind="interpreter-stuck",
            details=tuple(details),
        )
    ]


# --- slow clients ----------------------------------------------------------------------------

SLOW_READ = 2.0
"""Seconds a worker may spend reading one request before its client counts as slow."""


def slow_clients(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    """Workers held for seconds reading a request their client is still sending (slowloris,
    slow uploads, clients on bad links): each holds a worker the whole time."""
    out: List[Finding] = []
    for bind, size, workers in _pool_groups(snapshot):
        slow = [
            t
            for t in workers
            if t.busy
            and t.phase is Phase.READING
            and t.elapsed is not None
            and t.elapsed >= SLOW_READ
        ]
        if not slow:
            continue
        slow.sort(key=analysis.thread_order)
        ages = [t.elapsed or 0.0 for t in slow]
        span = "%.0f s" % min(ages) if len(slow) == 1 else "%.0f–%.0f s" % (min(ages), max(ages))
        critical = size > 0 and len(slow) * 2 >= size
        title = "%d of %d workers held %s by clients still sending their request" % (
            len(slow),
            size,
            span,
        )
        if critical:
            title += " — half the pool or more"
        clients = sorted({t.request.client for t in slow if t.request and t.request.client})
        details = ["%s: %d workers, %d reading for ≥ %.0f s" % (bind, size, len(slow), SLOW_READ)]
        if clients:
            details.append("clients: " + ", ".join(clients[:10]))
        out.append(
            Finding(
                id="slow-clients:%s" % bind,
                severity=FindingSeverity.CRITICAL if critical else FindingSeverity.WARNING,
                title=title,
                evidence=tuple(thread_evidence(t) for t in slow[:MAX_THREAD_EVIDENCE]),
                fix="put a buffering reverse proxy in front (nginx buffers the whole request "
                "before passing it on, so a worker only ever sees complete requests), and "
                "lower server.socket_timeout (seconds a worker waits for the client's next "
                "bytes; 10 by default)",
                kind="slow-clients",
                details=tuple(details),
            )
        )
    return out


def _pool_groups(snapshot: Snapshot) -> List[Tuple[str, int, List[ThreadInfo]]]:
    """``(bind, size, workers)`` per pool; one group of every worker without pool numbers."""
    return [(p.bind, p.size, pool_workers(snapshot, p)) for p in _counted_pools(snapshot)]


# --- the queue: a pool too small, the kernel's accept queue ----------------------------------

QUEUE_POLLS = 2
"""Earlier polls that must have shown a queue too (so three in a row) before it is a finding."""
QUEUE_CRITICAL = 5.0
"""Seconds of a queue that make it critical."""


def _queued_run(
    bind: str, history: Sequence[Snapshot], queued: Callable[[Snapshot, str], int]
) -> Tuple[int, Optional[float], int]:
    """How many consecutive earlier polls (newest back) had a queue on ``bind``, the time of
    the oldest of them, and the most queued in one."""
    polls, since, most = 0, None, 0
    for snap in reversed(history):
        n = queued(snap, bind)
        if n <= 0:
            break
        polls += 1
        since = snap.threads.taken_at if snap.threads is not None else snap.taken_at
        most = max(most, n)
    return polls, since, most


def _pool_queued(snap: Snapshot, bind: str) -> int:
    return next((p.queued for p in _pools(snap) if p.bind == bind), 0)


def queue_wait(snapshot: Snapshot, history: Sequence[Snapshot], starved: Set[str]) -> List[Finding]:
    """Connections waiting in cheroot's queue poll after poll while the workers keep serving:
    the pool is too small for the load (a starved pool is its own finding)."""
    out: List[Finding] = []
    now = snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at
    for pool in _pools(snapshot):
        if pool.queued <= 0 or pool.bind in starved:
            continue
        polls, since, most = _queued_run(pool.bind, history, _pool_queued)
        if polls < QUEUE_POLLS or since is None:
            continue
        waited = now - since
        busy = [t for t in pool_workers(snapshot, pool) if t.busy]
        critical = waited >= QUEUE_CRITICAL or pool.queued >= pool.size
        if turning_over(snapshot, history, pool, busy):
            why = (
                "while all %d workers serve short requests — the pool is too small for the "
                "load" % pool.size
            )
        else:
            why = "%d of %d workers busy" % (pool.busy, pool.size)
        out.append(
            Finding(
                id="queue-wait:%s" % pool.bind,
                severity=FindingSeverity.CRITICAL if critical else FindingSeverity.WARNING,
                title="%s queued for ≥ %s (seen in %d polls) %s"
                % (plural(pool.queued, "connection"), seconds(waited), polls + 1, why),
                evidence=tuple(thread_evidence(t) for t in busy[:MAX_THREAD_EVIDENCE]),
                fix="raise server.thread_pool (%d now): every queued connection waits for a "
                "worker to finish; if the machine's CPU is already busy, more processes behind "
                "a load balancer rather than more threads" % pool.size,
                kind="queue-wait",
                details=(
                    "%s: %d workers, %d busy, %d queued now, up to %d before"
                    % (pool.bind, pool.size, pool.busy, pool.queued, most),
                ),
            )
        )
    return out


def _waiting_run(queue: ListenQueue, history: Sequence[Snapshot]) -> Tuple[int, Optional[float]]:
    """How many consecutive earlier polls (newest back) one of the connections in ``queue``
    was already waiting in, and the time of the oldest of them. Where a poll did not read
    the peers, its count stands in (``_queued_run``'s rule)."""
    still = frozenset(queue.waiting) if queue.waiting is not None else None
    polls, since = 0, None
    for snap in reversed(history):
        earlier = next((q for q in snap.listen_queues if q.bind == queue.bind), None)
        if earlier is None or earlier.queued <= 0:
            break
        if still is not None and earlier.waiting is not None:
            still = still.intersection(earlier.waiting)
            if not still:
                break  # others each time: a busy server accepting as they come
        else:
            still = None
        polls += 1
        since = snap.threads.taken_at if snap.threads is not None else snap.taken_at
    return polls, since


def socket_queue(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    """Connections piling up in the kernel's accept queue of a listening socket: the server
    does not even accept them (its acceptor is blocked, or the interpreter is stuck)."""
    out: List[Finding] = []
    now = snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at
    for queue in snapshot.listen_queues:
        if queue.queued <= 0:
            continue
        polls, since = _waiting_run(queue, history)
        full = queue.backlog is not None and queue.queued >= queue.backlog
        if polls < QUEUE_POLLS and not full:
            continue
        waited = now - since if since is not None else 0.0
        of = " (room for %d)" % queue.backlog if queue.backlog is not None else ""
        title = "%s wait%s in the kernel's accept queue of %s%s for ≥ %s (seen in %s)" % (
            plural(queue.queued, "connection"),
            "s" if queue.queued == 1 else "",
            queue.bind,
            of,
            seconds(waited),
            plural(polls + 1, "poll"),
        )
        if full:
            title += " — it is full: new connections are dropped"
        out.append(
            Finding(
                id="socket-queue:%s" % queue.bind,
                severity=FindingSeverity.CRITICAL
                if full or waited >= QUEUE_CRITICAL
                else FindingSeverity.WARNING,
                title=title,
                evidence=(
                    (Evidence("process", str(snapshot.pid), "pid %d" % snapshot.pid),)
                    if snapshot.pid is not None
                    else ()
                ),
                fix="the server is not accepting connections as fast as they come: its "
                "accepted-connection queue is full (server.accepted_queue_size) or the "
                "interpreter is held; find what holds the workers, then raise "
                "server.thread_pool and server.socket_queue_size (the listen backlog, capped "
                "by net.core.somaxconn)",
                kind="socket-queue",
            )
        )
    return out
