"""``PySpySource``: thread stacks read from outside the process with ``py-spy dump --json``.

py-spy needs nothing from the target, so this source answers when the agent cannot (the GIL held
inside a C call freezes every Python thread, the agent's too) or is not loaded at all. It knows
less than the agent: no pool numbers, no request start times, no app roots. What it does know is
turned into the same model objects the agent produces:

* Roles, busy/idle and phases come from thread names and stack signatures (cherrypy-internals.md
  1.5), never from py-spy's ``active`` flag: a worker sleeping in a handler is "idle" to py-spy but
  busy to us.
* A busy worker's request comes from the arguments of its ``_cprequest.Request.run`` frame, which
  needs ``--locals``; the query string is redacted here, before it reaches the model.
* Elapsed times are lower bounds: py-spy has no start time, so a request is timed from the first
  dump that saw it.

Safety (py-spy#390/#587): ``--nonblocking`` by default, so the target is never paused. Native
frames need blocking mode (py-spy refuses ``--native --nonblocking``); whenever py-spy may have
paused the target and did not finish normally, the target's state is checked afterwards and a
stop we caused is undone with SIGCONT. A process that was already stopped is left stopped.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import resource
import signal
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from cpinspect.agent.procfs import CLK_TCK, task_cpu_time
from cpinspect.agent.redact import is_sensitive, redact_query
from cpinspect.errors import (
    CpinspectError,
    NoSuchProcess,
    NotPython,
    PermissionDenied,
    PySpyFailed,
    PySpyMissing,
    UnsupportedPython,
)
from cpinspect.model import (
    Frame,
    FrameLocals,
    LocalVar,
    Phase,
    RequestInfo,
    Role,
    SourceKind,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
    evolve,
)
from cpinspect.sources.pyspy_exec import dump_command, locate_pyspy, spawn

MISSING_MESSAGE = (
    "py-spy not found: `pip install py-spy` into the inspector's environment "
    "(it is a cpinspect dependency)"
)
POOLS_NOTE = "py-spy reads stacks only; the agent has them"
LONGEST_TIMEOUT = 20.0
"""A nonblocking read that ran out of time is given twice as long next time, up to this many
seconds: it never pauses the target, and on a loaded box a read of 1,006 threads with 100 of
them spinning took over 5 s every time (load average 50-120, 2026-12-01), so a fixed 5 s limit
stopped each read before its end and nothing was ever shown."""
STOP_GRACE = 1.0
"""Seconds py-spy gets to exit after SIGINT before it is killed."""
LONG_VALUE = 200
"""Local values longer than this are hidden until revealed (they may hold anything)."""


# --------------------------------------------------------------------------------------------
# Finding and running py-spy


def find_pyspy() -> str:
    """The py-spy executable (``pyspy_exec.locate_pyspy``); ``PySpyMissing`` when none."""
    found = locate_pyspy()
    if found is None:
        raise PySpyMissing(MISSING_MESSAGE)
    return found


def process_state(pid: int) -> Optional[str]:
    """The one-letter state from ``/proc/<pid>/stat`` (``R``, ``S``, ``T`` ...), None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2 :]
    return rest[:1].decode("ascii", "replace") or None


