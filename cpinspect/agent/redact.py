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


_SECRET_HEADERS = ("cookie", "set-cookie", "authorization", "proxy-authorization")
_HEADER_LINE = re.compile(r"^([ \t]*)([A-Za-z][A-Za-z0-9_-]*)([ \t]*:[ \t]*)(\S.*?)[ \t]*$", re.M)
_HEADER_HINT = re.compile(r"cookie|authoriz|x-", re.IGNORECASE)


def is_secret_header(name: str) -> bool:
    """Cookie, Set-Cookie, (Proxy-)Authorization, and ``X-`` headers with a secret-looking name
    (``X-Api-Key``, ``X-Auth-Token``); ``X-Forwarded-For`` is not one."""
    lower = name.lower()
    return lower in _SECRET_HEADERS or (lower.startswith("x-") and is_sensitive(lower[2:]))


def redact_text_headers(text: str) -> str:
    """Lines of free text shaped like a request header (``  COOKIE: session_id=...``, what
    CherryPy's ``tools.log_headers`` writes to the error log after a 500) with the value of a
    secret header replaced: ``  COOKIE: ***``. Other lines, ``KeyError: 'x'`` among them, stay."""
    if ":" not in text or _HEADER_HINT.search(text) is None:
        return text

    def one(m: "re.Match[str]") -> str:
        if not is_secret_header(m.group(2)):
            return m.group(0)
        return m.group(1) + m.group(2) + m.group(3) + REDACTED

    return _HEADER_LINE.sub(one, text)


def redact_log_text(text: str) -> str:
    """A log record's message or traceback as it may leave the process: the sensitive values of
    every query in it and of every secret header line replaced (the ring and the log files'
    reader both call this, so a record read from either has the same text)."""
    return redact_text_headers(redact_text_queries(text))


def _unquote_name(name: str) -> str:
    if "%" not in name and "+" not in name:
        return name  # nothing to unquote: the common case, on every logged request
    from urllib.parse import unquote_plus

    return unquote_plus(name)
