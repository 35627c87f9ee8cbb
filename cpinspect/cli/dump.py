"""``cpinspect dump PID``: the threads, their requests and stacks, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cpinspect.cli.common import add_target_arguments, connect
from cpinspect.protocol import dump_document


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dump", help="print every thread with its request and stack (like py-spy dump)"
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    conn = connect(args)
    try:
        threads = conn.source.threads()
    finally:
        conn.source.close()
    if args.json:
        doc = dump_document(conn.info, threads, source="agent")
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from cpinspect.formatting import format_dump
    from cpinspect.sources.source_lines import SourceLines

    lines = SourceLines(conn.pid)
    sys.stdout.write(format_dump(conn.info, threads, lines.line, now=time.time()))
    for warning in conn.source.warnings:
        print("warning: %s" % warning, file=sys.stderr)
    return 0
