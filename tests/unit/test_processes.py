"""Discovery's pure parts on hand-built data: no psutil, no processes."""

from __future__ import annotations

import os

import pytest

from cpinspect.attach.processes import (
    ProcessLister,
    looks_like_python_name,
    ownership_reason,
    parse_port_target,
    pool_numbers,
    port_owner,
    ports_by_pid,
)
from cpinspect.errors import NoSuchProcess, PermissionDenied, UsageError
from cpinspect.formatting import format_bytes, format_process_table, process_row
from cpinspect.model import ProcessSummary


@pytest.mark.parametrize(
    "name",
    ["/usr/bin/python3.11", "python3", "pypy3", "/opt/py/bin/python3.8d", "python (deleted)"],
)
def test_python_names_are_recognised(name: str) -> None:
    assert looks_like_python_name(None, name)


@pytest.mark.parametrize("name", ["bash", "uwsgi", "/usr/bin/pythonista-helper", "", None])
def test_other_names_are_not_python(name: str) -> None:
    assert not looks_like_python_name(name)


def test_another_users_process_needs_that_user_or_root() -> None:
    # GIVEN a process of uid 1001 (alice), seen by uid 1000
    # THEN the reason names who to run as
    assert ownership_reason(1001, "alice", 1000) == "owned by alice: run as alice or root"
    # AND our own processes, or any process when we are root, have no reason
    assert ownership_reason(1000, "me", 1000) is None
    assert ownership_reason(1001, "alice", 0) is None
    # AND root's processes need root, said once
    assert ownership_reason(0, "root", 1000) == "owned by root: run as root"


def test_ports_are_grouped_by_pid_once_each() -> None:
    # GIVEN 8080 bound on IPv4 and IPv6 by pid 10, 9090 by pid 11, one socket of unknown owner
    listeners = [(8080, 10), (8080, 10), (8443, 10), (9090, 11), (22, None)]
    # THEN each pid has its sorted distinct ports, and the unknown owner is left out
    assert ports_by_pid(listeners) == {10: (8080, 8443), 11: (9090,)}


def test_port_owner_finds_the_one_pid() -> None:
    assert port_owner(8080, [(8080, 10), (8080, 10), (9090, 11)]) == 10


def test_port_owner_with_nobody_listening_says_where_to_look() -> None:
    with pytest.raises(NoSuchProcess, match="nothing listens on TCP port 8080; `cpinspect ps`"):
        port_owner(8080, [(9090, 11)])


def test_port_owner_with_several_pids_asks_for_a_pid() -> None:
    # GIVEN two processes sharing a port (SO_REUSEPORT, or a forked master and child)
    with pytest.raises(UsageError, match=r"several processes listen on port 8080 \(pids 10, 12\)"):
        port_owner(8080, [(8080, 12), (8080, 10)])


def test_port_owner_hidden_by_the_kernel_says_run_as_root() -> None:
    with pytest.raises(PermissionDenied, match="another user's process: run cpinspect as root"):
        port_owner(8080, [(8080, None)])


def test_port_out_of_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a TCP port"):
        port_owner(70000, [])


def test_port_targets_are_colon_numbers() -> None:
    assert parse_port_target(":8080") == 8080
    assert parse_port_target("8080") is None
    with pytest.raises(UsageError, match="write :PORT"):
        parse_port_target(":http")


def test_pool_numbers_sum_servers_and_are_unknown_without_pools() -> None:
    assert pool_numbers([(3, 10), (1, 4)]) == (4, 14)
    assert pool_numbers([]) == (None, None)


# --- formatting ----------------------------------------------------------------------------------


def test_bytes_are_short() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(33 * 1024 * 1024 + 100 * 1024) == "33.1 MB"
    assert format_bytes(3 * 1024**4) == "3072.0 GB"
    assert format_bytes(None) == "—"


