"""A CherryPy app whose requests contend on locks: ``python -m tests.apps.locks_app [--threads N]``.

Prints ``READY port=<port> pid=<pid>`` once serving with the agent installed. Runs on Python
3.8 ... 3.13 (the lock probe reads each version's bytecode). Each handler waits on its gate
(``/release?gate=NAME`` opens it, ``/rearm?gate=NAME`` closes it again; 60 s at most):

- ``/transfer?gate=G``: ``with LEDGER_LOCK:`` (a module-level ``threading.Lock``) around the
  wait: the first request holds it, the next ones wait at the same line;
- ``/audit?gate=G``: ``with self.lock:`` on an ``RLock`` (its owner is known);
- ``/account?gate=G``: ``x.lock.acquire()`` without ``with`` (its holder leaves no trace);
- ``/quiet?gate=G``: ``with QUIET_LOCK:`` held by one request that nobody else wants;
- ``/fast``: answers at once.
"""

import argparse
import os
import sys
import threading

import cherrypy

LEDGER_LOCK = threading.Lock()
QUIET_LOCK = threading.Lock()
_GATES = {}  # type: dict
_GATES_LOCK = threading.Lock()


def gate_of(name):
    with _GATES_LOCK:
        event = _GATES.get(name)
        if event is None:
            event = _GATES[name] = threading.Event()
        return event


class Account:
    def __init__(self):
        self.lock = threading.Lock()


class Root:
    def __init__(self):
        self.lock = threading.RLock()
        self.books = Account()

    @cherrypy.expose
    def transfer(self, gate="ledger", **params):
        with LEDGER_LOCK:
            gate_of(gate).wait(60)
        return "transferred"

    @cherrypy.expose
    def audit(self, gate="audit", **params):
        with self.lock:
            gate_of(gate).wait(60)
        return "audited"

    @cherrypy.expose
    def account(self, gate="account", **params):
        x = self.books
        x.lock.acquire()
        try:
            gate_of(gate).wait(60)
        finally:
            x.lock.release()
        return "accounted"

    @cherrypy.expose
    def quiet(self, gate="quiet", **params):
        with QUIET_LOCK:
            gate_of(gate).wait(60)
        return "quiet"

    @cherrypy.expose
    def release(self, gate="ledger", **params):
        gate_of(gate).set()
        return "released"

    @cherrypy.expose
    def rearm(self, gate="ledger", **params):
        gate_of(gate).clear()
        return "armed"

    @cherrypy.expose
    def fast(self, **params):
        return "fast"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=12)
    args = parser.parse_args()
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": args.threads,
            "engine.autoreload.on": False,
            "log.screen": False,
            "checker.on": False,
        }
    )
    cherrypy.tree.mount(Root(), "")
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    sys.stdout.flush()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
