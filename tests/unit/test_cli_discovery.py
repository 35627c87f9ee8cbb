"""The discovery commands' wiring, with the process lister faked (no psutil, no processes)."""

from __future__ import annotations

import argparse
import json
from typing import List

import pytest

from cpinspect import cli
from cpinspect.attach import processes
from cpinspect.model import ProcessSummary
from cpinspect.tui.screens.picker import Pick

SHOP = ProcessSummary(pid=4121, user="www", cmdline=("python3", "shop.py"), ports=(8080,))


def test_ps_with_nothing_found_says_so_on_stderr_and_exits_0(monkeypatch, capsys) -> None:
    # GIVEN a machine without CherryPy processes
    monkeypatch.setattr(processes, "list_cherrypy_processes", lambda: [])
    # WHEN `cpinspect ps` runs
    code = cli.main(["ps"])
    # THEN stdout is empty, stderr says so, and the exit code is 0
    out, err = capsys.readouterr()
    assert code == 0
    assert out == ""
    assert err == "cpinspect: no CherryPy processes found\n"


def test_ps_json_is_a_list_of_processes(monkeypatch, capsys) -> None:
    monkeypatch.setattr(processes, "list_cherrypy_processes", lambda: [SHOP])
    assert cli.main(["ps", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["pid"], r["ports"], r["inspectable"]) for r in rows] == [(4121, [8080], True)]


def test_no_arguments_without_a_terminal_prints_help(capsys) -> None:
    # GIVEN stdin/stdout are not a terminal (pytest captures them)
    # WHEN cpinspect runs with no arguments
    code = cli.main([])
    # THEN it prints the usage and exits 2, as before the picker existed
    assert code == 2
    assert "usage: cpinspect" in capsys.readouterr().out


@pytest.mark.parametrize("picked", [Pick(4121), Pick(4121, inject=True), None])
def test_no_arguments_on_a_terminal_picks_then_attaches_like_attach_pid(
    monkeypatch, picked
) -> None:
    # GIVEN a terminal, and a picker that returns a pid (or nothing: the user quit)
    from cpinspect.cli import attach
    from cpinspect.tui.screens import picker

    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr(picker.PickerApp, "run", lambda self: picked)
    attached: List[argparse.Namespace] = []
    monkeypatch.setattr(attach, "run", lambda args: attached.append(args) or 0)
    # WHEN cpinspect runs with no arguments
    code = cli.main([])
    # THEN the chosen pid is attached exactly as `cpinspect attach PID` would be
    assert code == 0
    if picked is None:
        assert attached == []
    else:
        assert len(attached) == 1
        assert attached[0].pid == "4121" and attached[0].socket is None
        assert attached[0].inject is picked.inject  # the picker asked; attach --inject if yes
        reference = cli.build_parser().parse_args(["attach", "4121"])
        assert (attached[0].timeout, attached[0].interval) == (
            reference.timeout,
            reference.interval,
        )
