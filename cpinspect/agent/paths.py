"""Where the agent's socket lives, and how it is created without ever being reachable by others.

Invariant 3 (DESIGN.md): a directory of mode 0700 owned by the target's uid; the socket is bound
inside a fresh 0700 sub-directory, chmod-ed 0600, then renamed into place. ``os.umask`` is never
touched (it is process-wide, and this runs inside someone else's process).
"""

import os
import socket
import stat
import tempfile
from typing import Optional, Tuple

from .wire import SOCKET_DIR_NAME, SOCKET_SUFFIX

UNIX_PATH_MAX = 107
"""sun_path is 108 bytes including the terminating NUL."""

BIND_DIR_PREFIX = ".cpinspect-bind-"
"""The kernel's /proc/<pid>/net/unix keeps the path a socket was *bound* at, not where it was
renamed to. Binding at ``<dir>/.cpinspect-bind-XXXX/<name>`` keeps the final path recoverable:
``<dir>/<name>`` (see ``final_path_from_bound``)."""


def final_path_from_bound(bound: str) -> Optional[str]:
    """The final socket path of one bound by ``bind_private``, or None if it was not."""
    parent = os.path.dirname(bound)
    if not os.path.basename(parent).startswith(BIND_DIR_PREFIX):
        return None
    return os.path.join(os.path.dirname(parent), os.path.basename(bound))


class SocketPathError(Exception):
    """The socket cannot be created safely; the message says why and what to do."""


def default_socket_dir() -> str:
    """``$XDG_RUNTIME_DIR/cpinspect`` when that is ours, else ``/tmp/cpinspect-<uid>``."""
    uid = os.geteuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.lstat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            candidate = os.path.join(xdg, SOCKET_DIR_NAME)
            if len(candidate) + 24 <= UNIX_PATH_MAX:
                return candidate
    return os.path.join(tempfile.gettempdir(), "%s-%d" % (SOCKET_DIR_NAME, uid))


def default_socket_path(pid: Optional[int] = None) -> str:
    return os.path.join(default_socket_dir(), "%d%s" % (pid or os.getpid(), SOCKET_SUFFIX))


def ensure_private_dir(path: str) -> None:
    """Create ``path`` as a 0700 directory owned by us, or accept it if it already is one.

    Refuses a symlink, a non-directory, or a directory another uid owns: someone could be
    waiting there to read or replace our socket.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SocketPathError("cannot create %s: %s" % (path, exc.strerror)) from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError("%s is a symlink; refusing to use it (remove it)" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketPathError("%s exists and is not a directory (remove it)" % path)
    if st.st_uid != os.geteuid():
        raise SocketPathError(
            "%s belongs to uid %d, not to this process (uid %d); refusing to use it "
            "(remove it, or set inspector.socket)" % (path, st.st_uid, os.geteuid())
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def check_not_symlink(directory: str) -> None:
    """Refuse to bind through a directory that is a symlink: whoever can change the link
    chooses where the socket goes (a chosen ``inspector.socket`` skips ``ensure_private_dir``)."""
    try:
        st = os.lstat(directory)
    except OSError:
        return  # missing or unreadable: the bind says so
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError(
            "%s is a symlink (to %s); refusing to bind the agent's socket through it: put "
            "inspector.socket in the real directory" % (directory, os.path.realpath(directory))
        )


def file_identity(path: str) -> Tuple[int, int, int]:
    """(device, inode, ctime ns): an inode number alone is reused as soon as it is freed."""
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def bind_private(path: str, backlog: int = 16) -> Tuple[socket.socket, Tuple[int, int, int]]:
    """Bind a listening Unix socket at ``path`` with mode 0600; return it and its inode.

    An existing file at ``path`` (a stale socket of a dead process whose pid we now have) is
    replaced atomically by the rename.
    """
    if len(path.encode()) > UNIX_PATH_MAX:
        raise SocketPathError(
            "socket path is %d bytes, over the 107-byte limit: %s" % (len(path.encode()), path)
        )
    parent = os.path.dirname(path) or "."
    check_not_symlink(parent)
    try:
        tmpdir = tempfile.mkdtemp(prefix=BIND_DIR_PREFIX, dir=parent)
    except OSError as exc:
        raise SocketPathError("cannot write in %s: %s" % (parent, exc.strerror)) from None
    tmp_path = os.path.join(tmpdir, os.path.basename(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(tmp_path.encode()) > UNIX_PATH_MAX:
            raise SocketPathError("socket directory path too long: %s" % parent)
        sock.bind(tmp_path)
        os.chmod(tmp_path, 0o600)
        sock.listen(backlog)
        os.rename(tmp_path, path)
        identity = file_identity(path)
    except BaseException:
        sock.close()
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    finally:
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass
    return sock, identity


def unlink_if_ours(path: str, identity: Tuple[int, int, int]) -> None:
    """Remove the socket file only if it is still the one we bound (never another agent's)."""
    try:
        if file_identity(path) == identity:
            os.unlink(path)
    except OSError:
        pass
