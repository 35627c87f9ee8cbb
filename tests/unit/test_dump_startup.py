"""``dump`` starts py-spy before its imports (issue 13): the command it starts early must be
the one the session's py-spy reader runs, or the reader would not adopt it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cpinspect.cli.common import one_shot_grace
from cpinspect.cli.dump import early_pyspy_command
from cpinspect.cli.early import guess_pid
from cpinspect.errors import PySpyMissing
from cpinspect.sources.pyspy import PySpySource, find_pyspy

ROOT = Path(__file__).resolve().parents[2]


def args(pid: str = "4121", **changes: object) -> argparse.Namespace:
    values = {"pid": pid, "socket": None, "native": False, "locals": False, "json": True}
    values.update(changes)
    return argparse.Namespace(**values)


def test_the_early_command_is_the_readers_command() -> None:
    # GIVEN py-spy installed beside the inspector
    try:
        executable = find_pyspy()
    except PySpyMissing:
        pytest.skip("py-spy is not installed here")
    # WHEN dump by pid starts py-spy early
    early = early_pyspy_command(args())
    # THEN it is what the reader of the agent session runs for the GIL holder (no locals)
    reader = PySpySource(4121, executable=executable)
    reader.requests = False
    assert early == reader.command(with_locals=False, native=False)


@pytest.mark.parametrize(
    "changes",
    [{"native": True}, {"locals": True}, {"socket": "/tmp/x.sock"}, {"pid": ":8080"}],
)
def test_no_early_py_spy_when_the_command_would_differ(changes: dict) -> None:
    # GIVEN options that need another py-spy command, or no pid yet THEN nothing starts early
    assert early_pyspy_command(args(**changes)) is None


@pytest.mark.parametrize(
    ("words", "pid"),
    [
        (["dump", "4121", "--json"], 4121),
        (["dump", "--json", "4121"], 4121),
        (["dump", "--timeout", "5", "4121"], 4121),
        (["dump", "--timeout=5", "4121"], 4121),
        (["snapshot", "-o", "/tmp/77", "4121", "--count", "1"], 4121),
        (["snapshot", "4121", "--no-routes", "--reveal"], 4121),
        (["dump", "4121", "--native"], None),
        (["dump", "4121", "--nat"], None),  # argparse takes a prefix for the option
        (["dump", "4121", "--locals"], None),
        (["dump", "--socket", "/tmp/a.sock"], None),
        (["dump", "4121", "-h"], None),
        (["dump", ":8080"], None),
        (["dump", "4121", "4122"], None),
        (["dump"], None),
        (["ps", "4121"], None),
        (["attach", "4121"], None),
    ],
)
def test_the_early_guess_reads_only_a_plain_dump_or_snapshot_by_pid(words, pid) -> None:
    # GIVEN a raw command line WHEN main guesses py-spy's target before parsing it
    # THEN only a dump or snapshot of one pid, without options that change py-spy's command,
    # starts py-spy early (anything else waits for the parsed arguments)
    assert guess_pid(words) == pid


@pytest.mark.parametrize(
    ("info_took", "grace"),
    [(None, 0.5), (0.004, 0.5), (0.2, 0.5), (0.35, 0.1), (0.8, 0.1)],
)
def test_a_one_shot_waits_less_for_an_agent_whose_info_came_slowly(
    info_took, grace, monkeypatch
) -> None:
    # GIVEN the session's usual grace for the agent (0.5 s), no CPINSPECT_AGENT_GRACE
    monkeypatch.delenv("CPINSPECT_AGENT_GRACE", raising=False)
    # WHEN the agent's /v1/info took this long while opening
    # THEN a one-shot command waits the usual grace, or 0.1 s past py-spy's reading when a
    # tiny answer already took long (the agent queues for the GIL behind spinning workers)
    assert one_shot_grace(0.5, info_took) == grace


def test_a_grace_set_by_the_environment_is_kept(monkeypatch) -> None:
    # GIVEN CPINSPECT_AGENT_GRACE set WHEN the agent's info came slowly THEN it is kept
    monkeypatch.setenv("CPINSPECT_AGENT_GRACE", "2")
    assert one_shot_grace(2.0, 0.8) == 2.0


def test_py_spy_is_started_before_argparse_and_typing_are_imported() -> None:
    # GIVEN a fresh interpreter, as the console script or `python -m cpinspect` starts one
    # WHEN it imports what `main` runs before it spawns a dump's py-spy (the command line's
    # package and the early starter), and records what is loaded when py-spy would start
    code = (
        "import sys\n"
        "import cpinspect.cli\n"
        "from cpinspect.cli import early\n"
        "from cpinspect.sources import pyspy_exec\n"
        "seen = []\n"
        "pyspy_exec.spawn = lambda command: seen.extend(sys.modules) or 1 / 0\n"
        "early.find_executable = lambda: '/bin/true'\n"
        "early.spawn_for_words(['dump', '4121', '--json'])\n"
        "late = ('argparse', 'typing', 'httpx', 'cpinspect.model')\n"
        "print(sorted(m for m in late if m in seen))\n"
        "print(bool(seen))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60
    )
    # THEN py-spy's spawn was reached with none of argparse, typing, httpx or the model loaded
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
