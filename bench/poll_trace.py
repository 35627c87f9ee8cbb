"""Where a poll's time goes, phase by phase, in the real App behind spinning workers (issue 13).

    python bench/poll_trace.py [--shape 200:100] [--spin 100] [--seconds 30] [--root DIR]
                               [--pid PID] [--slowest 12]

The App on the real session under Textual's Pilot (as ``bench/scale.py``'s data-age measure), in
a child process run from this checkout or from ``--root`` (another checkout: the same methods
are wrapped there). Every poll is traced with time stamps (ms from the poll's start) per phase of
``AgentSession._poll``: py-spy's read started or taken, the agent awaited, its answer taken in
(``_settle``), py-spy joined (``_spy_in_time``), the log read (``_read_log``), the carried
fall-back (``_fallback``), the Update handed to the App and applied on screen; with every agent
request (``/v1/threads``, ``/v1/info``, ``/v1/log``) in flight during the poll and the data age
at the moment the Update was applied (``now - threads.taken_at``). Printed: the slowest polls in
full, then per phase the median and p95 over the polls the agent answered and those py-spy
carried, and the data age on screen sampled every 100 ms (p50 / p95).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from benchlib import machine, percentile, run_json_child
from scale import Shape, start_target

CHILD = r"""
import asyncio, json, sys, threading, time
from cpinspect.sources.open import open_session
from cpinspect.sources import live
from cpinspect.sources.agent import AgentSource
from cpinspect.tui.app import InspectorApp

local = threading.local()
polls = []      # one dict per poll
requests = []   # (name, thread, start, end) monotonic
T0 = time.monotonic()

def now():
    return time.monotonic()

def mark(name):
    trace = getattr(local, "trace", None)
    if trace is not None:
        trace["marks"].append((name, now()))

def wrap(cls, name, before=None, after=None):
    original = getattr(cls, name)
    def wrapper(self, *args, **kwargs):
        if before:
            mark(before)
        try:
            return original(self, *args, **kwargs)
        finally:
            if after:
                mark(after)
    setattr(cls, name, wrapper)

for meth, label in (("_start_spy", "spy started"), ("_agent_call", "agent asked"),
                    ("_await_agent", "agent awaited"), ("_settle", "settled"),
                    ("_spy_in_time", "spy joined"), ("_read_log", "log read"),
                    ("_fallback", "fallback built"), ("_carried_reading", "carried reading"),
                    ("_read_ahead", "read ahead")):
    if hasattr(live.AgentSession, meth):
        wrap(live.AgentSession, meth, before=label + " <", after=label + " >")

def wrap_request(name):
    original = getattr(AgentSource, name)
    def wrapper(self, *args, **kwargs):
        start = now()
        try:
            return original(self, *args, **kwargs)
        finally:
            requests.append((name, threading.current_thread().name, start, now()))
    setattr(AgentSource, name, wrapper)

for name in ("threads", "info", "log"):
    wrap_request(name)

from cpinspect.sources.pyspy import PySpySource
original_dump = PySpySource._dump_bytes
def timed_dump(self, *args, **kwargs):
    start = now()
    try:
        return original_dump(self, *args, **kwargs)
    finally:
        requests.append(("py-spy", "pyspy", start, now()))
PySpySource._dump_bytes = timed_dump

original_poll = live.AgentSession._poll
def traced_poll(self):
    local.trace = trace = {"start": now(), "marks": []}
    try:
        update = original_poll(self)
    finally:
        local.trace = None
    trace["end"] = now()
    trace["source"] = update.threads_source.value if update.threads_source else "agent"
    trace["state"] = update.state.value
    trace["taken_at"] = update.threads.taken_at if update.threads is not None else None
    trace["wall_end"] = time.time()
    update_ids[id(update)] = trace
    polls.append(trace)
    return update
live.AgentSession._poll = traced_poll
update_ids = {}

async def main(pid, seconds):
    opened = open_session(str(pid))
    app = InspectorApp(opened.session, interval=1.0, source_lines=opened.source_lines,
                       clock=time.time)
    apply = app._apply
    def applied(update):
        result = apply(update)
        trace = update_ids.pop(id(update), None)
        if trace is not None:
            trace["applied"] = now()
            if update.threads is not None:
                trace["age_applied"] = time.time() - update.threads.taken_at
        return result
    app._apply = applied
    ages = []
    async with app.run_test(size=(160, 50)) as pilot:
        start = time.monotonic()
        while app.store.threads is None and time.monotonic() - start < 30:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        first = len(polls)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            threads = app.store.threads
            if threads is not None:
                ages.append(time.time() - threads.taken_at)
            await asyncio.sleep(0.1)
        last = len(polls)
    out = []
    for trace in polls[first:last]:
        t0 = trace["start"]
        reqs = [(n, th, round(1000 * (s - t0)), round(1000 * (e - t0)))
                for n, th, s, e in requests if e >= t0 and s <= trace["end"]]
        out.append({
            "at": round(t0 - T0, 3),
            "ms": round(1000 * (trace["end"] - t0)),
            "source": trace["source"], "state": trace["state"],
            "marks": [(n, round(1000 * (t - t0))) for n, t in trace["marks"]],
            "applied": round(1000 * (trace["applied"] - t0)) if "applied" in trace else None,
            "age_applied": trace.get("age_applied"),
            "requests": reqs,
        })
    print("RESULT " + json.dumps({"polls": out, "ages": ages}))

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def run_child(pid: int, seconds: float, root: Optional[Path]) -> Dict[str, Any]:
    return run_json_child(CHILD, [str(pid), str(seconds)], seconds + 120, "the traced run", root)


