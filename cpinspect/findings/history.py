"""The short history the findings compare against (spinning or waiting, a queue that lasts, a
finding that holds): the earlier snapshots of one target, threads and pools only, oldest first.

One implementation for the TUI's store, ``cpinspect watch`` and the captures.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Sequence, Tuple

from cpinspect.model import Snapshot

HISTORY_SECONDS = 60.0
"""Earlier snapshots older than this say nothing of now."""
HISTORY_MAX = 120
"""…and never more of them than this, whatever the interval."""


def lean(snapshot: Snapshot) -> Snapshot:
    """What the findings read of an earlier snapshot: its threads, pools and listen queues."""
    return Snapshot(
        taken_at=snapshot.taken_at,
        source=snapshot.source,
        info=snapshot.info,
        threads=snapshot.threads,
        gil_holder=snapshot.gil_holder,
        agent_unresponsive=snapshot.agent_unresponsive,  # whether the GIL holder changed
        listen_queues=snapshot.listen_queues,  # the socket-queue finding's past polls
    )


def window(snapshot: Snapshot, earlier: Sequence[Snapshot]) -> List[Snapshot]:
    """The snapshots of ``earlier`` within ``HISTORY_SECONDS`` before ``snapshot``."""
    since = snapshot.taken_at - HISTORY_SECONDS
    return [s for s in earlier if since <= s.taken_at < snapshot.taken_at]


class History:
    """The last ``HISTORY_SECONDS`` of snapshots of one target (at most ``HISTORY_MAX``)."""

    def __init__(self) -> None:
        self._kept: Deque[Snapshot] = deque(maxlen=HISTORY_MAX)

    def remember(self, snapshot: Snapshot) -> None:
        kept = self._kept
        if kept and kept[-1].pid != snapshot.pid:
            kept.clear()  # another process (restarted): its past says nothing of this one
        kept.append(lean(snapshot))
        while kept and kept[0].taken_at < snapshot.taken_at - HISTORY_SECONDS:
            kept.popleft()

    def snapshots(self) -> Tuple[Snapshot, ...]:
        """Oldest first."""
        return tuple(self._kept)
