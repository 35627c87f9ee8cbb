"""The kernel's accept queue of the target's listening sockets, read from outside the target.

For a TCP socket in the LISTEN state the kernel counts the connections it accepted that the
server has not ``accept()``-ed yet, against the queue's length (``listen()``'s backlog, capped
by ``net.core.somaxconn``); past it new connections are dropped. The inspector reads both over
netlink (``sock_diag``, what ``ss -lt`` shows as Recv-Q / Send-Q) when the target shares its
network namespace, else from ``/proc/<pid>/net/tcp{,6}`` (the queue only: ``rx_queue``; the
length is not there). It works when the agent does not answer and costs the target nothing.
Linux only; elsewhere, or without permission, nothing is returned.

When a queue holds connections, their peers are read too: a connection the server has not
accepted is a connected socket on the listener's port with no inode yet (no file is made for it
before ``accept()``). Only by its peer is a connection known to be the same one poll after poll:
a busy, healthy server has one or two in its queue at most instants, each time others.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import replace
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

from cpinspect.model import ListenQueue

LISTEN = "0A"
TCP_LISTEN = 10
TCP_ESTABLISHED = 1
TCP_CLOSE_WAIT = 8
QUEUED_STATES = {"01", "08"}
"""States of a connection in an accept queue: established, or its client gone (close-wait)."""
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
_HEADER = struct.Struct("=LHHLL")
_REQUEST = struct.Struct("=BBBxI")
_COUNTS = struct.Struct("=IIIII")
"""``inet_diag_msg`` after its 4 bytes of family/state/timer/retrans and the 48-byte socket id:
expires, rqueue (queued now), wqueue (the backlog), uid, inode."""


def _bind(family: int, raw: bytes, port: int) -> str:
    if family == socket.AF_INET:
        return "%s:%d" % (socket.inet_ntop(socket.AF_INET, raw[:4]), port)
    return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[:16]), port)


def _proc_address(hex_addr: str, v6: bool) -> Tuple[bytes, int]:
    """``0100007F:1F90`` -> (the address bytes, 8080); /proc prints each 32-bit word in host
    (little-endian) order."""
    host, _, port = hex_addr.partition(":")
    raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8))
    return raw, int(port, 16)


def parse_listeners(
    text: str, v6: bool, ports: Optional[Set[int]] = None, inodes: Optional[Set[str]] = None
) -> List[ListenQueue]:
    """The LISTEN lines of one ``/proc/net/tcp``-format text, kept when their port is in
    ``ports`` or their inode in ``inodes`` (both ``None``: every one)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        raw, port = _proc_address(fields[1], v6)
        if ports is not None and port not in ports:
            continue
        if inodes is not None and fields[9] not in inodes:
            continue
        rx = fields[4].partition(":")[2]
        family = socket.AF_INET6 if v6 else socket.AF_INET
        out.append(ListenQueue(bind=_bind(family, raw, port), queued=int(rx, 16)))
    return out


