"""/v1/routes and /v1/resolve on a real CherryPy process with many routing cases.

The agreement table sends every URL both to the resolver and to the running app over HTTP: the
verdict's status (and, for static files, the Content-Type) must equal the real response. A
disagreement is a bug in the resolver, never a row to delete.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlencode

import pytest

from tests.conftest import wait_for
from tests.helpers import agent_get, spawn_ready


class RoutingTarget:
    def __init__(self, port: int, pid: int, static: Path) -> None:
        self.port = port
        self.pid = pid
        self.static = static

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutingTarget]:
    tmp = tmp_path_factory.mktemp("routing")
    args = ["-m", "tests.apps.routing_app", str(tmp / "static")]
    with spawn_ready(args, tmp / "target.log", "routing app", timeout=20) as m:
        yield RoutingTarget(int(m.group(1)), int(m.group(2)), tmp / "static")


def resolve(
    target: RoutingTarget, path: str, method: str = "GET", host: str = ""
) -> Dict[str, Any]:
    query = urlencode({"path": path, "method": method, "host": host or "127.0.0.1"})
    status, body = agent_get(target.socket_path(), "/v1/resolve?" + query)
    assert status == 200, body
    return body


def real(target: RoutingTarget, path: str, method: str = "GET", host: str = "") -> Tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        conn.request(method, path, headers={"Host": host or "127.0.0.1:%d" % target.port})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Content-Type") or ""
    finally:
        conn.close()


# (path, method, host, what the row shows)
AGREEMENT: List[Tuple[str, str, str, str]] = [
    ("/", "GET", "", "root index"),
    ("/admin", "GET", "", "index without slash: 301"),
    ("/admin/", "GET", "", "nested index"),
    ("/admin/users/", "GET", "", "two levels deep"),
    ("/admin/users/show/7", "GET", "", "positional arg from the path"),
    ("/admin/users/secret", "GET", "", "nested, not exposed: 404"),
    ("/admin/hidden", "GET", "", "not exposed: 404"),
    ("/not_exposed", "GET", "", "not exposed on root: 404"),
    ("/alias1", "GET", "", "expose alias"),
    ("/alias2", "GET", "", "second expose alias"),
    ("/feed.xml", "GET", "", "dot becomes underscore"),
    ("/page/home", "GET", "", "signature fits"),
    ("/page", "GET", "", "signature mismatch: missing parameter"),
    ("/page/a/b/c", "GET", "", "signature mismatch: too many segments"),
    ("/page?name=x", "GET", "", "parameter from the query"),
    ("/page/home?bogus=1", "GET", "", "unexpected query parameter: 404"),
    ("/callable", "GET", "", "class-level exposed = True instance"),
    ("/callable/notexposed", "GET", "", "exposed instance swallows the rest"),
    ("/plain", "GET", "", "expose on a plain function"),
    ("/blog/2024/05/", "GET", "", "popargs"),
    ("/blog/2024/05", "GET", "", "popargs index without slash: 301"),
    ("/items/42/", "GET", "", "_cp_dispatch"),
    ("/strict/", "GET", "", "extra trailing slash: 301"),
    ("/strict", "GET", "", "trailing_slash.extra without slash"),
    ("/static/css/site.css", "GET", "", "staticdir with root"),
    ("/static/logo.PNG", "GET", "", "content_types hit (case-sensitive)"),
    ("/static/logo.png", "GET", "", "content_types miss on case: mimetypes"),
    ("/static/data.weird", "GET", "", "content_types custom extension"),
    ("/static/", "GET", "", "staticdir index file"),
    ("/static", "GET", "", "staticdir index without slash: 301"),
    ("/static/nope.css", "GET", "", "staticdir miss falls through: 404"),
    ("/static/css/site.css", "POST", "", "staticdir only for GET/HEAD"),
    ("/rel/x", "GET", "", "relative staticdir without root: 500"),
    ("/missing/x", "GET", "", "missing static directory"),
    ("/one.txt", "GET", "", "staticfile with root"),
    ("/favicon.ico", "GET", "", "the favicon handler tree.mount adds"),
    ("/def/anything/here", "GET", "", "default takes the rest"),
    ("/def/site.css", "GET", "", "app-wide staticdir before default"),
    ("/def/nothere.css", "GET", "", "staticdir miss falls through to default"),
    ("/def/exact", "GET", "", "exact beats default"),
    ("/def/", "GET", "", "index beside default"),
    ("/def", "GET", "", "mounted app without slash: 301"),
    ("/api/x/y", "GET", "", "MethodDispatcher GET with path args"),
    ("/api/x", "DELETE", "", "MethodDispatcher: 405"),
    ("/api/x", "POST", "", "MethodDispatcher POST, signature mismatch"),
    ("/api/", "POST", "", "MethodDispatcher POST"),
    ("/widgets/", "GET", "", "per-path MethodDispatcher under a default app: GET"),
    ("/widgets/9", "PUT", "", "per-path MethodDispatcher: PUT with a path argument"),
    ("/widgets/", "DELETE", "", "per-path MethodDispatcher: 405"),
    ("/gadgets/", "GET", "", "per-path MethodDispatcher, resource not exposed: 404"),
    ("/vhost/", "GET", "d1.example", "Host header picks virtual host 1"),
    ("/vhost/", "GET", "d2.example", "Host header picks virtual host 2"),
    ("/vhost/", "GET", "other.example", "unknown host: no prefix"),
    ("/r/things", "GET", "", "RoutesDispatcher route"),
    ("/r/things/7", "GET", "", "RoutesDispatcher route with a variable"),
    ("/r/nothing", "GET", "", "RoutesDispatcher no match: 404"),
    ("/nowhere/at/all", "GET", "", "nothing on the root app: 404"),
    ("/trap/boom", "GET", "", "a raising property: 500"),
    ("/me/me/index", "GET", "", "a cycle in the tree"),
]


def test_agreement_table(routing: RoutingTarget) -> None:
    pytest.importorskip("routes")
    # GIVEN the running app WHEN every URL is resolved and also requested for real
    rows = []
    for path, method, host, what in AGREEMENT:
        verdict = resolve(routing, path, method, host)["verdict"]
        status, content_type = real(routing, path, method, host)
        if verdict["decided_by"] == "handler":
            # A handler decides its own status: the resolver claims none (this app's handlers
            # all answer 200 when called)
            agree = verdict["status"] is None and status == 200
        else:
            agree = verdict["status"] == status
        if agree and verdict["kind"] == "static":
            agree = content_type.split(";")[0] == verdict["static"]["mime"].split(";")[0]
        rows.append((agree, path, method, host, what, verdict["status"], status, verdict["kind"]))
    # THEN every row agrees
    assert len(rows) >= 40
    assert [r for r in rows if not r[0]] == []


def test_resolve_details(routing: RoutingTarget) -> None:
    body = resolve(routing, "/admin/users/show/7")
    verdict = body["verdict"]
    assert verdict["kind"] == "handler" and verdict["decided_by"] == "handler"
    assert verdict["status"] is None
    assert verdict["verdict"] == "Users.show handles it; the handler decides the status"
    assert verdict["handler"]["qualname"].endswith("Users.show")
    assert verdict["handler"]["args"] == ["'7'"]
    assert verdict["handler"]["file"].endswith("routing_app.py") and verdict["handler"]["line"]
    assert any("admin found" in s for s in body["steps"])

    hidden = resolve(routing, "/admin/hidden")
    assert hidden["verdict"]["status"] == 404
    assert any("hidden found, not exposed ✗" in s for s in hidden["steps"])

    mismatch = resolve(routing, "/page/home?bogus=1")["verdict"]
    assert "bogus" in mismatch["reason"]

    redirect = resolve(routing, "/admin?x=1")["verdict"]
    assert redirect["status"] == 301 and redirect["location"] == "/admin/?x=1"
    # a secret in the query is redacted where the answer echoes it (path, redirect location)
    secret = resolve(routing, "/admin?x=1&token=s3cret")
    assert secret["path"] == "/admin?x=1&token=***"
    assert secret["verdict"]["location"] == "/admin/?x=1&token=***"
    assert "s3cret" not in str(secret)

    static = resolve(routing, "/static/logo.PNG")["verdict"]
    assert static["static"]["file"] == str(routing.static / "logo.PNG")
    assert static["static"]["mime"] == "image/x-upper"

    favicon = resolve(routing, "/favicon.ico")["verdict"]
    assert favicon["kind"] == "static" and favicon["static"]["file"].endswith("favicon.ico")

    assert resolve(routing, "/wsgi/x")["verdict"]["kind"] == "wsgi"
    status, body = agent_get(routing.socket_path(), "/v1/resolve")
    assert status == 400


def test_routes_tree(routing: RoutingTarget) -> None:
    status, body = agent_get(routing.socket_path(), "/v1/routes")
    assert status == 200 and body["errors"] == []
    apps = {a["script_name"]: a for a in body["apps"]}
    assert apps["/api"]["dispatcher"] == "MethodDispatcher"
    assert apps["/api"]["nodes"][0]["methods"] == ["GET", "POST"]
    assert apps["/vhost"]["dispatcher"] == "VirtualHost"
    assert apps["/vhost"]["dispatcher_detail"]["domains"] == {
        "d1.example": "/d1",
        "d2.example": "/d2",
    }
    assert apps["/wsgi"]["kind"] == "wsgi"
    if "/r" in apps:
        assert [r["path"] for r in apps["/r"]["routes"]] == ["/things", "/things/{id}"]
    nodes = {n["path"]: n for n in apps[""]["nodes"]}
    # an unexposed method nothing dispatches to: said so, not warned about (the finding warns
    # when a request hits it); dispatchers: tests/integration/test_dispatch_routes.py
    assert nodes["/admin/hidden"]["kind"] == "unexposed"
    assert (
        nodes["/admin/hidden"]["warnings"] == [] and nodes["/admin/hidden"]["reached_via"] is None
    )
    assert nodes["/alias2"]["alias_of"] == "alias1"
    assert nodes["/blog"]["popargs"] == ["year", "month"]
    assert nodes["/items"]["dynamic"] is True
    assert nodes["/trap/boom"]["kind"] == "property"  # listed, never evaluated
    assert nodes["/trap/boom"]["warnings"] == []  # nothing wrong with having one (CherryMusic)
    assert nodes["/page"]["signature"] == "(self, name, size='10')"
    assert "/me" not in nodes  # the cycle back to the root is walked once
    users = nodes["/admin/users"]  # a class without __init__ is located by its methods
    assert users["file"].endswith("routing_app.py") and users["line"]
    # a per-path MethodDispatcher: verbs are methods of the resource, not unexposed handlers
    assert nodes["/widgets"]["methods"] == ["GET", "PUT"] and nodes["/widgets"]["warnings"] == []
    assert "/widgets/GET" not in nodes
    assert nodes["/gadgets"]["warnings"] == [
        "would 404: has HTTP verbs but the object is not exposed (exposed = True)"
    ]
    static = {(s["path"], s["kind"]): s for s in apps[""]["static"]}
    assert static[("/static", "staticdir")]["exists"] is True
    assert static[("/static", "staticdir")]["content_types"]["PNG"] == "image/x-upper"
    assert any("without root" in w for w in static[("/rel", "staticdir")]["warnings"])
    assert static[("/missing", "staticdir")]["exists"] is False
    assert apps["/def"]["static"][0]["file_count"] == 1


def test_cli_routes_and_resolve(routing: RoutingTarget) -> None:
    from tests.helpers import load_json, run_cli

    text = run_cli("routes", str(routing.pid))
    assert text.returncode == 0, text.stderr
    assert "/admin/hidden" in text.stdout and "MethodDispatcher" in text.stdout
    assert "would 404: not exposed" not in text.stdout
    res = run_cli("resolve", str(routing.pid), "/admin/users/show/7", "--json")
    assert res.returncode == 0, res.stderr
    assert load_json(res.stdout)["handler"].endswith("Users.show")
    vhost = run_cli("resolve", str(routing.pid), "/vhost/", "--host", "d2.example")
    assert "Dom2.index" in vhost.stdout


def test_resolve_is_abandoned_past_its_time_limit_and_the_agent_keeps_serving(
    routing: RoutingTarget,
) -> None:
    # GIVEN a _cp_dispatch that sleeps 4 s WHEN it is resolved
    body = resolve(routing, "/slow/x")
    # THEN the answer comes while the user code still runs (the next resolution finds that
    # thread busy), saying it was abandoned
    assert body["abandoned"] is True and body["verdict"]["kind"] == "abandoned"
    # AND while that thread still runs, the next resolution is refused, the rest still answers
    assert resolve(routing, "/")["verdict"]["kind"] == "busy"
    assert agent_get(routing.socket_path(), "/v1/info")[0] == 200
    wait_for(lambda: resolve(routing, "/")["verdict"]["kind"] == "handler", timeout=10)


def test_tools_in_effect_agree_with_cherrypys_own_merge(routing: RoutingTarget) -> None:
    """The details pane merges config statically; CherryPy's dispatcher merges it for real.

    For every exposed handler of the default-dispatched apps, the tools the pane shows (global
    tools, app config sections and ``_cp_config`` from the root down) must equal the tools the
    resolver read from the private request's merged ``request.config``.
    """
    from cpinspect.formatting import effective_config, tools_in_effect
    from cpinspect.sources.agent import AgentSource

    source = AgentSource(routing.socket_path())
    try:
        snapshot = source.routes()
        compared = 0
        seen: Dict[str, List[str]] = {}
        for app in snapshot.apps:
            if app.dispatcher != "default":
                continue
            for node in app.nodes:
                if not node.exposed or node.kind not in ("handler", "index"):
                    continue
                if any(mount.path == node.path for mount in app.static):
                    continue
                url = app.script_name.rstrip("/") + node.path
                res = source.resolve(url, "GET", "127.0.0.1")
                if res.kind != "handler":
                    continue
                shown = tools_in_effect(effective_config(app, node, snapshot.global_tools))
                assert shown == list(res.tools), (url, shown, res.tools)
                compared += 1
                seen[url] = shown
        assert compared >= 10
        # AND the layers show: the object's _cp_config, a handler's own, app.config over both
        assert {"gzip", "sessions"} <= set(seen["/account/index"])
        assert "json_out" in seen["/account/profile"]
        assert "gzip" not in seen["/account/export"] and "encode" not in seen["/account/export"]
    finally:
        source.close()


def test_the_trail_shows_the_lookup_the_default_dispatcher_performs(routing: RoutingTarget) -> None:
    # WHEN / is resolved on a default-dispatched root with an exposed index
    steps = resolve(routing, "/")["steps"]
    # THEN the trail has the index CherryPy appends to every path, and picks it
    assert steps[-3:] == [
        "root.index found, exposed ✓ (CherryPy looks up index at the end of every path)",
        "CherryPy picks root.index (the path's index)",
        "handler __main__.Root.index()",
    ], steps
    # AND a default that takes the rest is named as CherryPy's pick
    steps = resolve(routing, "/def/anything/here")["steps"]
    assert (
        "CherryPy picks root.default (a default exposed on the way takes the rest): "
        "'anything', 'here' passed as arguments" in steps
    ), steps
    # AND an unexposed method on the way: nothing picked
    assert "nothing exposed on the way: no handler ✗" in resolve(routing, "/admin/hidden")["steps"]
    assert real(routing, "/")[0] == 200 and real(routing, "/admin/hidden")[0] == 404


def test_the_favicon_handler_is_shown_at_the_url_that_serves_it(routing: RoutingTarget) -> None:
    from tests.helpers import run_cli

    # GIVEN the favicon_ico tree.mount put on a default-dispatched root: both spellings serve it
    assert real(routing, "/favicon.ico") == real(routing, "/favicon_ico")
    assert real(routing, "/favicon.ico")[0] == 200
    # WHEN the routes are printed
    text = run_cli("routes", str(routing.pid))
    assert text.returncode == 0, text.stderr
    # THEN the node and its mount are shown by the URL one types
    lines = text.stdout.splitlines()
    assert [ln.split()[:3] for ln in lines if "favicon" in ln and "static" in ln.split()[2:3]] == [
        ["✓", "/favicon.ico", "static"]
    ]
    assert any(ln.startswith("  static staticfile /favicon.ico → ") for ln in lines)
    assert "favicon_ico" not in text.stdout
    # AND resolving it agrees
    assert resolve(routing, "/favicon.ico")["verdict"]["kind"] == "static"
