from __future__ import annotations

import pytest

from cpinspect.agent.redact import redact_query, redact_text_queries


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("year=2025", "year=2025"),
        ("token=secret&a=1", "token=***&a=1"),
        ("a=1&password=hunter2&api_key=k&AUTH=x", "a=1&password=***&api_key=***&AUTH=***"),
        ("session_id=abc&sid=1", "session_id=***&sid=***"),
        ("access%5Ftoken=zzz", "access%5Ftoken=***"),
        ("token", "token"),
        ("q=secret", "q=secret"),  # the value is not a name: only names decide
    ],
)
def test_redact_query(query, expected):
    assert redact_query(query) == expected


def test_very_long_query_is_capped():
    assert len(redact_query("a=" + "x" * 10000)) <= 2048


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no query here", "no query here"),
        (
            '127.0.0.1 - - [01/Dec/2026:10:00:00] "GET /login?user=frank&secret=V-93x HTTP/1.1" '
            '200 15 "http://shop/a?token=t0k&page=2" "curl/8"',
            '127.0.0.1 - - [01/Dec/2026:10:00:00] "GET /login?user=frank&secret=*** HTTP/1.1" '
            '200 15 "http://shop/a?token=***&page=2" "curl/8"',
        ),
        ("what? nothing to hide", "what? nothing to hide"),
        ("redirected to /next?sid=abc#frag", "redirected to /next?sid=***#frag"),
    ],
)
def test_queries_inside_log_text_are_redacted_like_request_queries(text, expected):
    # Access lines carry the request line and the Referer as the app formatted them
    assert redact_text_queries(text) == expected
