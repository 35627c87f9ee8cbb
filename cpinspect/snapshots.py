"""Incident snapshots: capture one poll into a ``Snapshot``, write it safely, read it back.

No Textual, no psutil: a snapshot is model objects (``model.py``), encoded by ``protocol.py``.

Writing is atomic and never harms what is already there: the file is written under a hidden
temporary name (mode 0600, ``O_EXCL | O_NOFOLLOW``), fsync'd, then linked to a final name that
does not exist yet — ``link(2)`` fails instead of replacing an existing file or following a
symlink planted there — and the directory is fsync'd. A capture killed at any moment leaves
either no file or a complete one (and perhaps a hidden ``.cpinspect-tmp-*`` file).

Every writer goes through ``redacted``: what the user did not ask to reveal never reaches disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import cpinspect
from cpinspect.agent.redact import REDACTED
from cpinspect.errors import (
    AgentUnavailable,
    CpinspectError,
    SnapshotFileError,
    SnapshotWriteError,
)
from cpinspect.model import (
    SNAPSHOT_LOG_RECORDS,
    Frame,
    FrameLocals,
    LocalVar,
    LogRecord,
    RoutesSnapshot,
    SessionsSnapshot,
    Snapshot,
    SourceKind,
    SourceLine,
    ThreadInfo,
    ThreadLocals,
)
from cpinspect.protocol import (
    DocumentEncoder,
    ProtocolError,
    snapshots_document,
    snapshots_from_document,
)
from cpinspect.sources.base import Capability, LinkState, Poller, Update
from cpinspect.sources.merge import with_gil_holder
from cpinspect.sources.source_lines import LineReader

TMP_PREFIX = ".cpinspect-tmp-"
"""Hidden names of files being written; never a final name (they do not end in ``.json``)."""
FILE_MODE = 0o600
MAX_NAME_TRIES = 1000
"""``-2`` … ``-1000`` suffixes before giving up on a directory full of clashing names."""

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")


# --- capture -----------------------------------------------------------------------------------


def snapshot_from_update(
    update: Update,
    routes: Optional[RoutesSnapshot] = None,
    sessions: Optional[SessionsSnapshot] = None,
    locals_: Sequence[ThreadLocals] = (),
    notes: Sequence[str] = (),
    log: Optional[Sequence[LogRecord]] = None,
) -> Snapshot:
    """One poll's data as a ``Snapshot`` (the GIL holder marked on its thread).

    ``notes`` are added after the update's own banner message and warnings, so the file says
    what was true of the link when it was taken. ``log``: the recent records (by default the
    ones the update brought), the last ``SNAPSHOT_LOG_RECORDS`` kept.
    """
    if log is None:
        log = [e for e in update.log if isinstance(e, LogRecord)]
    source = SourceKind.BOTH if update.pyspy_joined else update.effective_threads_source
    return Snapshot(
        taken_at=update.fetched_at,
        source=source,
        info=update.info,
        threads=with_gil_holder(update.threads, update.gil_holder),
        routes=routes,
        sessions=sessions,
        locals=tuple(locals_),
        notes=_unique(n for n in (update.message, *update.warnings, *notes) if n),
        stale=tuple(update.stale),
        gil_holder=update.gil_holder,
        cpinspect=cpinspect.__version__,
        log=tuple(log)[-SNAPSHOT_LOG_RECORDS:],
        log_state=update.log_state,
        agent_unresponsive=update.agent_unresponsive,
        listen_queues=update.listen_queues,
    )


def _unique(items: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _frames(snapshot: Snapshot, walked: Optional[Dict[int, ThreadInfo]] = None) -> Iterable[Frame]:
    if snapshot.threads is not None:
        for thread in snapshot.threads.threads:
            if walked is None or walked.get(id(thread)) is not thread:
                yield from thread.stack
    for thread_locals in snapshot.locals:
        for frame_locals in thread_locals.frames:
            yield frame_locals.frame


def with_source_lines(
    snapshot: Snapshot, reader: LineReader, like: Optional[Snapshot] = None
) -> Snapshot:
    """``snapshot`` with the line of every Python frame, read now, once per location.

    The code on disk may change with the next deploy; the file keeps the lines as they were.
    Lines already in the snapshot are kept and not read again; an unreadable one is kept as
    ``None`` so a reader of the file knows it was tried. ``like``: a snapshot of the same poll
    given its lines before (built while py-spy read): its lines are kept too, and the threads
    it holds as the very same objects are not walked again (1,000 threads: all but one).
    """
    known = {(s.filename, s.lineno) for s in snapshot.source_lines}
    lines: List[SourceLine] = list(snapshot.source_lines)
    walked: Optional[Dict[int, ThreadInfo]] = None
    if like is not None:
        for line in like.source_lines:
            if (line.filename, line.lineno) not in known:
                known.add((line.filename, line.lineno))
                lines.append(line)
        if like.threads is not None:
            walked = {id(t): t for t in like.threads.threads}
    for frame in _frames(snapshot, walked):
        if frame.native or frame.location in known:
            continue
        known.add(frame.location)
        lines.append(SourceLine(frame.filename, frame.lineno, reader.line(*frame.location)))
    return replace(snapshot, source_lines=tuple(lines))


@dataclass
class Series:
    """What ``capture_series`` took: the snapshots, oldest first, and why it stopped early."""

    taken: List[Snapshot]
    lost: str = ""
    """Why the target was lost before the series was complete (empty: it was not)."""
    interrupted: bool = False
    """Stopped by the user (Ctrl-C, or ``wait`` said to stop) before the series was complete."""


def beside(job: Callable[[], T]) -> Future[T]:
    """``job()`` started in a daemon thread of its own, its result (or exception) in the
    future: asked beside something else, and never holding up the interpreter's exit."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            future.set_exception(exc)

    threading.Thread(target=run, name="cpinspect-beside", daemon=True).start()
    return future


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def capture_series(
    poller: Poller,
    count: int,
    every: float,
    *,
    routes: Optional[RoutesSnapshot] = None,
    source_lines: Optional[LineReader] = None,
    log: Optional[List[LogRecord]] = None,
    extra: Optional[Callable[[Snapshot], Snapshot]] = None,
    progress: Optional[Callable[[int, Snapshot], None]] = None,
    note: Optional[Callable[[str], None]] = None,
    wait: Callable[[float], bool] = _sleep,
    poll: Optional[Callable[[], Update]] = None,
    join: Optional[Callable[[Update, Callable[[], object]], Update]] = None,
    meanwhile: Optional[Callable[[Snapshot], object]] = None,
    ask_beside: bool = False,
    routes_beside: Optional[Future[Read[RoutesSnapshot]]] = None,
) -> Series:
    """``count`` snapshots of ``poller``, ``every`` seconds apart from the first (one poll each,
    with the sessions' first pages, the source line of every frame and the recent log records).

    ``log``: the records read so far, extended in place with those each poll brings (each
    snapshot carries the recent ones). ``extra`` adds to each snapshot (locals, findings);
    ``progress(index, snapshot)`` is told of each one taken, ``note`` of what could not be read.
    ``wait(seconds)`` sleeps between snapshots and returns True to stop the series there. A
    lost target or Ctrl-C ends the series early: what was taken is returned, never lost.
    ``poll``: how to poll (``poller.poll`` by default; the TUI shares its poll lock and store).
    ``join(update, prepare)``: for a poll that left py-spy's read running (``AgentSession.
    join_pyspy``), the update with it joined; ``prepare`` builds the snapshot without it and
    hands it to ``meanwhile`` (``snapshot`` warms its encoder) while py-spy still reads.
    ``ask_beside``: the sessions asked at the same moment as each poll, not after it (``Asked``:
    a one-shot command waits for the agent once, not once per endpoint). ``routes_beside``:
    the routes asked before the series began, joined after the first poll as ``Asked`` says
    (the routes are ``routes`` then).
    """
    records: List[LogRecord] = log if log is not None else []
    series = Series(taken=[])
    start = time.monotonic()
    try:
        for index in range(count):
            if index:
                delay = start + index * every - time.monotonic()
                if delay > 0 and wait(delay):
                    series.interrupted = True
                    break
            asked = (
                beside(partial(ask_sessions, poller))
                if ask_beside and Capability.SESSIONS in poller.capabilities
                else None
            )
            update = poll() if poll is not None else poller.poll()
            if update.state is LinkState.LOST:
                # The session would go on answering with the last data: that is not a reading.
                series.lost = (update.message or "the target stopped answering").split(" — ")[0]
                break
            records.extend(e for e in update.log if isinstance(e, LogRecord))
            del records[: max(0, len(records) - 10 * SNAPSHOT_LOG_RECORDS)]
            until = late_until()
            if routes_beside is not None:
                routes, unread, _ = joined(update, routes_beside, "routes", until)
                routes_beside = None
                if unread is not None and note is not None:
                    note(unread)
            sessions, unread = None, None
            standing_in = update.threads_source is SourceKind.PYSPY  # the agent silent or slow
            if asked is not None:
                sessions, unread, late = joined(update, asked, "sessions", until)
                if late and index:
                    unread = None  # said at the first snapshot
            elif not update.agent_unresponsive and not standing_in:  # else 5 s of waiting
                sessions, unread = read_sessions(poller)
            elif note is not None and index == 0:
                unread = "sessions not captured: the agent does not answer" + (
                    "" if update.agent_unresponsive else " in time"
                )
            if unread is not None and note is not None:
                note(unread)
            build = partial(
                _built,
                routes=routes,
                sessions=sessions,
                log=records,
                extra=extra,
                earlier=series.taken,
                source_lines=source_lines,
            )
            prepared: List[Snapshot] = []
            if join is not None:
                update = join(update, partial(_prepare, build, update, meanwhile, prepared))
            snapshot = build(update, like=prepared[0] if prepared else None)
            series.taken.append(snapshot)
            if progress is not None:
                progress(index, snapshot)
    except KeyboardInterrupt:
        series.interrupted = True  # what was taken is still returned: nothing captured is lost
    return series


