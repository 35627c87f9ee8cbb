"""The Threads tab: the line that names the shared stack, the table, and the selected stack."""

from __future__ import annotations

from typing import ClassVar, Dict, List, Optional, Tuple

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from cpinspect.analysis import StackKey, StackKeys
from cpinspect.formatting import (
    StackGroup,
    ThreadView,
    group_stacks,
    largest_shared_stack,
    sort_threads,
)
from cpinspect.model import ThreadInfo, ThreadsSnapshot
from cpinspect.sources.source_lines import LineReader
from cpinspect.tui.messages import ShowRecords
from cpinspect.tui.store import Store
from cpinspect.tui.widgets.stack_view import StackView
from cpinspect.tui.widgets.threads_table import ThreadsTable, group_key, thread_key

VIEW_KEYS = Binding.Group("busy/workers/all", compact=True)


class ThreadsPanel(Vertical):
    """Threads longest-running first (or grouped by stack), with the selected one's stack."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "view('busy')", "Busy only", group=VIEW_KEYS, tooltip="Busy workers only"),
        Binding("w", "view('workers')", "Workers", group=VIEW_KEYS, tooltip="Every worker"),
        Binding(
            "a", "view('all')", "All threads", group=VIEW_KEYS, tooltip="Every thread, with roles"
        ),
        Binding(
            "g",
            "toggle_grouped",
            "Group stacks",
            tooltip="One row per distinct stack, the largest group first",
        ),
        Binding(
            "e",
            "records",
            "Log",
            tooltip="The log records of the selected thread's request (Log tab)",
        ),
        Binding(
            "l",
            "toggle_library",
            "Library frames",
            show=False,
            tooltip="Show or fold runs of library frames in the stack",
        ),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "threads-panel--shared",
        "threads-panel--paused",
        "threads-panel--gil",
    }

    view: reactive[ThreadView] = reactive(ThreadView.WORKERS, init=False)
    """Which threads the table lists."""
    grouped: reactive[bool] = reactive(False, init=False)
    """One row per distinct stack instead of one per thread."""

    class CaptionChanged(Message):
        """The panel's caption (which threads it lists) changed."""

        def __init__(self, panel: ThreadsPanel) -> None:
            super().__init__()
            self.panel = panel

        @property
        def control(self) -> ThreadsPanel:
            return self.panel

    def __init__(self, source_lines: Optional[LineReader] = None, *, id: Optional[str] = None):
        super().__init__(id=id)
        self._source_lines = source_lines
        self._snapshot: Optional[ThreadsSnapshot] = None
        self._selected_ident: Optional[int] = None
        self._selected_group: Optional[str] = None
        self._stack_keys = StackKeys()
        """Each busy thread's ``stack_key``, kept by stack object across polls."""
        self._partition: Optional[Tuple[Dict[int, StackKey], List[List[int]]]] = None
        """The busy threads' stack keys, and the idents of each group of two or more."""
        self._grouping_keys = StackKeys()
        """The same for every thread listed, while the view groups them by stack."""
        self.paused = False
        """Shown in the summary line; the app stops feeding snapshots while paused."""
        self.caption = ThreadView.WORKERS.label
        """What the table lists, e.g. ``Busy workers (10)``; the app shows it in the tab."""

    def compose(self) -> ComposeResult:
        yield Static("", id="threads-summary")
        with Horizontal(id="threads-body"):
            yield ThreadsTable(id="threads-table")
            with VerticalScroll(id="stack-scroll"):
                yield StackView(self._source_lines, id="stack-view")

    @property
    def table(self) -> ThreadsTable:
        return self.query_one(ThreadsTable)

    @property
    def stack_view(self) -> StackView:
        return self.query_one(StackView)

    @property
    def selected_thread(self) -> Optional[ThreadInfo]:
        """The thread under the cursor; in the grouped view, the chosen thread of the group."""
        selected = self.table.selected()
        if isinstance(selected, StackGroup):
            for thread in selected.threads:
                if thread.ident == self._selected_ident:
                    return thread
            return selected.threads[0] if selected.threads else None
        return selected

    @property
    def summary_text(self) -> str:
        """The line above the table, without styles."""
        content = self.query_one("#threads-summary", Static).content
        return content.plain if isinstance(content, Text) else str(content)

    # --- data ----------------------------------------------------------------------------------

    def show_store(self, store: Store) -> None:
        """Render the store's threads (nothing to do when they are the ones shown)."""
        if store.threads is not self._snapshot or self._snapshot is None:
            self.show_snapshot(store.threads)

    def shown(self) -> None:
        # Queried, not ``self.table``: a tab activation can still arrive while the app shuts
        # down and the table is already gone.
        for table in self.query(ThreadsTable):
            table.focus()

    def show_snapshot(self, snapshot: Optional[ThreadsSnapshot]) -> None:
        """Show new data, keeping the cursor on the same thread (or stack)."""
        self._snapshot = snapshot
        self._refresh_rows()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._refresh_rows()

    def _threads(self) -> List[ThreadInfo]:
        if self._snapshot is None:
            return []
        return sort_threads(self._snapshot.threads, self.view)

    def _refresh_rows(self) -> None:
        threads = self._threads()
        busy = [t for t in threads if t.busy]
        shared = self._largest_shared_stack(busy)
        table = self.table
        if self.grouped:
            groups = group_stacks(threads, self._grouping_keys.key)
            self._grouping_keys.next_round()
            table.show_groups(groups, self._group_selection(groups))
        else:
            select = thread_key(self._selected_ident) if self._selected_ident is not None else None
            table.show_threads(threads, self.view, select)
        self._show_summary(threads, busy, shared)
        self._sync_selection()

    def _largest_shared_stack(self, busy: List[ThreadInfo]) -> Optional[StackGroup]:
        """``largest_shared_stack(busy)``, with what it rests on kept across polls: each
        stack's key by stack object (behind spinning workers every reading brings their stacks,
        and after a change of source every stack, as new objects, most at the same lines), and
        which threads share a stack while no busy thread's stack moved to other lines. Only the
        largest groups are then grouped again, for the order among them (GIL, oldest) and their
        first thread: 500 busy workers grouped at every poll cost ~5 ms."""
        keys = self._stack_keys
        keys.next_round()
        by_ident = {t.ident: keys.key(t) for t in busy}
        if self._partition is None or self._partition[0] != by_ident:
            members: Dict[StackKey, List[int]] = {}
            for ident, key in by_ident.items():
                if key:
                    members.setdefault(key, []).append(ident)
            self._partition = (by_ident, [m for m in members.values() if len(m) >= 2])
        shared = self._partition[1]
        if not shared:
            return None
        top = max(len(m) for m in shared)
        largest = {ident for m in shared if len(m) == top for ident in m}
        return largest_shared_stack([t for t in busy if t.ident in largest], keys.key)

    def _group_selection(self, groups: List[StackGroup]) -> Optional[str]:
        if self._selected_ident is not None:
            for group in groups:
                if any(t.ident == self._selected_ident for t in group.threads):
                    return group_key(group)
        return self._selected_group

    def _show_summary(
        self, threads: List[ThreadInfo], busy: List[ThreadInfo], shared: Optional[StackGroup]
    ) -> None:
        summary = self.query_one("#threads-summary", Static)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        caption = self.view.label + (" by stack" if self.grouped else "")
        if self._snapshot is not None:
            caption += f" ({len(threads)})"
        if caption != self.caption:
            self.caption = caption
            self.post_message(self.CaptionChanged(self))
        if self._snapshot is None:
            text.append("waiting for data…")
            self._set_summary(summary, text)
            return
        if self.paused:
            text.append("⏸ paused", self._style("paused"))
            text.append(" │ ")
        holder = next((t for t in self._snapshot.threads if t.owns_gil), None)
        if holder is not None and all(t.ident != holder.ident for t in threads):
            # The one thread that matters when the interpreter is stuck must not hide behind
            # a view that leaves it out (a plugin or main thread holding the GIL).
            text.append(f"GIL held by {holder.name} (a lists it)", self._style("gil"))
            text.append(" │ ")
        if shared is not None:
            text.append(shared.summary, self._style("shared"))
        elif busy:
            text.append("no two busy threads share a stack")
        else:
            text.append("no busy threads")
        self._set_summary(summary, text)

    def _set_summary(self, summary: Static, text: Text) -> None:
        # One line high (app.tcss): a new text needs no layout; the same text no refresh.
        if summary.content != text:
            summary.update(text, layout=False)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"threads-panel--{name}", partial=True)

    def _sync_selection(self) -> None:
        selected = self.table.selected()
        if isinstance(selected, StackGroup):
            self._selected_group = group_key(selected)
            if not any(t.ident == self._selected_ident for t in selected.threads):
                self._selected_ident = selected.threads[0].ident
        elif isinstance(selected, ThreadInfo):
            self._selected_ident = selected.ident
        self.stack_view.show(selected)

    @on(ThreadsTable.RowHighlighted)
    def _row_highlighted(self, event: ThreadsTable.RowHighlighted) -> None:
        event.stop()
        # _sync_selection reads the cursor as it is now rather than the event's row: a refresh
        # may have rebuilt the rows since the event was posted.
        self._sync_selection()

    # --- actions -------------------------------------------------------------------------------

    def select_thread(self, ident: int) -> bool:
        """Put the cursor on thread ``ident``, widening the view (and leaving the grouped view)
        when it hides that thread. False when the data on screen has no such thread."""
        if self._snapshot is None or all(t.ident != ident for t in self._snapshot.threads):
            return False
        self._selected_ident = ident
        with self.prevent(ThreadsTable.RowHighlighted):
            if self.grouped:
                self.set_reactive(ThreadsPanel.grouped, False)
            if all(t.ident != ident for t in self._threads()):
                self.set_reactive(ThreadsPanel.view, ThreadView.ALL)
            self._refresh_rows()
        return True

    def action_records(self) -> None:
        thread = self.selected_thread
        if thread is None or thread.request is None or thread.request.started_at is None:
            self.app.notify("Select a busy thread: its request's log records show.", timeout=3)
            return
        self.post_message(ShowRecords(thread.ident))

    def action_view(self, view: str) -> None:
        self.view = ThreadView(view)

    def action_toggle_grouped(self) -> None:
        self.grouped = not self.grouped

    def action_toggle_library(self) -> None:
        self.stack_view.toggle_library()

    def watch_view(self) -> None:
        self._refresh_rows()

    def watch_grouped(self) -> None:
        self._refresh_rows()
