"""The inspector leaves promptly and cleanly when its terminal goes away or a signal asks.

Each test runs the real TUI on a pseudo-terminal whose master side the test holds, as sshd or
tmux do, waits until the screen shows live data, then hangs up (closes the master) or sends a
signal, and checks that the process and every descendant it had are gone within GONE_WITHIN
seconds, having burnt almost no CPU on the way out. Before the fix, a hang-up that reached the
inspector without SIGHUP (``make`` leading the session, ``setsid``, ``nohup``) left Textual's
input thread spinning on the end of file at a full core, and SIGTERM no longer ended it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import psutil
import pytest

from tests.conftest import ROOT, TargetProcess, start_target

GONE_WITHIN = 2.0
"""Seconds from the hang-up (or signal) to every process gone."""
READY_WITHIN = 25.0
"""Seconds for the TUI to show live data (the demo starts its app first; the machine is shared)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A process spinning on a dead terminal burns a whole core: CLK_TCK ticks a second, twice that
# over GONE_WITHIN. Leaving cleanly costs a few ticks (Textual's teardown, closing the session,
# the interpreter's exit: 16 to 24 at 100 Hz when this was written; 13 to 45 on 2026-12-01 on a
# quiet machine, the same for that day's code and the code of the stop before, and 52 once under
# the suite's three workers). Two fifths of a core over the window — 80 ticks at 100 Hz, against
# the 200 of a spinning process — tells the two apart with room for a loaded machine.
MAX_TICKS = int(0.4 * CLK_TCK * GONE_WITHIN)

HANGUP, TERM, INT = 128 + signal.SIGHUP, 128 + signal.SIGTERM, 128 + signal.SIGINT
CPINSPECT = [sys.executable, "-m", "cpinspect"]
LIVE = re.compile(r"cpinspect\s+pid \d+")
"""The header once the first poll has landed: the TUI is fully up."""
PICKER = re.compile(r"CherryPy processes on this machine")
_ESCAPES = re.compile(r"\x1b\[[0-9;?<>=$]*[a-zA-Z~]|\x1b\][^\x07]*\x07|\x1b[=>]")


def tui_env() -> Dict[str, str]:
    env = dict(os.environ, TERM="xterm-256color")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("TEXTUAL_DRIVER", None)
    return env


class Terminal:
    """A pseudo-terminal (100x30) with a program on it; the test holds the master side.

    ``controlling``: the program leads a new session with the terminal as its controlling
    terminal, as a login shell does, so the kernel sends it SIGHUP on hang-up. Otherwise it runs
    in the test's session, the terminal only its stdin/stdout/stderr.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        controlling: bool = True,
        ignore_sighup: bool = False,
        cwd: Optional[Path] = None,
    ) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.attrs = termios.tcgetattr(self.slave)
        self.output = b""

        def child_setup() -> None:
            if controlling:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            if ignore_sighup:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

        self.proc = subprocess.Popen(
            list(argv),
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            cwd=str(cwd or ROOT),
            env=tui_env(),
            start_new_session=controlling,
            preexec_fn=child_setup,
        )

    def text(self) -> str:
        return _ESCAPES.sub("", self.output.decode("utf-8", "replace"))

    def read(self, timeout: float) -> None:
        """Read what the program wrote within ``timeout`` (it must never block on a full pty)."""
        if self.master < 0:
            return
        if select.select([self.master], [], [], timeout)[0]:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                time.sleep(timeout)  # EIO: nobody has the terminal open any more

    def wait_for(self, pattern: re.Pattern[str], timeout: float = READY_WITHIN) -> None:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.text()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "no %r on the terminal (exit code %r); it shows: %r"
                    % (pattern.pattern, self.proc.poll(), self.text()[-1500:])
                )
            self.read(0.1)
        self.read(0.3)  # what it drew just after

    def hang_up(self) -> None:
        """What sshd or tmux do when the connection or the session goes: close the master."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)


def cpu_ticks(pid: int) -> Optional[int]:
    """utime + stime of the process (all its threads), or None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[11]) + int(fields[12])


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie waits for whoever reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def family(pid: int) -> List[psutil.Process]:
    """The process and all its descendants now (the demo's app and load, py-spy, …)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def leaves_quietly(
    tui_pid: int, everyone: List[psutil.Process], reap: Callable[[], object], what: str
) -> int:
    """After a hang-up or signal: wait (with a deadline) for every process to be gone; return
    the CPU ticks the TUI used from now until its last sight alive."""
    first = cpu_ticks(tui_pid)
    assert first is not None, f"the TUI (pid {tui_pid}) was gone before the {what}"
    last = first
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline:
        reap()
        ticks = cpu_ticks(tui_pid)
        if ticks is not None:
            last = ticks
        if not any(alive(p) for p in everyone):
            break
        time.sleep(0.02)
    survivors = [
        "%d %s (%s)" % (p.pid, " ".join(p.cmdline())[:80], p.status()) for p in everyone if alive(p)
    ]
    assert not survivors, "still running %.1f s after the %s: %s" % (
        GONE_WITHIN,
        what,
        survivors,
    )
    used = last - first
    assert used < MAX_TICKS, "the TUI used %d CPU ticks (%d/s) on its way out after the %s" % (
        used,
        CLK_TCK,
        what,
    )
    return used


