"""A CherryPy app shaped like rdiffweb 2.4: ``python -m tests.apps.filesession_app PATH [options]``.

What the real app does and this one imitates:

- file sessions (``tools.sessions.storage_class = FileSession``, ``storage_path`` = PATH) with
  CherryPy's default implicit locking: the session is locked at ``before_handler`` and stays
  locked until the request ends, so one user's slow download holds up every other request of
  that user, each waiting in ``FileSession.acquire_lock`` (inside ``HookMap.run``);
- its own login tool (``tools.auth_form``, a ``before_handler`` hook as rdiffweb's): a request
  without ``_cp_username`` in its session is redirected to ``/login``;
- the log set up as rdiffweb's ``main._setup_logging`` does: ``log.screen`` off, no
  ``log.error_file``, a handler of the app's own on the root logger writing to ``--log-file`` in
  the app's format (``[2026-12-03 14:39:55,045][ERROR  ][...] message``), the stdout redirect
  holding one line.

``POST /login`` (``login``, ``password``) stores the user in the session; ``GET /restore``
holds its worker (and the session's lock) until ``GET /release`` (or ``--hold`` seconds, 60);
``GET /page`` is a plain page of a logged-in user; ``GET /boom`` raises. ``--clean-freq`` sets
``tools.sessions.clean_freq`` (minutes). ``--agent none`` starts it without cpinspect's agent
(for ``cpinspect inject``). Prints ``READY port=<port> pid=<pid>`` once serving.
"""

import argparse
import logging
import logging.handlers
import os
import sys
import threading

import cherrypy
from cherrypy.lib import sessions

RELEASE = threading.Event()
HOLD = [60.0]


def auth_form():
    """rdiffweb's login form tool, reduced: anonymous requests go to /login."""
    request = cherrypy.serving.request
    if request.path_info.startswith(("/login", "/release")):
        return
    if not cherrypy.session.get("_cp_username"):
        raise cherrypy.HTTPRedirect("/login")


cherrypy.tools.auth_form = cherrypy.Tool("before_handler", auth_form, priority=71)


class Root:
    @cherrypy.expose
    def index(self):
        return "home of %s" % cherrypy.session.get("_cp_username")

    @cherrypy.expose
    def login(self, login="", password=""):
        if cherrypy.request.method == "POST" and login:
            cherrypy.session["_cp_username"] = login
            raise cherrypy.HTTPRedirect("/")
        return "login form"

    @cherrypy.expose
    def page(self):
        return "page of %s" % cherrypy.session.get("_cp_username")

    @cherrypy.expose
    def restore(self):
        RELEASE.wait(HOLD[0])
        return "restored"

    @cherrypy.expose
    def release(self):
        RELEASE.set()
        return "released"

    @cherrypy.expose
    def boom(self):
        raise ValueError("restore failed")


def setup_logging(log_file: str) -> None:
    """As rdiffweb's main._setup_logging: the app's own handler on the root logger."""
    cherrypy.config.update({"log.screen": False, "log.access_file": "", "log.error_file": ""})
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=10485760, backupCount=20)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s][%(levelname)-7s][%(threadName)s][%(name)s] %(message)s")
    )
    root = logging.getLogger("")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    error = logging.getLogger("cherrypy.error")
    error.propagate = False
    error.addHandler(handler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", help="the sessions' storage path")
    parser.add_argument("--agent", choices=["installed", "none"], default="installed")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--clean-freq", type=float, default=5, help="minutes")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--hold", type=float, default=60, help="seconds GET /restore waits")
    args = parser.parse_args()
    HOLD[0] = args.hold

    print("continue logging to %s" % args.log_file, flush=True)
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": args.threads,
            "engine.autoreload.on": False,
            "checker.on": False,
        }
    )
    if args.log_file:
        setup_logging(args.log_file)
    else:
        cherrypy.config.update({"log.screen": False})
    conf = {
        "tools.sessions.on": True,
        "tools.sessions.storage_class": sessions.FileSession,
        "tools.sessions.storage_path": args.path,
        "tools.sessions.httponly": True,
        "tools.sessions.clean_freq": args.clean_freq,
        "tools.auth_form.on": True,
    }
    cherrypy.tree.mount(Root(), "", {"/": conf})
    cherrypy.engine.start()
    if args.agent == "installed":
        import cpinspect.agent

        cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    sys.stdout.flush()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
