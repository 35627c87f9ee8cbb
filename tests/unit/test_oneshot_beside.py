"""What ``dump`` and ``snapshot`` ask beside their poll, and how they join it (issue 13).

The sessions and routes are asked at the same moment as the poll (``snapshots.beside``) and
joined once the poll is in (``snapshots.joined``): waited for when the agent answered the poll,
``LATE_WAIT`` more at most when py-spy stood in for a slow agent, not at all for a silent one.
The JSON of a capture is written and fsync'd in a thread while the report is formatted; a
failure on either side leaves no temporary file behind.

Pure: futures completed by hand, and the fakes' updates (no target process needed).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Optional, Tuple

import pytest

import cpinspect.formatting
import cpinspect.snapshots as snapshots_module
from cpinspect.errors import AgentUnavailable, SnapshotWriteError
from cpinspect.snapshots import (
    TMP_PREFIX,
    beside,
    joined,
    read_snapshots,
    snapshot_from_update,
    write_snapshots,
)
from tests.tui.fakes import fallback_update, incident_update

Read = Tuple[Optional[str], Optional[str]]


def pending() -> Future[Read]:
    """A call that has not answered (and will not while the test runs)."""
    return Future()


def answered(value: str = "the sessions", note: Optional[str] = None) -> Future[Read]:
    future: Future[Read] = Future()
    future.set_result((value, note))
    return future


def test_an_answered_poll_waits_for_the_call_asked_beside_it() -> None:
    # GIVEN the agent answered the poll, and a call asked beside it answering a moment later
    update = incident_update()
    future: Future[Read] = Future()
    timer = threading.Timer(0.3, lambda: future.set_result(("the routes", None)))
    timer.start()
    try:
        # WHEN it is joined THEN its answer is waited for and kept, nothing said
        assert joined(update, future, "routes") == ("the routes", None, False)
    finally:
        timer.cancel()


def test_a_silent_agent_is_not_waited_for_again() -> None:
    # GIVEN the agent silent at the poll (py-spy stands in for a stuck interpreter)
    from dataclasses import replace

    update = replace(fallback_update(), agent_unresponsive=True)
    # WHEN a call asked beside it has not answered THEN it is left out at once, and said so
    value, why, late = joined(update, pending(), "sessions")
    assert value is None and late
    assert why == "sessions not captured: the agent does not answer"
    # AND one that did answer is kept all the same
    assert joined(update, answered(), "sessions") == ("the sessions", None, False)


def test_a_slow_agent_gets_a_moment_more_then_the_call_is_left_out() -> None:
    # GIVEN py-spy standing in for an agent that is slow, not silent
    update = fallback_update()
    assert not update.agent_unresponsive
    # WHEN the call asked beside the poll does not answer within LATE_WAIT
    value, why, late = joined(update, pending(), "routes")
    # THEN it is left out with the reason (the poll's own note says the agent is slow)
    assert value is None and late
    assert why == "routes not captured: the agent does not answer in time"
    # AND an answer that came is kept
    assert joined(update, answered("the routes"), "routes") == ("the routes", None, False)


def test_a_call_that_failed_says_why_in_one_line() -> None:
    # GIVEN the agent answered the poll but the call beside it raised a CpinspectError
    future: Future[Read] = Future()
    future.set_exception(AgentUnavailable("agent did not answer within 5.0 s"))
    # WHEN it is joined THEN nothing is kept and the error is the note
    assert joined(incident_update(), future, "sessions") == (
        None,
        "sessions not captured: agent did not answer within 5.0 s",
        False,
    )


def test_a_call_that_timed_out_behind_a_slow_agent_is_said_as_the_agents_slowness() -> None:
    # GIVEN py-spy standing in for a slow agent, and the call beside the poll timed out
    future: Future[Read] = Future()
    future.set_exception(AgentUnavailable("agent did not answer within 1.0 s"))
    # WHEN it is joined THEN it is left out as late (not "the interpreter may be stuck")
    assert joined(fallback_update(), future, "routes") == (
        None,
        "routes not captured: the agent does not answer in time",
        True,
    )


def test_beside_runs_the_job_in_a_daemon_thread_and_hands_over_its_error() -> None:
    # GIVEN a job that names its thread, and one that fails
    ran = beside(lambda: (threading.current_thread().daemon, threading.current_thread().name))
    failed = beside(lambda: 1 // 0)
    # THEN the first ran in a daemon thread of its own (never holding up the exit)
    assert ran.result(timeout=10) == (True, "cpinspect-beside")
    # AND the second's exception is the future's
    assert isinstance(failed.exception(timeout=10), ZeroDivisionError)


def leftovers(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir())


def test_a_report_that_fails_leaves_no_file_and_says_why(tmp_path: Path, monkeypatch) -> None:
    # GIVEN formatting the report fails while the JSON is written beside it
    def broken(*args: object, **kwargs: object) -> str:
        raise SnapshotWriteError("cannot save the snapshot: the report broke")

    monkeypatch.setattr(cpinspect.formatting, "format_report", broken)
    # WHEN a capture is written THEN the report's error is the one raised
    with pytest.raises(SnapshotWriteError, match="the report broke"):
        write_snapshots([snapshot_from_update(incident_update())], tmp_path)
    # AND the JSON written meanwhile was removed: no file, no temporary file
    assert leftovers(tmp_path) == []


def test_a_json_that_fails_leaves_no_file_and_says_why(tmp_path: Path, monkeypatch) -> None:
    # GIVEN writing the JSON fails in its thread (a full disk) while the report is written
    real_write = snapshots_module._write_temp

    def write(dir_fd: int, where: str, data: bytes):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "cpinspect-beside":
            raise SnapshotWriteError("cannot save the snapshot in %s: disk full" % where)
        return real_write(dir_fd, where, data)

    monkeypatch.setattr(snapshots_module, "_write_temp", write)
    # WHEN a capture is written THEN the JSON's error is raised in the caller
    with pytest.raises(SnapshotWriteError, match="disk full"):
        write_snapshots([snapshot_from_update(incident_update())], tmp_path)
    # AND the report written meanwhile was removed too
    assert leftovers(tmp_path) == []


def test_both_files_are_written_whole_from_their_two_threads(tmp_path: Path) -> None:
    # GIVEN a capture WHEN it is written (the JSON in its thread, the report here)
    written = write_snapshots([snapshot_from_update(incident_update())], tmp_path)
    # THEN both files are in place under their final names, no temporary file left
    assert written.report_path is not None
    assert leftovers(tmp_path) == sorted([written.json_path.name, written.report_path.name])
    assert not any(name.startswith(TMP_PREFIX) for name in os.listdir(tmp_path))
    # AND the JSON reads back, the report names the busy pool
    [back] = read_snapshots(written.json_path)
    assert back.threads is not None and back.threads.pools
    assert "busy" in written.report_path.read_text(encoding="utf-8")
