"""``GET /v1/sessions``: each app's session store, one page of it, and who holds or waits on locks.

Backends, from the app's config (never from the storage class's attributes: ``setup()`` runs
once per process, for the first app that served a session; cherrypy-internals.md 3.1):

- **RAM** (``RamSession`` and subclasses): ``list(cache)`` copies the keys only and each entry is
  read with one ``cache.get`` (atomic under the GIL); no session lock is ever taken.
- **File** (``storage_class = FileSession`` or the older ``storage_type = "file"``): the storage
  path from the app config; ``session-*`` files (never ``*.lock``) are read without the lock,
  torn reads (unpickling errors from a writer truncating the file) retried a few times. All file
  I/O runs on the store's own worker thread with a time limit (``IO_TIMEOUT``): a hung mount
  makes the answer say so while the agent keeps answering; at most one reader thread per store
  is ever stuck, later requests report it instead of starting another.
- **Memcached**: memcached cannot list its keys. The request tracker records the session ids of
  requests served by a memcached session class (a bounded, most-recent-first set, armed only once
  such an app is known); they are looked up with ``get_multi`` under the class's ``mc_lock``,
  in chunks, with a bounded wait for that lock — the same lock CherryPy takes around every call.
- **Custom** storage classes are listable when they define the optional classmethod::

      @classmethod
      def cpinspect_sessions(cls):
          '''Yield (session_id: str, data: dict, expiration) for every stored session;
          expiration is a datetime (as CherryPy stores it), an epoch float, or None.'''

  It runs on the store's worker thread under the time limit and is read up to ``MAX_ENTRIES``.
  Without it the app is reported with ``listable: false`` and the reason.

**The index.** Paging and sorting happen here, over a per-store index rebuilt at most every
``REBUILD_MIN_INTERVAL`` (5) seconds and never more often than ``REBUILD_DUTY`` times its own
build time (so the agent spends ~1 % of the time indexing; the wait is capped at 10 s), on a
thread of its own; a page is served from the index as it is (a rebuild runs behind it) and
only the page's own sessions are read again. Per session the index holds the id and the
stored expiration object (references to the store's own objects: for RAM an unchanged
expiration object means an unsaved session, whose size is reused, and the datetimes are sorted
as they are), the size and two sort positions (4 bytes each): 28 bytes, 2.8 MB at 100,000
(other stores add an 8-byte epoch expiry). ``summary.as_of`` says when it was built. An index
unchanged since the last build (same ids, same expiration objects) is confirmed in one pass
without sorting again.

Memory (the issue's goal: < 5 MB of growth at 100,000). Orders are sorted by chunks of
``SORT_CHUNK`` positions and merged (``_order``), never as ``sorted(range(n))``, whose 100,000
int objects left their pymalloc arenas pinned. A RAM store that only gained or re-saved a few
sessions (the usual case between two clean-ups) is updated in place of the old index
(``RamStore._updated``): no second index, no sort. Deleted sessions (a clean-up, logouts) are
dropped from the served index in place (``_compact``, under the store's ``index_lock``, which
answers hold while they read the index). After every build ``release_free_memory`` hands the
freed C-heap pages back (glibc ``malloc_trim``).

**Sizes** are the pickled size of the session's data (what a FileSession writes; for RAM computed
once per saved version of the session, from a shallow copy; a value pickle refuses counts as
``sys.getsizeof``). Memcached and file sizes are those of the stored bytes/file.

**Locks.** RAM/memcached: the RLock's holder from ``repr(lock)``'s ``owner=`` (never acquired).
Waiters are threads whose stack is in ``cherrypy/lib/sessions.py`` ``acquire_lock``; the session
id comes from that frame's ``self`` (or, for a file lock, its ``path``). File sessions: the
``.lock`` file's age (mtime: zc.lockfile writes the pid at each acquire) and pid (its content),
held or not from ``/proc/locks``; the holder is the in-flight request whose session cookie maps to
that id and is not waiting. ``locked``/``waiters`` in the summary count locks held by in-flight
requests and threads waiting (scanning 100,000 lock objects per answer is not done).

**Threads.** Nothing that may run the app's code or touch a filesystem runs on the agent's HTTP
threads: index builds run on a store's ``cpinspect-sessions-index`` thread, and each page is read
and described (values pickled for sizes, repr()'d when revealed) on a ``cpinspect-sessions-read``
thread within ``IO_TIMEOUT``; past it the answer names the limit, and while that reader is stuck
no other is started for the store.

**Privacy.** No raw session id leaves the process: ``fp`` is HMAC-SHA256 with a per-agent key.
Values are sent only for the session named by ``reveal=FP``.
"""

import datetime
import hashlib
import heapq
import hmac
import itertools
import os
import pickle
import re
import sys
import threading
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..tracking import RequestTracker
from ..wire import SESSION_SORTS, SESSIONS_MAX_LIMIT
from .servers import pool_of, running_servers
from .threads import _peer, describe_request, find_cherrypy_request

DEFAULT_LIMIT = 50
MAX_LIMIT = SESSIONS_MAX_LIMIT
LOCKS_LISTED = 50
"""Sessions locked or waited on now listed in every answer (``locks``), most waiters first."""
SORTS = SESSION_SORTS
EXPIRING_SOON = 300.0
IO_TIMEOUT = 2.0
"""Seconds an answer waits for a store's reader thread (file listing, memcached, custom)."""
FILE_BUILD_BUDGET = 1.5
"""Seconds of file reading in one index build; past it the listing is cut (``partial``)."""
REBUILD_MIN_INTERVAL = 5.0
REBUILD_MAX_INTERVAL = 10.0
REBUILD_DUTY = 100.0
MAX_ENTRIES = 200000
"""Sessions one index holds; a larger store is reported partial."""
MAX_KEYS = 50
MAX_VALUE_REPR = 2000
MAX_KEY_REPR = 120
TORN_READ_RETRIES = 3
MC_CHUNK = 100
MC_LOCK_WAIT = 0.5
SEEN_IDS_CAP = 10000
"""Memcached session ids remembered by the tracker (most recent)."""
_MAX_SIZE = 2**31 - 1  # sizes are kept as 4-byte ints
_OWNER = re.compile(r"owner=(\d+)")
_SESSIONS_FILE = ("cherrypy/lib/sessions.py", "cherrypy\\lib\\sessions.py")
_HOLDING_STAGES = {
    "implicit": ("before_handler", "handler", "before_finalize"),
    "early": ("before_request_body", "before_handler", "handler", "before_finalize"),
}


