"""The demo shop's controllers: what the inspector shows as "app" frames.

Two mistakes are planted here, the kind that starve a real worker pool:

* ``Reports.export`` runs a reporting aggregate on the request thread; the database needs far
  longer than the statement timeout, so every export holds a worker for ``db.QUERY_TIMEOUT``.
* ``Cart.add`` reserves stock under one process-wide lock *while* waiting for a row lock in the
  database, so one slow reservation makes every other cart request queue on ``_stock_lock``.

And one session mistake, for the Sessions tab:

* ``Account.statement`` reads the slow ledger while holding the user's session lock (CherryPy's
  default ``locking = 'implicit'`` locks the session before the handler runs and releases it
  after the response), so every other request of that user (``/account``) queues behind it
  in ``acquire_lock``, each holding a worker.

And a handler that fails now and then, for the Log tab: ``Products.price`` looks the coupon up in
a table that lost a code the marketing mails still send (``WINTER``), so those requests end in
a ``KeyError`` traceback and a 500, each tagged with its request.

And two routing mistakes, for the Routes tab (the load generator never requests them):

* ``Reports.summary`` lacks ``@expose``: ``/reports/summary`` answers 404;
* ``/static`` (in ``app.configure``) sets a relative ``tools.staticdir.dir`` without a
  ``tools.staticdir.root``: every ``/static/...`` request answers 500.

Runs inside the target: stdlib and cherrypy only, Python 3.8 syntax.
"""

import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar, cast

import cherrypy

from cpinspect.demo import db

_F = TypeVar("_F", bound=Callable[..., Any])


# Typed spellings of CherryPy's decorators (cherrypy has no type hints). Each returns the
# handler itself with attributes set, so stacks show the handler, not a wrapper.
def expose(func: _F) -> _F:
    return cast(_F, cherrypy.expose(func))


def json_out(func: _F) -> _F:
    return cast(_F, cherrypy.tools.json_out()(func))


def post_only(func: _F) -> _F:
    return cast(_F, cherrypy.tools.allow(methods=["POST"])(func))


_stock_lock = threading.Lock()
"""Serialises stock reservations across all workers: the contended lock of the incident."""


class Products:
    @expose
    @json_out
    def index(self) -> List[db.Row]:
        return db.fetch_all("SELECT sku, name, price FROM products ORDER BY name")

    @expose
    @json_out
    def item(self, sku: str = "") -> db.Row:
        rows = db.fetch_all("SELECT sku, name, price FROM products WHERE sku = %s", (sku,))
        if not rows:
            raise cherrypy.NotFound()
        return rows[0]

    @expose
    @json_out
    def price(self, sku: str = "", coupon: str = "") -> Dict[str, Any]:
        rows = db.fetch_all("SELECT sku, name, price FROM products WHERE sku = %s", (sku,))
        if not rows:
            raise cherrypy.NotFound()
        if coupon:
            cherrypy.log("price with coupon %s for %s" % (coupon, sku))
        return {"sku": sku, "price": discounted(float(rows[0]["price"]), coupon)}


COUPONS = {"": 0.0, "SPRING": 0.1, "TEAFAN": 0.15}
"""Discounts by coupon code. ``WINTER`` went missing in a migration: a staged bug."""


def discounted(price: float, coupon: str) -> float:
    return round(price * (1.0 - COUPONS[coupon.upper()]), 2)


class Cart:
    @expose
    @post_only
    @json_out
    def add(self, sku: str = "", qty: str = "1") -> Dict[str, Any]:
        try:
            wanted = max(1, int(qty))
        except ValueError:
            raise cherrypy.HTTPError(400, "qty must be a number") from None
        with _stock_lock:
            stock = reserve_stock(sku, wanted)
        return {"sku": sku, "qty": wanted, "reserved": stock >= wanted}


def reserve_stock(sku: str, wanted: int) -> int:
    """Lock the stock row and return the quantity on hand (the caller holds ``_stock_lock``)."""
    rows = db.fetch_all("SELECT qty FROM stock WHERE sku = %s FOR UPDATE", (sku,))
    return int(rows[0]["qty"]) if rows else 0


