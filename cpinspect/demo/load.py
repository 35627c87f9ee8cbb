"""Stage a thread-starvation incident on the demo shop.

``python -m cpinspect.demo.load --port N [--workers 6] [--duration 600]``

Within a second or two every worker of the shop is busy and connections queue behind them:

* ``/reports/export`` requests block on the slow database (about ``db.QUERY_TIMEOUT`` each);
* ``/cart/add`` requests queue on the shop's stock lock while one holds it for a row lock;
* one client uploads a file to ``/upload`` a few bytes per second, holding a worker in the
  "reading the request" phase;
* with 8 workers or more: a dozen customers log in (sessions), and one of them, dana, asks for
  her ``/account/statement`` (slow, holding her session lock) while two more of her requests
  (``/account``) queue on that lock, each holding a worker;
* a steady stream of fast ``/products`` and ``/health`` requests queues behind them all, with
  now and then a ``/products/price`` whose coupon code the shop lost (a 500 and a traceback).

Each slow request is re-issued when it finishes, so the incident lasts ``--duration`` seconds;
then the generator stops by itself, as it does when its parent dies or on SIGTERM/SIGINT. Every
loop is bounded in count and time. It only ever connects to 127.0.0.1, and treats a slow or
absent answer as part of the scenery: errors are counted, never printed as tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from cpinspect.demo import _lifeline

HOST = "127.0.0.1"
# Export requests carry a signed-link token, a session cookie and a bearer token, as real ones
# would: the inspector must show none of their values (tests look for these strings).
SECRET_TOKEN = "demo-link-token-7f3a"
SECRET_COOKIE = "demo-session-cookie-91c2"
SECRET_AUTH = "demo-bearer-5d8e"

EXPORT_TIMEOUT = 75.0
"""Client patience for an export: beyond the app's own 40 s database timeout."""
CART_TIMEOUT = 240.0
"""Cart requests wait in line for the lock; giving up early would only add more of them."""
FAST_TIMEOUT = 20.0
UPLOAD_BYTES_PER_SECOND = 5
UPLOAD_FILE_BYTES = 300
"""At 5 B/s the upload takes a minute, then a new one starts."""
FAST_RATE = 4.0
"""Fast requests started per second."""
MAX_FAST_IN_FLIGHT = 8
"""Bounds the queue we build: beyond it, fast requests are skipped (and counted)."""
STATEMENT_TIMEOUT = 75.0
CUSTOMERS = 12
"""Customers logged in at the start (the Sessions tab's table)."""
SESSION_USER = "dana"
"""The customer whose slow statement holds her session lock."""
SESSION_WORKERS = 3
"""Workers the session scenario takes: the statement and two requests waiting on its lock."""
RETRY_PAUSE = 0.5
"""After a refused or failed slow request, before trying again."""


