"""Dispatching on purpose, and tools that answer first: ``python -m tests.apps.dispatch_app DIR``.

Built after a real application from PyPI whose Routes tab showed 40 false alarms:

- ``/api/<action>``: one exposed ``api(self, *args, **kwargs)`` calling ``getattr(self, 'api_' +
  action)``, with 40 unexposed ``api_<action>`` methods (internal, not warned about);
- ``/table/<action>``: the same through a dict of bound methods (``self.handlers[action]``);
- ``/pages/<x>``: an object with an exposed ``default`` and an unexposed helper it receives;
- ``/reports/summary``: a really forgotten ``@cherrypy.expose`` (unexposed, no dispatcher);
- ``/account``: a handler that answers 401 without a login (the resolver must not claim 200);
- ``/private`` and the static dir ``/files``: guarded by a custom tool (``tools.myauth``, hooked
  ``before_handler``) that answers 403 without a login;
- ``/basic``: ``tools.auth_basic``;
- ``/favicon.ico``: the app's own icon by ``tools.staticfile`` in config, as CherryMusic does,
  beside the ``favicon_ico`` handler ``tree.mount`` adds to the root (serving CherryPy's);
- ``/media`` (a folder per artist, no file at its top) and ``/res`` (two files and a folder):
  static directories holding subdirectories.

Prints ``READY port=<port> pid=<pid>`` once serving, with the agent installed. ``DIR`` is
created and holds the static files.
"""

import os
import sys

import cherrypy

ACTIONS = ["action%02d" % i for i in range(40)]


def _check_login() -> None:
    """The custom authentication tool: 403 without the ``X-Login`` header."""
    if not cherrypy.request.headers.get("X-Login"):
        raise cherrypy.HTTPError(403, "login first")


cherrypy.tools.myauth = cherrypy.Tool("before_handler", _check_login)


def _make_action(name):
    def action(self, **kwargs):
        return "did %s" % name

    action.__name__ = "api_" + name
    action.__qualname__ = "Root.api_" + name
    return action


class Table:
    def __init__(self) -> None:
        self.handlers = {"ping": self.do_ping, "stats": self.do_stats}

    @cherrypy.expose
    def call(self, action, **kwargs):
        if action not in self.handlers:
            raise cherrypy.NotFound()
        return self.handlers[action]()

    def do_ping(self):
        return "pong"

    def do_stats(self):
        return "stats"


class Pages:
    @cherrypy.expose
    def default(self, *parts):
        return "page %s" % "/".join(parts)

    def render(self):
        return "a helper default receives by name"


class Reports:
    @cherrypy.expose
    def index(self):
        return "reports"

    def summary(self):
        return "forgot @cherrypy.expose"


class Root:
    def __init__(self) -> None:
        self.table = Table()
        self.pages = Pages()
        self.reports = Reports()

    @cherrypy.expose
    def index(self):
        return "home"

    @cherrypy.expose
    def account(self):
        if not cherrypy.request.headers.get("X-Login"):
            raise cherrypy.HTTPError(401, "login first")
        return "your account"

    @cherrypy.expose
    @cherrypy.tools.myauth()
    def private(self):
        return "private"

    @cherrypy.expose
    def basic(self):
        return "basic"

    @cherrypy.expose
    def api(self, *args, **kwargs):
        action = args[0] if args else ""
        handler = getattr(self, "api_" + action, None)
        if handler is None:
            raise cherrypy.NotFound()
        return handler(**kwargs)


for _name in ACTIONS:
    setattr(Root, "api_" + _name, _make_action(_name))


def main() -> None:
    files = sys.argv[1]
    os.makedirs(files, exist_ok=True)
    with open(os.path.join(files, "song.txt"), "w") as handle:
        handle.write("la la la\n")
    with open(os.path.join(files, "app-favicon.ico"), "w") as handle:
        handle.write("the app's own icon\n")
    os.makedirs(os.path.join(files, "media", "Artist", "Album"), exist_ok=True)
    os.makedirs(os.path.join(files, "res", "img"), exist_ok=True)
    for name in ("index.html", "app.js"):
        with open(os.path.join(files, "res", name), "w") as handle:
            handle.write(name)
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "engine.autoreload.on": False,
            "log.screen": False,
            "environment": "test_suite",
        }
    )
    cherrypy.tree.mount(
        Root(),
        "/",
        {
            "/files": {
                "tools.staticdir.on": True,
                "tools.staticdir.dir": files,
                "tools.myauth.on": True,
            },
            "/favicon.ico": {
                "tools.staticfile.on": True,
                "tools.staticfile.filename": os.path.join(files, "app-favicon.ico"),
            },
            "/media": {"tools.staticdir.on": True, "tools.staticdir.dir": files + "/media"},
            "/res": {"tools.staticdir.on": True, "tools.staticdir.dir": files + "/res"},
            "/basic": {
                "tools.auth_basic.on": True,
                "tools.auth_basic.realm": "test",
                "tools.auth_basic.checkpassword": lambda realm, user, password: False,
            },
        },
    )
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
