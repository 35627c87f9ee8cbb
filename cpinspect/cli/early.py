"""py-spy's read of a ``dump`` or ``snapshot`` target, started before anything else is imported.

At 1,000 threads py-spy's read (0.5 s and more) is the longest part of a one-shot command: the
sooner it starts, the sooner the command ends. ``main`` calls ``spawn_for_words`` with the raw
command line before building the parser (every subcommand's module is imported for that, ~0.1 s);
the command then takes the process with ``take``, which hands it over only if it is the command
the parsed arguments ask for (``dump.early_pyspy_command``) and stops it otherwise. The guess
from the raw words is never trusted: it only saves time when it is right.

The agent's ``/v1/info`` and ``/v1/threads`` are asked for at the same moment, on two
connections (``sources.early_info``); the sessions and routes beside the poll
(``snapshots.beside``).

Only ``sources.pyspy_exec`` (standard library: ``subprocess``, ``shutil``, ``sysconfig``) is
imported here; not even ``typing``.
"""

from __future__ import annotations

from cpinspect.sources import pyspy_exec

TYPE_CHECKING = False  # typing itself is imported after py-spy has started
if TYPE_CHECKING:
    from subprocess import Popen
    from typing import List, Optional, Sequence, Tuple

    Early = Tuple[List[str], "Popen[bytes]"]

COMMANDS = ("dump", "snapshot")
"""The subcommands whose py-spy read is started early."""
_WITH_VALUE = ("--timeout", "--socket", "-o", "--output", "--count", "--every")
"""Options of those commands that take a value (the word after them is not the pid)."""
_OTHER_COMMAND = ("--native", "--locals", "--socket", "--help")
"""Options (or any prefix argparse would take for them) after which py-spy runs otherwise, or
not at all."""

_started: Optional[Early] = None
_exit_follows = False


def exit_follows(value: Optional[bool] = None) -> bool:
    """Whether the process ends with ``os._exit`` right after the command (``main`` run as the
    program, not called by a test); ``value`` sets it. The command then leaves the garbage
    collector off: turned back on after a 1,000-thread poll, its next collection walked every
    object the command made, 10-30 ms after everything was written (measured 2026-12-01)."""
    global _exit_follows
    if value is not None:
        _exit_follows = value
    return _exit_follows


def find_executable() -> Optional[str]:
    """py-spy's executable, found as the session's reader finds it (``sources.pyspy_exec``)."""
    return pyspy_exec.locate_pyspy()


def pyspy_command(executable: str, pid: int) -> List[str]:
    """The command the session's py-spy reader runs beside an agent (``PySpySource.command``:
    no locals, no native frames, never pausing the target)."""
    return pyspy_exec.dump_command(executable, pid)


def guess_pid(words: Sequence[str]) -> Optional[int]:
    """The pid of ``dump PID ...`` / ``snapshot PID ...`` when nothing else on the line asks
    for another py-spy command; None when unsure."""
    if not words or words[0] not in COMMANDS:
        return None
    pid: Optional[int] = None
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
            continue
        if word == "--":
            return None
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name == "-h" or (
                name.startswith("--") and any(o.startswith(name) for o in _OTHER_COMMAND)
            ):
                return None
            skip = "=" not in word and name in _WITH_VALUE
            continue
        if pid is not None or not word.isdigit():
            return None
        pid = int(word)
    return pid


def spawn(command: List[str]) -> Optional[Early]:
    """``command`` started as the session's reader starts py-spy, or None."""
    try:
        return command, pyspy_exec.spawn(command)
    except OSError:
        return None


def spawn_for_words(words: Sequence[str]) -> None:
    """Start py-spy for the command line ``words`` (without the program name) if it is a
    ``dump``/``snapshot`` by pid that reads py-spy's plain GIL-holder dump. Never raises."""
    global _started
    try:
        pid = guess_pid(words)
        if pid is None or _started is not None:
            return
        executable = find_executable()
        if executable is not None:
            _started = spawn(pyspy_command(executable, pid))
        from cpinspect.sources import early_info

        early_info.start(pid)  # the agent's info and threads, beside py-spy's read and imports
    except Exception:  # noqa: BLE001 - a guess: the command starts py-spy itself if need be
        pass


def take(command: Optional[List[str]]) -> Optional[Early]:
    """The early py-spy process if it runs ``command``; it is stopped otherwise (and None)."""
    global _started
    early, _started = _started, None
    if early is None:
        return None
    if command is not None and early[0] == command:
        return early
    stop(early[1])
    return None


def import_meanwhile(*modules: str) -> None:
    """Import ``modules`` in a daemon thread: what a command needs after its poll, imported
    while the poll waits (with the agent behind spinning workers it waits for py-spy and the
    agent's grace; the findings' modules then cost nothing after it)."""
    import importlib
    import threading

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - imported again where needed, and said there
                return

    threading.Thread(target=run, name="cpinspect-imports", daemon=True).start()


def finish() -> None:
    """After the command: stop an early py-spy it did not take, forget an info it did not."""
    exit_follows(False)
    take(None)
    from cpinspect.sources import early_info

    early_info.clear()


def stop(proc: Popen[bytes]) -> None:
    """Kill a py-spy run nobody reads, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
