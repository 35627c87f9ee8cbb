"""Redaction applied by the agent before anything leaves the process (invariant 3)."""

import re
from typing import Optional

SENSITIVE = re.compile(
    r"(pass|pwd|token|secret|key|auth|session|sid|cookie|csrf|credential|signature|sig$|otp|pin$)",
    re.IGNORECASE,
)
REDACTED = "***"
MAX_QUERY = 2048


def is_sensitive(name: str) -> bool:
    return bool(SENSITIVE.search(name))


def redact_query(query: Optional[str]) -> str:
    """Replace the values of sensitive parameters, keeping names and order: ``a=1&token=***``."""
    if not query:
        return ""
    if len(query) > MAX_QUERY:
        query = query[:MAX_QUERY]
    out = []
    for part in query.split("&"):
        name, sep, _value = part.partition("=")
        if sep and is_sensitive(_unquote_name(name)):
            out.append(name + "=" + REDACTED)
        elif not sep and is_sensitive(_unquote_name(name)):
            out.append(name)
        else:
            out.append(part)
    return "&".join(out)


def redact_target(target: str) -> str:
    """A request target with its query's sensitive values replaced: ``/a?year=1&token=***``."""
    path, sep, query = target.partition("?")
    return path + sep + redact_query(query) if sep else path


_QUERY_IN_TEXT = re.compile(r'\?([^\s"?#]+)')


def redact_text_queries(text: str) -> str:
    """Every ``?query`` inside free text — an access line's request line and its Referer, an
    error message quoting a URL — with its sensitive values replaced. Log records are text the
    app formatted itself, so the query redaction of the request fields must reach them too."""
    if "?" not in text:
        return text
    return _QUERY_IN_TEXT.sub(lambda m: "?" + redact_query(m.group(1)), text)


def _unquote_name(name: str) -> str:
    if "%" not in name and "+" not in name:
        return name  # nothing to unquote: the common case, on every logged request
    from urllib.parse import unquote_plus

    return unquote_plus(name)
