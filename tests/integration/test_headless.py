"""Headless commands (dump, snapshot, ps, routes, resolve, sessions, logs) run without the UI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

from tests.conftest import ROOT

UI = ("textual", "cpinspect.tui")

_RUN = (
    "import json, sys\n"
    "from cpinspect.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "ui = sorted(m for m in sys.modules if m.split('.')[0] == 'textual'"
    " or m.startswith('cpinspect.tui'))\n"
    "print('LOADED ' + json.dumps({'code': code, 'ui': ui}), file=sys.stderr)\n"
)


def _loaded(argv: List[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED "))
    return json.loads(line[len("LOADED ") :])


def test_headless_commands_on_a_live_target_never_import_the_ui(spawn_target, tmp_path: Path):
    # GIVEN a real CherryPy target with the agent
    target = spawn_target("--threads", "4")
    pid = str(target.pid)
    commands = [
        ["dump", pid],
        ["dump", pid, "--json"],
        ["snapshot", pid, "-o", str(tmp_path)],
        ["routes", pid],
        ["resolve", pid, "/"],
        ["ps", "--json"],
        ["sessions", pid],
        ["logs", pid, "--no-follow", "-n", "5"],
    ]
    for argv in commands:
        # WHEN each headless command runs to completion in a fresh interpreter
        out = _loaded(argv)
        # THEN it succeeded without loading any of Textual or our TUI
        assert out["code"] == 0, argv
        assert out["ui"] == [], argv
