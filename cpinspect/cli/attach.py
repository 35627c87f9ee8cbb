"""``cpinspect attach PID`` / ``--socket PATH``: the live inspector."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Optional

from cpinspect.cli.common import add_target_arguments, open_from_args
from cpinspect.errors import SnapshotWriteError, UsageError
from cpinspect.memory import tune_malloc
from cpinspect.sources import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from cpinspect.capture_trigger import AutoSnapshot
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
    auto = parser.add_argument_group(
        "automatic snapshots",
        "with --auto-snapshot, a snapshot series is saved (and announced) when a critical "
        "finding holds or a request is slow, as `cpinspect watch` does",
    )
    auto.add_argument(
        "--auto-snapshot", action="store_true", help="save a snapshot series on its own"
    )
    auto.add_argument(
        "--auto-after",
        type=float,
        default=10.0,
        metavar="N",
        help="when a critical finding has held N seconds (default 10)",
    )
    auto.add_argument(
        "--auto-slow",
        type=float,
        default=30.0,
        metavar="M",
        help="when a request has run longer than M seconds (default 30)",
    )
    auto.add_argument(
        "--auto-cooldown",
        type=float,
        default=300.0,
        metavar="S",
        help="at most one capture per S seconds (default 300)",
    )
    auto.add_argument(
        "--auto-dir",
        default="cpinspect-captures",
        metavar="DIR",
        help="directory of the captures, created 0700 (default ./cpinspect-captures)",
    )
    auto.add_argument(
        "--auto-max-size",
        default="100M",
        metavar="SIZE",
        help="the captures' total size; the oldest are removed past it (default 100M)",
    )
    parser.set_defaults(func=run)


def auto_snapshot(args: argparse.Namespace) -> Optional[AutoSnapshot]:
    """The ``--auto-*`` options, checked (``UsageError`` in one line); None without
    ``--auto-snapshot``. The directory is created now, so a bad one is said before the TUI."""
    if not getattr(args, "auto_snapshot", False):
        return None
    from cpinspect.capture_trigger import (
        AutoSnapshot,
        CaptureDirError,
        CaptureSettings,
        TriggerConfig,
        parse_size,
        prepare_directory,
    )
    from cpinspect.snapshots import check_directory

    trigger = TriggerConfig(after=args.auto_after, slow=args.auto_slow, cooldown=args.auto_cooldown)
    problems = trigger.problems(prefix="--auto-")
    size = parse_size(str(args.auto_max_size))
    if size is None or size < 1:
        problems.append(
            "--auto-max-size takes a size such as 100M, 512k or 2G, not %r" % args.auto_max_size
        )
    if problems:
        raise UsageError(problems[0])
    assert size is not None
    try:
        prepare_directory(args.auto_dir)
    except CaptureDirError as exc:
        raise SnapshotWriteError("cannot save captures: %s" % exc) from None
    check_directory(args.auto_dir)
    return AutoSnapshot(trigger, CaptureSettings(directory=args.auto_dir, max_size=size))


def run(args: argparse.Namespace) -> int:
    tune_malloc()
    auto = auto_snapshot(args)
    return run_tui(open_from_args(args), interval=args.interval, auto=auto)


def run_tui(opened: OpenedSession, interval: float, auto: Optional[AutoSnapshot] = None) -> int:
    """Run the inspector on an opened session until the user quits; the session is closed."""
    from cpinspect.tui.app import InspectorApp

    app = InspectorApp(
        opened.session,
        interval=interval,
        source_lines=opened.source_lines,
        clock=time.time,
        auto_snapshot=auto,
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

    tune_malloc()
    target = str(pid) if pid is not None else None
    return run_tui(open_session(target, socket=socket, timeout=timeout), interval=interval)
