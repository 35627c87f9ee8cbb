"""Routes without noise, in process: which unexposed methods a dispatcher reaches on purpose
(``internal``), which nothing reaches (``unexposed``), and how the inspector says both and the
resolver's verdict.

The walk only reads objects, so it runs on hand-built CherryPy ``Application`` objects that are
never mounted or served; the real process is in tests/integration/test_dispatch_routes.py.
"""

from __future__ import annotations

from typing import Any, Dict

import cherrypy
import pytest

from cpinspect.agent.probes.routes import _Walk, method_dispatch_at, name_prefix, walk_tree
from cpinspect.cli import routes as routes_cli
from cpinspect.formatting import app_counts, resolution_lines, route_kind_text
from cpinspect.model import AppRoutes, Resolution, RouteNode, RoutesSnapshot
from cpinspect.protocol import resolution_from_json, routes_from_json


class Prefixed:
    @cherrypy.expose
    def api(self, *args, **kwargs):
        return getattr(self, "api_" + args[0])()

    def api_ping(self):
        return "pong"

    def helper(self):  # no dispatcher reaches it: "api_" is not its prefix
        return "x"


class Formatted:
    @cherrypy.expose
    def run(self, action):
        # the prefix inside a nested code object (a lambda) and in a format string
        pick = lambda: getattr(self, "cmd_%s" % action)  # noqa: E731
        return pick()()

    def cmd_go(self):
        return "went"


class FString:
    @cherrypy.expose
    def op(self, name, **kwargs):
        return getattr(self, f"op_{name}")()

    def op_x(self):
        return "x"


class Tabled:
    def __init__(self) -> None:
        self.handlers = {"a": self.do_a}
        self.listed = [self.do_b]

    @cherrypy.expose
    def call(self, action):
        if action == "b":
            return self.listed[0]()
        return self.handlers[action]()

    def do_a(self):
        return "a"

    def do_b(self):
        return "b"

    def do_c(self):  # in no table
        return "c"


class WithDefault:
    @cherrypy.expose
    def default(self, *parts):
        return "/".join(parts)

    def page(self):
        return "page"


class NoGetattr:
    @cherrypy.expose
    def api(self, *args):  # takes names but dispatches to nothing
        return "api %s" % (args,)

    def api_thing(self):
        return "thing"


class NoNames:
    @cherrypy.expose
    def fixed(self):  # getattr with a prefix, but it cannot be given a name
        return getattr(self, "api_one")()  # noqa: B009 - the pattern under test

    def api_one(self):
        return "one"


class Trapped:
    @property
    def handlers(self):
        raise RuntimeError("a property is user code: never evaluated")

    @cherrypy.expose
    def call(self, action):
        return self.handlers[action]()

    def do_a(self):
        return "a"


class Root:
    def __init__(self) -> None:
        self.prefixed = Prefixed()
        self.formatted = Formatted()
        self.fstring = FString()
        self.tabled = Tabled()
        self.withdefault = WithDefault()
        self.nogetattr = NoGetattr()
        self.nonames = NoNames()
        self.trapped = Trapped()


def walk(app: cherrypy.Application) -> Dict[str, Dict[str, Any]]:
    w = _Walk([1000])
    walk_tree(app.root, w, method_dispatch_at(app, cherrypy._cprequest.Request.dispatch))
    return {n["path"]: n for n in w.nodes}


@pytest.fixture(scope="module")
def nodes() -> Dict[str, Dict[str, Any]]:
    return walk(cherrypy.Application(Root(), ""))


@pytest.mark.parametrize(
    "path, via",
    [
        ("/prefixed/api_ping", "Prefixed.api"),
        ("/formatted/cmd_go", "Formatted.run"),
        ("/fstring/op_x", "FString.op"),
        ("/tabled/do_a", "Tabled.call"),
        ("/tabled/do_b", "Tabled.call"),
        ("/withdefault/page", "WithDefault.default"),
    ],
)
def test_methods_a_dispatcher_reaches_are_internal(
    nodes: Dict[str, Dict[str, Any]], path: str, via: str
) -> None:
    # GIVEN an exposed method that dispatches by name (getattr with a prefix, a table of
    # methods) or an exposed default WHEN the tree is walked
    node = nodes[path]
    # THEN the unexposed method it reaches is internal, names its dispatcher, and is not warned
    assert node["kind"] == "internal"
    assert node["reached_via"].endswith(via)
    assert node["warnings"] == [] and node["exposed"] is False


