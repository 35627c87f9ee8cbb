"""The README's claim that PrivateTmp=, containers and sudo work, on real targets.

Each target runs in a mount namespace of its own (``unshare --mount --propagation private``, as
root) with its own tmpfs on /tmp, so its socket lives where our /tmp cannot see it: discovery has
to go through ``/proc/<pid>/net/unix`` (the path the socket was bound at) and ``/proc/<pid>/root``
(the target's mount namespace). Two layouts:

* PrivateTmp=: the same root as ours, only /tmp differs;
* a container: a root of its own (a tmpfs with the host's system directories bind-mounted in,
  entered with chroot), so ``/proc/<pid>/root`` is another inode.

A path that fits ``sun_path`` (107 bytes) in the target but not once prefixed with
``/proc/<pid>/root`` makes discovery connect through a directory it holds open with ``O_PATH``
(``/proc/self/fd/<n>/<name>``). The agent itself refuses a socket path over the limit, and never
makes one that needs the fallback (it binds 26 bytes deeper, then renames), so a plain listener
stands in for it there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, List

import pytest

from cpinspect.agent.paths import UNIX_PATH_MAX
from cpinspect.attach.discovery import connect_path_for, find_agent
from cpinspect.attach.inject import Injector
from cpinspect.model import SourceKind
from cpinspect.protocol import snapshots_from_document
from tests.conftest import IN_CI, ROOT, wait_for
from tests.helpers import agent_get, http_answers, load_json, run_cli


def _under_tmp(path: str) -> bool:
    return path == "/tmp" or path.startswith("/tmp/")


def _keep_from_tmp() -> str:
    """What the target needs from our /tmp once it has a /tmp of its own: this checkout and its
    interpreter's environment when they live there (CI clones anywhere, /tmp included)."""
    paths = sorted({str(ROOT), sys.prefix})
    kept: List[str] = []
    for path in paths:
        if _under_tmp(path) and not any(path.startswith(k + "/") for k in kept):
            kept.append(path)
    return " ".join(kept)


KEEP = _keep_from_tmp()

OWN_TMP = (
    "old=/run/cpinspect-oldtmp-$$ && mkdir -p $old && mount --bind /tmp $old && "
    "mount -t tmpfs -o mode=1777 cpinspect-tmp /tmp && "
    'for p in %s; do mkdir -p "$p" && mount --bind "$old${{p#/tmp}}" "$p" || exit 1; done && '
    'umount -l $old && rmdir $old && {setup} exec "$@"' % KEEP
)
"""Shell run inside the new mount namespace: a fresh /tmp (with this checkout bound back in when
it lives in /tmp), then ``setup``, then exec the app."""

OWN_ROOT = (
    "mount -t tmpfs -o mode=755 cpinspect-root {root} && "
    "for d in {binds}; do mkdir {root}/$d && mount --rbind /$d {root}/$d || exit 1; done && "
    "mkdir -m 1777 {root}/tmp && "
    'for p in %s; do mkdir -p "{root}$p" && mount --rbind "$p" "{root}$p" || exit 1; done && '
    '{setup} exec chroot {root} "$@"' % KEEP
)
"""Shell run inside the new mount namespace: a tmpfs root with the host's directories bound in
and an empty /tmp (this checkout bound into it when it lives in /tmp), then ``setup``, then
chroot into it and exec the app."""

BIND_INTO_ROOT = tuple(
    sorted(
        {"usr", "lib", "lib32", "lib64", "bin", "sbin", "etc", "root", "work", "proc", "dev"}
        | {
            Path(p).parts[1]
            for p in (str(ROOT), sys.prefix, sys.base_prefix)
            if not _under_tmp(p) and len(Path(p).parts) > 1
        }
    )
)
"""What a target needs from the host in a root of its own: the system's directories, and the
top-level directories of this checkout and of its interpreter, wherever they are."""


@pytest.fixture(scope="module")
def unshare_mount() -> List[str]:
    """``unshare`` into a private mount namespace and run the shell script given next."""
    unshare, sh = shutil.which("unshare"), shutil.which("sh")
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; a private mount namespace needs it")
        pytest.skip("needs root for unshare --mount")
    if unshare is None or sh is None or shutil.which("chroot") is None:
        pytest.fail("unshare (util-linux) or chroot (coreutils) missing: `make system-deps`")
    return [unshare, "--mount", "--propagation", "private", sh, "-c"]


@pytest.fixture
def own_tmp(unshare_mount: List[str]) -> List[str]:
    """The prefix that runs a target with the same root as ours and a /tmp of its own."""
    return [*unshare_mount, OWN_TMP.format(setup=""), "sh"]


@pytest.fixture
def own_root(unshare_mount: List[str], short_tmp: Path) -> Callable[..., List[str]]:
    """``own_root(setup="")``: the prefix that runs a target in a root of its own; ``setup`` is
    shell run before the chroot, ``{root}`` in it standing for the new root as seen from here."""
    root = short_tmp / "root"
    root.mkdir()
    binds = " ".join(d for d in BIND_INTO_ROOT if os.path.isdir("/" + d))

    def prefix(setup: str = "") -> List[str]:
        before = setup.format(root=root) + " &&" if setup else ""
        script = OWN_ROOT.format(root=root, binds=binds, setup=before)
        return [*unshare_mount, script, "sh"]

    return prefix


def assert_invisible_here(target_path: str, pid: int) -> None:
    """The file the target sees at ``target_path`` is not the one at that path here. (A file of
    that name may exist here: a stale socket of a killed earlier process whose pid was reused.)"""
    theirs = "/proc/%d/root%s" % (pid, target_path)
    assert os.path.exists(theirs), theirs
    if os.path.exists(target_path):
        assert not os.path.samefile(target_path, theirs), target_path


