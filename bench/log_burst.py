"""The agent's log capture under a burst: 5,000 records/s for 60 s, followed like the inspector.

    python bench/log_burst.py [--quick] [--rate 5000] [--seconds 60] [--rounds 10]

Two parts, each on a freshly started CherryPy server (``--serve`` below: a trivial app with the
agent installed, log.screen off and no files, like a production app whose errors go nowhere):

burst   A thread in the target logs ``--rate`` records/s (1 in 100 an ERROR with a traceback)
        for ``--seconds``, rate-controlled in 10 ms steps. A follower reads ``GET /v1/log`` every
        0.5 s with ``limit=5000``, paging on while ``more``, as the inspector does. Printed:
        records produced (by the agent's sequence numbers, checked against the target's own
        count), received, missed (exact: received + missed == produced), the reads' latency and
        size, and the target's RSS over time (the agent lives in it: it must level off).
rate    The app's request rate with capture on vs off: the agent installed either way, its log
        handler detached in "off" (so the ratio is the capture's own cost: one access record per
        request). Both servers run at once on one CPU, the client (4 keep-alive connections,
        ``GET /``, threads of this process) on the other; ``--rounds`` pairs of short windows
        alternate between them, the order flipping each pair. Goal: median ratio >= 0.98.

Before both, the handler's CPU cost per record by kind, measured in this process.
``--quick``: a 10 s burst and 4 pairs.

``--simultaneous``: the rate part by ``bench/request_cost.py``'s method instead (both servers
measured in the same windows, roles swapped every round; CPU per request, whose inverse is
the rate ratio): the alternating windows above cannot resolve 2 % on this VM, whose speed moves
by +-20 % from one window to the next (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil
from benchlib import (
    ROOT,
    Server,
    agent_get,
    agent_get_raw,
    can_pin,
    keep_alive_load,
    machine,
    median,
    pin,
    start_ready,
)

HERE = os.path.dirname(os.path.abspath(__file__))


# --- the target (run as ``python bench/log_burst.py --serve``) -----------------------------------


def serve_main(capture: bool, cpu: int) -> int:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import cherrypy

    from cpinspect.agent import install, installed

    produced = [0]
    running = threading.Event()

    def burst(rate: int, seconds: float) -> None:
        step = 0.01
        per_step = max(1, int(rate * step))
        t0 = time.monotonic()
        n = 0
        try:
            while time.monotonic() - t0 < seconds:
                for _ in range(per_step):
                    n += 1
                    if n % 100 == 0:
                        try:
                            raise RuntimeError("burst failure %d" % n)
                        except RuntimeError:
                            cherrypy.log("burst %d failed" % n, severity=40, traceback=True)
                    else:
                        cherrypy.log("burst %d: something happened" % n)
                    produced[0] = n
                # Rate control: where record n is due, not a fixed sleep (logging takes time).
                due = t0 + n / float(rate)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            running.clear()

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "ok"

        @cherrypy.expose
        def burst(self, rate: str = "5000", seconds: str = "60") -> str:
            if running.is_set():
                return "busy"
            running.set()
            t = threading.Thread(
                target=burst, args=(int(rate), float(seconds)), name="burst", daemon=True
            )
            t.start()
            return "started"

        @cherrypy.expose
        def produced(self) -> str:
            return json.dumps({"produced": produced[0], "running": running.is_set()})

        @cherrypy.expose
        def capture(self, on: str = "1") -> str:
            """Attach (on=1) or detach (on=0) the agent's log handler (``--same-process``)."""
            agent = installed()
            assert agent is not None
            if on == "1":
                agent.log_capture.attach()
            else:
                agent.log_capture.detach()
            return on

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 8,
            "server.shutdown_timeout": 1,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    cherrypy.tree.mount(Root(), "")
    socket_path = install()
    if not capture:
        agent = installed()
        assert agent is not None
        agent.log_capture.detach()
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print(f"READY port={port} pid={os.getpid()} socket={socket_path}", flush=True)
    try:
        cherrypy.engine.block()
    finally:
        os._exit(0)
    return 0


def start(capture: bool, cpu: int = -1) -> Server:
    args = [os.path.join(HERE, "log_burst.py"), "--serve", "--cpu", str(cpu)]
    if not capture:
        args.append("--no-capture")
    return start_ready(args, "log burst server")


