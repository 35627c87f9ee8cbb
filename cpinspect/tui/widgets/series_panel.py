"""The Series tab of a saved series (``snapshot --count N``, or ``open A B``): what changed
between the snapshot shown and the one before it, and what held across the whole series.

A view of the store's ``series`` part (every snapshot of the file, read from the session when
the tab is first shown). The text comes from pure functions (``analysis`` + ``formatting``).
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Sequence, Tuple

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from cpinspect.analysis import analyze_series, diff_snapshots
from cpinspect.formatting import format_diff, format_series
from cpinspect.model import Snapshot
from cpinspect.tui.messages import PartWanted
from cpinspect.tui.store import Part, Store

PART = "series"


def current_index(series: Sequence[Snapshot], taken_at: Optional[float]) -> int:
    """Which snapshot of the series is on screen (the one with the threads' time)."""
    for index, snapshot in enumerate(series):
        if snapshot.threads is not None and snapshot.threads.taken_at == taken_at:
            return index
        if snapshot.threads is None and snapshot.taken_at == taken_at:
            return index
    return 0


def series_lines(series: Sequence[Snapshot], index: int) -> List[Tuple[str, str]]:
    """``(style, line)`` of the panel: the comparison with the previous snapshot, then the
    series as a whole. Pure: tested without a terminal."""
    out: List[Tuple[str, str]] = []
    count = len(series)
    if count == 0:
        return [("muted", "no snapshots")]
    if index > 0:
        out.append(("title", f"Snapshot {index + 1} of {count} compared with snapshot {index}"))
        out.extend(
            ("", line) for line in format_diff(diff_snapshots(series[index - 1], series[index]))
        )
    elif count > 1:
        out.append(("title", f"Snapshot 1 of {count} compared with snapshot 2"))
        out.extend(("", line) for line in format_diff(diff_snapshots(series[0], series[1])))
    out.append(("", ""))
    out.append(("title", f"Across all {count} snapshots"))
    out.extend(("", line) for line in format_series(analyze_series(series)))
    out.append(("", ""))
    out.append(("muted", "[ and ] step through the series"))
    return out


class SeriesPanel(VerticalScroll):
    """The comparison and the series analysis, as text."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"series-panel--title", "series-panel--muted"}

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self._part = Part()
        self._shown_key: Optional[Tuple[int, int]] = None
        self._plain = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="series-text")

    @property
    def text(self) -> str:
        """What the panel shows, without styles."""
        return self._plain

    def shown(self) -> None:
        if self._part.value is None and not self._part.reading:
            self.post_message(PartWanted(PART))
        self.focus()

    def show_store(self, store: Store) -> None:
        part = store.part(PART)
        series = part.value if isinstance(part.value, tuple) else None
        if series is None:
            if part != self._part:
                self._part = part
                note = part.error or ("reading…" if part.reading else "")
                self._show([("muted", note)])
            return
        taken = store.threads.taken_at if store.threads is not None else None
        index = current_index(series, taken)
        key = (id(series), index)
        self._part = part
        if key == self._shown_key:
            return
        self._shown_key = key
        self._show(series_lines(series, index))

    def _show(self, lines: List[Tuple[str, str]]) -> None:
        text = Text(end="")
        for i, (style, line) in enumerate(lines):
            if i:
                text.append("\n")
            text.append(line, self._style(style) if style else Style())
        self._plain = text.plain
        self.query_one("#series-text", Static).update(text)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"series-panel--{name}", partial=True)