def _diag(family: int, states: int) -> Iterator[bytes]:
    """The ``inet_diag_msg`` of every TCP socket of ``family`` in one of ``states`` (a bit
    mask) in this network namespace, from netlink ``sock_diag``. Raises ``OSError`` when
    refused."""
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, states) + bytes(48)
    header = _HEADER.pack(
        _HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(header + request, (0, 0))
        for _ in range(10_000):  # bounded: each read is one batch of sockets
            data = nl.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind = _HEADER.unpack_from(data, offset)[:2]
                if kind in (NLMSG_DONE, NLMSG_ERROR) or length < _HEADER.size:
                    return
                msg = data[offset + _HEADER.size : offset + length]
                if len(msg) >= 52 + _COUNTS.size:
                    yield msg
                offset += (length + 3) & ~3
            if not data:
                break


def diag_listeners(family: int) -> List[Tuple[ListenQueue, str]]:
    """Every listening TCP socket of ``family`` in this network namespace, with its inode,
    from netlink ``sock_diag`` (queue and backlog). Raises ``OSError`` when refused."""
    out: List[Tuple[ListenQueue, str]] = []
    for msg in _diag(family, 1 << TCP_LISTEN):
        if msg[1] != TCP_LISTEN:
            continue
        port = struct.unpack(">H", msg[4:6])[0]
        queued, backlog, _uid, inode = _COUNTS.unpack_from(msg, 52)[1:]
        out.append((ListenQueue(_bind(msg[0], msg[8:24], port), queued, backlog), str(inode)))
    return out


Waiting = Tuple[str, int, str]
"""A connection not accepted yet: the local address, the local port, the peer (``host:port``)."""


def diag_waiting(family: int) -> List[Waiting]:
    """The connections of ``family`` no process has accepted yet (no inode), from netlink."""
    out: List[Waiting] = []
    for msg in _diag(family, (1 << TCP_ESTABLISHED) | (1 << TCP_CLOSE_WAIT)):
        if _COUNTS.unpack_from(msg, 52)[4] != 0:
            continue
        sport, dport = struct.unpack(">HH", msg[4:8])
        local = _bind(msg[0], msg[8:24], sport).rpartition(":")[0]
        out.append((local, sport, _bind(msg[0], msg[24:40], dport)))
    return out


def parse_waiting(text: str, v6: bool) -> List[Waiting]:
    """The connections not accepted yet (state established or close-wait, inode 0) of one
    ``/proc/net/tcp``-format text."""
    out: List[Waiting] = []
    family = socket.AF_INET6 if v6 else socket.AF_INET
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] not in QUEUED_STATES or fields[9] != "0":
            continue
        raw, port = _proc_address(fields[1], v6)
        peer_raw, peer_port = _proc_address(fields[2], v6)
        local = _bind(family, raw, port).rpartition(":")[0]
        out.append((local, port, _bind(family, peer_raw, peer_port)))
    return out


_WILDCARDS = {"0.0.0.0", "[::]"}


def with_waiting(
    queues: Tuple[ListenQueue, ...], waiting: Iterable[Waiting]
) -> Tuple[ListenQueue, ...]:
    """``queues`` with the peers waiting in each (on its port, and its address unless it
    listens on every address)."""
    by_port: Dict[int, List[Tuple[str, str]]] = {}
    for local, port, peer in waiting:
        by_port.setdefault(port, []).append((local, peer))
    out = []
    for q in queues:
        host, _, listening = q.bind.rpartition(":")
        peers = sorted(
            peer
            for local, peer in by_port.get(int(listening), ())
            if host in _WILDCARDS or local == host
        )
        out.append(replace(q, waiting=tuple(peers)))
    return tuple(out)


def _socket_inodes(pid: int) -> Set[str]:
    found = set()
    base = "/proc/%d/fd" % pid
    for name in os.listdir(base):
        try:
            link = os.readlink(os.path.join(base, name))
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(link[8:-1])
    return found


def _same_network(pid: int) -> bool:
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def listen_queues(pid: int, ports: Iterable[int] = ()) -> Tuple[ListenQueue, ...]:
    """The accept queues of ``pid``'s listening TCP sockets: on ``ports`` when given (the
    servers the agent named), else the sockets among its open files. ``()`` when unreadable.
    A queue that holds connections comes with their peers when they can be read."""
    wanted = set(ports)
    try:
        inodes = None if wanted else _socket_inodes(pid)
    except OSError:
        return ()
    if _same_network(pid):
        try:
            found = diag_listeners(socket.AF_INET) + diag_listeners(socket.AF_INET6)
        except OSError:
            pass  # netlink refused (a sandbox): the queue without the backlog, from /proc
        else:
            queues = tuple(
                q
                for q, inode in found
                if (not wanted or int(q.bind.rpartition(":")[2]) in wanted)
                and (inodes is None or inode in inodes)
            )
            if not any(q.queued for q in queues):
                return queues
            try:
                waiting = diag_waiting(socket.AF_INET) + diag_waiting(socket.AF_INET6)
            except OSError:
                return queues
            return with_waiting(queues, waiting)
    out: List[ListenQueue] = []
    texts: List[Tuple[str, bool]] = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                text = f.read()
        except OSError:
            continue
        texts.append((text, v6))
        out.extend(parse_listeners(text, v6, wanted or None, inodes))
    if not any(q.queued for q in out):
        return tuple(out)
    return with_waiting(tuple(out), [w for text, v6 in texts for w in parse_waiting(text, v6)])