@dataclass
class Stats:
    started: Dict[str, int] = field(default_factory=dict)
    answered: Dict[str, int] = field(default_factory=dict)
    failed: Dict[str, int] = field(default_factory=dict)
    skipped_fast: int = 0

    def total_started(self) -> int:
        return sum(self.started.values())

    def count(self, table: Dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1

    def line(self) -> str:
        kinds = sorted(set(self.started) | set(self.answered) | set(self.failed))
        parts = [
            f"{k} {self.started.get(k, 0)}/{self.answered.get(k, 0)}/{self.failed.get(k, 0)}"
            for k in kinds
        ]
        return (
            "load: started/answered/failed "
            + ", ".join(parts)
            + f"; fast skipped {self.skipped_fast}"
        )


@dataclass(frozen=True)
class Plan:
    """How many of each slow request to keep in flight for a pool of ``workers`` threads."""

    exports: int
    carts: int
    uploads: int
    accounts: int = 0
    """Requests of one user on her session: the slow statement and the ones waiting on it."""

    @classmethod
    def for_workers(cls, workers: int) -> Plan:
        # Exactly fill the pool with slow requests, so the fast ones can only queue. From 8
        # workers on, 3 go to the session lock, the rest as before (>= 2 exports, >= 2 carts).
        if workers >= 8:
            rest = cls.for_workers(workers - SESSION_WORKERS)
            return cls(rest.exports, rest.carts, rest.uploads, accounts=SESSION_WORKERS)
        workers = max(1, workers)
        if workers == 1:
            return cls(exports=1, carts=0, uploads=0)
        if workers == 2:
            return cls(exports=1, carts=0, uploads=1)
        exports = max(1, (workers - 1) // 2)
        return cls(exports=exports, carts=workers - 1 - exports, uploads=1)


class Load:
    def __init__(self, port: int, workers: int, duration: float, max_requests: int) -> None:
        self.port = port
        self.plan = Plan.for_workers(workers)
        self.duration = duration
        self.max_requests = max_requests
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.fast_in_flight = 0
        self.session_cookie: Optional[str] = None
        """dana's session, shared by her requests once logged in."""
        self._deadline = 0.0

    # --- plumbing ---------------------------------------------------------------------------

    def running(self) -> bool:
        return (
            not self.stop.is_set()
            and time.monotonic() < self._deadline
            and self.stats.total_started() < self.max_requests
        )

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def request(
        self,
        kind: str,
        head: bytes,
        body: bytes = b"",
        timeout: float = FAST_TIMEOUT,
        trickle: float = 0.0,
    ) -> Optional[int]:
        """Send one request on a new connection and return the status, or None on failure.

        ``trickle`` > 0 sends the body that many bytes per second (a slow client).
        """
        self.stats.count(self.stats.started, kind)
        writer: Optional[asyncio.StreamWriter] = None
        try:
            reader, out = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), timeout=5.0
            )
            writer = out
            out.write(head)
            if trickle > 0:
                await self._trickle(out, body, trickle)
            else:
                out.write(body)
            await out.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout)
            # Drain the answer (the app closes: every request says "Connection: close").
            await asyncio.wait_for(reader.read(1 << 20), 10.0)
            status = int(status_line.split()[1])
        except (OSError, asyncio.TimeoutError, ValueError, IndexError, EOFError):
            self.stats.count(self.stats.failed, kind)
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        self.stats.count(self.stats.answered, kind)
        return status

    async def _trickle(self, writer: asyncio.StreamWriter, body: bytes, rate: float) -> None:
        step = max(1, int(rate))
        for i in range(0, len(body), step):
            if self.stop.is_set():
                raise asyncio.TimeoutError  # counted as a failure; the connection is dropped
            writer.write(body[i : i + step])
            await writer.drain()
            await self.pause(1.0)

    def head(self, method: str, target: str, extra: Tuple[Tuple[str, str], ...] = ()) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # --- the actors -------------------------------------------------------------------------

    async def export_slot(self, n: int) -> None:
        await self.pause(0.4 * n)  # stagger, so the elapsed times differ
        while self.running():
            year = 2025 - (n % 5)
            status = await self.request(
                "export",
                self.head(
                    "GET",
                    f"/reports/export?year={year}&token={SECRET_TOKEN}",
                    (
                        ("Cookie", f"session_id={SECRET_COOKIE}"),
                        ("Authorization", f"Bearer {SECRET_AUTH}"),
                    ),
                ),
                timeout=EXPORT_TIMEOUT,
            )
            if status is None:
                await self.pause(RETRY_PAUSE)

    async def cart_slot(self, n: int) -> None:
        await self.pause(0.2 + 0.3 * n)
        skus = ("TEA-001", "CUP-010", "POT-020", "TEA-002", "STR-030")
        while self.running():
            body = f"sku={skus[n % len(skus)]}&qty=1".encode("ascii")
            head = self.head(
                "POST",
                "/cart/add",
                (
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Content-Length", str(len(body))),
                ),
            )
            status = await self.request("cart", head, body, timeout=CART_TIMEOUT)
            if status is None:
                await self.pause(RETRY_PAUSE)

    async def upload_slot(self, n: int) -> None:
        await self.pause(0.1 + 0.5 * n)
        boundary = "cpinspect-demo-boundary"
        content = (b"sku,qty\n" + b"TEA-001,12\n" * 64)[:UPLOAD_FILE_BYTES]
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="stock.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n"
            ).encode("ascii")
            + content
            + f"\r\n--{boundary}--\r\n".encode("ascii")
        )
        while self.running():
            head = self.head(
                "POST",
                "/upload",
                (
                    ("Content-Type", f"multipart/form-data; boundary={boundary}"),
                    ("Content-Length", str(len(body))),
                ),
            )
            status = await self.request(
                "upload", head, body, timeout=FAST_TIMEOUT, trickle=UPLOAD_BYTES_PER_SECOND
            )
            if status is None:
                await self.pause(RETRY_PAUSE)

    async def login(self, user: str) -> Optional[str]:
        """Log ``user`` in; the session cookie's value, or None when it failed."""
        self.stats.count(self.stats.started, "login")
        writer: Optional[asyncio.StreamWriter] = None
        try:
            reader, out = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), timeout=5.0
            )
            writer = out
            out.write(self.head("GET", f"/account/login?user={user}"))
            await out.drain()
            answer = await asyncio.wait_for(reader.read(1 << 16), FAST_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            self.stats.count(self.stats.failed, "login")
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        for line in answer.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "set-cookie" and value.strip().startswith("session_id="):
                self.stats.count(self.stats.answered, "login")
                return value.strip()[len("session_id=") :].split(";")[0]
        self.stats.count(self.stats.failed, "login")
        return None

    async def account_slot(self, n: int) -> None:
        """Slot 0 runs dana's statement over and over; the others ask for her account page,
        which waits on the statement's session lock."""
        if n == 0:
            for i in range(CUSTOMERS):
                if not self.running():
                    return
                await self.login("customer%02d" % (i + 1))
        cookie: Optional[str] = None
        while self.running() and cookie is None:
            cookie = self.session_cookie or (await self.login(SESSION_USER) if n == 0 else None)
            if cookie is None:
                await self.pause(RETRY_PAUSE)
            elif n == 0:
                self.session_cookie = cookie
        await self.pause(1.0 + 0.4 * n)  # the statement first: the others queue behind it
        target = "/account/statement" if n == 0 else "/account"
        while self.running():
            status = await self.request(
                "statement" if n == 0 else "account",
                self.head("GET", target, (("Cookie", f"session_id={cookie}"),)),
                timeout=STATEMENT_TIMEOUT,
            )
            if status is None:
                await self.pause(RETRY_PAUSE)
            elif n:
                await self.pause(0.3)  # the statement takes the lock again first

    async def fast_stream(self) -> None:
        await self.pause(0.5)  # after the slow requests have taken the workers
        targets = (
            # Fails (a lost coupon code): the Log tab's traceback; first, so it is served soon
            # even while the pool is starved.
            "/products/price?sku=CUP-010&coupon=WINTER",
            "/products",
            "/products",
            "/health",
            "/products/item?sku=TEA-001",
            "/products/price?sku=TEA-001&coupon=SPRING",
            "/products",
            "/health",
            # Not exposed (a forgotten @expose): 404s the forgotten-expose finding names.
            "/reports/summary",
        )
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while self.running():
            if self.fast_in_flight < MAX_FAST_IN_FLIGHT:
                task = asyncio.ensure_future(self._one_fast(targets[i % len(targets)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            else:
                self.stats.skipped_fast += 1
            await self.pause(1.0 / FAST_RATE)
        for task in list(tasks):
            task.cancel()

    async def _one_fast(self, target: str) -> None:
        self.fast_in_flight += 1
        try:
            await self.request("fast", self.head("GET", target), timeout=FAST_TIMEOUT)
        finally:
            self.fast_in_flight -= 1

    async def watch(self) -> None:
        """Stop at the deadline, on the request budget, or when our parent is gone."""
        last_report = time.monotonic()
        while self.running():
            if not _lifeline.parent_alive():
                print("load: parent exited, stopping", flush=True)
                break
            if time.monotonic() - last_report >= 10.0:
                print(self.stats.line(), flush=True)
                last_report = time.monotonic()
            await self.pause(0.5)
        self.stop.set()

    async def run(self) -> None:
        self._deadline = time.monotonic() + self.duration
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        p = self.plan
        print(
            f"load: 127.0.0.1:{self.port}, {p.exports} export, {p.carts} cart, "
            f"{p.uploads} upload, {p.accounts} on one session, fast at {FAST_RATE:g}/s, "
            f"for {self.duration:g} s",
            flush=True,
        )
        actors = [self.watch(), self.fast_stream()]
        actors += [self.export_slot(n) for n in range(p.exports)]
        actors += [self.cart_slot(n) for n in range(p.carts)]
        actors += [self.upload_slot(n) for n in range(p.uploads)]
        actors += [self.account_slot(n) for n in range(p.accounts)]
        tasks = [asyncio.ensure_future(a) for a in actors]
        await self.stop.wait()
        # Slow requests wait on the app for minutes: abandon them rather than wait.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(self.stats.line() + " (stopped)", flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cpinspect.demo.load",
        description="Stage a thread-starvation incident on the demo shop (127.0.0.1 only).",
    )
    parser.add_argument("--port", type=int, required=True, help="the demo shop's port")
    parser.add_argument("--workers", type=int, default=8, help="the shop's pool size (default 8)")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds before stopping (default 600)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=50_000, help="stop after this many requests"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if not 0 < args.duration <= 86400:
        parser.error("--duration must be between 0 and 86400 seconds")
    if args.max_requests < 1:
        parser.error("--max-requests must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _lifeline.die_with_parent()
    # SIGTERM before the event loop installs its handler: exit quietly, not with a traceback.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    load = Load(args.port, args.workers, args.duration, args.max_requests)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(load.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
