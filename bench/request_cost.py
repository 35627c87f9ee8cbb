"""What the agent costs one request: two servers measured at the same time, and instructions.

    python bench/request_cost.py [--compare agent|capture|idle|agent-noaccess|aa|all]
                                 [--rounds 40] [--window 2] [--agent-root CHECKOUT]
    python bench/request_cost.py --cachegrind [--requests 2000]
    python bench/request_cost.py --quick          # 8 rounds of each comparison, no cachegrind

Two goals are measured here: issue 13's "CPU per request with the agent polled at 1 Hz <= 1.01x
without" (``--compare agent``) and issue 11's "request rate with capture on >= 0.98 of without"
(``--compare capture``: both servers have the agent, one has its log handler detached).

**Simultaneous method.** This VM's speed drifts by +-20 % between windows a second apart, so
configurations measured in alternating windows cannot resolve 1-2 %. Here two servers (trivial
app, pool of 8, ``bench/request_cost.py --serve``) are pinned to the same CPU and both saturated
at once by a client on the other CPU (keep-alive raw-socket connections on threads of this
process); over the same window each server's CPU time (the sum of its threads' run time in
``/proc/PID/task/*/schedstat``, nanoseconds) is divided by the requests it answered. The
scheduler shares CPU 0 between them, so drift hits both alike. Each round one server runs the
configuration under test and the other the baseline, and the roles swap every round (through
``/_ctl``: the agent installed / uninstalled, the capture attached / detached), so a bias of
one process (memory layout, hash seed) cancels in each pair of rounds: a pair's ratio is the
geometric mean of its two rounds'. ``--compare aa`` runs the same with no difference at all (it
must read 1.000: the method's own bias and spread).

In ``agent`` rounds the server with the agent is polled as the TUI polls it, once a second:
``/v1/threads`` (delta after the first answer) and ``/v1/log?after=``, every fifth second
``/v1/info`` and ``/v1/sessions`` too, exactly ``window`` polls per window, each answered inside
it (the first full answer is taken before the window starts, as a TUI attached for a while
would have).

Saturation: the two servers' CPU shares over a window add up to about one CPU when nothing
else runs there (printed; less when other processes take CPU 0, which slows both alike); the
client's own share of its CPU is printed beside it (well under 1: not the bottleneck).

**Cachegrind** (``--cachegrind``): instructions per request under ``valgrind --tool=cachegrind``,
which the machine's load does not disturb. A child serves in-process requests (``GET /`` through
``app.get_serving`` + ``Request.run``, no socket: cheroot's share of a served request is left
out, so the ratios are upper bounds) in modes none / agent without capture / agent; per request
= (instructions of a run of W + n2 requests - those of W + n1) / (n2 - n1). One poll's
instructions are counted separately (this process polls the valgrind child over the socket, P
times; minus a run that idles as long), and added per request scaled by polls per second over
the requests per second of one saturated server at native speed (measured here): valgrind slows
the requests ~50x but not the wall-clock poll rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from benchlib import Server, can_pin, machine, pin, start_ready  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
POLL_INFO_EVERY = 5


# --- the server (``--serve``) ------------------------------------------------------------------


def serve_main(cpu: int, threads: int, agent_root: str) -> int:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    if agent_root:
        sys.path.insert(0, agent_root)  # another checkout's agent (before/after comparisons)
    import cherrypy

    from cpinspect.agent import install, installed, uninstall

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "ok"

        @cherrypy.expose
        def _ctl(self, agent: str = "", capture: str = "") -> str:
            """Install (agent=1) / uninstall (agent=0) the agent; attach (capture=1) / detach
            (capture=0) its log handler. Answers the agent's socket path or ``-``."""
            if agent == "1":
                install()
            elif agent == "0":
                uninstall()
            current = installed()
            if capture and current is not None:
                if capture == "1":
                    current.log_capture.attach()
                else:
                    current.log_capture.detach()
            return (current.socket_path or "-") if current is not None else "-"

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": threads,
            "server.shutdown_timeout": 1,
            "engine.autoreload.on": False,
            "checker.on": False,
            # No files: CherryPy still formats every access line and logs it to cherrypy.access
            # (where the capture takes it); nothing else writes it.
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    cherrypy.tree.mount(Root(), "")
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print(f"READY port={port} pid={os.getpid()} socket=-", flush=True)
    try:
        cherrypy.engine.block()
    finally:
        os._exit(0)
    return 0


