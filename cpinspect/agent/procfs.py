"""Reading /proc task statistics: pure, standard library only, no side effects.

Shared by the agent (CPU time of its own threads) and the inspector (CPU time of a target's
threads read by py-spy), so the inspector can import it without loading any of the agent's
probes (DESIGN.md invariant 5).
"""

import os
from typing import Optional, Union

try:
    CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - every Linux has it
    CLK_TCK = 100.0


def task_cpu_time(pid: Union[int, str], native_id: int) -> Optional[float]:
    """User + system seconds of thread ``native_id`` of process ``pid``, from /proc."""
    try:
        with open("/proc/%s/task/%d/stat" % (pid, native_id), "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (IndexError, ValueError):
        return None
