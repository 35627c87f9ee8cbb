"""Routes without noise and an honest resolver, on a real CherryPy process (dispatch_app).

The case comes from a real application on PyPI: 40 ``api_<action>`` methods reached through one
exposed ``api(self, *args, **kwargs)`` were 40 warnings in the Routes tab, hiding the one real
forgotten ``@cherrypy.expose``; and the resolver said "→ 200" for a handler that answers 401 and
for a static file a custom auth tool answers 403 for. Every verdict here is checked against what
the app really answers over HTTP.
"""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import urlencode

import pytest

from tests.helpers import agent_get, spawn_ready


class DispatchTarget:
    def __init__(self, port: int, pid: int, files: Path) -> None:
        self.port = port
        self.pid = pid
        self.files = files

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatchTarget]:
    tmp = tmp_path_factory.mktemp("dispatch")
    args = ["-m", "tests.apps.dispatch_app", str(tmp / "files")]
    with spawn_ready(args, tmp / "target.log", "dispatch app", timeout=20) as m:
        yield DispatchTarget(int(m.group(1)), int(m.group(2)), tmp / "files")


@pytest.fixture(scope="module")
def nodes(target: DispatchTarget) -> Dict[str, Dict[str, Any]]:
    status, body = agent_get(target.socket_path(), "/v1/routes")
    assert status == 200 and body["errors"] == [], body
    (app,) = body["apps"]
    return {n["path"]: n for n in app["nodes"]}


def verdict_of(target: DispatchTarget, path: str) -> Dict[str, Any]:
    query = urlencode({"path": path, "method": "GET", "host": "127.0.0.1"})
    status, body = agent_get(target.socket_path(), "/v1/resolve?" + query)
    assert status == 200, body
    return dict(body["verdict"])


def real(target: DispatchTarget, path: str, login: bool = False) -> Tuple[int, str]:
    status, body = real_bytes(target, path, login)
    return status, body.decode(errors="replace")


def real_bytes(target: DispatchTarget, path: str, login: bool = False) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        headers = {"X-Login": "yes"} if login else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_forty_api_methods_behind_one_dispatcher_are_internal_and_not_warned_about(
    nodes: Dict[str, Dict[str, Any]],
) -> None:
    # GIVEN the app's tree as the agent reads it
    api = [n for path, n in nodes.items() if path.startswith("/api_")]
    # THEN the 40 api_<action> methods are internal, reached through Root.api
    assert len(api) == 40
    assert {n["kind"] for n in api} == {"internal"}
    assert {n["reached_via"] for n in api} == {"__main__.Root.api"}
    # AND a table of bound methods and an exposed default reach theirs the same way
    assert nodes["/table/do_ping"]["reached_via"] == "__main__.Table.call"
    assert nodes["/pages/render"]["reached_via"] == "__main__.Pages.default"
    # AND the real forgotten @cherrypy.expose is unexposed, reached by nothing
    summary = nodes["/reports/summary"]
    assert summary["kind"] == "unexposed" and summary["reached_via"] is None
    # AND no node carries a warning (the forgotten-expose finding warns when a request hits it)
    assert [(p, n["warnings"]) for p, n in nodes.items() if n["warnings"]] == []


def test_what_the_internal_methods_really_answer(target: DispatchTarget) -> None:
    # internal: reached through the dispatcher, not at their own URL (which 404s)
    assert real(target, "/api/action07") == (200, "did action07")
    assert real(target, "/table/call/ping") == (200, "pong")
    assert real(target, "/pages/render") == (200, "page render")
    assert real(target, "/reports/summary")[0] == 404


# (path, decided_by, status the resolver claims, what the app answers without a login)
VERDICTS = [
    ("/account", "handler", None, 401),
    ("/api/action03", "handler", None, 200),
    ("/pages/render", "handler", None, 200),
    ("/private", "tool:myauth", None, 403),
    ("/files/song.txt", "tool:myauth", None, 403),
    ("/files/nope.txt", "tool:myauth", None, 403),
    ("/basic", "tool:auth_basic", None, 401),
    ("/reports/summary", None, 404, 404),
    ("/nowhere", None, 404, 404),
]


@pytest.mark.parametrize("path, decided_by, claimed, answered", VERDICTS)
def test_the_resolver_names_who_decides_the_status(
    target: DispatchTarget,
    path: str,
    decided_by: Optional[str],
    claimed: Optional[int],
    answered: int,
) -> None:
    # WHEN the path is resolved, and requested for real
    verdict = verdict_of(target, path)
    status, _body = real(target, path)
    # THEN a status is claimed only where the resolver knows it, and then it is the real one
    assert (verdict["decided_by"], verdict["status"]) == (decided_by, claimed), verdict
    assert status == answered
    if claimed is not None:
        assert claimed == status


