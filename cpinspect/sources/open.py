"""One way in: from what the user typed (a pid, ``:PORT``, a socket or a snapshot file) to a
session the TUI and the headless commands poll.

``attach``, ``dump``, the picker, ``demo`` (and ``snapshot``/``open``) all call
``open_session``, so they agree on every case:

* a process with the agent: an ``AgentSession``, py-spy beside it when it can read the process;
* the agent's socket found but the agent silent (the GIL held inside a C call freezes it with
  every other thread): still an ``AgentSession``, opened without its info, whose first poll
  shows py-spy's threads at once — this is the moment py-spy is for, so opening never fails or
  waits twice on a silent agent (DESIGN.md invariant 1);
* a CherryPy process without the agent: a ``PySpySession``;
* a snapshot file: a ``FileSession``.

Everything else is a ``CpinspectError`` with one line (no such pid, not Python, not CherryPy,
another user's process, ptrace forbidden, py-spy missing, a stale socket...).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from cpinspect.attach.discovery import (
    check_socket_file,
    find_agent,
    pid_from_socket_path,
)
from cpinspect.errors import (
    AgentNotFound,
    AgentUnavailable,
    CpinspectError,
    EndpointError,
    NoSuchProcess,
    NotCherryPy,
    PermissionDenied,
    PySpyMissing,
    StaleSocket,
    UsageError,
)
from cpinspect.model import ProcessInfo, SourceKind, ThreadsSnapshot
from cpinspect.sources import early_info
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource
from cpinspect.sources.base import Poller
from cpinspect.sources.live import (
    AgentSession,
    PySpySession,
    socket_problem,
    stopped_reason,
)
from cpinspect.sources.pyspy import PySpySource, find_pyspy, looks_like_cherrypy
from cpinspect.sources.source_lines import LineReader, SourceLines

__all__ = [
    "DEFAULT_TIMEOUT",
    "AgentLink",
    "OpenedSession",
    "connect_agent",
    "open_session",
    "parse_pid",
    "pyspy_for",
    "pyspy_only",
]


@dataclass(frozen=True)
class OpenedSession:
    """A session ready to poll, and what its callers need beside it."""

    session: Poller
    """``AgentSession``, ``PySpySession`` or ``FileSession``."""
    pid: Optional[int]
    """The target's pid as seen from here; None for a file, or a socket whose process is out of
    our pid namespace."""
    source_lines: LineReader
    """Source lines of the frames: read through ``/proc/<pid>/root`` live (retargeted when the
    session reconnects to a restarted pid), or the ones a snapshot file captured."""
    kind: SourceKind
    """Where the session's data comes from (``agent``, ``py-spy``, ``file``)."""
    label: str
    """The socket path, ``py-spy pid N`` or the file name."""
    notes: Tuple[str, ...] = ()
    """One line each, for headless commands to print on stderr (no agent: threads read by
    py-spy; the agent silent at connect...). The TUI shows the session's own banner instead."""
    info_took: Optional[float] = None
    """Seconds the agent took to answer ``/v1/info`` while opening (None: no agent, or no
    answer). A tiny answer that took long means the agent queues for the GIL."""


@dataclass(frozen=True)
class AgentLink:
    """An agent socket connected to, and how its first ``info()`` went."""

    source: AgentSource
    pid: Optional[int]
    """The target's pid as seen from here, when it could be told."""
    info: Optional[ProcessInfo]
    """None when the agent did not answer (``error`` says why)."""
    by_socket: bool = False
    """Connected by socket path (a session then reconnects to that path, not to the service
    wherever it restarts)."""
    error: Optional[AgentUnavailable] = None
    """Why ``info`` is missing: the agent silent (``AgentUnavailable``), or an agent that
    answered without a readable ``/v1/info`` (``EndpointError``)."""
    info_took: Optional[float] = None
    """Seconds ``info`` took to come (None without it)."""
    waited: Optional[float] = None
    """Seconds waited for ``info`` when the wait was cut short because py-spy's reading came
    first (``connect_agent``'s ``ahead``); None when it was the source's timeout, or answered."""

    @property
    def silent(self) -> bool:
        """The agent did not answer at all (as opposed to answering badly)."""
        return self.error is not None and not isinstance(self.error, EndpointError)


# --------------------------------------------------------------------------------------------
# What the user typed


def parse_pid(text: Optional[str]) -> Optional[int]:
    """A pid from ``"4121"`` or ``":PORT"`` (the process listening on it); None for None."""
    if text is None:
        return None
    value = text.strip()
    if value.startswith(":"):
        # Imported here: psutil's process scan is needed only when attaching by port (and
        # attach.processes imports the sources).
        from cpinspect.attach.processes import find_by_port, parse_port_target

        port = parse_port_target(value)
        assert port is not None
        return find_by_port(port)
    if not value.isdigit():
        raise UsageError(
            "'%s' is not a pid (a positive number) or :PORT; `cpinspect ps` lists them" % text
        )
    return int(value)


def _is_path(text: str) -> bool:
    value = text.strip()
    return (
        not value.isdigit()
        and not value.startswith(":")
        and ("/" in value or os.path.lexists(value))
    )


