"""``cpinspect`` command line: one module per subcommand, errors as one line and an exit code."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading

from cpinspect import __version__
from cpinspect.errors import CpinspectError

# Neither argparse nor typing before ``dump``/``snapshot`` have started py-spy (``main``): a
# console script imports this module first, and those two were most of its import (~4 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import List, Optional

SUBCOMMANDS = (
    "attach",
    "dump",
    "snapshot",
    "open",
    "ps",
    "inject",
    "detach",
    "demo",
    "routes",
    "resolve",
    "sessions",
    "logs",
    "watch",
    "doctor",
)

INTERNAL_ERROR = 70


def build_parser() -> argparse.ArgumentParser:
    import argparse

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
    words = sys.argv[1:] if argv is None else argv
    if words[:1] and words[0] in ("dump", "snapshot"):
        # py-spy's read before the parser imports every subcommand: it is a dump's longest part.
        from cpinspect.cli import early

        early.spawn_for_words(words)
        early.exit_follows(argv is None)
        try:
            code = _main(argv)
        finally:
            early.finish()  # what the command did not take (a usage error...) is stopped
        if argv is None:
            _exit_now(code)
        return code
    code = _main(argv)
    if argv is None:
        _leave_as_the_interpreter_would(code)
    return code


def _leave_as_the_interpreter_would(code: int) -> None:
    """End the program as the interpreter's exit would, without its teardown: threads that
    are not daemons joined, ``atexit`` handlers run, streams flushed — then ``os._exit``. The
    teardown (freeing every module's and every reading's objects) was most of a TUI's exit:
    0.23 of its 0.27 s of CPU after a hang-up on a small app, py-spy record at 1 kHz; up to a
    second on a loaded machine (2026-12-03), while the user waits for the shell."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # not CPython as we know it: the usual exit
        return
    try:
        # What Py_Finalize does first: the threading module's exit callbacks (executors told
        # to stop), then every thread that is not a daemon joined.
        shutdown()
        atexit._run_exitfuncs()
    except KeyboardInterrupt:
        code = code or 130  # a second Ctrl-C while waiting: leave now
    _exit_now(code)


def _exit_now(code: int) -> None:
    """End a one-shot command's own process at once, its output flushed: the interpreter's
    teardown (freeing a 1,000-thread reading's objects, joining idle worker threads) took
    0.4-0.5 s more on a loaded machine (measured 2026-12-01), after everything was written.
    Nothing else is left to do: the session is closed, py-spy stopped, files fsync'd."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            _stdout_gone()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _main(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            # No terminal for the picker (a script, a pipe): say how to use the command instead.
            parser.print_help()
            return 2
        func = pick_and_attach
    try:
        code = int(func(args) or 0)
        # Here rather than at interpreter exit, where a reader gone (`| head`) is "Exception
        # ignored ... BrokenPipeError" and exit code 120.
        sys.stdout.flush()
        return code
    except CpinspectError as exc:
        print("cpinspect: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cpinspect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _stdout_gone()
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


def _stdout_gone() -> None:
    """Whoever read stdout left: point it at /dev/null, so that what is still buffered has
    somewhere to go when the interpreter flushes it on the way out."""
    try:
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):
        return  # no real stdout (replaced, closed): nothing will be flushed to a pipe
    os.dup2(devnull, fd)
    os.close(devnull)


def pick_and_attach(args: argparse.Namespace) -> int:
    """``cpinspect`` alone: pick a process in the picker, then attach as ``attach PID`` does."""
    from cpinspect.attach.processes import ProcessLister
    from cpinspect.cli import attach
    from cpinspect.tui.screens.picker import PickerApp

    picker = PickerApp(ProcessLister())
    pick = picker.run()
    if pick is None:
        return int(picker.return_code or 0)  # q: 0; the terminal gone or a signal: 128 + it
    # Parsed as if typed: attach gets every option's default, whatever options it grows.
    words = ["attach", "--inject", str(pick.pid)] if pick.inject else ["attach", str(pick.pid)]
    return attach.run(build_parser().parse_args(words))
