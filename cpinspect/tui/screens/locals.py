"""``v``: the selected thread's local variables, read on demand (py-spy ``--locals``).

Reading locals stops nothing in the target but takes a moment, so it runs in a worker thread;
the screen says what it is doing, then shows the frames (``LocalsList``) or one line saying why
there are none. Sensitive values stay hidden until the user reveals a frame (``r`` or enter),
one frame at a time. Escape (or ``v``, ``q``) closes the view.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from cpinspect.errors import CpinspectError
from cpinspect.formatting import format_clock
from cpinspect.model import ThreadInfo, ThreadLocals
from cpinspect.tui.messages import LocalsLoaded
from cpinspect.tui.widgets.locals_list import LocalsList

FetchLocals = Callable[[], ThreadLocals]
"""Blocking: ``poller.thread_locals(ident)`` bound to the thread."""

HIDDEN_NOTE = (
    "*** hides values of secret-looking names, cookies and authorization, long values"
    " · r or enter reveals the selected frame"
)


def describe_error(error: BaseException) -> str:
    """One line: a ``CpinspectError`` says it all; anything else is named with its type."""
    if isinstance(error, CpinspectError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " ".join(text.split())


class LocalsScreen(ModalScreen[None]):
    """The local variables of one thread, frame by frame, innermost first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("r", "reveal", "Reveal frame", tooltip="Show or hide this frame's hidden values"),
        Binding("v", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, thread: ThreadInfo, fetch: FetchLocals) -> None:
        super().__init__()
        self.thread = thread
        self._fetch = fetch
        self.error: Optional[str] = None
        """Why the locals could not be read, once that is known."""
        self.loaded = False
        """The worker has answered (with locals or with an error)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="locals-dialog"):
            yield Static(self._title(None), id="locals-title")
            yield Static(
                Text(f"reading the locals of {self.thread.name} with py-spy…"),
                id="locals-status",
            )
            yield LocalsList(id="locals-list")
        yield Footer()

    @property
    def locals_list(self) -> LocalsList:
        return self.query_one(LocalsList)

    @property
    def status_text(self) -> str:
        """The line under the title, without styles."""
        content = self.query_one("#locals-status", Static).content
        return content.plain if isinstance(content, Text) else str(content)

    def on_mount(self) -> None:
        self.locals_list.display = False
        self.run_worker(
            self._read,
            thread=True,
            exclusive=True,
            group="locals",
            exit_on_error=False,
            description=f"Reading the locals of {self.thread.name}",
        )

    def _read(self) -> None:
        """Runs in a worker thread: py-spy takes a moment and may fail."""
        try:
            message = LocalsLoaded(self._fetch())
        except Exception as error:  # noqa: BLE001 - shown in the view; the app goes on
            message = LocalsLoaded(None, describe_error(error))
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    @on(LocalsLoaded)
    def _loaded(self, message: LocalsLoaded) -> None:
        message.stop()
        self.loaded = True
        status = self.query_one("#locals-status", Static)
        if message.locals is None:
            self.error = message.error or "no answer"
            status.update(Text(f"✖ locals unavailable: {self.error}", no_wrap=True))
            status.add_class("-error")
            return
        self.query_one("#locals-title", Static).update(self._title(message.locals))
        listing = self.locals_list
        listing.show(message.locals)
        listing.display = True
        listing.focus()
        if any(v.sensitive for f in message.locals.frames for v in f.variables):
            status.update(Text(HIDDEN_NOTE))
        elif message.locals.frames:
            status.update(Text("nothing here looks secret: every value is shown"))
        else:
            status.update(Text("no Python frames in this thread"))

    def _title(self, locals_: Optional[ThreadLocals]) -> Text:
        text = Text(f"Local variables · {self.thread.name}", no_wrap=True, overflow="ellipsis")
        if locals_ is not None:
            text.append(f" · read {format_clock(locals_.taken_at)}, innermost frame first")
        return text

    def action_reveal(self) -> None:
        self.locals_list.toggle_reveal()

    def action_close(self) -> None:
        self.dismiss(None)
