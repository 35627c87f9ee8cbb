"""Write SVG screenshots of the real inspector on the real demo: ``make screenshots``.

    python scripts/screenshots.py OUTPUT_DIR

Starts the demo app and its staged incident, attaches the TUI through the agent socket (as
``cpinspect demo`` does), waits until the incident is on screen, and saves each view: the
Threads panel, the Routes panel with the demo's staged routing mistakes, the Sessions panel on
a held session lock, the Log panel with the demo's failing handler's traceback opened. Then it
saves two
snapshots of the incident with the real ``cpinspect snapshot`` command and opens them as
``cpinspect open`` does: the first alone, and both (their difference, on the Series tab).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Tuple

from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from cpinspect.attach.discovery import find_agent
from cpinspect.demo.runner import DemoProcesses
from cpinspect.model import LogRecord
from cpinspect.snapshots import read_snapshots
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.file import FileSession
from cpinspect.sources.live import AgentSession
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.log_panel import LogPanel
from cpinspect.tui.widgets.routes_panel import RouteItem, RoutesPanel
from cpinspect.tui.widgets.series_panel import SeriesPanel
from cpinspect.tui.widgets.sessions_panel import SessionsPanel
from cpinspect.tui.widgets.stack_view import StackView

Prepare = Callable[[Pilot[Any], InspectorApp], Awaitable[None]]


async def until(
    pilot: Pilot[Any], predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: timed out waiting for %s" % what)
        await pilot.pause(0.05)


def has_source_line(plain: str) -> bool:
    """The stack pane shows an app frame's source line (indented under the frame)."""
    return any(line.startswith("       ") and line.strip() for line in plain.splitlines())


def keys(*pressed: str) -> Prepare:
    """A Threads view: press ``pressed``, then wait for source lines in the stack pane."""

    async def prepare(pilot: Pilot[Any], app: InspectorApp) -> None:
        for key in pressed:
            await pilot.press(key)
        stack = app.query_one(StackView)
        await until(
            pilot,
            lambda: has_source_line(stack.plain),
            10,
            "source lines in the stack pane",
        )

    return prepare


def child(node: TreeNode[RouteItem], prefix: str) -> TreeNode[RouteItem]:
    for c in node.children:
        if str(c.label).startswith(prefix):
            return c
    raise SystemExit("screenshots: no %r in the routes tree" % prefix)


async def routes_on_summary(pilot: Pilot[Any], app: InspectorApp) -> None:
    """Routes tab, the reports node open, the cursor on the unexposed ``summary``."""
    await pilot.press("2")
    panel = app.query_one(RoutesPanel)
    await until(pilot, lambda: panel.routes is not None, 10, "the routes")
    await pilot.pause()
    tree = panel.routes_tree
    root = child(tree.root.children[0], "/  object")
    tree.move_cursor(root)
    await pilot.press("enter")
    await pilot.pause()
    reports = child(root, "reports")
    tree.move_cursor(reports)
    await pilot.press("enter")
    await pilot.pause()
    tree.move_cursor(child(reports, "summary"))
    await until(pilot, lambda: "not exposed" in panel.details_text, 5, "the summary's details")


async def resolve_summary(pilot: Pilot[Any], app: InspectorApp) -> None:
    """The same, and the resolve box's verdict on ``/reports/summary``, once the demo's load
    has asked for it (its "answered lately" line then has the 404s to count)."""
    await routes_on_summary(pilot, app)
    await until(
        pilot,
        lambda: any("/reports/summary ended 404" in f.title for f in app.store.findings),
        60,
        "the load's requests for /reports/summary",
    )
    panel = app.query_one(RoutesPanel)
    await pilot.press("r", *"/reports/summary", "enter")
    await until(pilot, lambda: panel.resolves >= 1, 10, "the verdict")


async def sessions_locked(pilot: Pilot[Any], app: InspectorApp) -> None:
    """Sessions tab, locked first: dana's session held by her statement, two requests waiting."""
    await pilot.press("3")
    panel = app.query_one(SessionsPanel)
    await until(pilot, lambda: panel.sessions is not None, 10, "the sessions")
    for _ in range(3):  # expiry → -expiry → size → lock
        await pilot.press("o")
        await until(pilot, lambda: not panel.reading, 10, "the next order")
    await until(
        pilot,
        lambda: "waiter 2" in panel.details_text and "lock has been held" in panel.status_text,
        60,  # the statement holds the lock ~20 s at a time; the demo may be between two
        "the held lock, its two waiters and the diagnosis",
    )


async def log_with_traceback(pilot: Pilot[Any], app: InspectorApp) -> None:
    """Log tab: the demo's failing handler, its traceback opened under its record."""
    await pilot.press("4")
    panel = app.query_one(LogPanel)
    view = panel.view

    def failing() -> int:
        for pos, (_, entry, _) in enumerate(view.shown):
            if isinstance(entry, LogRecord) and "WINTER" in (entry.traceback or ""):
                return pos
        return -1

    await until(pilot, lambda: failing() >= 0, 30, "the failing handler's record")
    await pilot.pause(3.0)  # a few more records after it
    view.cursor = failing()
    view.action_cursor(0)
    await pilot.press("enter")
    await pilot.pause()


async def findings_listed(pilot: Pilot[Any], app: InspectorApp) -> None:
    """The findings list (``f``): the starved pool and dana's held session lock, with evidence."""

    def both() -> bool:
        kinds = {f.kind for f in app.store.findings}
        return "pool-starvation" in kinds and "sessions-lock" in kinds

    await until(pilot, both, 60, "the starvation and the session lock findings")
    await pilot.press("f")
    await pilot.pause(0.5)


