"""A saved snapshot as a session: the same Update a live session gives, and honest refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import pytest

from cpinspect.errors import CpinspectError, SnapshotFileError
from cpinspect.model import Snapshot, SourceKind, SourceLine
from cpinspect.snapshots import snapshot_from_update, write_snapshots
from cpinspect.sources.base import Capability, LinkState, Poller
from cpinspect.sources.file import FileSession
from tests.tui.fakes import (
    GIL_HOLDER,
    INFO,
    T0,
    fallback_update,
    incident_update,
    shop_routes,
    thread_locals,
)

DB_LINE = SourceLine("/srv/shop/shop/db.py", 41, "        return cur.fetchall()")


def agent_snapshot(taken_at: float = T0) -> Snapshot:
    """The agent alone: no routes, no locals."""
    return snapshot_from_update(incident_update(taken_at))


def full_snapshot(taken_at: float = T0) -> Snapshot:
    """Agent joined with py-spy, the GIL holder, routes, locals, a source line, a note."""
    up = replace(fallback_update(taken_at), pyspy_joined=True, threads_source=None)
    snap = snapshot_from_update(
        up, routes=shop_routes(taken_at), locals_=(thread_locals(),), notes=("by hand",)
    )
    return replace(snap, source_lines=(DB_LINE,))


def session_of(snapshots: Sequence[Snapshot], tmp_path: Path) -> FileSession:
    written = write_snapshots(snapshots, tmp_path, reveal=True, report=False)
    return FileSession.open(written.json_path)


def test_it_is_a_poller(tmp_path: Path) -> None:
    # GIVEN a session on a saved file  THEN the TUI can hold it where it holds a live one
    session: Poller = session_of([agent_snapshot()], tmp_path)
    assert session.capabilities == frozenset()


def test_poll_gives_the_snapshot_as_a_live_session_would(tmp_path: Path) -> None:
    # GIVEN a saved capture of agent + py-spy with the GIL holder and a stale part
    snap = full_snapshot()
    session = session_of([snap], tmp_path)
    # WHEN polled
    update = session.poll()
    # THEN the update carries the snapshot, from the file, at its own time
    assert update.fetched_at == snap.taken_at
    assert update.state is LinkState.LIVE
    assert update.source_kind is SourceKind.FILE
    assert update.source_label == str(session.path) and session.path.endswith(".json")
    assert update.info == INFO and update.threads == snap.threads
    assert update.gil_holder == GIL_HOLDER
    assert update.threads_source is SourceKind.AGENT and update.pyspy_joined is True
    assert update.warnings == snap.notes and "by hand" in update.warnings
    assert update.stale == ("pools",)
    assert update.message == ""
    # and polling again gives the same (a file does not change under the session)
    assert session.poll() == update


@pytest.mark.parametrize(
    ("source", "threads_source", "joined"),
    [
        (SourceKind.AGENT, SourceKind.AGENT, False),
        (SourceKind.PYSPY, SourceKind.PYSPY, False),
        (SourceKind.BOTH, SourceKind.AGENT, True),
    ],
)
def test_threads_source_is_the_snapshots_own(
    tmp_path: Path, source: SourceKind, threads_source: SourceKind, joined: bool
) -> None:
    # GIVEN snapshots whose threads came from each live source
    session = session_of([replace(agent_snapshot(), source=source)], tmp_path)
    # WHEN polled  THEN the header can say where the threads came from
    update = session.poll()
    assert update.threads_source is threads_source and update.pyspy_joined is joined


def test_a_saved_update_captures_back_to_the_same_snapshot(tmp_path: Path) -> None:
    # GIVEN a session on a saved capture
    snap = full_snapshot()
    session = session_of([snap], tmp_path)
    # WHEN what it shows is captured again
    again = snapshot_from_update(
        session.poll(), routes=session.routes(), locals_=session.current.locals
    )
    # THEN it is the same snapshot (source, notes, staleness, GIL holder alike)
    assert replace(again, source_lines=snap.source_lines, revealed=True) == replace(
        snap, revealed=True
    )


def test_stepping_through_a_series(tmp_path: Path) -> None:
    # GIVEN a series of three captures a second apart
    series = [agent_snapshot(T0 + i) for i in range(3)]
    session = session_of(series, tmp_path)
    assert session.count == 3 and session.index == 0
    assert session.poll().fetched_at == T0
    # WHEN stepped forward  THEN each poll shows the next one
    assert session.step(1) is True and session.index == 1
    assert session.poll().fetched_at == T0 + 1
    # WHEN stepped past the end  THEN it stops at the last and says it did not move
    assert session.step(5) is True and session.index == 2
    assert session.step(1) is False and session.index == 2
    assert session.current.taken_at == T0 + 2
    # WHEN stepped back past the start  THEN it stops at the first
    assert session.step(-10) is True and session.index == 0
    assert session.step(-1) is False and session.index == 0


def test_capabilities_follow_the_current_snapshot(tmp_path: Path) -> None:
    # GIVEN a series: first with routes and locals, then the agent alone
    session = session_of([full_snapshot(T0), agent_snapshot(T0 + 1)], tmp_path)
    # THEN the first can show routes and locals, both say it is a series, none is live
    assert session.capabilities == {Capability.ROUTES, Capability.LOCALS, Capability.SERIES}
    session.step(1)
    assert session.capabilities == {Capability.SERIES}
    never = {Capability.LIVE, Capability.RESOLVE, Capability.LOAD_AGENT, Capability.NATIVE}
    assert not never & session.capabilities


def test_routes_and_locals_come_from_the_file(tmp_path: Path) -> None:
    # GIVEN a capture with routes and the stuck worker's locals
    session = session_of([full_snapshot()], tmp_path)
    # THEN they are what was captured
    assert session.routes() == shop_routes()
    assert session.thread_locals(GIL_HOLDER) == thread_locals()


def test_routes_or_locals_that_were_not_captured(tmp_path: Path) -> None:
    # GIVEN a capture without routes or locals, and one with locals of another thread only
    bare = session_of([agent_snapshot()], tmp_path)
    # WHEN asked for them  THEN one line each says why and what to do
    with pytest.raises(CpinspectError, match=r"no routes.*without the agent"):
        bare.routes()
    with pytest.raises(CpinspectError, match=r"--locals"):
        bare.thread_locals(GIL_HOLDER)
    other = session_of([full_snapshot()], tmp_path)
    with pytest.raises(CpinspectError, match="none were captured for this thread"):
        other.thread_locals(12345)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda s: s.resolve("/cart", "GET", "localhost"), "cannot resolve"),
        (lambda s: s.set_native(True), "cannot switch native"),
        (lambda s: s.load_agent(), "cannot load the agent"),
    ],
    ids=["resolve", "native", "load_agent"],
)
def test_what_only_a_live_process_can_do(
    tmp_path: Path, call: Callable[[FileSession], object], words: str
) -> None:
    # GIVEN a saved capture
    session = session_of([full_snapshot()], tmp_path)
    # WHEN asked for something only the live process can answer
    with pytest.raises(CpinspectError) as err:
        call(session)
    # THEN one line says so and says to attach to the live process
    message = str(err.value)
    assert "\n" not in message and words in message and "attach" in message


def test_it_is_its_own_line_reader(tmp_path: Path) -> None:
    # GIVEN a series whose first capture kept a source line the code no longer has
    later = replace(agent_snapshot(T0 + 1), source_lines=(replace(DB_LINE, text="# rewritten"),))
    session = session_of([full_snapshot(), later], tmp_path)
    # THEN lines are those captured with the snapshot shown, never read from disk
    assert session.line(DB_LINE.filename, 41) == DB_LINE.text
    assert session.line("/srv/shop/shop/reports.py", 88) is None
    session.step(1)
    assert session.line(DB_LINE.filename, 41) == "# rewritten"
    session.close()  # nothing to release; still answers
    assert session.line(DB_LINE.filename, 41) == "# rewritten"


def test_open_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    # GIVEN a file that is not a snapshot
    path = tmp_path / "notes.json"
    path.write_text("[]")
    # WHEN opened as a session  THEN the reader's one-line error comes through
    with pytest.raises(SnapshotFileError) as err:
        FileSession.open(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
