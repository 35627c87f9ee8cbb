"""``cpinspect dump PID``: the threads, their requests and stacks, as text or JSON.

With the agent: its threads, joined with py-spy's (GIL holder; native frames with ``--native``)
when py-spy can read the process. Without it: py-spy alone, and one line on stderr saying how to
enable the agent. ``--locals`` adds each thread's local variables (py-spy), secret-looking values
hidden unless ``--show-secrets``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from cpinspect.cli.common import (
    add_target_arguments,
    connect,
    parse_pid,
    pyspy_for,
    pyspy_only,
)
from cpinspect.errors import AgentNotFound, CpinspectError, PySpyMissing
from cpinspect.model import ProcessInfo, Snapshot, SourceKind, ThreadLocals, ThreadsSnapshot
from cpinspect.protocol import snapshots_document
from cpinspect.sources.live import process_info_from_outside
from cpinspect.sources.merge import merge_threads
from cpinspect.sources.pyspy import PySpySource

HIDDEN = "*** (hidden: --show-secrets shows it)"


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
        "--show-secrets",
        action="store_true",
        help="with --locals: show values that look secret instead of hiding them",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pid = parse_pid(args.pid)
    spy: Optional[PySpySource]
    notes: List[str] = []
    try:
        conn = connect(args)
    except AgentNotFound as exc:
        if pid is None:
            raise
        spy, _ = pyspy_only(pid, exc)
        spy.native = args.native
        threads = spy.threads()
        info: ProcessInfo = process_info_from_outside(pid)
        source = "py-spy"
        notes.append("note: %s; threads read by py-spy" % exc)
    else:
        try:
            threads = conn.source.threads()
        finally:
            conn.source.close()
        info = conn.info
        source = "agent"
        notes.extend("warning: %s" % w for w in conn.source.warnings)
        spy = pyspy_for(conn.pid)
        threads = _join_pyspy(threads, spy, args, notes)
        if spy is None and (args.native or args.locals):
            raise PySpyMissing("--native and --locals need py-spy: `pip install py-spy`")
    thread_locals = _locals(threads, spy, notes) if args.locals else []
    if args.json:
        snapshot = Snapshot(
            taken_at=threads.taken_at,
            source=SourceKind(source),
            info=info,
            threads=threads,
            locals=tuple(_hide(tl, args.show_secrets) for tl in thread_locals),
            revealed=args.show_secrets,
        )
        json.dump(snapshots_document([snapshot]), sys.stdout)
        sys.stdout.write("\n")
    else:
        from cpinspect.formatting import format_dump
        from cpinspect.sources.source_lines import SourceLines

        lines = SourceLines(pid if pid is not None else info.pid)
        sys.stdout.write(format_dump(info, threads, lines.line, now=time.time()))
        for tl in thread_locals:
            sys.stdout.write(format_locals(tl, args.show_secrets))
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def _join_pyspy(
    threads: ThreadsSnapshot,
    spy: Optional[PySpySource],
    args: argparse.Namespace,
    notes: List[str],
) -> ThreadsSnapshot:
    if spy is None:
        return threads
    spy.native = args.native
    try:
        return merge_threads(threads, spy.threads(), native=args.native)
    except CpinspectError as exc:
        if args.native or args.locals:
            raise
        notes.append("note: no GIL holder: py-spy could not read the process (%s)" % exc)
        return threads


def _locals(
    threads: ThreadsSnapshot, spy: Optional[PySpySource], notes: List[str]
) -> List[ThreadLocals]:
    assert spy is not None
    out = []
    for thread in threads.threads:
        try:
            out.append(spy.thread_locals(thread.ident))
        except CpinspectError as exc:
            notes.append("note: no locals for thread %s: %s" % (thread.name, exc))
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
