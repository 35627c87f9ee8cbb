"""/v1/log's records written as JSON text straight from the ring (``read(encoded=True)``).

The socket server answers from the text form; in-process readers get dicts. Both must say the
same thing for every kind of record, so these tests serve real CherryPy requests in this process
(``app.get_serving`` + ``Request.run``: no socket, no fakes), capture their records with the
real handler and tracker, and compare the two forms value for value.
"""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cpinspect.agent.jsonparts import JsonArray, encode
from cpinspect.agent.logcapture import LogCapture
from cpinspect.agent.tracking import RequestTracker

SCRIPT = "/log-encoding"


class Served:
    def __init__(self, capture: LogCapture, app: Any) -> None:
        self.capture = capture
        self.app = app

    def request(self, path: str, query: str = "", headers: Tuple[Tuple[str, str], ...] = ()) -> int:
        from cherrypy.lib import httputil

        local = httputil.Host("127.0.0.1", 8080, "")
        remote = httputil.Host("10.1.2.3", 40123, "")
        req, resp = self.app.get_serving(local, remote, "http", "HTTP/1.1")
        try:
            req.run(
                "GET",
                SCRIPT + path,
                query,
                "HTTP/1.1",
                [("Host", "127.0.0.1"), *headers],
                io.BytesIO(),
            )
            b"".join(resp.body)
            return int(str(resp.status).split()[0])
        finally:
            self.app.release_serving()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    import cherrypy

    class Root:
        @cherrypy.expose
        def index(self, **params: str) -> str:
            cherrypy.log('inside the index handler: caf\u00e9 \u2603 \ud800 "quoted"\n\ttab')
            return "ok"

        @cherrypy.expose
        def boom(self) -> str:
            raise ValueError("boom in the handler")

        @cherrypy.expose
        @cherrypy.tools.json_out()
        def data(self) -> Dict[str, int]:
            return {"a": 1}

    cherrypy.config.update({"log.screen": False, "checker.on": False})
    app = cherrypy.tree.mount(Root(), SCRIPT, {"/": {"log.screen": False}})
    tracker = RequestTracker()
    tracker.attach()
    capture = LogCapture(tracker, 1000)
    capture.attach()
    # The handler's line holds a lone surrogate: kept from the root logger, where pytest's own
    # capture would put it in the test's report, which pytest-xdist cannot send between
    # processes (UnicodeEncodeError: the whole run stopped with an internal error).
    error_log = logging.getLogger("cherrypy.error")
    propagate, error_log.propagate = error_log.propagate, False
    try:
        yield Served(capture, app)
    finally:
        error_log.propagate = propagate
        capture.detach()
        tracker.detach()
        cherrypy.tree.apps.pop(SCRIPT, None)


def wire(body: Dict[str, Any]) -> Dict[str, Any]:
    """What the inspector receives: the server's encoding, parsed."""
    out: Dict[str, Any] = json.loads(encode(body))
    out.pop("taken_at")
    return out


def both(capture: LogCapture, after: int = 0) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    plain = capture.read(after, 5000, 0)
    text = capture.read(after, 5000, 0, encoded=True)
    assert type(text["records"]) is JsonArray
    return wire(plain), wire(text)


