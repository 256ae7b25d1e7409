"""A loopback HTTP fake of the Kraken spot REST API, for an unmodified ``ccxt.kraken``.

The fake speaks Kraken's wire protocol (``/0/public/*`` and ``/0/private/*``
paths, form-encoded POST bodies with a ``nonce``, ``API-Key``/``API-Sign``
HMAC-SHA512 signing, ``{"error": [...], "result": ...}`` bodies, ``E<Category>:<text>``
error strings, XXBT/ZUSD-style asset ids) on ``127.0.0.1`` and fronts an
in-memory :class:`nija_guard.testing.Venue`: every order, fill, balance and
trade is the venue's, so a test can drive prices with ``venue.set_price`` and
assert on ``venue.holdings`` while the code under test talks to Kraken through ccxt.

>>> with FakeKraken(balances={"BTC": 1, "USDT": 10_000}) as fake:
...     exchange = fake.client()
...     placed = exchange.create_market_sell_order("BTC/USDT", 0.1)  # no status, no filled
...     order = exchange.fetch_order(placed["id"])  # status "closed", filled 0.1

What it covers, and how it mirrors Kraken:

- public: ``Time``, ``SystemStatus``, ``Assets``, ``AssetPairs``, ``Ticker``,
  ``Depth`` (one level each side at the venue's price: bid == ask == last);
- private: ``Balance``, ``BalanceEx``, ``AddOrder`` (market, limit, stop-loss,
  take-profit, stop-loss-limit, take-profit-limit; ``oflags`` post/viqc;
  ``timeinforce`` GTC/IOC; ``cl_ord_id``, ``userref``, ``validate``),
  ``QueryOrders``, ``OpenOrders``, ``ClosedOrders``, ``CancelOrder`` (by txid,
  userref or ``cl_ord_id``), ``CancelAll``, ``TradesHistory``, ``QueryTrades``;
- AddOrder replies only ``descr`` and ``txid``, as Kraken does: no status, no
  filled amount, so a client has to confirm with QueryOrders;
- asset ids: BTC is ``XXBT`` (altname ``XBT``), ETH ``XETH``, USD ``ZUSD`` and
  the other legacy X/Z assets likewise (:data:`LEGACY_ASSETS`); any other asset
  (USDT, SOL, ...) is its own id and altname. A pair of two legacy assets is keyed
  by the ids (``XXBTZUSD``, altname ``XBTUSD``), any other by the altnames
  (``XBTUSDT``), as on Kraken. ccxt maps them all back to the venue's codes;
- precision and minimums come from the venue's :class:`~nija_guard.testing.Market`:
  ``lot_decimals`` from ``amount_step``, ``pair_decimals``/``tick_size`` from
  ``price_step``, ``ordermin`` = ``min_amount``, ``costmin`` = ``min_cost``;
- venue exceptions become Kraken error strings (:data:`ERRORS`), replied with
  HTTP 200 as Kraken does; the nonce must increase per API key
  (``nonce_window`` relaxes that as Kraken's key setting does);
- faults (:meth:`FakeKraken.inject`), the request log and 404s for unknown
  paths work as in the Binance fake (:mod:`fakes._http`).

Deliberate simplifications: the book has no depth (limit orders fill in full
when the venue's price crosses them); a post-only order that would take is
rejected (``EOrder:Post only order``) rather than accepted and cancelled; GTD,
trailing stops, ``close`` orders, margin and ``starttm``/``expiretm`` are not
supported; fee currency flags (fciq/fcib) reflect the venue's fee, not the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import ccxt
import ccxt.async_support

from nija_guard.testing import Market, Venue, VenueOrder, VenueTrade
from nija_guard.testing._venue import default_markets

from ._http import (
    FAULTS,
    Call,
    LoopbackFake,
    RecordedRequest,
    Reply,
    fmt,
    json_reply,
)
from .ccxt_urls import point_at

__all__ = [
    "DEFAULT_SECRET",
    "ERRORS",
    "FAULTS",
    "LEGACY_ASSETS",
    "FakeKraken",
    "KrakenError",
    "RecordedRequest",
    "point_at",
]

DEFAULT_BALANCES: Mapping[str, object] = {"BTC": 1, "ETH": 10, "USDT": 100_000}

#: A fixed, valid (base64, 64-byte) API secret: Kraken secrets are base64.
DEFAULT_SECRET = base64.b64encode(hashlib.sha512(b"nija-guard fake kraken").digest()).decode()

#: Assets Kraken names with an X (crypto) or Z (fiat) prefixed id: code -> (id, altname).
LEGACY_ASSETS: dict[str, tuple[str, str]] = {
    "BTC": ("XXBT", "XBT"),
    "ETH": ("XETH", "ETH"),
    "LTC": ("XLTC", "LTC"),
    "XRP": ("XXRP", "XRP"),
    "XLM": ("XXLM", "XLM"),
    "XMR": ("XXMR", "XMR"),
    "ZEC": ("XZEC", "ZEC"),
    "ETC": ("XETC", "ETC"),
    "DOGE": ("XXDG", "XDG"),
    "MLN": ("XMLN", "MLN"),
    "USD": ("ZUSD", "USD"),
    "EUR": ("ZEUR", "EUR"),
    "GBP": ("ZGBP", "GBP"),
    "JPY": ("ZJPY", "JPY"),
    "CAD": ("ZCAD", "CAD"),
    "AUD": ("ZAUD", "AUD"),
}
FIAT = frozenset({"USD", "EUR", "GBP", "JPY", "CAD", "AUD"})
PAGE = 50  # Kraken's page size for ClosedOrders / TradesHistory
MAX_QUERY_IDS = 50
ORDER_TYPES = (
    "market",
    "limit",
    "stop-loss",
    "take-profit",
    "stop-loss-limit",
    "take-profit-limit",
)
TRADE_TYPES = ("all", "any position", "closed position", "closing position", "no position")
OFLAGS = frozenset({"post", "fcib", "fciq", "nompp", "viqc"})
# A cl_ord_id is a UUID (long, hyphenated, or short, 32 hex digits) or free text of <= 18 chars.
CL_ORD_ID_RE = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18})$"
)
INT32 = (-(2**31), 2**31 - 1)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class KrakenError(Exception):
    """A Kraken error reply: ``{"error": [message]}``, HTTP 200 unless said otherwise."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


