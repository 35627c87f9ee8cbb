"""``cpinspect dump PID``: the threads, their requests and stacks, as text or JSON.

With the agent: its threads, joined with py-spy's (GIL holder; native frames with ``--native``)
when py-spy can read the process. With an agent that does not answer within ``--timeout`` (the
interpreter stuck, the GIL held inside a C call): py-spy's threads, their requests read from its
``--locals``, and one line on stderr saying so. Without the agent: py-spy alone, and one line on
stderr saying how to enable the agent. ``--locals`` adds each thread's local variables (py-spy),
secret-looking values hidden unless ``--show-secrets``.

The session is the TUI's (``open_session``); what is printed is its first poll.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, List, Optional, Tuple

from cpinspect import __version__
from cpinspect.cli.common import add_target_arguments, hurry_slow_agent, open_from_args
from cpinspect.errors import AgentUnavailable, CpinspectError, PySpyMissing

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from subprocess import Popen

    from cpinspect.model import (
        Finding,
        RoutesSnapshot,
        SessionsSnapshot,
        Snapshot,
        ThreadLocals,
        ThreadsSnapshot,
    )
    from cpinspect.sources.base import Poller, Update
    from cpinspect.sources.open import OpenedSession

HIDDEN = "*** (hidden: --show-secrets shows it)"
_ROUTES_LEFT_OUT = " not read, the findings that need them are left out:"
FORMAT = ("cpinspect.formatting",)
"""What the text output needs beside the findings."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dump", help="print every thread with its request and stack (like py-spy dump)"
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--native", action="store_true", help="include native (C) frames")
    parser.add_argument(
        "--locals", action="store_true", help="add each thread's local variables (py-spy)"
    )
    parser.add_argument(
        "--reveal",
        "--show-secrets",
        dest="show_secrets",
        action="store_true",
        help="with --locals: show values that look secret instead of hiding them (the same "
        "word as `snapshot --reveal`)",
    )
    parser.set_defaults(func=run)


def early_pyspy_command(args: argparse.Namespace) -> Optional[List[str]]:
    """``py-spy dump --pid PID --json --nonblocking`` for a dump or snapshot by pid without
    ``--native`` or ``--locals``; None otherwise (or without py-spy). Found the way
    ``find_pyspy`` finds it, without importing the py-spy reader (and the model) first."""
    if args.native or args.locals or args.socket or not (args.pid or "").isdigit():
        return None
    from cpinspect.cli import early

    executable = early.find_executable()
    if executable is None:
        return None
    return early.pyspy_command(executable, int(args.pid))


def start_pyspy_early(args: argparse.Namespace) -> Optional[Tuple[List[str], Popen[bytes]]]:
    """py-spy's read of the GIL holder, started before the imports and the agent call: it is
    the slowest part of a dump at 1,000 threads (0.5 s and more), so it runs beside them.

    The one ``main`` started from the raw command line (``cli.early``) when it is this
    command, else a new one. The command is the one the session's py-spy reader would run
    (``PySpySource.command``: nonblocking, no locals); the reader adopts it
    (``PySpySource.adopt``). None when the target is not a pid, when the options need another
    command, or without py-spy.
    """
    from cpinspect.cli import early

    command = early_pyspy_command(args)
    started = early.take(command)
    if started is not None or command is None:
        return started
    return early.spawn(command)


class EarlyRun:
    """The early py-spy run (``start_pyspy_early``), handed over once: to the session's py-spy
    reader, or stopped. Stopped as soon as the pid proves to have no agent: the reader without
    one reads with ``--locals`` (another command), and the early run only took a core from it
    (a dump of 1,000 threads without the agent)."""

    def __init__(self, started: Optional[Tuple[List[str], Popen[bytes]]]) -> None:
        self._started = started

    def stop(self) -> None:
        self.hand_over(None)

    def read_in(self) -> bool:
        """Whether the run ended with its reading (exit status 0) and is not handed over yet:
        the agent's first answer need not be waited for long then (``connect_agent``)."""
        started = self._started
        return started is not None and started[1].poll() == 0

    def hand_over(self, session: object) -> None:
        started, self._started = self._started, None
        hand_over_pyspy(started, session)


def hand_over_pyspy(early: Optional[Tuple[List[str], Popen[bytes]]], session: object) -> None:
    """Give the early py-spy run to the session's py-spy reader; stop it if there is none."""
    if early is None:
        return
    from cpinspect.sources.pyspy import PySpySource

    spy = getattr(session, "pyspy", None)
    command, proc = early
    if isinstance(spy, PySpySource) and command[:1] == [spy.executable]:
        spy.adopt(command, proc)
        return
    from cpinspect.cli.early import stop

    stop(proc)


