"""The shop's database: a tiny client and the "database server" the demo runs beside the app.

The server is a stand-in for an overloaded database on another host: it listens on 127.0.0.1,
answers ordinary queries in a few milliseconds, makes ``... FOR UPDATE`` wait for a row lock
(``ROW_LOCK_SECONDS``) and takes far longer than any client waits for on the reporting
aggregates (``REPORT_SECONDS``). Workers calling it therefore block in a real ``recv()`` on a
socket, exactly where a worker waiting on a real database driver blocks.

Wire format (one query per connection): the client sends one line of JSON
``{"sql": ..., "params": [...]}``; the server answers one line ``{"rows": [...]}`` and closes.

Runs inside the target: stdlib only, Python 3.8 syntax.
"""

import heapq
import json
import selectors
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

Row = Dict[str, Any]

ROW_LOCK_SECONDS = 20.0
"""How long ``SELECT ... FOR UPDATE`` waits for the row lock another transaction holds."""
REPORT_SECONDS = 90.0
"""How long the reporting aggregates take: longer than ``QUERY_TIMEOUT``, so they never return."""
FAST_SECONDS = 0.002
QUERY_TIMEOUT = 40.0
"""The client's statement timeout."""

_MAX_CONNECTIONS = 256
_MAX_QUERY_BYTES = 16384

PRODUCTS = (
    {"sku": "TEA-001", "name": "Assam tea, 250 g", "price": 7.5},
    {"sku": "TEA-002", "name": "Darjeeling tea, 100 g", "price": 11.0},
    {"sku": "CUP-010", "name": "Stoneware cup", "price": 14.0},
    {"sku": "POT-020", "name": "Cast-iron teapot", "price": 49.0},
    {"sku": "STR-030", "name": "Tea strainer", "price": 6.0},
)


class DatabaseError(Exception):
    """The database could not be reached or answered something unreadable."""


class QueryTimeout(DatabaseError):
    """The database did not answer within the statement timeout."""


_address: Optional[Tuple[str, int]] = None


def configure(address: Tuple[str, int]) -> None:
    """Point the client at a server (the app calls this once at start-up)."""
    global _address
    _address = address


class Cursor:
    """The part of a DB-API cursor the shop uses."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        query = json.dumps({"sql": sql, "params": list(params)}).encode("utf-8") + b"\n"
        self._sock.sendall(query)

    def fetchall(self) -> List[Row]:
        # A socket timeout makes recv() wait in poll(): a real blocking read with the GIL
        # released, which is what a worker stuck on a slow database looks like.
        self._sock.settimeout(self._timeout)
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise QueryTimeout(
                    f"no answer from the database within {self._timeout:.0f} s"
                ) from None
            if not chunk:
                raise DatabaseError("the database closed the connection")
            data += chunk
        try:
            rows = json.loads(data.decode("utf-8"))["rows"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatabaseError("unreadable answer from the database") from exc
        return list(rows)


class Connection:
    def __init__(self, address: Tuple[str, int], timeout: float) -> None:
        self._timeout = timeout
        try:
            self._sock = socket.create_connection(address, timeout=5.0)
        except OSError as exc:
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc

    def cursor(self) -> Cursor:
        return Cursor(self._sock, self._timeout)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(timeout: float = QUERY_TIMEOUT) -> Connection:
    if _address is None:
        raise DatabaseError("the database address is not configured")
    return Connection(_address, timeout)


def fetch_all(sql: str, params: Sequence[Any] = (), timeout: float = QUERY_TIMEOUT) -> List[Row]:
    """Run one query on a fresh connection and return its rows."""
    with connect(timeout) as conn:
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall()


# --- the server side -------------------------------------------------------------------------


LEDGER_SECONDS = 25.0
"""How long the account statement's ledger query takes (slow, but within ``QUERY_TIMEOUT``)."""


def _plan(query: Dict[str, Any]) -> Tuple[float, List[Row]]:
    """How long the "database" takes for a query, and what it answers."""
    sql = str(query.get("sql", "")).upper()
    params = query.get("params") or []
    if "FROM LEDGER" in sql:
        return LEDGER_SECONDS, [{"month": m, "amount": 20.0 + 3.5 * m} for m in range(1, 13)]
    if "GROUP BY" in sql:
        return REPORT_SECONDS, [{"month": m, "total": 1000.0 + 37.5 * m} for m in range(1, 13)]
    if "FOR UPDATE" in sql:
        return ROW_LOCK_SECONDS, [{"sku": params[0] if params else None, "qty": 42}]
    if "FROM PRODUCTS" in sql:
        if params:
            return FAST_SECONDS, [dict(p) for p in PRODUCTS if p["sku"] == params[0]]
        return FAST_SECONDS, [dict(p) for p in PRODUCTS]
    return FAST_SECONDS, []


class FakeDatabaseServer:
    """A one-thread selector loop that answers queries after the delay ``_plan`` picks.

    Answers are scheduled, never slept on, so one thread serves any number of waiting clients;
    a client that gives up (closes) is forgotten. Connections beyond ``_MAX_CONNECTIONS`` are
    closed at once, so nothing here grows without bound.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.address: Tuple[str, int] = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._buffers: Dict[socket.socket, bytes] = {}
        self._due: List[Tuple[float, int, socket.socket, bytes]] = []
        self._seq = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="demo-database", daemon=True)

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2.0)

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                timeout = 0.5
                if self._due:
                    timeout = max(0.0, min(timeout, self._due[0][0] - time.monotonic()))
                for key, _events in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._answer_due()
        finally:
            for conn in list(self._buffers):
                self._drop(conn)
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        try:
            conn, _addr = self._listener.accept()
        except OSError:
            return
        if len(self._buffers) >= _MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(False)
        self._buffers[conn] = b""
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client gave up (timed out) or finished
            self._drop(conn)
            return
        data = self._buffers.get(conn, b"") + chunk
        if b"\n" not in data:
            if len(data) > _MAX_QUERY_BYTES:
                self._drop(conn)
            else:
                self._buffers[conn] = data
            return
        self._buffers[conn] = b""
        try:
            delay, rows = _plan(json.loads(data.split(b"\n", 1)[0].decode("utf-8")))
        except (ValueError, AttributeError):
            delay, rows = 0.0, []
        self._seq += 1
        reply = json.dumps({"rows": rows}).encode("utf-8") + b"\n"
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, conn, reply))

    def _answer_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _when, _seq, conn, reply = heapq.heappop(self._due)
            if conn not in self._buffers:
                continue  # the client left before its answer was ready
            try:
                conn.send(reply)  # small enough for the socket buffer of an idle connection
            except OSError:
                pass
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._buffers.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
