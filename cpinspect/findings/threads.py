"""Findings from the threads and pools: pool starvation (more to come)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cpinspect import analysis
from cpinspect.findings.common import (
    frame_words,
    plural,
    short_file,
    thread_evidence,
)
from cpinspect.model import (
    Finding,
    FindingSeverity,
    Frame,
    Phase,
    PoolInfo,
    Role,
    Snapshot,
    ThreadInfo,
)

FULL_POLLS = 2
"""A pool at its size with every worker busy (no queue seen) for this many earlier polls too
is starved: cheroot does not always count the connections waiting for it."""


def thread_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    out: List[Finding] = []
    out.extend(pool_starvation(snapshot, history))
    return out


# --- who a pool's workers are ----------------------------------------------------------------


def _threads(snapshot: Snapshot) -> Tuple[ThreadInfo, ...]:
    return snapshot.threads.threads if snapshot.threads is not None else ()


def _pools(snapshot: Snapshot) -> Tuple[PoolInfo, ...]:
    return snapshot.threads.pools if snapshot.threads is not None else ()


def pool_workers(snapshot: Snapshot, pool: PoolInfo) -> List[ThreadInfo]:
    """The worker threads of ``pool``: those the source tied to its bind address, or every
    worker when there is one pool and no thread says which it belongs to."""
    workers = [t for t in _threads(snapshot) if t.role is Role.WORKER]
    mine = [t for t in workers if t.pool == pool.bind]
    if not mine and len(_pools(snapshot)) == 1:
        mine = [t for t in workers if t.pool is None]
    return mine


def _full(pool: PoolInfo) -> bool:
    return pool.size > 0 and pool.busy >= pool.size


def _full_before(pool: PoolInfo, history: Sequence[Snapshot], polls: int) -> int:
    """How many of the last ``polls`` earlier snapshots had ``pool`` full (stops at a gap)."""
    count = 0
    for snap in reversed(history[-polls:]):
        before = next((p for p in _pools(snap) if p.bind == pool.bind), None)
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


def cpu_shares(
    threads: Sequence[ThreadInfo], snapshot: Snapshot, history: Sequence[Snapshot]
) -> Tuple[Dict[int, float], float]:
    """Share of a core each thread used since the oldest earlier snapshot in which it held the
    same request (its CPU time known in both), and the longest span measured."""
    now = snapshot.threads.taken_at if snapshot.threads is not None else snapshot.taken_at
    wanted = {t.ident: t for t in threads if t.cpu_time is not None}
    out: Dict[int, float] = {}
    wall = 0.0
    for snap in history:
        if not wanted:
            break
        if snap.threads is None:
            continue
        then = snap.threads.taken_at
        if now - then <= 0:
            continue
        index = snap.threads.by_ident()
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


def activity(
    threads: Sequence[ThreadInfo], snapshot: Snapshot, history: Sequence[Snapshot]
) -> Activity:
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
        spinning = sum(1 for v in values if v >= analysis.SPINNING_SHARE) * 2 > len(values)
        return Activity(spinning, None if spinning else waits_on, median, wall, len(shares))
    if kinds and sum(kinds.values()) * 2 > len(threads):
        return Activity(False, waits_on, None, 0.0, 0)
    return Activity(None, None, None, 0.0, 0)


def activity_words(act: Activity) -> str:
    """``waiting on I/O`` / ``spinning on the CPU (92 % of a core each)`` / ``""``."""
    if act.spinning:
        share = " (%.0f %% of a core each)" % (act.share * 100) if act.share is not None else ""
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
    for pool in _pools(snapshot):
        if not _full(pool):
            continue
        held = _full_before(pool, history, FULL_POLLS)
        if pool.queued <= 0 and held < FULL_POLLS:
            continue
        busy = [t for t in pool_workers(snapshot, pool) if t.busy]
        reading = [t for t in busy if t.phase is Phase.READING]
        if busy and len(reading) * 2 >= len(busy):
            continue  # clients still sending hold them: the slow-clients finding says so
        out.append(_starved(snapshot, history, pool, busy, held))
    return out


def _starved(
    snapshot: Snapshot,
    history: Sequence[Snapshot],
    pool: PoolInfo,
    busy: List[ThreadInfo],
    held: int,
) -> Finding:
    groups = analysis.route_groups(busy)
    size = pool.size
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
    details = ["%s: %d workers, %d busy, %d queued" % (pool.bind, size, pool.busy, pool.queued)]
    for group in groups[:5]:
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
    ordered = list(members) + [t for t in busy if t not in members]
    return Finding(
        id="pool-starvation:%s" % pool.bind,
        severity=FindingSeverity.CRITICAL,
        title=title,
        evidence=tuple(thread_evidence(t) for t in ordered),
        fix=_starvation_fix(act, where_of(members)),
        kind="pool-starvation",
        details=tuple(details),
    )


def _innermost(thread: ThreadInfo) -> Optional[Frame]:
    return thread.stack[0] if thread.stack else None


def where_of(threads: Sequence[ThreadInfo]) -> str:
    frame = threads[0].top_app_frame if threads else None
    return frame_words(frame) or "the handler"


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
