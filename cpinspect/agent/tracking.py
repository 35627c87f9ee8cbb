"""Class-level request hooks: which request each worker thread holds, and since when.

``_cprequest.Request.hooks`` is a class-level HookMap that every request copies at the start of
``_do_respond``, so attaching here takes effect from the next request, for every app, with no
config (cherrypy-internals.md 1.7 B). The hooks cost ~1.6 us per request and never raise: an
exception in a hook would turn the user's request into a 500.

``on_start_resource`` runs after dispatch; requests that fail before it still run the failsafe
``on_end_request``, so the table never leaks. Requests already in flight when the agent arrives
(or stuck before ``on_start_resource``) are found by the frame walk in ``probes.threads``.
"""

from threading import get_ident
from typing import Any, Dict, List, Optional, Tuple

START_POINT = "on_start_resource"
END_POINT = "on_end_request"


class RequestTracker:
    """``{thread ident: (request, response)}`` for requests in flight, plus a served count."""

    def __init__(self) -> None:
        self.inflight: Dict[int, Tuple[Any, Any]] = {}
        # Each worker writes only its own key, so no lock is needed; the reader sums a copy.
        self._served: Dict[int, int] = {}
        self._attached: List[Tuple[str, Any]] = []
        self._serving: Any = None

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
            if self.inflight.pop(ident, None) is not None:
                served = self._served
                served[ident] = served.get(ident, 0) + 1
        except Exception:  # noqa: BLE001
            pass

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

    def requests_served(self) -> int:
        return sum(list(self._served.values()))

    def get(self, ident: int) -> Optional[Tuple[Any, Any]]:
        return self.inflight.get(ident)
