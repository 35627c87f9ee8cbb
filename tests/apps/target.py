"""A CherryPy app for the tests, run as a subprocess: ``python -m tests.apps.target [options]``.

It prints ``BOOT pid=<pid>`` each time the interpreter starts (an Autoreloader restart re-execs
in place, so the same pid prints it again) and ``READY port=<port> pid=<pid>`` once serving.
Handlers block for a bounded time so that tests can saturate the pool; nothing here needs the
inspector to run.
"""

import argparse
import os
import sys
import threading
import time

import cherrypy

print("BOOT pid=%d" % os.getpid(), flush=True)

RELEASE = threading.Event()


class Api:
    @cherrypy.expose
    def status(self, **params):
        return "api ok"


class Root:
    def __init__(self) -> None:
        self.api = Api()

    @cherrypy.expose
    def index(self):
        return "hello"

    @cherrypy.expose
    def block(self, seconds="60", **params):
        """Hold this worker until released or ``seconds`` pass (bounded)."""
        RELEASE.wait(min(float(seconds), 120.0))
        return "released"

    @cherrypy.expose
    def fast(self, **params):
        """Answer at once: load on new requests, next to workers held by ``block``."""
        return "fast"

    @cherrypy.expose
    def hold_secret(self, seconds="60", **params):
        """Like ``block``, with a secret-looking local that py-spy ``--locals`` can read."""
        password = "hunter2-REAL"
        RELEASE.wait(min(float(seconds), 120.0))
        return "released (%d)" % len(password)

    @cherrypy.expose
    def spin(self, seconds="30", **params):
        """Burn CPU in pure Python (holds the GIL in bytecode, releasing it every 5 ms)."""
        end = time.time() + min(float(seconds), 120.0)
        n = 0
        while time.time() < end and not RELEASE.is_set():
            n += 1
        return str(n)

    @cherrypy.expose
    def regex(self, n="27", **params):
        """A catastrophic regular expression: the GIL stays held inside one C call.

        Every Python thread freezes meanwhile, the agent's too; each extra ``n`` doubles the time
        (27 is about 4 s here). Capped so a test can never hang for long.
        """
        import re

        size = min(int(n), 29)
        return str(bool(re.match(r"(a+)+$", "a" * size + "b")))

    @cherrypy.expose
    def upload(self, **params):
        """CherryPy reads an urlencoded body before calling this: a slow client holds a worker."""
        return "got %d fields" % len(params)

    @cherrypy.expose
    def stream(self):
        """A large streamed response: a client that does not read keeps the worker writing."""
        chunk = b"x" * 65536

        def body():
            for _ in range(2000):
                yield chunk

        return body()

    stream._cp_config = {"response.stream": True}

    @cherrypy.expose
    def autoreload_watches(self, file=""):
        """'yes' once the Autoreloader has recorded ``file``'s mtime (a later change restarts)."""
        return "yes" if file in getattr(cherrypy.engine.autoreload, "mtimes", {}) else "no"

    @cherrypy.expose
    def release(self):
        RELEASE.set()
        return "ok"

    @cherrypy.expose
    def switch(self, seconds="0.005"):
        """Set the interpreter's switch interval (how long a thread running Python keeps the GIL
        while others wait for it): longer makes every other thread, the agent's among them,
        wait longer behind ``/spin``. 5 ms is CPython's default."""
        sys.setswitchinterval(min(max(float(seconds), 0.001), 0.5))
        return "%.3f" % sys.getswitchinterval()

    @cherrypy.expose
    def rearm(self):
        """Undo ``release``: ``/block`` and ``/spin`` hold again (a target shared by tests)."""
        RELEASE.clear()
        return "ok"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def debug_state(self):
        """What the agent left behind: its threads, our hooks, the bus listeners."""
        from cherrypy import _cprequest

        hooks = [
            h
            for point in ("on_start_resource", "on_end_request")
            for h in _cprequest.Request.hooks.get(point, [])
            if "cpinspect" in getattr(getattr(h.callback, "__func__", h.callback), "__module__", "")
        ]
        listeners = [
            repr(cb)
            for ch in ("start", "exit")
            for cb in cherrypy.engine.listeners.get(ch, ())
            if "InspectorPlugin" in repr(cb)
        ]
        return {
            "threads": sorted(t.name for t in threading.enumerate()),
            "hooks": len(hooks),
            "listeners": len(listeners),
            "main_globals": sorted(
                k for k in sys.modules["__main__"].__dict__ if not k.startswith("__")
            ),
        }

    @cherrypy.expose
    def app_modules(self):
        """Import ``server`` and ``plugin`` now (after any injection): they must be the app's."""
        import plugin
        import server

        return "%s; %s" % (server.WHO, plugin.WHO)

    @cherrypy.expose
    def install_agent(self):
        import cpinspect.agent

        return cpinspect.agent.install()

    @cherrypy.expose
    def uninstall_agent(self):
        import cpinspect.agent

        cpinspect.agent.uninstall()
        return "uninstalled"


