"""A loopback HTTP fake of Alpaca's Trading API v2, for an unmodified ``alpaca-py`` TradingClient.

The fake speaks Alpaca's wire protocol (``/v2/...`` paths, ``APCA-API-KEY-ID`` /
``APCA-API-SECRET-KEY`` headers, JSON bodies, ``{"code": ..., "message": ...}``
errors with Alpaca's eight-digit codes, UUID order and asset ids, decimal
strings, RFC 3339 timestamps) on ``127.0.0.1`` and fronts an in-memory
:class:`nija_guard.testing.Venue`: every order, fill and holding is the
venue's, so a test can move prices with :meth:`FakeAlpaca.set_price`, fill a
resting order with :meth:`FakeAlpaca.fill` and assert on the venue while the
code under test talks to Alpaca through ``alpaca.trading.client.TradingClient``.

>>> with FakeAlpaca(positions={"AAPL": 10}, cash=100_000) as fake:
...     client = fake.client()  # a TradingClient pointed at the fake, retries without waiting
...     placed = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=4, side="sell",
...                                                     time_in_force="day"))
...     placed.status  # "accepted": the POST reply never reports the fill, as on Alpaca
...     client.get_order_by_id(placed.id).status  # "filled"

What it serves, and how it mirrors Alpaca:

- ``GET /v2/account`` (a TradeAccount from the venue's USD and holdings: ``cash``
  counts USD held for open buys, ``buying_power`` does not; a cash account:
  multiplier 1, no shorting);
- ``GET /v2/assets/{symbol_or_asset_id}``: stocks (``AAPL``, ``MSFT``: fractionable,
  qty step 1e-9; ``WHOLE``: whole shares only) and one crypto pair ``BTC/USD``
  (its position symbol is ``BTCUSD``, as on Alpaca); the venue's market for a
  stock ``AAPL`` is ``AAPL/USD``;
- ``POST /v2/orders``: market, limit, stop, stop_limit; ``qty`` or ``notional``;
  ``time_in_force`` day/gtc/opg/cls/ioc/fok (crypto: gtc/ioc); ``client_order_id``
  (at most 128 characters, unique among every order ever placed, whatever its
  status); market orders fill at once at the venue's price, limit orders that do
  not cross rest (``new``) until :meth:`FakeAlpaca.fill` or a price move fills them;
- the POST reply is Alpaca's acknowledgement, not the outcome: status
  ``accepted`` (``ack_status``), ``filled_qty`` "0", no ``filled_at``; the fill
  shows on ``GET /v2/orders/{id}``. ``ack_status=None`` replies with the order as
  the venue has it right after placement;
- ``GET /v2/orders`` (``status`` open/closed/all, ``symbols``, ``side``, ``limit``
  [default 50, at most 500], ``after``/``until`` on the submission time,
  ``direction``; ``nested`` accepted and ignored: no multi-leg orders),
  ``GET /v2/orders/{order_id}``, ``GET /v2/orders:by_client_order_id``,
  ``DELETE /v2/orders/{order_id}`` (204), ``DELETE /v2/orders`` (207, one
  ``{id, status}`` per open order), ``PATCH /v2/orders/{order_id}`` (replace:
  the old order becomes ``replaced`` with ``replaced_by``, the new one carries
  ``replaces``);
- ``GET /v2/positions``, ``GET /v2/positions/{symbol_or_asset_id}``,
  ``DELETE /v2/positions/{symbol_or_asset_id}`` (``qty`` or ``percentage``: a
  market sell, its Order replied), ``DELETE /v2/positions`` (``cancel_orders``;
  207, one ``{symbol, status, body}`` per position, ``body`` the Order or the
  refusal); positions are long only, ``qty_available`` is the quantity not held
  by open sell orders;
- sells are refused beyond ``qty_available`` (403, code 40310000, with
  Alpaca's ``available``/``existing_qty``/``held_for_orders``/``related_orders``
  fields): the account cannot short, and a long is never flipped short;
- authentication: both key headers must match, else 401 ``40110000``; every
  request is logged with ``signed`` = whether it was authenticated;
- faults (:meth:`~fakes._http.LoopbackFake.inject`), the request log and
  :attr:`~fakes._http.LoopbackFake.unknown` work as in the other fakes. A path
  with an id in it is logged, and matched by ``inject``/``requests_to``, as its
  template (:data:`ORDER`, :data:`POSITION`, :data:`ASSET`), the id being in the
  request's ``params`` under the template's name;
- alpaca-py retries 429 and 504 by itself (3 times): :meth:`FakeAlpaca.client`
  sets its wait to 0. A 504 after the venue acted, then the retry, is what
  ``client_order_id`` uniqueness is for: the retry gets 422 ``client_order_id
  must be unique`` and the order exists once.

Error texts are Alpaca's where they could be found in public material
(:data:`ERRORS` says which are not). Deliberate simplifications: no market
hours (the market is always open, day orders never expire), no fees, no
multi-leg/bracket/trailing-stop orders, no shorting, no margin; a limit order
that crosses fills at its limit price; ``min_order_size`` is reported, not
enforced; a replacement is a fresh order for the new (or the old remaining)
quantity.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import ccxt

from nija_guard.testing import Market, Venue, VenueOrder

from ._http import FAULTS, Call, LoopbackFake, RecordedRequest, Reply, json_reply

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = [
    "ACCOUNT",
    "ASSET",
    "BY_CLIENT_ID",
    "DEFAULT_API_KEY",
    "DEFAULT_ASSETS",
    "DEFAULT_SECRET_KEY",
    "ERRORS",
    "FAULTS",
    "ORDER",
    "ORDERS",
    "POSITION",
    "POSITIONS",
    "AlpacaAsset",
    "AlpacaError",
    "FakeAlpaca",
    "RecordedRequest",
]

#: The key pair a fake accepts unless told otherwise (paper keys start with PK).
DEFAULT_API_KEY = "PKTESTFAKEALPACAKEY1"
DEFAULT_SECRET_KEY = "fake-alpaca-secret-key-0000000000000000"

# The routes, as the request log and inject() name them.
ACCOUNT = "/v2/account"
ASSET = "/v2/assets/{symbol_or_asset_id}"
ORDERS = "/v2/orders"
ORDER = "/v2/orders/{order_id}"
BY_CLIENT_ID = "/v2/orders:by_client_order_id"
POSITIONS = "/v2/positions"
POSITION = "/v2/positions/{symbol_or_asset_id}"

_NAMESPACE = uuid.UUID("5b0c3f0e-8d3a-4c4e-9a57-6a6c7061ca00")
ZERO = Decimal(0)
QTY_STEP = Decimal("0.000000001")  # qty and notional: up to 9 decimals
MAX_CLIENT_ORDER_ID = 128
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
EQUITY_TIFS = ("day", "gtc", "opg", "cls", "ioc", "fok")
CRYPTO_TIFS = ("gtc", "ioc")
PAGE_DEFAULT, PAGE_MAX = 50, 500
FINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})

#: Error texts. Those marked "unverified" are the fake's own wording where no
#: Alpaca reply could be found in public material; their status and code follow
#: Alpaca's scheme (400xxxxx validation, 403 business refusals, 422 42210000).
ERRORS: dict[str, tuple[int, int, str]] = {
    "unauthorized": (401, 40110000, "request is not authorized"),
    "duplicate": (422, 40010001, "client_order_id must be unique"),
    "insufficient_qty": (
        403,
        40310000,
        "insufficient qty available for order (requested: {requested}, available: {available})",
    ),
    "buying_power": (403, 40310000, "insufficient buying power"),
    "not_fractionable": (422, 42210000, "requested asset is not fractionable"),  # status unverified
    "order_not_found": (404, 40410000, "order not found"),
    "position_not_found": (404, 40410000, "position does not exist"),
    "asset_not_found": (404, 40410000, "asset not found"),  # unverified
    "unknown_symbol": (422, 40010001, 'asset "{symbol}" not found'),
    "not_open": (422, 42210000, 'order is already in "{status}" state'),
    "crypto_tif": (422, 42210000, "invalid crypto time_in_force"),
    "sub_penny": (
        422,
        42210000,
        "invalid {field} {value}. sub-penny increment does not fulfill minimum pricing criteria",
    ),
    "extended_hours": (422, 42210000, "extended hours order must be DAY limit orders"),
    "bad_body": (400, 40010000, "request body format is invalid"),
    "bad_order_id": (422, 40010001, "order_id is missing"),
    # unverified: validation texts of the fake's own
    "fractional_tif": (422, 42210000, "fractional orders must be DAY orders"),
    "client_id_length": (422, 40010001, "client_order_id must be at most 128 characters"),
    "required": (422, 40010001, "{field} is required"),
    "invalid": (422, 40010001, "invalid {field}"),
    "qty_xor_notional": (422, 40010001, "only one of qty or notional may be specified"),
    "qty_xor_percentage": (422, 40010001, "only one of qty or percentage may be specified"),
    "notional_market": (422, 42210000, "notional orders must be market orders"),
    "unsupported": (422, 40010001, "the fake does not support {what}"),
    "endpoint": (404, 40410000, "endpoint not found"),
    "internal": (500, 50010000, "internal server error occurred"),
}


class AlpacaError(Exception):
    """An Alpaca error reply: ``{"code": code, "message": message, ...}`` with ``status``."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        # Alpaca's error objects come with their keys sorted.
        return dict(sorted({"code": self.code, "message": self.message, **self.extra}.items()))


