"""``/v1/routes`` on real CherryPy processes with 5,000 exposed handlers: all of them, untruncated.

Two shapes, each in its own process: ``wide`` (50 controllers of 100 handlers) and ``flat`` (one
object with 5,000). The handlers are generated source, imported from a file, with a mix of
signatures; the agent's signature text must equal ``inspect.signature``'s for every one of them
(the walk reads plain functions' signatures from their code objects, for speed). No timing is
asserted here: ``bench/routes_scale.py`` measures.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.helpers import agent_get, spawn_ready

HANDLERS = 5000
CONTROLLERS = 50

SIGNATURES = (
    "(self)",
    "(self, item=None, page='1', **params)",
    "(self, *args, **kwargs)",
    "(self, a, b=2, /, c=(3,), *, d, e=None, **kw)",
    "(self, *, token, limit=10)",
    "(self, name: str, size: int = 10) -> str",
    "(self, path, *rest, flag=False)",
)
"""Parameter lists the handlers cycle through (an annotated one takes ``inspect``'s path)."""

WRAPPED_EVERY = 97
"""Every so many handlers is wrapped with ``functools.wraps`` (``inspect`` follows the wrapper)."""

RUNNER = """
import importlib.util, os, sys
import cherrypy
spec = importlib.util.spec_from_file_location("scale_handlers", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
cherrypy.config.update({
    "server.socket_host": "127.0.0.1", "server.socket_port": 0, "server.thread_pool": 4,
    "log.screen": False, "checker.on": False, "engine.autoreload.on": False,
})
cherrypy.tree.mount(module.Root(), "")
import cpinspect.agent
cherrypy.engine.start()
cpinspect.agent.install()
print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
cherrypy.engine.block()
"""


def handler_source(shape: str) -> Tuple[str, List[str]]:
    """The module's source, and the URL path of every exposed handler in it."""
    lines = ["import functools", "import cherrypy", ""]
    lines += ["def wrap(f):", "    @functools.wraps(f)", "    def inner(*a, **k):"]
    lines += ["        return f(*a, **k)", "    return inner", ""]
    paths: List[str] = []
    count = 0

    def handler(name: str, prefix: str) -> None:
        nonlocal count
        lines.append("    @cherrypy.expose")
        if count % WRAPPED_EVERY == 0:
            lines.append("    @wrap")
        lines.append("    def %s%s:" % (name, SIGNATURES[count % len(SIGNATURES)]))
        lines.append("        return %r" % name)
        paths.append(prefix + "/" + name)
        count += 1

    if shape == "wide":
        per = HANDLERS // CONTROLLERS
        for c in range(CONTROLLERS):
            lines.append("class Controller%d:" % c)
            for h in range(per):
                handler("index" if h == 0 else "handler%d" % h, "/controller%d" % c)
            lines.append("")
        lines += ["class Root:", "    def __init__(self):"]
        lines += ["        self.controller%d = Controller%d()" % (c, c) for c in range(CONTROLLERS)]
    else:
        lines.append("class Flat:")
        for h in range(HANDLERS):
            handler("handler%d" % h, "/flat")
        lines += ["", "class Root:", "    def __init__(self):", "        self.flat = Flat()"]
    return "\n".join(lines) + "\n", paths


class ScaleTarget:
    def __init__(self, shape: str, pid: int, module_path: Path, paths: List[str]) -> None:
        self.shape = shape
        self.pid = pid
        self.module_path = module_path
        self.paths = paths

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path

    def load_module(self) -> ModuleType:
        """The same handlers, imported in the test process (for ``inspect.signature``)."""
        spec = importlib.util.spec_from_file_location("scale_%s" % self.shape, self.module_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@pytest.fixture(scope="module", params=["wide", "flat"])
def scale(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleTarget]:
    shape = request.param
    tmp = tmp_path_factory.mktemp("scale-" + shape)
    source, paths = handler_source(shape)
    module_path = tmp / "scale_handlers.py"
    module_path.write_text(source)
    runner = tmp / "runner.py"
    runner.write_text(RUNNER)
    args = [str(runner), str(module_path)]
    with spawn_ready(args, tmp / "target.log", "scale target", timeout=30) as m:
        yield ScaleTarget(shape, int(m.group(2)), module_path, paths)


def routes(target: ScaleTarget) -> Dict[str, Any]:
    status, body = agent_get(target.socket_path(), "/v1/routes", timeout=30.0)
    assert status == 200, body
    return body


def test_all_5000_handlers_are_listed_untruncated(scale: ScaleTarget) -> None:
    # GIVEN a CherryPy app with 5,000 exposed handlers WHEN its routes are read
    body = routes(scale)
    # THEN the answer holds the one app, whole: no cap hit, no error
    assert body["errors"] == []
    assert body["truncated"] is False
    assert body["cap"] >= HANDLERS
    [app] = body["apps"]
    assert app["truncated"] is False and app["errors"] == []
    # AND every handler is there once, exposed, under its object
    handlers = [n for n in app["nodes"] if n["kind"] in ("handler", "index")]
    assert len(handlers) == HANDLERS
    assert all(n["exposed"] for n in handlers)
    assert sorted(n["path"] for n in handlers) == sorted(scale.paths)
    objects = {n["path"] for n in app["nodes"] if n["kind"] == "object"}
    expected = {"/"} | {p.rsplit("/", 1)[0] for p in scale.paths}
    assert objects == expected
    # AND nothing else but the favicon handler tree.mount adds to every root
    others = [n for n in app["nodes"] if n["kind"] not in ("handler", "index", "object")]
    assert [(n["path"], n["kind"]) for n in others] == [("/favicon_ico", "static")]


def test_signatures_are_inspects_own(scale: ScaleTarget) -> None:
    # GIVEN the same handler module imported here
    module = scale.load_module()
    root = module.Root()
    # WHEN the agent's signature of every handler is compared with inspect.signature's
    nodes = {n["path"]: n for n in routes(scale)["apps"][0]["nodes"]}
    differ = []
    for path in scale.paths:
        owner, name = path.rsplit("/", 1)
        func = getattr(type(getattr(root, owner.lstrip("/"))), name)
        want = str(inspect.signature(func))
        if nodes[path]["signature"] != want:
            differ.append((path, nodes[path]["signature"], want))
    # THEN they are the same text, whichever way the agent read them
    assert differ == []
    assert {nodes[p]["signature"] for p in scale.paths} == set(SIGNATURES)
