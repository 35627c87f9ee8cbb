"""Injection into CherryPy targets on other Pythons than the inspector's (3.8 ... 3.13).

Each interpreter found (pyenv or PATH) gets a cached virtual environment with cherrypy, outside
the clone: ``~/.cache/cpinspect/targets/py3X``. In CI every one of them must be there: a missing
interpreter fails the test instead of skipping it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import httpx
import pytest

from cpinspect.attach.inject import Injector
from tests.conftest import IN_CI, wait_for
from tests.helpers import (
    BackgroundRequests,
    agent_get,
    assert_first_restart_is_the_touch,
    wait_for_frame,
    watched_module,
)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "cpinspect"
VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")


def find_interpreter(version: str) -> Optional[str]:
    pyenv = Path(os.path.expanduser("~/.pyenv/versions"))
    for candidate in sorted(pyenv.glob("%s.*/bin/python%s" % (version, version)), reverse=True):
        if subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    return shutil.which("python%s" % version)


def target_python(version: str) -> str:
    """A cached venv of ``version`` with cherrypy: built once, reused by later runs."""
    interpreter = find_interpreter(version)
    if interpreter is None:
        if IN_CI:
            pytest.fail("Python %s missing in CI: injection is claimed on 3.8 ... 3.13" % version)
        pytest.skip("Python %s not found (pyenv or PATH)" % version)
    venv = CACHE / "targets" / ("py" + version.replace(".", ""))
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import cherrypy"]
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Workers that need the same version (these files, test_locks.py) build it once, one at a
    # time: a second `venv --clear` would empty the first's half-built venv under it.
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
            return str(python)
        subprocess.run([interpreter, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "cherrypy"],
            check=True,
            timeout=300,
            capture_output=True,
        )
    return str(python)


# Half the versions here, half in test_inject_versions_newer.py: the suite runs a file on one
# worker (--dist loadfile), and at 20-35 s a version (more with a cold venv cache) one file of
# six was the run's longest piece.
OLDER, NEWER = VERSIONS[:3], VERSIONS[3:]


@pytest.mark.parametrize("version", OLDER)
def test_inject_inspect_detach_on_each_python(spawn_target, tmp_path, version):
    inject_inspect_detach(spawn_target, tmp_path, version)


def inject_inspect_detach(spawn_target, tmp_path: Path, version: str) -> None:
    # GIVEN a CherryPy target on this Python, without cpinspect code, a request in flight (its
    # handler frame seen by py-spy from outside)
    python = target_python(version)
    watched = watched_module(tmp_path)
    target = spawn_target(
        "--agent", "none", "--autoreload", "--engine-log", "--watch", str(watched), python=python
    )
    BackgroundRequests(target.port, "/block?seconds=20", 1)
    wait_for_frame(target.pid, "block")
    before = httpx.get("http://127.0.0.1:%d/debug_state" % target.port, timeout=10).json()

    # WHEN the agent is injected
    started = time.monotonic()
    result = Injector(target.pid).inject()
    assert result.endpoint is not None
    status, body = agent_get(result.endpoint.connect_path, "/v1/threads")
    print(
        "Python %s: gdb %.2f s, inject to first answer %.2f s"
        % (version, result.schedule_seconds, time.monotonic() - started)
    )

    # THEN it runs on the target's Python and shows the request that was already running
    assert status == 200 and result.status["python"].startswith(version + ".")
    busy = [t["request"] for t in body["threads"] if t["busy"]]
    assert [r["path"] for r in busy] == ["/block"], busy
    info = agent_get(result.endpoint.connect_path, "/v1/info")[1]
    assert busy[0]["source"] == "frame" and busy[0]["started_at"] < info["agent_installed_at"]
    # AND the routes walk and the resolver run on that Python too (signatures read from code
    # objects, whose fields differ between versions)
    status, routes = agent_get(result.endpoint.connect_path, "/v1/routes")
    assert status == 200 and routes["errors"] == [], routes["errors"]
    nodes = {n["path"]: n for app in routes["apps"] for n in app["nodes"]}
    assert nodes["/block"]["signature"] == "(self, seconds='60', **params)"
    status, res = agent_get(result.endpoint.connect_path, "/v1/resolve?path=/block%3Fseconds%3D1")
    assert status == 200 and res["verdict"]["kind"] == "handler", res

    # WHEN detached: it is gone, the app serves, __main__ is as it was, nothing restarted
    Injector(target.pid).detach()

    def clean() -> Optional[dict]:
        state = httpx.get("http://127.0.0.1:%d/debug_state" % target.port, timeout=10).json()
        return state if not [n for n in state["threads"] if n.startswith("cpinspect-")] else None

    after = wait_for(clean, what="the agent's threads to stop")
    assert isinstance(after, dict)
    assert after["hooks"] == 0 and after["main_globals"] == before["main_globals"]
    assert_first_restart_is_the_touch(target, watched)
