"""Socket location and creation (invariant 3), without any CherryPy process."""

from __future__ import annotations

import os
import stat

import pytest

from cpinspect.agent.paths import (
    SocketPathError,
    bind_private,
    default_socket_dir,
    ensure_private_dir,
    final_path_from_bound,
    unlink_if_ours,
)


def test_default_dir_prefers_our_xdg_runtime_dir(short_tmp, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))
    assert default_socket_dir() == str(short_tmp / "cpinspect")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/dir")
    assert default_socket_dir().endswith("cpinspect-%d" % os.geteuid())


def test_private_dir_is_created_0700_and_loose_modes_are_tightened(short_tmp):
    d = short_tmp / "d"
    ensure_private_dir(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.chmod(d, 0o755)
    ensure_private_dir(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_private_dir_refuses_a_symlink_and_a_file(short_tmp):
    (short_tmp / "real").mkdir()
    os.symlink(short_tmp / "real", short_tmp / "link")
    with pytest.raises(SocketPathError, match="symlink"):
        ensure_private_dir(str(short_tmp / "link"))
    (short_tmp / "file").write_text("x")
    with pytest.raises(SocketPathError, match="not a directory"):
        ensure_private_dir(str(short_tmp / "file"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_private_dir_refuses_a_directory_someone_else_owns(short_tmp):
    d = short_tmp / "theirs"
    d.mkdir()
    os.chown(d, 65534, 65534)
    with pytest.raises(SocketPathError, match="belongs to uid 65534"):
        ensure_private_dir(str(d))


def test_bind_private_makes_a_0600_socket_and_leaves_no_temp_dir(short_tmp):
    path = str(short_tmp / "1234.sock")
    (short_tmp / "1234.sock").write_text("stale file from a dead process")
    sock, ident = bind_private(path)
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert sorted(os.listdir(short_tmp)) == ["1234.sock"]
    finally:
        sock.close()
        unlink_if_ours(path, ident)
    assert not os.path.exists(path)


def test_unlink_leaves_someone_elses_socket_alone(short_tmp):
    path = str(short_tmp / "1.sock")
    sock, ident = bind_private(path)
    sock.close()
    os.unlink(path)
    other, _ = bind_private(path)  # another agent now owns the name
    try:
        unlink_if_ours(path, ident)
        assert os.path.exists(path)
    finally:
        other.close()


def test_bound_path_reveals_the_final_path():
    assert final_path_from_bound("/run/x/.cpinspect-bind-ab12/7.sock") == "/run/x/7.sock"
    assert final_path_from_bound("/run/x/7.sock") is None


def test_too_long_a_path_is_refused_with_its_length(short_tmp):
    with pytest.raises(SocketPathError, match="107-byte limit"):
        bind_private(str(short_tmp / ("x" * 120)))
