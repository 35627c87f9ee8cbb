"""One CherryPy app that stages the incidents the findings name: ``python -m tests.apps.incidents``.

``--stage incidents`` (the default) is a process configured the way the field guide's problems
come about, with endpoints that stage the rest on demand:

- the Autoreloader left on (CherryPy's default) and no ``environment`` set;
- errors going nowhere (``log.screen`` off, no error file); ``/boom`` logs one;
- static mounts: ``/static`` (a real directory whose ``content_types`` serve ``.mjs`` as
  text/plain and ``.woff2`` as application/octet-stream; ``.js`` and ``.css`` are right),
  ``/assets`` (a relative directory without ``tools.staticdir.root``: CherryPy answers 500) and
  ``/gone`` (an absolute directory that does not exist);
- ``Reports.summary`` not exposed (the forgotten ``@cherrypy.expose``): ``/reports/summary`` 404s;
- ``/reports/export`` holds its worker in ``fetch_all``, reading a socket that never answers
  (a database that hangs) until ``/release``, the ``--release-file`` exists, or its time limit:
  with more requests than workers the pool starves;
- ``/reports/totals`` spins in ``crunch`` (pure Python, CPU-bound) the same way;
- slow clients need no endpoint: a test opens connections and sends half a request.

``--stage healthy``: a well-configured process (Autoreloader off, logging to the screen,
a correct static directory) for the no-false-alarm tests.

Prints ``READY port=<port> pid=<pid>`` once serving. ``--static-dir`` is where the static
files are written (a temporary directory of the test).
"""

import argparse
import os
import socket
import sys
import threading
import time

import cherrypy

RELEASE = threading.Event()
RELEASE_FILE = ""
"""While this file exists, ``fetch_all`` returns at once (a test releases a starved pool with
it: no request can get through to ``/release`` then)."""
HANG = socket.socket()
"""A listening socket nobody accepts on: a connect succeeds, a read waits (the hung database)."""


def fetch_all(seconds: float) -> str:
    """Read an answer that never comes, like a driver waiting on a stuck database."""
    deadline = time.monotonic() + seconds
    conn = socket.create_connection(HANG.getsockname(), timeout=0.5)
    try:
        while not released() and time.monotonic() < deadline:
            stream = conn.makefile("rb", buffering=0)  # reads in socket.py, like a driver
            try:
                return stream.read(1).decode() or "closed"
            except socket.timeout:
                continue
            finally:
                stream.close()
    finally:
        conn.close()
    return "released"


def released() -> bool:
    return RELEASE.is_set() or bool(RELEASE_FILE and os.path.exists(RELEASE_FILE))


def crunch(seconds: float) -> int:
    """Burn CPU in pure Python (a report computed row by row) until released or time's up."""
    deadline = time.monotonic() + seconds
    check = 0.0
    n = 0
    while time.monotonic() < deadline:
        for i in range(200000):
            n += i * i
        # The release file is looked at twice a second, not after every chunk: a stat gives the
        # GIL up, and four spinners waiting to take it back sat in released(), not in crunch.
        now = time.monotonic()
        if now >= check:
            check = now + 0.5
            if released():
                break
    return n


class Reports:
    @cherrypy.expose
    def index(self):
        return "reports"

    @cherrypy.expose
    def totals(self, seconds="30"):
        return str(crunch(min(float(seconds), 60.0)))

    @cherrypy.expose
    def export(self, seconds="30"):
        return fetch_all(min(float(seconds), 60.0))

    def summary(self):
        """Meant to be a page: the @cherrypy.expose was forgotten."""
        return "summary"


class Root:
    def __init__(self) -> None:
        self.reports = Reports()

    @cherrypy.expose
    def index(self):
        return "hello"

    @cherrypy.expose
    def fast(self, **params):
        return "fast"

    @cherrypy.expose
    def boom(self):
        raise ValueError("the export failed")

    @cherrypy.expose
    def release(self):
        RELEASE.set()
        return "released"

    @cherrypy.expose
    def rearm(self):
        RELEASE.clear()
        return "armed"


STATIC_FILES = {
    "app.js": "console.log('app');\n",
    "app.mjs": "export const x = 1;\n",
    "site.css": "body { margin: 0 }\n",
    "font.woff2": "wOF2-not-really\n",
}


def write_static(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, text in STATIC_FILES.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["incidents", "healthy"], default="incidents")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--static-dir", required=True)
    parser.add_argument("--release-file", default="")
    args = parser.parse_args()
    global RELEASE_FILE
    RELEASE_FILE = args.release_file
    HANG.bind(("127.0.0.1", 0))
    HANG.listen(64)
    write_static(args.static_dir)
    import cpinspect.agent  # noqa: F401 - registers the `inspector` config namespace

    settings = {
        "server.socket_host": "127.0.0.1",
        "server.socket_port": args.port,
        "server.thread_pool": args.threads,
        "server.socket_queue_size": 64,
        "checker.on": False,
        "inspector.on": True,
    }
    static = {
        "tools.staticdir.on": True,
        "tools.staticdir.dir": os.path.abspath(args.static_dir),
    }
    if args.stage == "healthy":
        settings.update({"engine.autoreload.on": False, "log.screen": True})
        app_config = {"/static": static}
    else:
        # CherryPy's defaults: the Autoreloader on, no environment; errors go nowhere.
        settings.update({"log.screen": False, "engine.autoreload.frequency": 3600})
        static["tools.staticdir.content_types"] = {
            "mjs": "text/plain",
            "woff2": "application/octet-stream",
        }
        app_config = {
            "/static": static,
            "/assets": {"tools.staticdir.on": True, "tools.staticdir.dir": "assets"},
            "/gone": {
                "tools.staticdir.on": True,
                "tools.staticdir.dir": os.path.join(os.path.abspath(args.static_dir), "gone"),
            },
        }
    cherrypy.config.update(settings)
    cherrypy.tree.mount(Root(), "", app_config)
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print("READY port=%d pid=%d" % (port, os.getpid()), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    sys.exit(main())
