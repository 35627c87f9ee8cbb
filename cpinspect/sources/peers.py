"""Other processes serving what the target serves: the same TCP port, or the same command line.

RAM sessions live in one process's memory: behind a load balancer (or with several processes
on one ``SO_REUSEPORT`` port) each process has its own store and users are logged out at random.
The sessions diagnoses need that fact; finding it is the inspector's job (the agent sees only its
own process). ``serving_peers`` is the pure part, ``find_serving_peers`` reads the machine.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import psutil

from cpinspect.attach.processes import Listener, tcp_listeners
from cpinspect.model import ServingPeer

PEERS_TTL = 10.0
"""Seconds a look at the machine is reused (the panel re-reads sessions every ~2 s)."""


def serving_peers(
    pid: int,
    ports: Sequence[int],
    cmdline: Sequence[str],
    listeners: Iterable[Listener],
    cmdlines: Dict[int, Tuple[str, ...]],
    exclude: Iterable[int] = (),
) -> Tuple[ServingPeer, ...]:
    """The processes other than ``pid`` (and ``exclude``) listening on one of ``ports``, or
    running exactly ``cmdline``; each with why, by pid."""
    skip = {pid, *exclude}
    why: Dict[int, List[str]] = {}
    wanted = set(ports)
    for port, other in listeners:
        if other is None or other in skip or port not in wanted:
            continue
        text = "listens on port %d too" % port
        if text not in why.setdefault(other, []):
            why[other].append(text)
    command = tuple(cmdline)
    if command:
        for other, line in cmdlines.items():
            if other not in skip and tuple(line) == command:
                why.setdefault(other, []).append("runs the same command line")
    return tuple(ServingPeer(p, ", ".join(why[p])) for p in sorted(why))


def _cmdlines() -> Dict[int, Tuple[str, ...]]:
    out: Dict[int, Tuple[str, ...]] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            line = proc.info.get("cmdline")
        except (psutil.Error, OSError):
            continue
        if line:
            out[proc.pid] = tuple(line)
    return out


def find_serving_peers(
    pid: int, ports: Sequence[int], cmdline: Sequence[str]
) -> Tuple[ServingPeer, ...]:
    """``serving_peers`` on this machine now (best effort: () when it cannot be read)."""
    try:
        return serving_peers(
            pid, ports, cmdline, tcp_listeners(), _cmdlines(), exclude=(os.getpid(),)
        )
    except (psutil.Error, OSError):
        return ()


class PeerCache:
    """``find_serving_peers`` at most once per ``ttl`` for the same question."""

    def __init__(
        self,
        find: Callable[
            [int, Sequence[int], Sequence[str]], Tuple[ServingPeer, ...]
        ] = find_serving_peers,
        ttl: float = PEERS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._find = find
        self._ttl = ttl
        self._clock = clock
        self._key: Optional[Tuple[int, Tuple[int, ...], Tuple[str, ...]]] = None
        self._value: Tuple[ServingPeer, ...] = ()
        self._at = 0.0

    def get(
        self, pid: int, ports: Sequence[int], cmdline: Sequence[str]
    ) -> Tuple[ServingPeer, ...]:
        key = (pid, tuple(ports), tuple(cmdline))
        now = self._clock()
        if key != self._key or now - self._at > self._ttl:
            self._value = self._find(pid, ports, cmdline)
            self._key, self._at = key, now
        return self._value
