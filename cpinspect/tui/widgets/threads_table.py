"""The table of threads (one row per thread) or of stack groups (one row per shared stack).

Rows are keyed by thread ident (``t:<ident>``) or by stack (``g:<digest>``) so the cursor stays
on the same thread across refreshes. Column widths follow the widget's width: the request column
takes the room left, and at narrow widths the least useful columns are dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import (
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from cpinspect.formatting import (
    StackGroup,
    ThreadRow,
    ThreadView,
    format_duration,
    most_common_requests,
    stack_summary,
    thread_elapsed_text,
    thread_row,
)
from cpinspect.model import RequestInfo, Role, ThreadInfo

CELL_PADDING = 2
"""Every cell is padded with one space on each side."""


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
RowData = Union[Tuple[ThreadRow, bool], Dict[str, Text]]
"""A thread row's text and whether the thread is busy; a group row's cells."""
FIXED_TEXT: Dict[str, Callable[[ThreadRow], str]] = {
    "state": lambda r: r.state_cell,
    "elapsed": lambda r: r.elapsed,
    "role": lambda r: r.role,
    "name": lambda r: r.name,
    "client": lambda r: r.client,
    "handler": lambda r: r.handler,
}
"""The text of a thread row's fixed-width columns (their widths follow the widest)."""
_ELAPSED = list(FIXED_TEXT).index("elapsed")
COLUMN_TEXT: Dict[str, Callable[[ThreadRow], str]] = {**FIXED_TEXT, "request": lambda r: r.request}
"""The text of every thread column: a line whose row changed only in some of them (the
elapsed time of a busy worker) is patched and repainted in those cells alone."""
LineKey = Tuple[object, ...]
"""What a screen line was made from: ``("row", key, data, cursor, focus, width, specs)``,
``("header", specs, width, focus)`` or ``("blank", width)``."""


