"""The Routes tab, driven like a person: the tree read once when the tab opens, expanding and
selecting nodes, warnings in sight, the resolve box's verdicts, errors as one line
(``run_test`` + Pilot, fake poller with scripted routes and verdicts).
"""

from __future__ import annotations

from cpinspect.errors import AgentUnavailable, CpinspectError
from cpinspect.formatting import FORGOTTEN_NOTE

from .fakes import NOT_EXPOSED, RELATIVE_STATIC, FakePoller, incident_update
from .helpers import expand, find, first_data, labels, make_app, open_routes, resolve, wait_until


async def test_routes_are_read_when_the_tab_is_first_shown_and_on_u_only() -> None:
    # GIVEN the inspector on the Threads tab
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # THEN the routes are read once after the first poll (for the findings: static mounts,
        # a forgotten expose), off the UI thread
        await wait_until(pilot, lambda: app.store.part("routes").loads >= 1, what="the routes")
        assert poller.routes_calls == [False]
        # WHEN the Routes tab opens (key 2)
        routes = await open_routes(pilot)
        # THEN the routes were read once, off the UI thread, and summed up above the tree
        assert poller.routes_calls == [False]
        assert app.tabs.active == "routes"
        assert routes.status_text.startswith("2 apps · 8 nodes · ⚠ 2 warnings")
        # WHEN the user goes back and forth, and polls go on (r on the Threads tab: poll now)
        await pilot.press("1", "r", "2")
        await pilot.pause()
        # THEN the routes are not read again (they rarely change; never on a timer)
        assert len(poller.routes_calls) == 1
        # WHEN the user asks for a reload
        await pilot.press("u")
        await wait_until(pilot, lambda: routes.loads >= 2, what="the reload")
        await pilot.pause()
        assert poller.routes_calls == [False, False]
        # AND the keys still go to the tree (a "loading" attribute once shadowed Textual's own
        # and its loading overlay took the focus away)
        assert app.focused is routes.routes_tree
        # AND the threads' keys are neither offered in the footer nor live here
        assert app.check_action("locals", ()) is False
        await pilot.press("v")
        assert app.screen is app.screen_stack[0]


async def test_expand_a_node_and_see_its_children_and_warnings() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        tree = routes.routes_tree
        # GIVEN each app open at its top: the root object, and the misconfigured static dir
        shop = find(tree.root, "app '/'")
        assert "⚠ 2" in shop.label.plain
        root = find(shop, "/  object")
        assert "⚠ 1 below" in root.label.plain
        mount = find(shop, "staticdir /static")
        assert RELATIVE_STATIC in mount.label.plain
        # THEN below the root nothing is built yet (lazy)
        assert not root.is_expanded and len(root.children) == 0
        # WHEN the user selects the root and expands it, then admin
        await expand(pilot, root)
        admin = find(root, "admin")
        await expand(pilot, admin)
        # THEN admin's methods show, the unexposed one said so, with the warning the fake sends
        # (as an older agent did; the protocol reader drops it: see tests/test_routes_verdicts)
        assert labels(admin) == [
            "index  index ✓",
            f"users  not exposed  ⚠ {NOT_EXPOSED}  {FORGOTTEN_NOTE}",
            "delete  handler ✓",
        ]


async def test_selecting_a_node_shows_its_details() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        tree = routes.routes_tree
        root = find(find(tree.root, "app '/'"), "/  object")
        await expand(pilot, root)
        admin = find(root, "admin")
        await expand(pilot, admin)
        # WHEN the user moves down onto users, then onto delete
        await pilot.press("down", "down")
        await pilot.pause()
        details = routes.details_text
        # THEN the details name the handler, its signature and source, and the warning
        assert "qualname   shop.admin.Admin.users" in details
        assert "signature  (self, id=None)" in details
        assert "source     /srv/shop/shop/admin.py:18" in details
        assert "kind       not exposed  exposed ✗" in details
        assert details.endswith(f"⚠ {NOT_EXPOSED}")
        await pilot.press("down")
        await pilot.pause()
        # THEN on delete: the tools in effect, merged from the global config, the app's config
        # for "/" and the handler's own _cp_config, each setting with where it comes from
        details = routes.details_text
        assert "tools      auth_basic, encode, sessions" in details
        assert "config     tools.auth_basic.checkpassword = <function check at 0x7f>" in details
        assert "tools.auth_basic.realm = 'admin'  · _cp_config /admin/delete" in details
        assert "global config" not in details  # encode: named in tools, not listed again
        assert "tools.sessions.timeout = 60  · app.config /" in details


