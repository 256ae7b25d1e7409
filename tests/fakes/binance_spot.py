"""A loopback HTTP fake of the Binance spot REST API, for an unmodified ``ccxt.binance``.

The fake speaks Binance's wire protocol (paths, parameters, HMAC-SHA256 request
signing, JSON bodies, error codes) on ``127.0.0.1`` and fronts an in-memory
:class:`nija_guard.testing.Venue`: every order, fill, balance and trade is the
venue's, so a test can drive prices with ``venue.set_price`` and assert on
``venue.holdings`` while the code under test talks to Binance through ccxt.

>>> with FakeBinance(balances={"BTC": 1, "USDT": 10_000}) as fake:
...     exchange = fake.client()
...     order = exchange.create_market_sell_order("BTC/USDT", 0.1)

What it covers, and how it mirrors Binance:

- public: ``ping``, ``time``, ``exchangeInfo``, ``ticker/24hr``, ``ticker/price``,
  ``ticker/bookTicker``, ``avgPrice``, ``depth`` (one level each side, at the
  venue's price: the venue has a single price, so bid == ask == last);
- signed: ``account``, ``order`` (POST/GET/DELETE), ``order/test``,
  ``openOrders`` (GET/DELETE), ``allOrders``, ``myTrades``;
- order types MARKET (by ``quantity`` or ``quoteOrderQty``), LIMIT (GTC/IOC/FOK),
  LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT;
  filters PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE and NOTIONAL are checked the
  way Binance words its rejections, so ccxt maps them as it does in production;
- venue exceptions become Binance error bodies (see :data:`ERRORS`) that ccxt
  maps back to the matching ccxt classes;
- faults (:meth:`FakeBinance.inject`): an error reply or a dropped connection,
  before the venue saw the request or after it acted (a ghost order), a
  200 reply whose body is not JSON, and a reply held back after the venue
  acted until the test releases it (``hang_after``: a client stuck mid-request);
- every request is recorded (:attr:`FakeBinance.requests`); a path the fake does
  not serve gets a 404 with a JSON body and shows up in :attr:`FakeBinance.unknown`.

Deliberate simplifications: the book has no depth (limit orders fill in full
when the venue's price crosses them), ``recvWindow`` is not enforced (only the
presence of ``timestamp``), and IOC/FOK apply to plain LIMIT orders only.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, unquote

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
    gateway_page,
    json_reply,
)
from .ccxt_urls import point_at

__all__ = ["ERRORS", "FAULTS", "BinanceError", "FakeBinance", "RecordedRequest", "point_at"]

DEFAULT_BALANCES: Mapping[str, object] = {"BTC": 1, "ETH": 10, "USDT": 100_000}

# Binance's limits that the venue does not model: generous, fixed bounds.
MAX_PRICE = Decimal("10000000")
MAX_QTY = Decimal("9000000")
MAX_NOTIONAL = Decimal("9000000000")
TRADES_WINDOW_MS = 24 * 60 * 60 * 1000  # startTime..endTime may not exceed 24 h
CLIENT_ID_RE = re.compile(r"^[a-zA-Z0-9\-_]{1,36}$")
ORDER_TYPES = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)
# Binance defaults newOrderRespType to FULL for MARKET and LIMIT, ACK otherwise.
FULL_BY_DEFAULT = frozenset({"MARKET", "LIMIT"})


class BinanceError(Exception):
    """A Binance error reply: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _not_required(name: str) -> BinanceError:
    return BinanceError(400, -1106, f"Parameter '{name}' sent when not required.")


