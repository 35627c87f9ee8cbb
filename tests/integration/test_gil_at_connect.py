"""The interpreter already stuck when the inspector arrives: a handler holds the GIL in a C call
(a catastrophic regex) BEFORE ``attach``/``dump`` start. The agent's socket is there but the
agent cannot answer; opening must not fail or wait twice — py-spy stands in from the first poll,
and the agent takes over once the regex ends (DESIGN.md invariant 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from cpinspect.model import SourceKind, ThreadInfo, ThreadsSnapshot
from cpinspect.protocol import snapshots_from_document
from cpinspect.snapshots import read_snapshots
from cpinspect.sources.base import LinkState, Update
from cpinspect.sources.live import AgentSession
from cpinspect.sources.open import open_session
from cpinspect.sources.pyspy import PySpySource
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.banner import Banner
from tests.conftest import TargetProcess, wait_for
from tests.helpers import BackgroundRequests, run_cli
from tests.tui.helpers import column, names, wait_until

REGEX = "/regex?n=28"
"""About 11 s with the GIL held here: long enough for a CLI process to start and read it."""


def regex_holder(snapshot: Optional[ThreadsSnapshot]) -> Optional[ThreadInfo]:
    """The thread holding the GIL inside the regex handler, if py-spy saw one."""
    if snapshot is None:
        return None
    for thread in snapshot.threads:
        top = thread.top_app_frame
        if thread.owns_gil and top is not None and top.function == "regex":
            return thread
    return None


def stuck_target(spawn_target) -> TargetProcess:
    """A 4-worker app whose interpreter is stuck in a regex, seen so from outside."""
    target = spawn_target("--threads", "4")
    BackgroundRequests(target.port, REGEX, 1)
    spy = PySpySource(target.pid, requests=False)
    try:
        wait_for(
            lambda: regex_holder(spy.threads()),
            timeout=15,
            interval=0.1,
            what="the regex holding the GIL",
        )
    finally:
        spy.close()
    return target


def test_open_session_on_a_stuck_interpreter_answers_from_py_spy_then_the_agent(spawn_target):
    # GIVEN the GIL held by a regex before anything attaches
    target = stuck_target(spawn_target)
    # WHEN the session is opened by pid
    opened = open_session(str(target.pid))
    try:
        # THEN it opens (no exception) on the agent, silent, with py-spy beside it
        session = opened.session
        assert isinstance(session, AgentSession)
        assert opened.kind is SourceKind.AGENT and opened.pid == target.pid
        assert opened.notes == (
            "agent not answering within 1.0 s — the interpreter may be stuck; threads from py-spy",
        )
        # AND the first poll shows py-spy's threads, the GIL holder named, in the regex
        first = session.poll()
        assert first.state is LinkState.LIVE
        assert first.effective_threads_source is SourceKind.PYSPY
        assert first.threads is not None
        holder = regex_holder(first.threads)
        assert holder is not None and first.gil_holder == holder.ident
        assert "interpreter may be stuck (GIL held by thread %s)" % holder.name in first.message
        # with the request read from py-spy's locals, and the process named for the header
        assert holder.request is not None and holder.request.path == "/regex"
        # it ran before py-spy's first look: its start is not known, its elapsed is a bound
        assert holder.request.started_before
        assert first.info is not None and first.info.pid == target.pid
        assert first.stale == ()  # nothing older is shown: there was nothing before

        # WHEN the regex ends
        # THEN the agent takes over and says so
        def agent_again() -> Optional[Update]:
            u = session.poll()
            return u if u.effective_threads_source is SourceKind.AGENT else None

        back = wait_for(agent_again, timeout=300, interval=0.2, what="the agent answering")
        assert isinstance(back, Update)
        assert back.state is LinkState.RECONNECTED and "answering again" in back.message
        assert back.info is not None and back.info.schema > 0  # the agent's own info now
        assert session.pid == target.pid
        later = session.poll()
        assert later.state is LinkState.LIVE and later.pyspy_joined
        assert later.effective_threads_source is SourceKind.AGENT
    finally:
        opened.session.close()


async def test_the_tui_on_a_stuck_interpreter_shows_the_banner_and_the_holder_first(
    spawn_target,
):
    # GIVEN the GIL held by a regex before the inspector starts
    target = stuck_target(spawn_target)
    opened = open_session(str(target.pid))
    app = InspectorApp(opened.session, source_lines=opened.source_lines)
    # WHEN the TUI runs on the session
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.query_one(Banner)
        await wait_until(
            pilot,
            lambda: "interpreter may be stuck" in banner.plain,
            timeout=15,
            what="the fallback banner",
        )
        # THEN the banner warns that py-spy stands in, naming the GIL holder
        assert banner.has_class("-warning")
        m = re.search(r"GIL held by thread (CP Server Thread-\d+)", banner.plain)
        assert m is not None, banner.plain
        # AND the holder's row leads the threads table, marked in words
        assert names(app)[0] == m.group(1)
        assert "GIL" in column(app, "state")[0]
        # AND its elapsed time reads as what is known: nothing at the first look, which found
        # it running, then the lower bound from that look on
        await wait_until(
            pilot,
            lambda: column(app, "elapsed")[0].strip().startswith("≥"),
            timeout=15,
            what="the holder's elapsed time as a lower bound",
        )
        assert names(app)[0] == m.group(1)
    opened.session.close()


def test_dump_on_a_stuck_interpreter_prints_py_spy_threads_and_exits_0(spawn_target):
    # GIVEN the GIL held by a regex before dump starts
    target = stuck_target(spawn_target)
    # WHEN `cpinspect dump PID` runs, allowed to wait 20 s for each of the agent's answers
    text = run_cli("dump", "--timeout", "20", str(target.pid))
    # THEN it exits 0 with the holder and its request, and one line on stderr says why
    assert text.returncode == 0, text.stderr
    assert "holds the GIL" in text.stdout and "GET /regex?n=28" in text.stdout
    # (the holder named, and what py-spy's threads lack)
    said = re.fullmatch(
        r"note: agent not answering within (\d+\.\d) s — the interpreter may be stuck \(GIL "
        r"held by thread CP Server Thread-\d+\); threads from py-spy; requests from py-spy's "
        r"locals; no pool numbers \(the agent has not answered yet\)",
        text.stderr.strip(),
    )
    assert said is not None, text.stderr
    # AND it did not wait out the 20 s: once py-spy had read every thread, the agent's first
    # answer was waited for only a moment more, and the note says how long it was waited for
    assert float(said.group(1)) < 20.0, text.stderr
    # WHEN `cpinspect dump --json PID` runs
    as_json = run_cli("dump", "--json", str(target.pid))
    # THEN its document reads back as one snapshot of py-spy's threads with the holder
    assert as_json.returncode == 0, as_json.stderr
    [snapshot] = snapshots_from_document(json.loads(as_json.stdout))
    assert snapshot.source is SourceKind.PYSPY
    holder = regex_holder(snapshot.threads)
    assert holder is not None and snapshot.gil_holder == holder.ident
    assert snapshot.info is not None and snapshot.info.pid == target.pid
    assert any("interpreter may be stuck" in note for note in snapshot.notes)


def test_snapshot_on_a_stuck_interpreter_saves_py_spy_threads(spawn_target, tmp_path):
    # GIVEN the GIL held by a regex before the capture starts
    target = stuck_target(spawn_target)
    # WHEN `cpinspect snapshot PID -o DIR` runs
    done = run_cli("snapshot", str(target.pid), "-o", str(tmp_path))
    # THEN it exits 0, says why the threads are py-spy's, and names the files it wrote
    assert done.returncode == 0, done.stderr
    assert "interpreter may be stuck" in done.stderr
    json_path, report_path = done.stdout.split()
    # AND the snapshot holds py-spy's threads with the holder and its request, with the source
    # line of the regex read at capture time
    [snapshot] = read_snapshots(json_path)
    assert snapshot.source is SourceKind.PYSPY
    holder = regex_holder(snapshot.threads)
    assert holder is not None and snapshot.gil_holder == holder.ident
    assert holder.request is not None and holder.request.path == "/regex"
    top = holder.top_app_frame
    assert top is not None and snapshot.line(top.filename, top.lineno)
    # AND the report puts the holder first among the busy workers
    report = Path(report_path).read_text(encoding="utf-8")
    busy = report.split("Busy workers (", 1)[1]
    first_thread = next(
        line for line in busy.splitlines()[1:] if holder.name in line or "CP " in line
    )
    assert holder.name in first_thread and "holds the GIL" in first_thread, busy[:600]
