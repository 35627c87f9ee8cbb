"""Lock contention: several threads blocked on the same lock, with its holder when it can be known.

With the agent, a thread entry's ``wait`` names the lock (its expression and an object token)
and ``holds`` marks a thread whose frame sits inside a ``with`` block on that same object: its
likely holder (an ``RLock`` records its owner: then the holder is certain). Without the agent
(py-spy's stacks), threads whose innermost Python frame stands on the same line, a line whose
captured source is ``with …:`` or ``….acquire(``, are taken to wait on the same lock; the
holder is not known then.

The session-lock case (a session held by a slow request of the same user) is
``analysis.session_findings``'s. Standard library and ``cpinspect.model`` only; linear in the
threads (the history is read only while some lock has waiters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from cpinspect.model import (
    Evidence,
    Finding,
    FindingSeverity,
    Frame,
    PoolInfo,
    Role,
    Snapshot,
    SourceKind,
    ThreadInfo,
)

MIN_WAITERS = 2
"""Threads that must wait on one lock for a finding: one waiter is an ordinary hand-over."""
MIN_WAIT = 0.5
"""Seconds the longest waiter must have waited (an estimate, see ``_waited``): locks taken for
microseconds by a busy app meet two waiters at one instant now and then, and that is no
incident."""
LONG_WAIT = 5.0
"""Seconds of waiting that make the contention critical whatever the share of the pool."""

_WITH_LINE = re.compile(r"^\s*(?:async\s+)?with\s+(.+?)(?:\s+as\s+[^:]+)?\s*:")
_PLAIN_EXPR = re.compile(r"^[A-Za-z_][\w.]*(?:\[[^\[\]()]*\])?$")
_ACQUIRE_CALL = re.compile(r"([A-Za-z_][\w.]*)\s*\.\s*(?:acquire|__enter__)\s*\(")


@dataclass
class _Group:
    """The waiters of one lock (agent: one object; py-spy: one source line)."""

    key: str
    waiters: List[ThreadInfo] = field(default_factory=list)
    sites: Dict[Tuple[str, int], int] = field(default_factory=dict)
    exprs: Dict[str, int] = field(default_factory=dict)
    owner: Optional[int] = None
    kind: str = ""
    """The lock's type name (agent), ``""`` when read from a line."""


def lock_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    threads = snapshot.threads.threads if snapshot.threads is not None else ()
    if not threads:
        return []
    groups = _agent_groups(threads)
    from_agent = bool(groups) or snapshot.source in (SourceKind.AGENT, SourceKind.BOTH)
    if not from_agent:
        groups = _line_groups(snapshot, threads)
    out: List[Finding] = []
    for group in groups.values():
        if len(group.waiters) < MIN_WAITERS:
            continue
        finding = _finding(snapshot, history, group, from_agent)
        if finding is not None:
            out.append(finding)
    return out


# --- who waits on what ---------------------------------------------------------------------------


def _agent_groups(threads: Sequence[ThreadInfo]) -> Dict[str, _Group]:
    groups: Dict[str, _Group] = {}
    for t in threads:
        wait = t.wait
        if wait is None:
            continue
        group = groups.get(wait.obj)
        if group is None:
            group = groups[wait.obj] = _Group(key=wait.obj, kind=wait.type)
        group.waiters.append(t)
        site = (wait.filename, wait.lineno)
        group.sites[site] = group.sites.get(site, 0) + 1
        group.exprs[wait.expr] = group.exprs.get(wait.expr, 0) + 1
        if wait.owner is not None:
            group.owner = wait.owner
    return groups


def lock_frame(thread: ThreadInfo) -> Optional[Frame]:
    """The innermost Python frame, or its caller when it is ``threading``'s ``__enter__`` (a
    ``with`` on a Condition blocks one frame further in)."""
    first: Optional[Frame] = None
    for frame in thread.stack:
        if frame.native:
            continue
        if first is not None:
            return frame  # the caller of threading's __enter__
        if not frame.filename.endswith("threading.py"):
            return frame
        if frame.function != "__enter__" or _short_file(frame.filename) != "threading.py":
            return None
        first = frame
    return None


