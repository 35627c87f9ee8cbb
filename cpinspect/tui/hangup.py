"""Leave promptly when the terminal goes away, and on SIGHUP, SIGTERM and SIGINT.

What Textual 8.2's Linux driver does when its terminal hangs up (an SSH connection drops, a tmux
session is killed) and nobody sends the inspector SIGHUP — ``make demo`` leads the session and,
on its own SIGHUP, waits for its recipe without passing the signal on; ``setsid`` and ``nohup``
never get it or ignore it:

* its input thread selects stdin readable, reads b"" (end of file) and selects again — 100 % of a
  core, forever, and the app never hears of it (textual#6690 stops the loop, not the app);
* its output thread dies on the first write (EIO), its queue of 30 writes fills, and the UI
  thread then blocks for good in ``Queue.put``: a SIGTERM raised there unwinds into the same
  blocked write (``stop_application_mode``), and a main thread that does get out waits in
  ``threading._shutdown`` for the input thread — not a daemon — which spins on.

``TerminalDriver``, the driver of both apps in a terminal, turns each way of leaving into
``App.exit``, from the thread that notices it: end of file or an error on stdin, a write that
fails (dropped from then on, so the UI thread never blocks on it), and SIGHUP / SIGTERM / SIGINT
(handlers installed while the app runs; a signal its starter set to be ignored stays ignored).
Each also starts a deadline: a process still here ``EXIT_DEADLINE`` seconds later (a poll stuck in
a worker, a child slow to stop) runs the cleanups registered with ``on_forced_exit`` — the demo's
children, the terminal's modes — and ends with ``os._exit``. A second signal ends it at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import termios
import threading
import time
from codecs import getincrementaldecoder
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, TextIO

from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver

if TYPE_CHECKING:
    from textual.app import App

EXIT_DEADLINE = 1.5
"""Seconds between the request to leave and ``os._exit`` if the process is still here."""
HANGUP_EXIT = 128 + signal.SIGHUP
"""The exit code when the terminal went away (as if SIGHUP had ended the process)."""
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

# What ``LinuxDriver.stop_application_mode`` writes: keyboard protocol, alternate screen, cursor,
# focus events, bracketed paste, line wrap, mouse reporting.
_RESET = (
    b"\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1004l\x1b[?2004l\x1b[?7h"
    b"\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l"
)


class _Leaving:
    """The process-wide state: has anyone asked to leave, and what to do if it takes too long."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.code: Optional[int] = None
        self.cleanups: List[Callable[[], None]] = []


_leaving = _Leaving()


