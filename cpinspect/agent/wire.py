"""The agent's side of the wire: versions, endpoint paths and limits.

The inspector may import this module (it is stdlib-only and has no side effects); the agent
never imports anything from the inspector side.
"""

AGENT_VERSION = "0.1.0"
SCHEMA_VERSION = 1

API_PREFIX = "/v1"
ENDPOINT_INFO = API_PREFIX + "/info"
ENDPOINT_THREADS = API_PREFIX + "/threads"
ENDPOINTS = (ENDPOINT_INFO, ENDPOINT_THREADS)

SOCKET_DIR_NAME = "cpinspect"
SOCKET_SUFFIX = ".sock"

MAX_REQUEST_BYTES = 8192
"""Request line plus headers; larger requests are refused with 431 and the connection closed."""
MAX_STACK_DEPTH = 128
"""Innermost frames kept per thread; ``stack_truncated`` counts the rest."""

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
#    "errors": [str]}
#
# Errors (any status >= 400): {"schema", "agent", "error": {"status": int, "message": str}}