def lock_expr_of_line(text: Optional[str]) -> Optional[str]:
    """``LEDGER_LOCK`` of ``with LEDGER_LOCK:``, ``x.lock`` of ``x.lock.acquire()``; None when the
    line takes no lock that way. Only names, attributes and subscripts count as a lock: ``with
    open(path) as f:`` blocked in C is I/O, not a lock (a call's result cannot be told apart
    from the line alone)."""
    if not text:
        return None
    m = _WITH_LINE.match(text)
    if m is not None:
        expr = m.group(1).strip()
        return expr if _PLAIN_EXPR.match(expr) else None
    m = _ACQUIRE_CALL.search(text)
    return m.group(1) if m is not None else None


def _line_groups(snapshot: Snapshot, threads: Sequence[ThreadInfo]) -> Dict[str, _Group]:
    groups: Dict[str, _Group] = {}
    exprs: Dict[Tuple[str, int], Optional[str]] = {}
    texts = {(s.filename, s.lineno): s.text for s in snapshot.source_lines}
    for t in threads:
        frame = lock_frame(t)
        if frame is None:
            continue
        site = frame.location
        if site not in exprs:
            exprs[site] = lock_expr_of_line(texts.get(site))
        expr = exprs[site]
        if expr is None:
            continue
        key = "%s:%d" % site
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key=key)
        group.waiters.append(t)
        group.sites[site] = group.sites.get(site, 0) + 1
        group.exprs[expr] = group.exprs.get(expr, 0) + 1
    return groups


def _most(counts: Dict[str, int]) -> str:
    return min(counts, key=lambda k: (-counts[k], k))


def _site(group: _Group) -> Tuple[str, int]:
    return min(group.sites, key=lambda s: (-group.sites[s], s))


# --- how long ------------------------------------------------------------------------------------


def _request_key(thread: ThreadInfo) -> Optional[float]:
    return thread.request.started_at if thread.request is not None else None


def _waiting_in(snap: Snapshot, group: _Group, site: Tuple[str, int]) -> Dict[int, Optional[float]]:
    """The threads of an earlier snapshot waiting on ``group``'s lock -> their request start."""
    out: Dict[int, Optional[float]] = {}
    for t in snap.threads.threads if snap.threads is not None else ():
        if t.wait is not None:
            if t.wait.obj == group.key:
                out[t.ident] = _request_key(t)
        elif not group.kind:  # read from lines (py-spy): the same innermost line
            frame = lock_frame(t)
            if frame is not None and frame.location == site:
                out[t.ident] = _request_key(t)
    return out


def _waited(
    snapshot: Snapshot,
    history: Sequence[Snapshot],
    group: _Group,
    site: Tuple[str, int],
    how: Dict[int, str],
) -> Dict[int, Optional[float]]:
    """Per waiter, seconds it has waited, estimated: since the earliest of the earlier snapshots
    that saw it waiting on the same lock in the same request, the run taken as unbroken (a
    binary search: a few snapshots read, not all 60); a waiter the latest earlier snapshot did
    not see waiting began after it (at most that long ago) and after its request started.
    None: no earlier snapshot and no request start (py-spy alone, once). ``how`` gets, per
    waiter, "" (about that long: seen starting between two snapshots), "≥" (it already waited
    in the oldest snapshot kept) or "≤" (an upper bound: the request's age, the poll gap)."""
    out: Dict[int, Optional[float]] = {}
    how.clear()
    memo: Dict[int, Dict[int, Optional[float]]] = {}

    def waits_at(i: int, ident: int, request: Optional[float]) -> bool:
        seen = memo.get(i)
        if seen is None:
            seen = memo[i] = _waiting_in(history[i], group, site)
        return ident in seen and seen[ident] == request

    last = len(history) - 1
    newest = history[last].taken_at if history else None
    for t in group.waiters:
        request = _request_key(t)
        if last >= 0 and waits_at(last, t.ident, request):
            lo, hi = 0, last  # it waits at hi; find the earliest such index
            while lo < hi:
                mid = (lo + hi) // 2
                if waits_at(mid, t.ident, request):
                    hi = mid
                else:
                    lo = mid + 1
            out[t.ident] = max(0.0, snapshot.taken_at - history[hi].taken_at)
            how[t.ident] = "≥" if hi == 0 else ""
            continue
        # The agent's request age bounds the wait; py-spy's (since it first saw the thread
        # busy, its request read from the frames' locals) bounds nothing.
        agent_age = t.request is not None and t.request.source != "py-spy"
        bound = t.elapsed if agent_age else None
        if newest is not None:
            gap = max(0.0, snapshot.taken_at - newest)
            bound = gap if bound is None else min(bound, gap)
        out[t.ident] = bound
        how[t.ident] = "≤"
    return out


