"""Findings from the target's configuration, routes and records: the Autoreloader on in
production, errors that go nowhere, static files (missing, unreadable, relative without a root,
served with the wrong MIME type), a forgotten ``@cherrypy.expose``, and the session stores
(``analysis.session_findings``)."""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cpinspect import analysis
from cpinspect.findings.common import plural
from cpinspect.model import (
    AppRoutes,
    Evidence,
    Finding,
    FindingSeverity,
    LogOrigin,
    LogRecord,
    RouteNode,
    Snapshot,
    StaticMount,
)


def config_findings(snapshot: Snapshot, history: Sequence[Snapshot]) -> List[Finding]:
    out: List[Finding] = []
    out.extend(autoreload_on(snapshot))
    out.extend(errors_nowhere(snapshot))
    if snapshot.routes is not None:
        access = [r for r in snapshot.log if r.access and r.request is not None]
        for app in snapshot.routes.apps:
            out.extend(static_files(app, access))
            out.extend(mime_mismatch(app, access))
            out.extend(forgotten_expose(app, access))
    if snapshot.sessions is not None:
        out.extend(analysis.session_findings(snapshot.sessions))
    return out


# --- log records as evidence -----------------------------------------------------------------

_STAMP = re.compile(r"^\[[^\]]*\]\s*")
ERROR = 40
"""``logging.ERROR``."""
MAX_RECORDS = 20
"""Log records listed as one finding's evidence at most (the most recent)."""


def record_evidence(record: LogRecord) -> Evidence:
    """A buffer record by its seq, a file record by its time (``@<repr>``)."""
    ref = (
        str(record.seq)
        if record.origin is LogOrigin.BUFFER and record.seq
        else "@%r" % (record.time)
    )
    if record.access and record.request is not None:
        text = "%s %s → %s" % (
            record.request.method,
            record.request.target,
            record.status if record.status is not None else "?",
        )
        if record.content_type:
            text += " (%s)" % record.content_type
    else:
        first = record.message.splitlines()[0].strip() if record.message else ""
        first = _STAMP.sub("", first)  # CherryPy's "[01/Dec/2026:12:38:42] " prefix
        text = "%s %s" % (record.level, first)
        if record.traceback:
            text += "  %s" % record.traceback.rstrip().splitlines()[-1].strip()
    return Evidence("log", ref, text[:200])


# --- the Autoreloader ------------------------------------------------------------------------

NOT_PRODUCTION = frozenset(
    ("development", "dev", "staging", "test", "testing", "test_suite", "local")
)
"""``environment`` values that say the process is not production (anything else, or none,
looks like production: CherryPy's own default leaves the Autoreloader on)."""


def autoreload_on(snapshot: Snapshot) -> List[Finding]:
    info = snapshot.info
    if info is None or info.autoreload is not True:
        return []
    env = (info.environment or "").strip()
    if env.lower() in NOT_PRODUCTION:
        return []
    where = "environment %r" % env if env else "no environment set"
    return [
        Finding(
            id="autoreload-on",
            severity=FindingSeverity.WARNING,
            title="the Autoreloader is on (%s): it re-executes the process when a .py file "
            "changes — a deploy, or an editor, restarts it mid-request" % where,
            evidence=(Evidence("config", "engine.autoreload.on", "engine.autoreload.on = True"),),
            fix="set engine.autoreload.on = False in the global config (or environment: "
            "'production', which switches it off with the other development helpers)",
            kind="autoreload-on",
            details=("pid %d, started as: %s" % (info.pid, " ".join(info.cmdline)[:200]),),
        )
    ]


# --- errors that go nowhere ------------------------------------------------------------------


def errors_nowhere(snapshot: Snapshot) -> List[Finding]:
    state = snapshot.log_state
    routing = state.routing if state is not None else None
    if routing is None or not routing.goes_nowhere:
        return []
    errors = [
        r
        for r in snapshot.log
        if not r.access and r.levelno >= ERROR and r.origin is LogOrigin.BUFFER
    ]
    caught = (
        "the agent's buffer caught %s so far that nobody else saw" % plural(len(errors), "error")
        if errors
        else "none logged yet"
    )
    return [
        Finding(
            id="errors-nowhere",
            severity=FindingSeverity.WARNING,
            title="errors are written nowhere (no screen, no error file, no other handler): "
            "%s" % caught,
            evidence=tuple(record_evidence(r) for r in errors[-MAX_RECORDS:]),
            fix=routing.fix or 'set log.error_file = "/var/log/<app>/error.log"',
            kind="errors-nowhere",
        )
    ]


# --- paths -----------------------------------------------------------------------------------


def _app_path(app: AppRoutes, record: LogRecord) -> Optional[str]:
    """The record's path inside ``app`` (``/`` first), or ``None`` when it is another app's."""
    request = record.request
    if request is None:
        return None
    if request.app is not None and request.app != app.script_name:
        return None
    path = request.path
    prefix = app.script_name.rstrip("/")
    if prefix:
        if path != prefix and not path.startswith(prefix + "/"):
            return None
        path = path[len(prefix) :]
    return path or "/"