#: The error strings the venue's exceptions and the fake's checks become, with
#: the class ccxt.kraken 4.5.90 maps each to (pinned by tests/test_fake_kraken.py).
ERRORS: dict[str, str] = {
    "insufficient": "EOrder:Insufficient funds",  # InsufficientFunds
    # Kraken refuses a cl_ord_id already used by an open order. The exact text is
    # not documented; ccxt has no mapping for it either way: ExchangeError.
    "duplicate": "EOrder:Duplicate order",
    # ExchangeError: ccxt maps only "EQuery:Invalid asset pair" (to BadSymbol).
    "unknown_pair": "EQuery:Unknown asset pair",
    "unknown_asset": "EQuery:Unknown asset",  # BadSymbol
    # CancelOrder of an unknown or no longer open order: ccxt.kraken.cancel_order
    # turns it into OrderNotFound; anywhere else it is InvalidOrder.
    "unknown_order": "EOrder:Unknown order",
    # QueryOrders for a txid Kraken does not know: InvalidOrder (not OrderNotFound).
    "invalid_order": "EOrder:Invalid order",
    "invalid_key": "EAPI:Invalid key",  # AuthenticationError
    "invalid_signature": "EAPI:Invalid signature",  # ExchangeError: ccxt has no mapping
    "invalid_nonce": "EAPI:Invalid nonce",  # InvalidNonce
    "invalid_arguments": "EGeneral:Invalid arguments",  # BadRequest
    "order_minimum": "EOrder:Order minimum not met",  # InvalidOrder
    "cost_minimum": "EOrder:Cost minimum not met",  # ExchangeError
    "tick_size": "EOrder:Tick size check failed",  # ExchangeError
    "post_only": "EOrder:Post only order",  # ExchangeError
    "unknown_method": "EGeneral:Unknown method",  # ExchangeError
    "internal": "EGeneral:Internal error",  # ExchangeNotAvailable
}


def _err(name: str) -> KrakenError:
    return KrakenError(ERRORS[name])


def _invalid(argument: str) -> KrakenError:
    """``EGeneral:Invalid arguments:<argument>``: ccxt maps ``volume``, ``price`` and
    ``viqc`` to InvalidOrder and any other argument to ExchangeError."""
    return KrakenError(f"{ERRORS['invalid_arguments']}:{argument}")


