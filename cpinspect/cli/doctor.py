"""``cpinspect doctor PID``: what is wrong with a running CherryPy process, for people and cron.

One poll of the process (the session the TUI opens: the agent, py-spy standing in when the
agent does not answer), its routes and the sessions' first pages, then the findings
(``cpinspect.findings.find_all``). When the first poll names a finding, a second poll follows
``--wait`` seconds later and the findings are those of the second, compared against the first
(spinning or waiting, a request stuck in both): one poll alone cannot tell a spin from a wait.

Printed as text (each finding with its details, evidence and fix) or ``--json``. The exit code
says the worst of it, so a monitor or a cron job can act on it:

- ``0`` healthy: no finding, or only informational ones;
- ``1`` at least one warning;
- ``2`` at least one critical finding;
- ``3`` the process could not be inspected (no such pid, not CherryPy, no permission, the agent
  and py-spy both unavailable, the target gone, a bad option): one line on stderr says why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Sequence

from cpinspect import __version__
from cpinspect.cli.common import add_target_arguments, open_from_args
from cpinspect.errors import AgentUnavailable, CpinspectError

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from cpinspect.model import Finding, Snapshot
    from cpinspect.sources.base import Poller, Update

EXIT_HEALTHY = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_NOT_INSPECTED = 3
SECOND_POLL_AFTER = 1.0
"""Seconds between the two polls taken when the first names a finding."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="name what is wrong with a process (exit 0 healthy, 1 warnings, 2 critical, "
        "3 could not inspect)",
        description="Poll a running CherryPy process and print its findings. Exit code: 0 "
        "healthy (or informational findings only), 1 warnings, 2 critical, 3 the process "
        "could not be inspected (one line on stderr says why).",
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--wait",
        type=float,
        default=SECOND_POLL_AFTER,
        metavar="SECONDS",
        help="when the first poll names a finding, poll again this many seconds later and "
        "compare (spinning or waiting; twice more when py-spy alone sees every worker "
        "busy); 0 takes one poll only (default %(default)s)",
    )

    def usage_error(message: str) -> NoReturn:
        # argparse's own exit code for a bad option is 2, which here means "critical".
        print("cpinspect doctor: %s" % message, file=sys.stderr)
        raise SystemExit(EXIT_NOT_INSPECTED)

    parser.error = usage_error  # type: ignore[method-assign]
    parse_known = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        # Words it does not know are otherwise refused by the top parser, with exit code 2.
        parsed, extras = parse_known(args, namespace)
        if extras:
            usage_error("unrecognized arguments: %s" % " ".join(extras))
        return parsed, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CpinspectError as exc:
        print("cpinspect: %s" % exc, file=sys.stderr)
        return EXIT_NOT_INSPECTED


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.wait <= 60:
        raise CpinspectError("--wait takes 0 to 60 seconds, not %s" % args.wait)
    if args.timeout <= 0:
        raise CpinspectError("--timeout must be positive, not %s" % args.timeout)
    from cpinspect.findings.threads import uncounted_and_full
    from cpinspect.model import SourceKind
    from cpinspect.snapshots import with_findings

    opened = open_from_args(args)
    session = opened.session
    notes: List[str] = list(opened.notes)
    try:
        first = _poll(session)
        routes = _routes(session, notes) if _answered(first) else None
        snapshot = with_findings(_snapshot(session, first, routes, notes, first.log))
        polls = 1
        # One more poll when the first names a finding (spinning or waiting needs two); two
        # more when every worker is busy and no source has pool numbers (py-spy alone: only
        # the same requests seen poll after poll say the pool is starved).
        extra = 0
        if args.wait > 0:
            extra = 2 if uncounted_and_full(snapshot) else (1 if snapshot.findings else 0)
        history: List[Snapshot] = []
        records = list(first.log)
        for _ in range(extra):
            time.sleep(args.wait)
            later = session.poll()
            if later.threads is None or not _alive(later):
                notes.append("a later poll read nothing: the findings are the earlier poll's")
                break
            history.append(snapshot)
            records.extend(later.log)
            snapshot = with_findings(_snapshot(session, later, routes, notes, records), history)
            polls += 1
    finally:
        session.close()
    # Without the agent the opening's note says so and how to load it; the session's own line
    # (the TUI's banner, with its key) would say it a second time, naming a key doctor has not.
    banner = first.message if opened.kind is SourceKind.PYSPY and opened.notes else None
    notes.extend(n for n in snapshot.notes if n not in notes and n != banner)
    code = exit_code(snapshot.findings)
    if args.json:
        print(json.dumps(doctor_document(snapshot, code, polls, notes), indent=2))
    else:
        from cpinspect.formatting import format_findings

        print(headline(snapshot, code))
        print()
        print("\n".join(format_findings(snapshot.findings)))
        for note in notes:
            print("note: %s" % note, file=sys.stderr)
    return code


