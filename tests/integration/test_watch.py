"""``cpinspect watch PID`` on a real CherryPy process: nothing while healthy, a staged pool
starvation captured once per cool-down under the size cap, clean stops and a target gone."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterator, List

import psutil
import pytest

from cpinspect.snapshots import read_snapshots
from tests.conftest import TargetProcess, start_target, wait_for
from tests.helpers import BackgroundRequests, CliProcess, RequestLoop, agent_get, run_cli

WORKERS = 2


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    """One app with 2 workers for the whole module (the last test kills it)."""
    proc = start_target(["--threads", str(WORKERS)], tmp_path_factory.mktemp("watch-target"))
    try:
        yield proc
    finally:
        proc.stop()


class Watch(CliProcess):
    """``cpinspect watch`` running in the background; its stdout lines collected as they come."""

    def __init__(self, *args: str) -> None:
        super().__init__("watch", *args)

    def said(self, word: str) -> List[str]:
        return [line for line in list(self.lines) if word in line]

    def captures(self) -> List[str]:
        """The lines announcing a capture written (``HH:MM:SS captured 3 snapshots: …``)."""
        return [line for line in list(self.lines) if line.split(" ")[1:2] == ["captured"]]

    def findings(self, severity: str) -> List[str]:
        """The lines that raised a finding of ``severity`` (``HH:MM:SS critical <id>: …``)."""
        return [line for line in list(self.lines) if line.split(" ")[1:2] == [severity]]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.finish(timeout)

    def finish(self, timeout: float = 20.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("watch did not exit; it said:\n" + "\n".join(self.lines)) from None
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_watch_refuses_a_pid_that_is_not_there_in_one_line(tmp_path: Path):
    # GIVEN a pid no process has
    # WHEN `cpinspect watch` is pointed at it
    result = run_cli("watch", "4194303", "--dir", str(tmp_path / "caps"), timeout=30)
    # THEN one line on stderr and a non-zero exit, no traceback
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpinspect: "), result.stderr
    assert "Traceback" not in result.stderr


def test_watch_refuses_bad_options_in_one_line(tmp_path: Path):
    # GIVEN options that make no sense
    for bad in (["--series", "0"], ["--after", "-1"], ["--max-size", "lots"]):
        # WHEN watch is started with them
        result = run_cli("watch", "1", *bad, "--dir", str(tmp_path / "caps"), timeout=30)
        # THEN it says so in one line and exits non-zero
        assert result.returncode != 0, bad
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_watch_writes_nothing_while_the_app_is_healthy(target: TargetProcess, tmp_path: Path):
    # GIVEN a healthy app answering fast requests under load
    load = RequestLoop(target.port, "/fast", max_seconds=30)
    caps = tmp_path / "caps"
    try:
        # WHEN watch runs with thresholds a healthy app never reaches for a few polls
        watch = Watch(
            str(target.pid),
            "--interval",
            "0.3",
            "--after",
            "0.5",
            "--slow",
            "5",
            "--dir",
            str(caps),
        )
        wait_for(lambda: watch.said("watching"), timeout=20, what="watch to start")
        wait_for(lambda: load.served >= 20, timeout=20, what="20 fast requests served")
        threading.Event().wait(1.5)  # a few polls of a busy, healthy app
        code = watch.stop()
    finally:
        load.stop()
    # THEN it exits 0 with the summary line, and the directory (created 0700) holds nothing
    assert code == 0, watch.stderr
    assert watch.said("stopped: watched") and watch.said("0 captures"), watch.lines
    assert not watch.captures(), watch.lines
    assert watch.findings("critical") == [], watch.lines
    assert caps.is_dir() and caps.stat().st_mode & 0o777 == 0o700
    assert list(caps.iterdir()) == []


def _stamps(lines: List[str]) -> List[str]:
    """The ``YYYYmmdd-HHMMSS`` of each capture line's file."""
    out = []
    for line in lines:
        match = re.search(r"/(\d{8}-\d{6})-[^/]*\.json$", line)
        assert match is not None, line
        out.append(match.group(1))
    return out


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y%m%d-%H%M%S").timestamp()


