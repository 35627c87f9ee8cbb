"""``cpinspect`` command line: one module per subcommand, errors as one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from cpinspect import __version__
from cpinspect.errors import CpinspectError

SUBCOMMANDS = ("attach", "dump", "demo")

INTERNAL_ERROR = 70


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpinspect",
        description="Live inspector for running CherryPy servers: busy workers, their requests "
        "and stacks, while the incident is happening.",
    )
    parser.add_argument("--version", action="version", version="cpinspect %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module("cpinspect.cli.%s" % name)
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CpinspectError as exc:
        print("cpinspect: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cpinspect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("CPINSPECT_DEBUG"):
            raise
        print(
            "cpinspect: internal error: %s: %s (set CPINSPECT_DEBUG=1 for the traceback, and "
            "please report it)" % (type(exc).__name__, exc),
            file=sys.stderr,
        )
        return INTERNAL_ERROR