def _err(name: str, **fields: Any) -> AlpacaError:
    status, code, text = ERRORS[name]
    return AlpacaError(status, code, text.format(**fields))


# -- formats -------------------------------------------------------------------------
def _num(value: Decimal | None) -> str | None:
    """A decimal as Alpaca writes it: ``"10"``, ``"0.5"``, ``"190.25"`` (no exponent)."""
    if value is None:
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _ratio(value: Decimal) -> str:
    text = _num(value.quantize(Decimal("1e-10")))
    assert text is not None
    return text


def _iso(ms: int | None) -> str | None:
    """RFC 3339 in UTC with microseconds and ``Z``, as Alpaca's timestamps."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms_of(text: str, field: str) -> int:
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        try:
            moment = datetime.strptime(raw, "%Y-%m-%d")
        except ValueError:
            raise _err("invalid", field=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _decimal(value: Any, field: str) -> Decimal:
    """A JSON number or a numeric string; ``invalid <field>`` otherwise."""
    if isinstance(value, bool) or value is None:
        raise _err("invalid", field=field)
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise _err("invalid", field=field) from None
    else:
        raise _err("invalid", field=field)
    if not number.is_finite():
        raise _err("invalid", field=field)
    return number


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- assets --------------------------------------------------------------------------
@dataclass(frozen=True)
class AlpacaAsset:
    """One tradable asset, and how the fake maps it onto a venue market."""

    symbol: str  # as orders and assets name it: "AAPL", "BTC/USD"
    price: Decimal  # the venue's starting price (and the "last day" close)
    asset_class: str = "us_equity"  # or "crypto"
    exchange: str = "NASDAQ"
    name: str = ""
    fractionable: bool = True
    marginable: bool = True
    shortable: bool = True
    easy_to_borrow: bool = True
    min_order_size: Decimal | None = None
    price_increment: Decimal | None = None

    @property
    def is_crypto(self) -> bool:
        return self.asset_class == "crypto"

    @property
    def venue_symbol(self) -> str:
        """The venue's market: ``AAPL/USD`` for a stock, the pair itself for crypto."""
        return self.symbol if self.is_crypto else f"{self.symbol}/USD"

    @property
    def base(self) -> str:
        """The venue asset a position is made of: ``AAPL``, ``BTC``."""
        return self.venue_symbol.split("/")[0]

    @property
    def position_symbol(self) -> str:
        """What positions call it: ``AAPL``; ``BTCUSD`` for ``BTC/USD``."""
        return self.symbol.replace("/", "")

    @property
    def id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"asset:{self.symbol}"))

    @property
    def qty_step(self) -> Decimal:
        return QTY_STEP if self.fractionable else Decimal(1)

    def market(self) -> Market:
        return Market(
            symbol=self.venue_symbol,
            price=self.price,
            amount_step=self.qty_step,
            price_step=self.price_increment or Decimal("0.01"),
            min_amount=self.qty_step,
            min_cost=ZERO,
        )