def restored(term: Terminal) -> None:
    """The terminal is as it was: out of the alternate screen, cooked mode again."""
    term.read(0.2)
    assert "\x1b[?1049l" in term.output.decode("utf-8", "replace"), "alternate screen left on"
    now = termios.tcgetattr(term.slave)
    lflag = termios.ECHO | termios.ICANON | termios.ISIG
    assert now[3] & lflag == term.attrs[3] & lflag, "the terminal's modes were not restored"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetProcess]:
    """One CherryPy target with the agent, shared by the tests that attach to it."""
    started = start_target(["--agent", "config"], tmp_path_factory.mktemp("target"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: List[Terminal] = []

    def open_terminal(argv: Sequence[str], **kwargs: object) -> Terminal:
        term = Terminal(argv, **kwargs)  # type: ignore[arg-type]
        opened.append(term)
        return term

    try:
        yield open_terminal
    finally:
        for term in opened:
            term.close()


def hang_up_and_check(term: Terminal, tui_pid: int, code: Optional[int] = HANGUP) -> int:
    everyone = family(term.proc.pid)
    term.hang_up()
    used = leaves_quietly(tui_pid, everyone, term.proc.poll, "hang-up")
    if code is not None:
        assert term.proc.wait(1) == code
    return used


# --- the terminal goes away -------------------------------------------------------------------


def test_demo_leaves_with_its_app_and_load_when_the_terminal_hangs_up(
    terminal: Callable[..., Terminal],
) -> None:
    # GIVEN `cpinspect demo` (app and load generator) on a terminal it controls, fully up
    term = terminal([*CPINSPECT, "demo", "--interval", "0.5"])
    term.wait_for(LIVE)
    assert len(family(term.proc.pid)) >= 3, "the demo's app and load should be running"
    # WHEN the terminal hangs up (the kernel sends SIGHUP; stdin reads end of file)
    # THEN it, the app and the load are gone within the deadline, without spinning on the way
    hang_up_and_check(term, term.proc.pid)


def test_attach_leaves_when_the_terminal_hangs_up(
    terminal: Callable[..., Terminal], target: TargetProcess
) -> None:
    # GIVEN `cpinspect attach PID` on a live target, on a terminal it controls
    term = terminal([*CPINSPECT, "attach", str(target.pid)])
    term.wait_for(LIVE)
    # WHEN the terminal hangs up  THEN it leaves at once with 128 + SIGHUP; the target lives on
    hang_up_and_check(term, term.proc.pid)
    assert target.proc.poll() is None


def test_leaves_under_make_which_passes_no_sighup_on(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    # GIVEN `make demo`'s shape: make leads the session on the terminal, its recipe runs the demo
    # (on its own SIGHUP make waits for the recipe and never passes the signal on: the case of the
    # issue, where the inspector sees only its stdin at end of file)
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    (tmp_path / "Makefile").write_text("run:\n\t$(PYTHON) -m cpinspect demo --no-load\n")
    term = terminal([make, "-s", "-f", "Makefile", "run", f"PYTHON={sys.executable}"], cwd=tmp_path)
    term.wait_for(LIVE)
    tui = next(p for p in family(term.proc.pid) if "cpinspect" in p.cmdline())
    # WHEN the terminal hangs up
    # THEN make, the inspector and the demo's app are all gone (make re-raises its SIGHUP)
    hang_up_and_check(term, tui.pid, code=None)
    assert term.proc.wait(1) == -signal.SIGHUP


def test_leaves_under_setsid_without_a_controlling_terminal(
    terminal: Callable[..., Terminal], target: TargetProcess
) -> None:
    # GIVEN `setsid cpinspect attach PID`: a session of its own and no controlling terminal, so
    # no SIGHUP will come; the terminal is only its stdin, stdout and stderr
    setsid = shutil.which("setsid")
    if setsid is None:
        pytest.skip("setsid (util-linux) is not installed")
    term = terminal([setsid, *CPINSPECT, "attach", str(target.pid)], controlling=False)
    term.wait_for(LIVE)
    # WHEN the terminal hangs up  THEN it sees the end of file and leaves
    hang_up_and_check(term, term.proc.pid)


def test_leaves_with_sighup_ignored_as_nohup_leaves_it(
    terminal: Callable[..., Terminal], target: TargetProcess
) -> None:
    # GIVEN the inspector started with SIGHUP ignored, as `nohup` does (the real nohup would also
    # take the terminal away from it: nothing would be left to draw on)
    term = terminal([*CPINSPECT, "attach", str(target.pid)], ignore_sighup=True)
    term.wait_for(LIVE)
    # WHEN the terminal hangs up  THEN the end of file on stdin ends it all the same
    hang_up_and_check(term, term.proc.pid)


def test_picker_leaves_when_the_terminal_hangs_up(
    terminal: Callable[..., Terminal], target: TargetProcess
) -> None:
    # GIVEN `cpinspect` alone: the process picker, listing (the target among others)
    term = terminal(CPINSPECT)
    term.wait_for(PICKER)
    # WHEN the terminal hangs up  THEN the picker and whatever it was running are gone
    hang_up_and_check(term, term.proc.pid)


# --- signals, the terminal still there --------------------------------------------------------


def reaping(term: Terminal) -> Callable[[], None]:
    """While waiting for it to go: keep draining its terminal (a full pty would block its exit)
    and reap it once it exits."""

    def reap() -> None:
        term.read(0.01)
        term.proc.poll()

    return reap


def test_sigterm_stops_the_demo_and_restores_the_terminal(
    terminal: Callable[..., Terminal],
) -> None:
    # GIVEN the demo on a live terminal
    term = terminal([*CPINSPECT, "demo", "--no-load"])
    term.wait_for(LIVE)
    everyone = family(term.proc.pid)
    # WHEN it gets SIGTERM (the terminal stays; the test keeps reading it)
    term.proc.send_signal(signal.SIGTERM)

    leaves_quietly(term.proc.pid, everyone, reaping(term), "SIGTERM")
    # THEN it exited 128 + SIGTERM, its app is gone, and the terminal is back as it was
    assert term.proc.wait(1) == TERM
    restored(term)


def test_sigint_ends_attach_and_restores_the_terminal(
    terminal: Callable[..., Terminal], target: TargetProcess
) -> None:
    # GIVEN attach on a live terminal
    term = terminal([*CPINSPECT, "attach", str(target.pid)])
    term.wait_for(LIVE)
    everyone = family(term.proc.pid)
    # WHEN something sends it SIGINT (the TUI reads Ctrl-C as a key, so this comes from outside)
    term.proc.send_signal(signal.SIGINT)

    leaves_quietly(term.proc.pid, everyone, reaping(term), "SIGINT")
    # THEN it exited 128 + SIGINT and the terminal is back as it was
    assert term.proc.wait(1) == INT
    restored(term)


# --- a way out that hangs ---------------------------------------------------------------------

STUCK_APP = """
import subprocess, sys, time
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.hangup import on_forced_exit
from tests.tui.fakes import FakePoller

class StuckOnClose(FakePoller):
    def close(self):
        time.sleep(60)  # closing the session never returns

child = subprocess.Popen(["sleep", "60"], start_new_session=True)
on_forced_exit(child.kill)
InspectorApp(StuckOnClose([RuntimeError("nothing to poll")]), interval=0.5).run()
"""


def test_a_way_out_that_hangs_is_cut_at_the_deadline(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    # GIVEN an inspector whose session never finishes closing, with a child to clean up
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_APP)
    term = terminal([sys.executable, str(script)])
    term.wait_for(re.compile(r"nothing to poll"))
    # WHEN the terminal hangs up
    # THEN the deadline ends it all the same (os._exit after the registered cleanups: the child
    # is killed), still well within GONE_WITHIN and without spinning while it waited
    hang_up_and_check(term, term.proc.pid)


# --- a pipe that closes -----------------------------------------------------------------------


def test_headless_commands_are_quiet_when_their_reader_leaves(
    target: TargetProcess, tmp_path: Path
) -> None:
    # GIVEN stdout buffered as it is for users (no PYTHONUNBUFFERED) and a pipe whose reader has
    # gone already, as in `cpinspect dump PID | head -c 100` once head has its 100 bytes
    env = tui_env()
    env.pop("PYTHONUNBUFFERED", None)

    def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            return subprocess.run(
                [*CPINSPECT, *args],
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.PIPE,
                env=env,
                cwd=str(ROOT),
                timeout=30,
            )
        finally:
            os.close(write_end)

    pid = str(target.pid)
    commands = [
        ["dump", pid],  # smaller than stdout's buffer: fails in the flush at exit
        ["dump", "--json", pid],  # larger: fails in the command's own write
        ["routes", pid],
        ["ps"],
        ["snapshot", pid, "-o", str(tmp_path)],
    ]
    # WHEN each command writes into it
    results = [(args, run_into_closed_pipe(*args)) for args in commands]
    saved = sorted(tmp_path.glob("cpinspect-*.json"))
    assert saved, "snapshot wrote no file"
    results.append(
        (["open", "--text", "FILE"], run_into_closed_pipe("open", "--text", str(saved[0])))
    )
    # THEN each one exits 0 with nothing on stderr about the pipe
    for args, result in results:
        err = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 0, (args, result.returncode, err)
        for bad in ("Traceback", "Exception ignored", "BrokenPipeError"):
            assert bad not in err, (args, err)
