"""Routes and resolve for the TUI: the sessions' delegation, and the pure helpers the panel
renders with (hand-built model objects, no Textual)."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest

from cpinspect.errors import AgentUnavailable, CpinspectError
from cpinspect.formatting import (
    app_warning_count,
    effective_config,
    global_tools_text,
    parse_resolve_query,
    resolution_lines,
    route_children,
    route_node_details,
    static_contents,
    tools_in_effect,
    warnings_below,
)
from cpinspect.model import (
    AppRoutes,
    ConfigSection,
    Resolution,
    RouteNode,
    RoutesSnapshot,
    StaticMount,
)
from cpinspect.sources.live import AgentSession, PySpySession

SNAPSHOT = RoutesSnapshot(taken_at=0.0, apps=())


class StubSource:
    """Stands in for an ``AgentSource``: records what it was asked."""

    connect_path = "/run/agent.sock"
    label = "agent /run/agent.sock"

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []

    def routes(self) -> RoutesSnapshot:
        self.calls.append(("routes",))
        return SNAPSHOT

    def resolve(self, path: str, method: str = "GET", host: str = "localhost") -> Resolution:
        self.calls.append(("resolve", path, method, host))
        return Resolution(path, method, host, "handler", status=200)

    def close(self) -> None:
        pass


def test_agent_session_asks_its_agent_for_routes_and_verdicts():
    source = StubSource()
    session = AgentSession(source, None, pid=4121)  # type: ignore[arg-type]
    assert session.routes() is SNAPSHOT
    assert session.resolve("/a", "POST", "h").status == 200
    assert source.calls == [("routes",), ("resolve", "/a", "POST", "h")]


def test_agent_session_without_an_agent_says_so_in_one_line():
    session = AgentSession(StubSource(), None, pid=4121)  # type: ignore[arg-type]
    session.source = None
    session._lost_reason = "target exited"
    with pytest.raises(AgentUnavailable, match=r"routes need the agent.*target exited"):
        session.routes()
    with pytest.raises(AgentUnavailable, match="resolving a URL needs the agent"):
        session.resolve("/", "GET", "localhost")


def test_pyspy_session_needs_the_agent_loaded_first():
    session = PySpySession(object(), pid=4121)  # type: ignore[arg-type]
    with pytest.raises(CpinspectError, match="routes need the agent: press i to load it"):
        session.routes()
    with pytest.raises(CpinspectError, match="press i"):
        session.resolve("/", "GET", "localhost")
    with pytest.raises(CpinspectError, match="sessions need the agent: press i to load it"):
        session.sessions()
    # WHEN the agent is loaded THEN it answers
    session.agent = AgentSession(StubSource(), None, pid=4121)  # type: ignore[arg-type]
    assert session.routes() is SNAPSHOT


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("/admin/users", ("GET", "/admin/users", "localhost")),
        ("post /cart/add?id=3", ("POST", "/cart/add?id=3", "localhost")),
        ("admin", ("GET", "/admin", "localhost")),
        ("GET /x Host: shop.example", ("GET", "/x", "shop.example")),
        ("/x host:api.example", ("GET", "/x", "api.example")),
    ],
)
def test_parse_resolve_query(typed, expected):
    assert parse_resolve_query(typed) == expected


def test_parse_resolve_query_without_a_path_says_what_to_type():
    with pytest.raises(ValueError, match="type a path"):
        parse_resolve_query("DELETE")


APP = AppRoutes(
    script_name="/shop",
    nodes=(
        RouteNode("/", "", "object"),
        RouteNode("/admin", "admin", "object"),
        RouteNode("/admin/users", "users", "unexposed", warnings=("would 404: not exposed",)),
        RouteNode("/deep/orphan", "orphan", "handler", exposed=True),
    ),
    static=(StaticMount("/admin", "staticdir", resolved="/srv/x", warnings=("missing",)),),
)


def test_route_children_and_warnings_below():
    children = route_children(APP)
    assert [n.path for n in children[None]] == ["/"]
    # a node whose parent the capped walk did not reach hangs from the nearest ancestor
    assert [n.path for n in children["/"]] == ["/admin", "/deep/orphan"]
    assert [n.path for n in children["/admin"]] == ["/admin/users"]
    assert warnings_below(APP) == {"/admin": 1, "/": 1}
    assert app_warning_count(APP) == 2


def test_node_details_include_the_static_mount_in_effect():
    rows = dict(route_node_details(APP, APP.nodes[2]))
    assert rows["path"] == "/shop/admin/users"
    assert rows["kind"] == "not exposed  exposed ✗"
    assert rows["tools"] == "none switched on"
    assert rows["static"] == "staticdir /admin → /srv/x (not checked)"
    # AND a name with an underscore is also reached with punctuation in its place
    assert "also" not in rows
    feed = dict(
        route_node_details(APP, RouteNode("/feed_xml", "feed_xml", "handler", exposed=True))
    )
    assert feed["also"].startswith("/shop/feed.xml  (CherryPy reads . -")
    # AND not for an unexposed method (/api.adduser is a 404 like /api_adduser)
    internal = RouteNode("/api_adduser", "api_adduser", "internal", reached_via="m.Root.api")
    assert "also" not in dict(route_node_details(APP, internal))


def test_static_contents_counts_files_and_directories_apart():
    assert static_contents(StaticMount("/m", "staticdir", file_count=0, dir_count=1)) == (
        "1 directory"
    )
    assert static_contents(StaticMount("/r", "staticdir", file_count=3, dir_count=2)) == (
        "3 files, 2 directories"
    )
    assert static_contents(StaticMount("/e", "staticdir", file_count=0, dir_count=0)) == "0 files"
    capped = StaticMount("/c", "staticdir", file_count=600, dir_count=400, file_count_capped=True)
    assert static_contents(capped) == "1,000+ entries"
    # an older agent counted every entry as a file: said as entries, not files
    assert static_contents(StaticMount("/o", "staticdir", file_count=1)) == "1 entry"
    assert static_contents(StaticMount("/f", "staticfile")) == ""


def test_resolution_lines_for_a_static_file():
    res = Resolution(
        "/s/a.PNG",
        "GET",
        "h",
        "static",
        status=200,
        reason="served",
        static_file="/srv/s/a.PNG",
        mime="image/png",
        steps=("staticdir on",),
    )
    assert resolution_lines(res) == [
        "GET /s/a.PNG (Host h) → 200 static: served",
        "  file /srv/s/a.PNG (image/png)",
        "  · staticdir on",
    ]


CONFIGURED = AppRoutes(
    script_name="",
    nodes=(
        RouteNode("/", "", "object", config=(("tools.sessions.on", "True"),)),
        RouteNode("/admin", "admin", "object", config=(("tools.auth_basic.on", "True"),)),
        RouteNode(
            "/admin/index",
            "index",
            "index",
            exposed=True,
            config=(("tools.json_out.on", "True"),),
        ),
        RouteNode(
            "/admin/report",
            "report",
            "handler",
            exposed=True,
            tools=("caching",),  # tool names only: an agent that sent no settings
        ),
    ),
    config=(
        ConfigSection("/", settings=(("tools.gzip.on", "True"),)),
        ConfigSection(
            "/admin",
            settings=(("tools.auth_basic.on", "False"), ("tools.auth_basic.realm", "'x'")),
        ),
    ),
)


def test_effective_config_merges_as_cherrypy_does():
    nodes = {node.path: node for node in CONFIGURED.nodes}
    # GIVEN a handler below /admin, global tools, the app's sections and objects' _cp_config
    merged = effective_config(CONFIGURED, nodes["/admin/report"], ("encode", "sessions"))
    # THEN each key has its last writer: app.config /admin overrides the admin object's
    # _cp_config, _cp_config / overrides the global tools, the handler's own tools come last
    assert merged == [
        ("tools.auth_basic.on", "False", "app.config /admin"),
        ("tools.auth_basic.realm", "'x'", "app.config /admin"),
        ("tools.caching.on", "True", "_cp_config /admin/report"),
        ("tools.encode.on", "True", "global config"),
        ("tools.gzip.on", "True", "app.config /"),
        ("tools.sessions.on", "True", "_cp_config /"),
    ]
    assert tools_in_effect(merged) == ["caching", "encode", "gzip", "sessions"]
    # AND a URL ending on an object runs with its index's config too
    on_admin = effective_config(CONFIGURED, nodes["/admin"])
    assert ("tools.json_out.on", "True", "_cp_config /admin/index") in on_admin
    rows = route_node_details(CONFIGURED, nodes["/admin"])
    assert ("tools", "gzip, json_out, sessions") in rows
    assert ("config", "tools.auth_basic.on = False  · app.config /admin") in rows


def test_resolution_lines_name_the_tools_in_effect_and_what_auth_changes():
    res = Resolution(
        "/admin", "GET", "h", "handler", status=200, reason="called", tools=("auth_basic", "gzip")
    )
    assert resolution_lines(res)[1] == (
        "  tools on auth_basic, gzip (auth_basic: without credentials the answer is 401)"
    )


def test_global_tools_the_app_switches_off_at_its_root_are_marked():
    # GIVEN global tools, and an app that turns trailing_slash off for "/" and encode off on
    # its root object, but turns encode back on in its "/" section (the section wins)
    app = AppRoutes(
        script_name="",
        nodes=(
            RouteNode(
                "/",
                "",
                "object",
                config=(("tools.encode.on", "False"), ("tools.gzip.on", "False")),
            ),
        ),
        config=(
            ConfigSection(
                "/", settings=(("tools.trailing_slash.on", "False"), ("tools.encode.on", "True"))
            ),
        ),
    )
    # THEN only what stays off at "/" is marked
    text = global_tools_text(app, ("encode", "log_headers", "trailing_slash"))
    assert text == "encode, log_headers, trailing_slash (off in this app)"


def test_a_property_on_a_handler_class_is_said_as_such_not_warned_about():
    from cpinspect.formatting import app_counts, route_kind_text
    from cpinspect.model import AppRoutes, RouteNode

    # GIVEN a handler class with a property (CherryMusic's handlers look services up that way)
    node = RouteNode(path="/userdb", name="userdb", kind="property", qualname="H.userdb")
    app = AppRoutes(script_name="", nodes=(node,))
    # THEN its kind says why nothing is known below it, and the app counts no warning for it
    assert route_kind_text(node) == (
        "property (user code: not evaluated, what it returns is not known)"
    )
    assert app_counts(app).endswith("· 0 warnings")


def _view_app() -> Any:
    from cpinspect.model import ConfigSection

    def n(path: str, kind: str, exposed: bool = False, app_code: Any = True) -> RouteNode:
        return RouteNode(path, path.rsplit("/", 1)[-1], kind, exposed=exposed, app_code=app_code)

    return AppRoutes(
        script_name="",
        dispatcher="MethodDispatcher",
        nodes=(
            n("/", "object"),
            n("/favicon_ico", "static", exposed=True, app_code=False),
            n("/login", "object", exposed=True),
            n("/login/exec_lowstate", "unexposed"),
            n("/login/auth", "object", app_code=False),
            n("/login/auth/mk_token", "unexposed", app_code=False),
            n("/login/auth/loader", "object", app_code=False),
            n("/login/auth/loader/get", "unexposed", app_code=False),
            n("/legacy", "object"),
            n("/legacy/index", "index", exposed=True),
            n("/legacy/summary", "unexposed"),
            n("/legacy/items", "unexposed", app_code=False),
            n("/admin", "object"),
            n("/admin/index", "unexposed"),
        ),
        static=(
            StaticMount("/favicon_ico", "staticfile", source="handler", resolved="/x/favicon.ico"),
        ),
        config=(
            ConfigSection("/legacy", dispatcher="default"),
            ConfigSection("/admin", dispatcher="default"),
        ),
    )


def test_the_route_view_folds_helpers_and_keeps_forgotten_exposes() -> None:
    from cpinspect.formatting import folded_text, route_view

    # GIVEN a MethodDispatcher app with default-dispatched /legacy and /admin (hand-built)
    view = route_view(_view_app())
    # THEN a helper with nothing exposed below is folded, counted
    assert view.folded == {"/login/auth": (2, 1, 0)}
    assert folded_text(view.folded["/login/auth"]) == (
        "object, nothing exposed below (2 methods, 1 object)"
    )
    # AND a forgotten expose is app code beside exposed handlers (or an index) under the
    # default dispatcher; never a stdlib method, never a helper under a MethodDispatcher
    assert view.forgotten == {"/legacy/summary", "/admin/index"}
    assert view.hidden == {"/login": 1, "/legacy": 1}
    assert "/login/auth/mk_token" not in view.shown and "/legacy/items" not in view.shown
    assert {"/", "/favicon_ico", "/login", "/login/auth", "/admin/index"} <= view.shown


def test_a_static_handler_is_shown_at_the_url_it_answers() -> None:
    from cpinspect.formatting import route_url, static_handler_note

    app = _view_app()
    # THEN favicon_ico serving favicon.ico is shown as /favicon.ico, said never to serve under
    # the MethodDispatcher
    assert route_url(app, "/favicon_ico") == "/favicon.ico"
    assert "MethodDispatcher" in str(static_handler_note(app, "/favicon_ico"))
    assert route_url(app, "/legacy/summary") == "/legacy/summary"
    # AND when a config staticfile answers /favicon.ico first, the handler keeps its spelling
    shadowed = AppRoutes(
        script_name="",
        nodes=app.nodes,
        static=(
            *app.static,
            StaticMount("/favicon.ico", "staticfile", resolved="/srv/icon.ico", exists=True),
        ),
    )
    assert route_url(shadowed, "/favicon_ico") == "/favicon_ico"
    # AND a handler of the app's own named like a web file (rdiffweb's robots_txt, served by
    # its own static() handler) is shown at the URL a browser asks for; other names are not
    own = AppRoutes(
        script_name="",
        nodes=(
            RouteNode("/robots_txt", "robots_txt", "handler", exposed=True),
            RouteNode("/get_conf", "get_conf", "handler", exposed=True),
            RouteNode("/sitemap_xml", "sitemap_xml", "unexposed"),
        ),
    )
    assert route_url(own, "/robots_txt") == "/robots.txt"
    assert route_url(own, "/get_conf") == "/get_conf"
    assert route_url(own, "/sitemap_xml") == "/sitemap_xml"  # not exposed: no URL answers
    assert static_handler_note(shadowed, "/favicon_ico") is None  # the default dispatcher


def test_a_handlers_own_static_mount_is_shown_at_its_url_in_every_view() -> None:
    # GIVEN rdiffweb's robots_txt: a handler whose own _cp_config turns staticfile on
    from cpinspect.formatting import mount_url, static_mount_details, static_mount_line

    app = AppRoutes(
        script_name="",
        nodes=(RouteNode("/robots_txt", "robots_txt", "handler", exposed=True),),
        static=(
            StaticMount(
                "/robots_txt", "staticfile", "_cp_config", resolved="/srv/robots.txt", exists=True
            ),
        ),
    )
    mount = app.static[0]
    # THEN `routes`, the tree's line and the details all show it at the URL one types (the
    # tree and the details once showed /robots_txt where `routes` said /robots.txt)
    assert mount_url(app, mount) == "/robots.txt"
    assert static_mount_line(mount, app).startswith("staticfile /robots.txt → /srv/robots.txt")
    rows = dict(static_mount_details(mount, app))
    assert rows["path"] == "/robots.txt" and rows["also"].startswith("/robots_txt")
    # AND a config section's mount stays at its own path
    section = StaticMount("/static", "staticdir", resolved="/srv/static", exists=True)
    assert mount_url(app, section) == "/static"