def test_row_of_a_process_with_the_agent() -> None:
    # GIVEN a CherryPy process with the agent and two apps
    summary = ProcessSummary(
        pid=4121,
        user="www",
        cmdline=("python3", "shop.py"),
        ports=(8080, 8443),
        uptime=3725.0,
        cpu_percent=12.4,
        rss=50 * 1024 * 1024,
        agent=True,
        apps=("", "/api"),
        busy=9,
        size=10,
    )
    # THEN every column reads as a person would write it
    assert process_row(summary) == {
        "pid": "4121",
        "user": "www",
        "name": "shop.py",
        "ports": "8080,8443",
        "uptime": "1 h 2 m",
        "cpu": "12%",
        "rss": "50.0 MB",
        "agent": "yes",
        "apps": "/, /api",
        "busy": "9/10",
        "reason": "",
    }


def test_row_of_a_process_we_cannot_read_says_maybe_and_why() -> None:
    summary = ProcessSummary(
        pid=300, user="alice", cherrypy=False, reason="owned by alice: run as alice or root"
    )
    row = process_row(summary)
    assert row["agent"] == "?"
    assert row["reason"] == "owned by alice: run as alice or root"
    assert not summary.inspectable
    # AND without a reason (py-spy missing) it is still marked as a guess
    guess = ProcessSummary(pid=301, user="me", cherrypy=False, note="py-spy not found")
    assert process_row(guess)["reason"] == "maybe CherryPy: py-spy not found"


def test_table_aligns_columns_under_headings() -> None:
    rows = [
        ProcessSummary(pid=7, user="www", cmdline=("python3", "a.py"), ports=(80,)),
        ProcessSummary(pid=12345, user="root", cmdline=("python3", "b.py"), agent=True),
    ]
    lines = format_process_table(rows).splitlines()
    assert lines[0].startswith("PID    USER  PROCESS  PORTS")
    assert lines[1].startswith("7      www   a.py     80 ")
    assert lines[2].startswith("12345  root  b.py     —  ")
    assert len(lines) == 3


# --- py-spy verdicts (py-spy replaced by a script that answers like it) --------------------------


def _fake_pyspy(tmp_path, stderr: str, code: int, stdout: str = ""):
    script = tmp_path / "py-spy"
    script.write_text(
        "#!/bin/sh\nprintf '%%s' '%s'\nprintf '%%s' '%s' >&2\nexit %d\n" % (stdout, stderr, code)
    )
    script.chmod(0o755)
    return str(script)


def test_ptrace_refused_is_listed_as_maybe_with_pyspys_reason(tmp_path) -> None:
    # GIVEN py-spy refused by ptrace on a live process
    fake = _fake_pyspy(tmp_path, "Error: Permission Denied", 1)
    lister = ProcessLister(pyspy=fake)
    # WHEN the lister asks py-spy about it
    verdict = lister._read_with_pyspy(os.getpid())
    # THEN it is kept as "maybe CherryPy" with py-spy's permission message as the reason
    assert verdict.maybe and not verdict.cherrypy
    assert verdict.reason is not None
    assert verdict.reason.startswith("not allowed to read the memory of pid %d" % os.getpid())


def test_stacks_without_cherrypy_drop_the_process(tmp_path) -> None:
    # GIVEN py-spy showing one thread in plain Python code
    dump = (
        '[{"pid": 1, "thread_id": 1, "thread_name": "MainThread", "os_thread_id": 1,'
        ' "active": true, "owns_gil": false, "frames": [{"name": "sleep", "filename":'
        ' "/srv/job.py", "module": null, "short_filename": "job.py", "line": 3}]}]'
    )
    lister = ProcessLister(pyspy=_fake_pyspy(tmp_path, "", 0, stdout=dump))
    # THEN the verdict is "not CherryPy", and it is not listed
    verdict = lister._read_with_pyspy(os.getpid())
    assert not verdict.cherrypy and not verdict.maybe
