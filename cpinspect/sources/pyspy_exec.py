"""Finding and starting py-spy: the one place both readers of it build its command.

``sources.pyspy.PySpySource`` runs py-spy through these, and so does ``cli.early``, which starts
a one-shot command's read before anything heavy is imported: the early process is kept only if
its command is exactly the one the reader would run, so both must build it here. Standard
library only, and only light modules of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading

TYPE_CHECKING = False  # not even typing before a one-shot command has started py-spy
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

EXECUTABLE = "py-spy"


def locate_pyspy() -> Optional[str]:
    """The py-spy executable: next to the running interpreter first, then the interpreter's
    scripts folder, then on PATH; None when there is none.

    Next to the interpreter comes first because py-spy is a dependency of cpinspect, so the copy
    installed with it is the version we were tested with; ``sys.executable`` is not resolved, so
    a virtualenv's ``bin/`` is searched rather than the base interpreter's.
    """
    candidates = [os.path.join(os.path.dirname(sys.executable), EXECUTABLE)]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(os.path.join(scripts, EXECUTABLE))
    for candidate in candidates:
        try:
            usable = os.path.isfile(candidate) and os.access(candidate, os.X_OK)
        except OSError:  # a directory we may not look into (another user's venv): try PATH
            usable = False
        if usable:
            return candidate
    return shutil.which(EXECUTABLE)


def dump_command(
    executable: str,
    pid: int,
    with_locals: bool = False,
    native: bool = False,
    nonblocking: bool = True,
) -> List[str]:
    """``py-spy dump --json`` of ``pid``: never pausing the target unless native frames are
    wanted (py-spy refuses ``--native`` with ``--nonblocking``)."""
    args = [executable, "dump", "--pid", str(pid), "--json"]
    if native:
        args.append("--native")
    elif nonblocking:
        args.append("--nonblocking")
    if with_locals:
        args.append("--locals")
    return args


def pyspy_env() -> Dict[str, str]:
    """This process's environment for py-spy, with one error message and no Rust backtrace
    (``RUST_BACKTRACE=1`` makes anyhow print one)."""
    return dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")


class PySpyProcess(subprocess.Popen):  # type: ignore[type-arg]  # bytes; subscripted, 3.9+
    """py-spy with its output written to memory files (``memfd_create``) rather than pipes.

    At 1,000 threads a reading is ~5 MB of JSON; through pipes ``communicate`` gathered it in
    ~160 rounds of ``select`` and 32 KiB reads in the inspector's own process every second,
    ~5 % of its CPU behind spinning workers. Here py-spy writes it all into memory the
    inspector reads once. Memory, not ``/tmp``: a full disk is a common incident. Where
    ``memfd_create`` is missing or refused, the pipes as before.

    ``communicate`` answers as ``Popen``'s does (``TimeoutExpired`` when it runs on); the files
    go with the answer, or with ``release()`` for a run stopped without one.
    """

    def __init__(self, command: List[str]) -> None:
        self._files: Optional[List[int]] = _memory_files()
        self._in_memory = self._files is not None
        # A stop from another thread (close()) releases the files while this one may read
        # them: never a closed descriptor read, nor one whose number was given out again.
        self._files_lock = threading.Lock()
        out: Any = self._files[0] if self._files is not None else subprocess.PIPE
        err: Any = self._files[1] if self._files is not None else subprocess.PIPE
        try:
            super().__init__(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=pyspy_env(),
                start_new_session=True,
            )
        except BaseException:
            self.release()
            raise

    def communicate(self, input: Any = None, timeout: Optional[float] = None) -> Tuple[Any, Any]:
        if not self._in_memory:
            return super().communicate(input, timeout)
        self.wait(timeout)  # TimeoutExpired: the caller stops it (and releases the files)
        with self._files_lock:
            if self._files is None:  # released (stopped): nothing is read any more
                return b"", b""
            out, err = self._files
            try:
                return _read_all(out), _read_all(err)
            finally:
                self._close_files()

    def release(self) -> None:
        """Close the output files (an answer read, or none wanted). Idempotent."""
        with self._files_lock:
            self._close_files()

    def _close_files(self) -> None:
        files, self._files = self._files, None
        for fd in files or ():
            try:
                os.close(fd)
            except OSError:
                pass


def _memory_files() -> Optional[List[int]]:
    create = getattr(os, "memfd_create", None)
    if create is None:
        return None
    files: List[int] = []
    try:
        files.append(create("cpinspect-pyspy-out", os.MFD_CLOEXEC))
        files.append(create("cpinspect-pyspy-err", os.MFD_CLOEXEC))
    except OSError:
        for fd in files:
            os.close(fd)
        return None
    return files


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts = []
    at = 0
    while at < size:
        part = os.pread(fd, size - at, at)
        if not part:
            break
        parts.append(part)
        at += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def spawn(command: List[str]) -> PySpyProcess:
    """``command`` started with its output captured, in its own session: a Ctrl-C in the
    terminal must not reach py-spy mid-pause (py-spy#587); we stop it ourselves. Raises
    ``OSError``."""
    return PySpyProcess(command)
