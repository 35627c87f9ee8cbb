"""How long cpinspect takes to give up, where the tests only check that it gives up and says why.

    python bench/give_up_times.py [--rounds 3]

The integration tests assert behaviour (the error, its words, nothing left running); the times
moved here, each printed beside the bound a test used to assert:

* ``inject`` into a CherryPy process whose main thread waits in C: ``MainThreadBusy`` after the
  pickup timeout (1 s here) -- was ``< 10 s`` in tests/integration/test_inject.py;
* a demo app that cannot start (``--threads 0``): ``DemoFailed`` once the app exits -- was
  ``< 15 s`` in tests/integration/test_demo.py;
* resolving a URL whose ``_cp_dispatch`` sleeps 4 s (tests/apps/routing_app.py ``/slow``): the
  answer marked abandoned at the resolver's time limit (2 s), the agent's own ``elapsed`` and the
  client's wall time -- was ``elapsed < 3.5 s`` in tests/integration/test_routes.py.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple
from urllib.parse import urlencode

from benchlib import ROOT, agent_get, machine, median

sys.path.insert(0, str(ROOT))

from cpinspect.attach.discovery import find_agent
from cpinspect.attach.inject import Injector
from cpinspect.demo.runner import DemoFailed, DemoProcesses
from cpinspect.errors import MainThreadBusy


def pickup_give_up() -> float:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import cherrypy, threading; print('up', flush=True); threading.Event().wait()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        t0 = time.perf_counter()
        try:
            Injector(proc.pid, pickup_timeout=1.0).inject()
        except MainThreadBusy:
            return time.perf_counter() - t0
        raise SystemExit("give_up_times: inject into a main thread stuck in C did not give up")
    finally:
        proc.kill()
        proc.wait(10)


def demo_give_up() -> float:
    demo = DemoProcesses(threads=0, load=True)
    t0 = time.perf_counter()
    try:
        demo.start()
    except DemoFailed:
        return time.perf_counter() - t0
    finally:
        demo.stop()
    raise SystemExit("give_up_times: the demo with --threads 0 started")


def resolve_abandon() -> Tuple[float, float]:
    """(the agent's elapsed, the client's wall time) for a resolution abandoned past the limit."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.routing_app", str(Path(tmp) / "static")],
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        try:
            assert proc.stdout is not None
            m = None
            for line in proc.stdout:
                m = re.match(r"READY port=(\d+) pid=(\d+)", line)
                if m:
                    break
            if m is None:
                raise SystemExit("give_up_times: the routing app did not start")
            path = find_agent(int(m.group(2))).connect_path
            query = urlencode({"path": "/slow/x", "method": "GET", "host": "127.0.0.1"})
            t0 = time.perf_counter()
            body = agent_get(path, "/v1/resolve?" + query, timeout=30)
            wall = time.perf_counter() - t0
            if not body["abandoned"]:
                raise SystemExit("give_up_times: /slow/x was not abandoned: %r" % body)
            return float(body["elapsed"]), wall
        finally:
            proc.kill()
            proc.wait(10)


def rounds(n: int, measure: Callable[[], float]) -> List[float]:
    return [measure() for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (3)")
    args = parser.parse_args()
    print(f"give_up_times: {machine()}\n")
    pickup = rounds(args.rounds, pickup_give_up)
    print(
        f"inject, main thread stuck in C (pickup timeout 1 s): MainThreadBusy after "
        f"median {median(pickup):.2f} s, max {max(pickup):.2f} s (tests used to assert < 10 s)"
    )
    demo = rounds(args.rounds, demo_give_up)
    print(
        f"demo that cannot start: DemoFailed after median {median(demo):.2f} s, "
        f"max {max(demo):.2f} s (tests used to assert < 15 s)"
    )
    resolved = [resolve_abandon() for _ in range(args.rounds)]
    agent = [a for a, _ in resolved]
    wall = [w for _, w in resolved]
    print(
        f"resolve abandoned (limit 2 s, user code sleeps 4 s): agent's elapsed median "
        f"{median(agent):.2f} s, max {max(agent):.2f} s; client wall time median "
        f"{median(wall):.2f} s, max {max(wall):.2f} s (tests used to assert elapsed < 3.5 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