# --------------------------------------------------------------------------------------------
# py-spy


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


# --------------------------------------------------------------------------------------------
# The agent


def _pid_of_socket(path: str) -> Optional[int]:
    """The pid (here) whose agent listens on ``path``, judged without asking the agent: the
    pid in the socket's name, if that process's agent socket is this very file."""
    guess = pid_from_socket_path(path)
    if guess is None:
        return None
    try:
        endpoint = find_agent(guess)
        return guess if os.path.samefile(endpoint.connect_path, path) else None
    except (CpinspectError, OSError):
        return None


AHEAD_GRACE = 0.1
"""Seconds a one-shot command still waits for the agent's first answer once py-spy's reading of
every thread is in (``connect_agent``'s ``ahead``). An agent that is not queued for the GIL
answers ``/v1/info`` in milliseconds, long before py-spy has read 200 threads (0.17 s) or 1,000
(0.5-0.8 s); behind 100 workers spinning in Python it took 0.2-0.9 s, and its threads answer
seconds more, so py-spy's reading stands in without that wait (a dump at 200 threads behind
spinners: 1.2-1.6 s, of which 0.2-0.9 s this wait, measured 2026-12-04)."""
AHEAD_FLOOR = 0.3
"""...and never less than this after the info was asked: an agent slowed only by a loaded
machine (not queued behind spinners) still answers, and with it the requests the dump shows.
Above ``cli.common.SLOW_INFO``, past which a dump waits only briefly for the threads anyway."""


def connect_agent(
    pid: Optional[int] = None,
    socket: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    ahead: Optional[Callable[[], bool]] = None,
) -> AgentLink:
    """Connect to the agent of ``pid`` (or at ``socket``) and ask for its info once.

    Waits at most ``timeout`` for it; ``ahead`` (a one-shot command's early py-spy run: whether
    its reading is in) cuts the wait for the info asked early to ``AHEAD_GRACE`` after the
    reading came. A silent agent is no error here (``link.silent``); a missing agent
    (``AgentNotFound``), a stale socket, a refusal and the like are.
    """
    if (pid is None) == (socket is None):
        raise UsageError("give either a pid or --socket PATH")
    if socket is not None:
        check_socket_file(socket)
        source = AgentSource(socket, timeout=timeout)
    else:
        assert pid is not None
        path = find_agent(pid).connect_path
        problem = socket_problem(pid, path)
        if problem:
            raise StaleSocket(problem)
        source = AgentSource(path, timeout=timeout)
    info: Optional[ProcessInfo] = None
    error: Optional[AgentUnavailable] = None
    asked = time.monotonic()
    early = early_info.take(pid, source.connect_path) if socket is None and pid else None
    answered, waited = _wait_early(early, timeout, ahead) if early is not None else (False, None)
    if early is not None and answered:
        # Asked once the info was in (a moment ago): not for an agent that did not answer it.
        threads = early_info.take(early.pid, source.connect_path, early_info.THREADS)
        if threads is not None:
            source.prefetch_threads(threads)  # the session's first poll reads it
    took: Optional[float] = None
    try:
        if early is not None and answered:
            # Asked at the command's start (``dump``, ``snapshot``): the same question, sooner.
            info = source.info_answered(early.body)
            took = early.took()
        elif early is not None and not early.done.is_set():
            raise AgentUnavailable(
                "agent did not answer within %.1f s — the interpreter may be stuck"
                % (timeout if waited is None else waited)
            )
        else:
            info = source.info()
    except AgentUnavailable as exc:
        # Timed out (or answered badly): not a reason to stop, the session copes with both.
        error = exc
    except CpinspectError:
        source.close()
        raise
    if info is None:
        took = None
    elif took is None:
        took = time.monotonic() - asked
    if socket is not None:
        if info is not None:
            guess = pid_from_socket_path(socket)
            pid = info.pid if guess is None or guess == info.pid else None
        else:
            pid = _pid_of_socket(socket)
    return AgentLink(
        source=source,
        pid=pid,
        info=info,
        by_socket=socket is not None,
        error=error,
        info_took=took,
        waited=waited,
    )


def _wait_early(
    early: early_info.Prefetch, timeout: float, ahead: Optional[Callable[[], bool]]
) -> Tuple[bool, Optional[float]]:
    """Whether the info asked early came within ``timeout`` of its sending; and, when ``ahead``
    said py-spy's reading came first and ``AHEAD_GRACE`` more passed without it (and
    ``AHEAD_FLOOR`` since it was asked), the seconds waited (None otherwise)."""
    if ahead is None or not early.asked.wait(early_info.ASK_WAIT) or early.sent is None:
        return early.wait(timeout), None
    deadline = early.sent + timeout
    landed: Optional[float] = None
    while True:
        now = time.monotonic()
        if landed is None and ahead():
            landed = now
        end = deadline
        if landed is not None:
            end = min(deadline, max(landed + AHEAD_GRACE, early.sent + AHEAD_FLOOR))
        if now >= end:
            break
        if early.done.wait(min(end - now, 0.01)):
            break
    if early.done.is_set() or landed is None or time.monotonic() >= deadline:
        return early.wait(0.0), None
    return False, time.monotonic() - early.sent


