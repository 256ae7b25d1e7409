"""A loopback HTTP fake of OKX's v5 REST API for USDT-margined perpetual swaps.

The fake speaks OKX's wire protocol (paths, JSON bodies, the ``OK-ACCESS-*``
request signing, the ``{"code": "0", "msg": "", "data": [...]}`` envelope and
OKX's error codes) on ``127.0.0.1`` and fronts an in-memory
:class:`~fakes.derivatives.DerivativesVenue`, so an unmodified ``ccxt.okx``
(sync or async) trades ``BTC/USDT:USDT`` and ``ETH/USDT:USDT`` against it:

>>> with FakeOkx() as fake:
...     exchange = fake.client()
...     exchange.create_order("BTC/USDT:USDT", "market", "buy", 2)  # 2 contracts

The account is in futures mode, one-way (``net_mode``) positions, cross margin.

What ccxt.okx 4.5.90 calls, and what the fake serves:

- public: ``public/instruments`` (SWAP; other types are empty), ``public/time``,
  ``public/mark-price``, ``market/ticker``, ``market/tickers``, ``market/books``
  (one level each side at the venue's single price);
- private: ``asset/currencies`` (load_markets calls it when the client has
  keys), ``account/config``, ``account/balance``, ``account/positions``,
  ``account/leverage-info``, ``account/set-leverage``, ``trade/order``
  (POST/GET), ``trade/batch-orders`` (ccxt's default for create_order),
  ``trade/cancel-order``, ``trade/cancel-batch-orders``, ``trade/orders-pending``,
  ``trade/orders-history`` (and ``-archive``), ``trade/close-position``,
  ``trade/fills``, ``trade/fills-history``.

As on OKX: placing or canceling answers only ``ordId``/``clOrdId``/``sCode``
(no state, no fill); a rejected order is HTTP 200 ``code "1"`` with the reason
in ``data[0].sCode``/``sMsg``; a query error is a top-level ``code``;
credentials errors are HTTP 401. :data:`ORDER_ERRORS` lists the codes the
venue's rejections become and what ccxt.okx makes of them.

Faults (:meth:`FakeOkx.inject`) and the request log come from
:mod:`fakes._http`. Deliberate simplifications: no algo (trigger/TP/SL)
endpoints, no isolated margin, no hedge mode, the request timestamp is checked
for its format only (unless ``max_clock_skew`` is set), and canceled orders
stay in the order history for ever.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import traceback
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import ccxt
import ccxt.async_support

from fakes._http import Call, LoopbackFake, RecordedRequest, Reply, gateway_page, json_reply
from fakes.ccxt_urls import point_at
from fakes.derivatives import (
    DerivativesVenue,
    SwapMarket,
    SwapOrder,
    SwapTrade,
    VenueError,
    default_swap_markets,
)

__all__ = ["ORDER_ERRORS", "FakeOkx", "OkxError", "RecordedRequest", "point_at"]

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
TAG_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
ORD_TYPES = ("market", "limit", "post_only", "fok", "ioc", "optimal_limit_ioc")
INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")
ALL_FAILED = "All operations failed"
CANCEL_SOURCES = {  # the venue's cancel reason -> OKX cancelSource, cancelSourceReason
    "user": ("1", "Order canceled by user"),
    "ioc": ("14", "Order canceled: IOC order was partially canceled due to incompletely filled"),
    "post_only": ("31", "The post-only order will take liquidity in taker orders"),
    "reduce_only": ("22", "Order canceled: reduce-only order no longer reduces the position"),
    "close_position": ("22", "Order canceled: reduce-only order canceled by close position"),
    "system": ("0", "Order canceled by system"),
}

#: The venue's rejections as OKX order errors (``sCode``, ``sMsg``), and what
#: ccxt.okx 4.5.90 raises for each (checked by tests/test_fake_okx.py).
ORDER_ERRORS: dict[str, tuple[str, str]] = {
    # BadSymbol
    "bad_symbol": ("51001", "Instrument ID, Instrument ID code or Spread ID doesn't exist."),
    # BadRequest (51000)
    "bad_side": ("51000", "Parameter side error"),
    "bad_type": ("51000", "Parameter ordType error"),
    "bad_amount": ("51000", "Parameter sz error"),
    "bad_price": ("51000", "Parameter px error"),
    # InvalidOrder
    "lot_size": ("51121", "Order quantity must be a multiple of the lot size."),
    "min_size": ("51020", "Your order should meet or exceed the minimum order amount."),
    "max_size": ("51202", "Market order amount exceeds the maximum amount."),
    "duplicate_client_id": ("51016", "Client order ID already exists."),
    "pending_close_orders": ("51115", "Cancel all pending close-orders before liquidation."),
    # InsufficientFunds
    "insufficient_margin": ("51008", "Order failed. Insufficient USDT margin in account"),
    # ExchangeError: ccxt.okx has no mapping for these codes
    "reduce_only_flat": (
        "51169",
        "Order failed because you don't have any positions in this direction "
        "for this contract to reduce or close.",
    ),
    "reduce_only_same_side": (
        "51170",
        "Failed to place order. A reduce-only order can't be the same trading "
        "direction as your existing positions.",
    ),
    "no_position": ("51023", "Position doesn't exist."),
    # OrderNotFound
    "no_such_order": (
        "51400",
        "Order cancellation failed as the order has been filled, canceled or does not exist.",
    ),
    "order_final": (
        "51400",
        "Order cancellation failed as the order has been filled, canceled or does not exist.",
    ),
    "bad_leverage": ("51000", "Parameter lever error"),
}


class OkxError(Exception):
    """An OKX error reply: HTTP status, top-level ``code``/``msg`` and ``data``."""

    def __init__(
        self, status: int, code: str, msg: str, data: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.data = data

    def body(self) -> dict[str, Any]:
        if self.data is None and self.status == 401:
            return {"msg": self.msg, "code": self.code}  # OKX's gateway: no data
        return {"code": self.code, "data": self.data or [], "msg": self.msg}


class _Rejected(Exception):
    """One operation of a (batch) trade request failed: ``sCode``/``sMsg``."""

    def __init__(self, s_code: str, s_msg: str) -> None:
        super().__init__(f"{s_code} {s_msg}")
        self.s_code = s_code
        self.s_msg = s_msg

    @classmethod
    def of(cls, exc: VenueError) -> _Rejected:
        s_code, s_msg = ORDER_ERRORS[exc.reason]
        return cls(s_code, s_msg)


def _empty(name: str) -> OkxError:
    return OkxError(400, "50014", f"Parameter {name} can not be empty.")


def _param_error(name: str) -> _Rejected:
    return _Rejected("51000", f"Parameter {name} error")


def _s(value: Decimal | int | None) -> str:
    """OKX's number strings: plain decimals, no exponent, no trailing zeros."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def _fee(value: Decimal) -> str:
    """A fee as OKX reports it: negative when charged."""
    return _s(-value) if value else "0"