def phase_ms(poll: Dict[str, Any], name: str) -> Optional[int]:
    """How long a phase (``name <`` to ``name >``) took in a poll, the first occurrence."""
    start = next((t for n, t in poll["marks"] if n == name + " <"), None)
    end = next((t for n, t in poll["marks"] if n == name + " >"), None)
    return None if start is None or end is None else end - start


def show(data: Dict[str, Any], slowest: int, label: str) -> None:
    polls = data["polls"]
    ages = data["ages"]
    print(f"== {label}: {len(polls)} polls")
    if ages:
        print(
            f"   data age on screen p50 {percentile(ages, 50):.2f} s  p95 "
            f"{percentile(ages, 95):.2f} s  ({len(ages)} samples)"
        )
    worst = sorted(
        (p for p in polls if p.get("age_applied") is not None),
        key=lambda p: -p["age_applied"],
    )[:slowest]
    for p in sorted(worst, key=lambda p: p["at"]):
        marks = " ".join(f"{n}@{t}" for n, t in p["marks"] if n.endswith(">"))
        reqs = " ".join(f"{n}[{th[-5:]}]{s}..{e}" for n, th, s, e in p["requests"])
        print(
            f"  t={p['at']:7.2f} {p['source']:6} {p['ms']:5d} ms  applied@{p['applied']}  "
            f"age at apply {p['age_applied']:.2f} s\n      {marks}\n      requests: {reqs}"
        )
    phases = (
        "agent awaited",
        "settled",
        "spy joined",
        "log read",
        "fallback built",
    )
    answered = [p for p in polls if p["source"] == "agent"]
    if answered:
        # What stands between the agent's answer in hand and the Update: the requests made
        # on the poll's own thread (each one more wait for the GIL behind spinners), and the
        # time from the answer awaited to the poll's end.
        on_path = [
            sum(1 for _n, th, _s, _e in p["requests"] if not th.startswith(("cpinspect", "py")))
            for p in answered
        ]
        after = [
            p["ms"] - next(t for n, t in p["marks"] if n == "agent awaited >")
            for p in answered
            if any(n == "agent awaited >" for n, _t in p["marks"])
        ]
        print(
            f"   answered polls: agent requests on the poll's thread {sum(on_path)} in "
            f"{len(answered)} polls (max {max(on_path)} in one); from the answer in hand to "
            f"the poll's end p50 {percentile(after, 50)} ms  p95 {percentile(after, 95)} ms  "
            f"max {max(after)} ms"
        )
    for source in ("agent", "py-spy"):
        some = [p for p in polls if p["source"] == source]
        if not some:
            continue
        parts = []
        for name in phases:
            values = [v for v in (phase_ms(p, name) for p in some) if v is not None]
            if values:
                parts.append(f"{name} {percentile(values, 50)}/{percentile(values, 95)}")
        whole = [p["ms"] for p in some]
        age = [p["age_applied"] for p in some if p.get("age_applied") is not None]
        at_apply = (
            f"; age at apply {percentile(age, 50):.2f}/{percentile(age, 95):.2f} s" if age else ""
        )
        print(
            f"   {source}: {len(some)} polls, poll {percentile(whole, 50)}/"
            f"{percentile(whole, 95)} ms; " + "; ".join(parts) + " (ms p50/p95)" + at_apply
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="200:100")
    parser.add_argument("--spin", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--root", type=Path, help="trace another checkout too (first)")
    parser.add_argument("--pid", type=int, default=0)
    parser.add_argument("--slowest", type=int, default=12)
    parser.add_argument("--json", type=Path, help="write the raw traces here")
    args = parser.parse_args()
    print(machine(), flush=True)
    threads, busy = (int(x) for x in args.shape.split(":"))
    server = held = None
    if args.pid:
        pid = args.pid
    else:
        server, held = start_target(Shape(threads, busy, args.spin))
        pid = server.pid
    raw = {}
    try:
        runs = [("old", args.root)] if args.root else []
        runs.append(("new", None))
        for label, root in runs:
            print(f"{label}: load {os.getloadavg()[0]:.2f} at {time.strftime('%H:%M:%S')}")
            data = run_child(pid, args.seconds, root)
            raw[label] = data
            show(data, args.slowest, label)
    finally:
        for s in held or ():
            s.close()
        if server is not None:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