def assert_found_through_proc(pid: int) -> None:
    """Discovery finds the agent of ``pid`` in its own /tmp, and it answers; so does the CLI."""
    endpoint = find_agent(pid)
    assert endpoint.socket_path == "/tmp/cpinspect-0/%d.sock" % pid
    assert_invisible_here(endpoint.socket_path, pid)
    assert endpoint.connect_path == "/proc/%d/root%s" % (pid, endpoint.socket_path)
    status, info = agent_get(endpoint.connect_path, "/v1/info")
    assert status == 200 and info["pid"] == pid
    dump = run_cli("dump", "--json", str(pid))
    assert dump.returncode == 0, dump.stderr
    [snapshot] = snapshots_from_document(load_json(dump.stdout))
    # The agent answered (py-spy joins it where it can read the process: not in a chroot)
    assert snapshot.source in (SourceKind.AGENT, SourceKind.BOTH)
    assert snapshot.info is not None and snapshot.info.pid == pid


def test_private_tmp_agent_by_config_is_found_through_proc(spawn_target, own_tmp):
    # GIVEN a target with the agent by config, the same root as ours and its own /tmp
    target = spawn_target("--agent", "config", prefix=own_tmp)
    assert os.stat("/proc/%d/root/tmp" % target.pid).st_dev != os.stat("/tmp").st_dev
    # WHEN discovery looks for its agent  THEN it is reached through /proc/<pid>/root
    assert_found_through_proc(target.pid)


def test_private_tmp_injection(spawn_target, own_tmp):
    # GIVEN an unmodified target with its own /tmp
    target = spawn_target("--agent", "none", prefix=own_tmp)
    # WHEN root injects the agent
    result = run_cli("inject", str(target.pid))
    # THEN it loads, its socket in the target's /tmp, reached through /proc/<pid>/root
    assert result.returncode == 0, result.stderr
    assert_found_through_proc(target.pid)


def test_container_root_agent_by_config_is_found_through_proc(spawn_target, own_root):
    # GIVEN a target with the agent by config in a root of its own (as in a container)
    target = spawn_target("--agent", "config", prefix=own_root())
    assert not os.path.samefile("/proc/%d/root" % target.pid, "/")
    # WHEN discovery looks for its agent  THEN it is reached through /proc/<pid>/root
    assert_found_through_proc(target.pid)


def test_container_root_injection(spawn_target, own_root):
    # GIVEN an unmodified target in a root of its own
    target = spawn_target("--agent", "none", prefix=own_root())
    # WHEN root injects the agent
    result = Injector(target.pid).inject()
    # THEN it loads, its socket in the target's /tmp, reached through /proc/<pid>/root
    assert result.endpoint is not None
    assert result.endpoint.socket_path == "/tmp/cpinspect-0/%d.sock" % target.pid
    assert_found_through_proc(target.pid)
    Injector(target.pid).detach()


LISTENER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(4)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b"hello from %d" % os.getpid())
    conn.close()
"""


def test_a_path_too_long_with_proc_root_connects_through_an_o_path_fd(own_root, tmp_path):
    # GIVEN a process in a root of its own listening on a Unix socket whose path fits sun_path
    # there (104 bytes) but not once prefixed with /proc/<pid>/root. The agent cannot make such
    # a socket (bind_private binds 26 bytes deeper first), so a plain listener stands in for it.
    parent = "/tmp/" + "d" * 60 + "/" + "e" * 26
    path = parent + "/agent.sock"
    assert len(path.encode()) <= UNIX_PATH_MAX
    prefix = own_root(setup="mkdir -m 700 -p {root}%s" % parent)
    log = tmp_path / "listener.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", LISTENER, path], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        m = wait_for(
            lambda: proc.poll() is None and re.search(r"READY pid=(\d+)", log.read_text()),
            what="the listener's READY line (%s)" % log,
        )
        assert isinstance(m, re.Match)
        pid = int(m.group(1))
        assert len(("/proc/%d/root%s" % (pid, path)).encode()) > UNIX_PATH_MAX
        # WHEN discovery makes the path to connect to
        connect = connect_path_for(pid, path)
        # THEN it goes through a directory it holds open, /proc/self/fd/<n>/agent.sock, and that
        # reaches the listener in the other namespace
        assert_invisible_here(path, pid)
        assert connect.startswith("/proc/self/fd/") and connect.endswith("/agent.sock"), connect
        held = os.path.dirname(connect)
        assert os.path.samefile(held, "/proc/%d/root%s" % (pid, parent))
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(connect)
            assert client.recv(100) == b"hello from %d" % pid
        os.close(int(held.rsplit("/", 1)[1]))
    finally:
        proc.kill()
        proc.wait(5)


def test_a_socket_path_over_the_limit_is_refused_by_the_agent_with_the_reason(
    spawn_target, short_tmp
):
    # GIVEN inspector.socket over the 107-byte sun_path limit by itself
    path = os.path.join(str(short_tmp), "d" * 60, "e" * 40, "agent.sock")
    assert len(path.encode()) > UNIX_PATH_MAX
    Path(path).parent.mkdir(parents=True, mode=0o700)
    # WHEN the app starts with the agent by config
    target = spawn_target("--agent", "config", "--engine-log", "--socket", path)
    # THEN the agent is not installed, the engine log says why, and the app still serves
    assert "over the 107-byte limit: %s" % path in target.output(), target.output()
    assert not os.path.exists(path)
    assert http_answers(target.port, "/")
