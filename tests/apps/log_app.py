"""A CherryPy app that logs in every way CherryPy can: ``python -m tests.apps.log_app [options]``.

Prints ``READY port=<port> pid=<pid>`` once serving. Handlers raise, log with and without
tracebacks (as ``exc_info`` and as text), log huge or broken messages, hold a worker while a
test reads ``/v1/threads``, and mount a late app whose loggers do not propagate. Nothing here
needs the inspector to run (``--agent none`` leaves the agent out entirely).
"""

import argparse
import logging
import os
import sys
import threading
import time

import cherrypy

RELEASE = threading.Event()


class BadText:
    """A message object whose ``str()`` raises: logging's ``getMessage`` fails on it."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class Late:
    @cherrypy.expose
    def index(self):
        return "late"

    @cherrypy.expose
    def boom(self):
        raise KeyError("late-boom")

    @cherrypy.expose
    def say(self, msg="late"):
        cherrypy.log(msg)
        return "said"


class Root:
    @cherrypy.expose
    def index(self):
        return "hello"

    @cherrypy.expose
    def boom(self, marker="boom"):
        """An unhandled exception: a 500 and an ERROR record with exc_info."""
        raise ValueError("handler failed: %s" % marker)

    @cherrypy.expose
    def http_error(self):
        raise cherrypy.HTTPError(503, "not now")

    @cherrypy.expose
    def say(self, msg="hello", level="20"):
        cherrypy.log(msg, severity=int(level))
        return "said"

    @cherrypy.expose
    def say_tb(self, msg="no exception here"):
        """``traceback=True`` with no exception active: exc_info is (None, None, None)."""
        cherrypy.log(msg, traceback=True)
        return "said"

    @cherrypy.expose
    def caught(self, marker="caught"):
        """``traceback=True`` inside ``except``: a chained exception with exc_info."""
        try:
            try:
                {}["missing"]
            except KeyError as exc:
                raise ValueError("wrapped: %s" % marker) from exc
        except ValueError:
            cherrypy.log("caught it: %s" % marker, severity=40, traceback=True)
        return "caught"

    @cherrypy.expose
    def text_tb(self, marker="text"):
        """The bus appends the traceback to the message as text (no exc_info)."""
        try:
            raise OSError("disk on fire: %s" % marker)
        except OSError:
            cherrypy.engine.log("bus saw an error: %s" % marker, level=40, traceback=True)
        return "logged"

    @cherrypy.expose
    def huge(self, n="100000"):
        cherrypy.log("x" * int(n))
        return "huge"

    @cherrypy.expose
    def app_logger(self, msg="app", level="40"):
        """A record of the app's own logger, which does not pass through CherryPy's."""
        logging.getLogger("shop.payments").log(int(level), msg)
        return "logged"

    @cherrypy.expose
    def many(self, n="100", **params):
        for i in range(int(n)):
            cherrypy.log("many %d" % i)
        return "many"

    @cherrypy.expose
    def bad_message(self):
        """A message whose str() raises, and %-args that do not fit: the request still works."""
        log = cherrypy.request.app.log.error_log
        log.error(BadText())
        log.error("%s and %s", "only one")
        return "still fine"

    @cherrypy.expose
    def hold(self, seconds="20", marker="hold"):
        """Log, hold this worker until released (bounded), log again."""
        cherrypy.log("holding: %s" % marker)
        RELEASE.wait(min(float(seconds), 60.0))
        RELEASE.clear()
        cherrypy.log("held: %s" % marker)
        return "released"

    @cherrypy.expose
    def stream(self, seconds="1", marker="stream"):
        """A body sent after the access line: CherryPy logs the access record when the handler
        returns, and the server then sends the chunks (a served file, a music stream)."""
        cherrypy.response.stream = True
        chunks = 10
        pause = min(float(seconds), 30.0) / chunks

        def body():
            for i in range(chunks):
                time.sleep(pause)
                yield ("%s %d\n" % (marker, i)).encode()

        return body()

    @cherrypy.expose
    def release(self):
        RELEASE.set()
        return "ok"

    @cherrypy.expose
    def reset_logging(self):
        """Replace the global error logger's handlers, as logging.config.dictConfig would."""
        logger = logging.getLogger("cherrypy.error")
        logger.handlers = [h for h in logger.handlers if type(h).__name__ == "NullHandler"]
        return "reset"

    @cherrypy.expose
    def mount_late(self):
        """Mount ``/late`` now, after the agent: its loggers do not propagate."""
        if "/late" not in cherrypy.tree.apps:
            app = cherrypy.tree.mount(Late(), "/late")
            app.log.error_log.propagate = False
            app.log.access_log.propagate = False
        return "mounted"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", choices=["config", "none"], default="config")
    parser.add_argument("--capacity", default=None, help="inspector.log_capacity")
    parser.add_argument("--no-access", action="store_true", help="inspector.log_access = False")
    parser.add_argument("--error-file", default="")
    parser.add_argument("--access-file", default="")
    parser.add_argument("--screen", action="store_true")
    parser.add_argument("--root-handler", action="store_true", help="logging.basicConfig()")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    if args.root_handler:
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
    settings = {
        "server.socket_host": "127.0.0.1",
        "server.socket_port": 0,
        "server.thread_pool": args.threads,
        "log.screen": args.screen,
        "log.error_file": args.error_file,
        "log.access_file": args.access_file,
        "checker.on": False,
        "engine.autoreload.on": False,
    }
    cherrypy.config.update(settings)
    if args.agent == "config":
        import cpinspect.agent  # noqa: F401 - registers the `inspector` config namespace

        conf = {"inspector.on": True}
        if args.capacity is not None:
            conf["inspector.log_capacity"] = args.capacity
        if args.no_access:
            conf["inspector.log_access"] = False
        cherrypy.config.update(conf)
    cherrypy.tree.mount(Root(), "")
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    print("READY port=%d pid=%d" % (port, os.getpid()), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    sys.exit(main())