def test_every_kind_of_record_reads_the_same_as_text_and_as_dicts(served: Served) -> None:
    # GIVEN records of every kind captured from real requests: a handler's own log line with
    # non-ASCII, a lone surrogate, quotes and control characters; a query with a secret; an
    # X-Forwarded-For client; a json_out handler; a 404; a handler's exception with its
    # traceback (500); and a line logged outside any request
    import cherrypy

    first = served.capture.ring.copy()[2]
    assert served.request("/") == 200
    assert served.request("/", "a=1&token=hunter2") == 200
    assert served.request("/", "", (("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),)) == 200
    assert served.request("/data") == 200
    assert served.request("/missing") == 404
    assert served.request("/boom") == 500
    cherrypy.log("outside any request ?session=abc&x=1", "TEST", severity=logging.WARNING)
    # WHEN the ring is read as dicts and as text
    plain, text = both(served.capture, first)
    # THEN the two answers are equal, record for record
    assert plain == text
    records: List[Dict[str, Any]] = text["records"]
    assert len(records) >= 12  # 6 access, 3 handler lines, the error and its headers, 1 outside
    assert [r["seq"] for r in records] == list(range(first + 1, first + 1 + len(records)))
    # AND the records are complete: request identity, access status/bytes/duration, traceback
    access = [r for r in records if r["logger"].startswith("cherrypy.access")]
    by_status = {r["access"]["status"]: r for r in access}
    assert set(by_status) == {200, 404, 500}
    ok = access[0]
    assert ok["access"]["status"] == 200
    assert ok["request"]["method"] == "GET" and ok["request"]["path"] == SCRIPT + "/"
    assert ok["request"]["peer"] == "10.1.2.3:40123"
    assert ok["access"]["size"] == 2 and ok["access"]["duration"] >= 0.0
    assert ok["thread"]["ident"] and isinstance(ok["time"], float)
    assert any(r["request"]["client"] == "203.0.113.9" for r in access)
    assert all("hunter2" not in json.dumps(r) for r in records)
    assert any(r["request"]["query"] == "a=1&token=***" for r in access)
    errors = [r for r in records if r["traceback"] and "boom in the handler" in r["traceback"]]
    assert errors and errors[0]["level"] == "ERROR"
    assert errors[0]["request"]["handler"].endswith("Root.boom")
    outside = [r for r in records if "outside any request" in r["message"]]
    assert outside and outside[0]["request"] is None and outside[0]["access"] is None
    assert "session=***" in outside[0]["message"]
    line = next(r for r in records if "inside the index handler" in r["message"])
    assert 'caf\u00e9 \u2603 \ud800 "quoted"\n\ttab' in line["message"]


def test_odd_values_in_a_record_still_read_the_same(served: Served) -> None:
    # GIVEN records whose slots hold what a strange app could put there: a level name that is
    # not a string, an unhashable stage, a port given as text, a float that is not a number,
    # bytes for a status, an int subclass for a level number
    class Level(int):
        pass

    first = served.capture.ring.copy()[2]
    base = (
        1796000000.5,
        Level(25),
        25,
        "cherrypy.access.odd",
        '1.2.3.4 - - [x] "GET /odd HTTP/1.1" 200 5 "" ""',
        0,
        None,
        7,
        "worker-7",
        "hook",
        "GET",
        "/odd",
        "/path",
        "q=1",
        "1.2.3.4",
        "8080",
        None,
        float("nan"),
        None,
        ["a", "list"],
        b"201 Created",
        1,
        "5",
        None,
    )
    served.capture.ring.append(base)
    served.capture.ring.append((*base[:9], "", *base[10:21], 3, *base[22:]))
    served.capture.ring.append((*base[:17], 1796000000.25, *base[18:21], 2, *base[22:]))
    # WHEN read both ways
    plain, text = both(served.capture, first)
    # THEN equal (NaN compared as text), and each record keeps what it can
    assert json.dumps(plain, sort_keys=True) == json.dumps(text, sort_keys=True)
    a, b, c = text["records"]
    assert a["level"] == 25 and a["request"]["peer"] == "1.2.3.4:8080"
    assert math.isnan(a["request"]["started_at"]) and a["request"]["stage"] == ["a", "list"]
    assert a["access"]["status"] == 201 and a["access"]["size"] == 5
    assert b["request"] is None and b["access"] == {"status": 200, "size": 5, "duration": None}
    assert c["access"]["duration"] == 0.25 and c["access"]["status"] == 201


def test_a_page_is_the_same_records_either_way(served: Served) -> None:
    # GIVEN a few hundred access records
    for _ in range(300):
        served.request("/data")
    latest = served.capture.ring.copy()[2]
    # WHEN read in pages of 50 after a cursor, with a level filter
    for after in (latest - 290, latest - 120):
        plain = wire(served.capture.read(after, 50, logging.INFO))
        text = wire(served.capture.read(after, 50, logging.INFO, encoded=True))
        # THEN each page is the same, with the same cursor facts
        assert plain == text
        assert text["more"] is True and text["next"] == after + 50
        assert [r["seq"] for r in text["records"]] == list(range(after + 1, after + 51))


def test_a_stored_records_status_and_path_read_as_its_wire_answer_says(served: Served) -> None:
    # GIVEN a 200, a 404 and a line logged outside any request
    import cherrypy

    from cpinspect.agent.logcapture import access_status, record_path

    first = served.capture.ring.copy()[2]
    assert served.request("/") == 200
    assert served.request("/missing") == 404
    cherrypy.log("outside any request", "TEST", severity=logging.WARNING)
    # WHEN each stored tuple is read through the accessors and through the wire answer
    items, held_first, _latest = served.capture.ring.copy()
    stored = items[first - held_first + 1 :]
    records = served.capture.read(first, 5000, 0)["records"]
    # THEN both say the same status and path, record for record
    assert len(stored) == len(records) >= 3
    for item, record in zip(stored, records):
        assert access_status(item) == (record["access"] or {}).get("status")
        assert record_path(item) == (record["request"] or {}).get("path", "")
    assert {access_status(i) for i in stored} >= {200, 404, None}