DEFAULT_ASSETS: tuple[AlpacaAsset, ...] = (
    AlpacaAsset("AAPL", Decimal("190"), name="Apple Inc. Common Stock"),
    AlpacaAsset("MSFT", Decimal("420"), name="Microsoft Corporation Common Stock"),
    # A made-up ticker for an asset traded in whole shares only.
    AlpacaAsset(
        "WHOLE", Decimal("25"), exchange="NYSE", name="Whole Shares Only Corp", fractionable=False
    ),
    AlpacaAsset(
        "BTC/USD",
        Decimal("60000"),
        asset_class="crypto",
        exchange="CRYPTO",
        name="Bitcoin  / US Dollar",
        marginable=False,
        shortable=False,
        easy_to_borrow=False,
        min_order_size=Decimal("0.0001"),
        price_increment=Decimal("1"),
    ),
)


@dataclass
class _Meta:
    """What Alpaca reports about an order that the venue does not keep."""

    id: str
    client_order_id: str
    asset: AlpacaAsset
    type: str  # market, limit, stop, stop_limit
    time_in_force: str
    notional: Decimal | None = None
    extended_hours: bool = False
    replaced_by: str | None = None
    replaces: str | None = None
    replaced_at: int | None = None


@dataclass
class _Spec:
    """A validated order request, ready for the venue."""

    asset: AlpacaAsset
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    client_order_id: str
    extended_hours: bool


#: A route: the request in, a reply out (AlpacaError raised for an error reply).
Route = Callable[[Call], Reply]

_SYMBOL_RE = re.compile(r"^[A-Za-z0-9.\-]+(?:/[A-Za-z0-9]+)?$")