AGENT_ROOT = [""]
"""``--agent-root``: the servers import ``cpinspect.agent`` from there ("": this checkout)."""


def start(cpu: int, threads: int = 8) -> Server:
    args = [str(Path(__file__)), "--serve", "--cpu", str(cpu), "--threads", str(threads)]
    if AGENT_ROOT[0]:
        args += ["--agent-root", AGENT_ROOT[0]]
    return start_ready(args, "request_cost server")


def ctl(port: int, query: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", "/_ctl?" + query)
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/_ctl?{query} answered {response.status}: {body[:200]}")
    return body


# --- the load: keep-alive raw-socket connections on threads of this process --------------------


class Load:
    """``connections`` keep-alive connections per port sending ``GET /`` back to back; ``done``
    counts the answers per port (each thread writes only its own slot)."""

    def __init__(self, ports: Sequence[int], connections: int) -> None:
        self.ports = list(ports)
        self.stopping = threading.Event()
        self.done: List[List[int]] = [[0] * connections for _ in ports]
        self.failed = 0
        self.threads = [
            threading.Thread(target=self._worker, args=(p, c), daemon=True)
            for p in range(len(ports))
            for c in range(connections)
        ]
        for t in self.threads:
            t.start()

    def count(self, p: int) -> int:
        return sum(self.done[p])

    def _worker(self, p: int, c: int) -> None:
        counts = self.done[p]
        while not self.stopping.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.ports[p]), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                self.failed += 1
                time.sleep(0.1)
                continue
            buf = b""
            try:
                while not self.stopping.is_set():
                    sock.sendall(REQUEST)
                    while True:
                        end = buf.find(b"\r\n\r\n")
                        if end >= 0:
                            m = _LENGTH.search(buf, 0, end + 2)
                            need = end + 4 + (int(m.group(1)) if m else 0)
                            if len(buf) >= need:
                                status_ok = buf.startswith(b"HTTP/1.1 200")
                                buf = buf[need:]
                                break
                        data = sock.recv(65536)
                        if not data:
                            raise OSError("closed")
                        buf += data
                    if status_ok:
                        counts[c] += 1
                    else:
                        self.failed += 1
            except OSError:
                self.failed += 1
            finally:
                sock.close()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(15)


def cpu_ns(pid: int) -> int:
    """Run time of every thread of ``pid`` so far (ns, /proc/PID/task/*/schedstat)."""
    total = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


# --- the poller: what the TUI asks once a second -----------------------------------------------


LOG_POLL_ENV = "CPINSPECT_BENCH_LOG_POLL"
"""``notable`` (default: what the TUI asks while its Log tab is hidden, branch logpoll) or
``full`` (every record: the Log tab shown, and every TUI before it). An environment variable so
the cachegrind children poll the same way (``--log-poll`` sets it)."""


def _log_filter() -> Dict[str, Any]:
    """The ``/v1/log`` filter of the simulated poll (the trivial app has no static mounts: no
    ``paths``)."""
    if os.environ.get(LOG_POLL_ENV, "notable") == "full":
        return {}
    return {"only": "notable"}


class Poll:
    """The TUI's poll (``sources/live.py``, ``sources/logfeed.py``): the threads (a delta after
    the first answer), the log after its cursor in pages of 500 while ``more`` (at most 5), and
    every fifth poll ``/v1/info`` and ``/v1/sessions`` too. The log read is filtered
    (``only=notable``) as the TUI's is while its Log tab is hidden, unless ``--log-poll full``."""

    def __init__(self, socket_path: str, from_latest: bool = False) -> None:
        from cpinspect.sources.agent import AgentSource

        self.source = AgentSource(socket_path, timeout=5.0)
        self.after = self.source.log(after=0, limit=1).latest if from_latest else 0
        self.start = self.after
        self.n = 0
        self.records = 0

    def once(self, threads: bool = True) -> None:
        if threads:
            self.source.threads()
        for _ in range(5):
            page = self.source.log(after=self.after, limit=500, **_log_filter())
            self.records += len(page.records)
            self.after = page.next if page.next is not None else self.after
            if not page.more:
                break
        if threads and self.n % POLL_INFO_EVERY == 0:
            self.source.info()
            self.source.sessions()
        self.n += 1

    def close(self) -> None:
        self.source.close()


