"""The process picker: what ``cpinspect`` shows with no arguments.

Lists the CherryPy processes on the machine (arrows + Enter to pick, ``/`` filter, ``r``
refresh, ``q`` quit). The listing runs in a worker thread (it reads /proc, asks agents and runs
py-spy); the UI thread only renders. Picking returns the pid from ``PickerApp.run()``; the CLI
then attaches exactly as ``cpinspect attach PID`` does::

    pid = PickerApp(ProcessLister()).run()
"""

from __future__ import annotations

from typing import Callable, ClassVar, List, NamedTuple, Optional, Sequence

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, Footer, Input, Static

from cpinspect.formatting import PROCESS_COLUMNS, process_row
from cpinspect.model import ProcessSummary
from cpinspect.tui.hangup import terminal_driver
from cpinspect.tui.screens.confirm import ConfirmScreen

Lister = Callable[[], List[ProcessSummary]]


class Listed(Message):
    """A listing finished in the worker: the processes, or why it failed (one line)."""

    def __init__(self, summaries: Optional[Sequence[ProcessSummary]], error: str = "") -> None:
        super().__init__()
        self.summaries = summaries
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Listed)


def matches(summary: ProcessSummary, text: str) -> bool:
    """Whether the filter ``text`` occurs (case-insensitively) in any column or the cmdline."""
    needle = text.strip().lower()
    if not needle:
        return True
    row = process_row(summary)
    haystack = " ".join([*row.values(), " ".join(summary.cmdline)]).lower()
    return needle in haystack


class Pick(NamedTuple):
    """What the user picked: a pid, and whether to load the agent into it first."""

    pid: int
    inject: bool = False


class PickerApp(App[Optional[Pick]]):
    """Pick a process; ``run()`` returns its pid, or None when the user quits."""

    TITLE = "cpinspect"
    # Beside app.tcss, where the package data already ships stylesheets from.
    CSS_PATH = "../picker.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", tooltip="Show only processes matching a text"),
        Binding("r", "refresh", "Refresh", tooltip="List the processes again"),
        Binding("q", "quit_picker", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, lister: Lister) -> None:
        # Ends the app when the terminal goes away or on SIGHUP/SIGTERM/SIGINT (tui/hangup.py).
        super().__init__(driver_class=terminal_driver())
        self.lister = lister
        self.summaries: List[ProcessSummary] = []
        """The last listing, all of it (the filter only hides rows)."""
        self.shown: List[ProcessSummary] = []
        """The rows on screen, in order."""
        self.filter_text = ""
        self.listing = False
        """A listing is running in the worker."""
        self.listings = 0
        """Listings received (for tests and the status line)."""
        self.status = ""
        """The line under the table: counts, errors, why a process cannot be opened."""

    def compose(self) -> ComposeResult:
        yield Static("CherryPy processes on this machine", id="picker-title")
        yield Input(placeholder="filter: pid, user, port, app, command…", id="picker-filter")
        table: DataTable[Text] = DataTable(id="picker-table", cursor_type="row", zebra_stripes=True)
        for key, heading in PROCESS_COLUMNS:
            table.add_column(heading, key=key)
        yield table
        yield Static("listing processes…", id="picker-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_refresh()

    # -- listing (worker) -------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.listing = True
        self._set_status("listing processes…")
        self._list()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _list(self) -> None:
        try:
            summaries = self.lister()
        except Exception as exc:  # noqa: BLE001 - shown on screen, the picker stays usable
            self.post_message(Listed(None, error=f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(Listed(summaries))

    @on(Listed)
    def _listed(self, message: Listed) -> None:
        self.listing = False
        self.listings += 1
        if message.summaries is None:
            self._set_status(f"could not list processes: {message.error} (r retries)")
            return
        # What the user can open comes first; the rest follows with the reason it cannot.
        self.summaries = sorted(message.summaries, key=lambda s: (not s.inspectable, s.pid))
        self._render_rows()

    # -- rows -------------------------------------------------------------------------------------

    def _render_rows(self) -> None:
        table: DataTable[Text] = self.query_one(DataTable)
        selected = self.selected
        self.shown = [s for s in self.summaries if matches(s, self.filter_text)]
        table.clear()
        for summary in self.shown:
            row = process_row(summary)
            style = "" if summary.inspectable else "dim"
            table.add_row(
                *(Text(row[key], style=style) for key, _ in PROCESS_COLUMNS),
                key=str(summary.pid),
            )
        if selected is not None and selected in self.shown:
            table.move_cursor(row=self.shown.index(selected))
        self._set_status(self._counts())

    def _counts(self) -> str:
        if not self.summaries:
            return "no CherryPy processes found (r refreshes)"
        text = f"{len(self.shown)} of {len(self.summaries)} processes"
        if self.filter_text:
            text += f" matching '{self.filter_text}'"
        return text + " — Enter opens the selected one"

    @property
    def selected(self) -> Optional[ProcessSummary]:
        table: DataTable[Text] = self.query_one(DataTable)
        if not self.shown or table.cursor_row < 0 or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row]

    def _set_status(self, text: str) -> None:
        self.status = text
        self.query_one("#picker-status", Static).update(Text(text))

    # -- choosing ---------------------------------------------------------------------------------

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.choose(self.selected)

    def choose(self, summary: Optional[ProcessSummary]) -> None:
        """Open ``summary`` (exit with a ``Pick``), or say why it cannot be opened.

        A process without the agent gets a question first: load the agent (gdb runs inside the
        target, which is why it is never done unasked), or open it on py-spy alone.
        """
        if summary is None:
            return
        if summary.reason is not None:
            self._set_status(f"cannot open pid {summary.pid}: {summary.reason}")
            return
        if summary.agent:
            self.exit(Pick(summary.pid, inject=False))
            return
        pid = summary.pid

        def answered(answer: Optional[bool]) -> None:
            if answer is not None:
                self.exit(Pick(pid, inject=answer))

        self.push_screen(
            ConfirmScreen(
                f"pid {pid} has no cpinspect agent. Load it now? gdb pauses the process for "
                "about half a second to schedule the agent's start on its main thread; the "
                "agent then serves requests, pools, routes and logs from its own threads. "
                "Without it, threads and stacks come from py-spy.",
                "y load the agent   n open with py-spy only   escape back",
            ),
            answered,
        )

    def action_quit_picker(self) -> None:
        self.exit(None)

    # -- filter -----------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one(Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#picker-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._render_rows()

    @on(Input.Submitted, "#picker-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one(Input)
        box.value = ""
        box.remove_class("-shown")
        self.filter_text = ""
        self._render_rows()
        self.query_one(DataTable).focus()