def _silent_note(link: AgentLink, pyspy: Optional[PySpySource]) -> str:
    head = stopped_reason(link.pid) or (
        "agent not answering within %.1f s — the interpreter may be stuck"
        % (link.source.timeout if link.waited is None else link.waited)
    )
    if pyspy is not None:
        return head + "; threads from py-spy"
    if link.pid is None:
        return head + "; py-spy cannot stand in (the target's pid is not known here)"
    return head + "; py-spy cannot stand in: `pip install py-spy`"


# --------------------------------------------------------------------------------------------
# The one way in


def open_session(
    target: Optional[str],
    *,
    socket: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    inject: bool = False,
    on_new_pid: Optional[Callable[[int], None]] = None,
    no_agent: Optional[Callable[[], None]] = None,
    ahead: Optional[Callable[[], bool]] = None,
) -> OpenedSession:
    """Open the session for ``target``: a pid (``"4121"``), ``":PORT"`` or a path (an agent
    socket, or a snapshot file); or the agent socket ``socket``.

    ``timeout`` is how long to wait for the agent per request (the one ``info()`` here too);
    a silent agent is not waited for again. ``inject`` loads the agent first into a process
    that has none. ``on_new_pid`` is called (from the polling thread) when a live session
    reconnects to a restarted process of the same service. ``no_agent`` is called when a pid
    turns out to have no agent, before py-spy reads it. ``ahead`` says whether a one-shot
    command's early py-spy reading is in (``connect_agent``). Raises ``CpinspectError``.
    """
    if (target is None) == (socket is None):
        raise UsageError("give either a pid (or :PORT, or a path) or --socket PATH")
    if target is not None and _is_path(target):
        path = target.strip()
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise NoSuchProcess("no such file or socket: %s" % path) from None
        except PermissionError:
            raise PermissionDenied(
                "cannot reach %s: its directory belongs to another user; run as that user or "
                "root" % path
            ) from None
        if stat.S_ISREG(mode):
            if inject:
                raise UsageError("--inject needs a pid, not a file")
            return _open_file(path)
        socket, target = path, None  # a socket, or check_socket_file says what it is instead
    if socket is not None:
        if inject:
            raise UsageError("--inject needs a pid, not --socket")
        return _open_agent(connect_agent(socket=socket, timeout=timeout), on_new_pid)
    pid = parse_pid(target)
    assert pid is not None
    if inject:
        from cpinspect.attach.inject import inject as inject_agent

        inject_agent(pid)  # a no-op when the agent is already there
    try:
        link = connect_agent(pid=pid, timeout=timeout, ahead=ahead)
    except AgentNotFound as exc:
        if no_agent is not None:
            no_agent()
        return _open_pyspy(pid, exc, timeout, on_new_pid)
    return _open_agent(link, on_new_pid)


def _lines_for(
    pid: Optional[int], on_new_pid: Optional[Callable[[int], None]]
) -> Tuple[SourceLines, Callable[[int], None]]:
    lines = SourceLines(pid)

    def new_pid(new: int) -> None:
        lines.retarget(new)
        if on_new_pid is not None:
            on_new_pid(new)

    return lines, new_pid


def _open_agent(link: AgentLink, on_new_pid: Optional[Callable[[int], None]]) -> OpenedSession:
    lines, new_pid = _lines_for(link.pid, on_new_pid)
    pyspy = pyspy_for(link.pid)
    session = AgentSession(
        link.source,
        link.info,
        pid=None if link.by_socket else link.pid,
        timeout=link.source.timeout,
        on_new_pid=new_pid,
        pyspy=pyspy,
        silent=(stopped_reason(link.pid) or str(link.error)) if link.silent else "",
        silent_for=link.waited,
    )
    notes = (_silent_note(link, pyspy),) if link.silent else ()
    return OpenedSession(
        session=session,
        pid=link.pid,
        source_lines=lines,
        kind=SourceKind.AGENT,
        label=session.label,
        notes=notes,
        info_took=link.info_took,
    )


def _open_pyspy(
    pid: int,
    why: AgentNotFound,
    timeout: float,
    on_new_pid: Optional[Callable[[int], None]],
) -> OpenedSession:
    source, first = pyspy_only(pid, why)
    lines, new_pid = _lines_for(pid, on_new_pid)
    session = PySpySession(source, pid, timeout=timeout, on_new_pid=new_pid, first=first)
    return OpenedSession(
        session=session,
        pid=pid,
        source_lines=lines,
        kind=SourceKind.PYSPY,
        label="py-spy pid %d" % pid,
        notes=("%s; threads read by py-spy" % why,),
    )


def _open_file(path: str) -> OpenedSession:
    # Imported here: reading snapshot files needs none of the live machinery, and the reverse.
    from cpinspect.sources.file import FileSession

    session = FileSession.open(path)
    return OpenedSession(
        session=session,
        pid=None,
        source_lines=session,
        kind=SourceKind.FILE,
        label=path,
    )
