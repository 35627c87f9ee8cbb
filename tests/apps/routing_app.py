"""A CherryPy process with many routing cases: ``python -m tests.apps.routing_app STATIC_DIR``.

Prints ``READY port=<port> pid=<pid>`` once serving, with the agent installed. ``STATIC_DIR`` is
created and filled with a few files (the static mounts point into it).
"""

import os
import sys
import time

import cherrypy


class Users:
    @cherrypy.expose
    def index(self):
        return "users"

    @cherrypy.expose
    def show(self, uid):
        return "user %s" % uid

    def secret(self):
        return "never"


class Admin:
    def __init__(self) -> None:
        self.users = Users()

    @cherrypy.expose
    def index(self):
        return "admin"

    def hidden(self):
        return "not exposed"


class Callable:
    exposed = True

    def __call__(self, *args):
        return "called %s" % (args,)

    def notexposed(self):
        return "x"


@cherrypy.expose
class Rest:
    def GET(self, *parts):
        return "get %s" % "/".join(parts)

    def POST(self, **kw):
        return "post"


class Widgets:
    """A REST resource under the default-dispatched root: /widgets has its own MethodDispatcher."""

    exposed = True

    def GET(self, wid=None):
        return "widget %s" % wid

    def PUT(self, wid, **kw):
        return "put %s" % wid


class Gadgets:
    """Verbs without ``exposed``: under a MethodDispatcher every request is a 404."""

    def GET(self):
        return "never"


@cherrypy.expose
def plain_function(*args):
    return "plain"


@cherrypy.popargs("year", "month")
class Blog:
    @cherrypy.expose
    def index(self, year=None, month=None):
        return "blog %s %s" % (year, month)


class Dynamic:
    def _cp_dispatch(self, vpath):
        if vpath and vpath[0].isdigit():
            cherrypy.request.params["item"] = vpath.pop(0)
            return self
        return None

    @cherrypy.expose
    def index(self, item=None):
        return "item %s" % item


class Slow:
    def _cp_dispatch(self, vpath):
        time.sleep(4)  # user code the resolver must abandon, never wait for
        return None


class Trap:
    @property
    def boom(self):
        raise RuntimeError("a property ran")


class Account:
    """Config from every layer: ``_cp_config`` on the object and a handler, app.config."""

    _cp_config = {"tools.sessions.on": True, "tools.gzip.on": True}

    @cherrypy.expose
    def index(self):
        return "account"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def profile(self):
        return {"name": "x"}

    @cherrypy.expose
    def export(self):
        return "export"


class Root:
    def __init__(self) -> None:
        self.account = Account()
        self.admin = Admin()
        self.callable = Callable()
        self.blog = Blog()
        self.items = Dynamic()
        self.trap = Trap()
        self.slow = Slow()
        self.me = self  # a cycle
        self.plain = plain_function
        self.widgets = Widgets()
        self.gadgets = Gadgets()

    @cherrypy.expose
    def index(self):
        return "root"

    @cherrypy.expose(["alias1", "alias2"])
    def aliased(self):
        return "aliased"

    @cherrypy.expose
    def feed_xml(self):
        return "<feed/>"

    @cherrypy.expose
    def page(self, name, size="10"):
        return "page %s %s" % (name, size)

    @cherrypy.expose
    def strict(self):
        return "strict"

    def not_exposed(self):
        return "hidden"


class DefaultRoot:
    @cherrypy.expose
    def index(self):
        return "d-index"

    @cherrypy.expose
    def default(self, *args, **kw):
        return "default %s" % "/".join(args)

    @cherrypy.expose
    def exact(self):
        return "exact"


class Dom1:
    @cherrypy.expose
    def index(self):
        return "dom1"


class Dom2:
    @cherrypy.expose
    def index(self):
        return "dom2"


class HostRoot:
    def __init__(self) -> None:
        self.d1 = Dom1()
        self.d2 = Dom2()

    @cherrypy.expose
    def index(self):
        return "host root"


class Things:
    def show(self, id):
        return "thing %s" % id

    def index(self):
        return "things"


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


def fill(static_dir: str) -> None:
    os.makedirs(os.path.join(static_dir, "css"), exist_ok=True)
    for name, body in (
        ("css/site.css", "body{}"),
        ("logo.PNG", "png"),
        ("logo.png", "png"),
        ("data.weird", "x"),
        ("index.html", "<html/>"),
        ("single.txt", "one"),
    ):
        with open(os.path.join(static_dir, name), "w") as f:
            f.write(body)


def main() -> None:
    static_dir = os.path.abspath(sys.argv[1])
    fill(static_dir)
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 4,
            "log.screen": False,
            "checker.on": False,
            "engine.autoreload.on": False,
        }
    )
    cherrypy.tree.mount(
        Root(),
        "",
        {
            "/strict": {"tools.trailing_slash.extra": True},
            # one subtree of a default-dispatched app answers by HTTP method
            "/widgets": {"request.dispatch": cherrypy.dispatch.MethodDispatcher()},
            "/gadgets": {"request.dispatch": cherrypy.dispatch.MethodDispatcher()},
            # app.config overrides the Account object's own _cp_config for one handler
            "/account/export": {"tools.gzip.on": False, "tools.encode.on": False},
            "/static": {
                "tools.staticdir.on": True,
                "tools.staticdir.dir": "",
                "tools.staticdir.root": static_dir,
                "tools.staticdir.index": "index.html",
                "tools.staticdir.content_types": {
                    "weird": "application/x-weird",
                    "PNG": "image/x-upper",
                },
            },
            "/rel": {"tools.staticdir.on": True, "tools.staticdir.dir": "relative/dir"},
            "/missing": {
                "tools.staticdir.on": True,
                "tools.staticdir.dir": "/nonexistent/cpinspect",
            },
            "/one.txt": {
                "tools.staticfile.on": True,
                "tools.staticfile.filename": "single.txt",
                "tools.staticfile.root": static_dir,
            },
        },
    )
    cherrypy.tree.mount(
        DefaultRoot(),
        "/def",
        {
            "/": {
                "tools.staticdir.on": True,
                "tools.staticdir.dir": os.path.join(static_dir, "css"),
            },
        },
    )
    cherrypy.tree.mount(
        Rest(), "/api", {"/": {"request.dispatch": cherrypy.dispatch.MethodDispatcher()}}
    )
    cherrypy.tree.mount(
        HostRoot(),
        "/vhost",
        {
            "/": {
                "request.dispatch": cherrypy.dispatch.VirtualHost(
                    **{"d1.example": "/d1", "d2.example": "/d2"}
                )
            }
        },
    )
    try:
        import routes  # noqa: F401

        disp = cherrypy.dispatch.RoutesDispatcher()
        disp.connect("things", "/things", controller=Things(), action="index")
        disp.connect("thing", "/things/{id}", controller=Things(), action="show")
        cherrypy.tree.mount(None, "/r", {"/": {"request.dispatch": disp}})
    except ImportError:
        pass
    cherrypy.tree.graft(wsgi_app, "/wsgi")
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