# --- the finding ---------------------------------------------------------------------------------


def _holder(
    threads: Sequence[ThreadInfo], group: _Group
) -> Tuple[Optional[ThreadInfo], List[ThreadInfo], bool]:
    """(the holder, other candidates, certain?) of a group's lock."""
    waiting = {t.ident for t in group.waiters}
    if group.owner is not None:
        owner = next((t for t in threads if t.ident == group.owner), None)
        if owner is not None:
            return owner, [], True
    likely = [
        t for t in threads if t.ident not in waiting and any(h.obj == group.key for h in t.holds)
    ]
    if likely:
        return likely[0], likely[1:], False
    return None, [], False


def _pool_of(snapshot: Snapshot, waiters: Sequence[ThreadInfo]) -> Optional[PoolInfo]:
    pools = snapshot.threads.pools if snapshot.threads is not None else ()
    binds = {t.pool for t in waiters if t.pool is not None}
    for pool in pools:
        if pool.bind in binds:
            return pool
    return pools[0] if len(pools) == 1 else None


def _finding(
    snapshot: Snapshot, history: Sequence[Snapshot], group: _Group, from_agent: bool
) -> Optional[Finding]:
    threads = snapshot.threads.threads if snapshot.threads is not None else ()
    site = _site(group)
    how: Dict[int, str] = {}
    waited = _waited(snapshot, history, group, site, how)
    known = [w for w in waited.values() if w is not None]
    longest = max(known) if known else None
    longest_how = next((how[i] for i, w in waited.items() if w == longest), "")
    if longest is not None and longest < MIN_WAIT:
        return None
    expr = _most(group.exprs)
    holder, others, certain = _holder(threads, group)
    waiters = sorted(group.waiters, key=lambda t: (-(waited.get(t.ident) or 0.0), t.ident))
    n = len(waiters)
    who = "workers" if all(t.role is Role.WORKER for t in waiters) else "threads"
    where = "%s:%d" % (_short_file(site[0]), site[1])

    pool = _pool_of(snapshot, waiters)
    held_workers = n + (1 if holder is not None and holder.role is Role.WORKER else 0)
    most_of_pool = pool is not None and pool.size > 0 and held_workers * 2 > pool.size
    critical = most_of_pool or (longest is not None and longest >= LONG_WAIT)

    if holder is not None:
        holding = "%sheld by %s%s" % (
            "" if certain else "likely ",
            _thread_name(holder),
            _in_request(holder),
        )
        if others:
            holding += " or %s" % ", ".join(_thread_name(t) for t in others[:3])
    elif group.owner is not None:
        holding = "held by thread %d, not in this snapshot" % group.owner
    elif from_agent and group.kind == "_thread.lock":
        holding = "holder unknown: a Lock records no owner and no thread is inside a with on it"
    else:
        holding = "holder unknown"
    title = "%d %s wait on %s at %s (%s)" % (n, who, expr, where, holding)

    details = [
        "longest wait %s%s (%s)" % (longest_how, _seconds(longest), _waited_basis(longest_how))
        if longest is not None
        else "how long they wait is not known (one look, no request ages)"
    ]
    if pool is not None:
        details.append(
            "%d of the %d workers of %s are held by this lock"
            % (held_workers, pool.size, pool.bind)
        )
    if holder is not None and holder.elapsed is not None and holder.request is not None:
        details.append(
            "%s: how long the holder's request has run (it took the lock during it)"
            % _seconds(holder.elapsed)
        )
    if holder is not None and certain:
        details.append("the holder is certain: the RLock records its owner")
    elif holder is not None:
        held = next((h for h in holder.holds if h.obj == group.key), None)
        if held is not None:
            details.append(
                "likely: %s is inside `with %s:` at %s:%d (a Lock records no owner)"
                % (_thread_name(holder), held.expr, _short_file(held.filename), held.lineno)
            )
    if not from_agent:
        details.append(
            "read from py-spy's stacks and the source lines: the same line, not "
            "the same object (the agent would tell)"
        )

    evidence: List[Evidence] = []
    key = group.key
    if holder is not None:
        evidence.append(_evidence(holder, "holds" if certain else "likely holds", expr, key))
    evidence.extend(_evidence(t, "likely holds", expr, key) for t in others)
    evidence.extend(
        _evidence(t, _waits_words(waited.get(t.ident), how.get(t.ident, "")), expr, key)
        for t in waiters
    )
    return Finding(
        id="lock-contention:%s:%d" % site,
        severity=FindingSeverity.CRITICAL if critical else FindingSeverity.WARNING,
        title=title,
        evidence=tuple(evidence),
        fix="keep the slow work out of the lock: do the I/O, remote calls or long computations "
        "of the code under `%s` before or after it, or make the waiters give up (acquire("
        "timeout=...)); the holder's stack shows what it does while it holds the lock" % expr,
        kind="lock-contention",
        details=tuple(details),
    )