def http_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


# --- burst ---------------------------------------------------------------------------------------


def burst(rate: int, seconds: float, interval: float) -> Dict[str, Any]:
    srv = start(capture=True)
    try:
        assert srv.socket is not None
        proc = psutil.Process(srv.pid)
        first = agent_get(srv.socket, "/v1/log?limit=1")
        buffer_id = first["buffer"]
        cursor = start_seq = first["latest"]
        rss: List[Tuple[float, int]] = [(0.0, proc.memory_info().rss)]
        received = missed = reads = 0
        gaps = 0
        read_ms: List[float] = []
        sizes: List[int] = []
        last_seq = cursor
        assert http_get(srv.port, f"/burst?rate={rate}&seconds={seconds}") == "started"
        t0 = time.monotonic()
        next_rss = 1.0
        finished_at: Optional[float] = None
        while True:
            tick = time.monotonic()
            while True:  # one follow step: page on while "more"
                t1 = time.perf_counter()
                raw = agent_get_raw(srv.socket, f"/v1/log?after={cursor}&limit=5000", 10.0)
                read_ms.append((time.perf_counter() - t1) * 1000)
                sizes.append(len(raw))
                page = json.loads(raw)
                reads += 1
                if page["buffer"] != buffer_id:
                    raise RuntimeError("the agent restarted during the burst")
                missed += page["missed"]
                for rec in page["records"]:
                    expected = last_seq + 1
                    if rec["seq"] != expected:
                        gaps += rec["seq"] - expected
                    last_seq = rec["seq"]
                received += len(page["records"])
                cursor = page["next"]
                if not page["more"]:
                    break
            now = time.monotonic() - t0
            if now >= next_rss:
                rss.append((now, proc.memory_info().rss))
                next_rss += 1.0
            state = json.loads(http_get(srv.port, "/produced"))
            if not state["running"]:
                if finished_at is None:
                    finished_at = now  # one more follow step collects the tail
                elif now - finished_at >= interval:
                    break
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
        final = agent_get(srv.socket, f"/v1/log?after={cursor}&limit=5000")
        missed += final["missed"]
        received += len(final["records"])
        latest = final["latest"]
        rss.append((time.monotonic() - t0, proc.memory_info().rss))
        return {
            "rate": rate,
            "seconds": seconds,
            "produced_by_target": state["produced"],
            "produced_seq": latest - start_seq,
            "received": received,
            "missed": missed,
            "gaps": gaps,
            "reads": reads,
            "read_ms_median": median(read_ms),
            "read_ms_max": max(read_ms),
            "read_kib_median": median(sizes) / 1024,
            "read_kib_max": max(sizes) / 1024,
            "rss": rss,
            "capacity": final["capacity"],
            "dropped": final["dropped"],
        }
    finally:
        srv.stop()


# --- emit cost --------------------------------------------------------------------------------


