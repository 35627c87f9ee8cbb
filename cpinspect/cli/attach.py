"""``cpinspect attach PID`` / ``--socket PATH``: the live inspector."""

from __future__ import annotations

import argparse
import time
from typing import Optional

from cpinspect.cli.common import add_target_arguments, connect
from cpinspect.sources.agent import DEFAULT_TIMEOUT
from cpinspect.sources.live import AgentSession


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "attach", help="open the live inspector on a running CherryPy process"
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    conn = connect(args)
    session = AgentSession(
        conn.source, conn.info, pid=None if args.socket else conn.pid, timeout=args.timeout
    )
    return run_tui(session, conn.pid, args.interval)


def run_tui(session: AgentSession, pid: Optional[int], interval: float) -> int:
    from cpinspect.sources.source_lines import SourceLines
    from cpinspect.tui.app import InspectorApp

    app = InspectorApp(session, interval=interval, source_lines=SourceLines(pid), clock=time.time)
    try:
        app.run()
    finally:
        session.close()
    return int(app.return_code or 0)


def open_inspector(
    pid: Optional[int] = None,
    socket: Optional[str] = None,
    interval: float = 1.0,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Attach to a pid (or a socket) and run the TUI until the user quits. For ``demo``."""
    args = argparse.Namespace(
        pid=str(pid) if pid is not None else None, socket=socket, timeout=timeout
    )
    conn = connect(args)
    session = AgentSession(
        conn.source, conn.info, pid=conn.pid if socket is None else None, timeout=timeout
    )
    return run_tui(session, conn.pid, interval)
