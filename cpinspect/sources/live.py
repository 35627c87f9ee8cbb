"""A live session on one target: polls a source, keeps the last good data, and reconnects.

When the target exits or restarts, the session keeps the last data, says so, and looks for the
same service: first the same pid (CherryPy's Autoreloader re-executes in place), then any process
with the same command line listening on the same port(s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import psutil

from cpinspect.attach.discovery import find_agent
from cpinspect.errors import AgentUnavailable, CpinspectError, EndpointError, TargetGone
from cpinspect.model import ProcessInfo, SourceKind, ThreadsSnapshot
from cpinspect.sources.agent import DEFAULT_TIMEOUT, AgentSource
from cpinspect.sources.base import LinkState, Update

INFO_EVERY = 5
"""Re-read /v1/info every N polls: engine state changes, the rest rarely does."""
NOTICE_SECONDS = 10.0
"""How long "reconnected to pid N" stays in the updates after a reconnection."""


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
    ) -> None:
        self.source: Optional[AgentSource] = source
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
        self._polls = 0
        self._endpoint_errors: List[str] = []
        self._lost_since: Optional[float] = None
        self._lost_reason = ""
        self._pending_message = ""
        self._notice = ""
        self._notice_until = 0.0

    @property
    def label(self) -> str:
        return self.source.label if self.source is not None else self.socket_path

    def poll(self) -> Update:
        now = self.clock()
        if self.source is None and not self._reconnect():
            return self._update(now, LinkState.LOST, self._lost_message())
        assert self.source is not None
        self._endpoint_errors = []
        try:
            if self.info is None or self._polls % INFO_EVERY == 0:
                try:
                    self.info = self.source.info()
                except EndpointError as exc:
                    self._endpoint_errors.append(str(exc))  # keep the last info, say why
                if self.identity is None and self.info is not None:
                    self.identity = ServiceIdentity.of(self.info)
                    self.pid = self.info.pid
            try:
                self.threads = self.source.threads()
            except EndpointError as exc:
                self._endpoint_errors.append(str(exc))
        except TargetGone as exc:
            self._lose(now, str(exc))
            self.source.close()
            self.source = None
            return self._update(now, LinkState.LOST, self._lost_message())
        except AgentUnavailable as exc:
            if self._lost_since is None:
                self._lost_since = now
            self._lost_reason = str(exc)
            return self._update(now, LinkState.LOST, self._lost_message())
        self._polls += 1
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

    def _lose(self, now: float, reason: str) -> None:
        if self._lost_since is None:
            self._lost_since = now
        self._lost_reason = reason

    def _lost_message(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self._lost_since or self.clock()))
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
        )

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
