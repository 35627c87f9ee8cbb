"""The inspector's allocator (``cpinspect.memory``): glibc's arenas capped and trimmed, and the
RSS told apart by kind from ``/proc/PID/smaps``.

The allocator tests run in a child interpreter of their own: ``mallopt`` changes the process
for good, and arenas made before it stay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import pytest

from cpinspect import memory
from cpinspect.memory import Trimmer, rss_kinds

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's"
)

CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from cpinspect import memory

    tuned = memory.tune_malloc() if sys.argv[1] == "tune" else False
    start = threading.Barrier(8)
    kept = []

    def churn():
        start.wait()  # all at once: glibc gives contending threads arenas of their own
        for _ in range(200):
            blocks = [bytearray(32768) for _ in range(16)]
            kept.append(blocks[-1])

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"tuned": tuned, "kinds": memory.rss_kinds(__import__("os").getpid()),
                      "trimmed": memory.trim()}))
    """
)


def run_child(mode: str, env: Dict[str, str]) -> Dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, **env),
        check=True,
    )
    result: Dict[str, Any] = json.loads(out.stdout)
    return result


def glibc() -> bool:
    return memory._glibc() is not None


@pytest.mark.skipif(not glibc(), reason="needs glibc's mallopt")
def test_threads_allocating_at_once_share_the_capped_arenas() -> None:
    # GIVEN a process that caps glibc's arenas, and eight threads allocating at the same time
    result = run_child("tune", {})
    # THEN the cap took effect and the threads got at most ARENA_MAX - 1 arenas beside the
    # main heap (untuned, glibc allows 8 per core)
    assert result["tuned"] is True
    assert result["kinds"]["arena_count"] <= memory.ARENA_MAX - 1
    # AND the threads' memory is resident somewhere the kinds name
    assert result["kinds"]["heap"] + result["kinds"]["arenas"] > 0


@pytest.mark.skipif(not glibc(), reason="needs glibc's mallopt")
def test_the_switch_leaves_glibc_as_it_is() -> None:
    # GIVEN CPINSPECT_MALLOC=0 in the environment
    result = run_child("tune", {memory.DISABLE: "0"})
    # THEN tune_malloc changed nothing and says so
    assert result["tuned"] is False


def test_the_kinds_add_up_to_the_resident_set() -> None:
    # GIVEN this process
    kinds = rss_kinds(os.getpid())
    with open("/proc/self/status", encoding="ascii") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    # WHEN its RSS is split by kind
    total = sum(v for k, v in kinds.items() if k != "arena_count")
    # THEN every kind is there and together they are the RSS (read a moment apart: within 10 %)
    assert set(kinds) == {"heap", "arenas", "anon", "files", "arena_count"}
    assert abs(total - rss_kib / 1024) <= 0.1 * rss_kib / 1024
    # AND the interpreter's own mapped files are counted as files
    assert kinds["files"] > 0


def test_a_process_that_is_gone_has_no_kinds() -> None:
    # GIVEN a pid that ran and exited
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    # THEN its memory cannot be read: nothing, not an error
    assert rss_kinds(int(proc.stdout)) == {}


def test_the_trimmer_trims_at_most_once_a_period(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a tuned allocator (faked: trim() itself is counted, not called) and a clock
    calls: List[int] = []
    monkeypatch.setattr(memory, "_tuned", True)
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    now = [100.0]
    trimmer = Trimmer(every=10.0, clock=lambda: now[0])
    # WHEN polls ask for a trim now and then
    asked = []
    for t in (100.0, 101.0, 109.9, 110.0, 112.0, 125.0):
        now[0] = t
        asked.append(trimmer.maybe())
    # THEN the first call starts the clock, and a trim happens once every 10 s at most
    assert asked == [False, False, False, True, False, True]
    assert len(calls) == 2 == trimmer.trims


def test_the_trimmer_does_nothing_when_the_allocator_was_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an allocator not tuned (the switch, or not glibc)
    monkeypatch.setattr(memory, "_tuned", False)
    monkeypatch.setattr(memory, "trim", lambda: pytest.fail("trimmed an untuned allocator"))
    now = [0.0]
    trimmer = Trimmer(every=1.0, clock=lambda: now[0])
    # WHEN it is asked long after its period
    trimmer.maybe()
    now[0] = 100.0
    # THEN it does not trim
    assert trimmer.maybe() is False