def _under(path: str, mount: StaticMount) -> bool:
    base = mount.path.rstrip("/")
    if mount.kind == "staticfile":
        return path.rstrip("/") == base
    return base == "" or path == base or path.startswith(base + "/")


def _app_label(app: AppRoutes) -> str:
    return "app %r" % (app.script_name or "/")


# --- static files ----------------------------------------------------------------------------

FAILED = (403, 404, 500)


def _static_problem(mount: StaticMount) -> Optional[Tuple[str, str, str]]:
    """``(what, words, fix)`` of what is wrong with a mount, or ``None``."""
    where = mount.resolved or mount.configured or "?"
    key = "tools.%s.%s" % (mount.kind, "dir" if mount.kind == "staticdir" else "filename")
    if any("relative path without root" in w for w in mount.warnings):
        return (
            "relative",
            "%s = %r is relative and tools.%s.root is not set: CherryPy answers 500 to every "
            "request under it" % (key, mount.configured, mount.kind),
            "set tools.%s.root to the absolute directory it is relative to (or make %s "
            "absolute)" % (mount.kind, key),
        )
    if mount.exists is False:
        return (
            "missing",
            "%s does not exist: every request under it ends 404" % where,
            "create %s or point %s at the right place (a path relative to the process's working "
            "directory moves with it)" % (where, key),
        )
    if mount.readable is False:
        return (
            "unreadable",
            "%s is not readable by the server's user: requests under it fail" % where,
            "give the server's user read access to %s (and search access to its directories)"
            % where,
        )
    if any(w.startswith("not a directory") for w in mount.warnings):
        return (
            "not-dir",
            "%s is a file, not a directory: requests under it end 404" % where,
            "point %s at the directory" % key,
        )
    if any(w.startswith("a directory, not a file") for w in mount.warnings):
        return (
            "not-file",
            "%s is a directory, not a file: CherryPy answers 404" % where,
            "point %s at the file" % key,
        )
    return None


def static_files(app: AppRoutes, access: Sequence[LogRecord]) -> List[Finding]:
    out: List[Finding] = []
    for mount in app.static:
        problem = _static_problem(mount)
        if problem is None:
            continue
        what, words, fix = problem
        failed = [
            r for r in access if r.status in FAILED and _under(_app_path(app, r) or "\0", mount)
        ]
        title = "static %s %s: %s" % (mount.kind, mount.path, words)
        if failed:
            title += " (%s ended %s)" % (
                plural(len(failed), "request"),
                "/".join(str(s) for s in sorted({r.status for r in failed if r.status})),
            )
        ref = "%s|%s" % (app.script_name, mount.path)
        evidence = [Evidence("static", ref, "%s %s %s" % (_app_label(app), mount.kind, mount.path))]
        evidence.extend(record_evidence(r) for r in failed[-MAX_RECORDS:])
        out.append(
            Finding(
                id="static-%s:%s" % (what, ref),
                severity=FindingSeverity.CRITICAL if failed else FindingSeverity.WARNING,
                title=title,
                evidence=tuple(evidence),
                fix=fix,
                kind="static-%s" % what,
                details=tuple(mount.warnings),
            )
        )
    return out


# --- MIME types ------------------------------------------------------------------------------

