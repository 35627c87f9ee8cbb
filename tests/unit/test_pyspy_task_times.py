"""``TaskTimes`` (issue 13): the target's threads' ``schedstat`` files kept open and read again
with ``pread``, against a real process whose threads start and end on request.

What it must get right: the same CPU times ``cpu_times`` reads; a thread that exits (its kept
file reads ``ESRCH``) and a number reused by a new thread (the kept file is the old task's);
new threads; files of threads no longer asked for, of another pid and on ``close`` closed; the
kept files above ``select()``'s 1,024 so nothing else is pushed there; and a low
``RLIMIT_NOFILE`` (set in a child process): the soft limit raised towards the hard one, as
many kept as fit with room to spare, the rest read the old way.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest

from cpinspect.sources import pyspy
from cpinspect.sources.pyspy import KEEP_FLOOR, KEEP_IDLE, KEEP_SPARE, TaskTimes, cpu_times

ROOT = Path(__file__).resolve().parent.parent.parent

TARGET = textwrap.dedent(
    """
    import os, sys, threading, time
    waits = []
    def start():
        ev = threading.Event()
        ready = threading.Event()
        box = []
        def run():
            box.append(threading.get_native_id())
            ready.set()
            ev.wait()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        ready.wait()
        waits.append((ev, t, box[0]))
        return box[0]
    for _ in range(int(sys.argv[1])):
        start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("start"):
            print(start(), flush=True)
        elif line.startswith("stop"):
            ev, t, tid = waits.pop()
            ev.set()
            t.join()
            while os.path.exists("/proc/self/task/%d" % tid):  # the OS thread ended too
                time.sleep(0.01)
            print(tid, flush=True)
    """
)


class Target:
    """A real process with ``n`` threads waiting; ``ask("start")`` starts one more, ``ask("stop")``
    ends the newest (and waits until its task is gone); both answer its native id."""

    def __init__(self, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TARGET, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        self.pid = self.proc.pid

    def ask(self, what: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def tids(self) -> List[int]:
        return sorted(int(name) for name in os.listdir("/proc/%d/task" % self.pid))

    def end(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target(20)
    try:
        yield t
    finally:
        t.end()


def own_fds() -> List[int]:
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


_EARLIER: Set[int] = set()


@pytest.fixture(autouse=True)
def earlier_fds() -> Iterator[None]:
    """The descriptors at 1,024 and above that this test found open (kept files of readers
    that other tests in the same process left to the collector): not the test's."""
    gc.collect()  # (an unclosed reader's files close when it is collected)
    _EARLIER.clear()
    _EARLIER.update(fd for fd in own_fds() if fd >= KEEP_FLOOR)
    yield
    _EARLIER.clear()


def high_fds() -> List[int]:
    """This test's descriptors at 1,024 and above: only kept files are there."""
    return [fd for fd in own_fds() if fd >= KEEP_FLOOR and fd not in _EARLIER]


def kept_fds(times: TaskTimes) -> Dict[int, int]:
    return dict(times._fds)


def test_kept_files_read_what_cpu_times_reads_and_sit_above_select(target: Target) -> None:
    # GIVEN a real process of 21 threads, all waiting (their CPU times do not move)
    tids = target.tids()
    times = TaskTimes()
    try:
        # WHEN they are read twice, the second time from the kept files
        first = times.read(target.pid, tids)
        again = times.read(target.pid, tids)
        # THEN every thread has its time, the same as the open/read/close way
        assert sorted(first) == tids
        assert again == first == cpu_times(target.pid, tids)
        # AND one file is kept for each, each a descriptor of this process at 1,024 or above
        kept = kept_fds(times)
        assert sorted(kept) == tids
        assert all(fd >= KEEP_FLOOR for fd in kept.values())
        assert set(kept.values()) <= set(own_fds())
        # AND a descriptor opened now (a socket) is not pushed up there by them
        s = socket.socket(socket.AF_UNIX)
        try:
            assert s.fileno() < KEEP_FLOOR
        finally:
            s.close()
    finally:
        times.close()
    # AND close() closes them all; reads after it still answer, keeping nothing
    assert high_fds() == []
    assert times.read(target.pid, tids) == first
    assert len(times) == 0


