from __future__ import annotations

import pytest

from cpinspect.agent.redact import redact_log_text, redact_query, redact_text_queries


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


def test_secret_header_lines_in_log_text_are_redacted():
    # GIVEN what CherryPy's tools.log_headers writes to the error log after a 500
    text = (
        "\nRequest Headers:\n  Remote-Addr: 127.0.0.1\n  HOST: shop:8080\n"
        "  COOKIE: session_id=94b05ea58990d073\n  Authorization: Basic YWRtaW46czNjcmV0\n"
        "  X-Api-Key: k-123\n  X-Forwarded-For: 10.0.0.7\n  Referer: http://shop/a?token=t0k"
    )
    # THEN the secret headers' values are gone, the other headers and their names stay
    assert redact_log_text(text) == (
        "\nRequest Headers:\n  Remote-Addr: 127.0.0.1\n  HOST: shop:8080\n"
        "  COOKIE: ***\n  Authorization: ***\n"
        "  X-Api-Key: ***\n  X-Forwarded-For: 10.0.0.7\n  Referer: http://shop/a?token=***"
    )


@pytest.mark.parametrize(
    "text",
    [
        "KeyError: 'session'",
        "    raise KeyError(key)\nKeyError: 'cookie'",
        "x-ray: on",
        "no header here",
    ],
)
def test_other_lines_of_log_text_stay_as_they_are(text):
    assert redact_log_text(text) == text
