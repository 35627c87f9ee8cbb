"""When watch / attach --auto-snapshot capture, and what the capture directory keeps.

The trigger is pure: time is a number handed to it, so a fake clock is just arithmetic here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

from cpinspect.capture_trigger import (
    SLOW_KIND,
    CaptureTrigger,
    Reason,
    TriggerConfig,
    capture_stem,
    captures_in,
    enforce_cap,
    prepare_directory,
)
from cpinspect.model import Finding, FindingSeverity, Phase, RequestInfo, Role, ThreadInfo

STARVED = Finding(
    id="pool-starvation:127.0.0.1:8080",
    severity=FindingSeverity.CRITICAL,
    title="4 of 4 workers are in GET /block — the pool is starved",
    kind="pool-starvation",
)
WARNED = Finding(
    id="autoreload-on", severity=FindingSeverity.WARNING, title="the Autoreloader is on"
)


def worker(elapsed: Optional[float], path: str = "/reports/export", busy: bool = True):
    return ThreadInfo(
        ident=7,
        name="CP Server Thread-7",
        role=Role.WORKER,
        busy=busy,
        phase=Phase.HANDLER,
        request=RequestInfo(method="GET", path=path) if busy else None,
        elapsed=elapsed,
    )


def run(trigger: CaptureTrigger, polls: Sequence[tuple]) -> List[Optional[Reason]]:
    """Feed ``(time, findings, threads)`` polls; the reason answered at each."""
    return [trigger.observe(t, f, th) for t, f, th in polls]


def test_a_critical_finding_is_captured_once_it_has_held_for_after_seconds():
    # GIVEN a trigger capturing a critical finding held 10 s
    trigger = CaptureTrigger(TriggerConfig(after=10, slow=30, cooldown=300))
    # WHEN the same critical finding is seen every second for 12 s
    reasons = run(trigger, [(100.0 + i, [STARVED], ()) for i in range(13)])
    # THEN nothing is due for the first 10 s, then one capture at 110 naming it and the time held
    assert reasons[:10] == [None] * 10
    due = reasons[10]
    assert due is not None
    assert due.kind == "pool-starvation"
    assert due.finding_id == STARVED.id
    assert due.text == "pool starvation held 10 s"
    assert due.title == STARVED.title
    # AND no second capture within the cool-down, though the finding still holds
    assert reasons[11:] == [None, None]
    assert trigger.captures == 1
    assert trigger.held_back == 1  # one cool-down that held a capture back


def test_a_finding_that_goes_away_starts_its_hold_time_over():
    # GIVEN a trigger capturing a critical finding held 3 s
    trigger = CaptureTrigger(TriggerConfig(after=3, cooldown=300))
    # WHEN the finding is seen 2 s, missing for one poll, then seen again
    polls = [(0.0, [STARVED], ()), (2.0, [STARVED], ()), (2.5, [], ())]
    polls += [(3.0, [STARVED], ()), (5.0, [STARVED], ()), (6.0, [STARVED], ())]
    reasons = run(trigger, polls)
    # THEN it is captured only 3 s after it came back, not 3 s after it was first seen
    assert reasons == [None, None, None, None, None, reasons[5]]
    assert reasons[5] is not None and reasons[5].held == 3.0


def test_nothing_is_captured_while_healthy_or_with_warnings_only():
    # GIVEN a trigger with short thresholds
    trigger = CaptureTrigger(TriggerConfig(after=1, slow=5, cooldown=1))
    # WHEN an hour of polls shows only a warning and requests of under 5 s (an idle worker with
    # a stale elapsed among them)
    polls = [
        (float(t), [WARNED], [worker(4.9), worker(300.0, busy=False), worker(None)])
        for t in range(3600)
    ]
    reasons = run(trigger, polls)
    # THEN no capture is ever due, and nothing was held back either
    assert set(reasons) == {None}
    assert trigger.captures == 0 and trigger.held_back == 0
    assert trigger.since == {}


def test_a_request_longer_than_slow_is_captured_and_named():
    # GIVEN a trigger capturing requests over 30 s
    trigger = CaptureTrigger(TriggerConfig(after=10, slow=30, cooldown=300))
    # WHEN one worker's request has run 29 s, then 31 s (beside another at 12 s)
    first = trigger.observe(0.0, [], [worker(29.0), worker(12.0, path="/")])
    second = trigger.observe(2.0, [], [worker(31.0), worker(12.0, path="/")])
    # THEN the second poll is a capture naming the slow request and how long it has run
    assert first is None
    assert second is not None
    assert second.kind == SLOW_KIND
    assert second.text == "GET /reports/export running 31 s"
    assert second.finding_id is None
    assert "CP Server Thread-7" in second.title


def test_the_cooldown_allows_one_capture_per_period_whatever_the_reason():
    # GIVEN a trigger with a 5 s cool-down and a finding held from t=0
    trigger = CaptureTrigger(TriggerConfig(after=1, slow=30, cooldown=5))
    # WHEN it holds for 12 s with a slow request appearing at t=3
    polls = [(float(t), [STARVED], [worker(40.0)] if t >= 3 else []) for t in range(13)]
    reasons = run(trigger, polls)
    # THEN captures fall at 1, 6 and 11: exactly one per cool-down, nothing in between
    taken = [t for t, r in zip(range(13), reasons) if r is not None]
    assert taken == [1, 6, 11]
    assert trigger.captures == 3
    assert trigger.cooling_until() == 16.0


# --- the directory ------------------------------------------------------------------------------


def write(path: Path, size: int, mtime: float) -> Path:
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_the_stem_says_when_and_why():
    # GIVEN a reason and a time
    reason = Reason(kind="pool-starvation", text="pool starvation held 10 s", held=10.0)
    # WHEN the stem is made
    stem = capture_stem(reason, 1_764_594_301.0)
    # THEN it is the local date and time, then the kind
    assert stem.endswith("-pool-starvation")
    assert len(stem.split("-", 2)[0]) == 8 and len(stem.split("-", 2)[1]) == 6


def test_the_cap_removes_the_oldest_captures_and_leaves_foreign_files(tmp_path: Path):
    # GIVEN a directory with three captures of 400 bytes (json + txt), oldest first, and files
    # that are not ours: a snapshot of `cpinspect snapshot`, a note, a symlink named like one
    for i, stamp in enumerate(("20261201-120000", "20261201-120500", "20261201-121000")):
        write(tmp_path / ("%s-pool-starvation.json" % stamp), 300, 1000.0 + i)
        write(tmp_path / ("%s-pool-starvation.txt" % stamp), 100, 1000.0 + i)
    foreign = [
        write(tmp_path / "cpinspect-123-20261201-110000.json", 5000, 1.0),
        write(tmp_path / "notes.txt", 5000, 1.0),
    ]
    outside = write(tmp_path.parent / "precious.json", 10, 1.0)
    link = tmp_path / "20261201-100000-slow-request.json"
    link.symlink_to(outside)
    # WHEN the cap is 900 bytes
    removed = enforce_cap(str(tmp_path), 900)
    # THEN only the oldest capture went (both its files); ours now take 800 bytes
    assert removed == [
        "20261201-120000-pool-starvation.json",
        "20261201-120000-pool-starvation.txt",
    ]
    assert sum(c.size for c in captures_in(str(tmp_path))) == 800
    # AND nothing that is not ours was touched, and the symlink's target is intact
    assert all(p.exists() for p in foreign)
    assert link.is_symlink() and outside.read_bytes() == b"x" * 10


def test_the_newest_capture_is_kept_even_alone_over_the_cap(tmp_path: Path):
    # GIVEN two captures, the newest alone larger than the cap
    write(tmp_path / "20261201-120000-slow-request.json", 100, 1000.0)
    write(tmp_path / "20261201-120500-interpreter-stuck.json", 5000, 2000.0)
    write(tmp_path / "20261201-120500-interpreter-stuck-2.json", 10, 1500.0)
    # WHEN the cap is 1,000 bytes
    removed = enforce_cap(str(tmp_path), 1000)
    # THEN every older capture went, and the newest stays
    assert sorted(removed) == [
        "20261201-120000-slow-request.json",
        "20261201-120500-interpreter-stuck-2.json",
    ]
    assert [c.stem for c in captures_in(str(tmp_path))] == ["20261201-120500-interpreter-stuck"]


def test_the_directory_is_created_private(tmp_path: Path):
    # GIVEN a directory that does not exist yet
    where = tmp_path / "captures" / "web"
    # WHEN it is prepared
    prepare_directory(str(where))
    # THEN it exists with mode 0700
    assert where.is_dir()
    assert where.stat().st_mode & 0o777 == 0o700
