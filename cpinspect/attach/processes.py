"""Which processes on this machine are CherryPy servers: ``cpinspect ps`` and the picker.

A Python process counts as CherryPy when a cpinspect agent socket is open in it (the agent then
says which apps are mounted and how busy the pool is), or else when py-spy shows a thread in
cherrypy or cheroot code. A Python process we may not look into (another user's without root,
ptrace refused) is listed as "maybe CherryPy" with the reason rather than hidden: in an incident
the user must learn that the server exists and what it takes to inspect it.
"""

from __future__ import annotations

import os
import pwd
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import psutil

from cpinspect.attach.discovery import find_agent
from cpinspect.errors import (
    AgentNotFound,
    CpinspectError,
    NoSuchProcess,
    NotPython,
    PermissionDenied,
    PySpyMissing,
    UsageError,
)
from cpinspect.model import ProcessSummary
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.pyspy import PySpySource, find_pyspy, looks_like_cherrypy, runs_python

AGENT_TIMEOUT = 0.5
"""Seconds to wait for each agent answer: a listing must stay quick when one agent is stuck."""
CPU_INTERVAL = 0.2
"""Shortest interval CPU use is measured over (the probes usually take longer anyway)."""
PARALLEL = 4
"""Processes probed at once (py-spy runs, agent requests)."""

_PYTHON_NAME = re.compile(r"^(?:python|pypy)[0-9.]*[dmu]*$")

# --- pure helpers --------------------------------------------------------------------------------


def looks_like_python_name(*names: Optional[str]) -> bool:
    """Whether an executable path, a ``comm`` name or ``argv[0]`` names a Python interpreter."""
    for name in names:
        if name and _PYTHON_NAME.match(os.path.basename(name).replace(" (deleted)", "")):
            return True
    return False


def ownership_reason(owner_uid: int, owner: str, my_euid: int) -> Optional[str]:
    """Why another user's process cannot be read by us (None when it can, or we are root)."""
    if my_euid == 0 or owner_uid == my_euid:
        return None
    if owner_uid == 0:
        return "owned by root: run as root"
    return "owned by %s: run as %s or root" % (owner, owner)


Listener = Tuple[int, Optional[int]]
"""``(port, pid)`` of a listening TCP socket; pid None when the kernel would not tell us."""


def ports_by_pid(listeners: Iterable[Listener]) -> Dict[int, Tuple[int, ...]]:
    """``{pid: sorted distinct ports}`` (a port bound on IPv4 and IPv6 counts once)."""
    out: Dict[int, set[int]] = {}
    for port, pid in listeners:
        if pid is not None:
            out.setdefault(pid, set()).add(port)
    return {pid: tuple(sorted(ports)) for pid, ports in out.items()}


def port_owner(port: int, listeners: Iterable[Listener]) -> int:
    """The one pid listening on ``port``, or a clear error."""
    if not 0 < port < 65536:
        raise UsageError("%d is not a TCP port (1-65535)" % port)
    pids = set()
    unknown = False
    for p, pid in listeners:
        if p == port:
            if pid is None:
                unknown = True
            else:
                pids.add(pid)
    if len(pids) == 1:
        return pids.pop()
    if len(pids) > 1:
        raise UsageError(
            "several processes listen on port %d (pids %s): attach by pid instead"
            % (port, ", ".join(str(p) for p in sorted(pids)))
        )
    if unknown:
        raise PermissionDenied(
            "port %d is held by another user's process: run cpinspect as root to see which" % port
        )
    raise NoSuchProcess(
        "nothing listens on TCP port %d; `cpinspect ps` lists the CherryPy processes" % port
    )


def pool_numbers(busy_size: Iterable[Tuple[int, int]]) -> Tuple[Optional[int], Optional[int]]:
    """Busy workers and pool size summed over the servers; (None, None) without a pool."""
    pairs = list(busy_size)
    if not pairs:
        return None, None
    return sum(b for b, _ in pairs), sum(s for _, s in pairs)


# --- reading the machine -------------------------------------------------------------------------


