"""What the finding families share: short words for threads, frames, requests and times."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from cpinspect.model import Evidence, Frame, Phase, RequestInfo, ThreadInfo


def short_file(filename: str) -> str:
    """The file's base name (``/srv/app/db.py`` -> ``db.py``)."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


_WORDS: Dict[Tuple[str, int, str], str] = {}
"""``frame_words`` by location and name (a thousand workers share a few frames)."""


def frame_words(frame: Optional[Frame]) -> str:
    """``db.py:80 fetch_all``; ``""`` for no frame."""
    if frame is None:
        return ""
    key = (frame.filename, frame.lineno, frame.display_name)
    words = _WORDS.get(key)
    if words is None:
        if len(_WORDS) > 10_000:
            _WORDS.clear()
        words = _WORDS[key] = "%s:%d %s" % (short_file(key[0]), key[1], key[2])
    return words


def request_words(request: Optional[RequestInfo]) -> str:
    """``GET /reports/export`` (the path, not the query: it may be long)."""
    if request is None:
        return "(no request yet)"
    return "%s %s" % (request.method, request.path)


def seconds(value: float) -> str:
    """``48.2 s``, ``350 ms``."""
    if value >= 100:
        return "%.0f s" % value
    return "%.1f s" % value if value >= 0.1 else "%.0f ms" % (value * 1000)


def plural(n: int, word: str, many: str = "") -> str:
    return "%d %s" % (n, word if n == 1 else (many or word + "s"))


def thread_evidence(
    thread: ThreadInfo, frame: Optional[Frame] = None, request: Optional[RequestInfo] = None
) -> Evidence:
    """``CP Server Thread-7  GET /reports/export  48.2 s  db.py:80 fetch_all``; ``request``
    stands in for the thread's own when the source could not read it (the last one known)."""
    parts = [thread.name or "thread %d" % thread.ident]
    request = thread.request or request
    if request is not None:
        parts.append(request.method + " " + request.target)
    elif thread.phase is Phase.READING:
        parts.append("(reading a request)")
    elif thread.busy:
        parts.append("(request unknown)")
    if thread.elapsed is not None:
        bound = request is not None and request.started_before
        parts.append(("≥" if bound else "") + seconds(thread.elapsed))
    where = frame_words(frame if frame is not None else thread.top_app_frame or _first(thread))
    if where:
        parts.append(where)
    return Evidence("thread", str(thread.ident), "  ".join(parts))


def _first(thread: ThreadInfo) -> Optional[Frame]:
    return thread.stack[0] if thread.stack else None