def emit_costs(n: int = 20000) -> Dict[str, float]:
    """Microseconds of CPU the capture handler adds per record, by kind, measured in this process
    inside a real CherryPy request (app.get_serving + Request.run, no socket): the best of 5."""
    import io
    import logging

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's agent, not an installed one
    import cherrypy
    from cherrypy.lib import httputil

    from cpinspect.agent.logcapture import LogCapture
    from cpinspect.agent.tracking import RequestTracker

    cherrypy.config.update({"log.screen": False, "checker.on": False})
    tracker = RequestTracker()
    tracker.attach()
    capture = LogCapture(tracker, 10000)
    out: Dict[str, float] = {}

    def best(fn: Any) -> float:
        times = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            times.append((time.process_time() - t0) / n * 1e6)
        return min(times)

    def records() -> Dict[str, logging.LogRecord]:
        access = '127.0.0.1 - - [01/Dec/2026:10:00:00] "GET /?a=1 HTTP/1.1" 200 2 "" ""'
        make = logging.getLogger("cherrypy.access").makeRecord
        try:
            raise ValueError("for the traceback")
        except ValueError:
            exc = sys.exc_info()
        return {
            "access record": make("cherrypy.access", 20, "x", 1, access, (), None),
            "error-log line": make("cherrypy.error", 20, "x", 1, "[date]  a message", (), None),
            "ERROR with traceback": make("cherrypy.error", 40, "x", 1, "[date] HTTP ", (), exc),
        }

    kinds: List[str] = []

    class Root:
        @cherrypy.expose
        def index(self, **params: Any) -> str:
            response = cherrypy.serving.response
            response.output_status = b"200 OK"
            response.headers["Content-Length"] = "2"
            suffix = " in a request" + (" with a query" if params else "")
            for kind, rec in records().items():
                if kind in kinds:
                    # Each record by the handler on its logger (the access loggers' own).
                    ours = capture.handler
                    if rec.name.startswith("cherrypy.access"):
                        ours = getattr(capture, "access_handler", ours)
                    out[kind + suffix] = best(lambda rec=rec, h=ours.handle: h(rec))
            return "ok"

    app = cherrypy.tree.mount(Root(), "/emit-cost")
    local = httputil.Host("127.0.0.1", 8080, "")
    remote = httputil.Host("127.0.0.1", 5555, "")
    for query, wanted in (("", list(records())), ("a=1&token=x", ["access record"])):
        kinds[:] = wanted
        req, _resp = app.get_serving(local, remote, "http", "HTTP/1.1")
        req.run("GET", "/emit-cost/", query, "HTTP/1.1", [("Host", "127.0.0.1")], io.BytesIO())
        app.release_serving()
    outside = records()["error-log line"]
    out["error-log line outside a request"] = best(lambda: capture.handler.handle(outside))

    # Whole requests (GET /emit-cost/, trivial handler, one access record each), capture
    # attached vs detached, in alternating batches: the handler's cost where it really runs,
    # among CherryPy's own work (colder caches than the loops above).
    kinds[:] = []

    def batch(count: int) -> float:
        t0 = time.process_time()
        for _ in range(count):
            req, resp = app.get_serving(local, remote, "http", "HTTP/1.1")
            req.run("GET", "/emit-cost/", "", "HTTP/1.1", [("Host", "127.0.0.1")], io.BytesIO())
            b"".join(resp.body)
            app.release_serving()
        return (time.process_time() - t0) / count * 1e6

    batch(1000)
    on: List[float] = []
    off: List[float] = []
    for r in range(30):
        for attached in (True, False) if r % 2 == 0 else (False, True):
            if attached:
                capture.attach()
                on.append(batch(500))
                capture.detach()
            else:
                off.append(batch(500))
    diffs = sorted(a - b for a, b in zip(on, off))
    out["whole request, capture off (us/request)"] = median(off)
    out["whole request, capture on minus off (median pair)"] = median(diffs)
    tracker.detach()
    if len(out) != 7:
        raise RuntimeError("the emit-cost requests failed: %s" % sorted(out))
    return out


# --- rate ----------------------------------------------------------------------------------------


def load_window(port: int, seconds: float, connections: int = 4) -> Tuple[int, int]:
    """``GET /`` back to back on ``connections`` keep-alive connections: (answered, failed)."""
    return keep_alive_load(port, "/", seconds, connections)


def request_rates(
    pairs: int, window: float, cpus: Tuple[int, int]
) -> List[Tuple[bool, float, float, float, float]]:
    """Both servers (capture on, capture off) started once on the same CPU; short windows
    alternate between them (on/off, then off/on ...), so a burst of load from elsewhere on the
    machine hits both sides of a pair alike. Per pair: (on first?, on req/s, off req/s,
    on CPU us/req, off CPU us/req)."""
    servers = {True: start(True, cpus[0]), False: start(False, cpus[0])}
    try:
        procs = {c: psutil.Process(srv.pid) for c, srv in servers.items()}
        for c in servers:  # warm up
            load_window(servers[c].port, 0.5)
        out = []
        for r in range(pairs):
            order = (True, False) if r % 2 == 0 else (False, True)
            rps: Dict[bool, float] = {}
            cpu: Dict[bool, float] = {}
            for c in order:
                cpu0 = sum(procs[c].cpu_times()[:2])
                t0 = time.monotonic()
                done, _failed = load_window(servers[c].port, window)
                elapsed = time.monotonic() - t0
                cpu1 = sum(procs[c].cpu_times()[:2])
                rps[c] = done / elapsed
                cpu[c] = (cpu1 - cpu0) / max(1, done) * 1e6
            out.append((order[0], rps[True], rps[False], cpu[True], cpu[False]))
        return out
    finally:
        for srv in servers.values():
            srv.stop()