LATE_WAIT = 0.1
"""Seconds a one-shot command still waits for the agent calls asked beside a poll that the agent
did not answer in time (slow: py-spy's threads stand in) before leaving their data out, once
for all of them (``late_until``). An agent behind 100 spinning workers answered ``/v1/info`` in
0.35-0.8 s and ``/v1/threads`` seconds later (2026-12-01); in 4 dumps of 200 threads behind
100 spinners whose agent had answered its info (2026-12-04), a 0.25 s wait ran out every time
without the sessions' answer, so the wait is kept short."""

Read = Tuple[Optional[T], Optional[str]]
"""What was read (None if nothing), and why not, in one line (None if it was)."""


def late_until() -> float:
    """The end of the one ``LATE_WAIT`` the calls asked beside a poll share (``joined``'s
    ``until``), taken when the poll is in: two calls wait it once, not once each."""
    return time.monotonic() + LATE_WAIT


def joined(
    update: Update, asked: Future[Read[T]], what: str, until: Optional[float] = None
) -> Tuple[Optional[T], Optional[str], bool]:
    """The answer of an agent call asked beside the poll ``update`` (``what``: its name in the
    note), and whether it was left out for an agent that did not answer the poll.

    The agent answered the poll: waited for until it ends (the source's own time limit bounds
    it), so nothing it answers is dropped. py-spy stands in for a slow agent: until ``until``
    (``late_until()``) at most, ``LATE_WAIT`` from now without it. The agent silent: not waited
    for (it would be a timeout for nothing)."""
    silent = update.agent_unresponsive
    slow = not silent and update.threads_source is SourceKind.PYSPY
    late_wait = LATE_WAIT if until is None else max(0.0, until - time.monotonic())
    wait = 0.0 if silent else late_wait if slow else None
    late = "%s not captured: the agent does not answer%s" % (what, " in time" if slow else "")
    try:
        value, unread = asked.result(timeout=wait)
    except FutureTimeout:
        return None, late, True
    except CpinspectError as exc:
        if (silent or slow) and isinstance(exc, AgentUnavailable):
            return None, late, True  # its own time limit: the poll's note says why already
        return None, "%s not captured: %s" % (what, exc), False
    return value, unread, False


