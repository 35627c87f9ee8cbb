"""What the inspector remembers between updates: pure data, no Textual.

The app feeds every applied ``Update`` to ``InspectorState.apply``; widgets read the result.
Kept apart from the widgets so history and rates are tested without a terminal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
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
        self._threads: Optional[ThreadsSnapshot] = None
        self.pools_taken_at: Optional[float] = None
        """When the pool numbers on screen were read; they go stale while the agent is silent."""
        self._history_len = history
        self._served: Deque[Tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        self._last_taken_at: Optional[float] = None
        self._last_pid: Optional[int] = None

    @property
    def threads(self) -> Optional[ThreadsSnapshot]:
        """The threads on screen, the GIL holder marked even when only the update names it."""
        return self._threads

    @property
    def pools_stale(self) -> bool:
        """The pool numbers are older than the threads (the agent does not answer)."""
        return self.update is not None and "pools" in self.update.stale

    def pools_age(self, now: float) -> Optional[float]:
        """Seconds since the pool numbers on screen were read, if known."""
        if self.pools_taken_at is None:
            return None
        return max(0.0, now - self.pools_taken_at)

    def apply(self, update: Update) -> None:
        """Take ``update`` as the data on screen and record one sample if its data is new.

        A lost link repeats the last snapshot: it adds no sample, so history and rate stay honest.
        Stale pool numbers (kept while py-spy stands in for the agent) add none either.
        """
        self.update = update
        self._threads = with_gil_holder(update.threads, update.gil_holder)
        snap = update.threads
        pools_fresh = "pools" not in update.stale
        pid = update.info.pid if update.info is not None else None
        if pid is not None and self._last_pid is not None and pid != self._last_pid:
            self._served.clear()  # a restarted process counts from zero again
        if pid is not None:
            self._last_pid = pid
        if snap is None or snap.taken_at == self._last_taken_at:
            return
        self._last_taken_at = snap.taken_at
        if not pools_fresh:
            return
        self.pools_taken_at = snap.taken_at
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


def with_gil_holder(
    snap: Optional[ThreadsSnapshot], ident: Optional[int]
) -> Optional[ThreadsSnapshot]:
    """``snap`` with thread ``ident`` marked as holding the GIL (py-spy saw it), if not already."""
    if snap is None or ident is None:
        return snap
    if any(t.ident == ident and t.owns_gil for t in snap.threads):
        return snap
    threads = tuple(replace(t, owns_gil=True) if t.ident == ident else t for t in snap.threads)
    return replace(snap, threads=threads)