def request_rates_toggled(
    pairs: int, window: float, cpus: Tuple[int, int]
) -> List[Tuple[bool, float, float, float, float]]:
    """One server, its capture switched on and off between windows (``/capture?on=``): the
    same process on both sides of every pair, so nothing about one process (its memory
    layout, hash seed, where its threads land) can pass for the capture's cost. Order flips
    each pair. Per pair as ``request_rates``."""
    srv = start(True, cpus[0])
    try:
        proc = psutil.Process(srv.pid)
        load_window(srv.port, 0.5)
        out = []
        for r in range(pairs):
            order = (True, False) if r % 2 == 0 else (False, True)
            rps: Dict[bool, float] = {}
            cpu: Dict[bool, float] = {}
            for c in order:
                assert http_get(srv.port, "/capture?on=%d" % int(c)) == str(int(c))
                cpu0 = sum(proc.cpu_times()[:2])
                t0 = time.monotonic()
                done, _failed = load_window(srv.port, window)
                elapsed = time.monotonic() - t0
                cpu1 = sum(proc.cpu_times()[:2])
                rps[c] = done / elapsed
                cpu[c] = (cpu1 - cpu0) / max(1, done) * 1e6
            out.append((order[0], rps[True], rps[False], cpu[True], cpu[False]))
        return out
    finally:
        srv.stop()


