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
    parser.set_defaults(func=run)


def render(snapshot: RoutesSnapshot) -> str:
    from cpinspect.formatting import (
        app_counts,
        app_label,
        route_kind_text,
        shadowed_alias_note,
        static_mount_line,
    )

    lines = []
    for app in snapshot.apps:
        lines.append(app_label(app))
        for node in app.nodes:
            mark = "✓" if node.exposed else " "
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
            kind = route_kind_text(node)
            if node.kind == "internal":
                # Reached through a dispatcher: its own line says so, the details would be noise.
                lines.append("  %s %-30s %s  %s" % (mark, node.path, kind, "  ".join(extra)))
                continue
            lines.append("  %s %-30s %-11s %s" % (mark, node.path, kind, "  ".join(extra)))
            shadowed = shadowed_alias_note(app, node.path) if node.exposed else None
            if shadowed:
                lines.append("      · " + shadowed)
            lines.extend("      ⚠ %s" % w for w in node.warnings)
        lines.extend("  route %-28s %s" % (r.path, r.qualname or "-") for r in app.routes)
        for mount in app.static:
            lines.append("  static " + static_mount_line(mount, app))
            lines.extend("      ⚠ %s" % w for w in mount.warnings)
        lines.extend("  error: %s" % e for e in app.errors)
        lines.append("  " + app_counts(app))
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
        print(render(snapshot))
    return 0
