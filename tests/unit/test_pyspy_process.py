"""``pyspy_exec.PySpyProcess``: py-spy's output through memory files, answered as ``Popen``'s.

A Python child stands in for py-spy here: what is tested is how the output is carried (any
program's), and the real py-spy runs through it in every py-spy test of the suite.
"""

import os
import subprocess
import sys

import pytest

from cpinspect.sources import pyspy_exec
from cpinspect.sources.pyspy_exec import PySpyProcess

BIG = 5 * 1024 * 1024 + 17  # a 1,000-thread reading is ~5 MB: far past a pipe's 64 KiB


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _child(code: str) -> PySpyProcess:
    return PySpyProcess([sys.executable, "-c", code])


def test_output_and_errors_whole_as_popen_gives_them() -> None:
    code = (
        "import sys; sys.stdout.buffer.write(b'x' * %d); sys.stdout.flush();"
        " sys.stderr.write('Error: no such process'); sys.exit(1)" % BIG
    )
    before = _fds()
    proc = _child(code)
    out, err = proc.communicate(timeout=60)
    assert proc._in_memory  # memfd_create exists on every Linux this runs on
    assert out == b"x" * BIG
    assert err == b"Error: no such process"
    assert proc.returncode == 1
    assert _fds() == before  # the memory files went with the answer

    piped = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert piped.communicate(timeout=60) == (out, err)


def test_empty_output() -> None:
    proc = _child("pass")
    assert proc.communicate(timeout=30) == (b"", b"")
    assert proc.returncode == 0


def test_a_run_that_does_not_end_times_out_and_releases_when_stopped() -> None:
    before = _fds()
    proc = _child("import time; print('started', flush=True); time.sleep(60)")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.communicate(timeout=0.2)
    proc.kill()
    proc.wait(10)
    proc.release()
    proc.release()  # idempotent
    assert _fds() == before
    # Asked again after the stop: nothing to read, no error (PySpySource's closed path).
    assert proc.communicate(timeout=5) == (b"", b"")


def test_without_memfd_the_pipes_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")
    proc = pyspy_exec.spawn([sys.executable, "-c", "print('hello')"])
    assert not proc._in_memory
    out, err = proc.communicate(timeout=30)
    assert (out, err) == (b"hello\n", b"")


def test_memfd_refused_falls_back_to_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(name: str, flags: int = 0) -> int:
        calls.append(name)
        if len(calls) == 2:
            raise OSError(24, "Too many open files")
        return real(name, flags)

    real = os.memfd_create
    before = _fds()
    monkeypatch.setattr(os, "memfd_create", refuse)
    proc = pyspy_exec.spawn([sys.executable, "-c", "print('hi')"])
    assert proc.communicate(timeout=30) == (b"hi\n", b"")
    assert not proc._in_memory
    assert _fds() == before  # the first file, made before the refusal, was closed
