"""What the inspector remembers between updates: pure data, no Textual.

The app feeds every applied ``Update`` to ``InspectorState.apply``; widgets read the result.
Kept apart from the widgets so history and rates are tested without a terminal.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Optional, Tuple

from cpinspect.model import ThreadsSnapshot
from cpinspect.sources.base import Update

HISTORY_SAMPLES = 120
"""Busy-worker samples kept per pool for the sparkline (two minutes at one poll a second)."""
RATE_WINDOW = 10
"""Requests/s is measured over up to this many successive samples."""


class InspectorState:
    """The last applied update plus what is derived across updates."""

    def __init__(self, history: int = HISTORY_SAMPLES) -> None:
        self.update: Optional[Update] = None
        """The update on screen (not the newest one received while paused)."""
        self.busy_history: Dict[str, Deque[int]] = {}
        """Busy workers per pool bind, oldest first."""
        self._history_len = history
        self._served: Deque[Tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        self._last_taken_at: Optional[float] = None
        self._last_pid: Optional[int] = None

    @property
    def threads(self) -> Optional[ThreadsSnapshot]:
        return self.update.threads if self.update is not None else None

    def apply(self, update: Update) -> None:
        """Take ``update`` as the data on screen and record one sample if its data is new.

        A lost link repeats the last snapshot: it adds no sample, so history and rate stay honest.
        """
        self.update = update
        snap = update.threads
        pid = update.info.pid if update.info is not None else None
        if pid is not None and self._last_pid is not None and pid != self._last_pid:
            self._served.clear()  # a restarted process counts from zero again
        if pid is not None:
            self._last_pid = pid
        if snap is None or snap.taken_at == self._last_taken_at:
            return
        self._last_taken_at = snap.taken_at
        for pool in snap.pools:
            samples = self.busy_history.setdefault(pool.bind, deque(maxlen=self._history_len))
            samples.append(pool.busy)
        if snap.requests_served is not None:
            if self._served and snap.requests_served < self._served[-1][1]:
                self._served.clear()
            self._served.append((snap.taken_at, snap.requests_served))

    def requests_per_second(self) -> Optional[float]:
        """Requests completed per second over the last few samples, ``None`` until two exist."""
        if len(self._served) < 2:
            return None
        (t0, n0), (t1, n1) = self._served[0], self._served[-1]
        if t1 <= t0:
            return None
        return (n1 - n0) / (t1 - t0)
