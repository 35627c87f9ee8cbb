"""The local variables of one thread, one entry per frame, innermost first.

Sensitive values (``LocalVar.sensitive``) show as ``***`` with the reason, until the user
reveals that frame — and only that frame: each frame has its own toggle, so revealing one never
reveals (or re-reveals) another.
"""

from __future__ import annotations

from typing import ClassVar, Optional, Set

from rich.style import Style
from rich.text import Text
from textual import on
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from cpinspect.formatting import (
    display_value,
    frame_kind,
    frame_location,
    hidden_count,
    hidden_reason,
    local_value,
)
from cpinspect.model import FrameLocals, ThreadLocals


class LocalsList(OptionList):
    """Frames with their variables; enter (or ``r`` on the screen) reveals the selected frame."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "locals-list--app",
        "locals-list--lib",
        "locals-list--native",
        "locals-list--arg",
        "locals-list--hidden",
        "locals-list--note",
        "locals-list--revealed",
    }

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self.locals: Optional[ThreadLocals] = None
        """The thread's locals on show (``None`` until loaded)."""
        self.revealed: Set[int] = set()
        """Indices of the frames whose hidden values the user chose to see."""

    def show(self, locals_: ThreadLocals) -> None:
        """Show a thread's frames, every sensitive value hidden."""
        self.locals = locals_
        self.revealed = set()
        self.set_options(
            Option(self._prompt(index, entry), id=f"f{index}")
            for index, entry in enumerate(locals_.frames)
        )
        if locals_.frames:
            self.highlighted = 0

    def toggle_reveal(self, index: Optional[int] = None) -> None:
        """Reveal the hidden values of frame ``index`` (the highlighted one), or hide them again."""
        index = self.highlighted if index is None else index
        if self.locals is None or index is None or not 0 <= index < len(self.locals.frames):
            return
        entry = self.locals.frames[index]
        if not hidden_count(entry.variables):
            return
        self.revealed.symmetric_difference_update({index})
        self.replace_option_prompt_at_index(index, self._prompt(index, entry))

    @property
    def plain(self) -> str:
        """Every frame's text without styles, one frame after another."""
        if self.locals is None:
            return ""
        return "\n".join(self._prompt(i, entry).plain for i, entry in enumerate(self.locals.frames))

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.toggle_reveal(event.option_index)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"locals-list--{name}", partial=True)

    def _prompt(self, index: int, entry: FrameLocals) -> Text:
        frame = entry.frame
        kind = frame_kind(frame)
        revealed = index in self.revealed
        text = Text(overflow="fold", end="")
        text.append(
            f"{kind:<3}  {frame_location(frame)}  {frame.display_name}",
            self._style({"c": "native", "app": "app"}.get(kind, "lib")),
        )
        hidden = hidden_count(entry.variables)
        if hidden and revealed:
            text.append(f"  · {hidden} revealed (r hides)", self._style("revealed"))
        elif hidden:
            text.append(f"  · {hidden} hidden (r reveals)", self._style("note"))
        if not entry.variables:
            text.append("\n     ")
            text.append("(no local variables)", self._style("note"))
        for var in entry.variables:
            text.append("\n     ")
            text.append("arg " if var.is_arg else "    ", self._style("arg"))
            text.append(f"{display_value(var.name, 200)} = ")
            value = local_value(var, revealed)
            if var.sensitive and not revealed:
                text.append(value, self._style("hidden"))
                text.append(f"  {hidden_reason(var)}", self._style("note"))
            else:
                text.append(value)
        return text
