"""Discovery on real processes: `cpinspect ps`, attaching by port, other users' processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from cpinspect.attach.processes import ProcessLister, find_by_port, list_cherrypy_processes
from cpinspect.errors import NoSuchProcess
from cpinspect.model import ProcessSummary, SourceKind
from cpinspect.sources.open import open_session, parse_pid
from tests.helpers import run_as, run_cli


def by_pid(rows: List[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    return {row["pid"]: row for row in rows}


@pytest.fixture
def plain_python():
    """A Python process that is not CherryPy (it only sleeps)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_ps_lists_both_targets_with_ports_and_agent_but_not_plain_python(
    spawn_target, plain_python
):
    # GIVEN a target with the agent, one without, and a Python process that is not CherryPy
    with_agent = spawn_target("--agent", "config", "--threads", "3")
    without = spawn_target("--agent", "none")
    # WHEN `cpinspect ps --json` runs
    result = run_cli("ps", "--json")
    # THEN both targets are listed with their port; the agent's with its apps and pool
    assert result.returncode == 0, result.stderr
    rows = by_pid(json.loads(result.stdout))
    assert rows[with_agent.pid]["ports"] == [with_agent.port]
    assert rows[with_agent.pid]["agent"] is True
    assert rows[with_agent.pid]["apps"] == [""]
    assert rows[with_agent.pid]["busy"] == 0
    assert rows[with_agent.pid]["size"] == 3
    assert rows[without.pid]["ports"] == [without.port]
    assert rows[without.pid]["agent"] is False
    assert rows[without.pid]["busy"] is None
    for row in (rows[with_agent.pid], rows[without.pid]):
        assert row["inspectable"] and row["cherrypy"] and row["reason"] is None
        assert row["user"] == "root" if os.geteuid() == 0 else row["user"]
        assert row["rss"] > 1_000_000 and row["uptime"] >= 0 and row["cpu_percent"] >= 0
    # AND the plain Python process is not
    assert plain_python.pid not in rows


def test_ps_table_shows_agent_yes_and_no(spawn_target):
    # GIVEN a target with the agent and one without
    with_agent = spawn_target("--agent", "config")
    without = spawn_target("--agent", "none")
    # WHEN `cpinspect ps` prints its table
    result = run_cli("ps")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    # THEN each target has a line with its port and whether the agent is loaded
    assert str(with_agent.port) in lines[str(with_agent.pid)]
    assert " yes " in lines[str(with_agent.pid)]
    assert lines[str(with_agent.pid)].split()[-1] == "0/4"
    assert " no " in lines[str(without.pid)]
    assert result.stdout.splitlines()[0].startswith("PID")


def test_a_refresh_reuses_the_pyspy_verdict(spawn_target):
    # GIVEN a target without the agent, listed once
    target = spawn_target("--agent", "none")
    lister = ProcessLister()
    first = {s.pid: s for s in lister.list()}
    assert first[target.pid].cherrypy
    # WHEN it is listed again by the same lister
    key = next(k for k in lister._verdicts if k[0] == target.pid)
    # THEN the verdict comes from the cache (keyed by pid and start time) and still holds
    assert lister._verdicts[key].cherrypy
    again = {s.pid: s for s in lister.list()}
    assert again[target.pid].cherrypy and not again[target.pid].agent


def test_attach_and_dump_by_port(spawn_target):
    # GIVEN a target with the agent and one without
    with_agent = spawn_target("--agent", "config")
    without = spawn_target("--agent", "none")
    # WHEN the targets are named by port
    # THEN the port resolves to the pid, and attach's connection reaches the agent
    assert find_by_port(with_agent.port) == with_agent.pid
    assert parse_pid(":%d" % without.port) == without.pid
    opened = open_session(":%d" % with_agent.port, timeout=2.0)
    try:
        assert opened.kind is SourceKind.AGENT and opened.pid == with_agent.pid
        assert opened.session.poll().info.pid == with_agent.pid
    finally:
        opened.session.close()
    # AND `dump :PORT` works with the agent and through py-spy without it
    for target in (with_agent, without):
        result = run_cli("dump", ":%d" % target.port)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Process %d:" % target.pid)


def test_nothing_on_the_port_is_one_line_with_exit_3():
    # GIVEN a port nobody listens on (bound and closed by us, so it is free)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NoSuchProcess):
        find_by_port(port)
    # WHEN attach is given it
    result = run_cli("attach", ":%d" % port)
    # THEN one line says so, with exit code 3
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "cpinspect: nothing listens on TCP port %d; `cpinspect ps` lists the CherryPy processes"
        % port
    )


def _list_as(pw) -> List[ProcessSummary]:
    """What user ``pw`` sees when listing the processes."""
    return run_as(pw, list_cherrypy_processes)


def test_another_users_process_is_listed_with_the_reason(spawn_target, other_user):
    # GIVEN a CherryPy target owned by root, and the lister running as an unprivileged user
    # (the lister is forked after its modules are loaded: root's interpreter is not readable
    # by that user, so it cannot be exec'd as them)
    target = spawn_target("--agent", "config")
    # WHEN that user lists the processes
    rows = {s.pid: s for s in _list_as(other_user)}
    # THEN the target is there, not hidden, marked "maybe" with what it takes to inspect it
    seen = rows[target.pid]
    assert not seen.inspectable
    assert not seen.cherrypy
    assert seen.reason == "owned by root: run as root"
    assert seen.user == "root"


async def test_picker_on_the_real_machine_opens_the_chosen_target(spawn_target):
    # GIVEN a real target without the agent, and the picker over the real lister
    from cpinspect.tui.screens.picker import Pick, PickerApp
    from tests.tui.helpers import wait_until

    target = spawn_target("--agent", "none")
    app = PickerApp(ProcessLister())
    async with app.run_test(size=(160, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings >= 1, timeout=20, what="the listing")
        # WHEN the user filters by the target's port, presses Enter twice, and y to load the agent
        await pilot.press("slash", *str(target.port), "enter", "enter")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    # THEN the picker returns that target's pid, with the agent to be loaded
    assert app.return_value == Pick(target.pid, inject=True)
