"""``cpinspect resolve PID /path``: what CherryPy would do with that request, and why."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cpinspect.cli.common import add_target_arguments, connect

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from cpinspect.model import Resolution


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "resolve", help="explain how the app would route a URL (runs no request)"
    )
    add_target_arguments(parser)
    parser.add_argument("path", help="the URL path, with an optional ?query")
    parser.add_argument("--method", default="GET", help="HTTP method (default %(default)s)")
    parser.add_argument("--host", default="localhost", help="Host header (virtual hosts)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def render(res: Resolution) -> str:
    from cpinspect.formatting import resolution_lines

    return "\n".join(resolution_lines(res))


def run(args: argparse.Namespace) -> int:
    conn = connect(args)
    try:
        res = conn.source.resolve(args.path, args.method.upper(), args.host)
        seen, held, unread = conn.source.answered(res)
    finally:
        conn.source.close()
    from cpinspect.protocol import to_json

    if args.json:
        doc = to_json(res)
        if seen is not None:
            doc["answered"] = {
                "statuses": [{"status": s, "count": n} for s, n in seen.statuses],
                "last_status": seen.last_status,
                "last_time": seen.last_time,
                "records_held": held,
            }
        print(json.dumps(doc, indent=2))
        return 0
    from cpinspect.formatting import answered_lines

    print("\n".join([render(res), *answered_lines(seen, held, unread, res)]))
    return 0
