"""The kernel's accept queue of the target's listening sockets, read from ``/proc``.

For a socket in the LISTEN state, ``/proc/<pid>/net/tcp`` (and ``tcp6``) shows in
``rx_queue`` the connections waiting to be ``accept()``-ed (``sk_ack_backlog``); the queue's
length is not there (``tx_queue`` is 0 for a listener; ``ss`` reads it over netlink). The
inspector reads this from outside: it works when the agent does not answer, and costs the
target nothing. Linux only; elsewhere (or without permission) nothing is returned.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Set, Tuple

from cpinspect.model import ListenQueue

LISTEN = "0A"


def _address(hex_addr: str, v6: bool) -> str:
    """``0100007F:1F90`` -> ``127.0.0.1:8080``; v6 as ``[::1]:8080``."""
    host, _, port = hex_addr.partition(":")
    number = int(port, 16)
    if not v6:
        raw = bytes.fromhex(host)[::-1]
        return "%s:%d" % (".".join(str(b) for b in raw), number)
    # Four 32-bit words, each in host (little-endian) order.
    words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, 32, 8)]
    raw = b"".join(words)
    groups = ["%x" % int.from_bytes(raw[i : i + 2], "big") for i in range(0, 16, 2)]
    text = ":".join(groups)
    if text == "0:0:0:0:0:0:0:0":
        text = "::"
    elif text == "0:0:0:0:0:0:0:1":
        text = "::1"
    return "[%s]:%d" % (text, number)


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
        local = fields[1]
        if ports is not None and int(local.rpartition(":")[2], 16) not in ports:
            continue
        if inodes is not None and fields[9] not in inodes:
            continue
        rx = fields[4].partition(":")[2]
        out.append(ListenQueue(bind=_address(local, v6), queued=int(rx, 16)))
    return out


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


def listen_queues(pid: int, ports: Iterable[int] = ()) -> Tuple[ListenQueue, ...]:
    """The accept queues of ``pid``'s listening TCP sockets: on ``ports`` when given (the
    servers the agent named), else the sockets among its open files. ``()`` when unreadable."""
    wanted = set(ports)
    try:
        inodes = None if wanted else _socket_inodes(pid)
    except OSError:
        return ()
    out: List[ListenQueue] = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                text = f.read()
        except OSError:
            continue
        out.extend(parse_listeners(text, v6, wanted or None, inodes))
    return tuple(out)