class FakeAlpaca(LoopbackFake):
    """Alpaca's Trading API v2 on loopback, backed by a :class:`~nija_guard.testing.Venue`.

    ``positions`` maps symbols (``AAPL``, ``BTCUSD`` or ``BTC/USD``) to the
    quantity held, bought at ``entry_prices`` (default: the asset's price);
    ``cash`` is the account's USD. Or pass a ``venue`` with a ``X/USD`` market
    (the pair itself for crypto) per asset. ``ack_status`` is the status the
    POST reply reports (``None``: the order as placed, fills included).
    """

    name = "fake-alpaca"
    #: Alpaca's Content-Type (where fakes._http lets a fake set it).
    json_type = "application/json; charset=UTF-8"

    def __init__(
        self,
        venue: Venue | None = None,
        *,
        positions: Mapping[str, object] | None = None,
        cash: object = 100_000,
        entry_prices: Mapping[str, object] | None = None,
        assets: Iterable[AlpacaAsset] = DEFAULT_ASSETS,
        api_key: str = DEFAULT_API_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        ack_status: str | None = "accepted",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.assets: dict[str, AlpacaAsset] = {a.symbol: a for a in assets}
        self.api_key = api_key
        self.secret_key = secret_key
        self.ack_status = ack_status
        self.account_id = str(uuid.uuid5(_NAMESPACE, f"account:{api_key}"))
        self._by_name: dict[str, AlpacaAsset] = {}
        for asset in self.assets.values():
            for name in (asset.symbol, asset.position_symbol, asset.id):
                self._by_name[name] = asset
        if venue is not None and positions is not None:
            raise TypeError("pass either a venue or positions, not both")
        held: dict[str, Decimal] = {}
        for name, qty in (positions or {}).items():
            held[self._asset_named(name).base] = Decimal(str(qty))
        if venue is None:
            free = {"USD": Decimal(str(cash)), **held}
            markets = {a.venue_symbol: a.market() for a in self.assets.values()}
            # Alpaca charges no commission on stocks; the venue charges no fee at all.
            venue = Venue(markets=markets, free=free, clock=clock, fee_rate=ZERO)
        missing = [
            a.venue_symbol for a in self.assets.values() if a.venue_symbol not in venue.markets
        ]
        if missing:
            raise ValueError(f"the venue has no market for {missing}")
        self.venue = venue
        self._lastday = {
            a.symbol: venue.markets[a.venue_symbol].price for a in self.assets.values()
        }
        # (qty, average entry price) held before any trade the venue records.
        self._basis: dict[str, tuple[Decimal, Decimal]] = {}
        for asset in self.assets.values():
            qty = venue.holdings(asset.base)
            if qty > 0:
                price = (entry_prices or {}).get(asset.symbol) or (entry_prices or {}).get(
                    asset.position_symbol
                )
                entry = Decimal(str(price)) if price is not None else self._lastday[asset.symbol]
                self._basis[asset.symbol] = (qty, entry)
        self._meta: dict[str, _Meta] = {}  # venue order id -> meta
        self._ids: dict[str, str] = {}  # Alpaca order id -> venue order id
        self._client_ids: dict[str, str] = {}  # client_order_id -> venue order id (all, ever)
        self._sent: list[Any] = []
        self._created = venue.now_ms()
        routes: dict[tuple[str, str], Route] = {
            ("GET", ACCOUNT): self._account,
            ("GET", ASSET): self._asset,
            ("POST", ORDERS): self._submit,
            ("GET", ORDERS): self._list_orders,
            ("DELETE", ORDERS): self._cancel_all,
            ("GET", ORDER): self._get_order,
            ("DELETE", ORDER): self._cancel_order,
            ("PATCH", ORDER): self._replace_order,
            ("GET", BY_CLIENT_ID): self._get_by_client_id,
            ("GET", POSITIONS): self._list_positions,
            ("DELETE", POSITIONS): self._close_all,
            ("GET", POSITION): self._get_position,
            ("DELETE", POSITION): self._close_position,
        }
        self._routes.update(routes)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeAlpaca:
        super().start()
        return self

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    # -- clients -------------------------------------------------------------------
    def client(
        self,
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
        retry_wait: float = 0,
        raw_data: bool = False,
    ) -> TradingClient:
        """A real ``TradingClient`` pointed at this fake; its 429/504 retries do not wait."""
        from alpaca.trading.client import TradingClient

        client = TradingClient(
            api_key or self.api_key,
            secret_key or self.secret_key,
            paper=True,
            raw_data=raw_data,
            url_override=self.url,
        )
        client._retry_wait = retry_wait  # type: ignore[assignment]
        return client

    # -- test helpers ----------------------------------------------------------------
    def orders_sent(self) -> list[Any]:
        """Every ``POST /v2/orders`` body received, decoded, in order (rejected ones too)."""
        with self._lock:
            return [dict(b) if isinstance(b, dict) else b for b in self._sent]

    def asset(self, name: str) -> AlpacaAsset:
        """The asset named ``AAPL``, ``BTC/USD``, ``BTCUSD`` or by its id."""
        return self._asset_named(name)

    def set_price(self, symbol: str, price: object) -> list[str]:
        """Move ``symbol``'s price; resting orders that now cross fill. Their Alpaca ids."""
        touched = self.venue.set_price(self._asset_named(symbol).venue_symbol, price)
        with self.venue.lock:
            return [self._meta_for(o).id for o in touched]

    def fill(self, order_id: str, qty: object = None) -> dict[str, Any]:
        """Fill a resting order (all that remains, or ``qty``) at its limit price.

        ``order_id`` is the Alpaca order id; the order as GET returns it is returned.
        """
        with self.venue.lock:
            order = self.venue_order(order_id)
            self.venue.fill(order.id, qty)
            return self._order_json(order)

    def venue_order(self, order_id: str) -> VenueOrder:
        """The venue's order behind an Alpaca order id."""
        with self.venue.lock:
            order = self._order_by_id(str(order_id))
            if order is None:
                raise KeyError(f"no order {order_id}")
            return order

    def order(self, order_id: str) -> dict[str, Any]:
        """The order as ``GET /v2/orders/{order_id}`` returns it."""
        with self.venue.lock:
            return self._order_json(self.venue_order(order_id))

    def alpaca_id(self, venue_order_id: str) -> str:
        """The Alpaca order id of a venue order id."""
        with self.venue.lock:
            return self._meta_for(self.venue.orders[venue_order_id]).id

    def holdings(self, symbol: str) -> Decimal:
        """The position's true quantity right now (no lag): what tests assert on."""
        return self.venue.holdings(self._asset_named(symbol).base)

    @property
    def cash(self) -> Decimal:
        """The account's true USD right now, held for open buys included."""
        return self.venue.holdings("USD")

    # -- dispatch hooks ------------------------------------------------------------
    def _prepare(self, call: Call) -> None:
        params: dict[str, str] = dict(parse_qsl(call.query, keep_blank_values=True))
        body = _decode(call.body)
        if isinstance(body, dict):
            for key, value in body.items():
                if value is None:
                    continue
                params[key] = value if isinstance(value, str) else _dump(value)
        template, path_params = self._template(call.method, call.path)
        call.path = template
        params.update(path_params)
        call.params = params
        call.json = body  # logged as the request's ``body`` where fakes._http records one
        # ``signature``: set when the request carries this fake's key pair (logged as ``signed``).
        call.signature = "APCA-API-KEY-ID" if self._authenticated(call) else None
        if call.method == "POST" and template == ORDERS:
            with self._lock:
                self._sent.append(body if body is not None else call.body)

    def _handle(self, call: Call, route: Any) -> Reply:
        try:
            if call.signature is None:
                raise _err("unauthorized")
            with self.venue.lock:
                reply: Reply = route(call)
                return reply
        except AlpacaError as exc:
            return json_reply(exc.status, exc.body())
        except Exception:
            # A bug in the fake: reply like Alpaca's internal error, keep the traceback.
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return json_reply(500, _err("internal").body())

    def _not_found(self, call: Call) -> Reply:
        return json_reply(404, _err("endpoint").body())

    def _fault_body(self, status: int) -> Mapping[str, Any] | str:
        """What Alpaca (or the nginx in front of it) replies with ``status``."""
        if status == 429:
            return {"code": 42910000, "message": "rate limit exceeded"}
        if status in (502, 503, 504):
            reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}.get(
                status, "Gateway Time-out"
            )
            return (
                f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
        if status >= 500:
            return _err("internal").body()
        return {"code": status * 100000, "message": "request failed"}

    def _authenticated(self, call: Call) -> bool:
        key = call.header("APCA-API-KEY-ID") or ""
        secret = call.header("APCA-API-SECRET-KEY") or ""
        key_ok = hmac.compare_digest(key.encode(), self.api_key.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self.secret_key.encode())
        return key_ok and secret_ok

    def _template(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The route template of a concrete path, and the path's parameters."""
        for prefix, template, name in (
            ("/v2/orders/", ORDER, "order_id"),
            ("/v2/positions/", POSITION, "symbol_or_asset_id"),
            ("/v2/assets/", ASSET, "symbol_or_asset_id"),
        ):
            if path.startswith(prefix) and (method, template) in self._routes:
                value = unquote(path[len(prefix) :])
                if value and (_SYMBOL_RE.match(value) or _is_uuid(value)):
                    return template, {name: value}
        return path, {}

    # -- naming ------------------------------------------------------------------------
    def _asset_named(self, name: str) -> AlpacaAsset:
        asset = self._by_name.get(name) or self._by_name.get(name.upper())
        if asset is None:
            raise KeyError(f"no asset {name!r}")
        return asset

    def _find_asset(self, name: str) -> AlpacaAsset | None:
        return self._by_name.get(name) or self._by_name.get(name.upper())

    def _meta_for(self, order: VenueOrder) -> _Meta:
        meta = self._meta.get(order.id)
        if meta is None:
            # An order placed on the venue directly, not through this fake.
            asset = next(a for a in self.assets.values() if a.venue_symbol == order.symbol)
            if order.trigger_price is not None:
                kind = "stop_limit" if order.type == "limit" else "stop"
            else:
                kind = order.type
            meta = _Meta(
                id=str(uuid.uuid5(_NAMESPACE, f"order:{order.id}")),
                client_order_id=order.client_order_id
                or str(uuid.uuid5(_NAMESPACE, f"client:{order.id}")),
                asset=asset,
                type=kind,
                time_in_force="gtc",
            )
            self._remember(order, meta)
        return meta

    def _remember(self, order: VenueOrder, meta: _Meta) -> None:
        self._meta[order.id] = meta
        self._ids[meta.id] = order.id
        self._client_ids.setdefault(meta.client_order_id, order.id)

    def _known_orders(self) -> list[VenueOrder]:
        """Every venue order on one of the fake's assets (meta created for each)."""
        symbols = {a.venue_symbol for a in self.assets.values()}
        orders = [o for o in self.venue.all_orders() if o.symbol in symbols]
        for order in orders:
            self._meta_for(order)
        return orders

    def _order_by_id(self, order_id: str) -> VenueOrder | None:
        if order_id not in self._ids:
            self._known_orders()
        venue_id = self._ids.get(order_id)
        return self.venue.orders.get(venue_id) if venue_id is not None else None

    def _order_by_client_id(self, client_order_id: str) -> VenueOrder | None:
        if client_order_id not in self._client_ids:
            self._known_orders()
        venue_id = self._client_ids.get(client_order_id)
        return self.venue.orders.get(venue_id) if venue_id is not None else None

    def _order_param(self, call: Call) -> VenueOrder:
        order_id = call.params.get("order_id", "")
        if not _is_uuid(order_id):
            raise _err("bad_order_id")
        order = self._order_by_id(str(uuid.UUID(order_id)))
        if order is None:
            raise _err("order_not_found")
        return order

    # -- rendering ---------------------------------------------------------------------
    def _status(self, order: VenueOrder, meta: _Meta) -> str:
        if meta.replaced_by is not None:
            return "replaced"
        if order.status == "open":
            return "partially_filled" if order.filled > 0 else "new"
        return {"closed": "filled"}.get(order.status, order.status)

    def _order_json(self, order: VenueOrder, *, ack: bool = False) -> dict[str, Any]:
        """An order as Alpaca returns it; ``ack``: as the reply to its submission."""
        meta = self._meta_for(order)
        asset = meta.asset
        status = self._status(order, meta)
        created = _iso(order.timestamp)
        updated = _iso(order.updated_timestamp or order.timestamp)
        filled_qty: Decimal = order.filled
        average = order.average
        final_at = updated if status in ("canceled", "expired", "rejected") else None
        filled_at = _iso(order.last_trade_timestamp) if status == "filled" else None
        if ack and self.ack_status is not None:
            # Alpaca acknowledges a submission before the venue reports anything.
            status, filled_qty, average = self.ack_status, ZERO, None
            updated, final_at, filled_at = created, None, None
        return {
            "id": meta.id,
            "client_order_id": meta.client_order_id,
            "created_at": created,
            "updated_at": updated,
            "submitted_at": created,
            "filled_at": filled_at,
            "expired_at": final_at if status == "expired" else None,
            "canceled_at": final_at if status == "canceled" else None,
            "failed_at": final_at if status == "rejected" else None,
            "replaced_at": _iso(meta.replaced_at) if status == "replaced" else None,
            "replaced_by": meta.replaced_by,
            "replaces": meta.replaces,
            "asset_id": asset.id,
            "symbol": asset.symbol,
            "asset_class": asset.asset_class,
            "notional": _num(meta.notional),
            "qty": None if meta.notional is not None else _num(order.amount),
            "filled_qty": _num(filled_qty),
            "filled_avg_price": _num(average),
            "order_class": "simple",
            "order_type": meta.type,
            "type": meta.type,
            "side": order.side,
            "position_intent": "buy_to_open" if order.side == "buy" else "sell_to_close",
            "time_in_force": meta.time_in_force,
            "limit_price": _num(order.price) if meta.type in ("limit", "stop_limit") else None,
            "stop_price": _num(order.trigger_price),
            "status": status,
            "extended_hours": meta.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "expires_at": None,
        }

    def _price(self, asset: AlpacaAsset) -> Decimal:
        return self.venue.markets[asset.venue_symbol].price

    def _entry_price(self, asset: AlpacaAsset) -> Decimal | None:
        """Average entry price: the starting basis, then every fill replayed in order."""
        qty, average = self._basis.get(asset.symbol, (ZERO, ZERO))
        for trade in self.venue.trades:
            if trade.symbol != asset.venue_symbol:
                continue
            if trade.side == "buy":
                total = qty + trade.amount
                average = (average * qty + trade.price * trade.amount) / total
                qty = total
            else:
                qty -= trade.amount
                if qty <= 0:
                    qty, average = ZERO, ZERO
        return average if qty > 0 else None

    def _held(self, asset: AlpacaAsset) -> tuple[Decimal, Decimal]:
        """(qty, qty_available) from the account snapshot (which may lag, as on Alpaca)."""
        snap = self.venue.balance()
        free = snap.free.get(asset.base, ZERO)
        return free + snap.used.get(asset.base, ZERO), free

    def _position_json(
        self, asset: AlpacaAsset, qty: Decimal, available: Decimal
    ) -> dict[str, Any]:
        price = self._price(asset)
        lastday = self._lastday[asset.symbol]
        entry = self._entry_price(asset) or price
        market_value = qty * price
        cost_basis = qty * entry
        unrealized = market_value - cost_basis
        intraday = qty * (price - lastday)
        lastday_value = qty * lastday
        return {
            "asset_id": asset.id,
            "symbol": asset.position_symbol,
            "exchange": asset.exchange,
            "asset_class": asset.asset_class,
            "asset_marginable": asset.marginable,
            "qty": _num(qty),
            "avg_entry_price": _num(entry.quantize(Decimal("1e-9")).normalize()),
            "side": "long",
            "market_value": _num(market_value),
            "cost_basis": _num(cost_basis),
            "unrealized_pl": _num(unrealized),
            "unrealized_plpc": _ratio(unrealized / cost_basis) if cost_basis else "0",
            "unrealized_intraday_pl": _num(intraday),
            "unrealized_intraday_plpc": (
                _ratio(intraday / lastday_value) if lastday_value else "0"
            ),
            "current_price": _num(price),
            "lastday_price": _num(lastday),
            "change_today": _ratio((price - lastday) / lastday) if lastday else "0",
            "qty_available": _num(available),
        }

    def _positions(self) -> list[tuple[AlpacaAsset, Decimal, Decimal]]:
        held = []
        for asset in sorted(self.assets.values(), key=lambda a: a.position_symbol):
            qty, available = self._held(asset)
            if qty > 0:
                held.append((asset, qty, available))
        return held

    # -- account and assets ------------------------------------------------------------
    def _account(self, call: Call) -> Reply:
        snap = self.venue.balance()
        free_usd = snap.free.get("USD", ZERO)
        cash = free_usd + snap.used.get("USD", ZERO)
        long_value = ZERO
        last_long_value = ZERO
        for asset in self.assets.values():
            qty = snap.free.get(asset.base, ZERO) + snap.used.get(asset.base, ZERO)
            long_value += qty * self._price(asset)
            last_long_value += qty * self._lastday[asset.symbol]
        equity = cash + long_value
        return json_reply(
            200,
            {
                "id": self.account_id,
                "admin_configurations": {},
                "user_configurations": None,
                "account_number": "PA3" + self.account_id.replace("-", "")[:9].upper(),
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "options_approved_level": 0,
                "options_trading_level": 0,
                "currency": "USD",
                "buying_power": _num(free_usd),
                "regt_buying_power": _num(free_usd),
                "daytrading_buying_power": "0",
                "effective_buying_power": _num(free_usd),
                "non_marginable_buying_power": _num(free_usd),
                "options_buying_power": _num(free_usd),
                "bod_dtbp": "0",
                "cash": _num(cash),
                "accrued_fees": "0",
                "portfolio_value": _num(equity),
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "created_at": _iso(self._created),
                "trade_suspended_by_user": False,
                "multiplier": "1",
                "shorting_enabled": False,
                "equity": _num(equity),
                "last_equity": _num(cash + last_long_value),
                "long_market_value": _num(long_value),
                "short_market_value": "0",
                "position_market_value": _num(long_value),
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "daytrade_count": 0,
                "balance_asof": (_iso(snap.timestamp) or "")[:10],
                "crypto_tier": 1,
                "intraday_adjustments": "0",
                "pending_reg_taf_fees": "0",
            },
        )

    def _asset(self, call: Call) -> Reply:
        asset = self._find_asset(call.params.get("symbol_or_asset_id", ""))
        if asset is None:
            raise _err("asset_not_found")
        step = asset.qty_step
        return json_reply(
            200,
            {
                "id": asset.id,
                "class": asset.asset_class,
                "exchange": asset.exchange,
                "symbol": asset.symbol,
                "name": asset.name,
                "status": "active",
                "tradable": True,
                "marginable": asset.marginable,
                "maintenance_margin_requirement": 30 if asset.marginable else 100,
                "margin_requirement_long": "30" if asset.marginable else "100",
                "margin_requirement_short": "100",
                "shortable": asset.shortable,
                "easy_to_borrow": asset.easy_to_borrow,
                "fractionable": asset.fractionable,
                "attributes": [] if asset.is_crypto else ["has_options"],
                "min_order_size": _num(asset.min_order_size or step),
                "min_trade_increment": _num(step),
                "price_increment": _num(asset.price_increment or Decimal("0.01")),
            },
        )

    # -- order requests ----------------------------------------------------------------
    def _body(self, call: Call) -> dict[str, Any]:
        if not call.body:
            return {}
        body = _decode(call.body, exact=True)
        if not isinstance(body, dict):
            raise _err("bad_body")
        return {k: v for k, v in body.items() if v is not None}

    def _check_price(self, asset: AlpacaAsset, value: Decimal, field: str) -> None:
        if value <= 0:
            raise _err("invalid", field=field)
        if asset.is_crypto:
            return
        # Stocks: pennies from $1 up, hundredths of a penny below.
        allowed = 2 if value >= 1 else 4
        if _decimals(value) > allowed:
            raise _err("sub_penny", field=field, value=_num(value))

    def _parse_order(self, body: Mapping[str, Any]) -> _Spec:
        """Validate a ``POST /v2/orders`` body as Alpaca does (shape first, then the account)."""
        if body.get("order_class") not in (None, "", "simple"):
            raise _err("unsupported", what=f"order_class {body['order_class']}")
        symbol = body.get("symbol")
        if not symbol:
            raise _err("required", field="symbol")
        if not isinstance(symbol, str):
            raise _err("invalid", field="symbol")
        asset = self._find_asset(symbol)
        if asset is None:
            raise _err("unknown_symbol", symbol=symbol)
        side = body.get("side")
        if not side:
            raise _err("required", field="side")
        if side not in ("buy", "sell"):
            raise _err("invalid", field="side")
        kind = body.get("type") or body.get("order_type")
        if not kind:
            raise _err("required", field="type")
        if kind == "trailing_stop":
            raise _err("unsupported", what="trailing_stop orders")
        if kind not in ORDER_TYPES:
            raise _err("invalid", field="type")
        tif = body.get("time_in_force")
        if not tif:
            raise _err("required", field="time_in_force")
        if tif not in EQUITY_TIFS:
            raise _err("invalid", field="time_in_force")
        if asset.is_crypto and tif not in CRYPTO_TIFS:
            raise _err("crypto_tif")
        has_qty, has_notional = "qty" in body, "notional" in body
        if has_qty and has_notional:
            raise _err("qty_xor_notional")
        if not has_qty and not has_notional:
            raise _err("required", field="qty")
        notional = None
        if has_notional:
            notional = _decimal(body["notional"], "notional")
            if notional <= 0 or _decimals(notional) > 9:
                raise _err("invalid", field="notional")
            if kind != "market":
                raise _err("notional_market")
            qty = ZERO  # set from the price below
        else:
            qty = _decimal(body["qty"], "qty")
            if qty <= 0 or _decimals(qty) > 9:
                raise _err("invalid", field="qty")
        limit_price = stop_price = None
        if kind in ("limit", "stop_limit"):
            if "limit_price" not in body:
                raise _err("required", field="limit_price")
            limit_price = _decimal(body["limit_price"], "limit_price")
            self._check_price(asset, limit_price, "limit_price")
        if kind in ("stop", "stop_limit"):
            if "stop_price" not in body:
                raise _err("required", field="stop_price")
            stop_price = _decimal(body["stop_price"], "stop_price")
            self._check_price(asset, stop_price, "stop_price")
        fractional = notional is not None or qty % 1 != 0
        if fractional and not asset.is_crypto:
            if not asset.fractionable:
                raise _err("not_fractionable")
            if tif != "day":
                raise _err("fractional_tif")
        extended = _truthy(body.get("extended_hours", False))
        if extended and (kind != "limit" or tif != "day"):
            raise _err("extended_hours")
        client_order_id = body.get("client_order_id")
        if client_order_id is None or client_order_id == "":
            client_order_id = str(uuid.uuid4())
        if not isinstance(client_order_id, str):
            raise _err("invalid", field="client_order_id")
        if len(client_order_id) > MAX_CLIENT_ORDER_ID:
            raise _err("client_id_length")
        if notional is not None:
            qty = (notional / self._price(asset)).quantize(asset.qty_step, rounding=ROUND_DOWN)
            if qty <= 0:
                raise _err("invalid", field="notional")
        return _Spec(
            asset=asset,
            side=side,
            type=kind,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            stop_price=stop_price,
            client_order_id=client_order_id,
            extended_hours=extended,
        )

    def _insufficient_qty(self, asset: AlpacaAsset, requested: Decimal) -> AlpacaError:
        free = self.venue.free.get(asset.base, ZERO)
        used = self.venue.used.get(asset.base, ZERO)
        related = [
            self._meta_for(o).id
            for o in self.venue.open_orders(asset.venue_symbol)
            if o.side == "sell"
        ]
        error = _err("insufficient_qty", requested=_num(requested), available=_num(free))
        error.extra = {
            "available": _num(free),
            "existing_qty": _num(free + used),
            "held_for_orders": _num(used),
            "related_orders": related,
            "symbol": asset.position_symbol,
        }
        return error

    def _check_funds(self, spec: _Spec, released: VenueOrder | None = None) -> None:
        """The account checks, on the venue's real-time books (``released``: an order
        about to be cancelled, whose hold counts as available)."""
        asset = spec.asset
        if spec.side == "sell":
            available = self.venue.free.get(asset.base, ZERO)
            if released is not None and released.side == "sell":
                available += released.remaining
            if spec.qty > available:
                raise self._insufficient_qty(asset, spec.qty)
            return
        price = spec.limit_price or self._price(asset)
        if spec.stop_price is not None and spec.limit_price is None:
            price = max(price, spec.stop_price)
        cost = spec.qty * price
        buying_power = self.venue.free.get("USD", ZERO)
        if released is not None and released.side == "buy":
            buying_power += released.locked_amount - released.spent
        if cost > buying_power:
            raise _err("buying_power")

    def _place(self, spec: _Spec, *, replaces: _Meta | None = None) -> VenueOrder:
        asset = spec.asset
        trigger_direction = None
        if spec.stop_price is not None:
            # A sell stop triggers on a fall to the stop, a buy stop on a rise.
            trigger_direction = "down" if spec.side == "sell" else "up"
        try:
            order = self.venue.place(
                asset.venue_symbol,
                spec.side,
                "limit" if spec.limit_price is not None else "market",
                spec.qty,
                spec.limit_price,
                client_order_id=spec.client_order_id,
                trigger_price=spec.stop_price,
                trigger_direction=trigger_direction,
            )
        except ccxt.InsufficientFunds:
            if spec.side == "sell":
                raise self._insufficient_qty(asset, spec.qty) from None
            raise _err("buying_power") from None
        except ccxt.DuplicateOrderId:
            raise _err("duplicate") from None
        except ccxt.InvalidOrder as exc:
            raise AlpacaError(422, 42210000, str(exc)) from None
        meta = _Meta(
            id=str(uuid.uuid5(_NAMESPACE, f"order:{order.id}")),
            client_order_id=spec.client_order_id,
            asset=asset,
            type=spec.type,
            time_in_force=spec.time_in_force,
            notional=spec.notional,
            extended_hours=spec.extended_hours,
            replaces=replaces.id if replaces is not None else None,
        )
        self._remember(order, meta)
        if spec.time_in_force in ("ioc", "fok") and not order.is_final:
            # What a limit order does not fill at once is cancelled (the venue fills
            # a crossing order in full, so FOK and IOC agree here).
            self.venue.cancel(order.id)
        return order

    # -- orders --------------------------------------------------------------------
    def _submit(self, call: Call) -> Reply:
        spec = self._parse_order(self._body(call))
        if self._order_by_client_id(spec.client_order_id) is not None:
            raise _err("duplicate")
        self._check_funds(spec)
        order = self._place(spec)
        return json_reply(200, self._order_json(order, ack=True))

    def _list_orders(self, call: Call) -> Reply:
        p = call.params
        status = p.get("status") or "open"
        if status not in ("open", "closed", "all"):
            raise _err("invalid", field="status")
        direction = (p.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise _err("invalid", field="direction")
        try:
            limit = int(p.get("limit") or PAGE_DEFAULT)
        except ValueError:
            raise _err("invalid", field="limit") from None
        if limit <= 0:
            raise _err("invalid", field="limit")
        limit = min(limit, PAGE_MAX)
        after = _ms_of(p["after"], "after") if p.get("after") else None
        until = _ms_of(p["until"], "until") if p.get("until") else None
        side = p.get("side") or None
        wanted: set[str] | None = None
        if p.get("symbols"):
            wanted = set()
            for name in p["symbols"].split(","):
                asset = self._find_asset(name.strip())
                if asset is not None:
                    wanted.add(asset.symbol)
        selected = []
        for order in self._known_orders():
            meta = self._meta_for(order)
            final = self._status(order, meta) in FINAL
            if (status == "open" and final) or (status == "closed" and not final):
                continue
            if wanted is not None and meta.asset.symbol not in wanted:
                continue
            if side is not None and order.side != side:
                continue
            if after is not None and order.timestamp <= after:
                continue
            if until is not None and order.timestamp > until:
                continue
            selected.append(order)
        selected.sort(key=lambda o: (o.timestamp, int(o.id)), reverse=direction == "desc")
        return json_reply(200, [self._order_json(o) for o in selected[:limit]])

    def _get_order(self, call: Call) -> Reply:
        return json_reply(200, self._order_json(self._order_param(call)))

    def _get_by_client_id(self, call: Call) -> Reply:
        client_order_id = call.params.get("client_order_id") or ""
        if not client_order_id:
            raise _err("required", field="client_order_id")
        order = self._order_by_client_id(client_order_id)
        if order is None:
            raise _err("order_not_found")
        return json_reply(200, self._order_json(order))

    def _cancel(self, order: VenueOrder) -> None:
        meta = self._meta_for(order)
        status = self._status(order, meta)
        if status in FINAL:
            raise _err("not_open", status=status)
        self.venue.cancel(order.id)

    def _cancel_order(self, call: Call) -> Reply:
        self._cancel(self._order_param(call))
        return Reply(204, b"")

    def _cancel_all(self, call: Call) -> Reply:
        results = []
        for order in self._known_orders():
            if order.is_final:
                continue
            self.venue.cancel(order.id)
            results.append({"id": self._meta_for(order).id, "status": 200})
        return json_reply(207, results)

    def _replace_order(self, call: Call) -> Reply:
        old = self._order_param(call)
        old_meta = self._meta_for(old)
        status = self._status(old, old_meta)
        if status in FINAL:
            raise _err("not_open", status=status)
        body = self._body(call)
        if "trail" in body:
            raise _err("unsupported", what="trailing_stop orders")
        request: dict[str, Any] = {
            "symbol": old_meta.asset.symbol,
            "side": old.side,
            "type": old_meta.type,
            "time_in_force": body.get("time_in_force", old_meta.time_in_force),
            "qty": body.get("qty", old.remaining),
            "extended_hours": old_meta.extended_hours,
        }
        if old_meta.type in ("limit", "stop_limit"):
            request["limit_price"] = body.get("limit_price", old.price)
        if old_meta.type in ("stop", "stop_limit"):
            request["stop_price"] = body.get("stop_price", old.trigger_price)
        if "client_order_id" in body:
            request["client_order_id"] = body["client_order_id"]
        spec = self._parse_order(request)
        if self._order_by_client_id(spec.client_order_id) is not None:
            raise _err("duplicate")
        self._check_funds(spec, released=old)
        self.venue.cancel(old.id)
        new = self._place(spec, replaces=old_meta)
        old_meta.replaced_by = self._meta_for(new).id
        old_meta.replaced_at = self.venue.now_ms()
        return json_reply(200, self._order_json(new, ack=True))

    # -- positions -----------------------------------------------------------------
    def _position_param(self, call: Call) -> tuple[AlpacaAsset, Decimal, Decimal]:
        asset = self._find_asset(call.params.get("symbol_or_asset_id", ""))
        if asset is None:
            raise _err("position_not_found")
        qty, available = self._held(asset)
        if qty <= 0:
            raise _err("position_not_found")
        return asset, qty, available

    def _list_positions(self, call: Call) -> Reply:
        return json_reply(200, [self._position_json(*held) for held in self._positions()])

    def _get_position(self, call: Call) -> Reply:
        return json_reply(200, self._position_json(*self._position_param(call)))

    def _liquidate(self, asset: AlpacaAsset, qty: Decimal) -> VenueOrder:
        """The market sell that closes (part of) a position."""
        spec = _Spec(
            asset=asset,
            side="sell",
            type="market",
            time_in_force="gtc" if asset.is_crypto else "day",
            qty=qty,
            notional=None,
            limit_price=None,
            stop_price=None,
            client_order_id=str(uuid.uuid4()),
            extended_hours=False,
        )
        self._check_funds(spec)
        return self._place(spec)

    def _close_position(self, call: Call) -> Reply:
        asset, qty, _ = self._position_param(call)
        p = call.params
        if p.get("qty") and p.get("percentage"):
            raise _err("qty_xor_percentage")
        if p.get("qty"):
            wanted = _decimal(p["qty"], "qty")
            if wanted <= 0 or _decimals(wanted) > 9:
                raise _err("invalid", field="qty")
            if wanted % asset.qty_step != 0:
                raise _err("not_fractionable")
        elif p.get("percentage"):
            percentage = _decimal(p["percentage"], "percentage")
            if not 0 < percentage <= 100:
                raise _err("invalid", field="percentage")
            wanted = (qty * percentage / 100).quantize(asset.qty_step, rounding=ROUND_DOWN)
            if wanted <= 0:
                raise _err("invalid", field="percentage")
        else:
            wanted = qty
        order = self._liquidate(asset, wanted)
        return json_reply(200, self._order_json(order, ack=True))

    def _close_all(self, call: Call) -> Reply:
        if _truthy(call.params.get("cancel_orders", False)):
            for order in self._known_orders():
                if not order.is_final:
                    self.venue.cancel(order.id)
        results = []
        for asset, qty, _ in self._positions():
            # The account snapshot may lag; close what the venue holds now.
            qty = self.venue.holdings(asset.base) or qty
            try:
                order = self._liquidate(asset, qty)
            except AlpacaError as exc:
                body = exc.body()
                results.append(
                    {"symbol": asset.position_symbol, "status": exc.status, "body": body}
                )
            else:
                results.append(
                    {
                        "symbol": asset.position_symbol,
                        "status": 200,
                        "body": self._order_json(order, ack=True),
                    }
                )
        return json_reply(207, results)


def _decode(body: str, *, exact: bool = False) -> Any:
    """A JSON body; ``None`` when absent or invalid. ``exact``: numbers with a
    fraction as Decimal, digit for digit as sent (for the fake's own checks)."""
    if not body:
        return None
    try:
        return json.loads(body, parse_float=Decimal) if exact else json.loads(body)
    except ValueError:
        return None


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)
