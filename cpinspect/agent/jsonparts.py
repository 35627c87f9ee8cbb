"""JSON answers assembled from pieces encoded earlier: standard library only, Python 3.8.

A ``/v1/threads`` answer is mostly entries that did not change since the last answer; encoding
them again costs the target most of a full answer's CPU (about 30 ms at 1,000 threads, all of it
holding the GIL). ``JsonArray`` is a list (in-process readers see plain dicts) that may carry,
per item, that item's JSON text made earlier; ``encode`` splices those texts in.
"""

import json
from typing import Any, Dict, List, Optional


def dumps(value: Any) -> str:
    """The one encoding of every answer: compact, ASCII, anything unknown as ``str()``."""
    return json.dumps(value, separators=(",", ":"), default=str)


class JsonArray(list):  # type: ignore[type-arg]
    """A list whose items may come with their JSON text already made (``texts``, aligned)."""

    __slots__ = ("texts",)

    def __init__(self) -> None:
        super().__init__()
        self.texts: List[Optional[str]] = []

    def add(self, item: Any, text: Optional[str] = None) -> None:
        """``text``, when given, must be exactly what ``dumps(item)`` means (order aside)."""
        self.append(item)
        self.texts.append(text)


def encode(body: Dict[str, Any]) -> str:
    """``dumps(body)``, with the pre-encoded items of its top-level ``JsonArray`` values reused.

    The arrays' keys come last in the text (JSON objects are unordered).
    """
    arrays = [(k, v) for k, v in body.items() if type(v) is JsonArray]
    if not arrays:
        return dumps(body)
    plain = {k: v for k, v in body.items() if type(v) is not JsonArray}
    parts = [dumps(plain)[:-1]]
    sep = "," if plain else ""
    for key, array in arrays:
        texts = array.texts
        if len(texts) != len(array):  # appended to as a plain list: trust no text
            texts = [None] * len(array)
        items = [t if t is not None else dumps(item) for item, t in zip(array, texts)]
        parts.append("%s%s:[%s]" % (sep, dumps(str(key)), ",".join(items)))
        sep = ","
    parts.append("}")
    return "".join(parts)
