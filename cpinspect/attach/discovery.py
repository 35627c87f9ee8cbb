"""From a pid to the agent's socket, through the target's own file descriptors.

Guessed paths break under systemd ``PrivateTmp=``, containers (the agent sees a namespaced pid)
and ``sudo`` (another ``$XDG_RUNTIME_DIR``). Instead: list the inodes of the sockets in
``/proc/<pid>/fd``, find the listening Unix socket among them in ``/proc/<pid>/net/unix`` whose
name ends in ``<n>.sock`` under a ``cpinspect`` directory, and connect through
``/proc/<pid>/root`` so the path resolves in the target's mount namespace.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from dataclasses import dataclass
from typing import List, Optional

from cpinspect.agent.paths import UNIX_PATH_MAX, final_path_from_bound
from cpinspect.agent.wire import SOCKET_DIR_NAME, SOCKET_SUFFIX
from cpinspect.errors import AgentNotFound, NoSuchProcess, NotASocket, NotPython, PermissionDenied

_SOCKET_FD = re.compile(r"^socket:\[(\d+)\]$")
_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix flags

ENABLE_HINT = (
    "enable it with `inspector.on = True` in the app's CherryPy config (after `import cherrypy`, "
    "then `import cpinspect.agent`) or call `cpinspect.agent.install()`, then restart the app"
)


@dataclass(frozen=True)
class AgentEndpoint:
    pid: int
    socket_path: str
    """The path as the target sees it."""
    connect_path: str
    """The path to connect to from here (through /proc/<pid>/root when that differs)."""


def _owner(pid: int) -> str:
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def not_allowed(pid: int) -> str:
    """Why we may not look inside ``pid``, and what to do about it."""
    if os.geteuid() == 0:
        return (
            "may not inspect pid %d even as root: it is outside this container's reach, or "
            "CAP_SYS_PTRACE is missing (docker: --cap-add=SYS_PTRACE)" % pid
        )
    owner = _owner(pid)
    return (
        "pid %d belongs to user %s: run cpinspect as that user (sudo -u %s cpinspect ...) "
        "or as root" % (pid, owner, owner)
    )


def check_process(pid: int) -> None:
    """Raise a clear error unless ``pid`` is a live process that looks like Python."""
    if pid <= 0:
        raise NoSuchProcess("%d is not a process id" % pid)
    if not os.path.exists("/proc/%d" % pid):
        raise NoSuchProcess(
            "no process with pid %d (it may have exited); `cpinspect ps` lists candidates" % pid
        )
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
    except PermissionError:
        raise PermissionDenied(not_allowed(pid)) from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            # Kernel threads and zombies have no exe.
            raise NotPython("pid %d is not a Python process (no executable)" % pid) from None
        raise
    if not _looks_like_python(pid, exe):
        raise NotPython(
            "pid %d is not a Python process (%s); pick a CherryPy server's pid"
            % (pid, os.path.basename(exe))
        )


def _looks_like_python(pid: int, exe: str) -> bool:
    if re.match(r"^(python|pypy)[0-9.]*[dmu]*$", os.path.basename(exe).replace(" (deleted)", "")):
        return True
    # Embedded interpreters (uwsgi, mod_wsgi, a frozen binary) map libpython.
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                if "libpython" in line:
                    return True
    except OSError:
        pass
    return False


def _socket_inodes(pid: int) -> List[int]:
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        raise PermissionDenied(not_allowed(pid)) from None
    except FileNotFoundError:
        raise NoSuchProcess("process %d exited" % pid) from None
    inodes = []
    for name in names:
        try:
            m = _SOCKET_FD.match(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
        if m:
            inodes.append(int(m.group(1)))
    return inodes


def _unix_listeners(pid: int) -> dict[int, str]:
    """``{inode: path}`` of listening Unix sockets in the target's network namespace."""
    out: dict[int, str] = {}
    try:
        with open("/proc/%d/net/unix" % pid) as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 7)
                if len(parts) < 8:
                    continue
                flags = int(parts[3], 16)
                if flags & _LISTENING:
                    out[int(parts[6])] = parts[7].rstrip("\n")
    except FileNotFoundError:
        raise NoSuchProcess("process %d exited" % pid) from None
    except PermissionError:
        raise PermissionDenied("cannot read /proc/%d/net/unix: run as root" % pid) from None
    return out


