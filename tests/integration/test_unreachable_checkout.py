"""The tests that drop to another user pass when the checkout is one that user cannot reach.

CI clones into root's home (mode 0700) and runs ``make test`` as root. Here the working tree's
tracked files (as they are now, edits included: what a clone would hold once committed) go into a
``tempfile.mkdtemp()`` directory, which is 0700, and pytest runs from that copy on every test
that uses the ``other_user`` fixture (or ``_as_unprivileged``), with the copy first on the path
and an interpreter from a venv *inside* the copy (``.venv``, as ``make`` makes it; it reaches our
installed packages through a ``.pth``). Anything those tests make the other user run from the
checkout or from its venv fails there.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ROOT, OtherUserRuntime, as_user


@pytest.fixture
def unreachable_checkout() -> Iterator[Path]:
    """A copy of the working tree inside a 0700 directory."""
    outer = Path(tempfile.mkdtemp(prefix="cpinspect-0700-"))
    assert stat.S_IMODE(os.stat(outer).st_mode) == 0o700
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached"],
        cwd=str(ROOT),
        capture_output=True,
        check=True,
    ).stdout
    clone = outer / "cpinspect"
    try:
        for rel in filter(None, listed.decode().split("\0")):
            src = ROOT / rel
            if not src.is_file():
                continue  # deleted in the working tree
            dest = clone / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        # its own .venv, as root-only as the rest, on our base interpreter and our packages
        base = getattr(sys, "_base_executable", None) or os.path.realpath(sys.executable)
        venv = clone / ".venv"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        purelib = sysconfig.get_paths()["purelib"]
        [site] = venv.glob("lib/python3*/site-packages")
        (site / "outer-venv.pth").write_text("import site; site.addsitedir(%r)\n" % purelib)
        pyspy = Path(sys.executable).parent / "py-spy"
        if pyspy.exists():
            (venv / "bin" / "py-spy").symlink_to(os.path.realpath(pyspy))
        yield clone
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def test_other_user_tests_pass_from_a_checkout_that_user_cannot_reach(
    other_user, other_user_runtime: OtherUserRuntime, unreachable_checkout: Path
) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
    }
    env.update(PYTHONPATH=str(unreachable_checkout), CPINSPECT_OTHER_USER_ONLY="1")
    # GIVEN a checkout the other user cannot reach, which is what the root-side tests import
    probe = subprocess.run(
        as_user(other_user, ["/usr/bin/test", "-r", str(unreachable_checkout / "pyproject.toml")]),
        cwd="/",
    )
    assert probe.returncode == 1, "the other user can read the copy: the proof would prove nothing"
    python = str(unreachable_checkout / ".venv" / "bin" / "python")
    here = subprocess.run(
        [
            python,
            "-c",
            "import cpinspect, tests, cherrypy; print(cpinspect.__file__, tests.__file__)",
        ],
        cwd=str(unreachable_checkout),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(p.startswith(str(unreachable_checkout) + "/") for p in here), here

    # WHEN pytest runs, from there, every test that drops to the other user (collected from the
    # files that mention the fixture, so a half-edited test elsewhere cannot break this one)
    files = sorted(
        str(p.relative_to(unreachable_checkout))
        for p in (unreachable_checkout / "tests").rglob("test_*.py")
        if "other_user" in p.read_text() and p.name != Path(__file__).name
    )
    assert len(files) >= 6, files
    result = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", *files],
        cwd=str(unreachable_checkout),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    # THEN they all ran and passed (none skipped, none deselected by mistake)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) >= 9, tail  # 9 when this was written
    assert " skipped" not in result.stdout, tail
    assert " failed" not in result.stdout and " error" not in result.stdout, tail
