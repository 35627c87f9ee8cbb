"""/v1/sessions at 100,000 RAM sessions: page time, the agent's extra memory, the app's rate.

A real target (``tests/apps/sessions_app.py ram --prefill N``: sessions of varied size and
expiry, some already expired) is paged through its agent's Unix socket:

1. the first page (it builds the store's index) is timed on its own;
2. ``--pages`` page requests on fresh connections, alternating ``sort=expiry`` and
   ``sort=size`` at random offsets, spread over several index rebuilds: p50/p95/max;
3. the target's RSS (``/proc/PID/status`` VmRSS) before the first page and its peak while
   paging: the agent's growth (index + answers); paging again while 20 logins/s create
   sessions (the index is rebuilt), less the app's own growth from the same logins without
   paging (a control run first); then paging after the store's clean-up deleted the expired
   sessions (the index is compacted in place; before, it was built again next to the old one);
4. the app's request rate on ``/fast`` (a client in its own process, keep-alive connections)
   in paired windows: no paging, paging at 2/s (the Sessions tab's poll and a user paging), and
   paging back to back; each window's rate divided by the no-paging one of its own round.

Goals (issue 10): page < 50 ms at p95, growth < 5 MB, rate ratio >= 0.98. Prints figures and
ratios; record them in BENCHMARKS.md ("Sessions (issue 10)").

    .venv/bin/python bench/sessions_scale.py [--sessions 100000] [--pages 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from benchlib import keep_alive_load

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("cpinspect", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def agent_get(path: str, endpoint: str) -> Tuple[int, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", endpoint)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def hwm_kib(pid: int) -> Optional[int]:
    """The process's peak RSS (VmHWM) since it started or since ``reset_hwm``."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def reset_hwm(pid: int) -> bool:
    """Start VmHWM again from the current RSS (``clear_refs`` 5; False when not allowed)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def percentile(values: List[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def start_target(sessions: int) -> Tuple[subprocess.Popen[bytes], int, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("XDG_RUNTIME_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.sessions_app", "ram", "--prefill", str(sessions)],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"READY port=(\d+) pid=(\d+)", buf)
            if m:
                return proc, int(m.group(1)), int(m.group(2))
    stop(proc)
    raise RuntimeError("the sessions app did not start: %r" % buf[-500:])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


def page_query(rng: random.Random, total: int, i: int) -> str:
    sort = "expiry" if i % 2 == 0 else "size"
    offset = rng.randrange(0, max(1, total - 50))
    return "/v1/sessions?limit=50&sort=%s&offset=%d" % (sort, offset)


# --- the load client (its own process) -------------------------------------------------------


def client_main(port: int, seconds: float, connections: int) -> int:
    answered, failed = keep_alive_load(port, "/fast", seconds, connections)
    print(json.dumps({"requests": answered, "errors": failed}), flush=True)
    return 0


def load_window(port: int, seconds: float, connections: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--client",
            str(port),
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
        ],
        stdout=subprocess.PIPE,
    )


def window_rate(
    port: int, sock: str, seconds: float, connections: int, paging: Optional[float], total: int
) -> Tuple[float, int]:
    """Requests/s of the app over one window; ``paging``: pages per second (0 = back to back)."""
    proc = load_window(port, seconds, connections)
    pages = 0
    rng = random.Random(7)
    if paging is not None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            agent_get(sock, page_query(rng, total, pages))
            pages += 1
            if paging > 0:
                time.sleep(max(0.0, 1.0 / paging - (time.monotonic() - t0)))
    out, _ = proc.communicate(timeout=seconds + 60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result["requests"] / seconds, pages


class LoginChurn:
    """New sessions while paging: ``rate`` logins a second (each a new session saved)."""

    def __init__(self, port: int, rate: float) -> None:
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port, rate), daemon=True)
        self._thread.start()

    def _run(self, port: int, rate: float) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/login?user=churn%d&secret=x" % self.done)
                conn.getresponse().read()
                self.done += 1
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self._stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def paging_phase(
    sock: str, pid: int, total: int, pages: int, base_rss: int, note: Optional[str]
) -> Tuple[List[float], int, int]:
    """Page ``pages`` times (50 ms apart); print p50/p95/max; (times, peak RSS, end RSS)."""
    rng = random.Random(1)
    times: Dict[str, List[float]] = {"expiry": [], "size": []}
    peak = rss_kib(pid)
    as_of = set()
    biggest = 0
    for i in range(pages):
        q = page_query(rng, total, i)
        t0 = time.perf_counter()
        status, body = agent_get(sock, q)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise RuntimeError("page failed: %d %r" % (status, body[:300]))
        page = json.loads(body)["apps"][0]
        as_of.add(page["summary"]["as_of"])
        biggest = max(biggest, len(body))
        times["expiry" if "sort=expiry" in q else "size"].append(elapsed)
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
    every = times["expiry"] + times["size"]
    print(
        "\n%d pages of 50%s (answers up to %.0f KB), %d index builds seen:"
        % (len(every), ", with " + note if note else "", biggest / 1024, len(as_of))
    )
    for name, values in (
        ("sort=expiry", times["expiry"]),
        ("sort=size", times["size"]),
        ("all", every),
    ):
        print(
            "  %-12s p50 %6.1f ms   p95 %6.1f ms   max %6.1f ms"
            % (name, statistics.median(values), percentile(values, 95), max(values))
        )
    return every, peak, rss_kib(pid)


def cpu_seconds(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def paging_cpu(sock: str, pid: int, total: int, seconds: float) -> float:
    """Milliseconds of the target's CPU per page, paging back to back for ``seconds``."""
    rng = random.Random(3)
    before = cpu_seconds(pid)
    end = time.monotonic() + seconds
    pages = 0
    while time.monotonic() < end:
        agent_get(sock, page_query(rng, total, pages))
        pages += 1
    return (cpu_seconds(pid) - before) * 1000 / max(1, pages)


