"""``?``: the keys, in a modal over the main screen."""

from __future__ import annotations

from typing import ClassVar, Sequence, Tuple

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KeyHelp = Tuple[str, str]
"""``(key as shown, what it does)``"""


class HelpScreen(ModalScreen[None]):
    """Lists the keys; escape, ``?`` or ``q`` closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, keys: Sequence[KeyHelp]) -> None:
        super().__init__()
        self.keys = tuple(keys)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, style="bold")
        table.add_column()
        for key, description in self.keys:
            table.add_row(Text(key), Text(description))
        with Vertical(id="help-dialog"):
            yield Static("Keys  (escape closes this)", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(table, id="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