EXPECTED_TYPES: Dict[str, Tuple[str, ...]] = {
    ".js": ("text/javascript", "application/javascript", "application/x-javascript"),
    ".mjs": ("text/javascript", "application/javascript"),
    ".cjs": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".html": ("text/html",),
    ".htm": ("text/html",),
    ".json": ("application/json",),
    ".svg": ("image/svg+xml",),
    ".png": ("image/png",),
    ".jpg": ("image/jpeg",),
    ".jpeg": ("image/jpeg",),
    ".gif": ("image/gif",),
    ".webp": ("image/webp",),
    ".avif": ("image/avif",),
    ".ico": ("image/x-icon", "image/vnd.microsoft.icon"),
    ".woff": ("font/woff", "application/font-woff", "application/x-font-woff"),
    ".woff2": ("font/woff2", "application/font-woff2"),
    ".ttf": ("font/ttf", "application/x-font-ttf", "font/sfnt"),
    ".otf": ("font/otf", "application/x-font-otf", "font/sfnt"),
    ".wasm": ("application/wasm",),
    ".txt": ("text/plain",),
    ".pdf": ("application/pdf",),
    ".xml": ("application/xml", "text/xml"),
    ".mp4": ("video/mp4",),
    ".webm": ("video/webm",),
}
"""What a browser accepts for a file with each extension (strict for scripts, styles, fonts and
WebAssembly: a module script served as text/plain does not run)."""


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def mime_mismatch(app: AppRoutes, access: Sequence[LogRecord]) -> List[Finding]:
    """Files served (200) from a static mount with a Content-Type that does not fit their
    extension: one finding per mount and extension."""
    mounts = [m for m in app.static if m.kind == "staticdir" or m.kind == "staticfile"]
    if not mounts:
        return []
    seen: Dict[Tuple[str, str], List[Tuple[LogRecord, str]]] = {}
    for record in access:
        if record.status != 200 or not record.content_type:
            continue
        path = _app_path(app, record)
        if path is None:
            continue
        ext = _extension(path)
        expected = EXPECTED_TYPES.get(ext)
        if expected is None:
            continue
        served = record.content_type.split(";", 1)[0].strip().lower()
        if served in expected:
            continue
        mount = next((m for m in mounts if _under(path, m)), None)
        if mount is None:
            continue
        seen.setdefault((mount.path, ext), []).append((record, served))
    out: List[Finding] = []
    for (mount_path, ext), hits in sorted(seen.items()):
        served_types = sorted({s for _, s in hits})
        paths = sorted({(_app_path(app, r) or "") for r, _ in hits})
        ref = "%s|%s" % (app.script_name, mount_path)
        expected = EXPECTED_TYPES[ext]
        out.append(
            Finding(
                id="static-mime:%s|%s" % (ref, ext),
                severity=FindingSeverity.WARNING,
                title="%s files under %s are served as %s, not %s: %s (e.g. %s)"
                % (
                    ext,
                    mount_path,
                    " / ".join(served_types),
                    expected[0],
                    plural(len(hits), "request"),
                    paths[0],
                ),
                evidence=(
                    Evidence("static", ref, "%s staticdir %s" % (_app_label(app), mount_path)),
                    *(record_evidence(r) for r, _ in hits[-MAX_RECORDS:]),
                ),
                fix="map the extension: tools.staticdir.content_types = {%r: %r} on %s (or "
                "mimetypes.add_type(%r, %r) at start-up: the server's mimetypes table lacks "
                "it or has it wrong)" % (ext[1:], expected[0], mount_path, expected[0], ext),
                kind="static-mime",
                details=tuple("%s → %s" % (p, s) for p, s in _examples(app, hits)),
            )
        )
    return out


def _examples(app: AppRoutes, hits: Iterable[Tuple[LogRecord, str]]) -> List[Tuple[str, str]]:
    out: Dict[str, str] = {}
    for record, served in hits:
        path = _app_path(app, record) or ""
        out.setdefault(path, served)
        if len(out) >= 5:
            break
    return sorted(out.items())


# --- a forgotten @cherrypy.expose ------------------------------------------------------------

UNEXPOSED_KINDS = ("unexposed",)
"""``internal`` methods (reached on purpose through an exposed dispatcher or ``default``) are
left out: a 404 on one is a client calling it directly, not a forgotten decorator."""


def _candidates(path: str) -> Tuple[str, ...]:
    """Node paths the default dispatcher would try for ``path``: itself, and its ``index``."""
    norm = path.rstrip("/") or "/"
    index = "/index" if norm == "/" else norm + "/index"
    return (norm, index)


def forgotten_expose(app: AppRoutes, access: Sequence[LogRecord]) -> List[Finding]:
    """404 answers on paths where the tree has a method that is not exposed."""
    hidden: Dict[str, RouteNode] = {n.path: n for n in app.nodes if n.kind in UNEXPOSED_KINDS}
    if not hidden:
        return []
    hits: Dict[str, List[LogRecord]] = {}
    for record in access:
        if record.status != 404:
            continue
        path = _app_path(app, record)
        if path is None:
            continue
        node_path = next((c for c in _candidates(path) if c in hidden), None)
        if node_path is not None:
            hits.setdefault(node_path, []).append(record)
    out: List[Finding] = []
    for node_path, records in sorted(hits.items()):
        node = hidden[node_path]
        name = ".".join((node.qualname or node.name).split(".")[-2:])  # Class.method
        methods = sorted({r.request.method for r in records if r.request is not None})
        shown = (app.script_name.rstrip("/") + node_path) if app.script_name else node_path
        ref = "%s|%s" % (app.script_name, node_path)
        where = " (%s:%d)" % (node.filename, node.lineno) if node.filename and node.lineno else ""
        out.append(
            Finding(
                id="forgotten-expose:%s" % ref,
                severity=FindingSeverity.WARNING,
                title="%s %s ended 404 ×%d: %s exists but is not exposed — add "
                "@cherrypy.expose to %s" % ("/".join(methods), shown, len(records), name, name),
                evidence=(
                    Evidence("route", ref, "%s%s" % (name, where)),
                    *(record_evidence(r) for r in records[-MAX_RECORDS:]),
                ),
                fix="decorate %s with @cherrypy.expose (or set %s.exposed = True)" % (name, name),
                kind="forgotten-expose",
            )
        )
    return out