def tcp_listeners() -> List[Listener]:
    """Every listening TCP socket on the machine (the pid only where the kernel shows it)."""
    try:
        return [
            (c.laddr.port, c.pid)
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr
        ]
    except psutil.AccessDenied:
        pass
    # Some systems refuse the machine-wide table to non-root users: ours is what we may inspect.
    out: List[Listener] = []
    for proc in psutil.process_iter():
        try:
            out.extend(
                (c.laddr.port, proc.pid)
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr
            )
        except psutil.Error:
            continue
    return out


def find_by_port(port: int) -> int:
    """The pid of the process listening on TCP ``port``; a clear error when none or several."""
    return port_owner(port, tcp_listeners())


@dataclass
class _Candidate:
    proc: psutil.Process
    pid: int
    uid: int
    user: str
    cmdline: Tuple[str, ...]
    create_time: float
    rss: Optional[int]
    cpu_before: Optional[float]


@dataclass(frozen=True)
class _Verdict:
    cherrypy: bool
    """False: not CherryPy (dropped), or — with a reason — could not tell."""
    agent: bool = False
    apps: Tuple[str, ...] = ()
    busy: Optional[int] = None
    size: Optional[int] = None
    reason: Optional[str] = None
    note: str = ""
    maybe: bool = False
    """Listed although we could not confirm CherryPy."""


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cpu_seconds(proc: psutil.Process) -> Optional[float]:
    try:
        t = proc.cpu_times()
    except (psutil.Error, OSError):
        return None
    return float(t.user + t.system)


