"""The target's log files, followed by the inspector (never by the agent: no file I/O there).

When ``log.error_file`` / ``log.access_file`` are set (the agent's ``/v1/info`` logging block
names them) or, with no agent, when the process has a log file open (``files_from_fds``), the
inspector reads them itself through ``/proc/<pid>/root`` (relative names through
``/proc/<pid>/cwd``), like ``tail -F``:

- it starts near the end (the last ``START_BACK`` bytes, from the next whole line), never from
  byte 0 of a huge file, and reads at most ``MAX_READ`` bytes per poll;
- rename rotation: the path now names another inode. The old file is drained to its end and kept
  open while the process may still write to it (CherryPy's ``FileHandler`` reopens only when told
  to), and the new one is read from its start;
- copy-truncate: same inode but smaller than what was read, or the same size with another first
  line (truncated and rewritten past our offset): read again from the start.

Error files hold CherryPy's format, the message alone (``[01/Dec/2026:09:40:02] ENGINE Bus
STARTED``); the lines that follow a header line until the next one (a traceback) belong to its
record, so a traceback is ONE record. A record is complete when the next header arrives or a read
brings nothing new. CherryPy's files carry no level: ERROR when a traceback follows, else INFO;
an app that writes CherryPy's loggers through its own handler with logging's default date first
(``[2026-12-03 14:39:55,045][ERROR  ] ...``, rdiffweb) gives the level its line names. Access lines
(``LogManager.access_log_format``) give the client, request line, status and size. Times come from
the bracketed date (the target's local time, to the second).

A record seen both in the agent's buffer and in a file is shown once (``Deduper``): the file's
text is exactly the buffer's message (CherryPy's formatter is ``%(message)s``, and the message
starts with the date to the second), so records are matched on their first line.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

from cpinspect.agent.redact import redact_log_text, redact_query
from cpinspect.model import LogFileStatus, LogGap, LogOrigin, LogRecord, RequestInfo

START_BACK = 256 * 1024
"""Bytes before the end of a file where following starts."""
MAX_READ = 2 * 1024 * 1024
"""Bytes read per file per poll; the rest waits for the next polls."""
SKIP_AHEAD = 64 * 1024 * 1024
"""Further behind than this, following jumps near the end (and says how much it skipped)."""
MAX_RECORD = 64 * 1024
"""Characters kept of one record (a traceback included); the rest is counted in ``cut``."""
MAX_RECORD_LINES = 400
FIRST_LINE_PROBE = 256
"""Bytes of a file's first line remembered to notice it was truncated and rewritten."""
OLD_FILE_QUIET_READS = 5
"""A renamed-away file is closed after this many reads without growth once the new one grew."""
READ_TIMEOUT = 0.5
"""Seconds a poll waits for the files (a hung mount must not stop the threads poll)."""

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
ERROR_HEAD = re.compile(r"^\[(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})\]")
ACCESS_LINE = re.compile(
    r'^(?P<h>\S+) (?P<l>\S+) (?P<u>\S+) \[(?P<t>[^\]]+)\] "(?P<r>(?:[^"\\]|\\.)*)" '
    r"(?P<s>\d{3}|-) (?P<b>\d+|-)"
)
APP_HEAD = re.compile(r"^\[?(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[,.]\d+)?\]?")
"""A record of an app that logs CherryPy's loggers through a handler of its own, with logging's
default ``asctime`` first (``[2026-12-03 14:39:55,045][ERROR  ][...] ...``, rdiffweb's)."""
LEVEL_WORD = re.compile(r"\b(CRITICAL|ERROR|WARNING|WARN|INFO|DEBUG)\b")
_LEVELS = {"CRITICAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20, "DEBUG": 10}
LEVEL_REACH = 80
"""Characters after an app-format date where its level name is looked for."""
TRACEBACK_HEAD = "Traceback (most recent call last):"


def is_head(line: str) -> bool:
    """Whether ``line`` starts a record: CherryPy's date, or logging's default one."""
    return ERROR_HEAD.match(line) is not None or APP_HEAD.match(line) is not None


def parse_time(text: str) -> Optional[float]:
    """``01/Dec/2026:09:40:02`` (with or without brackets), or logging's
    ``2026-12-01 09:40:02,123``, as epoch seconds, local time."""
    app = APP_HEAD.match(text)
    if app is not None:
        try:
            fields = [int(g) for g in app.groups()]
            return time.mktime((*fields, 0, 0, -1))  # type: ignore[arg-type]
        except (OverflowError, ValueError):
            return None
    m = ERROR_HEAD.match(text if text.startswith("[") else "[" + text + "]")
    if m is None:
        return None
    day, mon, year, hh, mm, ss = m.groups()
    month = _MONTHS.get(mon)
    if month is None:
        return None
    try:
        return time.mktime(
            (int(year), month, int(day), int(hh), int(mm), int(ss), 0, 0, -1)  # local time
        )
    except (OverflowError, ValueError):
        return None


def _cut(text: str) -> Tuple[str, int]:
    if len(text) <= MAX_RECORD:
        return text, 0
    return text[:MAX_RECORD], len(text) - MAX_RECORD


def error_record(lines: List[str]) -> LogRecord:
    """One error-file record from its header line and the lines that followed it."""
    head = lines[0]
    rest = lines[1:]
    stamp = parse_time(head) or 0.0
    traceback: Optional[str] = None
    message_lines = [head]
    for i, line in enumerate(rest):
        if line.startswith(TRACEBACK_HEAD):
            message_lines.extend(rest[:i])
            traceback = redact_log_text("\n".join(rest[i:]))
            break
    else:
        message_lines.extend(rest)
    # The agent's ring redacts queries in messages the same way (and dedupe compares them).
    message, cut = _cut(redact_log_text("\n".join(message_lines)))
    if traceback is not None:
        traceback, cut_tb = _cut(traceback)
        cut += cut_tb
    level, levelno = ("ERROR", 40) if traceback is not None else ("INFO", 20)
    app = APP_HEAD.match(head)
    if app is not None:
        word = LEVEL_WORD.search(head, app.end(), app.end() + LEVEL_REACH)
        if word is not None:
            level = "WARNING" if word.group(1) == "WARN" else word.group(1)
            levelno = _LEVELS[word.group(1)]
    return LogRecord(
        seq=0,
        time=stamp,
        level=level,
        levelno=levelno,
        logger="cherrypy.error",
        message=message,
        traceback=traceback,
        cut=cut,
        origin=LogOrigin.ERROR_FILE,
    )


def access_record(line: str) -> LogRecord:
    """One access-file line; a line in another format is kept whole as the message."""
    m = ACCESS_LINE.match(line)
    if m is None:
        return LogRecord(
            seq=0,
            time=0.0,
            level="INFO",
            logger="cherrypy.access",
            message=redact_log_text(line),
            origin=LogOrigin.ACCESS_FILE,
            access=True,
        )
    request_line = m.group("r").split(" ")
    request = None
    if len(request_line) >= 2:
        path, _, query = request_line[1].partition("?")
        request = RequestInfo(
            method=request_line[0], path=path, query=redact_query(query), client=m.group("h")
        )
    status = m.group("s")
    size = m.group("b")
    return LogRecord(
        seq=0,
        time=parse_time(m.group("t")) or 0.0,
        level="INFO",
        logger="cherrypy.access",
        message=redact_log_text(line),
        request=request,
        status=int(status) if status != "-" else None,
        size=int(size) if size != "-" else None,
        origin=LogOrigin.ACCESS_FILE,
        access=True,
    )


def parse_error_lines(lines: List[str]) -> List[LogRecord]:
    """Every complete and incomplete record in ``lines`` (a header starts each; lines before
    the first header are dropped: they belong to a record that began before them)."""
    out: List[LogRecord] = []
    current: List[str] = []
    for line in lines:
        if is_head(line):
            if current:
                out.append(error_record(current))
            current = [line]
        elif current:
            current.append(line)
    if current:
        out.append(error_record(current))
    return out


def target_path(pid: Optional[int], path: str) -> str:
    """Where ``path`` (as the target names it) is read from here."""
    if pid is None:
        return path
    if os.path.isabs(path):
        return "/proc/%d/root%s" % (pid, path)
    return "/proc/%d/cwd/%s" % (pid, path)


def files_from_fds(pid: int) -> Tuple[Optional[str], Optional[str]]:
    """``(error file, access file)`` a process without the agent has open for writing.

    Its fds (``/proc/<pid>/fd`` links) that are regular files opened for writing and named like
    logs (``*.log``, or ``log`` in the name); ``access`` in the file name makes it the access
    file, the first other one the error file, one the process opened itself before its
    stdout or stderr sent to a file (rdiffweb's log file beside ``> stdout.log``, which holds
    one line). A guess, said as such in the panel (``found_by="fd"``)."""
    error: Optional[str] = None
    redirect: Optional[str] = None
    access: Optional[str] = None
    base = "/proc/%d/fd" % pid
    try:
        names = sorted(os.listdir(base), key=lambda n: int(n) if n.isdigit() else 0)
    except OSError:
        return None, None
    for name in names:
        link = os.path.join(base, name)
        try:
            target = os.readlink(link)
            st = os.stat(link)
        except OSError:
            continue
        if not target.startswith("/") or not stat.S_ISREG(st.st_mode):
            continue
        if target.endswith(" (deleted)"):
            continue
        lower = os.path.basename(target).lower()
        if not (lower.endswith(".log") or "log" in lower):
            continue
        if not _open_for_writing(pid, name):
            continue
        if "access" in lower:
            access = access or target
        elif name in ("1", "2"):
            redirect = redirect or target
        elif error is None:
            error = target
    return error or redirect, access


def _open_for_writing(pid: int, fd: str) -> bool:
    try:
        with open("/proc/%d/fdinfo/%s" % (pid, fd)) as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError, IndexError):
        return False
    return False


