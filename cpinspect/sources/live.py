"""A live session on one target: polls its sources, keeps the last good data, and reconnects.

``AgentSession`` asks the agent; when py-spy can read the process too, each poll also runs it
and joins the two thread by thread (GIL holder, native frames). The agent is asked in the
background, one call at a time: a poll waits for its answer until py-spy's reading is in and
``AGENT_GRACE`` has passed. Past that, py-spy carries the poll — its fresh threads with the
agent's last requests and pools, marked older, the banner saying ``agent slow`` — and the
agent's answer, when it comes, becomes the last known (workers spinning in pure Python make the
agent queue for the GIL behind them). When the agent does not answer within about a second (or
twice its last answer's duration, when that was longer), py-spy's threads stand in for it with a
banner saying the interpreter may be stuck; the agent takes over again as soon as it answers in
time. While py-spy carries the TUI's polls, its next read starts as a poll ends (paced at the
TUI's interval, ``read_every``) and a reading that lands with no poll waiting is handed to the
TUI at once (``on_landed``), which polls and shows it rather than at its next tick. A session
may start that way: opened on an agent that was already silent (``silent=``), its first poll
shows py-spy's threads at once instead of waiting for the agent a second time. For the TUI the
log is read in the background, asked beside the agent's threads and folded into the first poll
that finds it read (``log_wait``): a poll the agent answered is not held behind one more wait
for the GIL. ``PySpySession`` is the inspector on a process without the agent: py-spy only.

When the target exits or restarts, the session keeps the last data, says so, and looks for the
same service: first the same pid (CherryPy's Autoreloader re-executes in place), then any process
with the same command line listening on the same port(s).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import psutil

from cpinspect.attach.discovery import ENABLE_HINT, find_agent
from cpinspect.errors import (
    AgentUnavailable,
    CpinspectError,
    EndpointError,
    NoSuchProcess,
    PermissionDenied,
    PySpyMissing,
    StaleSocket,
    TargetGone,
)
from cpinspect.memory import Trimmer
from cpinspect.model import (
    ListenQueue,
    ProcessInfo,
    Resolution,
    RoutesSnapshot,
    SessionsSnapshot,
    SourceKind,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
)
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource, AnsweredRead
from cpinspect.sources.base import Capability, LinkState, Update
from cpinspect.sources.listenq import listen_queues
from cpinspect.sources.logfeed import LogBatch, LogFeed
from cpinspect.sources.merge import Carried, fallback_threads, gil_holder, merge_threads
from cpinspect.sources.pacing import STRETCH
from cpinspect.sources.peers import PeerCache
from cpinspect.sources.pyspy import (
    DumpCache,
    GilDump,
    PySpySource,
    cpu_times,
    process_state,
    threads_from_dump,
    threads_from_reading,
)

INFO_EVERY = 5
"""Re-read /v1/info every N polls: engine state changes, the rest rarely does."""
NOTICE_SECONDS = 10.0
"""How long "reconnected to pid N" stays in the updates after a reconnection."""
AGENT_GRACE = 0.5
"""With py-spy's reading in hand, how long a poll still waits for the agent (from the poll's
start; never past the agent's ``timeout``). The agent answers 1,000 threads in 0.1-0.4 s, before
py-spy's 0.6-2 s read; with 100 workers spinning in pure Python it queues for the GIL behind them
and ``/v1/threads`` took 12-19 s (measured 2026-12-01): past this grace py-spy's fresh reading is
shown with the agent's last requests and pools, and the agent's answer is awaited in the
background. ``CPINSPECT_AGENT_GRACE`` (seconds) sets another."""
BACKGROUND_TIMEOUT = 30.0
"""How long the agent's answer is awaited in the background (no poll waits on it): a slow agent
still brings its requests and pools now and then; one call at most is in flight."""
LOCALS_MAX_THREADS = 100
"""While py-spy stands in for a silent agent, requests come from its ``--locals`` read only for
a process of at most this many threads: the locals read took 3.9-7.4 s at 1,006 threads (100
spinning) against 1.0-1.2 s without them, past py-spy's own 5 s limit at times. Above it, the
agent's last requests are kept on the threads still in the same handler."""
NO_REQUESTS = "no requests or pool numbers (the agent has not answered yet)"
"""What py-spy's threads lack when they stand in for an agent that never answered, read
without ``--locals``."""
NO_POOLS = "requests from py-spy's locals; no pool numbers (the agent has not answered yet)"
"""What they lack when read with ``--locals`` (a small process): the requests come from the
workers' locals, the pool numbers only the agent knows."""
CARRY_WAIT = 0.6
"""While py-spy carries the TUI's polls, how long a poll waits for py-spy's fresh reading
before showing the last one: under two thirds of the 1 s interval, so that the pacing
(``sources.pacing.STRETCH``) keeps polling every second."""
SLOW_FACTOR = 2.0
"""An agent whose last answer took longer than its timeout is slow, not silent, until twice
that long without an answer."""
RAN_PYTHON = 0.001
"""CPU seconds a thread must have run during py-spy's read to count as running…"""
RAN_SHARE = 0.1
"""…and at least this share of what the thread that ran most ran: a thread waiting for the GIL
wakes every 5 ms for a few microseconds, ~1 ms over a 1-2 s read (against the whole read for
one C call holding the GIL), while 100 spinners share the GIL about evenly."""
GIL_MOVING = "the GIL passes between threads running Python"
"""Said in the banner when, during py-spy's read, more than one thread of a target whose agent
does not answer ran (the same words as ``findings.threads.GIL_MOVING_NOTE``): busy, not stuck —
one C call holding the GIL lets no other thread run."""
CPU_REUSE = 0.5
"""The CPU times read by the last whole reading's build stand for "before the next read" when
that read begins less than this many seconds after them (``_cpu_now``)."""
REQUESTS_FRESH = 5.0
"""The agent's requests younger than this many seconds are kept rather than read from py-spy's
locals while it stands in."""


def _agent_grace() -> float:
    """``AGENT_GRACE``, or ``CPINSPECT_AGENT_GRACE`` when it is a number of seconds."""
    try:
        return max(0.0, float(os.environ.get("CPINSPECT_AGENT_GRACE", AGENT_GRACE)))
    except ValueError:
        return AGENT_GRACE


def _in_background(job: Callable[[], Any], name: str) -> Future[Any]:
    """``job()`` in a daemon thread of its own, its result (or exception) in the future: a
    one-shot command exits without waiting for an agent call nobody needs any more."""
    future: Future[Any] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


@dataclass(frozen=True)
class _Answer:
    """One background call to the agent: ``/v1/info`` (when asked) and ``/v1/threads``."""

    info: Optional[ProcessInfo]
    threads: Optional[ThreadsSnapshot]
    errors: Tuple[str, ...]
    asked_info: bool
    started: float
    """``time.monotonic()`` when the call began, and when it ended."""
    ended: float


RELOAD_HINT = "reload the agent: `cpinspect inject %d` binds its socket again (or restart the app)"


def stopped_reason(pid: Optional[int]) -> str:
    """Why a live process cannot answer at all: stopped by a signal or held by a debugger
    (``/proc`` state T or t); "" when it runs (or is gone)."""
    if pid is None:
        return ""
    state = process_state(pid)
    if state == "T":
        return (
            "pid %d is stopped (state T: SIGSTOP or Ctrl-Z), so its agent cannot answer; "
            "continue it with `kill -CONT %d`" % (pid, pid)
        )
    if state == "t":
        return "pid %d is held by a debugger (state t), so its agent cannot answer" % pid
    return ""