def test_the_verdict_sentences(target: DispatchTarget) -> None:
    account = verdict_of(target, "/account")
    assert account["verdict"] == "Root.account handles it; the handler decides the status"
    # a custom tool hooked before the handler, switched on by a decorator
    private = verdict_of(target, "/private")
    assert private["guards"] == ["myauth"]
    # (what an app's tool answers is not known: no status is guessed for it)
    assert private["verdict"].startswith(
        "tool myauth runs first (before_handler, priority 50) and may answer itself; otherwise"
    )
    assert private["verdict"].endswith(
        "otherwise: Root.private handles it; the handler decides the status"
    )
    # the same tool on a static directory (app config)
    static = verdict_of(target, "/files/song.txt")
    assert static["kind"] == "static" and static["static"]["file"].endswith("song.txt")
    assert (
        "tool myauth" in static["verdict"]
        and "served by tools.staticdir (200)" in static["verdict"]
    )
    # CherryPy's own auth_basic says what it answers
    basic = verdict_of(target, "/basic")
    assert "tool auth_basic runs first (before_handler, priority 1)" in basic["verdict"]
    assert "(401 without credentials)" in basic["verdict"]
    # a status the resolver knows
    assert verdict_of(target, "/nowhere")["verdict"] == "no exposed handler on this path (404)"
    # AND with the login the guarded paths answer (the tool was the one deciding)
    assert real(target, "/private", login=True) == (200, "private")
    assert real(target, "/files/song.txt", login=True) == (200, "la la la\n")


def test_cli_routes_and_resolve_say_it(target: DispatchTarget) -> None:
    from tests.helpers import run_cli

    text = run_cli("routes", str(target.pid))
    assert text.returncode == 0, text.stderr
    assert (
        "/api_action00                  internal (reached as /api/action00 through Root.api)"
        in text.stdout
    )
    assert "/reports/summary               not exposed" in text.stdout
    assert "9 exposed, 43 internal, 1 not exposed · 0 warnings" in text.stdout
    assert "⚠" not in text.stdout
    res = run_cli("resolve", str(target.pid), "/files/song.txt")
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert first.startswith("GET /files/song.txt (Host localhost) → static: tool myauth runs")
    assert "→ 200" not in res.stdout


def test_an_internal_method_names_the_url_that_reaches_it(
    target: DispatchTarget, nodes: Dict[str, Dict[str, Any]]
) -> None:
    # GIVEN methods reached through a dispatcher (CherryMusic's api_adduser is /api/adduser)
    # THEN each names the path a request takes to it: the name without its prefix, or the
    # table's key, as the segment after the dispatcher; a default's at its own path: none
    assert nodes["/api_action07"]["reached_at"] == "/api/action07"
    assert nodes["/table/do_ping"]["reached_at"] == "/table/call/ping"
    assert nodes["/pages/render"]["reached_at"] is None
    # AND that is what the app answers there, while the method's own path is a 404
    assert real(target, "/api/action07") == (200, "did action07")
    assert real(target, "/table/call/ping") == (200, "pong")
    assert real(target, "/api_action07")[0] == 404
    assert real(target, "/table/do_ping")[0] == 404
    # AND the resolver says the segment is the dispatcher's argument, not a missing node
    query = urlencode({"path": "/api/action07", "method": "GET", "host": "127.0.0.1"})
    _status, body = agent_get(target.socket_path(), "/v1/resolve?" + query)
    assert (
        "root.api has no action07: 'action07' and what follows are passed to root.api as "
        "arguments" in body["steps"]
    )
    assert not any("not found ✗" in step for step in body["steps"])


def test_a_config_staticfile_answers_before_the_favicon_handler(target: DispatchTarget) -> None:
    import cherrypy

    from tests.helpers import run_cli

    ours = (target.files / "app-favicon.ico").read_bytes()
    cherrypys = (Path(cherrypy.__file__).parent / "favicon.ico").read_bytes()
    # GIVEN config '/favicon.ico' switching tools.staticfile on (the app's icon) and the
    # favicon_ico handler tree.mount put on the root (CherryPy's icon)
    # WHEN /favicon.ico is resolved
    verdict = verdict_of(target, "/favicon.ico")
    query = urlencode({"path": "/favicon.ico", "method": "GET", "host": "127.0.0.1"})
    steps = agent_get(target.socket_path(), "/v1/resolve?" + query)[1]["steps"]
    # THEN the tool serves the app's file, and the handler is named as never called
    assert verdict["kind"] == "static" and verdict["static"]["file"] == str(
        target.files / "app-favicon.ico"
    )
    assert verdict["handler"] is None
    assert any("is never called: tools.staticfile answers first" in step for step in steps)
    # AND that is what the app answers: its icon at /favicon.ico, CherryPy's at /favicon_ico only
    assert real_bytes(target, "/favicon.ico") == (200, ours)
    assert real_bytes(target, "/favicon_ico") == (200, cherrypys)
    favicon_ico = verdict_of(target, "/favicon_ico")
    assert favicon_ico["kind"] == "static" and favicon_ico["static"]["file"].endswith(
        "cherrypy/favicon.ico"
    )
    # AND the CLI says it: no handler line for /favicon.ico, the routes name who serves it
    res = run_cli("resolve", str(target.pid), "/favicon.ico")
    assert res.returncode == 0, res.stderr
    assert "  handler " not in res.stdout and "app '/' (root" in res.stdout
    routes = run_cli("routes", str(target.pid))
    assert routes.returncode == 0, routes.stderr
    assert (
        "      · /favicon.ico is served by tools.staticfile (config '/favicon.ico': %s), not by "
        "this handler, which answers /favicon_ico only" % (target.files / "app-favicon.ico")
    ) in routes.stdout
    (line,) = [ln for ln in routes.stdout.splitlines() if "staticfile /favicon_ico" in ln]
    assert line.endswith(
        "· answers /favicon_ico only: the staticfile of config '/favicon.ico' serves /favicon.ico"
    )


