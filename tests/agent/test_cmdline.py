"""The agent's command line of a process that retitled itself.

A real retitled target needs ``setproctitle`` (not a dependency of the project, and not in its
venv), so the bytes below are what ``/proc/<pid>/cmdline`` held for salt-api 3008.4's CherryPy
process (copied from a real one), fed to the parser the agent reads its own file with.
"""

from __future__ import annotations

from cpinspect.agent.probes.info import parse_cmdline
from cpinspect.formatting import process_name

SALT_API = (
    b"/tmp/ra3-venv/bin/python /tmp/ra3-venv/bin/salt-api -c /tmp/ra3-salt "
    b"RunNetapi(salt.loaded.int.netapi.rest_cherrypy)\0"
)


def test_a_retitled_process_is_split_on_spaces_and_named_after_its_script() -> None:
    # WHEN the retitled command line is read THEN its words are its arguments
    args = parse_cmdline(SALT_API)
    assert args == [
        "/tmp/ra3-venv/bin/python",
        "/tmp/ra3-venv/bin/salt-api",
        "-c",
        "/tmp/ra3-salt",
        "RunNetapi(salt.loaded.int.netapi.rest_cherrypy)",
    ]
    # AND the report's and the header's name is the script, not the tail of its last path
    assert process_name(args) == "salt-api"


def test_an_ordinary_command_line_keeps_its_arguments_spaces_and_all() -> None:
    raw = b"/usr/bin/python3\0shop.py\0--title\0my shop\0"
    assert parse_cmdline(raw) == ["/usr/bin/python3", "shop.py", "--title", "my shop"]
    assert parse_cmdline(b"") == []
