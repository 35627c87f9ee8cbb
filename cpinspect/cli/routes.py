"""``cpinspect routes PID``: the routing tree of every mounted app, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cpinspect.cli.common import add_target_arguments, connect

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from cpinspect.model import RoutesSnapshot


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("routes", help="print the routing tree of a running app")
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every node: also the methods and helper objects nothing exposes (by default "
        "an object with nothing exposed below is one line; --json always has every node)",
    )
    parser.set_defaults(func=run)


def render(snapshot: RoutesSnapshot, everything: bool = False) -> str:
    """The tree as text; ``everything``: every node (``--all``), else ``route_view``'s."""
    from cpinspect.formatting import (
        FORGOTTEN_NOTE,
        app_counts,
        app_label,
        folded_text,
        route_kind_text,
        route_url,
        route_view,
        shadowed_alias_note,
        static_handler_note,
        static_mount_line,
    )

    lines = []
    for app in snapshot.apps:
        lines.append(app_label(app))
        view = route_view(app)
        left_out = 0
        for node in app.nodes:
            mark = "✓" if node.exposed else " "
            url = route_url(app, node.path)
            if not everything and node.path not in view.shown:
                left_out += 1
                continue
            if not everything and node.path in view.folded:
                where = "  " + node.filename if node.filename else ""
                if node.filename and node.lineno:
                    where += ":%d" % node.lineno
                lines.append(
                    "  %s %-30s %s%s" % (mark, url, folded_text(view.folded[node.path]), where)
                )
                continue
            extra = []
            if node.signature:
                extra.append(node.signature)
            if node.methods:
                extra.append("verbs " + ",".join(node.methods))
            if node.popargs is not None:
                extra.append("popargs " + ",".join(node.popargs))
            if node.dynamic:
                extra.append("_cp_dispatch")
            if node.alias_of:
                extra.append("alias of " + node.alias_of)
            if node.filename and node.lineno:
                extra.append("%s:%d" % (node.filename, node.lineno))
            if node.path in view.forgotten:
                extra.append(FORGOTTEN_NOTE)
            if not everything and view.hidden.get(node.path):
                extra.append("+%d not exposed (--all)" % view.hidden[node.path])
            kind = route_kind_text(node)
            if node.kind == "internal":
                # Reached through a dispatcher: its own line says so, the details would be noise.
                lines.append("  %s %-30s %s  %s" % (mark, url, kind, "  ".join(extra)))
                continue
            lines.append("  %s %-30s %-11s %s" % (mark, url, kind, "  ".join(extra)))
            shadowed = shadowed_alias_note(app, node.path) if node.exposed else None
            notes = (shadowed, static_handler_note(app, node.path))
            lines.extend("      · " + note for note in notes if note)
            lines.extend("      ⚠ %s" % w for w in node.warnings)
        lines.extend("  route %-28s %s" % (r.path, r.qualname or "-") for r in app.routes)
        for mount in app.static:
            lines.append("  static " + static_mount_line(mount, app))
            lines.extend("      ⚠ %s" % w for w in mount.warnings)
        lines.extend("  error: %s" % e for e in app.errors)
        counts = app_counts(app)
        if left_out:
            counts += " · %d not listed (--all lists them)" % left_out
        lines.append("  " + counts)
    if snapshot.truncated:
        lines.append("(truncated at %d nodes)" % snapshot.cap)
    lines.extend("error: %s" % e for e in snapshot.errors)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    conn = connect(args)
    try:
        snapshot = conn.source.routes()
    finally:
        conn.source.close()
    if args.json:
        from cpinspect.protocol import to_json

        print(json.dumps(to_json(snapshot), indent=2))
    else:
        print(render(snapshot, everything=args.all))
    return 0
