"""The Routes tab without noise: methods a dispatcher reaches are listed "internal (reached
through Root.api)", dimmed and never warned about; a forgotten one says "not exposed"; the
resolve box gives the verdict sentence, never a status a handler or a tool decides
(``run_test`` + Pilot; the fake poller of tests/tui/fakes.py answers this module's own scripted
routes and verdicts: a subclass, the fakes are unchanged).
"""

from __future__ import annotations

from typing import Dict

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from cpinspect.model import AppRoutes, Resolution, RouteNode, RoutesSnapshot

from .fakes import T0, FakePoller, incident_update
from .helpers import expand, find, labels, make_app, open_routes, resolve, wait_until

ACTIONS = 40


def dispatch_routes() -> RoutesSnapshot:
    """An app like the one from PyPI: ``Root.api`` dispatching to 40 ``api_<action>`` methods,
    and one really forgotten ``Reports.summary``."""
    nodes = [
        RouteNode("/", "", "object", qualname="music.Root"),
        RouteNode(
            "/api",
            "api",
            "handler",
            exposed=True,
            qualname="music.Root.api",
            signature="(self, *args, **kwargs)",
        ),
    ]
    nodes += [
        RouteNode(
            "/api_action%02d" % n,
            "api_action%02d" % n,
            "internal",
            qualname="music.Root.api_action%02d" % n,
            signature="(self)",
            reached_via="music.Root.api",
            reached_at="/api/action%02d" % n,
        )
        for n in range(ACTIONS)
    ]
    nodes += [
        RouteNode("/reports", "reports", "object", qualname="music.Reports"),
        RouteNode("/reports/summary", "summary", "unexposed", qualname="music.Reports.summary"),
    ]
    app = AppRoutes(script_name="", root="music.Root", nodes=tuple(nodes))
    return RoutesSnapshot(taken_at=T0, apps=(app,), cap=20000)


VERDICTS: Dict[str, Resolution] = {
    "/account": Resolution(
        "/account",
        "GET",
        "localhost",
        "handler",
        reason="the handler would be called",
        handler="music.Root.account",
        decided_by="handler",
        verdict="Root.account handles it; the handler decides the status",
    ),
    "/serve/a.mp3": Resolution(
        "/serve/a.mp3",
        "GET",
        "localhost",
        "static",
        reason="served by tools.staticdir",
        decided_by="tool:cm_auth",
        verdict="tool cm_auth runs before the answer is sent (before_handler, priority 70) and"
        " may answer itself; otherwise: served by tools.staticdir (200)",
        guards=("cm_auth",),
        tools=("cm_auth", "staticdir"),
        static_file="/music/a.mp3",
        mime="audio/mpeg",
    ),
}


class DispatchPoller(FakePoller):
    def __init__(self) -> None:
        super().__init__([incident_update()])
        self.routes_answer = dispatch_routes()

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        super().resolve(path, method, host)  # records the call
        return VERDICTS[path]


async def test_internal_methods_are_dimmed_and_not_warned_about() -> None:
    # GIVEN the inspector on an app with one dispatcher and 40 methods it reaches
    app = make_app(DispatchPoller())
    async with app.run_test(size=(140, 60)) as pilot:
        # WHEN the Routes tab opens
        routes = await open_routes(pilot)
        # THEN no warning is counted anywhere
        assert routes.status_text.startswith("1 app · 44 nodes")
        assert "⚠" not in routes.status_text
        shop = find(routes.routes_tree.root, "app '/'")
        assert "⚠" not in shop.label.plain
        root = find(shop, "/  object")
        # WHEN the root is opened
        await expand(pilot, root)
        shown = labels(root)
        # THEN the 40 methods say through what they are reached, dimmed, with no warning mark
        internal = [child for child in root.children if "internal" in child.label.plain]
        assert len(internal) == ACTIONS
        assert shown[1] == "api_action00  internal (reached as /api/action00 through Root.api)"
        muted = routes.get_component_rich_style("routes-panel--muted", partial=True)
        label = internal[0].label
        assert isinstance(label, Text) and label.style == muted
        assert all("⚠" not in text and "✗" not in text for text in shown)
        # AND the forgotten method says plainly that it is not exposed
        reports = find(root, "reports")
        await expand(pilot, reports)
        assert labels(reports) == ["summary  not exposed"]
        # WHEN the cursor is on an internal method THEN its details name the dispatcher
        routes.routes_tree.move_cursor(internal[3])
        await wait_until(pilot, lambda: "api_action03" in routes.details_text, what="details")
        details = routes.details_text
        assert (
            "kind         internal (reached as /api/action03 through Root.api)  exposed ✗"
            in details
        )
        assert "reached via  music.Root.api" in details
        # AND the URL that reaches it, its own path being a 404
        assert "reached as   /api/action03 (its own path answers 404: not exposed)" in details
        assert "also" not in details
        assert "⚠" not in details


async def test_the_resolve_box_gives_the_verdict_sentence() -> None:
    app = make_app(DispatchPoller())
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        # WHEN a handler is resolved THEN it decides the status: none is claimed
        text = await resolve(pilot, "/account")
        assert text.splitlines()[0] == (
            "GET /account (Host localhost) → handler: Root.account handles it;"
            " the handler decides the status"
        )
        assert "200" not in text
        # WHEN a static file guarded by the app's own auth tool
        text = await resolve(pilot, "/serve/a.mp3")
        lines = text.splitlines()
        # THEN the tool is named as the one that may answer, the static file as the otherwise
        assert lines[0].startswith("GET /serve/a.mp3 (Host localhost) → static: tool cm_auth runs")
        assert lines[0].endswith("otherwise: served by tools.staticdir (200)")
        assert "  tools that may answer first: cm_auth" in lines
        assert "  file /music/a.mp3 (audio/mpeg)" in lines
        # AND it is shown in the warning colour, not as a success
        assert routes.resolution is not None and routes.resolution.decided_by == "tool:cm_auth"
        warning = routes.get_component_rich_style("routes-panel--warning", partial=True)
        good = routes.get_component_rich_style("routes-panel--good", partial=True)
        content = routes.query_one("#resolve-result", Static).content
        assert isinstance(content, Text) and warning != good
        assert content.style == warning + Style(bold=True)
