"""``cpinspect attach PID`` / ``--socket PATH``: the live inspector."""

from __future__ import annotations

import argparse
import time
from typing import Optional

from cpinspect.attach.inject import inject
from cpinspect.cli.common import (
    Connection,
    add_target_arguments,
    connect,
    parse_pid,
    pyspy_for,
    pyspy_only,
)
from cpinspect.errors import AgentNotFound, UsageError
from cpinspect.sources.agent import DEFAULT_TIMEOUT
from cpinspect.sources.live import AgentSession, PySpySession


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "attach", help="open the live inspector on a running CherryPy process"
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "--inject",
        action="store_true",
        help="load the agent into the process first when it has none (gdb, or sys.remote_exec "
        "on Python >= 3.14)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "inject", False):
        pid = parse_pid(args.pid)
        if pid is None:
            raise UsageError("--inject needs a pid, not --socket")
        inject(pid)  # a no-op when the agent is already there
    try:
        conn = connect(args)
    except AgentNotFound as exc:
        pid = parse_pid(args.pid)
        assert pid is not None  # by socket, a missing agent is a missing socket
        source, _ = pyspy_only(pid, exc)
        return run_pyspy_tui(PySpySession(source, pid), pid, args.interval)
    return run_tui(
        conn, by_socket=args.socket is not None, interval=args.interval, timeout=args.timeout
    )


def run_pyspy_tui(session: PySpySession, pid: int, interval: float) -> int:
    from cpinspect.sources.source_lines import SourceLines
    from cpinspect.tui.app import InspectorApp

    app = InspectorApp(session, interval=interval, source_lines=SourceLines(pid), clock=time.time)
    try:
        app.run()
    finally:
        session.close()
    return int(app.return_code or 0)


def run_tui(conn: Connection, by_socket: bool, interval: float, timeout: float) -> int:
    from cpinspect.sources.source_lines import SourceLines
    from cpinspect.tui.app import InspectorApp

    lines = SourceLines(conn.pid)
    session = AgentSession(
        conn.source,
        conn.info,
        pid=None if by_socket else conn.pid,
        timeout=timeout,
        on_new_pid=lines.retarget,
        pyspy=pyspy_for(conn.pid),
    )
    app = InspectorApp(session, interval=interval, source_lines=lines, clock=time.time)
    try:
        app.run()
    finally:
        session.close()  # idempotent: the app closes it on exit too
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
    return run_tui(conn, by_socket=socket is not None, interval=interval, timeout=timeout)
