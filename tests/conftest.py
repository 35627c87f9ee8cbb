"""Fixtures shared by every test: real processes, started and always reaped."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        "timed out after %.1f s waiting for %s (last error: %r)" % (timeout, what, last_exc)
    )


@dataclass
class TargetProcess:
    proc: subprocess.Popen
    port: int
    pid: int
    log_path: Path
    lines: List[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def boots(self) -> int:
        return len(re.findall(r"^BOOT pid=", self.output(), flags=re.M))

    def socket_path(self) -> str:
        from cpinspect.attach.discovery import find_agent

        return find_agent(self.pid).connect_path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_target(
    args: List[str],
    tmp: Path,
    env: Optional[dict] = None,
    timeout: float = 20.0,
    python: Optional[str] = None,
) -> TargetProcess:
    log_path = tmp / ("target-%d.log" % time.monotonic_ns())
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("XDG_RUNTIME_DIR", None)
    if env:
        full_env.update(env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "tests.apps.target", *args],
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def ready() -> Optional[re.Match]:
        if proc.poll() is not None:
            raise RuntimeError("target exited early:\n" + log_path.read_text(errors="replace"))
        return re.search(r"READY port=(\d+) pid=(\d+)", log_path.read_text(errors="replace"))

    try:
        m = wait_for(ready, timeout=timeout, what="the target's READY line")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert isinstance(m, re.Match)
    return TargetProcess(proc=proc, port=int(m.group(1)), pid=int(m.group(2)), log_path=log_path)


@pytest.fixture
def spawn_target(tmp_path: Path) -> Iterator[Callable[..., TargetProcess]]:
    """Start ``tests/apps/target.py`` with the given options; every process is reaped after."""
    started: List[TargetProcess] = []

    def spawn(
        *args: str, env: Optional[dict] = None, python: Optional[str] = None
    ) -> TargetProcess:
        target = start_target(list(args), tmp_path, env=env, python=python)
        started.append(target)
        return target

    try:
        yield spawn
    finally:
        for target in started:
            target.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must stay under 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="cpi-", dir="/tmp") as d:
        yield Path(d)


TEST_USER = "cpinspect-test"


@pytest.fixture(scope="session")
def other_user():
    """A throwaway unprivileged user (created when we are root)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; these tests need it")
        pytest.skip("needs root to create and become another user")
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            pytest.fail("useradd missing: `make system-deps` installs it")
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
        )
        pw = pwd.getpwnam(TEST_USER)
    return pw
