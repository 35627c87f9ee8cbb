"""An app shaped like Salt's ``rest_cherrypy`` (``tests/apps/wrapped_app.py``, a real CherryPy
process): its own tool replaces every request's handler by one wrapper function, and sessions
are turned on only in the handler objects' own ``_cp_config``.

Seen on salt-api 3008.4: every busy worker and every access record was named
``hypermedia_handler``, and ``cpinspect sessions`` said "no mounted app has tools.sessions.on"
while a logged-in user's session sat in the store.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import urlencode

import httpx
import pytest

from cpinspect.protocol import snapshots_from_document
from tests.conftest import wait_for
from tests.helpers import agent_get, run_cli, spawn_ready

SECRET = "SALTY-SECRET-6fz"


class Wrapped:
    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.url = "http://127.0.0.1:%d" % port
        self.session_id = ""
        self.results: List[Any] = []

    def socket(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wrapped]:
    """GIVEN the app with one user logged in and a request held in GET /slow"""
    log: Path = tmp_path_factory.mktemp("wrapped") / "app.log"
    with spawn_ready(["-m", "tests.apps.wrapped_app"], log, "wrapped app") as m:
        app = Wrapped(int(m.group(1)), int(m.group(2)))
        r = httpx.post(app.url + "/login", params={"user": "dana", "secret": SECRET}, timeout=10)
        assert r.status_code == 200 and r.text == "logged in", r.text
        app.session_id = str(r.cookies["session_id"])

        def slow() -> None:
            app.results.append(httpx.get(app.url + "/slow", timeout=90).status_code)

        thread = threading.Thread(target=slow, daemon=True)
        thread.start()

        def held() -> bool:
            _, body = agent_get(app.socket(), "/v1/threads")
            return any((t.get("request") or {}).get("path") == "/slow" for t in body["threads"])

        wait_for(held, timeout=15, what="GET /slow in a worker")
        try:
            yield app
        finally:
            httpx.get(app.url + "/release", timeout=10)
            thread.join(30)
    assert app.results == [200]


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=90, stdin=subprocess.DEVNULL)


def test_a_busy_worker_is_named_after_the_page_handler_not_the_wrapper(wrapped: Wrapped) -> None:
    # WHEN the threads are dumped
    result = cli("dump", str(wrapped.pid), "--json")
    assert result.returncode == 0, result.stderr
    [snapshot] = snapshots_from_document(json.loads(result.stdout))
    assert snapshot.threads is not None
    busy = [t for t in snapshot.threads.threads if t.request and t.request.path == "/slow"]
    # THEN the request's handler is the page handler the wrapper calls
    assert len(busy) == 1 and busy[0].request is not None
    assert str(busy[0].request.handler).endswith("Slow.GET"), busy[0].request


def test_an_access_record_is_named_after_the_page_handler(wrapped: Wrapped) -> None:
    # WHEN the agent's log ring is read
    status, body = agent_get(wrapped.socket(), "/v1/log?after=0")
    assert status == 200, body
    access: List[Dict[str, Any]] = [
        r
        for r in body["records"]
        if r["logger"].startswith("cherrypy.access") and r["request"]["path"] == "/login"
    ]
    # THEN the login's access record names Login.POST
    assert access and access[0]["request"]["handler"].endswith("Login.POST"), access


def test_sessions_turned_on_in_a_handlers_cp_config_are_found(wrapped: Wrapped) -> None:
    # WHEN `cpinspect sessions PID` runs
    text = cli("sessions", str(wrapped.pid))
    doc = cli("sessions", str(wrapped.pid), "--json")
    # THEN it finds the app's RAM store, from the handler objects' _cp_config, with the session
    assert text.returncode == 0 and doc.returncode == 0, text.stderr + doc.stderr
    assert "no mounted app has tools.sessions.on" not in text.stdout
    assert "app '/' · RAM · 1 session" in text.stdout, text.stdout
    (where,) = [ln for ln in text.stdout.splitlines() if ln.startswith("  switched on in  ")]
    assert "/login's _cp_config, " in where, text.stdout
    app = json.loads(doc.stdout)["apps"][0]
    assert app["page"]["total"] == 1
    assert any("_cp_config /" in w for w in app["where"]), app["where"]
    assert app["storage_class"].endswith("AppRamSession"), app
    # AND neither the session id nor the value stored in it is printed
    for out in (text.stdout, text.stderr, doc.stdout, doc.stderr):
        assert wrapped.session_id not in out
        assert SECRET not in out


def test_routes_skip_the_interpreters_own_classes_held_by_a_handler(wrapped: Wrapped) -> None:
    # WHEN `cpinspect routes PID --json` runs on a tree whose handler object holds `dict` and
    # `types.FunctionType`
    result = cli("routes", str(wrapped.pid), "--json")
    # THEN the app's routes come whole, with no error
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [app] = doc["apps"]
    assert not doc["errors"] and not app["errors"], (doc["errors"], app["errors"])
    paths = {n["path"]: n for n in app["nodes"]}
    assert paths["/login"]["exposed"] and paths["/slow"]["exposed"]
    # AND neither class is walked: no dict method is listed as a property of user code
    assert not [p for p in paths if p.startswith(("/login/mod_dict_class", "/login/function_type"))]
    assert not [n for n in app["nodes"] if n["qualname"].startswith("builtins.")]


def resolved(wrapped: Wrapped, path: str) -> Dict[str, Any]:
    query = urlencode({"path": path, "method": "GET", "host": "127.0.0.1"})
    status, body = agent_get(wrapped.socket(), "/v1/resolve?" + query)
    assert status == 200, body
    return body


def test_no_app_tool_is_named_as_the_one_that_answers_401(wrapped: Wrapped) -> None:
    # GIVEN /minions guarded by app tools in Salt's order: html_override first (harmless), then
    # app_auth (401 without a token)
    assert httpx.get(wrapped.url + "/minions", timeout=10).status_code == 401
    token = {"X-Auth-Token": "t"}
    assert httpx.get(wrapped.url + "/minions", headers=token, timeout=10).status_code == 200
    # WHEN it is resolved
    verdict = resolved(wrapped, "/minions")["verdict"]
    # THEN every tool that runs before the handler is listed, none blamed for a status
    assert verdict["guards"] == ["html_override", "app_auth", "hypermedia_out"]
    assert verdict["status"] is None
    assert verdict["verdict"] == (
        "3 tools run before the handler, any of which may answer instead: html_override, "
        "app_auth, hypermedia_out; otherwise: Minions.GET handles it; the handler decides the "
        "status"
    )
    # AND the CLI's headline says the same, with no guessed 401/403
    res = cli("resolve", str(wrapped.pid), "/minions")
    assert res.returncode == 0, res.stderr
    head = res.stdout.splitlines()[0]
    assert "3 tools run before the handler, any of which may answer instead" in head, head
    assert "401" not in head and "runs first" not in head


def test_the_trail_of_slash_shows_the_index_the_method_dispatcher_uses(wrapped: Wrapped) -> None:
    # GIVEN a MethodDispatcher root that is not exposed and has no GET, and an exposed index
    assert httpx.get(wrapped.url + "/", timeout=10).text == "welcome"
    # WHEN / is resolved
    body = resolved(wrapped, "/")
    # THEN the trail is CherryPy's: index looked up after the (empty) path, picked, its GET
    steps = body["steps"]
    assert steps[-4:] == [
        "root.index found, exposed ✓ (CherryPy looks up index at the end of every path)",
        "CherryPy picks root.index (the path's index)",
        "root.index.GET found ✓",
        "handler __main__.Index.GET()",
    ], steps
    assert not any(step.startswith("root.GET") for step in steps)
    assert body["verdict"]["handler"]["qualname"].endswith("Index.GET")


def test_helpers_fold_and_a_forgotten_expose_stands_out(wrapped: Wrapped) -> None:
    # WHEN `cpinspect routes PID` runs, and with --all, and --json
    text = cli("routes", str(wrapped.pid))
    every = cli("routes", str(wrapped.pid), "--all")
    doc = cli("routes", str(wrapped.pid), "--json")
    assert text.returncode == every.returncode == doc.returncode == 0, text.stderr + every.stderr
    lines = text.stdout.splitlines()
    # THEN a helper object with nothing exposed below is one line, its insides not listed
    (auth,) = [ln for ln in lines if ln.split()[:1] == ["/login/auth"]]
    assert "object, nothing exposed below (12 methods, 1 object)" in auth, auth
    (event,) = [ln for ln in lines if ln.split()[:1] == ["/hook/event"]]
    assert "object, nothing exposed below (5 methods)" in event, event
    assert not [ln for ln in lines if "/login/auth/" in ln or "/hook/event/" in ln]
    # AND helper methods under the MethodDispatcher (never called, exposed or not) and the
    # methods a stdlib base gives are counted on their object's line, not listed
    assert "exec_lowstate" not in text.stdout and "/legacy/items" not in text.stdout
    (legacy,) = [ln for ln in lines if ln.split()[:1] == ["/legacy"]]
    assert "+4 not exposed (--all)" in legacy, legacy
    # AND the forgotten @cherrypy.expose under the default dispatcher stands out
    (summary,) = [ln for ln in lines if "/legacy/summary" in ln]
    assert summary.split()[1:3] == ["not", "exposed"]
    assert summary.endswith("← a forgotten @cherrypy.expose? (its object has exposed handlers)")
    assert "· 27 not listed (--all lists them)" in lines[-1], lines[-1]
    # AND --all lists everything, a stdlib method never as a forgotten expose
    (get,) = [ln for ln in every.stdout.splitlines() if ln.split()[:1] == ["/login/auth/auth/get"]]
    assert "not exposed" in get and "forgotten" not in get
    assert "/login/exec_lowstate" in every.stdout
    assert every.stdout.count("forgotten @cherrypy.expose") == 1
    # AND the JSON carries every node, each marked app code or not
    nodes = {n["path"]: n for n in json.loads(doc.stdout)["apps"][0]["nodes"]}
    assert len(nodes) == 41
    assert nodes["/legacy/summary"]["app_code"] is True
    assert nodes["/login/auth/auth/get"]["app_code"] is False  # from _collections_abc
    assert nodes["/hook/event/wait"]["app_code"] is False  # threading.py
    # AND that is what the app answers: the forgotten one 404s, its siblings answer
    assert httpx.get(wrapped.url + "/legacy/summary", timeout=10).status_code == 404
    assert httpx.get(wrapped.url + "/legacy/report", timeout=10).status_code == 200


def test_the_favicon_is_shown_at_its_url_and_said_never_to_serve(wrapped: Wrapped) -> None:
    # GIVEN the favicon_ico tree.mount put on the root, under a MethodDispatcher: both
    # spellings answer 405
    for url in ("/favicon.ico", "/favicon_ico"):
        assert httpx.get(wrapped.url + url, timeout=10).status_code == 405
    # WHEN the routes and the resolution of /favicon.ico are printed
    text = cli("routes", str(wrapped.pid)).stdout
    res = cli("resolve", str(wrapped.pid), "/favicon.ico").stdout
    # THEN it is shown as the URL one types, and said never to serve
    assert "/favicon_ico" not in text
    (node,) = [ln for ln in text.splitlines() if ln.split()[:2] == ["✓", "/favicon.ico"]]
    assert node.split()[2] == "static"
    never = "never serves: under a MethodDispatcher CherryPy calls its GET, which a handler "
    assert "      · " + never + "function lacks (405)" in text
    (mount,) = [ln for ln in text.splitlines() if "static staticfile /favicon.ico → " in ln]
    assert never in mount
    assert res.splitlines()[0].endswith("otherwise: method not allowed (405)")
    assert "a MethodDispatcher never serves it" in res
