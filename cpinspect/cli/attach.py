"""``cpinspect attach PID`` / ``--socket PATH``: the live inspector."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Optional

from cpinspect.cli.common import add_target_arguments, open_from_args
from cpinspect.sources import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from cpinspect.sources.open import OpenedSession


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
    return run_tui(open_from_args(args), interval=args.interval)


def run_tui(opened: OpenedSession, interval: float) -> int:
    """Run the inspector on an opened session until the user quits; the session is closed."""
    from cpinspect.tui.app import InspectorApp

    app = InspectorApp(
        opened.session, interval=interval, source_lines=opened.source_lines, clock=time.time
    )
    try:
        app.run()
    finally:
        opened.session.close()  # idempotent: the app closes it on exit too
    return int(app.return_code or 0)


def open_inspector(
    pid: Optional[int] = None,
    socket: Optional[str] = None,
    interval: float = 1.0,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Attach to a pid (or a socket) and run the TUI until the user quits. For ``demo``."""
    from cpinspect.sources.open import open_session

    target = str(pid) if pid is not None else None
    return run_tui(open_session(target, socket=socket, timeout=timeout), interval=interval)