def request_rates_aa(
    pairs: int, window: float, cpus: Tuple[int, int]
) -> List[Tuple[bool, float, float, float, float]]:
    """The two-server method with capture off in both ("A/A"): what it reads when there is
    no difference at all (its bias and spread). Per pair: server 1 as "on", server 2 as "off"."""
    servers = {True: start(False, cpus[0]), False: start(False, cpus[0])}
    try:
        procs = {c: psutil.Process(srv.pid) for c, srv in servers.items()}
        for c in servers:
            load_window(servers[c].port, 0.5)
        out = []
        for r in range(pairs):
            order = (True, False) if r % 2 == 0 else (False, True)
            rps: Dict[bool, float] = {}
            cpu: Dict[bool, float] = {}
            for c in order:
                cpu0 = sum(procs[c].cpu_times()[:2])
                t0 = time.monotonic()
                done, _failed = load_window(servers[c].port, window)
                elapsed = time.monotonic() - t0
                cpu1 = sum(procs[c].cpu_times()[:2])
                rps[c] = done / elapsed
                cpu[c] = (cpu1 - cpu0) / max(1, done) * 1e6
            out.append((order[0], rps[True], rps[False], cpu[True], cpu[False]))
        return out
    finally:
        for srv in servers.values():
            srv.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s burst, 2 short rounds")
    parser.add_argument("--rate", type=int, default=5000, help="records/s (5000)")
    parser.add_argument("--seconds", type=float, default=None, help="burst length (60)")
    parser.add_argument("--interval", type=float, default=0.5, help="follow interval (0.5)")
    parser.add_argument("--rounds", type=int, default=None, help="on/off pairs (10)")
    parser.add_argument("--rate-seconds", type=float, default=None, help="s per window (1.25)")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-costs", action="store_true", help="not the in-process part")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="rate: one server, capture switched on/off between windows (not two servers)",
    )
    parser.add_argument(
        "--aa", action="store_true", help="rate: two servers, both with capture off (A/A check)"
    )
    parser.add_argument(
        "--simultaneous",
        action="store_true",
        help="rate: request_cost.py's method (both servers in the same windows, roles swapped)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-capture", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_main(not args.no_capture, args.cpu)
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 60.0)
    rounds = args.rounds if args.rounds is not None else (4 if args.quick else 10)
    rate_seconds = args.rate_seconds or 1.25
    if args.rate < 1 or seconds <= 0 or rounds < 1 or args.interval <= 0:
        parser.error("--rate, --seconds, --rounds and --interval must be positive")

    print(f"log_burst: {machine()}")
    if not args.skip_costs:
        costs = emit_costs()
        print("\ncapture handler CPU per record (in-process, best of 5 x 20,000):")
        for kind, us in costs.items():
            print(f"  {kind:<44} {us:5.1f} us")
    if not args.skip_burst:
        print(
            f"\nburst: {args.rate} records/s for {seconds:g} s (1 in 100 with a traceback), "
            f"followed every {args.interval:g} s with limit=5000"
        )
        b = burst(args.rate, seconds, args.interval)
        exact = b["received"] + b["missed"] == b["produced_seq"]
        print(
            f"  produced {b['produced_seq']} records (the target logged {b['produced_by_target']}"
            f" burst records; the rest are access lines), received {b['received']}, "
            f"missed {b['missed']}, gaps {b['gaps']}, dropped in the agent {b['dropped']}"
        )
        print(
            f"  received + missed == produced: {exact}; "
            f"{b['reads']} reads, median {b['read_ms_median']:.1f} ms / "
            f"{b['read_kib_median']:.0f} KiB, max {b['read_ms_max']:.1f} ms / "
            f"{b['read_kib_max']:.0f} KiB; ring capacity {b['capacity']}"
        )
        rss = b["rss"]
        marks = [rss[0]] + [s for s in rss if int(s[0]) % 10 == 0 and s[0] >= 1] + [rss[-1]]
        seen = set()
        cells = []
        for t, value in marks:
            key = int(t)
            if key in seen:
                continue
            seen.add(key)
            cells.append(f"{t:4.0f} s {value / 1048576:6.1f}")
        print("  target RSS MiB: " + " | ".join(cells))
        peak = max(v for _, v in rss)
        after_fill = [v for t, v in rss if t >= min(10.0, seconds / 2)]
        print(
            f"  RSS start {rss[0][1] / 1048576:.1f} MiB, peak {peak / 1048576:.1f} MiB, "
            f"growth after the ring filled {(max(after_fill) - min(after_fill)) / 1048576:.1f} MiB"
        )
    if not args.skip_rate and args.simultaneous:
        import request_cost

        cpus = (0, 1) if can_pin(2) else (-1, -1)
        pin(cpus[1])
        n = max(2, rounds * 2)
        print(f"\nrate, simultaneous method: {n} rounds of 2 s (bench/request_cost.py)")
        res = request_cost.simultaneous("capture", n, 2, 4, cpus)
        print(request_cost.summary("capture", res))
        cpu = median(res["pairs"])
        print(
            f"  rate ratio (1 / CPU per request): {1 / cpu:.3f};"
            f" goal >= 0.98 -> {'met' if 1 / cpu >= 0.98 else 'NOT met'}"
        )
    elif not args.skip_rate:
        pinned = can_pin(2)
        cpus = (-1, -1)
        if pinned:
            first, second = sorted(os.sched_getaffinity(0))[:2]
            cpus = (first, second)
            pin(second)
        method = (
            "one server, capture switched on/off between windows"
            if args.same_process
            else "A/A: two servers, capture off in both"
            if args.aa
            else "two servers, capture on in one, off in the other"
        )
        print(
            f"\nrate: {rounds} pairs of {rate_seconds:g} s windows, capture on vs off ({method}), "
            f"4 keep-alive connections, pool 8, "
            + (f"servers on CPU {cpus[0]}, client on CPU {cpus[1]}" if pinned else "not pinned")
        )
        runner = (
            request_rates_toggled
            if args.same_process
            else request_rates_aa
            if args.aa
            else request_rates
        )
        pairs = runner(rounds, rate_seconds, cpus)
        ratios = [on / off for _first, on, off, _c1, _c2 in pairs]
        cpu_ratios = [c_on / c_off for _first, _on, _off, c_on, c_off in pairs]
        for i, (on_first, on, off, c_on, c_off) in enumerate(pairs):
            print(
                f"  pair {i + 1:2d} ({'on -> off' if on_first else 'off -> on'}): "
                f"off {off:6.0f} req/s {c_off:4.0f} us/req | "
                f"on {on:6.0f} req/s {c_on:4.0f} us/req ({on / off:.3f})"
            )
        print(
            f"  capture on/off req/s: median {median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f}); server CPU per request "
            f"{median(cpu_ratios):.3f} ({min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})"
        )
        print(f"  goal median ratio >= 0.98 -> {'met' if median(ratios) >= 0.98 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
