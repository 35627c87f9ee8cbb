"""Instructions of each piece of the agent's per-request work, counted under cachegrind.

    python bench/capture_pieces.py [--calls 20000] [--agent-root CHECKOUT] [PIECE ...]

Inside one real in-process CherryPy request (``app.get_serving`` + ``Request.run``, with the
agent's tracker hooks and log capture attached as ``install()`` attaches them, but not its socket
server: an idle server thread's instructions grow with the run's wall-clock time, which the load
stretches, and made runs of the same code differ by up to 6k per call at load 50), a child calls
one piece ``calls`` times under ``valgrind --tool=cachegrind``; the piece's cost is (that run's
instructions - those of a run calling nothing as often) / calls. The access record is handled
as CherryPy logs it, after finalize (``response.output_status`` and Content-Length set: without
them ``handle()`` took its careful path, ~9k more, which the figures before 2026-12-02 03:00
UTC included).

The pieces (each run as its own child, in parallel):

    nothing       a run calling nothing (as the baseline: reads 0.00k; the counts' own noise)
    hooks_empty   CherryPy's ``hooks.run`` of a point with no hook (what every point costs anyway)
    hook_start    ``hooks.run("on_start_resource")``: the tracker's start hook with it
    hooks_both    ``hooks.run("on_end_request")`` + ``hooks.run("on_start_resource")``
    handle        ``CaptureHandler.handle`` of an access record (the ring of 10,000 filling,
                  then wrapping)
    handle_noring the same with the ring's append a Python no-op
    handle_cring  the same with a C-level ``deque(maxlen).append`` as the ring (no lock, no seq:
                  what a lock-free ring's append could cost at best)

Subtract ``hooks_empty`` from ``hook_start`` for the start hook's own cost, and ``hook_start``
and ``hooks_empty`` from ``hooks_both`` for the end hook's. With no thread but the main one the
counts repeat: ``nothing`` against the baseline run read 0.00k at loads 10 and 50.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIECES = (
    "nothing",
    "hooks_empty",
    "hook_start",
    "hooks_both",
    "handle",
    "handle_noring",
    "handle_cring",
)


def child(piece: str, calls: int) -> int:
    """Under valgrind: one request whose handler calls ``piece`` ``calls`` times."""
    import collections
    import io
    import logging

    import cherrypy
    from cherrypy.lib import httputil

    from cpinspect.agent.logcapture import LogCapture
    from cpinspect.agent.tracking import RequestTracker

    cherrypy.config.update(
        {
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )

    class NoRing:
        def append(self, fields: Any) -> None:
            pass

        pending_append = append
        pending_count = ().__len__  # always 0: never drains

    class CRing:
        def __init__(self) -> None:
            self.append = self.pending_append = collections.deque(maxlen=10000).append
            self.pending_count = ().__len__

    def copy_of(handler: Any, ring: Any) -> Any:
        other = type(handler).__new__(type(handler))
        other.__dict__.update(handler.__dict__)
        other.ring = ring
        if "_append" in other.__dict__:  # the lock-free ring's handler calls these inline
            other._append = ring.pending_append
            other._pending_count = ring.pending_count
        return other

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            # The handler on the access loggers (one before it existed).
            handler = getattr(capture, "access_handler", capture.handler)
            line = '127.0.0.1 - - [01/Dec/2026:23:00:00] "GET / HTTP/1.1" 200 2 "" ""'
            rec = logging.LogRecord("cherrypy.access.1", 20, __file__, 1, line, None, None)
            # As after finalize, when CherryPy logs the access line (without output_status,
            # handle() takes its careful path: ~9k more, not what a request pays).
            response = cherrypy.serving.response
            response.output_status = b"200 OK"
            response.headers["Content-Length"] = "2"
            hooks = cherrypy.serving.request.hooks
            hooks["cpinspect_bench_empty"] = []
            noring = copy_of(handler, NoRing())
            cring = copy_of(handler, CRing())
            fns: Dict[str, Callable[[], Any]] = {
                "nothing": lambda: None,
                "hooks_empty": lambda: hooks.run("cpinspect_bench_empty"),
                "hook_start": lambda: hooks.run("on_start_resource"),
                "hooks_both": lambda: (hooks.run("on_end_request"), hooks.run("on_start_resource")),
                "handle": lambda: handler.handle(rec),
                "handle_noring": lambda: noring.handle(rec),
                "handle_cring": lambda: cring.handle(rec),
            }
            fn = fns[piece]
            for _ in range(calls):
                fn()
            return "ok"

    app = cherrypy.tree.mount(Root(), "")
    # The agent's tracker and capture as install() builds them, but not its socket server: an
    # idle server thread's work grows with the run's wall-clock time, which the load stretches
    # (at load 50, runs of the same code differed by up to 6k per call).
    tracker = RequestTracker()
    tracker.attach()
    capture = LogCapture(tracker, 10000)
    capture.attach()
    local = httputil.Host("127.0.0.1", 8080, "")
    remote = httputil.Host("127.0.0.1", 5555, "")
    _req, resp = app.get_serving(local, remote, "http", "HTTP/1.1")
    _req.run("GET", "/", "", "HTTP/1.1", [("Host", "127.0.0.1")], io.BytesIO())
    ok = b"".join(resp.body) == b"ok"
    app.release_serving()
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def count(piece: str, calls: int, agent_root: str) -> int:
    fd, out_name = tempfile.mkstemp(prefix="cg-pieces-", suffix=".out")
    os.close(fd)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [agent_root, env.get("PYTHONPATH", "")]))
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out_name}",
        sys.executable,
        str(Path(__file__)),
        "--child",
        piece,
        "--calls",
        str(calls),
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"the valgrind child ({piece}) failed: {done.stderr[-300:]!r}")
        with open(out_name) as f:
            m = re.search(r"^summary:\s+(\d+)", f.read(), re.MULTILINE)
        if m is None:
            raise RuntimeError("no summary line in the cachegrind output")
        return int(m.group(1))
    finally:
        os.unlink(out_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pieces", nargs="*", help="of: %s (default: all)" % ", ".join(PIECES))
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--agent-root", default=str(ROOT), help="the checkout whose agent runs")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.agent_root not in sys.path:
            sys.path.insert(0, args.agent_root)
        return child(args.child, args.calls)
    root = str(Path(args.agent_root).resolve())
    pieces: List[str] = list(args.pieces) or list(PIECES)
    unknown = [p for p in pieces if p not in PIECES]
    if unknown:
        print("capture_pieces: unknown piece %s (of: %s)" % (unknown[0], ", ".join(PIECES)))
        return 2
    print(
        f"capture_pieces: agent from {root}, {args.calls} calls per piece, load avg"
        f" {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=3) as pool:
        base = pool.submit(count, "nothing", args.calls, root)
        runs = {p: pool.submit(count, p, args.calls, root) for p in pieces}
        zero = base.result()
        for p in pieces:
            print(f"  {p:14} {(runs[p].result() - zero) / args.calls / 1e3:7.2f}k instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
