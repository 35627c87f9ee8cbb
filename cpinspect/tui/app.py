"""The inspector: header, banner, pool bar and tabbed panels over one session (``Poller``).

The App owns the store (``tui/store.py``) and every worker that fills it: ``poller.poll()`` once
per interval for a live session (one at a time), the session method of each panel's part when the
panel asks (``tui/panels.py``), source lines for the stack pane, ``poller.thread_locals()`` for the
locals view (``v``), ``poller.set_native()`` (``n``) and a capture (``s``). Results arrive as
messages; the UI thread only puts them in the store and renders the panels from it::

    app = InspectorApp(session, interval=1.0, source_lines=SourceLines(pid), clock=time.time)
    app.run()

A saved snapshot opens the same way, on a ``FileSession``: polled once (and again when ``[`` and
``]`` step through a series); the keys of what it cannot do are hidden.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from functools import partial
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Sequence

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, get_current_worker

from cpinspect.capture_trigger import AutoSnapshot, CaptureTrigger, inspector_record
from cpinspect.formatting import SESSION_SORTS
from cpinspect.model import SNAPSHOT_LOG_RECORDS, Evidence, LogRecord, SourceKind
from cpinspect.sources.base import Capability, LinkState, Poller, Update
from cpinspect.sources.logfeed import LogFeed, merge_backfill, static_prefixes
from cpinspect.sources.pacing import Pace
from cpinspect.sources.source_lines import LineReader
from cpinspect.tui.compositing import InspectorScreen
from cpinspect.tui.hangup import terminal_driver
from cpinspect.tui.messages import (
    AgentLoaded,
    AutoCaptured,
    AutoPolled,
    Captured,
    NativeChanged,
    PartLoaded,
    PartWanted,
    Polled,
    ShowRecords,
    ShowThread,
)
from cpinspect.tui.panels import PanelContext, PanelSpec, PanelView, panels_for
from cpinspect.tui.screens.confirm import ConfirmScreen
from cpinspect.tui.screens.findings import FindingsScreen
from cpinspect.tui.screens.help import HelpScreen, KeyHelp
from cpinspect.tui.screens.locals import LocalsScreen, describe_error
from cpinspect.tui.store import Store
from cpinspect.tui.widgets.banner import Banner, banner_lines
from cpinspect.tui.widgets.findings_strip import FindingsStrip
from cpinspect.tui.widgets.header_bar import HeaderBar, HeaderState
from cpinspect.tui.widgets.log_panel import LogPanel, LogView
from cpinspect.tui.widgets.pool_bar import PoolBar, PoolBarState
from cpinspect.tui.widgets.routes_panel import RoutesPanel
from cpinspect.tui.widgets.sessions_panel import PAGE as SESSIONS_PAGE
from cpinspect.tui.widgets.sessions_panel import SessionsPanel
from cpinspect.tui.widgets.threads_panel import ThreadsPanel

AGE_TICK = 0.5
"""Seconds between refreshes of the data's age in the header."""
CLOSE_WAIT = 2.0
"""On exit, how long to wait for an in-flight poll before closing the poller anyway."""
PYSPY_WAIT = 0.25
"""Seconds a poll waits for py-spy once the agent has answered (``AgentSession.pyspy_wait``):
a slower py-spy read joins the next poll instead of ageing this one."""
COMPACT_FOOTER_BELOW = 100
GC_YOUNG = 10_000
"""Allocations between collections of the youngest generation while the app runs (Python's
default is 700; see ``InspectorApp._freeze_heap``)."""
FINDINGS_SESSIONS_EVERY = 5.0
"""Seconds between reads of the sessions (their first page and the locks held now) for the
findings while the Sessions tab is not shown: a held session lock is named on the first screen."""
"""Terminal widths under which the footer drops its spacing (and the palette hint) to fit."""


class ReadingLanded(Message):
    """py-spy's reading landed while it carries the polls (``AgentSession.on_landed``, posted
    from py-spy's thread): a poll now shows it, not the next tick."""


