"""A few inject/detach cycles while the app serves a load (bench/inject_soak.py does 50)."""

from __future__ import annotations

import threading
import time
from typing import List

import httpx
import psutil

from cpinspect.attach.inject import detach, inject
from tests.conftest import wait_for
from tests.helpers import agent_get

CYCLES = 3


class Load:
    """Keep-alive clients hitting `/` until stopped; every failure is kept."""

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failures: List[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test never stops it
        with httpx.Client(base_url="http://127.0.0.1:%d" % self.port, timeout=10) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = client.get("/")
                    if r.status_code == 200 and r.text == "hello":
                        self.ok += 1
                    else:
                        self.failures.append("status %d" % r.status_code)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_inject_detach_cycles_under_load_fail_no_request_and_leave_nothing(spawn_target):
    # GIVEN an app without the agent, serving a steady load, with its threads and fds counted
    target = spawn_target("--agent", "none", "--autoreload")
    proc = psutil.Process(target.pid)
    # (counted with no client connected: the load's own connections come and go with it)
    threads_before, fds_before = proc.num_threads(), proc.num_fds()
    load = Load(target.port)
    wait_for(lambda: load.ok > 50, what="the load running")

    # WHEN the agent is injected, used and detached a few times
    for _ in range(CYCLES):
        result = inject(target.pid)
        assert result.endpoint is not None
        status, body = agent_get(result.endpoint.connect_path, "/v1/threads")
        assert status == 200 and body["threads"]
        detach(target.pid)
    served_during = load.ok
    load.finish()

    # THEN no request failed, nothing restarted, and threads and fds are back where they were
    assert load.failures == []
    assert served_during > 50
    assert target.boots() == 1
    wait_for(lambda: proc.num_threads() == threads_before, what="the thread count back")
    wait_for(lambda: proc.num_fds() == fds_before, what="the open fds back")