class ProcessLister:
    """Lists CherryPy processes. Keeps py-spy verdicts per ``(pid, create_time)``.

    A refresh of the picker then re-runs py-spy only on processes it has not seen: reading every
    Python process on a busy box each time would cost more than the user waits for. Agent
    answers (busy/size) are asked each time since they change.
    """

    def __init__(
        self,
        agent_timeout: float = AGENT_TIMEOUT,
        pyspy: Optional[str] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_timeout = agent_timeout
        self.clock = clock
        self._pyspy = pyspy
        self._pyspy_missing: Optional[str] = None
        self._verdicts: Dict[Tuple[int, float], _Verdict] = {}
        self._lock = threading.Lock()

    def __call__(self) -> List[ProcessSummary]:
        return self.list()

    def list(self) -> List[ProcessSummary]:
        started = time.monotonic()
        candidates = list(self._python_processes())
        listeners = tcp_listeners()
        ports = ports_by_pid(listeners)
        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="cpinspect-ps") as pool:
            verdicts = list(pool.map(self._verdict, candidates))
        elapsed = time.monotonic() - started
        if elapsed < CPU_INTERVAL:
            time.sleep(CPU_INTERVAL - elapsed)
            elapsed = CPU_INTERVAL
        now = self.clock()
        out: List[ProcessSummary] = []
        seen = set()
        for cand, verdict in zip(candidates, verdicts):
            seen.add((cand.pid, cand.create_time))
            if not verdict.cherrypy and not verdict.maybe:
                continue
            cpu_after = _cpu_seconds(cand.proc)
            cpu = (
                100.0 * (cpu_after - cand.cpu_before) / elapsed
                if cpu_after is not None and cand.cpu_before is not None
                else None
            )
            out.append(
                ProcessSummary(
                    pid=cand.pid,
                    user=cand.user,
                    cmdline=cand.cmdline,
                    ports=ports.get(cand.pid, ()),
                    uptime=max(0.0, now - cand.create_time),
                    cpu_percent=cpu,
                    rss=cand.rss,
                    agent=verdict.agent,
                    apps=verdict.apps,
                    busy=verdict.busy,
                    size=verdict.size,
                    cherrypy=verdict.cherrypy,
                    reason=verdict.reason,
                    note=verdict.note,
                )
            )
        with self._lock:
            # Forget processes that are gone so the cache stays as small as the machine.
            for key in list(self._verdicts):
                if key not in seen:
                    del self._verdicts[key]
        return sorted(out, key=lambda s: s.pid)

    # -- one process --------------------------------------------------------------------------

    def _python_processes(self) -> Iterable[_Candidate]:
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            try:
                cand = self._candidate(proc)
            except psutil.Error:
                continue  # exited meanwhile, a zombie, or hidden from us entirely
            if cand is not None:
                yield cand

    def _candidate(self, proc: psutil.Process) -> Optional[_Candidate]:
        """``proc`` with what the listing shows of it, or None when it is not Python."""
        with proc.oneshot():
            name = proc.name()
            cmdline = tuple(proc.cmdline())
            try:
                exe: Optional[str] = proc.exe()
            except psutil.AccessDenied:
                exe = None  # another user's: only comm and argv are public
            argv0 = cmdline[0] if cmdline else None
            # Embedded interpreters (uwsgi, mod_wsgi) map libpython instead.
            if not looks_like_python_name(exe, name, argv0) and not runs_python(proc.pid):
                return None
            uid = proc.uids().real
            try:
                rss: Optional[int] = proc.memory_info().rss
            except psutil.AccessDenied:
                rss = None
            return _Candidate(
                proc=proc,
                pid=proc.pid,
                uid=uid,
                user=_user_name(uid),
                cmdline=cmdline,
                create_time=proc.create_time(),
                rss=rss,
                cpu_before=_cpu_seconds(proc),
            )

    def _verdict(self, cand: _Candidate) -> _Verdict:
        reason = ownership_reason(cand.uid, cand.user, os.geteuid())
        if reason is not None:
            return _Verdict(cherrypy=False, maybe=True, reason=reason)
        try:
            endpoint = find_agent(cand.pid)
        except AgentNotFound:
            return self._pyspy_verdict(cand)
        except (NoSuchProcess, NotPython):
            return _Verdict(cherrypy=False)
        except PermissionDenied as exc:
            return _Verdict(cherrypy=False, maybe=True, reason=str(exc))
        return self._agent_verdict(endpoint.connect_path)

    def _agent_verdict(self, connect_path: str) -> _Verdict:
        source = AgentSource(connect_path, timeout=self.agent_timeout)
        try:
            info = source.info()
            apps = tuple(app.script_name for app in info.apps)
            try:
                snapshot = source.threads()
            except CpinspectError as exc:
                return _Verdict(cherrypy=True, agent=True, apps=apps, note=str(exc))
            busy, size = pool_numbers((p.busy, p.size) for p in snapshot.pools)
            return _Verdict(cherrypy=True, agent=True, apps=apps, busy=busy, size=size)
        except CpinspectError as exc:
            # The socket is there: it is CherryPy with an agent, just not answering now.
            return _Verdict(cherrypy=True, agent=True, note=str(exc))
        finally:
            source.close()

    def _pyspy_verdict(self, cand: _Candidate) -> _Verdict:
        key = (cand.pid, cand.create_time)
        with self._lock:
            cached = self._verdicts.get(key)
        if cached is not None:
            return cached
        verdict = self._read_with_pyspy(cand.pid)
        if verdict.reason is None and not verdict.note:
            # Only definite answers are kept: a refused ptrace may be allowed after a fix.
            with self._lock:
                self._verdicts[key] = verdict
        return verdict

    def _read_with_pyspy(self, pid: int) -> _Verdict:
        try:
            executable = self._pyspy or find_pyspy()
        except PySpyMissing as exc:
            return _Verdict(cherrypy=False, maybe=True, note=str(exc))
        source = PySpySource(pid, executable=executable, requests=False, timeout=2.0)
        try:
            snapshot = source.threads()
        except PermissionDenied as exc:
            return _Verdict(cherrypy=False, maybe=True, reason=str(exc))
        except NoSuchProcess:
            return _Verdict(cherrypy=False)
        except CpinspectError as exc:
            return _Verdict(cherrypy=False, maybe=True, note=str(exc))
        finally:
            source.close()
        return _Verdict(cherrypy=looks_like_cherrypy(snapshot))


def list_cherrypy_processes() -> List[ProcessSummary]:
    """Every CherryPy process on the machine (and the Python ones we may not look into)."""
    return ProcessLister().list()


def parse_port_target(text: str) -> Optional[int]:
    """``':8080'`` is port 8080; anything else is not a port target (None)."""
    value = text.strip()
    if not value.startswith(":"):
        return None
    digits = value[1:]
    if not digits.isdigit():
        raise UsageError("'%s' is not a port: write :PORT, e.g. :8080" % text)
    return int(digits)
