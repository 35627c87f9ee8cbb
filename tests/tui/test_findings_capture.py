"""Findings in what is captured: the store's snapshot (``s``), the files written and read back,
the report (findings first, with evidence and fix), a series taken by ``capture_series``; pure,
no terminal, on the fakes' incident and the real findings engine."""

from __future__ import annotations

from pathlib import Path

from cpinspect.model import Evidence, FindingSeverity
from cpinspect.snapshots import capture_series, read_snapshots, write_snapshots
from cpinspect.tui.store import FINDINGS_HISTORY_MAX, Store

from .fakes import T0, FakePoller, build_up, incident_update, pool, snapshot, update, worker

STARVED = "pool-starvation:127.0.0.1:8080"


def starved_store() -> Store:
    store = Store()
    for u in build_up(12):  # the pool fills up over 12 s, then 17 connections queue
        store.apply(u)
    return store


def test_the_store_dates_a_finding_from_the_poll_that_first_showed_it() -> None:
    # GIVEN the pool filling up, one update a second, saturated from T0 - 4
    store = starved_store()
    # THEN the starvation is the first finding (a slow upload follows it), first seen at the
    # first saturated poll, and stays so
    assert store.findings[0].id == STARVED
    assert store.finding_since(STARVED) == T0 - 4
    store.apply(incident_update(T0 + 1))
    assert store.finding_since(STARVED) == T0 - 4
    # AND the history behind the findings holds the polls before the one on screen
    assert len(store.findings_history()) == 13
    assert len(store.findings_history()) <= FINDINGS_HISTORY_MAX
    # WHEN the pool drains THEN the finding and its date are gone
    calm = update(
        snapshot(
            [worker(n, None) for n in range(1, 11)], taken_at=T0 + 2, pools=[pool(busy=0, queued=0)]
        )
    )
    store.apply(calm)
    assert store.findings == ()
    assert store.finding_since(STARVED) is None


def test_history_is_cut_to_the_last_minute() -> None:
    # GIVEN polls two seconds apart for three minutes
    store = Store()
    for i in range(90):
        store.apply(incident_update(T0 + 2 * i))
    # THEN only the last 60 s of them are kept for the findings
    history = store.findings_history()
    assert history[-1].taken_at - history[0].taken_at <= 60
    assert len(history) == 31


def test_a_capture_file_and_its_report_carry_the_findings(tmp_path: Path) -> None:
    # GIVEN the store's snapshot (what `s` writes) during the starvation
    snap = starved_store().snapshot()
    assert snap is not None and snap.findings
    # WHEN it is written and read back
    written = write_snapshots([snap], tmp_path)
    [back] = read_snapshots(written.json_path)
    # THEN the findings come back whole: severity, evidence as Evidence, details, fix
    found = back.findings[0]
    assert found.id == STARVED and found.severity is FindingSeverity.CRITICAL
    assert all(isinstance(e, Evidence) for e in found.evidence)
    assert found.evidence[0].kind == "thread"
    assert found.details and found.fix
    # AND the report lists them first, with the evidence labels and the fix
    assert written.report_path is not None
    report = written.report_path.read_text()
    assert report.index("── Findings (2)") < report.index("── Pools")
    assert "✖ CRITICAL  8 of 10 workers are in GET /reports/export" in report
    assert "CP Server Thread-1  GET /reports/export" in report
    assert "fix: find what db.py:41" in report
    assert "⚠ WARNING   1 of 10 workers held 31 s by clients still sending" in report


def test_a_series_taken_by_capture_series_has_findings_in_every_snapshot() -> None:
    # GIVEN a poller in the middle of the incident
    poller = FakePoller([incident_update(T0), incident_update(T0 + 1), incident_update(T0 + 2)])
    # WHEN a series of three is taken
    series = capture_series(poller, 3, 0.1, wait=lambda seconds: False)
    # THEN each snapshot carries the starvation
    assert len(series.taken) == 3
    assert all(s.findings and s.findings[0].id == STARVED for s in series.taken)
