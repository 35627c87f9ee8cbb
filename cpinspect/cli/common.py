"""What several subcommands share: the target arguments, and opening what they name.

The logic lives in ``cpinspect.sources.open``; this is its command-line face.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Optional

from cpinspect.model import ProcessInfo
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource
from cpinspect.sources.open import (
    OpenedSession,
    connect_agent,
    open_session,
    parse_pid,
    pyspy_for,
)

__all__ = [
    "Connection",
    "add_target_arguments",
    "connect",
    "open_from_args",
    "parse_pid",
    "pyspy_for",
]


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pid", nargs="?", help="pid of the CherryPy process, or :PORT (the one listening on it)"
    )
    parser.add_argument("--socket", metavar="PATH", help="connect to this agent socket instead")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the agent per request (default %(default)s)",
    )


def open_from_args(
    args: argparse.Namespace, on_new_pid: Optional[Callable[[int], None]] = None
) -> OpenedSession:
    """The session for the target named by ``args`` (``open_session``); raises
    ``CpinspectError``. A silent agent is no error: py-spy stands in."""
    return open_session(
        args.pid,
        socket=args.socket,
        timeout=args.timeout,
        inject=bool(getattr(args, "inject", False)),
        on_new_pid=on_new_pid,
    )


@dataclass
class Connection:
    source: AgentSource
    info: ProcessInfo
    pid: Optional[int]
    """The target's pid as seen from here (None when attached by socket to a foreign pid ns)."""


def connect(args: argparse.Namespace) -> Connection:
    """For commands that need the agent itself (``routes``, ``resolve``): connect and read its
    info, or raise a clear error — a silent agent included, since py-spy cannot answer them."""
    link = connect_agent(pid=parse_pid(args.pid), socket=args.socket, timeout=args.timeout)
    if link.info is None:
        link.source.close()
        assert link.error is not None
        raise link.error
    return Connection(source=link.source, info=link.info, pid=link.pid)
