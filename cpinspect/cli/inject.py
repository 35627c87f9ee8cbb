"""``cpinspect inject PID``: load the agent into a running CherryPy process, print its socket.

For scripts: nothing but the socket path goes to stdout; how long it took goes to stderr with
``--verbose``. Injecting into a process that already has the agent changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from cpinspect.attach.inject import PICKUP_TIMEOUT, inject
from cpinspect.cli.common import parse_pid
from cpinspect.errors import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inject",
        help="load the agent into a running CherryPy process (no restart) and print its socket",
    )
    add_inject_arguments(parser)
    parser.set_defaults(func=run)


def add_inject_arguments(parser: argparse.ArgumentParser, with_pid: bool = True) -> None:
    if with_pid:
        parser.add_argument("pid", help="pid of the CherryPy process")
    parser.add_argument(
        "--pickup-timeout",
        type=float,
        default=PICKUP_TIMEOUT,
        metavar="SECONDS",
        help="how long the target's main thread gets to run the bootstrap (default %(default)s)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="say what took how long")


def run(args: argparse.Namespace) -> int:
    pid = parse_pid(args.pid)
    if pid is None:
        raise UsageError("give the pid of the process to inject into")
    result = inject(pid, pickup_timeout=args.pickup_timeout)
    assert result.endpoint is not None
    if args.verbose:
        if result.already:
            print("agent already loaded in pid %d" % pid, file=sys.stderr)
        else:
            print(
                "agent loaded in pid %d: scheduling %.2f s, total %.2f s"
                % (pid, result.schedule_seconds, result.total_seconds),
                file=sys.stderr,
            )
    print(result.endpoint.socket_path)
    return 0
