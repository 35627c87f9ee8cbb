"""The panels of the inspector, registered in one place.

Each tab is a view of the store (``cpinspect.tui.store.Store``): the App calls ``show_store``
after every change, whatever the session (agent, py-spy, a saved file). A panel whose data is
not in the polled update names a store *part* and the session method that reads it; the App
reads it in a worker when the panel first asks (``PartWanted``) and puts the answer in the store.

Adding a panel:
1. a widget file in ``tui/widgets/`` with ``show_store(store)`` and ``shown()``;
2. its pure formatter in ``formatting.py`` (tested without a terminal);
3. one session method that reads its part (``Poller`` in ``sources/base.py``, implemented by the
   live sessions and ``FileSession``) and its fake in ``tests/tui/fakes.py``;
4. a block in ``app.tcss``;
5. one ``PanelSpec`` in ``PANELS`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Tuple

from textual.widget import Widget

from cpinspect.sources.base import Capability, Poller
from cpinspect.sources.source_lines import LineReader
from cpinspect.tui.store import Store


class PanelView(Protocol):
    """What the App asks of a panel widget."""

    def show_store(self, store: Store) -> None:
        """Render from the store (cheap when nothing it shows changed)."""
        ...

    def shown(self) -> None:
        """The tab became visible: take the focus, ask for data read on first view."""
        ...


@dataclass(frozen=True)
class PanelContext:
    """What a panel may be built with."""

    poller: Poller
    source_lines: Optional[LineReader]


@dataclass(frozen=True)
class PanelSpec:
    id: str
    """The tab's id, and the name of its store part when it has one."""
    title: str
    key: str
    """The key that shows the tab."""
    build: Callable[[PanelContext], Widget]
    part: Optional[str] = None
    """The store part it reads through ``read``; None when it renders the polled update."""
    read: Optional[Callable[..., Any]] = None
    """The session method that reads the part, ``read(poller, **args)`` (blocking: the App
    calls it in a worker)."""
    only_with: Optional[Capability] = None
    """The tab exists only for sessions that have this capability."""
    every: Optional[float] = None
    """Seconds between re-reads of the part while the tab is shown on a live session (with the
    arguments the panel last asked with); None: read only when the panel asks."""


def _threads(ctx: PanelContext) -> Widget:
    from cpinspect.tui.widgets.threads_panel import ThreadsPanel

    return ThreadsPanel(ctx.source_lines, id="threads-panel")


def _routes(ctx: PanelContext) -> Widget:
    from cpinspect.tui.widgets.routes_panel import RoutesPanel

    poller = ctx.poller
    return RoutesPanel(
        poller.resolve,
        can_resolve=lambda: Capability.RESOLVE in poller.capabilities,
        can_reload=lambda: Capability.LIVE in poller.capabilities,
        answered=getattr(poller, "answered", None),
        id="routes-panel",
    )


def _sessions(ctx: PanelContext) -> Widget:
    from cpinspect.tui.widgets.sessions_panel import SessionsPanel

    poller = ctx.poller
    return SessionsPanel(
        can_reveal=lambda: Capability.LIVE in poller.capabilities, id="sessions-panel"
    )


def _read_sessions(poller: Poller, **args: Any) -> Any:
    return poller.sessions(**args)


def _log(ctx: PanelContext) -> Widget:
    from cpinspect.tui.widgets.log_panel import LogPanel

    return LogPanel(ctx.source_lines, id="log-panel")


def _series(ctx: PanelContext) -> Widget:
    from cpinspect.tui.widgets.series_panel import SeriesPanel

    return SeriesPanel(id="series-panel")


def _read_routes(poller: Poller) -> Any:
    return poller.routes()


def _read_series(poller: Poller) -> Any:
    """Every snapshot of a saved series (``FileSession.snapshots``)."""
    snapshots = getattr(poller, "snapshots", None)
    if not isinstance(snapshots, tuple):
        raise TypeError("this session holds no series")
    return snapshots


PANELS: Tuple[PanelSpec, ...] = (
    PanelSpec("threads", "Threads", "1", _threads),
    PanelSpec("routes", "Routes", "2", _routes, part="routes", read=_read_routes),
    PanelSpec(
        "sessions",
        "Sessions",
        "3",
        _sessions,
        part="sessions",
        read=_read_sessions,
        # Always there: on py-spy alone it says the agent is needed (and works once loaded);
        # a snapshot taken without sessions says so.
        every=2.0,
    ),
    # The log comes with every poll (Store.log), not as a part read on first view.
    PanelSpec("log", "Log", "4", _log),
    PanelSpec(
        "series",
        "Series",
        "5",
        _series,
        part="series",
        read=_read_series,
        only_with=Capability.SERIES,
    ),
)
"""Every panel, in tab order."""


def panels_for(capabilities: frozenset[Capability]) -> Tuple[PanelSpec, ...]:
    """The panels a session with these capabilities shows."""
    return tuple(p for p in PANELS if p.only_with is None or p.only_with in capabilities)
