"""The top line: who the target is, where the data comes from, and how fresh it is."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import ClassVar, List, Optional, Tuple

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from cpinspect.formatting import format_age, process_name, source_description
from cpinspect.model import ProcessInfo, SourceKind
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
    native: bool = False
    """Stacks include native (C) frames (``n``)."""
    position: Optional[Tuple[int, int]] = None
    """``(index, count)`` of the snapshot shown from a saved series."""
    pacing: Optional[str] = None
    """Polls come less often than asked: ``polling every 2.4 s: the target answers slowly``."""

    @property
    def from_file(self) -> bool:
        return self.update is not None and self.update.source_kind is SourceKind.FILE


Part = Tuple[int, Text]
"""``(priority, text)``: when the line is too long the lowest priority goes first."""
SEPARATOR = "  "
LABEL_MIN = 8
"""The source label shows only with room for this many cells of it."""


class HeaderBar(Widget):
    """One line: ``cpinspect  pid 4121 shop.py  CherryPy 18.10  engine STARTED  agent …  ● live``.

    The right end (``native on``, link state and the data's age) always shows. The rest is laid
    out for the width it gets: the least important parts go first (the socket path, the CherryPy
    version), the data source and the process last.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "header-bar--title",
        "header-bar--muted",
        "header-bar--live",
        "header-bar--paused",
        "header-bar--lost",
        "header-bar--stale",
        "header-bar--warning",
        "header-bar--fallback",
        "header-bar--native",
    }

    state: reactive[Optional[HeaderState]] = reactive(None)
    """What to show; ``None`` before the app has anything to say."""

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"header-bar--{name}", partial=True)

    def _parts(self) -> List[Part]:
        state = self.state
        parts: List[Part] = [(4, Text("cpinspect", self._style("title")))]
        info = state.info if state else None
        if info is None:
            waiting = state is None or (state.update is None and state.error is None)
            note = "waiting for the target…" if waiting else "process details unavailable"
            parts.append((7, Text(note, self._style("muted"))))
        else:
            parts.append((8, Text(f"pid {info.pid} {process_name(info.cmdline)}")))
            if info.cherrypy:
                parts.append((2, Text(f"CherryPy {info.cherrypy}")))
            started = info.engine_state == "STARTED"
            engine = Text("engine ")
            engine.append(info.engine_state, Style() if started else self._style("warning"))
            parts.append((3 if started else 6, engine))
        update = state.update if state else None
        if update is not None and state is not None and state.from_file:
            name = os.path.basename(update.source_label) or update.source_label
            read = source_description(update.effective_threads_source)
            if update.pyspy_joined:
                read = SourceKind.BOTH.value
            parts.append((9, Text(f"file {name}", self._style("title"))))
            parts.append((5, Text(f"({read})", self._style("muted"))))
        elif update is not None:
            threads_kind = update.effective_threads_source
            fallback = threads_kind is not update.source_kind
            source = source_description(update.source_kind, threads_kind)
            parts.append((9, Text(source, self._style("fallback" if fallback else "title"))))
        if state is not None and state.pacing:
            parts.append((7, Text(state.pacing, self._style("warning"))))
        return parts

    def _label(self) -> Optional[Text]:
        """The source's own label (a socket path): shown last, in whatever room is left."""
        update = self.state.update if self.state else None
        if update is None or update.effective_threads_source is not update.source_kind:
            return None
        if update.source_kind is SourceKind.FILE:
            return None  # the file's name is in the parts already
        label = update.source_label
        if not label or label.startswith(update.source_kind.value):
            return None  # ``py-spy pid 4121`` says nothing the header does not already say
        return Text(label, self._style("muted"))

    def _right(self) -> Text:
        state = self.state
        if state is None or (state.update is None and state.error is None):
            return Text("◌ connecting", self._style("muted"))
        link = Text()
        if state.from_file and state.update is not None:
            if state.position is not None:
                index, count = state.position
                link.append(f"{index + 1}/{count}  ", self._style("title"))
            link.append("▣ saved ", self._style("paused"))
            taken = state.update.threads.taken_at if state.update.threads else None
            when = time.localtime(taken or state.update.fetched_at)
            link.append("captured " + time.strftime("%Y-%m-%d %H:%M:%S", when))
            return link
        if state.native:
            link.append("native on", self._style("native"))
            link.append(SEPARATOR)
        if state.paused:
            link.append("⏸ paused", self._style("paused"))
        elif state.error is not None:
            link.append("✖ error", self._style("lost"))
        elif state.update is not None and state.update.state is LinkState.LOST:
            link.append("✖ lost", self._style("lost"))
        else:
            link.append("● live", self._style("live"))
        if state.update is not None:
            age_style = self._style("stale") if state.stale and not state.paused else Style()
            link.append("  ")
            link.append(format_age(state.age), age_style)
        return link

    def __init__(
        self, *, name: Optional[str] = None, id: Optional[str] = None, classes: Optional[str] = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._left_cache: Optional[Tuple[object, Text]] = None
        """The left part and what it was laid out from (the state but for the age, the room)."""
        self._line_cache: Optional[Tuple[object, Strip]] = None
        """The line on screen and what it was made from (the state, the width, the style)."""

    def render(self) -> Text:
        """The whole line as text (what ``render_line`` draws)."""
        width = self.size.width
        right = self._right()
        room = max(0, width - right.cell_len - 2)
        left = self._left(room).copy()
        left.pad_right(max(0, width - left.cell_len - right.cell_len))
        left.append_text(right)
        left.truncate(width)
        return left

    def render_line(self, y: int) -> Strip:
        """One line drawn from ``render()``'s segments, kept until the state, the width or the
        style changes: the age ticks twice a second, and a ``Static``'s way (the text turned
        into Textual content, wrapped and cut) took ~1 ms a time for this one line."""
        width = self.size.width
        base = self.rich_style
        made_of = (self.state, width, base)
        if self._line_cache is not None and self._line_cache[0] == made_of:
            return self._line_cache[1]
        if y != 0:
            return Strip.blank(width, base)
        segments = list(self.render().render(self.app.console))
        strip = Strip(segments).adjust_cell_length(width, base).apply_style(base)
        self._line_cache = (made_of, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._left_cache = None
        self._line_cache = None

    def _left(self, room: int) -> Text:
        """Everything but the right end, laid out in ``room`` cells (the same for every age)."""
        state = self.state
        plain = replace(state, age=None, stale=False) if state is not None else None
        made_of = (plain, room)
        if self._left_cache is not None and self._left_cache[0] == made_of:
            return self._left_cache[1]
        parts = self._parts()

        def length(items: List[Part]) -> int:
            return sum(t.cell_len for _, t in items) + len(SEPARATOR) * (len(items) - 1)

        while len(parts) > 1 and length(parts) > room:
            parts.pop(min(range(len(parts)), key=lambda i: parts[i][0]))
        left = Text(no_wrap=True, overflow="ellipsis")
        for index, (_, part) in enumerate(parts):
            if index:
                left.append(SEPARATOR)
            left.append_text(part)
        label = self._label()
        if label is not None and room - left.cell_len >= 1 + LABEL_MIN:
            left.append(" ")
            left.append_text(label)
        left.truncate(room, overflow="ellipsis")
        self._left_cache = (made_of, left)
        return left
