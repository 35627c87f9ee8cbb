"""App-level data events. Those that can flood implement ``can_replace``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from textual.message import Message

from cpinspect.model import Resolution, ThreadLocals
from cpinspect.sources.base import Update


class Polled(Message):
    """One poll finished, with an update or with the error ``poll()`` raised.

    A newer ``Polled`` supersedes a queued one: a UI that falls behind skips stale data —
    except one that carries log records, which are new data and never skipped.
    """

    def __init__(self, update: Optional[Update], error: Optional[str] = None) -> None:
        super().__init__()
        self.update = update
        self.error = error

    def can_replace(self, message: Message) -> bool:
        if not isinstance(message, Polled):
            return False
        older = message.update
        return older is None or not (older.log or older.log_replace)


class SourceLinesLoaded(Message):
    """Source lines read by a worker: ``{(filename, lineno): line or None}``."""

    def __init__(self, lines: Dict[Tuple[str, int], Optional[str]]) -> None:
        super().__init__()
        self.lines = lines


class LocalsLoaded(Message):
    """``thread_locals()`` finished in a worker: the locals, or the one-line reason it failed."""

    def __init__(self, locals_: Optional[ThreadLocals], error: Optional[str] = None) -> None:
        super().__init__()
        self.locals = locals_
        self.error = error


class NativeChanged(Message):
    """``set_native()`` finished in a worker: ``native`` is now in force, or ``error`` says why
    not (the previous setting stays)."""

    def __init__(self, native: bool, error: Optional[str] = None) -> None:
        super().__init__()
        self.native = native
        self.error = error


class AgentLoaded(Message):
    """``load_agent()`` finished in a worker: ``note`` to show, or ``error`` says why not."""

    def __init__(self, note: str = "", error: Optional[str] = None) -> None:
        super().__init__()
        self.note = note
        self.error = error


class PartWanted(Message):
    """A panel asks the App to read one store part (``routes`` …) through the session.

    ``args`` are keyword arguments of the session method (the page and order of the sessions);
    with ``remember`` the App reads the part with them again at the panel's refresh interval,
    without it only this once (a session's values are revealed on the user's word, never on a
    timer: the refresh goes on with the last remembered arguments).
    """

    def __init__(
        self, name: str, args: Optional[Dict[str, Any]] = None, remember: bool = True
    ) -> None:
        super().__init__()
        self.name = name
        self.args = dict(args or {})
        self.remember = remember


class PartLoaded(Message):
    """A session method finished in a worker: the part's new value, or why it failed.

    A newer answer for the same part supersedes a queued one.
    """

    def __init__(self, name: str, value: Any, error: Optional[str] = None) -> None:
        super().__init__()
        self.name = name
        self.value = value
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PartLoaded) and message.name == self.name


class Captured(Message):
    """A snapshot was written (``paths``), or ``error`` says why not."""

    def __init__(self, paths: Tuple[str, ...], error: Optional[str] = None) -> None:
        super().__init__()
        self.paths = paths
        self.error = error


class Resolved(Message):
    """``resolve()`` finished in a worker: the verdict for ``query``, or why there is none."""

    def __init__(
        self,
        query: str,
        resolution: Optional[Resolution],
        error: Optional[str] = None,
        answered: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.query = query
        self.resolution = resolution
        self.error = error
        self.answered = tuple(answered)
        """The lines saying how the path was answered lately (``formatting.answered_lines``)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Resolved)


class ShowThread(Message):
    """A panel asks to show one thread in the Threads tab (a session lock's holder, a log
    record's request): the App switches tabs and puts the cursor on it."""

    def __init__(self, ident: int) -> None:
        super().__init__()
        self.ident = ident


class ShowRecords(Message):
    """The Threads tab asks to show the log records of one thread's request (``e``): the App
    switches to the Log tab filtered on it."""

    def __init__(self, ident: int) -> None:
        super().__init__()
        self.ident = ident


class AutoCaptured(Message):
    """An automatic capture (``attach --auto-snapshot``) finished in a worker: ``text`` to
    announce (``captured 3 snapshots: pool starvation held 10 s → <path>``), or ``error``."""

    def __init__(self, text: str, paths: Tuple[str, ...] = (), error: Optional[str] = None) -> None:
        super().__init__()
        self.text = text
        self.paths = paths
        self.error = error


class AutoPolled(Message):
    """A poll taken by an automatic capture's series (under the App's poll lock): applied like
    any other, so the store misses none of its log records."""

    def __init__(self, update: Update) -> None:
        super().__init__()
        self.update = update