def test_the_kernel_reports_an_exited_threads_kept_file_as_gone(target: Target) -> None:
    # GIVEN the schedstat file of a real thread, open
    tid = target.ask("start")
    fd = os.open("/proc/%d/task/%d/schedstat" % (target.pid, tid), os.O_RDONLY)
    try:
        assert os.pread(fd, 256, 0).split()[0].isdigit()
        # WHEN the thread exits
        assert target.ask("stop") == tid
        # THEN a read of the same file fails with ESRCH (what TaskTimes takes as "gone")
        with pytest.raises(ProcessLookupError):
            os.pread(fd, 256, 0)
    finally:
        os.close(fd)


def test_a_thread_that_exits_is_dropped_and_its_file_closed(target: Target) -> None:
    # GIVEN every thread's file kept, one more thread among them
    extra = target.ask("start")
    times = TaskTimes()
    try:
        tids = target.tids()
        assert extra in times.read(target.pid, tids)
        fd = kept_fds(times)[extra]
        # WHEN that thread exits and the same ids are asked for again (py-spy's last list)
        assert target.ask("stop") == extra
        after = times.read(target.pid, tids)
        # THEN it has no time, the others all have theirs, and its kept file is closed
        assert extra not in after
        assert sorted(after) == [t for t in tids if t != extra]
        assert extra not in kept_fds(times)
        assert fd not in own_fds()
    finally:
        times.close()


def test_a_number_reused_by_a_new_thread_reads_the_new_thread(target: Target) -> None:
    # GIVEN a kept file of a thread that has exited, filed under the number of a live
    # thread (what a reused thread id looks like: the file pins the old task, not the number)
    gone = target.ask("start")
    dead = os.open("/proc/%d/task/%d/schedstat" % (target.pid, gone), os.O_RDONLY)
    assert target.ask("stop") == gone
    live = target.ask("start")
    times = TaskTimes()
    try:
        times.read(target.pid, [live])
        os.close(times._fds[live])
        times._fds[live] = dead
        # WHEN that number is read
        got = times.read(target.pid, [live])
        # THEN the value is the live thread's, read anew by path, and the dead file closed
        assert got == cpu_times(target.pid, [live])
        assert live in kept_fds(times) and kept_fds(times)[live] != dead
        with pytest.raises(OSError):  # EBADF: closed (nothing has opened since to reuse it)
            os.fstat(dead)
    finally:
        times.close()


def test_a_new_thread_is_read_and_kept(target: Target) -> None:
    times = TaskTimes()
    try:
        times.read(target.pid, target.tids())
        # WHEN a thread starts and the new list is read
        new = target.ask("start")
        got = times.read(target.pid, target.tids())
        # THEN it has its time and its file is kept beside the others
        assert new in got
        assert sorted(kept_fds(times)) == target.tids()
    finally:
        times.close()


def test_files_of_threads_no_longer_asked_for_and_of_another_pid_are_closed(
    target: Target,
) -> None:
    times = TaskTimes()
    try:
        tids = target.tids()
        times.read(target.pid, tids)
        left_out = tids[-1]
        fd = kept_fds(times)[left_out]
        # WHEN one thread is not asked for, KEEP_IDLE reads in a row
        for _ in range(KEEP_IDLE - 1):
            times.read(target.pid, tids[:-1])
            assert left_out in kept_fds(times)  # not yet: the other caller's list may have it
        times.read(target.pid, tids[:-1])
        # THEN its file is closed
        assert left_out not in kept_fds(times)
        assert fd not in own_fds()
        # AND reading another process closes every file kept for this one
        held = set(kept_fds(times).values())
        other = Target(2)
        try:
            times.read(other.pid, other.tids())
            assert sorted(kept_fds(times)) == other.tids()
            assert len(held) == len(target.tids()) - 1
            assert high_fds() == sorted(kept_fds(times).values())
        finally:
            other.end()
    finally:
        times.close()


def test_a_target_that_exits_leaves_nothing_open(target: Target) -> None:
    times = TaskTimes()
    try:
        tids = target.tids()
        times.read(target.pid, tids)
        held = set(kept_fds(times).values())
        # WHEN the target exits and its threads are read once more
        target.end()
        # THEN nothing is read and every kept file is closed
        assert times.read(target.pid, tids) == {}
        assert len(times) == 0
        assert held and high_fds() == []
    finally:
        times.close()