def run(args: argparse.Namespace) -> int:
    early = start_pyspy_early(args)  # before the imports below: they take ~0.3 s
    import gc

    # One poll's objects, freed by their counts: the cycle collector would only walk the
    # 1,000-thread reading over and over while it is parsed (~25 % of the parse's CPU).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run(args, early)
    finally:
        from cpinspect.cli.early import exit_follows

        if collecting and not exit_follows():
            gc.enable()


def _run(args: argparse.Namespace, early: Optional[Tuple[List[str], Popen[bytes]]]) -> int:
    run = EarlyRun(early)
    try:
        opened = open_from_args(args, no_agent=run.stop, ahead=run.read_in)
    except BaseException:
        run.stop()
        raise
    run.hand_over(opened.session)

    from cpinspect.model import SourceKind
    from cpinspect.snapshots import ask_routes, ask_sessions, beside, joined, late_until
    from cpinspect.sources.base import Capability

    session = opened.session
    hurry_slow_agent(opened)
    # The poll returns with the agent's answer; py-spy's GIL holder is joined after the rest
    # is ready (``join_pyspy``): at 1,000 threads py-spy's read is the longest part, and what
    # follows its end is only the holder's thread (not with --native or --locals: py-spy's
    # reading is all of the answer then).
    join = getattr(session, "join_pyspy", None) if not (args.native or args.locals) else None
    render = _Render(args, opened, notes=[])
    try:
        if (args.native or args.locals) and Capability.LOCALS not in session.capabilities:
            raise PySpyMissing("--native and --locals need py-spy: `pip install py-spy`")
        if args.native:
            session.set_native(True)
        if join is not None:
            session.pyspy_wait = 0.0  # type: ignore[attr-defined]
        from cpinspect.cli.early import import_meanwhile

        import_meanwhile(
            "cpinspect.findings", "cpinspect.findings.history", *(() if args.json else FORMAT)
        )
        # The sessions and routes (for the findings) asked at the same time as the poll and
        # each other, joined once it is in: one wait for the agent, not one per endpoint.
        sessions_asked = beside(partial(ask_sessions, session))
        routes_asked = beside(partial(ask_routes, session))
        update = session.poll()
        threads = _threads_of(update)
        notes = render.notes
        notes.extend(opened.notes)
        standing_in = update.effective_threads_source is SourceKind.PYSPY
        if args.native and not (standing_in or update.pyspy_joined):
            raise PySpyMissing(
                "--native needs py-spy, which could not read the process: %s"
                % ("; ".join(update.warnings) or "no reason given")
            )
        if standing_in and update.message and opened.kind is SourceKind.AGENT:
            # Said in one line: why py-spy's threads stand in, and what they lack. The poll's
            # words replace those of the opening: they were read later, and they tell a busy
            # interpreter (threads ran during py-spy's read) from a stuck one, which the
            # opening, having only the agent's silence, could not.
            notes[:] = [update.message] + [n for n in notes if n not in opened.notes]
        render.thread_locals = _locals(threads, session, notes) if args.locals else []
        # Joined as ``snapshots.joined`` says: waited for when the agent answered the poll,
        # a moment more when it was slow, not at all when it is silent (then not said: the
        # note on the agent says it).
        until = late_until()
        sessions, why, late = joined(update, sessions_asked, "sessions", until)
        if why is not None and not late:
            notes.append(why)
        routes, why, late = joined(update, routes_asked, "routes", until)
        if why is not None and not late:
            notes.append(why.replace(" not captured:", _ROUTES_LEFT_OUT, 1))
        render.routes = routes
        render.sessions = sessions
        if join is not None:
            # While py-spy reads: the output without its GIL holder, whose encoded threads,
            # source lines and findings' imports the final one reuses.
            first = update
            update = join(update, meanwhile=lambda: render(first) if args.json else None)
            threads = _threads_of(update)
    finally:
        session.close()
    sys.stdout.write(render(update))
    for note in notes:
        print("note: %s" % note, file=sys.stderr)
    for warning in update.warnings:
        print("warning: %s" % warning, file=sys.stderr)
    return 0