@pytest.mark.parametrize(
    "path, url",
    [
        ("/prefixed/api_ping", "/prefixed/api/ping"),  # the name without its prefix
        ("/formatted/cmd_go", "/formatted/run/go"),
        ("/fstring/op_x", "/fstring/op/x"),
        ("/tabled/do_a", "/tabled/call/a"),  # the table's key
        ("/tabled/do_b", None),  # a list has no key: the URL is not known
        ("/withdefault/page", None),  # the default receives it at its own path
    ],
)
def test_an_internal_method_says_the_path_that_reaches_it(
    nodes: Dict[str, Dict[str, Any]], path: str, url: Any
) -> None:
    # GIVEN a method a dispatcher reaches WHEN the tree is walked
    # THEN it names the path a request takes to it (its own path is a 404: not exposed)
    assert nodes[path]["reached_at"] == url


@pytest.mark.parametrize(
    "path",
    [
        "/prefixed/helper",  # "api_" is not its prefix
        "/tabled/do_c",  # in no table
        "/nogetattr/api_thing",  # the dispatcher calls no getattr
        "/nonames/api_one",  # the "dispatcher" cannot be given a name
        "/trapped/do_a",  # the table is a property: not evaluated, so not known
    ],
)
def test_methods_nothing_reaches_stay_unexposed_without_a_warning(
    nodes: Dict[str, Dict[str, Any]], path: str
) -> None:
    node = nodes[path]
    assert node["kind"] == "unexposed" and node["reached_via"] is None
    # the warning is the forgotten-expose finding's, once a request hits it
    assert node["warnings"] == []


def test_an_exposed_default_under_a_method_dispatcher_reaches_nothing() -> None:
    # GIVEN the same object answered by HTTP method (a default is not a fallback there)
    method = {"/": {"request.dispatch": cherrypy.dispatch.MethodDispatcher()}}
    nodes = walk(cherrypy.Application(WithDefault(), "", method))
    # THEN its unexposed method is not said to be reached through default
    assert nodes["/page"]["kind"] == "unexposed"


@pytest.mark.parametrize(
    "const, prefix",
    [
        ("api_", "api_"),
        ("api_%s", "api_"),
        ("cmd_{}", "cmd_"),
        ("Dispatch an API call.", None),  # a docstring
        ("x", None),  # too short to mean anything
        ("%s", None),
        ("data", "data"),
    ],
)
def test_name_prefix(const: str, prefix: Any) -> None:
    assert name_prefix(const) == prefix


def test_kinds_as_the_inspector_says_them() -> None:
    internal = RouteNode(
        "/api_x", "api_x", "internal", reached_via="shop.app.Root.api", reached_at="/api/x"
    )
    unexposed = RouteNode("/summary", "summary", "unexposed")
    assert route_kind_text(internal) == "internal (reached as /api/x through Root.api)"
    # without the path (a list of methods, an older agent): not at its own path, which 404s
    assert (
        route_kind_text(RouteNode("/api_y", "api_y", "internal", reached_via="m.Root.api"))
        == "internal (reached through Root.api, not at its own path)"
    )
    # an exposed default receives the request at the method's own path
    assert (
        route_kind_text(RouteNode("/page", "page", "internal", reached_via="m.Root.default"))
        == "internal (reached through Root.default)"
    )
    assert route_kind_text(RouteNode("/y", "y", "internal")) == "internal"
    assert route_kind_text(unexposed) == "not exposed"
    assert route_kind_text(RouteNode("/i", "i", "index", exposed=True)) == "index"
    app = AppRoutes(
        script_name="",
        nodes=(
            RouteNode("/", "", "object"),
            RouteNode("/api", "api", "handler", exposed=True),
            internal,
            unexposed,
        ),
    )
    assert app_counts(app) == "4 nodes: 1 exposed, 1 internal, 1 not exposed · 0 warnings"
    text = routes_cli.render(RoutesSnapshot(taken_at=0.0, apps=(app,)))
    assert "/api_x                         internal (reached as /api/x through Root.api)" in text
    assert "/summary                       not exposed" in text
    assert "⚠" not in text


def test_the_reader_takes_reached_via_and_drops_an_older_agents_not_exposed_warning() -> None:
    # GIVEN an answer from an agent older than "internal": a warning on every unexposed method
    payload = {
        "apps": [
            {
                "script_name": "",
                "nodes": [
                    {"path": "/a", "kind": "unexposed", "warnings": ["would 404: not exposed"]},
                    {"path": "/b", "kind": "internal", "reached_via": "m.R.api", "warnings": []},
                    {
                        "path": "/c",
                        "kind": "internal",
                        "reached_via": "m.R.api",
                        "reached_at": "/api/c",
                    },
                ],
            }
        ]
    }
    (app,) = routes_from_json(payload).apps
    # THEN the false alarm is gone, the kind still says it
    assert app.nodes[0].warnings == () and route_kind_text(app.nodes[0]) == "not exposed"
    assert app.nodes[1].reached_via == "m.R.api" and app.nodes[1].reached_at is None
    assert app.nodes[2].reached_at == "/api/c"


