from __future__ import annotations

import pytest

from cpinspect.agent.redact import redact_query


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
