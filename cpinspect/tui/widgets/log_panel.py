"""The Log tab: every error as it happens, with its traceback and its request.

A view of the store's log (``Store.log``: the last 10,000 records and gaps, filled by every
poll whether this tab is shown or not). The list is a line-API ``ScrollView``: only the lines on
screen are rendered, new records are filtered and appended incrementally, so following a burst
of 10,000 records costs what the visible rows cost.

- Follow mode sticks to the newest record; moving up (keys, mouse wheel) pauses it; ``f`` (or
  ``end``) resumes. The caption says which.
- Filters: ``l`` level (all / warning+ / error+), ``o`` logger (cycles through those seen),
  ``x`` access status (only 5xx / only 404), ``p`` route prefix, ``/`` text search; ``c`` shows
  the matches in context (two records around each, dimmed); ``escape`` clears them all.
- ``enter`` expands or collapses a record: a traceback is one event, shown whole when open.
- ``t`` jumps to the thread still serving the record's request (same ident AND same request
  start: a reused worker is not mistaken); the Threads tab's ``e`` comes back here filtered on
  one request.
- Errors that go nowhere (no screen, no file, no other handler) are named above the list, with
  the configuration line that fixes it; records lost when the agent's ring wrapped show as a
  line in their place.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Dict, List, Optional, Tuple

from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from cpinspect.analysis import (
    LEVEL_STEPS,
    STATUS_FILTERS,
    LogFilter,
    errors_in_last,
    errors_per_minute,
    log_matches,
    running_thread,
    with_context,
)
from cpinspect.formatting import (
    format_clock,
    log_gap_line,
    log_record_details,
    log_record_line,
    log_routing_warning,
    log_state_line,
    request_line,
    sparkline,
    traceback_frames_without_source,
)
from cpinspect.model import LogEntry, LogGap, LogOrigin, LogRecord, RequestInfo, SourceKind
from cpinspect.sources.source_lines import LineReader
from cpinspect.tui.messages import ShowThread, SourceLinesLoaded
from cpinspect.tui.store import Store

CONTEXT = 2
"""Records shown around each match in context mode."""
SPARK_MINUTES = 30
LEVEL_WORDS = {0: "", 30: "level ≥ WARNING", 40: "level ≥ ERROR"}

Row = Tuple[int, int]
"""``(position in the shown list, line of that item)``."""
Shown = Tuple[int, Optional[LogEntry], bool]
"""``(entry number in the store, the entry or None for a "…" separator, is a match)``."""


class LogView(ScrollView, can_focus=True):
    """The records as lines; only the visible ones are rendered."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "home", "First", show=False),
        Binding("end", "follow", "Last", show=False),
        Binding("enter", "open_close", "Open/close", tooltip="Log tab: show or fold a traceback"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-view--cursor",
        "log-view--error",
        "log-view--warning",
        "log-view--muted",
        "log-view--gap",
        "log-view--detail",
        "log-view--match",
        "log-view--inspector",
    }

    class Moved(Message):
        """The user moved away from the end (follow pauses) or back to it."""

        def __init__(self, at_end: bool) -> None:
            super().__init__()
            self.at_end = at_end

    class Opened(Message):
        """A record was opened: its traceback may want source lines read."""

        def __init__(self, record: Optional[LogEntry]) -> None:
            super().__init__()
            self.record = record

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self.shown: List[Shown] = []
        self.rows: List[Row] = []
        self.cursor = -1
        """Position in ``shown`` of the selected item (-1: none)."""
        self.expanded: set[int] = set()
        """Entry numbers opened with enter."""
        self.follow = True
        self.highlight = ""
        self.source_lines: Dict[Tuple[str, int], Optional[str]] = {}
        """Lines the panel read for tracebacks the agent formatted without them."""

    # --- content -------------------------------------------------------------------------------

    def set_shown(self, shown: List[Shown], keep: Optional[int] = None) -> None:
        """Show these items; the cursor stays on entry ``keep`` when it is still there."""
        self.shown = shown
        if self.follow or not shown:
            self.cursor = len(shown) - 1
        elif keep is not None:
            self.cursor = self._position_of(keep)
        self.cursor = min(self.cursor, len(shown) - 1)
        self._rebuild(reveal=True)

    def append(self, items: List[Shown], drop_before: int) -> None:
        """New items at the end; items of entries older than ``drop_before`` fell off."""
        keep = self.selected_number
        cut = 0
        while cut < len(self.shown) and self.shown[cut][0] < drop_before:
            cut += 1
        while cut < len(self.shown) and self.shown[cut][1] is None:
            cut += 1
        # Rows that leave the top: the view moves up by as many, so what is on screen stays.
        gone = sum(self._lines_of(pos) for pos in range(cut)) if not self.follow else 0
        if cut:
            self.shown = self.shown[cut:]
        self.shown.extend(items)
        self.expanded = {n for n in self.expanded if n >= drop_before}
        if self.follow:
            self.cursor = len(self.shown) - 1
        else:
            self.cursor = self._position_of(keep) if keep is not None else -1
        top = round(self.scroll_offset.y)
        self._rebuild()
        if gone and not self.follow:
            self.scroll_to(y=max(0, top - gone), animate=False, immediate=True)

    def _position_of(self, number: int) -> int:
        for pos in range(len(self.shown) - 1, -1, -1):
            if self.shown[pos][0] == number and self.shown[pos][1] is not None:
                return pos
            if self.shown[pos][0] < number:
                return pos
        return 0 if self.shown else -1

    def _lines_of(self, pos: int) -> int:
        number, entry, _ = self.shown[pos]
        if isinstance(entry, LogRecord) and number in self.expanded:
            return 1 + len(self._details(entry))
        return 1

    def _details(self, record: LogRecord) -> List[str]:
        return log_record_details(record, self.source_line)

    def source_line(self, filename: str, lineno: int) -> Optional[str]:
        """A source line read for a traceback (``None`` until read, or when unreadable)."""
        return self.source_lines.get((filename, lineno))

    def source_lines_arrived(self) -> None:
        """Source lines arrived: expanded records may have grown."""
        follow = self.follow
        self.follow = False
        self._rebuild()
        self.follow = follow

    def _rebuild(self, reveal: bool = False) -> None:
        """Rows from ``shown``; following: the end shows; ``reveal``: the cursor's record
        shows; otherwise the view stays where the user scrolled it."""
        rows: List[Row] = []
        for pos in range(len(self.shown)):
            rows.append((pos, 0))
            if self.shown[pos][0] in self.expanded:
                rows.extend((pos, line) for line in range(1, self._lines_of(pos)))
        self.rows = rows
        self.virtual_size = Size(self.size.width, len(rows))
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif reveal:
            self._keep_cursor_visible()
        self.refresh()

    @property
    def selected(self) -> Optional[LogEntry]:
        if 0 <= self.cursor < len(self.shown):
            return self.shown[self.cursor][1]
        return None

    @property
    def selected_number(self) -> Optional[int]:
        if 0 <= self.cursor < len(self.shown):
            return self.shown[self.cursor][0]
        return None

    def lines_text(self) -> List[str]:
        """Every line of the list as plain text (tests, screenshots)."""
        return [self._text(pos, line).plain for pos, line in self.rows]

    def visible_text(self) -> List[str]:
        top = round(self.scroll_offset.y)
        return [self._text(p, n).plain for p, n in self.rows[top : top + self.size.height]]

    # --- rendering -----------------------------------------------------------------------------

    def _text(self, pos: int, line: int) -> Text:
        number, entry, match = self.shown[pos]
        if entry is None:
            return Text("  …", self._style("muted"))
        if isinstance(entry, LogGap):
            return Text(log_gap_line(entry), self._style("gap"))
        if line == 0:
            mark = ""
            if entry.traceback or "\n" in entry.message:
                mark = "▾ " if number in self.expanded else ""
            text = Text(log_record_line(entry).replace("▸ ", mark or "▸ ", 1))
            if entry.is_error:
                text.stylize(self._style("error"))
            elif entry.levelno >= 30 or (entry.status is not None and entry.status >= 400):
                text.stylize(self._style("warning"))
            if entry.origin is LogOrigin.INSPECTOR:  # said by cpinspect, not the target
                text.stylize(self._style("inspector"))
        else:
            details = self._details(entry)
            text = Text(details[line - 1] if line - 1 < len(details) else "")
            text.stylize(self._style("detail"))
        if not match:
            text.stylize(self._style("muted"))
        if self.highlight:
            text.highlight_words([self.highlight], self._style("match"), case_sensitive=False)
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        pos, line = self.rows[index]
        text = self._text(pos, line)
        text.no_wrap = True
        if pos == self.cursor:
            text.stylize(self._style("cursor"))
        segments = list(text.render(self.app.console))
        strip = Strip(segments).crop(scroll_x, scroll_x + width).extend_cell_length(width)
        base = self.rich_style
        if pos == self.cursor:
            base = base + self._style("cursor")
        return strip.apply_style(base) if base else strip

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"log-view--{name}", partial=True)

    # --- moving --------------------------------------------------------------------------------

    def _first_row(self, pos: int) -> int:
        for index, (p, _) in enumerate(self.rows):
            if p == pos:
                return index
        return 0

    def _keep_cursor_visible(self) -> None:
        if self.cursor < 0:
            return
        row = self._first_row(self.cursor)
        top = round(self.scroll_offset.y)
        height = max(1, self.size.height)
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row + self._lines_of(self.cursor) > top + height:
            self.scroll_to(
                y=row + self._lines_of(self.cursor) - height, animate=False, immediate=True
            )

    def _moved(self) -> None:
        at_end = self.cursor >= len(self.shown) - 1
        if self.follow != at_end:
            self.follow = at_end
            self.post_message(self.Moved(at_end))
        self._keep_cursor_visible()
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        if not self.shown:
            return
        self.cursor = max(0, min(len(self.shown) - 1, self.cursor + delta))
        self._moved()

    def action_page(self, delta: int) -> None:
        self.action_cursor(delta * max(1, self.size.height - 1))

    def action_home(self) -> None:
        self.cursor = 0 if self.shown else -1
        self._moved()

    def action_follow(self) -> None:
        self.cursor = len(self.shown) - 1
        self.follow = True
        self.post_message(self.Moved(True))
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def action_open_close(self) -> None:
        number = self.selected_number
        if number is None or not isinstance(self.selected, LogRecord):
            return
        if number in self.expanded:
            self.expanded.discard(number)
        else:
            self.expanded.add(number)
            self.post_message(self.Opened(self.selected))
        follow = self.follow
        self.follow = False  # opening a record must not scroll it away
        self._rebuild()
        self.follow = follow
        self._keep_cursor_visible()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.rows))
        if self.follow:
            self.call_after_refresh(self._to_end)
        else:
            self._keep_cursor_visible()

    def _to_end(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.follow:
            self.follow = False
            self.post_message(self.Moved(False))

    def on_click(self, event: events.Click) -> None:
        index = round(self.scroll_offset.y) + event.y
        if 0 <= index < len(self.rows):
            self.cursor = self.rows[index][0]
            self._moved()


class LogPanel(Vertical):
    """The caption, the routing warning, the sparkline, the list and the search box."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "follow", "Follow", tooltip="Log tab: stick to the newest record again"),
        Binding("l", "level", "Level", tooltip="Log tab: all / warning and worse / errors"),
        Binding("o", "logger", "Logger", show=False, tooltip="Log tab: cycle through loggers"),
        Binding("x", "status", "5xx/404", tooltip="Log tab: only 5xx answers / only 404s / all"),
        Binding("p", "route", "Route", show=False, tooltip="Log tab: only a route (path prefix)"),
        Binding("slash", "search", "Search", tooltip="Log tab: only records with this text"),
        Binding("c", "context", "Context", show=False, tooltip="Log tab: matches in context"),
        Binding(
            "t",
            "thread",
            "Its thread",
            tooltip="Log tab: the thread still serving the selected record's request",
        ),
        Binding("escape", "clear", "Clear filters", show=False, tooltip="Log tab: every record"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-panel--following",
        "log-panel--paused",
        "log-panel--warning",
        "log-panel--spark",
        "log-panel--muted",
    }

    class CaptionChanged(Message):
        def __init__(self, panel: LogPanel) -> None:
            super().__init__()
            self.panel = panel

    def __init__(
        self, source_lines: Optional[LineReader] = None, *, id: Optional[str] = None
    ) -> None:
        super().__init__(id=id)
        self._reader = source_lines
        self.filter = LogFilter()
        self.context = False
        self.request_label = ""
        """Words for the request filter (``GET /boom on CP Server Thread-3``)."""
        self._store: Optional[Store] = None
        self._seen_appended = 0
        self._seen_generation = -1
        self._loggers: List[str] = []
        self._input_mode = ""
        self._store_version = -1
        self.new_errors = 0
        """Errors arrived while the tab was not shown (for the tab's label)."""
        self.caption = ""
        self._spark_cache: Dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="log-caption")
        yield Static("", id="log-routing")
        yield LogView(id="log-view")
        yield Input(id="log-input")

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    @property
    def input(self) -> Input:
        return self.query_one("#log-input", Input)

    @property
    def caption_text(self) -> str:
        return self._plain("#log-caption")

    @property
    def routing_text(self) -> str:
        return self._plain("#log-routing")

    def _plain(self, selector: str) -> str:
        content = self.query_one(selector, Static).content
        return content.plain if isinstance(content, Text) else str(content)

    def shown(self) -> None:
        self.new_errors = 0
        self._caption()
        if self._input_mode:
            self.input.focus()
        else:
            self.view.focus()

    # --- data ----------------------------------------------------------------------------------

    def show_store(self, store: Store) -> None:
        self._store = store
        if store.version == self._store_version:
            return
        self._store_version = store.version
        if store.log_generation != self._seen_generation:
            self._seen_generation = store.log_generation
            self._seen_appended = store.log_appended
            self._refilter(keep=None)
        elif store.log_appended != self._seen_appended:
            new = store.log_appended - self._seen_appended
            self._seen_appended = store.log_appended
            self._appended(min(new, len(store.log)))
        self._routing()
        self._caption()

    def _note_loggers(self, entries: List[LogEntry]) -> None:
        for entry in entries:
            if isinstance(entry, LogRecord):
                name = _logger_family(entry.logger)
                if name not in self._loggers:
                    self._loggers.append(name)

    def _refilter(self, keep: Optional[int]) -> None:
        store = self._store
        if store is None:
            return
        entries = list(store.log)
        self._note_loggers(entries)
        first = store.log_first
        self.view.highlight = self.filter.text
        self.view.set_shown(self._select(entries, first), keep=keep)

    def _select(self, entries: List[LogEntry], first: int) -> List[Shown]:
        flt = self.filter
        if not flt.active:
            return [(first + i, e, True) for i, e in enumerate(entries)]
        matches = [isinstance(e, LogGap) or log_matches(e, flt) for e in entries]
        if not self.context:
            return [(first + i, e, True) for i, e in enumerate(entries) if matches[i]]
        out: List[Shown] = []
        for item in with_context(matches, CONTEXT):
            if item is None:
                out.append((out[-1][0] if out else first, None, False))
            else:
                i, hit = item
                out.append((first + i, entries[i], hit))
        return out

    def _appended(self, count: int) -> None:
        store = self._store
        assert store is not None
        entries = list(store.log)[len(store.log) - count :]
        self._note_loggers(entries)
        errors = sum(1 for e in entries if isinstance(e, LogRecord) and e.is_error)
        if not self.view.has_focus and not self.input.has_focus:
            self.new_errors += errors
        if self.context and self.filter.active:
            self._refilter(keep=self.view.selected_number)
            return
        first = store.log_appended - count
        self.view.append(self._select(entries, first), drop_before=store.log_first)

    def _routing(self) -> None:
        store = self._store
        state = store.log_state if store is not None else None
        warning = log_routing_warning(state.routing if state is not None else None)
        widget = self.query_one("#log-routing", Static)
        widget.display = warning is not None
        if warning is not None:
            text = Text(warning, self._style("warning"))
            if widget.content != text:  # the same words: no layout of the whole screen
                widget.update(text)

    def _sparkline(self, width: int) -> str:
        store = self._store
        if store is None:
            return ""
        now = store.update.fetched_at if store.update is not None else 0.0
        # Per second (the last minute's count moves with the clock), per record appended.
        key = hash((store.log_appended, store.log_generation, int(now), width))
        cached = self._spark_cache.get(key)
        if cached is None:
            records = store.log_records()
            counts = errors_per_minute(records, now, SPARK_MINUTES)
            last = errors_in_last(records, now)
            cached = sparkline(counts, min(width, SPARK_MINUTES)) + f" {last} errors/min"
            self._spark_cache = {key: cached}
        return cached

    def _caption(self) -> None:
        view = self.view
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        store = self._store
        update = store.update if store is not None else None
        from_file = update is not None and update.source_kind is SourceKind.FILE
        if from_file:
            # An opened snapshot: nothing arrives to follow; the records are those it holds.
            text.append("■ snapshot: the records it holds", self._style("muted"))
        elif view.follow:
            text.append("● following", self._style("following"))
        else:
            text.append("⏸ paused — f follows again", self._style("paused"))
        held = len(store.log) if store is not None else 0
        shown = sum(1 for _, e, m in view.shown if e is not None and m)
        words = self._filter_words()
        text.append(f" │ {shown:,} of {held:,}" if words else f" │ {held:,} records")
        if words:
            text.append(" │ " + " · ".join(words))
        text.append(" │ ")
        text.append(self._sparkline(SPARK_MINUTES), self._style("spark"))
        if store is not None:
            line = (
                log_state_line(store.log_state, captured=from_file)
                if store.log_state is not None
                else ""
            )
            update = store.update
            if (
                update is not None
                and update.source_kind is SourceKind.AGENT
                and update.effective_threads_source is SourceKind.PYSPY
            ):
                # The agent is there but silent (the interpreter stuck): say so, not "no agent".
                line = "the agent does not answer: its records follow when it does" + (
                    "" if not line or line.startswith("no log source") else " · " + line
                )
            if line and from_file:
                line = "captured from " + line
            if line:
                text.append(" │ " + line, self._style("muted"))
        query = self.query_one("#log-caption", Static)
        # One line high (app.tcss): a new text needs no layout; the same text no refresh.
        if query.content != text:
            query.update(text, layout=False)
        caption = "following" if view.follow else "paused"
        if self.new_errors:
            n = self.new_errors
            caption += f", {n} new error{'' if n == 1 else 's'}"
        if caption != self.caption:
            self.caption = caption
            self.post_message(self.CaptionChanged(self))

    def _filter_words(self) -> List[str]:
        flt = self.filter
        words = []
        if LEVEL_WORDS.get(flt.min_level):
            words.append(LEVEL_WORDS[flt.min_level])
        if flt.logger:
            words.append("logger " + flt.logger)
        if flt.status:
            words.append("only " + flt.status)
        if flt.route:
            words.append("route " + flt.route)
        if flt.text:
            words.append(f'"{flt.text}"')
        if flt.request is not None:
            words.append("request " + (self.request_label or "?"))
        if self.context and flt.active:
            words.append("in context")
        return words

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"log-panel--{name}", partial=True)

    # --- filters -------------------------------------------------------------------------------

    def set_filter(self, flt: LogFilter) -> None:
        self.filter = flt
        self._refilter(keep=self.view.selected_number)
        self._caption()

    def filter_request(self, ident: int, request: RequestInfo, thread_name: str) -> None:
        """Only the records of one request (the Threads tab's ``e``)."""
        assert request.started_at is not None
        self.request_label = (
            f"{request_line(request)} on {thread_name} since {format_clock(request.started_at)}"
        )
        self.view.follow = True
        self.set_filter(LogFilter(request=(ident, request.started_at)))

    def show_record(self, ref: str) -> bool:
        """Put the cursor on one record (a finding's evidence): ``"<seq>"`` for a record of
        the agent's buffer, ``"@<time>"`` for one read from a file. Every filter is cleared
        and following stops, so the record stays under the cursor. False when it is no longer
        held (it fell off the front)."""
        store = self._store
        if store is None:
            return False
        number = None
        for i in range(len(store.log) - 1, -1, -1):
            entry = store.log[i]
            if isinstance(entry, LogRecord) and _is_record(entry, ref):
                number = store.log_first + i
                break
        if number is None:
            return False
        self.request_label = ""
        self.filter = LogFilter()
        self.view.follow = False
        self._refilter(keep=number)
        self._caption()
        return True

    def action_follow(self) -> None:
        self.view.action_follow()
        self._caption()

    def action_level(self) -> None:
        steps = LEVEL_STEPS
        index = steps.index(self.filter.min_level) if self.filter.min_level in steps else 0
        self._replace(min_level=steps[(index + 1) % len(steps)])

    def action_status(self) -> None:
        steps = STATUS_FILTERS
        index = steps.index(self.filter.status) if self.filter.status in steps else 0
        self._replace(status=steps[(index + 1) % len(steps)])

    def action_logger(self) -> None:
        options = ["", *self._loggers]
        index = options.index(self.filter.logger) if self.filter.logger in options else 0
        self._replace(logger=options[(index + 1) % len(options)])

    def action_context(self) -> None:
        self.context = not self.context
        self._refilter(keep=self.view.selected_number)
        self._caption()

    def action_clear(self) -> None:
        if self._input_mode:
            self._close_input()
            return
        self.request_label = ""
        self.set_filter(LogFilter())

    def _replace(self, **changes: object) -> None:
        from dataclasses import replace

        self.set_filter(replace(self.filter, **changes))  # type: ignore[arg-type]

    def action_search(self) -> None:
        self._open_input("search", self.filter.text, "text to search for (enter; empty: all)")

    def action_route(self) -> None:
        self._open_input("route", self.filter.route, "path prefix, e.g. /cart (enter; empty: all)")

    def _open_input(self, mode: str, value: str, placeholder: str) -> None:
        self._input_mode = mode
        box = self.input
        box.placeholder = placeholder
        box.value = value
        box.display = True
        box.focus()

    def _close_input(self) -> None:
        self._input_mode = ""
        self.input.display = False
        self.view.focus()

    @on(Input.Submitted, "#log-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode = self._input_mode
        self._close_input()
        if mode == "search":
            self._replace(text=event.value.strip())
        elif mode == "route":
            self._replace(route=event.value.strip())

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self._input_mode:
            event.stop()
            self._close_input()

    @on(LogView.Opened)
    def _opened(self, event: LogView.Opened) -> None:
        """Read the source lines a traceback lacks (the agent reads no files), off the UI."""
        event.stop()
        record = event.record
        if not isinstance(record, LogRecord) or not record.traceback or self._reader is None:
            return
        view = self.view
        wanted = [
            loc
            for loc in traceback_frames_without_source(record.traceback)
            if loc not in view.source_lines
        ]
        if wanted:
            self.run_worker(
                partial(self._read_lines, self._reader, wanted),
                thread=True,
                group="log-source-lines",
                exit_on_error=False,
                description="Reading source lines for a traceback",
            )

    def _read_lines(self, reader: LineReader, wanted: List[Tuple[str, int]]) -> None:
        """Runs in a worker thread: file reads may block on a slow filesystem."""
        found: Dict[Tuple[str, int], Optional[str]] = {}
        for filename, lineno in wanted:
            try:
                found[(filename, lineno)] = reader.line(filename, lineno)
            except Exception:  # noqa: BLE001 - a reader problem costs only the line
                found[(filename, lineno)] = None
        self.post_message(SourceLinesLoaded(found))

    @on(SourceLinesLoaded)
    def _lines_loaded(self, message: SourceLinesLoaded) -> None:
        message.stop()
        view = self.view
        if len(view.source_lines) > 5000:
            view.source_lines.clear()
        view.source_lines.update(message.lines)
        view.source_lines_arrived()

    @on(LogView.Moved)
    def _moved(self, event: LogView.Moved) -> None:
        event.stop()
        self._caption()

    # --- jumps ---------------------------------------------------------------------------------

    def action_thread(self) -> None:
        entry = self.view.selected
        if not isinstance(entry, LogRecord):
            self.app.notify("Select a record first.", severity="warning")
            return
        if entry.request is None or entry.thread_ident is None:
            self.app.notify("This record was not logged during a request.", severity="warning")
            return
        store = self._store
        thread = running_thread(entry, store.threads if store is not None else None)
        if thread is None:
            self.app.notify(
                "Its request (%s) has finished: no thread serves it now."
                % request_line(entry.request),
                severity="warning",
            )
            return
        self.post_message(ShowThread(thread.ident))


def _logger_family(name: str) -> str:
    """``cherrypy.error.140234`` (an app's logger) → ``cherrypy.error``: one filter step."""
    for family in ("cherrypy.error", "cherrypy.access"):
        if name == family or name.startswith(family + "."):
            return family
    return name


def _is_record(record: LogRecord, ref: str) -> bool:
    """``record`` is the one a finding's log evidence names (see ``model.Evidence.ref``)."""
    if ref.startswith("@"):
        try:
            return record.time == float(ref[1:])
        except ValueError:
            return False
    return str(record.seq) == ref
