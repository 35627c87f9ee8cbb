"""A CherryPy app shaped like Salt's ``rest_cherrypy``: ``python -m tests.apps.wrapped_app``.

What the real app does and this one imitates:

- a ``MethodDispatcher`` over handler objects whose class-level ``_cp_config`` (not the app's
  config, not the root's) turns sessions on with the app's own storage class (a ``RamSession``
  subclass), so nothing in the mounted config mentions sessions;
- an app tool ``hypermedia_out`` that replaces ``request.handler`` (at ``before_handler``) by one
  module-level function and keeps the page handler as ``request._hypermedia_inner_handler``,
  as ``tools.json_out`` keeps ``_json_inner_handler``.

``POST /login?user=U&secret=S`` stores both in the session; ``GET /slow`` holds its worker until
``GET /release`` (or 60 s). Prints ``READY port=<port> pid=<pid>`` once serving with the agent
installed.
"""

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


class Adapter:
    exposed = True
    _cp_config = {
        "tools.sessions.on": True,
        "tools.sessions.storage_class": AppRamSession,
        "tools.hypermedia_out.on": True,
    }


class Login(Adapter):
    # Classes of the interpreter's own held by a handler object, as Salt's loaders hold
    # ``mod_dict_class = dict`` (the routes walk listed dict's methods as user properties, and
    # ``types.FunctionType``'s ``__code__`` descriptor failed the whole app's routes).
    mod_dict_class = dict
    function_type = types.FunctionType

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
    exposed = True

    def __init__(self):
        self.login = Login()
        self.slow = Slow()
        self.release = Release()

    def GET(self):
        return "welcome"


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
    cherrypy.tree.mount(API(), "", {"/": {"request.dispatch": dispatch}})
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    sys.stdout.flush()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