class _Render:
    """What ``dump`` prints for one poll: JSON (``snapshots_document``) or text."""

    def __init__(self, args: argparse.Namespace, opened: OpenedSession, notes: List[str]) -> None:
        from cpinspect.protocol import DocumentEncoder

        self.args = args
        self.opened = opened
        self.notes = notes
        self.thread_locals: List[ThreadLocals] = []
        self.routes: Optional[RoutesSnapshot] = None
        self.sessions: Optional[SessionsSnapshot] = None
        self.encoder = DocumentEncoder()
        self.built: Optional[Snapshot] = None
        """The last document's snapshot (``with_source_lines`` reuses its lines)."""

    def __call__(self, update: Update) -> str:
        from cpinspect.model import SNAPSHOT_LOG_RECORDS, LogRecord, Snapshot, SourceKind
        from cpinspect.snapshots import redacted_sessions, with_source_lines

        args = self.args
        threads = _threads_of(update)
        findings = _findings(update, self.routes, self.sessions)
        if not args.json:
            from cpinspect.formatting import format_dump

            lines = self.opened.source_lines
            text = format_dump(update.info, threads, lines.line, now=time.time(), findings=findings)
            return text + "".join(format_locals(tl, args.show_secrets) for tl in self.thread_locals)
        source = update.effective_threads_source
        if update.pyspy_joined and source is SourceKind.AGENT:
            source = SourceKind.BOTH
        snapshot = Snapshot(
            taken_at=threads.taken_at,
            source=source,
            info=update.info,
            threads=threads,
            sessions=redacted_sessions(self.sessions),
            locals=tuple(_hide(tl, args.show_secrets) for tl in self.thread_locals),
            notes=tuple(self.notes) + update.warnings,
            stale=update.stale,
            gil_holder=update.gil_holder,
            log=tuple(e for e in update.log if isinstance(e, LogRecord))[-SNAPSHOT_LOG_RECORDS:],
            log_state=update.log_state,
            revealed=args.show_secrets,
            cpinspect=__version__,
            findings=findings,
            agent_unresponsive=update.agent_unresponsive,
            listen_queues=update.listen_queues,
        )
        # The lines as they read now, like every capture: the file reads right after a deploy.
        snapshot = with_source_lines(snapshot, self.opened.source_lines, self.built)
        self.built = snapshot
        # Compact, by the C encoder (1,000 threads: 1.1 s -> 0.1 s), threads kept encoded.
        return self.encoder.encode([snapshot]) + "\n"


def _findings(
    update: Update, routes: Optional[RoutesSnapshot], sessions: Optional[SessionsSnapshot]
) -> Tuple[Finding, ...]:
    """The findings of this one poll (``doctor`` polls twice to tell a spin from a wait)."""
    from cpinspect.snapshots import snapshot_from_update, with_findings

    return with_findings(snapshot_from_update(update, routes=routes, sessions=sessions)).findings


def _threads_of(update: Update) -> ThreadsSnapshot:
    """The threads of the first poll, or why there are none as an error."""
    from cpinspect.sources.base import LinkState

    if update.threads is None or update.state is LinkState.LOST:
        # Say everything the session knows: the agent silent, and why py-spy could not stand in.
        why = "; ".join(m for m in (update.message, *update.warnings) if m)
        raise AgentUnavailable("no threads could be read: %s" % (why or "no reason given"))
    return update.threads


def _locals(threads: ThreadsSnapshot, session: Poller, notes: List[str]) -> List[ThreadLocals]:
    out = []
    for thread in threads.threads:
        try:
            out.append(session.thread_locals(thread.ident))
        except CpinspectError as exc:
            notes.append("no locals for thread %s: %s" % (thread.name, exc))
    return out


def _hide(tl: ThreadLocals, reveal: bool) -> ThreadLocals:
    if reveal:
        return tl
    from dataclasses import replace

    return replace(
        tl,
        frames=tuple(
            replace(
                fl,
                variables=tuple(
                    replace(v, value="***") if v.sensitive else v for v in fl.variables
                ),
            )
            for fl in tl.frames
        ),
    )


def format_locals(tl: ThreadLocals, reveal: bool) -> str:
    """Text of one thread's locals, innermost frame first; sensitive values hidden."""
    out = ['\nLocals of thread %d "%s"\n' % (tl.ident, tl.name)]
    for fl in tl.frames:
        if not fl.variables:
            continue
        frame = fl.frame
        out.append(
            "    %s (%s:%d)\n" % (frame.qualname or frame.function, frame.filename, frame.lineno)
        )
        for var in fl.variables:
            value = var.value if reveal or not var.sensitive else HIDDEN
            out.append("        %s%s = %s\n" % (var.name, " (arg)" if var.is_arg else "", value))
    return "".join(out)
