"""``cpinspect doctor PID`` on real CherryPy processes: the findings as text or JSON, and the exit
code a monitor reads — 0 healthy, 1 warnings, 2 critical, 3 could not inspect.

Two processes of ``tests/apps/incidents.py`` are shared by the module: a healthy one, and the
incidents one (CherryPy's defaults and broken static mounts: warnings; a starved pool staged
by one test and released after it: critical).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

from tests.conftest import wait_for
from tests.helpers import BackgroundRequests, agent_get, run_cli, spawn_ready


@dataclass
class App:
    port: int
    pid: int
    release: Path

    def pool(self) -> dict:
        from cpinspect.attach.discovery import find_agent

        _, body = agent_get(find_agent(self.pid).connect_path, "/v1/threads")
        return body["pools"][0]


def _start(tmp: Path, stage: str, threads: int) -> Iterator[App]:
    release = tmp / "release"
    args = ["-m", "tests.apps.incidents", "--stage", stage, "--threads", str(threads)]
    args += ["--static-dir", str(tmp / "static"), "--release-file", str(release)]
    with spawn_ready(args, tmp / "app.log", "incidents app (%s)" % stage) as m:
        yield App(int(m.group(1)), int(m.group(2)), release)


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from _start(tmp_path_factory.mktemp("doctor-incidents"), "incidents", 4)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from _start(tmp_path_factory.mktemp("doctor-healthy"), "healthy", 8)


def _idle(app: App) -> Optional[bool]:
    pool = app.pool()
    return True if pool["busy"] == 0 and pool["queued"] == 0 else None


def test_a_healthy_app_exits_0_with_no_finding(healthy: App) -> None:
    # GIVEN a well-configured process that has just served a few fast requests
    for _ in range(5):
        assert httpx.get("http://127.0.0.1:%d/" % healthy.port, timeout=10).status_code == 200
    # WHEN doctor looks at it
    result = run_cli("doctor", str(healthy.pid))
    # THEN it says healthy, names no finding, and exits 0
    assert result.returncode == 0, result.stderr
    assert "HEALTHY" in result.stdout.splitlines()[0]
    assert "no findings" in result.stdout


def test_warnings_exit_1_with_evidence_and_fix(incidents: App) -> None:
    # GIVEN the incidents process idle: the Autoreloader on, errors going nowhere, a static
    # mount on a missing directory and one relative without a root
    # WHEN doctor looks at it
    result = run_cli("doctor", str(incidents.pid))
    # THEN exit 1: warnings, no critical finding
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "WARNING" in out.splitlines()[0]
    # AND each finding is printed with its evidence and its fix
    assert "⚠ WARNING   the Autoreloader is on" in out
    assert "engine.autoreload.on = True" in out
    assert "fix: set engine.autoreload.on = False" in out
    assert re.search(r"static staticdir /gone: .* does not exist", out)
    assert "CRITICAL" not in out


def test_a_starved_pool_exits_2_and_json_names_it(incidents: App) -> None:
    # GIVEN 6 requests held by a database that never answers, on 4 workers
    if incidents.release.exists():
        incidents.release.unlink()
    BackgroundRequests(incidents.port, "/reports/export?seconds=40", 6, timeout=60)
    try:
        wait_for(
            lambda: (lambda p: p["busy"] == 4 and p["queued"] == 2)(incidents.pool()),
            timeout=20,
            what="4 busy workers and 2 queued",
        )
        # WHEN doctor --json looks at it
        result = run_cli("doctor", "--json", str(incidents.pid))
    finally:
        incidents.release.touch()
        wait_for(lambda: _idle(incidents), timeout=20, what="the pool idle again")
        incidents.release.unlink()
    # THEN exit 2, and the document says critical with the starvation first
    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "cpinspect-doctor"
    assert doc["status"] == "critical" and doc["exit_code"] == 2
    assert doc["pid"] == incidents.pid
    assert doc["polls"] == 2  # a finding: a second poll tells waiting from spinning
    first = doc["findings"][0]
    assert first["id"] == "pool-starvation:127.0.0.1:%d" % incidents.port
    assert first["severity"] == "critical"
    assert "4 of 4 workers are in GET /reports/export" in first["title"]
    assert first["fix"]
    # AND the evidence is the starved workers, each with its request
    threads = [e for e in first["evidence"] if e["kind"] == "thread"]
    assert len(threads) == 4
    assert all("GET /reports/export" in e["label"] for e in threads)
    assert all(e["ref"].isdigit() for e in threads)
    # AND the warnings follow it
    assert {f["severity"] for f in doc["findings"][1:]} == {"warning"}


def test_a_process_that_cannot_be_inspected_exits_3_in_one_line() -> None:
    # GIVEN no such process, and a bad option
    gone = run_cli("doctor", "999999")
    bad = run_cli("doctor", "--bogus", "1")
    wait = run_cli("doctor", "--wait", "soon", "1")
    # THEN each says why in one line on stderr, prints nothing else, and exits 3 (never 1 or
    # 2, which a monitor reads as the process's own warnings or critical findings)
    for result in (gone, bad, wait):
        assert result.returncode == 3, result.stderr
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert "no process with pid 999999" in gone.stderr
    assert "unrecognized arguments: --bogus" in bad.stderr


def test_dump_puts_the_findings_first_and_json_carries_them(incidents: App) -> None:
    # GIVEN the incidents process idle (warnings only)
    # WHEN `cpinspect dump` and `dump --json` run
    text = run_cli("dump", str(incidents.pid))
    as_json = run_cli("dump", "--json", str(incidents.pid))
    # THEN the text has the findings section before the threads, each with its fix
    assert text.returncode == 0, text.stderr
    findings, _, threads = text.stdout.partition("── Threads")
    assert "── Findings (" in findings and threads
    assert "⚠ WARNING   the Autoreloader is on" in findings
    assert "fix: set engine.autoreload.on = False" in findings
    # AND the JSON snapshot carries the same findings, readable back as model objects
    from cpinspect.protocol import snapshots_from_document

    [snapshot] = snapshots_from_document(json.loads(as_json.stdout))
    ids = {f.id for f in snapshot.findings}
    assert {"autoreload-on", "errors-nowhere", "static-missing:|/gone"} <= ids
    # (the routes were read for the findings, not printed: dump is about the threads)
    assert snapshot.routes is None


def test_without_the_agent_every_worker_held_exits_2_from_py_spys_stacks(spawn_target) -> None:
    from tests.helpers import wait_for_frame

    # GIVEN a CherryPy process without the agent, its 4 workers held and 2 more requests waiting
    target = spawn_target("--agent", "none", "--threads", "4")
    BackgroundRequests(target.port, "/block?seconds=30", 6, timeout=60)
    counts = []

    def held() -> Optional[bool]:
        counts.append(len(wait_for_frame(target.pid, "block")))
        return counts[-1] >= 4 or None

    try:
        wait_for(held, timeout=40, what="4 workers held")
    except AssertionError:
        raise AssertionError("py-spy saw %s threads in block()" % counts) from None
    # WHEN doctor looks at it (py-spy alone: no pool numbers)
    result = run_cli("doctor", "--json", str(target.pid))
    # THEN it is not "healthy": three polls of the same requests name the starved workers
    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["polls"] == 3
    (starved,) = [f for f in doc["findings"] if f["kind"] == "pool-starvation"]
    m = re.match(r"(\d+) of \1 workers are in GET /block at target\.py:", starved["title"])
    assert m is not None and int(m.group(1)) >= 4, starved["title"]
    assert "counted from py-spy's stacks" in starved["details"][0]
    assert len([e for e in starved["evidence"] if e["kind"] == "thread"]) == int(m.group(1))


def test_without_the_agent_doctor_and_routes_say_once_how_to_load_it_without_a_restart(
    spawn_target,
) -> None:
    # GIVEN a CherryPy process started without the agent (an app nobody prepared)
    target = spawn_target("--agent", "none")
    # WHEN doctor and routes look at it
    doctor = run_cli("doctor", str(target.pid))
    routes = run_cli("routes", str(target.pid))
    # THEN doctor says in one note that the agent is missing and names the command that loads
    # it without a restart, not a key of the TUI
    notes = [line for line in doctor.stderr.splitlines() if line.startswith("note: ")]
    about = [n for n in notes if "agent" in n]
    assert len(about) == 1, doctor.stderr
    assert "`cpinspect inject %d`" % target.pid in about[0]
    assert "i here" not in doctor.stderr
    # AND routes, which needs the agent, fails in one line that offers the same command
    assert routes.returncode == 6, routes
    (line,) = routes.stderr.strip().splitlines()
    assert "without a restart, with `cpinspect inject %d`" % target.pid in line
