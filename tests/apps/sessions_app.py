"""A CherryPy app with sessions: ``python -m tests.apps.sessions_app BACKEND [options]``.

BACKEND is one of ``ram``, ``file`` (``storage_class = FileSession`` + ``storage_path``),
``file-old`` (the older ``storage_type = "file"`` spelling), ``memcached`` (``--servers``),
``custom`` (a storage class with the ``cpinspect_sessions`` enumeration method) and
``custom-nolist`` (the same class without it). Prints ``READY port=<port> pid=<pid>`` once
serving with the agent installed.

- ``/login?user=U&secret=S`` puts ``user`` and ``secret`` in the session (the test knows both, and
  the session id from the Set-Cookie, so it can search the agent's answers for them);
- ``/slow`` holds the session lock (implicit locking: taken before the handler) until ``/release``
  or 60 s; two more requests with the same cookie (``/whoami``) then queue on the lock;
- ``/trap`` stores a value whose ``repr()`` blocks (until ``/release``, at most 30 s);
- ``--prefill N`` stores N RAM sessions of varied size at start (``bench/sessions_scale.py``);
- ``/fast`` answers at once without sessions (the request rate in the benchmark).
"""

import argparse
import datetime
import os
import random
import sys
import threading

import cherrypy
from cherrypy.lib import sessions

RELEASE = threading.Event()


class ListedStore(sessions.Session):
    """A custom storage class (not a RamSession subclass) that offers the enumeration method."""

    cache = {}
    locks = {}

    def _exists(self):
        return self.id in self.cache

    def _load(self):
        return self.cache.get(self.id)

    def _save(self, expiration_time):
        self.cache[self.id] = (self._data, expiration_time)

    def _delete(self):
        self.cache.pop(self.id, None)

    def acquire_lock(self):
        self.locked = True
        self.locks.setdefault(self.id, threading.RLock()).acquire()

    def release_lock(self):
        self.locks[self.id].release()
        self.locked = False

    @classmethod
    def cpinspect_sessions(cls):
        for sid, (data, expiration) in list(cls.cache.items()):
            yield sid, data, expiration


class UnlistedStore(ListedStore):
    """The same store with the enumeration method hidden: cannot be listed."""

    cache = {}
    locks = {}
    cpinspect_sessions = None


class SlowRepr:
    """A session value whose repr() blocks (bounded): the agent must not wait on the app's code."""

    def __repr__(self):
        RELEASE.wait(30)
        return "SlowRepr()"


class Root:
    @cherrypy.expose
    def index(self):
        return "hello"

    @cherrypy.expose
    def trap(self, **params):
        """Store a value whose repr() hangs: revealing this session runs it."""
        cherrypy.session["trap"] = SlowRepr()
        return "trapped"

    @cherrypy.expose
    def login(self, user="alice", secret="s3cret", **params):
        cherrypy.session["user"] = user
        cherrypy.session["secret"] = secret
        return "logged in %s" % user

    @cherrypy.expose
    def whoami(self, **params):
        return str(cherrypy.session.get("user"))

    @cherrypy.expose
    def slow(self, seconds="60", **params):
        """Touch the session (its lock is held from before_handler) and wait."""
        cherrypy.session["slow"] = True
        RELEASE.wait(min(float(seconds), 120.0))
        return "slow done"

    @cherrypy.expose
    def release(self, **params):
        RELEASE.set()
        return "released"

    @cherrypy.expose
    def rearm(self, **params):
        RELEASE.clear()
        return "armed"

    @cherrypy.expose
    def fast(self, **params):
        return "fast"

    @cherrypy.expose
    def cleanup(self, **params):
        """The store's clean-up now (what its thread does every clean_freq minutes): the
        expired sessions are deleted (``bench/sessions_scale.py``: a rebuild after deletions)."""
        cherrypy.session.clean_up()
        return "cleaned"


def prefill(count: int) -> None:
    rng = random.Random(10)
    now = datetime.datetime.now()
    cache = sessions.RamSession.cache
    for i in range(count):
        sid = "%040x" % rng.getrandbits(160)
        size = rng.choice((1, 1, 1, 2, 4, 8, 64))
        data = {"user": "user%d" % i, "cart": list(range(size * 4)), "note": "x" * (size * 16)}
        cache[sid] = (data, now + datetime.timedelta(seconds=rng.uniform(-600, 3600)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "backend", choices=["ram", "file", "file-old", "memcached", "custom", "custom-nolist"]
    )
    parser.add_argument("--path", help="storage path of the file backends")
    parser.add_argument("--servers", default="127.0.0.1:11211", help="memcached host:port")
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60, help="session timeout, minutes")
    parser.add_argument(
        "--second-app",
        default=None,
        help="also mount the root here with the same session config (one store for two apps, "
        "as CherryMusic mounts '/' and '/api/v1')",
    )
    args = parser.parse_args()

    conf = {"tools.sessions.on": True, "tools.sessions.timeout": args.timeout}
    if args.backend == "file":
        conf["tools.sessions.storage_class"] = sessions.FileSession
        conf["tools.sessions.storage_path"] = args.path
    elif args.backend == "file-old":
        conf["tools.sessions.storage_type"] = "file"
        conf["tools.sessions.storage_path"] = args.path
    elif args.backend == "memcached":
        conf["tools.sessions.storage_class"] = sessions.MemcachedSession
        conf["tools.sessions.servers"] = [args.servers]
    elif args.backend == "custom":
        conf["tools.sessions.storage_class"] = ListedStore
    elif args.backend == "custom-nolist":
        conf["tools.sessions.storage_class"] = UnlistedStore
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
    cherrypy.tree.mount(Root(), "", {"/": conf, "/fast": {"tools.sessions.on": False}})
    if args.second_app:
        cherrypy.tree.mount(Root(), args.second_app, {"/": dict(conf)})
    if args.prefill:
        prefill(args.prefill)
    import cpinspect.agent

    cherrypy.engine.start()
    cpinspect.agent.install()
    if args.prefill:
        # The agent hands free C-heap pages back (malloc_trim) after building a sessions index;
        # do it once here so that the prefill's own free heap is not counted as the agent's
        # saving by bench/sessions_scale.py (its baseline RSS is taken after this).
        import gc

        from cpinspect.agent.probes.sessions import release_free_memory

        gc.collect()
        release_free_memory()
    print("READY port=%d pid=%d" % (cherrypy.server.bound_addr[1], os.getpid()), flush=True)
    sys.stdout.flush()
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
