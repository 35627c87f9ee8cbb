"""The agent raises the switch interval only while it answers behind busy threads, and puts it back.

A real CherryPy target (this module run as ``python -m tests.agent.test_switch_interval``, below)
with the agent installed, asked over the agent's real socket. The target observes from inside:
its ``/v1/threads`` and a ``/v1/boom`` endpoint (which fails) note ``sys.getswitchinterval()``
while they run, and ``/seen`` (an app handler) reports those notes, the interval as an app
thread sees it between answers, and the server's counters. Spinners are CherryPy workers in a
pure-Python loop (``/spin``). No timing is asserted: only which interval was in force when.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from cpinspect.agent.server import _SwitchInterval
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = 0.005


# -- the target (run as a module) ----------------------------------------------------------


def _serve() -> None:  # pragma: no cover - runs in the target process
    import cherrypy

    from cpinspect.agent import install, installed

    notes: List[Dict[str, Any]] = []
    release = threading.Event()

    class Root:
        @cherrypy.expose
        def spin(self, seconds: str = "60") -> str:
            end = time.monotonic() + min(float(seconds), 120.0)
            n = 0
            while time.monotonic() < end and not release.is_set():
                n += 1
            return str(n)

        @cherrypy.expose
        @cherrypy.tools.json_out()
        def seen(self) -> Dict[str, Any]:
            agent = installed()
            assert agent is not None and agent.server is not None
            return {
                "notes": list(notes),
                "now": sys.getswitchinterval(),
                "stats": dict(agent.server._switch.stats),
            }

        @cherrypy.expose
        def release(self) -> str:
            release.set()
            return "released"

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 30,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
        }
    )
    cherrypy.tree.mount(Root(), "")
    path = install()
    agent = installed()
    assert agent is not None and agent.server is not None
    endpoints = agent.server.endpoints
    threads = endpoints["/v1/threads"]

    def noted_threads(query: Dict[str, List[str]]) -> Any:
        notes.append({"endpoint": "threads", "interval": sys.getswitchinterval()})
        return threads(query)

    def boom(query: Dict[str, List[str]]) -> Any:
        notes.append({"endpoint": "boom", "interval": sys.getswitchinterval()})
        raise RuntimeError("this answer fails")

    endpoints["/v1/threads"] = noted_threads
    endpoints["/v1/boom"] = boom
    cherrypy.engine.start()
    print("READY port=%d socket=%s" % (cherrypy.server.bound_addr[1], path), flush=True)
    cherrypy.engine.block()


# -- the tests ------------------------------------------------------------------------------


class Target:
    def __init__(self, proc: subprocess.Popen, port: int, sock: str) -> None:
        self.proc, self.port, self.sock = proc, port, sock
        self.held: List[socket.socket] = []

    def app(self, path: str, timeout: float = 60.0) -> bytes:
        with urllib.request.urlopen(
            "http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout
        ) as r:
            data: bytes = r.read()
        return data

    def seen(self) -> Dict[str, Any]:
        result: Dict[str, Any] = json.loads(self.app("/seen"))
        return result

    def agent(self, endpoint: str, timeout: float = 60.0) -> bytes:
        """One request on a fresh connection to the agent's socket; the status line."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.sock)
            s.sendall(b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n" % endpoint.encode())
            data = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        return data.split(b"\r\n", 1)[0]

    def spin(self, count: int) -> None:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=120)
            s.sendall(b"GET /spin?seconds=90 HTTP/1.1\r\nHost: x\r\n\r\n")
            self.held.append(s)

    def stop(self) -> None:
        for s in self.held:
            s.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    log = tmp_path / "target.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.agent.test_switch_interval"],
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def ready() -> Any:
        if proc.poll() is not None:
            raise RuntimeError("target exited:\n" + log.read_text(errors="replace"))
        text = log.read_text(errors="replace")
        return "READY" in text and text

    text = str(wait_for(ready, timeout=30, what="the target's READY line"))
    words = dict(w.split("=", 1) for w in text.split("READY", 1)[1].split() if "=" in w)
    t = Target(proc, int(words["port"]), words["socket"])
    try:
        yield t
    finally:
        t.stop()


