"""``cpinspect ps``: the CherryPy processes on this machine, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ps", help="list the CherryPy processes on this machine (pid, ports, agent, busy/size)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # psutil and py-spy are imported here, not at start-up: `cpinspect --help` stays quick.
    from cpinspect.attach.processes import list_cherrypy_processes
    from cpinspect.formatting import format_process_table

    summaries = list_cherrypy_processes()
    if args.json:
        print(
            json.dumps(
                [dict(asdict(s), inspectable=s.inspectable) for s in summaries],
                indent=2,
            )
        )
    elif summaries:
        print(format_process_table(summaries))
    if not summaries:
        print("cpinspect: no CherryPy processes found", file=sys.stderr)
    return 0