def _waits_words(waited: Optional[float], how: str) -> str:
    return "waits %s%s on" % (how, _seconds(waited)) if waited is not None else "waits on"


def _waited_basis(how: str) -> str:
    if how == "≥":
        return "already waiting in the oldest earlier poll kept"
    if how == "≤":
        return "at most: its request's age or the time since the last poll"
    return "seen starting to wait between two polls"


def _evidence(thread: ThreadInfo, what: str, expr: str, key: str) -> Evidence:
    """``CP Server Thread-7  likely holds LEDGER_LOCK  POST /transfer  12.3 s  ledger.py:41``:
    the place is where it waits, where its with block on the lock starts, else its top app
    frame (an RLock's owner may hold it anywhere)."""
    parts = [_thread_name(thread), "%s %s" % (what, expr)]
    if thread.request is not None:
        parts.append("%s %s" % (thread.request.method, thread.request.target))
    if thread.elapsed is not None:
        parts.append(_seconds(thread.elapsed))
    held = next((h for h in thread.holds if h.obj == key), None)
    if thread.wait is not None:
        parts.append("%s:%d" % (_short_file(thread.wait.filename), thread.wait.lineno))
    elif held is not None:
        parts.append("%s:%d" % (_short_file(held.filename), held.lineno))
    else:
        frame = lock_frame(thread) if "wait" in what else thread.top_app_frame
        if frame is not None:
            parts.append("%s:%d" % (_short_file(frame.filename), frame.lineno))
    return Evidence("thread", str(thread.ident), "  ".join(parts))


def _thread_name(thread: ThreadInfo) -> str:
    return thread.name or "thread %d" % thread.ident


def _in_request(thread: ThreadInfo) -> str:
    if thread.request is None:
        return ""
    text = " in %s %s" % (thread.request.method, thread.request.path)
    if thread.elapsed is not None:
        text += " for %s" % _seconds(thread.elapsed)
    return text


def _short_file(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def _seconds(value: float) -> str:
    if value >= 100:
        return "%.0f s" % value
    return "%.1f s" % value if value >= 0.1 else "%.0f ms" % (value * 1000)
