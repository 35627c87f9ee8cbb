"""How fast the agent answers when the app cannot: ``GET /v1/threads`` on a saturated pool.

    python bench/saturated_latency.py [--samples 300] [--threads 8] [--queued 8] [--budget 180]

For each scenario a fresh ``bench_server.py`` (agent installed, pool of ``--threads``) gets
``--threads`` blocking requests, so every worker is busy, plus ``--queued`` more that wait in the
accept queue. Then ``--samples`` requests for ``/v1/threads`` are timed per connection style,
alternating, ``--gap`` seconds apart: "fresh" opens a new Unix socket connection each time
(connect + request + full answer, like curl), "keep-alive" reuses one connection (like the
inspector, which polls once a second). Sampling stops early (and says so) after ``--budget``
seconds, so a slow agent cannot keep the run going for hours.

Scenarios:
  sleep  workers sleep in the handler (GIL released: the agent competes with nobody)
  spin   workers burn CPU in pure Python (the agent waits for the GIL among --threads spinners)

Printed per scenario: p50, p90, p99 and max latency, and whether every answer showed the pool
saturated. Goal: p99 < 100 ms in both.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Dict, List, Tuple

from benchlib import (
    Server,
    UnixHTTPConnection,
    agent_get,
    machine,
    open_requests,
    percentile,
    server,
    wait_until,
)

STYLES = ("fresh", "keep-alive")

SCENARIOS = ("sleep", "spin")
HOLD_SECONDS = 600
"""Handlers outlast the sampling; the server is killed afterwards, they never finish."""


def app_answers(port: int, timeout: float) -> bool:
    """Does the app's own port answer a page within ``timeout``? (It should not.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return bool(s.recv(16))
    except OSError:
        return False


def saturated(srv: Server, threads: int, queued: int) -> bool:
    assert srv.socket is not None
    pool = agent_get(srv.socket)["pools"][0]
    return bool(pool["busy"] == threads and pool["queued"] >= queued)


def keepalive_get(conn: UnixHTTPConnection) -> Dict[str, object]:
    conn.request("GET", "/v1/threads")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"agent answered {response.status}: {body[:200]!r}")
    result: Dict[str, object] = json.loads(body)
    return result


def run_scenario(
    scenario: str, samples: int, threads: int, queued: int, gap: float, budget: float
) -> Tuple[Dict[str, List[float]], Dict[str, object]]:
    with server(agent=True, threads=threads) as srv:
        assert srv.socket is not None
        path = f"/{scenario}?s={HOLD_SECONDS}"
        socks = open_requests(srv.port, path, threads + queued)
        try:
            wait_until(
                lambda: saturated(srv, threads, queued),
                timeout=30,
                what=f"{threads} busy workers and {queued} queued connections",
            )
            answered = app_answers(srv.port, timeout=1.0)
            latencies: Dict[str, List[float]] = {style: [] for style in STYLES}
            not_saturated = 0
            persistent = UnixHTTPConnection(srv.socket, timeout=10.0)
            give_up = time.monotonic() + budget
            for _ in range(samples):
                if time.monotonic() > give_up:
                    break  # a very slow agent: report what we have rather than run for hours
                for style in STYLES:
                    t0 = time.perf_counter()
                    if style == "fresh":
                        body = agent_get(srv.socket, timeout=10.0)
                    else:
                        body = keepalive_get(persistent)
                    latencies[style].append(time.perf_counter() - t0)
                    pool = body["pools"][0]
                    if pool["busy"] != threads or pool["queued"] < queued:
                        not_saturated += 1
                    time.sleep(gap)
            persistent.close()
            extra: Dict[str, object] = {
                "threads_reported": len(body["threads"]),
                "not_saturated": not_saturated,
                "app_answered": answered,
            }
        finally:
            for s in socks:
                s.close()
    return latencies, extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="requests per scenario (300)")
    parser.add_argument("--threads", type=int, default=8, help="worker pool size (8)")
    parser.add_argument("--queued", type=int, default=8, help="extra queued connections (8)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between samples (0.02)")
    parser.add_argument(
        "--budget", type=float, default=180.0, help="max seconds of sampling per scenario (180)"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: both")
    args = parser.parse_args()
    if args.samples < 1 or args.threads < 1 or args.queued < 0 or args.gap < 0:
        parser.error("--samples and --threads must be positive, --queued and --gap >= 0")

    print(f"saturated_latency: {machine()}")
    print(
        f"pool {args.threads}, {args.threads} blocking + {args.queued} queued requests, "
        f"{args.samples} samples of GET /v1/threads per scenario, {args.gap:g} s apart, "
        "fresh connection and keep-alive alternating\n"
    )
    worst = 0.0
    for scenario in args.scenario or SCENARIOS:
        lats, extra = run_scenario(
            scenario, args.samples, args.threads, args.queued, args.gap, args.budget
        )
        for style, lat in lats.items():
            ms = [v * 1000 for v in lat]
            p99 = percentile(ms, 99)
            worst = max(worst, p99)
            print(
                f"{scenario:<6} {style:<10} p50 {percentile(ms, 50):6.1f} ms   "
                f"p90 {percentile(ms, 90):6.1f} ms   p99 {p99:6.1f} ms   max {max(ms):6.1f} ms   "
                f"({len(ms)} samples{'' if len(ms) == args.samples else ', budget reached'})",
                flush=True,
            )
        print(
            f"{'':<6} {extra['threads_reported']} threads per answer, "
            f"{extra['not_saturated']} answers not saturated, "
            f"app port answered within 1 s: {'yes' if extra['app_answered'] else 'no'}",
            flush=True,
        )
    print(
        f"\ngoal: p99 < 100 ms -> {'met' if worst < 100 else 'NOT met'} (worst p99 {worst:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
