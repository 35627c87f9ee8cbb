"""Make a demo child die with the process that started it.

``DemoProcesses`` passes its pid in ``CPINSPECT_DEMO_PARENT``. The child asks Linux to send it
SIGTERM when that parent dies (``prctl(PR_SET_PDEATHSIG)``) — which also covers a parent killed
with SIGKILL, where no ``finally`` or ``atexit`` in the parent can run — and then checks that the
parent did not die before the request was made. Runs in the demo app: stdlib only, Python 3.8.
"""

import ctypes
import os
import signal
import sys

PARENT_ENV = "CPINSPECT_DEMO_PARENT"
_PR_SET_PDEATHSIG = 1
_PARENT_AT_START = os.getppid()


def expected_parent() -> int:
    """The pid this child must not outlive, or 0 when started by hand."""
    try:
        return int(os.environ.get(PARENT_ENV, "0"))
    except ValueError:
        return 0


def die_with_parent() -> None:
    """Arrange SIGTERM on the parent's death; exit at once if it is already gone."""
    parent = expected_parent()
    if parent <= 0:
        return
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the getppid() polling in the children still notices the parent's death
    # The parent may have died between fork and prctl: then we were re-parented already.
    if os.getppid() != parent:
        os._exit(0)


def parent_alive() -> bool:
    """False once the parent that started us (``DemoProcesses``, or a shell) has died.

    A dead parent shows as re-parenting: ``getppid()`` changes (to 1 or a subreaper).
    """
    return os.getppid() == (expected_parent() or _PARENT_AT_START)
