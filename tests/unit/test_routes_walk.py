"""The agent's routes walk, in process: signatures, class sources, per-path dispatchers.

The walk only reads objects, so these run on hand-built CherryPy ``Application`` objects that are
never mounted or served (the integration tests do that on a real process).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, List

import cherrypy
import pytest

from cpinspect.agent.probes.routes import (
    MAX_SIGNATURE,
    _Walk,
    method_dispatch_at,
    plain_signature,
    signature_of,
    source_of,
    walk_tree,
)


def f_none():
    pass


def f_pos(a, b):
    pass


def f_defaults(a, b=1, c="x", d=None):
    pass


def f_star(*args, **kwargs):
    pass


def f_kwonly(a, *, b, c=3):
    pass


def f_all(a, b=2, *rest, c, d=(1, 2), **kw):
    pass


def f_posonly(a, b, /, c, d=4):
    pass


def f_posonly_defaults(a=1, /, *, k):
    pass


def f_annotated(a: int, b: str = "x") -> None:
    pass


def decorated(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


@decorated
def f_wrapped(year, month=1):
    pass


class Methods:
    def handler(self, name, size="10"):
        pass


@pytest.mark.parametrize(
    "func",
    [
        f_none,
        f_pos,
        f_defaults,
        f_star,
        f_kwonly,
        f_all,
        f_posonly,
        f_posonly_defaults,
        Methods.handler,
        lambda x, y=[1]: x,
    ],
)
def test_the_fast_signature_reads_what_inspect_reads(func: Callable[..., Any]) -> None:
    assert plain_signature(func) == str(inspect.signature(func))
    assert signature_of(func) == str(inspect.signature(func))


@pytest.mark.parametrize("func", [f_annotated, f_wrapped, len, Methods().handler])
def test_anything_else_is_left_to_inspect(func: Callable[..., Any]) -> None:
    # GIVEN annotations, a functools.wraps wrapper, a builtin or a bound method
    # THEN the fast path declines and the text is inspect's own
    assert plain_signature(func) is None
    assert signature_of(func) == str(inspect.signature(func))


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("repr ran and failed")


def test_a_default_whose_repr_raises_does_not_lose_the_tree() -> None:
    def handler(x=Hostile()):  # noqa: B008 - the point of the test
        pass

    text = signature_of(handler)
    assert text is not None and "signature unavailable" in text and "repr ran" in text


def test_a_huge_default_is_cut() -> None:
    def handler(x="y" * 5000):
        pass

    text = signature_of(handler)
    assert text is not None and len(text) == MAX_SIGNATURE and text.endswith("…")


class NoInit:
    exposed = True

    @cherrypy.expose
    def second(self):
        pass

    @cherrypy.expose
    def first(self):  # defined later in the file than ``second``: the minimum line wins
        pass

    wrapped = staticmethod(decorated(f_none))


class NothingCallable:
    answer = 42


def test_a_class_without_init_is_located_by_its_methods() -> None:
    # GIVEN a class with no __init__ and a decorated member whose code lives elsewhere
    file, line = source_of(NoInit)
    # THEN it points into this file, at or before its first method (3.13: the class line)
    assert file == __file__
    expected = getattr(NoInit, "__firstlineno__", NoInit.second.__code__.co_firstlineno)
    assert line == expected
    # AND a class with no function at all is named by its module
    assert source_of(NothingCallable)[0] == __name__


class Widgets:
    exposed = True

    def GET(self, wid=None):
        pass

    def PUT(self, wid):
        pass


class Gadgets:
    def GET(self):
        pass


class Root:
    def __init__(self) -> None:
        self.widgets = Widgets()
        self.gadgets = Gadgets()
        self.plain = Widgets()

    @cherrypy.expose
    def index(self):
        pass


def walk(app: cherrypy.Application) -> Dict[str, Dict[str, Any]]:
    w = _Walk([1000])
    walk_tree(app.root, w, method_dispatch_at(app, cherrypy._cprequest.Request.dispatch))
    return {n["path"]: n for n in w.nodes}


def test_a_per_path_method_dispatcher_applies_under_its_section_only() -> None:
    # GIVEN a default-dispatched app whose /widgets and /gadgets sections answer by HTTP method
    method = {"request.dispatch": cherrypy.dispatch.MethodDispatcher()}
    app = cherrypy.Application(Root(), "", {"/widgets": method, "/gadgets": method})
    nodes = walk(app)
    # THEN under /widgets the verbs are the resource's methods, not unexposed handlers
    assert nodes["/widgets"]["methods"] == ["GET", "PUT"] and nodes["/widgets"]["warnings"] == []
    assert "/widgets/GET" not in nodes
    # AND a resource with verbs but no exposed is flagged there
    assert any("not exposed" in w for w in nodes["/gadgets"]["warnings"])
    # AND the same class outside the section is walked as ordinary handlers (which would 404:
    # said by the kind, not warned about until a request hits one)
    assert nodes["/plain/GET"]["kind"] == "unexposed" and nodes["/plain/GET"]["warnings"] == []


def test_a_virtual_host_handing_over_to_a_method_dispatcher_counts_as_one() -> None:
    vhost = cherrypy.dispatch.VirtualHost(cherrypy.dispatch.MethodDispatcher())
    app = cherrypy.Application(Root(), "", {"/": {"request.dispatch": vhost}})
    nodes = walk(app)
    warnings: List[str] = nodes["/plain"]["warnings"]
    assert "/plain/GET" not in nodes and warnings == []
