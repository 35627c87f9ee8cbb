"""The interface every source implements, and the update a live session hands to the UI.

A source answers ``info()`` and ``threads()`` with model objects or raises a
``cpinspect.errors.CpinspectError``. Threads are keyed by ``ident`` (``threading.get_ident()``,
which is also py-spy's ``thread_id``), so two live sources can be merged thread by thread.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import FrozenSet, Optional, Protocol, Tuple

from cpinspect.model import (
    ListenQueue,
    LogEntry,
    LogState,
    ProcessInfo,
    Resolution,
    RoutesSnapshot,
    SessionsSnapshot,
    SourceKind,
    ThreadLocals,
    ThreadsSnapshot,
)


class Source(Protocol):
    kind: SourceKind
    label: str
    """Where the data comes from, for the header (a socket path, ``py-spy``, a file name)."""

    def info(self) -> ProcessInfo: ...

    def threads(self) -> ThreadsSnapshot: ...

    def close(self) -> None: ...


class Capability(str, enum.Enum):
    """What a session can do beyond showing its data. The TUI hides the keys of the others."""

    LIVE = "live"
    """Polls a running process (a file session shows what was saved)."""
    ROUTES = "routes"
    """Has routing trees to show (the agent live, or a snapshot that captured them)."""
    RESOLVE = "resolve"
    """Can ask the agent what CherryPy would do with a URL."""
    LOAD_AGENT = "load_agent"
    """Can inject the agent (a process read by py-spy only)."""
    NATIVE = "native"
    """Can switch native (C) frames on and off (py-spy)."""
    LOCALS = "locals"
    """Can show a thread's local variables (py-spy live, or captured in a snapshot)."""
    SESSIONS = "sessions"
    """Has session stores to show (the agent live, or a snapshot that captured them)."""
    SERIES = "series"
    """Holds several snapshots to step through (a bundle)."""


class LinkState(str, enum.Enum):
    LIVE = "live"
    LOST = "lost"
    """The target stopped answering or exited; the last data is kept."""
    RECONNECTED = "reconnected"
    """Answering again, possibly from a new pid of the same service."""


@dataclass(frozen=True)
class Update:
    """One poll's worth of data for the UI. ``info``/``threads`` are the last good values."""

    fetched_at: float
    state: LinkState
    source_kind: SourceKind
    source_label: str
    info: Optional[ProcessInfo]
    threads: Optional[ThreadsSnapshot]
    message: str = ""
    """A banner line: why the link is lost, or what reconnection found."""
    warnings: Tuple[str, ...] = ()
    """Per-endpoint degradation (version skew, failed probes)."""
    threads_source: Optional[SourceKind] = None
    """Where ``threads`` came from when it differs from ``source_kind`` (py-spy standing in
    for an agent that does not answer)."""
    stale: Tuple[str, ...] = ()
    """Parts shown from older data: ``"info"``, ``"pools"``. The UI marks them stale."""
    gil_holder: Optional[int] = None
    """Ident of the thread holding the GIL, when py-spy saw one."""
    pyspy_joined: bool = False
    """py-spy's reading was joined to the agent's threads in this update."""
    log: Tuple[LogEntry, ...] = ()
    """Log records (and gaps) that arrived since the previous update, oldest first."""
    log_state: Optional[LogState] = None
    """Cursor, missed counts, routing and files behind them (None: no log source)."""
    log_replace: bool = False
    """``log`` is the whole log, not what is new (a saved snapshot)."""
    agent_unresponsive: bool = False
    """The agent did not answer this poll and py-spy's threads stand in (the interpreter may
    be stuck; not set for a process stopped by a signal or a debugger)."""
    listen_queues: Tuple[ListenQueue, ...] = ()
    """The kernel's accept queues of the target's listening sockets (``sources.listenq``)."""

    @property
    def effective_threads_source(self) -> SourceKind:
        return self.threads_source or self.source_kind


class Poller(Protocol):
    """What the TUI polls once per interval, from a worker thread. All calls may block."""

    @property
    def capabilities(self) -> FrozenSet[Capability]:
        """What this session can do now (it may change: loading the agent adds ``RESOLVE``).
        Cheap and non-blocking: the UI asks it to decide which keys to show."""
        ...

    def poll(self) -> Update: ...

    def close(self) -> None: ...

    def thread_locals(self, ident: int) -> ThreadLocals:
        """Local variables of one thread's frames (py-spy ``--locals``), values unredacted:
        the UI hides ``sensitive`` ones until the user reveals a frame. Raises
        ``CpinspectError`` with a one-line reason when locals cannot be had."""
        ...

    def set_native(self, native: bool) -> None:
        """Include native (C) frames in the stacks of the following polls."""
        ...

    def load_agent(self) -> str:
        """Load the agent into the target (the user asked) and use it from the next poll on;
        returns a line to show. Raises ``CpinspectError`` with the reason when it cannot."""
        ...

    def routes(self) -> RoutesSnapshot:
        """Every mounted app's routing tree (agent ``/v1/routes``). Raises ``CpinspectError``
        with a one-line reason when there is no agent to ask."""
        ...

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        """One page of every app's sessions (agent ``/v1/sessions``), or of ``app`` only.
        ``reveal`` (a fingerprint) asks for that one session's values: only after the user
        confirmed, never on a timer. Raises ``CpinspectError`` with a one-line reason when
        there is no agent to ask."""
        ...

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        """What CherryPy would do with one request (agent ``/v1/resolve``). The agent may run
        user code to answer: call it only when the user asks, never on a timer."""
        ...