def _alive(update: Update) -> bool:
    from cpinspect.sources.base import LinkState

    return update.state is not LinkState.LOST


def _answered(update: Update) -> bool:
    """The agent answered this poll: one that did not is not asked for the routes and the
    sessions (each would wait its timeout; the interpreter is likely stuck)."""
    from cpinspect.model import SourceKind

    return not update.agent_unresponsive and update.effective_threads_source is not SourceKind.PYSPY


def _poll(session: Poller) -> Update:
    """The first poll, or why nothing could be read as an error."""
    update = session.poll()
    if update.threads is None or not _alive(update):
        why = "; ".join(m for m in (update.message, *update.warnings) if m)
        raise AgentUnavailable("no threads could be read: %s" % (why or "no reason given"))
    return update


def _routes(session: Poller, notes: List[str]) -> Any:
    from cpinspect.sources.base import Capability

    if Capability.ROUTES not in session.capabilities:
        return None
    try:
        return session.routes()
    except CpinspectError as exc:
        notes.append("routes not read: %s" % exc)
        return None


def _snapshot(
    session: Poller, update: Update, routes: Any, notes: List[str], log: Sequence[Any]
) -> Snapshot:
    from cpinspect.model import LogRecord
    from cpinspect.snapshots import read_sessions, redacted_sessions, snapshot_from_update

    sessions, unread = read_sessions(session) if _answered(update) else (None, None)
    if unread is not None and unread not in notes:
        notes.append(unread)
    records = [e for e in log if isinstance(e, LogRecord)]
    return snapshot_from_update(
        update, routes=routes, sessions=redacted_sessions(sessions), log=records
    )


def exit_code(findings: Sequence[Finding]) -> int:
    """2 with a critical finding, 1 with a warning, 0 otherwise (informational ones only)."""
    from cpinspect.model import FindingSeverity

    severities = {f.severity for f in findings}
    if FindingSeverity.CRITICAL in severities:
        return EXIT_CRITICAL
    if FindingSeverity.WARNING in severities:
        return EXIT_WARNING
    return EXIT_HEALTHY


STATUS = {EXIT_HEALTHY: "healthy", EXIT_WARNING: "warning", EXIT_CRITICAL: "critical"}


def headline(snapshot: Snapshot, code: int) -> str:
    """``cpinspect doctor: pid 4242 (python app.py): CRITICAL``."""
    info = snapshot.info
    who = "pid %s" % snapshot.pid if snapshot.pid is not None else "the target"
    if info is not None and info.cmdline:
        command = " ".join(info.cmdline)
        who += " (%s)" % (command if len(command) <= 60 else command[:59] + "…")
    return "cpinspect doctor: %s: %s" % (who, STATUS[code].upper())


def doctor_document(
    snapshot: Snapshot, code: int, polls: int, notes: Sequence[str]
) -> Dict[str, Any]:
    """What ``--json`` prints: the verdict, then every finding as in a snapshot file."""
    from cpinspect.protocol import to_json

    return {
        "kind": "cpinspect-doctor",
        "cpinspect": __version__,
        "pid": snapshot.pid,
        "taken_at": snapshot.taken_at,
        "source": snapshot.source.value,
        "status": STATUS[code],
        "exit_code": code,
        "polls": polls,
        "findings": [to_json(f) for f in snapshot.findings],
        "notes": list(notes),
    }