def tab_label(spec: PanelSpec) -> str:
    """``1 Threads``: a tab says the key that shows it."""
    return f"{spec.key} {spec.title}"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class InspectorApp(App[None]):
    """The cpinspect TUI over any ``Poller`` (agent, py-spy, a saved file, a test fake)."""

    CSS_PATH = "app.tcss"
    TITLE = "cpinspect"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "space",
            "toggle_pause",
            "Pause",
            tooltip="Freeze the screen (polling goes on); again shows the newest",
        ),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Poll now"),
        Binding(
            "v",
            "locals",
            "Locals",
            tooltip="Local variables of the selected thread (py-spy)",
        ),
        Binding(
            "n",
            "toggle_native",
            "Native",
            tooltip="Native (C) frames in the stacks on/off (py-spy --native)",
        ),
        Binding(
            "f",
            "findings",
            "Findings",
            tooltip="Every finding with its evidence and fix; enter jumps to the evidence",
        ),
        Binding(
            "i",
            "load_agent",
            "Load agent",
            show=False,
            tooltip="Load the cpinspect agent into a process read by py-spy only (asks first)",
        ),
        Binding(
            "s",
            "capture",
            "Snapshot",
            tooltip="Save a snapshot of everything on screen (JSON + text report); path shown",
        ),
        Binding(
            "left_square_bracket",
            "step(-1)",
            "Previous",
            tooltip="Saved series: the previous snapshot",
        ),
        Binding(
            "right_square_bracket",
            "step(1)",
            "Next",
            tooltip="Saved series: the next snapshot",
        ),
        Binding("question_mark", "help", "Keys", tooltip="This list of keys"),
        Binding("q", "quit", "Quit", tooltip="Quit the inspector (the target is unaffected)"),
    ]

    def __init__(
        self,
        poller: Poller,
        interval: float = 1.0,
        source_lines: Optional[LineReader] = None,
        clock: Callable[[], float] = time.time,
        snapshot_dir: Optional[str] = None,
        initial_tab: Optional[str] = None,
        auto_snapshot: Optional[AutoSnapshot] = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        # Ends the app when the terminal goes away or on SIGHUP/SIGTERM/SIGINT (tui/hangup.py).
        super().__init__(driver_class=terminal_driver())
        self.poller = poller
        self.interval = interval
        self.source_lines = source_lines
        self.clock = clock
        self.snapshot_dir = snapshot_dir
        """Where ``s`` writes snapshots (the current directory when None)."""
        self.store = Store()
        """Everything known about the target: what is on screen and the history behind it."""
        self.panel_specs = panels_for(poller.capabilities)
        """The panels of this session, in tab order."""
        self.initial_tab = initial_tab
        """The tab shown first (``series`` for ``open A B``); the Threads tab otherwise."""
        self.panels: Dict[str, PanelView] = {}
        """Each panel's widget by tab id."""
        self.captures: List[str] = []
        """Paths written by ``s``, oldest first."""
        self.capturing = False
        """A capture is running in a worker."""
        self.paused = False
        """While paused, polls continue but their updates wait in ``pending``."""
        self.pending: Optional[Update] = None
        """The newest update received while paused; applied on resume."""
        self.poll_error: Optional[str] = None
        """Why the last poll failed, until one succeeds."""
        self.polls_received = 0
        """Poll results received (updates and errors), applied or not."""
        self.native = False
        """Stacks include native frames: ``set_native(True)`` succeeded (``n`` toggles)."""
        self.native_pending = False
        """A ``set_native()`` call is running in a worker."""
        self.agent_loading = False
        """A ``load_agent()`` call is running in a worker."""
        self.updates_applied = 0
        """Updates put on screen."""
        self._gc_before: Optional[tuple[int, ...]] = None
        """The collector's thresholds before ``_freeze_heap`` froze start-up's objects out of
        its scans (``None``: not frozen)."""
        self.part_args: Dict[str, Dict[str, Any]] = {}
        """The arguments each part was last asked for with (its timed re-reads reuse them)."""
        self._poll_worker: Optional[Worker[None]] = None
        self._poll_in_flight = False
        self._poll_again = False
        self._landed_waiting = False
        """A reading landed while a poll ran: when it ends, a poll follows if none showed it."""
        self._poll_lock = threading.Lock()
        self.pace = Pace(interval)
        """The polling interval in force: ``interval``, or stretched while polls are slow (the
        header says so)."""
        self._poll_started = 0.0
        self._poll_duration = 0.0
        self._poll_timer: Optional[Timer] = None
        self._age_timer: Optional[Timer] = None
        """Moves the ages on screen between polls (``_tick``)."""
        self._banner_lines: Optional[tuple[Any, ...]] = None
        self._closed = False
        self.auto_snapshot = auto_snapshot
        """``attach --auto-snapshot``: when to capture on its own, and what (None: never)."""
        self.auto_trigger: Optional[CaptureTrigger] = (
            CaptureTrigger(auto_snapshot.trigger) if auto_snapshot is not None else None
        )
        self.auto_capturing = False
        """An automatic capture is running in a worker."""
        self.auto_captures: List[str] = []
        """Files written by automatic captures, oldest first."""
        self._auto_stop = threading.Event()
        self._log_routes: Optional[Any] = None
        """The routes the log feed's paths were last taken from (``_sync_log_feed``)."""

    def get_default_screen(self) -> Screen[Any]:
        # Partial repaints render only the dirty lines of the widgets they cross (issue 13).
        return InspectorScreen(id="_default")

    def compose(self) -> ComposeResult:
        # Kept as attributes rather than found with ``self.query_one``, which searches the
        # *current* screen: that is the help screen while it is open, and updates go on.
        self.header_bar = HeaderBar(id="header")
        self.banner = Banner(id="banner")
        self.pool_bar = PoolBar(id="pool-bar")
        self.findings_strip = FindingsStrip(id="findings-strip")
        # The first tab is TabbedContent's own initial one: switched to later, a slow first
        # screen (the findings computed) let its own start-up win back the Threads tab.
        ids = {spec.id for spec in self.panel_specs}
        first_tab = self.initial_tab if self.initial_tab in ids else "threads"
        self.tabs = TabbedContent(id="tabs", initial=first_tab)
        yield self.header_bar
        yield self.banner
        yield self.pool_bar
        yield self.findings_strip
        context = PanelContext(self.poller, self.source_lines)
        with self.tabs:
            for spec in self.panel_specs:
                widget = spec.build(context)
                self.panels[spec.id] = widget  # type: ignore[assignment]
                with TabPane(tab_label(spec), id=spec.id):
                    yield widget
        self.footer = Footer()
        yield self.footer

    @property
    def threads_panel(self) -> ThreadsPanel:
        panel = self.panels["threads"]
        assert isinstance(panel, ThreadsPanel)
        return panel

    @property
    def routes_panel(self) -> RoutesPanel:
        panel = self.panels["routes"]
        assert isinstance(panel, RoutesPanel)
        return panel

    @property
    def log_panel(self) -> LogPanel:
        panel = self.panels["log"]
        assert isinstance(panel, LogPanel)
        return panel

    @property
    def live(self) -> bool:
        """The session polls a running process (not a saved file)."""
        return Capability.LIVE in self.poller.capabilities

    def on_mount(self) -> None:
        for spec in self.panel_specs:
            self.bind(spec.key, f"show_tab('{spec.id}')", description=spec.title, show=False)
        if self.tabs.active == "threads":
            # (Focus in a hidden tab would bring that tab back when the screen is refreshed.)
            self.threads_panel.table.focus()
        self._render_all()
        self.poll_now()
        if self.live:
            if hasattr(self.poller, "pyspy_wait"):  # an agent session with py-spy beside it
                self.poller.pyspy_wait = PYSPY_WAIT
            # While py-spy carries the polls, its readings come once an interval and each is
            # shown as it lands (``AgentSession.on_landed``), not at the next tick. The
            # interval asked for, not the one stretched by slow polls: a nonblocking read
            # costs the target nothing (one that pauses it is paced by its own length).
            if hasattr(self.poller, "read_every"):
                self.poller.read_every = self.interval
            if hasattr(self.poller, "on_landed"):
                self.poller.on_landed = self._reading_landed
            self._schedule_poll()
            for spec in self.panel_specs:
                if spec.every is not None and spec.part is not None:
                    # Never more often than the target is polled (``--interval``).
                    every = max(spec.every, self.interval)
                    self.set_interval(
                        every, partial(self.refresh_part, spec), name=f"part-{spec.id}"
                    )
        self._age_timer = self.set_timer(AGE_TICK, self._age_tick, name="age")
        if self.live:
            every = max(FINDINGS_SESSIONS_EVERY, self.interval)
            self.set_interval(every, self._read_sessions_for_findings, name="findings-sessions")

    # --- polling (worker thread) ---------------------------------------------------------------

    @property
    def poll_in_flight(self) -> bool:
        """A poll has started and its result has not been handled yet."""
        return self._poll_in_flight

    def poll_now(self, again: bool = False) -> None:
        """Start a poll unless one is still running (polls never overlap).

        With ``again``, a poll still running is followed by a new one as soon as it ends (its
        data predates what the caller just changed, such as native frames).
        """
        if self._closed:
            return
        if self._poll_in_flight:
            self._poll_again = self._poll_again or again
            return
        self._sync_log_feed()
        self._poll_in_flight = True
        self._poll_started = time.monotonic()
        self._poll_worker = self.run_worker(
            self._poll_blocking,
            thread=True,
            group="poll",
            exit_on_error=False,
            description="Polling the target",
        )

    def _poll_blocking(self) -> None:
        """Runs in a worker thread: ``poll()`` does blocking I/O."""
        with self._poll_lock:
            if self._closed:
                return
            started = time.monotonic()
            try:
                update = self.poller.poll()
            except Exception as error:  # noqa: BLE001 - shown in the banner; the app goes on
                message = Polled(None, _describe(error))
            else:
                message = Polled(update)
            self._poll_duration = time.monotonic() - started
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._poll_worker and event.worker.is_finished:
            self._poll_in_flight = False
            if self._poll_timer is None:  # it ended without a result (cancelled): poll on
                self._schedule_poll()

    def _schedule_poll(self) -> None:
        """The next timed poll: ``pace.interval`` after the last poll started (never while one
        runs: the timer is set again when a poll ends)."""
        if self._closed or not self.live:
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
        delay = self.pace.delay(time.monotonic() - self._poll_started)
        self._poll_timer = self.set_timer(max(delay, 0.001), self._timed_poll, name="poll")

    def _timed_poll(self) -> None:
        self._poll_timer = None
        due = getattr(self.poller, "reading_due", None)
        if not self._poll_in_flight and callable(due) and due():
            # py-spy carries the polls and its next reading is on its way: it brings a poll
            # as it lands (``_show_landed``); this tick would show the last one again. Looked
            # at again an interval on (a read that fails brings no poll of its own).
            self._poll_timer = self.set_timer(self.pace.interval, self._timed_poll, name="poll")
            return
        self.poll_now()
        if not self._poll_in_flight:  # closed, or nothing started: try again later
            self._schedule_poll()

    def _reading_landed(self) -> None:
        """From py-spy's thread: a reading landed that no poll is waiting for."""
        if not self._closed:
            self.post_message(ReadingLanded())

    @on(ReadingLanded)
    def _show_landed(self, message: ReadingLanded) -> None:
        if self._poll_in_flight:
            self._landed_waiting = True  # that poll may show it: looked at when it ends
        else:
            self.poll_now()

    @on(Polled)
    def _polled(self, message: Polled) -> None:
        self._poll_in_flight = False
        self.polls_received += 1
        # Slow polls stretch the interval (and the header says so); fast ones bring it back.
        self.pace = self.pace.after(self._poll_duration)
        self._schedule_poll()
        if message.update is None:
            self.poll_error = message.error
        else:
            self.poll_error = None
            self.store.take_log(message.update)
            if self.paused:
                self.pending = message.update
                self._auto_check(message.update, paused=True)
            else:
                self._apply(message.update)
        self._render_status()
        if self._age_timer is not None:
            # The header was just drawn with this poll's age: the next tick comes AGE_TICK after
            # it (at 1 Hz one repaint of the age, half-way between two polls; without polls the
            # age still moves twice a second). Not Timer.reset(): that skips the tick due next
            # and counts from it, which put the one repaint just before the next poll, so the
            # header read "0.0 s ago" nearly all the time.
            self._age_timer.stop()
            self._age_timer = self.set_timer(AGE_TICK, self._age_tick, name="age")
        landed, self._landed_waiting = self._landed_waiting, False
        if self._poll_again or (landed and self._unshown_reading()):
            self._poll_again = False
            self.poll_now()

    def _unshown_reading(self) -> bool:
        """The session holds a py-spy reading that landed and no poll has shown yet."""
        landed = getattr(self.poller, "landed", None)
        return bool(landed()) if callable(landed) else False

    def _apply(self, update: Update) -> None:
        self.store.apply(update)
        self.updates_applied += 1
        with self.batch_update():
            self._render_all()
        if self.updates_applied == 1:
            self._read_parts_for_findings()
            self.call_after_refresh(self._freeze_heap)
        self._auto_check(update)

    def _freeze_heap(self) -> None:
        """Once the first screen is up: what start-up made (Textual, the styles, the modules,
        ~120,000 objects) moves out of the collector's reach, so a full collection scans only
        what polls made since. At 1,000 threads a full collection of everything took ~70 ms
        of CPU, five times a minute. And the youngest generation is collected every
        ``GC_YOUNG`` allocations rather than 700: a poll's answer allocates tens of thousands of
        objects, most freed by reference counting, and each collection in the middle of one
        promoted the live part of it to be scanned again by the older generations (GC CPU at
        1,000 threads halved in a pty run). Undone when the app unmounts (tests run many
        apps in one process)."""
        if not self._closed and self._gc_before is None:
            self._gc_before = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(GC_YOUNG, *self._gc_before[1:])

    # --- the other parts of the store (worker threads) ------------------------------------------

    def _read_parts_for_findings(self) -> None:
        """After the first update: the routes (static mounts, a forgotten expose) and the
        sessions (a held session lock) are read once, so the findings that rest on them are on
        the first screen without opening their tabs; their tabs then show what was read. A
        saved file's come from the file, so its first screen names what the live one did."""
        if self._closed:
            return
        routes = self._spec("routes") is not None and self.store.part("routes").loads == 0
        if routes and Capability.ROUTES in self.poller.capabilities:
            self.read_part("routes")
        self._read_sessions_for_findings(first=True)

    def _read_sessions_for_findings(self, first: bool = False) -> None:
        """The sessions again, with the page and order the Sessions tab last asked for (its
        defaults before): not while that tab is shown (it re-reads itself), paused, or while a
        read of them runs. Again and again for a live session only (a file's are read once)."""
        if self._closed or self._spec("sessions") is None or (not self.live and not first):
            return
        if Capability.SESSIONS not in self.poller.capabilities:
            return
        if not first and (self.paused or self.tabs.active == "sessions"):
            return
        if self.store.part("sessions").reading:
            return
        defaults = {"offset": 0, "limit": SESSIONS_PAGE, "sort": SESSION_SORTS[0]}
        args = self.part_args.setdefault("sessions", defaults)
        self.read_part("sessions", args)

    def _spec(self, name: str) -> Optional[PanelSpec]:
        for spec in self.panel_specs:
            if spec.part == name:
                return spec
        return None

    @on(PartWanted)
    def _part_wanted(self, message: PartWanted) -> None:
        message.stop()
        if message.remember:
            self.part_args[message.name] = dict(message.args)
        self.read_part(message.name, message.args)

    def refresh_part(self, spec: PanelSpec) -> None:
        """A panel's timed re-read: only while its tab is shown, not paused, the part asked
        for once already and no read of it running."""
        if self._closed or self.paused or spec.part is None or not self._on_screen:
            return
        if self.tabs.active != spec.id or spec.part not in self.part_args:
            return
        part = self.store.part(spec.part)
        if part.reading:
            return
        self.read_part(spec.part, self.part_args[spec.part])

    def read_part(self, name: str, args: Optional[Dict[str, Any]] = None) -> None:
        """Read one store part through its session method, in a worker (a newer read of the
        same part supersedes a running one)."""
        spec = self._spec(name)
        if spec is None or spec.read is None or self._closed:
            return
        self.store.start_reading(name)
        self._render_panels()
        read = spec.read
        self.run_worker(
            partial(self._read_part_blocking, name, partial(read, **(args or {}))),
            thread=True,
            group=f"part-{name}",
            exclusive=True,
            exit_on_error=False,
            description=f"Reading {name}",
        )

    def _read_part_blocking(self, name: str, read: Callable[..., Any]) -> None:
        """Runs in a worker thread."""
        try:
            message = PartLoaded(name, read(self.poller))
        except Exception as error:  # noqa: BLE001 - shown as one line; the panel goes on
            message = PartLoaded(name, None, describe_error(error))
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    @on(PartLoaded)
    def _part_loaded(self, message: PartLoaded) -> None:
        self.store.set_part(message.name, message.value, message.error, at=self.clock())
        self._render_findings()  # a part read (sessions, routes) may change them
        self._render_panels()

    # --- rendering (UI thread) -----------------------------------------------------------------

    @property
    def _on_screen(self) -> bool:
        """The main widgets are mounted: false before start-up finishes and during exit."""
        return self.header_bar.is_attached and not self._closed

    def _render_all(self) -> None:
        if not self._on_screen:
            return
        self._render_status()
        self._render_pool_bar()
        self._render_findings()
        self._render_panels()

    def _render_findings(self) -> None:
        """The strip under the pool bar, and the findings list (f) when it is open."""
        if not self._on_screen:
            return
        findings = self.store.findings
        self.findings_strip.show(findings)
        for screen in self.screen_stack:
            if isinstance(screen, FindingsScreen) and screen.is_mounted:
                screen.show(findings)

    def _render_panels(self) -> None:
        if not self._on_screen:
            return
        for panel in self.panels.values():
            panel.show_store(self.store)

    def _render_status(self) -> None:
        if not self._on_screen:
            return
        # The newest news shows even while paused: a lost target matters more than the pause.
        newest = self.pending if self.pending is not None else self.store.update
        lost = self.poll_error is not None or (
            newest is not None and newest.state is LinkState.LOST
        )
        self.threads_panel.set_class(lost, "-stale")
        self.pool_bar.set_class(lost or self.store.pools_stale, "-stale")
        lines = tuple(banner_lines(newest, self.poll_error))
        if lines != self._banner_lines:  # the same lines: no new layout of the whole screen
            self._banner_lines = lines
            self.banner.show(lines)
        self._render_header()

    def _render_pool_bar(self) -> None:
        state = self.store
        self.pool_bar.state = PoolBarState.build(
            state.threads,
            dict(state.busy_history),
            state.requests_per_second(),
            stale=state.pools_stale,
            stale_age=state.pools_age(self.clock()),
        )

    def _age_tick(self) -> None:
        self._tick()
        if not self._closed:
            self._age_timer = self.set_timer(AGE_TICK, self._age_tick, name="age")

    def _tick(self) -> None:
        """Twice a second: the ages on screen follow the clock between polls."""
        if not self._on_screen:
            return
        self._render_header()
        if self.store.pools_stale:
            self._render_pool_bar()

    def _render_header(self) -> None:
        if not self._on_screen:
            return
        update = self.store.update
        age = None
        if update is not None:
            age = round(max(0.0, self.clock() - update.fetched_at), 1)
        stale_after = max(3 * self.pace.interval, 3.0)
        self.header_bar.state = HeaderState(
            info=update.info if update is not None else None,
            update=update,
            paused=self.paused,
            error=self.poll_error,
            age=age,
            stale=age is not None and age > stale_after,
            native=self.native,
            position=self._series_position(),
            pacing=self.pace.note if self.live else None,
        )

    def _series_position(self) -> Optional[tuple[int, int]]:
        """``(index, count)`` of the snapshot shown, for a saved series."""
        index = getattr(self.poller, "index", None)
        count = getattr(self.poller, "count", None)
        if isinstance(index, int) and isinstance(count, int) and count > 1:
            return (index, count)
        return None

    @on(ThreadsPanel.CaptionChanged)
    def _threads_caption(self, message: ThreadsPanel.CaptionChanged) -> None:
        self._caption_tab("threads", message.panel.caption)

    def _caption_tab(self, tab_id: str, caption: str) -> None:
        """A tab's label with what its panel says of itself: ``1 Threads · Busy workers (8)``."""
        spec = next(s for s in self.panel_specs if s.id == tab_id)
        try:
            tab = self.tabs.get_tab(tab_id)
        except NoMatches:
            # A caption posted while the app shuts down (the tabs already removed) or before
            # the tabs are composed: there is no label to change.
            return
        tab.label = f"{tab_label(spec)} · {caption}"

    # --- actions -------------------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.threads_panel.set_paused(self.paused)
        if not self.paused and self.pending is not None:
            pending, self.pending = self.pending, None
            self._apply(pending)
        else:
            self._render_status()

    def action_refresh(self) -> None:
        self.poll_now()

    def action_show_tab(self, tab: str) -> None:
        self.tabs.active = tab
        self._tab_shown(tab)
        self.refresh_bindings()

    @on(ShowThread)
    def _show_thread(self, message: ShowThread) -> None:
        """A panel's jump to a thread (a lock holder, a log record's request)."""
        message.stop()
        if self.threads_panel.select_thread(message.ident):
            self.action_show_tab("threads")
        else:
            self.notify("that thread is no longer in the data on screen", severity="warning")

    @on(ShowRecords)
    def _show_records(self, message: ShowRecords) -> None:
        """The Threads tab's jump to the log records of a thread's request."""
        message.stop()
        threads = self.store.threads
        thread = threads.by_ident().get(message.ident) if threads is not None else None
        if thread is None or thread.request is None:
            self.notify("that thread serves no request now", severity="warning")
            return
        self.log_panel.filter_request(thread.ident, thread.request, thread.name)
        self.action_show_tab("log")

    @on(LogPanel.CaptionChanged)
    def _log_caption(self, message: LogPanel.CaptionChanged) -> None:
        self._caption_tab("log", message.panel.caption)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id is not None:
            self._tab_shown(event.pane.id)
            self.refresh_bindings()

    def _tab_shown(self, tab: str) -> None:
        """Focus moves into the tab shown, so its keys (and only its keys) are live; a panel
        whose part is read on first view asks for it then (routes: never on a timer)."""
        self._sync_log_feed(tab)
        panel = self.panels.get(tab)
        if panel is not None:
            panel.shown()

    # --- the log feed: every record only while the Log tab is shown (issue 13) -----------------

    def _log_feed(self) -> Optional[LogFeed]:
        """The live session's log feed (``AgentSession.logs``, ``PySpySession.logs``); None for
        a saved file or a fake poller."""
        feed = getattr(self.poller, "logs", None)
        return feed if isinstance(feed, LogFeed) else None

    def _sync_log_feed(self, tab: Optional[str] = None) -> None:
        """While the Log tab is hidden, the agent is asked only for the records the rest of the
        screen needs (warnings and up, failed requests, the access records under the static
        mounts the findings read: the routes give those); reading every access record cost
        the target ~4 % of a trivial request's CPU. Shown, the next poll fetches what was
        skipped (a poll at once) and follows everything. Cheap: called before every poll and on
        tab changes."""
        feed = self._log_feed()
        if feed is None:
            return
        routes = self.store.routes
        if routes is not self._log_routes:
            self._log_routes = routes
            feed.set_paths(static_prefixes(routes))
        if tab is None:
            tabs = getattr(self, "tabs", None)  # None before compose
            tab = tabs.active if tabs is not None else self.initial_tab
        if feed.set_full(tab == "log"):
            self.poll_now(again=True)  # the skipped records now, not at the next tick

    def _complete_log(self, records: Sequence[LogRecord], limit: int) -> List[LogRecord]:
        """``records`` (the store's, at capture time) with the records the filtered feed left in
        the ring put back in place: a snapshot's recent records as they were. Runs in a worker,
        under the poll lock (the feed's source is not shared by two threads at once)."""
        feed = self._log_feed()
        if feed is None or not feed.filtered:
            return list(records)
        with self._poll_lock:
            skipped = feed.skipped_records(newest=limit)
        if not skipped:
            return list(records)
        merged = merge_backfill(list(records), skipped)
        return [e for e in merged if isinstance(e, LogRecord)][-limit:]

    THREAD_ACTIONS = frozenset(("locals", "toggle_native", "toggle_pause"))
    """Keys about the threads screen: hidden from the footer (and inert) on other tabs."""
    NEEDS: ClassVar[Dict[str, Capability]] = {
        "locals": Capability.LOCALS,
        "toggle_native": Capability.NATIVE,
        "load_agent": Capability.LOAD_AGENT,
        "toggle_pause": Capability.LIVE,
        "refresh": Capability.LIVE,
        "capture": Capability.LIVE,
        "step": Capability.SERIES,
    }
    """Actions the session must be able to do: their keys are hidden (and inert) otherwise,
    e.g. a saved snapshot cannot load the agent or switch native frames."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        needed = self.NEEDS.get(action)
        if needed is not None and needed not in self.poller.capabilities:
            return False
        tabs = getattr(self, "tabs", None)  # None before compose
        on_threads = tabs is None or tabs.active == "threads"
        return not (not on_threads and action in self.THREAD_ACTIONS)

    def action_locals(self) -> None:
        """Open the locals view on the selected thread; a worker reads them."""
        thread = self.threads_panel.selected_thread
        if thread is None:
            self.notify("Select a thread first: its local variables show.", severity="warning")
            return
        self.push_screen(LocalsScreen(thread, partial(self.poller.thread_locals, thread.ident)))

    def action_toggle_native(self) -> None:
        """Ask the poller for native frames (or no more), in a worker: it may block briefly."""
        if self.native_pending or self._closed:
            return
        self.native_pending = True
        self.run_worker(
            partial(self._set_native_blocking, not self.native),
            thread=True,
            group="native",
            exit_on_error=False,
            description="Switching native frames",
        )

    def _set_native_blocking(self, native: bool) -> None:
        """Runs in a worker thread."""
        try:
            self.poller.set_native(native)
        except Exception as error:  # noqa: BLE001 - shown to the user; the setting stays
            message = NativeChanged(not native, describe_error(error))
        else:
            message = NativeChanged(native)
        self.post_message(message)

    @on(NativeChanged)
    def _native_changed(self, message: NativeChanged) -> None:
        self.native_pending = False
        if message.error is not None:
            self.notify(message.error, title="Native frames unavailable", severity="error")
            return
        self.native = message.native
        self._render_header()
        self.poll_now(again=True)

    # --- snapshots -----------------------------------------------------------------------------

    def action_capture(self) -> None:
        """Write a snapshot of the store (JSON + text report) in a worker; the path is shown."""
        if self.capturing or self._closed:
            return
        snapshot = self.store.snapshot()
        if snapshot is None:
            self.notify("Nothing to save yet: no data has arrived.", severity="warning")
            return
        self.capturing = True
        self.notify("Saving a snapshot…", title="Snapshot")
        self.run_worker(
            partial(self._capture_blocking, snapshot),
            thread=True,
            group="capture",
            exit_on_error=False,
            description="Saving a snapshot",
        )

    def _capture_blocking(self, snapshot: Any) -> None:
        """Runs in a worker thread: routes read if not yet, source lines read, files written."""
        from dataclasses import replace

        from cpinspect.snapshots import with_source_lines, write_snapshots

        try:
            # The Log tab hidden, the store holds the notable records only: the rest from the ring.
            snapshot = replace(
                snapshot, log=tuple(self._complete_log(snapshot.log, SNAPSHOT_LOG_RECORDS))
            )
            if snapshot.sessions is None and Capability.SESSIONS in self.poller.capabilities:
                try:
                    snapshot = replace(snapshot, sessions=self.poller.sessions())
                except Exception as error:  # noqa: BLE001 - the snapshot goes on without them
                    note = "sessions not captured: %s" % describe_error(error)
                    snapshot = replace(snapshot, notes=(*snapshot.notes, note))
            if snapshot.routes is None and Capability.ROUTES in self.poller.capabilities:
                try:
                    snapshot = replace(snapshot, routes=self.poller.routes())
                except Exception as error:  # noqa: BLE001 - the snapshot goes on without them
                    note = "routes not captured: %s" % describe_error(error)
                    snapshot = replace(snapshot, notes=(*snapshot.notes, note))
            if self.source_lines is not None:
                snapshot = with_source_lines(snapshot, self.source_lines)
            written = write_snapshots([snapshot], self.snapshot_dir or os.getcwd())
        except Exception as error:  # noqa: BLE001 - one line on screen; nothing else changes
            self.post_message(Captured((), describe_error(error)))
        else:
            paths = [written.json_path] + ([written.report_path] if written.report_path else [])
            self.post_message(Captured(tuple(str(p) for p in paths)))

    @on(Captured)
    def _captured(self, message: Captured) -> None:
        self.capturing = False
        if message.error is not None:
            self.notify(message.error, title="Snapshot not saved", severity="error", timeout=10)
            return
        self.captures.extend(message.paths)
        self.notify(
            "\n".join(message.paths), title="Snapshot saved", severity="information", timeout=15
        )

    def action_step(self, delta: int) -> None:
        """A saved series: show the previous or next snapshot."""
        step = getattr(self.poller, "step", None)
        if step is None or not step(delta):
            self.notify("No snapshot that way.", title="Series", timeout=2)
            return
        self.store.reset_parts()
        self.poll_now(again=True)

    def action_load_agent(self) -> None:
        """py-spy-only view: ask, then load the agent in a worker (gdb takes about a second)."""
        update = self.store.update
        if update is not None and update.source_kind is not SourceKind.PYSPY:
            self.notify("The agent is already loaded.", title="Load agent")
            return
        if self.agent_loading or self._closed:
            return

        def answered(answer: Optional[bool]) -> None:
            if answer:
                self.agent_loading = True
                self.notify("Loading the agent…", title="Load agent")
                self.run_worker(
                    self._load_agent_blocking,
                    thread=True,
                    group="agent",
                    exit_on_error=False,
                    description="Loading the agent",
                )

        self.push_screen(
            ConfirmScreen(
                "Load the cpinspect agent into this process? gdb pauses it for about half a "
                "second to schedule the agent's start on its main thread; the agent then serves "
                "requests, pool numbers and more from its own threads. Its files stay on disk; "
                "`cpinspect detach PID` removes it.",
                "y load   n / escape not now",
            ),
            answered,
        )

    def _load_agent_blocking(self) -> None:
        """Runs in a worker thread."""
        try:
            note = self.poller.load_agent()
        except Exception as error:  # noqa: BLE001 - shown to the user; py-spy goes on
            self.post_message(AgentLoaded(error=describe_error(error)))
        else:
            self.post_message(AgentLoaded(note))

    @on(AgentLoaded)
    def _agent_loaded(self, message: AgentLoaded) -> None:
        self.agent_loading = False
        if message.error is not None:
            self.notify(message.error, title="Could not load the agent", severity="error")
            return
        self.notify(message.note, title="Agent loaded")
        self.poll_now(again=True)
        # Routes asked of py-spy alone answered "routes need the agent", and the tab asks only
        # once: read them again now that the agent can answer (sessions are re-read anyway).
        if self.store.part("routes").error is not None:
            self.read_part("routes")

    # --- findings ------------------------------------------------------------------------------

    def action_findings(self) -> None:
        """The findings list; enter there jumps to the evidence chosen."""
        if isinstance(self.screen, FindingsScreen):
            return
        self.push_screen(FindingsScreen(self.store.findings), self._jump_to_evidence)

    def _jump_to_evidence(self, evidence: Optional[Evidence]) -> None:
        """Show one piece of a finding's evidence in its tab (the list closed with it)."""
        if evidence is not None:
            # After the main screen is back: its focus, restored then, would pull the tab
            # that had it back to the front.
            self.call_after_refresh(self._show_evidence, evidence)

    def _show_evidence(self, evidence: Evidence) -> None:
        kind, ref = evidence.kind, evidence.ref
        app, _, rest = ref.partition("|")
        if kind == "thread":
            try:
                ident = int(ref)
            except ValueError:
                self.notify(f"not a thread: {ref}", severity="warning")
                return
            self._show_thread(ShowThread(ident))
        elif kind in ("route", "static") and "routes" in self.panels:
            self._bring_tab("routes")
            self.routes_panel.reveal(app, rest or None)
        elif kind == "config" and "routes" in self.panels:
            self._bring_tab("routes")
            self.routes_panel.reveal(app if "|" in ref else "", None)
            self.notify(f"config: {evidence.label or ref}", title="Finding", timeout=8)
        elif kind == "session" and "sessions" in self.panels:
            self._bring_tab("sessions")
            panel = self.panels["sessions"]
            assert isinstance(panel, SessionsPanel)
            panel.select_session(app, rest)
        elif kind == "log" and "log" in self.panels:
            self._bring_tab("log")
            if not self.log_panel.show_record(ref):
                self.notify("that log record is no longer held", severity="warning")
        else:
            self.notify(f"nothing on screen shows {kind} {ref}", severity="warning")

    def _bring_tab(self, tab: str) -> None:
        """Show ``tab``; its panel is told once, by ``TabActivated`` (telling it here too would
        read a part twice on its first view)."""
        if self.tabs.active != tab:
            self.tabs.active = tab
        else:
            self._tab_shown(tab)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> List[KeyHelp]:
        """Every key worth knowing, from the bindings themselves."""
        rows: List[KeyHelp] = [
            (self.get_key_display(binding), binding.tooltip or binding.description)
            for binding in [
                *self.BINDINGS,
                *ThreadsPanel.BINDINGS,
                *RoutesPanel.BINDINGS,
                *SessionsPanel.BINDINGS,
                *LogPanel.BINDINGS,
                *LogView.BINDINGS,
            ]
            if isinstance(binding, Binding) and self._offered(binding.action)
        ]
        rows.extend((spec.key, f"The {spec.title} tab") for spec in self.panel_specs)
        rows.append(("↑ ↓", "Select a thread: its stack shows beside or below"))
        rows.append(("enter", "In the findings list (f): jump to the evidence selected"))
        if Capability.LOCALS in self.poller.capabilities:
            rows.append(
                ("r, enter", "In the locals view: reveal or hide the selected frame's values")
            )
            rows.append(("escape", "Close the locals view or this list"))
        else:
            rows.append(("escape", "Close this list"))
        rows.append(("tab", "Move between the tabs and the table"))
        rows.append(("ctrl+p", "Command palette"))
        return rows

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p) offers the inspector's actions next to Textual's."""
        yield from super().get_system_commands(screen)
        panel = self.threads_panel
        yield SystemCommand(
            "Pause / resume", "Freeze the screen; polling goes on", self.action_toggle_pause
        )
        yield SystemCommand("Refresh now", "Poll the target at once", self.action_refresh)
        yield SystemCommand(
            "Show busy workers only", "Threads tab", lambda: panel.action_view("busy")
        )
        yield SystemCommand("Show all workers", "Threads tab", lambda: panel.action_view("workers"))
        yield SystemCommand(
            "Show all threads", "Threads tab, with roles", lambda: panel.action_view("all")
        )
        yield SystemCommand(
            "Group identical stacks", "Threads tab: toggle", panel.action_toggle_grouped
        )
        yield SystemCommand(
            "Show library frames", "Stack pane: toggle folding", panel.action_toggle_library
        )
        yield SystemCommand(
            "Show local variables",
            "Of the selected thread (py-spy --locals)",
            self.action_locals,
        )
        yield SystemCommand(
            "Native frames on / off", "Stacks with C frames (py-spy)", self.action_toggle_native
        )
        yield SystemCommand("Show routes", "Routes tab", partial(self.action_show_tab, "routes"))
        yield SystemCommand(
            "Reload routes", "Routes tab: read the routes again", self.routes_panel.action_reload
        )
        yield SystemCommand(
            "Resolve a URL",
            "Routes tab: what would CherryPy do with a path?",
            self._open_resolve_box,
        )

    def _offered(self, action: str) -> bool:
        """The session can do it (help lists only the keys that work here)."""
        name = action.split("(", 1)[0]
        needed = self.NEEDS.get(name)
        if name == "resolve":
            needed = Capability.RESOLVE
        elif name in ("reload", "reveal"):
            needed = Capability.LIVE
        return needed is None or needed in self.poller.capabilities

    def _open_resolve_box(self) -> None:
        self.action_show_tab("routes")
        self.routes_panel.action_resolve()

    def on_resize(self, event: Resize) -> None:
        compact = event.size.width < COMPACT_FOOTER_BELOW
        self.footer.compact = compact
        self.footer.show_command_palette = not compact

    # --- automatic snapshots (attach --auto-snapshot) -------------------------------------------

    def _auto_check(self, update: Update, paused: bool = False) -> None:
        """After each poll: a capture due (``capture_trigger``) starts in a worker. The
        findings are the store's; while the screen is paused (the store keeps the frozen
        data), the poll's own, so a paused inspector left alone still captures."""
        trigger, auto = self.auto_trigger, self.auto_snapshot
        if trigger is None or auto is None or self.auto_capturing or self._closed:
            return
        if not self.live or update.state is LinkState.LOST:
            return
        threads = update.threads.threads if update.threads is not None else ()
        findings = self._auto_findings(update) if paused else self.store.findings
        reason = trigger.observe(self.clock(), findings, threads)
        if reason is None:
            return
        self.auto_capturing = True
        self.notify(
            f"Capturing {auto.settings.series} snapshots: {reason.text}…",
            title="Auto snapshot",
            timeout=5,
        )
        self.run_worker(
            partial(
                self._auto_capture_blocking,
                reason,
                list(self.store.log_records()),
                self.store.findings_history(),
            ),
            thread=True,
            group="auto-capture",
            exit_on_error=False,
            description="Saving an automatic snapshot series",
        )

    def _auto_findings(self, update: Update) -> Any:
        from cpinspect.snapshots import snapshot_from_update, with_findings

        try:
            return with_findings(
                snapshot_from_update(update), self.store.findings_history()
            ).findings
        except Exception:  # noqa: BLE001 - no findings this poll; the next one tries again
            return ()

    def _auto_capture_blocking(self, reason: Any, log: List[Any], history: Any) -> None:
        """Runs in a worker: the series polls under the App's poll lock (never two polls at
        once) and each of its updates is applied like the App's own."""
        from cpinspect.capture_trigger import take_capture
        from cpinspect.errors import CpinspectError

        auto = self.auto_snapshot
        assert auto is not None
        log = self._complete_log(log, SNAPSHOT_LOG_RECORDS)

        def poll() -> Update:
            with self._poll_lock:
                if self._closed:
                    raise CpinspectError("the inspector is closing")
                update = self.poller.poll()
            self.post_message(AutoPolled(update))
            return update

        try:
            result = take_capture(
                self.poller,
                reason,
                auto.settings,
                source_lines=self.source_lines,
                log=log,
                history=history,
                poll=poll,
                wait=self._auto_stop.wait,
            )
        except Exception as error:  # noqa: BLE001 - one line on screen; the inspector goes on
            self.post_message(AutoCaptured("", error=_describe(error)))
            return
        paths = tuple(p for p in (result.json_path, result.report_path) if p)
        self.post_message(AutoCaptured(result.text, paths, None if paths else result.text))

    @on(AutoPolled)
    def _auto_polled(self, message: AutoPolled) -> None:
        self.store.take_log(message.update)
        if self.paused:
            self.pending = message.update
        else:
            self._apply(message.update)

    @on(AutoCaptured)
    def _auto_captured(self, message: AutoCaptured) -> None:
        self.auto_capturing = False
        text = message.text or f"automatic capture failed: {message.error}"
        self.store.add_log(inspector_record(text, self.clock()))
        if message.paths:
            self.auto_captures.extend(message.paths)
            self.notify(text, title="Auto snapshot saved", severity="information", timeout=15)
        else:
            self.notify(text, title="Auto snapshot not saved", severity="error", timeout=15)
        self._render_panels()

    # --- shutdown ------------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self._closed = True
        if self._gc_before is not None:
            gc.unfreeze()
            gc.set_threshold(*self._gc_before)
            self._gc_before = None
        self._auto_stop.set()
        # Wait (briefly) for an in-flight poll so close() does not race it; a poll stuck past
        # that is left to fail on the closed connection.
        acquired = self._poll_lock.acquire(timeout=CLOSE_WAIT)
        try:
            self.poller.close()
        except Exception as error:  # noqa: BLE001 - best effort: the user is leaving anyway
            self.log.error("closing the poller failed:", _describe(error))
        finally:
            if acquired:
                self._poll_lock.release()
