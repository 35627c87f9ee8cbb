"""The Routes tab on an app with 5,000 handlers: ``/v1/routes`` latency and node expansion.

    python bench/routes_scale.py [--runs 20] [--expand-runs 7]

Two fresh CherryPy processes, one per shape, each with 5,000 exposed handlers generated as
ordinary source (a module written to a temp directory and imported, so every handler has its own
code object, file and line, like hand-written controllers) and the agent installed:

  wide  50 controllers mounted on the root, each with ``index`` and 99 more handlers
  flat  one object on the root with 5,000 handlers

Over the agent's real Unix socket (a fresh connection per request, as the CLI does), after one
warm-up request: ``GET /v1/routes`` from sending the request to the last byte of the body, median
and p95 over ``--runs``; the body's size, the node count and whether the walk hit its cap.

Then the real TUI (``InspectorApp`` on ``AgentSession``, headless ``run_test`` + Pilot) opens the
Routes tab on the same process and expands nodes, each ``--expand-runs`` times (the node is
collapsed and its children dropped before each run, so every run builds them again, as a first
expansion does). Timed: from ``node.expand()`` until the panel has added the children (the
``NodeExpanded`` message handled) *and* the tree has rebuilt its lines (what the next repaint
needs; forced right away so it is in the figure). The panel's own part (``_populate``) is printed
apart. Nodes: the app node, the root object (50 controllers in ``wide``), one controller (100
handlers) and the flat object (5,000 handlers: the panel adds them a page at a time, so also
timed: enter on its "… N more" line, up to the next page in the tree). With 7 runs the p95 column
is the slowest run; the time the cyclic GC took in that run is printed beside it (a gen-2
collection over the TUI's heap takes tens of ms whatever is being done).

Goals (from the issue): ``/v1/routes`` < 200 ms and expanding a node < 50 ms, with 5,000 handlers.
The ratio column is measured / goal (below 1.00: met).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from benchlib import ROOT, Server, agent_get_raw, machine, median, percentile, start_ready

sys.path.insert(0, str(ROOT))

SHAPES = ("wide", "flat")
HANDLERS = 5000
CONTROLLERS = 50
ROUTES_GOAL_MS = 200.0
EXPAND_GOAL_MS = 50.0
READY_TIMEOUT = 30.0


# --- the target (runs in the child process: ``routes_scale.py --serve SHAPE --dir DIR``) ------


def handler_source(shape: str) -> str:
    """A module with 5,000 exposed handlers in ``shape``; ``Root`` is what gets mounted."""
    lines = ["import cherrypy", ""]

    def handler(name: str, body: str) -> None:
        lines.append("    @cherrypy.expose")
        lines.append("    def %s(self, item=None, page='1', **params):" % name)
        lines.append("        return %r" % body)
        lines.append("")

    if shape == "wide":
        per = HANDLERS // CONTROLLERS
        for c in range(CONTROLLERS):
            lines.append("class Controller%d:" % c)
            lines.append("    @cherrypy.expose")
            lines.append("    def index(self):")
            lines.append("        return 'controller %d'" % c)
            lines.append("")
            for h in range(per - 1):
                handler("handler%d" % h, "controller %d handler %d" % (c, h))
        lines.append("class Root:")
        lines.append("    def __init__(self):")
        lines.extend(
            "        self.controller%d = Controller%d()" % (c, c) for c in range(CONTROLLERS)
        )
    else:
        lines.append("class Flat:")
        for h in range(HANDLERS):
            handler("handler%d" % h, "flat handler %d" % h)
        lines.append("class Root:")
        lines.append("    def __init__(self):")
        lines.append("        self.flat = Flat()")
    return "\n".join(lines) + "\n"


def serve(shape: str, directory: str) -> int:
    import cherrypy

    path = os.path.join(directory, "scale_%s.py" % shape)
    with open(path, "w", encoding="utf-8") as f:
        f.write(handler_source(shape))
    spec = importlib.util.spec_from_file_location("scale_%s" % shape, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
    cherrypy.tree.mount(module.Root(), "")
    from cpinspect.agent import install

    socket_path = install()
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print("READY port=%d pid=%d socket=%s" % (port, os.getpid(), socket_path), flush=True)
    try:
        cherrypy.engine.block()
    finally:
        os._exit(0)
    return 0


def start_target(shape: str, directory: str) -> Server:
    args = [str(Path(__file__).resolve()), "--serve", shape, "--dir", directory]
    try:
        return start_ready(args, "%s target" % shape, READY_TIMEOUT, unset=["XDG_RUNTIME_DIR"])
    except RuntimeError as exc:
        raise SystemExit("routes_scale: %s" % exc) from None


# --- GET /v1/routes over the socket -------------------------------------------------------------


@dataclass
class RoutesResult:
    times_ms: List[float]
    size: int
    nodes: int
    handlers: int
    truncated: bool
    cap: int


def get_raw(socket_path: str, endpoint: str) -> bytes:
    try:
        return agent_get_raw(socket_path, endpoint, timeout=30.0)
    except RuntimeError as error:
        raise SystemExit("routes_scale: %s" % error) from None


def measure_routes(socket_path: str, runs: int) -> RoutesResult:
    body = get_raw(socket_path, "/v1/routes")  # warm-up: imports, first walk
    times: List[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        body = get_raw(socket_path, "/v1/routes")
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    data: Dict[str, Any] = json.loads(body)
    nodes = [n for app in data["apps"] for n in app["nodes"]]
    handlers = sum(1 for n in nodes if n["exposed"] and n["kind"] in ("handler", "index"))
    return RoutesResult(
        times, len(body), len(nodes), handlers, bool(data["truncated"]), data["cap"]
    )


# --- expanding nodes in the real TUI ------------------------------------------------------------


@dataclass
class ExpandResult:
    label: str
    children: int = 0
    """The node's children in the routes data."""
    lines: int = 0
    """Lines the expansion put in the tree (a page of children, and the "… N more" line)."""
    total_ms: List[float] = field(default_factory=list)
    populate_ms: List[float] = field(default_factory=list)
    gc_ms: List[float] = field(default_factory=list)
    """Time in the cyclic garbage collector during each run (part of ``total_ms``)."""

    def add(self, total_ms: float, gc_ms: float, populate_ms: float = 0.0) -> None:
        self.total_ms.append(total_ms)
        self.gc_ms.append(gc_ms)
        self.populate_ms.append(populate_ms)

    def slowest_gc(self) -> float:
        return self.gc_ms[self.total_ms.index(max(self.total_ms))]


