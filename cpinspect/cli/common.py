"""What several subcommands share: parsing a target and connecting to its agent."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Tuple

from cpinspect.attach.discovery import check_socket_file, find_agent, pid_from_socket_path
from cpinspect.errors import (
    AgentNotFound,
    CpinspectError,
    NotCherryPy,
    PermissionDenied,
    PySpyMissing,
    UsageError,
)
from cpinspect.model import ProcessInfo, ThreadsSnapshot
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource
from cpinspect.sources.pyspy import PySpySource, find_pyspy, looks_like_cherrypy


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pid", nargs="?", help="pid of the CherryPy process, or :PORT (the one listening on it)"
    )
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
    if value.startswith(":"):
        # Imported here: psutil is needed only when attaching by port.
        from cpinspect.attach.processes import find_by_port, parse_port_target

        port = parse_port_target(value)
        assert port is not None
        return find_by_port(port)
    if not value.isdigit():
        raise UsageError(
            "'%s' is not a pid (a positive number) or :PORT; `cpinspect ps` lists them" % text
        )
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


def pyspy_for(pid: Optional[int]) -> Optional[PySpySource]:
    """A py-spy reader of ``pid`` beside the agent, or None when there is no py-spy.

    Whether py-spy may read the process (ptrace) shows at its first run; the session then says
    why once and carries on with the agent alone.
    """
    if pid is None:
        return None
    try:
        return PySpySource(pid, executable=find_pyspy())
    except PySpyMissing:
        return None


def pyspy_only(pid: int, why_no_agent: AgentNotFound) -> Tuple[PySpySource, ThreadsSnapshot]:
    """Read a process without the agent through py-spy; refuse what is not CherryPy."""
    try:
        source = PySpySource(pid, executable=find_pyspy())
        snapshot = source.threads()
    except PySpyMissing as exc:
        raise AgentNotFound("%s (and %s)" % (why_no_agent, exc)) from None
    except PermissionDenied as exc:
        raise PermissionDenied(
            "pid %d has no cpinspect agent, and py-spy may not read it: %s" % (pid, exc)
        ) from None
    if not looks_like_cherrypy(snapshot):
        raise NotCherryPy(
            "pid %d runs Python but no CherryPy: none of its %d threads is in cherrypy or "
            "cheroot code (is it the right process? `ps -ef | grep cherry`)"
            % (pid, len(snapshot.threads))
        )
    return source, snapshot