def test_pyspy_source_close_closes_the_kept_files(target: Target) -> None:
    source = pyspy.PySpySource(target.pid, executable=sys.executable)
    source.task_times.read(target.pid, target.tids())
    held = set(kept_fds(source.task_times).values())
    assert held
    source.close()
    assert high_fds() == []


def test_a_reader_dropped_without_close_closes_its_files_when_collected(target: Target) -> None:
    # GIVEN a py-spy source whose reader keeps the threads' files
    source = pyspy.PySpySource(target.pid, executable=sys.executable)
    source.task_times.read(target.pid, target.tids())
    assert high_fds() != []
    # WHEN its owner drops it without closing it
    del source
    gc.collect()
    # THEN its files are closed all the same
    assert high_fds() == []


BUDGET = textwrap.dedent(
    """
    import json, os, resource, sys
    from cpinspect.sources.pyspy import TaskTimes, cpu_times
    soft, hard = int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    pid = int(sys.argv[1])
    tids = [int(n) for n in os.listdir("/proc/%d/task" % pid)]
    times = TaskTimes()
    got = times.read(pid, tids)
    again = times.read(pid, tids)
    fds = [int(n) for n in os.listdir("/proc/self/fd")]
    print(json.dumps({
        "threads": len(tids),
        "read": len(got),
        "again": len(again),
        "same": again == got == cpu_times(pid, tids),
        "kept": len(times),
        "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "top_fd": max(fds),
        "in_use": len(fds),
    }))
    """
)


def budget(pid: int, soft: int, hard: int) -> Dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", BUDGET, str(pid), str(soft), str(hard)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    result: Dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def big() -> Iterator[Target]:
    t = Target(1000)
    try:
        yield t
    finally:
        t.end()


def hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else hard


@pytest.mark.parametrize("soft,hard", [(1024, 1024), (512, 512)])
def test_a_limit_at_select_s_line_keeps_nothing_and_reads_everything(
    big: Target, soft: int, hard: int
) -> None:
    # GIVEN 1,001 threads and a soft = hard limit that leaves no room above 1,024
    result = budget(big.pid, soft, hard)
    # THEN every thread is read, both times, the old way, nothing kept, the limit unchanged
    assert result["threads"] == result["read"] == result["again"] == 1001
    assert result["same"] is True
    assert result["kept"] == 0
    assert result["soft"] == soft


def test_a_low_soft_limit_is_raised_towards_the_hard_one(big: Target) -> None:
    if hard_limit() < KEEP_FLOOR + 1001 + KEEP_SPARE:
        pytest.skip("this machine's hard RLIMIT_NOFILE is below what the test needs")
    # GIVEN a soft limit of 1,024 under a high hard one
    result = budget(big.pid, 1024, hard_limit())
    # THEN the soft limit was raised to fit all 1,001 files above 1,024 with room to spare
    assert result["kept"] == result["read"] == result["threads"] == 1001
    assert result["same"] is True
    soft = result["soft"]
    assert isinstance(soft, int) and isinstance(result["top_fd"], int)
    assert result["top_fd"] < soft - KEEP_SPARE + 1


def test_a_hard_limit_short_of_all_keeps_what_fits_and_reads_the_rest(big: Target) -> None:
    if hard_limit() < 1600:
        pytest.skip("this machine's hard RLIMIT_NOFILE is below 1,600")
    # GIVEN a hard limit of 1,600: room above 1,024 for fewer than the 1,001 threads
    result = budget(big.pid, 1024, 1600)
    # THEN the soft limit is raised to it, what fits with KEEP_SPARE to spare is kept
    assert result["soft"] == 1600
    kept = result["kept"]
    assert isinstance(kept, int) and 0 < kept <= 1600 - KEEP_FLOOR - KEEP_SPARE
    in_use = result["in_use"]
    assert isinstance(in_use, int) and in_use + KEEP_SPARE <= 1600
    # AND every thread is still read, the others the old way
    assert result["read"] == result["again"] == result["threads"] == 1001
    assert result["same"] is True
