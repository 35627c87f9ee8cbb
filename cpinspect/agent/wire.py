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
ENDPOINTS = (ENDPOINT_INFO, ENDPOINT_THREADS, ENDPOINT_ROUTES, ENDPOINT_RESOLVE)

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
MAX_STACK_DEPTH = 128
"""Innermost frames kept per thread; ``stack_truncated`` counts the rest."""
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
#                 "stack_truncated": int}],
#    "errors": [str],
#    "cursor": str, "delta": bool, "gone": [int]}
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
#                         "kind": "object"|"handler"|"index"|"default"|"unexposed"|"property"|
#                                 "static",
#                         "exposed": bool, "qualname": str, "file": str|null, "line": int|null,
#                         "signature": str|null, "alias_of": str|null,
#                         "methods": [str],            # upper-case verbs (MethodDispatcher)
#                         "popargs": [str]|null, "dynamic": bool (has _cp_dispatch),
#                         "tools": [str], "config": {key: repr} (_cp_config, redacted),
#                         "warnings": [str]}],         # e.g. "would 404: not exposed"
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
#                "handler": null | {"qualname", "file", "line", "args": [repr],
#                                   "kwargs": {name: repr (redacted)}},
#                "static": null | {"tool", "file", "exists", "readable", "mime",
#                                  "mime_source"}}}
#
# Errors (any status >= 400): {"schema", "agent", "error": {"status": int, "message": str}}