# --- the simultaneous comparison ---------------------------------------------------------------

COMPARES = {
    # name: (what the server under test runs, what the baseline runs), as /_ctl queries
    "agent": ("agent=1&capture=1", "agent=0"),
    "capture": ("agent=1&capture=1", "agent=1&capture=0"),
    "idle": ("agent=1&capture=1", "agent=0"),
    "agent-noaccess": ("agent=1&capture=0", "agent=0"),
    "aa": ("agent=0", "agent=0"),
}
LABELS = {
    "agent": "agent installed and polled at 1 Hz vs no agent",
    "capture": "agent with log capture vs agent with capture detached",
    "idle": "agent installed, nobody polling, vs no agent",
    "agent-noaccess": "agent polled at 1 Hz, its log capture detached, vs no agent",
    "aa": "A/A: no agent in either (the method's own bias and spread)",
}


def simultaneous(
    compare: str, rounds: int, window: int, connections: int, cpus: Tuple[int, int]
) -> Dict[str, Any]:
    test_q, base_q = COMPARES[compare]
    servers = [start(cpus[0]), start(cpus[0])]
    load: Optional[Load] = None
    me = os.getpid()
    ratios: List[float] = []
    shares: List[float] = []
    client: List[float] = []
    us_test: List[float] = []
    us_base: List[float] = []
    rates: List[float] = []
    try:
        load = Load([s.port for s in servers], connections)
        time.sleep(1.0)  # warm-up
        for r in range(rounds):
            t = r % 2  # the server under test this round; the other runs the baseline
            paths = [ctl(servers[i].port, test_q if i == t else base_q) for i in range(2)]
            poll: Optional[Poll] = None
            if compare in ("agent", "agent-noaccess"):
                poll = Poll(paths[t])
                poll.once()  # the first, full answer, and one delta: before the window
                poll.once()
            time.sleep(0.3)
            c0 = [cpu_ns(s.pid) for s in servers]
            n0 = [load.count(i) for i in range(2)]
            me0 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            w0 = time.monotonic()
            for k in range(window):
                if poll is not None:
                    delay = w0 + k + 0.5 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    poll.once()
            delay = w0 + window - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c1 = [cpu_ns(s.pid) for s in servers]
            n1 = [load.count(i) for i in range(2)]
            wall = time.monotonic() - w0
            me1 = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
            if poll is not None:
                poll.close()
            per = [(c1[i] - c0[i]) / 1e3 / max(1, n1[i] - n0[i]) for i in range(2)]
            ratio = per[t] / per[1 - t]
            ratios.append(ratio)
            us_test.append(per[t])
            us_base.append(per[1 - t])
            share = [(c1[i] - c0[i]) / 1e9 / wall for i in range(2)]
            shares.append(sum(share))
            client.append((me1 - me0) / wall)
            rates.append(sum(n1[i] - n0[i] for i in range(2)) / wall)
            print(
                f"  round {r + 1:2} (test on server {t + 1}): test {per[t]:6.1f} us/req"
                f" ({(n1[t] - n0[t]) / wall:5.0f} req/s, {share[t]:.2f} CPU) | base"
                f" {per[1 - t]:6.1f} us/req ({(n1[1 - t] - n0[1 - t]) / wall:5.0f} req/s,"
                f" {share[1 - t]:.2f} CPU) -> {ratio:.3f}",
                flush=True,
            )
    finally:
        if load is not None:
            load.stop()
        for s in servers:
            s.stop()
    _ = me
    pairs = [math.sqrt(ratios[i] * ratios[i + 1]) for i in range(0, len(ratios) - 1, 2)]
    return {
        "ratios": ratios,
        "pairs": pairs,
        "shares": shares,
        "client": client,
        "us_test": us_test,
        "us_base": us_base,
        "rates": rates,
        "failed": load.failed if load is not None else 0,
    }


