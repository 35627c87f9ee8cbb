"""``cpinspect sessions PID``: each app's session store — settings, summary, diagnoses and one page
of sessions (who holds each lock, who waits) — as text or JSON.

Session ids never leave the agent: a session is named by its fingerprint (a keyed hash). Values
are shown for one session only, when asked with ``--reveal FP``.
"""

from __future__ import annotations

import argparse
import json
import re

from cpinspect.agent.wire import SESSION_SORTS, SESSIONS_MAX_LIMIT
from cpinspect.cli.common import add_target_arguments, connect
from cpinspect.errors import UsageError

MAX_LIMIT = SESSIONS_MAX_LIMIT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sessions",
        help="print each app's session store: settings, summary, diagnoses, a page of sessions",
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--app",
        metavar="SCRIPT_NAME",
        help="only this app, as listed ('/' is the root app; default: all)",
    )
    parser.add_argument("--offset", type=int, default=0, help="first session of the page (0)")
    parser.add_argument(
        "--limit", type=int, default=50, help="sessions per page (default 50, at most 500)"
    )
    parser.add_argument(
        "--sort",
        choices=SESSION_SORTS,
        default=SESSION_SORTS[0],
        help="expiry (soonest first, the default), -expiry, size (largest first), lock (held "
        "first)",
    )
    parser.add_argument(
        "--reveal",
        metavar="FP",
        help="also print the values of the one session with this fingerprint (they may hold "
        "personal data and credentials)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError("--limit takes 1 to %d sessions, not %d" % (MAX_LIMIT, args.limit))
    if args.offset < 0:
        raise UsageError("--offset takes 0 or more, not %d" % args.offset)
    if args.reveal is not None:
        args.reveal = args.reveal.strip().lower()
        if not re.match(r"^[0-9a-f]{8,12}$", args.reveal):
            raise UsageError(
                "--reveal takes a session's fingerprint as listed (8 to 12 hex digits), not %r"
                % args.reveal[:40]
            )
    from dataclasses import replace

    from cpinspect.analysis import session_findings
    from cpinspect.formatting import format_sessions
    from cpinspect.protocol import to_json
    from cpinspect.sources.peers import find_serving_peers

    # Every screen shows the root app as '/'; CherryPy's script_name for it is ''.
    app = None if args.app is None else args.app.rstrip("/")
    conn = connect(args)
    try:
        answer = conn.source.sessions(app, args.offset, args.limit, args.sort, args.reveal)
    finally:
        conn.source.close()
    if conn.pid is not None:
        peers = find_serving_peers(conn.pid, conn.info.ports, conn.info.cmdline)
        answer = replace(answer, peers=peers)
    if args.reveal is not None and not any(
        s.revealed for a in answer.apps for s in (*a.sessions, *a.locks)
    ):
        raise UsageError(
            "no session's fingerprint is or begins with %s (a prefix must name one session; "
            "fingerprints change when the agent is loaded again)" % args.reveal
        )
    findings = session_findings(answer)
    if args.json:
        doc = to_json(answer)
        doc["findings"] = [to_json(f) for f in findings]
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_sessions(answer, findings)).rstrip("\n"))
    return 0
