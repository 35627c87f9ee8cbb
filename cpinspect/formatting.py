"""Pure text renderers from the model: shared by the TUI, ``cpinspect dump`` and snapshot reports.

Standard library only (no Textual, no Rich): every function takes model objects and returns
strings or plain data, so it is tested with hand-built objects and reused by every view. What the
data means (groups, saturation, stuck requests, effective config) is worked out in
``analysis.py``; the names that used to live here are imported back so callers need not change.
"""

from __future__ import annotations

import enum
import os
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from cpinspect import analysis
from cpinspect.agent import wire
from cpinspect.analysis import (
    CpuUse,
    RouteGroup,
    SeriesAnalysis,
    SnapshotDiff,
    ThreadChange,
    analyze_series,
    route_groups,
    thread_order,
)
from cpinspect.model import (
    AppRoutes,
    AppSessions,
    Finding,
    FindingSeverity,
    Frame,
    LocalVar,
    LogGap,
    LogOrigin,
    LogRecord,
    LogRouting,
    LogState,
    Phase,
    PoolInfo,
    ProcessInfo,
    ProcessSummary,
    RequestInfo,
    Resolution,
    Role,
    RouteNode,
    SessionInfo,
    SessionsSnapshot,
    Snapshot,
    SourceKind,
    StaticMount,
    ThreadInfo,
    ThreadLocals,
    ThreadsSnapshot,
)

# Moved to analysis.py (they are not text); still importable from here.
is_saturated = analysis.is_saturated
effective_config = analysis.effective_config
tools_in_effect = analysis.tools_in_effect
own_settings = analysis.own_settings
GLOBAL_ORIGIN = analysis.GLOBAL_ORIGIN
FALSE_REPRS = analysis.FALSE_REPRS

NONE_MARK = "—"
"""Shown where a value is unknown."""

GLYPH_BUSY = "●"
GLYPH_READING = "◔"
GLYPH_WRITING = "◑"
GLYPH_IDLE = "○"
GLYPH_OTHER = "·"
"""Threads that are not pool workers (acceptor, main, agent ...) are neither busy nor idle."""

SPARK_BARS = "▁▂▃▄▅▆▇█"
GAUGE_FULL = "█"
GAUGE_EMPTY = "░"

REDACTED = "***"
"""Shown instead of a hidden value."""

SourceLine = Callable[[str, int], Optional[str]]
"""``(filename, lineno) -> line`` (``None`` when unreadable), e.g. ``SourceLines.line``."""


class ThreadView(str, enum.Enum):
    """Which threads a listing shows."""

    BUSY = "busy"
    """Busy pool workers only."""
    WORKERS = "workers"
    """Every pool worker, busy or idle."""
    ALL = "all"
    """Every thread of the process (acceptor, agent, main ...)."""

    @property
    def label(self) -> str:
        return {"busy": "Busy workers", "workers": "Workers", "all": "All threads"}[self.value]


# --- durations ---------------------------------------------------------------------------------


AT_LEAST = "≥"
"""Before a duration that is a lower bound (``format_elapsed``)."""


def format_duration(seconds: Optional[float]) -> str:
    """A short human duration: ``0.4 s``, ``48.2 s``, ``3 m 12 s``, ``2 h 5 m``, ``3 d 4 h``.

    ``None`` (unknown) is ``—``; negative values (clock skew between processes) count as 0.
    """
    if seconds is None:
        return NONE_MARK
    seconds = max(0.0, seconds)
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} m"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def format_age(seconds: Optional[float]) -> str:
    """How old data is: ``0.4 s ago`` (``—`` when there is no data yet)."""
    if seconds is None:
        return NONE_MARK
    return format_duration(seconds) + " ago"


def format_clock(epoch: Optional[float]) -> str:
    """Local wall-clock time of day, ``14:03:27`` (the time zone of the inspector)."""
    if epoch is None:
        return NONE_MARK
    return time.strftime("%H:%M:%S", time.localtime(epoch))


# --- sources -----------------------------------------------------------------------------------


def source_description(kind: SourceKind, threads_kind: Optional[SourceKind] = None) -> str:
    """Where the threads on screen come from: ``agent``, ``py-spy``, ``file``.

    When py-spy stands in for an agent that stopped answering: ``py-spy (agent not answering)``.
    """
    if threads_kind is None or threads_kind is kind:
        return kind.value
    if kind is SourceKind.AGENT and threads_kind is SourceKind.PYSPY:
        return "py-spy (agent not answering)"
    return f"{threads_kind.value} (instead of {kind.value})"


# --- processes ---------------------------------------------------------------------------------


def process_name(cmdline: Sequence[str]) -> str:
    """A short name for a process from its command line.

    ``python3 -u shop.py --port 8080`` is ``shop.py``; ``python -m shop.app`` is ``shop.app``;
    ``/usr/bin/cherryd -c site.conf`` is ``cherryd``.
    """
    if not cmdline:
        return "?"
    program = os.path.basename(cmdline[0])
    if not program.startswith("python"):
        return program or "?"
    args = list(cmdline[1:])
    while args:
        arg = args.pop(0)
        if arg == "-m" and args:
            return args[0]
        if arg == "-c":
            return program + " -c"
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:]
        if arg in ("-W", "-X", "--check-hash-based-pycs") and args:
            args.pop(0)
            continue
        if arg.startswith("-"):
            continue
        return os.path.basename(arg) or arg
    return program


# --- frames ------------------------------------------------------------------------------------


def short_filename(filename: str) -> str:
    """The base name of a source file; ``pkg/__init__.py`` keeps its package for clarity."""
    base = os.path.basename(filename) or filename
    if base in ("__init__.py", "__main__.py"):
        parent = os.path.basename(os.path.dirname(filename))
        if parent:
            return f"{parent}/{base}"
    return base


def frame_location(frame: Frame) -> str:
    """``reports.py:88``; a native frame without a line is its library, ``libpython3.11.so``."""
    if frame.native and frame.lineno <= 0:
        return short_filename(frame.filename) or "?"
    return f"{short_filename(frame.filename)}:{frame.lineno}"


def frame_kind(frame: Frame) -> str:
    """``app``, ``lib`` or ``c`` (a native frame): the tag in front of a frame in the stack pane."""
    if frame.native:
        return "c"
    return "app" if frame.is_app else "lib"


def frame_label(frame: Frame) -> str:
    """``reports.py:88 export``: where a frame is, for one-line summaries."""
    return f"{frame_location(frame)} {frame.function}"


def summary_frames(stack: Sequence[Frame], limit: int = 3) -> Tuple[Frame, ...]:
    """The frames that say most about a stack, innermost first.

    The innermost frame (where the thread actually waits) and then the application frames,
    ``limit`` in all; a stack without application frames gives its innermost frames.
    """
    if not stack:
        return ()
    if not any(f.is_app for f in stack):
        return tuple(stack[:limit])
    chosen = [stack[0]]
    chosen.extend(f for f in stack[1:] if f.is_app)
    return tuple(chosen[:limit])


def stack_summary(stack: Sequence[Frame], limit: int = 3) -> str:
    """``db.py:41 fetch_all ← reports.py:88 export`` (callee ← caller)."""
    if not stack:
        return "no Python stack"
    return " ← ".join(frame_label(f) for f in summary_frames(stack, limit))


# --- threads -----------------------------------------------------------------------------------


def sort_threads(threads: Iterable[ThreadInfo], view: ThreadView) -> List[ThreadInfo]:
    """The threads a view shows, in display order.

    The GIL holder first, then busy before idle, then the longest elapsed first, then by name.
    """
    if view is ThreadView.BUSY:
        chosen = [t for t in threads if t.role is Role.WORKER and t.busy]
    elif view is ThreadView.WORKERS:
        chosen = [t for t in threads if t.role is Role.WORKER]
    else:
        chosen = list(threads)
    return sorted(chosen, key=thread_order)


class StackGroup(analysis.StackGroup):
    """``analysis.StackGroup`` with the sentence that heads it, for views that show it."""

    @property
    def summary(self) -> str:
        """``8 threads share this stack: db.py:41 fetch_all ← reports.py:88 export``."""
        return group_summary(self.count, self.stack)


def group_summary(count: int, stack: Sequence[Frame]) -> str:
    """The sentence that heads a group: how many threads and where they are."""
    where = stack_summary(stack)
    if count == 1:
        return f"1 thread: {where}"
    if not stack:
        return f"{count} threads without a Python stack"
    return f"{count} threads share this stack: {where}"


def _with_summary(group: analysis.StackGroup) -> StackGroup:
    return StackGroup(group.threads, group.stack)


def group_stacks(
    threads: Iterable[ThreadInfo],
    key: Optional[Callable[[ThreadInfo], analysis.StackKey]] = None,
) -> List[StackGroup]:
    """``analysis.group_stacks``, each group with its ``summary``."""
    return [_with_summary(g) for g in analysis.group_stacks(threads, key)]


def largest_shared_stack(
    threads: Iterable[ThreadInfo],
    key: Optional[Callable[[ThreadInfo], analysis.StackKey]] = None,
) -> Optional[StackGroup]:
    """``analysis.largest_shared_stack``, with its ``summary``."""
    group = analysis.largest_shared_stack(threads, key)
    return _with_summary(group) if group is not None else None


@dataclass(frozen=True)
class ThreadRow:
    """The table cells of one thread, as text."""

    ident: int
    glyph: str
    state: str
    """``busy``, ``read``, ``write``, ``idle`` or ``—`` for a thread outside the pool."""
    gil: bool
    elapsed: str
    request: str
    client: str
    handler: str
    role: str
    name: str

    @property
    def state_cell(self) -> str:
        """``● busy``, with `` GIL`` appended for the thread holding the GIL."""
        return f"{self.glyph} {self.state}" + (" GIL" if self.gil else "")


def thread_state(thread: ThreadInfo) -> Tuple[str, str]:
    """``(glyph, word)`` for a thread's state: the glyph carries the meaning without colour."""
    if thread.role is not Role.WORKER and not thread.busy:
        return GLYPH_OTHER, NONE_MARK
    if thread.phase is Phase.READING:
        return GLYPH_READING, "read"
    if thread.phase is Phase.WRITING:
        return GLYPH_WRITING, "write"
    if thread.busy:
        return GLYPH_BUSY, "busy"
    return GLYPH_IDLE, "idle"


def request_line(request: RequestInfo) -> str:
    """``GET /reports/export?year=2025`` (the query is already redacted by the source)."""
    return f"{request.method} {request.target}"


def thread_request_text(thread: ThreadInfo) -> str:
    """What the thread is serving, for a table cell."""
    request = thread.request
    if thread.phase is Phase.READING:
        if request is None:
            return "(reading request)"
        return request_line(request) + "  (reading body)"
    if request is None:
        return ""
    return request_line(request)


def format_elapsed(thread: ThreadInfo) -> str:
    """How long the thread's request has run: ``12.0 s``, or ``≥12.0 s`` when that is only a
    lower bound (py-spy found it running at its first look: ``RequestInfo.started_before``)."""
    text = format_duration(thread.elapsed)
    request = thread.request
    if request is not None and request.started_before and thread.elapsed is not None:
        return AT_LEAST + text
    return text


def thread_elapsed_text(thread: ThreadInfo) -> str:
    """The elapsed cell: how long the request has run, for a thread serving one."""
    show_elapsed = thread.busy or thread.phase in (Phase.READING, Phase.WRITING)
    return format_elapsed(thread) if show_elapsed else ""


def thread_row(thread: ThreadInfo) -> ThreadRow:
    glyph, state = thread_state(thread)
    request = thread.request
    return ThreadRow(
        ident=thread.ident,
        glyph=glyph,
        state=state,
        gil=bool(thread.owns_gil),
        elapsed=thread_elapsed_text(thread),
        request=thread_request_text(thread),
        client=(request.client or NONE_MARK) if request else "",
        handler=(request.handler or NONE_MARK) if request else "",
        role=thread.role.value,
        name=thread.name,
    )


# --- pools -------------------------------------------------------------------------------------