def serve_wsgiref(port: int) -> None:
    """Serve the app with the stdlib's wsgiref instead of cheroot (no pool to inspect)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Threaded(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    app = cherrypy.tree.mount(Root(), "")
    httpd = make_server("127.0.0.1", port, app, server_class=Threaded, handler_class=Quiet)
    print("READY port=%d pid=%d" % (httpd.server_port, os.getpid()), flush=True)
    httpd.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--agent", choices=["config", "install-before", "install-after", "none"], default="config"
    )
    parser.add_argument("--socket", default=None)
    parser.add_argument(
        "--autoreload", action="store_true", help="leave CherryPy's Autoreloader on (its default)"
    )
    parser.add_argument("--server", choices=["cheroot", "wsgiref"], default="cheroot")
    parser.add_argument(
        "--app-modules",
        action="store_true",
        help="put tests/apps/shadow (modules `server`, `plugin`) on sys.path, like an app would",
    )
    parser.add_argument(
        "--watch",
        default=None,
        help="import this .py file as a module, so the Autoreloader watches it (a test touches it)",
    )
    parser.add_argument(
        "--engine-log",
        action="store_true",
        help="print CherryPy's engine log (e.g. 'Restarting because ... changed.') to stdout",
    )
    args = parser.parse_args()
    if args.watch:
        import importlib

        sys.path.insert(0, os.path.dirname(os.path.abspath(args.watch)))
        importlib.import_module(os.path.splitext(os.path.basename(args.watch))[0])
    if args.engine_log:
        import logging

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("ENGINE-LOG %(message)s"))
        cherrypy.log.error_log.addHandler(handler)
    if args.app_modules:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shadow"))

    settings = {
        "server.socket_host": "127.0.0.1",
        "server.socket_port": args.port,
        "server.thread_pool": args.threads,
        "server.socket_queue_size": 64,
        "log.screen": False,
        "checker.on": False,
        "engine.autoreload.on": args.autoreload,
    }
    if args.autoreload:
        settings["engine.autoreload.frequency"] = 0.2
    cherrypy.config.update(settings)
    if args.agent == "config":
        import cpinspect.agent  # registers the `inspector` config namespace

        conf = {"inspector.on": True}
        if args.socket:
            conf["inspector.socket"] = args.socket
        cherrypy.config.update(conf)
    elif args.agent == "install-before":
        import cpinspect.agent

        cpinspect.agent.install(args.socket)

    if args.server == "wsgiref":
        if args.agent == "install-after":
            import cpinspect.agent

            cpinspect.agent.install(args.socket)
        serve_wsgiref(args.port)
        return

    cherrypy.tree.mount(Root(), "")
    cherrypy.engine.start()
    if args.agent == "install-after":
        import cpinspect.agent

        cpinspect.agent.install(args.socket)
    port = cherrypy.server.bound_addr[1]
    print("READY port=%d pid=%d" % (port, os.getpid()), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    sys.exit(main())
