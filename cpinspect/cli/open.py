"""``cpinspect open FILE [FILE ...]``: a saved snapshot in the same inspector, offline.

One file: its snapshot (or its series, stepped with ``[`` and ``]``). Two or more files: one
series of all their snapshots in the order given, opened on the last with the Series tab showing
what changed — ``cpinspect open A B`` is the difference between A and B. ``--text`` prints the
plain-text report instead (also what happens without a terminal).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List

from cpinspect.model import Snapshot


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "open", help="open saved snapshots in the inspector (two files: their difference)"
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="snapshot files to open")
    parser.add_argument(
        "--text", action="store_true", help="print the plain-text report instead of the UI"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cpinspect.snapshots import read_snapshots
    from cpinspect.sources.file import FileSession

    snapshots: List[Snapshot] = []
    for path in args.files:
        snapshots.extend(read_snapshots(path))
    if args.text or not sys.stdout.isatty():
        from cpinspect.formatting import format_report

        sys.stdout.write(format_report(snapshots, time.time()))
        return 0
    label = " + ".join(os.path.basename(p) for p in args.files)
    session = FileSession(args.files[0] if len(args.files) == 1 else label, snapshots)
    compare = len(args.files) > 1
    if compare:
        session.step(
            session.count - 1
        )  # on the last: the Series tab compares it with the one before
    from cpinspect.tui.app import InspectorApp

    app = InspectorApp(session, source_lines=session, initial_tab="series" if compare else None)
    app.run()
    return int(app.return_code or 0)
