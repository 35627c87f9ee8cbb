"""Invariant 2: the agent never makes CherryPy's Autoreloader restart the app.

A restart is seen by the target's own BOOT lines (the Autoreloader re-execs in place: same pid,
BOOT printed again) and the engine log's "Restarting because <file> changed."; every test ends
with the positive control: touching a watched module does restart it, and that is the first and
only restart.
"""

from __future__ import annotations

import httpx

from tests.helpers import agent_get, assert_first_restart_is_the_touch, watched_module


def get(target, path: str) -> httpx.Response:
    return httpx.get("http://127.0.0.1:%d%s" % (target.port, path), timeout=10)


def autoreloading_target(spawn_target, tmp_path, *args: str):
    watched = watched_module(tmp_path)
    target = spawn_target("--autoreload", "--engine-log", "--watch", str(watched), *args)
    return target, watched


def test_a_touched_module_is_seen_as_a_restart(spawn_target, tmp_path):
    # GIVEN an app with the Autoreloader on and no agent  WHEN a module it imported changes
    # THEN the restart shows (the detector used by the tests below can fail)
    target, watched = autoreloading_target(spawn_target, tmp_path, "--agent", "none")
    assert_first_restart_is_the_touch(target, watched)


def test_install_serve_uninstall_with_autoreload_on_never_restarts(spawn_target, tmp_path):
    # GIVEN an app with the Autoreloader on (CherryPy's default) and no agent
    target, watched = autoreloading_target(spawn_target, tmp_path, "--agent", "none")

    # WHEN the agent is installed at runtime, serves, and is uninstalled
    path = get(target, "/install_agent").text
    assert agent_get(path, "/v1/threads")[0] == 200
    assert agent_get(path, "/v1/info")[1]["engine"]["autoreload"] is True
    assert get(target, "/uninstall_agent").text == "uninstalled"

    # THEN the process never restarted: the first restart is the one the touch causes
    assert_first_restart_is_the_touch(target, watched)


def test_agent_installed_by_config_with_autoreload_on_never_restarts(spawn_target, tmp_path):
    target, watched = autoreloading_target(spawn_target, tmp_path, "--agent", "config")
    path = target.socket_path()
    for _ in range(5):
        assert agent_get(path, "/v1/threads")[0] == 200
    assert get(target, "/").status_code == 200
    assert_first_restart_is_the_touch(target, watched)
