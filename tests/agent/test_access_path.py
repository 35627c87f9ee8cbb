"""The access loggers' handler: its straight path stores what the general path stores.

``AccessHandler.handle`` reads the usual access record (CherryPy's plain line, during a request
the tracker holds) without ``CaptureHandler.handle``'s checks, once per request. These tests
serve real CherryPy requests in this process (``app.get_serving`` + ``Request.run``: no socket,
no fakes) of every shape its reads depend on, with a second handler of the general kind on the
access logger beside ours, and compare the two stored tuples slot for slot. A counter around
the general path shows which records took the straight one.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cpinspect.agent import logcapture
from cpinspect.agent.logcapture import CaptureHandler, LogCapture, LogRing
from cpinspect.agent.tracking import RequestTracker

SCRIPT = "/access-path"


class Served:
    def __init__(self, capture: LogCapture, general: LogRing, app: Any) -> None:
        self.capture = capture
        self.general = general
        self.app = app

    def request(
        self,
        path: str,
        query: str = "",
        headers: Tuple[Tuple[str, str], ...] = (),
        method: str = "GET",
    ) -> None:
        from cherrypy.lib import httputil

        local = httputil.Host("127.0.0.1", 8080, "")
        remote = httputil.Host("10.1.2.3", 40123, "")
        req, resp = self.app.get_serving(local, remote, "http", "HTTP/1.1")
        try:
            req.run(
                method, SCRIPT + path, query, "HTTP/1.1", [("Host", "x"), *headers], io.BytesIO()
            )
            b"".join(resp.body or [])
        finally:
            self.app.release_serving()

    def last_access(self) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
        ours = [r for r in self.capture.ring.copy()[0] if r[3].startswith("cherrypy.access")]
        general = [r for r in self.general.copy()[0] if r[3].startswith("cherrypy.access")]
        return ours[-1], general[-1]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    import cherrypy

    class Api:
        exposed = True

        def GET(self) -> str:
            return "api"

    class Root:
        api = Api()

        @cherrypy.expose
        def index(self, **params: str) -> str:
            return "ok"

        @cherrypy.expose
        @cherrypy.tools.json_out()
        def data(self) -> Dict[str, int]:
            return {"a": 1}

        @cherrypy.expose
        @cherrypy.tools.encode(encoding="utf-8")
        def encoded(self) -> str:
            return "caf\u00e9"

        @cherrypy.expose
        def boom(self) -> str:
            raise ValueError("boom")

        @cherrypy.expose
        def stream(self) -> Any:
            def body() -> Iterator[bytes]:
                yield b"a"
                yield b"b"

            return body()

        stream._cp_config = {"response.stream": True}

        @cherrypy.expose
        def moved(self) -> None:
            raise cherrypy.HTTPRedirect("/elsewhere")

    def plain(name: str) -> str:
        return "plain " + name

    cherrypy.config.update({"log.screen": False, "checker.on": False})
    app = cherrypy.tree.mount(
        Root(),
        SCRIPT,
        {
            "/": {"log.screen": False},
            "/api": {"request.dispatch": cherrypy.dispatch.MethodDispatcher()},
        },
    )
    root = app.root
    root.plain = cherrypy.expose(plain)  # a plain function as a handler
    tracker = RequestTracker()
    tracker.attach()
    capture = LogCapture(tracker, 1000)
    capture.attach()
    general_ring = LogRing(1000)
    general = CaptureHandler(general_ring, tracker)
    access = logging.getLogger("cherrypy.access")
    access.addHandler(general)
    try:
        yield Served(capture, general_ring, app)
    finally:
        access.removeHandler(general)
        capture.detach()
        tracker.detach()
        del cherrypy.tree.apps[SCRIPT]


@pytest.fixture
def general_calls(monkeypatch: pytest.MonkeyPatch, served: Served) -> List[str]:
    """Names of the records the access handler sent down the general path."""
    calls: List[str] = []
    original = CaptureHandler.handle

    def counted(self: CaptureHandler, record: logging.LogRecord) -> Any:
        if self is served.capture.access_handler:
            calls.append(record.getMessage())
        return original(self, record)

    monkeypatch.setattr(logcapture.CaptureHandler, "handle", counted)
    return calls


@pytest.mark.parametrize(
    "path, query, headers, method",
    [
        ("/", "", (), "GET"),
        ("/", "a=1&token=secret", (("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),), "GET"),
        ("/data", "", (), "GET"),
        ("/encoded", "", (), "GET"),
        ("/boom", "", (), "GET"),
        ("/stream", "", (), "GET"),
        ("/moved", "", (), "GET"),
        ("/nope/x", "", (), "GET"),
        ("/api", "", (), "GET"),
        ("/api", "", (), "DELETE"),
        ("/plain", "name=x", (), "GET"),
        ("/", "", (), "HEAD"),
    ],
)
def test_the_straight_path_stores_what_the_general_path_stores(
    served: Served,
    general_calls: List[str],
    path: str,
    query: str,
    headers: Tuple[Tuple[str, str], ...],
    method: str,
) -> None:
    # WHEN a request of this shape is served, both handlers on the access logger
    served.request(path, query, headers, method)
    ours, general = served.last_access()
    # THEN the access handler took its straight path
    assert general_calls == []
    # AND stored the very tuple the general path stored for the same record
    assert ours == general
    assert ours[12] == path.rstrip("/") or ours[12] == path
    assert ours[20] and ours[21] == logcapture.ACCESS_OUTPUT_STATUS


def test_an_unusual_access_record_takes_the_general_path(
    served: Served, general_calls: List[str]
) -> None:
    # GIVEN a record an app logs to the access logger itself, with %-args, outside a request
    access = logging.getLogger("cherrypy.access")
    # WHEN it is logged
    access.info("custom %s line", "access")
    # THEN the access handler passed it to the general path, which stored it as before
    assert general_calls == ["custom access line"]
    ours, general = served.last_access()
    assert ours == general
    assert ours[4] == "custom access line" and ours[9] == ""