class ThreadsTable(ScrollView, can_focus=True):
    """Threads or stack groups, one per row; the cursor stays on the same key across refreshes.

    A line-API table: a refresh computes each row's text (the cells' words, cached by thread),
    and only the rows on screen are turned into styled lines, each cached until its text, the
    columns or the cursor on it change. With 1,000 workers ticking every second a poll costs
    the sort and a few dozen lines, not a thousand rows of widgets' cells.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "home", "First", show=False),
        Binding("end", "end", "Last", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "threads-table--header",
        "threads-table--cursor",
        "threads-table--busy",
        "threads-table--reading",
        "threads-table--writing",
        "threads-table--idle",
        "threads-table--other",
        "threads-table--gil",
        "threads-table--muted",
    }

    DEFAULT_CSS = """
    ThreadsTable {
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .threads-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .threads-table--header {
                background-tint: $foreground 5%;
            }
        }
        & > .threads-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .threads-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .threads-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class RowHighlighted(Message):
        """The cursor moved to another row (by a key, a click or ``move_cursor``)."""

        def __init__(self, table: ThreadsTable, cursor_row: int, row_key: str) -> None:
            super().__init__()
            self.table = table
            self.cursor_row = cursor_row
            self.row_key = row_key

        @property
        def control(self) -> ThreadsTable:
            return self.table

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self._mode: Tuple[str, ThreadView] = ("threads", ThreadView.WORKERS)
        self._threads: List[ThreadInfo] = []
        self._groups: List[StackGroup] = []
        self._objects: Dict[str, Selection] = {}
        self._specs: List[ColumnSpec] = []
        self._row_keys: List[str] = []
        self._data: Dict[str, RowData] = {}
        """Each row's text, by row key."""
        self._thread_rows: Dict[int, Tuple[ThreadInfo, ThreadRow, Tuple[int, ...]]] = {}
        """``thread_row()`` of each thread object shown and the cell widths of its fixed
        columns (``FIXED_TEXT``), by ``id()``: a thread the source did not change since the
        last poll is not formatted or measured again."""
        self._widths: Dict[str, Tuple[int, ...]] = {}
        self._keys: Dict[int, str] = {}
        """Each thread's row key, by ident (made once, not at every poll)."""
        """Each thread row's fixed-column widths, by row key."""
        self._base_style: Optional[Style] = None
        """``rich_style`` (which walks every ancestor's styles) for the lines of one refresh."""
        self.lines_rendered = 0
        """Lines made (not taken from the cache) since the table was created: what a poll
        that changed nothing must leave alone."""
        self._lines: Dict[str, Tuple[LineKey, Strip, Optional[List[Segment]]]] = {}
        """Each rendered row's line, what it was rendered from and, for a line of one segment
        per cell (``_plain_line``), its segments: patched when only some cells' text moved."""
        self._header: Optional[Tuple[object, Strip]] = None
        self._painted: Dict[int, LineKey] = {}
        """What each line of the widget (``y``, the header's 0 included) was last rendered
        from: a refresh repaints only the lines, and in them the cells, that differ now."""
        self._specs_key: Tuple[ColumnSpec, ...] = ()
        self.lines_patched = 0
        """Lines made by patching some cells of the line the row had (counted in
        ``lines_rendered`` too)."""
        self.full_repaints = 0
        """Refreshes of every line (new rows or order, the cursor moved, a scroll, the focus);
        a poll that only moves busy workers' elapsed times repaints their cells alone."""
        self.cursor_row = 0
        """The row under the cursor (0 when the table is empty)."""

    # --- reading the table ---------------------------------------------------------------------

    @property
    def row_keys(self) -> List[str]:
        """Row keys in display order."""
        return list(self._row_keys)

    @property
    def column_keys(self) -> List[str]:
        """The keys of the columns shown, left to right (``state``, ``elapsed``, …)."""
        return [spec.key for spec in self._specs]

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
        return self._cells(self._row_keys[row])[column].plain

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

    def _layout(self) -> List[ColumnSpec]:
        content: Dict[str, int] = {}
        specs = self._column_specs()
        if self._mode[0] == "groups":
            for key in self._row_keys:
                for column, cell in self._cells(key).items():
                    content[column] = max(content.get(column, 0), cell.cell_len)
        elif self._widths:
            # The widest cell of each fixed column: one pass over the rows' widths, in C.
            content = dict(zip(FIXED_TEXT, map(max, zip(*self._widths.values()))))
        return layout_columns(specs, self._available_width(), content)

    def _fill(self, select: Optional[str]) -> None:
        previous_row = self.cursor_row
        previous_key = self.selected_key()
        self._read_rows()
        self._specs = self._layout()
        self._specs_key = tuple(self._specs)
        keys = self._row_keys
        # Lines of rows that left, and of every row if the columns changed, are dropped.
        self._lines = {k: v for k, v in self._lines.items() if k in self._data}
        self.virtual_size = Size(self._available_width(), len(keys) + 1)
        if not keys:
            self.cursor_row = 0
        elif select in self._data:
            self.cursor_row = keys.index(select)
        elif previous_key in self._data:
            self.cursor_row = keys.index(previous_key)
        else:
            self.cursor_row = min(previous_row, len(keys) - 1)
        if self.cursor_row != previous_row or select not in (None, previous_key):
            self._keep_cursor_visible()
        self._refresh_changed()

    def _read_rows(self) -> None:
        objects: Dict[str, Selection] = {}
        data: Dict[str, RowData] = {}
        keys: List[str] = []
        if self._mode[0] == "groups":
            for group in self._groups:
                key = group_key(group)
                objects[key] = group
                data[key] = self._group_cells(group)
                keys.append(key)
        else:
            known = self._thread_rows
            known_keys = self._keys
            previous = self._objects
            rows: Dict[int, Tuple[ThreadInfo, ThreadRow, Tuple[int, ...]]] = {}
            widths: Dict[str, Tuple[int, ...]] = {}
            idents: Dict[int, str] = {}
            row_of = self._row_of
            for thread in self._threads:
                ident = thread.ident
                key = known_keys.get(ident) or thread_key(ident)
                idents[ident] = key
                if key in objects:  # a source repeating an ident must not break the table
                    key = f"{key}#{len(objects)}"
                objects[key] = thread
                cached = known.get(id(thread))
                if cached is None or cached[0] is not thread:
                    cached = row_of(thread, known.get(id(previous.get(key))))
                rows[id(thread)] = cached
                data[key] = (cached[1], thread.busy)
                widths[key] = cached[2]
                keys.append(key)
            self._thread_rows = rows
            self._widths = widths
            self._keys = idents
        if self._mode[0] == "groups":
            self._widths = {}
        self._objects, self._data, self._row_keys = objects, data, keys

    def _row_of(
        self,
        thread: ThreadInfo,
        before: Optional[Tuple[ThreadInfo, ThreadRow, Tuple[int, ...]]],
    ) -> Tuple[ThreadInfo, ThreadRow, Tuple[int, ...]]:
        """``thread_row(thread)`` and its widths. A thread that only moved on in time since the
        last poll (a delta carries a busy thread's request object over, with a new ``elapsed``)
        keeps its row but for the elapsed cell: 500 of them at every poll. The stack is not in
        the row, and a request rebuilt with the same cells is the same request, an unknown GIL
        (the agent's ``None``) the same as py-spy's ``False``: behind 100 spinning workers every
        reading brings their stacks and requests (and py-spy's carried threads, or the agent's
        answer after py-spy's, every thread) as new objects of the same text."""
        if before is not None:
            old, row, widths = before
            if (
                _same_cells(old.request, thread.request)
                and old.busy == thread.busy
                and old.phase is thread.phase
                and old.role is thread.role
                and bool(old.owns_gil) == bool(thread.owns_gil)
                and old.name == thread.name
                and old.ident == thread.ident
            ):
                elapsed = thread_elapsed_text(thread)
                if elapsed != row.elapsed:
                    row = _with_elapsed(row, elapsed)
                    widths = (*widths[:_ELAPSED], _width(elapsed), *widths[_ELAPSED + 1 :])
                return thread, row, widths
        row = thread_row(thread)
        return thread, row, tuple(_width(text(row)) for text in FIXED_TEXT.values())

    # --- cells and lines -----------------------------------------------------------------------

    def _cells(self, key: str) -> Dict[str, Text]:
        data = self._data[key]
        if isinstance(data, dict):
            return data
        row, busy = data
        return self._thread_cells(row, busy)

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

    def _thread_cells(self, row: ThreadRow, busy: bool) -> Dict[str, Text]:
        state_style = self._state_style(row)
        muted = self._style("muted")
        elapsed_style = self._state_style(replace(row, gil=False)) if busy else Style()
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

    def _line(
        self, cells: Sequence[Text], over: Optional[Style], width: int
    ) -> Tuple[Strip, Optional[List[Segment]]]:
        """One line of padded cells, ``over`` laid over every cell's own style (the cursor).

        Cells of one style each (all of ours) become three segments apiece, fitted as
        ``Text.align`` would (cut with an ellipsis, padded to the column's width); a cell
        with spans goes through ``Text`` rendering. ~40 lines change at every poll.
        """
        if all(not cell.spans for cell in cells):
            return self._plain_line(cells, over, width)
        line = Text(no_wrap=True, end="")
        for spec, cell in zip(self._specs, cells):
            text = cell.copy()
            text.align(cell.justify or "left", spec.width)  # type: ignore[arg-type]
            line.append(" " * (CELL_PADDING // 2))
            line.append_text(text)
            line.append(" " * (CELL_PADDING - CELL_PADDING // 2))
        segments = list(line.render(self.app.console))
        if over is not None:
            segments = [Segment(t, (s or Style()) + over, c) for t, s, c in segments]
        strip = Strip(segments).extend_cell_length(width, over or Style()).crop(0, width)
        return strip.apply_style(self._rich_base()), None

    def _plain_line(
        self, cells: Sequence[Text], over: Optional[Style], width: int
    ) -> Tuple[Strip, Optional[List[Segment]]]:
        """The line and, when it is not cut at ``width``, its segments (three a cell: the
        padding, the text fitted to its column, the padding), which a patch may replace."""
        # One Strip (each holds seven caches) with the base style already in every segment,
        # rather than four: made, extended, cropped and styled.
        base = self._rich_base()
        before = " " * (CELL_PADDING // 2)
        after = " " * (CELL_PADDING - CELL_PADDING // 2)
        console = self.app.console
        blank = base if over is None else base + over
        segments: List[Segment] = []
        length = 0
        for spec, cell in zip(self._specs, cells):
            style = cell.style
            if not isinstance(style, Style):
                style = console.get_style(style, default=Style.null())
            style = base + style if over is None else base + (style + over)
            segments.append(Segment(before, blank))
            segments.append(Segment(_fit(cell.plain, spec.width, cell.justify == "right"), style))
            segments.append(Segment(after, blank))
            length += spec.width + CELL_PADDING
        if length < width:
            segments.append(Segment(" " * (width - length), blank))
        elif length > width:
            return Strip(segments, length).crop(0, width), None
        return Strip(segments, width), segments

    def _rich_base(self) -> Style:
        """``rich_style``, worked out once per refresh of the table rather than once a line."""
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def _repaint(self) -> None:
        """Every line again: new rows, the cursor moved, the focus came or went (which may
        change the base style too: it is read again, once, for them)."""
        self._base_style = None
        self.full_repaints += 1
        self.refresh()

    def _line_key(self, y: int, top: int, width: int) -> LineKey:
        """What line ``y`` of the widget shows now (see ``LineKey``)."""
        if y == 0:
            return ("header", self._specs_key, width, self.has_focus)
        index = top + y - 1
        if index >= len(self._row_keys):
            return ("blank", width)
        key = self._row_keys[index]
        cursor = index == self.cursor_row
        return ("row", key, self._data[key], cursor, self.has_focus, width, self._specs_key)

    def _refresh_changed(self) -> None:
        """Repaint what differs from the lines on screen: the changed cells of a row whose
        state and style stayed (an elapsed time ticking), the whole of any other changed
        line; nothing when nothing changed. With 500 busy workers every visible row's elapsed
        cell moves at every poll: a repaint of that column, not of the table."""
        height = self.size.height
        if not self._painted or not height:
            self._repaint()
            return
        top = int(self.scroll_offset.y)
        width = self.size.width
        changed: List[Tuple[int, int, int]] = []
        for y in range(height):
            now = self._line_key(y, top, width)
            before = self._painted.get(y)
            if before == now:
                continue
            span = self._changed_span(before, now, width)
            if span is not None:
                changed.append((y, *span))
        regions: List[Region] = []
        for y, x0, x1 in changed:
            last = regions[-1] if regions else None
            if last is not None and last.bottom == y and (last.x, last.right) == (x0, x1):
                regions[-1] = Region(x0, last.y, x1 - x0, last.height + 1)
            else:
                regions.append(Region(x0, y, x1 - x0, 1))
        if regions:
            self.refresh(*regions)

    def _changed_span(
        self, before: Optional[LineKey], now: LineKey, width: int
    ) -> Optional[Tuple[int, int]]:
        """The columns ``[x0, x1)`` of a line to repaint (``None``: nothing shows different)."""
        columns = _patchable(before, now)
        if columns is None:
            return (0, width)
        x = 0
        x0, x1 = width, 0
        for spec in self._specs:
            if spec.key in columns:
                x0, x1 = min(x0, x), max(x1, x + spec.width + CELL_PADDING)
            x += spec.width + CELL_PADDING
        if x1 <= x0:
            return None
        return (min(x0, width), min(x1, width))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        line_key = self._line_key(y, int(self.scroll_offset.y), width)
        self._painted[y] = line_key
        if line_key[0] == "header":
            return self._header_line(width)
        if line_key[0] == "blank":
            return Strip.blank(width, self._rich_base())
        key = self._row_keys[int(self.scroll_offset.y) + y - 1]
        cached = self._lines.get(key)
        if cached is not None and cached[0] == line_key:
            return cached[1]
        self.lines_rendered += 1
        data = self._data[key]
        if cached is not None and cached[2] is not None and isinstance(data, tuple):
            columns = _patchable(cached[0], line_key)
            if columns is not None:
                strip, segments = self._patch(cached[2], data[0], columns, width)
                self.lines_patched += 1
                self._lines[key] = (line_key, strip, segments)
                return strip
        cursor = bool(line_key[3])
        over = self._style("cursor") if cursor else None
        cells = self._cells(key)
        strip, patchable = self._line([cells[spec.key] for spec in self._specs], over, width)
        self._lines[key] = (line_key, strip, patchable)
        return strip

    def _patch(
        self, segments: List[Segment], row: ThreadRow, columns: FrozenSet[str], width: int
    ) -> Tuple[Strip, List[Segment]]:
        """A line of ``_plain_line`` with the text of ``columns`` replaced by ``row``'s (each
        cell's style, and the line's length, stay)."""
        patched = list(segments)
        for index, spec in enumerate(self._specs):
            if spec.key in columns:
                old = patched[3 * index + 1]
                text = _fit(COLUMN_TEXT[spec.key](row), spec.width, spec.key == "elapsed")
                patched[3 * index + 1] = Segment(text, old.style)
        return Strip(patched, width), patched

    def _header_line(self, width: int) -> Strip:
        made_of = (tuple(self._specs), width, self.has_focus)
        if self._header is not None and self._header[0] == made_of:
            return self._header[1]
        header = self._style("header")
        labels = [Text(spec.label, no_wrap=True, overflow="ellipsis") for spec in self._specs]
        strip, _ = self._line(labels, header, width)
        self._header = (made_of, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines = {}
        self._header = None
        self._base_style = None
        self._painted = {}

    def _on_focus(self, event: events.Focus) -> None:
        self._repaint()

    def _on_blur(self, event: events.Blur) -> None:
        self._repaint()

    # --- the cursor ----------------------------------------------------------------------------

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on ``row`` (clamped), bring it into view and say so."""
        if not self._row_keys:
            return
        row = max(0, min(len(self._row_keys) - 1, row))
        moved = row != self.cursor_row
        self.cursor_row = row
        self._keep_cursor_visible()
        self._repaint()
        if moved:
            self.post_message(self.RowHighlighted(self, row, self._row_keys[row]))

    def _keep_cursor_visible(self) -> None:
        height = max(1, self.scrollable_content_region.height - 1)  # under the header
        top = int(self.scroll_offset.y)
        row = self.cursor_row
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(row=self.cursor_row + delta)

    def action_page(self, delta: int) -> None:
        self.move_cursor(row=self.cursor_row + delta * max(1, self.size.height - 2))

    def action_home(self) -> None:
        self.move_cursor(row=0)

    def action_end(self) -> None:
        self.move_cursor(row=len(self._row_keys) - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            index = int(self.scroll_offset.y) + event.y - 1
            if 0 <= index < len(self._row_keys):
                self.move_cursor(row=index)

    def on_resize(self, event: events.Resize) -> None:
        if self._layout() != self._specs:
            self._fill(self.selected_key())
        else:
            self.virtual_size = Size(self._available_width(), len(self._row_keys) + 1)


def _patchable(before: Optional[LineKey], now: LineKey) -> Optional[FrozenSet[str]]:
    """The columns whose text alone differs between two row lines of one thread that keep
    their styles (the same state, GIL, busy, cursor, focus, width and columns); ``None`` when
    the line must be made again whole."""
    if before is None or before[0] != "row" or now[0] != "row" or before[1] != now[1]:
        return None
    if before[3:] != now[3:]:
        return None
    old, new = before[2], now[2]
    if not isinstance(old, tuple) or not isinstance(new, tuple) or old[1] != new[1]:
        return None
    a, b = old[0], new[0]
    if (a.glyph, a.state, a.gil) != (b.glyph, b.state, b.gil):
        return None
    return frozenset(key for key, text in COLUMN_TEXT.items() if text(a) != text(b))


def _same_cells(a: Optional[RequestInfo], b: Optional[RequestInfo]) -> bool:
    """Whether two requests give a thread row the same cells (``thread_row``: the method and
    target, the client, the handler), whatever else differs (when each source saw it start)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (a.method, a.path, a.query, a.client, a.handler) == (
        b.method,
        b.path,
        b.query,
        b.client,
        b.handler,
    )


def _with_elapsed(row: ThreadRow, elapsed: str) -> ThreadRow:
    """``replace(row, elapsed=elapsed)`` without running the dataclass's ``__init__`` (500
    busy rows at every poll)."""
    new = object.__new__(ThreadRow)
    new.__dict__.update(row.__dict__)
    new.__dict__["elapsed"] = elapsed
    return new


def _cell(text: str, style: Union[Style, str] = "", right: bool = False) -> Text:
    # Never parse plain strings as markup: request paths may hold square brackets.
    return Text(
        text,
        style=style,
        no_wrap=True,
        overflow="ellipsis",
        justify="right" if right else "left",
        end="",
    )


def _fit(text: str, width: int, right: bool) -> str:
    """``text`` in exactly ``width`` cells: cut with an ellipsis or padded (on the left when
    ``right``), as ``Text.align`` with ``overflow="ellipsis"`` does."""
    length = _width(text)
    if length > width:
        if width <= 0:
            return ""
        return set_cell_size(text, width - 1) + "…"
    if length == width:
        return text
    pad = " " * (width - length)
    return pad + text if right else text + pad


def _width(text: str) -> int:
    """Cells ``text`` takes (``len`` for ASCII: one cell a character)."""
    return len(text) if text.isascii() else cell_len(text)