#: The replies the venue's exceptions become. ccxt.binance 4.5.90 maps them
#: back as noted (checked by tests/test_fake_binance.py).
ERRORS: dict[str, tuple[int, int, str]] = {
    # exact message match -> InsufficientFunds
    "insufficient": (400, -2010, "Account has insufficient balance for requested action."),
    # -2010 -> InvalidOrder (ccxt has no DuplicateOrderId mapping for Binance)
    "duplicate": (400, -2010, "Duplicate order sent."),
    # -1121 -> BadSymbol
    "bad_symbol": (400, -1121, "Invalid symbol."),
    # -2013 -> OrderNotFound (query order)
    "no_such_order": (400, -2013, "Order does not exist."),
    # -2011 -> OrderNotFound (cancel order)
    "unknown_order": (400, -2011, "Unknown order sent."),
    # -1022 -> AuthenticationError
    "bad_signature": (401, -1022, "Signature for this request is not valid."),
    # -2015 -> AuthenticationError (DDoSProtection once the client has authenticated)
    "bad_key": (401, -2015, "Invalid API-key, IP, or permissions for action."),
    # -2014 -> AuthenticationError
    "no_key": (401, -2014, "API-key format invalid."),
    # exact message match -> OrderImmediatelyFillable
    "stop_triggers": (400, -2010, "Stop price would trigger immediately."),
    "maker_takes": (400, -2010, "Order would immediately match and take."),
    # body contains LOT_SIZE / PRICE_FILTER -> InvalidOrder; NOTIONAL -> -1013 -> BadRequest
    "lot_size": (400, -1013, "Filter failure: LOT_SIZE"),
    "market_lot_size": (400, -1013, "Filter failure: MARKET_LOT_SIZE"),
    "price_filter": (400, -1013, "Filter failure: PRICE_FILTER"),
    "notional": (400, -1013, "Filter failure: NOTIONAL"),
}


def _err(name: str) -> BinanceError:
    """A fresh exception for the named reply in :data:`ERRORS`."""
    return BinanceError(*ERRORS[name])


def _floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def _num_id(value: str) -> int | str:
    """Binance ids are JSON integers; the venue's are decimal strings."""
    return int(value) if value.isdigit() else value


@dataclass
class _OrderMeta:
    """What Binance reports about an order that the venue does not keep."""

    order_type: str  # the Binance type, e.g. LIMIT_MAKER
    time_in_force: str
    quote_order_qty: Decimal | None = None
    cancel_reason: str | None = None  # "user" (CANCELED) or "expired" (EXPIRED)
    update_time: int | None = None


#: An endpoint: request params in, the JSON-able reply out (or a BinanceError raised).
Endpoint = Callable[[dict[str, str]], Any]


