"""Write SVG screenshots of the real inspector on the real demo: ``make screenshots``.

    python scripts/screenshots.py OUTPUT_DIR

Starts the demo app and its staged incident, attaches the TUI through the agent socket (as
``cpinspect demo`` does), waits until the incident is on screen, and saves each view.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Callable, Tuple

from textual.pilot import Pilot

from cpinspect.attach.discovery import find_agent
from cpinspect.demo.runner import DemoProcesses
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.live import AgentSession
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.stack_view import StackView

VIEWS: Tuple[Tuple[str, Tuple[int, int], Tuple[str, ...]], ...] = (
    ("threads.svg", (120, 34), ()),
    ("threads-grouped.svg", (120, 34), ("g",)),
    ("threads-all.svg", (120, 34), ("a",)),
    ("threads-80x24.svg", (80, 24), ()),
)


async def until(
    pilot: Pilot[Any], predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: timed out waiting for %s" % what)
        await pilot.pause(0.05)


async def shoot(
    demo: DemoProcesses, out: Path, name: str, size: Tuple[int, int], keys: Tuple[str, ...]
) -> None:
    source = AgentSource(find_agent(demo.pid).connect_path)
    session = AgentSession(source, source.info(), pid=demo.pid)
    app = InspectorApp(session, interval=1.0, source_lines=SourceLines(demo.pid), clock=time.time)
    async with app.run_test(size=size) as pilot:

        def incident() -> bool:
            snap = app.state.threads
            return bool(
                snap
                and snap.pools
                and snap.pools[0].busy == snap.pools[0].size
                and snap.pools[0].queued > 0
            )

        await until(pilot, incident, 30, "the incident")
        await pilot.pause(4.0)  # a few samples in the sparkline, ages that read like an incident
        for key in keys:
            await pilot.press(key)
        stack = app.query_one(StackView)
        await until(
            pilot,
            lambda: "recv(" in stack.plain or "acquire" in stack.plain,
            10,
            "source lines in the stack pane",
        )
        await pilot.pause(0.3)
        app.save_screenshot(filename=name, path=str(out))
        await pilot.press("q")
    print("wrote", out / name)


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with DemoProcesses(threads=6) as demo:
        for name, size, keys in VIEWS:
            await shoot(demo, out, name, size, keys)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/screenshots.py OUTPUT_DIR")
    asyncio.run(main(Path(sys.argv[1])))