def hook_cost(n: int = 200000) -> Tuple[float, float]:
    """Microseconds per request of the tracker's two hooks, without and with the recording of
    memcached session ids (called directly, best of 5; a fake ``serving`` stands in)."""
    import types

    from cpinspect.agent.tracking import RequestTracker

    class Sess:
        _id = "a" * 40

    out = []
    for record in (False, True):
        tracker = RequestTracker()
        serving = threading.local()
        serving.request = object()
        serving.response = types.SimpleNamespace(time=time.time())
        serving.session = Sess()
        tracker._serving = serving
        if record:
            tracker.record_session_ids([Sess], 10000)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                tracker._on_start()
                tracker._on_end()
            best = min(best, (time.perf_counter() - t0) / n)
        out.append(best * 1e6)
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--churn", type=float, default=20.0, help="logins/s in the second phase")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args.client, args.seconds, args.connections)

    from cpinspect.attach.discovery import find_agent

    print(
        "python %s, %d CPUs, %d RAM sessions"
        % (sys.version.split()[0], os.cpu_count() or 0, args.sessions)
    )
    plain, recording = hook_cost()
    print(
        "tracker hooks per request: %.2f us; recording memcached session ids: %.2f us"
        % (plain, recording)
    )
    proc, port, pid = start_target(args.sessions)
    try:
        sock = find_agent(pid).connect_path
        time.sleep(1.0)
        # Control: the same logins without paging, so that the app's own growth from serving
        # them (new sessions, request objects) is not counted as the agent's.
        before_control = rss_kib(pid)
        control = LoginChurn(port, args.churn)
        time.sleep(args.pages * 0.055)
        control.stop()
        time.sleep(0.5)
        base_rss = rss_kib(pid)
        app_own = (base_rss - before_control) / 1024
        print(
            "control: %d logins without paging grew the app by %.2f MB (RSS %.1f MB)"
            % (control.done, app_own, base_rss / 1024)
        )
        t0 = time.perf_counter()
        status, body = agent_get(sock, "/v1/sessions?limit=50")
        first_ms = (time.perf_counter() - t0) * 1000
        if status != 200:
            print("first page failed: %d %r" % (status, body[:300]))
            return 1
        answer: Dict[str, Any] = json.loads(body)
        entry = answer["apps"][0]
        total = entry["count"]
        after_first = rss_kib(pid)
        print(
            "first page (builds the index of %d sessions, %d expired): %.0f ms; RSS +%.2f MB"
            % (total, entry["expired"], first_ms, (after_first - base_rss) / 1024)
        )
        every, peak_static, _ = paging_phase(sock, pid, total, args.pages, base_rss, None)
        growth = (peak_static - base_rss) / 1024
        churn = LoginChurn(port, args.churn)
        try:
            churned, peak_churn, end_rss = paging_phase(
                sock, pid, total, args.pages, base_rss, "%d logins/s" % args.churn
            )
        finally:
            churn.stop()
        print("  (%d sessions created by the logins)" % churn.done)
        growth_churn = (peak_churn - base_rss) / 1024
        print(
            "agent memory: RSS before %.1f MB; peak while paging +%.2f MB, with logins +%.2f MB"
            " (less the app's own %.2f MB of the control: +%.2f MB), at the end +%.2f MB"
            % (
                base_rss / 1024,
                growth,
                growth_churn,
                app_own,
                growth_churn - app_own,
                (end_rss - base_rss) / 1024,
            )
        )

        # After a clean-up (the expired sessions deleted) the index is compacted in place (it
        # was built again next to the one being served before: the worst case for memory).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/cleanup")
        conn.getresponse().read()
        conn.close()
        after_cleanup = rss_kib(pid)
        # The clean-up's own peak (CherryPy copies the whole dict) is the app's, not the
        # agent's: the true peak (VmHWM) is counted from here, over the paging that follows.
        hwm_reset = reset_hwm(pid)
        _, peak_cleanup, end_cleanup = paging_phase(
            sock, pid, total, args.pages // 2, base_rss, "the expired sessions just deleted"
        )
        status, body = agent_get(sock, "/v1/sessions?limit=1")
        left = json.loads(body)["apps"][0]["count"] if status == 200 else None
        extra = 0
        while left is not None and left >= total and extra < 8:
            # The index was not rebuilt yet (a busy machine stretches the rebuild interval):
            # page on until it is, so that the figures include the update after the deletions.
            _, more_peak, end_cleanup = paging_phase(sock, pid, total, 50, base_rss, None)
            peak_cleanup = max(peak_cleanup, more_peak)
            extra += 1
            status, body = agent_get(sock, "/v1/sessions?limit=1")
            left = json.loads(body)["apps"][0]["count"] if status == 200 else None
        if extra:
            print("(%d more pages until the index held the clean-up)" % (50 * extra))
        hwm = hwm_kib(pid) if hwm_reset else None
        print(
            "after the clean-up (RSS +%.2f MB before paging; the index now holds %s sessions): "
            "peak +%.2f MB, at the end +%.2f MB; true peak (VmHWM while paging) %s"
            % (
                (after_cleanup - base_rss) / 1024,
                left,
                (peak_cleanup - base_rss) / 1024,
                (end_cleanup - base_rss) / 1024,
                "+%.2f MB" % ((hwm - base_rss) / 1024) if hwm is not None else "not readable",
            )
        )
        growth_cleanup = (max(peak_cleanup, hwm or 0) - base_rss) / 1024

        cpu_ms = paging_cpu(sock, pid, total, 3.0)
        print(
            "\nthe target's CPU per page (paging back to back, no other load): %.2f ms;"
            " at 2 pages/s that is %.2f %% of one core" % (cpu_ms, cpu_ms * 2 / 10)
        )
        print(
            "\napp rate on /fast (%d keep-alive connections, %.0f s windows):"
            % (args.connections, args.window)
        )
        ratios: Dict[str, List[float]] = {"2/s": [], "back-to-back": []}
        for r in range(args.rounds):
            base, _ = window_rate(port, sock, args.window, args.connections, None, total)
            polled, n2 = window_rate(port, sock, args.window, args.connections, 2.0, total)
            hammer, nb = window_rate(port, sock, args.window, args.connections, 0.0, total)
            ratios["2/s"].append(polled / base)
            ratios["back-to-back"].append(hammer / base)
            print(
                "  round %d: none %.0f req/s | paging 2/s %.0f req/s (%.3f, %d pages) | "
                "back to back %.0f req/s (%.3f, %d pages)"
                % (r + 1, base, polled, polled / base, n2, hammer, hammer / base, nb)
            )
        p95 = max(percentile(every, 95), percentile(churned, 95))
        ratio = statistics.median(ratios["2/s"])
        print(
            "\nrate ratio, median (min-max): paging 2/s %.3f (%.3f-%.3f); "
            "back to back %.3f (%.3f-%.3f)"
            % (
                ratio,
                min(ratios["2/s"]),
                max(ratios["2/s"]),
                statistics.median(ratios["back-to-back"]),
                min(ratios["back-to-back"]),
                max(ratios["back-to-back"]),
            )
        )
        print(
            "goals: page p95 < 50 ms: %s (%.1f); growth < 5 MB: %s (%.2f, after the clean-up "
            "%.2f); ratio >= 0.98 at 2/s: %s (%.3f)"
            % (
                "met" if p95 < 50 else "NOT met",
                p95,
                "met" if max(growth, growth_churn - app_own, growth_cleanup) < 5 else "NOT met",
                max(growth, growth_churn - app_own),
                growth_cleanup,
                "met" if ratio >= 0.98 else "NOT met",
                ratio,
            )
        )
        return 0
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