def gauge(value: int, total: int, width: int = 10) -> Tuple[int, int]:
    """``(filled, empty)`` cell counts for a ``value``/``total`` bar of ``width`` cells.

    Any busy worker shows at least one cell and the bar is full only when all are busy.
    """
    if width <= 0:
        return 0, 0
    if total <= 0:
        return 0, width
    value = max(0, min(value, total))
    filled = value * width // total
    if value > 0 and filled == 0:
        filled = 1
    if value < total and filled == width:
        filled = width - 1
    return filled, width - filled


def sparkline(values: Sequence[float], width: int, top: Optional[float] = None) -> str:
    """The last ``width`` values as block characters on an absolute 0..``top`` scale.

    Newest on the right, padded with spaces on the left while the history is short. An
    absolute scale keeps "3 of 10 busy" low instead of stretching it between min and max.
    """
    if width <= 0:
        return ""
    recent = list(values)[-width:]
    scale = top if top and top > 0 else max(recent, default=0) or 1
    last = len(SPARK_BARS) - 1
    bars = "".join(SPARK_BARS[max(0, min(last, round(v / scale * last)))] for v in recent)
    return bars.rjust(width)


def format_rate(per_second: Optional[float]) -> str:
    """``12.5 req/s``"""
    if per_second is None:
        return f"{NONE_MARK} req/s"
    if per_second >= 100:
        return f"{per_second:.0f} req/s"
    return f"{per_second:.1f} req/s"


def pool_line(pool: PoolInfo) -> str:
    """One line of numbers about a pool, for ``dump``."""
    parts = [
        f"Pool {pool.bind}",
        f"busy {pool.busy}/{pool.size}",
        f"idle {pool.idle}",
        f"queued {pool.queued}",
        f"oldest {format_duration(pool.oldest_busy)}",
    ]
    if pool.keepalive is not None:
        parts.append(f"keep-alive {pool.keepalive}")
    if pool.max_threads is not None and pool.max_threads != pool.min_threads:
        parts.append(f"threads {pool.min_threads}..{pool.max_threads}")
    if is_saturated(pool):
        parts.append("⚠ pool saturated")
    return "  ".join(parts)


# --- dump --------------------------------------------------------------------------------------


def _thread_header(thread: ThreadInfo) -> str:
    ids = f"Thread {thread.ident}"
    if thread.native_id is not None:
        ids += f" (native {thread.native_id})"
    details = [thread.role.value]
    if thread.role is Role.WORKER or thread.busy:
        if thread.busy:
            if (
                thread.elapsed is None
                and thread.request is not None
                and thread.request.started_before
            ):
                details.append("busy since before py-spy looked")  # a first look: no time known
            else:
                details.append(f"busy {format_elapsed(thread)}")
        else:
            details.append("idle")
        if thread.phase not in (Phase.IDLE, Phase.UNKNOWN):
            details.append(thread.phase.value)
    if thread.cpu_time is not None:
        details.append(f"cpu {format_duration(thread.cpu_time)}")
    if thread.owns_gil:
        details.append("holds the GIL")
    return f'{ids} "{thread.name}" ({", ".join(details)})'


def _request_dump_line(request: RequestInfo) -> str:
    line = request_line(request)
    if request.client:
        line += f" from {request.client}"
    if request.peer and request.peer != request.client:
        line += f" (peer {request.peer})"
    if request.handler:
        line += f" → {request.handler}"
    return line


def format_stack_lines(
    stack: Sequence[Frame], source_line: Optional[SourceLine], indent: str = "    "
) -> List[str]:
    """A stack innermost first, ``func (file:line)``, app frames followed by their source line.

    Native frames (py-spy ``--native``) read ``PyObject_Call (libpython3.11.so) [native]``.
    """
    lines = []
    for frame in stack:
        if frame.native:
            where = frame.filename if frame.lineno <= 0 else f"{frame.filename}:{frame.lineno}"
            lines.append(f"{indent}{frame.display_name} ({where}) [native]")
            continue
        lines.append(f"{indent}{frame.display_name} ({frame.filename}:{frame.lineno})")
        if frame.is_app and source_line is not None:
            text = source_line(frame.filename, frame.lineno)
            if text and text.strip():
                lines.append(f"{indent}    {text.strip()}")
    return lines


def _groupable(thread: ThreadInfo) -> bool:
    """A thread with nothing of its own to show but its stack (an idle worker, the main thread):
    such threads with one stack are dumped together."""
    return (
        thread.request is None
        and not thread.busy
        and thread.phase is not Phase.READING
        and not thread.owns_gil
    )


def _dump_entries(threads: Sequence[ThreadInfo]) -> List[Tuple[ThreadInfo, ...]]:
    """Threads in order, those with a request alone; the others grouped by identical stack,
    each group where its first thread comes."""
    entries: List[List[ThreadInfo]] = []
    shared: Dict[Tuple[Tuple[Tuple[str, int], ...], int], List[ThreadInfo]] = {}
    for thread in threads:
        if not _groupable(thread):
            entries.append([thread])
            continue
        key = (thread.stack_key, thread.stack_truncated)
        if key in shared:
            shared[key].append(thread)
        else:
            shared[key] = [thread]
            entries.append(shared[key])
    return [tuple(entry) for entry in entries]


def _shared_header(threads: Sequence[ThreadInfo]) -> str:
    """``30 threads share this stack: CP Server Thread-1…-30 (idle)``."""
    states: List[str] = []
    for thread in threads:
        state = "idle" if thread.role is Role.WORKER else thread.role.value
        if state not in states:
            states.append(state)
    names = compact_names([t.name for t in threads])
    if not threads[0].stack:
        return f"{len(threads)} threads without a Python stack: {names} ({', '.join(states)})"
    return f"{len(threads)} threads share this stack: {names} ({', '.join(states)})"


def lock_lines(thread: ThreadInfo) -> List[str]:
    """What the agent saw of the thread and locks: the lock it waits on, the ones it holds that
    others wait for (``[]`` when neither)."""
    out: List[str] = []
    wait = thread.wait
    if wait is not None:
        line = "waits on %s (%s) at %s:%d" % (
            wait.expr,
            wait.type,
            short_filename(wait.filename),
            wait.lineno,
        )
        if wait.owner is not None:
            line += "  owner ident %d" % wait.owner
        out.append(line)
    out.extend(
        "holds %s (with-block at %s:%d) — other threads wait for it"
        % (held.expr, short_filename(held.filename), held.lineno)
        for held in thread.holds
    )
    return out


def format_dump(
    info: Optional[ProcessInfo],
    snap: ThreadsSnapshot,
    source_line: SourceLine,
    now: float,
    findings: Optional[Sequence[Finding]] = None,
) -> str:
    """The text of ``cpinspect dump``: who the process is, its findings (when given: what is
    wrong comes first), its pools, then every thread.

    Threads come in display order (``sort_threads(..., ALL)``: busy workers first, the
    longest-running first), each with its request and its stack innermost first. Threads with
    no request and the same stack (thirty idle workers) share one entry: a header naming them,
    then the stack once.
    """
    out: List[str] = []
    if info is None:
        out.append("Process: unknown (process information unavailable)")
    else:
        out.append(f"Process {info.pid}: {' '.join(info.cmdline)}")
        out.append(_versions(info))
        engine = f"Engine {info.engine_state}"
        if info.environment:
            engine += f"  environment {info.environment}"
        if info.autoreload is not None:
            engine += f"  autoreload {'on' if info.autoreload else 'off'}"
        out.append(engine)
    taken = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(snap.taken_at))
    out.append(f"Threads taken {taken} ({format_age(now - snap.taken_at)})")
    out.append("")
    if findings is not None:
        out.append(section(f"Findings ({len(findings)})"))
        out.extend(format_findings(findings)[1 if findings else 0 :])
        if findings:
            out.append("")
        out.append(section("Threads"))
        out.append("")

    if not snap.pools_available:
        note = snap.pools_note or "no cheroot server found"
        out.append(f"pool numbers unavailable: {note}")
    out.extend(pool_line(pool) for pool in snap.pools)
    if snap.requests_served is not None:
        out.append(f"Requests served since the agent started: {snap.requests_served}")
    workers = snap.workers
    busy = sum(1 for t in workers if t.busy)
    out.append(f"{len(snap.threads)} threads, {len(workers)} workers, {busy} busy")
    shared = largest_shared_stack(t for t in workers if t.busy)
    if shared is not None:
        out.append(shared.summary)
    out.append("")

    for entry in _dump_entries(sort_threads(snap.threads, ThreadView.ALL)):
        thread = entry[0]
        if len(entry) == 1:
            out.append(_thread_header(thread))
            if thread.request is not None:
                out.append("    " + _request_dump_line(thread.request))
            elif thread.phase is Phase.READING:
                out.append("    (reading the request)")
            out.extend("    " + line for line in lock_lines(thread))
        else:
            out.append(_shared_header(entry))
        if thread.stack:
            out.extend(format_stack_lines(thread.stack, source_line))
        else:
            out.append("    (no Python stack)")
        if thread.stack_truncated:
            out.append(f"    … {thread.stack_truncated} outer frames not shown")
        out.append("")

    if snap.errors:
        out.append("Probe errors (the rest of the data is valid):")
        out.extend(f"  - {error}" for error in snap.errors)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def most_common_requests(threads: Iterable[ThreadInfo]) -> str:
    """``GET /reports/export ×8 +2 more`` for a group of threads (paths without queries)."""
    counts = Counter(
        f"{t.request.method} {t.request.path}" for t in threads if t.request is not None
    )
    if not counts:
        return ""
    (top, n), *rest = counts.most_common()
    text = top + (f" ×{n}" if n > 1 else "")
    if rest:
        text += f" +{sum(c for _, c in rest)} more"
    return text


# --- reports (the text beside a snapshot file) and diffs ---------------------------------------

RULE = "─"
GIL_MARK = "◆ holds the GIL"


