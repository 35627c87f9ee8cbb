"""What several subcommands share: parsing a target and connecting to its agent."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from cpinspect.attach.discovery import check_socket_file, find_agent, pid_from_socket_path
from cpinspect.errors import CpinspectError, UsageError
from cpinspect.model import ProcessInfo
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pid", nargs="?", help="pid of the CherryPy process")
    parser.add_argument("--socket", metavar="PATH", help="connect to this agent socket instead")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the agent (default %(default)s)",
    )


def parse_pid(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit():
        raise UsageError("'%s' is not a pid (a positive number); `ps` lists them" % text)
    return int(value)


@dataclass
class Connection:
    source: AgentSource
    info: ProcessInfo
    pid: Optional[int]
    """The target's pid as seen from here (None when attached by socket to a foreign pid ns)."""


def connect(args: argparse.Namespace) -> Connection:
    """Connect to the target named by ``args`` and read its info, or raise a clear error."""
    pid = parse_pid(args.pid)
    if (pid is None) == (args.socket is None):
        raise UsageError("give either a pid or --socket PATH")
    if args.socket is not None:
        check_socket_file(args.socket)
        source = AgentSource(args.socket, timeout=args.timeout)
    else:
        assert pid is not None
        endpoint = find_agent(pid)
        source = AgentSource(endpoint.connect_path, timeout=args.timeout)
    try:
        info = source.info()
    except CpinspectError:
        source.close()
        raise
    if pid is None:
        guess = pid_from_socket_path(args.socket)
        pid = info.pid if guess is None or guess == info.pid else None
    return Connection(source=source, info=info, pid=pid)