def ask_routes(poller: Poller) -> Read[RoutesSnapshot]:
    """The routes, to be asked ``beside`` a poll and ``joined`` after it (which turns an error
    into a note); ``(None, None)`` for a session that cannot read routes (py-spy alone)."""
    if Capability.ROUTES not in poller.capabilities:
        return None, None
    return poller.routes(), None


def ask_sessions(poller: Poller) -> Read[SessionsSnapshot]:
    """``read_sessions`` to be asked ``beside`` a poll: an error is ``joined``'s to say."""
    if Capability.SESSIONS not in poller.capabilities:
        return None, None
    return poller.sessions(), None


def _built(
    update: Update,
    *,
    routes: Optional[RoutesSnapshot],
    sessions: Optional[SessionsSnapshot],
    log: Sequence[LogRecord],
    extra: Optional[Callable[[Snapshot], Snapshot]],
    earlier: Sequence[Snapshot],
    source_lines: Optional[LineReader],
    like: Optional[Snapshot] = None,
) -> Snapshot:
    """One poll's snapshot as ``capture_series`` takes it (``like``: see ``with_source_lines``)."""
    snapshot = snapshot_from_update(update, routes=routes, sessions=sessions, log=log)
    if extra is not None:
        snapshot = extra(snapshot)
    if not snapshot.findings:
        snapshot = with_findings(snapshot, earlier)
    if source_lines is not None:
        snapshot = with_source_lines(snapshot, source_lines, like)
    return snapshot


