"""Invariant 3: private by default. Modes, peer uid, no TCP, redaction."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys

import psutil
import pytest

from tests.helpers import agent_get, run_as, run_cli
from tests.integration.test_saturated import saturate


def _connect_as(pw, path: str) -> int:
    """As user ``pw``, try to connect: 0 connected, 13 refused with EACCES."""

    def connect() -> int:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(path)
            return 0
        except PermissionError:
            return 13
        finally:
            s.close()

    return run_as(pw, connect)


def test_directory_0700_socket_0600(spawn_target):
    target = spawn_target()
    path = target.socket_path()
    st_dir = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(st_dir.st_mode) == 0o700
    assert st_dir.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_another_uid_is_stopped_by_the_file_modes(spawn_target, other_user):
    # GIVEN an agent socket owned by us
    target = spawn_target()
    # WHEN another uid tries to connect
    code = _connect_as(other_user, target.socket_path())
    # THEN the kernel refuses it (EACCES) before the agent sees anything
    assert code == 13


def test_another_uid_with_dac_override_is_refused_by_the_peer_check(spawn_target, other_user):
    # GIVEN a client running as another uid but with CAP_DAC_OVERRIDE (file modes do not stop it)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv missing: `make system-deps` installs util-linux")
    target = spawn_target()
    # The agent may answer 403 and close before the request is written: read the answer anyway.
    client = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'GET /v1/threads HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "except OSError:\n"
        "    pass\n"
        "print(s.recv(65536).decode(errors='replace'))\n"
    )
    result = subprocess.run(
        [
            setpriv,
            "--reuid=%d" % other_user.pw_uid,
            "--regid=%d" % other_user.pw_gid,
            "--clear-groups",
            "--inh-caps=+dac_override",
            "--ambient-caps=+dac_override",
            sys.executable,
            "-c",
            client,
            target.socket_path(),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # THEN the agent answers 403 naming the peer-uid check, and no thread data leaks
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 403"), result.stdout
    assert "peer uid %d" % other_user.pw_uid in result.stdout
    assert '"threads"' not in result.stdout


def test_no_tcp_listener_is_opened(spawn_target):
    target = spawn_target()
    target.socket_path()
    listening = [
        c
        for c in psutil.Process(target.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [c.laddr.port for c in listening] == [target.port]


def test_secrets_never_appear_in_any_output(spawn_target):
    # GIVEN blocked requests carrying ?token=secret, a Cookie and an Authorization header
    target = spawn_target()
    saturate(target)
    path = target.socket_path()
    outputs = [
        json.dumps(agent_get(path, "/v1/threads")[1]),
        json.dumps(agent_get(path, "/v1/info")[1]),
        run_cli("dump", str(target.pid)).stdout,
        run_cli("dump", "--json", str(target.pid)).stdout,
    ]
    # THEN no output carries their values, and the redaction marker shows instead
    for out in outputs:
        for secret in ("secret", "cookie-value-xyz", "auth-value-xyz"):
            assert secret not in out
    assert "token=***" in outputs[0] and "token=***" in outputs[2]