def quartiles(values: List[float]) -> Tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def summary(compare: str, res: Dict[str, Any]) -> str:
    rs, ps = res["ratios"], res["pairs"]
    by_server = [rs[0::2], rs[1::2]]
    bias = (
        math.sqrt(statistics.median(by_server[0]) / statistics.median(by_server[1]))
        if by_server[1]
        else 1.0
    )
    q1, q3 = quartiles(ps) if ps else (float("nan"), float("nan"))
    lines = [
        f"{compare}: {LABELS[compare]}",
        f"  CPU per request, test/base: pairs (geometric mean of the two role orders)"
        f" median {statistics.median(ps):.4f} (quartiles {q1:.4f}-{q3:.4f},"
        f" range {min(ps):.4f}-{max(ps):.4f}, {len(ps)} pairs)"
        if ps
        else "  (fewer than 2 rounds: no pairs)",
        f"  rounds median {statistics.median(rs):.4f} ({min(rs):.4f}-{max(rs):.4f});"
        f" server 1's process bias {bias:.4f}",
        f"  us per request: test {statistics.median(res['us_test']):.1f},"
        f" base {statistics.median(res['us_base']):.1f}"
        f" (+{statistics.median(res['us_test']) - statistics.median(res['us_base']):.2f} us)",
        f"  saturation: the two servers used {statistics.median(res['shares']):.3f} CPU"
        f" ({min(res['shares']):.3f}-{max(res['shares']):.3f}) of their one; the client"
        f" {statistics.median(res['client']):.2f} of its CPU; {statistics.median(res['rates']):.0f}"
        f" req/s in all; {res['failed']} failed",
    ]
    return "\n".join(lines)


# --- cachegrind ----------------------------------------------------------------------------------

CG_MODES = ("none", "nocapture", "agent")


def _under_cachegrind(args: List[str]) -> Tuple[List[str], Dict[str, str], str]:
    """The command running this script with ``args`` under cachegrind (instruction counts
    only), its environment, and the file the counts go to (the caller removes it)."""
    fd, out_name = tempfile.mkstemp(prefix="cg-request-cost-", suffix=".out")
    os.close(fd)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out_name}",
        sys.executable,
        str(Path(__file__)),
        *args,
        *(["--agent-root", AGENT_ROOT[0]] if AGENT_ROOT[0] else []),
    ]
    return cmd, env, out_name


def _instructions(out_name: str) -> int:
    """The instructions counted in a cachegrind output file."""
    with open(out_name) as f:
        m = re.search(r"^summary:\s+(\d+)", f.read(), re.MULTILINE)
    if m is None:
        raise RuntimeError("no summary line in the cachegrind output")
    return int(m.group(1))


def cg_child(mode: str, warmup: int, requests: int, agent_root: str) -> int:
    """Under valgrind: serve in-process requests; then wait for the parent's polls."""
    import io

    if agent_root:
        sys.path.insert(0, agent_root)

    import cherrypy
    from cherrypy.lib import httputil

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 8,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "ok"

    app = cherrypy.tree.mount(Root(), "")
    path = "-"
    if mode != "none":
        from cpinspect.agent import install, installed

        path = install()
        agent = installed()
        assert agent is not None
        if mode == "nocapture":
            agent.log_capture.detach()
    cherrypy.engine.start()  # the pool of 8 exists (idle): the threads poll covers it
    local = httputil.Host("127.0.0.1", 8080, "")
    remote = httputil.Host("127.0.0.1", 5555, "")
    headers = [("Host", "127.0.0.1")]
    for _ in range(warmup + requests):
        req, resp = app.get_serving(local, remote, "http", "HTTP/1.1")
        req.run("GET", "/", "", "HTTP/1.1", headers, io.BytesIO())
        b"".join(resp.body)
        app.release_serving()
    print(json.dumps({"socket": path}), flush=True)
    sys.stdin.readline()  # the parent's polls (or its idle wait) are done
    os._exit(0)


def cg_run(
    mode: str, warmup: int, requests: int, action: str = "", idle: float = 0.0
) -> Tuple[int, float, int]:
    """(instructions of the whole child run, seconds ``action`` took, log records it read).

    ``action``: "" (exit after the requests, or after idling ``idle`` s), "polls:P" (P polls
    with the log cursor at the newest record: the poll's fixed cost), "read" (every record of
    the ring read through ``/v1/log`` pages, the threads not asked: the cost per record)."""
    cmd, env, out_name = _under_cachegrind(
        ["--cg-child", mode, "--warmup", str(warmup), "--requests", str(requests)]
    )
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    took = 0.0
    records = 0
    try:
        assert proc.stdin is not None and proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read()[-500:] if proc.stderr is not None else b""
            raise RuntimeError(f"the valgrind child ({mode}) exited: {err!r}")
        sock = json.loads(line)["socket"]
        if action:
            poll = Poll(sock, from_latest=action.startswith("polls"))
            poll.source.timeout = 120.0
            t0 = time.monotonic()
            if action == "read":
                while True:
                    before = poll.records
                    poll.once(threads=False)
                    if poll.records == before:
                        break
            else:
                for _ in range(int(action.split(":")[1])):
                    poll.once()
            took = time.monotonic() - t0
            # Records the reads went over (a filtered read returns few of them: the cost per
            # access record is the cost of passing over it).
            records = max(poll.records, poll.after - poll.start)
            poll.close()
        elif idle:
            time.sleep(idle)
        proc.stdin.write(b"done\n")
        proc.stdin.flush()
        proc.wait(600)
        count = _instructions(out_name)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(out_name)
    return count, took, records


