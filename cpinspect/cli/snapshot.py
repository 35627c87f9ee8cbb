"""``cpinspect snapshot PID``: save everything known about the process now, to attach to a ticket.

One snapshot, or a series (``--count N --every S``) in one bundle: the JSON (``cpinspect open``
reads it back) and a plain-text report beside it. The source line of every frame is read at
capture time, so the file still reads right after a deploy. Works when the agent is stuck or
absent: py-spy's threads are saved instead, with a note saying so. Secrets stay hidden unless
``--reveal``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from cpinspect.cli.common import add_target_arguments, hurry_slow_agent
from cpinspect.errors import CpinspectError, PySpyMissing, TargetGone, UsageError

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from subprocess import Popen

    from cpinspect.model import Snapshot, ThreadLocals

MAX_COUNT = 1000
"""Snapshots in one series at most (a bundle is kept in memory until it is written)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "snapshot",
        help="save a snapshot (or a series) of the process: JSON for `cpinspect open` + a report",
    )
    add_target_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=".",
        help="directory to write into (default: the current one)",
    )
    parser.add_argument("--count", type=int, default=1, help="snapshots in the series (default 1)")
    parser.add_argument(
        "--every",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between the snapshots of a series (default 2)",
    )
    parser.add_argument(
        "--locals", action="store_true", help="add each busy thread's local variables (py-spy)"
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="stacks with native (C) frames too (py-spy stops the process for a moment to read "
        "them)",
    )
    parser.add_argument("--no-routes", action="store_true", help="leave the routing trees out")
    parser.add_argument(
        "--reveal",
        action="store_true",
        help="include what is hidden everywhere else: with --locals, secret-looking local "
        "values, and query strings, cookies and headers held in locals; handle the file as a "
        "secret",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_COUNT:
        raise UsageError("--count takes 1 to %d snapshots, not %d" % (MAX_COUNT, args.count))
    if args.every < 0.1:
        raise UsageError("--every takes at least 0.1 seconds, not %s" % args.every)
    from cpinspect.cli.dump import start_pyspy_early

    early = start_pyspy_early(args)  # py-spy's read beside the imports and the agent call
    import gc

    collecting = gc.isenabled()
    if args.count == 1:
        gc.disable()  # one poll's objects, freed by their counts (as in ``dump``)
    try:
        return _run(args, early)
    finally:
        from cpinspect.cli.early import exit_follows

        if collecting and not exit_follows():
            gc.enable()


def _run(args: argparse.Namespace, early: Optional[Tuple[List[str], Popen[bytes]]]) -> int:
    from cpinspect.cli.dump import EarlyRun

    run = EarlyRun(early)
    try:
        from cpinspect.snapshots import (
            ask_routes,
            beside,
            capture_series,
            check_directory,
            write_snapshots,
        )
        from cpinspect.sources.open import open_session

        check_directory(args.output)  # before minutes of capture, not after
        opened = open_session(
            args.pid,
            socket=args.socket,
            timeout=args.timeout,
            no_agent=run.stop,
            ahead=run.read_in,
        )
    except BaseException:
        run.stop()
        raise
    run.hand_over(opened.session)
    from cpinspect.sources.base import Capability

    session = opened.session
    hurry_slow_agent(opened)
    for note in opened.notes:
        print("note: %s" % note, file=sys.stderr)

    def with_locals(snapshot: Snapshot) -> Snapshot:
        return replace(snapshot, locals=_locals(session, snapshot))

    def progress(index: int, snapshot: Snapshot) -> None:
        if args.count > 1:
            print(
                "snapshot %d/%d: %s" % (index + 1, args.count, _summary(snapshot)),
                file=sys.stderr,
            )

    from cpinspect.protocol import DocumentEncoder
    from cpinspect.snapshots import redacted

    encoder = DocumentEncoder()
    # One snapshot: the poll returns with the agent's answer and the snapshot is built and
    # encoded while py-spy still reads; once its GIL holder is joined only what changed is
    # built again (at 1,000 threads py-spy's read is the longest part of the capture).
    join = getattr(session, "join_pyspy", None)
    if args.count != 1 or args.native or args.locals:
        join = None

    def warm(snapshot: Snapshot) -> None:
        import cpinspect.formatting  # noqa: F401 - the report's, imported while py-spy reads

        encoder.encode([redacted(snapshot, args.reveal)])

    taken: List[Snapshot] = []
    interrupted = False
    lost = ""
    try:
        if args.native:
            if Capability.NATIVE not in session.capabilities:
                raise PySpyMissing("--native needs py-spy, which cannot read this process")
            session.set_native(True)
        if join is not None:
            session.pyspy_wait = 0.0  # type: ignore[attr-defined]
        # The routes and each poll's sessions asked at the same time as the poll (and each
        # other), joined once it is in: one wait for the agent, not one per endpoint.
        routes = None
        if not args.no_routes and Capability.ROUTES in session.capabilities:
            routes = beside(partial(ask_routes, session))
        from cpinspect.cli.early import import_meanwhile

        import_meanwhile("cpinspect.findings", "cpinspect.findings.history", "cpinspect.formatting")
        series = capture_series(
            session,
            args.count,
            args.every,
            routes_beside=routes,
            ask_beside=True,
            source_lines=opened.source_lines,
            extra=with_locals if args.locals else None,
            progress=progress,
            note=lambda text: print("note: %s" % text, file=sys.stderr),
            join=join,
            meanwhile=warm,
        )
        taken, lost, interrupted = series.taken, series.lost, series.interrupted
    except KeyboardInterrupt:
        interrupted = True  # before the series began (reading routes): nothing was taken
    finally:
        session.close()
    if not taken:
        why = "the target was lost (%s)" % lost if lost else "interrupted"
        print("cpinspect: %s before the first snapshot; nothing written" % why, file=sys.stderr)
        return TargetGone.exit_code if lost else 130
    written = write_snapshots(taken, args.output, reveal=args.reveal, encoder=encoder)
    print(written.json_path)
    if written.report_path is not None:
        print(written.report_path)
    for note in _notes(taken):
        print("note: %s" % note, file=sys.stderr)
    if lost:
        print("note: %s" % lost, file=sys.stderr)
        print(
            "cpinspect: the target exited or stopped answering after snapshot %d/%d; wrote the "
            "%d snapshot%s taken"
            % (len(taken), args.count, len(taken), "" if len(taken) == 1 else "s"),
            file=sys.stderr,
        )
        return TargetGone.exit_code
    if interrupted:
        print(
            "cpinspect: interrupted: wrote the %d snapshot(s) taken" % len(taken), file=sys.stderr
        )
        return 130
    return 0


def _summary(snapshot: Snapshot) -> str:
    threads = snapshot.threads
    if threads is None:
        return "no threads"
    workers = threads.workers
    busy = sum(1 for t in workers if t.busy)
    return "%d threads, %d/%d workers busy (%s)" % (
        len(threads.threads),
        busy,
        len(workers),
        snapshot.source.value,
    )


def _notes(snapshots: Sequence[Snapshot]) -> List[str]:
    """What changed during a series (the agent stopped answering, py-spy failed ...): the state
    at the start was said when the session opened."""
    seen: List[str] = list(snapshots[0].notes)
    out: List[str] = []
    for snapshot in snapshots[1:]:
        for note in snapshot.notes:
            if note not in seen:
                seen.append(note)
                out.append(note)
    return out


def _locals(session: object, snapshot: Snapshot) -> tuple[ThreadLocals, ...]:
    """Locals of the busy threads from one py-spy ``--locals`` reading (values unredacted here:
    ``write_snapshots`` hides the sensitive ones unless ``--reveal``)."""
    from cpinspect.sources.pyspy import PySpySource, locals_from_dump

    spy: Optional[PySpySource] = getattr(session, "pyspy", None)
    if spy is None or snapshot.threads is None:
        print("note: no locals: py-spy cannot read this process", file=sys.stderr)
        return ()
    try:
        dump = spy.raw_dump(locals=True)
    except CpinspectError as exc:
        print("note: no locals: %s" % exc, file=sys.stderr)
        return ()
    out = []
    for thread in snapshot.threads.threads:
        if not thread.busy:
            continue
        found = locals_from_dump(dump, thread.ident, snapshot.taken_at)
        if found is not None:
            out.append(found)
    return tuple(out)
