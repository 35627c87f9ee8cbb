"""What several subcommands share: the target arguments, and opening what they name.

The logic lives in ``cpinspect.sources.open``; this is its command-line face.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from cpinspect.sources import DEFAULT_TIMEOUT

# Only what --help needs is imported at start-up (every subcommand's module is loaded to build
# the parser): the sources, the HTTP client and py-spy's reader load when a command runs.
if TYPE_CHECKING:
    from cpinspect.model import ProcessInfo
    from cpinspect.sources.agent import AgentSource
    from cpinspect.sources.open import OpenedSession
    from cpinspect.sources.pyspy import PySpySource

__all__ = [
    "Connection",
    "add_target_arguments",
    "connect",
    "hurry_slow_agent",
    "one_shot_grace",
    "open_from_args",
    "parse_pid",
    "pyspy_for",
]

SLOW_INFO = 0.2
"""An agent whose ``/v1/info`` (a few hundred bytes) took longer than this while opening queues
for the GIL: with 100 workers spinning in pure Python it took 0.35-0.8 s, and ``/v1/threads``
then takes seconds more (measured 2026-12-01); an agent not behind spinners answers it in a
few milliseconds even on a loaded machine."""
SLOW_AGENT_GRACE = 0.1
"""How long a one-shot command's poll then waits for the agent once py-spy's reading is in
(``AgentSession.agent_grace``, 0.5 s otherwise): its answer would come seconds later, and
py-spy already has every thread."""


def parse_pid(text: Optional[str]) -> Optional[int]:
    """``sources.open.parse_pid``: a pid, ``:PORT`` resolved to its listener, or None."""
    from cpinspect.sources.open import parse_pid as parse

    return parse(text)


def pyspy_for(pid: Optional[int]) -> Optional[PySpySource]:
    """``sources.open.pyspy_for``: py-spy for ``pid`` when it is installed and can read it."""
    from cpinspect.sources.open import pyspy_for as for_pid

    return for_pid(pid)


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
    args: argparse.Namespace,
    on_new_pid: Optional[Callable[[int], None]] = None,
    no_agent: Optional[Callable[[], None]] = None,
    ahead: Optional[Callable[[], bool]] = None,
) -> OpenedSession:
    """The session for the target named by ``args`` (``open_session``); raises
    ``CpinspectError``. A silent agent is no error: py-spy stands in."""
    from cpinspect.sources.open import open_session

    return open_session(
        args.pid,
        socket=args.socket,
        timeout=args.timeout,
        inject=bool(getattr(args, "inject", False)),
        on_new_pid=on_new_pid,
        no_agent=no_agent,
        ahead=ahead,
    )


def one_shot_grace(grace: float, info_took: Optional[float]) -> float:
    """The agent's grace for a one-shot command (``dump``, ``snapshot``): ``SLOW_AGENT_GRACE``
    when the agent's info took longer than ``SLOW_INFO``; ``grace`` otherwise, and whenever
    ``CPINSPECT_AGENT_GRACE`` sets one."""
    if info_took is None or info_took <= SLOW_INFO or "CPINSPECT_AGENT_GRACE" in os.environ:
        return grace
    return min(grace, SLOW_AGENT_GRACE)


def hurry_slow_agent(opened: OpenedSession) -> None:
    """Set the session's grace for the agent as ``one_shot_grace`` says."""
    session = opened.session
    grace = getattr(session, "agent_grace", None)
    if isinstance(grace, float):
        session.agent_grace = one_shot_grace(grace, opened.info_took)  # type: ignore[attr-defined]


@dataclass
class Connection:
    source: AgentSource
    info: ProcessInfo
    pid: Optional[int]
    """The target's pid as seen from here (None when attached by socket to a foreign pid ns)."""


def connect(args: argparse.Namespace) -> Connection:
    """For commands that need the agent itself (``routes``, ``resolve``): connect and read its
    info, or raise a clear error — a silent agent included, since py-spy cannot answer them."""
    from cpinspect.sources.open import connect_agent

    link = connect_agent(pid=parse_pid(args.pid), socket=args.socket, timeout=args.timeout)
    if link.info is None:
        link.source.close()
        assert link.error is not None
        raise link.error
    return Connection(source=link.source, info=link.info, pid=link.pid)
