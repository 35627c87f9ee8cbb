"""The CPU one agent answer costs the thread that makes it, with workers spinning beside it.

    python bench/answer_cpu.py [--threads 1000] [--spin 100] [--rounds 10] [--root DIR]
                               [--profile full|delta|info] [--top 25]

In this process: a CherryPy app (``bench/bench_server.py``'s handlers) with a pool of
``--threads``, half of it busy (``--spin`` in ``/spin``, the rest in ``/sleep``) and the agent
installed; then ``--rounds`` times each of: the full ``/v1/threads`` answer, a delta
(``?since=`` the previous one) and ``/v1/info``, built and made into the HTTP response's bytes as
the server does (``server._response``), timed with
``time.thread_time()`` (this thread's CPU only: the waits for the GIL behind the spinners do not
count). Behind spinners every ``sys.getswitchinterval()`` (5 ms) of it is one forced hand-off of
the GIL, and one more wait in line (``bench/gil_floor.py``). ``--root DIR``: the agent from DIR.
``--profile KIND``: that answer kind's rounds also run under cProfile (enabled in the thread that
builds the answers, the only one it sees; timed by that thread's CPU clock, so the GIL waits do
not count) and the top ``--top`` functions by own time are printed; that kind's CPU figures then
include the profiler's overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--spin", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--root", default=None, help="import the agent from this directory")
    parser.add_argument(
        "--profile", choices=("full", "delta", "info"), default=None, help="cProfile this kind"
    )
    parser.add_argument("--top", type=int, default=25, help="functions printed with --profile")
    args = parser.parse_args()
    if args.threads < 2 or not 0 <= args.spin <= args.threads // 2 or args.rounds < 1:
        print("answer_cpu: need --threads >= 2, 0 <= --spin <= threads/2, --rounds >= 1")
        return 2
    sys.path.insert(0, args.root or str(HERE.parent))
    import cherrypy
    from bench_server import Root

    from cpinspect.agent import install, installed
    from cpinspect.agent.server import _response

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": args.threads,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    cherrypy.tree.mount(Root(), "")
    install()
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    held: List[socket.socket] = []
    for path, count in (
        ("/sleep?s=900", args.threads // 2 - args.spin),
        ("/spin?s=900", args.spin),
    ):
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            held.append(s)
    time.sleep(3.0)  # the requests reach their handlers
    agent = installed()
    assert agent is not None
    probe = agent.threads_probe
    cpu: Dict[str, List[float]] = {"/v1/threads full": [], "/v1/threads delta": [], "/v1/info": []}
    sizes: Dict[str, int] = {}
    profiler: Optional[cProfile.Profile] = (
        cProfile.Profile(time.thread_time) if args.profile else None
    )
    cursor = probe.snapshot(None)["cursor"]

    def timed(kind: str, name: str, answer: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        on = profiler is not None and args.profile == kind
        t0 = time.thread_time()
        if on:
            profiler.enable()
        body = answer()
        text = _response(200, body, True)
        if on:
            profiler.disable()
        cpu[name].append(time.thread_time() - t0)
        sizes[name] = len(text)
        return body

    for _ in range(args.rounds):
        timed("full", "/v1/threads full", lambda: probe.snapshot(None))
        body = timed("delta", "/v1/threads delta", lambda c=cursor: probe.snapshot(c))
        cursor = body["cursor"]
        timed("info", "/v1/info", lambda: agent._info({})[1])
        time.sleep(0.05)
    print(
        f"answer_cpu: agent from {args.root or HERE.parent}; pool {args.threads}, "
        f"{args.threads // 2} busy, {args.spin} spinning; load avg {os.getloadavg()[0]:.2f}"
    )
    for name, values in cpu.items():
        low, mid = min(values), statistics.median(values)
        print(
            f"  {name:<18} CPU min {low * 1000:6.2f} ms  median {mid * 1000:6.2f} ms  "
            f"({low / 0.005:.1f} switch intervals at the min)  {sizes[name] / 1e6:.2f} MB"
        )
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        print(f"cProfile of {args.profile} ({args.rounds} answers), by own time:")
        print(out.getvalue())
    os._exit(0)  # workers stuck in /sleep or /spin would keep the interpreter alive


if __name__ == "__main__":
    sys.exit(main())
