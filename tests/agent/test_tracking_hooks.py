"""The tracker's request hooks, run by CherryPy's own hook map on real in-process requests.

These tests serve real CherryPy requests in this process (``app.get_serving`` +
``Request.run``: no socket, no fakes) and check what the tracker sees during and after them,
that a failing request leaves nothing behind, that a broken hook body never reaches the
request, and that ``detach`` removes both hooks.
"""

from __future__ import annotations

import io
from typing import Any, Dict, Iterator, List

import pytest

from cpinspect.agent.tracking import END_POINT, START_POINT, RequestTracker

SCRIPT = "/tracking-hooks"


class Served:
    def __init__(self, app: Any, tracker: RequestTracker, seen: List[Dict[int, Any]]) -> None:
        self.app = app
        self.tracker = tracker
        self.seen = seen

    def request(self, path: str) -> int:
        from cherrypy.lib import httputil

        local = httputil.Host("127.0.0.1", 8080, "")
        remote = httputil.Host("10.1.2.3", 40123, "")
        req, resp = self.app.get_serving(local, remote, "http", "HTTP/1.1")
        try:
            req.run("GET", SCRIPT + path, "", "HTTP/1.1", [("Host", "127.0.0.1")], io.BytesIO())
            b"".join(resp.body)
            return int(str(resp.status).split()[0])
        finally:
            self.app.release_serving()


@pytest.fixture()
def served() -> Iterator[Served]:
    import cherrypy

    seen: List[Dict[int, Any]] = []
    tracker = RequestTracker()

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            seen.append(dict(tracker.inflight))
            return "ok"

        @cherrypy.expose
        def boom(self) -> str:
            raise ValueError("boom in the handler")

    cherrypy.config.update({"log.screen": False, "checker.on": False})
    app = cherrypy.tree.mount(Root(), SCRIPT, {"/": {"log.screen": False}})
    tracker.attach()
    try:
        yield Served(app, tracker, seen)
    finally:
        tracker.detach()
        cherrypy.tree.apps.pop(SCRIPT, None)


def ours(tracker: RequestTracker) -> List[Any]:
    from cherrypy import _cprequest

    hooks = _cprequest.Request.hooks
    callbacks = (tracker._on_start, tracker._on_end)
    return [h for p in (START_POINT, END_POINT) for h in hooks[p] if h.callback in callbacks]


def test_a_request_is_tracked_while_it_runs_and_counted_when_it_ends(served: Served) -> None:
    import threading

    import cherrypy

    # GIVEN the tracker attached to CherryPy's class-level hook map
    tracker = served.tracker
    # WHEN two requests are served on this thread
    assert served.request("/") == 200
    assert served.request("/") == 200
    # THEN during each, the table held this thread's own request and response ...
    me = threading.get_ident()
    assert len(served.seen) == 2
    for during in served.seen:
        assert list(during) == [me]
        request, response = during[me]
        assert isinstance(request, cherrypy._cprequest.Request)
        assert request.path_info == "/"
        assert isinstance(response, cherrypy._cprequest.Response)
    # ... and after them the table is empty, both counted, each with a duration
    assert tracker.inflight == {}
    assert tracker.requests_served() == 2
    stats = tracker.duration_stats()
    assert stats is not None and stats["count"] == 2 and stats["max"] >= 0.0


def test_a_failing_request_leaves_nothing_in_flight(served: Served) -> None:
    # GIVEN the tracker attached
    tracker = served.tracker
    # WHEN the handler raises (a 500)
    assert served.request("/boom") == 500
    # THEN the failsafe end hook still ran: nothing left in flight, the request counted
    assert tracker.inflight == {}
    assert tracker.requests_served() == 1


def test_the_hooks_are_cherrypy_hooks_and_detach_removes_them(served: Served) -> None:
    from cherrypy import _cprequest

    # GIVEN the tracker attached
    tracker = served.tracker
    hooks = ours(tracker)
    # THEN one hook per point, real Hooks (CherryPy sorts and prints them), the end one failsafe
    assert len(hooks) == 2
    start, end = hooks
    assert all(isinstance(h, _cprequest.Hook) for h in hooks)
    assert (start.failsafe, end.failsafe) == (False, True)
    assert start.priority < end.priority
    assert "callback=" in repr(start)
    # WHEN it detaches
    tracker.detach()
    # THEN neither hook is left, and a request served now is not counted
    assert ours(tracker) == []
    assert served.request("/") == 200
    assert tracker.requests_served() == 0
    assert served.seen == [{}]


def test_a_broken_hook_body_never_reaches_the_request(served: Served) -> None:
    # GIVEN hooks whose names are broken (a serving object without request/response, no
    # served-count table)
    tracker = served.tracker
    tracker._serving = object()
    tracker._served = None  # type: ignore[assignment]
    # WHEN a request is served
    status = served.request("/")
    # THEN the request is served as usual; it was just not tracked
    assert status == 200
    assert served.seen == [{}]
    assert tracker.inflight == {}
