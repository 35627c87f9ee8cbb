"""Source lines of the target's files, read by the inspector (never by the agent).

The agent does no file I/O on its request path (a hung NFS mount is a classic incident), so the
inspector reads source files itself, through ``/proc/<pid>/root`` so that containers and
``chroot`` see the target's own files.

The inspector often runs as root while the target (which names the files, in its frames) may
be hostile. So:

- the last path component is opened with ``O_NOFOLLOW``: a symlink the target planted is
  refused;
- only regular files are read (``O_NONBLOCK`` keeps a planted FIFO from blocking the open),
  up to 5 MiB;
- a line is shown only from a file the target's own credentials (fs uid, gid and groups from
  ``/proc/<pid>/status``) could read by its mode bits: a frame naming ``/etc/shadow`` shows
  nothing. Without a pid (``--socket``), a root inspector shows only world-readable files.

Call it from worker threads only: a read may block on a slow filesystem.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, FrozenSet, Optional, Protocol, Tuple

MAX_FILE_BYTES = 5 * 1024 * 1024
"""Files larger than this are not source files worth showing; refusing them bounds memory."""
MAX_CACHED_FILES = 256
MAX_CACHED_BYTES = 64 * 1024 * 1024
"""The cache holds at most about this many characters of text across files."""
RETRY_AFTER = 30.0
"""Seconds before a file that could not be read is tried again (a deploy may be under way)."""

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


class LineReader(Protocol):
    """Anything that answers source lines: ``SourceLines`` here, a saved snapshot's copy later."""

    def line(self, filename: str, lineno: int) -> Optional[str]: ...


@dataclass(frozen=True)
class Credentials:
    """Who may read a file, by its mode bits."""

    uid: int
    gids: FrozenSet[int]

    def can_read(self, info: os.stat_result) -> bool:
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IRUSR)
        if info.st_gid in self.gids:
            return bool(info.st_mode & stat.S_IRGRP)
        return bool(info.st_mode & stat.S_IROTH)


def process_credentials(pid: int) -> Optional[Credentials]:
    """The filesystem uid and the gids of process ``pid``, or ``None`` when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        uids = fields["Uid"].split()
        gids = {int(fields["Gid"].split()[3])}
        gids.update(int(g) for g in fields.get("Groups", "").split())
        return Credentials(uid=int(uids[3]), gids=frozenset(gids))
    except (OSError, KeyError, IndexError, ValueError):
        return None


_Entry = Tuple[Optional[Tuple[str, ...]], float]
"""(lines or None when unreadable, when it was read)"""


class SourceLines:
    """``line(filename, lineno)`` for the files of one process, cached per file (bounded LRU).

    Thread-safe. Unreadable files (missing, a symlink, not a regular file, too large, not
    readable by the target) give ``None``; that answer is cached for ``RETRY_AFTER`` seconds so
    a bad path is not retried on every refresh.
    """

    def __init__(
        self,
        pid: Optional[int],
        *,
        max_files: int = MAX_CACHED_FILES,
        max_bytes: int = MAX_CACHED_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._cached_bytes = 0
        self._pid: Optional[int] = None
        self._creds: Optional[Credentials] = None
        self._creds_known = False
        self.reads = 0
        """How many files were read from disk (cache misses), for tests and diagnostics."""
        self.retarget(pid)

    @property
    def pid(self) -> Optional[int]:
        return self._pid

    def retarget(self, pid: Optional[int]) -> None:
        """Read another process's files from now on (the service restarted under a new pid).

        ``pid`` is the target's pid as this inspector sees it (not a container's own pid).
        """
        with self._lock:
            if pid == self._pid and self._cache:
                return
            self._pid = pid
            self._creds_known = False  # looked up on the next read, in a worker thread
            self._cache.clear()
            self._sizes.clear()
            self._cached_bytes = 0

    def path_for(self, filename: str) -> Optional[str]:
        """Where ``filename`` (as the target sees it) is readable from here."""
        if self._pid is None:
            return filename
        if not os.path.isabs(filename):
            # Relative to the target's working directory at import time: unknowable now.
            return None
        return f"/proc/{self._pid}/root{filename}"

    def line(self, filename: str, lineno: int) -> Optional[str]:
        """Line ``lineno`` (1-based) of ``filename`` without its line ending, or ``None``."""
        if lineno < 1 or not filename or filename.startswith("<"):
            return None
        lines = self._lines(filename)
        if lines is None or lineno > len(lines):
            return None
        return lines[lineno - 1]

    def _lines(self, filename: str) -> Optional[Tuple[str, ...]]:
        with self._lock:
            entry = self._cache.get(filename)
            if entry is not None:
                lines, read_at = entry
                if lines is not None or self._clock() - read_at < RETRY_AFTER:
                    self._cache.move_to_end(filename)
                    return lines
        # Read outside the lock: one slow file must not hold up lookups of cached ones. Two
        # threads may read the same file at once; the second result simply replaces the first.
        lines = self._read(filename)
        with self._lock:
            self._store(filename, lines)
        return lines

    def _store(self, filename: str, lines: Optional[Tuple[str, ...]]) -> None:
        if filename in self._cache:
            self._cached_bytes -= self._sizes.pop(filename, 0)
            del self._cache[filename]
        size = sum(len(line) + 1 for line in lines) if lines else 0
        self._cache[filename] = (lines, self._clock())
        self._sizes[filename] = size
        self._cached_bytes += size
        while len(self._cache) > 1 and (
            len(self._cache) > self._max_files or self._cached_bytes > self._max_bytes
        ):
            oldest, _ = self._cache.popitem(last=False)
            self._cached_bytes -= self._sizes.pop(oldest, 0)

    def _credentials(self) -> Optional[Credentials]:
        """Whose permissions decide what may be shown; ``None`` shows nothing."""
        if self._pid is None:
            if os.geteuid() == 0:
                return Credentials(uid=-1, gids=frozenset())  # nobody: world-readable only
            return Credentials(uid=0, gids=frozenset())  # the OS already limits us to our own
        if not self._creds_known:
            self._creds = process_credentials(self._pid)
            self._creds_known = True
        return self._creds

    def _read(self, filename: str) -> Optional[Tuple[str, ...]]:
        path = self.path_for(filename)
        creds = self._credentials()
        if path is None or creds is None:
            return None
        self.reads += 1
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_size > MAX_FILE_BYTES
                or not creds.can_read(info)
            ):
                return None
            chunks = []
            remaining = MAX_FILE_BYTES + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            if remaining <= 0:  # grew past the limit while we read it
                return None
        except OSError:
            return None
        finally:
            os.close(fd)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        # Python counts lines by \n, \r\n and \r only; str.splitlines() would also split on
        # form feeds and other separators and shift every line number after them.
        return tuple(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
