"""What one ``GilDump`` reading costs the inspector at 1,000 threads, before and after issue 13's
one-pass reading (``GilDump(text)`` + ``.holders`` + ``.count()`` + ``.pieces()``).

    python bench/gildump_cost.py [--runs 30] [--depth 12] [--from FILE] [--save FILE]

The text is real: a Python process with 1,000 threads (500 in ``time.sleep``, 100 spinning in
pure Python, the rest waiting on a queue, each ``--depth`` frames down a recursion: ~17 frames a
thread, as deep as a CherryPy worker's stack) is read once with ``py-spy dump --json
--nonblocking`` (as the inspector reads it, ~5 MB) and killed; ``--from`` reads a saved text
instead, ``--save`` keeps the one read. "before" is the reading as it was (a copy below: the
text scanned about five times, ``count``/``find`` over all of it, then cut into pieces),
"after" is ``cpinspect.sources.pyspy.GilDump``. Both must give the same holders, count, pieces
and threads.
Printed: CPU time (``time.process_time``) per reading, best and median of ``--runs``, and the
ratio before/after of the bests.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cpinspect.sources.pyspy import (  # noqa: E402
    GilDump,
    _holders_in,
    _parse_json,
)
from cpinspect.sources.pyspy_exec import dump_command, locate_pyspy  # noqa: E402

TARGET = r"""
import queue, sys, threading, time
q, go = queue.Queue(), threading.Event()
depth = int(sys.argv[1])
def deep(n, f):
    return deep(n - 1, f) if n else f()
def spin():
    go.wait()
    x = 0
    while True:
        x += 1
def sleep():
    while True:
        time.sleep(1)
def wait():
    q.get()
for n in range(999):
    f = sleep if n < 500 else wait if n < 899 else spin
    name = "%s-%d" % (f.__name__, n)
    threading.Thread(target=deep, args=(depth, f), name=name, daemon=True).start()
print("ready", flush=True)
go.set()  # the spinners begin only now: 100 of them would starve the starting of the rest
time.sleep(600)
"""
READY_WITHIN = 60.0


def capture(depth: int) -> bytes:
    """One ``py-spy dump --json`` of a fresh 1,000-thread process (killed afterwards), each
    thread ``depth`` frames deeper than its function (as a CherryPy worker's stack is)."""
    pyspy = locate_pyspy()
    if pyspy is None:
        raise SystemExit("py-spy not found: run `make venv`")
    proc = subprocess.Popen(
        [sys.executable, "-c", TARGET, str(depth)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_WITHIN)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise SystemExit("the 1,000-thread target did not start within %g s" % READY_WITHIN)
        time.sleep(1.0)  # every thread in its loop or wait
        out = subprocess.run(
            dump_command(pyspy, proc.pid), capture_output=True, timeout=120, check=True
        )
        return out.stdout
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# --- before: GilDump and _split_threads as they were (commit 2f291a7) -------------------------


class Before:
    def __init__(self, stdout: bytes) -> None:
        self._stdout = stdout
        self._threads: Optional[List[Dict[str, Any]]] = None
        self._pieces: Optional[List[bytes]] = None
        found = _holders_in(stdout)
        self._counted: Optional[int] = None
        if found is None:
            found = [t for t in self.threads() if t.get("owns_gil")]
        else:
            self._counted = stdout.count(b'"thread_id"')
        self.holders: List[Dict[str, Any]] = found

    def count(self) -> int:
        if self._threads is None and self._counted is not None:
            return self._counted
        return len(self.threads())

    def threads(self) -> List[Dict[str, Any]]:
        if self._threads is None:
            if self._pieces:
                text = b"[{" + b"},{".join(self._pieces) + b"}]"
                self._threads = _parse_json(text)
            else:
                self._threads = _parse_json(self._stdout)
        return self._threads

    def pieces(self) -> Optional[List[bytes]]:
        if self._pieces is None:
            self._pieces = _old_split_threads(self._stdout)
            if self._pieces:
                self._stdout = b""
        return self._pieces or None


_LIST_HEAD = __import__("re").compile(rb"\[(\r?\n)( +)\{\r?\n")


def _old_split_threads(stdout: bytes) -> List[bytes]:
    first = len(stdout) - len(stdout.lstrip()[:1]) if stdout[:1].isspace() else 0
    head = _LIST_HEAD.match(stdout, first)
    if head is None:
        return []
    newline, indent = head.group(1), head.group(2)
    close = newline + indent + b"}"
    end = len(stdout.rstrip()) if stdout[-1:].isspace() else len(stdout)
    if not stdout.endswith(close + newline + b"]", 0, end):
        return []
    at = head.end(2) + 1
    last = end - len(newline) - 1 - len(close)
    sep = close + b"," + newline + indent + b"{"
    pieces: List[bytes] = []
    cut = stdout.find(sep, at, last)
    while cut >= 0:
        pieces.append(stdout[at:cut])
        at = cut + len(sep)
        cut = stdout.find(sep, at, last)
    pieces.append(stdout[at:last])
    return pieces


# --- timing ------------------------------------------------------------------------------------


def reading(kind: Callable[[bytes], Any], text: bytes) -> float:
    """CPU seconds of one reading: made, its holders, count and pieces read."""
    start = time.process_time()
    dump = kind(text)
    answers = (dump.holders, dump.count(), dump.pieces())
    took = time.process_time() - start
    del dump, answers
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--from", dest="source", help="a saved py-spy text instead of a read")
    parser.add_argument("--save", help="keep the text read here")
    parser.add_argument(
        "--depth", type=int, default=12, help="frames added to each stack (12: ~5 MB in all)"
    )
    args = parser.parse_args()
    text = Path(args.source).read_bytes() if args.source else capture(args.depth)
    if args.save:
        Path(args.save).write_bytes(text)
    whole = _parse_json(text)
    before, after = Before(text), GilDump(text)
    assert before.holders == after.holders == [t for t in whole if t.get("owns_gil")]
    assert before.count() == after.count() == len(whole)
    assert before.pieces() == after.pieces() and after.pieces() is not None
    assert before.threads() == after.threads() == whole
    holders = [t["thread_name"] for t in after.holders]
    print(
        "text: %.2f MB, %d threads, holders %s" % (len(text) / 1e6, len(whole), holders or "none")
    )
    del whole, before, after
    times: Dict[str, List[float]] = {"before": [], "after": []}
    for _ in range(args.runs):  # interleaved: the machine's load falls on both alike
        times["before"].append(reading(Before, text))
        times["after"].append(reading(GilDump, text))
    for name, values in times.items():
        print(
            "%-6s best %6.2f ms  median %6.2f ms  (%d runs, CPU time)"
            % (name, 1e3 * min(values), 1e3 * statistics.median(values), len(values))
        )
    print("ratio before/after (best): %.2fx" % (min(times["before"]) / min(times["after"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
