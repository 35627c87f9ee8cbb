"""``cpinspect detach PID``: remove the agent from a process (hooks, threads, socket).

Its files stay where they are: CherryPy's Autoreloader would restart the app if an imported
file changed or vanished. The target keeps serving.
"""

from __future__ import annotations

import argparse

from cpinspect.attach.inject import PICKUP_TIMEOUT, detach
from cpinspect.cli.common import parse_pid
from cpinspect.errors import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "detach", help="remove the agent from a running process (it keeps serving)"
    )
    parser.add_argument("pid", help="pid of the CherryPy process")
    parser.add_argument(
        "--pickup-timeout",
        type=float,
        default=PICKUP_TIMEOUT,
        metavar="SECONDS",
        help="how long the target's main thread gets to run the removal (default %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pid = parse_pid(args.pid)
    if pid is None:
        raise UsageError("give the pid of the process to detach from")
    detach(pid, pickup_timeout=args.pickup_timeout)
    print("agent removed from pid %d" % pid)
    return 0