def _listener_pid(path: str) -> Optional[int]:
    """The pid (here) of the process listening on the Unix socket ``path`` (SO_PEERCRED), None
    when nothing listens or it cannot be told (0: outside our pid namespace)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.5)
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    pid = int(struct.unpack("3i", creds)[0])
    return pid or None


def _exited(pid: Optional[int]) -> bool:
    """The process ``pid`` is gone (or a zombie); False when there is no pid to check."""
    return pid is not None and (not psutil.pid_exists(pid) or process_state(pid) in (None, "Z"))


def socket_problem(pid: Optional[int], path: str) -> str:
    """Why ``path`` no longer leads to the agent of ``pid`` although that process still runs:
    the socket file removed, or replaced by something else (a file, another process's socket).
    "" when it does lead there, or the process is gone, or it cannot be told."""
    if pid is None or _exited(pid):
        return ""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        what = "was removed"
    except OSError:
        return ""
    else:
        if not stat.S_ISSOCK(mode):
            what = "was replaced by something that is not a socket"
        else:
            listener = _listener_pid(path)
            if listener is None or listener == pid:
                return ""
            what = "now leads to another process (pid %d)" % listener
    return "the agent's socket %s %s while pid %d still runs; %s" % (
        path,
        what,
        pid,
        RELOAD_HINT % pid,
    )


def spy_wait(wait: float, took: Optional[float], began: float, now: float) -> float:
    """How long a poll waits for the py-spy read that began at ``began``: ``wait``, or nothing
    when the last read took so long (``took``) that this one will not end within it — at
    1,000 threads a read takes 0.6 s and more, and the last reading joins at once instead of
    after a wait that ends without a new one (the data on screen is that much fresher)."""
    if took is not None and began + took - now > wait:
        return 0.0
    return wait


@dataclass(frozen=True)
class ServiceIdentity:
    """What makes a restarted process 'the same service'."""

    cmdline: Tuple[str, ...]
    ports: Tuple[int, ...]

    @classmethod
    def of(cls, info: ProcessInfo) -> ServiceIdentity:
        return cls(cmdline=info.cmdline, ports=tuple(sorted(info.ports)))


def find_same_service(
    identity: ServiceIdentity, previous_pid: Optional[int], timeout: float
) -> Optional[Tuple[AgentSource, ProcessInfo, int]]:
    """A process running the same service with an agent (and its pid as seen here), or None."""
    candidates = []
    if previous_pid is not None and psutil.pid_exists(previous_pid):
        candidates.append(previous_pid)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = tuple(proc.info.get("cmdline") or ())
        except (psutil.Error, OSError):
            continue
        if cmdline == identity.cmdline and proc.pid not in candidates:
            candidates.append(proc.pid)
    for pid in candidates:
        try:
            endpoint = find_agent(pid)
        except CpinspectError:
            continue
        if socket_problem(pid, endpoint.connect_path):
            continue  # its socket path leads elsewhere now: whatever answers there is not it
        source = AgentSource(endpoint.connect_path, timeout=timeout)
        try:
            info = source.info()
        except CpinspectError:
            source.close()
            continue
        if info.cmdline != identity.cmdline:
            source.close()
            continue
        if identity.ports and tuple(sorted(info.ports)) != identity.ports:
            source.close()
            continue
        return source, info, pid
    return None


class AgentSession:
    """The ``Poller`` for a live agent target (by pid, or by socket path)."""

    def __init__(
        self,
        source: AgentSource,
        info: Optional[ProcessInfo] = None,
        pid: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        on_new_pid: Optional[Callable[[int], None]] = None,
        pyspy: Optional[PySpySource] = None,
        silent: str = "",
        silent_for: Optional[float] = None,
    ) -> None:
        """``silent``: why the agent did not answer just before (``info()`` timed out while
        opening); the first poll then shows py-spy's threads without asking it again.
        ``silent_for``: how long it was waited for then, when not ``timeout`` (a one-shot
        command stops waiting once py-spy's reading is in)."""
        self._trimmer = Trimmer()
        """Freed arena pages back to the system after the polls that parse big readings (only
        where the command tuned the allocator: ``memory.tune_malloc``, the long-running ones)."""
        self.source: Optional[AgentSource] = source
        self.pyspy = pyspy
        """Reads the same process from outside; None when py-spy is missing or not allowed."""
        self.pyspy_note = ""
        """Why py-spy is off, said once in the warnings."""
        self.native = False
        # py-spy runs beside the agent request, not after it: when the agent does not answer,
        # its data is ready the moment the timeout says so.
        self._spy_runner: Optional[ThreadPoolExecutor] = None
        self.pyspy_wait: Optional[float] = None
        """How long a poll waits for py-spy once the agent has answered; None: until py-spy
        answers (``dump``, ``snapshot``: one reading, complete). The TUI sets a budget: at
        1,000 threads py-spy takes 0.5-2 s, and the screen must not wait for it every second
        (the poll then joins the newest reading py-spy finished, at most one read older)."""
        self._spy_pending: Optional[Future[Optional[ThreadsSnapshot]]] = None
        """A py-spy read still running when the last poll ended (never two at once)."""
        self._spy_ahead = False
        """``_spy_pending`` was started as the last poll ended (``_read_ahead``)."""
        self._spy_last: Optional[ThreadsSnapshot] = None
        """The newest py-spy reading joined (joined again while a newer one runs)."""
        self._spy_whole: Optional[
            Tuple[ThreadsSnapshot, GilDump, float, Optional[Dict[int, float]]]
        ] = None
        """The last GIL-holder reading, the whole dump it was cut from, when it was read, and
        each thread's CPU time just before the read (only while the agent is not answering:
        with the reading's own, which threads ran while py-spy read)."""
        self._whole_cpu: Optional[Dict[int, float]] = None
        self._spy_cpu: Optional[Tuple[ThreadsSnapshot, Dict[int, float]]] = None
        """A whole reading read with ``--locals`` and the CPU times taken before it."""
        """The CPU times before the read whose whole reading this poll built (``_ran``)."""
        self._spy_cache = DumpCache()
        """What the whole readings built (``threads_from_reading``): while py-spy carries the
        polls, only the threads whose text moved since the last reading are parsed again."""
        self._spy_cache.times = pyspy.task_times if pyspy is not None else None
        self._carried: Carried = {}
        """The joined threads of the last carried poll (``fallback_threads``' memo)."""
        self.on_new_pid = on_new_pid
        """Called (from the polling thread) when reconnection lands on another pid."""
        self.timeout = timeout
        self.clock = clock
        self.pid = pid if pid is not None else (info.pid if info is not None else None)
        self.by_socket = pid is None
        self.socket_path = source.connect_path
        self.info = info
        self.threads: Optional[ThreadsSnapshot] = None
        self.identity = ServiceIdentity.of(info) if info is not None else None
        # /v1/info was just read when given: the first poll need not read it again.
        self._polls = 1 if info is not None else 0
        self._endpoint_errors: List[str] = []
        self._lost_since: Optional[float] = None
        self._lost_reason = ""
        self._skip_agent_once = False
        self._silent_for = timeout
        """How long the agent was last waited for in vain (what the fallback's words say)."""
        if silent:
            self._lost_since = clock()
            self._lost_reason = silent
            self._skip_agent_once = pyspy is not None
            if silent_for is not None:
                self._silent_for = silent_for
        self._outside_info: Optional[ProcessInfo] = None
        """What the header shows while the agent never answered (read once from /proc)."""
        self._joined = False
        self._pending_message = ""
        self._notice = ""
        self._notice_until = 0.0
        self._gil: Optional[ThreadInfo] = None
        self._peers = PeerCache()
        # Files are read through /proc/<pid>/root: with no pid seen from here (a socket of
        # another pid namespace) a path could name another file of ours, so only the ring.
        self.logs = LogFeed(source, self.pid, files=self.pid is not None)
        """The log records: one cursor read of the agent's ring per poll, and the files."""
        self.logs.configure(info)
        self._log: Optional[LogBatch] = None
        self._log_pending: Optional[Future[LogBatch]] = None
        """The log read running in the background (one at most, and never beside another read
        of the feed: a carried poll reads no files while it runs, it brings them)."""
        self._log_runner: Optional[ThreadPoolExecutor] = None
        self.log_wait: Optional[float] = None
        """How an answered poll reads the log: None, after the threads, waited for (one-shot
        commands: their one poll is complete); 0, in the background, asked with the threads
        and folded into the first poll that finds it ended (never waited for: behind workers
        spinning in pure Python each log request is one more wait for the GIL, 0.1-0.7 s).
        A session the TUI polls (``read_every`` set) reads it in the background unless told."""
        self.agent_grace = _agent_grace()
        """With py-spy's reading in hand, how long a poll waits for the agent (``AGENT_GRACE``)."""
        self._agent_pending: Optional[Future[_Answer]] = None
        """The agent call in flight (one at most), awaited across polls."""
        self._agent_started = 0.0
        self._head_start = 0.0
        """How long before its call the agent was asked what the call reads (a one-shot
        command's early ``/v1/threads``)."""
        self._answer_took = 0.0
        """How long the agent's last answer took (seconds)."""
        self._slow_for = 0.0
        """How long the agent had not answered when this poll gave up on it (0: it answered,
        or it has not answered for longer than ``timeout``: silent, not slow)."""
        self._carrying = False
        """The last poll was carried by py-spy (the agent did not answer it in time): the next
        read takes every thread's CPU time first, to tell busy from stuck (``_ran``)."""
        self._spy_began = 0.0
        self._spy_took: Optional[float] = None
        """When the running py-spy read began and how long the last one took (monotonic s)."""
        self._spy_threads_seen: Optional[int] = None
        """Threads in py-spy's last reading (whether a ``--locals`` read is cheap)."""
        self.on_landed: Optional[Callable[[], None]] = None
        """Called (from py-spy's thread) when a reading lands that no poll is waiting for while
        py-spy carries the polls: the TUI polls at once and shows it (``landed``) instead of at
        its next tick. Set by the TUI; nothing calls it after ``close()``."""
        self.read_every: Optional[float] = None
        """While py-spy carries the polls, its next read begins this many seconds after the
        last one began (at once when that one took longer; for a read that may pause the
        target, not before ``STRETCH`` times its length): the TUI sets its polling interval.
        None: a read ahead begins as the poll ends."""
        self._for_landed = False
        """This poll shows a reading that landed unseen (``_start_spy``): no grace for the
        agent — an answer within its grace is handed over when it ends (``_on_agent_done``)."""
        self._spy_go = threading.Event()
        """Wakes a read ahead still waiting for its start (a poll wants it now, or close())."""
        self._closed = False

    def _read_log(self, agent: bool) -> None:
        """Fold the log into this poll; a failure is a warning, never a failed poll. In the
        background (``_log_behind``) an answered poll (``agent``) takes the read asked with its
        threads if it has ended and otherwise leaves it to the next poll, starting one for
        the next poll when none runs; a carried poll reads the files only, and not while a
        background read runs (it brings the files too, and two reads never run at once)."""
        if self._log_pending is not None or (agent and self._log_behind()):
            self._take_log()
            if agent and self._log_pending is None and self._log is None:
                self._start_log()  # none was asked with the threads: for the next poll
            return
        try:
            self._fold(self.logs.read(agent=agent))
        except Exception as exc:  # noqa: BLE001 - the threads poll goes on whatever happens
            self._endpoint_errors.append("log not read: %s" % exc)

    def _log_behind(self) -> bool:
        """The log is read in the background, not waited for (``log_wait``)."""
        wait = self.log_wait
        if wait is None:
            return self.read_every is not None
        return wait <= 0

    def _start_log(self) -> None:
        """Ask for the log in the background (the ring and the files), unless a read runs."""
        if self._log_pending is not None or self._closed or self.source is None:
            return
        if self._log_runner is None:
            # One thread kept for the reads: starting a thread waits until it runs, and
            # behind spinning workers that is one more wait for the GIL (63 ms in a trace).
            self._log_runner = ThreadPoolExecutor(1, thread_name_prefix="cpinspect-log")
        self._log_pending = self._log_runner.submit(self.logs.read, True)

    def _take_log(self) -> None:
        """The background read's batch into this poll, if it has ended (taken once)."""
        pending = self._log_pending
        if pending is None or not pending.done():
            return
        self._log_pending = None
        try:
            self._fold(pending.result())
        except Exception as exc:  # noqa: BLE001 - the threads poll goes on whatever happens
            self._endpoint_errors.append("log not read: %s" % exc)

    def _fold(self, batch: LogBatch) -> None:
        """``batch`` into this poll's log, after what it holds already (a reconnect's wait)."""
        held = self._log
        if held is None:
            self._log = batch
        else:
            self._log = LogBatch(
                held.entries + batch.entries, batch.state, held.warnings + batch.warnings
            )

    def _log_fields(self) -> Dict[str, Any]:
        batch, self._log = self._log, None
        if batch is None:
            return {"log_state": self.logs.state}
        return {"log": batch.entries, "log_state": batch.state}

    def _log_warnings(self) -> Tuple[str, ...]:
        return self._log.warnings if self._log is not None else ()

    @property
    def label(self) -> str:
        return self.source.label if self.source is not None else self.socket_path

    @property
    def capabilities(self) -> FrozenSet[Capability]:
        caps = {Capability.LIVE, Capability.ROUTES, Capability.RESOLVE, Capability.SESSIONS}
        if self.pyspy is not None:
            caps |= {Capability.NATIVE, Capability.LOCALS}
        return frozenset(caps)

    def poll(self) -> Update:
        update = self._poll()
        if update.threads_source is SourceKind.PYSPY and update.state is LinkState.LIVE:
            self._read_ahead()
        self._trimmer.maybe()
        return update

    def _read_ahead(self) -> None:
        """While py-spy carries the TUI's polls, its next read is started as this poll ends,
        not when the next poll begins: at 1,000 threads with workers spinning a read takes
        1.3-2.8 s, longer than the interval, and a read begun only by every other poll (the
        one that found none running) left the screen's data up to two reads old. The read
        begins ``read_every`` after the last one began (at once when that is past), so that
        readings come once an interval, and each one, landing, is handed to the TUI at once
        (``on_landed``): the data on screen is as old as one interval at most, plus the read
        itself where it takes longer than that. Only a session the TUI polls (``read_every``
        set) reads ahead: a one-shot ``dump`` or ``snapshot`` ended with a second read of 1,000
        threads running beside its own work, for nothing, and a series' next capture would show
        a reading taken just after the last one. An answering agent starts no read ahead
        either, nor does an agent whose call has ended by now: it may be answering in time
        again, and the next poll's read, begun with its call, gives it the read's length to
        show that."""
        if (
            self.pyspy is None
            or self.pyspy_wait is None
            or self.read_every is None
            or self._spy_pending is not None
        ):
            return
        call = self._agent_pending
        if call is None or call.done() or self._closed:
            return
        delay = 0.0
        if self._spy_took is not None:
            gap = self.read_every
            if self.native or not getattr(self.pyspy, "nonblocking", True):
                # A read that pauses the target: never more than the polls' own pacing.
                gap = max(gap, STRETCH * self._spy_took)
            delay = max(0.0, gap - (time.monotonic() - self._spy_began))
        self._spy_pending = self._start_spy(delay)
        self._spy_ahead = True

    def landed(self) -> bool:
        """While py-spy carries the polls, a py-spy reading has landed that no poll has shown
        yet, or the agent's answer came within its grace: the next poll shows it at once (the
        TUI polls now rather than at its tick)."""
        if self._closed or not self._carrying:
            return False
        pending = self._spy_pending
        if pending is not None and pending.done():
            return True
        call = self._agent_pending
        return call is not None and self._in_time(call)

    def _in_time(self, call: Future[_Answer]) -> bool:
        """An ended call answered within the agent's grace of being asked, with threads read
        within that grace of now: this poll's answer, not a late one (asked by a poll that
        showed a landed reading without waiting for it)."""
        if not call.done():
            return False
        try:
            answer = call.result()
        except Exception:  # noqa: BLE001 - _settle says what it was
            return False
        return answer.ended - answer.started <= self.agent_grace and self._fresh(call)

    def reading_due(self) -> bool:
        """While py-spy carries the polls, its next read is running (or waiting for its start)
        and will be handed over as it lands (``on_landed``): a timed poll now would only show
        the last reading again, and hold up the one about to land while it builds that."""
        pending = self._spy_pending
        return (
            not self._closed
            and self._carrying
            and self.on_landed is not None
            and pending is not None
            and not pending.done()
        )

    def _on_agent_done(self, call: Future[_Answer]) -> None:
        """The agent's call ended (in its thread): while py-spy carries the polls, an answer in
        time is handed over at once (``on_landed``): the agent takes over."""
        notify = self.on_landed
        if notify is not None and self._agent_pending is call and self.landed():
            notify()

    def _on_spy_done(self, future: Future[Optional[ThreadsSnapshot]]) -> None:
        """A read ended (in py-spy's thread): tell the TUI when no poll is waiting for it (a
        poll holds the read it waits for, not ``_spy_pending``), the polls are carried, and it
        brought a reading. One that lands after ``close()`` is dropped."""
        notify = self.on_landed
        if notify is None or self._closed or not self._carrying or self._spy_pending is not future:
            return
        try:
            if future.result() is None:
                return
        except Exception:  # noqa: BLE001 - the poll that takes it says what it was
            return
        notify()

    def _poll(self) -> Update:
        now = self.clock()
        self._whole_cpu = None
        if self.source is None and not self._reconnect():
            # What stands at the socket's path may have changed since (removed, replaced).
            self._lost_reason = socket_problem(self.pid, self.socket_path) or self._lost_reason
            return self._update(now, LinkState.LOST, self._lost_message())
        assert self.source is not None
        self._endpoint_errors = []
        self._joined = False
        self._slow_for = 0.0
        self._for_landed = False
        spy_future = self._start_spy()
        if self._skip_agent_once:
            # The agent was asked a moment ago and did not answer: show py-spy's threads now
            # rather than wait another timeout for it (it is asked again at the next poll).
            self._skip_agent_once = False
            fallback = self._fallback(now, self._spy_result(spy_future))
            if fallback is not None:
                return fallback
            spy_future = None  # py-spy could not read it: give the agent its chance
        began = time.monotonic()
        call, ended = self._agent_call(now)
        if ended is not None:
            return ended  # a late answer said the target is gone
        # The agent's answer was complete before this poll began (handed over as it came in
        # time, ``on_landed``): it is shown without waiting for the py-spy read begun now.
        ready = call is not None and call.done()
        if self._log_behind() and not self._carrying and self._lost_since is None:
            # The agent answered the last poll in time: the log is asked beside its threads,
            # the two requests served together rather than one after the other.
            self._start_log()
        answered = self._await_agent(call, spy_future, began)
        if (
            answered
            and call is not None
            and self._agent_started < began
            and self.pyspy
            and not self._fresh(call)
        ):
            # The answer to an earlier poll's call, landing while this one waited, built a
            # while ago (the agent queued for the GIL): py-spy's reading is fresher. It becomes
            # the last known requests and pools, and the next poll asks again. (One built just
            # now — a process continued after SIGSTOP answers the call it froze on — is this
            # poll's answer.)
            self._agent_pending = None
            ended = self._settle(call, now, None, late=True)
            if ended is not None:
                return ended
            call = None
            ready = False
            answered = self._await_agent(None, spy_future, began)
        if not answered and call is not None and _exited(self.pid):
            # The target died while its agent was awaited (a stopped process killed): the call
            # ends at once, its peer gone, and says so; py-spy's last reading is not "live".
            wait_futures([call], timeout=1.0)
            answered = call.done()
        self._carrying = not answered
        if not answered:
            # No answer in time: py-spy's fresh reading carries this poll, with the agent's
            # last requests and pools; its answer is still awaited in the background.
            waited = time.monotonic() - (self._agent_started if call is not None else began)
            spy = self._carried_reading(spy_future)
            # Silent (the interpreter may be stuck) past the agent's timeout, or past twice
            # its last answer's duration when that was longer: 100 workers spinning make
            # every answer slow, and a slow answer is not a stuck interpreter (the findings
            # would say it is).
            # A stopped process (SIGSTOP) is not slow either: it answers once continued.
            stopped = stopped_reason(self.pid)
            if stopped or waited >= max(self.timeout, SLOW_FACTOR * self._answer_took):
                if self._lost_since is None:
                    self._lost_since = now
                self._silent_for = self.timeout
                self._lost_reason = stopped or (
                    "agent did not answer within %.1f s — the interpreter may be stuck"
                    % self.timeout
                )
                fallback = self._fallback(now, spy)
            else:
                self._slow_for = max(waited, self.agent_grace)
                fallback = self._fallback(now, spy)
            if fallback is not None:
                return fallback
            return self._update(now, LinkState.LOST, self._lost_message())
        assert call is not None
        self._agent_pending = None
        ended = self._settle(call, now, spy_future)
        if ended is not None:
            return ended
        self._merge_pyspy(self._spy_in_time(spy_future, at_once=ready and not self.native))
        self._read_log(agent=True)
        state = LinkState.LIVE
        message = ""
        if self._lost_since is not None or self._pending_message:
            state = LinkState.RECONNECTED
            message = self._pending_message or "agent answering again"
            self._lost_since = None
            self._pending_message = ""
            self._notice, self._notice_until = message, now + NOTICE_SECONDS
        elif now < self._notice_until:
            message = self._notice  # long enough for a person to notice
        return self._update(now, state, message)

    # -- the agent, asked in the background ------------------------------------------------------

    def _fresh(self, call: Future[_Answer]) -> bool:
        """Whether an ended call's threads were read by the agent within ``agent_grace`` of
        now (the agent's own ``taken_at``: the time it read them, not the time it was asked)."""
        try:
            threads = call.result().threads
        except Exception:  # noqa: BLE001 - _settle says what it was
            return False
        return threads is not None and self.clock() - threads.taken_at <= self.agent_grace

    def _agent_call(self, now: float) -> Tuple[Optional[Future[_Answer]], Optional[Update]]:
        """The agent call this poll waits on: the one in flight, or a new one (one at a time:
        a slow agent is never asked twice at once). A call that ended since the last poll is
        taken in first (its requests and pools become the last known); an Update when it
        says the target is lost."""
        pending = self._agent_pending
        if pending is not None and not pending.done():
            return pending, None
        if pending is not None and self._in_time(pending):
            return pending, None  # answered in time since the last poll: this poll's answer
        if pending is not None:
            self._agent_pending = None
            ended = self._settle(pending, now, None, late=True)
            if ended is not None:
                return None, ended
        source = self.source
        assert source is not None
        asked_info = self.info is None or self._polls % INFO_EVERY == 0

        def ask() -> _Answer:
            started = time.monotonic()
            errors: List[str] = []
            info = None
            if asked_info:
                try:
                    info = source.info(timeout=BACKGROUND_TIMEOUT)
                except EndpointError as exc:
                    errors.append(str(exc))  # the last info is kept; say why
            threads = None
            try:
                threads = source.threads(timeout=BACKGROUND_TIMEOUT)
            except EndpointError as exc:
                errors.append(str(exc))
            return _Answer(info, threads, tuple(errors), asked_info, started, time.monotonic())

        self._agent_started = time.monotonic()
        # A call that reads a /v1/threads asked at a one-shot command's start (and no info)
        # was asked then: its grace is shorter by that head start (``_await_agent``). (Not an
        # earlier ``_agent_started``: its answer is this poll's, not an earlier poll's.)
        sent = None if asked_info else source.prefetch_sent()
        self._head_start = 0.0 if sent is None else max(0.0, self._agent_started - sent)
        call = self._agent_pending = _in_background(ask, "cpinspect-agent")
        call.add_done_callback(self._on_agent_done)
        return call, None

    def _await_agent(
        self,
        call: Optional[Future[_Answer]],
        spy: Optional[Future[Optional[ThreadsSnapshot]]],
        began: float,
    ) -> bool:
        """Wait for the agent's answer; False to give up on it: py-spy's reading is in and
        ``agent_grace`` has passed, or the agent's ``timeout`` has passed
        with no py-spy reading to show (py-spy missing, or failed)."""
        grace = min(self.agent_grace, self.timeout)
        if call is not None:
            grace = max(0.0, grace - self._head_start)
        if call is not None and self._agent_started < began:
            # Asked by an earlier poll: the grace runs from when it was asked, not again from
            # this poll's start (a poll begun for a reading that landed shows it at once).
            grace = max(0.0, grace - (began - self._agent_started))
        if self._for_landed:
            grace = 0.0  # the reading in hand is shown now; an answer in time comes after it
        # The TUI (``pyspy_wait`` set) waits for a fresh py-spy reading at most CARRY_WAIT,
        # then shows the last one: the screen is refreshed every second even when py-spy
        # itself takes longer than that.
        bound = None if self.pyspy_wait is None else max(grace, CARRY_WAIT)
        while True:
            if call is not None and call.done():
                return True
            elapsed = time.monotonic() - began
            spy_done = spy is not None and spy.done()
            spy_in = spy_done and self._spy_result(spy) is not None
            if spy_in and (call is None or elapsed >= grace):
                return False
            if bound is not None and elapsed >= bound and not spy_done and self._spy_whole:
                return False  # the last reading carries the poll
            if elapsed >= self.timeout and (spy is None or spy_done):
                return False
            waiting: List[Future[Any]] = [f for f in (call, spy) if f is not None and not f.done()]
            if not waiting:
                return False
            # Until the next of the thresholds above, or until something ends.
            ahead = [d for d in (grace, bound, self.timeout) if d is not None and d > elapsed]
            until = min(ahead) - elapsed if ahead else None
            wait_futures(waiting, timeout=until, return_when=FIRST_COMPLETED)

    def _carried_reading(
        self, future: Optional[Future[Optional[ThreadsSnapshot]]]
    ) -> Optional[ThreadsSnapshot]:
        """py-spy's reading for a poll the agent did not answer in time: the one this poll
        waited for, or (still running: kept for the next poll) the last one py-spy finished."""
        if future is None:
            return None
        whole = self._spy_whole
        if future.done() or whole is None or self.pyspy is None:
            return self._spy_result(future)
        self._spy_pending = future
        self._whole_cpu = whole[3]
        return threads_from_reading(whole[1], whole[2], pid=self.pyspy.pid, cache=self._spy_cache)

    def _settle(
        self,
        call: Future[_Answer],
        now: float,
        spy_future: Optional[Future[Optional[ThreadsSnapshot]]],
        late: bool = False,
    ) -> Optional[Update]:
        """Take in an ended agent call: its info and threads become the session's; an Update
        when it says the target is lost (or the agent silent, with py-spy's threads). A
        ``late`` call (ended after the poll that started it) that found the agent silent only
        says so: the poll goes on with a new call."""
        assert self.source is not None
        try:
            answer = call.result()
        except (TargetGone, StaleSocket, NoSuchProcess) as exc:
            # (The last two: an agent that never answered, whose process then exited.)
            self._lose(now, socket_problem(self.pid, self.socket_path) or str(exc))
            self.source.close()
            self.source = None
            return self._update(now, LinkState.LOST, self._lost_message())
        except AgentUnavailable as exc:
            # A silent socket may be someone else's that took the agent's path.
            problem = socket_problem(self.pid, self.socket_path)
            if problem:
                self._lose(now, problem)
                self.source.close()
                self.source = None
                return self._update(now, LinkState.LOST, self._lost_message())
            if self._lost_since is None:
                self._lost_since = now
            self._lost_reason = stopped_reason(self.pid) or str(exc)
            if late:
                return None
            fallback = self._fallback(now, self._spy_result(spy_future))
            if fallback is not None:
                return fallback
            return self._update(now, LinkState.LOST, self._lost_message())
        self._endpoint_errors.extend(answer.errors)
        if answer.asked_info:
            if answer.info is not None:
                self.info = answer.info
            self.logs.configure(self.info)
            if self.identity is None and self.info is not None:
                self.identity = ServiceIdentity.of(self.info)
                if self.pid is None:  # a pid given is the one seen from here: keep it
                    self.pid = self.info.pid
        if answer.threads is not None:
            self.threads = answer.threads
        self._answer_took = answer.ended - answer.started
        self._polls += 1
        return None

    # -- py-spy beside the agent ---------------------------------------------------------------

    def _spy(self) -> Optional[ThreadsSnapshot]:
        """py-spy's threads, or None (saying why once) when it cannot read the process."""
        if self.pyspy is None:
            return None
        # Requests need py-spy's --locals (3-6x slower): only worth it while py-spy stands in
        # for an agent that does not answer, whose own requests are missing or old, and in a
        # process small enough for the locals read to stay cheap (LOCALS_MAX_THREADS).
        last = self.threads
        want = self._lost_since is not None and (
            last is None or self.clock() - last.taken_at > REQUESTS_FRESH
        )
        seen = self._spy_threads_seen
        # The agent has not answered (yet, or lately): which threads run during the read tells
        # a moving GIL from a held one at the first poll already.
        unanswered = self.threads is None or self._lost_since is not None or self._carrying
        cpu = self._cpu_now() if unanswered else None
        try:
            if self.native or (want and seen is not None and seen <= LOCALS_MAX_THREADS):
                self.pyspy.requests = want
                return self._with_cpu(self._counted(self.pyspy.threads()), cpu)
            self.pyspy.requests = False
            reading = self._gil_reading(self.pyspy, cpu)
            whole = self._spy_whole
            self._spy_threads_seen = whole[1].count() if whole is not None else None
            count = self._spy_threads_seen
            if want and count is not None and count <= LOCALS_MAX_THREADS:  # small: cheap
                self.pyspy.requests = True
                return self._with_cpu(self._counted(self.pyspy.threads()), cpu)
            return reading
        except (PySpyMissing, PermissionDenied) as exc:
            # Will not get better by retrying: stop running it, say so once.
            self.pyspy.task_times.close()
            self.pyspy = None
            self.pyspy_note = (
                "py-spy unavailable (%s): no GIL holder, locals or native frames" % exc
            )
        except CpinspectError as exc:
            self.pyspy_note = "py-spy failed this time: %s" % exc
        return None

    def _with_cpu(
        self, reading: ThreadsSnapshot, cpu: Optional[Dict[int, float]]
    ) -> ThreadsSnapshot:
        """``reading``, remembered with the CPU times taken before it (``_ran``)."""
        self._spy_cpu = (reading, cpu) if cpu is not None else None
        return reading

    def _cpu_now(self) -> Optional[Dict[int, float]]:
        """Every thread's CPU time now (``/proc``), None when it cannot be read from here.
        Those the last whole reading's build read, when that was under ``CPU_REUSE`` ago (a
        read begun as the poll that built it ended, ``_read_ahead``): the window that tells
        who ran then starts at that build, a moment before this read, and 1,000 ``/proc``
        reads (14-30 ms of the inspector's CPU) are saved."""
        pid = self.pyspy.pid if self.pyspy is not None else None
        if pid is None or self.by_socket:
            return None
        recent = self._spy_cache.cpus
        if recent is not None and time.monotonic() - recent[0] <= CPU_REUSE:
            return recent[1]
        try:
            tids = [int(name) for name in os.listdir("/proc/%d/task" % pid)]
        except (OSError, ValueError):
            return None
        if self.pyspy is not None:
            return self.pyspy.task_times.read(pid, tids)
        return cpu_times(pid, tids)

    def _ran(self, spy: ThreadsSnapshot) -> Optional[int]:
        """How many threads ran (``RAN_PYTHON``, ``RAN_SHARE``) between the CPU times taken
        before py-spy's last reading and the reading's own; None when there is no such pair."""
        cpu = self._whole_cpu
        if cpu is None and self._spy_cpu is not None and self._spy_cpu[0] is spy:
            cpu = self._spy_cpu[1]  # a whole reading with --locals (a small process)
        if cpu is None:
            return None
        deltas = []
        for thread in spy.threads:
            then = cpu.get(thread.native_id) if thread.native_id else None
            if then is not None and thread.cpu_time is not None:
                deltas.append(thread.cpu_time - then)
        if not deltas:
            return None
        least = max(RAN_PYTHON, RAN_SHARE * max(deltas))
        return sum(1 for d in deltas if d >= least)

    def _counted(self, reading: ThreadsSnapshot) -> ThreadsSnapshot:
        self._spy_threads_seen = len(reading.threads)
        return reading

    def _gil_reading(
        self, pyspy: PySpySource, cpu: Optional[Dict[int, float]] = None
    ) -> ThreadsSnapshot:
        """py-spy's reading beside an answering agent: only its GIL holder is joined, so only
        that thread becomes a model object (at 1,000 threads all of them cost the inspector
        ~40 ms of CPU a read). The whole reading is kept for a fall-back in the same poll.

        Its ``taken_at`` is when py-spy's read ended (``PySpySource.threads``' too): py-spy
        reads the threads one after another over the whole read (strace at 1,006 threads, 100
        spinning: its ~280,000 ``process_vm_readv`` calls spread evenly from start to end), so
        the newest thread shown is that old, the oldest older by the read's length (1.3-2.8 s
        there; ``_spy_took`` has it)."""
        dump = pyspy.gil_dump()  # only the holder's part of py-spy's JSON is parsed now
        taken_at = pyspy.clock()  # the end of the read: see above
        snapshot = threads_from_dump(dump.holders, taken_at, pid=pyspy.pid)
        self._spy_whole = (snapshot, dump, taken_at, cpu)
        return snapshot

    def _whole_reading(self, spy: Optional[ThreadsSnapshot]) -> Optional[ThreadsSnapshot]:
        """Every thread of a py-spy reading that ``_gil_reading`` cut to its GIL holder."""
        whole = self._spy_whole
        if spy is None or whole is None or whole[0] is not spy or self.pyspy is None:
            return spy
        self._whole_cpu = whole[3]
        return threads_from_reading(whole[1], whole[2], pid=self.pyspy.pid, cache=self._spy_cache)

    def _start_spy(self, delay: float = 0.0) -> Optional[Future[Optional[ThreadsSnapshot]]]:
        """py-spy's read for this poll: the one still running or read ahead for it, or a
        reading that landed since the last poll while py-spy carries the polls (no poll has
        shown it yet), otherwise a new read, begun after ``delay`` seconds (a read ahead:
        ``_read_ahead``) or at once. Never two at once: one runner thread, one read pending."""
        if self.pyspy is None or self._closed:
            return None
        pending, self._spy_pending = self._spy_pending, None
        ahead, self._spy_ahead = self._spy_ahead, False
        if pending is not None and (ahead or not pending.done() or self._carrying):
            # Still reading, read ahead for this poll, or landed unseen: this poll gets that
            # reading, no second py-spy. A read ahead still waiting for its start begins now.
            self._for_landed = self._carrying and pending.done()
            self._spy_go.set()
            return pending
        if pending is not None:
            self._spy_last = self._spy_result(pending)  # finished after the last poll ended
        if self._spy_runner is None:
            self._spy_runner = ThreadPoolExecutor(1, thread_name_prefix="cpinspect-pyspy")
        go = self._spy_go = threading.Event()
        if delay <= 0:
            go.set()

        def read() -> Optional[ThreadsSnapshot]:
            go.wait(delay)  # set early by a poll that wants it now, or by close()
            if self._closed:
                return None
            began = time.monotonic()
            self._spy_began = began
            try:
                return self._spy()
            finally:
                self._spy_took = time.monotonic() - began

        future = self._spy_runner.submit(read)
        future.add_done_callback(self._on_spy_done)
        return future

    def _spy_in_time(
        self, future: Optional[Future[Optional[ThreadsSnapshot]]], at_once: bool = False
    ) -> Optional[ThreadsSnapshot]:
        """py-spy's reading for this poll: the one running if it ends within ``pyspy_wait``,
        otherwise the last one it finished (the running one is kept for the next poll).
        ``at_once``: not waited for at all (the agent's answer was complete before this poll:
        behind spinning workers a poll begun for it waited the whole 0.25 s for a read begun
        with it, 1.0-1.3 s long, and showed the last reading anyway)."""
        if future is None or self.pyspy_wait is None:
            return self._spy_result(future)
        wait = (
            0.0
            if future.done() or at_once
            else spy_wait(self.pyspy_wait, self._spy_took, self._spy_began, time.monotonic())
        )
        try:
            future.result(timeout=wait)
        except FutureTimeout:
            self._spy_pending = future
            last = self._spy_last
            if last is None or self.threads is None:
                return None
            # An older reading: only what it says of threads the agent still has.
            idents = {t.ident for t in self.threads.threads}
            return replace(last, threads=tuple(t for t in last.threads if t.ident in idents))
        except Exception:  # noqa: BLE001 - _spy_result says what it was
            pass
        self._spy_last = self._spy_result(future)
        return self._spy_last

    def _spy_result(
        self, future: Optional[Future[Optional[ThreadsSnapshot]]]
    ) -> Optional[ThreadsSnapshot]:
        if future is None:
            return None
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - _spy handles ours; anything else is said
            self.pyspy_note = "py-spy failed: %s" % exc
            return None

    def _merge_pyspy(self, spy: Optional[ThreadsSnapshot]) -> None:
        if self.threads is None:
            return
        if spy is not None:
            self.pyspy_note = ""
            self.threads = merge_threads(self.threads, spy, native=self.native)
            self._gil = gil_holder(spy)
            self._joined = True

    def _fallback(self, now: float, spy: Optional[ThreadsSnapshot]) -> Optional[Update]:
        """The agent does not answer: show py-spy's threads instead, if it could read them."""
        if spy is None or (self.pid is not None and not psutil.pid_exists(self.pid)):
            return None
        spy = self._whole_reading(spy)
        assert spy is not None
        holder = gil_holder(spy)
        who = " (GIL held by thread %s)" % holder.name if holder is not None else ""
        # Pool numbers only the agent knows: the last ones, if it ever answered.
        before = ", pool numbers from before" if self.threads is not None else ""
        if self.threads is None:
            if any(t.request is not None for t in spy.threads):
                before = "; " + NO_POOLS
            else:
                before = "; " + NO_REQUESTS  # read without --locals (a large process)
        # A stopped process is not stuck: py-spy --nonblocking reads it without resuming it.
        stopped = stopped_reason(self.pid)
        slow = self._slow_for > 0 and not stopped
        if slow:
            # Not answering yet, not for long: busy (workers spinning in Python hold the GIL
            # queue) or stuck; py-spy's fresh reading now beats the agent's late one.
            last = self.threads
            took = (
                " (its last answer took %.1f s)" % self._answer_took
                if self._answer_took > self.timeout
                else ""
            )
            ran = self._ran(spy)
            if ran is not None and ran > 1:
                # Many threads ran while py-spy read: busy, not stuck (the same words as below).
                head = (
                    "agent slow: no answer within %.1f s%s — busy, not stuck: %s (%d ran "
                    "during py-spy's read)%s" % (self._slow_for, took, GIL_MOVING, ran, who)
                )
            else:
                head = (
                    "agent slow: no answer within %.1f s%s — the interpreter may be stuck "
                    "or busy%s" % (self._slow_for, took, who)
                )
            if last is not None:
                before = "; requests and pool numbers from %s" % time.strftime(
                    "%H:%M:%S", time.localtime(last.taken_at)
                )
        else:
            ran = self._ran(spy) if not stopped else None
            if ran is not None and ran > 1:
                # Many threads ran while py-spy read: the GIL moves, the agent waits its turn.
                head = (
                    "agent not answering within %.1f s — busy, not stuck: %s (%d ran during "
                    "py-spy's read)%s" % (self._silent_for, GIL_MOVING, ran, who)
                )
            else:
                head = stopped or (
                    "agent not answering within %.1f s — the interpreter may be stuck%s"
                    % (self._silent_for, who)
                )
        message = "%s; threads from py-spy%s" % (head, before)
        threads = fallback_threads(spy, self.threads, self._carried)
        self._read_log(agent=False)
        warnings = tuple(self.source.warnings) if self.source is not None else ()
        warnings += self._log_warnings()
        stale = tuple(
            part
            for part, kept in (("info", self.info is not None), ("pools", self.threads is not None))
            if kept
        )
        return Update(
            fetched_at=now,
            state=LinkState.LIVE,
            source_kind=SourceKind.AGENT,
            source_label=self.label,
            info=self.info if self.info is not None else self._info_from_outside(),
            threads=threads,
            message=message,
            warnings=warnings,
            threads_source=SourceKind.PYSPY,
            stale=stale,
            gil_holder=holder.ident if holder is not None else None,
            agent_unresponsive=not stopped and not slow,
            listen_queues=self._listen_queues(),
            **self._log_fields(),
        )

    def _listen_queues(self) -> Tuple[ListenQueue, ...]:
        """The accept queues of the target's listening sockets, read from /proc (not for a
        socket of another pid namespace: its pid means another process here)."""
        if self.pid is None or self.by_socket:
            return ()
        try:
            return listen_queues(self.pid, self.info.ports if self.info is not None else ())
        except Exception:  # noqa: BLE001 - a reading for the findings, never a failed poll
            return ()

    def _info_from_outside(self) -> Optional[ProcessInfo]:
        """The header's process line while the agent has never answered: from /proc."""
        pid = self.pyspy.pid if self.pyspy is not None else self.pid
        if self._outside_info is None and pid is not None:
            try:
                self._outside_info = process_info_from_outside(pid, "agent not answering")
            except CpinspectError:
                return None
        return self._outside_info

    def load_agent(self) -> str:
        return "the agent is already loaded"

    def routes(self) -> RoutesSnapshot:
        return self._agent_source("routes need").routes()

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        return self._agent_source("resolving a URL needs").resolve(path, method, host)

    def answered(self, res: Resolution) -> AnsweredRead:
        """``AgentSource.answered``: how the resolved path was answered lately."""
        return self._agent_source("the agent's log needs").answered(res)

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        """One page of sessions, with the other processes serving the same port or command
        line when an app keeps its sessions in RAM (not shared between them)."""
        answer = self._agent_source("sessions need").sessions(app, offset, limit, sort, reveal)
        info = self.info
        if info is None or self.pid is None:
            return answer
        if not any(a.backend == "ram" for a in answer.apps):
            # Only RAM stores are split between processes; the look at the machine (every
            # process's sockets: 0.6 s of a snapshot on a busy box) is not needed otherwise.
            return answer
        return replace(answer, peers=self._peers.get(self.pid, info.ports, info.cmdline))

    def _agent_source(self, what: str) -> AgentSource:
        if self.source is None:
            raise AgentUnavailable(
                "%s the agent, which is not answering: %s"
                % (what, self._lost_reason or "reconnecting")
            )
        return self.source

    def thread_locals(self, ident: int) -> ThreadLocals:
        if self.pyspy is None:
            raise PySpyMissing(
                "local variables are read by py-spy, which cannot read this process: %s"
                % (self.pyspy_note or "not set up")
            )
        return self.pyspy.thread_locals(ident)

    def set_native(self, native: bool) -> None:
        if self.pyspy is None and native:
            raise PySpyMissing(
                "native frames are read by py-spy, which cannot read this process: %s"
                % (self.pyspy_note or "not set up")
            )
        self.native = native
        if self.pyspy is not None:
            self.pyspy.native = native

    def _lose(self, now: float, reason: str) -> None:
        if self._lost_since is None:
            self._lost_since = now
        self._lost_reason = reason

    def _lost_message(self) -> str:
        # The time of the data kept on screen, not of when its loss was noticed.
        last = self.threads.taken_at if self.threads is not None else None
        since = time.strftime("%H:%M:%S", time.localtime(last or self._lost_since or self.clock()))
        return "%s — showing the last data (from %s); reconnecting to the same service…" % (
            self._lost_reason or "target lost",
            since,
        )

    def _reconnect(self) -> bool:
        if self.by_socket or self.identity is None:
            source = AgentSource(self.socket_path, timeout=self.timeout)
            try:
                info = source.info()
            except CpinspectError:
                source.close()
                return False
            self._adopt(source, info, None)
            return True
        found = find_same_service(self.identity, self.pid, self.timeout)
        if found is None:
            return False
        self._adopt(*found)
        return True

    def _adopt(self, source: AgentSource, info: ProcessInfo, host_pid: Optional[int]) -> None:
        """Take over a reconnected source; ``host_pid`` is its pid as seen from here."""
        old_pid = self.pid
        self.source = source
        self.info = info
        self.pid = host_pid if host_pid is not None else info.pid
        self.logs.set_source(source, self.pid)
        self.logs.configure(info)
        self._polls = 1
        port = ", ".join(str(p) for p in info.ports) or "?"
        if host_pid is not None and old_pid is not None and old_pid != host_pid:
            if self.on_new_pid is not None:
                self.on_new_pid(host_pid)
            self._pending_message = (
                "reconnected to pid %d — the same service (same command line, port %s) "
                "restarted; pid %d is gone" % (info.pid, port, old_pid)
            )
        else:
            self._pending_message = "reconnected to pid %s (port %s)" % (info.pid, port)

    def _update(self, now: float, state: LinkState, message: str) -> Update:
        warnings: Tuple[str, ...] = ()
        if self.source is not None:
            warnings = tuple(self.source.warnings)
        warnings += tuple(self._endpoint_errors)
        warnings += self._log_warnings()
        if self.pyspy_note:
            warnings += (self.pyspy_note,)
        if self.threads is not None:
            warnings += tuple("probe failed: %s" % e for e in self.threads.errors)
        return Update(
            fetched_at=now
            if state is not LinkState.LOST
            else (self.threads.taken_at if self.threads else now),
            state=state,
            source_kind=SourceKind.AGENT,
            source_label=self.label,
            info=self.info,
            threads=self.threads,
            message=message,
            warnings=warnings,
            gil_holder=self._gil.ident if self._gil is not None else None,
            pyspy_joined=self._joined,
            listen_queues=self._listen_queues() if state is not LinkState.LOST else (),
            **self._log_fields(),
        )

    def join_pyspy(
        self, update: Update, meanwhile: Optional[Callable[[], object]] = None
    ) -> Update:
        """``update`` (this session's last poll) with the py-spy read it left running joined.

        For one-shot commands that poll with ``pyspy_wait`` 0: the poll returns with the
        agent's answer, the command runs ``meanwhile`` (what it can prepare without the GIL
        holder) while py-spy still reads, then this waits for py-spy and joins its reading as
        the poll would have. ``update`` itself when the poll left no read running."""
        future, self._spy_pending = self._spy_pending, None
        if future is None or update.threads is None or update.threads is not self.threads:
            return update
        if meanwhile is not None and not future.done():
            meanwhile()
        self._merge_pyspy(self._spy_result(future))
        warnings = update.warnings
        if self.pyspy_note and self.pyspy_note not in warnings:
            warnings += (self.pyspy_note,)
        return replace(
            update,
            threads=self.threads,
            gil_holder=self._gil.ident if self._gil is not None else None,
            pyspy_joined=self._joined,
            warnings=warnings,
        )

    def close(self) -> None:
        self._closed = True
        self.on_landed = None
        self._spy_go.set()  # a read ahead waiting for its start ends without reading
        self.logs.close()
        if self.source is not None:
            self.source.close()
            self.source = None
        if self._spy_runner is not None:
            self._spy_runner.shutdown(wait=False)
            self._spy_runner = None
        if self._log_runner is not None:
            self._log_runner.shutdown(wait=False)
            self._log_runner = None
        if self.pyspy is not None:
            self.pyspy.close()


def process_info_from_outside(pid: int, agent: str = "no agent") -> ProcessInfo:
    """What can be known of a process without its agent (for the header); ``agent`` says why
    its engine state is unknown."""
    try:
        proc = psutil.Process(pid)
        cmdline = tuple(proc.cmdline())
        exe = proc.exe()
        started = proc.create_time()
    except psutil.NoSuchProcess:
        raise NoSuchProcess("process %d exited" % pid) from None
    except psutil.Error:
        cmdline, exe, started = (), "", None
    name = exe.rsplit("/", 1)[-1]
    python = name[len("python") :] if name.startswith("python") else "?"
    return ProcessInfo(
        pid=pid,
        cmdline=cmdline,
        python=python or "?",
        cherrypy=None,
        cheroot=None,
        agent_version="-",
        schema=0,
        engine_state="? (%s)" % agent,
        started_at=started,
    )


FIRST_FRESH = 1.0
"""Seconds for which the reading that opened a py-spy session stands in for its first poll."""


class PySpySession:
    """The ``Poller`` for a process without the agent: everything from py-spy.

    ``load_agent()`` injects the agent on the user's word; from then on the session hands its
    polls to an ``AgentSession`` (py-spy still beside it), so the TUI goes on unchanged.
    """

    def __init__(
        self,
        pyspy: PySpySource,
        pid: int,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        inject: Optional[Callable[[int], object]] = None,
        on_new_pid: Optional[Callable[[int], None]] = None,
        first: Optional[ThreadsSnapshot] = None,
    ) -> None:
        self._trimmer = Trimmer()
        self.pyspy = pyspy
        self._first = first
        """The reading that found the process to be CherryPy (``open.pyspy_only``): the first
        poll shows it if it is fresh, rather than asking py-spy again at once (a one-shot
        ``dump`` of 1,000 threads read them twice, ~1 s each with ``--locals``)."""
        self.on_new_pid = on_new_pid
        """Handed to the ``AgentSession`` once the agent is loaded."""
        self.pid = pid
        self.clock = clock
        self.timeout = timeout
        self._inject = inject
        self.agent: Optional[AgentSession] = None
        self.info: Optional[ProcessInfo] = None
        self.threads: Optional[ThreadsSnapshot] = None
        self.native = False
        self._lost = ""
        self.logs = LogFeed(None, pid)
        """No agent: the log files the process has open, followed from outside."""
        self.message = (
            "no agent in pid %d: threads and requests read by py-spy from outside. For pool "
            "numbers, request details, routes and logs, load the agent now (i here, or "
            "`cpinspect inject %d`), or %s" % (pid, pid, ENABLE_HINT)
        )

    @property
    def capabilities(self) -> FrozenSet[Capability]:
        if self.agent is not None:
            return self.agent.capabilities
        return frozenset(
            (Capability.LIVE, Capability.LOAD_AGENT, Capability.NATIVE, Capability.LOCALS)
        )

    def load_agent(self) -> str:
        """Inject the agent (gdb; blocking, ~1 s) and switch to it. Raises CpinspectError."""
        if self.agent is not None:
            return "the agent is already loaded"
        if self._inject is None:
            from cpinspect.attach.inject import inject

            self._inject = inject
        self._inject(self.pid)
        source = AgentSource(find_agent(self.pid).connect_path, timeout=self.timeout)
        try:
            info = source.info()
        except CpinspectError:
            source.close()
            raise
        agent = AgentSession(
            source,
            info,
            pid=self.pid,
            timeout=self.timeout,
            pyspy=self.pyspy,
            on_new_pid=self.on_new_pid,
        )
        agent.set_native(self.native)
        agent._pending_message = "agent loaded into pid %d: requests, pools and more from it" % (
            self.pid
        )
        self.agent = agent
        return agent._pending_message

    def poll(self) -> Update:
        if self.agent is not None:
            return self.agent.poll()
        now = self.clock()
        state = LinkState.LIVE
        message = self.message
        try:
            if self.info is None:
                self.info = process_info_from_outside(self.pid)
            first, self._first = self._first, None
            if first is not None and not self.native and now - first.taken_at <= FIRST_FRESH:
                self.threads = first
            else:
                self.threads = self.pyspy.threads()
            self._trimmer.maybe()
        except NoSuchProcess as exc:
            state, message = LinkState.LOST, "%s — showing the last data" % exc
        except CpinspectError as exc:
            state, message = LinkState.LOST, "py-spy could not read pid %d: %s" % (self.pid, exc)
        holder = gil_holder(self.threads)
        log: Dict[str, Any] = {}
        warnings: Tuple[str, ...] = ()
        if state is LinkState.LIVE:
            try:
                batch = self.logs.read(agent=False)
            except Exception as exc:  # noqa: BLE001 - the threads poll goes on
                warnings = ("log files not read: %s" % exc,)
            else:
                log = {"log": batch.entries, "log_state": batch.state}
                warnings = batch.warnings
        return Update(
            fetched_at=now
            if state is LinkState.LIVE
            else (self.threads.taken_at if self.threads is not None else now),
            state=state,
            source_kind=SourceKind.PYSPY,
            source_label="py-spy pid %d" % self.pid,
            info=self.info,
            threads=self.threads,
            message=message,
            warnings=warnings,
            gil_holder=holder.ident if holder is not None else None,
            **log,
        )

    def routes(self) -> RoutesSnapshot:
        return self._agent_session("routes need").routes()

    def resolve(self, path: str, method: str, host: str) -> Resolution:
        return self._agent_session("resolving a URL needs").resolve(path, method, host)

    def answered(self, res: Resolution) -> AnsweredRead:
        return self._agent_session("the agent's log needs").answered(res)

    def sessions(
        self,
        app: Optional[str] = None,
        offset: int = 0,
        limit: int = 50,
        sort: str = "expiry",
        reveal: Optional[str] = None,
    ) -> SessionsSnapshot:
        return self._agent_session("sessions need").sessions(app, offset, limit, sort, reveal)

    def _agent_session(self, what: str = "routes need") -> AgentSession:
        if self.agent is None:
            raise CpinspectError(
                "%s the agent: press i to load it, or `cpinspect inject %d` (py-spy reads only "
                "threads and stacks)" % (what, self.pid)
            )
        return self.agent

    def thread_locals(self, ident: int) -> ThreadLocals:
        if self.agent is not None:
            return self.agent.thread_locals(ident)
        return self.pyspy.thread_locals(ident)

    def set_native(self, native: bool) -> None:
        self.native = native
        self.pyspy.native = native
        if self.agent is not None:
            self.agent.set_native(native)

    def close(self) -> None:
        self.logs.close()
        if self.agent is not None:
            self.agent.close()
        self.pyspy.close()