class FakeBinance(LoopbackFake):
    """Binance spot REST on loopback, backed by a :class:`~nija_guard.testing.Venue`.

    Faults (:meth:`inject`, see :mod:`fakes._http` for the kinds): ``body``
    defaults to what Binance or its gateway sends for ``status`` (see
    :meth:`_fault_body`). What ccxt.binance 4.5.90 makes of them (pinned by
    tests/test_fake_binance.py): a 5xx gateway page is ExchangeNotAvailable (504:
    RequestTimeout), 429/418 DDoSProtection, a JSON body's Binance code wins over
    the status (-1001 is OperationFailed); a drop is NetworkError (sync) or
    ExchangeNotAvailable (async). A 200 that is not JSON does not raise at all:
    ccxt returns an order whose ``id`` is None. The async client (aiohttp)
    silently re-sends a dropped idempotent request (GET, DELETE) once, so a
    single drop of those is invisible to it: use ``times=2`` to make it surface.
    ``hang_after`` leaves the client stuck mid-request (see :meth:`wait_hung`).
    """

    name = "fake-binance"
    json_type = "application/json;charset=UTF-8"
    html_type = "text/html;charset=UTF-8"

    def __init__(
        self,
        venue: Venue | None = None,
        *,
        api_key: str = "test-key",
        secret: str = "test-secret",  # noqa: S107 (a fake's fixed test credential)
        balances: Mapping[str, object] | None = None,
        symbols: tuple[str, ...] | list[str] = ("BTC/USDT", "ETH/USDT"),
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
        self.venue = venue
        self.api_key = api_key
        self.secret = secret
        self._meta: dict[str, _OrderMeta] = {}
        self._taker_trades: set[str] = set()
        self._uid = itertools.count(1)
        # (method, path) -> (handler, signed)
        routes: dict[tuple[str, str], tuple[Endpoint, bool]] = {
            ("GET", "/api/v3/ping"): (lambda p: {}, False),
            ("GET", "/api/v3/time"): (lambda p: {"serverTime": self.venue.now_ms()}, False),
            ("GET", "/api/v3/exchangeInfo"): (self._exchange_info, False),
            ("GET", "/api/v3/ticker/24hr"): (self._ticker_24hr, False),
            ("GET", "/api/v3/ticker/price"): (self._ticker_price, False),
            ("GET", "/api/v3/ticker/bookTicker"): (self._book_ticker, False),
            ("GET", "/api/v3/avgPrice"): (self._avg_price, False),
            ("GET", "/api/v3/depth"): (self._depth, False),
            ("GET", "/api/v3/account"): (self._account, True),
            ("POST", "/api/v3/order"): (self._new_order, True),
            ("POST", "/api/v3/order/test"): (self._test_order, True),
            ("GET", "/api/v3/order"): (self._query_order, True),
            ("DELETE", "/api/v3/order"): (self._cancel_order, True),
            ("GET", "/api/v3/openOrders"): (self._open_orders, True),
            ("DELETE", "/api/v3/openOrders"): (self._cancel_open_orders, True),
            ("GET", "/api/v3/allOrders"): (self._all_orders, True),
            ("GET", "/api/v3/myTrades"): (self._my_trades, True),
        }
        self._routes = dict(routes)

    # -- clients -----------------------------------------------------------------
    def client_config(self, **config: Any) -> dict[str, Any]:
        """The ccxt config :meth:`client` uses; ``config`` (and its ``options``) win."""
        options = {
            "fetchMarkets": {"types": ["spot"]},  # spot only: no fapi/dapi exchangeInfo
            "fetchCurrencies": False,  # no sapi/capital/config/getall
            "fetchMargins": False,  # no sapi/margin/allPairs
            "adjustForTimeDifference": False,  # no time sync
            "warnOnFetchOpenOrdersWithoutSymbol": False,  # allow fetch_open_orders()
            **config.pop("options", {}),
        }
        return {
            "apiKey": self.api_key,
            "secret": self.secret,
            "enableRateLimit": False,
            "timeout": 10_000,
            **config,
            "options": options,
        }

    def client(self, **config: Any) -> ccxt.binance:
        """A sync ``ccxt.binance`` whose every API URL points at this fake."""
        return point_at(ccxt.binance(self.client_config(**config)), self.url)

    def async_client(self, **config: Any) -> ccxt.async_support.binance:
        """An async ``ccxt.async_support.binance`` pointing at this fake (close it)."""
        return point_at(ccxt.async_support.binance(self.client_config(**config)), self.url)

    # -- the loopback hooks ---------------------------------------------------------
    def _prepare(self, call: Call) -> None:
        params: dict[str, str] = {}
        for raw in (call.query, call.body):
            for key, value in parse_qsl(raw, keep_blank_values=True):
                if key == "signature":
                    call.signature = value
                else:
                    params[key] = value
        call.params = params

    def _not_found(self, call: Call) -> Reply:
        return json_reply(
            404, {"code": -5000, "msg": f"Path {call.path}, Method {call.method} is invalid"}
        )

    def _fault_body(self, status: int) -> Mapping[str, Any] | str:
        """What Binance (or the gateway in front of it) replies with ``status``."""
        if status in (418, 429):
            return {
                "code": -1003,
                "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
            }
        if status >= 500:
            return gateway_page(status)
        return {"code": -1000, "msg": "An unknown error occurred while processing the request."}

    def _handle(self, call: Call, route: Any) -> Reply:
        handler, signed = route
        try:
            if signed:
                self._authenticate(call)
            return json_reply(200, handler(call.params))
        except BinanceError as exc:
            return json_reply(exc.status, exc.body())
        except Exception:
            # A bug in the fake: reply like Binance's catch-all, keep the traceback.
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return json_reply(
                500,
                {"code": -1000, "msg": "An unknown error occurred while processing the request."},
            )

    def _authenticate(self, call: Call) -> None:
        """Binance's SIGNED checks: API key header, timestamp, HMAC-SHA256 signature."""
        key = call.header("X-MBX-APIKEY")
        if not key:
            raise _err("no_key")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise _err("bad_key")
        if not call.params.get("timestamp", "").isdigit():
            raise _mandatory("timestamp")
        if not call.signature:
            raise _mandatory("signature")
        # totalParams = query string + request body, each without the signature.
        payload = _without_signature(call.query) + _without_signature(call.body)
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, call.signature.lower()):
            raise _err("bad_signature")

    # -- parameters ----------------------------------------------------------------
    def _market(self, symbol_id: str) -> Market:
        for market in self.venue.markets.values():
            if market.id == symbol_id:
                return market
        raise _err("bad_symbol")

    def _market_param(self, p: dict[str, str], *, required: bool = True) -> Market | None:
        symbol_id = p.get("symbol")
        if not symbol_id:
            if required:
                raise _mandatory("symbol")
            return None
        return self._market(symbol_id)

    def _markets_param(self, p: dict[str, str]) -> list[Market]:
        """``symbol`` or ``symbols`` (a JSON array), else every market."""
        if p.get("symbol"):
            return [self._market(p["symbol"])]
        if p.get("symbols"):
            try:
                ids = json.loads(p["symbols"])
            except ValueError:
                raise BinanceError(
                    400, -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            if not isinstance(ids, list):
                raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.")
            return [self._market(str(i)) for i in ids]
        return list(self.venue.markets.values())

    @staticmethod
    def _decimal(p: dict[str, str], name: str) -> Decimal | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0:
            raise BinanceError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            )
        return value

    @staticmethod
    def _int(p: dict[str, str], name: str) -> int | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise BinanceError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        return int(raw)

    def _limit(self, p: dict[str, str], default: int = 500, maximum: int = 1000) -> int:
        limit = self._int(p, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise BinanceError(
                400,
                -1100,
                f"Illegal characters found in parameter 'limit'; legal range is '1..{maximum}'.",
            )
        return limit

    def _window(self, p: dict[str, str]) -> tuple[int | None, int | None]:
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        if start is not None and end is not None:
            if end < start:
                raise BinanceError(400, -1127, "startTime must be before endTime.")
            if end - start > TRADES_WINDOW_MS:
                raise BinanceError(400, -1127, "More than 24 hours between startTime and endTime.")
        return start, end

    # -- rendering -------------------------------------------------------------------
    def _meta_for(self, order: VenueOrder) -> _OrderMeta:
        meta = self._meta.get(order.id)
        if meta is None:
            # An order placed on the venue directly, not through this fake.
            meta = _OrderMeta(_derived_type(order), "GTC")
        return meta

    def _status(self, order: VenueOrder) -> str:
        if order.status == "open":
            return "PARTIALLY_FILLED" if order.filled > 0 else "NEW"
        if order.status == "closed":
            return "FILLED"
        if order.status == "canceled":
            reason = self._meta_for(order).cancel_reason
            if reason == "user":
                return "CANCELED"
            if reason == "expired":
                return "EXPIRED"
            # A market order never rests: what did not fill expired (Binance: EXPIRED).
            working = order.trigger_price is None or order.triggered
            return "EXPIRED" if order.type == "market" and working else "CANCELED"
        return order.status.upper()  # expired, rejected

    def _order_json(self, order: VenueOrder) -> dict[str, Any]:
        """An order as GET /api/v3/order, openOrders and allOrders return it."""
        meta = self._meta_for(order)
        market = self.venue.markets[order.symbol]
        working = order.trigger_price is None or order.triggered
        updates = [order.timestamp, order.last_trade_timestamp or 0, meta.update_time or 0]
        return {
            "symbol": market.id,
            "orderId": _num_id(order.id),
            "orderListId": -1,
            "clientOrderId": order.client_order_id or "",
            "price": fmt(order.price),
            "origQty": fmt(order.amount),
            "executedQty": fmt(order.filled),
            "cummulativeQuoteQty": fmt(order.cost),
            "status": self._status(order),
            "timeInForce": meta.time_in_force,
            "type": meta.order_type,
            "side": order.side.upper(),
            "stopPrice": fmt(order.trigger_price),
            "icebergQty": fmt(None),
            "time": order.timestamp,
            "updateTime": max(updates),
            "isWorking": working,
            "workingTime": (order.last_trade_timestamp or order.timestamp) if working else -1,
            "origQuoteOrderQty": fmt(meta.quote_order_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _fills(self, order: VenueOrder) -> list[dict[str, Any]]:
        return [
            {
                "price": fmt(t.price),
                "qty": fmt(t.amount),
                "commission": fmt(t.fee),
                "commissionAsset": t.fee_currency,
                "tradeId": _num_id(t.id),
            }
            for t in self.venue.trades
            if t.order_id == order.id
        ]

    def _placed_json(self, order: VenueOrder, resp_type: str) -> dict[str, Any]:
        """The POST /api/v3/order reply, in ACK, RESULT or FULL format."""
        market = self.venue.markets[order.symbol]
        reply: dict[str, Any] = {
            "symbol": market.id,
            "orderId": _num_id(order.id),
            "orderListId": -1,
            "clientOrderId": order.client_order_id or "",
            "transactTime": order.timestamp,
        }
        if resp_type == "ACK":
            return reply
        full = self._order_json(order)
        for key in (
            "price",
            "origQty",
            "executedQty",
            "origQuoteOrderQty",
            "cummulativeQuoteQty",
            "status",
            "timeInForce",
            "type",
            "side",
        ):
            reply[key] = full[key]
        if order.trigger_price is not None:
            reply["stopPrice"] = full["stopPrice"]
        reply["workingTime"] = full["workingTime"]
        reply["selfTradePreventionMode"] = full["selfTradePreventionMode"]
        if resp_type == "FULL":
            reply["fills"] = self._fills(order)
        return reply

    def _trade_json(self, trade: VenueTrade) -> dict[str, Any]:
        order = self.venue.orders[trade.order_id]
        return {
            "symbol": self.venue.markets[trade.symbol].id,
            "id": _num_id(trade.id),
            "orderId": _num_id(trade.order_id),
            "orderListId": -1,
            "price": fmt(trade.price),
            "qty": fmt(trade.amount),
            "quoteQty": fmt(trade.price * trade.amount),
            "commission": fmt(trade.fee),
            "commissionAsset": trade.fee_currency,
            "time": trade.timestamp,
            "isBuyer": trade.side == "buy",
            # Fills at placement took liquidity; later fills of a resting limit made it.
            "isMaker": order.type == "limit" and trade.id not in self._taker_trades,
            "isBestMatch": True,
        }

    # -- venue calls -----------------------------------------------------------------
    @contextmanager
    def _venue_errors(self, not_found: str) -> Iterator[None]:
        """Translate the venue's ccxt exceptions into Binance error replies."""
        try:
            yield
        except ccxt.InsufficientFunds:
            raise _err("insufficient") from None
        except ccxt.DuplicateOrderId:
            raise _err("duplicate") from None
        except ccxt.BadSymbol:
            raise _err("bad_symbol") from None
        except ccxt.OrderNotFound:
            raise _err(not_found) from None
        except ccxt.InvalidOrder as exc:
            # The fake's own filter checks run first; anything left is a rejection.
            raise BinanceError(400, -2010, str(exc)) from None
        except ccxt.BadRequest:
            raise BinanceError(400, -1013, "Invalid quantity.") from None

    def _find(self, p: dict[str, str], not_found: str) -> VenueOrder:
        """The order named by ``orderId`` and/or ``origClientOrderId`` in ``symbol``."""
        market = self._market_param(p)
        assert market is not None
        order_id = self._int(p, "orderId")
        client_id = p.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise BinanceError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        with self._venue_errors(not_found):
            if order_id is not None:
                order = self.venue.get(order_id=str(order_id))
                if client_id is not None and order.client_order_id != client_id:
                    raise _err(not_found)
            else:
                order = self.venue.get(client_order_id=client_id)
        if order.symbol != market.symbol:
            raise _err(not_found)
        return order

    # -- public endpoints --------------------------------------------------------------
    def _symbol_info(self, market: Market) -> dict[str, Any]:
        return {
            "symbol": market.id,
            "status": "TRADING",
            "baseAsset": market.base,
            "baseAssetPrecision": 8,
            "quoteAsset": market.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt(market.price_step),
                    "maxPrice": fmt(MAX_PRICE),
                    "tickSize": fmt(market.price_step),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt(market.min_amount),
                    "maxQty": fmt(MAX_QTY),
                    "stepSize": fmt(market.amount_step),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": fmt(market.min_amount),
                    "maxQty": fmt(MAX_QTY),
                    "stepSize": fmt(market.amount_step),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt(market.min_cost),
                    "applyMinToMarket": True,
                    "maxNotional": fmt(MAX_NOTIONAL),
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": [
                "EXPIRE_TAKER",
                "EXPIRE_MAKER",
                "EXPIRE_BOTH",
                "NONE",
            ],
        }

    def _exchange_info(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            symbols = [self._symbol_info(m) for m in self._markets_param(p)]
        return {
            "timezone": "UTC",
            "serverTime": self.venue.now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _one_or_all(self, p: dict[str, str], render: Callable[[Market], dict[str, Any]]) -> Any:
        with self.venue.lock:
            markets = self._markets_param(p)
            rendered = [render(m) for m in markets]
        return rendered[0] if p.get("symbol") else rendered

    def _ticker_24hr(self, p: dict[str, str]) -> Any:
        now = self.venue.now_ms()

        def render(m: Market) -> dict[str, Any]:
            price = fmt(m.price)
            return {
                "symbol": m.id,
                "priceChange": fmt(None),
                "priceChangePercent": "0.000",
                "weightedAvgPrice": price,
                "prevClosePrice": price,
                "lastPrice": price,
                "lastQty": fmt(None),
                "bidPrice": price,
                "bidQty": fmt(MAX_QTY),
                "askPrice": price,
                "askQty": fmt(MAX_QTY),
                "openPrice": price,
                "highPrice": price,
                "lowPrice": price,
                "volume": fmt(None),
                "quoteVolume": fmt(None),
                "openTime": now - TRADES_WINDOW_MS,
                "closeTime": now,
                "firstId": -1,
                "lastId": -1,
                "count": 0,
            }

        return self._one_or_all(p, render)

    def _ticker_price(self, p: dict[str, str]) -> Any:
        return self._one_or_all(p, lambda m: {"symbol": m.id, "price": fmt(m.price)})

    def _book_ticker(self, p: dict[str, str]) -> Any:
        return self._one_or_all(
            p,
            lambda m: {
                "symbol": m.id,
                "bidPrice": fmt(m.price),
                "bidQty": fmt(MAX_QTY),
                "askPrice": fmt(m.price),
                "askQty": fmt(MAX_QTY),
            },
        )

    def _avg_price(self, p: dict[str, str]) -> dict[str, Any]:
        market = self._market_param(p)
        assert market is not None
        return {"mins": 5, "price": fmt(market.price), "closeTime": self.venue.now_ms()}

    def _depth(self, p: dict[str, str]) -> dict[str, Any]:
        market = self._market_param(p)
        assert market is not None
        level = [fmt(market.price), fmt(MAX_QTY)]
        return {"lastUpdateId": self.venue.now_ms(), "bids": [level], "asks": [list(level)]}

    # -- account and orders ----------------------------------------------------------------
    def _account(self, p: dict[str, str]) -> dict[str, Any]:
        snap = self.venue.balance()
        assets = sorted(set(snap.free) | set(snap.used))
        balances = [
            {"asset": a, "free": fmt(snap.free.get(a)), "locked": fmt(snap.used.get(a))}
            for a in assets
        ]
        if p.get("omitZeroBalances") == "true":
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        bps = int(self.venue.fee_rate * 10_000)
        return {
            "makerCommission": bps,
            "takerCommission": bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(self.venue.fee_rate),
                "taker": fmt(self.venue.fee_rate),
                "buyer": fmt(None),
                "seller": fmt(None),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": snap.timestamp,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1000001,
        }

    def _parse_new_order(self, p: dict[str, str]) -> dict[str, Any]:
        """Validate a new order like Binance does; return the venue's ``place`` kwargs."""
        market = self._market_param(p)
        assert market is not None
        side = p.get("side") or ""
        if not side:
            raise _mandatory("side")
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1117, "Invalid side.")
        order_type = p.get("type") or ""
        if not order_type:
            raise _mandatory("type")
        if order_type not in ORDER_TYPES:
            raise BinanceError(400, -1116, "Invalid orderType.")
        for unsupported in ("trailingDelta", "icebergQty"):
            if p.get(unsupported):
                raise _not_required(unsupported)
        qty = self._decimal(p, "quantity")
        quote_qty = self._decimal(p, "quoteOrderQty")
        price = self._decimal(p, "price")
        stop = self._decimal(p, "stopPrice")
        tif = p.get("timeInForce") or None
        is_market = order_type in ("MARKET", "STOP_LOSS", "TAKE_PROFIT")
        is_stop = order_type.startswith(("STOP_LOSS", "TAKE_PROFIT"))
        needs_tif = order_type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")

        # Mandatory and forbidden parameters per type.
        if order_type == "MARKET":
            if qty is None and quote_qty is None:
                raise BinanceError(
                    400,
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
            if qty is not None and quote_qty is not None:
                raise _not_required("quoteOrderQty")
        else:
            if quote_qty is not None:
                raise _not_required("quoteOrderQty")
            if qty is None:
                raise _mandatory("quantity")
        if is_market and price is not None:
            raise _not_required("price")
        if not is_market and price is None:
            raise _mandatory("price")
        if is_stop and stop is None:
            raise _mandatory("stopPrice")
        if not is_stop and stop is not None:
            raise _not_required("stopPrice")
        if needs_tif and tif is None:
            raise _mandatory("timeInForce")
        if not needs_tif and tif is not None:
            raise _not_required("timeInForce")
        if tif is not None and tif not in ("GTC", "IOC", "FOK"):
            raise BinanceError(400, -1115, "Invalid timeInForce.")
        client_id = p.get("newClientOrderId") or None
        if client_id is not None and not CLIENT_ID_RE.match(client_id):
            raise BinanceError(
                400,
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; "
                "legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
            )
        resp_type = p.get("newOrderRespType") or (
            "FULL" if order_type in FULL_BY_DEFAULT else "ACK"
        )
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise BinanceError(
                400, -1100, "Illegal characters found in parameter 'newOrderRespType'."
            )

        with self.venue.lock:
            now_price = market.price
            # A market order by cost: the quantity its quote amount buys or sells now.
            if quote_qty is not None:
                qty = _floor_to_step(quote_qty / now_price, market.amount_step)
            assert qty is not None
            # Filters, in Binance's order: PRICE_FILTER, LOT_SIZE, NOTIONAL.
            for value in (price, stop):
                if value is not None and not (
                    market.price_step <= value <= MAX_PRICE
                    and _is_multiple(value, market.price_step)
                ):
                    raise _err("price_filter")
            if not (
                market.min_amount <= qty <= MAX_QTY
                and _is_multiple(qty - market.min_amount, market.amount_step)
            ):
                raise _err("market_lot_size" if is_market else "lot_size")
            reference = now_price if is_market else price
            assert reference is not None
            if qty * reference < market.min_cost:
                raise _err("notional")
            # Stop-loss sells and take-profit buys trigger on a fall, the others on a rise.
            direction = None
            if is_stop:
                assert stop is not None
                down = (order_type.startswith("STOP_LOSS")) == (side == "SELL")
                direction = "down" if down else "up"
                if (now_price <= stop) if down else (now_price >= stop):
                    raise _err("stop_triggers")
            if order_type == "LIMIT_MAKER":
                assert price is not None
                if (now_price >= price) if side == "SELL" else (now_price <= price):
                    raise _err("maker_takes")
        return {
            "symbol": market.symbol,
            "side": side.lower(),
            "type": "market" if is_market else "limit",
            "amount": qty,
            "price": price,
            "client_order_id": client_id,
            "trigger_price": stop,
            "trigger_direction": direction,
            "_order_type": order_type,
            "_tif": tif or "GTC",
            "_quote_qty": quote_qty,
            "_resp_type": resp_type,
        }

    def _new_order(self, p: dict[str, str]) -> dict[str, Any]:
        spec = self._parse_new_order(p)
        order_type: str = spec.pop("_order_type")
        tif: str = spec.pop("_tif")
        quote_qty: Decimal | None = spec.pop("_quote_qty")
        resp_type: str = spec.pop("_resp_type")
        if spec["client_order_id"] is None:
            spec["client_order_id"] = "web_" + secrets.token_hex(11)
        with self.venue.lock, self._venue_errors("unknown_order"):
            order = self.venue.place(**spec)
            self._meta[order.id] = _OrderMeta(order_type, tif, quote_qty)
            self._taker_trades.update(t.id for t in self.venue.trades if t.order_id == order.id)
            if order_type == "LIMIT" and tif in ("IOC", "FOK") and not order.is_final:
                # Immediate-or-cancel: what did not fill at once expires.
                self.venue.cancel(order.id)
                self._meta[order.id].cancel_reason = "expired"
            return self._placed_json(order, resp_type)

    def _test_order(self, p: dict[str, str]) -> dict[str, Any]:
        self._parse_new_order(p)
        return {}

    def _query_order(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            return self._order_json(self._find(p, "no_such_order"))

    def _cancel(self, order: VenueOrder, p: dict[str, str]) -> dict[str, Any]:
        """Cancel on the venue (venue lock held); the DELETE /api/v3/order reply."""
        with self._venue_errors("unknown_order"):
            if order.is_final:
                raise _err("unknown_order")
            self.venue.cancel(order.id)
        meta = self._meta.setdefault(order.id, self._meta_for(order))
        meta.cancel_reason = "user"
        meta.update_time = order.updated_timestamp  # the cancel's own time, not a later read
        full = self._order_json(order)
        reply = {
            "symbol": full["symbol"],
            "origClientOrderId": order.client_order_id or "",
            "orderId": full["orderId"],
            "orderListId": -1,
            # Binance names the cancel request itself; ccxt reads this as the order's.
            "clientOrderId": p.get("newClientOrderId") or secrets.token_urlsafe(16)[:22],
            "transactTime": meta.update_time,
        }
        for key in (
            "price",
            "origQty",
            "executedQty",
            "origQuoteOrderQty",
            "cummulativeQuoteQty",
            "status",
            "timeInForce",
            "type",
            "side",
        ):
            reply[key] = full[key]
        if order.trigger_price is not None:
            reply["stopPrice"] = full["stopPrice"]
        reply["selfTradePreventionMode"] = full["selfTradePreventionMode"]
        return reply

    def _cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        with self.venue.lock:
            return self._cancel(self._find(p, "unknown_order"), p)

    def _cancel_open_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        market = self._market_param(p)
        assert market is not None
        with self.venue.lock:
            orders = self.venue.open_orders(market.symbol)
            if not orders:
                raise _err("unknown_order")
            return [self._cancel(order, {}) for order in orders]

    def _open_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        market = self._market_param(p, required=False)
        with self.venue.lock:
            orders = self.venue.open_orders(market.symbol if market else None)
            return [self._order_json(o) for o in orders]

    def _all_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        market = self._market_param(p)
        assert market is not None
        from_id = self._int(p, "orderId")
        start, end = self._window(p)
        limit = self._limit(p)
        with self.venue.lock:
            orders = sorted(self.venue.all_orders(market.symbol), key=lambda o: int(o.id))
            if from_id is not None:
                orders = [o for o in orders if int(o.id) >= from_id]
            orders = [
                o
                for o in orders
                if (start is None or o.timestamp >= start) and (end is None or o.timestamp <= end)
            ]
            # From an id or a start time: the oldest first; otherwise the most recent.
            picked = orders[:limit] if from_id is not None or start is not None else orders[-limit:]
            return [self._order_json(o) for o in picked]

    def _my_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        market = self._market_param(p)
        assert market is not None
        order_id = self._int(p, "orderId")
        from_id = self._int(p, "fromId")
        start, end = self._window(p)
        limit = self._limit(p)
        with self.venue.lock:
            trades = sorted(self.venue.my_trades(market.symbol), key=lambda t: int(t.id))
            trades = [
                t
                for t in trades
                if (order_id is None or t.order_id == str(order_id))
                and (from_id is None or int(t.id) >= from_id)
                and (start is None or t.timestamp >= start)
                and (end is None or t.timestamp <= end)
            ]
            oldest_first = from_id is not None or start is not None or order_id is not None
            picked = trades[:limit] if oldest_first else trades[-limit:]
            return [self._trade_json(t) for t in picked]


def _derived_type(order: VenueOrder) -> str:
    """The Binance order type of a venue order (stop direction tells SL from TP)."""
    if order.trigger_price is None:
        return order.type.upper()
    stop_loss = (order.side == "sell") == (order.trigger_direction == "down")
    base = "STOP_LOSS" if stop_loss else "TAKE_PROFIT"
    return base if order.type == "market" else base + "_LIMIT"


def _without_signature(raw: str) -> str:
    """``raw`` (a query string or form body) minus its ``signature=`` parameter."""
    if not raw:
        return ""
    return "&".join(
        part for part in raw.split("&") if unquote(part.split("=", 1)[0]) != "signature"
    )
