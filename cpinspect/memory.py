"""The inspector's own memory: where its RSS lives, and glibc's allocator told to give back.

While py-spy carries the TUI at 1,000 threads, every read is a ~5 MB JSON text read in 32 KiB
chunks, joined, cut into ~1,000 pieces and partly parsed, in threads that come and go (a
Textual worker per poll, a thread per agent call, py-spy's reader). glibc gives each thread
that allocates at the same time as another an arena of its own (up to 8 per core) and keeps
what is freed in each for later: tracemalloc saw ~24 MB alive in a TUI of 160-178 MB RSS.
``tune_malloc`` caps the arenas and fixes the size above which blocks are mapped on their own
(returned whole on free: glibc otherwise raises that threshold to the size of the largest
block freed, up to 32 MiB, after which a 5 MB text lands in an arena); ``trim`` hands freed
arena pages back to the system. Inspector-side only: the agent never calls these (they
would change the allocator of somebody else's server).

``rss_kinds`` reads ``/proc/PID/smaps`` to tell the main heap from the threads' arenas and
everything else (bench scripts print it).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt parameters (glibc's malloc.h)."""
ARENA_MAX = 2
"""Arenas glibc may make for the inspector's threads (the main heap is one of them)."""
MMAP_THRESHOLD = 256 * 1024
"""Blocks at least this large are mapped on their own and unmapped when freed: py-spy's text,
its joined output and big slices never stay in an arena."""
TRIM_THRESHOLD = 4 * 1024 * 1024
"""Free memory at the top of the main heap above this is returned at once (glibc: 128 KiB,
raised with the mmap threshold when that moves; fixed here since that one is)."""
TRIM_EVERY = 10.0
"""Seconds between two ``malloc_trim`` calls of one ``Trimmer``."""
DISABLE = "CPINSPECT_MALLOC"
"""``CPINSPECT_MALLOC=0`` leaves glibc's allocator as it is (A/B measurements)."""
HEAP_ALIGN = 64 * 1024 * 1024
"""A thread arena's heap is a mapping aligned to 64 MiB (glibc's HEAP_MAX_SIZE on 64 bits)."""

_libc: Optional[Any] = None
_looked = False


def _glibc() -> Optional[Any]:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim`` exist), else None.
    Looked up in the symbols the interpreter is linked with (``CDLL(None)``), not with
    ``ctypes.util.find_library``, which runs ``ldconfig`` or a compiler; ctypes is imported
    only here, when asked (a one-shot command's start-up does not pay for it)."""
    global _libc, _looked
    if _looked:
        return _libc
    _looked = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (ImportError, OSError, AttributeError):  # musl, or no ctypes
        return None
    _libc = libc
    return libc


_tuned = False


def tune_malloc() -> bool:
    """Cap glibc's arenas and fix its mmap and trim thresholds (once; the earlier in the
    process the better: arenas already made stay). False when the C library is not glibc or
    refused; nothing changes then."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get(DISABLE, "") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    for param, value in (
        (M_ARENA_MAX, ARENA_MAX),
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        ok = libc.mallopt(param, value) == 1 and ok
    _tuned = ok
    return ok


def trim() -> bool:
    """Return the free pages of every arena to the system (``malloc_trim(0)``); whether any
    memory was released. A few ms at most on a heap of ~100 MB."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


class Trimmer:
    """``trim()`` at most once every ``every`` seconds, from whichever thread asks: a poll that
    parsed a big reading asks, a quiet second does not pay for it. Only when ``tune_malloc``
    took effect (the A/B switch off: nothing)."""

    def __init__(
        self, every: float = TRIM_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.clock = clock
        self.last: Optional[float] = None
        self.trims = 0

    def maybe(self) -> bool:
        """Trim if it is time (the first call only starts the clock); whether it trimmed."""
        now = self.clock()
        if self.last is None:
            self.last = now
            return False
        if now - self.last < self.every or not _tuned:
            return False
        self.last = now
        self.trims += 1
        trim()
        return True


def rss_kinds(pid: int) -> Dict[str, float]:
    """Resident MiB of ``pid`` by kind, from ``/proc/PID/smaps``: ``heap`` (the main arena),
    ``arenas`` (anonymous mappings aligned to 64 MiB: the threads' malloc arenas), ``anon``
    (other anonymous memory: big mapped blocks, thread stacks, Python's own arenas), ``files``
    (the interpreter, libraries, mapped files) and ``arena_count``. Empty when unreadable."""
    out = {"heap": 0.0, "arenas": 0.0, "anon": 0.0, "files": 0.0, "arena_count": 0.0}
    try:
        with open("/proc/%d/smaps" % pid, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    kind = "anon"
    for line in text.splitlines():
        head = line.split(None, 5)
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            start = int(head[0].split("-", 1)[0], 16)
            name = head[5].strip() if len(head) == 6 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("["):
                kind = "anon"
            elif name:
                kind = "files"
            elif start % HEAP_ALIGN == 0 and head[1].startswith("rw"):
                kind = "arenas"
                out["arena_count"] += 1
            else:
                kind = "anon"
        elif head[0] == "Rss:":
            out[kind] += int(head[1]) / 1024
    return out