def _prepare(
    build: Callable[[Update], Snapshot],
    update: Update,
    meanwhile: Optional[Callable[[Snapshot], object]],
    prepared: List[Snapshot],
) -> None:
    """The snapshot without py-spy's reading, built while it reads (``capture_series``), kept
    in ``prepared`` for the final one to reuse its lines."""
    snapshot = build(update)
    prepared.append(snapshot)
    if meanwhile is not None:
        meanwhile(snapshot)


def with_findings(snapshot: Snapshot, earlier: Sequence[Snapshot] = ()) -> Snapshot:
    """``snapshot`` with its findings (``find_all``) over the earlier snapshots of the same
    target in the findings' history window, oldest first."""
    from cpinspect.findings import find_all
    from cpinspect.findings.history import window

    return replace(snapshot, findings=find_all(snapshot, window(snapshot, earlier)))


# --- redaction ---------------------------------------------------------------------------------


def redacted(snapshot: Snapshot, reveal: bool) -> Snapshot:
    """What may be written: every hidden value replaced by ``***`` unless ``reveal``.

    The one gate every writer (files, reports) goes through. Request queries arrive already
    redacted by the sources; local variables are hidden here. Session ids never leave the agent
    (only keyed fingerprints do); the values of a session revealed in the TUI are dropped here.
    """
    if reveal:
        return replace(snapshot, revealed=True)
    return replace(
        snapshot,
        locals=tuple(_redacted_locals(t) for t in snapshot.locals),
        sessions=redacted_sessions(snapshot.sessions),
        revealed=False,
    )


def read_sessions(poller: Poller) -> Read[SessionsSnapshot]:
    """What a capture reads of the sessions: the first page of every app (no values: never
    revealed here), or ``(None, note)`` saying why not; ``(None, None)`` for a session that
    cannot read sessions at all (py-spy alone)."""
    if Capability.SESSIONS not in poller.capabilities:
        return None, None
    try:
        return poller.sessions(), None
    except CpinspectError as exc:
        return None, "sessions not captured: %s" % exc


def redacted_sessions(sessions: Optional[SessionsSnapshot]) -> Optional[SessionsSnapshot]:
    """``sessions`` without any session's values (their keys, types and sizes stay)."""
    if sessions is None:
        return None
    return replace(
        sessions,
        revealed=None,
        apps=tuple(
            replace(
                app,
                sessions=tuple(
                    replace(s, revealed=False, keys=tuple(replace(k, value=None) for k in s.keys))
                    for s in app.sessions
                ),
            )
            for app in sessions.apps
        ),
    )


