"""Class-level request hooks: which request each worker thread holds, and since when.

``_cprequest.Request.hooks`` is a class-level HookMap that every request copies at the start of
``_do_respond``, so attaching here takes effect from the next request, for every app, with no
config (cherrypy-internals.md 1.7 B). The hooks cost ~1.6 us per request and never raise: an
exception in a hook would turn the user's request into a 500.

``on_start_resource`` runs after dispatch; requests that fail before it still run the failsafe
``on_end_request``, so the table never leaks. Requests already in flight when the agent arrives
(or stuck before ``on_start_resource``) are found by the frame walk in ``probes.threads``.
"""

import time as _time_module
from collections import OrderedDict, deque
from threading import get_ident
from typing import Any, Deque, Dict, Iterable, List, Optional, Set, Tuple

START_POINT = "on_start_resource"
END_POINT = "on_end_request"
DURATIONS_KEPT = 1000
"""Completed requests whose durations ``duration_stats`` summarises (a ring)."""
ENDS_KEPT = 1024
"""Completed requests whose end the log's access records are given (``ended``; the log capture
keeps the ends it has read for as long as its ring holds their records)."""


class RequestTracker:
    """``{thread ident: (request, response)}`` for requests in flight, plus a served count."""

    def __init__(self) -> None:
        self.inflight: Dict[int, Tuple[Any, Any]] = {}
        # Each worker writes only its own key, so no lock is needed; the reader sums a copy.
        self._served: Dict[int, int] = {}
        self._attached: List[Tuple[str, Any]] = []
        self._serving: Any = None
        # Durations (s) of the last completed requests; deque.append is atomic, maxlen bounds it.
        self.durations: Deque[float] = deque(maxlen=DURATIONS_KEPT)
        # (thread ident, response.time, end) of the last completed requests: CherryPy logs the
        # access line before the WSGI server sends the body (a served file, a stream), so the
        # log's duration is taken from here, at on_end_request, when the body has gone.
        self.ended: Deque[Tuple[int, float, float]] = deque(maxlen=ENDS_KEPT)
        # Session ids of requests served by these storage classes (memcached, which cannot list
        # its keys): most recent last, at most _seen_cap. Empty tuple = not recording (no cost).
        self._sid_classes: Tuple[Any, ...] = ()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_cap = 0
        self._clock = _time_module.time

    # Hook bodies: run in the app's worker threads, on every request. Keep them tiny: every
    # name they need is bound once in attach(), nothing is imported or looked up globally.

    def _on_start(self) -> None:
        try:
            serving = self._serving
            self.inflight[get_ident()] = (serving.request, serving.response)
        except Exception:  # noqa: BLE001 - never fail the user's request
            pass

    def _on_end(self) -> None:
        try:
            ident = get_ident()
            entry = self.inflight.pop(ident, None)
            if entry is not None:
                served = self._served
                served[ident] = served.get(ident, 0) + 1
                started = entry[1].time
                if started:
                    now = self._clock()
                    self.durations.append(now - started)
                    self.ended.append((ident, started, now))
            if self._sid_classes:
                self._note_session()
        except Exception:  # noqa: BLE001
            pass

    def _note_session(self) -> None:
        sess = getattr(self._serving, "session", None)
        if sess is not None and type(sess) in self._sid_classes:
            sid = sess._id
            if sid:
                seen = self._seen
                seen[sid] = None
                seen.move_to_end(sid)
                if len(seen) > self._seen_cap:
                    seen.popitem(last=False)

    # Installation.

    def attach(self) -> None:
        import cherrypy
        from cherrypy import _cprequest

        if self._attached:
            return
        self._serving = cherrypy.serving
        hooks = _cprequest.Request.hooks
        hooks.attach(START_POINT, self._on_start, priority=0)
        hooks.attach(END_POINT, self._on_end, failsafe=True, priority=100)
        self._attached = [(START_POINT, self._on_start), (END_POINT, self._on_end)]

    def detach(self) -> None:
        from cherrypy import _cprequest

        hooks = _cprequest.Request.hooks
        for point, callback in self._attached:
            # Rebind a new list rather than mutating the one a request may be copying.
            current = hooks.get(point, [])
            hooks[point] = [h for h in current if h.callback != callback]
        self._attached = []
        self.inflight.clear()

    @property
    def attached(self) -> bool:
        return bool(self._attached)

    def sending(self) -> Set[Tuple[int, float]]:
        """``(thread ident, response.time)`` of the requests in flight now."""
        out = set()
        for ident, entry in list(self.inflight.items()):
            started = getattr(entry[1], "time", None)
            if isinstance(started, float):
                out.add((ident, started))
        return out

    def requests_served(self) -> int:
        return sum(list(self._served.values()))

    def get(self, ident: int) -> Optional[Tuple[Any, Any]]:
        return self.inflight.get(ident)

    def duration_stats(self) -> Optional[Dict[str, Any]]:
        values = sorted(self.durations)
        if not values:
            return None
        n = len(values)
        return {
            "count": n,
            "p50": values[n // 2],
            "p95": values[min(n - 1, (n * 95) // 100)],
            "max": values[-1],
        }

    def record_session_ids(self, classes: Iterable[Any], cap: int) -> None:
        """Remember the session ids of requests whose session is one of ``classes``."""
        merged = tuple(set(self._sid_classes) | set(classes))
        self._seen_cap = cap
        if merged != self._sid_classes:
            self._sid_classes = merged  # rebound, never mutated: hooks read it unlocked

    def seen_session_ids(self) -> List[str]:
        """Most recent first. The raw ids never leave the process."""
        for _ in range(3):
            try:
                return list(reversed(list(self._seen)))
            except RuntimeError:  # mutated while copying: try again
                continue
        return []