def cg_served(mode: str, warmup: int, requests: int) -> int:
    """Instructions of a whole served run under valgrind: the ``--serve`` server, ``/_ctl`` set
    to ``mode``, then ``warmup + requests`` sequential ``GET /`` on one keep-alive connection
    (cheroot's parsing and the socket calls' user-space side included; the kernel's not)."""
    cmd, env, out_name = _under_cachegrind(["--serve"])
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.match(r"READY port=(\d+)", line)
        if m is None:
            raise RuntimeError(f"the valgrind server ({mode}) did not start: {line!r}")
        port = int(m.group(1))
        if mode != "none":
            ctl(port, "agent=1&capture=%d" % (mode == "agent"))
        sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        buf = b""
        for _ in range(warmup + requests):
            sock.sendall(REQUEST)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    lm = _LENGTH.search(buf, 0, end + 2)
                    need = end + 4 + (int(lm.group(1)) if lm else 0)
                    if len(buf) >= need:
                        buf = buf[need:]
                        break
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("the valgrind server closed the connection")
                buf += data
        sock.close()
        proc.terminate()  # the engine exits on SIGTERM; valgrind writes its counts
        proc.wait(300)
        count = _instructions(out_name)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(out_name)
    return count


def native_rate(cpus: Tuple[int, int], connections: int, seconds: float = 3.0) -> float:
    """Requests per second of one saturated server (no agent) on its own CPU."""
    srv = start(cpus[0])
    load = Load([srv.port], connections)
    try:
        time.sleep(1.0)
        n0 = load.count(0)
        time.sleep(seconds)
        return (load.count(0) - n0) / seconds
    finally:
        load.stop()
        srv.stop()