def _decimals(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _kraken_id(prefix: str, salt: str, venue_id: str) -> str:
    """A Kraken-style id (``OQCLML-BW3P3-BUCMWZ``), derived from the venue's id."""
    digest = hashlib.sha256(f"{salt}:{venue_id}".encode()).digest()
    chars = "".join(_ID_ALPHABET[b % 32] for b in digest[:16])
    return f"{prefix}{chars[:5]}-{chars[5:10]}-{chars[10:16]}"


def _seconds(ms: int) -> float:
    """Kraken's timestamps: unix seconds as a JSON number with a fraction."""
    return ms / 1000


def asset_id(code: str) -> str:
    """Kraken's asset id for a venue asset code (``BTC`` -> ``XXBT``)."""
    return LEGACY_ASSETS.get(code, (code, code))[0]


def asset_altname(code: str) -> str:
    """Kraken's altname for a venue asset code (``BTC`` -> ``XBT``)."""
    return LEGACY_ASSETS.get(code, (code, code))[1]


@dataclass(frozen=True)
class _Pair:
    """How Kraken names one venue market."""

    market: Market
    key: str  # the AssetPairs key, ccxt's market id: XBTUSDT, XXBTZUSD
    altname: str  # what order descriptions carry: XBTUSDT, XBTUSD
    lot_decimals: int
    pair_decimals: int

    @property
    def base(self) -> str:
        return self.market.base

    @property
    def quote(self) -> str:
        return self.market.quote

    @property
    def wsname(self) -> str:
        return f"{asset_altname(self.base)}/{asset_altname(self.quote)}"


def _pair_of(market: Market) -> _Pair:
    base, quote = market.base, market.quote
    altname = asset_altname(base) + asset_altname(quote)
    legacy = base in LEGACY_ASSETS and quote in LEGACY_ASSETS
    key = asset_id(base) + asset_id(quote) if legacy else altname
    return _Pair(market, key, altname, _decimals(market.amount_step), _decimals(market.price_step))


@dataclass
class _OrderMeta:
    """What Kraken reports about an order that the venue does not keep."""

    ordertype: str  # the Kraken ordertype, e.g. stop-loss-limit
    oflags: tuple[str, ...] = ()
    userref: int | None = None
    timeinforce: str = "GTC"
    reason: str | None = None


_RENAMED_BY_CCXT: frozenset[str] | None = None


def _renamed_by_ccxt() -> frozenset[str]:
    """Asset ids that ccxt.kraken would report under another code (LUNA -> LUNC, ...)."""
    global _RENAMED_BY_CCXT
    if _RENAMED_BY_CCXT is None:
        common = ccxt.kraken().commonCurrencies
        _RENAMED_BY_CCXT = frozenset(k for k, v in common.items() if k != v)
    return _RENAMED_BY_CCXT


#: An endpoint: request params in, the JSON-able ``result`` out (or a KrakenError raised).
Endpoint = Callable[[dict[str, str]], Any]


class FakeKraken(LoopbackFake):
    """Kraken spot REST on loopback, backed by a :class:`~nija_guard.testing.Venue`."""

    name = "fake-kraken"

    def __init__(
        self,
        venue: Venue | None = None,
        *,
        api_key: str = "test-key",
        secret: str = DEFAULT_SECRET,
        balances: Mapping[str, object] | None = None,
        symbols: tuple[str, ...] | list[str] = ("BTC/USDT", "ETH/USDT"),
        nonce_window: int = 0,
    ) -> None:
        super().__init__()
        if venue is not None and balances is not None:
            raise TypeError("pass either a venue or balances, not both")
        if venue is None:
            free = {
                asset: Decimal(str(amount))
                for asset, amount in (balances or DEFAULT_BALANCES).items()
            }
            venue = Venue(markets=default_markets(symbols), free=free)
        try:
            self._secret_bytes = base64.b64decode(secret, validate=True)
        except binascii.Error:
            raise ValueError("a Kraken API secret is base64") from None
        self.venue = venue
        self.api_key = api_key
        self.secret = secret
        #: Nonces up to this much below the highest seen are accepted once (0: strictly increasing).
        self.nonce_window = nonce_window
        self._nonces: dict[str, tuple[int, set[int]]] = {}  # key -> (highest, used in window)
        self._meta: dict[str, _OrderMeta] = {}
        self._taker_trades: set[str] = set()
        self._txids: dict[str, str] = {}  # order txid -> venue order id
        self._trade_txids: dict[str, str] = {}  # trade txid -> venue trade id
        self._check_assets()
        public: dict[str, Endpoint] = {
            "Time": self._time,
            "SystemStatus": self._system_status,
            "Assets": self._assets,
            "AssetPairs": self._asset_pairs,
            "Ticker": self._ticker,
            "Depth": self._depth,
        }
        private: dict[str, Endpoint] = {
            "Balance": self._balance,
            "BalanceEx": self._balance_ex,
            "AddOrder": self._add_order,
            "QueryOrders": self._query_orders,
            "OpenOrders": self._open_orders,
            "ClosedOrders": self._closed_orders,
            "CancelOrder": self._cancel_order,
            "CancelAll": self._cancel_all,
            "TradesHistory": self._trades_history,
            "QueryTrades": self._query_trades,
        }
        # Kraken serves public methods to GET and POST, private ones to POST only.
        for method_name, handler in public.items():
            for verb in ("GET", "POST"):
                self._routes[(verb, f"/0/public/{method_name}")] = (handler, False)
        for method_name, handler in private.items():
            self._routes[("POST", f"/0/private/{method_name}")] = (handler, True)

    def _check_assets(self) -> None:
        renamed = _renamed_by_ccxt()
        codes = {a for m in self.venue.markets.values() for a in (m.base, m.quote)}
        bad = sorted(
            code
            for code in codes
            if code not in LEGACY_ASSETS and (code in renamed or asset_id(code) in renamed)
        )
        if bad:
            raise ValueError(f"ccxt.kraken would report these assets under other codes: {bad}")

    # -- clients -----------------------------------------------------------------
    def client_config(self, **config: Any) -> dict[str, Any]:
        """The ccxt config :meth:`client` uses; ``config`` (and its ``options``) win.

        ccxt.kraken has no option to skip ``Assets`` in ``load_markets`` (it is
        ``has['fetchCurrencies']``); time sync is off by default and stays off.
        """
        options = {"adjustForTimeDifference": False, **config.pop("options", {})}
        return {
            "apiKey": self.api_key,
            "secret": self.secret,
            "enableRateLimit": False,
            "timeout": 10_000,
            **config,
            "options": options,
        }

    def client(self, **config: Any) -> ccxt.kraken:
        """A sync ``ccxt.kraken`` whose API URLs point at this fake."""
        return point_at(ccxt.kraken(self.client_config(**config)), self.url)

    def async_client(self, **config: Any) -> ccxt.async_support.kraken:
        """An async ``ccxt.async_support.kraken`` pointing at this fake (close it)."""
        return point_at(ccxt.async_support.kraken(self.client_config(**config)), self.url)

    # -- naming ------------------------------------------------------------------
    def pair(self, symbol: str) -> _Pair:
        """How Kraken names the venue market ``symbol`` (``.key``, ``.altname``)."""
        return _pair_of(self.venue.market(symbol))

    def txid(self, order_id: str) -> str:
        """The Kraken txid of a venue order id."""
        txid = _kraken_id("O", "order", order_id)
        self._txids[txid] = order_id
        return txid

    def trade_txid(self, trade_id: str) -> str:
        """The Kraken txid of a venue trade id."""
        txid = _kraken_id("T", "trade", trade_id)
        self._trade_txids[txid] = trade_id
        return txid

    def _order_by_txid(self, txid: str) -> VenueOrder | None:
        with self.venue.lock:
            if txid not in self._txids:
                for order_id in self.venue.orders:
                    self.txid(order_id)
            order_id = self._txids.get(txid)
            return self.venue.orders.get(order_id) if order_id is not None else None

    def _trade_by_txid(self, txid: str) -> VenueTrade | None:
        with self.venue.lock:
            if txid not in self._trade_txids:
                for trade in self.venue.trades:
                    self.trade_txid(trade.id)
            trade_id = self._trade_txids.get(txid)
            return next((t for t in self.venue.trades if t.id == trade_id), None)

    def _pair_param(self, p: dict[str, str], *, required: bool = True) -> _Pair | None:
        raw = p.get("pair") or ""
        if not raw:
            if required:
                raise _invalid("pair")
            return None
        pairs = self._pairs_named([raw])
        return pairs[0]

    def _pairs_named(self, names: Iterable[str]) -> list[_Pair]:
        """Pairs by key, altname or wsname (as Kraken accepts); EQuery:Unknown asset pair."""
        by_name: dict[str, _Pair] = {}
        for market in self.venue.markets.values():
            pair = _pair_of(market)
            by_name.update({pair.key: pair, pair.altname: pair, pair.wsname: pair})
        picked = []
        for name in names:
            pair = by_name.get(name.strip())
            if pair is None:
                raise _err("unknown_pair")
            if pair not in picked:
                picked.append(pair)
        return picked

    def _pairs_param(self, p: dict[str, str]) -> list[_Pair]:
        """``pair``: a comma-separated list; every pair without it."""
        return self._pairs_named(p["pair"].split(",")) if p.get("pair") else self._all_pairs()

    def _all_pairs(self) -> list[_Pair]:
        return [_pair_of(m) for m in self.venue.markets.values()]

    def _asset_codes(self) -> list[str]:
        with self.venue.lock:
            codes = {a for m in self.venue.markets.values() for a in (m.base, m.quote)}
            codes |= set(self.venue.free) | set(self.venue.used)
        return sorted(codes)

    def _asset_decimals(self, code: str) -> int:
        default = 4 if code in FIAT else 10 if code in LEGACY_ASSETS else 8
        # Never coarser than a lot of a pair based on it (ccxt takes the coarser one).
        lots = [_decimals(m.amount_step) for m in self.venue.markets.values() if m.base == code]
        return max([default, *lots])

    # -- dispatch hooks ------------------------------------------------------------
    def _prepare(self, call: Call) -> None:
        params: dict[str, str] = dict(parse_qsl(call.query, keep_blank_values=True))
        if call.body:
            content_type = (call.header("Content-Type") or "").lower()
            if "json" in content_type:
                try:
                    decoded = json.loads(call.body)
                except ValueError:
                    decoded = {}
                if isinstance(decoded, dict):
                    for key, value in decoded.items():
                        params[key] = value if isinstance(value, str) else json.dumps(value)
            else:
                params.update(parse_qsl(call.body, keep_blank_values=True))
        call.params = params
        call.signature = call.header("API-Sign")

    def _handle(self, call: Call, route: Any) -> Reply:
        handler, private = route
        try:
            if private:
                self._authenticate(call)
            result = handler(call.params)
            return json_reply(200, {"error": [], "result": result})
        except KrakenError as exc:
            return json_reply(exc.status, {"error": [exc.message]})
        except Exception:
            # A bug in the fake: reply like Kraken's internal error, keep the traceback.
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return json_reply(500, {"error": [ERRORS["internal"]]})

    def _not_found(self, call: Call) -> Reply:
        return json_reply(404, {"error": [ERRORS["unknown_method"]]})

    def _fault_body(self, status: int) -> Mapping[str, Any] | str:
        """What Kraken's gateway (Cloudflare) or Kraken itself replies with ``status``."""
        if status >= 500 or status == 429:
            reason = {
                429: "Too Many Requests",
                500: "Internal Server Error",
                502: "Bad gateway",
                503: "Service Unavailable",
                504: "Gateway time-out",
                520: "Web server is returning an unknown error",
            }.get(status, "Server Error")
            return (
                f"<html><head><title>api.kraken.com | {status}: {reason}</title></head>"
                f"<body><h1>Error {status}</h1><p>{reason}</p>"
                "<p>Cloudflare Ray ID: 0000000000000000</p></body></html>"
            )
        return {"error": [ERRORS["internal"]]}

    def _authenticate(self, call: Call) -> None:
        """Kraken's checks, in its order: API key, signature, nonce."""
        key = call.header("API-Key")
        if not key or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise _err("invalid_key")
        nonce_raw = call.params.get("nonce", "")
        try:
            provided = base64.b64decode(call.signature or "", validate=True)
        except binascii.Error:
            provided = b""
        # API-Sign = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata)))
        message = call.path.encode() + hashlib.sha256((nonce_raw + call.body).encode()).digest()
        expected = hmac.new(self._secret_bytes, message, hashlib.sha512).digest()
        if not provided or not hmac.compare_digest(expected, provided):
            raise _err("invalid_signature")
        if not nonce_raw.isdigit():
            raise _err("invalid_nonce")
        nonce = int(nonce_raw)
        with self._lock:
            highest, used = self._nonces.get(key, (0, set()))
            if nonce > highest:
                floor = nonce - self.nonce_window
                used = {n for n in used if n > floor}
                used.add(nonce)
                self._nonces[key] = (nonce, used)
            elif self.nonce_window and highest - nonce < self.nonce_window and nonce not in used:
                used.add(nonce)
            else:
                raise _err("invalid_nonce")

    # -- parameters ----------------------------------------------------------------
    @staticmethod
    def _decimal(p: dict[str, str], name: str) -> Decimal | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise _invalid(name) from None
        if not value.is_finite() or value < 0:
            raise _invalid(name)
        return value

    @staticmethod
    def _int(p: dict[str, str], name: str) -> int | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name) from None
        if not INT32[0] <= value <= INT32[1]:
            raise _invalid(name)
        return value

    def _time_bound(self, p: dict[str, str], name: str) -> int | None:
        """``start``/``end``: unix seconds (a fraction allowed) or a txid; in ms."""
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(Decimal(raw) * 1000)
        except (ArithmeticError, ValueError):  # not a number (or NaN/Infinity): a txid?
            pass
        order = self._order_by_txid(raw)
        if order is not None:
            return order.timestamp
        trade = self._trade_by_txid(raw)
        if trade is not None:
            return trade.timestamp
        raise _invalid(name)

    def _offset(self, p: dict[str, str]) -> int:
        raw = p.get("ofs") or "0"
        if not raw.isdigit():
            raise _invalid("ofs")
        return int(raw)

    # -- rendering -------------------------------------------------------------------
    def _meta_for(self, order: VenueOrder) -> _OrderMeta:
        meta = self._meta.get(order.id)
        if meta is None:
            # An order placed on the venue directly, not through this fake.
            if order.trigger_price is None:
                ordertype = order.type
            else:
                stop_loss = (order.side == "sell") == (order.trigger_direction == "down")
                ordertype = "stop-loss" if stop_loss else "take-profit"
                if order.type == "limit":
                    ordertype += "-limit"
            meta = _OrderMeta(ordertype)
        return meta

    def _oflags(self, order: VenueOrder, meta: _OrderMeta) -> str:
        flags = [f for f in meta.oflags if f not in ("fcib", "fciq")]
        in_base = self.venue.fee_in_base and order.side == "buy"
        flags.append("fcib" if in_base else "fciq")
        return ",".join(flags)

    @staticmethod
    def _describe(
        pair: _Pair,
        side: str,
        ordertype: str,
        volume: Decimal,
        price: Decimal | None,
        price2: Decimal | None,
    ) -> str:
        """Kraken's one-line description: ``sell 0.10000000 XBTUSDT @ limit 51000.00``."""
        pd = pair.pair_decimals
        head = f"{side} {fmt(volume, 8)} {pair.altname} @ "
        if ordertype == "market":
            return head + "market"
        if ordertype == "limit":
            return head + f"limit {fmt(price, pd)}"
        words = ordertype.replace("-limit", "").replace("-", " ")
        text = head + f"{words} {fmt(price, pd)}"
        if ordertype.endswith("-limit"):
            text += f" -> limit {fmt(price2, pd)}"
        return text

    def _status(self, order: VenueOrder) -> str:
        if order.status in ("open", "closed", "canceled", "expired"):
            return order.status
        return "canceled"  # rejected

    def _descr_prices(self, order: VenueOrder, meta: _OrderMeta) -> tuple[Decimal, Decimal]:
        """descr ``price`` and ``price2``: limit price, or trigger then limit price."""
        zero = Decimal(0)
        if meta.ordertype.startswith(("stop-loss", "take-profit")):
            trigger = order.trigger_price or zero
            limit = order.price if meta.ordertype.endswith("-limit") else None
            return trigger, limit or zero
        return order.price or zero, zero

    def _order_json(self, order: VenueOrder, *, trades: bool = False) -> dict[str, Any]:
        """An order as QueryOrders, OpenOrders and ClosedOrders return it."""
        meta = self._meta_for(order)
        pair = _pair_of(self.venue.markets[order.symbol])
        pd = pair.pair_decimals
        price, price2 = self._descr_prices(order, meta)
        descr_price2 = price2 if meta.ordertype.endswith("-limit") else None
        reply: dict[str, Any] = {
            "refid": None,
            "userref": meta.userref,
        }
        if order.client_order_id is not None:
            reply["cl_ord_id"] = order.client_order_id
        reply.update(
            {
                "status": self._status(order),
                "reason": meta.reason,
                "opentm": _seconds(order.timestamp),
            }
        )
        if order.is_final:
            closed = order.updated_timestamp or order.last_trade_timestamp or order.timestamp
            reply["closetm"] = _seconds(closed)
        reply.update(
            {
                "starttm": 0,
                "expiretm": 0,
                "descr": {
                    "pair": pair.altname,
                    "aclass": "forex",
                    "type": order.side,
                    "ordertype": meta.ordertype,
                    "price": fmt(price, pd),
                    "price2": fmt(price2, pd),
                    "leverage": "none",
                    "order": self._describe(
                        pair, order.side, meta.ordertype, order.amount, price, descr_price2
                    ),
                    "close": "",
                },
                "vol": fmt(order.amount, 8),
                "vol_exec": fmt(order.filled, 8),
                "cost": fmt(order.cost, pd),
                "fee": fmt(order.fee, pd),
                "price": fmt(order.average or Decimal(0), pd),
                "stopprice": fmt(None, 5),
                "limitprice": fmt(None, 5),
                "misc": "",
                "oflags": self._oflags(order, meta),
            }
        )
        if trades:
            ids = [self.trade_txid(t.id) for t in self.venue.trades if t.order_id == order.id]
            if ids:
                reply["trades"] = ids
        return reply

    def _trade_json(self, trade: VenueTrade) -> dict[str, Any]:
        order = self.venue.orders[trade.order_id]
        pair = _pair_of(self.venue.markets[trade.symbol])
        pd = pair.pair_decimals
        # Fills at placement took liquidity; later fills of a resting limit made it.
        maker = order.type == "limit" and trade.id not in self._taker_trades
        return {
            "ordertxid": self.txid(order.id),
            "postxid": _kraken_id("T", "position", trade.id),
            "pair": pair.key,
            "aclass": "forex",
            "time": _seconds(trade.timestamp),
            "type": trade.side,
            "ordertype": order.type,
            "price": fmt(trade.price, pd),
            "cost": fmt(trade.price * trade.amount, pd),
            "fee": fmt(trade.fee, pd),
            "vol": fmt(trade.amount, 8),
            "margin": fmt(None, pd),
            "leverage": "0",
            "misc": "",
            "trade_id": int(trade.id) if trade.id.isdigit() else trade.id,
            "maker": maker,
        }

    # -- public endpoints --------------------------------------------------------------
    def _time(self, p: dict[str, str]) -> dict[str, Any]:
        now = self.venue.clock()
        return {"unixtime": int(now), "rfc1123": formatdate(now, usegmt=True)}

    def _system_status(self, p: dict[str, str]) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.venue.clock(), tz=timezone.utc)
        return {"status": "online", "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _assets(self, p: dict[str, str]) -> dict[str, Any]:
        codes = self._asset_codes()
        if p.get("asset"):
            by_name = {}
            for code in codes:
                by_name.update({asset_id(code): code, asset_altname(code): code})
            wanted = []
            for name in p["asset"].split(","):
                if name.strip() not in by_name:
                    raise _err("unknown_asset")
                wanted.append(by_name[name.strip()])
            codes = [c for c in codes if c in wanted]
        result = {}
        for code in codes:
            decimals = self._asset_decimals(code)
            result[asset_id(code)] = {
                "aclass": "currency",
                "altname": asset_altname(code),
                "decimals": decimals,
                "display_decimals": min(decimals, 5),
                "status": "enabled",
            }
        return result

    def _pair_info(self, pair: _Pair) -> dict[str, Any]:
        market = pair.market
        fee = fmt(self.venue.fee_rate * 100, 2)
        return {
            "altname": pair.altname,
            "wsname": pair.wsname,
            "aclass_base": "currency",
            "base": asset_id(pair.base),
            "aclass_quote": "currency",
            "quote": asset_id(pair.quote),
            "lot": "unit",
            "cost_decimals": pair.pair_decimals + pair.lot_decimals,
            "pair_decimals": pair.pair_decimals,
            "lot_decimals": pair.lot_decimals,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": [[0, float(fee)]],
            "fees_maker": [[0, float(fee)]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": format(market.min_amount.normalize(), "f"),
            "costmin": format(market.min_cost.normalize(), "f"),
            "tick_size": format(market.price_step.normalize(), "f"),
            "status": "online",
        }

    def _asset_pairs(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            pairs = self._pairs_param(p)
            return {pair.key: self._pair_info(pair) for pair in pairs}

    def _ticker(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            pairs = self._pairs_param(p)
            result = {}
            for pair in pairs:
                price = fmt(pair.market.price, pair.pair_decimals)
                zero = fmt(None, 8)
                result[pair.key] = {
                    "a": [price, "1", "1.000"],
                    "b": [price, "1", "1.000"],
                    "c": [price, zero],
                    "v": [zero, zero],
                    "p": [price, price],
                    "t": [0, 0],
                    "l": [price, price],
                    "h": [price, price],
                    "o": price,
                }
            return result

    def _depth(self, p: dict[str, str]) -> dict[str, Any]:
        pair = self._pair_param(p)
        assert pair is not None
        level = [fmt(pair.market.price, pair.pair_decimals), "1.000", int(self.venue.clock())]
        return {pair.key: {"asks": [level], "bids": [list(level)]}}

    # -- account -------------------------------------------------------------------------
    def _balance(self, p: dict[str, str]) -> dict[str, str]:
        snap = self.venue.balance()
        result = {}
        for code in sorted(set(snap.free) | set(snap.used)):
            total = snap.free.get(code, Decimal(0)) + snap.used.get(code, Decimal(0))
            result[asset_id(code)] = fmt(total, self._asset_decimals(code))
        return result

    def _balance_ex(self, p: dict[str, str]) -> dict[str, dict[str, str]]:
        snap = self.venue.balance()
        result = {}
        for code in sorted(set(snap.free) | set(snap.used)):
            used = snap.used.get(code, Decimal(0))
            total = snap.free.get(code, Decimal(0)) + used
            places = self._asset_decimals(code)
            result[asset_id(code)] = {
                "balance": fmt(total, places),
                "credit": fmt(None, 4),
                "credit_used": fmt(None, 4),
                "hold_trade": fmt(used, places),
            }
        return result

    # -- orders --------------------------------------------------------------------------
    def _parse_add_order(self, p: dict[str, str]) -> dict[str, Any]:
        """Validate an AddOrder like Kraken does; the venue's ``place`` kwargs and more."""
        pair = self._pair_param(p)
        assert pair is not None
        market = pair.market
        side = p.get("type") or ""
        if side not in ("buy", "sell"):
            raise _invalid("type")
        ordertype = p.get("ordertype") or ""
        if ordertype not in ORDER_TYPES:
            raise _invalid("ordertype")
        flags = tuple(f for f in (p.get("oflags") or "").split(",") if f)
        if any(f not in OFLAGS for f in flags):
            raise _invalid("oflags")
        viqc = "viqc" in flags
        if viqc and ordertype != "market":
            raise _invalid("viqc")
        post = "post" in flags
        if post and ordertype != "limit":
            raise _invalid("oflags")
        tif = (p.get("timeinforce") or "GTC").upper()
        if tif not in ("GTC", "IOC"):
            raise _invalid("timeinforce")
        if tif == "IOC" and ordertype != "limit":
            raise _invalid("timeinforce")
        userref = self._int(p, "userref")
        cl_ord_id = p.get("cl_ord_id") or None
        if cl_ord_id is not None and not CL_ORD_ID_RE.match(cl_ord_id):
            raise _invalid("cl_ord_id")
        volume = self._decimal(p, "volume")
        if volume is None or volume <= 0:
            raise _invalid("volume")
        price = self._decimal(p, "price")
        price2 = self._decimal(p, "price2")
        is_trigger = ordertype.startswith(("stop-loss", "take-profit"))
        needs_price2 = ordertype.endswith("-limit")
        if ordertype == "market":
            price = price2 = None
        elif price is None or price <= 0:
            raise _invalid("price")
        if needs_price2 and (price2 is None or price2 <= 0):
            raise _invalid("price2")
        if not needs_price2:
            price2 = None

        with self.venue.lock:
            now_price = market.price
            # Prices: at most pair_decimals decimals, then a multiple of the tick size.
            for value in (price, price2):
                if value is None:
                    continue
                if _decimals(value) > pair.pair_decimals:
                    raise KrakenError(
                        f"EOrder:Invalid price:{pair.altname} price can only be specified up to "
                        f"{pair.pair_decimals} decimals."
                    )
                if value % market.price_step != 0:
                    raise _err("tick_size")
            if viqc:
                # Volume in quote currency: what that cost buys or sells now.
                if volume < market.min_cost:
                    raise _err("cost_minimum")
                amount = _floor_to_step(volume / now_price, market.amount_step)
            else:
                if _decimals(volume) > pair.lot_decimals or volume % market.amount_step != 0:
                    raise _invalid("volume")
                amount = volume
            if amount < market.min_amount:
                raise _err("order_minimum")
            limit_price = price2 if needs_price2 else (price if ordertype == "limit" else None)
            reference = limit_price if limit_price is not None else now_price
            if not viqc and amount * reference < market.min_cost:
                raise _err("cost_minimum")
            if post:
                assert price is not None
                if (now_price >= price) if side == "sell" else (now_price <= price):
                    raise _err("post_only")
            direction = None
            if is_trigger:
                # Stop-loss sells and take-profit buys trigger on a fall, the others on a rise.
                down = ordertype.startswith("stop-loss") == (side == "sell")
                direction = "down" if down else "up"
        return {
            "pair": pair,
            "place": {
                "symbol": market.symbol,
                "side": side,
                "type": "limit" if limit_price is not None else "market",
                "amount": amount,
                "price": limit_price,
                "client_order_id": cl_ord_id,
                "trigger_price": price if is_trigger else None,
                "trigger_direction": direction,
            },
            "meta": _OrderMeta(ordertype, flags, userref, tif),
            "descr": self._describe(pair, side, ordertype, volume, price, price2),
            "validate": _truthy(p.get("validate")),
        }

    def _add_order(self, p: dict[str, str]) -> dict[str, Any]:
        spec = self._parse_add_order(p)
        descr = {"order": spec["descr"]}
        if spec["validate"]:
            return {"descr": descr}
        meta: _OrderMeta = spec["meta"]
        with self.venue.lock, self._venue_errors("unknown_order"):
            order = self.venue.place(**spec["place"])
            self._meta[order.id] = meta
            self._taker_trades.update(t.id for t in self.venue.trades if t.order_id == order.id)
            if meta.timeinforce == "IOC" and not order.is_final:
                # Immediate-or-cancel: what did not fill at once is cancelled.
                self.venue.cancel(order.id)
                meta.reason = "Immediate or cancel"
            # Kraken's reply: the description and the txid, nothing about the outcome.
            return {"descr": descr, "txid": [self.txid(order.id)]}

    def _query_orders(self, p: dict[str, str]) -> dict[str, Any]:
        userref = self._int(p, "userref")
        txids = [t for t in (p.get("txid") or "").split(",") if t]
        if not txids or len(txids) > MAX_QUERY_IDS:
            raise _err("invalid_arguments")
        trades = _truthy(p.get("trades"))
        with self.venue.lock:
            result = {}
            for txid in txids:
                order = self._order_by_txid(txid)
                if order is None:
                    raise _err("invalid_order")
                if userref is not None and self._meta_for(order).userref != userref:
                    continue
                result[txid] = self._order_json(order, trades=trades)
            return result

    def _matches(self, order: VenueOrder, p: dict[str, str], userref: int | None) -> bool:
        if userref is not None and self._meta_for(order).userref != userref:
            return False
        cl_ord_id = p.get("cl_ord_id") or None
        return cl_ord_id is None or order.client_order_id == cl_ord_id

    def _open_orders(self, p: dict[str, str]) -> dict[str, Any]:
        userref = self._int(p, "userref")
        trades = _truthy(p.get("trades"))
        with self.venue.lock:
            orders = [o for o in self.venue.open_orders() if self._matches(o, p, userref)]
            orders.sort(key=lambda o: (o.timestamp, int(o.id)), reverse=True)
            return {"open": {self.txid(o.id): self._order_json(o, trades=trades) for o in orders}}

    def _closed_orders(self, p: dict[str, str]) -> dict[str, Any]:
        userref = self._int(p, "userref")
        trades = _truthy(p.get("trades"))
        start, end = self._time_bound(p, "start"), self._time_bound(p, "end")
        offset = self._offset(p)
        closetime = p.get("closetime") or "both"
        if closetime not in ("open", "close", "both"):
            raise _invalid("closetime")
        with self.venue.lock:

            def times(o: VenueOrder) -> list[int]:
                closed = o.updated_timestamp or o.last_trade_timestamp or o.timestamp
                return {"open": [o.timestamp], "close": [closed]}.get(
                    closetime, [o.timestamp, closed]
                )

            orders = [
                o
                for o in self.venue.all_orders()
                if o.is_final
                and self._matches(o, p, userref)
                # start is exclusive, end inclusive
                and any(
                    (start is None or t > start) and (end is None or t <= end) for t in times(o)
                )
            ]
            orders.sort(key=lambda o: (max(times(o)), int(o.id)), reverse=True)
            page = orders[offset : offset + PAGE]
            return {
                "closed": {self.txid(o.id): self._order_json(o, trades=trades) for o in page},
                "count": len(orders),
            }

    def _cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        txid = p.get("txid") or None
        cl_ord_id = p.get("cl_ord_id") or None
        if (txid is None) == (cl_ord_id is None):
            raise _err("invalid_arguments")
        with self.venue.lock:
            if cl_ord_id is not None:
                targets = [o for o in self.venue.open_orders() if o.client_order_id == cl_ord_id]
            elif txid is not None and txid.lstrip("-").isdigit():
                # A userref cancels every open order carrying it.
                userref = self._int(p, "txid")
                targets = [
                    o for o in self.venue.open_orders() if self._meta_for(o).userref == userref
                ]
            else:
                assert txid is not None
                order = self._order_by_txid(txid)
                targets = [order] if order is not None and not order.is_final else []
            if not targets:
                raise _err("unknown_order")
            for order in targets:
                self._cancel(order)
            return {"count": len(targets)}

    def _cancel(self, order: VenueOrder) -> None:
        with self._venue_errors("unknown_order"):
            self.venue.cancel(order.id)
        meta = self._meta.setdefault(order.id, self._meta_for(order))
        meta.reason = "User requested"

    def _cancel_all(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            orders = self.venue.open_orders()
            for order in orders:
                self._cancel(order)
            return {"count": len(orders)}

    def _trades_history(self, p: dict[str, str]) -> dict[str, Any]:
        kind = p.get("type") or "all"
        if kind not in TRADE_TYPES:
            raise _invalid("type")
        start, end = self._time_bound(p, "start"), self._time_bound(p, "end")
        offset = self._offset(p)
        with self.venue.lock:
            trades = [
                t
                for t in self.venue.trades
                # start is exclusive, end inclusive
                if (start is None or t.timestamp > start) and (end is None or t.timestamp <= end)
            ]
            if kind not in ("all", "no position"):
                trades = []  # spot only: no trade belongs to a position
            trades.sort(key=lambda t: (t.timestamp, int(t.id)), reverse=True)
            page = trades[offset : offset + PAGE]
            return {
                "trades": {self.trade_txid(t.id): self._trade_json(t) for t in page},
                "count": len(trades),
            }

    def _query_trades(self, p: dict[str, str]) -> dict[str, Any]:
        txids = [t for t in (p.get("txid") or "").split(",") if t]
        if not txids or len(txids) > 20:
            raise _err("invalid_arguments")
        with self.venue.lock:
            result = {}
            for txid in txids:
                trade = self._trade_by_txid(txid)
                if trade is None:
                    raise _err("invalid_arguments")
                result[txid] = self._trade_json(trade)
            return result

    # -- venue calls -----------------------------------------------------------------
    @contextmanager
    def _venue_errors(self, not_found: str) -> Iterator[None]:
        """Translate the venue's ccxt exceptions into Kraken error replies."""
        try:
            yield
        except ccxt.InsufficientFunds:
            raise _err("insufficient") from None
        except ccxt.DuplicateOrderId:
            raise _err("duplicate") from None
        except ccxt.BadSymbol:
            raise _err("unknown_pair") from None
        except ccxt.OrderNotFound:
            raise _err(not_found) from None
        except ccxt.InvalidOrder:
            # The fake's own checks run first; anything left is a plain rejection.
            raise _err("invalid_order") from None
        except ccxt.BadRequest:
            raise _err("invalid_arguments") from None
