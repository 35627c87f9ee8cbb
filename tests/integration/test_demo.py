"""The bundled demo stages its incident, the agent sees it, and no child outlives its parent."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, List, Optional

import psutil
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.demo.runner import DemoFailed, DemoProcesses
from tests.conftest import ROOT, wait_for
from tests.helpers import agent_get

THREADS = 6


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie may wait for a pid 1 that never reaps)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(body: Optional[Dict[str, Any]]) -> str:
    """The part of a /v1/threads answer that explains a failed wait."""
    if body is None:
        return "no answer yet"
    rows = []
    for t in body["threads"]:
        if t["role"] == "worker":
            request = t["request"] or {}
            rows.append(f"{t['phase']} {request.get('method')} {request.get('path')}")
    return f"pools={body['pools']!r} workers={rows!r}"


def test_demo_reaches_a_starved_pool_seen_by_the_agent() -> None:
    # GIVEN the demo app with its load generator
    with DemoProcesses(threads=THREADS, duration=120) as demo:
        children = [psutil.Process(p.pid) for p in demo.children()]
        assert len(children) == 2 and all(alive(p) for p in children)
        socket_path = find_agent(demo.pid).connect_path
        last: List[Optional[Dict[str, Any]]] = [None]

        def starved() -> bool:
            _, body = agent_get(socket_path, "/v1/threads", timeout=2.0)
            last[0] = body
            pool = body["pools"][0]
            workers = [t for t in body["threads"] if t["role"] == "worker"]
            paths = {t["request"]["path"] for t in workers if t["request"]}
            reading = [t for t in workers if t["phase"] == "reading"]
            return (
                pool["size"] == THREADS
                and pool["busy"] == THREADS
                and pool["queued"] > 0
                and len(workers) == THREADS
                and all(t["busy"] for t in workers)
                and {"/reports/export", "/cart/add"} <= paths
                and any(t["request"] and t["request"]["path"] == "/upload" for t in reading)
            )

        # WHEN the incident has had a few seconds to build (generous: the machine is shared)
        try:
            wait_for(starved, timeout=30, interval=0.2, what="every worker busy, queue > 0")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {describe(last[0])}") from None

        # THEN the agent shows every worker busy, connections queued, and where each one waits
        body = last[0]
        assert body is not None
        workers = [t for t in body["threads"] if t["role"] == "worker"]
        exports = [t for t in workers if t["request"]["path"] == "/reports/export"]
        carts = [t for t in workers if t["request"]["path"] == "/cart/add"]
        assert exports and carts
        for t in exports:
            app_functions = [f["function"] for f in t["stack"] if f["app"]]
            # Blocked in the database read, called from the report handler.
            assert app_functions[:3] == ["fetchall", "fetch_all", "export"], app_functions
            assert t["request"]["method"] == "GET"
            assert t["request"]["query"].startswith("year=")
        for t in carts:
            app_functions = [f["function"] for f in t["stack"] if f["app"]]
            # Either holding the stock lock (in the database) or queued on it (in Cart.add).
            assert app_functions[0] in ("fetchall", "add"), app_functions
            assert "add" in app_functions
            assert t["request"]["method"] == "POST"
        assert body["pools"][0]["queued"] > 0

    # AND once stopped, no child process is left
    _gone, still_alive = psutil.wait_procs(children, timeout=5)
    assert not [p for p in still_alive if alive(p)]
    assert not any(alive(p) for p in children)


_KILLED_PARENT = textwrap.dedent(
    """
    import sys, time
    from cpinspect.demo.runner import DemoProcesses
    demo = DemoProcesses(threads=4, duration=60).start()
    print("STARTED %d %d %s" % (demo.app_process.pid, demo.load_process.pid, demo.log_dir),
          flush=True)
    time.sleep(60)  # bounded: the test SIGKILLs us long before
    """
)


def test_killing_the_parent_leaves_no_orphans() -> None:
    # GIVEN a process that started the demo (app + load) and is then SIGKILLed: no finally,
    # no atexit can run in it
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    parent = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd=str(ROOT),
        env=env,
    )
    children: List[psutil.Process] = []
    log_dir = ""
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        line = parent.stdout.readline().decode() if ready else ""
        assert line.startswith("STARTED "), f"the parent did not start the demo: {line!r}"
        *pids, log_dir = line.split()[1:]
        children = [psutil.Process(int(pid)) for pid in pids]
        assert all(alive(p) for p in children)

        # WHEN the parent is killed outright
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)

        # THEN the kernel's parent-death signal stops every child within a few seconds
        wait_for(
            lambda: not any(alive(p) for p in children),
            timeout=15,
            interval=0.1,
            what="the demo's children to exit after their parent was killed",
        )
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for p in children:  # never leave strays behind, even when the test fails
            if alive(p):
                p.kill()
        if log_dir.startswith(tempfile.gettempdir()):  # the killed parent could not remove it
            shutil.rmtree(log_dir, ignore_errors=True)


def test_a_demo_app_that_cannot_start_is_one_clear_error() -> None:
    # GIVEN a pool size the demo app refuses
    demo = DemoProcesses(threads=0, load=True)

    # WHEN it is started
    with pytest.raises(DemoFailed) as info:
        demo.start()

    # THEN the error is one line quoting the app's own complaint (its exit seen, not a READY
    # deadline passing), and nothing is left running
    message = str(info.value)
    assert "exited with code 2" in message
    assert "--threads must be between 1 and 64" in message
    assert "\n" not in message
    assert demo.load_process is None
    assert demo.app_process is not None and demo.app_process.poll() is not None
    # AND the logs it points at are kept for the user (removed here: a test leaves nothing)
    assert os.path.isfile(os.path.join(demo.log_dir, "app.log"))
    shutil.rmtree(demo.log_dir)