VIEWS: Tuple[Tuple[str, Tuple[int, int], Prepare], ...] = (
    ("threads.svg", (120, 34), keys()),
    ("findings.svg", (120, 34), findings_listed),
    ("threads-grouped.svg", (120, 34), keys("g")),
    ("threads-all.svg", (120, 34), keys("a")),
    ("threads-80x24.svg", (80, 24), keys()),
    ("routes.svg", (120, 34), routes_on_summary),
    ("routes-resolve.svg", (120, 34), resolve_summary),
    ("sessions.svg", (120, 34), sessions_locked),
)
LAST_VIEWS: Tuple[Tuple[str, Tuple[int, int], Prepare], ...] = (
    ("log.svg", (120, 34), log_with_traceback),
)
"""Shot after the snapshots: the snapshots want the incident as it is in its first minute."""


CHECKOUT = str(Path(__file__).resolve().parent.parent)
"""Where this clone lives: a machine path, kept out of the committed screenshots."""
MACHINE_PATHS = ((CHECKOUT, "~"), (sys.prefix, "venv"))
"""Machine paths and what the screenshots say instead (tracebacks name the venv's files)."""


def without_machine_paths(svg: str) -> str:
    """Each text run naming this checkout (source paths in the Routes details) says ``~``
    instead (the venv: ``venv``), padded at the run's end: the run keeps its length, so its
    ``textLength`` holds."""

    def neutral(match: re.Match[str]) -> str:
        body = match.group(2)
        for path, instead in MACHINE_PATHS:
            count = body.count(path)
            pad = "&#160;" * (count * max(0, len(path) - len(instead)))
            body = body.replace(path, instead) + pad
        return match.group(1) + body + match.group(3)

    return re.sub(r"(<text[^>]*>)([^<]*)(</text>)", neutral, svg)


async def shoot(
    demo: DemoProcesses, out: Path, name: str, size: Tuple[int, int], prepare: Prepare
) -> None:
    source = AgentSource(find_agent(demo.pid).connect_path)
    session = AgentSession(source, source.info(), pid=demo.pid)
    app = InspectorApp(session, interval=1.0, source_lines=SourceLines(demo.pid), clock=time.time)
    async with app.run_test(size=size) as pilot:

        def incident() -> bool:
            snap = app.store.threads
            return bool(
                snap
                and snap.pools
                and snap.pools[0].busy == snap.pools[0].size
                and snap.pools[0].queued > 0
            )

        await until(pilot, incident, 30, "the incident")
        await pilot.pause(4.0)  # a few samples in the sparkline, ages that read like an incident
        await prepare(pilot, app)
        await pilot.pause(0.3)
        (out / name).write_text(without_machine_paths(app.export_screenshot()))
        await pilot.press("q")
    print("wrote", out / name)


def capture(demo: DemoProcesses, where: Path) -> Path:
    """``cpinspect snapshot PID -o WHERE``, as a user runs it; the JSON file it wrote."""
    done = subprocess.run(
        [sys.executable, "-m", "cpinspect", "snapshot", str(demo.pid), "-o", str(where)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Path(done.stdout.splitlines()[0])


async def shoot_file(
    session: FileSession, out: Path, name: str, size: Tuple[int, int], tab: str
) -> None:
    app = InspectorApp(session, source_lines=session, initial_tab=tab)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.updates_applied >= 1, 10, "the saved snapshot")
        if tab == "threads":
            # Minutes into the demo the longest-running worker may be one with no app frame
            # (an upload still being read): show the first one whose stack has source lines.
            stack = app.query_one(StackView)
            for _ in range(8):
                await pilot.pause(0.5)
                if has_source_line(stack.plain):
                    break
                await pilot.press("down")
            await until(pilot, lambda: has_source_line(stack.plain), 5, "a stack with source")
        else:
            panel = app.query_one(SeriesPanel)
            await until(pilot, lambda: "compared with" in panel.text, 10, "the difference")
        await pilot.pause(0.5)
        (out / name).write_text(without_machine_paths(app.export_screenshot()))
        await pilot.press("q")
    print("wrote", out / name)


async def main(out: Path, only: Tuple[str, ...] = ()) -> None:
    """Every view, or only the live views named in ``only`` (``sessions.svg`` …)."""
    out.mkdir(parents=True, exist_ok=True)
    # 8 workers, as `cpinspect demo` runs it: the session-lock scenario needs them.
    with DemoProcesses(threads=8) as demo, tempfile.TemporaryDirectory() as saved:
        for name, size, prepare in VIEWS:
            if not only or name in only:
                await shoot(demo, out, name, size, prepare)
        if only:
            return
        first = capture(demo, Path(saved))
        time.sleep(3.0)  # some requests finish, new ones start: a difference worth showing
        second = capture(demo, Path(saved))
        await shoot_file(FileSession.open(first), out, "snapshot-open.svg", (120, 34), "threads")
        both = FileSession(
            "%s + %s" % (first.name, second.name), read_snapshots(first) + read_snapshots(second)
        )
        both.step(1)
        await shoot_file(both, out, "snapshot-diff.svg", (120, 34), "series")
        for name, size, prepare in LAST_VIEWS:
            await shoot(demo, out, name, size, prepare)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python scripts/screenshots.py OUTPUT_DIR [NAME.svg ...]")
    asyncio.run(main(Path(sys.argv[1]), tuple(sys.argv[2:])))
