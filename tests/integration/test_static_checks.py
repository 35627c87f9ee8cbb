"""Static mount checks as the target's user sees them: a directory or file the app's user cannot
read is flagged (root reads everything, so the check runs in a child dropped to another user)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cpinspect.agent.probes.routes import _mount, check_mount
from tests.helpers import run_as


@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A directory every user may traverse (pytest's tmp_path is 0700 under root)."""
    path = tempfile.mkdtemp(prefix="cpinspect-static-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_mount_the_apps_user_cannot_read_is_flagged(other_user: Any, shared_dir: str) -> None:
    # GIVEN a static dir and a static file only root may read, and a readable dir
    private_dir = os.path.join(shared_dir, "private")
    os.mkdir(private_dir, 0o700)
    with open(os.path.join(private_dir, "a.css"), "w") as f:
        f.write("a")
    private_file = os.path.join(shared_dir, "robots.txt")
    with open(private_file, "w") as f:
        f.write("x")
    os.chmod(private_file, 0o600)
    public_dir = os.path.join(shared_dir, "public")
    os.mkdir(public_dir, 0o755)
    open(os.path.join(public_dir, "b.css"), "w").close()

    def check() -> List[Tuple[Any, Any, Any, List[str]]]:
        out = []
        mounts: List[Dict[str, Any]] = [
            _mount("/assets", "staticdir", "app.config", private_dir, None, None, None, None),
            _mount("/robots.txt", "staticfile", "app.config", private_file, None, None, None, None),
            _mount("/pub", "staticdir", "app.config", "public", shared_dir, None, None, None),
        ]
        for mount in mounts:
            check_mount(mount)
            out.append((mount["exists"], mount["readable"], mount["file_count"], mount["warnings"]))
        return out

    # WHEN the checks run as the app's (unprivileged) user
    assets, robots, public = run_as(other_user, check)
    # THEN the private ones exist but are flagged unreadable, with no file count guessed
    assert assets == (True, False, None, [f"unreadable by this process: {private_dir}"])
    assert robots == (True, False, None, [f"unreadable by this process: {private_file}"])
    # AND the readable one (relative dir + root) is counted
    assert public == (True, True, 1, [])
