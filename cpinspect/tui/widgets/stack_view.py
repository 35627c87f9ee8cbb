"""The selected thread's (or stack group's) request details and stack, innermost frame first.

App frames are highlighted and followed by their source line; runs of library frames between
them fold into one dimmed line (``l`` unfolds them). The innermost frame always shows: it is
where the thread waits. Native frames (py-spy ``--native``, key ``n``) are tagged ``c`` and
styled apart: ``c    libpython3.11.so  PyObject_Call``. Source lines are read by a worker
thread, never on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import on
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Static
from textual.worker import get_current_worker

from cpinspect.formatting import (
    StackGroup,
    format_clock,
    format_duration,
    format_elapsed,
    frame_kind,
    frame_location,
    lock_lines,
    most_common_requests,
    request_line,
    thread_row,
)
from cpinspect.model import Frame, ThreadInfo
from cpinspect.sources.source_lines import LineReader
from cpinspect.tui.messages import SourceLinesLoaded

Location = Tuple[str, int]
MAX_REMEMBERED_LINES = 4096
"""Source lines remembered by the widget (the reader keeps its own per-file cache)."""


class StackView(Static):
    """Details and stack of one thread or one group of threads sharing a stack."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "stack-view--title",
        "stack-view--label",
        "stack-view--app",
        "stack-view--lib",
        "stack-view--source",
        "stack-view--busy",
        "stack-view--gil",
        "stack-view--native",
        "stack-view--muted",
    }

    def __init__(self, source_lines: Optional[LineReader] = None, *, id: Optional[str] = None):
        super().__init__("", id=id)
        self._reader = source_lines
        self._lines: Dict[Location, Optional[str]] = {}
        self._requested: Set[Location] = set()
        self._subject: Union[ThreadInfo, StackGroup, None] = None
        self.show_library = False
        """Show every library frame instead of folding runs of them."""
        self._text = Text("")
        """What the view shows (``render`` returns it)."""
        self._plain_lines: List[str] = [""]
        self._lines_version = 0
        """Moves on when source lines arrive (the stack's text made before lacks them)."""
        self._stack_text: Optional[Tuple[Sequence[Frame], Tuple[bool, int, int], Text]] = None
        """The last stack's lines, the stack and what else they were made from."""
        self._text_lines: List[Text] = [Text("")]
        """``_text`` line by line (what ``render_line`` draws)."""
        self._strips: Dict[int, Tuple[Text, Strip]] = {}
        """Each line drawn and the line of text it was drawn from."""
        self._strips_for: Optional[Tuple[int, Style]] = None
        """The width and base style ``_strips`` were drawn with."""
        self.partial_repaints = 0
        """Updates that repainted only the lines (and in them the cells) that changed: a busy
        thread's elapsed time in the title and in ``started`` ticks at every poll."""

    # --- what to show --------------------------------------------------------------------------

    def show(self, subject: Union[ThreadInfo, StackGroup, None]) -> None:
        """Show a thread, a group, or the hint to pick one (``None``)."""
        self._subject = subject
        self._request_source_lines()
        self._render_subject()

    def toggle_library(self) -> None:
        self.show_library = not self.show_library
        self._render_subject()

    @property
    def plain(self) -> str:
        """The text on show, without styles."""
        return self._text.plain

    def render(self) -> Text:
        return self._text

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the text, drawn alone and kept until that line changes: a busy
        thread's elapsed time moves its title and ``started`` lines at every poll, and a
        ``Static`` draws all of its lines again (through Textual's content) for either."""
        width = self.size.width
        base = self.rich_style
        if self._strips_for != (width, base):
            self._strips, self._strips_for = {}, (width, base)
        if y >= len(self._text_lines):
            return Strip.blank(width, base)
        line = self._text_lines[y]
        cached = self._strips.get(y)
        if cached is not None and cached[0] == line:
            return cached[1]
        text = line.copy()
        text.truncate(width, overflow="ellipsis")
        segments = list(text.render(self.app.console))
        # Not padded: the styles cache pads the line with the background alone, as a Static's.
        strip = Strip(segments).apply_style(base)
        self._strips[y] = (line, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips, self._strips_for = {}, None
        self._stack_text = None

    # --- source lines --------------------------------------------------------------------------

    def _request_source_lines(self) -> None:
        stack = _stack_of(self._subject)
        wanted = [f.location for f in stack if f.is_app and not f.native]
        missing = [loc for loc in wanted if loc not in self._lines and loc not in self._requested]
        if not missing or self._reader is None:
            return
        self._requested.update(missing)
        self.run_worker(
            partial(self._read_lines, self._reader, missing),
            thread=True,
            group="source-lines",
            exit_on_error=False,
            description="Reading source lines",
        )

    def _read_lines(self, reader: LineReader, locations: Sequence[Location]) -> None:
        """Runs in a worker thread: file reads may block on a slow filesystem."""
        found: Dict[Location, Optional[str]] = {}
        worker = get_current_worker()
        for filename, lineno in locations:
            if worker.is_cancelled:
                break
            try:
                found[(filename, lineno)] = reader.line(filename, lineno)
            except Exception:  # noqa: BLE001 - a reader bug must not cost the stack view
                self.log.error("reading", filename, lineno, "failed")
                found[(filename, lineno)] = None
        self.post_message(SourceLinesLoaded(found))

    @on(SourceLinesLoaded)
    def _source_lines_loaded(self, message: SourceLinesLoaded) -> None:
        message.stop()
        if len(self._lines) > MAX_REMEMBERED_LINES:
            self._lines.clear()
        self._lines.update(message.lines)
        self._lines_version += 1
        self._requested.difference_update(message.lines)
        self._render_subject()

    # --- rendering -----------------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"stack-view--{name}", partial=True)

    def _render_subject(self) -> None:
        subject = self._subject
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if subject is None:
            text.append("Select a thread to see its stack.", self._style("muted"))
        elif isinstance(subject, StackGroup):
            self._group_title(text, subject)
            self._stack(text, subject.stack, 0)
            self._group_details(text, subject)
        else:
            self._thread_title(text, subject)
            self._stack(text, subject.stack, subject.stack_truncated)
            self._thread_details(text, subject)
        self._show_text(text)

    def _show_text(self, text: Text) -> None:
        """Show ``text``: nothing when it is the text on show, a layout only when the number
        of lines changed (its height is its line count), and otherwise a repaint of the lines
        that changed, each from its first changed cell."""
        shown = self._text
        if shown == text:
            return  # the same text (a poll with nothing new for this thread): no repaint
        lines = text.plain.split("\n")
        before = self._plain_lines
        old_lines = self._text_lines
        new_lines = list(text.split("\n", allow_blank=True))
        self._text, self._plain_lines, self._text_lines = text, lines, new_lines
        if len(lines) != len(before) or not self.is_mounted:
            self.refresh(layout=True)
            return
        # The lines whose words are the same may still have new styles: compared as Text.
        width = self.size.width
        regions = []
        for y, (old, new) in enumerate(zip(old_lines, new_lines)):
            if old == new:
                continue
            x = 0
            if old.plain != new.plain and _same_styles_before(old, new):
                x = cell_len(_common_prefix(old.plain, new.plain))
            if x < width:
                regions.append(Region(x, y, width - x, 1))
        self.partial_repaints += 1
        if regions:
            self.refresh(*regions)
        else:
            self.refresh()

    def _field(self, text: Text, label: str, value: str, style: Union[Style, str] = "") -> None:
        text.append(f"\n{label:<8} ", self._style("label"))
        text.append(value, style)

    def _thread_title(self, text: Text, thread: ThreadInfo) -> None:
        """Name, state and request first: the stack follows right under them."""
        row = thread_row(thread)
        text.append(thread.name, self._style("title"))
        status = f"  {row.glyph} {row.state}"
        if row.elapsed:
            status += f" {row.elapsed}"
        text.append(status, self._style("busy") if thread.busy else Style())
        if thread.owns_gil:
            text.append("  holds the GIL", self._style("gil"))
        if thread.request is not None:
            text.append("\n")
            text.append(request_line(thread.request), self._style("title"))
        elif row.request:
            text.append("\n" + row.request)

    def _thread_details(self, text: Text, thread: ThreadInfo) -> None:
        text.append("\n")
        request = thread.request
        if request is not None:
            peer = request.peer if request.peer and request.peer != request.client else ""
            self._field(
                text, "client", (request.client or "—") + (f"  (peer {peer})" if peer else "")
            )
            started = format_clock(request.started_at)
            if request.started_before:
                # py-spy's first look found it running: that is all that is known of its start.
                started = "before %s  (running at py-spy's first look" % started
                if thread.elapsed is not None:
                    started += f": {format_elapsed(thread)}"
                started += ")"
            elif thread.elapsed is not None:
                started += f"  ({format_duration(thread.elapsed)} ago)"
            self._field(text, "started", started)
            handler = request.handler or "— (not dispatched yet)"
            if request.stage:
                handler += f"  stage {request.stage}"
            self._field(text, "handler", handler)
            if request.app is not None:
                self._field(text, "app", request.app or "/")
        for line in lock_lines(thread):
            self._field(text, "lock", line, "bold")
        ids = f"{thread.role.value}  ident {thread.ident}"
        if thread.native_id is not None:
            ids += f"  native {thread.native_id}"
        self._field(text, "thread", ids)
        if thread.cpu_time is not None:
            self._field(text, "cpu", format_duration(thread.cpu_time))

    def _group_title(self, text: Text, group: StackGroup) -> None:
        text.append(group.summary.split(":")[0], self._style("title"))
        if group.busy:
            text.append(f"  ● {group.busy} busy", self._style("busy"))
        holder = group.gil_holder
        if holder is not None:
            text.append(f"  GIL held by {holder.name}", self._style("gil"))
        requests = most_common_requests(group.threads)
        if requests:
            text.append("\n" + requests, self._style("title"))

    def _group_details(self, text: Text, group: StackGroup) -> None:
        text.append("\n")
        if group.busy:
            self._field(text, "oldest", format_duration(group.oldest))
        names = [t.name for t in group.threads[:4]]
        more = f" +{group.count - len(names)}" if group.count > len(names) else ""
        self._field(text, "threads", ", ".join(names) + more)

    def _stack(self, text: Text, stack: Sequence[Frame], truncated: int) -> None:
        """The stack's lines; made once for a stack (a busy thread keeps its stack's object
        from poll to poll while it does not move; a spinning one's comes as new frames at the
        same lines at every reading, equal to the last) until its source lines come."""
        made_of = (self.show_library, truncated, self._lines_version)
        cached = self._stack_text
        if (
            cached is None
            or (cached[0] is not stack and tuple(cached[0]) != tuple(stack))
            or cached[1] != made_of
        ):
            part = Text(end="")
            self._stack_lines(part, stack, truncated)
            cached = self._stack_text = (stack, made_of, part)
        text.append_text(cached[2])

    def _stack_lines(self, text: Text, stack: Sequence[Frame], truncated: int) -> None:
        text.append("\n")
        if not stack:
            text.append("\n(no Python stack)", self._style("muted"))
            return
        text.append("\nstack, innermost first", self._style("label"))
        for item in fold_library_runs(stack, self.show_library):
            text.append("\n")
            if isinstance(item, Folded):
                kind = "c" if item.native == item.count else "lib"
                text.append(f"{kind:<3}  {item.text}", self._style("lib"))
                continue
            frame = item
            kind = frame_kind(frame)
            style = self._style({"c": "native", "app": "app"}.get(kind, "lib"))
            text.append(f"{kind:<3}  {frame_location(frame)}  {frame.display_name}", style)
            if kind == "app":
                line = self._lines.get(frame.location)
                if line and line.strip():
                    text.append(f"\n       {line.strip()}", self._style("source"))
        if truncated:
            text.append(f"\n… {truncated} outer frames not reported", self._style("muted"))


def _common_prefix(a: str, b: str) -> str:
    """The longest start ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def _same_styles_before(old: Text, new: Text) -> bool:
    """The two lines' spans are the same up to where their words part: the cells before that
    look the same, only the rest needs a repaint."""
    cut = len(_common_prefix(old.plain, new.plain))
    head_old = [(s.start, min(s.end, cut), s.style) for s in old.spans if s.start < cut]
    head_new = [(s.start, min(s.end, cut), s.style) for s in new.spans if s.start < cut]
    return head_old == head_new


@dataclass(frozen=True)
class Folded:
    """A run of library (and native) frames shown as one line."""

    count: int
    native: int = 0
    """How many of them are native (C) frames."""

    @property
    def text(self) -> str:
        what = f"{self.count} library frames"
        if self.native == self.count:
            what = f"{self.count} native frames"
        elif self.native:
            what += f" ({self.native} native)"
        return f"… {what} (l shows them)"


def fold_library_runs(stack: Sequence[Frame], expanded: bool) -> List[Union[Frame, Folded]]:
    """Frames to show, with runs of two or more library or native frames folded into one.

    The innermost frame always shows (it is where the thread waits), and when it is native so
    does the run of native frames it starts (the C calls the thread is in: a regex engine
    holding the GIL). A stack with no app frames, or ``expanded``, shows everything.
    """
    if expanded or not any(f.is_app and not f.native for f in stack):
        return list(stack)
    head = 1
    if stack[0].native:
        while head < len(stack) and stack[head].native:
            head += 1
    out: List[Union[Frame, Folded]] = list(stack[:head])
    run: List[Frame] = []
    for frame in stack[head:]:
        if frame.is_app and not frame.native:
            _flush(out, run)
            run = []
            out.append(frame)
        else:
            run.append(frame)
    _flush(out, run)
    return out


def _flush(out: List[Union[Frame, Folded]], run: List[Frame]) -> None:
    if len(run) == 1:
        out.append(run[0])
    elif run:
        out.append(Folded(len(run), sum(1 for f in run if f.native)))


def _stack_of(subject: Union[ThreadInfo, StackGroup, None]) -> Iterable[Frame]:
    if subject is None:
        return ()
    return subject.stack
