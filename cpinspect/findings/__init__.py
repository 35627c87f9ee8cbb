"""The findings engine: what is wrong with the target, named from one snapshot and its history.

``find_all`` is one pure function from a ``Snapshot`` (plus the earlier snapshots of the same
target the inspector kept, oldest first) to findings, most severe first. Each family lives in a
module of this package as ``(snapshot, history) -> List[Finding]``: ``threads`` (pool
starvation, interpreter stuck, slow clients, the socket queue), ``locks`` (lock contention),
``config`` (autoreloader, errors that go nowhere, static files, forgotten expose, sessions).
Standard library, ``cpinspect.model`` and ``cpinspect.analysis`` only; it runs after every poll,
so it stays cheap (a few ms at 1,000 threads).
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

from cpinspect.findings import config, locks, threads
from cpinspect.model import Finding, FindingSeverity, Snapshot

Family = Callable[[Snapshot, Sequence[Snapshot]], List[Finding]]

FAMILIES: Tuple[Family, ...] = (
    threads.thread_findings,
    locks.lock_findings,
    config.config_findings,
)

_RANK = {FindingSeverity.CRITICAL: 0, FindingSeverity.WARNING: 1, FindingSeverity.INFO: 2}


def find_all(snapshot: Snapshot, history: Sequence[Snapshot] = ()) -> Tuple[Finding, ...]:
    """Most severe first, then by id. ``history``: earlier snapshots of the same target, oldest
    first (only their threads and pools are read)."""
    out: List[Finding] = []
    seen = set()
    for family in FAMILIES:
        for finding in family(snapshot, history):
            if finding.id not in seen:
                seen.add(finding.id)
                out.append(finding)
    out.sort(key=lambda f: (_RANK.get(f.severity, 3), f.id))
    return tuple(out)


__all__ = ["FAMILIES", "find_all"]