def is_agent_socket_path(path: str) -> bool:
    parent = os.path.basename(os.path.dirname(path))
    name = os.path.basename(path)
    return (
        parent.startswith(SOCKET_DIR_NAME)
        and name.endswith(SOCKET_SUFFIX)
        and name[: -len(SOCKET_SUFFIX)].isdigit()
    )


def find_agent(pid: int) -> AgentEndpoint:
    """The agent endpoint of ``pid``; a clear error when there is none."""
    check_process(pid)
    inodes = set(_socket_inodes(pid))
    listeners = _unix_listeners(pid)
    agent_paths = []
    for inode, bound in listeners.items():
        if inode in inodes and bound:
            final = final_path_from_bound(bound)
            if final is not None:
                agent_paths.append(final)  # bound privately by the agent, then renamed
            elif is_agent_socket_path(bound):
                agent_paths.append(bound)
    if not agent_paths:
        raise AgentNotFound(
            "pid %d runs Python but has no cpinspect agent loaded; load it now, without a "
            "restart, with `cpinspect inject %d`, or %s" % (pid, pid, ENABLE_HINT)
        )
    path = sorted(agent_paths)[0]
    return AgentEndpoint(pid=pid, socket_path=path, connect_path=connect_path_for(pid, path))


def shares_our_mounts(pid: int) -> bool:
    """The target sees the filesystem we see: the same root *and* the same mount namespace.

    The same root alone is not enough: systemd's ``PrivateTmp=`` gives a service its own /tmp
    under our very root (a mount namespace of its own), and its socket lives in that /tmp.
    Raises ``PermissionError`` when its root may not be looked at.
    """
    root = "/proc/%d/root" % pid
    try:
        if not os.path.samefile(root, "/"):
            return False
    except PermissionError:
        raise
    except OSError:
        return True  # gone or unreadable /proc: the plain path is the best guess
    try:
        theirs = os.stat("/proc/%d/ns/mnt" % pid)
        ours = os.stat("/proc/self/ns/mnt")
    except OSError:
        return True  # no namespace files (old kernels): the root check is all there is
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def connect_path_for(pid: int, path: str) -> str:
    """Reach ``path`` of the target's mount namespace; plain ``path`` when it shares ours."""
    root = "/proc/%d/root" % pid
    try:
        same = shares_our_mounts(pid)
    except PermissionError:
        same = True
    through = path if same else root + path
    if len(through.encode()) <= UNIX_PATH_MAX:
        return through
    # Over the sun_path limit: hold the directory open and connect through our own fd table.
    # The descriptor stays open for the life of the inspector (one per attach).
    fd = os.open(os.path.dirname(through), os.O_PATH | os.O_DIRECTORY)
    return "/proc/self/fd/%d/%s" % (fd, os.path.basename(through))


def check_socket_file(path: str) -> None:
    """For ``--socket PATH``: exists and is a socket, or a clear error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NoSuchProcess("no such socket: %s" % path) from None
    except PermissionError:
        raise PermissionDenied(
            "cannot reach %s: its directory belongs to another user; run as that user or root"
            % path
        ) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocket(
            "%s is not a socket (it is a %s); give the agent's socket, e.g. "
            "/tmp/cpinspect-<uid>/<pid>.sock, or attach by pid" % (path, _kind(st.st_mode))
        )


def pid_from_socket_path(path: str) -> Optional[int]:
    name = os.path.basename(path)
    stem = name[: -len(SOCKET_SUFFIX)] if name.endswith(SOCKET_SUFFIX) else ""
    return int(stem) if stem.isdigit() else None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "special file"