class BadQuery(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


REVEAL_PREFIX = 8
"""Fewest hex digits of a fingerprint ``reveal`` takes: the texts show its first 8."""


def parse_query(query: Dict[str, List[str]]) -> Dict[str, Any]:
    """The validated parameters; ``BadQuery`` (400, one line) otherwise."""

    def one(name: str) -> Optional[str]:
        values = query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadQuery(400, "give %s at most once" % name)
        return values[0]

    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = one(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadQuery(400, "%s must be an integer, got %r" % (name, raw[:40])) from None
        if value < low or value > high:
            raise BadQuery(400, "%s must be between %d and %d, got %d" % (name, low, high, value))
        return value

    unknown = sorted(set(query) - {"app", "offset", "limit", "sort", "reveal"})
    if unknown:
        raise BadQuery(
            400, "unknown parameter %r (known: app, offset, limit, sort, reveal)" % unknown[0][:40]
        )
    sort = one("sort") or "expiry"
    if sort not in SORTS:
        raise BadQuery(400, "sort must be one of %s, got %r" % (", ".join(SORTS), sort[:40]))
    reveal = one("reveal") or None
    if reveal is not None and not re.match(r"^[0-9a-f]{%d,12}$" % REVEAL_PREFIX, reveal):
        raise BadQuery(
            400,
            "reveal must be a fingerprint of %d to 12 hex digits, got %r"
            % (REVEAL_PREFIX, reveal[:40]),
        )
    return {
        "app": one("app"),
        "offset": integer("offset", 0, 0, 10**9),
        "limit": integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        "sort": sort,
        "reveal": reveal,
    }


def rebuild_interval(build_seconds: float) -> float:
    """Seconds an index is served before the next build: 100x its build time (<= 1 % of the
    time spent indexing), at least 5, at most 10 (the first build also sizes every session)."""
    return min(REBUILD_MAX_INTERVAL, max(REBUILD_MIN_INTERVAL, REBUILD_DUTY * build_seconds))


_SESSION_FILE_NAME = re.compile(r"(session-)[^\s'\"/\\]{16,}")
_LONG_HEX = re.compile(r"\b[0-9a-fA-F]{20,}\b")


def scrub(text: str) -> str:
    """An error text without anything that looks like a session id (a session file's name in
    an OSError, an id in a backend's exception): ids never leave the process, not even there."""
    text = _SESSION_FILE_NAME.sub(r"\1***", text)
    return _LONG_HEX.sub("***", text)


def size_of(data: Any) -> int:
    """Pickled size of a session's data (a shallow copy first: its request may be mutating it)."""
    try:
        copy = dict(data)
    except Exception:  # noqa: BLE001
        copy = data
    try:
        return min(_MAX_SIZE, len(pickle.dumps(copy, pickle.HIGHEST_PROTOCOL)))
    except Exception:  # noqa: BLE001 - an unpicklable value: a documented estimate
        try:
            return min(
                _MAX_SIZE,
                sys.getsizeof(copy)
                + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in list(copy.items())[:1000]),
            )
        except Exception:  # noqa: BLE001
            return -1


def epoch_of(expiration: Any) -> float:
    """Epoch seconds of a stored expiration (naive local datetime, epoch float); inf if none."""
    try:
        if isinstance(expiration, datetime.datetime):
            return expiration.timestamp()
        if isinstance(expiration, (int, float)) and not isinstance(expiration, bool):
            return float(expiration)
    except Exception:  # noqa: BLE001
        pass
    return float("inf")


def short_repr(value: Any, limit: int) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a user __repr__ may fail
        text = "<unrepresentable %s: %s>" % (type(value).__name__, exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The index -------------------------------------------------------------------------------


class Index:
    """One store's sessions at ``as_of``: ids in store order, sorted views as compact arrays.

    Per session: the id and the tag (references to objects the store holds anyway), the size
    and two sort positions (4 bytes each) and, unless the tags are the stored datetimes,
    an epoch expiry (8 bytes).
    """

    def __init__(
        self,
        sids: List[str],
        exps: Optional[Sequence[float]],
        sizes: Sequence[int],
        tags: Optional[List[Any]],
        as_of: float,
        build_seconds: float,
        partial_reason: Optional[str] = None,
        datas: Optional[List[Any]] = None,
        errors: Optional[List[str]] = None,
        path_exists: Optional[bool] = None,
        path_writable: Optional[bool] = None,
        orders: Optional[Tuple["array[int]", "array[int]"]] = None,
    ) -> None:
        n = len(sids)
        self.n = n  # ``sids``/``tags``/``sizes`` may be shared with a later index and grow
        self.sids = sids
        self.tags = tags  # RAM: the stored expiration objects (unchanged = same saved version)
        self.datas = datas  # custom stores: the data each entry came with
        # RAM (``exps`` None): expiries are the stored datetimes themselves, sorted and compared
        # as they are, so no float is kept or made per session.
        self.exps = None if exps is None else array("d", exps)
        self.sizes = (
            sizes
            if isinstance(sizes, array) and sizes.typecode == "i"
            else array("i", (min(x, _MAX_SIZE) for x in sizes))
        )
        if orders is not None:  # RAM, updated in place (``RamStore._updated``)
            self.order_exp, self.order_size = orders
        elif self.exps is None:
            assert tags is not None
            self.order_exp = _order(n, tags.__getitem__, False)
        else:
            self.order_exp = _order(n, self.exps.__getitem__, False)
        if orders is None:
            self.order_size = _order_by_size(self.sizes)
        self.as_of = as_of
        self.built_mono = time.monotonic()
        self.build_seconds = build_seconds
        self.partial_reason = partial_reason
        self.errors = errors or []
        self.path_exists = path_exists
        self.path_writable = path_writable
        # File stores: .lock files whose writer's pid is gone, and those with no session file.
        self.stale_locks: Optional[int] = None
        self.orphan_locks: Optional[int] = None
        self.sizes_summary = self._size_summary()

    def __len__(self) -> int:
        return self.n

    def refreshed(self, as_of: float, build_seconds: float) -> "Index":
        """This index, confirmed unchanged at ``as_of``."""
        self.as_of = as_of
        self.built_mono = time.monotonic()
        self.build_seconds = build_seconds
        return self

    def exp_of(self, pos: int) -> float:
        """Epoch expiry of the entry at ``pos``; inf when unknown."""
        if self.exps is not None:
            return self.exps[pos]
        return epoch_of(self.tags[pos]) if self.tags is not None else float("inf")

    def count_before(self, when: float) -> int:
        """Entries expiring before ``when`` (a bisection over the expiry order)."""
        lo, hi = 0, len(self.order_exp)
        order = self.order_exp
        exps: Any = self.exps
        if exps is None:
            exps = self.tags  # naive local datetimes, as CherryPy stores them
            when_key: Any = datetime.datetime.fromtimestamp(when)
        else:
            when_key = when
        while lo < hi:
            mid = (lo + hi) // 2
            if exps[order[mid]] < when_key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _size_summary(self) -> Optional[Dict[str, int]]:
        order, sizes = self.order_size, self.sizes
        n = len(order)
        while n and sizes[order[n - 1]] < 0:  # unknown sizes sort last
            n -= 1
        if not n:
            return None
        return {
            "min": sizes[order[n - 1]],
            "p50": sizes[order[n // 2]],
            "p90": sizes[order[(n * 10) // 100]],
            "max": sizes[order[0]],
            # the -1s of unknown sizes taken back out
            "total": sum(itertools.islice(sizes, self.n)) + (self.n - n),  # no copy
        }


SORT_CHUNK = 4096
"""Positions sorted at once; longer orders are merged from sorted chunks (see ``_order``)."""


def _order(n: int, key: Callable[[int], Any], reverse: bool) -> "array[int]":
    """Positions sorted by ``key`` (stable), as 4-byte ints.

    ``sorted(range(n), key=key)`` would make one int object per session (with its list, ~4 MB
    at 100,000) whose pymalloc arenas stay mapped once other objects are allocated among them.
    Instead chunks of ``SORT_CHUNK`` positions are sorted into one array, and the chunks are
    merged (``heapq.merge``: stable, ties in chunk order, so the result equals the full sort)
    into the output: at any time only a chunk's worth of int objects exists.
    """
    runs = array("i", bytes(4 * n))
    for lo in range(0, n, SORT_CHUNK):
        hi = min(n, lo + SORT_CHUNK)
        chunk = sorted(range(lo, hi), key=key, reverse=reverse)
        runs[lo:hi] = array("i", chunk)
        del chunk
    return _merge_runs(runs, key, reverse)


def _merge_runs(runs: "array[int]", key: Any, reverse: bool) -> "array[int]":
    """The sorted chunks of ``runs`` (``SORT_CHUNK`` positions each) merged into one order,
    without a Python int per session alive at once."""
    n = len(runs)
    if n <= SORT_CHUNK:
        return runs
    view = memoryview(runs)
    out = array("i", bytes(4 * n))
    merged = heapq.merge(
        *[view[lo : lo + SORT_CHUNK] for lo in range(0, n, SORT_CHUNK)],
        key=key,
        reverse=reverse,
    )
    for rank, pos in enumerate(merged):
        out[rank] = pos
    del merged
    view.release()
    return out


_POS_BITS = 20  # positions fit (MAX_ENTRIES < 2**20)


def _order_by_size(sizes: "array[int]") -> "array[int]":
    """Positions largest first (ties: the later position first), sorted by chunks and merged
    as in ``_order``. Within a chunk each size and its position are packed into one int (no
    key function, one object per session of the chunk); the merge unpacks the key again."""
    n = len(sizes)
    mask = (1 << _POS_BITS) - 1
    runs = array("i", bytes(4 * n))
    for lo in range(0, n, SORT_CHUNK):
        hi = min(n, lo + SORT_CHUNK)
        chunk = sorted(((sizes[p] + 1) << _POS_BITS | p for p in range(lo, hi)), reverse=True)
        runs[lo:hi] = array("i", (x & mask for x in chunk))
        del chunk

    def packed(p: int) -> int:
        return (sizes[p] + 1) << _POS_BITS | p

    return _merge_runs(runs, packed, True)


UPDATE_MIN = 1000
"""Sessions saved or added since the last build that are merged in place (or n/20 if more)."""


def _insert_sorted(
    base: "array[int]", drop: Dict[int, Any], extra: List[int], key: Callable[[int], Any]
) -> "array[int]":
    """``base`` (ascending by ``key``) without the positions in ``drop``, with ``extra``
    (ascending by ``key``) inserted where they belong (bisection: no per-session objects)."""
    if drop:
        base = array("i", (p for p in base if p not in drop))
    total = len(base) + len(extra)
    out = array("i", bytes(4 * total))
    lo = w = 0
    hi_all = len(base)
    for p in extra:
        kp = key(p)
        a, b = lo, hi_all
        while a < b:
            mid = (a + b) // 2
            if kp < key(base[mid]):
                b = mid
            else:
                a = mid + 1
        if a > lo:
            out[w : w + a - lo] = base[lo:a]
            w += a - lo
        out[w] = p
        w += 1
        lo = a
    if lo < hi_all:
        out[w:] = base[lo:]
    return out


_BLOCK_BITS = 8  # deletions counted per block of 256 positions (see ``_compact``)


def _compact(idx: Index, gone: bytearray) -> None:
    """Drop the positions marked in ``gone`` (one byte a position, 1 = deleted) from ``idx`` in
    place: its ids, tags and sizes closed up, its two orders filtered and renumbered.

    No second copy of anything: the lists and arrays are rewritten front to back and cut at the
    end. A surviving position ``p`` becomes ``p`` minus the deletions before it, counted from a
    small table of deletions per block of 256 positions plus a ``bytearray.count`` within the
    block (no 4-byte-a-session map). Dropping entries and renumbering keeps both orders exactly
    as a full sort of what is left (stable, ties by place), so nothing is sorted again. The
    caller holds the store's ``index_lock``: page readers never see it half-done.
    """
    m = idx.n
    blocks = (m >> _BLOCK_BITS) + 1
    before = array("i", bytes(4 * blocks))  # deletions before each block
    run = 0
    count = gone.count
    for b in range(blocks):
        before[b] = run
        run += count(1, b << _BLOCK_BITS, (b + 1) << _BLOCK_BITS)
    for order in (idx.order_exp, idx.order_size):
        w = 0
        for r in range(len(order)):
            p = order[r]
            if gone[p]:
                continue
            b = p >> _BLOCK_BITS
            order[w] = p - before[b] - count(1, b << _BLOCK_BITS, p)
            w += 1
        del order[w:]
    sids, tags, sizes = idx.sids, idx.tags, idx.sizes
    w = 0
    for i in range(m):
        if gone[i]:
            continue
        if w != i:
            sids[w] = sids[i]
            sizes[w] = sizes[i]
            if tags is not None:
                tags[w] = tags[i]
        w += 1
    del sids[w:], sizes[w:]
    if tags is not None:
        del tags[w:]
    idx.n = w
    idx.sizes_summary = idx._size_summary()


def _merge_in_place(
    idx: Index,
    changed: Dict[int, Any],
    changed_sizes: Dict[int, int],
    added: List[Any],
    added_sizes: List[int],
    new_sids: List[str],
) -> None:
    """Sessions saved since (``changed``: position -> entry) and created since (``added``,
    ids ``new_sids``) merged into ``idx`` itself: new values written, new entries appended,
    both orders fixed up in their own arrays (``_merge_into``). The caller holds the store's
    ``index_lock``. Same result as a full sort (ties by place)."""
    m = idx.n
    tags, sizes, sids = idx.tags, idx.sizes, idx.sids
    assert tags is not None
    for k, e in changed.items():
        tags[k] = e[1]
        sizes[k] = min(changed_sizes[k], _MAX_SIZE)
    tags.extend(e[1] for e in added)
    sizes.extend(min(z, _MAX_SIZE) for z in added_sizes)
    sids.extend(new_sids)
    n = len(sids)

    def exp_key(p: int) -> Tuple[Any, int]:
        return (tags[p], p)  # the full sort is stable: ties by place

    def size_key(p: int) -> int:
        return -((sizes[p] + 1) << _POS_BITS | p)  # largest first, the later place first

    moved = sorted(changed) + list(range(m, n))
    _merge_into(idx.order_exp, changed, sorted(moved, key=exp_key), exp_key)
    _merge_into(idx.order_size, changed, sorted(moved, key=size_key), size_key)
    idx.n = n
    idx.sizes_summary = idx._size_summary()


def _merge_into(
    order: "array[int]", drop: Dict[int, Any], extra: List[int], key: Callable[[int], Any]
) -> None:
    """``order`` (ascending by ``key``) without the positions in ``drop``, with ``extra``
    (ascending by ``key``) inserted where they belong, in place: the kept entries closed up,
    the array lengthened by ``len(extra)`` (room its over-allocation usually has), then the
    extras placed from the largest down, each after a bisection over what is left, the
    entries above it moved up at once (memmove through a memoryview)."""
    if drop:
        w = 0
        for r in range(len(order)):
            p = order[r]
            if p in drop:
                continue
            order[w] = p
            w += 1
        del order[w:]
    hi = len(order)
    order.extend(extra)  # room; every slot is written below
    view = memoryview(order)
    try:
        for j in range(len(extra) - 1, -1, -1):
            p = extra[j]
            kp = key(p)
            a, b = 0, hi
            while a < b:
                mid = (a + b) // 2
                if kp < key(order[mid]):
                    b = mid
                else:
                    a = mid + 1
            if a < hi:
                view[a + j + 1 : hi + j + 1] = view[a:hi]
            order[a + j] = p
            hi = a
    finally:
        view.release()


def _renumbered(positions: Dict[int, Any], gone: bytearray) -> Dict[int, Any]:
    """``positions`` (surviving ones) keyed by their numbers after ``_compact``."""
    out: Dict[int, Any] = {}
    dropped = 0
    last = 0
    for p in sorted(positions):
        dropped += gone.count(1, last, p)
        last = p
        out[p - dropped] = positions[p]
    return out


_malloc_trim: Optional[Callable[[int], int]] = None
_malloc_trim_known = False


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``; nothing elsewhere).

    An index is a few large arrays and lists (C heap blocks, 0.4-0.8 MB each at 100,000). Once
    an old index is dropped its blocks are free but lie under live ones, so glibc keeps them
    resident: RSS would stay at old + new (+3 MB at 100,000). ``malloc_trim`` madvises those
    free pages away (about 0.3 ms in a 150 MB process; through ``ctypes.CDLL``, so the GIL is
    released meanwhile). Called on the index thread only, after a build. Never raises.
    """
    global _malloc_trim, _malloc_trim_known
    try:
        if not _malloc_trim_known:
            _malloc_trim_known = True
            if sys.platform.startswith("linux"):
                import ctypes

                func = getattr(ctypes.CDLL(None), "malloc_trim", None)  # absent on musl
                if func is not None:
                    func.argtypes = (ctypes.c_size_t,)
                    func.restype = ctypes.c_int
                    _malloc_trim = func
        if _malloc_trim is not None:
            _malloc_trim(0)
    except Exception:  # noqa: BLE001 - without ctypes/libc the memory is just kept longer
        _malloc_trim = None


# --- Stores ----------------------------------------------------------------------------------


class Store:
    """One storage (class + path): its index, its worker thread, how to read one page."""

    backend = "custom"

    def __init__(self, cls: Any, conf: Dict[str, Any]) -> None:
        self.cls = cls
        self.conf = conf
        self.index: Optional[Index] = None
        self._builder: Optional[threading.Thread] = None
        self._builder_since = 0.0
        self._reader_busy_since: Optional[float] = None
        self._reader_lock = threading.Lock()
        self._lock = threading.Lock()
        # Held while an answer reads the index (counts, a page's positions, ids, expiries and
        # sizes: about a millisecond) and while a RAM update changes the served index in place
        # (``_compact`` after deletions): a page never sees an index half-compacted.
        self.index_lock = threading.Lock()

    # What a subclass supplies.
    def listable(self) -> Tuple[bool, Optional[str]]:
        return True, None

    def build(self, prev: Optional[Index]) -> Index:
        raise NotImplementedError

    def read_page(self, sids: List[str], positions: List[int]) -> Dict[str, Any]:
        """``{sid: (data or None, extra dict)}`` for the page's sessions."""
        raise NotImplementedError

    def lock_of(self, sid: str) -> Optional[Any]:
        locks = getattr(self.cls, "locks", None)
        if isinstance(locks, dict):
            return locks.get(sid)
        return None

    # The index, fresh enough, built on the worker thread.
    def current_index(self, wait: float) -> Tuple[Optional[Index], Optional[str], bool]:
        """(index, error, timed_out). A stale index is served while a rebuild runs."""
        idx = self.index
        now = time.monotonic()
        if idx is not None:
            age = now - idx.built_mono
            if age < rebuild_interval(idx.build_seconds):
                return idx, None, False
        with self._lock:
            builder = self._builder
            if builder is None or not builder.is_alive():
                builder = threading.Thread(
                    target=self._build_into, name="cpinspect-sessions-index", daemon=True
                )
                self._builder = builder
                self._builder_since = now
                builder.start()
        if idx is None:
            builder.join(wait)  # the first index: wait for it (bounded); later ones run behind
        fresh = self.index
        if fresh is not None:
            note = None
            if builder.is_alive() and now - self._builder_since > wait:
                note = "the store has not answered for %.1f s: these numbers are from as_of" % (
                    now - self._builder_since
                )
            return fresh, note, False
        stuck = time.monotonic() - self._builder_since
        return None, self.timeout_message(stuck), builder.is_alive()

    def timeout_message(self, stuck: float) -> str:
        return "reading the %s session store did not finish within %.1f s (stuck for %.1f s)" % (
            self.backend,
            IO_TIMEOUT,
            stuck,
        )

    def _build_into(self) -> None:
        try:
            self.index = self.build(self.index)
        except Exception as exc:  # noqa: BLE001 - reported with the next answer
            self.index = Index(
                [], [], [], [], time.time(), 0.0, errors=["%s: %s" % (type(exc).__name__, exc)]
            )
        # The old index and the build's temporaries are free now; give their pages back.
        release_free_memory()

    def run_reader(self, func: Callable[[], Any]) -> Tuple[bool, Any, Optional[str]]:
        """Page reads on a worker thread, one at a time per store, within ``IO_TIMEOUT``.

        Always on a thread, RAM too: describing a page pickles and (revealed) repr()s the app's
        values, which may run the app's code. Readers queue on ``_reader_lock`` (another answer
        may be reading); one that holds it past the limit is stuck, and no other is started
        while it is: the answer says so instead.
        """
        since = self._reader_busy_since
        if since is not None and time.monotonic() - since > IO_TIMEOUT:
            # Known stuck: say so at once rather than queue behind it for the whole limit.
            return (
                False,
                None,
                "a reader of this store is stuck since %.1f s" % (time.monotonic() - since),
            )
        if not self._reader_lock.acquire(timeout=IO_TIMEOUT):
            since = self._reader_busy_since
            stuck = time.monotonic() - since if since is not None else IO_TIMEOUT
            return False, None, "a reader of this store is stuck since %.1f s" % stuck
        self._reader_busy_since = time.monotonic()

        def work() -> Any:
            try:
                return func()
            finally:
                self._reader_busy_since = None
                self._reader_lock.release()  # from the reader thread: a Lock allows it

        from .routes import run_bounded

        try:
            return run_bounded(work, IO_TIMEOUT, "cpinspect-sessions-read")
        except BaseException:  # the thread did not start: give the lock back
            if self._reader_busy_since is not None:
                self._reader_busy_since = None
                self._reader_lock.release()
            raise


class RamStore(Store):
    backend = "ram"

    def build(self, prev: Optional[Index]) -> Index:
        started = time.monotonic()
        cache = self.cls.cache
        if (
            prev is not None
            and prev.tags is not None
            and prev.exps is None
            and prev.partial_reason is None
            and len(cache) <= MAX_ENTRIES
        ):
            updated = self._updated(prev, started)
            if updated is not None:
                return updated
        keys = list(cache)  # the keys only (references): no entry is copied
        partial = None
        if len(keys) > MAX_ENTRIES:
            partial = "the index holds the first %d of %d sessions" % (MAX_ENTRIES, len(keys))
            del keys[MAX_ENTRIES:]
        n = len(keys)
        # What the index keeps is allocated before the temporaries, so that freeing those leaves
        # the heap's top free (returned to the system) instead of holes under kept arrays.
        tags: List[Any] = [None] * n
        sizes = array("i", bytes(4 * n))
        # Store order is insertion order: an unchanged session keeps its place, new ones come
        # last. Walking both lists in step reuses the sizes of unsaved sessions without a dict.
        p_sids = prev.sids if prev is not None else []
        p_tags = (prev.tags if prev is not None else None) or []
        p_sizes = prev.sizes if prev is not None else array("i")
        i, n_prev = 0, len(p_tags)
        dropped = 0
        get = cache.get
        for k in range(n):
            sid = keys[k]
            e = get(sid)  # one atomic get per key
            if type(e) is not tuple or len(e) != 2:
                dropped += 1  # deleted meanwhile, or not a (data, expiration) pair
                continue
            expiration = tags[k] = e[1]
            while i < n_prev and p_sids[i] != sid:
                i += 1
            if i < n_prev and p_tags[i] is expiration:
                sizes[k] = p_sizes[i]
            else:
                sizes[k] = size_of(e[0])
            if i < n_prev:
                i += 1
        if dropped:
            keep = [k for k in range(n) if tags[k] is not None]
            keys = [keys[k] for k in keep]
            sizes = array("i", (sizes[k] for k in keep))
            tags = [tags[k] for k in keep]
        exps = None  # sorted by the datetimes themselves, unless a subclass stores something else
        if not all(type(t) is datetime.datetime for t in tags):
            exps = [epoch_of(t) for t in tags]
        return Index(
            keys,
            exps,
            sizes,
            tags,
            time.time(),
            time.monotonic() - started,
            partial,
        )

    def _updated(self, prev: Index, started: float) -> Optional[Index]:
        """The index updated in place of ``prev`` when the store changed a little, else None.

        "A little": at most ``max(UPDATE_MIN, n // 20)`` sessions saved or added, any number
        deleted. The store is a dict: a re-saved key keeps its place and new keys come after
        all others, so the store is ``prev``'s ids less the deleted ones, in their order, then
        the new ones. That is checked without listing the store's keys (no key list: 8 bytes
        a session): one ``get`` per indexed id (None: deleted; another expiration object:
        saved since), then the new ids read from the dict's end (``reversed``) up to the last
        surviving one, which must come next (else, e.g. an id deleted and created again, or
        the dict changed meanwhile: None, and the caller builds anew).

        Nothing is sorted again and no second index is built next to the one being served.
        Deleted sessions (the clean-up thread, logouts) are dropped from ``prev`` itself by
        ``_compact``, under ``index_lock`` (a page being described waits for it); then the
        new sessions' ids, expirations and sizes are appended to ``prev``'s own lists
        (positions its orders never reach), the changed and new positions are inserted into
        copies of the two orders by bisection, and the saved sessions' expirations and sizes
        are written in place just before the new index replaces ``prev``. Extra memory: one
        byte a session when some were deleted, then two orders (8 bytes a session) when some
        were saved or added, instead of a whole index and the sort's temporaries.
        """
        m = prev.n
        p_sids, p_tags, p_sizes = prev.sids, prev.tags, prev.sizes
        if p_tags is None:
            return None
        if len(p_sids) != m or len(p_tags) != m or len(p_sizes) != m:
            # An earlier update failed half-way: drop what it appended (only it used them).
            del p_sids[m:], p_tags[m:], p_sizes[m:]
        cache = self.cls.cache
        limit = max(UPDATE_MIN, len(cache) // 20)
        get = cache.get
        dt = datetime.datetime
        changed: Dict[int, Any] = {}  # position -> the entry saved since
        gone: Optional[bytearray] = None  # one byte a position once a deletion is seen
        deleted = 0
        last = -1  # the last surviving position
        for i in range(m):
            e = get(p_sids[i])
            if e is None:  # deleted
                if gone is None:
                    gone = bytearray(m)
                gone[i] = 1
                deleted += 1
                continue
            if type(e) is not tuple or len(e) != 2 or type(e[1]) is not dt:
                return None
            if e[1] is not p_tags[i]:
                changed[i] = e
                if len(changed) > limit:
                    return None
            last = i
        # The sessions created since: the dict's last keys, after the last surviving one.
        tail = len(cache) - (m - deleted)
        if tail < 0 or tail > limit:
            return None
        end = object()
        try:
            newest_first = reversed(cache)
            new_sids: List[str] = list(itertools.islice(newest_first, tail))
            before = next(newest_first, end)
        except RuntimeError:  # the dict changed size meanwhile
            return None
        if len(new_sids) != tail:
            return None
        if last < 0:
            if before is not end:
                return None
        elif before is end or (before is not p_sids[last] and before != p_sids[last]):
            return None  # not "survivors, then new ones": build anew
        del newest_first, before
        new_sids.reverse()
        added = []
        for sid in new_sids:
            e = get(sid)
            if type(e) is not tuple or len(e) != 2 or type(e[1]) is not dt:
                return None  # deleted again meanwhile, or not a (data, datetime) pair
            added.append(e)
        if gone is None and not changed and not added:
            # Nothing saved since: the index stands (one pass, nothing sorted again).
            return prev.refreshed(time.time(), time.monotonic() - started)
        if len(changed) + len(added) > limit:
            return None
        if gone is not None:
            # Sessions were deleted: the served index is changed in place, under the lock,
            # the deletions first, then the saved and new sessions merged into its own orders
            # (the room the deletions left: nothing copied). Sizes are computed before (the
            # pickling may take a while; pages are not kept waiting for it).
            changed_sizes = {k: size_of(e[0]) for k, e in changed.items()}
            added_sizes = [size_of(e[0]) for e in added]
            with self.index_lock:
                _compact(prev, gone)
                if changed or added:
                    changed = _renumbered(changed, gone)
                    changed_sizes = _renumbered(changed_sizes, gone)
                    _merge_in_place(prev, changed, changed_sizes, added, added_sizes, new_sids)
            return prev.refreshed(time.time(), time.monotonic() - started)
        n = m + len(added)
        new_tags = {k: e[1] for k, e in changed.items()}
        new_sizes = {k: size_of(e[0]) for k, e in changed.items()}
        # Appended positions are beyond every order of ``prev``: invisible to its pages.
        p_tags.extend(e[1] for e in added)
        p_sizes.extend(size_of(e[0]) for e in added)
        del added
        p_sids.extend(new_sids)
        del new_sids

        def exp_key(p: int) -> Tuple[Any, int]:
            t = new_tags.get(p)
            return (p_tags[p] if t is None else t, p)  # the full sort is stable: ties by place

        def size_key(p: int) -> int:
            z = new_sizes.get(p)
            return -((p_sizes[p] if z is None else z) + 1 << _POS_BITS | p)  # largest first

        moved = sorted(changed) + list(range(m, n))
        order_exp = _insert_sorted(prev.order_exp, changed, sorted(moved, key=exp_key), exp_key)
        order_size = _insert_sorted(prev.order_size, changed, sorted(moved, key=size_key), size_key)
        with self.index_lock:
            for k, t in new_tags.items():  # the saved sessions, just before the swap
                p_tags[k] = t
                p_sizes[k] = new_sizes[k]
        return Index(
            p_sids,
            None,
            p_sizes,
            p_tags,
            time.time(),
            time.monotonic() - started,
            orders=(order_exp, order_size),
        )

    def timeout_message(self, stuck: float) -> str:
        return (
            "the index of the RAM sessions is still being built after %.1f s (a very large "
            "store?); it goes on building: ask again" % stuck
        )

    def read_page(self, sids: List[str], positions: List[int]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        cache = self.cls.cache
        for sid in sids:
            entry = cache.get(sid)
            out[sid] = (entry[0] if entry is not None else None, {})
        return out


class FileStore(Store):
    backend = "file"

    def __init__(self, cls: Any, conf: Dict[str, Any]) -> None:
        super().__init__(cls, conf)
        self.path = conf.get("storage_path")
        self.prefix = str(getattr(cls, "SESSION_PREFIX", "session-") or "session-")
        self.suffix = str(getattr(cls, "LOCK_SUFFIX", ".lock") or ".lock")
        # name -> (mtime_ns, size, expiry epoch): files unchanged since the last build are not
        # read again. Bounded by the files listed (MAX_ENTRIES).
        self._files: Dict[str, Tuple[int, int, float]] = {}
        # lock file name -> (mtime_ns, pid written in it): a lock file is read again only when
        # it changed (zc.lockfile rewrites it at each acquire). Bounded like ``_files``.
        self._lock_pids: Dict[str, Tuple[int, Optional[int]]] = {}

    def listable(self) -> Tuple[bool, Optional[str]]:
        if not self.path:
            return False, "no tools.sessions.storage_path in this app's config"
        return True, None

    def timeout_message(self, stuck: float) -> str:
        return (
            "reading the session files in %s did not finish within %.1f s (a hung mount?); "
            "the reader has been stuck for %.1f s" % (self.path, IO_TIMEOUT, stuck)
        )

    def build(self, prev: Optional[Index]) -> Index:
        started = time.monotonic()
        path = str(self.path)
        exists = os.path.isdir(path)
        writable = os.access(path, os.W_OK | os.X_OK) if exists else None
        if not exists:
            return Index(
                [],
                [],
                [],
                [],
                time.time(),
                time.monotonic() - started,
                errors=["storage path %s does not exist" % path],
                path_exists=False,
                path_writable=None,
            )
        listed = [n for n in os.listdir(path) if n.startswith(self.prefix)]
        names = [n for n in listed if not n.endswith(self.suffix)]
        lock_names = [n for n in listed if n.endswith(self.suffix)]
        del listed
        partial = None
        if len(names) > MAX_ENTRIES:
            partial = "the index holds %d of %d session files" % (MAX_ENTRIES, len(names))
            del names[MAX_ENTRIES:]
        deadline = started + FILE_BUILD_BUDGET
        sids: List[str] = []
        exps: List[float] = []
        sizes: List[int] = []
        files: Dict[str, Tuple[int, int, float]] = {}
        errors: List[str] = []
        torn = 0
        for k, name in enumerate(names):
            if time.monotonic() > deadline:
                partial = "listing cut by the time limit after %d of %d files (%.1f s)" % (
                    k,
                    len(names),
                    FILE_BUILD_BUDGET,
                )
                break
            full = os.path.join(path, name)
            try:
                st = os.stat(full)
            except OSError:
                continue  # deleted meanwhile
            known = self._files.get(name)
            if known is not None and known[0] == st.st_mtime_ns and known[1] == st.st_size:
                exp = known[2]
            else:
                loaded = read_session_file(full)
                if loaded is None:
                    torn += 1
                    exp = float("inf")
                else:
                    exp = epoch_of(loaded[1])
                    files[name] = (st.st_mtime_ns, st.st_size, exp)
            if name in self._files and name not in files:
                files[name] = self._files[name]
            sids.append(name[len(self.prefix) :])
            exps.append(exp)
            sizes.append(st.st_size)
        self._files = files
        if torn:
            errors.append(
                "%d session file(s) unreadable after %d tries" % (torn, TORN_READ_RETRIES)
            )
        stale, orphans = self._lock_files(path, names, lock_names, deadline)
        idx = Index(
            sids,
            exps,
            sizes,
            [None] * len(sids),
            time.time(),
            time.monotonic() - started,
            partial,
            errors=errors,
            path_exists=True,
            path_writable=writable,
        )
        idx.stale_locks, idx.orphan_locks = stale, orphans
        return idx

    def _lock_files(
        self, path: str, names: List[str], lock_names: List[str], deadline: float
    ) -> Tuple[Optional[int], Optional[int]]:
        """(stale, orphans) over the store's ``.lock`` files: stale = the pid written in it is
        gone (CherryPy never deletes lock files: every restart leaves its own); orphans = no
        session file beside it (the session expired or was deleted). Lock files changed since
        the last build are read again (64 bytes each); None when the build's time limit cut
        the count (the session files come first)."""
        if len(lock_names) > MAX_ENTRIES:
            return None, None
        sessions = set(names)
        cut = len(self.suffix)
        orphans = sum(1 for n in lock_names if n[:-cut] not in sessions)
        del sessions
        known = self._lock_pids
        pids: Dict[str, Tuple[int, Optional[int]]] = {}
        alive: Dict[int, bool] = {}
        stale = 0
        for name in lock_names:
            if time.monotonic() > deadline:
                self._lock_pids = pids
                return None, orphans
            full = os.path.join(path, name)
            try:
                mtime = os.stat(full).st_mtime_ns
            except OSError:
                continue  # deleted meanwhile
            seen = known.get(name)
            pid = seen[1] if seen is not None and seen[0] == mtime else read_lock_pid(full)
            pids[name] = (mtime, pid)
            if pid is not None:
                if pid not in alive:
                    alive[pid] = pid_alive(pid)
                if not alive[pid]:
                    stale += 1
        self._lock_pids = pids
        return stale, orphans

    def read_page(self, sids: List[str], positions: List[int]) -> Dict[str, Any]:
        path = str(self.path)
        held = flock_holders()
        out: Dict[str, Any] = {}
        now = time.time()
        for sid in sids:
            full = os.path.join(path, self.prefix + sid)
            loaded = read_session_file(full)
            extra: Dict[str, Any] = {"file": lock_file_info(full + self.suffix, now, held)}
            out[sid] = (loaded[0] if loaded is not None else None, extra)
        return out


def read_session_file(full: str) -> Optional[Tuple[Any, Any]]:
    """A session file read without its lock; torn reads (a writer truncating) retried."""
    for attempt in range(TORN_READ_RETRIES):
        try:
            with open(full, "rb") as f:
                value = pickle.load(f)
            if isinstance(value, tuple) and len(value) == 2:
                return value[0], value[1]
            return None
        except FileNotFoundError:
            return None
        except (EOFError, pickle.UnpicklingError, ValueError, IndexError, AttributeError):
            if attempt + 1 < TORN_READ_RETRIES:
                time.sleep(0.01)
        except OSError:
            return None
        except Exception:  # noqa: BLE001 - a class the data needs is gone, or similar
            return None
    return None


def flock_holders() -> Optional[Dict[Tuple[int, int, int], int]]:
    """``{(major, minor, inode): pid}`` of flock() locks, from /proc/locks (procfs: no hang)."""
    try:
        with open("/proc/locks") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return None
    out: Dict[Tuple[int, int, int], int] = {}
    for line in lines:
        parts = line.split()
        if "->" in parts:
            continue  # a waiter on a lock, not a holder
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            out[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
        except ValueError:
            continue
    return out


def lock_file_info(
    lock_path: str, now: float, held: Optional[Dict[Tuple[int, int, int], int]]
) -> Dict[str, Any]:
    info: Dict[str, Any] = {"age": None, "pid": None, "held": None, "stale": False}
    try:
        st = os.stat(lock_path)
    except OSError:
        info["held"] = False  # never locked: no lock file yet
        return info
    info["age"] = max(0.0, now - st.st_mtime)
    info["pid"] = read_lock_pid(lock_path)
    if held is not None:
        info["held"] = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held
    # Stale: written by a process that is gone, and not held now (a forked child may hold it).
    info["stale"] = (
        info["pid"] is not None and info["held"] is not True and not pid_alive(info["pid"])
    )
    return info


def read_lock_pid(lock_path: str) -> Optional[int]:
    """The pid zc.lockfile wrote into a ``.lock`` file (its first word), None if unreadable."""
    try:
        with open(lock_path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
        pid = int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid is not None and pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (signal 0: nothing is sent); True when unsure."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


class MemcachedStore(Store):
    backend = "memcached"

    def __init__(self, cls: Any, conf: Dict[str, Any], tracker: RequestTracker) -> None:
        super().__init__(cls, conf)
        self.tracker = tracker

    def listable(self) -> Tuple[bool, Optional[str]]:
        if getattr(self.cls, "cache", None) is None:
            return False, (
                "the memcached client is not set up yet (CherryPy creates it on the process's "
                "first session request)"
            )
        return True, None

    def _get_multi(self, sids: List[str]) -> Dict[str, Any]:
        cache = self.cls.cache
        lock = getattr(self.cls, "mc_lock", None)
        out: Dict[str, Any] = {}
        for start in range(0, len(sids), MC_CHUNK):
            chunk = sids[start : start + MC_CHUNK]
            if lock is not None and not lock.acquire(timeout=MC_LOCK_WAIT):
                raise RuntimeError("memcached client lock busy for %.1f s" % MC_LOCK_WAIT)
            try:
                if hasattr(cache, "get_multi"):
                    found = cache.get_multi(chunk)
                else:
                    found = {sid: cache.get(sid) for sid in chunk}
            finally:
                if lock is not None:
                    lock.release()
            out.update((k, v) for k, v in dict(found or {}).items() if v is not None)
        return out

    def build(self, prev: Optional[Index]) -> Index:
        started = time.monotonic()
        seen = self.tracker.seen_session_ids()
        found = self._get_multi(seen)
        sids: List[str] = []
        exps: List[float] = []
        sizes: List[int] = []
        for sid in seen:
            value = found.get(sid)
            if not isinstance(value, tuple) or len(value) != 2:
                continue
            sids.append(sid)
            exps.append(epoch_of(value[1]))
            sizes.append(size_of(value[0]))
        reason = (
            "memcached cannot list its keys: only the %d session ids this agent saw in requests "
            "since it was installed (%d found in memcached)" % (len(seen), len(sids))
        )
        return Index(
            sids, exps, sizes, [None] * len(sids), time.time(), time.monotonic() - started, reason
        )

    def read_page(self, sids: List[str], positions: List[int]) -> Dict[str, Any]:
        found = self._get_multi(sids)
        out: Dict[str, Any] = {}
        for sid in sids:
            value = found.get(sid)
            data = value[0] if isinstance(value, tuple) and len(value) == 2 else None
            out[sid] = (data, {})
        return out


class CustomStore(Store):
    backend = "custom"

    def listable(self) -> Tuple[bool, Optional[str]]:
        if callable(getattr(self.cls, "cpinspect_sessions", None)):
            return True, None
        return False, (
            "%s cannot be listed: it defines no cpinspect_sessions() classmethod (see "
            "cpinspect.agent.probes.sessions for the one method to add)" % qualname(self.cls)
        )

    def build(self, prev: Optional[Index]) -> Index:
        started = time.monotonic()
        sids: List[str] = []
        exps: List[float] = []
        sizes: List[int] = []
        datas: List[Any] = []
        partial = None
        for n, item in enumerate(self.cls.cpinspect_sessions()):
            if n >= MAX_ENTRIES:
                partial = "the index holds the first %d sessions" % MAX_ENTRIES
                break
            try:
                sid, data, expiration = item
            except (TypeError, ValueError):
                continue
            sids.append(str(sid))
            exps.append(epoch_of(expiration))
            sizes.append(size_of(data))
            datas.append(data)
        return Index(
            sids,
            exps,
            sizes,
            [None] * len(sids),
            time.time(),
            time.monotonic() - started,
            partial,
            datas=datas,
        )

    def read_page(self, sids: List[str], positions: List[int]) -> Dict[str, Any]:
        idx = self.index
        out: Dict[str, Any] = {}
        for sid, pos in zip(sids, positions):
            data = idx.datas[pos] if idx is not None and idx.datas is not None else None
            out[sid] = (data, {})
        return out


def qualname(cls: Any) -> str:
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    return "%s.%s" % (module, name) if module else str(name)


# --- Which apps use sessions, and how --------------------------------------------------------


def session_apps() -> List[Dict[str, Any]]:
    """Mounted CherryPy apps with ``tools.sessions.on`` anywhere in their config."""
    import inspect

    import cherrypy

    prefix = "tools.sessions."
    glob = {
        str(k)[len(prefix) :]: v
        for k, v in list(dict(cherrypy.config).items())
        if str(k).startswith(prefix)
    }
    out = []
    for sn, app in sorted(cherrypy.tree.apps.items(), key=lambda kv: str(kv[0])):
        if not isinstance(app, cherrypy.Application):
            continue
        sections: List[Tuple[str, Dict[str, Any]]] = []
        try:
            root_conf = inspect.getattr_static(app.root, "_cp_config", None)
        except Exception:  # noqa: BLE001
            root_conf = None
        if isinstance(root_conf, dict):
            sections.append(("_cp_config /", dict(root_conf)))
        for path, section in sorted(
            dict(app.config).items(), key=lambda kv: (str(kv[0]) != "/", str(kv[0]))
        ):
            if isinstance(section, dict) and str(path).startswith("/"):
                sections.append((str(path), dict(section)))
        where = [p for p, s in sections if s.get(prefix + "on")]
        if glob.get("on"):
            where.insert(0, "global")
        if not where and app.root is not None:
            # Turned on only in a handler object's own _cp_config deeper in the tree (Salt's
            # rest_cherrypy: every LowDataAdapter subclass, with its storage_class there).
            deeper = tree_cp_configs(app)
            sections.extend(deeper)
            where = [p for p, s in deeper if s.get(prefix + "on")]
        if not where:
            continue
        # The effective settings: global, then the root's, then the first section turning
        # sessions on (sections deeper than that may differ; "where" names them all).
        first = next((p for p in where if p != "global"), None)
        conf = dict(glob)
        for path, section in sections:
            if path in ("/", "_cp_config /") or path == first:
                conf.update(
                    {k[len(prefix) :]: v for k, v in section.items() if k.startswith(prefix)}
                )
        out.append({"app": str(sn), "where": where, "conf": conf})
    return out


TREE_WALK_NODES = 2000
"""Objects the routes walk visits at most looking for ``_cp_config`` below an app's root."""

_TREE_CONFIGS: Dict[Tuple[int, int], Tuple[Any, List[Tuple[str, Dict[str, Any]]]]] = {}
"""``tree_cp_configs`` per mounted app (its id and its root's), with the root kept so the ids
stay its own: the tree's ``_cp_config`` are class and function attributes, read once."""


def tree_cp_configs(app: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """``("_cp_config /path", dict)`` for every object and handler function below ``app``'s
    root that carries a ``_cp_config`` dict: the routes walk's own (``walk_tree``: no property
    or ``__getattr__`` run), bounded by ``TREE_WALK_NODES``, once per mounted app."""
    from cherrypy import _cprequest

    from .routes import _Walk, method_dispatch_at, walk_tree

    root = app.root
    key = (id(app), id(root))
    kept = _TREE_CONFIGS.get(key)
    if kept is not None and kept[0] is root:
        return kept[1]
    walk = _Walk([TREE_WALK_NODES])
    walk_tree(root, walk, method_dispatch_at(app, _cprequest.Request.dispatch))
    found = [("_cp_config " + path, dict(cfg)) for path, cfg in walk.cp_configs if path != "/"]
    if len(_TREE_CONFIGS) >= 64:  # apps remounted again and again: start over
        _TREE_CONFIGS.clear()
    _TREE_CONFIGS[key] = (root, found)
    return found


def storage_class_of(conf: Dict[str, Any]) -> Any:
    from cherrypy.lib import sessions

    cls = conf.get("storage_class")
    if isinstance(cls, type):
        return cls
    kind = conf.get("storage_type")
    if isinstance(kind, str) and kind:
        found = getattr(sessions, kind.title() + "Session", None)
        if isinstance(found, type):
            return found
    return sessions.RamSession


def backend_of(cls: Any) -> str:
    from cherrypy.lib import sessions

    if callable(getattr(cls, "cpinspect_sessions", None)):
        return "custom"
    if issubclass(cls, sessions.RamSession):
        return "ram"
    if issubclass(cls, sessions.FileSession):
        return "file"
    if issubclass(cls, sessions.MemcachedSession):
        return "memcached"
    return "custom"


def _minutes(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def clean_thread_state(cls: Any) -> str:
    monitor = getattr(cls, "clean_thread", None)
    if monitor is None:
        return "not started"
    thread = getattr(monitor, "thread", None)
    if thread is not None and thread.is_alive():
        return "running"
    return "stopped"


def settings_of(cls: Any, conf: Dict[str, Any], backend: str) -> Dict[str, Any]:
    locking = conf.get("locking", "implicit")
    servers = None
    if backend == "memcached":
        raw = conf.get("servers", getattr(cls, "servers", None))
        servers = [str(s) for s in raw] if isinstance(raw, (list, tuple)) else None
    path = conf.get("storage_path")
    return {
        "timeout": _minutes(conf.get("timeout", 60)),
        "clean_freq": _minutes(conf.get("clean_freq", 5)),
        "clean_thread": clean_thread_state(cls),
        "storage_path": os.path.abspath(str(path)) if path else None,
        "path_exists": None,
        "path_writable": None,
        "locking": locking if locking in ("implicit", "early") else "explicit",
        "name": str(conf.get("name", "session_id")),
        "secure": bool(conf.get("secure", False)),
        "httponly": bool(conf.get("httponly", False)),
        "persistent": bool(conf.get("persistent", True)),
        "domain": str(conf["domain"]) if conf.get("domain") else None,
        "servers": servers,
    }


# --- The probe -------------------------------------------------------------------------------


class SessionsProbe:
    def __init__(self, tracker: RequestTracker) -> None:
        self.tracker = tracker
        self._key = os.urandom(32)
        self.key_id = hashlib.sha256(b"cpinspect-key-id:" + self._key).hexdigest()[:8]
        self._stores: Dict[Tuple[Any, Optional[str]], Store] = {}
        self._stores_lock = threading.Lock()

    def fp(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:12]

    def arm(self) -> None:
        """Start recording memcached session ids if an app uses memcached (install time too)."""
        try:
            classes = []
            for entry in session_apps():
                cls = storage_class_of(entry["conf"])
                if backend_of(cls) == "memcached":
                    classes.append(cls)
            if classes:
                self.tracker.record_session_ids(classes, SEEN_IDS_CAP)
        except Exception:  # noqa: BLE001 - never fail an install over it
            pass

    def _store(self, cls: Any, conf: Dict[str, Any], backend: str) -> Store:
        path = conf.get("storage_path") if backend == "file" else None
        key = (cls, os.path.abspath(str(path)) if path else None)
        with self._stores_lock:
            store = self._stores.get(key)
            if store is None:
                if backend == "ram":
                    store = RamStore(cls, conf)
                elif backend == "file":
                    conf = dict(conf)
                    conf["storage_path"] = key[1]
                    store = FileStore(cls, conf)
                elif backend == "memcached":
                    store = MemcachedStore(cls, conf, self.tracker)
                else:
                    store = CustomStore(cls, conf)
                self._stores[key] = store
        return store

    def snapshot(self, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        try:
            params = parse_query(query)
        except BadQuery as exc:
            return exc.status, {"error": {"status": exc.status, "message": exc.message}}
        errors: List[str] = []
        now = time.time()
        try:
            apps = session_apps()
        except Exception as exc:  # noqa: BLE001
            apps = []
            errors.append("app detection: %s: %s" % (type(exc).__name__, exc))
        if params["app"] is not None:
            apps = [a for a in apps if a["app"] == params["app"]]
            if not apps:
                message = "no mounted app %r uses sessions" % params["app"][:200]
                return 404, {"error": {"status": 404, "message": message}}
        try:
            # No app with sessions: no lock to look for (skips a walk over every thread's frames).
            locks = LockTable(self, apps, now) if apps else LockTable.empty()
        except Exception as exc:  # noqa: BLE001
            locks = LockTable.empty()
            errors.append("lock table: %s: %s" % (type(exc).__name__, exc))
        out_apps = []
        timeouts = []
        for entry in apps:
            try:
                app_out, timed_out = self._app(entry, params, locks, now)
            except Exception as exc:  # noqa: BLE001
                errors.append("app %r: %s: %s" % (entry["app"] or "/", type(exc).__name__, exc))
                continue
            out_apps.append(app_out)
            if timed_out:
                timeouts.append(app_out["error"])
        if out_apps and len(timeouts) == len(out_apps):
            return 504, {"error": {"status": 504, "message": scrub("; ".join(timeouts))}}
        for app_out in out_apps:
            if app_out["error"]:
                app_out["error"] = scrub(app_out["error"])
        return 200, {
            "taken_at": now,
            "key_id": self.key_id,
            "errors": [scrub(e) for e in errors],
            "request_durations": self.tracker.duration_stats(),
            "apps": out_apps,
        }

    def _app(
        self, entry: Dict[str, Any], params: Dict[str, Any], locks: "LockTable", now: float
    ) -> Tuple[Dict[str, Any], bool]:
        conf = entry["conf"]
        cls = storage_class_of(conf)
        backend = backend_of(cls)
        if backend == "memcached":
            self.tracker.record_session_ids([cls], SEEN_IDS_CAP)
        store = self._store(cls, conf, backend)
        settings = settings_of(cls, conf, backend)
        listable, why_not = store.listable()
        out: Dict[str, Any] = {
            "app": entry["app"],
            "where": entry["where"],
            "backend": backend,
            "storage_class": qualname(cls),
            "settings": settings,
            "listable": listable,
            "not_listable": why_not,
            "partial": False,
            "partial_reason": None,
            "count": None,
            "expired": None,
            "summary": {
                "expiring_soon": 0,
                "locked": locks.locked_count(cls),
                "waiters": locks.waiter_count(cls),
                "sizes": None,
                "largest": [],
                "as_of": now,
                "stale_locks": None,
                "orphan_locks": None,
            },
            "page": {
                "offset": params["offset"],
                "limit": params["limit"],
                "sort": params["sort"],
                "total": 0,
            },
            "sessions": [],
            "error": None,
        }
        # Every session locked or waited on now, whatever the page: a held lock is the thing to
        # see during an incident, and it must not hide on page 2 of an expiry order.
        held = [
            self._session(sid, None, None, store, locks, now, False, {}, [])
            for sid in locks.held_sids(cls)[:LOCKS_LISTED]
        ]
        out["locks"] = [{"fp": s["fp"], "lock": s["lock"]} for s in held]
        if not listable:
            out["sessions"] = held[: params["limit"]]
            return out, False
        idx, error, timed_out = store.current_index(IO_TIMEOUT)
        if idx is None:
            out["error"] = error
            return out, timed_out
        if error:
            out["error"] = error
        if not store.index_lock.acquire(timeout=IO_TIMEOUT):
            # An update is changing the index in place (a compaction after a clean-up: pure
            # CPU, a fraction of a second at 100,000; longer only on a starved machine).
            out["error"] = (
                "the index is being updated in place after deletions (for over %.1f s): "
                "ask again" % IO_TIMEOUT
            )
            return out, False
        try:
            # The index served now (an update may have compacted or replaced it since):
            # what the answer takes from it is copied out before the lock is let go.
            idx = store.index or idx
            if backend == "file":
                settings["path_exists"] = idx.path_exists
                settings["path_writable"] = idx.path_writable
            if idx.errors and out["error"] is None:
                out["error"] = "; ".join(idx.errors)
            n = len(idx)
            expired = idx.count_before(now)
            soon = idx.count_before(now + EXPIRING_SOON) - expired
            out["count"] = n
            out["expired"] = expired
            out["partial"] = idx.partial_reason is not None
            out["partial_reason"] = idx.partial_reason
            summary = out["summary"]
            summary["expiring_soon"] = soon
            summary["sizes"] = idx.sizes_summary
            summary["largest"] = [
                {"fp": self.fp(idx.sids[p]), "size": idx.sizes[p]}
                for p in list(idx.order_size[:3])
                if idx.sizes[p] >= 0
            ]
            summary["as_of"] = idx.as_of
            summary["stale_locks"] = idx.stale_locks
            summary["orphan_locks"] = idx.orphan_locks
            out["page"]["total"] = n
            positions = self._page_positions(idx, params, locks, cls)
            reveal_pos = None
            if params["reveal"] is not None:
                reveal_pos = self._find(idx, params["reveal"], positions)
                if reveal_pos is not None and reveal_pos not in positions:
                    positions.append(reveal_pos)
            sids = [idx.sids[p] for p in positions]
            revealed_sid = idx.sids[reveal_pos] if reveal_pos is not None else None
            values = [(idx.exp_of(p), idx.sizes[p]) for p in positions]
        finally:
            store.index_lock.release()

        def read_and_describe() -> Dict[str, Any]:
            raw = store.read_page(sids, positions)
            return {
                sid: (describe_keys(data, sid == revealed_sid), extra)
                for sid, (data, extra) in raw.items()
            }

        done, page, read_error = store.run_reader(read_and_describe)
        if not done:
            page = {}
            out["error"] = (
                read_error
                or "reading this page's sessions did not finish within %.1f s" % (IO_TIMEOUT)
            )
        elif read_error is not None:
            page = {}
            out["error"] = "reading this page: %s" % read_error
        sessions = []
        for pos, sid, (exp, size) in zip(positions, sids, values):
            keys, extra = (page or {}).get(sid, ([], {}))
            sessions.append(
                self._session(
                    sid,
                    None if exp == float("inf") else exp,
                    size if size >= 0 else None,
                    store,
                    locks,
                    now,
                    pos == reveal_pos,
                    extra,
                    keys,
                )
            )
        out["sessions"] = sessions
        return out, False

    def _page_positions(
        self, idx: Index, params: Dict[str, Any], locks: "LockTable", cls: Any
    ) -> List[int]:
        offset, limit, sort = params["offset"], params["limit"], params["sort"]
        n = len(idx)
        if sort == "expiry":
            return list(idx.order_exp[offset : offset + limit])
        if sort == "-expiry":
            lo = max(0, n - offset - limit)
            hi = max(0, n - offset)
            return list(reversed(idx.order_exp[lo:hi]))
        if sort == "size":
            return list(idx.order_size[offset : offset + limit])
        # lock: held first (most waiters first), then the rest by expiry.
        held = locks.held_sids(cls)
        where: Dict[str, int] = {}
        if held:
            wanted = set(held)
            for pos, sid in enumerate(idx.sids):
                if sid in wanted:
                    where[sid] = pos
                    if len(where) == len(wanted):
                        break
        first = [where[s] for s in held if s in where]
        if offset + limit <= len(first):
            return first[offset : offset + limit]
        taken = set(first)
        rest_needed = offset + limit - len(first)
        rest: List[int] = []
        for pos in idx.order_exp:
            if pos in taken:
                continue
            rest.append(pos)
            if len(rest) >= rest_needed:
                break
        return (first + rest)[offset : offset + limit]

    def _find(self, idx: Index, fp: str, page: List[int]) -> Optional[int]:
        """The position of the session whose fingerprint is ``fp``, or begins with it (the
        8 digits the texts show); None when none does, or a prefix names more than one."""
        if len(fp) < 12:
            found = [pos for pos, sid in enumerate(idx.sids) if self.fp(sid).startswith(fp)]
            return found[0] if len(found) == 1 else None
        for pos in page:
            if hmac.compare_digest(self.fp(idx.sids[pos]), fp):
                return pos
        for pos, sid in enumerate(idx.sids):
            if hmac.compare_digest(self.fp(sid), fp):
                return pos
        return None

    def _session(
        self,
        sid: str,
        exp: Optional[float],
        size: Optional[int],
        store: Store,
        locks: "LockTable",
        now: float,
        revealed: bool,
        extra: Dict[str, Any],
        keys: List[Dict[str, Any]],
    ) -> Dict[str, Any]:
        return {
            "fp": self.fp(sid),
            "expires_at": exp,
            "time_left": (exp - now) if exp is not None else None,
            "size": size,
            "keys": keys,
            "revealed": revealed,
            "lock": locks.lock_entry(store, sid, extra.get("file")),
        }


def describe_keys(data: Any, revealed: bool) -> List[Dict[str, Any]]:
    """Key names, value types and pickled sizes; values (bounded reprs) only when revealed.
    Runs on the store's reader thread: pickle and repr may run the app's code."""
    if not isinstance(data, dict):
        return []
    try:
        items = list(data.items())[:MAX_KEYS]
    except Exception:  # noqa: BLE001
        return []
    keys = []
    for k, v in items:
        entry: Dict[str, Any] = {
            "key": k if isinstance(k, str) else short_repr(k, MAX_KEY_REPR),
            "type": type(v).__name__,
            "size": _value_size(v),
        }
        if revealed:
            entry["value"] = short_repr(v, MAX_VALUE_REPR)
        keys.append(entry)
    return keys


def _value_size(value: Any) -> Optional[int]:
    try:
        return len(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        return None


# --- Who holds and who waits -----------------------------------------------------------------


class LockTable:
    """Lock holders and waiters of every session, found from the threads (not the locks)."""

    def __init__(self, probe: SessionsProbe, apps: List[Dict[str, Any]], now: float) -> None:
        self.now = now
        # (storage class, sid) -> holder dict / waiter dicts
        self.holders: Dict[Tuple[Any, str], Dict[str, Any]] = {}
        self.waiters: Dict[Tuple[Any, str], List[Dict[str, Any]]] = {}
        if probe is None:
            return
        frames = sys._current_frames()
        try:
            self._fill(probe, apps, frames, now)
        finally:
            del frames

    @classmethod
    def empty(cls) -> "LockTable":
        return cls(None, [], time.time())  # type: ignore[arg-type]

    def _fill(
        self, probe: SessionsProbe, apps: List[Dict[str, Any]], frames: Dict[int, Any], now: float
    ) -> None:
        names = {t.ident: t.name for t in list(threading.enumerate()) if t.ident is not None}
        peers: Dict[int, str] = {}
        try:
            for adapter in running_servers():
                pool = pool_of(adapter)
                if pool is None:
                    continue
                for w in list(pool._threads):
                    conn = getattr(w, "conn", None)
                    if w.ident is not None and conn is not None:
                        peers[w.ident] = _peer(conn)
        except Exception:  # noqa: BLE001
            pass
        by_app = {}
        for entry in apps:
            cls = storage_class_of(entry["conf"])
            by_app[entry["app"]] = (cls, entry["conf"])
        tracker = probe.tracker

        def request_of(ident: int, frame: Any) -> Tuple[Any, Any, str]:
            tracked = tracker.get(ident)
            if tracked is not None:
                return tracked[0], tracked[1], "hook"
            req, resp = find_cherrypy_request(frame)
            return req, resp, "frame"

        def req_dict(ident: int, req: Any, resp: Any, source: str) -> Optional[Dict[str, Any]]:
            if req is None:
                return None
            try:
                return describe_request(req, resp, peers.get(ident, ""), source)
            except Exception:  # noqa: BLE001
                return None

        cleaners = set()
        for cls, _conf in by_app.values():
            ident = _clean_thread_ident(cls)
            if ident is not None:
                cleaners.add(ident)
        waiting = set()
        for ident, frame in list(frames.items()):
            found = _waiting_in_acquire(frame)
            if found is None:
                continue
            cls, sid = found
            waiting.add(ident)
            req, resp, source = request_of(ident, frame)
            rd = req_dict(ident, req, resp, source)
            started = rd.get("started_at") if rd else None
            waiter = {
                "ident": ident,
                "name": names.get(ident),
                "request": rd,
                "waiting_for": max(0.0, now - started) if started else None,
            }
            if rd is None and ident in cleaners:
                waiter["clean_up"] = True
            self.waiters.setdefault((cls, sid), []).append(waiter)
        for ident, frame in list(frames.items()):
            if ident in waiting:
                continue
            req, resp, source = request_of(ident, frame)
            if req is None:
                continue
            app = getattr(req, "app", None)
            script = getattr(app, "script_name", None)
            if script not in by_app:
                continue
            cls, conf = by_app[script]
            held_sid = _session_id_of(req, resp, str(conf.get("name", "session_id")))
            if not held_sid:
                continue
            backend = backend_of(cls)
            owner = None
            if backend in ("ram", "memcached"):
                owner = lock_owner(getattr(cls, "locks", {}).get(held_sid))
                if owner != ident:
                    continue
            else:
                locking = conf.get("locking", "implicit")
                stages = _HOLDING_STAGES.get(locking if isinstance(locking, str) else "", ())
                if getattr(req, "stage", None) not in stages:
                    continue
            rd = req_dict(ident, req, resp, source)
            started = rd.get("started_at") if rd else None
            self.holders[(cls, held_sid)] = {
                "ident": ident,
                "name": names.get(ident),
                "request": rd,
                "held_for": max(0.0, now - started) if started else None,
                "held_for_basis": "since its request started (the lock is taken at "
                "before_handler, after the body is read)",
            }

    def held_sids(self, cls: Any) -> List[str]:
        """Sessions held or waited on, most waiters first."""
        sids = {s for c, s in self.holders if c is cls} | {s for c, s in self.waiters if c is cls}
        return sorted(sids, key=lambda s: (-len(self.waiters.get((cls, s), [])), s))

    def locked_count(self, cls: Any) -> int:
        return len(self.held_sids(cls))

    def waiter_count(self, cls: Any) -> int:
        return sum(len(v) for (c, _s), v in self.waiters.items() if c is cls)

    def lock_entry(
        self, store: Store, sid: str, file_info: Optional[Dict[str, Any]]
    ) -> Dict[str, Any]:
        cls = store.cls
        waiters = list(self.waiters.get((cls, sid), []))
        holder = self.holders.get((cls, sid))
        state = "free"
        if store.backend == "file":
            held = file_info.get("held") if file_info else None
            if holder is not None or waiters or held:
                state = "held"
            elif held is None:
                state = "unknown"
            if holder is not None and file_info and file_info.get("age") is not None:
                holder = dict(holder)
                holder["held_for"] = file_info["age"]
                holder["held_for_basis"] = "since the .lock file was written (at acquire)"
            file_out = (
                {
                    "age": file_info.get("age"),
                    "pid": file_info.get("pid"),
                    "stale": bool(file_info.get("stale")),
                }
                if file_info
                else None
            )
        else:
            file_out = None
            lock = store.lock_of(sid)
            owner = lock_owner(lock)
            if owner:
                state = "held"
                if holder is None:
                    holder = {
                        "ident": owner,
                        "name": _thread_name(owner),
                        "request": None,
                        "held_for": None,
                        "held_for_basis": "the holder is not a tracked request",
                    }
            elif waiters or holder is not None:
                state = "held"
            elif lock is None and not isinstance(getattr(cls, "locks", None), dict):
                state = "unknown"
        return {"state": state, "holder": holder, "file": file_out, "waiters": waiters}


def lock_owner(lock: Any) -> Optional[int]:
    """The ident holding an RLock, from its repr (never acquired); None when free or unknown."""
    if lock is None:
        return None
    try:
        text = repr(lock)
    except Exception:  # noqa: BLE001
        return None
    if not text.startswith("<locked"):
        return None
    m = _OWNER.search(text)
    if m is None:
        return None
    owner = int(m.group(1))
    return owner or None


def _thread_name(ident: int) -> Optional[str]:
    for t in list(threading.enumerate()):
        if t.ident == ident:
            return t.name
    return None


def _clean_thread_ident(cls: Any) -> Optional[int]:
    """The ident of a storage class's clean-up thread (CherryPy's ``Monitor`` keeps its
    ``BackgroundTask`` as ``thread``), or None."""
    try:
        thread = getattr(getattr(cls, "clean_thread", None), "thread", None)
        ident = getattr(thread, "ident", None)
    except Exception:  # noqa: BLE001
        return None
    return ident if isinstance(ident, int) else None


def _waiting_in_acquire(frame: Any) -> Optional[Tuple[Any, str]]:
    """(storage class, session id) when this stack waits in ``Session.acquire_lock``."""
    f = frame
    depth = 0
    while f is not None and depth < 6:
        code = f.f_code
        if code.co_name == "acquire_lock" and code.co_filename.endswith(_SESSIONS_FILE):
            local = f.f_locals
            sess = local.get("self")
            if sess is None:
                return None
            cls = type(sess)
            path = local.get("path")
            sid = None
            if isinstance(path, str) and path.endswith(str(getattr(cls, "LOCK_SUFFIX", ".lock"))):
                base = os.path.basename(path)[: -len(getattr(cls, "LOCK_SUFFIX", ".lock"))]
                prefix = str(getattr(cls, "SESSION_PREFIX", "session-"))
                sid = base[len(prefix) :] if base.startswith(prefix) else None
            if sid is None:
                sid = getattr(sess, "__dict__", {}).get("_id")
            if not isinstance(sid, str):
                return None
            return cls, sid
        f = f.f_back
        depth += 1
    return None


def _session_id_of(req: Any, resp: Any, name: str) -> Optional[str]:
    """The session id of a request: the response cookie (set once the session exists, also
    for a new one) else the request's."""
    for holder in (resp, req):
        try:
            cookie = getattr(holder, "cookie", None)
            if cookie is not None and name in cookie:
                value = cookie[name].value
                if isinstance(value, str) and value:
                    return value
        except Exception:  # noqa: BLE001
            continue
    return None
