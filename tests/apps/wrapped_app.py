"""A CherryPy app shaped like Salt's ``rest_cherrypy``: ``python -m tests.apps.wrapped_app``.

What the real app does and this one imitates:

- a ``MethodDispatcher`` over handler objects whose class-level ``_cp_config`` (not the app's
  config, not the root's) turns sessions on with the app's own storage class (a ``RamSession``
  subclass), so nothing in the mounted config mentions sessions;
- an app tool ``hypermedia_out`` that replaces ``request.handler`` (at ``before_handler``) by one
  module-level function and keeps the page handler as ``request._hypermedia_inner_handler``,
  as ``tools.json_out`` keeps ``_json_inner_handler``.

- app tools hooked before the handler in Salt's order: ``html_override`` first
  (``on_start_resource``; it only rewrites the Accept header, as Salt's does), then ``app_auth``
  (``before_request_body``; 401 without an ``X-Auth-Token`` header, as ``salt_auth``) on
  ``/minions`` only;
- ``/`` answered by ``root.index`` (an exposed resource, Salt's ``LowDataAdapter``), which the
  MethodDispatcher reaches by the ``index`` CherryPy appends to every path;
- helper objects hanging off the handlers, nothing exposed in them: ``/login/auth`` (a resolver
  holding a ``MutableMapping`` loader, whose methods come from ``_collections_abc``) and
  ``/hook/event`` (a ``threading.Event``), and an unexposed ``exec_lowstate`` helper method on
  every resource;
- CherryPy's own ``favicon_ico`` (``tree.mount`` puts it on the root), which a MethodDispatcher
  answers with 405 at ``/favicon.ico`` and ``/favicon_ico`` alike;
- ``/legacy`` under the default dispatcher (its own config section): exposed ``index`` and
  ``report``, a forgotten ``summary`` (no ``@cherrypy.expose``) and the methods a
  ``collections.abc.Mapping`` base gives it (``get``, ``items``…: not app code).

``POST /login?user=U&secret=S`` stores both in the session; ``GET /slow`` holds its worker until
``GET /release`` (or 60 s). Prints ``READY port=<port> pid=<pid>`` once serving with the agent
installed.
"""

import collections.abc
import os
import sys
import threading
import types

import cherrypy
from cherrypy.lib import sessions

RELEASE = threading.Event()


class AppRamSession(sessions.RamSession):
    """The app's own storage class (Salt's ``_NoEmptyRamSession``)."""


def hypermedia_handler(*args, **kwargs):
    """Stands in for the page handler, as Salt's does, and calls it."""
    return cherrypy.serving.request._hypermedia_inner_handler(*args, **kwargs)


def hypermedia_out():
    request = cherrypy.serving.request
    request._hypermedia_inner_handler = request.handler
    if request.handler is not None:
        request.handler = hypermedia_handler


cherrypy.tools.hypermedia_out = cherrypy.Tool("before_handler", hypermedia_out, priority=10)


def html_override():
    """Harmless, as Salt's html_override_tool: a browser's Accept becomes JSON's."""
    request = cherrypy.serving.request
    if "text/html" in request.headers.get("Accept", ""):
        request.headers["Accept"] = "application/json"


def app_auth():
    """Salt's salt_auth: no token, no entry."""
    if not cherrypy.serving.request.headers.get("X-Auth-Token"):
        raise cherrypy.HTTPError(401)


cherrypy.tools.html_override = cherrypy.Tool("on_start_resource", html_override, priority=50)
cherrypy.tools.app_auth = cherrypy.Tool("before_request_body", app_auth, priority=51)


class Loader(collections.abc.MutableMapping):
    """Salt's LazyLoader: a mapping of functions (get, items, pop… from _collections_abc)."""

    def __init__(self):
        self._funcs = {}

    def __getitem__(self, key):
        return self._funcs[key]

    def __setitem__(self, key, value):
        self._funcs[key] = value

    def __delitem__(self, key):
        del self._funcs[key]

    def __iter__(self):
        return iter(self._funcs)

    def __len__(self):
        return len(self._funcs)

    def reload_modules(self):
        self._funcs.clear()


class Resolver:
    """Salt's salt.auth.Resolver: a helper the login handler holds, nothing exposed."""

    def __init__(self):
        self.auth = Loader()

    def mk_token(self, load):
        return {"token": "t"}

    def get_token(self, token):
        return None


class Adapter:
    exposed = True
    _cp_config = {
        "tools.sessions.on": True,
        "tools.sessions.storage_class": AppRamSession,
        "tools.hypermedia_out.on": True,
    }


class Adapter2(Adapter):
    def exec_lowstate(self, client=None, token=None):
        """Salt's helper every resource has: called by the verbs, never a route."""
        return []


class Index(Adapter2):
    def GET(self):
        return "welcome"


class Minions(Adapter2):
    _cp_config = dict(Adapter._cp_config, **{"tools.app_auth.on": True})

    def GET(self, mid=None):
        return "minions"


class Hook(Adapter2):
    def __init__(self):
        self.event = threading.Event()

    def POST(self, *args):
        return "hooked"


class LegacyBase(collections.abc.Mapping):
    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


class Legacy(LegacyBase):
    """Under the default dispatcher: ``summary`` lacks its @cherrypy.expose (a 404)."""

    @cherrypy.expose
    def index(self):
        return "legacy"

    @cherrypy.expose
    def report(self):
        return "report"

    def summary(self):
        return "summary"


class Login(Adapter2):
    # Classes of the interpreter's own held by a handler object, as Salt's loaders hold
    # ``mod_dict_class = dict`` (the routes walk listed dict's methods as user properties, and
    # ``types.FunctionType``'s ``__code__`` descriptor failed the whole app's routes).
    mod_dict_class = dict
    function_type = types.FunctionType

    def __init__(self):
        self.auth = Resolver()

    def POST(self, user="", secret=""):
        cherrypy.session["user"] = user
        cherrypy.session["secret"] = secret
        return "logged in"


class Slow(Adapter):
    def GET(self):
        RELEASE.wait(60)
        return "slow done"


class Release(Adapter):
    def GET(self):
        RELEASE.set()
        return "released"


class API:
    """Salt's API: not exposed itself; ``/`` is its ``index``."""

    def __init__(self):
        self.index = Index()
        self.login = Login()
        self.minions = Minions()
        self.hook = Hook()
        self.slow = Slow()
        self.release = Release()
        self.legacy = Legacy()

    def get_conf(self):
        """Salt's API.get_conf: app code on the root, never a route."""
        return {}


def main() -> None:
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 4,
            "engine.autoreload.on": False,
            "log.screen": False,
            "checker.on": False,
        }
    )
    dispatch = cherrypy.dispatch.MethodDispatcher()
    conf = {
        "/": {"request.dispatch": dispatch, "tools.html_override.on": True},
        "/legacy": {"request.dispatch": cherrypy.dispatch.Dispatcher()},
    }
    cherrypy.tree.mount(API(), "", conf)
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    sys.stdout.flush()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