def _redacted_locals(thread_locals: ThreadLocals) -> ThreadLocals:
    return replace(
        thread_locals,
        frames=tuple(
            FrameLocals(f.frame, tuple(_redacted_var(v) for v in f.variables))
            for f in thread_locals.frames
        ),
    )


def _redacted_var(var: LocalVar) -> LocalVar:
    return replace(var, value=REDACTED) if var.sensitive else var


# --- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """Where a capture was saved."""

    json_path: Path
    report_path: Optional[Path]
    """The plain-text report beside it (same name, ``.txt``); ``None`` when not asked for."""


def snapshot_stem(snapshots: Sequence[Snapshot]) -> str:
    """``cpinspect-<pid>-<YYYYmmdd-HHMMSS>`` (local time of the first), ``-x<N>`` for a series."""
    first = snapshots[0]
    pid = first.pid if first.pid is not None else "unknown"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(first.taken_at))
    stem = "cpinspect-%s-%s" % (pid, stamp)
    if len(snapshots) > 1:
        stem += "-x%d" % len(snapshots)
    return stem


def encode_snapshots(
    snapshots: Sequence[Snapshot], encoder: Optional[DocumentEncoder] = None
) -> bytes:
    """The bytes of a snapshot file (compact JSON: a 1,000-thread capture must be quick).
    ``encoder``: one that encoded nearly the same snapshots before (the threads it kept)."""
    if encoder is not None:
        return encoder.encode(snapshots).encode("utf-8")
    return json.dumps(snapshots_document(snapshots), separators=(",", ":")).encode("utf-8")


def write_snapshots(
    snapshots: Sequence[Snapshot],
    directory: PathLike,
    *,
    reveal: bool = False,
    report: bool = True,
    stem: Optional[str] = None,
    encoder: Optional[DocumentEncoder] = None,
) -> Written:
    """Save ``snapshots`` (one, or a series) in ``directory``; never overwrites anything.

    ``stem``: the file name without its suffix (``snapshot_stem`` by default); a taken name
    gets ``-2``, ``-3`` … as always. ``encoder``: see ``encode_snapshots``.

    Raises ``SnapshotWriteError`` with one line when the directory is missing, not a directory
    or not writable, or the disk is full.
    """
    if not snapshots:
        raise ValueError("write_snapshots needs at least one snapshot")
    safe = [redacted(s, reveal) for s in snapshots]
    where = os.fspath(directory)
    dir_fd = _open_directory(where)
    try:
        temps: List[Tuple[str, str, os.stat_result]] = []
        try:
            # The JSON written and fsync'd in a thread while the report is formatted here: the
            # fsync waits for the disk without the GIL (1,000 threads: ~10 ms, and ~10 ms of
            # formatting beside it). Encoded here first: two threads converting at once only
            # pass the GIL back and forth.
            data = encode_snapshots(safe, encoder)
            written = beside(lambda: _write_temp(dir_fd, where, data))
            try:
                if report:
                    # Lazy: formatting is a large module and only the text report needs it.
                    from cpinspect.formatting import format_report

                    text = format_report(safe, time.time()).encode("utf-8")
                    name, info = _write_temp(dir_fd, where, text)
                    temps.append((".txt", name, info))
            finally:
                # Waited for whatever happened here: its file is removed below on an error.
                error = written.exception()
                if error is None:
                    temps.insert(0, (".json", *written.result()))
            if error is not None:
                raise error
            stem = _place(dir_fd, where, stem or snapshot_stem(safe), temps)
            _fsync_directory(dir_fd, where)
        finally:
            for _, name, _ in temps:
                _unlink_quietly(dir_fd, name)
    finally:
        os.close(dir_fd)
    base = Path(where)
    return Written(
        json_path=base / (stem + ".json"),
        report_path=base / (stem + ".txt") if report else None,
    )


