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

TYPE_CHECKING = False  # not even typing before a one-shot command has started py-spy
if TYPE_CHECKING:
    from typing import Dict, List, Optional

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


def spawn(command: List[str]) -> subprocess.Popen[bytes]:
    """``command`` started with its output piped, in its own session: a Ctrl-C in the terminal
    must not reach py-spy mid-pause (py-spy#587); we stop it ourselves. Raises ``OSError``."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pyspy_env(),
        start_new_session=True,
    )
