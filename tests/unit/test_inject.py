"""The pure parts of injection: gdb's output, the bootstrap text, the bootstrap's status file."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from cpinspect.agent import bootstrap
from cpinspect.attach.inject import agent_files, content_hash, gdb_command, package_name, parse_gdb
from cpinspect.errors import InjectionFailed, NotPython, PermissionDenied, TargetGone


def gdb_output(stdout: str, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["gdb"], 0, stdout, stderr)


def test_a_scheduled_call_is_success():
    parse_gdb(42, gdb_output("[New LWP 43]\nCPINSPECT-SCHEDULED 0\n"))


@pytest.mark.parametrize(
    ("stdout", "stderr", "error", "words"),
    [
        (
            "",
            "ptrace: Operation not permitted.\n",
            PermissionDenied,
            "may not trace pid 42 (ptrace denied): ",
        ),
        ("", "ptrace: No such process.\n", TargetGone, "process 42 exited during injection"),
        (
            'CPINSPECT-ERROR No symbol "Py_AddPendingCall" in current context.\n',
            "",
            NotPython,
            "pid 42 has no Python interpreter gdb can call",
        ),
        ("CPINSPECT-SCHEDULED -1\n", "", InjectionFailed, "Py_AddPendingCall refused in pid 42"),
        (
            "CPINSPECT-ERROR mmap failed in the target\n",
            "",
            InjectionFailed,
            "gdb could not schedule the bootstrap in pid 42: CPINSPECT-ERROR mmap failed",
        ),
    ],
)
def test_gdb_failures_become_one_clear_line(stdout, stderr, error, words):
    with pytest.raises(error) as err:
        parse_gdb(42, gdb_output(stdout, stderr))
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_ptrace_denied_says_how_to_get_the_permission():
    with pytest.raises(PermissionDenied) as err:
        parse_gdb(42, gdb_output("", "Could not attach to process.  If your uid matches ..."))
    assert "CAP_SYS_PTRACE" in str(err.value) and "--cap-add=SYS_PTRACE" in str(err.value)


def test_gdb_runs_in_batch_mode_without_init_files():
    argv = gdb_command("/usr/bin/gdb", 42, "/tmp/script.py")
    assert argv[:6] == ["/usr/bin/gdb", "-p", "42", "-batch", "-nx", "-ex"]
    assert argv[-2:] == ["-x", "/tmp/script.py"]


def test_the_copy_is_named_by_version_and_content():
    files = agent_files()
    names = [rel for rel, _ in files]
    assert "bootstrap.py" in names and "plugin.py" in names and "probes/threads.py" in names
    assert not [n for n in names if "__pycache__" in n]
    digest = content_hash(files)
    assert digest == content_hash(list(files))
    assert content_hash([*files[:-1], (files[-1][0], files[-1][1] + b"#")]) != digest
    assert package_name(digest).startswith("cpinspect_agent_0_")
    assert package_name(digest).isidentifier()


def test_the_bootstrap_text_binds_nothing_in_main_and_never_raises(tmp_path):
    # GIVEN the text for a bootstrap file that raises as soon as it runs
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom')\n")
    text = bootstrap.bootstrap_text(str(script), ("/lib", "pkg", "/status", "install"))
    main = {"__name__": "__main__", "app_global": 1}
    # WHEN it runs in a stand-in for __main__'s globals
    exec(compile(text, "<pending call>", "exec"), main)
    # THEN no exception came out and no name was added
    assert sorted(main) == ["__builtins__", "__name__", "app_global"]


def test_the_bootstrap_file_runs_with_its_arguments_in_a_fresh_namespace(tmp_path):
    # GIVEN the real bootstrap file and an action it does not know
    status = tmp_path / "status.json"
    text = bootstrap.bootstrap_text(
        bootstrap.__file__, (str(tmp_path), "nothing", str(status), "dance")
    )
    main = {"__name__": "__main__"}
    # WHEN run as the pending call would run it
    exec(compile(text, "<pending call>", "exec"), main)
    # THEN the status file says what went wrong, privately, and __main__ is untouched
    result = json.loads(status.read_text())
    assert result["ok"] is False and result["kind"] == "usage"
    assert result["error"] == "unknown action 'dance'"
    assert result["pid"] == os.getpid() and result["thread"] == "MainThread"
    assert stat.S_IMODE(os.stat(status).st_mode) == 0o600
    assert sorted(main) == ["__builtins__", "__name__"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_uninstall_without_an_agent_is_ok(tmp_path):
    status = tmp_path / "status.json"
    result = bootstrap.run(str(tmp_path), "nothing", str(status), "uninstall")
    assert result["ok"] is True and result["removed"] == 0
    assert json.loads(status.read_text())["removed"] == 0


def test_the_status_file_never_follows_a_planted_symlink(tmp_path):
    # GIVEN a symlink where the temporary file would go
    status = tmp_path / "status.json"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    tmp = "%s.%d.%d.tmp" % (status, os.getpid(), __import__("threading").get_ident())
    os.symlink(victim, tmp)
    # WHEN the status is written
    bootstrap.write_status(str(status), {"ok": True})
    # THEN the symlink's target is untouched (the write failed quietly instead)
    assert victim.read_text() == "untouched"
