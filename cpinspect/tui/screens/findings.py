"""``f``: every finding with its title, details, fix and evidence, over the main screen.

One line per finding and one per evidence item under it; up/down move over both, the pane below
shows the highlighted finding in full. Enter jumps to the evidence (on a finding's own line: its
first evidence): the screen closes with that ``Evidence`` and the App shows it in its tab —
a thread in Threads, a route or static mount or config section in Routes, a session in
Sessions, a log record in Log. Escape closes without jumping.
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Sequence, Tuple

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from cpinspect.formatting import finding_glyph, finding_report_lines
from cpinspect.model import Evidence, Finding

Row = Tuple[int, Optional[int]]
"""``(finding index, evidence index or None for the finding's own line)``."""

JUMPABLE = frozenset(("thread", "route", "session", "log", "static", "config"))
"""Evidence kinds with a place on screen to jump to (``process`` has none)."""


class FindingsList(OptionList):
    """The findings and their evidence, one option each."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "findings-list--critical",
        "findings-list--warning",
        "findings-list--info",
        "findings-list--muted",
    }

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self.findings: Tuple[Finding, ...] = ()
        self.rows: List[Row] = []

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"findings-list--{name}", partial=True)

    def show(self, findings: Sequence[Finding]) -> None:
        """Show ``findings``; the cursor stays on the same finding (by id) when it still is."""
        current = self.current
        keep = None
        if current is not None:
            finding, evidence = current
            keep = (finding.id, evidence)
        self.findings = tuple(findings)
        self.rows = []
        options: List[Option] = []
        for i, finding in enumerate(self.findings):
            self.rows.append((i, None))
            options.append(Option(self._finding_prompt(finding), id=f"f{i}"))
            for j, evidence in enumerate(finding.evidence):
                self.rows.append((i, j))
                prompt = Text("    → ", self._style("muted"))
                prompt.append(f"{evidence.kind:8} ", self._style("muted"))
                prompt.append(evidence.label or evidence.ref)
                options.append(Option(prompt, id=f"f{i}.{j}"))
        self.set_options(options)
        if not self.rows:
            return
        index = 0
        if keep is not None:
            for n, (i, e) in enumerate(self.rows):
                finding = self.findings[i]
                here = finding.evidence[e] if e is not None else None
                if finding.id == keep[0] and here == keep[1]:
                    index = n
                    break
        self.highlighted = index

    def _finding_prompt(self, finding: Finding) -> Text:
        style = self._style(finding.severity.value)
        text = Text(f"{finding_glyph(finding)} {finding.severity.value.upper():8} ", style)
        text.append(finding.title, style)
        return text

    @property
    def current(self) -> Optional[Tuple[Finding, Optional[Evidence]]]:
        """The highlighted finding and evidence (``None``: its own line)."""
        index = self.highlighted
        if index is None or not 0 <= index < len(self.rows):
            return None
        i, j = self.rows[index]
        finding = self.findings[i]
        return finding, (finding.evidence[j] if j is not None else None)

    @property
    def plain(self) -> List[str]:
        """Every line as plain text."""
        return [str(self.get_option_at_index(n).prompt) for n in range(self.option_count)]


class FindingsScreen(ModalScreen[Optional[Evidence]]):
    """The list; enter closes it with the evidence to show, escape with ``None``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, findings: Sequence[Finding]) -> None:
        super().__init__()
        self.initial = tuple(findings)

    def compose(self) -> ComposeResult:
        with Vertical(id="findings-dialog"):
            yield Static(self._title(self.initial), id="findings-title")
            yield FindingsList(id="findings-list")
            with VerticalScroll(id="findings-detail-scroll"):
                yield Static("", id="findings-detail")
            yield Static(
                "↑ ↓ findings and their evidence   enter jump to it   escape close",
                id="findings-hint",
            )

    @property
    def list(self) -> FindingsList:
        return self.query_one(FindingsList)

    @property
    def detail_text(self) -> str:
        return str(self.query_one("#findings-detail", Static).render())

    def on_mount(self) -> None:
        self.show(self.initial)
        self.list.focus()

    def show(self, findings: Sequence[Finding]) -> None:
        """New findings while the list is open (the App calls it after each poll)."""
        self.query_one("#findings-title", Static).update(self._title(findings))
        self.list.show(findings)
        self._show_detail()

    @staticmethod
    def _title(findings: Sequence[Finding]) -> str:
        if not findings:
            return "Findings: none — nothing the inspector knows looks wrong  (escape closes)"
        return f"Findings ({len(findings)})  (enter jumps to the evidence, escape closes)"

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self._show_detail()

    def _show_detail(self) -> None:
        current = self.list.current
        detail = self.query_one("#findings-detail", Static)
        if current is None:
            detail.update("")
            return
        finding, evidence = current
        lines = finding_report_lines(finding)
        if evidence is not None:
            where = "" if evidence.kind in JUMPABLE else " (nothing to jump to)"
            lines += ["", f"selected: {evidence.kind} {evidence.ref}{where}"]
        detail.update(Text("\n".join(lines)))

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        current = self.list.current
        if current is None:
            return
        finding, evidence = current
        if evidence is None:
            evidence = next((e for e in finding.evidence if e.kind in JUMPABLE), None)
        if evidence is None or evidence.kind not in JUMPABLE:
            self.notify("nothing on screen to jump to for this one", severity="warning")
            return
        self.dismiss(evidence)

    def action_close(self) -> None:
        self.dismiss(None)
