"""JSON answers assembled from pieces encoded earlier: standard library only, Python 3.8.

A ``/v1/threads`` answer is mostly entries that did not change since the last answer; encoding
them again costs the target most of a full answer's CPU (about 30 ms at 1,000 threads, all of it
holding the GIL). ``JsonArray`` is a list (in-process readers see plain dicts) that may carry,
per item, that item's JSON text made earlier; ``encode`` splices those texts in.
"""

import json
from typing import Any, Dict, List, Optional, Sequence, Union

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
_encode = _ENCODER.encode

Text = Union[str, Sequence[str]]
"""An item's JSON text: one string, or pieces that make it when joined in order."""


def dumps(value: Any) -> str:
    """The one encoding of every answer: compact, ASCII, anything unknown as ``str()``.

    What ``json.dumps(value, separators=(",", ":"), default=str)`` gives, with one encoder
    made once instead of per call.
    """
    return _encode(value)


class JsonArray(list):  # type: ignore[type-arg]
    """A list whose items may come with their JSON text already made (``texts``, aligned)."""

    __slots__ = ("texts",)

    def __init__(self) -> None:
        super().__init__()
        self.texts: List[Optional[Text]] = []

    def add(self, item: Any, text: Optional[Text] = None) -> None:
        """``text``, when given, must be exactly what ``dumps(item)`` means (order aside):
        a string, or a tuple or list of strings whose concatenation is that."""
        self.append(item)
        self.texts.append(text)


def encode(body: Dict[str, Any]) -> str:
    """``dumps(body)``, with the pre-encoded items of its top-level ``JsonArray`` values reused.

    The arrays' keys come last in the text (JSON objects are unordered).
    """
    return "".join(encode_parts(body))


def encode_parts(body: Dict[str, Any]) -> List[str]:
    """The pieces of ``encode(body)``, in order: joined, they are its text.

    For a writer that makes bytes: encoding each piece and joining the bytes once copies an
    answer of megabytes once instead of twice (a fresh large block costs a page fault per
    4 KiB on its first write: most of what encoding a full answer costs).
    """
    arrays = [(k, v) for k, v in body.items() if type(v) is JsonArray]
    if not arrays:
        return [dumps(body)]
    plain = {k: v for k, v in body.items() if type(v) is not JsonArray}
    parts = [dumps(plain)[:-1]]
    append = parts.append
    extend = parts.extend
    sep = "," if plain else ""
    for key, array in arrays:
        texts = array.texts
        if len(texts) != len(array):  # appended to as a plain list: trust no text
            texts = [None] * len(array)
        append("%s%s:[" % (sep, dumps(str(key))))
        comma = ""
        for item, text in zip(array, texts):
            if comma:
                append(comma)
            comma = ","
            if text is None:
                append(dumps(item))
            elif type(text) is str:
                append(text)
            else:
                extend(text)
        append("]")
        sep = ","
    append("}")
    return parts
