"""The CPU one agent answer costs the thread that makes it, with workers spinning beside it.

    python bench/answer_cpu.py [--threads 1000] [--spin 100] [--rounds 10] [--root DIR]

In this process: a CherryPy app (``bench/bench_server.py``'s handlers) with a pool of
``--threads``, half of it busy (``--spin`` in ``/spin``, the rest in ``/sleep``) and the agent
installed; then ``--rounds`` times each of: the full ``/v1/threads`` answer, a delta
(``?since=`` the previous one) and ``/v1/info``, built and encoded as the server does, timed with
``time.thread_time()`` (this thread's CPU only: the waits for the GIL behind the spinners do not
count). Behind spinners every ``sys.getswitchinterval()`` (5 ms) of it is one forced hand-off of
the GIL, and one more wait in line (``bench/gil_floor.py``). ``--root DIR``: the agent from DIR.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--spin", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--root", default=None, help="import the agent from this directory")
    args = parser.parse_args()
    if args.threads < 2 or not 0 <= args.spin <= args.threads // 2 or args.rounds < 1:
        print("answer_cpu: need --threads >= 2, 0 <= --spin <= threads/2, --rounds >= 1")
        return 2
    sys.path.insert(0, args.root or str(HERE.parent))
    import cherrypy
    from bench_server import Root

    from cpinspect.agent import install, installed
    from cpinspect.agent.jsonparts import encode

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
    cursor = probe.snapshot(None)["cursor"]
    for _ in range(args.rounds):
        t0 = time.thread_time()
        text = encode(probe.snapshot(None)).encode()
        cpu["/v1/threads full"].append(time.thread_time() - t0)
        sizes["/v1/threads full"] = len(text)
        t0 = time.thread_time()
        body = probe.snapshot(cursor)
        text = encode(body).encode()
        cpu["/v1/threads delta"].append(time.thread_time() - t0)
        sizes["/v1/threads delta"] = len(text)
        cursor = body["cursor"]
        t0 = time.thread_time()
        text = encode(agent._info({})[1]).encode()
        cpu["/v1/info"].append(time.thread_time() - t0)
        sizes["/v1/info"] = len(text)
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
    os._exit(0)  # workers stuck in /sleep or /spin would keep the interpreter alive


if __name__ == "__main__":
    sys.exit(main())
