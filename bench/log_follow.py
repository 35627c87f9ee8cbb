"""The Log tab following a burst of 5,000 records/s for 60 s: the real TUI on the real agent.

    python bench/log_follow.py [--seconds 60] [--rate 5000] [--interval 1.0]

A real CherryPy target (``tests/apps/log_app.py``, the agent installed, errors going nowhere) logs
``--rate`` records per second (``GET /many?n=250``: 250 ``cherrypy.log`` records and one access
line per request, paced by a client thread) while the real ``InspectorApp`` on the real
``AgentSession`` polls it every ``--interval`` seconds with the Log tab shown and following, under
Textual's Pilot in this process. Printed: records produced (the agent's own sequence numbers),
received by the inspector and reported missed (``received + missed == produced`` must hold: the
inspector keeps up or says exactly how many it lost), what the store and the panel hold, whether
it still follows, and the inspector's and the target's RSS before and at most during the burst.
The agent side alone (the cursor at the inspector's pace, and what capture costs a request) is
``bench/log_burst.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine  # noqa: E402

from cpinspect.attach.discovery import find_agent  # noqa: E402
from cpinspect.model import LogRecord  # noqa: E402
from cpinspect.sources.agent import AgentSource  # noqa: E402
from cpinspect.sources.live import AgentSession  # noqa: E402
from cpinspect.tui.app import InspectorApp  # noqa: E402
from cpinspect.tui.widgets.log_panel import LogPanel  # noqa: E402
from tests.helpers import spawn_ready  # noqa: E402

PER_REQUEST = 250


async def follow(port: int, pid: int, seconds: float, rate: float, interval: float) -> None:
    source = AgentSource(find_agent(pid).connect_path)
    session = AgentSession(source, source.info(), pid=pid)
    app = InspectorApp(session, interval=interval, clock=time.time)
    produced = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            start, n = time.monotonic(), 0
            while not stop.is_set():
                client.get("http://127.0.0.1:%d/many?n=%d" % (port, PER_REQUEST))
                n += PER_REQUEST + 1  # and its access line
                produced[0] = n
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

    me, target = psutil.Process(), psutil.Process(pid)
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("4")
        while app.polls_received < 2:
            await pilot.pause(0.1)
        before = sum(1 for e in app.store.log if isinstance(e, LogRecord))
        base_latest = app.store.log_state.latest
        rss0, trss0 = me.memory_info().rss, target.memory_info().rss
        rss_max, trss_max = rss0, trss0
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            await pilot.pause(0.5)
            rss_max = max(rss_max, me.memory_info().rss)
            trss_max = max(trss_max, target.memory_info().rss)
        stop.set()
        loader.join(10)
        elapsed = time.monotonic() - start
        final = AgentSource(find_agent(pid).connect_path).log(after=0, limit=1).latest
        for _ in range(60):  # let the inspector read the last records
            await pilot.pause(0.5)
            if session.logs.cursor is not None and session.logs.cursor >= final:
                break
        state = app.store.log_state
        received = session.logs.total
        produced_seq = final - base_latest
        panel = app.query_one(LogPanel)
        print(
            f"produced {produced_seq} records in {elapsed:.1f} s ({produced_seq / elapsed:.0f}/s,"
            f" the client asked for {produced[0]})"
        )
        print(
            f"inspector received {received - before} and was told it missed {state.missed}: "
            f"received + missed == produced: {received - before + state.missed == produced_seq}"
        )
        print(
            f"store holds {len(app.store.log)} entries (cap 10,000); panel rows "
            f"{len(panel.view.rows)}; still following: {panel.view.follow}"
        )
        print(
            f"inspector RSS {rss0 / 2**20:.1f} -> at most {rss_max / 2**20:.1f} MiB; "
            f"target RSS {trss0 / 2**20:.1f} -> at most {trss_max / 2**20:.1f} MiB"
        )
        await pilot.press("q")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="cpinspect-follow-") as tmp:
        log = Path(tmp) / "app.out"
        with spawn_ready(["-m", "tests.apps.log_app"], log, "log app") as m:
            asyncio.run(
                follow(int(m.group(1)), int(m.group(2)), args.seconds, args.rate, args.interval)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