def format_captured(epoch: float) -> str:
    """``2025-06-15 17:06:40 +0200``: local time with its UTC offset (reports travel)."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(epoch))


def section(title: str, width: int = 78) -> str:
    """``── Busy workers (10) ─────…``: a heading that stands out in ``less``."""
    head = f"{RULE * 2} {title} "
    return head + RULE * max(2, width - len(head))


def compact_names(names: Sequence[str], limit: int = 16) -> str:
    """``CP Server Thread-1, -2, -5…-30``: thread names sharing a prefix, numbers run together.

    Names that do not end in ``-<number>`` are listed as they are; past ``limit`` items the
    rest are counted (``… and 12 more``).
    """
    numbered: Dict[str, List[int]] = {}
    plain: List[str] = []
    for name in names:
        match = re.fullmatch(r"(.*-)(\d+)", name)
        if match:
            numbered.setdefault(match.group(1), []).append(int(match.group(2)))
        else:
            plain.append(name)
    items: List[str] = []
    for prefix, numbers in numbered.items():
        runs: List[Tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if runs and n == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], n)
            else:
                runs.append((n, n))
        for index, (lo, hi) in enumerate(runs):
            lead = prefix if index == 0 else "-"
            if hi - lo >= 2:
                items.append(f"{lead}{lo}…-{hi}")
            else:
                items.extend(f"{lead if n == lo else '-'}{n}" for n in range(lo, hi + 1))
    items.extend(plain)
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", … and {len(items) - limit} more"
    return ", ".join(items)


def route_group_summary(group: RouteGroup) -> str:
    """``12 of 16 workers: GET /reports/export → db.py:80 fetchall``."""
    what = "reading a request" if group.method is None else f"{group.method} {group.path}"
    where = f" → {frame_label(group.frame)}" if group.frame is not None else ""
    noun = "worker" if group.workers == 1 else "workers"
    return f"{group.count} of {group.workers} {noun}: {what}{where}"


def _holds_gil(thread: ThreadInfo, gil_holder: Optional[int]) -> bool:
    return bool(thread.owns_gil) or (gil_holder is not None and thread.ident == gil_holder)


def _request_words(thread: ThreadInfo) -> str:
    """``GET /r?x=*** from 10.0.0.9 (peer 127.0.0.1:5000) → Root.r`` or ``(reading request)``."""
    if thread.request is None:
        return thread_request_text(thread) or "idle"
    text = _request_dump_line(thread.request)
    if thread.phase is Phase.READING:
        text += "  (reading body)"
    elif thread.phase is Phase.WRITING:
        text += "  (writing the response)"
    return text


def _report_thread_line(thread: ThreadInfo, width: int, gil_holder: Optional[int]) -> str:
    """One busy thread of a group: name, elapsed, request joined to it, GIL mark."""
    line = f"  {thread.name.ljust(width)}  {format_elapsed(thread):>8}  "
    line += _request_words(thread)
    if _holds_gil(thread, gil_holder):
        line += f"  {GIL_MARK}"
    return line


def _report_group(group: analysis.StackGroup, snap: Snapshot, *, each: bool) -> List[str]:
    """A stack group: its sentence, its threads (one line each, or compactly), its stack once."""
    out = [group_summary(group.count, group.stack)]
    if each:
        width = max(len(t.name) for t in group.threads)
        out.extend(_report_thread_line(t, width, snap.gil_holder) for t in group.threads)
    else:
        roles = [t.role for t in group.threads if t.role is not Role.WORKER]
        names = [t.name for t in group.threads]
        if roles and len(set(roles)) == 1 and len(roles) == group.count:
            out.append(f"  {compact_names(names)} ({roles[0].value})")
        elif roles:
            out.append("  " + ", ".join(f"{t.name} ({t.role.value})" for t in group.threads))
        else:
            out.append("  " + compact_names(names))
        out.extend(
            f"  {t.name}  {GIL_MARK}" for t in group.threads if _holds_gil(t, snap.gil_holder)
        )
    if group.stack:
        out.append("  stack, innermost first:")
        out.extend(format_stack_lines(group.stack, snap.line, indent="    "))
    truncated = max(t.stack_truncated for t in group.threads)
    if truncated:
        out.append(f"    … {truncated} outer frames not shown")
    out.append("")
    return out


def _versions(info: ProcessInfo) -> str:
    versions = [f"Python {info.python}"]
    if info.cherrypy:
        versions.append(f"CherryPy {info.cherrypy}")
    if info.cheroot:
        versions.append(f"cheroot {info.cheroot}")
    if info.schema:
        versions.append(f"agent {info.agent_version} (schema {info.schema})")
    elif "agent not answering" in info.engine_state:
        versions.append("agent not answering (read by py-spy)")
    else:
        versions.append("no agent (read by py-spy)")
    return "  ".join(versions)


def _title_lines(snap: Snapshot, now: float, captured: Optional[str] = None) -> List[str]:
    """Who the process is, when and how it was captured, and what was wrong with the link."""
    info = snap.info
    if info is None:
        out = ["cpinspect report: process unknown (process information unavailable)"]
    else:
        out = [f"cpinspect report: process {info.pid} {process_name(info.cmdline)}"]
        out.append(f"  command   {' '.join(info.cmdline)}")
        out.append(f"  versions  {_versions(info)}")
        engine = info.engine_state
        if info.environment:
            engine += f"  environment {info.environment}"
        if info.autoreload is not None:
            engine += f"  autoreload {'on' if info.autoreload else 'off'}"
        out.append(f"  engine    {engine}")
    if captured is None:
        captured = f"{format_captured(snap.taken_at)} ({format_age(now - snap.taken_at)})"
    out.append(f"  captured  {captured}")
    out.append(f"  source    {snap.source.value}" + ("  (revealed)" if snap.revealed else ""))
    out.extend(f"  note      {note}" for note in snap.notes)
    if snap.stale:
        out.append(f"  stale     {', '.join(snap.stale)} (older than the capture)")
    holder = _gil_thread(snap)
    if holder is not None:
        out.append(f"  GIL       held by {holder.name} (thread {holder.ident})")
    if snap.cpinspect:
        out.append(f"  by        cpinspect {snap.cpinspect}")
    return out


def _gil_thread(snap: Snapshot) -> Optional[ThreadInfo]:
    threads = snap.threads.threads if snap.threads is not None else ()
    return next((t for t in threads if _holds_gil(t, snap.gil_holder)), None)


def _report_threads(snap: Snapshot) -> List[str]:
    """Pools, busy workers by route, then busy workers, idle workers and other threads."""
    threads = snap.threads
    if threads is None:
        return [section("Threads"), "no thread data in this snapshot", ""]
    out = [section("Pools")]
    if not threads.pools_available:
        out.append(f"pool numbers unavailable: {threads.pools_note or 'no cheroot server found'}")
    out.extend(pool_line(pool) for pool in threads.pools)
    workers = threads.workers
    busy = [t for t in workers if t.busy]
    out.append(f"{len(threads.threads)} threads, {len(workers)} workers, {len(busy)} busy")
    if threads.requests_served is not None:
        out.append(f"Requests served since the agent started: {threads.requests_served}")
    out.append("")

    routes = route_groups(threads.threads)
    if routes:
        out.append(section("Busy workers by route"))
        out.extend(
            f"{route_group_summary(g)}  (oldest {format_duration(g.oldest)})" for g in routes
        )
        out.append("")

    busy_ids = {t.ident for t in busy}
    idle = [t for t in workers if t.ident not in busy_ids]
    others = [t for t in threads.threads if t.role is not Role.WORKER]
    out.append(section(f"Busy workers ({len(busy)})"))
    if not busy:
        out.extend(["no busy workers", ""])
    for group in analysis.group_stacks(busy):
        out.extend(_report_group(group, snap, each=True))
    if idle:
        out.append(section(f"Idle workers ({len(idle)})"))
        for group in analysis.group_stacks(idle):
            out.extend(_report_group(group, snap, each=False))
    if others:
        out.append(section(f"Other threads ({len(others)})"))
        for group in analysis.group_stacks(others):
            out.extend(_report_group(group, snap, each=group.busy > 0))
    if snap.locals:
        # Already redacted when the file was written (``***``) unless captured with --reveal.
        count = len(snap.locals)
        out.append(section(f"Local variables ({count} thread{'' if count == 1 else 's'})"))
        for thread_locals in snap.locals:
            out.extend(format_locals(thread_locals, reveal=True, indent="  "))
            out.append("")
    if threads.errors:
        out.append(section("Probe errors (the rest of the data is valid)"))
        out.extend(f"  - {error}" for error in threads.errors)
        out.append("")
    return out


def _report_findings(snap: Snapshot) -> List[str]:
    """The report's first section: every finding with its details, evidence and fix."""
    if not snap.findings:
        return [section("Findings (0)"), "no findings: nothing the inspector knows looks wrong", ""]
    out = [section(f"Findings ({len(snap.findings)})")]
    for finding in snap.findings:
        out.extend(finding_report_lines(finding))
        out.append("")
    return out


def snapshot_summary(snap: Snapshot) -> str:
    """One line per snapshot of a series: ``17:06:40  agent  10/10 busy  queued 17 …``."""
    parts = [format_clock(snap.taken_at), snap.source.value]
    count = analysis.busy_count(snap)
    if snap.threads is None:
        return "  ".join([*parts, "no thread data"])
    size = count.pool_size if count.pool_size is not None else count.workers
    parts.append(f"{count.busy}/{size} busy")
    if count.queued is not None:
        parts.append(f"queued {count.queued}")
    ages = [t.elapsed for t in snap.threads.workers if t.busy and t.elapsed is not None]
    if ages:
        parts.append(f"oldest {format_duration(max(ages))}")
    if count.saturated:
        parts.append("⚠ saturated")
    shared = largest_shared_stack(t for t in snap.threads.workers if t.busy)
    if shared is not None:
        parts.append(shared.summary)
    parts.extend(f"({note})" for note in snap.notes)
    return "  ".join(parts)


def _cpu_words(use: CpuUse) -> str:
    """``CPU 19.6 s, 98% of a core (spinning)``."""
    share = use.share
    if use.seconds is None or share is None:
        return "CPU unknown"
    state = "spinning" if use.spinning else "waiting"
    return f"CPU {format_duration(use.seconds)}, {share * 100:.0f}% of a core ({state})"


def _where(thread: ThreadInfo) -> str:
    frame = thread.top_app_frame
    if frame is not None:
        return f"at {frame_label(frame)}"
    return f"at {frame_label(thread.stack[0])}" if thread.stack else "no Python stack"


def format_series(result: SeriesAnalysis) -> List[str]:
    """What a series says: stuck throughout, hot routes, CPU spinning or waiting, busy counts."""
    n = result.snapshots
    every = "both" if n == 2 else f"all {n}"
    out = [
        section(f"Stuck throughout: the same request in {every} snapshots ({len(result.stuck)})")
    ]
    if not result.stuck:
        out.append("no request was held by the same thread in every snapshot")
    width = max((len(s.thread.name) for s in result.stuck), default=0)
    for stuck in result.stuck:
        thread = stuck.thread
        ages = f"{format_duration(stuck.first_elapsed)} → {format_duration(thread.elapsed)}"
        out.append(f"  {thread.name.ljust(width)}  {ages}  {_request_words(thread)}")
        out.append(f"  {' ' * width}  {_where(thread)} · {_cpu_words(stuck.cpu)}")
    out.append("")

    out.append(section(f"Hot routes: busy in every snapshot on new requests ({len(result.hot)})"))
    if not result.hot:
        out.append("no route was busy in every snapshot on new requests")
    for hot in result.hot:
        line = f"  {hot.method} {hot.path}  {hot.requests} requests in {every} snapshots"
        line += f", up to {hot.most_busy} worker{'s' if hot.most_busy != 1 else ''} at once"
        if hot.stuck:
            line += f" ({hot.stuck} stuck, above)"
        if hot.frame is not None:
            line += f" → {frame_label(hot.frame)}"
        out.append(line + "  — load, not a hang")
    out.append("")

    out.append(
        section(f"CPU between the first and the last snapshot ({format_duration(result.wall)})")
    )
    spinning = [c for c in result.cpu if c.spinning]
    waiting = [c for c in result.cpu if c.spinning is False]
    unknown = [c for c in result.cpu if c.spinning is None]
    width = max((len(c.name) for c in spinning), default=0)
    for use in spinning:
        doing = f"  {_request_words(use.thread)} {_where(use.thread)}"
        out.append(f"  spinning  {use.name.ljust(width)}  {_cpu_words(use)}{doing}")
    if not spinning:
        out.append(f"  no thread used {analysis.SPINNING_SHARE * 100:.0f}% of a core or more")
    if waiting:
        busy_waiting = [c for c in waiting if c.thread.busy]
        line = f"  waiting   {len(waiting)} threads under {analysis.SPINNING_SHARE * 100:.0f}%"
        if busy_waiting:
            line += f", busy ones: {compact_names([c.name for c in busy_waiting])}"
        out.append(line)
    if unknown:
        out.append(
            f"  unknown   {len(unknown)} threads without CPU times: "
            + compact_names([c.name for c in unknown])
        )
    out.append("")

    out.append(section("Busy workers over time"))
    for count in result.busy:
        size = count.pool_size if count.pool_size is not None else count.workers
        filled, empty = gauge(count.busy, size)
        line = f"  {format_clock(count.taken_at)}  {GAUGE_FULL * filled}{GAUGE_EMPTY * empty}"
        line += f"  {count.busy}/{size} busy"
        if count.queued is not None:
            line += f"  queued {count.queued}"
        if count.saturated:
            line += "  ⚠ saturated"
        out.append(line)
    out.append("")
    return out


def format_report(snapshots: Sequence[Snapshot], now: float) -> str:
    """The plain-text report written beside a snapshot file (readable in ``less``, no ANSI).

    One snapshot: who and when, pools, busy workers by route, busy workers grouped by stack
    (each with its request, the stack once with its captured source lines), then idle workers
    and other threads grouped. A series (snapshots in time order): first what only a series
    tells (requests stuck throughout, hot routes, CPU spinning or waiting, busy counts), a line
    per snapshot, then the report of the last one.
    """
    if not snapshots:
        return "cpinspect report: no snapshot\n"
    last = snapshots[-1]
    out: List[str] = []
    if len(snapshots) == 1:
        out.extend(_title_lines(last, now))
        out.append("")
    else:
        first = snapshots[0]
        span = format_duration(last.taken_at - first.taken_at)
        captured = (
            f"{len(snapshots)} snapshots from {format_captured(first.taken_at)}"
            f" to {format_clock(last.taken_at)} ({span}; last {format_age(now - last.taken_at)})"
        )
        out.extend(_title_lines(last, now, captured))
        out.append("")
        out.extend(format_series(analyze_series(snapshots)))
        out.append(section("Snapshots"))
        out.extend(f"  {i}. {snapshot_summary(s)}" for i, s in enumerate(snapshots, 1))
        out.append("")
        out.append(section(f"The last snapshot ({format_captured(last.taken_at)})"))
        out.append("")
    out.extend(_report_findings(last))
    out.extend(_report_threads(last))
    out.extend(_report_sessions(last))
    out.extend(_report_log(last))
    return "\n".join(out).rstrip("\n") + "\n"


