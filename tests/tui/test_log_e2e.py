"""End to end: the real Log tab on a real CherryPy process (``tests/apps/log_app.py``) through
the real agent: errors that go nowhere named with their fix, a handler's traceback as one
record, and the jumps between a record and the worker still serving its request."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Tuple

import httpx
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.log_panel import LogPanel
from tests.helpers import spawn_ready

from .helpers import wait_until


@pytest.fixture
def log_app(tmp_path: Path) -> Iterator[Tuple[int, int]]:
    """The app with the agent, no screen output and no log file: errors go nowhere."""
    with spawn_ready(["-m", "tests.apps.log_app"], tmp_path / "app.out", "log app") as m:
        yield int(m.group(1)), int(m.group(2))


def live_app(pid: int) -> InspectorApp:
    source = AgentSource(find_agent(pid).connect_path)
    session = AgentSession(source, source.info(), pid=pid)
    return InspectorApp(session, interval=0.3, clock=time.time)


async def test_the_log_tab_on_a_real_app(log_app: Tuple[int, int]) -> None:
    port, pid = log_app
    base = "http://127.0.0.1:%d" % port
    tag = uuid.uuid4().hex[:8]
    app = live_app(pid)
    holder = threading.Thread(
        target=lambda: httpx.get(base + "/hold?seconds=30&marker=" + tag, timeout=40),
        daemon=True,
    )
    try:
        async with app.run_test(size=(140, 36)) as pilot:
            await pilot.press("4")
            panel = app.query_one(LogPanel)
            # THEN the panel names errors going nowhere, with the config line that fixes it
            await wait_until(
                pilot, lambda: "errors go nowhere" in panel.routing_text, 15, "the routing line"
            )
            assert "log.error_file" in panel.routing_text
            # WHEN a handler fails
            assert httpx.get(base + "/boom?marker=" + tag, timeout=10).status_code == 500
            # THEN its traceback arrives as one record, tagged with its request
            await wait_until(
                pilot,
                lambda: any(
                    ("ValueError: handler failed: " + tag) in line
                    for line in panel.view.lines_text()
                ),
                15,
                "the handler's error",
            )
            # WHEN a request holds a worker after logging
            holder.start()
            await wait_until(
                pilot,
                lambda: any("holding: " + tag in line for line in panel.view.lines_text()),
                15,
                "the held request's record",
            )
            # AND the user searches for it and jumps to its thread
            await pilot.press("slash", *("holding: " + tag), "enter", "end", "t")
            await wait_until(pilot, lambda: app.tabs.active == "threads", 5, "the Threads tab")
            # THEN the worker serving /hold is selected
            thread = app.threads_panel.selected_thread
            assert thread is not None and thread.request is not None
            assert thread.request.path == "/hold" and thread.busy
            # WHEN e on that worker: back to its records only
            await pilot.press("e")
            await wait_until(pilot, lambda: app.tabs.active == "log", 5, "the Log tab")
            shown = panel.view.lines_text()
            assert any("holding: " + tag in line for line in shown)
            assert not any("handler failed" in line for line in shown)
            assert "request GET /hold" in panel.caption_text
            await pilot.press("q")
    finally:
        httpx.get(base + "/release", timeout=10)
        if holder.ident is not None:  # started
            holder.join(10)