def _process_name(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


_PYTHON_MAPPING = re.compile(r"(?:^|/)(?:lib)?python\d(?:\.\d+)?[a-z]*(?:\.so[.\d]*)?$")


def maps_show_python(maps: str) -> bool:
    """Whether ``/proc/<pid>/maps`` text maps a Python binary or libpython."""
    for line in maps.splitlines():
        parts = line.split(None, 5)
        path = parts[5].strip() if len(parts) == 6 else ""
        # A binary replaced by an upgrade shows as "/usr/bin/python3.11 (deleted)".
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if _PYTHON_MAPPING.search(path):
            return True
    return False


def runs_python(pid: int) -> Optional[bool]:
    """Whether ``pid`` maps a Python binary or libpython; None when its maps are unreadable."""
    try:
        with open("/proc/%d/maps" % pid, encoding="utf-8", errors="replace") as f:
            return maps_show_python(f.read())
    except OSError:
        return None


def _ptrace_scope() -> Optional[int]:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def permission_message(pid: int, scope: Optional[int]) -> str:
    """What to do when ptrace is refused, fitted to the machine's Yama setting."""
    head = "not allowed to read the memory of pid %d (ptrace): " % pid
    if scope == 3:
        return head + (
            "ptrace is disabled on this machine (kernel.yama.ptrace_scope=3) until it reboots; "
            "load the agent instead"
        )
    if scope == 2:
        return head + (
            "only root may attach here (kernel.yama.ptrace_scope=2): run cpinspect as root, "
            "or with --cap-add=SYS_PTRACE in a container"
        )
    return head + (
        "run cpinspect as the target's user or as root; in a container add "
        "--cap-add=SYS_PTRACE; with kernel.yama.ptrace_scope=1 only a parent or root may attach"
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            if line.startswith("Error: "):
                line = line[len("Error: ") :]
            return line[:200]
    return ""


_UNSUPPORTED = re.compile(r"Unsupported version of Python:?\s*([0-9][\w.+-]*)?")
_NOT_FOUND = ("No such file or directory (os error 2)", "No such process (os error 3)")
_DENIED = ("Permission Denied", "Permission denied (os error 13)", "(os error 1)")


def error_from_pyspy(
    pid: int,
    stderr: str,
    *,
    process_exists: bool = True,
    python: Optional[bool] = None,
    state: Optional[str] = None,
    ptrace_scope: Optional[int] = None,
    paused_for: str = "native frames",
) -> CpinspectError:
    """Turn py-spy's error text into one clear error (texts captured from py-spy 0.4.3).

    ``python`` says whether the target maps a Python binary (None: unknown), ``state`` is its
    ``/proc`` state after the run, ``paused_for`` why py-spy had to pause it (``"native
    frames"`` or ``"blocking mode"``).
    """
    if not process_exists or state == "Z":
        return NoSuchProcess("no process with pid %d (it has exited)" % pid)
    text = stderr
    if any(marker in text for marker in _DENIED):
        return PermissionDenied(permission_message(pid, ptrace_scope))
    if "Failed to get process executable name" in text and any(m in text for m in _NOT_FOUND):
        return NoSuchProcess("no process with pid %d (it has exited)" % pid)
    m = _UNSUPPORTED.search(text)
    if m is not None:
        version = m.group(1)
        return UnsupportedPython(
            "this py-spy cannot read Python %s (pid %d): upgrade it with `pip install -U py-spy`"
            ", or load the agent, which works on any Python" % (version or "(unknown)", pid)
        )
    if "Failed to find python version" in text or "Couldn't find python binary" in text:
        if python is False:
            name = _process_name(pid)
            return NotPython(
                "pid %d is not a Python process%s; pick a CherryPy server's pid"
                % (pid, " (%s)" % name if name else "")
            )
        return UnsupportedPython(
            "py-spy cannot find the Python version of pid %d: upgrade it with "
            "`pip install -U py-spy`, or load the agent, which works on any Python" % pid
        )
    # py-spy's wording varies ("Failed to suspend process", or only "Failed to get stack
    # traces" when the stop lands between its checks): a stopped target it had to pause is
    # the cause either way.
    if state == "T" and paused_for:
        if paused_for == "native frames":
            fix = "or turn native frames off"
        else:
            fix = "or read it in nonblocking mode"
        return PySpyFailed(
            "pid %d is stopped (state T) and py-spy cannot pause it for %s: resume it "
            "(`kill -CONT %d`) %s" % (pid, paused_for, pid, fix)
        )
    line = _first_line(text)
    return PySpyFailed(
        "py-spy failed on pid %d: %s" % (pid, line or "it exited without saying why")
    )


# --------------------------------------------------------------------------------------------
# Frames, roles, phases (pure functions of py-spy's JSON)

_LIBRARY_PATH = re.compile(
    r"[/\\](?:site|dist)-packages[/\\]"  # installed distributions
    r"|[/\\]lib(?:64)?[/\\]python\d+(?:\.\d+)?[a-z]*[/\\]"  # the standard library
    r"|[/\\]cpinspect[/\\]agent[/\\]"  # our own agent is never the app
)


def is_app_file(filename: str) -> bool:
    """DESIGN's app rule as far as it applies from outside: no app roots are known here, so
    anything outside the standard library, installed distributions and ``<frozen …>``-style
    pseudo files counts as the app. (When the agent is live, its flags win.)"""
    if not filename or filename.startswith("<"):
        return False
    return _LIBRARY_PATH.search(filename) is None


def frame_from_pyspy(raw: Dict[str, Any]) -> Frame:
    """One py-spy frame. Names are qualified on 3.11+ only (``Root.block`` vs ``block``), so the
    function is the last component and the qualified name is kept only when there is one."""
    line = raw.get("line")
    return _frame(
        str(raw.get("name") or "?"),
        str(raw.get("filename") or ""),
        line if isinstance(line, int) else 0,
        # py-spy fills ``module`` (the shared object) for native frames only.
        raw.get("module") is not None,
    )


@functools.lru_cache(maxsize=8192)
def _frame(name: str, filename: str, lineno: int, native: bool) -> Frame:
    # Cached: a pool's workers share most of their frames, and Frame is immutable.
    if native:
        return Frame(filename=filename, lineno=lineno, function=name, native=True)
    return Frame(
        filename=filename,
        lineno=lineno,
        function=name.rsplit(".", 1)[-1],
        qualname=name if "." in name else None,
        is_app=is_app_file(filename),
    )


def _in(frame: Frame, suffix: str) -> bool:
    return frame.filename.replace("\\", "/").endswith(suffix)


def _is_request_run(frame: Frame) -> bool:
    return frame.function == "run" and _in(frame, "cherrypy/_cprequest.py")


def _is_communicate(frame: Frame) -> bool:
    return frame.function == "communicate" and _in(frame, "cheroot/server.py")


def _is_threadpool(frame: Frame) -> bool:
    return _in(frame, "cheroot/workers/threadpool.py")


_ACCEPTOR_FUNCTIONS = {"_start_http_thread"}
_OVERFLOW_FUNCTION = "_serve_unservicable"
"""cheroot's thread that answers 503 to the connections the full worker queue cannot take."""
_PLUGIN_NAMES = ("Autoreloader", "Session cleanup")


def classify_role(name: str, stack: Sequence[Frame], is_main: bool = False) -> Role:
    """A thread's role from its name and stack, mirroring the agent's rules."""
    if name.startswith("cpinspect-"):
        return Role.AGENT
    if is_main or name == "MainThread":
        return Role.MAIN
    python = [f for f in stack if not f.native]
    if name.startswith("CP Server Thread-") or any(_is_threadpool(f) for f in python):
        return Role.WORKER
    if _OVERFLOW_FUNCTION in name or any(f.function == _OVERFLOW_FUNCTION for f in python):
        return Role.OVERFLOW
    if (
        name.startswith("HTTPServer ")
        or any(fn in name for fn in _ACCEPTOR_FUNCTIONS)
        or any(f.function in _ACCEPTOR_FUNCTIONS for f in python)
    ):
        return Role.ACCEPTOR
    if name.startswith(_PLUGIN_NAMES) or any(_in(f, "cherrypy/process/plugins.py") for f in python):
        return Role.PLUGIN
    if any(_is_request_run(f) for f in python):
        return Role.WORKER  # a request served by another WSGI server (wsgiref, threads of ...)
    return Role.OTHER


def phase_from_stack(stack: Sequence[Frame]) -> Phase:
    """Where a busy worker is, from the innermost frame outwards (internals 1.5 signatures)."""
    python = [f for f in stack if not f.native]
    for i, frame in enumerate(python):
        if _in(frame, "_cpreqbody.py"):
            return Phase.READING
        if frame.function in ("read_request_headers", "read_request_line"):
            return Phase.READING
        if _in(frame, "cheroot/wsgi.py"):
            if frame.function == "write":
                return Phase.WRITING
            if frame.function == "respond":
                # Gateway.respond both calls the app and iterates the body it returned; the
                # iteration shows as __next__/close frames (CherryPy's _TrappedResponse).
                if any(f.function in ("__next__", "close") for f in python[:i]):
                    return Phase.WRITING
                return Phase.HANDLER
        if _is_request_run(frame):
            return Phase.HANDLER
    return Phase.READING


def worker_state(stack: Sequence[Frame]) -> Tuple[bool, Phase]:
    """(busy, phase) of a worker from its stack alone; py-spy's ``active`` flag cannot tell."""
    python = [f for f in stack if not f.native]
    if any(_is_communicate(f) or _is_request_run(f) for f in python):
        return True, phase_from_stack(python)
    waiting = any(f.function == "get" and _in(f, "queue.py") for f in python)
    if waiting and any(_is_threadpool(f) for f in python):
        return False, Phase.IDLE
    return False, Phase.UNKNOWN


def _called_handler(python: Sequence[Frame]) -> Optional[Frame]:
    """The frame CherryPy's ``PageHandler.__call__`` called (Python frames, innermost first)."""
    for i, frame in enumerate(python):
        if frame.function == "__call__" and _in(frame, "cherrypy/_cpdispatch.py") and i > 0:
            return python[i - 1]
    return None


def handler_frame(stack: Sequence[Frame]) -> Optional[Frame]:
    """The page handler's frame: the one CherryPy's ``PageHandler.__call__`` called, else the
    outermost app frame inside ``Request.run`` (an app helper deeper down is not the handler)."""
    python = [f for f in stack if not f.native]
    called = _called_handler(python)
    if called is not None:
        return called
    run_at = next((i for i, f in enumerate(python) if _is_request_run(f)), None)
    if run_at is None:
        return None
    inside = [f for f in python[:run_at] if f.is_app]
    return inside[-1] if inside else None


def _string_value(rep: str) -> str:
    """py-spy shows a str as ``"text"`` (quotes inside unescaped; cut long ones with ``...``)."""
    if len(rep) >= 2 and rep.startswith('"') and rep.endswith('"'):
        return rep[1:-1]
    return ""


_ADDRESS = re.compile(r" at (0x[0-9a-fA-F]+)>")


def _address(rep: str) -> Optional[str]:
    m = _ADDRESS.search(rep)
    return m.group(1) if m else None


def _locals_of(raw: Dict[str, Any]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for var in raw.get("locals") or ():
        if isinstance(var, dict) and "name" in var:
            out[str(var["name"])] = str(var.get("repr", ""))
    return out


@dataclass(frozen=True)
class _RequestSeen:
    method: str
    path: str
    query: str
    key: Optional[str]
    """What identifies this request across dumps: the Request object's address."""


def _request_from_raw(raw_frames: Sequence[Dict[str, Any]]) -> Optional[_RequestSeen]:
    """Method, path and query from the innermost ``Request.run`` frame's arguments."""
    for raw in raw_frames:
        if raw.get("module") is not None:
            continue
        filename = str(raw.get("filename") or "").replace("\\", "/")
        name = str(raw.get("name") or "")
        if not (filename.endswith("cherrypy/_cprequest.py") and name.rsplit(".", 1)[-1] == "run"):
            continue
        local = _locals_of(raw)
        if not local:
            return None  # dumped without --locals
        if "point" in local and "method" not in local:
            continue  # HookMap.run(self, point): a tool's hook (a session lock) inside the request
        return _RequestSeen(
            method=_string_value(local.get("method", "")),
            path=_string_value(local.get("path", "")),
            query=redact_query(_string_value(local.get("query_string", ""))),
            key=_address(local.get("self", "")),
        )
    return None


def _connection_key(raw_frames: Sequence[Dict[str, Any]]) -> Optional[str]:
    """The HTTPConnection being served (``self`` of ``communicate``), for workers still reading."""
    for raw in raw_frames:
        filename = str(raw.get("filename") or "").replace("\\", "/")
        if filename.endswith("cheroot/server.py") and str(raw.get("name", "")).endswith(
            "communicate"
        ):
            return _address(_locals_of(raw).get("self", ""))
    return None


LOOK_GAP = 5.0
"""Seconds between two py-spy readings with requests past which the later one is a first look
again (py-spy stood in for the agent, the agent answered for a while, now py-spy again): what
it finds running may have begun any time in the gap."""


class FirstSeen:
    """When each in-flight request was first seen: py-spy has no start times, so elapsed times
    are measured from the first dump that showed the request (a lower bound).

    Keys are (thread ident, object address). CPython reuses addresses, so a later request that
    happens to get the same address between two dumps continues the older one's time; entries
    are dropped as soon as a dump no longer shows them, which bounds the error to that case.
    """

    def __init__(self) -> None:
        self._seen: Dict[Tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self._before: Set[Tuple[int, str]] = set()
        """Keys first seen by a first look (the first update, or one after a gap of more than
        ``LOOK_GAP``): those requests were running already and began earlier, nobody knows
        when. A key first seen by any other update began since the update before it."""

    def update(
        self, observed: Iterable[Tuple[int, str]], now: float
    ) -> Dict[Tuple[int, str], float]:
        """Record this dump's keys; forget the others; return each observed key's first time."""
        keys = set(observed)
        with self._lock:
            first_look = self._last is None or now - self._last > LOOK_GAP
            self._last = now
            for key in list(self._seen):
                if key not in keys:
                    del self._seen[key]
                    self._before.discard(key)
            for key in keys:
                if key not in self._seen:
                    self._seen[key] = now
                    if first_look:
                        self._before.add(key)
            return dict(self._seen)

    def ran_before(self, key: Tuple[int, str]) -> bool:
        """Whether ``key``'s request was running already when first seen (see ``_before``)."""
        return key in self._before

    def __len__(self) -> int:
        return len(self._seen)


def cpu_times(pid: int, native_ids: Iterable[int]) -> Dict[int, float]:
    """CPU seconds of each thread of ``pid`` (those still running), from
    ``/proc/<pid>/task/<tid>/schedstat``: the run time in ns, the clock the agent reads
    (``CLOCK_THREAD_CPUTIME_ID``), and at 1,000 threads about half the kernel's work of
    ``stat``'s ticks (14 against 28-36 ms measured under load). Opened relative to the task
    directory, without Python's buffered file objects. A kernel without schedstat: ``stat``."""
    out: Dict[int, float] = {}
    try:
        tasks = os.open("/proc/%d/task" % pid, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return out
    try:
        schedstat = True
        for tid in native_ids:
            try:
                fd = os.open(
                    "%d/schedstat" % tid if schedstat else "%d/stat" % tid,
                    os.O_RDONLY,
                    dir_fd=tasks,
                )
            except FileNotFoundError:
                if schedstat and os.path.exists("/proc/%d/task/%d" % (pid, tid)):
                    schedstat = False  # no schedstat here: ticks from stat, for every thread
                    cpu = task_cpu_time(pid, tid)
                    if cpu is not None:
                        out[tid] = cpu
                continue
            except OSError:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                continue
            finally:
                os.close(fd)
            try:
                if schedstat:
                    out[tid] = int(data.split(None, 1)[0]) / 1e9
                else:
                    fields = data[data.rfind(b")") + 2 :].split()
                    out[tid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (IndexError, ValueError):
                continue
    finally:
        os.close(tasks)
    return out


KEEP_FLOOR = 1024
"""Kept ``schedstat`` descriptors are moved to numbers at or above this (``F_DUPFD_CLOEXEC``):
``select()`` cannot watch a descriptor above ``FD_SETSIZE`` (1,024), and Textual's input
thread and ``tui/hangup.py`` select on the terminal's. Held below it, 1,000 kept files would
push every descriptor opened after them (a socket, py-spy's pipes) above it."""
KEEP_SPARE = 256
"""Descriptors of the soft ``RLIMIT_NOFILE`` left free beside the kept ones, for the rest of
the inspector (sockets, pipes, log files)."""
KEEP_MOST = 8192
"""At most this many threads' files kept open; the rest are opened, read and closed."""
KEEP_IDLE = 3
"""A kept file whose thread was not asked for in this many reads is closed (a thread that
ended, or one py-spy's readings no longer list)."""


class TaskTimes:
    """``cpu_times`` with each thread's ``schedstat`` file kept open and read again with
    ``os.pread`` at offset 0 (the kernel makes its text anew for each read from the start):
    a 1,001-thread process 3.3 against 10.0 ms of CPU a read (medians of 20, load 94; 1.25
    against 6.7 ms on a quiet box), as the open and close of each file are most of the work.

    A kept file is its task's, not its number's: once the thread has exited, a read gives
    ``ESRCH`` (the kernel looks the task up by the ``struct pid`` the open pinned), never a new
    thread that reuses the number; the file is closed then and the number opened again by
    path (a new thread, or gone). Files of threads not asked for in ``KEEP_IDLE`` reads are
    closed, all of them when the pid changes or on ``close()``. The files are kept at
    ``KEEP_FLOOR`` and above, as many as the soft ``RLIMIT_NOFILE`` holds with ``KEEP_SPARE``
    to spare (the soft limit raised towards the hard one when that is needed); the others are
    read the old way. Thread-safe: a build and a poll may read at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._fds: Dict[int, int] = {}
        """Kept descriptors by native thread id."""
        self._asked: Dict[int, int] = {}
        """The read that last asked for each kept thread."""
        self._reads = 0
        self._room: Optional[int] = None
        """How many more may be kept (None: not worked out since the last change)."""
        self._closed = False
        # A reader dropped without close() (a caller's bug) must not leave up to thousands of
        # descriptors open for the rest of the process: they are closed when it is collected.
        weakref.finalize(self, _close_fds, self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, pid: int, native_ids: Iterable[int]) -> Dict[int, float]:
        """CPU seconds of each of ``native_ids`` still running, as ``cpu_times``."""
        with self._lock:
            if self._closed:
                return cpu_times(pid, native_ids)
            if pid != self._pid:
                self._close_all()
                self._pid = pid
            return self._read(pid, list(native_ids))

    def close(self) -> None:
        """Closes every kept file; later reads open, read and close each file."""
        with self._lock:
            self._closed = True
            self._close_all()

    def _read(self, pid: int, tids: List[int]) -> Dict[int, float]:
        self._reads += 1
        out: Dict[int, float] = {}
        missing: List[int] = []
        for tid in tids:
            fd = self._fds.get(tid)
            if fd is None:
                missing.append(tid)
                continue
            self._asked[tid] = self._reads
            try:
                data = os.pread(fd, 256, 0)
                out[tid] = int(data.split(None, 1)[0]) / 1e9
            except (OSError, IndexError, ValueError):
                # ESRCH: this thread has exited (its number may be a new thread's by now).
                self._drop(tid)
                missing.append(tid)
        if missing:
            out.update(self._open(pid, missing))
        for tid, when in list(self._asked.items()):
            if self._reads - when >= KEEP_IDLE:
                self._drop(tid)
        return out

    def _open(self, pid: int, tids: List[int]) -> Dict[int, float]:
        """The threads not kept yet: opened, read, and kept while there is room."""
        try:
            tasks = os.open("/proc/%d/task" % pid, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return {}
        out: Dict[int, float] = {}
        try:
            room = self._room_for(len(tids))
            for at, tid in enumerate(tids):
                try:
                    fd = os.open("%d/schedstat" % tid, os.O_RDONLY | os.O_CLOEXEC, dir_fd=tasks)
                except FileNotFoundError:
                    if os.path.exists("/proc/%d/task/%d" % (pid, tid)):
                        # No schedstat on this kernel: stat's ticks, the old way, for all.
                        out.update(cpu_times(pid, tids[at:]))
                        return out
                    continue
                except OSError:
                    continue
                try:
                    data = os.read(fd, 256)
                    out[tid] = int(data.split(None, 1)[0]) / 1e9
                except (OSError, IndexError, ValueError):
                    os.close(fd)
                    continue
                kept = self._keep(fd) if room > 0 else None
                if kept is None:
                    os.close(fd)
                    continue
                room -= 1
                self._room = room
                self._fds[tid] = kept
                self._asked[tid] = self._reads
        finally:
            os.close(tasks)
        return out

    def _keep(self, fd: int) -> Optional[int]:
        """``fd`` moved to ``KEEP_FLOOR`` or above (None, and ``fd`` still open, if it cannot)."""
        try:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, KEEP_FLOOR)
        except OSError:
            self._room = 0
            return None
        os.close(fd)
        return high

    def _room_for(self, wanted: int) -> int:
        """How many more files may be kept, the soft limit raised if that makes room."""
        if self._room is not None and (self._room >= wanted or self._room == 0):
            return self._room
        want = min(KEEP_MOST, len(self._fds) + wanted)
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            needed = KEEP_FLOOR + want + KEEP_SPARE
            if soft != resource.RLIM_INFINITY and soft < needed:
                top = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
                if top > soft:
                    try:
                        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
                        soft = top
                    except (OSError, ValueError):
                        pass
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            self._room = 0
            return 0
        limit = KEEP_FLOOR + KEEP_MOST + KEEP_SPARE if soft == resource.RLIM_INFINITY else soft
        kept = len(self._fds)
        # The kept files sit from KEEP_FLOOR up, the others mostly below it; KEEP_SPARE free
        # above the kept ones and in all.
        free = min(limit - KEEP_FLOOR - kept, limit - in_use) - KEEP_SPARE
        self._room = max(0, min(KEEP_MOST - kept, free))
        return self._room

    def _drop(self, tid: int) -> None:
        fd = self._fds.pop(tid, None)
        self._asked.pop(tid, None)
        if fd is not None:
            self._room = None
            try:
                os.close(fd)
            except OSError:
                pass

    def _close_all(self) -> None:
        _close_fds(self._fds)
        self._asked.clear()
        self._room = None


def _close_fds(fds: Dict[int, int]) -> None:
    """Close every kept descriptor of a ``TaskTimes`` (on close, a pid change, or when it was
    collected unclosed) and forget them."""
    for fd in list(fds.values()):
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def _thread_name(raw: Dict[str, Any], ident: int, is_main: bool) -> str:
    name = raw.get("thread_name")
    if isinstance(name, str) and name:
        return name
    # py-spy cannot name threads of a process that never imported threading.
    return "MainThread" if is_main else "<thread %d>" % ident


def _is_main(raw: Dict[str, Any]) -> bool:
    os_tid = raw.get("os_thread_id")
    return raw.get("thread_name") == "MainThread" or (
        isinstance(os_tid, int) and os_tid == raw.get("pid")
    )


@dataclass(frozen=True)
class _Parsed:
    thread: ThreadInfo
    """Everything but the times, which need the whole dump's keys first."""
    key: Optional[Tuple[int, str]]
    request: Optional[_RequestSeen]


def _with_installed_handler(stack: Tuple[Frame, ...]) -> Tuple[Frame, ...]:
    """DESIGN's app rule for an app installed as a distribution (salt-api's handlers live in
    site-packages): the page handler CherryPy called is app code wherever it lies, and so is
    every frame of this stack in its module's directory (the agent marks the mounted root's
    package directory; from outside the handler's is what is known). Other stacks are not
    changed: a thread that serves no request names no handler to learn from."""
    handler = _called_handler([f for f in stack if not f.native])
    if handler is None or handler.is_app or not handler.filename.startswith("/"):
        return stack
    where = os.path.dirname(handler.filename) + "/"
    return tuple(
        evolve(f, is_app=True)
        if not f.native and not f.is_app and f.filename.startswith(where)
        else f
        for f in stack
    )


def _parse_thread(raw: Dict[str, Any]) -> _Parsed:
    raw_frames = [f for f in raw.get("frames") or () if isinstance(f, dict)]
    stack = _with_installed_handler(tuple(frame_from_pyspy(f) for f in raw_frames))
    ident = int(raw["thread_id"])
    is_main = _is_main(raw)
    name = _thread_name(raw, ident, is_main)
    role = classify_role(name, stack, is_main)
    busy, phase = False, Phase.UNKNOWN
    seen: Optional[_RequestSeen] = None
    key: Optional[Tuple[int, str]] = None
    if role is Role.WORKER:
        busy, phase = worker_state(stack)
        if busy:
            seen = _request_from_raw(raw_frames)
            obj = (seen.key if seen is not None else None) or _connection_key(raw_frames)
            key = (ident, obj or "busy")
    os_tid = raw.get("os_thread_id")
    gil = raw.get("owns_gil")
    thread = ThreadInfo(
        ident=ident,
        name=name,
        role=role,
        native_id=os_tid if isinstance(os_tid, int) else None,
        busy=busy,
        phase=phase,
        stack=stack,
        owns_gil=bool(gil) if gil is not None else None,
    )
    return _Parsed(thread=thread, key=key, request=seen)


class _Built:
    """One thread of the last reading: py-spy's dict (or its JSON text), what was made of it,
    and the model thread, to reuse when the next reading shows the thread unchanged."""

    __slots__ = ("parsed", "raw", "request", "since", "thread")

    def __init__(
        self,
        raw: object,
        parsed: _Parsed,
        since: Optional[float],
        request: Optional[RequestInfo],
        thread: ThreadInfo,
    ) -> None:
        self.raw = raw
        self.parsed = parsed
        self.since = since
        self.request = request
        self.thread = thread


class DumpCache:
    """What ``threads_from_dump`` built from the last reading of one process, by thread id.

    A thread whose py-spy dict is equal to the last reading's (same frames, lines, locals)
    is not parsed again, and when its times are also the same (an idle worker) it is the same
    ``ThreadInfo`` object: the table formats nothing for it. At 1,000 threads that is most of
    the 35-45 ms a reading cost to build while py-spy stands in for the agent.
    """

    def __init__(self) -> None:
        self.kept: Dict[int, _Built] = {}
        self.order: List[Tuple[bytes, Optional[_Parsed]]] = []
        """The last text reading's pieces in order, each with what was parsed from it (None:
        not a thread with an id): ``threads_from_reading`` compares each piece with the one
        at the same place first (py-spy lists the threads in the same order each time), so
        the ~5 MB of unchanged text is compared, not hashed, and looked up by text only when
        the places shift (a thread started or ended)."""
        self.lock = threading.Lock()
        """Held while a build reads and replaces ``kept``."""
        self.last: Optional[Tuple[GilDump, float, Optional[int], ThreadsSnapshot]] = None
        """The last ``threads_from_reading`` build: its reading (the object), ``taken_at``,
        pid and snapshot. The same reading built again (a poll that shows the last reading
        while py-spy reads the next) is that snapshot: no ``/proc`` read, no new objects."""
        self.cpus: Optional[Tuple[float, Dict[int, float]]] = None
        """The CPU times the last build read from ``/proc`` (``time.monotonic()`` when, and by
        native id): the start of the next read's window when it begins right after."""
        self.times: Optional[TaskTimes] = None
        """Where the builds read CPU times (files kept open), None: ``cpu_times``. Its owner
        closes it (``PySpySource.close``)."""


def threads_from_dump(
    dump: Sequence[Dict[str, Any]],
    taken_at: float,
    first_seen: Optional[FirstSeen] = None,
    pid: Optional[int] = None,
    cache: Optional[DumpCache] = None,
) -> ThreadsSnapshot:
    """py-spy's JSON (a list of threads) as a ``ThreadsSnapshot``.

    ``first_seen`` carries request first-sight times across dumps (elapsed stays 0.0 without
    it); ``pid`` enables per-thread CPU times from ``/proc``; ``cache`` reuses what the last
    reading built for threads that did not change (the result is equal either way).
    """
    if cache is None:
        return _build(dump, taken_at, first_seen, pid, {})[0]
    with cache.lock:
        snapshot, cache.kept = _build(dump, taken_at, first_seen, pid, cache.kept, cache.times)
    return snapshot


def threads_from_reading(
    dump: GilDump,
    taken_at: float,
    pid: Optional[int] = None,
    cache: Optional[DumpCache] = None,
) -> ThreadsSnapshot:
    """Every thread of one py-spy reading, parsed thread by thread from its JSON text: a
    thread whose text is byte for byte the last reading's (a worker waiting, a sleeping
    request: most of them) is not decoded or parsed again, only the threads that moved (the
    ~100 spinners of 1,006). Equal to ``threads_from_dump(dump.threads(), ...)``; another
    layout of the text than ``GilDump.pieces`` reads is parsed whole. The same reading built
    again with the same cache is the last build's snapshot (its CPU times those read when it
    was first built, next to the reading's end)."""
    if cache is None:
        cache = DumpCache()
    last = cache.last
    if last is not None and last[0] is dump and last[1] == taken_at and last[2] == pid:
        return last[3]
    snapshot = _from_reading(dump, taken_at, pid, cache)
    cache.last = (dump, taken_at, pid, snapshot)
    if pid is not None:
        cache.cpus = (
            time.monotonic(),
            {
                t.native_id: t.cpu_time
                for t in snapshot.threads
                if t.native_id and t.cpu_time is not None
            },
        )
    return snapshot


def _from_reading(
    dump: GilDump, taken_at: float, pid: Optional[int], cache: DumpCache
) -> ThreadsSnapshot:
    pieces = dump.pieces()
    if pieces is None:
        return threads_from_dump(dump.threads(), taken_at, pid=pid, cache=cache)
    with cache.lock:
        before = cache.order
        by_text: Optional[Dict[bytes, _Parsed]] = None
        raws: List[object] = []
        parsed: List[_Parsed] = []
        order: List[Tuple[bytes, Optional[_Parsed]]] = []
        for at, piece in enumerate(pieces):
            p: Optional[_Parsed] = None
            if at < len(before) and before[at][0] == piece:
                p = before[at][1]
            else:
                if by_text is None:
                    by_text = {text: q for text, q in before if q is not None}
                p = by_text.get(piece)
            if p is None:
                raw = _thread_text(piece)
                if raw is None:  # not one thread object: the whole text says what it is
                    return threads_from_dump(dump.threads(), taken_at, pid=pid, cache=cache)
                if isinstance(raw.get("thread_id"), int):
                    p = _parse_thread(raw)
            order.append((piece, p))
            if p is None:
                continue  # no thread id: as ``_build`` skips it
            raws.append(piece)
            parsed.append(p)
        snapshot, cache.kept = _times(raws, parsed, taken_at, None, pid, cache.kept, cache.times)
        cache.order = order
    return snapshot


def _thread_text(piece: bytes) -> Optional[Dict[str, Any]]:
    try:
        # As _parse_json decodes the whole; the piece is the inside of the object.
        raw = json.loads("{%s}" % piece.decode("utf-8", "replace"))
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def _build(
    dump: Sequence[Dict[str, Any]],
    taken_at: float,
    first_seen: Optional[FirstSeen],
    pid: Optional[int],
    kept: Dict[int, _Built],
    times: Optional[TaskTimes] = None,
) -> Tuple[ThreadsSnapshot, Dict[int, _Built]]:
    raws: List[object] = []
    parsed: List[_Parsed] = []
    for raw in dump:
        if not isinstance(raw, dict) or not isinstance(raw.get("thread_id"), int):
            continue
        before = kept.get(raw["thread_id"])
        raws.append(raw)
        parsed.append(
            before.parsed if before is not None and before.raw == raw else _parse_thread(raw)
        )
    return _times(raws, parsed, taken_at, first_seen, pid, kept, times)


def _times(
    raws: Sequence[object],
    parsed: Sequence[_Parsed],
    taken_at: float,
    first_seen: Optional[FirstSeen],
    pid: Optional[int],
    kept: Dict[int, _Built],
    times: Optional[TaskTimes] = None,
) -> Tuple[ThreadsSnapshot, Dict[int, _Built]]:
    """The model threads of parsed py-spy threads: request times from ``first_seen``, CPU
    times from ``/proc``, the last reading's object kept where nothing changed."""
    started: Dict[Tuple[int, str], float] = {}
    if first_seen is not None:
        started = first_seen.update((p.key for p in parsed if p.key is not None), taken_at)

    cpus: Dict[int, float] = {}
    if pid is not None:
        tids = [p.thread.native_id for p in parsed if p.thread.native_id]
        cpus = times.read(pid, tids) if times is not None else cpu_times(pid, tids)
    built: Dict[int, _Built] = {}
    threads: List[ThreadInfo] = []
    for raw, p in zip(raws, parsed):
        thread = p.thread
        before = kept.get(thread.ident)
        same = before is not None and before.parsed is p
        elapsed: Optional[float] = None
        since: Optional[float] = None
        ran_before = False
        if p.key is not None and first_seen is not None:
            # Without first sightings (a session's py-spy beside its agent) how long a request
            # has run is unknown, not 0.0 s: the carried join takes the agent's (merge.py).
            since = started.get(p.key, taken_at)
            ran_before = first_seen.ran_before(p.key)
            # A request this very look found running (a one-shot dump, an attach) has run for
            # an unknown time, not ">= 0.0 s"; from the next look on, at least since this one.
            elapsed = None if ran_before and since >= taken_at else max(0.0, taken_at - since)
        request: Optional[RequestInfo] = None
        if before is not None and same and before.since == since:
            request = before.request
        elif p.request is not None and (p.request.method or p.request.path):
            handler = handler_frame(thread.stack)
            request = RequestInfo(
                method=p.request.method,
                path=p.request.path,
                query=p.request.query,
                started_at=since,
                handler=handler.display_name if handler is not None else None,
                source="py-spy",
                started_before=ran_before,
            )
        cpu = cpus.get(thread.native_id) if thread.native_id else None
        if (
            before is not None
            and same
            and before.request is request
            and before.thread.elapsed == elapsed
            and before.thread.cpu_time == cpu
        ):
            thread = before.thread
        else:
            thread = evolve(thread, request=request, elapsed=elapsed, cpu_time=cpu)
        built[thread.ident] = _Built(raw, p, since, request, thread)
        threads.append(thread)
    threads.sort(key=lambda t: t.ident)
    snapshot = ThreadsSnapshot(
        taken_at=taken_at,
        threads=tuple(threads),
        pools=(),
        pools_available=False,
        pools_note=POOLS_NOTE,
        requests_served=None,
    )
    return snapshot, built


def looks_like_cherrypy(snapshot: ThreadsSnapshot) -> bool:
    """Any frame in CherryPy or cheroot: how the CLI tells "not a CherryPy process"."""
    for thread in snapshot.threads:
        for frame in thread.stack:
            path = frame.filename.replace("\\", "/")
            if "/cherrypy/" in path or "/cheroot/" in path:
                return True
    return False


# --------------------------------------------------------------------------------------------
# Local variables

_SECRET_NAME = re.compile(r"cookie|session|authori[sz]ation", re.IGNORECASE)
_DICT_KEY = re.compile(r'"([^"]{1,100})"\s*:')
_QUERY_NAME = re.compile(r'(?:^|[?&;"\s])([^=&?;"\s]{1,100})=')
_AUTH_SCHEME = re.compile(r'(?:^|")\s*(?:Bearer|Basic|Digest|Token)\s+\S', re.IGNORECASE)


def is_sensitive_local(name: str, value: str) -> bool:
    """Hide a local until the user reveals its frame: a secret-looking name, a Cookie or
    Authorization value inside a WSGI environ, a dict key or query parameter that looks secret
    inside the value, credentials, or anything long (py-spy cuts strings at about 128
    characters: a cut string is long)."""
    if is_sensitive(name) or _SECRET_NAME.search(name):
        return True
    if len(value) > LONG_VALUE or value.endswith('..."'):
        return True
    if "HTTP_COOKIE" in value or "HTTP_AUTHORIZATION" in value:
        return True
    if _AUTH_SCHEME.search(value):
        return True
    if any(is_sensitive(key) for key in _DICT_KEY.findall(value)):
        return True
    return any(is_sensitive(key) for key in _QUERY_NAME.findall(value))


def locals_from_dump(
    dump: Sequence[Dict[str, Any]], ident: int, taken_at: float
) -> Optional[ThreadLocals]:
    """The locals of one thread from a ``--locals`` dump; None if the thread is not in it.
    Values stay unredacted: ``sensitive`` tells the UI which to hide."""
    for raw in dump:
        if not isinstance(raw, dict) or raw.get("thread_id") != ident:
            continue
        frames: List[FrameLocals] = []
        for raw_frame in raw.get("frames") or ():
            if not isinstance(raw_frame, dict):
                continue
            variables = tuple(
                LocalVar(
                    name=str(var.get("name", "")),
                    value=str(var.get("repr", "")),
                    is_arg=bool(var.get("arg")),
                    sensitive=is_sensitive_local(
                        str(var.get("name", "")), str(var.get("repr", ""))
                    ),
                )
                for var in raw_frame.get("locals") or ()
                if isinstance(var, dict)
            )
            frames.append(FrameLocals(frame=frame_from_pyspy(raw_frame), variables=variables))
        return ThreadLocals(
            ident=ident,
            name=_thread_name(raw, ident, _is_main(raw)),
            taken_at=taken_at,
            frames=tuple(frames),
        )
    return None


# --------------------------------------------------------------------------------------------
# The source


class PySpySource:
    """Reads one process with py-spy. Raises ``CpinspectError`` subclasses, one line each.

    Calls are serialized: two py-spy processes pausing one target would fight over ptrace.
    """

    kind = SourceKind.PYSPY
    label = "py-spy"

    def __init__(
        self,
        pid: int,
        executable: Optional[str] = None,
        timeout: float = 5.0,
        nonblocking: bool = True,
        native: bool = False,
        clock: Callable[[], float] = time.time,
        requests: bool = True,
    ) -> None:
        self.pid = pid
        self.executable = executable if executable is not None else find_pyspy()
        self.timeout = timeout
        self.stretch = True
        """A nonblocking read stopped at ``timeout`` doubles it for the next (up to
        ``LONGEST_TIMEOUT``); a read that may pause the target never does."""
        self.nonblocking = nonblocking
        self.native = native
        """Include C frames. py-spy needs blocking mode for them, so they pause the target."""
        self.requests = requests
        """Read busy workers' requests (``--locals``); off saves py-spy work when the agent
        supplies requests anyway."""
        self.clock = clock
        self._first_seen = FirstSeen()
        self.task_times = TaskTimes()
        """The target's threads' CPU times, their ``schedstat`` files kept open (closed by
        ``close``); the session's builds read them here too."""
        self._built = DumpCache()
        self._built.times = self.task_times
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._adopted: Optional[Tuple[List[str], subprocess.Popen[bytes]]] = None
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    def threads(self) -> ThreadsSnapshot:
        """Every thread, stamped (``taken_at``) with the end of py-spy's read: py-spy reads
        the threads one after another over the whole read, so the oldest was read up to the
        read's length earlier (0.03 s at 8 threads, 0.6-2.8 s at 1,000)."""
        dump = self._dump(with_locals=self.requests, native=self.native)
        return threads_from_dump(
            dump, self.clock(), self._first_seen, pid=self.pid, cache=self._built
        )

    def thread_locals(self, ident: int) -> ThreadLocals:
        # Without --native: native frames have no locals, and it keeps the dump nonblocking.
        dump = self._dump(with_locals=True, native=False)
        found = locals_from_dump(dump, ident, self.clock())
        if found is None:
            raise NoSuchProcess(
                "thread %d is no longer running in pid %d (its work may have finished)"
                % (ident, self.pid)
            )
        return found

    def raw_dump(self, locals: bool = False) -> List[Dict[str, Any]]:
        """py-spy's parsed JSON as is (unredacted: for ``dump --json`` passthrough)."""
        return self._dump(with_locals=locals, native=self.native)

    def gil_dump(self) -> GilDump:
        """A reading without locals for its GIL holder: only the holder's thread is parsed now,
        the rest of py-spy's JSON only if ``GilDump.threads()`` is asked for (py-spy standing
        in for the agent in the same poll). At 1,000 threads the whole JSON is ~5 MB, ~40 ms
        of the inspector's CPU to parse, for the one thread the agent cannot name."""
        return GilDump(self._dump_bytes(with_locals=False, native=self.native))

    def adopt(self, command: List[str], proc: subprocess.Popen[bytes]) -> None:
        """A py-spy run of ``command`` started before this source was made (``dump`` starts
        one before its imports): the next dump with the same command reads its output instead
        of starting another; a dump with another command stops it first."""
        self._adopted = (list(command), proc)

    def close(self) -> None:
        self._closed = True
        self.task_times.close()
        adopted, self._adopted = self._adopted, None
        if adopted is not None and adopted[1].poll() is None:
            self._stop(adopted[1])
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._stop(proc)

    # -- running py-spy -----------------------------------------------------------------------

    def command(self, with_locals: bool, native: bool) -> List[str]:
        return dump_command(self.executable, self.pid, with_locals, native, self.nonblocking)

    def _dump(self, with_locals: bool, native: bool) -> List[Dict[str, Any]]:
        return _parse_json(self._dump_bytes(with_locals, native))

    def _dump_bytes(self, with_locals: bool, native: bool) -> bytes:
        """py-spy's output (JSON not parsed yet), or the ``CpinspectError`` it failed with."""
        args = self.command(with_locals, native)
        may_pause = "--nonblocking" not in args
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                if self._closed:
                    raise PySpyFailed("the py-spy source for pid %d is closed" % self.pid)
                before = process_state(self.pid)
                if before is None or before == "Z":
                    raise NoSuchProcess("no process with pid %d (it has exited)" % self.pid)
                stdout, stderr, code = self._run(args, before, may_pause)
            if code == 0:
                return stdout
            state = process_state(self.pid)
            if before == "T" and state not in (None, "Z"):
                # Stopped when py-spy began: the stop is the cause, whatever /proc reads the
                # moment py-spy's ptrace let go of it (once under load: not "T").
                state = "T"
            err = error_from_pyspy(
                self.pid,
                stderr.decode("utf-8", "replace"),
                process_exists=state is not None,
                python=runs_python(self.pid),
                state=state,
                ptrace_scope=_ptrace_scope(),
                paused_for=("native frames" if native else "blocking mode") if may_pause else "",
            )
            # Without pausing, py-spy may read a stack while it changes and fail on it: one more
            # try. Errors that name a cause (permission, version, no process) will not change.
            if attempt == 1 and not may_pause and type(err) is PySpyFailed:
                continue
            raise err

    def _run(self, args: List[str], before: str, may_pause: bool) -> Tuple[bytes, bytes, int]:
        adopted, self._adopted = self._adopted, None
        if adopted is not None and adopted[0] != args:
            self._stop(adopted[1])
            adopted = None
        try:
            proc = (
                adopted[1]
                if adopted is not None
                else spawn(args)  # its own session: we stop it ourselves, then check the target
            )
        except FileNotFoundError:
            raise PySpyMissing(
                "py-spy not found at %s: `pip install py-spy` into the inspector's environment "
                "(it is a cpinspect dependency)" % self.executable
            ) from None
        except PermissionError:
            raise PySpyMissing(
                "cannot execute py-spy at %s (permission denied): reinstall it with "
                "`pip install --force-reinstall py-spy`" % self.executable
            ) from None
        self._proc = proc
        if self._closed:
            # close() came while it started (and found no process to stop): stop it here.
            self._stop(proc)
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            resumed = self._resume_if_we_stopped(before)
            limit = self.timeout
            if not may_pause and self.stretch and limit < LONGEST_TIMEOUT:
                # Nothing paused: the next read may take longer (LONGEST_TIMEOUT).
                self.timeout = min(LONGEST_TIMEOUT, 2 * limit)
            raise PySpyFailed(
                "py-spy did not answer within %g s on pid %d and was stopped%s; try again "
                "(a busy machine or a huge process can slow it)"
                % (limit, self.pid, self._resume_note(before, resumed))
            ) from None
        except BaseException:
            # KeyboardInterrupt or close() from another thread: never leave the target paused.
            self._stop(proc)
            self._resume_if_we_stopped(before)
            raise
        finally:
            self._proc = None
        if may_pause or proc.returncode < 0:
            # py-spy#390: a blocking dump could leave its target paused even when it finished.
            self._resume_if_we_stopped(before)
        if proc.returncode < 0:
            if self._closed:
                raise PySpyFailed("the py-spy source for pid %d was closed" % self.pid)
            raise PySpyFailed(
                "py-spy was killed by signal %d while reading pid %d" % (-proc.returncode, self.pid)
            )
        return stdout, stderr, proc.returncode

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGINT first (py-spy detaches cleanly from a paused target), then SIGKILL."""
        try:
            proc.send_signal(signal.SIGINT)
        except OSError:
            pass
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait long
                pass
        release = getattr(proc, "release", None)  # PySpyProcess: its output files
        if release is not None:
            release()

    def _resume_if_we_stopped(self, before: str) -> bool:
        """SIGCONT the target if it is stopped now and was not before we ran py-spy."""
        if before == "T":
            return False  # someone else stopped it: not ours to resume
        if process_state(self.pid) != "T":
            return False
        try:
            os.kill(self.pid, signal.SIGCONT)
        except OSError:
            return False
        return True

    def _resume_note(self, before: str, resumed: bool) -> str:
        if resumed:
            return " (it had left the target paused: resumed it)"
        if before == "T":
            return " (the target was already stopped, state T, and is left so)"
        return ""


def _parse_json(stdout: bytes) -> List[Dict[str, Any]]:
    text = stdout.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        shown = _first_line(text)[:120] or "(nothing)"
        raise PySpyFailed("py-spy printed something that is not a JSON thread list: %s" % shown)
    return data


_OWNS_GIL = b'"owns_gil"'
_THREAD_ID = b'"thread_id"'
_OBJECT_START = re.compile(rb"\{\s*\"pid\"")
_KEY_LEAD = re.compile(rb"\r?\n +")
"""How a key of a thread object opens in py-spy's layout: a line of its own, indented."""
_VALUE_END = (b",", b"\n", b"\r", b"")


class GilDump:
    """One py-spy reading (its JSON output) parsed only as far as it is read.

    ``holders`` are the threads that own the GIL. py-spy's own layout (an indented list of
    objects, each opening on a line of its own) is cut into one piece per thread once, and
    each piece's ``"owns_gil"`` key read where py-spy prints it (its sixth key): only a holder's
    piece is parsed (checked: an object whose ``owns_gil`` is true, with an int ``thread_id``),
    so a reading costs about one pass over its text (~5 MB at 1,000 threads). Any other text is
    read as before: a JSON string cannot hold ``"owns_gil": true`` with its quotes unescaped, so
    only a thread's own key matches, and each match is parsed as the one thread object around it
    (checked: an object with a ``thread_id`` whose ``owns_gil`` is true, spanning the match).
    Anything else — another layout of py-spy's JSON, output that is not a list — parses the
    whole text instead, with ``_parse_json``'s error for bad output.
    """

    def __init__(self, stdout: bytes) -> None:
        self._stdout = stdout
        self._threads: Optional[List[Dict[str, Any]]] = None
        self._pieces: Optional[List[bytes]] = None
        """Cut once (``[]``: the text is not cut, or holds no thread)."""
        self._counted: Optional[int] = None
        pieces = _split_threads(stdout)
        found = _holders_of(pieces) if pieces else None
        if found is not None:
            self._counted = len(pieces)  # each one has its "thread_id" key (_holders_of)
        else:
            # Not the layout read piece by piece: from the whole text (not from the pieces, so
            # that bad output fails naming its own first line).
            found = _holders_in(stdout)
            if found is None:
                found = [t for t in self.threads() if t.get("owns_gil")]
            else:
                self._counted = stdout.count(_THREAD_ID)
        self._pieces = pieces
        if pieces:
            # The pieces hold all of it: the text (~5 MB at 1,000 threads, a block of its own
            # that goes back to the system) is not kept beside them.
            self._stdout = b""
        self.holders: List[Dict[str, Any]] = found

    def count(self) -> int:
        """How many threads the reading holds, without parsing it when the text is a layout
        read without parsing it: one per ``"thread_id"`` key (a JSON string cannot hold that
        text with its quotes unescaped), in py-spy's layout one per piece (each piece has one,
        or it is not read that way). Otherwise every object of the parsed list."""
        if self._threads is None and self._counted is not None:
            return self._counted
        return len(self.threads())

    def threads(self) -> List[Dict[str, Any]]:
        """Every thread of the reading (the whole JSON parsed, once)."""
        if self._threads is None:
            if self._pieces:  # the text was let go once cut: the same list from its pieces
                text = b"[{" + b"},{".join(self._pieces) + b"}]"
                self._threads = _parse_json(text)
            else:
                self._threads = _parse_json(self._stdout)
        return self._threads

    def pieces(self) -> Optional[List[bytes]]:
        """The JSON text inside each thread object's braces, in order, or None when the text
        is not laid out as py-spy prints it (an indented list of objects, each opening on a
        line of its own). A JSON string holds no raw newline, so a line break followed by the
        list's own indentation and ``},`` can only be the end of one thread object: the text
        is cut there without being decoded (once, when the reading is made).
        ``threads_from_reading`` parses the pieces."""
        return self._pieces or None


def _holders_of(pieces: List[bytes]) -> Optional[List[Dict[str, Any]]]:
    """The GIL holders of py-spy's layout read from its pieces (``_split_threads``), or None
    when a piece is not what this reads safely (the caller reads the whole text then).

    A thread object's keys open each on a line of its own at one indentation (the first
    piece's first line tells which), deeper values further in, and a JSON string holds no raw
    newline: so a line break, that indentation and ``"owns_gil"`` can only be the object's own
    key, and py-spy prints it near the start (pid, thread_id, thread_name, os_thread_id, active,
    owns_gil, frames): ``find`` stops there instead of going through the frames. Each piece must
    open with a key at that indentation (a piece that does not is not one object: the cut
    before an empty ``{}``), have its ``"thread_id"`` key before ``"owns_gil"`` (``count``
    counts the pieces) and ``true`` or ``false`` after it; a holder's piece is parsed and
    checked. (py-spy prints each key once; a piece with a key twice would be read by its
    first.)"""
    first = pieces[0]
    quote = first.find(b'"')
    lead = first[:quote]
    if quote < 0 or _KEY_LEAD.fullmatch(lead) is None:
        return None
    gil_key, id_key = lead + _OWNS_GIL, lead + _THREAD_ID
    not_held = gil_key + b": false,"  # py-spy's line for a thread that does not hold it
    holders: List[Dict[str, Any]] = []
    for piece in pieces:
        at = piece.find(gil_key)
        if at < 0 or not piece.startswith(lead) or piece.find(id_key, 0, at) < 0:
            return None  # not one thread object in this layout, or without those keys
        if piece.startswith(not_held, at):
            continue  # most of them: nothing more to look at
        at += len(gil_key)
        if piece[at : at + 1] != b":":
            return None
        at += 2 if piece[at + 1 : at + 2] == b" " else 1
        if piece.startswith(b"false", at):
            holder, at = False, at + 5
        elif piece.startswith(b"true", at):
            holder, at = True, at + 4
        else:
            return None
        if piece[at : at + 1] not in _VALUE_END:
            return None  # "falsely", "true1": not JSON; the whole parse says what it is
        if not holder:
            continue
        try:
            # As _parse_json decodes the whole; the piece is the inside of the object.
            thread = json.loads("{%s}" % piece.decode("utf-8", "replace"))
        except ValueError:
            return None
        if (
            not isinstance(thread, dict)
            or thread.get("owns_gil") is not True
            or not isinstance(thread.get("thread_id"), int)
        ):
            return None
        holders.append(thread)
    return holders


def _holders_in(stdout: bytes) -> Optional[List[Dict[str, Any]]]:
    """The GIL holders' thread objects read from py-spy's JSON text, or None when the text
    is not what this reads safely (the caller parses all of it then)."""
    head, tail = stdout[:64].lstrip(), stdout[-64:].rstrip()
    if not head.startswith(b"[") or not tail.endswith(b"]"):
        return None
    # Every thread has the key: each one must be followed by ``true`` or ``false`` as written
    # here (pretty or compact JSON), or this is a layout it does not read. bytes.count and
    # find, not a regular expression: a few ms over 5 MB instead of ~10.
    keys = stdout.count(_OWNS_GIL)
    for colon in (b": ", b":"):
        true = _OWNS_GIL + colon + b"true"
        found = _all(stdout, true)
        if len(found) + stdout.count(_OWNS_GIL + colon + b"false") == keys:
            break
    else:
        return None
    decoder = json.JSONDecoder()
    holders: List[Dict[str, Any]] = []
    end = 0
    for at in found:
        if at < end:
            return None  # inside the thread just read: not the layout this expects
        start = stdout.rfind(b"{", end, at)
        while start >= 0 and not _OBJECT_START.match(stdout, start):
            start = stdout.rfind(b"{", end, start)
        if start < 0:
            return None
        parsed = _object_at(decoder, stdout, start)
        if parsed is None:
            return None
        thread, end = parsed
        if (
            not isinstance(thread, dict)
            or thread.get("owns_gil") is not True
            or not isinstance(thread.get("thread_id"), int)
            or end <= at + len(true)
        ):
            return None
        holders.append(thread)
    return holders


_LIST_HEAD = re.compile(rb"[ \t\n\r]*\[(\r?\n)( +)\{\r?\n")
"""The start of py-spy's layout, after any JSON whitespace (as ``json.loads`` skips it)."""
_JSON_SPACE = b" \t\n\r"


def _split_threads(stdout: bytes) -> List[bytes]:
    """``GilDump.pieces``: the inside of each thread object (between its braces), or ``[]``
    (not a layout cut here). Offsets rather than ``strip()``: no copy of the whole text (py-spy
    ends it with a newline)."""
    head = _LIST_HEAD.match(stdout)
    if head is None:
        return []
    newline, indent = head.group(1), head.group(2)
    close = newline + indent + b"}"
    end = len(stdout)
    while end and stdout[end - 1] in _JSON_SPACE:
        end -= 1
    if not stdout.endswith(close + newline + b"]", 0, end):
        return []
    # From just inside the first object's "{" to just before the last one's closing brace,
    # each piece sliced from the text itself: no copy of the whole body first (~5 MB at
    # 1,000 threads, once a read, in whichever thread builds it). One split of the whole text
    # (in C: the loop of find and slice it replaces cost 15-30 % more at 1,000 threads; the
    # search itself is most of it, ~1.2 ns a byte: the indentation's spaces are the text's
    # commonest byte, so bytes.find can seldom skip ahead), then the first piece cut after
    # the list's head and the last before its end: the separator cannot begin before the
    # first "{" (nothing but whitespace, "[" and the head is there) nor reach past the last
    # "}" (no "{" after it), so the cuts are those between the two.
    start = head.end(2) + 1
    last = end - len(newline) - 1 - len(close)
    pieces = stdout.split(close + b"," + newline + indent + b"{")
    if len(pieces) == 1:
        return [stdout[start:last]]
    pieces[0] = pieces[0][start:]
    pieces[-1] = pieces[-1][: last - len(stdout)]
    return pieces


def _all(text: bytes, word: bytes) -> List[int]:
    """Where ``word`` starts in ``text``, every time."""
    found: List[int] = []
    at = text.find(word)
    while at >= 0:
        found.append(at)
        at = text.find(word, at + len(word))
    return found


def _object_at(decoder: json.JSONDecoder, stdout: bytes, start: int) -> Optional[Tuple[Any, int]]:
    """The JSON value that starts at byte ``start`` and the byte offset just after it: read
    from a window of the text that grows until it holds the whole value (a thread without
    locals is a few KiB; the rest of a 5 MB reading is never decoded for it)."""
    size = 1 << 16
    while True:
        window = stdout[start : start + size]
        text = window.decode("utf-8", "replace")  # as _parse_json decodes the whole
        try:
            value, length = decoder.raw_decode(text)
        except ValueError:
            if start + size >= len(stdout):
                return None
            size *= 4
            continue
        return value, start + len(text[:length].encode("utf-8", "replace"))