def test_the_root_app_is_spelled_one_way(target: DispatchTarget) -> None:
    from tests.helpers import run_cli

    # GIVEN the app mounted at the root (CherryPy's script_name '')
    # WHEN routes and resolve print it THEN both say '/', never ''
    routes = run_cli("routes", str(target.pid))
    res = run_cli("resolve", str(target.pid), "/account")
    assert routes.returncode == 0 and res.returncode == 0, (routes.stderr, res.stderr)
    assert routes.stdout.startswith("app '/'  cherrypy")
    assert "· app '/' (root __main__.Root), path_info '/account'" in res.stdout
    assert "app ''" not in routes.stdout + res.stdout


def test_static_directories_count_files_and_folders_apart(target: DispatchTarget) -> None:
    from tests.helpers import run_cli

    # GIVEN /media holding one folder (an artist) and /res two files and a folder
    status, body = agent_get(target.socket_path(), "/v1/routes")
    assert status == 200
    static = {m["path"]: m for m in body["apps"][0]["static"]}
    # THEN the agent counts them apart
    assert (static["/media"]["file_count"], static["/media"]["dir_count"]) == (0, 1)
    assert (static["/res"]["file_count"], static["/res"]["dir_count"]) == (2, 1)
    # AND the CLI says so (not "1 file" for a folder)
    routes = run_cli("routes", str(target.pid)).stdout
    assert "staticdir /media → %s (exists, 1 directory)" % (target.files / "media") in routes
    assert "staticdir /res → %s (exists, 2 files, 1 directory)" % (target.files / "res") in routes
    assert "staticdir /files → %s (exists, 2 files, 2 directories)" % target.files in routes


def test_resolve_says_how_the_path_was_answered_lately(target: DispatchTarget) -> None:
    from tests.helpers import run_cli

    # GIVEN a path the app's own auth tool answers 403 without a login (which the routes can
    # only call possible: the tool is code nobody read), asked twice
    path = "/files/asked-twice.txt"
    assert [real(target, path)[0] for _ in range(2)] == [403, 403]
    # WHEN it is resolved
    res = run_cli("resolve", str(target.pid), path + "?x=1")
    # THEN the verdict names the tool that may answer, and the next line what it did answer,
    # read from the agent's access records of that path (the query is no part of the match)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("GET %s?x=1 (Host localhost) → not_found: tool myauth runs" % path)
    # (and that this is not the 404 the dispatch gives once the tool lets a request through)
    assert re.fullmatch(
        r"  answered lately: 403 ×2; last 403 at \d\d:\d\d:\d\d \(in the agent's log\) — not the "
        r"404 of the dispatch: one of the tools that run first answers instead",
        lines[-1],
    ), res.stdout
    # AND --json carries the same counts
    as_json = run_cli("resolve", "--json", str(target.pid), path)
    assert as_json.returncode == 0, as_json.stderr
    answered = json.loads(as_json.stdout)["answered"]
    assert answered["statuses"] == [{"status": 403, "count": 2}]
    assert answered["records_held"] >= 2
    # AND a path nobody asked for says so, where the routes give 404
    never = run_cli("resolve", str(target.pid), "/never-asked")
    assert never.returncode == 0, never.stderr
    assert never.stdout.splitlines()[0].endswith("→ 404 not_found: no exposed handler on this path")
    assert re.fullmatch(
        r"  answered lately: no GET /never-asked in the agent's log \(its last [\d,]+ records "
        r"of any kind\)",
        never.stdout.splitlines()[-1],
    ), never.stdout
    # AND one asked, whose routes status is what it got, has no disagreement to tell
    assert real(target, "/never-asked-before")[0] == 404
    once = run_cli("resolve", str(target.pid), "/never-asked-before")
    assert once.stdout.splitlines()[-1].startswith("  answered lately: 404 ×1; last 404 at ")
    assert "not the" not in once.stdout
