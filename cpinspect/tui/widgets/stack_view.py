"""The selected thread's (or stack group's) request details and stack, innermost frame first.

App frames are highlighted and followed by their source line; runs of library frames between
them fold into one dimmed line (``l`` unfolds them). The innermost frame always shows: it is
where the thread waits. Source lines are read by a worker thread, never on the UI thread.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from rich.style import Style
from rich.text import Text
from textual import on
from textual.widgets import Static
from textual.worker import get_current_worker

from cpinspect.formatting import (
    StackGroup,
    format_clock,
    format_duration,
    frame_location,
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
        content = self.content
        return content.plain if isinstance(content, Text) else str(content)

    # --- source lines --------------------------------------------------------------------------

    def _request_source_lines(self) -> None:
        stack = _stack_of(self._subject)
        wanted = [f.location for f in stack if f.is_app]
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
        self.update(text)

    def _field(self, text: Text, label: str, value: str, style: Union[Style, str] = "") -> None:
        text.append(f"\n{label:<8} ", self._style("label"))
        text.append(value, style)

    def _thread_title(self, text: Text, thread: ThreadInfo) -> None:
        """Name, state and request first: the stack follows right under them."""
        row = thread_row(thread)
        text.append(thread.name, self._style("title"))
        status = f"  {row.state_cell}"
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
            if thread.elapsed is not None:
                started += f"  ({format_duration(thread.elapsed)} ago)"
            self._field(text, "started", started)
            handler = request.handler or "— (not dispatched yet)"
            if request.stage:
                handler += f"  stage {request.stage}"
            self._field(text, "handler", handler)
            if request.app:
                self._field(text, "app", request.app)
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
        text.append("\n")
        if not stack:
            text.append("\n(no Python stack)", self._style("muted"))
            return
        text.append("\nstack, innermost first", self._style("label"))
        for item in fold_library_runs(stack, self.show_library):
            text.append("\n")
            if isinstance(item, int):
                text.append(f"lib  … {item} library frames (l shows them)", self._style("lib"))
                continue
            frame = item
            kind, style = (
                ("app", self._style("app")) if frame.is_app else ("lib", self._style("lib"))
            )
            text.append(f"{kind}  {frame_location(frame)}  {frame.display_name}", style)
            if frame.is_app:
                line = self._lines.get(frame.location)
                if line and line.strip():
                    text.append(f"\n       {line.strip()}", self._style("source"))
        if truncated:
            text.append(f"\n… {truncated} outer frames not reported", self._style("muted"))


def fold_library_runs(stack: Sequence[Frame], expanded: bool) -> List[Union[Frame, int]]:
    """Frames to show, with runs of two or more library frames replaced by their count.

    The innermost frame always shows (it is where the thread waits); a stack with no app
    frames, or ``expanded``, shows everything.
    """
    if expanded or not any(f.is_app for f in stack):
        return list(stack)
    out: List[Union[Frame, int]] = [stack[0]]
    run: List[Frame] = []
    for frame in stack[1:]:
        if frame.is_app:
            _flush(out, run)
            run = []
            out.append(frame)
        else:
            run.append(frame)
    _flush(out, run)
    return out


def _flush(out: List[Union[Frame, int]], run: List[Frame]) -> None:
    if len(run) == 1:
        out.append(run[0])
    elif run:
        out.append(len(run))


def _stack_of(subject: Union[ThreadInfo, StackGroup, None]) -> Iterable[Frame]:
    if subject is None:
        return ()
    return subject.stack
