"""The findings strip under the pool bar: what is wrong, most severe first, one line each.

At most ``STRIP_LINES`` findings, then ``+N more — f lists them``. Hidden when there is no
finding: "no findings" never takes a line of the first screen. Every line starts with the
severity's glyph (✖ ⚠ ℹ), so NO_COLOR loses nothing; colour repeats it.
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Sequence, Tuple

from rich.text import Text
from textual.widgets import Static

from cpinspect.formatting import strip_lines
from cpinspect.model import Finding, FindingSeverity


class FindingsStrip(Static):
    """Zero to four lines; ``show`` takes the store's findings."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "findings-strip--critical",
        "findings-strip--warning",
        "findings-strip--info",
        "findings-strip--more",
    }

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__("", id=id)
        self._lines: List[Tuple[Optional[FindingSeverity], str]] = []
        self.findings: Tuple[Finding, ...] = ()
        self._drawn = False
        """``show`` has set the text and the display once."""

    @property
    def lines_text(self) -> List[str]:
        """The lines shown, as plain text (tests, the time-to-finding bench)."""
        return [text for _, text in self._lines]

    def show(self, findings: Sequence[Finding]) -> None:
        findings = tuple(findings)
        if findings == self.findings and self._lines:
            return
        self.findings = findings
        lines = strip_lines(findings)
        if lines == self._lines and self._drawn:
            # New findings (a duration in their evidence moved on) saying the same lines: no
            # repaint, and never a layout of the screen (it re-renders every widget on it).
            return
        same_height = self._drawn and bool(lines) and self.size.height == len(lines)
        self._drawn = True
        self._lines = lines
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, (severity, line) in enumerate(self._lines):
            if index:
                text.append("\n")
            name = severity.value if severity is not None else "more"
            style = self.get_component_rich_style(f"findings-strip--{name}", partial=True)
            text.append(line, style)
        # A line that changed in place (a count, a duration) needs no layout; a number of
        # lines other than the height it is laid out at (or the strip appearing) does.
        self.update(text, layout=not same_height)
        self.display = bool(self._lines)
        self.call_after_refresh(self._check_height)
        worst = self._lines[0][0] if self._lines else None  # the lines are most severe first
        for severity in FindingSeverity:
            self.set_class(severity is worst, f"-{severity.value}")

    def _check_height(self) -> None:
        """Lay the strip out again when its height is not its number of lines.

        Textual (8.2) sometimes lays out a strip that grew at its old height, with no layout
        left pending: a screenshot under load caught the strip at two of its four lines, 2
        runs in 10 with 4 busy loops beside it. A strip whose lines later change in place asks
        for no layout, so without this it could stay cut short until its number of lines
        changed again."""
        if self.display and self._lines and self.size.height != len(self._lines):
            self.refresh(layout=True)

    def on_resize(self) -> None:
        self._check_height()
