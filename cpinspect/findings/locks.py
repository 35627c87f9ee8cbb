"""Lock contention (written by the locks helper; this placeholder finds nothing)."""

from __future__ import annotations

from typing import List, Sequence

from cpinspect.model import Finding, Snapshot


def lock_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    return []
