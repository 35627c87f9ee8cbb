"""The agent's side of the wire: versions, endpoint paths and limits.

The inspector may import this module (it is stdlib-only and has no side effects); the agent
never imports anything from the inspector side.
"""

AGENT_VERSION = "0.1.0"
SCHEMA_VERSION = 1

API_PREFIX = "/v1"
ENDPOINT_INFO = API_PREFIX + "/info"
ENDPOINT_THREADS = API_PREFIX + "/threads"
ENDPOINT_ROUTES = API_PREFIX + "/routes"
ENDPOINT_RESOLVE = API_PREFIX + "/resolve"
ENDPOINT_SESSIONS = API_PREFIX + "/sessions"
ENDPOINT_LOG = API_PREFIX + "/log"
ENDPOINTS = (
    ENDPOINT_INFO,
    ENDPOINT_THREADS,
    ENDPOINT_ROUTES,
    ENDPOINT_RESOLVE,
    ENDPOINT_SESSIONS,
    ENDPOINT_LOG,
)

SOCKET_DIR_NAME = "cpinspect"
SOCKET_SUFFIX = ".sock"

MAX_REQUEST_BYTES = 8192
"""Request line plus headers; larger requests are refused with 431 and the connection closed."""
MAX_CONNECTIONS = 64
"""Connections the agent keeps open at once; each new one past that sheds the oldest (the one
longest without an answered request), which gets a 503 "too many connections: shed oldest"."""
REQUEST_READ_TIMEOUT = 5.0
"""Seconds from a request's first byte to its blank line; past that: 408 and closed."""
IDLE_TIMEOUT = 30.0
"""Seconds a connection may stay silent between requests (or after connecting) before closing."""
SESSION_SORTS = ("expiry", "-expiry", "size", "lock")
"""The orders ``/v1/sessions`` pages in (``sort=``), the default first."""
SESSIONS_MAX_LIMIT = 500
"""The largest page of ``/v1/sessions`` (``limit=``)."""
MAX_STACK_DEPTH = 128
"""Innermost frames kept per thread; ``stack_truncated`` counts the rest."""
LOG_DEFAULT_CAPACITY = 10000
"""Log records the agent's ring holds unless ``inspector.log_capacity`` (config) or the
``CPINSPECT_LOG_CAPACITY`` environment variable says otherwise (clamped to 10..1,000,000)."""
LOG_MAX_MESSAGE = 8192
"""Characters kept of each record's message and of its traceback (each); ``cut`` counts the rest."""
LOG_DEFAULT_LIMIT = 500
"""Records one ``/v1/log`` answer carries when ``limit`` is not given."""
LOG_MAX_LIMIT = 5000
"""The largest ``limit`` ``/v1/log`` accepts (more: 400)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_ONLY = ("notable",)
"""Values of ``/v1/log?only=``."""
LOG_MAX_PATHS = 32
"""Path prefixes ``/v1/log?paths=`` takes at most (more: 400)."""
LOG_MAX_PATHS_CHARS = 2048
"""Characters ``/v1/log?paths=`` may carry in all (more: 400)."""
MAX_CURSOR_LENGTH = 64
"""Longest ``/v1/threads?since=`` value; a longer one is refused with 400."""
THREADS_CURSORS_KEPT = 4
"""``/v1/threads`` cursors the agent remembers (least recently issued or used go first)."""

# The JSON the agent emits (all keys always present unless marked optional). Every payload has
# "schema" (int) and "agent" (version string).
#
# GET /v1/info
#   {"schema", "agent", "pid", "cmdline": [str], "python": "3.11.7", "cherrypy": str|null,
#    "cheroot": str|null, "started_at": float|null, "agent_installed_at": float,
#    "engine": {"state": "STARTED", "autoreload": bool|null, "environment": str|null},
#    "servers": [{"bind": "127.0.0.1:8080", "pool_size": int|null, "kind": "cheroot",
#                 "running": bool}],
#    "apps": [{"script_name": "", "root": "pkg.mod.Root"|null, "kind": "cherrypy"|"wsgi"}],
#    "logging": {"screen": bool|null, "error_file": str|null, "access_file": str|null,
#                "handlers": [str]},
#    "errors": [str]}
#
# GET /v1/threads
#   {"schema", "agent", "taken_at": float,
#    "pools": [{"bind", "size", "busy", "idle", "queued", "min", "max": int|null,
#               "queue_limit": int|null, "oldest_busy": float|null, "keepalive": int|null}],
#    "pools_available": bool, "pools_note": str, "requests_served": int|null,
#    "threads": [{"ident": int, "native_id": int|null, "name": str, "role": str,
#                 "daemon": bool|null,
#                 "busy": bool, "phase": "idle"|"reading"|"handler"|"writing"|"unknown",
#                 "elapsed": float|null, "cpu_time": float|null, "pool": str|null,
#                 "request": null | {"method", "path", "query", "client", "peer",
#                                    "started_at": float|null, "handler": str|null,
#                                    "stage": str|null, "app": str|null, "source": str},
#                 "stack": [{"file": str, "line": int, "function": str, "qualname": str|null,
#                            "app": bool}],          # innermost first
#                 "stack_truncated": int,
#                 "wait"?: {"expr": str, "obj": str, "type": str, "filename": str,
#                           "lineno": int, "owner": int|null},      # optional, see below
#                 "holds"?: [{"expr": str, "obj": str, "filename": str, "lineno": int}]}],
#    "errors": [str],
#    "cursor": str, "delta": bool, "gone": [int]}
#
#   "wait" (optional: absent unless the thread is blocked on a lock): the thread's innermost
#   Python frame is at a lock acquisition — ``with X:`` (SETUP_WITH 3.8-3.10, BEFORE_WITH 3.11+)
#   or a call ``X.acquire(...)`` / ``X.__enter__()`` (plain loads as arguments only) — and X,
#   read from the code object (the loads before that instruction) and looked up without running
#   code (the frame's locals/globals/builtins, then attributes only through an instance
#   ``__dict__``, a slot or a plain class attribute: never a property or ``__getattr__``;
#   subscripts ``LOCKS[key]`` only of a plain dict by str/int key or a list/tuple), is a
#   threading.Lock, RLock or Condition that is locked now (an RLock not owned by this thread).
#   "expr": X as the code spells it ("LEDGER_LOCK", "self.lock", "self._locks[user]");
#   "obj": an opaque token of the object, equal for the same object within one agent lifetime
#   (not an address);
#   "type": "_thread.lock" | "_thread.RLock" | "threading.Condition"; "filename"/"lineno": the
#   waiting frame (for ``with cond:`` on a Condition, the caller of Condition.__enter__);
#   "owner": the holder's ident, known for an RLock only (from its C repr: never acquired),
#   else null. Not reported as waits: Condition.wait / Event.wait / queue.get (waiting for a
#   notification, as idle workers do), Semaphore.acquire, locks of other types.
#   "holds" (optional: absent unless non-empty; computed only when some thread of the same
#   answer has a "wait"): the ``with`` blocks of this thread's frames on an object some thread
#   waits for, whose body holds the frame's current instruction (3.11+: the exception table;
#   3.8-3.10: the SETUP_WITH target): this thread LIKELY holds it. "lineno" is the ``with``
#   statement's. A lock taken by ``acquire()`` without ``with`` leaves no such trace: its holder
#   is not found (only an RLock's "owner" names it). Frames of threading.py and queue.py are not
#   searched (their with blocks are on their own Conditions).
#   Both are part of a thread's entry for deltas: a change of either sends the entry again.
#
#   GET /v1/threads?since=CURSOR   (a delta; additive: without ?since= the answer is the full one)
#   Every answer carries "cursor": "<random id of this agent's lifetime>-<counter>" (opaque). The
#   agent remembers THREADS_CURSORS_KEPT cursors, the most recently issued or used (per cursor one
#   small digest per thread, never entries). With ?since= naming one of them, "delta": true and
#     "threads" holds only the threads that are new or whose entry changed (full entries),
#     "gone" lists the idents of threads present at that cursor and absent now,
#     every other thread is unchanged since that cursor's answer, except "elapsed": it is left
#     out of the comparison (the start time it is computed from is in). The reader recomputes it
#     for an unchanged thread as taken_at - request.started_at when the request has a start
#     (exactly what a full answer says), else previous elapsed + (taken_at - previous taken_at).
#   The threads of an answer are always sorted by ident; "pools", "pools_available",
#   "pools_note", "requests_served", "errors" and "taken_at" are always sent in full.
#   An unknown cursor (expired, another agent lifetime, garbage) -> a full answer, "delta": false,
#   "gone": []. A value longer than MAX_CURSOR_LENGTH -> 400. The empty value means no cursor.
#
# GET /v1/routes   (read with inspect.getattr_static: no user code runs)
#   {"schema", "agent", "taken_at": float, "cap": int (max nodes over all apps),
#    "truncated": bool, "global_tools": [str], "errors": [str],
#    "apps": [{"script_name": str, "kind": "cherrypy"|"wsgi", "root": str|null,
#              "dispatcher": "default"|"MethodDispatcher"|"RoutesDispatcher"|"VirtualHost"|
#                            "XMLRPCDispatcher"|"wsgi"|<qualname>,
#              "dispatcher_detail": {} | {"domains": {host: prefix}, "next": str|null,
#                                         "use_x_forwarded_host": bool},
#              "nodes": [{"path": "/admin/users", "name": str,
#                         "kind": "object"|"handler"|"index"|"default"|"unexposed"|"internal"|
#                                 "property"|"static",
#                         # internal: an unexposed method an exposed method of the same object
#                         # dispatches to on purpose (it takes *args/**kwargs or a name, and
#                         # uses getattr with a prefix of the method's name, or reads a
#                         # dict/list of the object's methods), or that an exposed `default`
#                         # receives; unexposed: nothing reaches it. Neither carries a warning
#                         # (the forgotten-expose finding warns when a request hits one).
#                         "reached_via": str|null,     # internal: the dispatcher's qualname
#                         "reached_at": str|null,      # internal: the path that reaches it
#                         # through the dispatcher (its table's key or its name without the
#                         # prefix as the next segment: "/api/adduser"); null when unknown
#                         # (a default, a name from the query string); older agents omit it
#                         "exposed": bool, "qualname": str, "file": str|null, "line": int|null,
#                         "signature": str|null, "alias_of": str|null,
#                         "methods": [str],            # upper-case verbs (MethodDispatcher)
#                         "popargs": [str]|null, "dynamic": bool (has _cp_dispatch),
#                         "tools": [str], "config": {key: repr} (_cp_config, redacted),
#                         "warnings": [str],           # e.g. "_cp_dispatch is exposed: …"
#                         "app_code"?: bool}],         # optional (older agents, and a node
#                         # whose file is unknown, omit it): its file is the app's own code by
#                         # the stack rule of probes/frames.py (not a library's, the standard
#                         # library's or a frozen module's)
#              "routes": [{"name", "path", "controller", "action", "methods": [str],
#                          "qualname", "file", "line", "signature"}],   # RoutesDispatcher
#              "config": [{"path", "source": "app.config", "tools": [str],
#                          "settings": {key: repr}, "dispatcher"?: str}],
#              "static": [{"path", "kind": "staticdir"|"staticfile",
#                          "source": "app.config"|"_cp_config"|"handler",
#                          "configured": str|null, "root": str|null, "resolved": str|null,
#                          "index": str|null, "match": str|null, "content_types": {ext: type},
#                          "exists": bool|null, "readable": bool|null, "is_dir": bool|null,
#                          "file_count": int|null, "file_count_capped": bool,
#                          # its top level: file_count entries that are not directories,
#                          # dir_count subdirectories (older agents: no dir_count, and
#                          # file_count counts every entry)
#                          "dir_count": int|null,
#                          "warnings": [str]}],
#              "truncated": bool, "errors": [str]}]}
#
# GET /v1/resolve?path=/p?q=1&method=GET&host=example.com   (explicit, never polled)
#   {"schema", "agent", "path", "method", "host", "app": str|null, "dispatcher": str|null,
#    "elapsed": float, "abandoned": bool, "errors": [str],
#    "steps": [str],                                   # the traversal, in order
#    "verdict": {"kind": "handler"|"static"|"redirect"|"not_found"|"error"|"wsgi"|"busy"|
#                        "abandoned",
#                "status": int|null, "reason": str, "location": str|null (redirects),
#                "tools": [str],
#                "decided_by": null | "handler" | "tool:<name>",   # who decides the status
#                                   # when the resolver cannot: status is null then (a handler
#                                   # decides its own; a tool hooked before the handler that is
#                                   # not one of CherryPy's harmless ones may answer itself).
#                                   # "tool:<name>" is the first of "guards" (or the one
#                                   # switched on but not registered): any of them may answer
#                "verdict": str,    # the sentence: "Root.account handles it; the handler
#                                   # decides the status"; one guard: "tool myauth runs first
#                                   # (before_handler, priority 50) and may answer itself;
#                                   # otherwise: …" (CherryPy's own say what: "(401 without
#                                   # credentials)"); several: "8 tools run before the handler,
#                                   # any of which may answer instead: a, auth_basic (401
#                                   # without credentials), …; otherwise: …"; a known status:
#                                   # "no exposed handler … (404)"
#                "guards": [str],   # those tools, in the order they run
#                "handler": null | {"qualname", "file", "line", "args": [repr],
#                                   "kwargs": {name: repr (redacted)}},
#                "static": null | {"tool", "file", "exists", "readable", "mime",
#                                  "mime_source"}}}
#
# GET /v1/sessions?app=SCRIPT_NAME&offset=0&limit=50&sort=KEY&reveal=FP
#   ``app`` optional: absent = every mounted CherryPy app with ``tools.sessions.on`` anywhere in
#   its config (each gets the same offset/limit/sort); unknown app -> 404. ``limit`` default 50,
#   max 500 (larger -> 400). ``sort``: "expiry" (soonest first, default), "-expiry", "size"
#   (largest first), "lock" (held first, then most waiters); else 400. ``reveal=FP`` (12 hex
#   digits, or the first 8 or more naming one session, as the texts show it): that one
#   session's key values are included (bounded reprs), never any other's; explicit, never polled.
#   No raw session id is ever sent: ``fp`` = first 12 hex chars of HMAC-SHA256(agent key, id),
#   the key is os.urandom(32) made once per agent installation; ``key_id`` (8 hex chars of a hash
#   of the key) changes with the key: fingerprints of two agent lifetimes are not comparable.
#   A custom storage class is listable when it defines the optional classmethod
#   ``cpinspect_sessions(cls) -> iterable of (id: str, data: dict, expiration)`` (expiration a
#   datetime like CherryPy stores, an epoch float, or None); the agent reads at most 200,000
#   (any store's index holds at most that many: more -> "partial"). Paging and sorting run over
#   a per-store index rebuilt behind the answers every 5-10 s ("as_of"); only the page's own
#   sessions are read again for "keys" and "lock". Bad parameters -> 400, one line.
#   {"schema", "agent", "taken_at": float, "key_id": str, "errors": [str],
#    "request_durations": null | {"count": int, "p50": float, "p95": float, "max": float},
#        # seconds, over the last <=1000 requests this process completed
#    "apps": [{"app": str (script_name, "" for root), "where": [str] (config sections setting
#                                 sessions on: "/path", "global", "_cp_config /" for the root's),
#              "backend": "ram"|"file"|"memcached"|"custom", "storage_class": str (qualname),
#              "settings": {"timeout": float|null (minutes), "clean_freq": float|null (minutes),
#                           "clean_thread": "running"|"stopped"|"not started",
#                           "storage_path": str|null, "path_exists": bool|null,
#                           "path_writable": bool|null,
#                           "locking": "implicit"|"early"|"explicit", "name": str (cookie),
#                           "secure": bool, "httponly": bool, "persistent": bool,
#                           "domain": str|null, "servers": [str]|null (memcached)},
#              "listable": bool, "not_listable": str|null (why, when listable is false),
#              "partial": bool, "partial_reason": str|null (memcached: only ids seen in
#                                                          requests; file: listing cut by the
#                                                          time limit),
#              "count": int|null, "expired": int|null (stored entries already past expiry),
#              "summary": {"expiring_soon": int (within 300 s), "locked": int, "waiters": int,
#                          # locked/waiters: locks held by in-flight requests or waited on now
#                          "sizes": null | {"min", "p50", "p90", "max", "total": int},
#                          "largest": [{"fp": str, "size": int}] (up to 3, largest first),
#                          "as_of": float (when the index these numbers come from was built),
#                          "stale_locks": int|null (file: .lock files whose pid is gone; null
#                                                   for other backends or when the build's time
#                                                   limit cut the count),
#                          "orphan_locks": int|null (file: .lock files with no session file
#                                                    beside them; not sessions, not counted in
#                                                    "count")},   # both additive
#              "page": {"offset": int, "limit": int, "sort": str, "total": int},
#              "sessions": [{"fp": str, "expires_at": float|null (epoch s),
#                            "time_left": float|null (s, <0 = expired),
#                            "size": int|null (bytes: pickled size; a file's size; a RAM
#                                              value pickle refuses: a sys.getsizeof estimate),
#                            "keys": [{"key": str, "type": str, "size": int|null,
#                                      "value"?: str}],   # value: revealed only, repr <=2,000
#                            "revealed": bool,
#                            "lock": {"state": "free"|"held"|"unknown",
#                                     "holder": null | {"ident": int, "name": str|null,
#                                                       "request": REQ|null,
#                                                       "held_for": float|null,
#                                                       "held_for_basis": str},
#                                     "file": null | {"age": float|null, "pid": int|null,
#                                                     "stale": bool (additive: that pid is
#                                                                    gone and the lock is not
#                                                                    held: a leftover)},
#                                     "waiters": [{"ident": int, "name": str|null,
#                                                  "request": REQ|null,
#                                                  "waiting_for": float|null,
#                                                  "clean_up": bool (additive, absent when
#                                                      false: the store's clean-up thread,
#                                                      not a request; CherryPy's FileSession
#                                                      clean-up waits for every held lock)}]}}],
#              "locks": [{"fp": str, "lock": {as in "sessions"}}],   # every session locked or
#                       # waited on now, whatever the page (at most 50, most waiters first)
#              "error": str|null}]}   # e.g. the time limit on a hung storage path
#   Not listable: "count" null and "sessions" only the sessions locked or waited on now (fp and
#   lock). lock.state "unknown": a store without per-session RLocks, or a file lock whose state
#   /proc/locks could not tell. Error texts never carry an id (scrubbed).
#   REQ is exactly the "request" object of /v1/threads (query redacted the same way). When every
#   requested app failed on the time limit: 504 with the error body naming the path and limit.
# GET /v1/log?after=SEQ&limit=N&level=NAME&only=notable&paths=P1,P2   (a cursor over the agent's
#                                                                     ring of log records)
#   after: default 0 (= from the oldest held); limit: default LOG_DEFAULT_LIMIT, 1..LOG_MAX_LIMIT;
#   level: optional minimum level name (one of LOG_LEVELS, case-insensitive). Anything else: 400.
#     An access record counts as ERROR for a 5xx answer and WARNING for a 4xx (CherryPy logs
#     every access line at INFO; the inspector's analysis.effective_level). Earlier agents
#     compared the levelno alone and left those out.
#   only: optional, "notable" (the only value; case-insensitive): the records an inspector needs
#     while nobody looks at the full log — a record is returned when its levelno >= WARNING,
#     or it is an access record ("access" not null) whose status is >= 400 or unknown, or an
#     access record whose request path (script_name + path_info, no query) starts with one of
#     "paths". Everything else (200s elsewhere, INFO messages) is skipped like a level filter
#     skips records: it stays in the ring for a later full read.
#   paths: optional, only with only=notable: comma-separated path prefixes, each starting with
#     "/", at most LOG_MAX_PATHS of them and LOG_MAX_PATHS_CHARS characters in all (empty
#     items ignored); e.g. "/static/,/media/,/favicon.ico". Bad values: 400 with one line.
#   "level" and "only" together: a record must pass both.
#   The cursor arithmetic ("first", "latest", "missed", "more", "next") ignores the level and
#   only filters: "missed" counts every record that wrapped out, matching or not.
#   An agent older than "only" ignores unknown parameters and answers every record (a superset:
#   the inspector keeps what it needs and the cursor arithmetic is the same).
#   Records come from a handler on cherrypy.error and cherrypy.access (and on each app's
#   error/access loggers that do not propagate: checked at install, on engine start and on
#   every /v1/log read, so records of such an app mounted later are caught from the next read
#   on), engine messages included ("ENGINE Bus STARTED"). Memory: at most "capacity" records
#   and 16 Mi characters of text over all of them (logcapture.MAX_TOTAL_CHARS); the oldest
#   go first, and "missed" counts them like any other wrap-around.
#   {"schema", "agent", "taken_at": float,
#    "buffer": str (random id of this ring; a new value = the agent restarted and sequence
#                   numbers start over: reset the cursor to 0),
#    "captures_access": bool (false when installed with inspector.log_access = False or
#                             CPINSPECT_LOG_ACCESS=0: error-log records only, no access records),
#    "capacity": int (records held at most), "max_message": int (chars kept per message and per
#                                                                 traceback),
#    "first": int (oldest seq still held, 0 when empty), "latest": int (newest seq, 0 when none),
#    "missed": int (records with seq > after that wrapped out before this read:
#                   max(0, first - after - 1) when after < first - 1, else 0),
#    "more": bool (records after the last one returned exist: ask again with after=<last seq>;
#                  with a level or only filter, "more" is true only when matching records
#                  were left),
#    "next": int (the "after" to send next: the last seq returned when "more", else "latest"),
#    "dropped": int (records the handler failed to capture since the agent started; normally 0),
#    "routing": {"screen": bool|null, "error_file": str|null, "access_file": str|null,
#                "other_handlers": [str] (handlers a record from cherrypy.error/.access or an
#                                         app logger reaches (ancestors such as the root
#                                         logger included), other than NullHandlers, ours,
#                                         and the global screen/file built-ins reported
#                                         above; as "logger: ClassName(target)" e.g.
#                                         "root: StreamHandler(<stdout>)"),
#                "goes_nowhere": bool (errors are written nowhere: no handler but NullHandlers
#                                      and ours on any error logger's chain, or only ones
#                                      whose level is above ERROR),
#                "fix": str|null (when goes_nowhere, the global config line that fixes it, e.g.
#                                 'log.error_file = "/var/log/app/error.log"')},
#    "records": [{"seq": int (1, 2, ... in arrival order), "time": float (record.created),
#                 "level": str, "levelno": int,
#                 "logger": str ("cherrypy.error", "cherrypy.access", "cherrypy.error.<id>"...),
#                 "app": str|null (script_name when the logger is an app's),
#                 "message": str (getMessage() as CherryPy built it, "[date] CONTEXT msg" for
#                                 error records, the access line for access records; cut to
#                                 max_message keeping its start; when the text held a
#                                 traceback, only the text before it),
#                 "cut": int (chars cut off message and traceback together),
#                 "traceback": str|null (formatted exc_info, or the "Traceback (most recent call
#                                        last):" block found inside the message; cut to
#                                        max_message keeping its first line and its END, the
#                                        exception line; no trailing newline. Formatted in
#                                        the agent without reading source files: a frame
#                                        has its source line only when an app handler
#                                        formatted it first or linecache held the file),
#                 "thread": {"ident": int, "name": str},
#                 "request": null | REQ (the request in flight on that thread when logged:
#                                        exactly the "request" object of /v1/threads, query
#                                        redacted the same way; join by (ident, started_at);
#                                        "source" is "hook" as there, or "serving" when the
#                                        record came before the tracker saw the request;
#                                        "stage" and "handler" as they were when logged),
#                 "access": null | {"status": int|null, "size": int|null (body bytes),
#                                   "duration": float|null (seconds from REQ.started_at,
#                                                           response.time, to the access line),
#                                   "content_type": str|null (the response's Content-Type
#                                       header as sent, cut to 200 chars; absent from older
#                                       agents and from records parsed from the line)}}],
#    "errors": [str] (e.g. the handler was found removed from CherryPy's loggers (a logging
#                     reconfiguration) and put back: records logged meanwhile are missing)}
#   Ordered by seq, ascending. Access records: "access" is set (from the finished request and
#   response on the logging thread; parsed from the access line only as a fallback).
#
# Errors (any status >= 400): {"schema", "agent", "error": {"status": int, "message": str}}
