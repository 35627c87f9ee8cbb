"""How the access records say a resolved path was answered (``analysis.answered``) and the
line ``resolve`` prints for it (``formatting.answered_line``)."""

from __future__ import annotations

from cpinspect.analysis import answered
from cpinspect.formatting import answered_line
from cpinspect.model import LogRecord, RequestInfo


def access(seq: int, method: str, path: str, status: int, query: str = "") -> LogRecord:
    return LogRecord(
        seq=seq,
        time=1_000_000.0 + seq,
        level="INFO",
        logger="cherrypy.access.1",
        message="access line",
        request=RequestInfo(method=method, path=path, query=query),
        status=status,
        access=True,
    )


def test_counts_only_that_method_and_path_most_frequent_first():
    records = [
        access(1, "GET", "/login", 200),
        access(2, "GET", "/nope/x", 303, query="a=1"),
        access(3, "POST", "/nope/x", 403),
        access(4, "GET", "/nope/xy", 404),
        access(5, "GET", "/nope/x", 303),
        access(6, "GET", "/nope/x", 500),
        LogRecord(seq=7, time=1_000_007.0, level="ERROR", logger="cherrypy.error", message="x"),
    ]
    seen = answered("GET", "/nope/x?b=2", records)
    assert seen.path == "/nope/x"
    assert seen.statuses == ((303, 2), (500, 1))
    assert seen.count == 3 and seen.last_status == 500 and seen.examined == 6
    line = answered_line(seen, 404, "in the agent's log", held=7)
    assert line.startswith("  answered lately: 303 ×2, 500 ×1; last 500 at ")
    # the routes said 404, the app answered 303: said, since that is the misrouting to look at
    assert line.endswith(
        "(in the agent's log) — not the 404 the routes give: the app's tools or handler answer "
        "otherwise"
    )
    # a status nobody could know (a handler or a tool decides) is no disagreement
    assert "not the" not in answered_line(seen, None, "in the agent's log", held=7)


def test_a_path_nobody_asked_for():
    seen = answered("GET", "/quiet", [access(1, "GET", "/loud", 200)])
    assert seen.count == 0 and seen.statuses == ()
    assert (
        answered_line(seen, 404, "in the agent's log", held=10_000)
        == "  answered lately: no GET /quiet in the agent's log (its last 10,000 records of any "
        "kind)"
    )


def test_a_tool_answering_where_the_dispatch_gives_404_is_said():
    # GIVEN rdiffweb's /nope/x: no handler (404 once the tools let it through), its auth_form
    # tool answering 303 first; the routes claim no status (the tools may answer)
    from cpinspect.formatting import answered_lines
    from cpinspect.model import Resolution

    res = Resolution(
        path="/nope/x", method="GET", host="localhost", kind="not_found", guards=("auth_form",)
    )
    seen = answered("GET", "/nope/x", [access(1, "GET", "/nope/x", 303)])
    [line] = answered_lines(seen, 5, "", res)
    assert line.endswith(
        "— not the 404 of the dispatch: one of the tools that run first answers instead"
    )
    # AND when it did answer 404, nothing more is said
    seen = answered("GET", "/nope/x", [access(1, "GET", "/nope/x", 404)])
    assert "not the" not in answered_lines(seen, 5, "", res)[0]