class GcTime:
    """Milliseconds the interpreter has spent in the cyclic GC since ``start`` (a gen-2
    collection over the TUI's heap takes tens of ms: it tells such pauses from the work timed)."""

    def __init__(self) -> None:
        self.total_ms = 0.0
        self._since = 0.0

    def __call__(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.total_ms += (time.perf_counter() - self._since) * 1000

    def start(self) -> None:
        gc.callbacks.append(self)

    def stop(self) -> None:
        gc.callbacks.remove(self)


GC = GcTime()


async def measure_expansion(
    pid: int, socket_path: str, shape: str, runs: int
) -> List[ExpandResult]:
    from textual.widgets.tree import TreeNode

    from cpinspect.sources.agent import AgentSource
    from cpinspect.sources.live import AgentSession
    from cpinspect.sources.source_lines import SourceLines
    from cpinspect.tui.app import InspectorApp
    from cpinspect.tui.widgets.routes_panel import RouteItem, RoutesPanel

    populate_ms: List[float] = []
    original = RoutesPanel._populate

    def timed_populate(self: RoutesPanel, node: TreeNode[RouteItem]) -> None:
        t0 = time.perf_counter()
        original(self, node)
        populate_ms.append((time.perf_counter() - t0) * 1000)

    RoutesPanel._populate = timed_populate  # type: ignore[method-assign]
    GC.start()
    source = AgentSource(socket_path, timeout=30.0)
    session = AgentSession(source, source.info(), pid=pid, timeout=30.0)
    app = InspectorApp(session, interval=3600.0, source_lines=SourceLines(pid), clock=time.time)
    results: List[ExpandResult] = []
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            deadline = time.monotonic() + 30
            while app.polls_received < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("routes_scale: the TUI got no first poll")
                await pilot.pause(0.01)
            await pilot.press("2")
            panel = app.query_one(RoutesPanel)
            while panel.loads < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("routes_scale: the Routes tab never loaded")
                await pilot.pause(0.01)
            await pilot.pause()
            if panel.error is not None:
                raise SystemExit("routes_scale: routes error in the TUI: %s" % panel.error)
            tree = panel.routes_tree

            def child(node: TreeNode[RouteItem], path: str) -> TreeNode[RouteItem]:
                for c in node.children:
                    if c.data is not None and c.data.node is not None and c.data.node.path == path:
                        return c
                raise SystemExit(
                    "routes_scale: no node %s in the tree: %r"
                    % (path, [str(c.label) for c in node.children])
                )

            async def locate(chain: Tuple[str, ...]) -> TreeNode[RouteItem]:
                """The node at ``chain`` (paths from the app node down) in the current tree,
                expanding the nodes above it (a reset drops and rebuilds a node's children)."""
                node = tree.root.children[0]
                for path in chain:
                    item = node.data
                    if item is not None and not (item.populated and node.is_expanded):
                        await expand_once(pilot, tree, node)
                    node = child(node, path)
                return node

            targets: List[Tuple[str, Tuple[str, ...]]] = [("app node", ())]
            if shape == "wide":
                targets.append(("root object", ("/",)))
                targets.append(("one controller", ("/", "/controller0")))
            else:
                targets.append(("flat object", ("/", "/flat")))
            for label, chain in targets:
                node = await locate(chain)
                result = ExpandResult(label)
                for _ in range(runs):
                    await reset(pilot, node)
                    populate_ms.clear()
                    total, gc_ms = await expand_once(pilot, tree, node)
                    result.add(total, gc_ms, sum(populate_ms))
                item = node.data
                assert item is not None
                key = item.node.path if item.node is not None else None
                result.children = len(item.children.get(key, []))
                result.lines = len(node.children)
                results.append(result)
            if any(n.data is not None and n.data.more for n in node.children):
                results.append(await measure_more(pilot, tree, node, runs))
            await pilot.press("q")
    finally:
        RoutesPanel._populate = original  # type: ignore[method-assign]
        GC.stop()
        session.close()
    return results


async def measure_more(pilot: Any, tree: Any, node: Any, runs: int) -> ExpandResult:
    """Enter on the "… N more" line of a freshly expanded ``node``: the next page in the tree."""
    result = ExpandResult("next page (enter on … more)")
    for _ in range(runs):
        await reset(pilot, node)
        await expand_once(pilot, tree, node)
        more = node.children[-1]
        shown = node.data.shown
        tree.move_cursor(more)
        await pilot.pause()
        gc0 = GC.total_ms
        t0 = time.perf_counter()
        tree.select_node(more)
        deadline = time.monotonic() + 30
        while node.data.shown == shown:
            if time.monotonic() > deadline:
                raise SystemExit("routes_scale: the next page never came")
            await asyncio.sleep(0)
        _ = tree.last_line  # the rebuild the next repaint would do
        result.add((time.perf_counter() - t0) * 1000, GC.total_ms - gc0)
        result.children = node.data.shown - shown
        result.lines = len(node.children)
        await pilot.pause()
    return result


async def reset(pilot: Any, node: Any) -> None:
    """Collapse ``node`` and drop its children: the next expansion builds them again."""
    node.collapse()
    node.remove_children()
    node.data.populated = False
    node.data.shown = 0
    await pilot.pause()


async def expand_once(pilot: Any, tree: Any, node: Any) -> Tuple[float, float]:
    """Milliseconds from ``node.expand()`` to the children added and the tree lines rebuilt,
    and of them the milliseconds in the GC."""
    gc0 = GC.total_ms
    t0 = time.perf_counter()
    node.expand()
    deadline = time.monotonic() + 30
    while not node.data.populated:
        if time.monotonic() > deadline:
            raise SystemExit("routes_scale: the node was never populated")
        await asyncio.sleep(0)
    _ = tree.last_line  # the rebuild the next repaint would do
    elapsed = (time.perf_counter() - t0) * 1000
    gc_ms = GC.total_ms - gc0
    await pilot.pause()
    return elapsed, gc_ms


# --- report -------------------------------------------------------------------------------------


def row(shape: str, what: str, values: List[float], goal: float, note: str = "") -> float:
    med = median(values)
    p95 = percentile(values, 95)
    print(
        "%-5s %-30s %7.1f ms %7.1f ms %4.0f ms %6.2f   %s"
        % (shape, what, med, p95, goal, med / goal, note)
    )
    return med / goal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="GET /v1/routes per shape (20)")
    parser.add_argument("--expand-runs", type=int, default=7, help="expansions per node (7)")
    parser.add_argument("--shape", choices=SHAPES, action="append", help="default: both")
    parser.add_argument("--serve", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.dir or tempfile.mkdtemp(prefix="cpi-scale-"))
    if args.runs < 1 or args.expand_runs < 1:
        parser.error("--runs and --expand-runs must be positive")

    print("routes_scale: %s" % machine())
    print(
        "%d handlers per target; GET /v1/routes x %d after a warm-up (fresh connection each); "
        "each expansion x %d\n" % (HANDLERS, args.runs, args.expand_runs)
    )
    ratios: Dict[str, float] = {}
    lines: List[str] = []
    for shape in args.shape or SHAPES:
        with tempfile.TemporaryDirectory(prefix="cpi-scale-") as directory:
            srv = start_target(shape, directory)
            try:
                assert srv.socket is not None
                routes = measure_routes(srv.socket, args.runs)
                expansions = asyncio.run(
                    measure_expansion(srv.pid, srv.socket, shape, args.expand_runs)
                )
            finally:
                srv.stop()
        lines.append(
            "%-5s /v1/routes body %.2f MB (%d bytes), %d nodes, %d exposed handlers, "
            "truncated %s (cap %d)"
            % (
                shape,
                routes.size / 1e6,
                routes.size,
                routes.nodes,
                routes.handlers,
                "yes" if routes.truncated else "no",
                routes.cap,
            )
        )
        print(
            "%-5s %-30s %10s %10s %7s %6s   %s"
            % ("shape", "measure", "median", "p95", "goal", "ratio", "notes")
        )
        ratios["%s routes" % shape] = row(shape, "GET /v1/routes", routes.times_ms, ROUTES_GOAL_MS)
        for e in expansions:
            if e.label.startswith("next page"):
                what = e.label
                note = "+%d children, %d lines under the node" % (e.children, e.lines)
            else:
                what = "expand %s" % e.label
                note = "%d children, %d lines; _populate %.1f ms" % (
                    e.children,
                    e.lines,
                    median(e.populate_ms),
                )
            if e.slowest_gc() >= 1.0:
                note += "; slowest run: %.0f ms GC" % e.slowest_gc()
            ratios["%s %s" % (shape, e.label)] = row(shape, what, e.total_ms, EXPAND_GOAL_MS, note)
        print(lines[-1] + "\n", flush=True)
    complete = all("truncated no" in line for line in lines)
    worst = max(ratios, key=lambda k: ratios[k])
    met = ratios[worst] < 1.0 and complete
    print(
        "goal: GET /v1/routes < %.0f ms and expanding a node < %.0f ms with %d handlers, "
        "untruncated -> %s (worst ratio %.2f: %s)"
        % (
            ROUTES_GOAL_MS,
            EXPAND_GOAL_MS,
            HANDLERS,
            "met" if met else "NOT met",
            ratios[worst],
            worst,
        )
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
