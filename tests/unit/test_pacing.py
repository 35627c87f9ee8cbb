"""The polling interval's policy (issue 13): stretched after slow polls, back down when fast."""

from __future__ import annotations

import pytest

from cpinspect.sources.pacing import LONGEST, STRETCH, Pace, format_interval, next_interval


def test_fast_polls_keep_the_configured_interval() -> None:
    # GIVEN a 1 s interval WHEN polls take 0.1 s THEN the interval stays 1 s, nothing said
    pace = Pace(1.0)
    for _ in range(5):
        pace = pace.after(0.1)
    assert pace.interval == 1.0
    assert not pace.stretched
    assert pace.note is None


def test_a_slow_poll_stretches_the_interval_at_once() -> None:
    # GIVEN a 1 s interval WHEN a poll takes 1.2 s (longer than the interval)
    pace = Pace(1.0).after(1.2)
    # THEN the next one starts STRETCH times that after it, and the note says so
    assert pace.interval == pytest.approx(STRETCH * 1.2)
    assert pace.stretched
    assert pace.note == "polling every 1.8 s: the target answers slowly"


def test_the_interval_comes_back_down_step_by_step_when_polls_get_fast() -> None:
    # GIVEN an interval stretched to 4 s
    pace = Pace(1.0).after(4.0 / STRETCH)
    assert pace.interval == 4.0
    # WHEN polls get fast again
    intervals = []
    for _ in range(12):
        pace = pace.after(0.05)
        intervals.append(pace.interval)
    # THEN the interval falls every poll, never below the configured one, and reaches it
    assert intervals[0] < 4.0 and intervals[0] > 1.0
    assert all(a >= b for a, b in zip(intervals, intervals[1:]))
    assert intervals[-1] == 1.0
    assert not pace.stretched


def test_a_slower_poll_while_coming_down_stretches_again() -> None:
    # GIVEN an interval coming down WHEN a poll is slow again THEN it follows that poll
    pace = Pace(1.0).after(2.0).after(0.0)
    assert pace.after(3.0).interval == STRETCH * 3.0


def test_the_stretch_has_a_ceiling() -> None:
    # GIVEN a poll that hangs for minutes THEN the next still comes within LONGEST seconds
    assert next_interval(1.0, 600.0) == LONGEST
    # ... unless the user asked for a longer interval
    assert next_interval(120.0, 600.0) == 120.0


def test_delay_counts_from_the_poll_start() -> None:
    # GIVEN a 1 s interval WHEN 0.3 s passed since the poll started THEN wait 0.7 s (never < 0)
    pace = Pace(1.0)
    assert pace.delay(0.3) == pytest.approx(0.7)
    assert pace.delay(5.0) == 0.0


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError):
        Pace(0.0)
    with pytest.raises(ValueError):
        next_interval(-1.0, 0.1)


def test_format_interval() -> None:
    assert format_interval(2.44) == "2.4 s"
    assert format_interval(30.0) == "30 s"
    assert format_interval(150.0) == "2.5 min"
