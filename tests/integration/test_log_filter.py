"""/v1/log?only=notable&paths=... on a real CherryPy process over the real socket: the records an
inspector needs while nobody looks at the full log, with the cursor arithmetic of an unfiltered
read (wire.py). The app is ``tests/apps/log_app.py`` (one process for the module)."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import pytest

from tests.helpers import agent_get
from tests.integration.test_log_agent import LogApp, _marker, _spawn


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogApp]:
    with _spawn(tmp_path_factory.mktemp("logfilter")) as target:
        yield target


def _log_every_kind(app: LogApp, marker: str) -> int:
    """INFO messages and 200s (not notable), a warning, a handler error (ERROR + 500), a 404,
    and 200s under /many (notable when /many is one of the paths). Returns the seq before."""
    start = int(app.log("?limit=1")["latest"])
    app.get("/say?msg=info-%s" % marker)
    app.get("/say?msg=warn-%s&level=30" % marker)
    app.get("/boom?marker=%s" % marker)
    app.get("/nothing-%s" % marker)
    app.get("/many?n=3&m=%s" % marker)
    app.records_with('"GET /many?n=3&m=%s HTTP/1.1"' % marker, access=True)
    return start


def _mine(records: List[Dict[str, Any]], marker: str) -> List[Dict[str, Any]]:
    return [r for r in records if marker in r["message"] or marker in (r["traceback"] or "")]


def test_only_notable_keeps_warnings_failures_and_the_paths_asked_for(app: LogApp) -> None:
    # GIVEN records of every kind, INFO messages and 200s among them
    marker = _marker()
    start = _log_every_kind(app, marker)
    full = app.log("?after=%d&limit=5000" % start)
    # WHEN read with only=notable and /many as a path
    page = app.log("?after=%d&limit=5000&only=notable&paths=/many,/static/" % start)
    got = _mine(page["records"], marker)
    # THEN the warning, the error, the 500, the 404 and the 200 of /many come, in seq order
    kinds = [
        (r["level"], (r["access"] or {}).get("status"), r["message"].split(" HTTP")[0][-40:])
        for r in got
    ]
    assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
    assert any(r["level"] == "WARNING" and "warn-" + marker in r["message"] for r in got), kinds
    assert any(r["level"] == "ERROR" and r["traceback"] for r in got), kinds
    statuses = sorted((r["access"] or {}).get("status") or 0 for r in got if r["access"])
    assert statuses == [200, 404, 500], kinds
    # AND the INFO messages and the 200 of /say do not
    assert not any("info-" + marker in r["message"] for r in got), kinds
    assert not any(r["level"] == "INFO" and not r["access"] for r in got), kinds
    # AND the cursor arithmetic is that of the full read: latest, first, missed, next
    for key in ("first", "missed"):
        assert page[key] == full[key]
    assert page["latest"] >= full["latest"] and page["more"] is False
    assert page["next"] == page["latest"]
    # AND without paths, the 200 of /many is skipped too
    bare = _mine(app.log("?after=%d&only=NOTABLE" % start)["records"], marker)
    assert sorted((r["access"] or {}).get("status") for r in bare if r["access"]) == [404, 500]


def test_only_notable_pages_with_more_and_next(app: LogApp) -> None:
    # GIVEN notable records among many that are not
    marker = _marker()
    start = _log_every_kind(app, marker)
    # WHEN read one record at a time with the filter
    seen: List[int] = []
    after = start
    for _ in range(50):
        page = app.log("?after=%d&limit=1&only=notable&paths=/many" % after)
        seen += [r["seq"] for r in page["records"]]
        if not page["more"]:
            break
        # THEN "next" is the last seq returned while matching records are left
        assert page["next"] == page["records"][-1]["seq"]
        after = page["next"]
    # AND the last page says to go on from latest (past the records the filter skipped)
    assert page["next"] == page["latest"]
    full = app.log("?after=%d&limit=5000&only=notable&paths=/many" % start)
    assert seen[: len(full["records"])] == [r["seq"] for r in full["records"]]


def test_level_and_only_together_must_both_pass(app: LogApp) -> None:
    # GIVEN a warning, an error and failed requests
    marker = _marker()
    start = _log_every_kind(app, marker)
    # WHEN read with level=error and only=notable
    got = _mine(app.log("?after=%d&level=error&only=notable&paths=/" % start)["records"], marker)
    # THEN only ERROR and above come: the access records (INFO) only of a 5xx answer
    assert got and all(
        r["levelno"] >= 40 or (r["access"] and r["access"]["status"] >= 500) for r in got
    )
    assert [r["access"]["status"] for r in got if r["access"]] == [500]
    assert any(r["levelno"] >= 40 for r in got)


@pytest.mark.parametrize(
    "query, says",
    [
        ("?only=everything", "only must be notable"),
        ("?paths=/static/", "paths needs only=notable"),
        ("?only=notable&paths=static", "each of paths must start with /"),
        ("?only=notable&paths=" + ",".join("/p%d" % i for i in range(40)), "at most 32"),
        ("?only=notable&paths=/" + "x" * 3000, "at most 2048 characters"),
    ],
)
def test_bad_filter_parameters_get_400_and_one_line(app: LogApp, query: str, says: str) -> None:
    # WHEN /v1/log gets a bad only/paths THEN 400 with one line saying what is allowed
    status, body = agent_get(app.socket_path(), "/v1/log" + query)
    assert status == 400
    message = body["error"]["message"]
    assert says in message and "\n" not in message


def test_the_inspector_reads_notable_records_through_agentsource(app: LogApp) -> None:
    # GIVEN the inspector's AgentSource on the socket
    from cpinspect.sources.agent import AgentSource

    marker = _marker()
    start = _log_every_kind(app, marker)
    source = AgentSource(app.socket_path())
    try:
        # WHEN it asks for the notable records with a path
        page = source.log(after=start, limit=5000, only="notable", paths=("/many",))
    finally:
        source.close()
    # THEN the parsed page holds the failures and the /many 200, not the /say 200
    got = [r for r in page.records if marker in r.message or marker in (r.traceback or "")]
    assert sorted(r.status or 0 for r in got if r.status is not None) == [200, 404, 500]
    assert not any("info-" + marker in r.message for r in got)
