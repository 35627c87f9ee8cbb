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
        try:
            found = family(snapshot, history)
        except Exception as error:  # noqa: BLE001 - one family's bug must not hide the others
            found = [_failed(family, error)]
        for finding in found:
            if finding.id not in seen:
                seen.add(finding.id)
                out.append(finding)
    out.sort(key=lambda f: (_RANK.get(f.severity, 3), f.id))
    return tuple(out)


def _failed(family: Family, error: Exception) -> Finding:
    """What is said in place of a family's findings when it fails (a bug: data it did not
    expect), so that the other families' still show."""
    where = getattr(family, "__module__", "?").rsplit(".", 1)[-1]
    return Finding(
        id="findings-error:%s" % where,
        severity=FindingSeverity.INFO,
        title="the %s findings could not be worked out: %s: %s"
        % (where, type(error).__name__, str(error)[:200]),
        fix="a bug in cpinspect: please report it with the snapshot (s) that shows it",
        kind="findings-error",
    )


__all__ = ["FAMILIES", "find_all"]
