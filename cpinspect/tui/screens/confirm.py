"""A yes/no question in a modal: ``y`` answers yes, ``n`` no, escape takes the question back."""

from __future__ import annotations

from typing import ClassVar, Optional

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[Optional[bool]]):
    """Dismisses with True (``y``), False (``n``) or None (escape: not now)."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > #confirm-dialog {
        width: 76; max-width: 95%; height: auto; border: round $warning; padding: 1 2;
        background: $surface;
    }
    ConfirmScreen #confirm-keys { margin-top: 1; text-style: bold; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(None)", "Back"),
    ]

    def __init__(self, question: str, keys: str) -> None:
        super().__init__()
        self.question = question
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(self.question, id="confirm-question")
            yield Static(self.keys, id="confirm-keys")

    def action_answer(self, answer: Optional[bool]) -> None:
        self.dismiss(answer)
