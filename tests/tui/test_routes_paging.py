"""The Routes tab on an object with thousands of handlers: its children come a page at a time,
the rest behind a "… N more" line that adds the next page when chosen (``run_test`` + Pilot, fake
poller answering a scripted tree of 1,234 handlers under one object).
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from cpinspect.formatting import FORGOTTEN_NOTE
from cpinspect.model import AppRoutes, RouteNode, RoutesSnapshot
from cpinspect.tui.widgets.routes_panel import PAGE_SIZE, RouteItem, RoutesPanel

from .fakes import NOT_EXPOSED, T0, FakePoller, incident_update
from .helpers import expand, find, first_data, labels, make_app, wait_until

HANDLERS = 1234
UNEXPOSED = 1200
"""The one handler with a warning: on the last page, out of sight when the object opens."""


def flat_routes() -> RoutesSnapshot:
    nodes = [
        RouteNode("/", "", "object", qualname="big.Root"),
        RouteNode("/flat", "flat", "object", qualname="big.Flat"),
    ]
    for n in range(HANDLERS):
        name = "handler%04d" % n
        if n == UNEXPOSED:
            nodes.append(
                RouteNode(
                    "/flat/" + name,
                    name,
                    "unexposed",
                    qualname="big.Flat." + name,
                    signature="(self)",
                    warnings=(NOT_EXPOSED,),
                )
            )
            continue
        nodes.append(
            RouteNode(
                "/flat/" + name,
                name,
                "handler",
                exposed=True,
                qualname="big.Flat." + name,
                signature="(self, item=None)",
            )
        )
    app = AppRoutes(script_name="", root="big.Root", nodes=tuple(nodes))
    return RoutesSnapshot(taken_at=T0, apps=(app,), cap=20000)


async def open_flat(pilot: Pilot[Any]) -> TreeNode[RouteItem]:
    """Open the Routes tab, then the root object and the flat object, with the keyboard."""
    app = await first_data(pilot)
    await pilot.press("2")
    panel = app.query_one(RoutesPanel)
    await wait_until(pilot, lambda: panel.loads >= 1, what="the routes")
    await pilot.pause()
    return await expand_flat(pilot, panel)


async def expand_flat(pilot: Pilot[Any], panel: RoutesPanel) -> TreeNode[RouteItem]:
    """Expand the root object, then the flat object (space on each)."""
    tree = panel.routes_tree
    root = find(find(tree.root, "app '/'"), "/  object")
    await expand(pilot, root)
    flat = find(root, "flat  object")
    await expand(pilot, flat)
    return flat


async def choose_more(pilot: Pilot[Any], flat: TreeNode[RouteItem]) -> None:
    """Put the cursor on the "… more" line (the last child) and press enter."""
    panel = pilot.app.query_one(RoutesPanel)
    panel.routes_tree.move_cursor(flat.children[-1])
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()


async def test_a_big_object_opens_one_page_at_a_time() -> None:
    # GIVEN an app whose object "flat" has 1,234 handlers, one of them unexposed near the end
    poller = FakePoller([incident_update()])
    poller.routes_answer = flat_routes()
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        panel = app.query_one(RoutesPanel)
        flat = await open_flat(pilot)
        tree = panel.routes_tree

        # THEN the object's line counts the warning below it, though that handler is not shown
        assert "⚠ 1 below" in flat.label.plain
        # AND it shows the first page, then a line saying how many are left
        shown = labels(flat)
        assert len(shown) == PAGE_SIZE + 1
        assert shown[0] == "handler0000  handler ✓"
        assert shown[PAGE_SIZE - 1].startswith("handler%04d " % (PAGE_SIZE - 1))
        left = HANDLERS - PAGE_SIZE
        assert shown[-1] == f"… {left:,} more — enter shows the next {PAGE_SIZE}"

        # WHEN the cursor is on that line THEN the details say what enter does
        tree.move_cursor(flat.children[-1])
        await pilot.pause()
        assert panel.details_text == (
            f"{left:,} more children not in the tree yet: enter shows the next {PAGE_SIZE}."
        )

        # WHEN the user presses enter on it
        await choose_more(pilot, flat)
        # THEN the next page takes its place, in order, and the line counts what is left
        shown = labels(flat)
        assert len(shown) == 2 * PAGE_SIZE + 1
        names = [label.split()[0] for label in shown[:-1]]
        assert names == ["handler%04d" % n for n in range(2 * PAGE_SIZE)]
        left = HANDLERS - 2 * PAGE_SIZE
        assert shown[-1] == f"… {left} more — enter shows the next {left}"
        # AND the cursor is on the first handler of the new page, its details beside the tree
        assert tree.cursor_node is flat.children[PAGE_SIZE]
        assert "qualname   big.Flat.handler%04d" % PAGE_SIZE in panel.details_text

        # WHEN the last page is asked for
        await choose_more(pilot, flat)
        # THEN every handler is in the tree, the "more" line is gone, the warning in sight
        shown = labels(flat)
        assert len(shown) == HANDLERS
        assert [label.split()[0] for label in shown] == ["handler%04d" % n for n in range(HANDLERS)]
        # (an unexposed method among exposed ones: the likely forgotten expose says so)
        expected = f"handler{UNEXPOSED}  not exposed  ⚠ {NOT_EXPOSED}  {FORGOTTEN_NOTE}"
        assert shown[UNEXPOSED] == expected
        assert tree.cursor_node is flat.children[2 * PAGE_SIZE]
        assert "qualname   big.Flat.handler%04d" % (2 * PAGE_SIZE) in panel.details_text

        # WHEN the object is folded and opened again THEN nothing is added twice
        tree.move_cursor(flat)
        await pilot.press("space", "space")
        await pilot.pause()
        assert len(flat.children) == HANDLERS


async def test_a_reload_starts_again_from_the_first_page() -> None:
    poller = FakePoller([incident_update()])
    poller.routes_answer = flat_routes()
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        panel = app.query_one(RoutesPanel)
        flat = await open_flat(pilot)
        await choose_more(pilot, flat)
        assert len(flat.children) == 2 * PAGE_SIZE + 1
        # WHEN the routes are read again (u)
        await pilot.press("u")
        await wait_until(pilot, lambda: panel.loads >= 2, what="the reload")
        await pilot.pause()
        # THEN the tree is rebuilt folded: opening the object shows its first page again
        flat = await expand_flat(pilot, panel)
        assert len(flat.children) == PAGE_SIZE + 1
