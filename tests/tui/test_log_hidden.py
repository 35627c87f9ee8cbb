"""The Log tab hidden, the inspector asks the agent only for the notable records (issue 13); shown,
it fetches what was skipped from the ring and follows everything: the real TUI (``run_test`` +
Pilot) on a real CherryPy process through the real agent.

- ``tests/apps/log_app.py``: records logged while the tab is hidden (INFO messages, 200s, a
  handler's error) all appear, in seq order, once it opens; the error badge and the
  errors-per-minute sparkline count the error while it is hidden; a snapshot taken while
  hidden holds the 200s; hiding and showing again catches up again.
- ``tests/apps/incidents.py``: the MIME-mismatch finding (200 access records under a static
  mount) fires with the Log tab never opened.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple

import httpx
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.model import LogGap, LogRecord
from cpinspect.snapshots import read_snapshots
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.sources.logfeed import LogFeed
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.log_panel import LogPanel
from tests.helpers import spawn_ready

from .helpers import wait_until


@pytest.fixture(scope="module")
def log_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[int, int]]:
    tmp = tmp_path_factory.mktemp("loghidden")
    with spawn_ready(["-m", "tests.apps.log_app"], tmp / "app.out", "log app") as m:
        yield int(m.group(1)), int(m.group(2))


def live_app(pid: int, **kwargs: object) -> InspectorApp:
    source = AgentSource(find_agent(pid).connect_path)
    session = AgentSession(source, source.info(), pid=pid)
    return InspectorApp(session, interval=0.3, clock=time.time, **kwargs)  # type: ignore[arg-type]


def feed_of(app: InspectorApp) -> LogFeed:
    feed = getattr(app.poller, "logs", None)
    assert isinstance(feed, LogFeed)
    return feed


def held(app: InspectorApp, text: str) -> List[LogRecord]:
    return [r for r in app.store.log_records() if text in r.message or text in (r.traceback or "")]


async def test_records_logged_while_the_log_tab_was_hidden_all_show_when_it_opens(
    log_app: Tuple[int, int], tmp_path: Path
) -> None:
    port, pid = log_app
    base = "http://127.0.0.1:%d" % port
    tag = uuid.uuid4().hex[:8]
    app = live_app(pid, snapshot_dir=str(tmp_path))
    async with app.run_test(size=(140, 36)) as pilot:
        feed = feed_of(app)
        # GIVEN the Threads tab shown: the feed asks for the notable records only
        await wait_until(pilot, lambda: app.store.update is not None, 15, "the first data")
        assert app.tabs.active == "threads" and feed.full is False
        # WHEN INFO messages, 200s and a handler's error are logged while the tab is hidden
        for i in range(3):
            assert httpx.get(base + "/say?msg=info-%s-%d" % (tag, i), timeout=10).status_code == 200
        assert httpx.get(base + "/boom?marker=" + tag, timeout=10).status_code == 500
        assert httpx.get(base + "/say?msg=after-%s" % tag, timeout=10).status_code == 200
        # THEN the error arrives (the badge on the tab and the sparkline count it) ...
        await wait_until(pilot, lambda: held(app, "handler failed: " + tag), 15, "the error")
        panel = app.query_one(LogPanel)
        await wait_until(
            pilot,
            lambda: "new error" in str(app.tabs.get_tab("log").label),
            5,
            "the error badge",
        )
        assert panel.new_errors >= 1
        assert "0 errors/min" not in panel.caption_text and "errors/min" in panel.caption_text
        # ... and the INFO messages and 200s were not read (they stay in the agent's ring)
        await pilot.pause(0.8)
        assert not held(app, "info-" + tag) and not held(app, "after-" + tag)

        # WHEN a snapshot is taken with the tab still hidden
        await pilot.press("s")
        await wait_until(pilot, lambda: bool(app.captures), 20, "the snapshot")
        # THEN its recent records are complete: the INFO messages and the 200s are in it
        (saved,) = read_snapshots(next(p for p in app.captures if p.endswith(".json")))
        messages = [r.message for r in saved.log]
        assert sum(("info-%s-" % tag) in m for m in messages) == 3 * 2  # the message, its 200
        assert any("handler failed: " + tag in (r.traceback or "") for r in saved.log)
        assert [r.seq for r in saved.log] == sorted(r.seq for r in saved.log)

        # WHEN the Log tab opens
        await pilot.press("4")
        await wait_until(pilot, lambda: held(app, "after-" + tag), 15, "the skipped records")
        assert feed.full is True
        # THEN every record of the run is there once, in seq order, with no "missed" gap
        mine = [
            r for r in app.store.log_records() if tag in r.message or tag in (r.traceback or "")
        ]
        seqs = [r.seq for r in mine]
        assert seqs == sorted(set(seqs))
        infos = [r.message for r in mine if not r.access and "info-" + tag in r.message]
        assert [m.endswith("info-%s-%d" % (tag, i)) for i, m in enumerate(infos)] == [True] * 3
        assert len([r for r in mine if r.access and r.status == 200]) == 4  # each /say
        assert not any(isinstance(e, LogGap) for e in app.store.log)
        # AND the panel lists them in that order
        lines = panel.view.lines_text()
        where = [
            next(i for i, line in enumerate(lines) if ("info-%s-%d" % (tag, n)) in line)
            for n in range(3)
        ]
        error_at = next(i for i, line in enumerate(lines) if ("handler failed: " + tag) in line)
        after_at = next(i for i, line in enumerate(lines) if ("after-" + tag) in line)
        assert where == sorted(where) and where[-1] < error_at < after_at

        # WHEN the tab is hidden again, more is logged, and it opens again
        await pilot.press("1")
        await wait_until(pilot, lambda: feed.full is False, 5, "the filtered feed")
        assert httpx.get(base + "/say?msg=again-%s" % tag, timeout=10).status_code == 200
        await pilot.pause(0.8)
        await pilot.press("4")
        # THEN that one comes too, once
        await wait_until(pilot, lambda: held(app, "again-" + tag), 15, "the second catch-up")
        await pilot.pause(0.8)
        assert len([r for r in held(app, "again-" + tag) if not r.access]) == 1
        seqs = [r.seq for r in app.store.log_records() if r.seq]
        assert len(seqs) == len(set(seqs))
        await pilot.press("q")


# --- the MIME finding with the Log tab never opened -----------------------------------------


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[int, int]]:
    tmp = tmp_path_factory.mktemp("incidents-hidden")
    args = ["-m", "tests.apps.incidents", "--stage", "incidents", "--threads", "4"]
    args += ["--static-dir", str(tmp / "static"), "--release-file", str(tmp / "release")]
    with spawn_ready(args, tmp / "app.log", "incidents app") as m:
        yield int(m.group(1)), int(m.group(2))


async def test_the_mime_finding_fires_with_the_log_tab_never_opened(
    incidents: Tuple[int, int],
) -> None:
    port, pid = incidents
    base = "http://127.0.0.1:%d" % port
    app = live_app(pid)
    async with app.run_test(size=(140, 36)) as pilot:
        feed = feed_of(app)
        # GIVEN the inspector on the Threads tab, the routes read (the static mounts known)
        await wait_until(pilot, lambda: "/static" in " ".join(feed.paths), 20, "the paths")
        assert feed.full is False
        # WHEN a module script is served as text/plain from the static mount
        response = httpx.get(base + "/static/app.mjs", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"] == "text/plain"
        # THEN the finding names it, the Log tab never opened
        await wait_until(
            pilot,
            lambda: any(f.id == "static-mime:|/static|.mjs" for f in app.store.findings),
            20,
            "the MIME finding",
        )
        assert app.tabs.active == "threads" and feed.full is False
        await pilot.press("q")
