"""The banner under the header: a lost target, a reconnection, a failed poll, degraded data.

Severity: a lost target or a failed poll is an ERROR; a reconnection (or the agent answering
again: ``LinkState.RECONNECTED``) is INFO; any other message from the session — py-spy standing
in for an agent that stopped answering, a process without the agent — and every warning is a
WARNING.

Hidden when there is nothing to say. Every line starts with a glyph (✖ ⚠ ↻ ℹ) so its meaning
survives NO_COLOR; colour repeats it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, List, Optional, Sequence, Tuple

from rich.text import Text
from textual.widgets import Static

from cpinspect.sources.base import LinkState, Update


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class BannerLine:
    severity: Severity
    text: str


_GLYPHS = {Severity.ERROR: "✖", Severity.WARNING: "⚠", Severity.INFO: "↻"}


def banner_lines(update: Optional[Update], poll_error: Optional[str]) -> List[BannerLine]:
    """What the banner says about the newest poll (pure; tested without a terminal)."""
    lines: List[BannerLine] = []
    have_data = update is not None and update.threads is not None
    if poll_error is not None:
        kept = " — showing the last data" if have_data else ""
        lines.append(BannerLine(Severity.ERROR, f"poll failed: {poll_error}{kept}"))
    if update is not None:
        if update.state is LinkState.LOST:
            message = update.message or "target stopped answering — showing the last data"
            lines.append(BannerLine(Severity.ERROR, message))
        elif update.message:
            # Good news (reconnected, the agent answering again) is INFO; anything else the
            # session says while live — py-spy standing in for a silent agent, no agent at
            # all — is a WARNING: the data is there but poorer.
            fallback = update.effective_threads_source is not update.source_kind
            good = update.state is LinkState.RECONNECTED and not fallback
            lines.append(BannerLine(Severity.INFO if good else Severity.WARNING, update.message))
        seen = set()
        for warning in _warnings(update):
            if warning not in seen:
                seen.add(warning)
                lines.append(BannerLine(Severity.WARNING, warning))
    return lines


def _warnings(update: Update) -> Iterable[str]:
    yield from update.warnings
    if update.threads is not None:
        for error in update.threads.errors:
            if not any(error in w for w in update.warnings):
                yield f"probe failed: {error}"


FLAP_HOLD = 10.0
"""Seconds a banner that grew keeps its height when its lines go again: behind spinning workers
the agent answers every few polls, and its "agent slow" line came and went with them, each
time a layout of the whole screen (every widget rendered again, ~0.6 a poll at 1,000 threads
with 100 spinning, the largest part of the UI thread's work). The rows stay, blank, until no
line has come back for this long."""


class Banner(Static):
    """Zero or more lines of trouble; the widget hides itself when there are none (a banner
    that just grew keeps its height blank for ``FLAP_HOLD`` seconds first)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "banner--error",
        "banner--warning",
        "banner--info",
    }

    def __init__(
        self, *, id: Optional[str] = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__("", id=id)
        self.lines: Tuple[BannerLine, ...] = ()
        """The lines on show."""
        self.rows = 0
        """The banner's height in lines: those on show, or more while a shrink is held."""
        self._clock = clock
        self._grew_at: Optional[float] = None
        """When the banner last grew (``clock``): a shrink soon after is held (``FLAP_HOLD``)."""
        self._release: Optional[object] = None
        """The timer that ends a held shrink."""

    def show(self, lines: Sequence[BannerLine]) -> None:
        # One banner line a row (no wrapping): the same number of lines keeps the height, so
        # new words need no layout of the whole screen (behind spinning workers the "agent
        # slow" line's seconds change at every poll).
        now = self._clock()
        rows = len(lines)
        if rows > self.rows:
            self._grew_at = now
        elif (
            rows < self.rows
            and self._grew_at is not None
            and now - self._grew_at < FLAP_HOLD
            and self.is_mounted
        ):
            rows = self.rows  # held: the lines may come back at the next poll
            self._hold(FLAP_HOLD - (now - self._grew_at))
        self._paint(tuple(lines), rows)

    def _hold(self, seconds: float) -> None:
        if self._release is not None:
            self._release.stop()  # type: ignore[attr-defined]
        self._release = self.set_timer(max(seconds, 0.01), self._end_hold, name="banner-hold")

    def _end_hold(self) -> None:
        self._release = None
        if self.rows > len(self.lines):
            self._grew_at = None
            self._paint(self.lines, len(self.lines))

    def _paint(self, lines: Tuple[BannerLine, ...], rows: int) -> None:
        same_height = rows == self.rows
        self.lines, self.rows = lines, rows
        text = Text(no_wrap=True, overflow="ellipsis")
        for index in range(rows):
            if index:
                text.append("\n")
            if index < len(lines):
                line = lines[index]
                style = self.get_component_rich_style(
                    f"banner--{line.severity.value}", partial=True
                )
                text.append(f"{_GLYPHS[line.severity]} {line.text}", style)
            else:
                text.append(" ")  # a held row: blank, one row high
        self.update(text, layout=not same_height)
        self.display = bool(rows)
        worst = min((line.severity for line in self.lines), key=_rank, default=None)
        for severity in Severity:
            self.set_class(severity is worst, f"-{severity.value}")

    @property
    def plain(self) -> str:
        """The banner's text without styles."""
        return "\n".join(f"{_GLYPHS[line.severity]} {line.text}" for line in self.lines)


def _rank(severity: Severity) -> int:
    return list(Severity).index(severity)