async def test_static_mount_details_show_the_checks() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        tree = routes.routes_tree
        tree.move_cursor(find(find(tree.root, "app '/'"), "staticdir"))
        await pilot.pause()
        details = routes.details_text
        assert "configured  static" in details
        assert "root        -" in details
        assert f"⚠ {RELATIVE_STATIC}" in details


async def test_resolve_box_verdicts() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_routes(pilot)
        # WHEN the user resolves a handler with a method
        text = await resolve(pilot, "POST /admin/delete/7")
        # THEN the verdict names the handler, its location and arguments, then the steps; the
        # fake answers like an agent older than "decided_by" (status 200 for every handler):
        # no status is claimed, the handler decides
        assert text.splitlines() == [
            "POST /admin/delete/7 (Host localhost) → handler: Admin.delete handles it; the handler"
            " decides the status",
            "  handler shop.admin.Admin.delete /srv/shop/shop/admin.py:30",
            "  args ('7') kwargs {}",
            "  tools on auth_basic, encode, sessions (auth_basic: without credentials the answer"
            " is 401)",
            "  · root.admin found, exposed ✓",
            "  · admin.delete found, exposed ✓",
        ]
        # AND the call ran off the UI thread, with what was typed
        assert poller.resolve_calls == [("/admin/delete/7", "POST", "localhost", False)]
        # WHEN a path whose method is not exposed
        text = await resolve(pilot, "/admin/users")
        assert text.startswith("GET /admin/users (Host localhost) → 404 not_found: users is not")
        assert "  · users found but not exposed ✗ → 404" in text
        # WHEN a path missing its trailing slash
        text = await resolve(pilot, "admin")
        assert "→ 301 redirect" in text
        assert "  location http://localhost/admin/" in text
        # WHEN a static file, with a Host header
        text = await resolve(pilot, "/static/logo.PNG Host: shop.example")
        assert text.startswith("GET /static/logo.PNG (Host shop.example) → 200 static")
        assert "  file /srv/shop/static/logo.PNG (image/png)" in text
        # AND resolving never happened on its own
        assert len(poller.resolve_calls) == 4


async def test_r_and_slash_open_the_resolve_box_and_escape_closes_it() -> None:
    poller = FakePoller([incident_update()])
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        for key in ("r", "slash"):
            # WHEN the user presses r (or /) on the Routes tab
            await pilot.press(key)
            # THEN the resolve box opens, empty, with the cursor in it
            assert routes.resolve_input.display and routes.resolve_input.has_focus
            assert routes.resolve_input.value == ""
            await pilot.press("escape")
            assert not routes.resolve_input.display
            assert routes.routes_tree.has_focus


async def test_an_error_from_routes_is_one_line() -> None:
    # GIVEN a target whose agent cannot be reached for routes
    poller = FakePoller([incident_update()])
    poller.routes_answer = CpinspectError("routes need the agent: press i to load it")
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        routes = await open_routes(pilot)
        # THEN the status line says why, on one line, and the app goes on
        assert routes.status_text.startswith(
            "⚠ routes unavailable: routes need the agent: press i to load it"
        )
        assert "\n" not in routes.status_text
        assert len(routes.routes_tree.root.children) == 0
        # WHEN the agent comes back and the user reloads
        from .fakes import shop_routes

        poller.routes_answer = shop_routes()
        await pilot.press("u")
        await wait_until(pilot, lambda: routes.loads >= 2, what="the reload")
        await pilot.pause()
        assert routes.status_text.startswith("2 apps")


async def test_an_error_from_resolve_is_one_line() -> None:
    poller = FakePoller([incident_update()])
    poller.resolve_error = AgentUnavailable("the agent did not answer in 2 s")
    app = make_app(poller)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_routes(pilot)
        text = await resolve(pilot, "/anything")
        assert (
            text
            == "could not resolve GET /anything (Host localhost): the agent did not answer in 2 s"
        )
