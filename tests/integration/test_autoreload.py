"""Invariant 2: the agent never makes CherryPy's Autoreloader restart the app."""

from __future__ import annotations

import time

import httpx

from tests.conftest import wait_for
from tests.helpers import agent_get

# The test app polls module files every 0.2 s; 10 periods is ample for a restart to show.
SETTLE = 2.0


def get(target, path: str) -> httpx.Response:
    return httpx.get("http://127.0.0.1:%d%s" % (target.port, path), timeout=10)


def test_install_serve_uninstall_with_autoreload_on_never_restarts(spawn_target):
    # GIVEN an app with the Autoreloader on (CherryPy's default) and no agent
    target = spawn_target("--autoreload", "--agent", "none")
    assert target.boots() == 1

    # WHEN the agent is installed at runtime, serves, and is uninstalled
    path = get(target, "/install_agent").text
    time.sleep(SETTLE)
    assert agent_get(path, "/v1/threads")[0] == 200
    assert agent_get(path, "/v1/info")[1]["engine"]["autoreload"] is True
    assert get(target, "/uninstall_agent").text == "uninstalled"
    time.sleep(SETTLE)

    # THEN the process never restarted
    assert target.proc.poll() is None
    assert target.boots() == 1, target.output()
    assert "Restarting because" not in target.output()


def test_agent_installed_by_config_with_autoreload_on_never_restarts(spawn_target):
    target = spawn_target("--autoreload", "--agent", "config")
    path = target.socket_path()
    for _ in range(5):
        assert agent_get(path, "/v1/threads")[0] == 200
    time.sleep(SETTLE)
    assert target.boots() == 1, target.output()
    wait_for(lambda: get(target, "/").status_code == 200, what="the app answering")