def cachegrind(
    n1: int, n2: int, polls: int, cpus: Tuple[int, int], connections: int, rate: float
) -> None:
    warmup = 300
    per: Dict[str, float] = {}
    for mode in CG_MODES:
        a, _, _ = cg_run(mode, warmup, n1)
        b, _, _ = cg_run(mode, warmup, n2)
        per[mode] = (b - a) / (n2 - n1)
        print(f"  {mode:10} {per[mode] / 1e3:8.1f}k instructions per request", flush=True)
    served: Dict[str, float] = {}
    s1, s2 = n1 // 2, n2 // 2
    for mode in CG_MODES:
        a = cg_served(mode, warmup, s1)
        b = cg_served(mode, warmup, s2)
        served[mode] = (b - a) / (s2 - s1)
        print(
            f"  {mode:10} {served[mode] / 1e3:8.1f}k per served request (cheroot, socket)",
            flush=True,
        )
    with_polls, took, _ = cg_run("agent", warmup, n1, "polls:%d" % polls)
    idle, _, _ = cg_run("agent", warmup, n1, idle=took)
    per_poll = (with_polls - idle) / polls
    with_read, took_read, records = cg_run("agent", warmup, n1, "read")
    idle_read, _, _ = cg_run("agent", warmup, n1, idle=took_read)
    per_record = (with_read - idle_read) / max(1, records)
    if not rate:
        rate = native_rate(cpus, connections)
    # One poll a second spread over a second's requests, and every request's access record read
    # once by the follower.
    added = per_poll / rate + per_record
    print(
        f"  one poll without new records (threads delta + log every second, info + sessions"
        f" every {POLL_INFO_EVERY}th): {per_poll / 1e3:.1f}k instructions ({polls} polls in"
        f" {took:.1f} s under valgrind)"
    )
    print(
        f"  reading one access record through /v1/log: {per_record / 1e3:.1f}k instructions"
        f" ({records} records in {took_read:.1f} s)"
    )
    print(
        f"  one saturated server, no agent, native: {rate:.0f} req/s -> polling adds"
        f" {per_poll / rate / 1e3:.1f}k + {per_record / 1e3:.1f}k per request"
    )
    base = per["none"]
    print(
        f"  capture on / off (issue 11): {per['agent'] / per['nocapture']:.4f}"
        f" (+{(per['agent'] - per['nocapture']) / 1e3:.1f}k)"
    )
    print(
        f"  agent, not polled / none:    {per['agent'] / base:.4f}"
        f" (+{(per['agent'] - base) / 1e3:.1f}k)"
    )
    print(
        f"  agent polled at 1 Hz / none (issue 13): {(per['agent'] + added) / base:.4f}"
        f" (+{(per['agent'] + added - base) / 1e3:.1f}k; in-process requests: cheroot's share"
        " left out, an upper bound)"
    )
    sb = served["none"]
    print(
        f"  served requests: capture on / off {served['agent'] / served['nocapture']:.4f};"
        f" agent not polled / none {served['agent'] / sb:.4f}; agent polled at 1 Hz / none"
        f" {(served['agent'] + added) / sb:.4f} (user-space instructions; the kernel's share"
        " of a served request is not counted, so these too are upper bounds)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=(*COMPARES, "all"), default="all")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per comparison (40)")
    parser.add_argument("--window", type=int, default=2, help="seconds per round (2)")
    parser.add_argument("--connections", type=int, default=4, help="per server (4)")
    parser.add_argument("--cachegrind", action="store_true", help="instructions, not CPU time")
    parser.add_argument("--quick", action="store_true", help="8 rounds; cachegrind: fewer requests")
    parser.add_argument("--requests", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--polls", type=int, default=None, help="cachegrind: polls counted (20)")
    parser.add_argument(
        "--agent-root", default="", help="servers use the agent of this checkout (before/after)"
    )
    parser.add_argument(
        "--native-rate",
        type=float,
        default=0.0,
        help="cachegrind: requests/s of one saturated server (default: measured now)",
    )
    parser.add_argument(
        "--log-poll",
        choices=("notable", "full"),
        default=None,
        help="the simulated poll's log read: notable (the TUI, Log tab hidden; default) or full",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--cg-child", choices=CG_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.log_poll is not None:
        os.environ[LOG_POLL_ENV] = args.log_poll
    if args.serve:
        return serve_main(args.cpu, args.threads, args.agent_root)
    if args.cg_child:
        return cg_child(args.cg_child, args.warmup, args.requests or 1000, args.agent_root)
    if args.rounds < 2 or args.window < 1:
        print("request_cost: --rounds must be at least 2 and --window at least 1", file=sys.stderr)
        return 2
    if args.agent_root and not (Path(args.agent_root) / "cpinspect" / "agent").is_dir():
        print(f"request_cost: no cpinspect/agent under {args.agent_root}", file=sys.stderr)
        return 2
    AGENT_ROOT[0] = os.path.abspath(args.agent_root) if args.agent_root else ""
    cpus = (0, 1) if can_pin(2) else (-1, -1)
    if cpus[1] >= 0:
        pin(cpus[1])
    print(f"request_cost: {machine()}")
    print(
        f"the simulated poll reads the log {os.environ.get(LOG_POLL_ENV, 'notable')} (--log-poll)"
    )
    if args.cachegrind:
        n1 = 500 if args.quick else 1000
        n2 = args.requests or (1500 if args.quick else 3000)
        polls = args.polls or (10 if args.quick else 20)
        print(f"cachegrind: runs of 300 + {n1} and 300 + {n2} requests per mode; {polls} polls")
        cachegrind(n1, n2, polls, cpus, args.connections, args.native_rate)
        return 0
    rounds = 8 if args.quick else args.rounds
    compares = list(COMPARES) if args.compare == "all" else [args.compare]
    print(
        f"{rounds} rounds x {args.window} s per comparison, 2 servers (pool 8) on CPU {cpus[0]},"
        f" {args.connections} keep-alive connections each from CPU {cpus[1]}"
    )
    results = {}
    for compare in compares:
        print(f"\n{compare}: {LABELS[compare]}", flush=True)
        results[compare] = simultaneous(compare, rounds, args.window, args.connections, cpus)
    print()
    for compare in compares:
        print(summary(compare, results[compare]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
