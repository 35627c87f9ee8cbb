"""One line per worker pool: busy/size gauge, queue, oldest request, busy history, requests/s.

The line is laid out for the width it gets: the sparkline takes the room left over, and when
there is too little room the least important parts go first (the saturation marker, the busy
count and the queue stay). Numbers kept from before the agent fell silent say ``stale`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from cpinspect.formatting import (
    GAUGE_EMPTY,
    GAUGE_FULL,
    format_duration,
    format_rate,
    gauge,
    is_saturated,
    sparkline,
)
from cpinspect.model import PoolInfo, ThreadsSnapshot

SPARK_MIN = 4
SPARK_MAX = 60
SEPARATOR = "  "


@dataclass(frozen=True)
class PoolBarState:
    snapshot: Optional[ThreadsSnapshot]
    history: Tuple[Tuple[str, Tuple[int, ...]], ...]
    """Busy samples per pool bind, oldest first."""
    rate: Optional[float]
    """Requests per second, ``None`` until two samples exist."""
    stale: bool = False
    """The pool numbers are older than the threads: the agent, their only source, is silent."""
    stale_age: Optional[float] = None
    """Seconds since the stale numbers were read, when known (rounded to a tenth)."""

    @classmethod
    def build(
        cls,
        snapshot: Optional[ThreadsSnapshot],
        history: Dict[str, Sequence[int]],
        rate: Optional[float],
        stale: bool = False,
        stale_age: Optional[float] = None,
    ) -> PoolBarState:
        age = round(stale_age, 1) if stale and stale_age is not None else None
        return cls(snapshot, tuple((k, tuple(v)) for k, v in history.items()), rate, stale, age)

    @property
    def stale_text(self) -> str:
        """``stale 12.0 s old``: the word carries the meaning without colour."""
        if not self.stale:
            return ""
        if self.stale_age is None:
            return "stale"
        return f"stale {format_duration(self.stale_age)} old"


class PoolBar(Widget):
    """``Pool ████████░░ 8/10 busy  queued 3  oldest 48.2 s  ▁▂▄▇█  5 req/s  ⚠ pool saturated``."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "pool-bar--label",
        "pool-bar--busy",
        "pool-bar--free",
        "pool-bar--saturated",
        "pool-bar--queued",
        "pool-bar--spark",
        "pool-bar--muted",
        "pool-bar--stale",
    }

    state: reactive[Optional[PoolBarState]] = reactive(None)
    """The snapshot, history and rate to show. A new state repaints the bar alone; the screen
    is laid out again only when the bar's height (its number of pools) changes — a layout
    re-renders every widget on screen, and the state changes at every poll."""

    def watch_state(self, old: Optional[PoolBarState], new: Optional[PoolBarState]) -> None:
        if _height(old) != _height(new):
            self.refresh(layout=True)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"pool-bar--{name}", partial=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return _height(self.state)

    def render(self) -> Text:
        width = self.size.width
        state = self.state
        snap = state.snapshot if state else None
        rate = state.rate if state else None
        if snap is None:
            return Text.assemble(
                ("Pool", self._style("label")), ("  waiting for data…", self._style("muted"))
            )
        stale = state.stale_text if state else ""
        if not snap.pools_available or not snap.pools:
            note = snap.pools_note or "no cheroot server found"
            text = Text.assemble(("Pool", self._style("label")))
            if stale:
                text.append(" ")
                text.append(stale, self._style("stale"))
            text.append(f"  pool numbers unavailable: {note}", self._style("muted"))
            if snap.requests_served is not None:
                text.append(SEPARATOR + format_rate(rate))
            text.truncate(width, overflow="ellipsis")
            return text
        history = dict(state.history) if state else {}
        lines = Text()
        many = len(snap.pools) > 1
        for index, pool in enumerate(snap.pools):
            if index:
                lines.append("\n")
            line_rate = (
                format_rate(rate) if index == 0 and snap.requests_served is not None else None
            )
            label = pool.bind if many else "Pool"
            lines.append_text(
                self._pool_line(pool, label, history.get(pool.bind, ()), line_rate, width, stale)
            )
        return lines

    def _pool_line(
        self,
        pool: PoolInfo,
        label: str,
        samples: Sequence[int],
        rate: Optional[str],
        width: int,
        stale: str = "",
    ) -> Text:
        saturated = is_saturated(pool)
        filled, empty = gauge(pool.busy, pool.size, 10 if width >= 90 else 4)
        busy_style = self._style("saturated" if saturated else "busy")
        meter = Text.assemble(
            (GAUGE_FULL * filled, busy_style), (GAUGE_EMPTY * empty, self._style("free"))
        )
        meter.append(f" {pool.busy}/{pool.size} busy")
        queued = Text(f"queued {pool.queued}", self._style("queued") if pool.queued else Style())
        # (priority, text) in display order; ``None`` stands for the sparkline, which takes the
        # room left over. The lowest priority goes first when the line is too long.
        title = Text(label, self._style("label"))
        if stale:
            # Which numbers are stale must stay clear: the label goes with the word.
            title.append(" ")
            title.append(stale, self._style("stale"))
        parts: List[Tuple[int, Optional[Text]]] = [
            (10 if stale else 1, title),
            (9, meter),
            (7, queued),
            (5, Text(f"oldest {format_duration(pool.oldest_busy)}")),
            (2, None),
        ]
        if rate is not None:
            parts.append((3, Text(rate)))
        if saturated:
            parts.append((8, Text("⚠ pool saturated", self._style("saturated"))))

        def length(items: List[Tuple[int, Optional[Text]]]) -> int:
            widths = [SPARK_MIN if t is None else t.cell_len for _, t in items]
            return sum(widths) + len(SEPARATOR) * (len(widths) - 1)

        while len(parts) > 1 and length(parts) > width:
            parts.pop(min(range(len(parts)), key=lambda i: parts[i][0]))
        spark_width = min(SPARK_MAX, SPARK_MIN + width - length(parts))
        line = Text(no_wrap=True, overflow="ellipsis")
        for index, (_, part) in enumerate(parts):
            if index:
                line.append(SEPARATOR)
            line.append_text(part or self._spark(samples, pool.size, spark_width))
        line.truncate(width, overflow="ellipsis")
        return line

    def _spark(self, samples: Sequence[int], size: int, width: int) -> Text:
        bars = sparkline(samples, width, top=size)
        text = Text(bars, self._style("spark"))
        # Samples at the pool's size are saturation: colour repeats what the full bar says.
        offset = width - min(len(samples), width)
        for index, value in enumerate(list(samples)[-width:]):
            if size and value >= size:
                text.stylize(self._style("saturated"), offset + index, offset + index + 1)
        return text


def _height(state: Optional[PoolBarState]) -> int:
    """The bar's lines: one per pool, or one that says there is none."""
    snap = state.snapshot if state else None
    if snap is None or not snap.pools_available or not snap.pools:
        return 1
    return len(snap.pools)
