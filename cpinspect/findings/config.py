"""Findings from the target's configuration and records: sessions (``analysis``) for now."""

from __future__ import annotations

from typing import List, Sequence

from cpinspect import analysis
from cpinspect.model import Finding, Snapshot


def config_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    out: List[Finding] = []
    if snapshot.sessions is not None:
        out.extend(analysis.session_findings(snapshot.sessions))
    return out
