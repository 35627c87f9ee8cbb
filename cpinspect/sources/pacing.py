"""How often to poll: as often as asked, never faster than the target answers cheaply (issue 13).

A poll that takes a large part of the interval means the target (or the box) is struggling:
polling on at the same rate would queue polls and keep a thread of the target busy answering.
``next_interval`` stretches the interval to a multiple of the last poll's duration and brings it
back down step by step when polls get fast again::

    pace = Pace(configured=1.0)
    while True:
        started = time.monotonic()
        poll()
        pace = pace.after(time.monotonic() - started)
        time.sleep(max(0.0, pace.interval - (time.monotonic() - started)))

The TUI's poll timer uses it (``tui/app.py``) and says ``pace.note`` in the header; a headless
loop may use it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

STRETCH = 1.5
"""The next poll starts at least this many times the last poll's duration after it started: the
inspector spends at most two thirds of its time polling (a poll at 1,000 threads waits for
py-spy's read of the GIL holder, 0.5-2 s on a loaded 2-core box)."""
RELAX = 0.5
"""When polls get fast again, the interval comes down by this fraction of what it is above the
wanted one per poll (a single fast answer does not bring the full rate back at once)."""
SNAP = 0.05
"""Within this fraction of the configured interval, the interval is the configured one."""
LONGEST = 30.0
"""The interval is never stretched past this many seconds (or the configured one if longer):
a target that answers again is seen again soon."""


def next_interval(configured: float, duration: float, previous: Optional[float] = None) -> float:
    """Seconds from the start of the poll that took ``duration`` to the start of the next one.

    ``max(configured, STRETCH * duration)`` when that is at least the ``previous`` interval;
    otherwise the interval comes down towards it by ``RELAX`` of the difference per poll, and
    is the configured one once within ``SNAP`` of it.
    """
    if configured <= 0:
        raise ValueError(f"the configured interval must be positive, not {configured!r}")
    longest = max(configured, LONGEST)
    wanted = min(longest, max(configured, STRETCH * max(0.0, duration)))
    if previous is None or wanted >= previous:
        return wanted
    relaxed = max(wanted, previous - RELAX * (previous - wanted))
    if relaxed - configured <= SNAP * configured:
        return configured
    return min(relaxed, longest)


@dataclass(frozen=True)
class Pace:
    """The polling interval in force: the configured one, or stretched after slow polls."""

    configured: float
    interval: float = 0.0
    """Seconds between the starts of two polls (the configured interval until a poll ends)."""
    last_duration: Optional[float] = None
    """How long the last poll took, in seconds."""

    def __post_init__(self) -> None:
        if self.configured <= 0:
            raise ValueError(f"the configured interval must be positive, not {self.configured!r}")
        if self.interval <= 0:
            object.__setattr__(self, "interval", self.configured)

    @property
    def stretched(self) -> bool:
        """Polls come less often than configured because the target answers slowly."""
        return self.interval > self.configured * (1 + SNAP)

    @property
    def note(self) -> Optional[str]:
        """What the header says while stretched: ``polling every 2.4 s: the target answers
        slowly``; None at the configured rate."""
        if not self.stretched:
            return None
        return f"polling every {format_interval(self.interval)}: the target answers slowly"

    def after(self, duration: float) -> Pace:
        """The pace once a poll that took ``duration`` seconds has ended."""
        interval = next_interval(self.configured, duration, self.interval)
        return Pace(self.configured, interval, duration)

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll, ``elapsed`` seconds after the last one started."""
        return max(0.0, self.interval - elapsed)


def format_interval(seconds: float) -> str:
    """``2.4 s`` (a tenth of a second under a minute), ``45 s``, ``2.5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"
