"""The Routes tab: every mounted app's tree as CherryPy sees it, one node's details, and a
resolve box that explains what CherryPy would do with a URL.

A view of the store's ``routes`` part. The App reads it (``session.routes()`` in a worker) when
the tab is first shown and again on ``u`` (the panel asks with ``PartWanted``): routes rarely
change, and are never read on a timer. Resolving may run user code in the target
(``_cp_dispatch``, properties), so it happens only when the user submits a path; that call runs in
this panel's worker and its answer comes back as a ``Resolved`` message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, Dict, List, Optional, Tuple

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from cpinspect.agent.redact import redact_target
from cpinspect.formatting import (
    FORGOTTEN_NOTE,
    RouteView,
    answered_lines,
    app_label,
    app_warning_count,
    folded_text,
    global_tools_text,
    mount_url,
    parse_resolve_query,
    resolution_lines,
    route_children,
    route_kind_text,
    route_node_details,
    route_url,
    route_view,
    static_mount_details,
    warnings_below,
)
from cpinspect.model import (
    AppRoutes,
    Resolution,
    RouteEntry,
    RouteNode,
    RoutesSnapshot,
    StaticMount,
)
from cpinspect.tui.messages import PartWanted, Resolved
from cpinspect.tui.screens.locals import describe_error
from cpinspect.tui.store import Part, Store

if TYPE_CHECKING:
    from cpinspect.sources.agent import AnsweredRead

PART = "routes"
"""The store part this panel shows."""
ResolveCall = Callable[[str, str, str], Resolution]
AnsweredCall = Callable[[Resolution], "AnsweredRead"]
"""``AgentSession.answered``: how a resolved path was answered lately (the session's, when it
has an agent's log to read)."""

GOOD_VERDICTS = frozenset(("handler", "static", "wsgi"))
"""Resolution kinds that end in a response from the app (shown in the success colour)."""
REDIRECT_VERDICTS = frozenset(("redirect",))
PAGE_SIZE = 500
"""Children added to the tree at a time. Adding a tree line costs about 17 µs and every later
rebuild of the tree's lines about 7 µs per line shown, so an object with 5,000 handlers opened at
once took 90 ms and more; a page keeps each expansion well under 50 ms. The rest come a page at a
time from a "… N more" line at the end (enter or a click on it)."""


@dataclass
class RouteItem:
    """What one line of the tree stands for: an app, or one of its nodes, mounts or routes."""

    app: AppRoutes
    node: Optional[RouteNode] = None
    mount: Optional[StaticMount] = None
    entry: Optional[RouteEntry] = None
    children: Dict[Optional[str], List[RouteNode]] = field(default_factory=dict)
    """The app's nodes by parent path, shared by every item of the app."""
    below: Dict[str, int] = field(default_factory=dict)
    """Warnings under each node path, shared by every item of the app."""
    view: Optional[RouteView] = None
    """What the tree says at first of the app's nodes (folded helpers, forgotten exposes),
    shared by every item of the app."""
    populated: bool = False
    """Children added to the tree (done on first expansion)."""
    shown: int = 0
    """How many of the node's children are in the tree (they are added a page at a time)."""
    more: int = 0
    """On a "… N more" line: N, the children of its parent not in the tree yet."""


class RoutesTree(Tree[RouteItem]):
    """The apps and their nodes; children are added when a node is first expanded."""

    def move_cursor_now(self, node: TreeNode[RouteItem]) -> None:
        """``move_cursor`` to a node added since the last repaint: its line is known once the
        tree's lines are rebuilt, which reading ``last_line`` does."""
        if self.last_line >= 0:
            self.move_cursor(node)


class RoutesPanel(Vertical):
    """The routing tree, the selected node's details, and the resolve box."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "reload", "Reload routes", tooltip="Routes tab: read the routes again"),
        Binding(
            "r",
            "resolve",
            "Resolve URL",
            tooltip="Routes tab: what would CherryPy do with [METHOD] /path [Host: name]?",
        ),
        Binding(
            "slash",
            "resolve",
            "Resolve URL",
            show=False,
            tooltip="Routes tab: the same as r",
        ),
        Binding(
            "escape",
            "close_resolve",
            "Close",
            tooltip="Routes tab: close the resolve box",
        ),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "routes-panel--warning",
        "routes-panel--error",
        "routes-panel--good",
        "routes-panel--muted",
        "routes-panel--label",
        "routes-panel--title",
    }

    def __init__(
        self,
        resolve: ResolveCall,
        *,
        can_resolve: Callable[[], bool] = lambda: True,
        can_reload: Callable[[], bool] = lambda: True,
        answered: Optional[AnsweredCall] = None,
        id: Optional[str] = None,
    ) -> None:
        super().__init__(id=id)
        self._resolve = resolve
        self._answered = answered
        self._can_resolve = can_resolve
        self._can_reload = can_reload
        self._part = Part()
        self.resolving = False
        """A ``resolve()`` call is running in a worker."""
        self.resolution: Optional[Resolution] = None
        """The last verdict shown in the resolve box."""
        self.resolves = 0
        """Answers received from ``resolve()`` (verdicts and errors)."""
        self._details_plain = ""
        self._reveal_wanted: Optional[Tuple[str, Optional[str]]] = None
        """``(app, path)`` a finding's evidence asked for (``reveal``), until shown."""

    def compose(self) -> ComposeResult:
        yield Static("", id="routes-status")
        with Horizontal(id="routes-body"):
            tree = RoutesTree("routes", id="routes-tree")
            tree.show_root = False
            tree.auto_expand = True
            yield tree
            with VerticalScroll(id="route-details-scroll"):
                yield Static("", id="route-details")
        yield Input(
            placeholder="GET /path?query  Host: example.com   (enter resolves, escape closes)",
            id="resolve-input",
        )
        with VerticalScroll(id="resolve-scroll"):
            yield Static("", id="resolve-result")

    def on_mount(self) -> None:
        self._show_status()

    @property
    def routes_tree(self) -> RoutesTree:
        return self.query_one(RoutesTree)

    @property
    def resolve_input(self) -> Input:
        return self.query_one("#resolve-input", Input)

    @property
    def status_text(self) -> str:
        """The line above the tree, without styles."""
        return _plain(self.query_one("#routes-status", Static))

    @property
    def details_text(self) -> str:
        """The details pane, without styles, one ``label  value`` line per row (unwrapped)."""
        return self._details_plain

    @property
    def result_text(self) -> str:
        """The resolve box's verdict and steps, without styles."""
        return _plain(self.query_one("#resolve-result", Static))

    # --- the store's part ----------------------------------------------------------------------

    @property
    def routes(self) -> Optional[RoutesSnapshot]:
        """The last routes read; kept when a reload fails."""
        value = self._part.value
        return value if isinstance(value, RoutesSnapshot) else None

    @property
    def error(self) -> Optional[str]:
        """Why the last read failed, until one succeeds."""
        return self._part.error

    @property
    def reading(self) -> bool:
        """A ``routes()`` call is running in a worker."""
        return self._part.reading

    @property
    def loads(self) -> int:
        """Answers received from ``routes()`` (snapshots and errors)."""
        return self._part.loads

    def show_store(self, store: Store) -> None:
        """Render the store's routes: the tree is rebuilt only when they changed."""
        part = store.part(PART)
        if part == self._part:
            return
        previous, self._part = self._part, part
        answered = part.loads != previous.loads and part.error is None
        if isinstance(part.value, RoutesSnapshot) and (
            part.value is not previous.value or answered
        ):
            self._build_tree(part.value)  # a reload (u) rebuilds even when nothing changed
            self._reveal_now()  # a finding's evidence asked for a node before the routes came
        elif part.value is None and previous.value is not None:
            self.routes_tree.clear()
            self._show_details(None)
        self._show_status()

    def shown(self) -> None:
        """The tab became visible: ask for the routes the first time only."""
        if self.routes is None and self.error is None and not self.reading:
            self.post_message(PartWanted(PART))
        self.routes_tree.focus()

    # --- the tree ------------------------------------------------------------------------------

    def _build_tree(self, routes: RoutesSnapshot) -> None:
        tree = self.routes_tree
        tree.clear()
        for app in routes.apps:
            item = RouteItem(
                app,
                children=route_children(app),
                below=warnings_below(app),
                view=route_view(app),
            )
            node = tree.root.add(self._app_label(app), item, allow_expand=True)
            # The top of each app is what one looks for first: open it at once.
            node.expand()
            self._populate(node)
        for error in routes.errors:
            tree.root.add_leaf(Text("error: " + error, self._style("error")))
        if tree.cursor_line < 0 and routes.apps:
            tree.cursor_line = 0  # on the first app: its summary shows, arrows start from it
        self._show_details(self._cursor_item())

    def _populate(self, node: TreeNode[RouteItem]) -> None:
        """Add a node's children, once (lazy: a tree of 5,000 handlers opens branch by branch,
        and a node with thousands of children shows them a page at a time)."""
        item = node.data
        if item is None or item.populated:
            return
        item.populated = True
        if item.mount is not None or item.entry is not None or item.more:
            return
        key = item.node.path if item.node is not None else None
        self._add_page(node, item)
        if key is None:
            for entry in item.app.routes:
                node.add_leaf(
                    Text("route %s → %s" % (entry.path, entry.qualname or "-")),
                    RouteItem(item.app, entry=entry),
                )
            for mount in item.app.static:
                node.add_leaf(self._mount_label(item.app, mount), RouteItem(item.app, mount=mount))
            for error in item.app.errors:
                node.add_leaf(Text("error: " + error, self._style("error")))
            if item.app.truncated:
                node.add_leaf(Text("(tree truncated: the walk stopped at its cap)"))

    def _add_page(
        self,
        node: TreeNode[RouteItem],
        item: RouteItem,
        more: Optional[TreeNode[RouteItem]] = None,
    ) -> Optional[TreeNode[RouteItem]]:
        """Add the next ``PAGE_SIZE`` children of ``node`` in place of ``more``, its "… N more"
        line (added, updated or removed to match what is left); return the first one added."""
        siblings = item.children.get(item.node.path if item.node is not None else None, [])
        page = siblings[item.shown : item.shown + PAGE_SIZE]
        at = node.children.index(more) if more is not None else len(node.children)
        first: Optional[TreeNode[RouteItem]] = None
        for offset, child in enumerate(page):
            child_item = RouteItem(
                item.app, child, children=item.children, below=item.below, view=item.view
            )
            expandable = bool(item.children.get(child.path))
            added = node.add(
                self._node_label(child_item),
                child_item,
                before=at + offset,
                allow_expand=expandable,
            )
            if first is None:
                first = added
        item.shown += len(page)
        left = len(siblings) - item.shown
        if more is None and left:
            node.add_leaf(self._more_label(left), RouteItem(item.app, more=left))
        elif more is not None and more.data is not None and left:
            more.data.more = left
            more.set_label(self._more_label(left))
        elif more is not None:
            more.remove()
        return first

    def _show_more(self, more: TreeNode[RouteItem]) -> None:
        """The "… N more" line was chosen: add the next page there, the cursor on its first."""
        parent = more.parent
        if parent is None or parent.data is None:
            return
        first = self._add_page(parent, parent.data, more)
        if first is not None:
            self.routes_tree.move_cursor_now(first)
            # On the last page the cursor's line does not change (the first new line replaces
            # the "more" one), so the tree posts no NodeHighlighted: show the details here.
            self._show_details(first.data)

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded[RouteItem]) -> None:
        event.stop()
        self._populate(event.node)

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[RouteItem]) -> None:
        item = event.node.data
        if item is not None and item.more:
            event.stop()
            self._show_more(event.node)

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[RouteItem]) -> None:
        event.stop()
        self._show_details(event.node.data)

    def _cursor_item(self) -> Optional[RouteItem]:
        node = self.routes_tree.cursor_node
        return node.data if node is not None else None

    def _app_label(self, app: AppRoutes) -> Text:
        text = Text(app_label(app), self._style("title"))
        count = app_warning_count(app)
        if count:
            text.append("  ⚠ %d" % count, self._style("warning"))
        return text

    def _node_label(self, item: RouteItem) -> Text:
        node = item.node
        assert node is not None
        if node.kind == "internal":
            # Reached on purpose through a dispatcher: listed, dimmed, never warned about.
            text = Text(node.name or node.path, self._style("muted"))
            text.append("  " + route_kind_text(node), self._style("muted"))
            return text
        view = item.view
        name = route_url(item.app, node.path).rsplit("/", 1)[-1] or node.name or node.path
        if view is not None and node.path in view.folded:
            # A helper the handlers hold (Salt's auth resolver): one muted line, expandable.
            text = Text(name, self._style("muted"))
            text.append("  " + folded_text(view.folded[node.path]), self._style("muted"))
            return text
        if view is not None and node.path not in view.shown:
            # A method nothing exposes and nobody likely forgot to (a library's, a helper
            # under a MethodDispatcher): listed when its object is opened, dimmed.
            text = Text(name, self._style("muted"))
            text.append("  " + route_kind_text(node), self._style("muted"))
            return text
        text = Text(name)
        text.append("  " + route_kind_text(node), self._style("muted"))
        if node.exposed:
            text.append(" ✓", self._style("good"))
        elif node.kind not in ("object", "unexposed"):
            # An object need not be exposed itself (its index is); a callable must be.
            text.append(" ✗", self._style("muted"))
        if node.methods:
            text.append("  " + ",".join(node.methods), self._style("muted"))
        if node.warnings:
            text.append("  ⚠ " + "; ".join(node.warnings), self._style("warning"))
            text.stylize(self._style("warning"), 0, len(name))
        below = item.below.get(node.path, 0)
        if below:
            text.append("  ⚠ %d below" % below, self._style("warning"))
        if view is not None and node.path in view.forgotten:
            # Not a warning (nothing is wrong until a request hits it: the forgotten-expose
            # finding), but what a misrouted 404 usually is: in sight at a glance.
            text.append("  " + FORGOTTEN_NOTE, self._style("warning"))
        return text

    def _more_label(self, left: int) -> Text:
        text = Text("… {:,} more".format(left), self._style("muted"))
        text.append(" — enter shows the next {:,}".format(min(left, PAGE_SIZE)))
        return text

    def _mount_label(self, app: AppRoutes, mount: StaticMount) -> Text:
        path = mount_url(app, mount)
        text = Text("%s %s → %s" % (mount.kind, path, mount.resolved or mount.configured))
        if mount.warnings:
            text.stylize(self._style("warning"))
            text.append("  ⚠ " + "; ".join(mount.warnings), self._style("warning"))
        return text

    # --- details -------------------------------------------------------------------------------

    def _show_details(self, item: Optional[RouteItem]) -> None:
        text = Text(end="")
        warnings: Tuple[str, ...] = ()
        rows: List[Tuple[str, str]] = []
        if item is None:
            text.append("Select a node: its handler, source, tools and checks show here.")
        elif item.more:
            text.append(
                "{:,} more children not in the tree yet: enter shows the next {:,}.".format(
                    item.more, min(item.more, PAGE_SIZE)
                )
            )
        elif item.node is not None:
            global_tools = self.routes.global_tools if self.routes is not None else ()
            rows = route_node_details(item.app, item.node, global_tools, item.view)
            warnings = item.node.warnings
        elif item.mount is not None:
            rows = static_mount_details(item.mount, item.app)
            warnings = item.mount.warnings
        elif item.entry is not None:
            entry = item.entry
            rows = [("route", entry.path), ("name", entry.name or "-")]
            rows.append(("controller", entry.controller or "-"))
            rows.append(("action", entry.action or "-"))
            if entry.qualname:
                rows.append(("qualname", entry.qualname))
            if entry.filename:
                rows.append(("source", "%s:%s" % (entry.filename, entry.lineno)))
        else:
            app = item.app
            text.append(app_label(app), self._style("title"))
            rows = [
                ("nodes", str(len(app.nodes))),
                ("exposed", str(sum(1 for node in app.nodes if node.exposed))),
                ("static mounts", str(len(app.static))),
            ]
            if app.routes:
                rows.append(("mapper routes", str(len(app.routes))))
            if app.config:
                rows.append(("config", ", ".join(section.path for section in app.config)))
            if self.routes is not None and self.routes.global_tools:
                rows.append(("global tools", global_tools_text(app, self.routes.global_tools)))
            if app.truncated:
                rows.append(("truncated", "the walk stopped at its cap"))
            warnings = tuple(app.errors)
        # Labels in a column of their own, so a long value wraps under itself, not under them.
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style=self._style("label"), no_wrap=True)
        grid.add_column(overflow="fold")
        plain = [text.plain] if text.plain else []
        width = max((len(label) for label, _ in rows), default=0)
        for label, value in rows:
            grid.add_row(label, value)
            plain.append(label.ljust(width + 2) + value)
        notes = Text()
        for warning in warnings:
            notes.append(("\n" if notes else "") + "⚠ " + warning, self._style("warning"))
            plain.append("⚠ " + warning)
        self._details_plain = "\n".join(plain)
        text.end = "\n"
        parts: List[RenderableType] = [part for part in (text, grid, notes) if part]
        if not rows:
            parts = [part for part in (text, notes) if part]
        self.query_one("#route-details", Static).update(Group(*parts))

    # --- status line ---------------------------------------------------------------------------

    def _show_status(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if self.error is not None:
            text.append("⚠ routes unavailable: " + self.error, self._style("error"))
        elif self.reading and self.routes is None:
            text.append("reading the routes…")
        routes = self.routes
        if routes is not None:
            if text:
                text.append(" │ ")
            apps = len(routes.apps)
            nodes = sum(len(app.nodes) for app in routes.apps)
            text.append("%d app%s · %d nodes" % (apps, "" if apps == 1 else "s", nodes))
            count = sum(app_warning_count(app) for app in routes.apps) + len(routes.errors)
            if count:
                text.append(" · ")
                text.append(
                    "⚠ %d warning%s" % (count, "" if count == 1 else "s"), self._style("warning")
                )
            if routes.truncated:
                text.append(" · truncated at %d nodes" % routes.cap, self._style("warning"))
            if self.reading:
                text.append(" · reloading…", self._style("muted"))
        keys = [
            k
            for k, can in (("u reload", self._can_reload), ("r resolve a URL", self._can_resolve))
            if can()
        ]
        if keys:
            text.append("   " + " · ".join(keys), self._style("muted"))
        self.query_one("#routes-status", Static).update(text)

    # --- resolve box ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: Tuple[object, ...]) -> Optional[bool]:
        """Escape (close) is offered only while the resolve box is open."""
        if action == "close_resolve":
            return bool(self.resolve_input.display)
        if action == "resolve":
            return self._can_resolve()
        if action == "reload":
            return self._can_reload()
        return True

    def action_reload(self) -> None:
        self.post_message(PartWanted(PART))

    def action_resolve(self) -> None:
        box = self.resolve_input
        box.display = True
        box.focus()
        self.refresh_bindings()

    def action_close_resolve(self) -> None:
        self.resolve_input.display = False
        self.routes_tree.focus()
        self.refresh_bindings()

    @on(Input.Submitted, "#resolve-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        query = event.value.strip()
        try:
            method, path, host = parse_resolve_query(query)
        except ValueError as error:
            self._show_result(Text(str(error), self._style("error")))
            return
        self.resolving = True
        # What the user typed may carry a token: echoed redacted, like everything shown.
        shown = "%s %s (Host %s)" % (method, redact_target(path), host)
        self._show_result(Text("resolving %s…" % shown))
        self._resolve_blocking(shown, path, method, host)

    @work(thread=True, exclusive=True, group="resolve", exit_on_error=False)
    def _resolve_blocking(self, query: str, path: str, method: str, host: str) -> None:
        try:
            res = self._resolve(path, method, host)
        except Exception as error:  # noqa: BLE001 - shown as one line; the panel goes on
            message = Resolved(query, None, describe_error(error))
        else:
            message = Resolved(query, res, answered=self._answered_lines(res))
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    def _answered_lines(self, res: Resolution) -> List[str]:
        """How the path was answered lately, from the agent's access records (in this worker:
        one more agent call, after the verdict)."""
        if self._answered is None:
            return []
        try:
            seen, held, unread = self._answered(res)
        except Exception as error:  # noqa: BLE001 - the verdict stands without it
            return ["  answered lately: %s" % describe_error(error)]
        return answered_lines(seen, held, unread, res)

    @on(Resolved)
    def _resolved(self, message: Resolved) -> None:
        message.stop()
        self.resolving = False
        self.resolves += 1
        self.resolution = message.resolution
        res = message.resolution
        if res is None:
            self._show_result(
                Text(
                    "could not resolve %s: %s" % (message.query, message.error),
                    self._style("error"),
                )
            )
            return
        lines = resolution_lines(res) + list(message.answered)
        if res.decided_by is not None and res.decided_by.startswith("tool:"):
            verdict = "warning"  # a tool may answer before the app: not a sure success
        elif res.kind in GOOD_VERDICTS:
            verdict = "good"
        elif res.kind in REDIRECT_VERDICTS:
            verdict = "warning"
        else:
            verdict = "error"
        text = Text(lines[0], self._style(verdict) + Style(bold=True), end="")
        for line in lines[1:]:
            text.append("\n")
            text.append(line, self._style("muted") if line.startswith("  · ") else Style())
        self._show_result(text)

    def _show_result(self, text: Text) -> None:
        self.query_one("#resolve-scroll").display = True
        self.query_one("#resolve-result", Static).update(text)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"routes-panel--{name}", partial=True)

    # --- jumps from a finding's evidence (the findings list, f) ---------------------------------

    def reveal(self, app: str, path: Optional[str] = None) -> bool:
        """Put the cursor on ``path`` (a node or static mount) of the app mounted at ``app``
        (``''``: the root), opening the branches on the way; on the app itself without a
        path. Before the routes arrive the target is kept and revealed when they do. False
        when it is not in the routes (the cursor then stays on the app, if that exists)."""
        self._reveal_wanted = (app, path)
        if self.routes is None:
            return False
        return self._reveal_now()

    def _reveal_now(self) -> bool:
        wanted = self._reveal_wanted
        if wanted is None:
            return False
        self._reveal_wanted = None
        app, path = wanted
        tree = self.routes_tree
        apps = [n for n in tree.root.children if n.data is not None and n.data.node is None]
        node = next((n for n in apps if n.data is not None and n.data.app.script_name == app), None)
        if node is None and len(apps) == 1:
            node = apps[0]
        if node is None:
            return False
        found = path is None
        target = node
        while path is not None and not found:
            self._populate(target)
            target.expand()
            step, longest = None, -1
            for child in target.children:
                item = child.data
                if item is None:
                    continue
                where = (
                    item.node.path
                    if item.node is not None
                    else item.mount.path
                    if item.mount is not None
                    else None
                )
                if where == path:
                    step, found = child, True
                    break
                if where and path.startswith(where.rstrip("/") + "/") and len(where) > longest:
                    step, longest = child, len(where)  # the deepest branch that holds it
            if step is None:
                break
            target = step
        tree.move_cursor_now(target)
        self._show_details(target.data)
        return found


def _plain(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)