@dataclass
class _Open:
    fd: int
    ino: int
    dev: int
    pos: int = 0
    quiet: int = 0


class FileTail:
    """Follows one file across rename and copy-truncate rotation (``read()`` per poll)."""

    def __init__(
        self,
        kind: str,
        path: str,
        read_path: str,
        found_by: str = "agent",
        start_back: int = START_BACK,
        max_read: int = MAX_READ,
    ) -> None:
        if kind not in ("error", "access"):
            raise ValueError("kind is 'error' or 'access', not %r" % kind)
        self.kind = kind
        self.path = path
        self.read_path = read_path
        self.found_by = found_by
        self.start_back = start_back
        self.max_read = max_read
        self._cur: Optional[_Open] = None
        self._old: List[_Open] = []
        """Renamed-away files the process may still write to."""
        self._first = b""
        self._partial: Dict[int, bytes] = {}
        """Bytes after the last newline, per open file (by fd)."""
        self._pending: List[str] = []
        """Lines of the error record being read (complete when the next header comes)."""
        self._started = False
        self.note = ""
        self.rotations = 0
        self.skipped = 0
        """Bytes jumped over because the file grew faster than it was followed."""

    @property
    def status(self) -> LogFileStatus:
        return LogFileStatus(
            kind=self.kind,
            path=self.path,
            found_by=self.found_by,
            following=self._cur is not None,
            note=self.note,
            rotations=self.rotations,
            offset=self._cur.pos if self._cur is not None else 0,
        )

    # --- reading -------------------------------------------------------------------------------

    def read(self) -> Tuple[List[LogRecord], Optional[LogGap]]:
        """New records since the last read (and a gap when bytes were skipped)."""
        lines: List[str] = []
        gap: Optional[LogGap] = None
        for old in list(self._old):
            got = self._drain(old, lines)
            old.quiet = 0 if got else old.quiet + 1
            if old.quiet >= OLD_FILE_QUIET_READS and self._cur is not None and self._cur.pos > 0:
                self._close(old)
                self._old.remove(old)
        try:
            st = os.stat(self.read_path)
        except FileNotFoundError:
            st = None
            self.note = "file not there (rotated away?): waiting for it to reappear"
        except OSError as exc:
            st = None
            self.note = "cannot read: %s" % (exc.strerror or exc)
        if st is not None and not stat.S_ISREG(st.st_mode):
            st = None
            self.note = "not a regular file"
        if st is not None:
            cur = self._cur
            if cur is not None and (st.st_ino != cur.ino or st.st_dev != cur.dev):
                # Renamed away: what the process still writes there is read from the old fd.
                self._drain(cur, lines)
                self._old.append(cur)
                self._cur = None
                self.rotations += 1
                self.note = "rotated (renamed): following the new file"
            if self._cur is None:
                self._reopen(st)
            cur = self._cur
            if cur is not None:
                if st.st_size < cur.pos or (self._first and not self._same_first(cur)):
                    self.rotations += 1
                    self.note = "truncated (copy-truncate): reading again from the start"
                    cur.pos = 0
                    self._partial.pop(cur.fd, None)
                    self._first = b""
                    self._flush(lines, end=True)
                behind = st.st_size - cur.pos
                if behind > SKIP_AHEAD:
                    jump = max(0, st.st_size - self.start_back)
                    self.skipped += jump - cur.pos
                    gap = LogGap(
                        0,
                        time.time(),
                        "file grew %d MiB faster than it was followed: skipped"
                        % ((jump - cur.pos) // (1024 * 1024)),
                    )
                    cur.pos = jump
                    self._partial[cur.fd] = b""
                    self._skip_partial_line(cur)
                got = self._drain(cur, lines, limit=self.max_read)
                if not self._first:
                    self._first = self._read_first(cur)
                if not got and not lines:
                    self._flush(lines, end=True)
        return self._records(lines), gap

    def _reopen(self, st: os.stat_result) -> None:
        try:
            fd = os.open(self.read_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.note = "is a symlink: not followed (the target could point it anywhere)"
            else:
                self.note = "cannot open: %s" % (exc.strerror or exc)
            return
        fst = os.fstat(fd)
        cur = _Open(fd, fst.st_ino, fst.st_dev)
        if not self._started:
            self._started = True
            if fst.st_size > self.start_back:
                cur.pos = fst.st_size - self.start_back
                self._skip_partial_line(cur)
        self._cur = cur
        self._first = self._read_first(cur)

    def _skip_partial_line(self, cur: _Open) -> None:
        """Move ``cur.pos`` past the rest of the line it falls in."""
        while True:
            chunk = os.pread(cur.fd, 4096, cur.pos)
            if not chunk:
                return
            nl = chunk.find(b"\n")
            if nl >= 0:
                cur.pos += nl + 1
                return
            cur.pos += len(chunk)

    def _read_first(self, cur: _Open) -> bytes:
        try:
            return os.pread(cur.fd, FIRST_LINE_PROBE, 0).split(b"\n", 1)[0]
        except OSError:
            return b""

    def _same_first(self, cur: _Open) -> bool:
        try:
            now = os.pread(cur.fd, len(self._first), 0)
        except OSError:
            return True
        return now == self._first or len(now) < len(self._first)

    def _drain(self, cur: _Open, lines: List[str], limit: Optional[int] = None) -> bool:
        """Append the whole new lines of ``cur`` to ``lines``; True when bytes were read."""
        budget = limit if limit is not None else self.max_read
        got = False
        while budget > 0:
            try:
                chunk = os.pread(cur.fd, min(budget, 1024 * 1024), cur.pos)
            except OSError as exc:
                self.note = "read failed: %s" % (exc.strerror or exc)
                break
            if not chunk:
                break
            got = True
            cur.pos += len(chunk)
            budget -= len(chunk)
            data = self._partial.pop(cur.fd, b"") + chunk
            whole, sep, rest = data.rpartition(b"\n")
            if sep:
                lines.extend(
                    raw.decode("utf-8", "replace").rstrip("\r") for raw in whole.split(b"\n")
                )
                if rest:
                    self._partial[cur.fd] = rest
            else:
                self._partial[cur.fd] = data
        return got

    def _flush(self, lines: List[str], end: bool = False) -> None:
        """Nothing more came: the record being read is complete (error files)."""
        if end and self.kind == "error" and self._pending:
            lines.append("\0flush")

    def _records(self, lines: List[str]) -> List[LogRecord]:
        if self.kind == "access":
            return [access_record(line) for line in lines if line and line != "\0flush"]
        out: List[LogRecord] = []
        pending = self._pending
        for line in lines:
            if line == "\0flush":
                if pending:
                    out.append(error_record(pending))
                pending = []
            elif is_head(line):
                if pending:
                    out.append(error_record(pending))
                pending = [line]
            elif pending and len(pending) < MAX_RECORD_LINES:
                pending.append(line)
        self._pending = pending
        return out

    def _close(self, cur: _Open) -> None:
        self._partial.pop(cur.fd, None)
        try:
            os.close(cur.fd)
        except OSError:
            pass

    def close(self) -> None:
        for old in self._old:
            self._close(old)
        self._old = []
        if self._cur is not None:
            self._close(self._cur)
            self._cur = None


def dedupe_key(record: LogRecord) -> Tuple[bool, str]:
    """What a buffer record and the same record's file line share: the first line of the text
    (it starts with the date to the second), and whether it is an access record."""
    first = record.message.split("\n", 1)[0].strip()
    return (record.access, first[:200])


@dataclass
class Deduper:
    """Buffer records seen lately; a file record matching one is dropped (once per match)."""

    keep: int = 20_000
    _counts: Dict[Tuple[bool, str], int] = field(default_factory=dict)
    _order: Deque[Tuple[bool, str]] = field(default_factory=deque)

    def seen(self, record: LogRecord) -> None:
        key = dedupe_key(record)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._order.append(key)
        while len(self._order) > self.keep:
            old = self._order.popleft()
            left = self._counts.get(old, 0) - 1
            if left > 0:
                self._counts[old] = left
            else:
                self._counts.pop(old, None)

    def duplicate(self, record: LogRecord) -> bool:
        key = dedupe_key(record)
        count = self._counts.get(key, 0)
        if count <= 0:
            return False
        if count == 1:
            self._counts.pop(key)
        else:
            self._counts[key] = count - 1
        return True


class LogFiles:
    """The error and access files of one target, read off the polling thread with a limit.

    ``configure()`` says which files to follow (from ``/v1/info``, or from the process's fds);
    ``read()`` returns the new records of both, in time order.
    """

    def __init__(self, pid: Optional[int], timeout: float = READ_TIMEOUT) -> None:
        self.pid = pid
        self.timeout = timeout
        self.tails: Dict[str, FileTail] = {}
        self._runner: Optional[ThreadPoolExecutor] = None
        self._running: Optional[Future[Tuple[List[LogRecord], List[LogGap]]]] = None
        self.note = ""

    def configure(
        self, error_file: Optional[str], access_file: Optional[str], found_by: str = "agent"
    ) -> None:
        for kind, path in (("error", error_file), ("access", access_file)):
            tail = self.tails.get(kind)
            if tail is not None and (path is None or tail.path != path):
                if self._running is None:
                    tail.close()
                del self.tails[kind]
                tail = None
            if tail is None and path:
                self.tails[kind] = FileTail(kind, path, target_path(self.pid, path), found_by)

    def discover(self) -> None:
        """Without the agent: follow the log files the process has open."""
        if self.pid is None:
            return
        error, access = files_from_fds(self.pid)
        self.configure(error, access, found_by="fd")

    @property
    def statuses(self) -> Tuple[LogFileStatus, ...]:
        return tuple(t.status for t in self.tails.values())

    def _read_all(self) -> Tuple[List[LogRecord], List[LogGap]]:
        records: List[LogRecord] = []
        gaps: List[LogGap] = []
        for tail in list(self.tails.values()):
            got, gap = tail.read()
            records.extend(got)
            if gap is not None:
                gaps.append(gap)
        records.sort(key=lambda r: r.time)
        return records, gaps

    def read(self) -> Tuple[List[LogRecord], List[LogGap]]:
        """New records of every file; nothing (and a note) when the files do not answer in time
        (a hung mount: the read goes on in its thread, and is collected by a later poll)."""
        if not self.tails:
            return [], []
        if self._runner is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="cpinspect-logfiles")
        if self._running is None:
            self._running = self._runner.submit(self._read_all)
        try:
            result = self._running.result(timeout=self.timeout)
        except FutureTimeout:
            self.note = "reading the log files takes longer than %.1f s (a hung mount?)" % (
                self.timeout
            )
            return [], []
        except Exception as exc:  # noqa: BLE001 - a file problem never breaks the poll
            self._running = None
            self.note = "reading the log files failed: %s" % exc
            return [], []
        self._running = None
        self.note = ""
        return result

    def close(self) -> None:
        if self._runner is not None:
            self._runner.shutdown(wait=False)
            self._runner = None
        if self._running is None:
            for tail in self.tails.values():
                tail.close()
