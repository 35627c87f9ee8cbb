"""Routes and resolve for the TUI: the sessions' delegation, and the pure helpers the panel
renders with (hand-built model objects, no Textual)."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest

from cpinspect.errors import AgentUnavailable, CpinspectError
from cpinspect.formatting import (
    app_warning_count,
    parse_resolve_query,
    resolution_lines,
    route_children,
    route_node_details,
    warnings_below,
)
from cpinspect.model import AppRoutes, Resolution, RouteNode, RoutesSnapshot, StaticMount
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
    assert rows["kind"] == "unexposed  exposed ✗"
    assert rows["tools"] == "none switched on"
    assert rows["static"].startswith("staticdir /admin → /srv/x")


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