def _report_sessions(snap: Snapshot) -> List[str]:
    if snap.sessions is None:
        return []
    sessions = snap.sessions
    findings = analysis.session_findings(sessions)
    count = sum(a.count or 0 for a in sessions.apps)
    out = [section(f"Sessions ({count:,} in {len(sessions.apps)} app(s))")]
    out.extend("  " + line if line else line for line in format_sessions(sessions, findings))
    out.append("")
    return out


def _change_line(thread: ThreadInfo, width: int) -> str:
    """``CP Server Thread-3  12.0 s  GET /r → Root.r  at db.py:41 fetch_all``."""
    elapsed = f"  {format_elapsed(thread):>8}" if thread.busy else ""
    return f"  {thread.name.ljust(width)}{elapsed}  {_request_words(thread)}  {_where(thread)}"


def format_diff(diff: SnapshotDiff) -> List[str]:
    """Lines for a diff view: new, gone, still stuck, on a new request, finished, CPU deltas."""
    a, b = diff.a, diff.b
    out = [
        f"From {format_captured(a.taken_at)} to {format_clock(b.taken_at)}"
        f" ({format_duration(diff.wall)} apart)"
    ]

    def block(
        title: str, changes: Sequence[ThreadChange], lines: Callable[[ThreadChange, int], List[str]]
    ) -> None:
        out.append("")
        out.append(section(f"{title} ({len(changes)})"))
        if not changes:
            out.append("  none")
        width = max((len(c.thread.name) for c in changes), default=0)
        for change in changes:
            out.extend(lines(change, width))

    def plain(change: ThreadChange, width: int) -> List[str]:
        return [_change_line(change.thread, width)]

    def moved(change: ThreadChange, width: int) -> List[str]:
        lines = [_change_line(change.thread, width)]
        before = change.before
        was = _request_words(before) if before is not None and before.request else "idle"
        lines.append(f"  {' ' * width}  was: {was}")
        return lines

    def stuck(change: ThreadChange, width: int) -> List[str]:
        lines = [_change_line(change.thread, width)]
        before = change.before
        if before is not None:
            lines.append(
                f"  {' ' * width}  elapsed {format_duration(before.elapsed)} → "
                f"{format_duration(change.thread.elapsed)}"
            )
        return lines

    block("New threads", diff.new, plain)
    block("Gone", diff.gone, plain)
    block("Still stuck: the same request in both", diff.stuck, stuck)
    block("On a new request", diff.new_request, moved)
    block("Finished: idle now", diff.finished, moved)

    out.append("")
    out.append(section(f"CPU over {format_duration(diff.wall)}"))
    used = [c for c in diff.cpu if c.seconds]
    width = max((len(c.name) for c in used), default=0)
    for use in used:
        doing = f"  {_request_words(use.thread)}  {_where(use.thread)}"
        out.append(f"  {use.name.ljust(width)}  {_cpu_words(use)}{doing}")
    idle = sum(1 for c in diff.cpu if c.seconds == 0)
    unknown = sum(1 for c in diff.cpu if c.seconds is None)
    if idle:
        out.append(f"  {idle} threads used no CPU")
    if unknown:
        out.append(f"  {unknown} threads without CPU times")
    if not diff.cpu:
        out.append("  no thread is in both snapshots")
    return out


# --- local variables ---------------------------------------------------------------------------

MAX_LOCAL_VALUE = 2000
"""Characters of a value shown at most (py-spy's reprs are short; a revealed one may not be)."""
LONG_VALUE = 200
"""Longer values are hidden by the py-spy source (as are strings py-spy cut short)."""
_SECRET_NAME = re.compile(
    r"pass|pwd|token|secret|key|auth|session|sid|cookie|csrf|credential|signature|sig$|otp|pin$",
    re.IGNORECASE,
)
_COOKIE_OR_AUTH = re.compile(
    r"cookie|authori[sz]ation|(?:^|[\"'])\s*(?:Bearer|Basic|Digest|Token)\s+\S", re.IGNORECASE
)


def hidden_reason(var: LocalVar) -> str:
    """Why a sensitive value is hidden, in a few words (the source only says *that* it is).

    Mirrors the py-spy source's rules, most telling first: the name, a Cookie or Authorization
    value (a WSGI environ, credentials), a long or cut value, else a secret-looking key inside.
    """
    if _SECRET_NAME.search(var.name):
        return "secret-looking name"
    if _COOKIE_OR_AUTH.search(var.value):
        return "cookie or authorization"
    if len(var.value) > LONG_VALUE or var.value.endswith('..."'):
        return "long value"
    return "secret-looking key inside"


def display_value(value: str, limit: int = MAX_LOCAL_VALUE) -> str:
    """A value made safe for one terminal line: control characters escaped, length capped."""
    if len(value) > limit:
        value = value[:limit] + f"… ({len(value) - limit} more characters)"
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def local_value(var: LocalVar, revealed: bool) -> str:
    """The value to show: ``***`` for a sensitive one until its frame is revealed."""
    if var.sensitive and not revealed:
        return REDACTED
    return display_value(var.value)


def hidden_count(variables: Sequence[LocalVar]) -> int:
    return sum(1 for v in variables if v.sensitive)


def format_locals(locals_: ThreadLocals, reveal: bool = False, indent: str = "    ") -> List[str]:
    """A thread's local variables frame by frame, innermost first, for ``dump --locals``.

    Sensitive values show as ``***`` with the reason unless ``reveal``; arguments are marked.
    """
    lines = [f'Locals of thread {locals_.ident} "{locals_.name}" (innermost frame first)']
    if not locals_.frames:
        lines.append(f"{indent}(no Python frames)")
    for entry in locals_.frames:
        frame = entry.frame
        lines.append(f"{indent}{frame.display_name} ({frame_location(frame)})")
        if not entry.variables:
            lines.append(f"{indent}    (no local variables)")
        for var in entry.variables:
            tag = "arg " if var.is_arg else "    "
            line = f"{indent}    {tag}{var.name} = {local_value(var, reveal)}"
            if var.sensitive and not reveal:
                line += f"  (hidden: {hidden_reason(var)})"
            lines.append(line)
    return lines


# --- process listing (``cpinspect ps`` and the picker) -----------------------------------------

PROCESS_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("pid", "PID"),
    ("user", "USER"),
    ("name", "PROCESS"),
    ("ports", "PORTS"),
    ("uptime", "UPTIME"),
    ("cpu", "CPU"),
    ("rss", "RSS"),
    ("agent", "AGENT"),
    ("apps", "APPS"),
    ("busy", "BUSY"),
    ("reason", "NOTE"),
)
"""``(key, heading)`` of the process table, in order."""


def format_bytes(size: Optional[int]) -> str:
    """``512 B``, ``33.1 MB``, ``1.2 GB`` (powers of 1024, as ``ps``/``top`` count)."""
    if size is None:
        return NONE_MARK
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return NONE_MARK  # unreachable: the loop returns at GB


def process_row(summary: ProcessSummary) -> Dict[str, str]:
    """One process as the text of each column of ``PROCESS_COLUMNS``."""
    if summary.busy is not None and summary.size is not None:
        busy = f"{summary.busy}/{summary.size}"
    else:
        busy = NONE_MARK
    if summary.agent:
        agent = "yes"
    elif summary.cherrypy:
        agent = "no"
    else:
        agent = "?"
    apps = ", ".join(app or "/" for app in summary.apps) if summary.apps else NONE_MARK
    if summary.reason:
        note = summary.reason
    elif not summary.cherrypy:
        note = "maybe CherryPy" + (f": {summary.note}" if summary.note else "")
    else:
        note = summary.note
    return {
        "pid": str(summary.pid),
        "user": summary.user,
        "name": process_name(summary.cmdline),
        "ports": ",".join(str(p) for p in summary.ports) or NONE_MARK,
        "uptime": format_duration(summary.uptime),
        "cpu": NONE_MARK if summary.cpu_percent is None else f"{summary.cpu_percent:.0f}%",
        "rss": format_bytes(summary.rss),
        "agent": agent,
        "apps": apps,
        "busy": busy,
        "reason": note,
    }


