"""The table of threads (one row per thread) or of stack groups (one row per shared stack).

Rows are keyed by thread ident (``t:<ident>``) or by stack (``g:<digest>``) so the cursor stays
on the same thread across refreshes. Column widths follow the widget's width: the request column
takes the room left, and at narrow widths the least useful columns are dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import ClassVar, Dict, List, Optional, Sequence, Set, Tuple, Union

from rich.style import Style
from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

from cpinspect.formatting import (
    StackGroup,
    ThreadRow,
    ThreadView,
    format_duration,
    most_common_requests,
    stack_summary,
    thread_row,
)
from cpinspect.model import Role, ThreadInfo

CELL_PADDING = 2
"""DataTable pads every cell with one space on each side."""


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    drop_rank: int = 0
    """0: always shown; otherwise dropped at narrow widths, the highest rank first."""
    flexible: bool = False
    """Takes the width left over (at least ``width``)."""


THREAD_COLUMNS = (
    ColumnSpec("state", "state", 10),
    ColumnSpec("elapsed", "elapsed", 8),
    ColumnSpec("request", "request", 24, flexible=True),
    ColumnSpec("client", "client", 15, drop_rank=2),
    ColumnSpec("handler", "handler", 20, drop_rank=3),
)
ALL_COLUMNS = (
    ColumnSpec("state", "state", 10),
    ColumnSpec("elapsed", "elapsed", 8),
    ColumnSpec("role", "role", 8),
    ColumnSpec("name", "name", 20, drop_rank=1),
    ColumnSpec("request", "request", 16, flexible=True),
    ColumnSpec("client", "client", 15, drop_rank=2),
    ColumnSpec("handler", "handler", 20, drop_rank=3),
)
GROUP_COLUMNS = (
    ColumnSpec("count", "threads", 7),
    ColumnSpec("state", "state", 13),
    ColumnSpec("oldest", "oldest", 8),
    ColumnSpec("stack", "stack", 24, flexible=True),
    ColumnSpec("requests", "requests", 28, drop_rank=1),
)


def layout_columns(
    specs: Sequence[ColumnSpec], width: int, content: Optional[Dict[str, int]] = None
) -> List[ColumnSpec]:
    """The columns that fit in ``width`` cells, the flexible one widened to fill the rest.

    A fixed column is as wide as its widest cell (``content``), at most its spec's width and
    at least its label; the flexible column is at least its spec's width.
    """
    content = content or {}
    sized = [
        c
        if c.flexible
        else replace(c, width=max(len(c.label), min(c.width, content.get(c.key, c.width))))
        for c in specs
    ]

    def total(columns: Sequence[ColumnSpec]) -> int:
        return sum(c.width + CELL_PADDING for c in columns)

    while total(sized) > width:
        droppable = [c for c in sized if c.drop_rank]
        if not droppable:
            break
        sized.remove(max(droppable, key=lambda c: c.drop_rank))
    spare = max(0, width - total(sized))
    return [replace(c, width=c.width + spare) if c.flexible else c for c in sized]


def thread_key(ident: int) -> str:
    return f"t:{ident}"


def group_key(group: StackGroup) -> str:
    digest = hashlib.sha1(repr(group.key).encode("utf-8", "replace")).hexdigest()[:16]
    return f"g:{digest}"


Selection = Union[ThreadInfo, StackGroup]


class ThreadsTable(DataTable[Text]):
    """Threads or stack groups, one per row; the cursor stays on the same key across refreshes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "threads-table--busy",
        "threads-table--reading",
        "threads-table--writing",
        "threads-table--idle",
        "threads-table--other",
        "threads-table--gil",
        "threads-table--muted",
    }

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._mode: Tuple[str, ThreadView] = ("threads", ThreadView.WORKERS)
        self._threads: List[ThreadInfo] = []
        self._groups: List[StackGroup] = []
        self._objects: Dict[str, Selection] = {}
        self._specs: List[ColumnSpec] = []
        self._row_keys: List[str] = []
        self._latest: Dict[str, Dict[str, Text]] = {}
        """Every row's newest cells, by row key (what the rows say, shown or not yet)."""
        self._shown: Dict[str, Dict[str, Text]] = {}
        """The cells the DataTable holds, by row key."""
        self._pending: Set[str] = set()
        """Rows off screen whose newer cells wait until they scroll into view: a refresh costs
        what is visible, not the number of threads (1,000 workers tick every second)."""

    # --- reading the table ---------------------------------------------------------------------

    @property
    def row_keys(self) -> List[str]:
        """Row keys in display order."""
        return list(self._row_keys)

    def selected_key(self) -> Optional[str]:
        if not self._row_keys:
            return None
        row = min(max(self.cursor_row, 0), len(self._row_keys) - 1)
        return self._row_keys[row]

    def selected(self) -> Optional[Selection]:
        """The thread or group under the cursor."""
        key = self.selected_key()
        return self._objects.get(key) if key is not None else None

    def object_at(self, key: str) -> Optional[Selection]:
        """The thread or group of the row with this key."""
        return self._objects.get(key)

    def cell_text(self, row: int, column: str) -> str:
        """The plain text of one cell (``column`` is a column key such as ``"request"``), as the
        row shows it once on screen."""
        return self._latest[self._row_keys[row]][column].plain

    # --- filling the table ---------------------------------------------------------------------

    def show_threads(
        self,
        threads: Sequence[ThreadInfo],
        view: ThreadView,
        select: Optional[str],
    ) -> None:
        """One row per thread, in the given order; keep the cursor on ``select`` if present."""
        self._mode = ("threads", view)
        self._threads = list(threads)
        self._fill(select)

    def show_groups(self, groups: Sequence[StackGroup], select: Optional[str]) -> None:
        """One row per stack group, largest first."""
        self._mode = ("groups", ThreadView.WORKERS)
        self._groups = list(groups)
        self._fill(select)

    def _column_specs(self) -> Tuple[ColumnSpec, ...]:
        kind, view = self._mode
        if kind == "groups":
            return GROUP_COLUMNS
        return ALL_COLUMNS if view is ThreadView.ALL else THREAD_COLUMNS

    def _available_width(self) -> int:
        # The vertical scrollbar's gutter is reserved in the stylesheet so this stays stable.
        return self.scrollable_content_region.width or self.size.width or 80

    def _layout(self, rows: List[Tuple[str, Dict[str, Text]]]) -> List[ColumnSpec]:
        content: Dict[str, int] = {}
        for _, cells in rows:
            for key, cell in cells.items():
                content[key] = max(content.get(key, 0), cell.cell_len)
        return layout_columns(self._column_specs(), self._available_width(), content)

    def _fill(self, select: Optional[str]) -> None:
        rows = self._rows()
        specs = self._layout(rows)
        keys = [key for key, _ in rows]
        previous_row = self.cursor_row
        self._latest = dict(rows)
        if specs == self._specs and keys == self._row_keys:
            # Same rows in the same order: update the cells that changed in place (no jump, no
            # flicker), now for the rows on screen and once they scroll into view for the others.
            first, last = self._visible_rows()
            for index, (key, cells) in enumerate(rows):
                if _same_cells(self._shown.get(key), cells, specs):
                    self._pending.discard(key)
                elif first <= index < last:
                    self._show_cells(key, cells)
                else:
                    self._pending.add(key)
            if select in keys and keys.index(select) != previous_row:
                # Asked for another row of the same table (a jump from another panel).
                self.move_cursor(row=keys.index(select), animate=False)
            return
        self._shown = dict(rows)
        self._pending = set()
        scroll_y = self.scroll_y
        self.clear(columns=specs != self._specs)
        if specs != self._specs:
            for spec in specs:
                self.add_column(spec.label, width=spec.width, key=spec.key)
            self._specs = specs
        for key, cells in rows:
            self.add_row(*(cells[spec.key] for spec in specs), key=key)
        self._row_keys = keys
        if not keys:
            return
        target = keys.index(select) if select in keys else min(previous_row, len(keys) - 1)
        self.scroll_y = min(scroll_y, self.max_scroll_y)
        self.move_cursor(row=max(0, target), animate=False)

    def _visible_rows(self) -> Tuple[int, int]:
        """Row indexes on screen, with one screen of margin each side (rows are one line)."""
        height = max(self.scrollable_content_region.height, 1)
        top = int(self.scroll_y)
        return max(0, top - height), top + 2 * height

    def _show_cells(self, key: str, cells: Dict[str, Text]) -> None:
        shown = self._shown.get(key)
        for spec in self._specs:
            cell = cells[spec.key]
            if shown is None or not _same_cell(shown[spec.key], cell):
                self.update_cell(key, spec.key, cell)
        self._shown[key] = cells
        self._pending.discard(key)

    def _show_pending(self) -> None:
        """Bring the rows that came into view up to date."""
        if not self._pending:
            return
        first, last = self._visible_rows()
        for key in self._row_keys[first:last]:
            if key in self._pending:
                self._show_cells(key, self._latest[key])

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._show_pending()

    def _rows(self) -> List[Tuple[str, Dict[str, Text]]]:
        self._objects = {}
        rows = []
        if self._mode[0] == "groups":
            for group in self._groups:
                key = group_key(group)
                self._objects[key] = group
                rows.append((key, self._group_cells(group)))
        else:
            for thread in self._threads:
                key = thread_key(thread.ident)
                if key in self._objects:  # a source repeating an ident must not break the table
                    key = f"{key}#{len(self._objects)}"
                self._objects[key] = thread
                rows.append((key, self._thread_cells(thread)))
        return rows

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"threads-table--{name}", partial=True)

    def _state_style(self, row: ThreadRow) -> Style:
        name = {"busy": "busy", "read": "reading", "write": "writing", "idle": "idle"}.get(
            row.state, "other"
        )
        style = self._style(name)
        if row.gil:
            style += self._style("gil")
        return style

    def _thread_cells(self, thread: ThreadInfo) -> Dict[str, Text]:
        row = thread_row(thread)
        state_style = self._state_style(row)
        muted = self._style("muted")
        elapsed_style = self._state_style(replace(row, gil=False)) if thread.busy else Style()
        return {
            "state": _cell(row.state_cell, state_style),
            "elapsed": _cell(row.elapsed, elapsed_style, right=True),
            "role": _cell(row.role, muted),
            "name": _cell(row.name),
            "request": _cell(row.request),
            "client": _cell(row.client),
            "handler": _cell(row.handler),
        }

    def _group_cells(self, group: StackGroup) -> Dict[str, Text]:
        busy = group.busy
        gil = " GIL" if group.gil_holder is not None else ""
        gil_style = self._style("gil") if gil else Style()
        if busy:
            state = _cell(f"● {busy} busy{gil}", self._style("busy") + gil_style)
        elif all(t.role is Role.WORKER for t in group.threads):
            state = _cell(f"○ idle{gil}", self._style("idle") + gil_style)
        else:
            state = _cell(f"·{gil}", self._style("other") + gil_style)
        return {
            "count": _cell(str(group.count), right=True),
            "state": state,
            "oldest": _cell(format_duration(group.oldest) if busy else "", right=True),
            "stack": _cell(stack_summary(group.stack)),
            "requests": _cell(most_common_requests(group.threads)),
        }

    def on_resize(self, event: Resize) -> None:
        if self._layout(self._rows()) != self._specs:
            self._fill(self.selected_key())
        else:
            self._show_pending()


def _same_cell(a: Text, b: Text) -> bool:
    return a.plain == b.plain and a.style == b.style and a.justify == b.justify


def _same_cells(
    shown: Optional[Dict[str, Text]], cells: Dict[str, Text], specs: Sequence[ColumnSpec]
) -> bool:
    return shown is not None and all(_same_cell(shown[s.key], cells[s.key]) for s in specs)


def _cell(text: str, style: Union[Style, str] = "", right: bool = False) -> Text:
    # Never pass plain strings to DataTable: it would parse request paths as Rich markup.
    return Text(
        text,
        style=style,
        no_wrap=True,
        overflow="ellipsis",
        justify="right" if right else "left",
        end="",
    )