def check_directory(directory: PathLike) -> None:
    """Fail now, in one line, if snapshots cannot be saved in ``directory`` (before a series
    spends minutes capturing what could not be written)."""
    where = os.fspath(directory)
    os.close(_open_directory(where))
    if not os.access(
        where, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids
    ):
        raise _write_error(where, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def _open_directory(where: str) -> int:
    try:
        return os.open(where, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SnapshotWriteError(
            "cannot save the snapshot: %s does not exist (create it, or choose another directory)"
            % where
        ) from None
    except NotADirectoryError:
        raise SnapshotWriteError(
            "cannot save the snapshot: %s is not a directory (choose a directory to save into)"
            % where
        ) from None
    except OSError as exc:
        raise _write_error(where, exc) from None


def _write_error(where: str, exc: OSError) -> SnapshotWriteError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SnapshotWriteError(
            "cannot save the snapshot: %s is not writable (%s); choose a directory you can "
            "write to" % (where, exc.strerror)
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SnapshotWriteError(
            "cannot save the snapshot in %s: %s (free some space, or choose another directory)"
            % (where, exc.strerror)
        )
    return SnapshotWriteError("cannot save the snapshot in %s: %s" % (where, exc.strerror or exc))


def _write_temp(dir_fd: int, where: str, data: bytes) -> Tuple[str, os.stat_result]:
    """Write ``data`` to a new hidden file, fsync'd; returns its name and identity."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = TMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _write_error(where, exc) from None
    else:  # pragma: no cover - 100 clashes of 64 random bits
        raise SnapshotWriteError("cannot save the snapshot in %s: no free temporary name" % where)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            info = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _unlink_quietly(dir_fd, name)
        raise _write_error(where, exc) from None
    return name, info


def _place(
    dir_fd: int, where: str, stem: str, temps: Sequence[Tuple[str, str, os.stat_result]]
) -> str:
    """Give every temporary file its final name ``<stem><suffix>``; returns the stem used.

    The files of one capture share a stem: on a clash with any of them, the ones already
    placed are taken back and the next stem (``-2``, ``-3`` …) is tried.
    """
    for attempt in range(1, MAX_NAME_TRIES + 1):
        candidate = stem if attempt == 1 else "%s-%d" % (stem, attempt)
        placed: List[Tuple[str, str, os.stat_result]] = []
        for suffix, name, info in temps:
            final = candidate + suffix
            if not _link_new(dir_fd, where, name, final):
                break
            placed.append((final, name, info))
        else:
            return candidate
        for final, name, info in placed:
            _take_back(dir_fd, final, name, info)
    raise SnapshotWriteError(
        "cannot save the snapshot in %s: %s and %d more names are taken; clean the directory "
        "or choose another" % (where, stem, MAX_NAME_TRIES - 1)
    )


def _link_new(dir_fd: int, where: str, temp: str, final: str) -> bool:
    """Give ``temp`` the name ``final`` if nothing has it yet (not even a symlink)."""
    try:
        os.link(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise _write_error(where, exc) from None
    # A filesystem without hard links: rename, after checking the name is free. Only a writer
    # racing us in the same directory could slip in between; nothing is ever followed.
    try:
        os.stat(final, dir_fd=dir_fd, follow_symlinks=False)
        return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _write_error(where, exc) from None
    try:
        os.rename(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        raise _write_error(where, exc) from None
    return True


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _take_back(dir_fd: int, final: str, temp: str, info: os.stat_result) -> None:
    """Undo ``_link_new(temp, final)``, if ``final`` is still the file we placed there."""
    try:
        if not _same_file(os.stat(final, dir_fd=dir_fd, follow_symlinks=False), info):
            return  # not ours any more: leave it
        try:
            os.stat(temp, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:  # it was renamed (no hard links here): rename it back
            os.rename(final, temp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:  # it was linked: the temporary name still holds it
            os.unlink(final, dir_fd=dir_fd)
    except OSError:
        pass  # gone already; the next name is tried all the same


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass  # already renamed into place (the no-hard-link path), or gone


def _fsync_directory(dir_fd: int, where: str) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # some filesystems cannot sync dirs
            raise _write_error(where, exc) from None


# --- reading -----------------------------------------------------------------------------------

_CUT_TOKEN = re.compile(r"t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?|-?[0-9.eE+-]*")
"""A literal or number that the end of the file cut in two (``tru``, ``1.``, ``-``)."""


def read_snapshots(path: PathLike) -> Tuple[Snapshot, ...]:
    """The snapshots saved in ``path``, oldest first.

    Raises ``SnapshotFileError`` with one line naming the file and what to do when it cannot be
    opened: missing, a directory, unreadable, empty, cut short, not JSON, not a cpinspect
    snapshot, written by a newer cpinspect, or damaged.
    """
    name = os.fspath(path)
    data = _read_bytes(name)
    if not data.strip():
        raise SnapshotFileError(
            "%s is empty: the capture did not finish writing it; take the snapshot again" % name
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            raise SnapshotFileError(
                "%s is not a cpinspect snapshot (not UTF-8 text: byte %d); open the .json file "
                "cpinspect saved" % (name, exc.start)
            ) from None
        # Cut inside a character: what came before is judged (and found cut short) below.
        text = data[: exc.start].decode("utf-8", errors="replace")
    doc = _parse(name, text)
    if isinstance(doc, list):
        raise SnapshotFileError("%s %s" % (name, _list_kind(doc)))
    try:
        return snapshots_from_document(doc)
    except ProtocolError as exc:
        raise SnapshotFileError(_document_message(name, str(exc))) from None
    except RecursionError:
        raise SnapshotFileError(
            "%s is not a cpinspect snapshot (nested too deeply)" % name
        ) from None


def _read_bytes(name: str) -> bytes:
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise SnapshotFileError("%s: no such file (check the path)" % name) from None
    except IsADirectoryError:
        raise SnapshotFileError(
            "%s is a directory: give the snapshot's .json file inside it" % name
        ) from None
    except PermissionError:
        raise SnapshotFileError(
            "cannot read %s: permission denied (run as the user who saved it, or make it "
            "readable)" % name
        ) from None
    except OSError as exc:
        raise SnapshotFileError("cannot read %s: %s" % (name, exc.strerror or exc)) from None


def _parse(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise SnapshotFileError(
            "%s is not a cpinspect snapshot (JSON nested too deeply)" % name
        ) from None
    except json.JSONDecodeError as exc:
        if _cut_short(text, exc):
            raise SnapshotFileError(
                "%s is cut short: the JSON stops after %d bytes, before the document ends "
                "(copied or saved while being written?); copy it again from where it was saved"
                % (name, len(text.encode("utf-8")))
            ) from None
        raise SnapshotFileError(
            "%s is not JSON (line %d column %d: %s); open the .json file cpinspect saved"
            % (name, exc.lineno, exc.colno, exc.msg)
        ) from None


def _cut_short(text: str, exc: json.JSONDecodeError) -> bool:
    """True when the JSON was fine up to where the file ends (truncated, not corrupt)."""
    if not text.lstrip().startswith(("{", "[")):
        return False
    if exc.msg.startswith("Unterminated string"):
        return True  # the string runs to the end of the file
    tail = text[exc.pos :].strip()
    if not tail:
        return True
    return exc.msg.startswith(("Expecting value", "Expecting ','")) and bool(
        _CUT_TOKEN.fullmatch(tail)
    )


def _list_kind(doc: List[Any]) -> str:
    first = doc[0] if doc else None
    if isinstance(first, dict) and ("thread_id" in first or "frames" in first):
        return (
            "looks like py-spy's dump --json, not a cpinspect snapshot: open a file cpinspect "
            "saved (or attach to the process)"
        )
    return "is a JSON list, not a cpinspect snapshot: open the .json file cpinspect saved"


def _document_message(name: str, reason: str) -> str:
    reason = " ".join(reason.split())  # one line, whatever a value in the file held
    if reason.startswith("written by a newer"):
        return "%s was %s" % (name, reason)
    if reason.startswith("not a cpinspect snapshot"):
        return "%s is %s; open the .json file cpinspect saved" % (name, reason)
    if reason.startswith("a snapshot file with no snapshots"):
        return "%s is %s (the capture saved nothing); take the snapshot again" % (name, reason)
    return "%s is damaged (%s); take the snapshot again or restore the file" % (name, reason)


__all__: List[str] = [
    "Series",
    "Written",
    "capture_series",
    "encode_snapshots",
    "read_snapshots",
    "redacted",
    "snapshot_from_update",
    "snapshot_stem",
    "with_findings",
    "with_source_lines",
    "write_snapshots",
]