def format_process_table(summaries: Sequence[ProcessSummary]) -> str:
    """The ``cpinspect ps`` table: aligned columns, the last (the note) left ragged."""
    rows = [dict(PROCESS_COLUMNS)] + [process_row(s) for s in summaries]
    keys = [key for key, _ in PROCESS_COLUMNS]
    widths = {key: max(len(row[key]) for row in rows) for key in keys}
    lines = []
    for row in rows:
        cells = [row[key].ljust(widths[key]) for key in keys[:-1]] + [row[keys[-1]]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- routes and resolution ----------------------------------------------------------------------

HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
DEFAULT_RESOLVE_HOST = "localhost"
"""The Host header a resolve query without ``Host:`` sends (as ``cpinspect resolve``)."""


def app_label(app: AppRoutes) -> str:
    """``app '/shop'  cherrypy  root shop.Root  dispatcher default`` (as ``cpinspect routes``)."""
    return "app %r  %s  root %s  dispatcher %s" % (
        app.script_name or "/",
        app.kind,
        app.root or "-",
        app.dispatcher,
    )


def _parent_path(path: str, known: Dict[str, RouteNode]) -> Optional[str]:
    """The nearest ancestor on the tree (a capped walk may leave gaps); None at the top."""
    while path not in ("", "/"):
        path = path.rsplit("/", 1)[0] or "/"
        if path in known:
            return path
    return None


def route_children(app: AppRoutes) -> Dict[Optional[str], List[RouteNode]]:
    """Nodes by parent path, in the agent's order; ``None`` keys the top of the tree."""
    known = {node.path: node for node in app.nodes}
    children: Dict[Optional[str], List[RouteNode]] = {}
    for node in app.nodes:
        parent = _parent_path(node.path, known) if node.path != "/" else None
        if parent == node.path:
            parent = None
        children.setdefault(parent, []).append(node)
    return children


FORGOTTEN_NOTE = "← a forgotten @cherrypy.expose? (its object has exposed handlers)"
"""Beside an unexposed method ``route_view`` counts as likely forgotten."""
CHERRYPY_NAMES = frozenset(("index", "default"))
"""Names CherryPy's Dispatcher calls by itself: unexposed in app code, most likely forgotten."""


def dispatcher_at(app: AppRoutes, path: str) -> str:
    """The dispatcher requests for ``path`` (under the app) go through: the app's, or the one
    the nearest config section at or above it sets (``request.dispatch``)."""
    best, length = app.dispatcher, -1
    for section in app.config:
        if section.dispatcher is None:
            continue
        at = section.path.rstrip("/")
        if (path == section.path or path.startswith(at + "/")) and len(at) > length:
            best, length = section.dispatcher, len(at)
    return best


def _app_code(node: RouteNode) -> bool:
    """Defined in the app's code; without the agent's word (an older one), anything but a
    frozen or built-in module (``<frozen _collections_abc>``)."""
    if node.app_code is not None:
        return node.app_code
    return not str(node.filename or "").startswith("<")


@dataclass(frozen=True)
class RouteView:
    """What the routes tree shows at first (``route_view``); ``--all`` and an expanded TUI
    branch show the rest."""

    shown: frozenset[str]
    """Paths listed: exposed nodes, internal ones, anything with a warning, the likely
    forgotten handlers, and the objects on the way to them."""
    folded: Dict[str, Tuple[int, int, int]]
    """An object with nothing exposed anywhere below it (a helper the handlers hold, Salt's
    ``auth`` resolver): listed as one line; (methods, objects, properties) below it."""
    hidden: Dict[str, int]
    """For a listed object: how many of its own methods are left out (not exposed, and not
    likely forgotten: a library's, or under a MethodDispatcher, where only verbs answer)."""
    forgotten: frozenset[str]
    """Unexposed methods that look like a forgotten ``@cherrypy.expose``: defined in app code,
    on an object that also has exposed handlers (or named ``index``/``default``), where the
    dispatcher would call them if exposed."""


def route_view(app: AppRoutes) -> RouteView:
    """Which nodes the routes tree lists and which it folds (pure; every node stays in the
    model and in ``routes --json``). A subtree holding nothing exposed is one line; an
    unexposed method is listed only when it looks like a forgotten expose."""
    children = route_children(app)
    by_path = {node.path: node for node in app.nodes}

    def has_handlers(path: Optional[str]) -> bool:
        parent = by_path.get(path) if path is not None else None
        if parent is not None and parent.exposed:
            return True
        return any(
            child.exposed and child.kind in ("handler", "index", "default")
            for child in children.get(path, [])
        )

    forgotten = set()
    for parent_path, kids in children.items():
        if parent_path is None:
            continue
        if dispatcher_at(app, parent_path) == "MethodDispatcher":
            continue  # a method other than a verb is never called there, exposed or not
        siblings_exposed = has_handlers(parent_path)
        for node in kids:
            likely = siblings_exposed or node.name in CHERRYPY_NAMES
            if likely and node.kind == "unexposed" and _app_code(node) and not node.alias_of:
                forgotten.add(node.path)

    def kept(node: RouteNode) -> bool:
        return bool(
            node.path == "/"
            or node.exposed
            or node.kind in ("internal", "static")
            or node.warnings
            or node.path in forgotten
            or node.dynamic
            or node.popargs is not None
            or (node.kind == "property" and _app_code(node))
        )

    live: Dict[str, bool] = {}
    # Children come after their parent in the agent's order: decide bottom-up.
    for node in reversed(app.nodes):
        live[node.path] = kept(node) or any(
            live.get(child.path, False) for child in children.get(node.path, [])
        )
    shown = set()
    folded: Dict[str, Tuple[int, int, int]] = {}
    hidden: Counter[str] = Counter()

    def count_below(path: str) -> Tuple[int, int, int]:
        counts: Counter[str] = Counter()
        stack = list(children.get(path, []))
        while stack:
            node = stack.pop()
            counts[node.kind if node.kind in ("object", "property") else "method"] += 1
            stack.extend(children.get(node.path, []))
        return counts["method"], counts["object"], counts["property"]

    stack: List[Optional[str]] = [None]
    while stack:
        parent = stack.pop()
        for node in children.get(parent, []):
            if live.get(node.path):
                shown.add(node.path)
                stack.append(node.path)
            elif node.kind == "object" or children.get(node.path):
                shown.add(node.path)
                folded[node.path] = count_below(node.path)
            elif parent is not None:
                hidden[parent] += 1
    return RouteView(frozenset(shown), folded, dict(hidden), frozenset(forgotten))


def folded_text(counts: Tuple[int, int, int]) -> str:
    """``object, nothing exposed below (22 methods, 1 object)``: a folded object's kind text."""
    words = ("method", "object", "property")
    parts = [
        "%d %s" % (n, word if n == 1 else ("properties" if word == "property" else word + "s"))
        for n, word in zip(counts, words)
        if n
    ]
    return "object, nothing exposed below" + (" (%s)" % ", ".join(parts) if parts else "")


def warnings_below(app: AppRoutes) -> Dict[str, int]:
    """How many warnings each node's descendants carry (so a folded branch still shows them)."""
    known = {node.path: node for node in app.nodes}
    below: Counter[str] = Counter()
    for node in app.nodes:
        if not node.warnings:
            continue
        parent = _parent_path(node.path, known) if node.path != "/" else None
        while parent is not None:
            below[parent] += len(node.warnings)
            parent = _parent_path(parent, known) if parent != "/" else None
    return dict(below)


def app_warning_count(app: AppRoutes) -> int:
    """Warnings on the app's nodes and static mounts, and its errors."""
    return (
        sum(len(node.warnings) for node in app.nodes)
        + sum(len(mount.warnings) for mount in app.static)
        + len(app.errors)
    )


def short_qualname(qualname: str) -> str:
    """``Root.api`` from ``shop.app.Root.api``: the class and the method, without the module."""
    return ".".join(qualname.split(".")[-2:])


def route_kind_text(node: RouteNode) -> str:
    """The node's kind as the Routes tab and ``cpinspect routes`` say it: ``internal (reached
    through Root.api)`` for a method a dispatcher calls, ``not exposed`` for an unexposed one."""
    if node.kind == "internal":
        if not node.reached_via:
            return "internal"
        via = short_qualname(node.reached_via)
        if node.reached_at:
            return "internal (reached as %s through %s)" % (node.reached_at, via)
        if via.rsplit(".", 1)[-1] == "default":
            # The default dispatcher hands a request for the unexposed name to the default.
            return "internal (reached through %s)" % via
        return "internal (reached through %s, not at its own path)" % via
    if node.kind == "unexposed":
        return "not exposed"
    if node.kind == "property":
        return "property (user code: not evaluated, what it returns is not known)"
    return node.kind


def app_counts(app: AppRoutes) -> str:
    """``62 nodes: 9 exposed, 42 internal, 1 not exposed · 0 warnings`` (``cpinspect routes``)."""
    kinds = Counter(node.kind for node in app.nodes)
    warnings = app_warning_count(app)
    return "%d node%s: %d exposed, %d internal, %d not exposed · %d warning%s" % (
        len(app.nodes),
        "" if len(app.nodes) == 1 else "s",
        sum(1 for node in app.nodes if node.exposed),
        kinds["internal"],
        kinds["unexposed"],
        warnings,
        "" if warnings == 1 else "s",
    )


def route_node_details(
    app: AppRoutes,
    node: RouteNode,
    global_tools: Sequence[str] = (),
    view: Optional[RouteView] = None,
) -> List[Tuple[str, str]]:
    """Label/value rows for the details of one node (its warnings are listed apart); with the
    app's ``route_view``, what it says of the node (folded, a forgotten expose).

    ``tools`` and ``config`` are what a request ending on the node runs with (see
    ``effective_config``), each value with the place it comes from.
    """
    prefix = app.script_name.rstrip("/")
    url = route_url(app, node.path)
    rows: List[Tuple[str, str]] = [
        ("path", (prefix + url) or "/"),
        ("kind", "%s  exposed %s" % (route_kind_text(node), "✓" if node.exposed else "✗")),
    ]
    # CherryPy's Dispatcher (and so MethodDispatcher and what a VirtualHost hands over to).
    by_objects = app.dispatcher in ("default", "MethodDispatcher", "VirtualHost")
    # Only an exposed callable answers its punctuation alias (an unexposed one is a 404 there).
    also = punctuation_alias(node.path) if by_objects and node.exposed else None
    if view is not None and node.path in view.folded:
        below = folded_text(view.folded[node.path]).split(", ", 1)[1]
        rows.append(("below", below.replace("nothing exposed below", "nothing exposed")))
    if view is not None and node.path in view.forgotten:
        rows.append(("hint", FORGOTTEN_NOTE.lstrip("← ")))
    never = static_handler_note(app, node.path)
    if never:
        rows.append(("note", never))
    elif url != node.path:
        # Shown by the file's name: the attribute's own spelling answers too.
        rows.append(("also", prefix + node.path + PUNCTUATION_NOTE))
    elif also:
        shadowed = shadowed_alias_note(app, node.path)
        if shadowed:
            rows.append(("also", shadowed))
        else:
            rows.append(("also", (app.script_name.rstrip("/") + also) + PUNCTUATION_NOTE))
    if node.qualname:
        rows.append(("qualname", node.qualname))
    if node.reached_via:
        rows.append(("reached via", node.reached_via))
    if node.reached_at:
        rows.append(
            (
                "reached as",
                "%s%s (its own path answers 404: not exposed)"
                % (app.script_name.rstrip("/"), node.reached_at),
            )
        )
    if node.signature:
        rows.append(("signature", node.signature))
    if node.filename:
        where = node.filename if node.lineno is None else "%s:%d" % (node.filename, node.lineno)
        rows.append(("source", where))
    if node.alias_of:
        rows.append(("alias of", node.alias_of))
    if node.methods:
        rows.append(("verbs", ", ".join(node.methods)))
    if node.popargs is not None:
        rows.append(("popargs", ", ".join(node.popargs) or "-"))
    if node.dynamic:
        rows.append(("_cp_dispatch", "what lies below is decided at request time"))
    merged = effective_config(app, node, global_tools)
    tools = tools_in_effect(merged)
    rows.append(("tools", ", ".join(tools) if tools else "none switched on"))
    # The global tools are CherryPy's defaults on every path: named above, not listed again.
    local = [entry for entry in merged if entry[2] != GLOBAL_ORIGIN]
    for index, (key, value, origin) in enumerate(local):
        rows.append(("config" if index == 0 else "", "%s = %s  · %s" % (key, value, origin)))
    rows.extend(
        ("static", static_mount_line(mount, app))
        for mount in app.static
        if node.path == mount.path or node.path.startswith(mount.path.rstrip("/") + "/")
    )
    return rows


def global_tools_text(app: AppRoutes, global_tools: Sequence[str]) -> str:
    """The global tools, each one this app switches off at ``/`` (root ``_cp_config`` or its
    ``/`` config section) marked so: ``encode, trailing_slash (off in this app)``."""
    off = set()
    root = next((node for node in app.nodes if node.path == "/"), None)
    layers = [own_settings(root)] if root is not None else []
    layers += [section.settings for section in app.config if section.path == "/"]
    for settings in layers:
        for key, value in settings:
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "tools" and parts[2] == "on":
                if value in FALSE_REPRS:
                    off.add(parts[1])
                else:
                    off.discard(parts[1])
    return ", ".join(t + (" (off in this app)" if t in off else "") for t in global_tools)


def static_mount_line(mount: StaticMount, app: Optional[AppRoutes] = None) -> str:
    """``staticdir /static → /srv/app/static (exists, 12 files)`` (as ``cpinspect routes``);
    with its ``app``, a handler mount whose alias a config static tool answers says so."""
    if mount.exists is None:
        facts = ["not checked"] if mount.resolved else ["nothing to check"]
    else:
        facts = ["exists" if mount.exists else "missing"]
        if mount.exists and mount.readable is False:
            facts.append("unreadable")
    contents = static_contents(mount)
    if contents:
        facts.append(contents)
    handler = app is not None and mount.source == "handler"
    line = "%s %s → %s (%s)" % (
        mount.kind,
        mount_url(app, mount),
        mount.resolved or mount.configured or "-",
        ", ".join(facts),
    )
    if app is not None and handler:
        for note in (
            shadowed_alias_note(app, mount.path, brief=True),
            static_handler_note(app, mount.path),
        ):
            if note:
                line += " · " + note
    return line


def static_contents(mount: StaticMount) -> str:
    """``3 files, 1 directory`` (``1 directory``, ``0 files``; ``1,000+ entries`` at the cap)
    at a static directory's top level; ``12 entries`` from an older agent, which counted
    files and directories together; ``""`` when not counted."""
    if mount.file_count is None:
        return ""
    plus = "+" if mount.file_count_capped else ""
    if mount.dir_count is None:
        return "%s%s entr%s" % (
            f"{mount.file_count:,}",
            plus,
            "y" if mount.file_count == 1 and not plus else "ies",
        )
    if plus:
        return "%s+ entries" % f"{mount.file_count + mount.dir_count:,}"
    parts = []
    if mount.file_count or not mount.dir_count:
        parts.append("%s file%s" % (f"{mount.file_count:,}", "" if mount.file_count == 1 else "s"))
    if mount.dir_count:
        parts.append(
            "%s director%s" % (f"{mount.dir_count:,}", "y" if mount.dir_count == 1 else "ies")
        )
    return ", ".join(parts)


PUNCTUATION_NOTE = "  (CherryPy reads . - and other punctuation in a URL segment as _)"


def punctuation_alias(path: str) -> Optional[str]:
    """``/feed_xml`` → ``/feed.xml``: the URL one usually types for a node whose name has an
    underscore (the default dispatcher maps punctuation to ``_``); ``None`` when there is none."""
    if "_" not in path:
        return None
    return path.replace("_", ".")


_PUNCTUATION = str.maketrans(string.punctuation, "_" * len(string.punctuation))
"""What CherryPy's Dispatcher does to a URL segment before looking it up (``string.punctuation``
to ``_``)."""


def mount_url(app: Optional[AppRoutes], mount: StaticMount) -> str:
    """The path a static mount is shown at: a handler's own mount (an attribute, or a handler
    whose ``_cp_config`` turns the tool on, as rdiffweb's ``robots_txt``) at the URL the routes
    show its handler at (``route_url``); a config section's at its own path."""
    if app is not None and mount.source in ("handler", "_cp_config"):
        return route_url(app, mount.path)
    return mount.path


def route_url(app: AppRoutes, path: str) -> str:
    """The URL a user types for the node at ``path`` (under the app): for a
    ``tools.staticfile.handler`` attribute named like its file with punctuation turned to
    ``_`` (``favicon_ico`` serving ``favicon.ico``, which ``tree.mount`` puts on every root),
    the file's name (``/favicon.ico``), unless a static tool in config answers that URL first
    (then the attribute's own spelling is the only URL it answers); likewise any exposed
    handler named like a web file (``robots_txt``: ``/robots.txt``); else ``path``."""
    head, _, name = path.rpartition("/")
    if "_" not in name:
        return path
    for mount in app.static:
        if mount.source != "handler" or mount.path != path or mount.kind != "staticfile":
            continue
        target = mount.resolved or mount.configured or ""
        base = os.path.basename(target)
        if base and base != name and base.translate(_PUNCTUATION) == name:
            url = head + "/" + base
            return path if config_static_answer(app, url) is not None else url
    match = _FILE_NAMED.match(name)
    if match is not None:
        node = next((n for n in app.nodes if n.path == path), None)
        if node is not None and node.exposed:
            # A handler named for the file it answers (rdiffweb's ``robots_txt``): the
            # dispatcher turns the '.' of ``/robots.txt`` into '_', so that is its URL too.
            url = "%s/%s.%s" % (head, match.group(1), match.group(2))
            return path if config_static_answer(app, url) is not None else url
    return path


_FILE_NAMED = re.compile(
    r"([A-Za-z0-9-]+)_(ico|txt|xml|json|html?|css|js|png|jpe?g|gif|svg|webmanifest|pdf|csv)"
    r"\Z"
)
"""An attribute named like a web file, its extension's '.' written '_' (``robots_txt``)."""


def static_handler_note(app: AppRoutes, path: str) -> Optional[str]:
    """For a ``tools.staticdir/staticfile.handler`` attribute under a MethodDispatcher: it never
    serves (CherryPy calls the resource's ``GET``, which a function lacks: 405), as Salt's
    ``favicon_ico`` answers every request with 405; ``None`` elsewhere."""
    node = next((n for n in app.nodes if n.path == path), None)
    if node is None or node.kind != "static" or not node.exposed:
        return None
    if dispatcher_at(app, path.rpartition("/")[0] or "/") != "MethodDispatcher":
        return None
    return (
        "never serves: under a MethodDispatcher CherryPy calls its GET, which a handler "
        "function lacks (405)"
    )


def config_static_answer(app: AppRoutes, url: str) -> Optional[StaticMount]:
    """The static mount switched on in config (``app.config`` or a ``_cp_config``) whose tool
    CherryPy runs for ``url`` (a path under the app) at before_handler, so before the handler
    the dispatcher finds there: the nearest section at or above ``url`` that switches a static
    tool on, unless a nearer ``app.config`` section switches it off. A ``staticfile`` whose file
    is missing falls through to the handler, so it answers nothing here."""
    best: Optional[StaticMount] = None
    for mount in app.static:
        if mount.source == "handler":
            continue
        if not (
            url == mount.path or mount.path == "/" or url.startswith(mount.path.rstrip("/") + "/")
        ):
            continue
        if best is None or len(mount.path) > len(best.path):
            best = mount
    if best is None or (best.kind == "staticfile" and best.exists is False):
        return None
    key = "tools.%s.on" % best.kind
    for section in app.config:
        nearer = len(section.path) > len(best.path) and (
            url == section.path or url.startswith(section.path.rstrip("/") + "/")
        )
        if nearer and any(k == key and v in FALSE_REPRS for k, v in section.settings):
            return None
    return best


def shadowed_alias_note(app: AppRoutes, path: str, brief: bool = False) -> Optional[str]:
    """For a handler whose name has an underscore (``/favicon_ico``): what CherryPy does with the
    URL one types for it (``/favicon.ico``) when a static tool in config answers that URL before
    the handler is called — ``/favicon.ico is served by tools.staticfile (config
    '/favicon.ico': /srv/favicon.ico), not by this handler, which answers /favicon_ico only``;
    ``None`` when the handler does answer its alias. ``brief``: beside the mount that answers
    it (``answers /favicon_ico only: the staticfile of config '/favicon.ico' serves
    /favicon.ico``)."""
    alias = punctuation_alias(path)
    if alias is None:
        return None
    mount = config_static_answer(app, alias)
    if mount is None:
        return None
    where = "config %r" % mount.path if mount.source == "app.config" else "_cp_config"
    if brief:
        return "answers %s only: the %s of %s serves %s%s" % (
            path,
            mount.kind,
            where,
            alias,
            "" if mount.kind == "staticfile" else " when that file exists",
        )
    target = mount.resolved or mount.configured or "-"
    if mount.kind == "staticfile":
        return (
            "%s is served by tools.staticfile (%s: %s), not by this handler, which "
            "answers %s only" % (alias, where, target, path)
        )
    return "%s is served by tools.staticdir (%s: %s) when that file exists, before this handler" % (
        alias,
        where,
        target,
    )


def static_mount_details(
    mount: StaticMount, app: Optional[AppRoutes] = None
) -> List[Tuple[str, str]]:
    """Label/value rows for one static mount's checks (its warnings are listed apart)."""
    url = mount_url(app, mount)
    rows: List[Tuple[str, str]] = [
        ("path", url),
        ("kind", "%s (from %s)" % (mount.kind, mount.source)),
        ("configured", mount.configured or "-"),
        ("root", mount.root or "-"),
        ("resolved", mount.resolved or "-"),
        ("exists", _yes_no(mount.exists)),
        ("readable", _yes_no(mount.readable)),
    ]
    never = static_handler_note(app, mount.path) if app is not None else None
    if never:
        rows.insert(1, ("note", never))
    elif url != mount.path:
        rows.insert(1, ("also", mount.path + PUNCTUATION_NOTE))
    elif mount.source == "handler" and punctuation_alias(mount.path):
        shadowed = shadowed_alias_note(app, mount.path) if app is not None else None
        also = shadowed or "%s%s" % (punctuation_alias(mount.path), PUNCTUATION_NOTE)
        rows.insert(1, ("also", also))
    contents = static_contents(mount)
    if contents:
        rows.append(("contents", contents + " at its top level"))
    if mount.index:
        rows.append(("index", mount.index))
    if mount.content_types:
        rows.append(("content_types", ", ".join("%s=%s" % kv for kv in mount.content_types)))
    return rows


def _yes_no(value: Optional[bool]) -> str:
    return "unknown" if value is None else ("yes ✓" if value else "no ✗")


def parse_resolve_query(text: str) -> Tuple[str, str, str]:
    """``[METHOD] /path[?query] [Host: name]`` → ``(method, path, host)``.

    The method defaults to GET and the host to ``localhost``; a path without a leading slash
    gets one. Raises ``ValueError`` with what to type when there is no path.
    """
    words = text.split()
    method, host = "GET", DEFAULT_RESOLVE_HOST
    for index, word in enumerate(words):
        if word.lower() in ("host:", "host"):
            if index + 1 < len(words):
                host = words[index + 1]
            words = words[:index]
            break
        if word.lower().startswith("host:"):
            host = word[5:]
            words = words[:index]
            break
    if words and words[0].upper() in HTTP_METHODS:
        method = words.pop(0).upper()
    if not words:
        raise ValueError("type a path to resolve, e.g. GET /admin/users?id=3 Host: example.com")
    path = words[0]
    return method, path if path.startswith("/") else "/" + path, host


AUTH_TOOLS = frozenset(("auth_basic", "auth_digest", "basic_auth", "digest_auth"))


def _tool_note(tools: Sequence[str]) -> str:
    """What a tool in effect changes about the verdict (it runs before the handler)."""
    auth = sorted(AUTH_TOOLS.intersection(tools))
    if auth:
        return " (%s: without credentials the answer is 401)" % ", ".join(auth)
    return ""


HANDLER_DECIDES = "the handler decides the status"


def resolution_outcome(res: Resolution) -> str:
    """What follows the arrow: ``404 not_found: no exposed handler on this path`` when the
    status is known; else who decides and the verdict sentence, never a status nobody can know
    (``handler: Root.account handles it; the handler decides the status``). An agent older than
    ``decided_by`` sends 200 for every handler: it is not repeated."""
    if res.decided_by is not None and res.verdict:
        return "%s: %s" % (res.kind, res.verdict)
    if res.kind == "handler":
        who = ("%s handles it" % short_qualname(res.handler)) if res.handler else res.reason
        return "handler: %s; %s" % (who, HANDLER_DECIDES)
    return "%s %s: %s" % (res.status if res.status is not None else "-", res.kind, res.reason)


def resolution_lines(res: Resolution) -> List[str]:
    """The verdict line, then handler/args/location/file, then ``· step`` per traversal step."""
    head = "%s %s (Host %s) → %s" % (res.method, res.path, res.host, resolution_outcome(res))
    lines = [head]
    if res.handler:
        where = " %s:%s" % (res.filename, res.lineno) if res.filename else ""
        lines.append("  handler %s%s" % (res.handler, where))
        if res.args or res.kwargs:
            lines.append(
                "  args (%s) kwargs {%s}"
                % (", ".join(res.args), ", ".join("%s=%s" % kv for kv in res.kwargs))
            )
    # The verdict of several guards already lists them all (in the order they run).
    listed = len(res.guards) > 1 and res.verdict.startswith("%d tools run " % len(res.guards))
    if res.guards and not listed:
        lines.append("  tools that may answer first: %s" % ", ".join(res.guards))
    if res.tools:
        note = "" if res.decided_by is not None else _tool_note(res.tools)
        lines.append("  tools on %s%s" % (", ".join(res.tools), note))
    if res.location:
        lines.append("  location %s" % res.location)
    if res.static_file:
        lines.append("  file %s (%s)" % (res.static_file, res.mime))
    lines.extend("  · %s" % step for step in res.steps)
    return lines


def answered_line(
    seen: analysis.Answered,
    routes_status: Optional[int],
    where: str,
    held: int,
    guarded_status: Optional[int] = None,
) -> str:
    """What the access records at hand (``where``: "in the agent's log", which holds ``held``
    records of any kind) say requests like the resolved one were answered, beside what the
    routes give (``routes_status``, when known; ``guarded_status``: the status the dispatch
    gives when tools that may answer first run before it):
    ``  answered lately: 303 ×5, 200 ×1; last 303 at 19:20:11 (in the agent's log)``."""
    if not seen.count:
        return "  answered lately: no %s %s %s (its last %s records of any kind)" % (
            seen.method,
            seen.path,
            where,
            format(held, ","),
        )
    counts = ", ".join("%d ×%d" % item for item in seen.statuses)
    last = ""
    if seen.last_status is not None and seen.last_time is not None:
        last = "; last %d at %s" % (seen.last_status, format_clock(seen.last_time))
    line = "  answered lately: %s%s (%s)" % (counts, last, where)
    top = seen.statuses[0][0]
    if routes_status is not None and top != routes_status:
        line += " — not the %d the routes give: the app's tools or handler answer otherwise" % (
            routes_status
        )
    elif routes_status is None and guarded_status is not None and top != guarded_status:
        line += (
            " — not the %d of the dispatch: one of the tools that run first answers instead"
            % guarded_status
        )
    return line


def answered_lines(
    seen: Optional[analysis.Answered], held: int, unread: str, res: Resolution
) -> List[str]:
    """``answered_line`` for what ``AgentSource.answered`` read for ``res``, the reason it could
    not be read, or nothing (an agent without log capture)."""
    if seen is not None:
        # A path no handler takes is CherryPy's 404 once the tools that may answer first let
        # it through (rdiffweb's auth_form answers 303 there instead).
        guarded = 404 if res.kind == "not_found" and res.guards else None
        return [answered_line(seen, res.status, "in the agent's log", held, guarded)]
    return ["  answered lately: %s" % unread] if unread else []


# --- sessions ----------------------------------------------------------------------------------

BACKEND_NAMES = {"ram": "RAM", "file": "files", "memcached": "memcached", "custom": "custom"}
SESSION_SORTS = wire.SESSION_SORTS
"""The orders the agent pages sessions in (``/v1/sessions?sort=``)."""
SORT_WORDS = {
    "expiry": "expiring soonest first",
    "-expiry": "expiring last first",
    "size": "largest first",
    "lock": "locked first",
}
SESSION_COLUMNS = ("session", "expires in", "size", "keys", "lock")
HIDDEN_VALUE = "*** (hidden: reveal this session to see it)"


def short_fp(fp: str) -> str:
    """A fingerprint as the table shows it (8 of its 12 hex digits)."""
    return fp[:8]


def session_app_label(app: AppSessions, same_as: Optional[str] = None) -> str:
    """``app '/' · RAM · 1,204 sessions``; ``same_as`` names the app listed earlier whose store
    this is (``analysis.shared_stores``): `` · the same store as app '/'``."""
    name = app.app or "/"
    backend = BACKEND_NAMES.get(app.backend, app.backend)
    if app.backend == "custom" and app.storage_class:
        backend = "custom (%s)" % app.storage_class
    count = (
        ""
        if app.count is None
        else " · %s session%s"
        % (
            f"{app.count:,}",
            "" if app.count == 1 else "s",
        )
    )
    shared = "" if same_as is None else " · the same store as app %r" % (same_as or "/")
    return "app %r · %s%s%s" % (name, backend, count, shared)


def where_text(where: Sequence[str]) -> str:
    """The config sections that switch sessions on, as a user names them: ``global config``,
    ``the root's _cp_config``, ``/login's _cp_config`` (a handler object's), ``config '/'``."""
    words = []
    for w in where:
        if w == "global":
            words.append("global config")
        elif w == "_cp_config /":
            words.append("the root's _cp_config")
        elif w.startswith("_cp_config /"):
            words.append("%s's _cp_config" % w[len("_cp_config ") :])
        else:
            words.append("config %r" % w)
    return ", ".join(words) or NONE_MARK


def _minutes(value: Optional[float]) -> str:
    return NONE_MARK if value is None else "%g min" % value


def session_settings_rows(app: AppSessions) -> List[Tuple[str, str]]:
    """(label, value) of the store's settings, for the details pane and the CLI."""
    st = app.settings
    clean_up = "every %s, thread %s" % (_minutes(st.clean_freq), st.clean_thread)
    blocked = [s.fp for s in (*app.sessions, *app.locks) if any(w.clean_up for w in s.lock.waiters)]
    if blocked:
        clean_up += ", waiting for session %s's lock" % short_fp(blocked[0])
    rows = [
        ("backend", "%s (%s)" % (BACKEND_NAMES.get(app.backend, app.backend), app.storage_class)),
        ("switched on in", where_text(app.where)),
        ("timeout", _minutes(st.timeout)),
        ("clean-up", clean_up),
        ("locking", st.locking),
    ]
    if app.backend == "file" or st.storage_path is not None:
        state = []
        if st.path_exists is not None:
            state.append("exists" if st.path_exists else "MISSING")
        if st.path_writable is not None:
            state.append("writable" if st.path_writable else "NOT WRITABLE")
        rows.append(
            ("storage path", "%s (%s)" % (st.storage_path or NONE_MARK, ", ".join(state) or "?"))
        )
    if st.servers is not None:
        rows.append(("servers", ", ".join(st.servers) or NONE_MARK))
    flags = [
        "secure" if st.secure else "not secure",
        "httponly" if st.httponly else "not httponly",
        "persistent" if st.persistent else "browser-session",
    ]
    if st.domain:
        flags.append("domain " + st.domain)
    rows.append(("cookie", "%s (%s)" % (st.name, ", ".join(flags))))
    return rows


def sessions_summary_lines(app: AppSessions) -> List[str]:
    """The summary above the table: count, expiring soon, sizes and the largest, locks."""
    head = ["error: %s" % app.error] if app.error else []
    if not app.listable:
        sm = app.summary
        return [
            *head,
            "this backend cannot be listed: %s" % (app.not_listable or "no reason"),
            f"{sm.locked:,} locked now · {sm.waiters:,} waiting for a lock (from the requests "
            "in flight)",
        ]
    sm = app.summary
    parts = []
    if app.count is not None:
        parts.append(f"{app.count:,} session{'' if app.count == 1 else 's'}")
    parts.append(f"{sm.expiring_soon:,} expiring in 5 min")
    if app.expired:
        parts.append(f"{app.expired:,} expired still stored")
    parts.append(f"{sm.locked:,} locked now")
    parts.append(f"{sm.waiters:,} waiting for a lock")
    lines = [*head, " · ".join(parts)]
    if sm.sizes is not None:
        sz = sm.sizes
        largest = ", ".join("%s %s" % (short_fp(x.fp), format_bytes(x.size)) for x in sm.largest)
        lines.append(
            "sizes: median %s · 90%% under %s · smallest %s · largest %s · total %s%s"
            % (
                format_bytes(sz.p50),
                format_bytes(sz.p90),
                format_bytes(sz.min),
                format_bytes(sz.max),
                format_bytes(sz.total),
                " (largest: %s)" % largest if largest else "",
            )
        )
    if app.partial:
        lines.append("partial: %s" % (app.partial_reason or "not every session was listed"))
    return lines


def session_expiry(session: SessionInfo) -> str:
    """``4 m 12 s``, ``expired 3.0 s ago``, ``—``."""
    left = session.time_left
    if left is None:
        return NONE_MARK
    if left < 0:
        return "expired %s ago" % format_duration(-left)
    return format_duration(left)


def session_lock_text(session: SessionInfo) -> str:
    """``held 12.3 s · 2 waiting``, ``free``, ``lock file 3.0 s old (pid 41)``, ``unknown``."""
    lock = session.lock
    parts = []
    if lock.state == "held":
        held = lock.holder.held_for if lock.holder is not None else None
        parts.append("held %s" % format_duration(held) if held is not None else "held")
    else:
        parts.append(lock.state)
    if lock.file is not None:
        pid = " (pid %d)" % lock.file.pid if lock.file.pid is not None else ""
        parts.append("lock file %s old%s" % (format_duration(lock.file.age), pid))
    if lock.waiters:
        parts.append("%d waiting" % len(lock.waiters))
    return " · ".join(parts)


def session_row(session: SessionInfo) -> Tuple[str, str, str, str, str]:
    """One line of the sessions table (``SESSION_COLUMNS``)."""
    keys = ", ".join(k.key for k in session.keys)
    if len(keys) > 40:
        keys = keys[:39] + "…"
    return (
        short_fp(session.fp),
        session_expiry(session),
        format_bytes(session.size),
        keys or NONE_MARK,
        session_lock_text(session),
    )


def _thread_words(ident: int, name: Optional[str]) -> str:
    return "%s (thread %d)" % (name, ident) if name else "thread %d" % ident


def _req_words(req: Optional[RequestInfo]) -> str:
    if req is None:
        return "no request known"
    words = request_line(req)
    if req.client:
        words += " from " + req.client
    return words


def session_details(session: SessionInfo) -> List[Tuple[str, str]]:
    """(label, value) rows of one session: expiry, size, keys (values only when revealed),
    the lock's holder and its waiters with their requests and times."""
    rows = [
        ("fingerprint", session.fp),
        ("expires", "%s (%s)" % (format_clock(session.expires_at), session_expiry(session))),
        ("size", format_bytes(session.size)),
    ]
    if not session.keys:
        rows.append(("keys", "(none)"))
    for key in session.keys:
        value = ""
        if session.revealed:
            value = " = " + (key.value if key.value is not None else NONE_MARK)
        rows.append(
            ("key", "%s  %s  %s%s" % (key.key, key.type or "?", format_bytes(key.size), value))
        )
    if not session.revealed and session.keys:
        rows.append(("values", "hidden (x reveals this session's values, after you confirm)"))
    lock = session.lock
    rows.append(("lock", lock.state))
    if lock.holder is not None:
        h = lock.holder
        basis = ", " + h.held_for_basis if h.held_for_basis else ""
        rows.append(("held by", _thread_words(h.ident, h.name)))
        rows.append(("  request", _req_words(h.request)))
        rows.append(("  held for", format_duration(h.held_for) + basis))
    if lock.file is not None:
        pid = str(lock.file.pid) if lock.file.pid is not None else NONE_MARK
        rows.append(("lock file", "%s old, pid %s" % (format_duration(lock.file.age), pid)))
    for i, w in enumerate(lock.waiters, 1):
        rows.append(("waiter %d" % i, _thread_words(w.ident, w.name)))
        if w.clean_up:
            rows.append(("  request", "none: CherryPy's session clean-up, held up by this lock"))
            continue
        rows.append(("  request", _req_words(w.request)))
        rows.append(("  waiting for", format_duration(w.waiting_for)))
    return rows


def lock_threads(session: SessionInfo) -> List[Tuple[int, str]]:
    """``(ident, label)`` of the threads on one session's lock, holder first (jump targets)."""
    lock = session.lock
    out = []
    if lock.holder is not None:
        out.append(
            (lock.holder.ident, "holder " + _thread_words(lock.holder.ident, lock.holder.name))
        )
    out.extend((w.ident, "waiter " + _thread_words(w.ident, w.name)) for w in lock.waiters)
    return out


def finding_lines(finding: Finding, indent: str = "") -> List[str]:
    """``✖ CRITICAL  title`` (``finding_headline``: the glyph always that of the label) and
    ``fix: …`` under the title."""
    out = [indent + finding_headline(finding)]
    if finding.fix:
        out.append(f"{indent}            fix: {finding.fix}")
    return out


FINDING_GLYPHS: Dict[FindingSeverity, str] = {
    FindingSeverity.CRITICAL: "✖",
    FindingSeverity.WARNING: "⚠",
    FindingSeverity.INFO: "ℹ",
}
"""The glyph of each severity: it carries the meaning without colour (NO_COLOR)."""
STRIP_LINES = 3
_SEVERITY_RANK = {FindingSeverity.CRITICAL: 0, FindingSeverity.WARNING: 1, FindingSeverity.INFO: 2}
"""Findings shown on the first screen; the rest are counted on one more line."""


def finding_glyph(finding: Finding) -> str:
    return FINDING_GLYPHS.get(finding.severity, "?")


def finding_headline(finding: Finding) -> str:
    """``✖ CRITICAL  title``: one line, the glyph first."""
    return f"{finding_glyph(finding)} {finding.severity.value.upper():8}  {finding.title}"


def strip_lines(
    findings: Sequence[Finding], limit: int = STRIP_LINES
) -> List[Tuple[Optional[FindingSeverity], str]]:
    """The strip under the pool bar: ``(severity, text)`` per line, most severe first (then
    in the order given: ``find_all``'s), at most ``limit`` findings then ``+N more — f lists them``;
    no line at all when there is no finding."""
    ordered = sorted(findings, key=lambda f: _SEVERITY_RANK.get(f.severity, 3))  # stable
    out: List[Tuple[Optional[FindingSeverity], str]] = [
        (f.severity, f"{finding_glyph(f)} {f.title}") for f in ordered[:limit]
    ]
    left = len(findings) - limit
    if left > 0:
        out.append((None, f"+{left} more — f lists them"))
    return out


def finding_report_lines(finding: Finding, indent: str = "") -> List[str]:
    """A finding in full, for reports, ``dump`` and ``doctor``: the headline, its details,
    the evidence labels, the fix."""
    pad = indent + "    "
    out = [indent + finding_headline(finding)]
    out.extend(pad + line for line in finding.details)
    if finding.evidence:
        out.append(pad + "evidence:")
        out.extend(f"{pad}  {_evidence_label(e)}" for e in finding.evidence)
    if finding.fix:
        out.append(f"{pad}fix: {finding.fix}")
    return out


def _evidence_label(evidence: object) -> str:
    label = getattr(evidence, "label", None)
    return str(label) if label else str(evidence)


def format_findings(findings: Sequence[Finding]) -> List[str]:
    """Every finding in full (``doctor``, the top of ``dump``); one line when there is none."""
    if not findings:
        return ["no findings: nothing the inspector knows looks wrong"]
    counts = Counter(f.severity for f in findings)
    words = [
        f"{counts[s]} {s.value}"
        for s in (FindingSeverity.CRITICAL, FindingSeverity.WARNING, FindingSeverity.INFO)
        if counts[s]
    ]
    out = [f"{len(findings)} finding{'' if len(findings) == 1 else 's'} ({', '.join(words)})"]
    for finding in findings:
        out.append("")
        out.extend(finding_report_lines(finding))
    return out


def format_sessions(
    sessions: SessionsSnapshot, findings: Sequence[Finding], details: bool = True
) -> List[str]:
    """Every app's store as text (``cpinspect sessions`` and the report's sessions section):
    settings, summary, diagnoses, the page of sessions and, with ``details``, each session's
    lock holder and waiters."""
    out: List[str] = []
    if not sessions.apps:
        out.append("no mounted app has tools.sessions.on")
    shared = analysis.shared_stores(sessions)
    for app in sessions.apps:
        same_as = shared.get(app.app)
        out.append(session_app_label(app, same_as))
        out.extend("  %-15s %s" % row for row in session_settings_rows(app))
        if same_as is not None:
            out.append(
                "  its sessions are those listed under app %r (one store, not two)"
                % (same_as or "/")
            )
            out.append("")
            continue
        out.extend("  " + line for line in sessions_summary_lines(app))
        mine = [f for f in findings if f.id.split(":", 2)[1:2] == [app.app]]
        for finding in mine:
            out.extend(finding_lines(finding, "  "))
        # A store that cannot be listed still sends the sessions locked or waited on now.
        if (app.listable and not app.error) or app.sessions:
            page = app.page
            shown = len(app.sessions)
            first = page.offset + 1 if shown else page.offset
            if app.listable:
                head = "  sessions %d-%d of %d, %s" % (
                    first,
                    page.offset + shown,
                    page.total,
                    SORT_WORDS.get(page.sort, page.sort),
                )
            else:
                head = "  %d session%s locked or waited on now" % (shown, "" if shown == 1 else "s")
            out.append(head)
            out.append("    %-9s %-16s %-9s %-40s %s" % SESSION_COLUMNS)
            for session in app.sessions:
                out.append("    %-9s %-16s %-9s %-40s %s" % session_row(session))
                if details and (session.lock.holder is not None or session.lock.waiters):
                    for label, value in session_details(session):
                        if label.strip() in ("held by", "request", "held for", "waiting for") or (
                            label.startswith("waiter")
                        ):
                            out.append("      %-14s %s" % (label, value))
                if session.revealed:
                    out.extend("      %s = %s" % (k.key, k.value) for k in session.keys)
        out.append("")
    out.extend("error: %s" % error for error in sessions.errors)
    if sessions.key_id:
        out.append(
            "fingerprints: keyed hashes of the session ids (key %s); the ids are never shown"
            % sessions.key_id
        )
    return out


# --- log records ---------------------------------------------------------------------------------

CP_DATE = re.compile(r"^\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\] ?")
"""The date CherryPy puts at the start of every error message (the time column says it)."""
LOG_ORIGIN_MARKS = {
    LogOrigin.BUFFER: "",
    LogOrigin.ERROR_FILE: "file",
    LogOrigin.ACCESS_FILE: "file",
    LogOrigin.INSPECTOR: "cpinspect",
}
TRACEBACK_CLOSED = "▸"
TRACEBACK_OPEN = "▾"
REPORT_LOG_ERRORS = 20
"""Errors (with their tracebacks) in a snapshot report's log section, the most recent."""


def log_message_text(record: LogRecord) -> str:
    """The message without CherryPy's date prefix (the time is shown beside it)."""
    return CP_DATE.sub("", record.message, count=1)


def log_level_word(record: LogRecord) -> str:
    """``ERROR``, ``INFO`` …; an access record shows its status instead (``500``)."""
    if record.access:
        return str(record.status) if record.status is not None else "access"
    return record.level


def _log_request_words(record: LogRecord) -> str:
    request = record.request
    if request is None:
        return ""
    return request_line(request)


def log_record_line(record: LogRecord) -> str:
    """One line for a record: time, level (or status), request, message's first line, and a
    mark for a traceback (``▸ traceback 9 lines``) — ``09:40:02 ERROR GET /boom  HTTP``."""
    first, _, rest = log_message_text(record).partition("\n")
    head = first.strip()
    if rest and not record.access and (not head or (" " not in head and head.isupper())):
        # Nothing but CherryPy's context (``HTTP ``), the text on the next lines (its
        # tools.log_headers writes ``\nRequest Headers:\n  ...``): its first line is the title.
        lines = rest.split("\n")
        at = next((i for i, line in enumerate(lines) if line.strip()), None)
        if at is not None:
            first = (first.strip() + " " + lines[at].strip()).strip()
            rest = "\n".join(lines[at + 1 :])
    parts = [format_clock(record.time), log_level_word(record).ljust(7)]
    if record.access:
        parts.append(first if record.request is None else request_line(record.request))
        extra = []
        if record.size is not None:
            extra.append(format_bytes(record.size))
        if record.duration is not None:
            extra.append(format_duration(record.duration))
        if record.request is not None and record.request.client:
            extra.append(record.request.client)
        if extra:
            parts.append("  ".join(extra))
    else:
        where = _log_request_words(record)
        if where:
            parts.append(where)
        parts.append(first.strip() or NONE_MARK)
        more = rest.count("\n") + 1 if rest else 0
        if record.traceback:
            exc = record.traceback.rstrip("\n").rsplit("\n", 1)[-1].strip()
            more += record.traceback.count("\n") + 1
            parts.append(f"{TRACEBACK_CLOSED} {exc}")
        elif more:
            parts.append(f"{TRACEBACK_CLOSED} {more} more lines")
    mark = LOG_ORIGIN_MARKS.get(record.origin, "")
    if mark:
        parts.append(f"({mark})")
    if record.cut:
        parts.append(f"({record.cut} chars cut)")
    return "  ".join(p for p in parts if p)


TRACEBACK_FRAME = re.compile(r'^(\s*)File "(.+)", line (\d+), in ')
READ_NOW = "  (source read now)"
"""After a source line the agent could not give (it reads no files) and the inspector read."""


def traceback_frames_without_source(traceback: str) -> List[Tuple[str, int]]:
    """``(file, line)`` of the traceback's frames that have no source line under them."""
    lines = traceback.split("\n")
    out = []
    for i, line in enumerate(lines):
        m = TRACEBACK_FRAME.match(line)
        if m and not _has_source(lines, i, m.group(1)):
            out.append((m.group(2), int(m.group(3))))
    return out


def _has_source(lines: List[str], i: int, indent: str) -> bool:
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    return nxt.startswith(indent + "  ") and not TRACEBACK_FRAME.match(nxt)


def traceback_lines(
    traceback: str, line_of: Optional[Callable[[str, int], Optional[str]]] = None
) -> List[str]:
    """The traceback's lines; with ``line_of``, a frame without its source line gets the line
    the inspector read (marked: the file may have changed since)."""
    lines = traceback.rstrip("\n").split("\n")
    if line_of is None:
        return lines
    out: List[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        m = TRACEBACK_FRAME.match(line)
        if m and not _has_source(lines, i, m.group(1)):
            text = line_of(m.group(2), int(m.group(3)))
            if text and text.strip():
                out.append(m.group(1) + "  " + text.strip() + READ_NOW)
    return out


def log_record_details(
    record: LogRecord, line_of: Optional[Callable[[str, int], Optional[str]]] = None
) -> List[str]:
    """The lines under an expanded record: the rest of the message, the traceback (source
    lines it lacks filled in by ``line_of`` when given), and where it came from (logger,
    thread, request)."""
    out: List[str] = []
    _, _, rest = log_message_text(record).partition("\n")
    if rest:
        out.extend("    " + line for line in rest.split("\n"))
    if record.traceback:
        out.extend("    " + line for line in traceback_lines(record.traceback, line_of))
    where = [record.logger]
    if record.app is not None:
        where.append("app %r" % (record.app or "/"))
    if record.thread_name:
        where.append("thread " + record.thread_name)
    if record.request is not None:
        started = record.request.started_at
        where.append(
            _log_request_words(record)
            + (f" started {format_clock(started)}" if started is not None else "")
        )
    if record.seq:
        where.append(f"#{record.seq}")
    out.append("    — " + " · ".join(where))
    return out


def log_gap_line(gap: LogGap) -> str:
    """``⋯ 15 records missed (buffer wrapped)`` in place of what was lost."""
    if gap.count:
        noun = "record" if gap.count == 1 else "records"
        return f"⋯ {gap.count} {noun} missed ({gap.why})"
    return f"⋯ {gap.why}"


def log_routing_warning(routing: Optional[LogRouting]) -> Optional[str]:
    """The "errors go nowhere" diagnosis with the line that fixes it, or None."""
    if routing is None or not routing.goes_nowhere:
        return None
    fix = routing.fix or "log.error_file = '/var/log/<app>/error.log'"
    return (
        "⚠ errors go nowhere: log.screen is off, no log.error_file, no other handler — "
        f"only this buffer has them. Fix: {fix}"
    )


def log_state_line(state: Optional[LogState], captured: bool = False) -> str:
    """Where the records come from: ``buffer 10000 · error.log (file) · 3 missed``;
    ``captured``: where a snapshot's came from (no file "following" any more)."""
    if state is None:
        return "no log source"
    parts = []
    if state.buffer:
        parts.append(f"agent buffer (capacity {state.capacity:,})")
    for status in state.files:
        name = os.path.basename(status.path)
        how = "" if captured else " following" if status.following else " not followed"
        note = f": {status.note}" if status.note else ""
        found = " (open in the process)" if status.found_by == "fd" else ""
        parts.append(f"{status.kind} file {name}{found}{how}{note}")
    if state.missed:
        parts.append(f"{state.missed:,} missed (buffer wrapped)")
    return " · ".join(parts) if parts else "no log source (no agent, no log file found)"


def format_log_record(record: LogRecord) -> List[str]:
    """A record for ``cpinspect logs`` and reports: its line, then its traceback indented."""
    out = [log_record_line(record).replace(f"  {TRACEBACK_CLOSED} ", "  ")]
    _, _, rest = log_message_text(record).partition("\n")
    if rest:
        out.extend("    " + line for line in rest.split("\n"))
    if record.traceback:
        out.extend("    " + line for line in record.traceback.rstrip("\n").split("\n"))
    return out


def _report_log(snap: Snapshot) -> List[str]:
    """The report's log section: counts, the errors-go-nowhere line, the last errors whole."""
    records = snap.log
    state = snap.log_state
    if not records and state is None:
        return []
    errors = [r for r in records if r.is_error and not r.access]
    failed = [r for r in records if r.access and r.status is not None and r.status >= 500]
    out = [section(f"Log ({len(records)} recent records)")]
    out.append(f"  {log_state_line(state)}")
    warning = log_routing_warning(state.routing if state is not None else None)
    if warning:
        out.append(f"  {warning}")
    missing = sum(1 for r in records if r.access and r.status == 404)
    out.append(f"  errors: {len(errors)} · 5xx answers: {len(failed)} · 404 answers: {missing}")
    if errors:
        out.append("")
        shown = errors[-REPORT_LOG_ERRORS:]
        if len(errors) > len(shown):
            out.append(f"  the last {len(shown)} errors of {len(errors)}:")
        for record in shown:
            out.extend("  " + line for line in format_log_record(record))
    out.append("")
    return out
