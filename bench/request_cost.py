"""What the agent adds to one request's CPU, in process, without sockets or the load client.

    python bench/request_cost.py [--rounds 7] [--requests 20000]

``bench/agent_overhead.py`` measures the whole server under HTTP load; on a shared 2-core box its
1 % effect drowns in the noise. This one calls the CherryPy app as WSGI (``cherrypy.tree``) in a
loop in a child process, one per mode, and counts the child's CPU (every thread: the agent's
answering thread too) per request. Modes, interleaved and rotated per round:

  none          no agent
  hooks         agent installed with access capture off (``log_access=False``): request hooks,
                the socket server idle
  hooks+access  agent installed as by default: hooks and the access record per request
  +poll         as hooks+access, polled at 1 Hz over the socket by this process (the TUI's
                threads delta, log page, and every fifth second info + sessions)

**Known problem (2026-12-01 16:44 UTC, quiet machine):** the child's WSGI loop never releases
the GIL, so the agent's socket thread hardly runs: its polls failed ("0 polls in 3.8 s", "agent
did not answer within 1.0 s"), and "hooks" read 17 us per request, ten times what the hooks
cost in isolation. Until the loop gives the other threads their turn the way a served request
does (socket I/O), read its figures as GIL contention, not as the agent's cost.

cheroot's own per-request work (socket, parsing; ~40 % of a trivial request) is left out, so
the ratios printed are upper bounds of what a served request sees; the difference in us is the
agent's cost itself. Printed: per round, each mode's CPU us per request; then per mode the
median over rounds of its ratio against "none" of the same round, its spread, and us added.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "hooks", "hooks+access", "+poll")


def child(mode: str, requests: int) -> int:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_server
    import cherrypy

    cherrypy.config.update(
        {
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    cherrypy.tree.mount(bench_server.Root(), "")
    cherrypy.server.unsubscribe()  # no HTTP server: the app is called directly
    socket_path = None
    if mode != "none":
        from cpinspect.agent import install

        socket_path = install(log_access=(mode != "hooks"))
    cherrypy.engine.start()
    app = cherrypy.tree
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def one() -> None:
        env = dict(base)
        env["wsgi.input"] = io.BytesIO(b"")
        body = app(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    for _ in range(2000):  # warm-up
        one()
    print(json.dumps({"ready": True, "socket": socket_path}), flush=True)
    sys.stdin.readline()  # the parent's poller is in place
    clock = time.CLOCK_PROCESS_CPUTIME_ID
    c0, w0 = time.clock_gettime(clock), time.monotonic()
    for _ in range(requests):
        one()
    c1, w1 = time.clock_gettime(clock), time.monotonic()
    print(json.dumps({"us": (c1 - c0) / requests * 1e6, "wall": w1 - w0}), flush=True)
    os._exit(0)


class Poller(threading.Thread):
    def __init__(self, socket_path: str) -> None:
        super().__init__(daemon=True)
        sys.path.insert(0, str(ROOT))
        from cpinspect.sources.agent import AgentSource

        self.source = AgentSource(socket_path)
        self.stopping = threading.Event()
        self.polls = 0

    def run(self) -> None:
        after = 0
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                self.source.threads()
                after = self.source.log(after=after).next
                if self.polls % 5 == 0:
                    self.source.info()
                    self.source.sessions()
                self.polls += 1
            except Exception as exc:  # noqa: BLE001
                print(f"poll failed: {exc}", file=sys.stderr)
            self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - t)))


def run_mode(mode: str, requests: int) -> Dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--requests", str(requests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    poller: Optional[Poller] = None
    if mode == "+poll":
        poller = Poller(ready["socket"])
        poller.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result: Dict[str, Any] = json.loads(proc.stdout.readline())
    if poller is not None:
        poller.stopping.set()
        poller.join(5)
        result["polls"] = poller.polls
    proc.wait(10)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.requests)
    print(
        f"request_cost: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load avg {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.requests} requests"
    )
    ratios: Dict[str, List[float]] = {m: [] for m in MODES[1:]}
    added: Dict[str, List[float]] = {m: [] for m in MODES[1:]}
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        us: Dict[str, float] = {}
        cells = []
        for mode in order:
            res = run_mode(mode, args.requests)
            us[mode] = res["us"]
            extra = f" [{res['polls']} polls in {res['wall']:.1f} s]" if "polls" in res else ""
            cells.append(f"{mode} {res['us']:.1f} us{extra}")
        for mode in MODES[1:]:
            ratios[mode].append(us[mode] / us["none"])
            added[mode].append(us[mode] - us["none"])
        print(f"round {r + 1}: " + " | ".join(cells), flush=True)
    print("\nmode          CPU/request vs none: median (min-max)   us added (median)")
    for mode in MODES[1:]:
        rs = ratios[mode]
        print(
            f"{mode:13} {statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"
            f"{statistics.median(added[mode]):22.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
