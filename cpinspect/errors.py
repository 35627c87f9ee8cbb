"""Errors a user can meet. Each carries what to do about it and an exit code.

``cpinspect.cli.main`` prints ``cpinspect: <message>`` on one line and exits with ``exit_code``;
a user mistake never produces a traceback.
"""

from __future__ import annotations


class CpinspectError(Exception):
    """Base class: ``str(err)`` is the whole one-line message, fix included."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(CpinspectError):
    exit_code = 2


class NoSuchProcess(CpinspectError):
    exit_code = 3


class NotPython(CpinspectError):
    exit_code = 4


class NotCherryPy(CpinspectError):
    exit_code = 4


class PermissionDenied(CpinspectError):
    exit_code = 5


class AgentNotFound(CpinspectError):
    """The process runs Python but no agent socket is open in it."""

    exit_code = 6


class StaleSocket(CpinspectError):
    exit_code = 7


class NotASocket(CpinspectError):
    exit_code = 7


class AgentUnavailable(CpinspectError):
    """The agent did not answer in time, or answered something we cannot read."""

    exit_code = 8


class EndpointError(AgentUnavailable):
    """The agent answered, but one endpoint failed (an older agent, a failing probe).

    The link is fine: other endpoints may still work, so views degrade per endpoint.
    """


class TargetGone(AgentUnavailable):
    """The target process exited (or closed the agent's socket) while we were talking to it."""

    exit_code = 9


class IncompatibleAgent(CpinspectError):
    exit_code = 10


class PySpyMissing(CpinspectError):
    """No py-spy executable next to the interpreter or on PATH."""

    exit_code = 12


class PySpyFailed(CpinspectError):
    """py-spy ran but timed out, or printed something we cannot read."""

    exit_code = 13


class UnsupportedPython(CpinspectError):
    """py-spy does not know the target's Python version."""

    exit_code = 14


class GdbMissing(CpinspectError):
    """Injection into Python < 3.14 needs gdb, and there is none on PATH."""

    exit_code = 15


class InjectionFailed(CpinspectError):
    """gdb or ``sys.remote_exec`` could not schedule the agent's bootstrap."""

    exit_code = 16


class BootstrapFailed(InjectionFailed):
    """The bootstrap ran inside the target and failed there; the message is the target's."""

    exit_code = 17


class MainThreadBusy(InjectionFailed):
    """The bootstrap was scheduled but the target's main thread never ran it."""

    exit_code = 18


class RemoteDebugDisabled(InjectionFailed):
    """Python >= 3.14 with remote debugging turned off (PYTHON_DISABLE_REMOTE_DEBUG)."""

    exit_code = 19


class SnapshotFileError(CpinspectError):
    """A snapshot file that cannot be opened: missing, unreadable, cut short, not ours, newer."""

    exit_code = 20


class SnapshotWriteError(CpinspectError):
    """A snapshot that cannot be saved where asked (no such directory, not writable, disk full)."""

    exit_code = 21