def test_an_uncontended_process_never_sees_the_interval_change(target):
    # GIVEN a target whose threads are all idle
    # WHEN the agent answers full thread lists and a failing endpoint, one after the other
    for _ in range(4):
        assert target.agent("/v1/threads").startswith(b"HTTP/1.1 200 ")
        time.sleep(0.1)
    assert target.agent("/v1/boom").startswith(b"HTTP/1.1 500 ")
    seen = target.seen()
    # THEN every answer ran under the app's interval, and nothing was ever raised
    assert [n["interval"] for n in seen["notes"]] == [DEFAULT] * 5
    assert seen["now"] == DEFAULT
    assert seen["stats"]["raised"] == 0


def test_behind_spinners_an_answer_runs_raised_and_the_interval_comes_back(target):
    # GIVEN a target with 8 workers spinning in pure Python (every agent wake-up waits)
    target.spin(8)
    wait_for(lambda: target.seen()["notes"] == [], timeout=30, what="the app answering")
    time.sleep(1.0)  # the spinners reach their loop
    # WHEN the agent answers the threads a few times (the first wake-up shows the wait)
    raised: List[float] = []
    for _ in range(8):
        assert target.agent("/v1/threads").startswith(b"HTTP/1.1 200 ")
        raised = [n["interval"] for n in target.seen()["notes"] if n["interval"] > DEFAULT]
        if raised:
            break
    # ... and then an answer that fails
    assert target.agent("/v1/boom").startswith(b"HTTP/1.1 500 ")
    seen = target.seen()
    target.app("/release")
    # THEN an answer ran under a raised interval, bounded by the cap, the failing one too
    assert raised, seen
    assert max(raised) <= 0.1
    boom = [n for n in seen["notes"] if n["endpoint"] == "boom"]
    assert boom and boom[0]["interval"] > DEFAULT, seen
    # AND between answers the app's threads see the default again
    assert seen["now"] == DEFAULT
    assert seen["stats"]["raised"] >= 2


# -- the saved value, in this process (the real sys.setswitchinterval) ----------------------


@pytest.fixture
def interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    try:
        yield before
    finally:
        sys.setswitchinterval(before)


def test_the_last_of_two_overlapping_answers_puts_the_interval_back(interval):
    # GIVEN two handler threads' answers overlapping, both raised
    sw = _SwitchInterval()
    sw.target = 0.05
    first, second = sw.lift(), sw.lift()
    assert first == second == 0.05 and abs(sys.getswitchinterval() - 0.05) < 1e-6
    # WHEN the first one ends, THEN the interval stays raised for the second
    sw.drop(first)
    assert abs(sys.getswitchinterval() - 0.05) < 1e-6
    # WHEN the second ends, THEN the app's value is back
    sw.drop(second)
    assert sys.getswitchinterval() == interval


def test_a_value_the_app_set_meanwhile_is_kept(interval):
    # GIVEN an answer running raised
    sw = _SwitchInterval()
    sw.target = 0.05
    lifted = sw.lift()
    # WHEN the app sets its own interval while the answer waits for the GIL
    sys.setswitchinterval(0.002)
    sw.drop(lifted)
    # THEN the app's new value stands (not the one it replaced)
    assert sys.getswitchinterval() == 0.002
    assert sw.stats["kept_app_value"] == 1


def test_a_raise_to_a_value_not_whole_microseconds_is_put_back(interval):
    # GIVEN a raise to twice an answer's CPU, which CPython keeps in whole microseconds
    sw = _SwitchInterval()
    sw.target = 0.0234567891
    lifted = sw.lift()
    assert lifted and sys.getswitchinterval() != interval
    # WHEN the answer ends, THEN the app's value is back (not taken for one the app set)
    sw.drop(lifted)
    assert sys.getswitchinterval() == interval
    assert sw.stats["kept_app_value"] == 0


def test_an_app_interval_already_longer_is_left_alone(interval):
    sys.setswitchinterval(0.2)
    before = sys.getswitchinterval()
    sw = _SwitchInterval()
    sw.target = 0.05
    assert sw.lift() == 0.0
    assert sys.getswitchinterval() == before


if __name__ == "__main__":
    _serve()