class Account:
    """Logins with sessions (``tools.sessions.on`` for ``/account``, see ``app.configure``)."""

    @expose
    def index(self) -> str:
        return "hello %s" % session_get("user", "guest")

    @expose
    def login(self, user: str = "guest") -> str:
        session_set("user", user)
        session_set("cart", ["TEA-001"] * (1 + sum(map(ord, user)) % 9))
        return "logged in %s" % user

    @expose
    def statement(self, months: str = "12") -> str:
        # Staged mistake: the slow ledger read happens with the session still locked; calling
        # cherrypy.session.release_lock() first would let the user's other requests through.
        user = session_get("user", "guest")
        rows = db.fetch_all(
            "SELECT month, amount FROM ledger WHERE user = %s LIMIT %s", (user, months)
        )
        session_set("last_statement", len(rows))
        return "".join("%s,%.2f\n" % (r["month"], r["amount"]) for r in rows)


def session_get(key: str, default: Any = None) -> Any:
    """``cherrypy.session`` (untyped: cherrypy has no type hints) read and written here."""
    return cherrypy.session.get(key, default)


def session_set(key: str, value: Any) -> None:
    cherrypy.session[key] = value


class Reports:
    @expose
    def export(self, year: str = "2025", token: str = "") -> str:
        # ``token`` stands for a signed download link: the inspector must never show its value.
        try:
            rows = db.fetch_all(
                "SELECT month, SUM(total) AS total FROM orders WHERE year = %s GROUP BY month",
                (year,),
            )
        except db.QueryTimeout:
            raise cherrypy.HTTPError(504, "the report query timed out") from None
        cherrypy.response.headers["Content-Type"] = "text/csv"
        return "month,total\n" + "".join(f"{r['month']},{r['total']:.2f}\n" for r in rows)

    # Staged mistake: public and meant for the dashboard, but without @expose CherryPy never
    # calls it; GET /reports/summary answers 404.
    def summary(self, year: str = "2025") -> str:
        rows = db.fetch_all("SELECT COUNT(*) AS orders FROM orders WHERE year = %s", (year,))
        return f"{year}: {rows[0]['orders'] if rows else 0} orders"


class Root:
    def __init__(self) -> None:
        self.products = Products()
        self.cart = Cart()
        self.reports = Reports()
        self.account = Account()

    @expose
    def index(self) -> str:
        return (
            "<h1>cpinspect demo shop</h1><ul>"
            '<li><a href="/products">/products</a></li>'
            "<li>POST /cart/add?sku=TEA-001</li>"
            '<li><a href="/reports/export?year=2025">/reports/export?year=2025</a></li>'
            "<li>POST /upload (multipart, field <code>file</code>)</li>"
            '<li><a href="/account/login?user=dana">/account/login</a>, '
            '<a href="/account/statement">/account/statement</a> (slow, holds the session '
            "lock)</li>"
            '<li><a href="/health">/health</a></li></ul>'
            "<p>Staged routing mistakes, for the Routes tab: "
            '<a href="/reports/summary">/reports/summary</a> is not exposed (404), and '
            '<a href="/static/shop.css">/static/</a> has a relative staticdir without a root '
            "(500).</p>"
        )

    @expose
    def health(self) -> str:
        return "ok"

    @expose
    @post_only
    @json_out
    def upload(self, file: Optional[Any] = None) -> Dict[str, Any]:
        # CherryPy reads and parses the whole multipart body before this runs: a slow client
        # keeps the worker in the "reading the request" phase, never in this handler.
        if file is None or not hasattr(file, "file"):
            raise cherrypy.HTTPError(400, "send a multipart field named 'file'")
        size = 0
        while True:
            chunk = file.file.read(65536)
            if not chunk:
                break
            size += len(chunk)
        return {"filename": file.filename, "bytes": size}