def test_a_staged_starvation_is_captured_once_per_cooldown_under_the_cap(
    target: TargetProcess, tmp_path: Path
):
    # GIVEN both workers held in /block and two more connections queued behind them
    BackgroundRequests(target.port, "/block?seconds=40&n=1", WORKERS + 2)

    def saturated() -> bool:
        _, body = agent_get(target.socket_path(), "/v1/threads")
        pool = body["pools"][0]
        return pool["busy"] == WORKERS and pool["queued"] >= 2

    wait_for(saturated, timeout=15, what="all workers busy and 2 connections queued")
    # AND a capture directory holding a file that is not watch's
    caps = tmp_path / "caps"
    caps.mkdir()
    foreign = caps / "cpinspect-1-20261201-000000.json"
    foreign.write_text("{}")

    # WHEN watch runs with a 1 s hold, a 5 s cool-down and a cap smaller than one capture
    watch = Watch(
        str(target.pid),
        "--after",
        "1",
        "--cooldown",
        "5",
        "--series",
        "2",
        "--every",
        "0.5",
        "--max-size",
        "1k",
        "--dir",
        str(caps),
    )
    wait_for(lambda: len(watch.captures()) >= 2, timeout=45, what="two captures")
    code = watch.stop()

    # THEN it named the starvation and captured it twice, at least one cool-down apart
    assert code == 0, watch.stderr
    assert any(" pool-starvation:" in line for line in watch.findings("critical")), watch.lines
    captured = watch.captures()
    assert len(captured) == 2, watch.lines
    assert all("pool starvation held" in line for line in captured), captured
    first, second = _stamps(captured)
    assert _seconds(second) - _seconds(first) >= 4  # 5 s, to the second of the names
    assert watch.said("held back by the cool-down"), watch.lines
    assert watch.said("2 captures"), watch.lines
    # AND the cap held: the older capture was removed, the newest kept, the foreign file too
    assert watch.said("removed %s-pool-starvation.json" % first), watch.lines
    names = sorted(p.name for p in caps.iterdir())
    assert names == sorted(
        [
            foreign.name,
            "%s-pool-starvation.json" % second,
            "%s-pool-starvation.txt" % second,
        ]
    ), names
    # AND the capture is a series that opens, with the finding and the blocked requests in it
    snapshots = read_snapshots(caps / ("%s-pool-starvation.json" % second))
    assert len(snapshots) in (1, 2)  # the second may be cut short by the stop
    ids = [f.id for f in snapshots[0].findings]
    assert any(i.startswith("pool-starvation:") for i in ids), ids
    assert snapshots[0].threads is not None
    blocked = [t for t in snapshots[0].threads.threads if t.request and t.request.path == "/block"]
    assert len(blocked) == WORKERS


def test_a_stuck_interpreter_is_captured_through_pyspy(spawn_target, tmp_path: Path):
    # GIVEN watch on an app of its own (the module's target has its workers blocked)
    target = spawn_target("--threads", "2")
    caps = tmp_path / "caps"
    watch = Watch(str(target.pid), "--after", "1", "--series", "1", "--dir", str(caps))
    wait_for(lambda: watch.said("watching"), timeout=20, what="watch to start")
    # WHEN a handler holds the GIL in a catastrophic regular expression (~8 s): the agent
    # cannot answer, py-spy reads the process from outside
    BackgroundRequests(target.port, "/regex?n=28", 1)
    wait_for(lambda: watch.captures(), timeout=40, what="the capture")
    code = watch.stop()
    # THEN the stuck interpreter was a critical finding, captured under its own name
    assert code == 0, watch.stderr
    assert any(" interpreter-stuck" in line for line in watch.findings("critical")), watch.lines
    (line,) = watch.captures()
    assert "interpreter stuck held" in line, line
    stamp = _stamps([line])[0]
    snapshots = read_snapshots(caps / ("%s-interpreter-stuck.json" % stamp))
    # AND the capture holds py-spy's threads with the GIL holder in the regex
    first = snapshots[0]
    assert first.gil_holder is not None and first.threads is not None
    holder = next(t for t in first.threads.threads if t.ident == first.gil_holder)
    assert holder.top_app_frame is not None and holder.top_app_frame.function == "regex"


def test_attach_refuses_bad_auto_snapshot_options_before_the_screen(tmp_path: Path):
    # GIVEN --auto-snapshot options that make no sense
    for bad in (["--auto-max-size", "lots"], ["--auto-cooldown", "-5"]):
        # WHEN attach is started with them
        result = run_cli(
            "attach", "1", "--auto-snapshot", *bad, "--auto-dir", str(tmp_path), timeout=30
        )
        # THEN one line and a non-zero exit, before any terminal UI or target is touched
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("cpinspect: --auto-"), result.stderr


def test_watch_says_the_target_is_gone_in_one_line_and_exits_non_zero(
    target: TargetProcess, tmp_path: Path
):
    # GIVEN watch running on the app
    watch = Watch(str(target.pid), "--dir", str(tmp_path / "caps"), "--quiet")
    wait_for(lambda: target.socket_path(), timeout=10, what="the agent's socket")

    def connected() -> bool:
        # Its session open (a socket to the agent): under CI's load 1.5 s after its start was
        # once too early, and the kill met its opening ("no process", exit 3)
        try:
            proc = psutil.Process(watch.proc.pid)
            read = getattr(proc, "net_connections", None) or proc.connections
            return bool(read(kind="unix"))
        except psutil.Error:
            return False

    wait_for(connected, timeout=60, what="watch connected to the agent")
    threading.Event().wait(1.5)  # it has polled at least once
    # WHEN the app is killed
    target.proc.kill()
    target.proc.wait(10)
    code = watch.finish(timeout=30)
    # THEN watch exits non-zero with one line saying so
    err = watch.stderr.strip().splitlines()
    assert code == 9, (code, err, watch.lines)
    assert len(err) == 1 and err[0].startswith("cpinspect: the target is gone"), err
