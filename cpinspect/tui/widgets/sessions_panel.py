"""The Sessions tab: each app's session store — its settings, a summary, the diagnoses, one page
of sessions and the selected session's keys and lock (who holds it, who waits).

A view of the store's ``sessions`` part, which the App reads with ``session.sessions(offset=,
sort=)`` when the tab is first shown, again every ~2 s while it is shown on a live session
(``PanelSpec.every``), and at once when the page or the order changes. Paging and sorting happen
in the agent: the part holds one page per app. ``x`` reveals the selected session's values after
a confirmation, for that one session only: the answer that carries them is asked for once (never
on the timer), kept here while the cursor stays on that session, and dropped when it leaves.
``t`` and ``w`` jump to the lock holder's or a waiter's thread in the Threads tab.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, ClassVar, Dict, List, Optional, Tuple

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from cpinspect.analysis import session_findings, shared_stores
from cpinspect.formatting import (
    SESSION_COLUMNS,
    SESSION_SORTS,
    SORT_WORDS,
    finding_lines,
    lock_threads,
    session_app_label,
    session_details,
    session_row,
    session_settings_rows,
    sessions_summary_lines,
)
from cpinspect.model import AppSessions, Finding, FindingSeverity, SessionInfo, SessionsSnapshot
from cpinspect.tui.messages import PartWanted, ShowThread
from cpinspect.tui.screens.confirm import ConfirmScreen
from cpinspect.tui.store import Part, Store

PART = "sessions"
"""The store part this panel shows."""
PAGE = 50
"""Sessions per page (the agent's default; its maximum is 500)."""
_SEVERITY_STYLES: Dict[FindingSeverity, str] = {
    FindingSeverity.CRITICAL: "error",
    FindingSeverity.WARNING: "warning",
}
"""The colour a finding's line takes (an info line takes none); its glyph says it without."""


class SessionsTable(DataTable[Text]):
    """One page of one app's sessions; the row key is the session's fingerprint."""


class SessionsPanel(Vertical):
    """Summary and diagnoses above, the page of sessions and the selected one's details below."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "greater_than_sign",
            "page(1)",
            "Next page",
            key_display=">",
            tooltip="Sessions tab: the next page of sessions",
        ),
        Binding(
            "less_than_sign",
            "page(-1)",
            "Prev page",
            key_display="<",
            tooltip="Sessions tab: the previous page of sessions",
        ),
        Binding(
            "o",
            "sort",
            "Sort",
            tooltip="Sessions tab: order by expiry, expiry last, size, lock (the agent sorts)",
        ),
        Binding("a", "next_app", "App", tooltip="Sessions tab: the next app's session store"),
        Binding(
            "x",
            "reveal",
            "Reveal",
            tooltip="Sessions tab: show the selected session's values (asks first; that "
            "session only, hidden again when you leave it)",
        ),
        Binding(
            "t", "holder", "Holder", tooltip="Sessions tab: the lock holder's thread (Threads)"
        ),
        Binding(
            "w", "waiter", "Waiter", tooltip="Sessions tab: the next waiter's thread (Threads)"
        ),
        Binding("u", "reload", "Reload", show=False, tooltip="Sessions tab: read them again"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "sessions-panel--warning",
        "sessions-panel--error",
        "sessions-panel--muted",
        "sessions-panel--title",
    }

    def __init__(
        self, *, can_reveal: Callable[[], bool] = lambda: True, id: Optional[str] = None
    ) -> None:
        super().__init__(id=id)
        self._can_reveal = can_reveal
        self._part = Part()
        self.app_index = 0
        """Which app's store is shown (in the order of the answer)."""
        self.page_offset = 0
        self.sort = SESSION_SORTS[0]
        self.revealed: Optional[SessionInfo] = None
        """The one session whose values are shown (from the answer that revealed it)."""
        self.revealing: Optional[str] = None
        """A reveal of this fingerprint was asked for and has not answered yet."""
        self._waiter = 0
        self._rows: Tuple[str, ...] = ()
        self._cells: Tuple[Tuple[str, ...], ...] = ()
        self._to_top = False
        self._details_plain = ""
        self._status_plain = ""
        self._select_wanted: Optional[Tuple[str, str]] = None
        """``(app, fp)`` a finding's evidence asked for (``select_session``), until shown."""

    def compose(self) -> ComposeResult:
        yield Static("", id="sessions-status")
        with Horizontal(id="sessions-body"):
            yield SessionsTable(id="sessions-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="session-details-scroll"):
                yield Static("", id="session-details")

    def on_mount(self) -> None:
        table = self.table
        for column in SESSION_COLUMNS:
            table.add_column(column, key=column)
        self._redraw()

    # --- what tests and the App read -----------------------------------------------------------

    @property
    def table(self) -> SessionsTable:
        return self.query_one(SessionsTable)

    @property
    def sessions(self) -> Optional[SessionsSnapshot]:
        value = self._part.value
        return value if isinstance(value, SessionsSnapshot) else None

    @property
    def current_app(self) -> Optional[AppSessions]:
        sessions = self.sessions
        if sessions is None or not sessions.apps:
            return None
        return sessions.apps[min(self.app_index, len(sessions.apps) - 1)]

    @property
    def findings(self) -> Tuple[Finding, ...]:
        sessions = self.sessions
        return session_findings(sessions) if sessions is not None else ()

    @property
    def selected(self) -> Optional[SessionInfo]:
        """The session under the cursor, with its values if it is the one revealed."""
        app = self.current_app
        table = self.table
        if app is None or not self._rows or table.cursor_row < 0:
            return None
        fp = self._rows[min(table.cursor_row, len(self._rows) - 1)]
        if self.revealed is not None and self.revealed.fp == fp:
            return self.revealed
        for session in app.sessions:
            if session.fp == fp:
                return _hidden(session) if session.revealed else session
        return None

    @property
    def status_text(self) -> str:
        return self._status_plain

    @property
    def details_text(self) -> str:
        return self._details_plain

    @property
    def rows(self) -> Tuple[str, ...]:
        """The fingerprints of the rows shown, in order."""
        return self._rows

    @property
    def loads(self) -> int:
        return self._part.loads

    @property
    def reading(self) -> bool:
        return self._part.reading

    # --- the store's part ----------------------------------------------------------------------

    def show_store(self, store: Store) -> None:
        part = store.part(PART)
        if part == self._part:
            return
        self._part = part
        sessions = self.sessions
        if sessions is not None and self.revealing is not None:
            found = _find(sessions, self.revealing)
            if found is not None and found.revealed:
                self.revealed = found
                self.revealing = None
                # The values stay here only: the store gets the page without them again at
                # once, so nothing else (a snapshot, another view) holds them.
                self._ask()
        if part.error is not None and self.revealing is not None and not part.reading:
            self.revealing = None
        self._redraw()
        if self._select_wanted is not None and not part.reading:
            self._select_now()

    def shown(self) -> None:
        if self.sessions is None and self._part.error is None and not self._part.reading:
            self._ask()
        self.table.focus()

    def _matches(self, offset: int, sort: str) -> bool:
        return offset == self.page_offset and sort == self.sort

    def _args(self) -> Dict[str, object]:
        return {"offset": self.page_offset, "limit": PAGE, "sort": self.sort}

    def _ask(self) -> None:
        self.post_message(PartWanted(PART, self._args()))

    # --- rendering -----------------------------------------------------------------------------

    def _style(self, name: str) -> str:
        return str(self.get_component_rich_style(f"sessions-panel--{name}", partial=True))

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        self._render_status()
        self._render_table()
        self._render_details()

    def _render_status(self) -> None:
        part = self._part
        sessions = self.sessions
        text = Text(no_wrap=False)
        if sessions is None:
            if part.error:
                text.append("sessions could not be read: %s" % part.error, self._style("error"))
            else:
                text.append("reading the sessions…" if part.reading else "", self._style("muted"))
        else:
            app = self.current_app
            if app is None:
                text.append("no mounted app has tools.sessions.on", self._style("muted"))
            else:
                count = len(sessions.apps)
                which = " (app %d of %d: a shows the next)" % (self.app_index + 1, count)
                same_as = shared_stores(sessions).get(app.app)
                text.append(session_app_label(app, same_as), self._style("title"))
                text.append(which if count > 1 else "")
                for line in sessions_summary_lines(app):
                    bad = line.startswith(("error:", "this backend cannot"))
                    text.append("\n" + line, self._style("error") if bad else "")
                mine = [f for f in self.findings if _app_of(f) == app.app]
                for finding in mine:
                    # Its glyph and its label come together (finding_headline).
                    lines = finding_lines(finding)
                    style = _SEVERITY_STYLES.get(finding.severity)
                    text.append("\n" + lines[0].strip(), self._style(style) if style else "")
                    for more in lines[1:]:
                        text.append("\n  " + more.strip(), self._style("muted"))
            for error in sessions.errors:
                text.append("\nerror: %s" % error, self._style("error"))
            if part.error:
                text.append("\nlast read failed: %s" % part.error, self._style("error"))
        self._status_plain = text.plain
        _update(self.query_one("#sessions-status", Static), text)

    def _render_table(self) -> None:
        table = self.table
        app = self.current_app
        # A store that cannot be listed still sends the sessions locked or waited on now.
        sessions = app.sessions if app is not None else ()
        rows = tuple(s.fp for s in sessions)
        cells = tuple(session_row(s) for s in sessions)
        if rows != self._rows or cells != self._cells:
            row = table.cursor_row
            keep = self._rows[row] if self._rows and 0 <= row < len(self._rows) else None
            table.clear()
            for fp, line in zip(rows, cells):
                table.add_row(*(Text(cell) for cell in line), key=fp)
            self._rows, self._cells = rows, cells
            if keep in rows and not self._to_top:
                table.move_cursor(row=rows.index(keep))
        page_now = app.page if app is not None else None
        if self._to_top and page_now is not None and self._matches(page_now.offset, page_now.sort):
            # A new page or order was asked for and has come: start at its top.
            self._to_top = False
            if rows:
                table.move_cursor(row=0)
        page = app.page if app is not None else None
        if page is not None and app is not None and not app.listable:
            table.border_title = (
                "%d session%s locked or waited on now (the store cannot be listed)"
                % (
                    len(rows),
                    "" if len(rows) == 1 else "s",
                )
            )
        elif page is not None and app is not None:
            first = page.offset + 1 if rows else page.offset
            table.border_title = "sessions %d-%d of %d, %s   < > page  o sort" % (
                first,
                page.offset + len(rows),
                page.total,
                SORT_WORDS.get(page.sort, page.sort),
            )
        else:
            table.border_title = ""

    def _render_details(self) -> None:
        app = self.current_app
        session = self.selected
        rows: List[Tuple[str, str]] = []
        if session is not None:
            rows.extend(session_details(session))
            if self.revealing == session.fp:
                rows.append(("values", "revealing…"))
        if app is not None:
            rows.append(("", ""))
            same_as = None if self.sessions is None else shared_stores(self.sessions).get(app.app)
            rows.append(("store", session_app_label(app, same_as)))
            rows.extend(session_settings_rows(app))
        text = Text()
        for label, value in rows:
            if not label and not value:
                text.append("\n")
                continue
            text.append("%-13s" % label, self._style("muted"))
            text.append(" %s\n" % value)
        self._details_plain = "\n".join(
            ("%-13s %s" % row).rstrip() if any(row) else "" for row in rows
        )
        _update(self.query_one("#session-details", Static), text)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        # Where the cursor is now, not where the event says: a rebuilt page moves the cursor
        # back to its session after the rows are added, and both moves post an event.
        row = self.table.cursor_row
        fp = self._rows[row] if self._rows and 0 <= row < len(self._rows) else None
        if self.revealed is not None and fp != self.revealed.fp:
            self.revealed = None  # left the revealed session: its values are hidden again
            self._render_table()
        self._waiter = 0
        self._render_details()

    # --- actions -------------------------------------------------------------------------------

    def action_page(self, delta: int) -> None:
        app = self.current_app
        total = app.page.total if app is not None else 0
        offset = max(0, self.page_offset + delta * PAGE)
        if delta > 0 and offset >= total:
            self.notify("That is the last page.", title="Sessions", timeout=2)
            return
        if offset == self.page_offset:
            self.notify("That is the first page.", title="Sessions", timeout=2)
            return
        self.page_offset = offset
        self.revealed = None
        self._to_top = True
        self._ask()

    def action_sort(self) -> None:
        index = SESSION_SORTS.index(self.sort) if self.sort in SESSION_SORTS else -1
        self.sort = SESSION_SORTS[(index + 1) % len(SESSION_SORTS)]
        self.page_offset = 0
        self.revealed = None
        self._to_top = True
        self.notify("Sessions %s" % SORT_WORDS[self.sort], title="Sort", timeout=2)
        self._ask()

    def action_next_app(self) -> None:
        sessions = self.sessions
        if sessions is None or len(sessions.apps) < 2:
            self.notify("Only one app has sessions.", title="Sessions", timeout=2)
            return
        self.app_index = (self.app_index + 1) % len(sessions.apps)
        self.revealed = None
        self._to_top = True
        self._redraw()

    def action_reload(self) -> None:
        self._ask()

    def action_reveal(self) -> None:
        session = self.selected
        if session is None:
            self.notify("Select a session first.", severity="warning")
            return
        if not self._can_reveal():
            self.notify(
                "A saved snapshot holds no session values; attach to the live process.",
                severity="warning",
            )
            return
        if session.revealed:
            self.notify("This session's values are shown; leave it to hide them.", timeout=3)
            return
        fp = session.fp

        def answered(answer: Optional[bool]) -> None:
            if answer:
                self.revealing = fp
                args = dict(self._args(), reveal=fp)
                self.post_message(PartWanted(PART, args, remember=False))
                self._render_details()

        self.app.push_screen(
            ConfirmScreen(
                "Reveal the values of session %s? They may hold personal data and credentials. "
                "Only this session's values are read (once, not on the timer); they are shown "
                "until you move to another session and are never written to a snapshot unless "
                "it is taken with --reveal." % fp,
                "y reveal   n / escape not now",
            ),
            answered,
        )

    def action_holder(self) -> None:
        session = self.selected
        if session is None or session.lock.holder is None:
            self.notify("No thread holds this session's lock.", severity="warning", timeout=3)
            return
        self.post_message(ShowThread(session.lock.holder.ident))

    def action_waiter(self) -> None:
        session = self.selected
        waiters = [t for t in lock_threads(session) if t[1].startswith("waiter")] if session else []
        if not waiters:
            self.notify("No thread waits for this session's lock.", severity="warning", timeout=3)
            return
        ident = waiters[self._waiter % len(waiters)][0]
        self._waiter += 1
        self.post_message(ShowThread(ident))

    # --- jumps from a finding's evidence (the findings list, f) ---------------------------------

    def select_session(self, app: str, fp: str) -> bool:
        """Put the cursor on session ``fp`` of ``app`` (``fp`` empty: the app's store). A
        session not on the page shown is looked for with the locked ones first (the sessions
        findings are about locks); the cursor goes there when that page comes."""
        self._select_wanted = (app, fp)
        if self.sessions is None:
            return False
        return self._select_now()

    def _select_now(self) -> bool:
        wanted, self._select_wanted = self._select_wanted, None
        sessions = self.sessions
        if wanted is None or sessions is None:
            return False
        app, fp = wanted
        names = [a.app for a in sessions.apps]
        if app in names and names.index(app) != self.app_index:
            self.app_index = names.index(app)
            self._to_top = False
            self._redraw()
        if not fp:
            return True
        if fp in self._rows:
            self.table.move_cursor(row=self._rows.index(fp))
            self._render_details()
            return True
        if self.sort != "lock" or self.page_offset:
            self._select_wanted = wanted  # once more, on the page of the locked sessions
            self.sort, self.page_offset, self.revealed = "lock", 0, None
            self._ask()
            return False
        self.notify("that session is not in the store's answer now", severity="warning")
        return False


def _hidden(session: SessionInfo) -> SessionInfo:
    return replace(
        session, revealed=False, keys=tuple(replace(k, value=None) for k in session.keys)
    )


def _find(sessions: SessionsSnapshot, fp: str) -> Optional[SessionInfo]:
    for app in sessions.apps:
        for session in app.sessions:
            if session.fp == fp:
                return session
    return None


def _app_of(finding: Finding) -> Optional[str]:
    """The app a sessions finding is about (its id is ``kind:app[:more]``)."""
    parts = finding.id.split(":", 2)
    return parts[1] if len(parts) > 1 else None


def _update(widget: Static, text: Text) -> None:
    """``widget.update(text)`` unless it shows that text already: an update lays out the whole
    screen again, and the sessions are re-read every few seconds for the findings."""
    if widget.content != text:
        widget.update(text)