def test_the_verdict_names_who_decides_and_claims_no_status() -> None:
    # GIVEN a handler the resolver cannot know the status of
    handler = resolution_from_json(
        {
            "path": "/account",
            "method": "GET",
            "host": "h",
            "verdict": {
                "kind": "handler",
                "status": None,
                "reason": "the handler would be called",
                "decided_by": "handler",
                "verdict": "Root.account handles it; the handler decides the status",
                "handler": {"qualname": "m.Root.account", "file": "m.py", "line": 9},
            },
        }
    )
    assert handler.decided_by == "handler" and handler.status is None
    assert resolution_lines(handler)[0] == (
        "GET /account (Host h) → handler: Root.account handles it; the handler decides the status"
    )
    # AND a static file guarded by a custom tool: the tool is named, no 200 claimed
    guarded = Resolution(
        "/files/a.txt",
        "GET",
        "h",
        "static",
        decided_by="tool:myauth",
        verdict="tool myauth runs first (before_handler, priority 50) and may answer itself"
        "; otherwise: served by tools.staticdir (200)",
        guards=("myauth",),
        tools=("auth_basic", "myauth", "staticdir"),
        static_file="/srv/a.txt",
        mime="text/plain",
    )
    lines = resolution_lines(guarded)
    assert lines[0].startswith("GET /files/a.txt (Host h) → static: tool myauth runs first")
    assert "→ 200" not in lines[0]
    assert "  tools that may answer first: myauth" in lines
    # (the verdict names the tools: the older auth note is not repeated)
    assert "  tools on auth_basic, myauth, staticdir" in lines
    # AND an older agent's "200 handler" is not repeated either
    old = Resolution("/x", "GET", "h", "handler", status=200, reason="called", handler="m.R.x")
    assert resolution_lines(old)[0] == (
        "GET /x (Host h) → handler: R.x handles it; the handler decides the status"
    )
    # AND a status the resolver knows is still given
    known = Resolution("/n", "GET", "h", "not_found", status=404, reason="no exposed handler")
    assert resolution_lines(known)[0] == "GET /n (Host h) → 404 not_found: no exposed handler"


class Hostile:
    """A tool's callable whose attributes are user code: once armed (after ``cherrypy.Tool``
    itself looked at it), reading one must never happen."""

    armed = False

    def __call__(self) -> None:
        raise AssertionError("a tool is never run")

    def __getattr__(self, name: str) -> Any:
        if type(self).armed:
            raise AssertionError("attribute %r read" % name)
        raise AttributeError(name)


def test_guarding_tools_are_read_from_the_toolboxes_without_running_them() -> None:
    from cpinspect.agent.probes.resolve import guarding_tools

    # GIVEN an app with its own toolbox: a hostile callable, and a tool named like a harmless
    # CherryPy one that is not CherryPy's
    box = cherrypy._cptools.Toolbox("mine")
    box.trap = cherrypy.Tool("on_start_resource", Hostile())
    Hostile.armed = True
    box.encode = cherrypy.Tool("before_handler", lambda: None, priority=5)
    box.late = cherrypy.Tool("before_finalize", lambda: None)
    app = cherrypy.Application(WithDefault(), "")
    app.toolboxes = {"tools": cherrypy.tools, "mine": box}
    config = {
        "tools.encode.on": True,  # CherryPy's own, harmless
        "tools.sessions.on": True,
        "tools.auth_basic.on": True,
        "tools.nosuch.on": True,
        "tools.gzip.on": False,
        "mine.trap.on": True,
        "mine.encode.on": True,
        "mine.late.on": True,  # after the handler: cannot answer for it
    }
    steps: list = []
    # WHEN the tools that may answer first are read
    guards = guarding_tools(app, config, steps)
    # THEN they come in the order CherryPy runs them, CherryPy's harmless ones left out
    assert [(g["tool"], g["point"], g["priority"], g["custom"]) for g in guards] == [
        ("nosuch", None, None, True),
        ("mine.trap", "on_start_resource", 50, True),
        ("auth_basic", "before_handler", 1, False),
        ("mine.encode", "before_handler", 5, True),
    ]
    # AND a tool switched on but not registered is said to fail the request
    assert steps == ["tools.nosuch.on but no such tool is registered: CherryPy answers 500 ✗"]
