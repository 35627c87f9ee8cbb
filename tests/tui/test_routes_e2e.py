"""End to end: the Routes tab of the real TUI on the real demo, through the real agent socket.

The demo stages two routing mistakes (``Reports.summary`` without ``@expose``; a ``/static``
staticdir with a relative dir and no root): the tree must flag the static dir and show summary as
"not exposed" without a warning (the forgotten-expose finding warns once a request hits it), the
details must explain them, and the resolve box must give the answer CherryPy itself gives.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from cpinspect.demo.runner import DemoProcesses
from cpinspect.formatting import FORGOTTEN_NOTE
from cpinspect.tui.widgets.routes_panel import RouteItem

from .helpers import expand, find, labels, open_routes, real_app, resolve, wait_until

RELATIVE_STATIC = "relative path without root: CherryPy answers 500 (ValueError)"


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoProcesses]:
    # No load: routing does not depend on the incident, and idle workers let the tests ask
    # CherryPy itself what it answers.
    with DemoProcesses(threads=4, load=False) as processes:
        yield processes


def http_status(demo: DemoProcesses, path: str) -> int:
    """What the demo really answers for ``GET path``."""
    url = f"http://127.0.0.1:{demo.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def open_node(pilot: Pilot[Any], node: TreeNode[RouteItem]) -> None:
    """Enter on ``node``, then wait for its children (the real agent's data, built lazily)."""
    await expand(pilot, node, "enter")
    await wait_until(pilot, lambda: node.is_expanded and node.children, what="the children")
    await pilot.pause()


async def test_the_tree_flags_the_demos_staged_mistakes(demo: DemoProcesses) -> None:
    # GIVEN the inspector attached to the demo
    app = real_app(demo)
    async with app.run_test(size=(120, 34)) as pilot:
        # WHEN the Routes tab opens
        routes = await open_routes(pilot)
        tree = routes.routes_tree

        # THEN the demo's app is there, open, with its one warning (the static dir) counted
        assert routes.status_text.startswith("1 app · ")
        assert "⚠ 1 warning" in routes.status_text
        shop = find(tree.root, "app '/'")
        assert "root cpinspect.demo.shop.Root" in str(shop.label)
        assert str(shop.label).endswith("⚠ 1")
        root = find(shop, "/  object")
        assert "⚠" not in str(root.label)
        # AND the misconfigured static directory shows its warning at the top of the app
        static = find(shop, "staticdir /static → assets")
        assert str(static.label).endswith(f"⚠ {RELATIVE_STATIC}")

        # WHEN the user expands the root, then reports
        await open_node(pilot, root)
        reports = find(root, "reports")
        assert "⚠" not in str(reports.label)
        await open_node(pilot, reports)

        # THEN the exposed export and the unexposed summary show, summary said "not exposed"
        # plainly, not warned about (no request asked for it)
        # (the staged forgotten @cherrypy.expose is said to be one, at a glance)
        assert labels(reports) == ["export  handler ✓", "summary  not exposed  " + FORGOTTEN_NOTE]

        # WHEN the user moves down onto summary
        await pilot.press("down", "down")
        await wait_until(pilot, lambda: "summary" in routes.details_text, what="the details")

        # THEN the details name the method, its signature and source, and its kind
        details = routes.details_text
        assert "path       /reports/summary" in details
        assert "qualname   cpinspect.demo.shop.Reports.summary" in details
        assert "signature  (self, year: str = '2025') -> str" in details
        assert "cpinspect/demo/shop.py:" in details
        assert "kind       not exposed  exposed ✗" in details
        assert (
            "hint       a forgotten @cherrypy.expose? (its object has exposed handlers)" in details
        )
        assert "⚠" not in details

        # WHEN the user selects the static mount
        tree.move_cursor(static)
        await wait_until(pilot, lambda: "configured" in routes.details_text, what="the mount")

        # THEN its details show the relative dir, no root, and why CherryPy fails
        details = routes.details_text
        assert "kind        staticdir (from app.config)" in details
        assert "configured  assets" in details
        assert "root        -" in details
        assert details.endswith(f"⚠ {RELATIVE_STATIC}")
        await pilot.press("q")


async def test_resolve_verdicts_match_what_cherrypy_answers(demo: DemoProcesses) -> None:
    # GIVEN the inspector on the demo's Routes tab
    app = real_app(demo)
    async with app.run_test(size=(120, 34)) as pilot:
        routes = await open_routes(pilot)

        # WHEN the user resolves the unexposed method
        text = await resolve(pilot, "/reports/summary")
        # THEN the verdict is a 404, and the walk says where it stopped and why
        assert text.startswith("GET /reports/summary (Host localhost) → 404 not_found")
        assert "  · root.reports found" in text.splitlines()
        assert "  · root.reports.summary found, not exposed ✗" in text.splitlines()
        # AND CherryPy itself answers 404
        assert http_status(demo, "/reports/summary") == 404

        # WHEN a real handler with query arguments (one of them a secret)
        text = await resolve(pilot, "/reports/export?year=2024&token=abc123")
        # THEN the handler would be called with those arguments, the secret redacted everywhere;
        # the verdict says the handler decides the status (it claims none)
        lines = text.splitlines()
        assert lines[0] == (
            "GET /reports/export?year=2024&token=*** (Host localhost)"
            " → handler: Reports.export handles it; the handler decides the status"
        )
        assert lines[1].startswith("  handler cpinspect.demo.shop.Reports.export ")
        assert "  args () kwargs {token=***, year='2024'}" in lines
        assert "  · root.reports.export found, exposed ✓" in lines
        # (the box keeps what was typed, to edit and resolve again; the answer echoes it redacted)
        assert "abc123" not in routes.result_text

        # WHEN a file under the misconfigured static directory
        text = await resolve(pilot, "/static/shop.css")
        # THEN the verdict is CherryPy's 500, with the static tool's own error
        assert text.startswith(
            "GET /static/shop.css (Host localhost) → 500 error: staticdir is misconfigured:"
            " Static dir requires an absolute dir (or root)."
        )
        assert "staticdir raised ValueError" in text
        # AND CherryPy itself answers 500
        assert http_status(demo, "/static/shop.css") == 500

        # WHEN a handler that answers
        text = await resolve(pilot, "/products/item?sku=TEA-001")
        # THEN its handler decides, called with its keyword argument (CherryPy answers 200)
        assert text.startswith(
            "GET /products/item?sku=TEA-001 (Host localhost) → handler: Products.item handles it"
        )
        assert "  args () kwargs {sku='TEA-001'}" in text.splitlines()
        assert http_status(demo, "/products/item?sku=TEA-001") == 200
        await pilot.press("escape", "q")


async def test_the_resolve_box_says_how_the_path_was_answered_lately(demo: DemoProcesses) -> None:
    # GIVEN a path CherryPy really answered (the unexposed method: 404), and one nobody asked
    assert http_status(demo, "/reports/summary?from=box") == 404
    app = real_app(demo)
    async with app.run_test(size=(120, 34)) as pilot:
        await open_routes(pilot)
        # WHEN the user resolves it
        text = await resolve(pilot, "/reports/summary")
        # THEN under the verdict, what the agent's access records say it was answered
        last = text.splitlines()[-1]
        assert re.fullmatch(
            r"  answered lately: 404 ×\d+; last 404 at \d\d:\d\d:\d\d \(in the agent's log\)", last
        ), text
        # WHEN a path nobody asked for
        text = await resolve(pilot, "/no/such/page")
        # THEN it says so, with how many records the agent's log holds
        assert re.fullmatch(
            r"  answered lately: no GET /no/such/page in the agent's log \(its last [\d,]+ "
            r"records of any kind\)",
            text.splitlines()[-1],
        ), text
        await pilot.press("escape", "q")