def on_forced_exit(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run ``cleanup`` if the process must end with ``os._exit`` (no ``finally``, no ``atexit``).

    It runs on another thread or in a signal handler: quick, never blocking. Returns a function
    that takes it off the list again.
    """
    with _leaving.lock:
        _leaving.cleanups.append(cleanup)

    def remove() -> None:
        with _leaving.lock, contextlib.suppress(ValueError):
            _leaving.cleanups.remove(cleanup)

    return remove


def exit_requested() -> Optional[int]:
    """The exit code someone asked for with ``leave``, or None."""
    return _leaving.code


def leave(code: int) -> bool:
    """Start the deadline for the process to end with ``code``; False if it was started already."""
    with _leaving.lock:
        if _leaving.code is not None:
            return False
        _leaving.code = code
    threading.Thread(
        target=_deadline, args=(code,), name="cpinspect-exit-deadline", daemon=True
    ).start()
    return True


def _deadline(code: int) -> None:
    # A daemon thread: it does not delay a normal exit, and it still runs while the main thread
    # waits in threading._shutdown or in an atexit hook.
    time.sleep(EXIT_DEADLINE)
    force_exit(code)


def force_exit(code: int) -> NoReturn:
    """Run the registered cleanups, newest first, and end the process now."""
    with _leaving.lock:
        cleanups = list(reversed(_leaving.cleanups))
    for cleanup in cleanups:
        with contextlib.suppress(Exception):
            cleanup()
    os._exit(code)


def gone(fd: int) -> bool:
    """The far end of ``fd`` is gone: a terminal that hung up, a pipe nobody reads (no waiting)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    dead = select.POLLHUP | select.POLLERR | select.POLLNVAL
    return any(mask & dead for _, mask in events)


def _silence_dead_outputs() -> None:
    """Point stdout and stderr at /dev/null when their terminal is gone, so that nothing still
    to be written on the way out (Textual's last writes, a flush at exit) can fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if gone(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class _GuardedOutput:
    """The driver's output file, as its writer thread sees it: a write that fails ends the app
    instead of the thread (whose death would leave the UI thread blocked on its full queue), and
    every later write is dropped."""

    def __init__(self, file: TextIO, failed: Callable[[], None]) -> None:
        self._file = file
        self._failed = failed
        self._dead = False

    def _fail(self) -> None:
        if not self._dead:
            self._dead = True
            self._failed()

    def write(self, text: str) -> int:
        if not self._dead:
            try:
                return self._file.write(text)
            except (OSError, ValueError):  # EIO: hung up; ValueError: closed
                self._fail()
        return len(text)

    def flush(self) -> None:
        if not self._dead:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self._fail()

    def fileno(self) -> int:
        return self._file.fileno()


class TerminalDriver(LinuxDriver):
    """Textual's Linux driver, ending the app when its terminal goes away or a signal asks."""

    def __init__(
        self,
        app: App[Any],
        *,
        debug: bool = False,
        mouse: bool = True,
        size: Optional[tuple[int, int]] = None,
    ) -> None:
        super().__init__(app, debug=debug, mouse=mouse, size=size)
        output = self._file
        assert output is not None, "no stderr to draw on"
        self._out_fd = output.fileno()
        self._file = _GuardedOutput(output, self._hung_up)  # type: ignore[assignment]
        self._previous: Dict[int, Any] = {}
        self._remove_cleanup: Optional[Callable[[], None]] = None

    # --- application mode ----------------------------------------------------------------------

    def start_application_mode(self) -> None:
        self._install_signal_handlers()
        self._remove_cleanup = on_forced_exit(self._restore_terminal)
        super().start_application_mode()  # type: ignore[no-untyped-call]

    def stop_application_mode(self) -> None:
        super().stop_application_mode()
        if self._remove_cleanup is not None:
            self._remove_cleanup()
            self._remove_cleanup = None
        self._restore_signal_handlers()

    def _restore_terminal(self) -> None:
        """For ``force_exit``: what ``stop_application_mode`` does, without the writer thread."""
        if self.attrs_before is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fileno, termios.TCSANOW, self.attrs_before)
        if gone(self._out_fd):
            return
        with contextlib.suppress(OSError):
            # Never block on a terminal nobody reads: the process must end regardless.
            if select.select([], [self._out_fd], [], 0.2)[1]:
                os.write(self._out_fd, _RESET)

    # --- leaving -------------------------------------------------------------------------------

    def _request_exit(self, code: int) -> bool:
        """Ask the app to exit with ``code`` (any thread, or a signal handler); False if leaving
        was asked already."""
        if not leave(code):
            return False
        # The app's loop (the driver is made on it): call_soon_threadsafe is safe from another
        # thread and from a signal handler. A loop closed already means the app is on its way
        # out; the deadline holds either way.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._exit_app, code)
        return True

    def _exit_app(self, code: int) -> None:
        # After the screen's next refresh: an exit while the widgets still mount (stdin
        # unreadable from the start, as under nohup) trips Textual over its half-mounted tabs.
        self._app.call_after_refresh(self._app.exit, None, code)

    def _hung_up(self) -> None:
        """The terminal is gone (input at end of file or failing, a write failing)."""
        _silence_dead_outputs()
        self._request_exit(HANGUP_EXIT)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        first = self._request_exit(128 + signum)
        # Asked again: now. (Not for SIGHUP, which the kernel sends along with the hang-up that
        # the input thread may have seen first.)
        if not first and signum != signal.SIGHUP:
            force_exit(exit_requested() or 128 + signum)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (an app run from a test's thread)
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if previous == signal.SIG_IGN:
                continue  # nohup, or a script's `&`: the starter wants this one ignored
            self._previous[sig] = signal.SIG_DFL if previous is None else previous
            signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        while self._previous:
            sig, previous = self._previous.popitem()
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)

    # --- input ---------------------------------------------------------------------------------

    def run_input_thread(self) -> None:
        """Textual's input loop (``LinuxDriver.run_input_thread``), except that end of file or a
        read error on stdin means the terminal is gone: the app exits instead of the thread
        selecting the same readable end of file again, ten thousand times a second."""
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        parser = XTermParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        try:
            while not self.exit_event.is_set():
                for _key, mask in selector.select(0.1):
                    if not mask & selectors.EVENT_READ:
                        continue
                    try:
                        data = os.read(self.fileno, 1024 * 4)
                    except BlockingIOError:
                        continue  # a non-blocking stdin someone else read first
                    except OSError:
                        data = b""  # EIO: the terminal hung up
                    if not data:
                        self._hung_up()
                        return
                    for event in parser.feed(decode(data)):
                        self.process_message(event)
                for event in parser.tick():
                    self.process_message(event)
        finally:
            selector.close()
            with contextlib.suppress(EOFError, ParseError):
                for _event in parser.feed(""):
                    pass


def terminal_driver() -> Optional[type[Driver]]:
    """The driver for an app's ``driver_class``: ours, unless ``TEXTUAL_DRIVER`` names another
    (``textual serve`` runs apps in a browser that way)."""
    return None if os.environ.get("TEXTUAL_DRIVER") else TerminalDriver
