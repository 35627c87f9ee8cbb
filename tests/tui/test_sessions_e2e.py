"""The Sessions tab on a real CherryPy process through the real agent socket: one user's slow
request holds the session lock while two more of theirs wait; the panel names all three and
jumps to the holder's thread, and shows no session id or value."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.sessions_panel import SessionsPanel
from tests.helpers import run_cli, spawn_ready
from tests.integration.test_sessions_cli import Contended
from tests.integration.test_sessions_cli import contended as _contended

from .helpers import first_data, wait_until

contended = _contended
"""The module-scoped app with the held lock (tests/integration/test_sessions_cli.py)."""


@pytest.fixture
def app(contended: Contended) -> Iterator[InspectorApp]:
    source = AgentSource(find_agent(contended.pid).connect_path)
    session = AgentSession(source, source.info(), pid=contended.pid)
    yield InspectorApp(session, interval=0.5)


async def test_the_panel_names_the_holder_and_both_waiters_and_jumps(
    app: InspectorApp, contended: Contended
) -> None:
    async with app.run_test(size=(150, 45)) as pilot:
        await first_data(pilot)
        # WHEN the Sessions tab opens and is ordered by lock (o three times)
        await pilot.press("3")
        panel = app.query_one(SessionsPanel)
        await wait_until(pilot, lambda: panel.sessions is not None, what="the sessions")
        for _ in range(3):
            await pilot.press("o")
            await wait_until(pilot, lambda: not panel.reading, what="the next order")
        await wait_until(
            pilot,
            lambda: panel.sessions is not None and panel.sessions.apps[0].page.sort == "lock",
            what="the lock order",
        )
        await wait_until(pilot, lambda: "waiter 2" in panel.details_text, what="both waiters")
        # THEN the summary and the diagnosis say it, and the details name the three requests
        status = panel.status_text
        assert "1 locked now · 2 waiting for a lock" in status
        assert "lock has been held" in status and "by GET /slow" in status
        details = panel.details_text
        assert "GET /slow from 127.0.0.1" in details
        assert details.count("GET /whoami from 127.0.0.1") == 2
        # AND no session id or stored value is anywhere on screen
        screen = app.export_screenshot()
        for user in contended.ids:
            assert contended.ids[user] not in screen
            assert contended.values[user] not in screen
        # WHEN the held session (erin's) is revealed, after the confirmation
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: panel.revealed is not None, what="the reveal")
        await pilot.pause()
        # THEN her value is on screen and nobody else's, and still no id
        screen = app.export_screenshot()
        assert contended.values["erin"] in panel.details_text
        assert contended.values["frank"] not in screen and contended.values["grace"] not in screen
        assert not any(sid in screen for sid in contended.ids.values())
        # AND moving to the next session hides it again
        await pilot.press("down")
        await pilot.pause()
        assert contended.values["erin"] not in app.export_screenshot()
        await pilot.press("up")
        await pilot.pause()
        # WHEN t jumps to the holder
        await pilot.press("t")
        await pilot.pause()
        # THEN the Threads tab shows the thread serving /slow
        assert app.tabs.active == "threads"
        thread = app.threads_panel.selected_thread
        assert thread is not None and thread.request is not None
        assert thread.request.path == "/slow"


async def test_a_stale_lock_finding_reads_info_with_the_info_glyph(tmp_path: Path) -> None:
    # GIVEN file sessions whose one .lock file a process that is gone wrote (as after a restart)
    store = tmp_path / "store"
    store.mkdir()
    args = ["-m", "tests.apps.sessions_app", "file", "--path", str(store)]
    with spawn_ready(args, tmp_path / "sessions.log", "file sessions") as m:
        port, pid = int(m.group(1)), int(m.group(2))
        r = httpx.get("http://127.0.0.1:%d/login" % port, params={"user": "a", "secret": "s"})
        sid = str(r.cookies["session_id"])
        gone = subprocess.Popen(["true"])
        gone.wait()
        (store / ("session-%s.lock" % sid)).write_text("%d\n" % gone.pid)
        # WHEN `cpinspect sessions` prints the diagnosis
        out = run_cli("sessions", str(pid))
        assert out.returncode == 0, out.stderr
        # THEN its line carries the info glyph with the INFO label (it read "INFO" alone)
        (line,) = [ln for ln in out.stdout.splitlines() if "stale lock file" in ln]
        assert line.startswith("  ℹ INFO      app '/': stale lock file of session "), line
        # WHEN the Sessions tab shows the same store
        source = AgentSource(find_agent(pid).connect_path)
        app = InspectorApp(AgentSession(source, source.info(), pid=pid), interval=0.5)
        async with app.run_test(size=(150, 45)) as pilot:
            await first_data(pilot)
            await pilot.press("3")
            panel = app.query_one(SessionsPanel)
            await wait_until(pilot, lambda: "stale lock" in panel.status_text, what="the finding")
            # THEN the glyph and the label agree there too (it read "⚠ INFO")
            (shown,) = [ln for ln in panel.status_text.splitlines() if "stale lock" in ln]
            assert shown.startswith("ℹ INFO      app '/': stale lock file of session "), shown
            assert "⚠" not in panel.status_text
