"""``cpinspect logs PID``: the target's log records as they arrive, ``tail -f`` style.

From the agent's ring buffer (every record, with its traceback and request, even when CherryPy
writes errors nowhere), and from the log files the inspector follows itself; without the agent,
from the log files alone (``log.error_file`` / ``log.access_file`` found among the process's
open files). ``-n`` past records first, then the new ones (``--no-follow``: only those). Each
record is one line with its traceback indented under it; ``--json``: one JSON object per line.
Exits on Ctrl-C (130), or when the target exits (one line, exit code 9). Never imports Textual.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional, Set

from cpinspect.agent.wire import LOG_LEVELS as LEVELS
from cpinspect.cli.common import add_target_arguments
from cpinspect.errors import AgentNotFound, TargetGone, UsageError

if TYPE_CHECKING:  # loaded when the command runs, not for --help
    from cpinspect.model import LogEntry, LogRecord
LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


LEVEL_WINDOW = 10_000
"""Records back from the newest that ``logs --level`` looks through for its first ``-n``
(the agent ring's default capacity; one read of the feed takes that many)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="print the process's log records as they arrive (tail -f style), tracebacks whole",
    )
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--level",
        type=str.upper,
        choices=LEVELS,
        help="only records of this level and worse (a 5xx answer counts as ERROR)",
    )
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="past records to print first (default %(default)s)",
    )
    parser.add_argument("--no-follow", action="store_true", help="print the past records and exit")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds between reads (default %(default)s)",
    )
    parser.set_defaults(func=run)


def _passes(record: LogRecord, level: Optional[str]) -> bool:
    if level is None:
        return True
    from cpinspect.analysis import effective_level

    return effective_level(record) >= LEVEL_NUMBERS[level]


def _entry_json(entry: LogEntry) -> str:
    from cpinspect.model import LogGap
    from cpinspect.protocol import to_json

    if isinstance(entry, LogGap):
        return json.dumps({"missed": entry.count, "time": entry.time, "why": entry.why})
    data = to_json(entry)
    return json.dumps(data, ensure_ascii=False)


def _print(entries: List[LogEntry], args: argparse.Namespace) -> None:
    from cpinspect.formatting import format_log_record, log_gap_line
    from cpinspect.model import LogGap, LogRecord

    out = sys.stdout
    for entry in entries:
        if isinstance(entry, LogRecord) and not _passes(entry, args.level):
            continue
        if args.json:
            out.write(_entry_json(entry) + "\n")
        elif isinstance(entry, LogGap):
            out.write(log_gap_line(entry) + "\n")
        else:
            out.write("\n".join(format_log_record(entry)) + "\n")
    out.flush()


def _alive(pid: Optional[int]) -> bool:
    if pid is None:
        return True
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def run(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("-n takes 0 or more records, not %d" % args.lines)
    if args.interval < 0.05:
        raise UsageError("--interval takes at least 0.05 seconds, not %s" % args.interval)
    from cpinspect.model import LogRecord
    from cpinspect.sources.logfeed import LogFeed
    from cpinspect.sources.open import connect_agent, parse_pid

    pid = parse_pid(args.pid) if args.pid is not None else None
    if args.pid is None and args.socket is None:
        raise UsageError("give a pid (or :PORT) or --socket PATH")
    source = None
    try:
        link = connect_agent(pid=pid, socket=args.socket, timeout=args.timeout)
    except AgentNotFound:
        if pid is None:
            raise
        link = None
    if link is not None:
        source = link.source
        pid = link.pid if pid is None else pid
        if link.silent:
            print("note: %s; log files only until it answers" % link.error, file=sys.stderr)
    # The level asked of the agent too: fewer records over the socket.
    # Files only through /proc/<pid>/root: without a pid seen from here, the ring alone.
    # With --level, the last N *matching* records: the ring's last LEVEL_WINDOW seqs are asked
    # (the agent sends only the matching ones), not its last N records, of which a busy
    # server's errors may be none (seen on salt-api with -n 400).
    history = max(args.lines, 1) if args.level is None else max(args.lines, LEVEL_WINDOW)
    feed = LogFeed(source, pid, history=history, level=args.level, files=pid is not None)
    if link is not None:
        feed.configure(link.info)
    said: Set[str] = set()
    try:
        asked = link is not None and not link.silent
        batch = feed.read(agent=asked)
        if feed.files_followed:
            # A file's last record is complete once a read brings nothing more.
            again = feed.read(agent=asked)
            batch = replace(batch, entries=batch.entries + again.entries)
        if source is None and not feed.files_followed:
            raise AgentNotFound(
                "no agent in pid %s and no log file open in it: load the agent "
                "(`cpinspect inject %s`) or set log.error_file" % (pid, pid)
            )
        if source is None:
            print(
                "note: no agent in pid %s: following %s"
                % (pid, ", ".join(s.path for s in feed.state.files)),
                file=sys.stderr,
            )
        _warn(batch.warnings, said)
        past = [e for e in batch.entries if not isinstance(e, LogRecord) or _passes(e, args.level)]
        if args.lines:
            _print(past[-args.lines :], args)
        if args.no_follow:
            return 0
        while True:
            time.sleep(args.interval)
            if not _alive(pid):
                raise TargetGone("pid %s exited" % pid)
            batch = feed.read()
            if isinstance(feed.last_error, TargetGone) and not _alive(pid):
                raise TargetGone("pid %s exited" % pid)
            if isinstance(feed.last_error, TargetGone) and pid is None:
                raise feed.last_error
            _warn(batch.warnings, said)
            _print(list(batch.entries), args)
    finally:
        feed.close()
        if source is not None:
            source.close()


def _warn(warnings: tuple[str, ...], said: Set[str]) -> None:
    for warning in warnings:
        if warning not in said:
            said.add(warning)
            print("warning: %s" % warning, file=sys.stderr)
