"""A trivial CherryPy app the benchmarks start as a subprocess.

``python bench/bench_server.py [--agent] [--threads 8]`` prints
``READY port=<port> pid=<pid> socket=<agent socket or ->`` once serving on 127.0.0.1.

Handlers: ``/`` answers "ok"; ``/sleep?s=`` sleeps (a worker blocked with the GIL released);
``/spin?s=`` burns CPU in pure Python (a worker competing for the GIL).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Optional, TypeVar

import cherrypy

F = TypeVar("F", bound=Callable[..., Any])
expose: Callable[[F], F] = cherrypy.expose  # cherrypy has no type hints


class Root:
    @expose
    def index(self) -> str:
        return "ok"

    @expose
    def sleep(self, s: str = "1") -> str:
        time.sleep(min(float(s), 900.0))
        return "slept"

    @expose
    def spin(self, s: str = "1") -> str:
        end = time.monotonic() + min(float(s), 900.0)
        x = 0
        while time.monotonic() < end:
            for i in range(1000):  # pure-Python work between clock reads
                x = (x + i * 7) % 1000003
        return str(x)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", action="store_true", help="install the cpinspect agent")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (-1: do not)")
    args = parser.parse_args()
    if args.cpu >= 0:
        # Before any thread starts: threads inherit the affinity of the thread creating them.
        os.sched_setaffinity(0, {args.cpu})
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": args.threads,
            "server.shutdown_timeout": 1,
            "engine.autoreload.on": False,
            "checker.on": False,
            # No access log: it would dominate the cost of a trivial request and hide the agent's.
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    cherrypy.tree.mount(Root(), "")
    socket_path: Optional[str] = None
    if args.agent:
        from cpinspect.agent import install

        socket_path = install()
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print(f"READY port={port} pid={os.getpid()} socket={socket_path or '-'}", flush=True)
    try:
        cherrypy.engine.block()
    finally:
        os._exit(0)  # workers stuck in /sleep or /spin would keep the interpreter alive
    return 0


if __name__ == "__main__":
    sys.exit(main())
