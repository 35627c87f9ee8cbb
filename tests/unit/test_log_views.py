"""The pure side of the log: the ``/v1/log`` reader (tolerant of what an agent may send), the
filters, matches in context, errors per minute, joining a record to its running thread, and the
text of records, gaps, the errors-go-nowhere line and the report's log section."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from cpinspect.analysis import (
    LogFilter,
    errors_in_last,
    errors_per_minute,
    log_matches,
    running_thread,
    with_context,
)
from cpinspect.formatting import (
    format_log_record,
    format_report,
    log_gap_line,
    log_record_line,
    log_routing_warning,
)
from cpinspect.model import LogGap, LogRecord, LogRouting, LogState, Snapshot, SourceKind
from cpinspect.protocol import ProtocolError, log_page_from_json
from tests.tui.fakes import (
    CART_IDENT,
    CART_TRACEBACK,
    T0,
    incident_threads,
    log_records,
    snapshot,
)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


RECORD = {
    "seq": 7,
    "time": T0,
    "level": "ERROR",
    "levelno": 40,
    "logger": "cherrypy.error.1400",
    "app": "",
    "message": "[15/Jun/2025:15:06:40] HTTP ",
    "cut": 0,
    "traceback": CART_TRACEBACK,
    "thread": {"ident": CART_IDENT, "name": "CP Server Thread-9"},
    "request": {"method": "POST", "path": "/cart/add", "query": "", "started_at": T0 - 31},
    "access": None,
}


def page(**changes: object) -> dict:
    base = {
        "schema": 1,
        "agent": "0.1.0",
        "taken_at": T0,
        "buffer": "b1",
        "capacity": 10000,
        "max_message": 8192,
        "first": 1,
        "latest": 7,
        "missed": 0,
        "more": False,
        "routing": {"screen": False, "goes_nowhere": True, "fix": "log.error_file = 'x'"},
        "records": [RECORD],
        "errors": [],
    }
    base.update(changes)
    return base


def test_the_reader_takes_a_page_and_tolerates_what_it_does_not_know() -> None:
    got = log_page_from_json(page())
    (record,) = got.records
    assert (record.seq, record.levelno, record.thread_ident) == (7, 40, CART_IDENT)
    assert record.request is not None and record.request.path == "/cart/add"
    assert record.traceback == CART_TRACEBACK and not record.access
    assert got.routing is not None and got.routing.goes_nowhere
    # Unknown keys, a record that is not an object, a missing levelno, an access block
    odd = dict(RECORD, levelno=None, level="WARNING", new_key=1, access={"status": 503})
    got = log_page_from_json(page(records=[odd, "junk"], extra=True, routing=None))
    assert len(got.records) == 1 and got.records[0].levelno == 30
    assert got.records[0].access and got.records[0].status == 503 and got.routing is None
    with pytest.raises(ProtocolError):
        log_page_from_json({"schema": 1})
    with pytest.raises(ProtocolError):
        log_page_from_json({"error": {"status": 400, "message": "limit too large"}})


def test_filters() -> None:
    records = log_records()
    seqs = lambda flt: [r.seq for r in records if log_matches(r, flt)]  # noqa: E731
    assert seqs(LogFilter(min_level=40)) == [3, 4, 7, 8]
    assert seqs(LogFilter(min_level=30)) == [3, 4, 5, 6, 7, 8]
    assert seqs(LogFilter(logger="cherrypy.access")) == [2, 4, 6, 8]
    assert seqs(LogFilter(logger="cherrypy.error")) == [1, 3, 5, 7]
    assert seqs(LogFilter(status="5xx")) == [4, 8]
    assert seqs(LogFilter(status="404")) == [6]
    assert seqs(LogFilter(route="/cart")) == [3, 4, 7, 8]
    assert seqs(LogFilter(text="SKU-17")) == [7]
    cart = incident_threads()[8].request
    assert cart is not None and cart.started_at is not None
    # The request filter tells the running request from an earlier one on the same worker
    assert seqs(LogFilter(request=(CART_IDENT, cart.started_at))) == [7]


def test_matches_in_context() -> None:
    hits = [False, False, False, True, False, False, False, False, True]
    assert with_context(hits, 1) == [
        None,
        (2, False),
        (3, True),
        (4, False),
        None,
        (7, False),
        (8, True),
    ]


def test_errors_per_minute() -> None:
    now = 600.0 * 60 + 30  # 30 s into a minute
    records = [
        LogRecord(1, now - 5, "ERROR", "e", "a", levelno=40),
        LogRecord(2, now - 20, "ERROR", "e", "b", levelno=40),
        LogRecord(3, now - 65, "INFO", "a", "c", status=500, access=True),
        LogRecord(4, now - 65, "INFO", "e", "d"),
        LogRecord(5, now - 3600, "ERROR", "e", "old", levelno=40),
    ]
    counts = errors_per_minute(records, now, minutes=5)
    assert counts == [0, 0, 0, 1, 2]
    # AND the caption's rate counts the last 60 s, not the minute running (30 s of it here)
    assert errors_in_last(records, now) == 2
    assert errors_in_last(records, now, seconds=70) == 3  # and the 500 of 65 s ago
    assert errors_in_last(records, now + 40) == 1


def test_a_record_joins_its_thread_only_while_that_request_runs() -> None:
    records = log_records()
    threads = snapshot(incident_threads())
    running = running_thread(records[6], threads)
    assert running is not None and running.ident == CART_IDENT
    assert running_thread(records[2], threads) is None  # same worker, a finished request
    assert running_thread(records[0], threads) is None  # not logged during a request


def test_the_text_of_records_gaps_and_routing() -> None:
    error = log_records()[6]
    line = log_record_line(error)
    assert line == "15:06:09  ERROR    POST /cart/add  HTTP  ▸ KeyError: 'sku-17'"
    lines = format_log_record(error)
    assert lines[0] == "15:06:09  ERROR    POST /cart/add  HTTP  KeyError: 'sku-17'"
    assert lines[1:] == ["    " + t for t in CART_TRACEBACK.split("\n")]
    access = log_records()[7]
    assert log_record_line(access) == "15:06:10  500      POST /cart/add  120 B  0.1 s  10.0.0.5"
    assert log_record_line(replace(error, cut=900)).endswith("(900 chars cut)")
    assert log_gap_line(LogGap(15, T0)) == "⋯ 15 records missed (buffer wrapped)"
    assert log_routing_warning(LogRouting(goes_nowhere=False)) is None
    warning = log_routing_warning(LogRouting(goes_nowhere=True, fix='log.error_file = "/x"'))
    assert warning is not None and "errors go nowhere" in warning
    assert warning.endswith('Fix: log.error_file = "/x"')


def test_the_report_has_a_log_section_with_the_last_errors_whole() -> None:
    snap = Snapshot(
        taken_at=T0,
        source=SourceKind.AGENT,
        threads=snapshot(incident_threads()),
        log=log_records(),
        log_state=LogState(
            buffer="b1",
            capacity=10000,
            routing=LogRouting(goes_nowhere=True, fix='log.error_file = "/x"'),
        ),
    )
    report = format_report([snap], now=T0 + 1)
    section = report[report.index("Log (8 recent records)") :]
    assert "errors go nowhere" in section
    assert "errors: 2 · 5xx answers: 2 · 404 answers: 1" in section
    assert "ERROR    POST /cart/add  HTTP  KeyError: 'sku-17'" in section
    assert "      KeyError: 'sku-17'" in section  # the traceback, indented under its record


def test_source_lines_are_filled_only_where_the_traceback_lacks_them() -> None:
    from cpinspect.formatting import traceback_frames_without_source, traceback_lines

    tb = (
        "Traceback (most recent call last):\n"
        '  File "/a.py", line 3, in f\n'
        "    g()\n"
        '  File "/b.py", line 9, in g\n'
        "ValueError: x"
    )
    assert traceback_frames_without_source(tb) == [("/b.py", 9)]
    filled = traceback_lines(tb, lambda f, n: "raise ValueError('x')" if f == "/b.py" else None)
    assert filled[-2:] == ["    raise ValueError('x')  (source read now)", "ValueError: x"]
    assert traceback_lines(tb, lambda f, n: None) == tb.split("\n")


def test_a_record_whose_text_starts_on_its_second_line_is_titled_by_it() -> None:
    from cpinspect.formatting import log_record_line

    # GIVEN the record CherryPy's tools.log_headers writes after a 500 (context, then a newline)
    headers = LogRecord(
        1,
        0.0,
        "INFO",
        "cherrypy.error",
        "[03/Dec/2026:09:03:51] HTTP \nRequest Headers:\n  Remote-Addr: 127.0.0.1\n  HOST: x",
    )
    # THEN its line reads 'HTTP Request Headers:' and counts the headers under it
    line = log_record_line(headers)
    assert "HTTP Request Headers:" in line and "2 more lines" in line, line
    # AND a message with words on its first line keeps it as its title
    plain = replace(headers, message="[03/Dec/2026:09:03:51] ENGINE Bus STOPPING\nmore")
    assert "ENGINE Bus STOPPING" in log_record_line(plain)
