"""The top line: who the target is, where the data comes from, and how fresh it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from cpinspect.formatting import format_age, process_name
from cpinspect.model import ProcessInfo
from cpinspect.sources.base import LinkState, Update


@dataclass(frozen=True)
class HeaderState:
    """Everything the header shows; equal states render identically."""

    info: Optional[ProcessInfo]
    update: Optional[Update]
    paused: bool
    error: Optional[str]
    """The last ``poll()`` raised this (shown as ``error`` until a poll succeeds)."""
    age: Optional[float]
    """Seconds since the data on screen was fetched (rounded to a tenth)."""
    stale: bool
    """The data is older than a few polling intervals."""


class HeaderBar(Widget):
    """One line: ``cpinspect  pid 4121 shop.py  CherryPy 18.10  engine STARTED  agent …  ● live``.

    The right end (link state and the data's age) always shows; the left end is truncated.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "header-bar--title",
        "header-bar--muted",
        "header-bar--live",
        "header-bar--paused",
        "header-bar--lost",
        "header-bar--stale",
        "header-bar--warning",
    }

    state: reactive[Optional[HeaderState]] = reactive(None)
    """What to show; ``None`` before the app has anything to say."""

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"header-bar--{name}", partial=True)

    def _left(self) -> Text:
        state = self.state
        text = Text.assemble(("cpinspect", self._style("title")))
        info = state.info if state else None
        if info is None:
            waiting = state is None or (state.update is None and state.error is None)
            note = "waiting for the target…" if waiting else "process details unavailable"
            text.append(f"  {note}", self._style("muted"))
        else:
            text.append(f"  pid {info.pid} {process_name(info.cmdline)}")
            if info.cherrypy:
                text.append(f"  CherryPy {info.cherrypy}")
            engine_style = Style() if info.engine_state == "STARTED" else self._style("warning")
            text.append("  engine ")
            text.append(info.engine_state, engine_style)
        update = state.update if state else None
        if update is not None:
            text.append(f"  {update.source_kind.value}", self._style("title"))
            if update.source_label and update.source_label != update.source_kind.value:
                text.append(f" {update.source_label}", self._style("muted"))
        return text

    def _right(self) -> Text:
        state = self.state
        if state is None or (state.update is None and state.error is None):
            return Text("◌ connecting", self._style("muted"))
        if state.paused:
            link = Text("⏸ paused", self._style("paused"))
        elif state.error is not None:
            link = Text("✖ error", self._style("lost"))
        elif state.update is not None and state.update.state is LinkState.LOST:
            link = Text("✖ lost", self._style("lost"))
        else:
            link = Text("● live", self._style("live"))
        if state.update is not None:
            age_style = self._style("stale") if state.stale and not state.paused else Style()
            link.append("  ")
            link.append(format_age(state.age), age_style)
        return link

    def render(self) -> Text:
        width = self.size.width
        right = self._right()
        left = self._left()
        room = max(0, width - right.cell_len - 2)
        left.truncate(room, overflow="ellipsis")
        left.pad_right(max(0, width - left.cell_len - right.cell_len))
        left.append_text(right)
        left.truncate(width)
        return left
