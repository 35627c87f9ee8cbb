"""Run the demo shop: ``python -m cpinspect.demo.app --port 0 [--threads 6]``.

Serves on 127.0.0.1 only, with a small worker pool and the cpinspect agent on. Prints
``READY port=<port> pid=<pid>`` on stdout (flushed) once the engine has started; SIGTERM or
Ctrl-C stops it. Runs inside the target: stdlib, cherrypy and the agent only, Python 3.8 syntax.
"""

import argparse
import os
import signal
import sys
from types import FrameType
from typing import List, Optional

import cherrypy

from cpinspect.demo import _lifeline, db, shop

HOST = "127.0.0.1"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cpinspect.demo.app", description="The cpinspect demo shop."
    )
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument(
        "--no-agent", action="store_true", help="do not load the cpinspect agent (for comparison)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if not 1 <= args.threads <= 64:
        parser.error("--threads must be between 1 and 64")
    return args


def configure(port: int, threads: int, agent: bool) -> None:
    cherrypy.config.update(
        {
            "server.socket_host": HOST,
            "server.socket_port": port,
            "server.thread_pool": threads,
            # Off on purpose, although CherryPy enables it outside "production": a
            # `pip install -e` edit of any imported file would re-exec the demo mid-incident.
            "engine.autoreload.on": False,
            "log.screen": True,
        }
    )
    if agent:
        # Importing the plugin registers CherryPy's "inspector" config namespace.
        from cpinspect.agent import plugin  # noqa: F401

        cherrypy.config.update({"inspector.on": True})
    app_config = {
        # "/products" answers directly instead of redirecting to "/products/".
        "/": {"tools.trailing_slash.on": False},
        # Staged mistake (see shop.py): a relative dir and no tools.staticdir.root, so
        # CherryPy raises ValueError and answers 500 for every /static/... request.
        "/static": {"tools.staticdir.on": True, "tools.staticdir.dir": "assets"},
        # Logins: RAM sessions (the default), default (implicit) locking; see Account.statement.
        "/account": {"tools.sessions.on": True, "tools.sessions.timeout": 30},
    }
    cherrypy.tree.mount(shop.Root(), "", app_config)


def _exit_now(signum: int, frame: Optional[FrameType]) -> None:
    """SIGTERM or Ctrl-C: remove the agent's socket, then leave at once.

    Not ``engine.exit()``: cheroot joins every worker without a time limit once its grace period
    is over, and workers blocked on the database or the stock lock cannot be interrupted, so an
    orderly exit would hang for as long as the incident lasts. The demo keeps no state worth
    saving; the kernel closes its sockets.
    """
    plugin = sys.modules.get("cpinspect.agent.plugin")
    if plugin is not None:
        try:
            plugin.uninstall()
        except Exception:  # noqa: BLE001 - leaving is what matters now
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _lifeline.die_with_parent()
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)

    database = db.FakeDatabaseServer(HOST)
    database.start()
    db.configure(database.address)

    configure(args.port, args.threads, agent=not args.no_agent)
    cherrypy.engine.start()
    if cherrypy.engine.state != cherrypy.engine.states.STARTED:
        sys.stderr.write("the CherryPy engine did not start\n")
        return 1
    port = cherrypy.server.bound_addr[1]
    sys.stdout.write(f"READY port={port} pid={os.getpid()}\n")
    sys.stdout.flush()
    try:
        cherrypy.engine.block()
    finally:
        database.stop()
        sys.stdout.flush()
        sys.stderr.flush()
        # Non-daemon workers still stuck in a handler would keep the interpreter alive.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