#: A route: (handler(call) -> data list, signed, trade endpoint with inTime/outTime).
Route = tuple[Callable[[Call], list[Any]], bool, bool]


class FakeOkx(LoopbackFake):
    """OKX v5 swap REST on loopback, backed by a :class:`DerivativesVenue`."""

    name = "fake-okx"
    json_type = "application/json"
    html_type = "text/html;charset=UTF-8"

    def __init__(
        self,
        venue: DerivativesVenue | None = None,
        *,
        api_key: str = "test-key",
        secret: str = "test-secret",  # noqa: S107 (a fake's fixed test credential)
        password: str = "test-passphrase",  # noqa: S107 (the OKX API passphrase)
        cash: object = None,
        symbols: tuple[str, ...] | list[str] = ("BTC/USDT:USDT", "ETH/USDT:USDT"),
        max_clock_skew: float | None = None,
    ) -> None:
        super().__init__()
        if venue is not None and cash is not None:
            raise TypeError("pass either a venue or cash, not both")
        if venue is None:
            venue = DerivativesVenue(
                markets=default_swap_markets(symbols),
                cash=Decimal(str(cash)) if cash is not None else Decimal(100_000),
            )
        self.venue = venue
        self.api_key = api_key
        self.secret = secret
        self.password = password
        #: Refuse (50102) a request timestamp this many seconds off the venue clock.
        self.max_clock_skew = max_clock_skew
        self._ord_types: dict[str, str] = {}  # ordId -> ordType as placed
        v5 = "/api/v5/"
        routes: dict[tuple[str, str], Route] = {
            ("GET", v5 + "public/time"): (self._time, False, False),
            ("GET", v5 + "public/instruments"): (self._instruments, False, False),
            ("GET", v5 + "public/mark-price"): (self._mark_price, False, False),
            ("GET", v5 + "market/ticker"): (self._ticker, False, False),
            ("GET", v5 + "market/tickers"): (self._tickers, False, False),
            ("GET", v5 + "market/books"): (self._books, False, False),
            ("GET", v5 + "asset/currencies"): (self._currencies, True, False),
            ("GET", v5 + "account/config"): (self._config, True, False),
            ("GET", v5 + "account/balance"): (self._balance, True, False),
            ("GET", v5 + "account/positions"): (self._positions, True, False),
            ("GET", v5 + "account/leverage-info"): (self._leverage_info, True, False),
            ("POST", v5 + "account/set-leverage"): (self._set_leverage, True, False),
            ("POST", v5 + "trade/order"): (self._place_one, True, True),
            ("POST", v5 + "trade/batch-orders"): (self._place_batch, True, True),
            ("GET", v5 + "trade/order"): (self._get_order, True, False),
            ("POST", v5 + "trade/cancel-order"): (self._cancel_one, True, True),
            ("POST", v5 + "trade/cancel-batch-orders"): (self._cancel_batch, True, True),
            ("GET", v5 + "trade/orders-pending"): (self._orders_pending, True, False),
            ("GET", v5 + "trade/orders-history"): (self._orders_history, True, False),
            ("GET", v5 + "trade/orders-history-archive"): (self._orders_history, True, False),
            ("POST", v5 + "trade/close-position"): (self._close_position, True, True),
            ("GET", v5 + "trade/fills"): (self._fills, True, False),
            ("GET", v5 + "trade/fills-history"): (self._fills_history, True, False),
        }
        self._routes = dict(routes)

    # -- clients ---------------------------------------------------------------------
    def client_config(self, **config: Any) -> dict[str, Any]:
        """The ccxt config :meth:`client` uses; ``config`` (and its ``options``) win."""
        options = {
            "fetchMarkets": {"types": ["swap"]},  # one public/instruments call, SWAP only
            "defaultType": "swap",  # symbol-less calls (fills, history) ask for SWAP
            "adjustForTimeDifference": False,  # no time sync
            **config.pop("options", {}),
        }
        return {
            "apiKey": self.api_key,
            "secret": self.secret,
            "password": self.password,
            "enableRateLimit": False,
            "timeout": 10_000,
            **config,
            "options": options,
        }

    def client(self, **config: Any) -> ccxt.okx:
        """A sync ``ccxt.okx`` whose every API URL points at this fake."""
        return point_at(ccxt.okx(self.client_config(**config)), self.url)

    def async_client(self, **config: Any) -> ccxt.async_support.okx:
        """An async ``ccxt.async_support.okx`` pointing at this fake (close it)."""
        return point_at(ccxt.async_support.okx(self.client_config(**config)), self.url)

    def inject(
        self,
        method: str,
        path: str,
        fault: str,
        *,
        times: int = 1,
        status: int = 500,
        body: Mapping[str, Any] | str | None = None,
    ) -> None:
        """Apply ``fault`` to the next ``times`` requests to ``method path``.

        ``path`` may omit the ``/api/v5/`` prefix. What ccxt.okx 4.5.90 makes of
        the faults is pinned by tests/test_fake_okx.py: a 5xx gateway page is
        ExchangeNotAvailable (504: RequestTimeout), a 429 with OKX's ``50011``
        body RateLimitExceeded, a JSON body's OKX code wins over the status
        (``50001`` is OnMaintenance); a dropped connection is NetworkError (sync)
        or ExchangeNotAvailable (async; aiohttp re-sends a dropped GET once, so
        use ``times=2`` there). A 200 that is not JSON does not raise at all:
        ccxt.okx returns an order whose ``id`` is None.
        """
        if not path.startswith("/api/"):
            path = "/api/v5/" + path.lstrip("/")
        super().inject(method, path, fault, times=times, status=status, body=body)

    # -- the loopback hooks ---------------------------------------------------------------
    def _prepare(self, call: Call) -> None:
        call.signed = call.header("OK-ACCESS-SIGN") is not None
        if call.method == "GET":
            call.params = dict(parse_qsl(call.query, keep_blank_values=True))
            return
        try:
            call.json = json.loads(call.body) if call.body else None
        except ValueError:
            call.json = None
        if isinstance(call.json, dict):
            call.params = dict(call.json)

    def _not_found(self, call: Call) -> Reply:
        return json_reply(404, {"msg": "Not Found", "code": "404"})

    def _fault_body(self, status: int) -> Mapping[str, Any] | str:
        if status == 429:
            return {"msg": "Too Many Requests", "code": "50011"}
        if status >= 500:
            return gateway_page(status)
        return {"msg": "System error. Try again later", "code": "50026"}

    def _handle(self, call: Call, route: Any) -> Reply:
        handler, signed, timed = route
        in_time = self._micros()
        try:
            if signed:
                self._authenticate(call)
            if call.method == "POST":
                self._check_body(call)
            data = handler(call)
            payload: dict[str, Any] = {"code": "0", "data": data, "msg": ""}
        except OkxError as exc:
            if exc.status != 200:
                return json_reply(exc.status, exc.body())
            payload = exc.body()
        except Exception:
            # A bug in the fake: reply like OKX's system error, keep the traceback.
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return json_reply(
                500, {"code": "50026", "data": [], "msg": "System error. Try again later"}
            )
        if timed:
            payload["inTime"] = in_time
            payload["outTime"] = self._micros()
        return json_reply(200, payload)

    def _micros(self) -> str:
        return str(int(self.venue.clock() * 1_000_000))

    # -- authentication --------------------------------------------------------------------
    def _authenticate(self, call: Call) -> None:
        """OKX's checks: the four OK-ACCESS-* headers, then the HMAC-SHA256 signature."""
        key = call.header("OK-ACCESS-KEY")
        passphrase = call.header("OK-ACCESS-PASSPHRASE")
        sign = call.header("OK-ACCESS-SIGN")
        stamp = call.header("OK-ACCESS-TIMESTAMP")
        if not key:
            raise OkxError(401, "50103", 'Request header "OK-ACCESS-KEY" cannot be empty.')
        if not passphrase:
            raise OkxError(401, "50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.')
        if not sign:
            raise OkxError(401, "50106", 'Request header "OK-ACCESS-SIGN" cannot be empty.')
        if not stamp:
            raise OkxError(401, "50107", 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.')
        if not TIMESTAMP_RE.match(stamp):
            raise OkxError(401, "50112", "Invalid OK-ACCESS-TIMESTAMP")
        if self.max_clock_skew is not None:
            sent = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
            if abs(sent.timestamp() - self.venue.clock()) > self.max_clock_skew:
                raise OkxError(401, "50102", "Timestamp request expired")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise OkxError(401, "50111", "Invalid OK-ACCESS-KEY")
        if not hmac.compare_digest(passphrase.encode(), self.password.encode()):
            raise OkxError(401, "50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
        # prehash = timestamp + METHOD + requestPath (with ?query for GET) + body
        prehash = stamp + call.method + call.raw_path + call.body
        digest = hmac.new(self.secret.encode(), prehash.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest), sign.encode()):
            raise OkxError(401, "50113", "Invalid Sign")

    @staticmethod
    def _check_body(call: Call) -> None:
        if not call.body:
            raise OkxError(400, "50000", "Body for POST request cannot be empty.")
        if call.json is None:
            raise OkxError(400, "50002", "JSON syntax error")
        content_type = call.header("Content-Type") or ""
        if "application/json" not in content_type.lower():
            raise OkxError(400, "50006", 'Invalid Content-Type. Please use "application/JSON".')

    # -- parameters ----------------------------------------------------------------------------
    def _inst(self, p: Mapping[str, Any], *, required: bool = True) -> SwapMarket | None:
        inst_id = p.get("instId")
        if not inst_id:
            if required:
                raise _empty("instId")
            return None
        try:
            return self.venue.market_by_id(str(inst_id))
        except VenueError:
            raise OkxError(200, "51001", ORDER_ERRORS["bad_symbol"][1]) from None

    @staticmethod
    def _inst_type(p: Mapping[str, Any], *, required: bool) -> str | None:
        inst_type = p.get("instType")
        if not inst_type:
            if required:
                raise _empty("instType")
            return None
        if inst_type not in INST_TYPES:
            raise OkxError(400, "51000", "Parameter instType error")
        return str(inst_type)

    @staticmethod
    def _limit(p: Mapping[str, Any]) -> int:
        raw = p.get("limit")
        if raw in (None, ""):
            return 100
        try:
            limit = int(str(raw))
        except ValueError:
            raise OkxError(400, "51000", "Parameter limit error") from None
        if not 1 <= limit <= 100:
            raise OkxError(400, "51000", "Parameter limit error")
        return limit

    @staticmethod
    def _int(p: Mapping[str, Any], name: str) -> int | None:
        raw = p.get(name)
        if raw in (None, ""):
            return None
        try:
            return int(str(raw))
        except ValueError:
            raise OkxError(400, "51000", f"Parameter {name} error") from None

    @staticmethod
    def _bool(p: Mapping[str, Any], name: str) -> bool:
        raw = p.get(name, False)
        if isinstance(raw, bool):
            return raw
        if raw in ("true", "false", ""):
            return raw == "true"
        raise _param_error(name)

    def _page(self, items: list[Any], key: Callable[[Any], int], p: Mapping[str, Any]) -> list[Any]:
        """Newest first; ``after`` (older than) / ``before`` (newer than) an id; ``limit``."""
        after, before = self._int(p, "after"), self._int(p, "before")
        limit = self._limit(p)
        items = sorted(items, key=key, reverse=True)
        if after is not None:
            items = [i for i in items if key(i) < after]
        if before is not None:
            items = [i for i in items if key(i) > before]
        return items[:limit]

    # -- public ------------------------------------------------------------------------------------
    def _time(self, call: Call) -> list[Any]:
        return [{"ts": str(self.venue.now_ms())}]

    def _instruments(self, call: Call) -> list[Any]:
        inst_type = self._inst_type(call.params, required=True)
        if inst_type != "SWAP":
            return []
        market = self._inst(call.params, required=False)
        with self.venue.lock:
            markets = [market] if market else list(self.venue.markets.values())
            return [self._instrument_json(m) for m in markets]

    def _instrument_json(self, m: SwapMarket) -> dict[str, Any]:
        return {
            "alias": "",
            "auctionEndTime": "",
            "baseCcy": "",
            "category": "1",
            "contTdSwTime": "1611916828000",
            "ctMult": "1",
            "ctType": "linear",
            "ctVal": _s(m.contract_size),
            "ctValCcy": m.base,
            "expTime": "",
            "futureSettlement": False,
            "instFamily": f"{m.base}-{m.quote}",
            "instId": m.id,
            "instIdCode": zlib.crc32(m.id.encode()) % 100_000,
            "instType": "SWAP",
            "lever": _s(m.max_leverage),
            "listTime": "1611916828000",
            "lotSz": _s(m.lot_size),
            "maxIcebergSz": "100000000",
            "maxLmtAmt": "20000000",
            "maxLmtSz": _s(m.max_limit_size),
            "maxMktAmt": "",
            "maxMktSz": _s(m.max_market_size),
            "maxStopSz": _s(m.max_market_size),
            "maxTriggerSz": "100000000",
            "maxTwapSz": "100000000",
            "minSz": _s(m.min_size),
            "openType": "",
            "optType": "",
            "quoteCcy": "",
            "ruleType": "normal",
            "settleCcy": m.settle,
            "state": "live",
            "stk": "",
            "tickSz": _s(m.tick_size),
            "uly": f"{m.base}-{m.quote}",
        }

    def _ticker_json(self, m: SwapMarket) -> dict[str, Any]:
        price = _s(m.price)
        now = str(self.venue.now_ms())
        return {
            "instType": "SWAP",
            "instId": m.id,
            "last": price,
            "lastSz": "1",
            "askPx": price,
            "askSz": "1000",
            "bidPx": price,
            "bidSz": "1000",
            "open24h": price,
            "high24h": price,
            "low24h": price,
            "volCcy24h": "0",
            "vol24h": "0",
            "sodUtc0": price,
            "sodUtc8": price,
            "ts": now,
        }

    def _ticker(self, call: Call) -> list[Any]:
        market = self._inst(call.params)
        assert market is not None
        with self.venue.lock:
            return [self._ticker_json(market)]

    def _tickers(self, call: Call) -> list[Any]:
        if self._inst_type(call.params, required=True) != "SWAP":
            return []
        with self.venue.lock:
            return [self._ticker_json(m) for m in self.venue.markets.values()]

    def _mark_price(self, call: Call) -> list[Any]:
        # instType is documented as required; OKX (and ccxt) get by with instId alone.
        market = self._inst(call.params, required=False)
        inst_type = self._inst_type(call.params, required=market is None)
        if inst_type not in (None, "SWAP"):
            return []
        with self.venue.lock:
            markets = [market] if market else list(self.venue.markets.values())
            now = str(self.venue.now_ms())
            return [
                {"instType": "SWAP", "instId": m.id, "markPx": _s(m.price), "ts": now}
                for m in markets
            ]

    def _books(self, call: Call) -> list[Any]:
        market = self._inst(call.params)
        assert market is not None
        with self.venue.lock:
            level = [_s(market.price), "1000", "0", "1"]
            return [{"asks": [level], "bids": [level], "ts": str(self.venue.now_ms())}]

    # -- account -----------------------------------------------------------------------------------
    def _currencies(self, call: Call) -> list[Any]:
        codes = {self.venue.settle} | {m.base for m in self.venue.markets.values()}
        return [
            {
                "canDep": True,
                "canInternal": True,
                "canWd": True,
                "ccy": code,
                "chain": f"{code}-ERC20",
                "mainNet": False,
                "maxFee": "0",
                "maxWd": "1000000",
                "minDep": "0.00000001",
                "minFee": "0",
                "minWd": "0.001",
                "name": code,
                "wdTickSz": "8",
            }
            for code in sorted(codes)
        ]

    def _config(self, call: Call) -> list[Any]:
        return [
            {
                "acctLv": "2",  # futures mode
                "autoLoan": False,
                "ctIsoMode": "automatic",
                "greeksType": "PA",
                "label": "nija-guard-fake",
                "level": "Lv1",
                "levelTmp": "",
                "mainUid": "44705892343619584",
                "mgnIsoMode": "automatic",
                "perm": "read_only,trade",
                "posMode": "net_mode",
                "roleType": "0",
                "spotRoleType": "0",
                "traderInsts": [],
                "type": "0",
                "uid": "44705892343619584",
            }
        ]

    def _balance(self, call: Call) -> list[Any]:
        wanted = call.params.get("ccy")
        settle = self.venue.settle
        with self.venue.lock:
            snap = self.venue.balance()
        frozen = snap.position_margin + snap.order_margin
        avail_bal = max(Decimal(0), snap.cash - frozen)
        detail = {
            "availBal": _s(avail_bal),
            "availEq": _s(snap.available),
            "borrowFroz": "",
            "cashBal": _s(snap.cash),
            "ccy": settle,
            "crossLiab": "0",
            "disEq": _s(snap.equity),
            "eq": _s(snap.equity),
            "eqUsd": _s(snap.equity),
            "fixedBal": "0",
            "frozenBal": _s(frozen),
            "imr": _s(snap.position_margin),
            "interest": "0",
            "isoEq": "0",
            "isoLiab": "0",
            "isoUpl": "0",
            "liab": "0",
            "maxLoan": "0",
            "mgnRatio": "",
            "mmr": _s(snap.maintenance_margin),
            "notionalLever": "0",
            "ordFrozen": _s(snap.order_margin),
            "rewardBal": "0",
            "stgyEq": "0",
            "twap": "0",
            "uTime": str(snap.timestamp),
            "upl": _s(snap.unrealized_pnl),
            "uplLiab": "0",
        }
        details = [detail] if wanted in (None, "", settle) else []
        return [
            {
                "adjEq": "",
                "borrowFroz": "",
                "details": details,
                "imr": "",
                "isoEq": "0",
                "mgnRatio": "",
                "mmr": "",
                "notionalUsd": "",
                "ordFroz": "",
                "totalEq": _s(snap.equity),
                "uTime": str(snap.timestamp),
                "upl": _s(snap.unrealized_pnl),
            }
        ]

    def _positions(self, call: Call) -> list[Any]:
        p = call.params
        inst_type = self._inst_type(p, required=False)
        if inst_type not in (None, "SWAP"):
            return []
        ids = [i for i in str(p.get("instId") or "").split(",") if i]
        if len(ids) > 10:
            raise OkxError(400, "51000", "Parameter instId error")
        with self.venue.lock:
            for inst_id in ids:
                self._inst({"instId": inst_id})
            positions = [
                pos
                for pos in self.venue.positions()
                if not ids or self.venue.markets[pos.symbol].id in ids
            ]
            pos_ids = [i for i in str(p.get("posId") or "").split(",") if i]
            if pos_ids:
                positions = [pos for pos in positions if pos.id in pos_ids]
            positions.sort(key=lambda pos: pos.timestamp, reverse=True)
            return [self._position_json(pos.symbol) for pos in positions]

    def _position_json(self, symbol: str) -> dict[str, Any]:
        venue = self.venue
        market = venue.markets[symbol]
        pos = venue.position(symbol)
        notional = market.notional(pos.contracts)
        imr = notional / market.leverage
        upl = venue.unrealized_pnl(symbol)
        price = _s(market.price)
        return {
            "adl": "1",
            "availPos": "",
            "avgPx": _s(pos.entry_price),
            "baseBal": "",
            "baseBorrowed": "",
            "baseInterest": "",
            "bePx": _s(pos.entry_price),
            "bizRefId": "",
            "bizRefType": "",
            "cTime": str(pos.timestamp),
            "ccy": market.settle,
            "clSpotInUseAmt": "",
            "closeOrderAlgo": [],
            "deltaBS": "",
            "deltaPA": "",
            "fee": _fee(pos.fees),
            "fundingFee": "0",
            "gammaBS": "",
            "gammaPA": "",
            "idxPx": price,
            "imr": _s(imr),
            "instId": market.id,
            "instType": "SWAP",
            "interest": "",
            "last": price,
            "lever": _s(market.leverage),
            "liab": "",
            "liabCcy": "",
            "liqPenalty": "0",
            "liqPx": "",
            "margin": "",
            "markPx": price,
            "maxSpotInUseAmt": "",
            "mgnMode": "cross",
            "mgnRatio": "",
            "mmr": _s(notional * market.maintenance_rate),
            "notionalUsd": _s(notional),
            "optVal": "",
            "pendingCloseOrdLiabVal": "",
            "pnl": _s(pos.realized_pnl),
            "pos": _s(pos.contracts),
            "posCcy": "",
            "posId": pos.id,
            "posSide": "net",
            "quoteBal": "",
            "quoteBorrowed": "",
            "quoteInterest": "",
            "realizedPnl": _s(pos.realized_pnl - pos.fees),
            "spotInUseAmt": "",
            "spotInUseCcy": "",
            "thetaBS": "",
            "thetaPA": "",
            "tradeId": pos.last_trade_id,
            "uTime": str(pos.updated_timestamp),
            "upl": _s(upl),
            "uplLastPx": _s(upl),
            "uplRatio": _s(upl / imr) if imr else "0",
            "uplRatioLastPx": _s(upl / imr) if imr else "0",
            "usdPx": "",
            "vegaBS": "",
            "vegaPA": "",
        }

    def _leverage_info(self, call: Call) -> list[Any]:
        p = call.params
        market = self._inst(p)
        assert market is not None
        if not p.get("mgnMode"):
            raise _empty("mgnMode")
        return [
            {"instId": market.id, "lever": _s(market.leverage), "mgnMode": "cross", "posSide": ""}
        ]

    def _set_leverage(self, call: Call) -> list[Any]:
        p = call.params
        market = self._inst(p)
        assert market is not None
        for name in ("lever", "mgnMode"):
            if not p.get(name):
                raise _empty(name)
        if p["mgnMode"] != "cross":
            raise OkxError(200, "51000", "Parameter mgnMode error")
        try:
            self.venue.set_leverage(market.symbol, p["lever"])
        except VenueError as exc:
            raise OkxError(200, "51000", ORDER_ERRORS[exc.reason][1]) from None
        return [
            {"instId": market.id, "lever": _s(market.leverage), "mgnMode": "cross", "posSide": ""}
        ]

    # -- placing orders ----------------------------------------------------------------------------
    def _order_args(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """A place-order request as venue arguments; raise _Rejected / OkxError."""
        for name in ("instId", "tdMode", "side", "ordType", "sz"):
            if p.get(name) in (None, ""):
                raise _empty(name)
        try:
            market = self.venue.market_by_id(str(p["instId"]))
        except VenueError as exc:
            raise _Rejected.of(exc) from None
        if p["tdMode"] not in ("cross", "isolated"):
            raise _param_error("tdMode")
        if p["tdMode"] == "isolated":
            # The fake has a cross-margin account only.
            raise _Rejected("51010", "Request unsupported under current account mode")
        if p.get("posSide") not in (None, "", "net"):
            raise _param_error("posSide")  # long/short need hedge mode
        if p["side"] not in ("buy", "sell"):
            raise _param_error("side")
        ord_type = p["ordType"]
        if ord_type not in ORD_TYPES:
            raise _param_error("ordType")
        client_id = p.get("clOrdId") or None
        if client_id is not None and not CLIENT_ID_RE.match(str(client_id)):
            raise _param_error("clOrdId")
        tag = p.get("tag") or ""
        if tag and not TAG_RE.match(str(tag)):
            raise _param_error("tag")
        reduce_only = self._bool(p, "reduceOnly")
        try:
            size = Decimal(str(p["sz"]))
        except InvalidOperation:
            raise _param_error("sz") from None
        price = None
        if ord_type in ("limit", "post_only", "fok", "ioc"):
            if p.get("px") in (None, ""):
                raise _Rejected("51204", "The price for the limit order cannot be empty.")
            try:
                price = Decimal(str(p["px"]))
            except InvalidOperation:
                raise _param_error("px") from None
        return {
            "symbol": market.symbol,
            "side": p["side"],
            "type": "market" if ord_type in ("market", "optimal_limit_ioc") else "limit",
            "amount": size,
            "price": price,
            "client_order_id": client_id,
            "reduce_only": reduce_only,
            "post_only": ord_type == "post_only",
            "time_in_force": {"fok": "FOK", "ioc": "IOC"}.get(ord_type, "GTC"),
            "tag": tag,
            "_ord_type": ord_type,
        }

    def _place(self, p: Any) -> dict[str, Any]:
        """One order of a trade/order or trade/batch-orders request: its result entry."""
        now = str(self.venue.now_ms())
        client_id = p.get("clOrdId", "") if isinstance(p, dict) else ""
        tag = p.get("tag", "") if isinstance(p, dict) else ""
        try:
            if not isinstance(p, dict):
                raise OkxError(400, "50002", "JSON syntax error")
            args = self._order_args(p)
            ord_type = args.pop("_ord_type")
            with self.venue.lock:
                try:
                    order = self.venue.place(**args)
                except VenueError as exc:
                    raise _Rejected.of(exc) from None
                self._ord_types[order.id] = ord_type
        except _Rejected as exc:
            return {
                "clOrdId": client_id,
                "ordId": "",
                "sCode": exc.s_code,
                "sMsg": exc.s_msg,
                "tag": tag,
                "ts": now,
            }
        return {
            "clOrdId": order.client_order_id or "",
            "ordId": order.id,
            "sCode": "0",
            "sMsg": "Order placed",
            "tag": order.tag,
            "ts": now,
        }

    @staticmethod
    def _outcome(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OKX's envelope for per-operation results: code 1 all failed, 2 some."""
        failed = sum(1 for r in results if r["sCode"] != "0")
        if failed == len(results):
            raise OkxError(200, "1", ALL_FAILED, results)
        if failed:
            raise OkxError(200, "2", "Bulk operation partially succeeded.", results)
        return results

    def _place_one(self, call: Call) -> list[Any]:
        if not isinstance(call.json, dict):
            raise OkxError(400, "50002", "JSON syntax error")
        return self._outcome([self._place(call.json)])

    def _place_batch(self, call: Call) -> list[Any]:
        orders = call.json if isinstance(call.json, list) else [call.json]
        if not orders:
            raise OkxError(400, "50000", "Body for POST request cannot be empty.")
        if len(orders) > 20:
            raise OkxError(200, "51111", "Maximum 20 orders can be placed in bulk.")
        return self._outcome([self._place(p) for p in orders])

    def _close_position(self, call: Call) -> list[Any]:
        p = call.params
        for name in ("instId", "mgnMode"):
            if not p.get(name):
                raise _empty(name)
        client_id = p.get("clOrdId") or ""
        tag = p.get("tag") or ""
        entry = {"clOrdId": client_id, "instId": p["instId"], "posSide": "net", "tag": tag}
        try:
            try:
                market = self.venue.market_by_id(str(p["instId"]))
            except VenueError as exc:
                raise _Rejected.of(exc) from None
            if p.get("posSide") not in (None, "", "net"):
                raise _param_error("posSide")
            if p["mgnMode"] not in ("cross", "isolated"):
                raise _param_error("mgnMode")
            if client_id and not CLIENT_ID_RE.match(str(client_id)):
                raise _param_error("clOrdId")
            if tag and not TAG_RE.match(str(tag)):
                raise _param_error("tag")
            auto_cancel = self._bool(p, "autoCxl")
            if p["mgnMode"] == "isolated":  # no isolated positions here
                raise _Rejected(*ORDER_ERRORS["no_position"])
            with self.venue.lock:
                try:
                    order = self.venue.close_position(
                        market.symbol,
                        client_order_id=client_id or None,
                        cancel_reduce_only=auto_cancel,
                        tag=tag,
                    )
                except VenueError as exc:
                    raise _Rejected.of(exc) from None
                self._ord_types[order.id] = "market"
        except _Rejected as exc:
            failed = [{**entry, "sCode": exc.s_code, "sMsg": exc.s_msg}]
            raise OkxError(200, "1", ALL_FAILED, failed) from None
        return [entry]

    # -- querying and canceling orders -------------------------------------------------------------
    def _find(self, p: Mapping[str, Any], market: SwapMarket) -> SwapOrder | None:
        """The order named by ordId (which wins) or clOrdId, in ``market``."""
        order_id, client_id = p.get("ordId") or None, p.get("clOrdId") or None
        try:
            if order_id is not None:
                order = self.venue.orders.get(str(order_id))
            else:
                order = self.venue.get(client_order_id=str(client_id))
        except VenueError:
            return None
        if order is None or order.symbol != market.symbol:
            return None
        return order

    def _get_order(self, call: Call) -> list[Any]:
        p = call.params
        market = self._inst(p)
        assert market is not None
        if not p.get("ordId") and not p.get("clOrdId"):
            raise OkxError(200, "51003", "Either client order ID or order ID is required.")
        with self.venue.lock:
            order = self._find(p, market)
            if order is None or (order.is_open and not order.working):
                raise OkxError(200, "51603", "Order does not exist.")
            return [self._order_json(order)]

    def _cancel(self, p: Any) -> dict[str, Any]:
        now = str(self.venue.now_ms())
        if not isinstance(p, dict):
            raise OkxError(400, "50002", "JSON syntax error")
        entry = {"clOrdId": p.get("clOrdId") or "", "ordId": p.get("ordId") or "", "ts": now}
        try:
            try:
                market = self.venue.market_by_id(str(p.get("instId") or ""))
            except VenueError as exc:
                if not p.get("instId"):
                    raise _empty("instId") from None
                raise _Rejected.of(exc) from None
            if not p.get("ordId") and not p.get("clOrdId"):
                raise _Rejected("51407", "Either order ID or client order ID is required.")
            with self.venue.lock:
                order = self._find(p, market)
                if order is None:
                    raise _Rejected(*ORDER_ERRORS["no_such_order"])
                try:
                    self.venue.cancel(order.id)
                except VenueError as exc:
                    raise _Rejected.of(exc) from None
                entry = {**entry, "clOrdId": order.client_order_id or "", "ordId": order.id}
        except _Rejected as exc:
            return {**entry, "sCode": exc.s_code, "sMsg": exc.s_msg}
        return {**entry, "sCode": "0", "sMsg": ""}

    def _cancel_one(self, call: Call) -> list[Any]:
        return self._outcome([self._cancel(call.json)])

    def _cancel_batch(self, call: Call) -> list[Any]:
        requests = call.json if isinstance(call.json, list) else [call.json]
        if len(requests) > 20:
            raise OkxError(200, "51111", "Maximum 20 orders can be placed in bulk.")
        return self._outcome([self._cancel(p) for p in requests])

    def _select(self, p: Mapping[str, Any], *, final: bool) -> list[SwapOrder]:
        market = self._inst(p, required=False)
        ord_types = {t for t in str(p.get("ordType") or "").split(",") if t}
        state = p.get("state") or None
        begin, end = self._int(p, "begin"), self._int(p, "end")
        chosen = []
        for order in self.venue.all_orders(market.symbol if market else None):
            if order.is_final != final or not (order.is_final or order.working):
                continue
            if ord_types and self._ord_type(order) not in ord_types:
                continue
            if state is not None and order.status != state:
                continue
            if (begin is not None and order.timestamp < begin) or (
                end is not None and order.timestamp > end
            ):
                continue
            chosen.append(order)
        return chosen

    def _orders_pending(self, call: Call) -> list[Any]:
        p = call.params
        if self._inst_type(p, required=False) not in (None, "SWAP"):
            return []
        if p.get("state") not in (None, "", "live", "partially_filled"):
            raise OkxError(400, "51000", "Parameter state error")
        with self.venue.lock:
            orders = self._page(self._select(p, final=False), lambda o: int(o.id), p)
            return [self._order_json(o) for o in orders]

    def _orders_history(self, call: Call) -> list[Any]:
        p = call.params
        if self._inst_type(p, required=True) != "SWAP":
            return []
        if p.get("state") not in (None, "", "filled", "canceled", "mmp_canceled"):
            raise OkxError(400, "51000", "Parameter state error")
        with self.venue.lock:
            orders = self._page(self._select(p, final=True), lambda o: int(o.id), p)
            return [self._order_json(o) for o in orders]

    def _fills(self, call: Call) -> list[Any]:
        return self._fills_of(call.params, required=False)

    def _fills_history(self, call: Call) -> list[Any]:
        return self._fills_of(call.params, required=True)

    def _fills_of(self, p: Mapping[str, Any], *, required: bool) -> list[Any]:
        if self._inst_type(p, required=required) not in (None, "SWAP"):
            return []
        market = self._inst(p, required=False)
        order_id = p.get("ordId") or None
        begin, end = self._int(p, "begin"), self._int(p, "end")
        with self.venue.lock:
            trades = [
                t
                for t in self.venue.my_trades(market.symbol if market else None)
                if (order_id is None or t.order_id == order_id)
                and (begin is None or t.timestamp >= begin)
                and (end is None or t.timestamp <= end)
            ]
            return [self._fill_json(t) for t in self._page(trades, lambda t: int(t.id), p)]

    # -- rendering ---------------------------------------------------------------------------------
    def _ord_type(self, order: SwapOrder) -> str:
        placed = self._ord_types.get(order.id)
        if placed is not None:
            return placed
        if order.type == "market":
            return "market"
        if order.post_only:
            return "post_only"
        return {"IOC": "ioc", "FOK": "fok"}.get(order.time_in_force, "limit")

    def _order_json(self, order: SwapOrder) -> dict[str, Any]:
        """An order as trade/order, orders-pending and orders-history return it."""
        market = self.venue.markets[order.symbol]
        last = next((t for t in reversed(self.venue.trades) if t.order_id == order.id), None)
        cancel_source, cancel_reason = (
            CANCEL_SOURCES.get(order.cancel_reason or "system", CANCEL_SOURCES["system"])
            if order.status == "canceled"
            else ("", "")
        )
        average = order.average
        return {
            "accFillSz": _s(order.filled),
            "algoClOrdId": "",
            "algoId": "",
            "attachAlgoClOrdId": "",
            "attachAlgoOrds": [],
            "avgPx": _s(average) if average is not None else "",
            "cTime": str(order.timestamp),
            "cancelSource": cancel_source,
            "cancelSourceReason": cancel_reason,
            "category": "normal",
            "ccy": "",
            "clOrdId": order.client_order_id or "",
            "fee": _fee(order.fee),
            "feeCcy": order.fee_currency,
            "fillPx": _s(last.price) if last else "",
            "fillSz": _s(last.amount) if last else "",
            "fillTime": str(last.timestamp) if last else "",
            "instId": market.id,
            "instType": "SWAP",
            "isTpLimit": "false",
            "lever": _s(market.leverage),
            "linkedAlgoOrd": {"algoId": ""},
            "ordId": order.id,
            "ordType": self._ord_type(order),
            "pnl": _s(order.pnl),
            "posSide": "net",
            "px": _s(order.price) if order.price is not None else "",
            "pxType": "",
            "pxUsd": "",
            "pxVol": "",
            "quickMgnType": "",
            "rebate": "0",
            "rebateCcy": order.fee_currency,
            "reduceOnly": "true" if order.reduce_only else "false",
            "side": order.side,
            "slOrdPx": "",
            "slTriggerPx": "",
            "slTriggerPxType": "",
            "source": "",
            "state": order.status,
            "stpId": "",
            "stpMode": "cancel_maker",
            "sz": _s(order.amount),
            "tag": order.tag,
            "tdMode": "cross",
            "tgtCcy": "",
            "tpOrdPx": "",
            "tpTriggerPx": "",
            "tpTriggerPxType": "",
            "tradeId": last.id if last else "",
            "uTime": str(order.updated_timestamp or order.timestamp),
        }

    def _fill_json(self, trade: SwapTrade) -> dict[str, Any]:
        market = self.venue.markets[trade.symbol]
        if trade.opening:
            sub_type = "3" if trade.side == "buy" else "4"  # open long / open short
        else:
            sub_type = "6" if trade.side == "buy" else "5"  # close short / close long
        return {
            "billId": trade.id,
            "clOrdId": trade.client_order_id or "",
            "execType": "T" if trade.taker else "M",
            "fee": _fee(trade.fee),
            "feeCcy": trade.fee_currency,
            "feeRate": _s(-trade.fee_rate),
            "fillIdxPx": _s(trade.price),
            "fillMarkPx": _s(trade.price),
            "fillMarkVol": "",
            "fillPnl": _s(trade.pnl),
            "fillPx": _s(trade.price),
            "fillPxUsd": "",
            "fillPxVol": "",
            "fillSz": _s(trade.amount),
            "fillTime": str(trade.timestamp),
            "instId": market.id,
            "instType": "SWAP",
            "ordId": trade.order_id,
            "posSide": "net",
            "side": trade.side,
            "subType": sub_type,
            "tag": self.venue.orders[trade.order_id].tag,
            "tradeId": trade.id,
            "ts": str(trade.timestamp),
        }
