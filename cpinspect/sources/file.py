"""A saved snapshot as a session: ``cpinspect open FILE`` is the live UI on saved data.

``FileSession`` answers the ``Poller`` protocol from the snapshots of one file (one, or a series
to step through), so every panel renders them exactly like live data. It is its own
``LineReader``: source lines come from the copy captured with the snapshot, never from the disk
of today (the code may have been deployed over since).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import FrozenSet, Optional, Sequence, Tuple, Union

from cpinspect.errors import CpinspectError
from cpinspect.model import (
    Resolution,
    RoutesSnapshot,
    SessionsSnapshot,
    Snapshot,
    SourceKind,
    ThreadLocals,
)
from cpinspect.snapshots import read_snapshots
from cpinspect.sources.base import Capability, LinkState, Update

LIVE_ONLY = "attach to the live process (cpinspect attach PID) to do that"


class FileSession:
    """The snapshots of one file, one at a time (``index``), as a ``Poller``."""

    def __init__(self, path: str, snapshots: Sequence[Snapshot]) -> None:
        if not snapshots:
            raise ValueError("a file session needs at least one snapshot")
        self.path = path
        self.snapshots: Tuple[Snapshot, ...] = tuple(snapshots)
        self.index = 0
        """Which snapshot is shown, 0 (the oldest) to ``count - 1``."""

    @classmethod
    def open(cls, path: Union[str, os.PathLike[str]]) -> FileSession:
        """Read ``path``. Raises ``SnapshotFileError`` with one line when it cannot."""
        name = os.fspath(path)
        return cls(name, read_snapshots(name))

    @property
    def count(self) -> int:
        return len(self.snapshots)

    @property
    def current(self) -> Snapshot:
        return self.snapshots[self.index]

    def step(self, delta: int) -> bool:
        """Move ``delta`` snapshots along the series, stopping at either end; True if it moved."""
        index = max(0, min(self.count - 1, self.index + delta))
        moved = index != self.index
        self.index = index
        return moved

    def line(self, filename: str, lineno: int) -> Optional[str]:
        """The source line as it read when the current snapshot was taken."""
        return self.current.line(filename, lineno)

    @property
    def capabilities(self) -> FrozenSet[Capability]:
        caps = set()
        if self.current.routes is not None:
            caps.add(Capability.ROUTES)
        if self.current.locals:
            caps.add(Capability.LOCALS)
        if self.current.sessions is not None:
            caps.add(Capability.SESSIONS)
        if self.count > 1:
            caps.add(Capability.SERIES)
        return frozenset(caps)

    def poll(self) -> Update:
        snap = self.current
        joined = snap.source is SourceKind.BOTH
        return Update(
            fetched_at=snap.taken_at,
            state=LinkState.LIVE,
            source_kind=SourceKind.FILE,
            source_label=self.path,
            info=snap.info,
            threads=snap.threads,
            warnings=snap.notes,
            threads_source=SourceKind.AGENT if joined else snap.source,
            stale=snap.stale,
            gil_holder=snap.gil_holder,
            pyspy_joined=joined,
            log=snap.log,
            log_state=snap.log_state,
            log_replace=True,
        )

    def routes(self) -> RoutesSnapshot:
        routes = self.current.routes
        if routes is None:
            raise CpinspectError(
                "this snapshot has no routes: it was taken without the agent; " + LIVE_ONLY
            )
        return routes

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        """What the snapshot captured: its first page of every app, as it was sorted then.
        Another page, order or a reveal asks the live process."""
        captured = self.current.sessions
        if captured is None:
            raise CpinspectError(
                "this snapshot has no sessions (taken without the agent, or by an older "
                "cpinspect); " + LIVE_ONLY
            )
        if reveal is not None:
            raise CpinspectError(
                "a saved snapshot holds no session values (they are never saved unless the "
                "capture was revealed); " + LIVE_ONLY
            )
        apps = captured.apps if app is None else tuple(a for a in captured.apps if a.app == app)
        for one in apps:
            if one.listable and (one.page.offset != offset or one.page.sort != sort):
                raise CpinspectError(
                    "this snapshot holds only the page it captured (from %d, by %s); "
                    % (one.page.offset, one.page.sort)
                    + LIVE_ONLY
                )
        return replace(captured, apps=apps)

    def thread_locals(self, ident: int) -> ThreadLocals:
        for thread_locals in self.current.locals:
            if thread_locals.ident == ident:
                return thread_locals
        if self.current.locals:
            why = "none were captured for this thread"
        else:
            why = "none were captured (take the snapshot with --locals)"
        raise CpinspectError("no local variables in this snapshot: " + why)

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        raise CpinspectError(
            "a saved snapshot cannot resolve URLs (that asks the running app); " + LIVE_ONLY
        )

    def set_native(self, native: bool) -> None:
        raise CpinspectError(
            "a saved snapshot cannot switch native frames (they are read live by py-spy); "
            + LIVE_ONLY
        )

    def load_agent(self) -> str:
        raise CpinspectError("a saved snapshot cannot load the agent; " + LIVE_ONLY)

    def close(self) -> None:
        """Nothing to release: the file was read whole when it was opened."""
