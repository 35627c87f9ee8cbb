"""Installing and removing the agent in real CherryPy processes."""

from __future__ import annotations

import os
import stat

import httpx
import pytest

from tests.conftest import wait_for
from tests.helpers import BackgroundRequests, agent_get, http_answers


def get(target, path: str):
    return httpx.get("http://127.0.0.1:%d%s" % (target.port, path), timeout=10)


@pytest.mark.parametrize("mode", ["config", "install-before", "install-after"])
def test_agent_serves_however_it_was_installed(spawn_target, mode):
    # GIVEN an app whose agent was installed by config, before or after engine.start()
    target = spawn_target("--agent", mode)
    # WHEN the inspector finds its socket from the pid and asks for info
    status, info = agent_get(target.socket_path(), "/v1/info")
    # THEN it describes the process
    assert status == 200
    assert info["pid"] == target.pid
    assert info["engine"]["state"] == "STARTED"
    assert info["servers"][0]["bind"] == "127.0.0.1:%d" % target.port
    assert info["servers"][0]["pool_size"] == 4
    assert info["apps"] == [{"script_name": "", "root": "__main__.Root", "kind": "cherrypy"}]
    assert info["cherrypy"] and info["cheroot"] and info["python"]
    assert any("tests.apps.target" in a for a in info["cmdline"])


def test_uninstall_removes_hooks_threads_and_socket_and_install_twice_is_harmless(spawn_target):
    # GIVEN an app with the agent installed by config
    target = spawn_target("--agent", "config")
    path = target.socket_path()
    before = get(target, "/debug_state").json()
    assert before["hooks"] == 2 and before["listeners"] == 2
    agent_threads = [n for n in before["threads"] if n.startswith("cpinspect-")]
    assert agent_threads

    # WHEN install() is called again
    again = get(target, "/install_agent").text
    # THEN it is the same agent: same socket, no second set of threads or hooks
    assert again == path
    twice = get(target, "/debug_state").json()
    assert twice["hooks"] == 2 and twice["listeners"] == 2
    assert [n for n in twice["threads"] if n.startswith("cpinspect-")] == agent_threads

    # WHEN it is uninstalled
    assert get(target, "/uninstall_agent").text == "uninstalled"
    # THEN hooks, plugin listeners, threads and the socket file are gone, and the app serves
    after = wait_for(
        lambda: (
            lambda s: s if not [n for n in s["threads"] if n.startswith("cpinspect-")] else None
        )(get(target, "/debug_state").json()),
        what="agent threads to stop",
    )
    assert after["hooks"] == 0 and after["listeners"] == 0
    assert not os.path.exists(path)
    assert http_answers(target.port, "/")


def test_custom_socket_path_is_private_and_discoverable(spawn_target, short_tmp):
    # GIVEN inspector.socket pointing into a directory of ours
    path = str(short_tmp / "app.sock")
    target = spawn_target("--agent", "config", "--socket", path)
    # THEN the socket is there with mode 0600 and discovery by pid finds it
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert target.socket_path() == path
    assert agent_get(path, "/v1/threads")[0] == 200
    assert not [p for p in os.listdir(short_tmp) if p.startswith(".cpinspect-bind-")]


def test_without_cheroot_threads_and_stacks_still_work(spawn_target):
    # GIVEN the app served by the stdlib's wsgiref server (no cheroot pool), one request blocked
    target = spawn_target("--server", "wsgiref", "--agent", "install-before")
    BackgroundRequests(target.port, "/block?seconds=30", 1)

    def blocked():
        _, body = agent_get(target.socket_path(), "/v1/threads")
        busy = [t for t in body["threads"] if t["busy"]]
        return body if busy else None

    # WHEN threads are asked for
    body = wait_for(blocked, what="the blocked request")
    # THEN pool numbers are marked unavailable, the request and its stack are there
    assert body["pools"] == [] and body["pools_available"] is False
    assert body["pools_note"]
    busy = [t for t in body["threads"] if t["busy"]]
    assert busy[0]["request"]["path"] == "/block"
    assert next(f for f in busy[0]["stack"] if f["app"])["function"] == "block"
