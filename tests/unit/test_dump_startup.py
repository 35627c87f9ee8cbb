"""``dump`` starts py-spy before its imports (issue 13): the command it starts early must be
the one the session's py-spy reader runs, or the reader would not adopt it."""

from __future__ import annotations

import argparse

import pytest

from cpinspect.cli.dump import early_pyspy_command
from cpinspect.errors import PySpyMissing
from cpinspect.sources.pyspy import PySpySource, find_pyspy


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
