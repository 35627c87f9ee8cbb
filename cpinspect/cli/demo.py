"""``cpinspect demo``: the bundled shop with a staged incident, and the inspector on it."""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import Optional

from cpinspect.demo.runner import DemoProcesses
from cpinspect.errors import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a demo CherryPy app with a staged incident and inspect it",
        description="Start the bundled demo shop (127.0.0.1, a free port, the agent on) and a "
        "load generator that starves its worker pool, then open the inspector on it. Every "
        "child process stops when the inspector exits.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="worker threads of the demo app (default 8; from 8 on, one user's slow request "
        "holds their session lock while two more of theirs wait)",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "--no-load", action="store_true", help="start the app without the staged incident"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds the incident lasts before the load stops by itself (default 600)",
    )
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if not 2 <= args.threads <= 64:
        raise UsageError("--threads must be between 2 and 64")
    if not 0.1 <= args.interval <= 3600:
        raise UsageError("--interval must be between 0.1 and 3600 seconds")
    if not 1 <= args.duration <= 86400:
        raise UsageError("--duration must be between 1 and 86400 seconds")


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    # Turn SIGTERM and SIGHUP (before or after the inspector, which handles them itself while it
    # runs) into an exception so the `with` block below stops the children. (A SIGKILL cannot be
    # caught: the children then get SIGTERM from the kernel, see demo.runner.)
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    _check(args)
    from cpinspect.cli.attach import open_inspector
    from cpinspect.tui.hangup import on_forced_exit

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:  # nohup: leave SIGHUP ignored
            previous[sig] = signal.signal(sig, _terminate)
    demo = DemoProcesses(threads=args.threads, load=not args.no_load, duration=args.duration)
    # If leaving takes too long (tui/hangup.py ends the process with os._exit), the children
    # go first; registered for the whole life of `demo`, its own stop() included.
    remove = on_forced_exit(demo.kill)
    try:
        with demo:
            return open_inspector(pid=demo.pid, interval=args.interval)
    finally:
        remove()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
