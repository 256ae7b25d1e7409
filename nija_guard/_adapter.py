"""The adapter seam: everything that depends on the broker client's API.

The engine asks an adapter which methods enter orders, how to read symbol,
side and amount from a call, how to resubmit it with a clamped amount and a
client order id, what holdings a balance reports, what a market's precision and
minimums are, and whether an error leaves the outcome unknown. It never
touches a client itself: calls the adapter prepares are performed by a driver.

:class:`CcxtAdapter` is the implementation for ccxt clients (sync, async, pro).
"""

from __future__ import annotations

import hashlib
import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import ccxt

from ._model import ZERO, MarketInfo, OrderView, check_amount, to_decimal, unique_id
from ._options import ON_CONFLICT

__all__ = ["Adapter", "CcxtAdapter", "EntryPoint", "OrderCall", "is_order_entry_name"]

# The prefix of every client order id the guard makes: how it recognizes its
# own orders on the exchange after a restart.
CLIENT_ID_PREFIX = "njg"
# Kraken only takes a UUID (or 18 free chars); ours start with these 8 hex digits.
UUID_MARKER = "4e4a4700"

_ENTRY_VERBS = frozenset(
    {"create", "edit", "close", "place", "amend", "modify", "replace", "submit"}
)
_ENTRY_NOUNS = frozenset({"order", "orders", "position", "positions", "trade"})
# Request builders and id helpers: pure functions, they send nothing.
_BUILDER_ENDINGS = frozenset({"request", "requests", "appendix", "nonce", "data", "parts"})


def is_order_entry_name(name: str) -> bool:
    """Whether a method name enters (or amends, or closes with) an order."""
    words = name.split("_")
    return (
        words[0] in _ENTRY_VERBS
        and not _ENTRY_NOUNS.isdisjoint(words)
        and words[-1] not in _BUILDER_ENDINGS
        and "ccxt" not in words
    )


@dataclass(frozen=True)
class EntryPoint:
    """How one client method enters orders.

    ``kind`` is one of ``order`` (symbol/side/amount arguments), ``cost`` (a
    market order sized in quote currency), ``batch`` (a list of order
    requests), ``edit`` (amends an order by id), ``close_position``,
    ``close_all`` and ``convert``. ``side`` and ``type`` are set when the
    method's name fixes them (``create_market_sell_order``).
    """

    name: str
    kind: str
    arg_names: tuple[str, ...]
    defaults: Mapping[str, Any]
    side: str | None = None
    type: str | None = None
    extra_keywords: bool = False  # the method takes **kwargs: unknown keywords pass through

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, like ``inspect.Signature.bind``."""
        if len(args) > len(self.arg_names):
            raise ccxt.BadRequest(
                f"{self.name}() takes {len(self.arg_names)} arguments, got {len(args)}"
            )
        bound = dict(zip(self.arg_names, args, strict=False))
        for key, value in kwargs.items():
            if key not in self.arg_names and not self.extra_keywords:
                raise ccxt.BadRequest(f"{self.name}() got an unexpected argument {key!r}")
            if key in bound:
                raise ccxt.BadRequest(f"{self.name}() got multiple values for {key!r}")
            bound[key] = value
        for key in self.arg_names[len(args) :]:  # the positional ones are bound
            if key not in bound:
                if key not in self.defaults:
                    raise ccxt.ArgumentsRequired(f"{self.name}() requires the argument {key!r}")
                default = self.defaults[key]
                bound[key] = dict(default) if isinstance(default, dict) else default
        return bound


@dataclass
class OrderCall:
    """One order of a bot's call, parsed and validated, ready to resubmit."""

    entry: EntryPoint
    arguments: dict[str, Any]
    symbol: str
    side: str
    type: str
    amount: Decimal | None  # None: the whole position (close_position)
    price: Decimal | None
    params: dict[str, Any]
    guard_options: dict[str, Any] = field(default_factory=dict)
    replaces: str | None = None  # the order id an edit amends
    cost: Decimal | None = None  # quote-sized market orders
    contract_exit: bool = False  # closes (part of) a derivatives position

    def with_submission(self, amount: Decimal | None, params: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments with the clamped amount, normalized side and our params."""
        args = dict(self.arguments)
        if amount is not None:
            args["amount"] = float(amount)
        if args.get("side") is not None and self.entry.kind != "close_position":
            args["side"] = self.side  # normalized: "SELL" reaches ccxt as "sell"
        if "params" in args:
            args["params"] = dict(params)
        return args


# ccxt ids whose fetch_open_orders() without a symbol returns every open spot order of
# the account, unpaged: kraken (spot only, one unpaged OpenOrders call) and the paper
# exchange. Add a venue only with a test against its real client (tests/test_venues.py).
LISTS_EVERY_SPOT_ORDER = frozenset({"kraken", "paper"})

# ccxt ids whose edit_order takes params["clientOrderId"] as the amended order's id.
# They amend in place: the edit's order is the amended one, found by its id.
EDITS_NAME_BY_CLIENT_ID = frozenset({"okx", "okxus", "myokx", "bybit", "bybiteu", "bybitid"})


class Adapter(Protocol):
    """What the engine needs from a broker client API. See :class:`CcxtAdapter`.

    The engine speaks ccxt's unified vocabulary: it asks for operations by
    ccxt's method names (``fetch_balance``, ``fetch_order``, ``cancel_order``...),
    reads replies through the adapter (:meth:`order_view`, :meth:`holdings`) and
    decides on ccxt's error classes. An adapter for another broker translates:
    :meth:`operation` performs an operation the broker's way, its errors come
    back as ccxt errors, and :meth:`native_reply`/:meth:`native_error` give the
    bot what its own broker would have given it.
    """

    def venue_name(self, client: Any) -> str: ...
    def account_id(self, client: Any, alias: str | None) -> str: ...
    def is_async(self, client_type: type) -> bool: ...
    def observed(self, client_type: type) -> Mapping[str, str]: ...
    def observed_reply(self, operation: str, reply: Any) -> Any: ...
    def operation(self, client: Any, name: str) -> Callable[..., Any]: ...
    def entry_points(self, client_type: type) -> Mapping[str, EntryPoint]: ...
    def parse_call(
        self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> list[OrderCall]: ...
    def markets_loaded(self, client: Any) -> bool: ...
    def market_info(self, client: Any, symbol: str) -> MarketInfo: ...
    def is_exit(self, call: OrderCall, market: MarketInfo) -> bool: ...
    def holdings(
        self, balance: Mapping[str, Any], asset: str
    ) -> tuple[Decimal, Decimal, int | None]: ...
    def new_client_order_id(self, client: Any) -> str: ...
    def owns_client_order_id(self, client_order_id: str | None) -> bool: ...
    def bot_client_order_id(self, call: OrderCall) -> str | None: ...
    def sizes_close(self, call: OrderCall) -> bool: ...
    def sends_client_order_id(self, call: OrderCall, client: Any = None) -> bool: ...
    def lists_prices(self, client: Any) -> bool: ...
    def lists_open_orders(self, client: Any) -> bool: ...
    def submission(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str, client: Any
    ) -> tuple[str, dict[str, Any]]: ...
    def batch_request(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str | None, client: Any
    ) -> dict[str, Any]: ...
    def order_view(self, order: Any) -> OrderView: ...
    def position(self, positions: Any, symbol: str) -> tuple[str | None, Decimal, int | None]: ...
    def lookup_by_client_id(
        self, symbol: str, client_order_id: str, client: Any = None
    ) -> list[tuple[str, tuple[Any, ...]]]: ...
    def outcome_is_unknown(self, error: BaseException) -> bool: ...
    def native_reply(self, reply: Any) -> Any: ...
    def native_error(self, error: BaseException) -> BaseException: ...


_SIDES = {"sell": "sell", "buy": "buy"}


def _normalize_side(value: Any, method: str) -> str:
    if type(value) is str and value in _SIDES:
        return value  # the usual spelling: nothing to normalize (a str subclass or an
        # enum member equal to "sell" goes the long way, and comes out a plain str)
    if not isinstance(value, str) or value.strip().lower() not in _SIDES:
        raise ccxt.InvalidOrder(
            f"{method}(): side must be 'buy' or 'sell' (any case), got {value!r}"
        )
    return _SIDES[value.strip().lower()]


def _check_params(value: Any, method: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ccxt.BadRequest(f"{method}(): params must be a dict, got {type(value).__name__}")
    return dict(value)


def _guard_options(params: dict[str, Any], method: str) -> dict[str, Any]:
    """``params["nija_guard"]`` taken out of the order's params, checked: a typo must not
    quietly fall back to the guard's defaults."""
    value = params.pop("nija_guard", None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ccxt.BadRequest(f"{method}(): params['nija_guard'] must be a dict")
    unknown = sorted(str(k) for k in value if k not in ("on_conflict", "wait_timeout"))
    if unknown:
        raise ccxt.BadRequest(
            f"{method}(): params['nija_guard'] has unknown option(s) {unknown}; "
            "known: 'on_conflict', 'wait_timeout'"
        )
    if "on_conflict" in value and value["on_conflict"] not in ON_CONFLICT:
        raise ccxt.BadRequest(
            f"{method}(): params['nija_guard']['on_conflict'] must be one of {ON_CONFLICT}, "
            f"got {value['on_conflict']!r}"
        )
    if "wait_timeout" in value:
        timeout = value["wait_timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 <= timeout < float("inf")
        ):
            raise ccxt.BadRequest(
                f"{method}(): params['nija_guard']['wait_timeout'] must be a number of "
                f"seconds >= 0, got {timeout!r}"
            )
    return dict(value)


def _check_price(value: Any, method: str, name: str = "price") -> Decimal | None:
    if value is None:
        return None
    number = to_decimal(value)
    if number is None or number <= 0:
        raise ccxt.InvalidOrder(
            f"{method}(): {name} must be a positive finite number, got {value!r}"
        )
    return number


class CcxtAdapter:
    """The adapter for ccxt clients (``ccxt``, ``ccxt.async_support``, ``ccxt.pro``)."""

    # Parameters whose presence makes any order a resting, triggered one.
    TRIGGER_PARAMS: ClassVar[tuple[str, ...]] = (
        "triggerPrice",
        "stopPrice",
        "stopLossPrice",
        "takeProfitPrice",
        "trailingAmount",
        "trailingPercent",
    )

    def __init__(self) -> None:
        self._entry_cache: dict[type, Mapping[str, EntryPoint]] = {}
        self._market_cache: dict[tuple[int, str], tuple[Any, MarketInfo]] = {}
        self._triggers = frozenset(self.TRIGGER_PARAMS)

    # Methods whose results tell the engine about orders it tracks.
    OBSERVED: ClassVar[frozenset[str]] = frozenset(
        {
            "fetch_order",
            "fetch_orders",
            "fetch_open_orders",
            "fetch_closed_orders",
            "fetch_canceled_orders",
            "fetch_canceled_and_closed_orders",
            "fetch_order_with_client_order_id",
            "cancel_order",
            "cancel_orders",
            "cancel_all_orders",
        }
    )

    @staticmethod
    def handles(client: Any) -> bool:
        """ccxt clients (sync, async, pro), the paper exchanges included.

        Never guessed from method names: a house broker with a ``create_order`` of
        its own is not ccxt, and would have its other sell methods left unguarded.
        """
        import ccxt.async_support

        return isinstance(client, (ccxt.Exchange, ccxt.async_support.Exchange))

    # -- identity ----------------------------------------------------------------
    def venue_name(self, client: Any) -> str:
        return str(getattr(client, "id", None) or type(client).__name__)

    def account_id(self, client: Any, alias: str | None) -> str:
        """Lock identity: the exchange id and a digest of the API key, or the alias."""
        exchange_id = str(getattr(client, "id", None) or type(client).__name__)
        if alias:
            return f"{exchange_id}:{alias}"
        api_key = getattr(client, "apiKey", None) or ""
        if api_key:
            digest = hashlib.sha256(str(api_key).encode()).hexdigest()[:16]
            return f"{exchange_id}:{digest}"
        # No key: nothing links two clients, so each is its own account.
        return f"{exchange_id}:anonymous-{id(client):x}"

    # -- performing -----------------------------------------------------------------
    def is_async(self, client_type: type) -> bool:
        """ccxt.async_support and ccxt.pro clients: their order methods are coroutines."""
        try:
            import ccxt.async_support as async_ccxt
        except ImportError:  # pragma: no cover
            return False
        return issubclass(client_type, async_ccxt.Exchange) or inspect.iscoroutinefunction(
            getattr(client_type, "create_order", None)
        )

    def observed(self, client_type: type) -> Mapping[str, str]:
        """Attribute -> the operation whose results the engine learns from."""
        found = {}
        for attr in dir(client_type):
            func = getattr(client_type, attr, None)
            name = getattr(func, "__name__", None)
            if callable(func) and name in self.OBSERVED:
                found[attr] = str(name)
        return found

    def observed_reply(self, operation: str, reply: Any) -> Any:
        """What an observed method returned, in the shapes the engine reads."""
        return reply

    def operation(self, client: Any, name: str) -> Callable[..., Any]:
        """The engine's operations are ccxt's unified methods: the client has them."""
        method: Callable[..., Any] = getattr(client, name)
        return method

    def native_reply(self, reply: Any) -> Any:
        return reply

    def native_error(self, error: BaseException) -> BaseException:
        return error

    # -- which methods enter orders ----------------------------------------------
    def entry_points(self, client_type: type) -> Mapping[str, EntryPoint]:
        """Attribute name (snake and camelCase) -> entry point, for a client class."""
        cached = self._entry_cache.get(client_type)
        if cached is not None:
            return cached
        found: dict[str, EntryPoint] = {}
        by_function: dict[str, EntryPoint] = {}
        for attr in dir(client_type):
            if attr.startswith("_"):
                continue
            func = getattr(client_type, attr, None)
            if not callable(func):
                continue
            # ccxt makes camelCase aliases point at the snake_case function.
            name = getattr(func, "__name__", attr)
            if not is_order_entry_name(name):
                continue
            entry = by_function.get(name)
            if entry is None:
                entry = self.classify(name, func)
                by_function[name] = entry
            found[attr] = entry
        self._entry_cache[client_type] = found
        return found

    def classify(self, name: str, func: Callable[..., Any]) -> EntryPoint:
        """Derive an entry point from a method's name and signature."""
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return EntryPoint(name, "unsupported", (), {})
        params = [p for p in sig.parameters.values() if p.name != "self"]
        arg_names = tuple(p.name for p in params)
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        base = name.removesuffix("_ws")
        side = "sell" if "_sell_" in f"{base}_" else "buy" if "_buy_" in f"{base}_" else None
        if "market" in base.split("_"):
            order_type: str | None = "market"
        elif "limit" in base.split("_"):
            order_type = "limit"
        elif base == "create_twap_order":
            order_type = "market"
        else:
            order_type = None
        names = set(arg_names)
        if base == "close_all_positions":
            kind = "close_all"
        elif base.startswith("close_position"):
            kind = "close_position"
        elif base == "create_convert_trade":
            kind = "convert"
        elif "orders" in names:
            kind = "batch"
        elif base.startswith("edit_") and ("id" in names or "clientOrderId" in names):
            kind = "edit"
        elif "cost" in names and "amount" not in names:
            kind = "cost"
        elif (
            ("symbol" in names or "market" in names)
            and "amount" in names
            and (side or "side" in names)
        ):
            kind = "order"
        else:
            kind = "unsupported"
        return EntryPoint(name, kind, arg_names, defaults, side, order_type)

    # -- reading a call ------------------------------------------------------------
    def parse_call(
        self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> list[OrderCall]:
        """Validate a call and describe each order in it. Raises ccxt errors."""
        bound = entry.bind(args, kwargs)
        if entry.kind == "batch":
            requests = bound.get("orders")
            if not isinstance(requests, Sequence) or isinstance(requests, (str, bytes)):
                raise ccxt.BadRequest(f"{entry.name}(): orders must be a list of order requests")
            _check_params(bound.get("params"), entry.name)
            calls = []
            for req in requests:
                if not isinstance(req, Mapping):
                    raise ccxt.BadRequest(f"{entry.name}(): each order request must be a dict")
                single = EntryPoint(
                    "create_order",
                    "order",
                    ("symbol", "type", "side", "amount", "price", "params"),
                    {"price": None, "params": {}},
                )
                calls.append(self._parse_order(single, single.bind((), dict(req))))
            return calls
        if entry.kind in ("order", "cost", "edit"):
            return [self._parse_order(entry, bound)]
        if entry.kind == "close_position":
            params = _check_params(bound.get("params"), entry.name)
            symbol = bound.get("symbol")
            if not isinstance(symbol, str) or not symbol:
                raise ccxt.BadSymbol(
                    f"{entry.name}(): symbol must be a market symbol, got {symbol!r}"
                )
            side = bound.get("side")
            guard_options = _guard_options(params, entry.name)
            return [
                OrderCall(
                    entry,
                    bound,
                    symbol,
                    _normalize_side(side, entry.name) if side else "sell",
                    "market",
                    None,
                    None,
                    params,
                    dict(guard_options),
                )
            ]
        if entry.kind in ("close_all", "convert"):
            return []
        raise ccxt.NotSupported(f"{entry.name}() is not guarded by nija_guard")

    def _parse_order(self, entry: EntryPoint, bound: dict[str, Any]) -> OrderCall:
        method = entry.name
        params = _check_params(bound.get("params"), method)
        guard_options = _guard_options(params, method)
        symbol = bound.get("symbol")
        if symbol is None and isinstance(bound.get("market"), Mapping):
            symbol = bound["market"].get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ccxt.BadSymbol(f"{method}(): symbol must be a market symbol, got {symbol!r}")
        side = _normalize_side(entry.side or bound.get("side"), method)
        order_type = entry.type or bound.get("type")
        if not isinstance(order_type, str) or not order_type:
            raise ccxt.InvalidOrder(f"{method}(): type must be an order type, got {order_type!r}")
        order_type = order_type.lower()
        cost = None
        amount: Decimal | None
        if entry.kind == "cost":
            try:
                cost = check_amount(bound.get("cost"))
            except ValueError as exc:
                raise ccxt.InvalidOrder(
                    f"{method}(): cost {exc.args[0].split(' ', 1)[1]}"
                ) from None
            amount = None
        elif entry.kind == "edit" and bound.get("amount") is None:
            amount = None
        else:
            try:
                amount = check_amount(bound.get("amount"))
            except ValueError as exc:
                raise ccxt.InvalidOrder(f"{method}(): {exc}") from None
        price = _check_price(bound.get("price"), method)
        triggers = self._triggers
        if not triggers.isdisjoint(bound) or (params and not triggers.isdisjoint(params)):
            for key in self.TRIGGER_PARAMS:
                # As an argument (create_stop_loss_order...) or in params: the same check.
                if key in bound:
                    _check_price(bound.get(key), method, key)
                if key in params:
                    _check_price(params[key], method, f"params[{key!r}]")
        replaces = None
        if entry.kind == "edit":
            replaces = bound.get("id") or None
            if replaces is None and bound.get("clientOrderId"):
                replaces = str(bound["clientOrderId"])
            if replaces is None:
                raise ccxt.ArgumentsRequired(f"{method}() requires the id of the order to edit")
            replaces = str(replaces)
        return OrderCall(
            entry,
            bound,
            symbol,
            side,
            order_type,
            amount,
            price,
            params,
            dict(guard_options),
            replaces,
            cost,
        )

    # -- markets and holdings ------------------------------------------------------
    def markets_loaded(self, client: Any) -> bool:
        return bool(getattr(client, "markets", None))

    def market_info(self, client: Any, symbol: str) -> MarketInfo:
        markets = getattr(client, "markets", None) or {}
        # Cached per markets object: a reload of markets replaces the dict.
        cache_key = (id(markets), symbol)
        cached = self._market_cache.get(cache_key)
        if cached is not None and cached[0] is markets:
            return cached[1]
        info = self._market_info(client, markets, symbol)
        if len(self._market_cache) > 100_000:
            self._market_cache.clear()
        self._market_cache[cache_key] = (markets, info)
        return info

    def _market_info(self, client: Any, markets: Mapping[str, Any], symbol: str) -> MarketInfo:
        market = markets.get(symbol)
        if market is None:
            raise ccxt.BadSymbol(f"{getattr(client, 'id', 'exchange')} has no market {symbol!r}")
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        raw_step = precision.get("amount")
        step = to_decimal(raw_step)
        mode = getattr(client, "precisionMode", None)
        if step is not None and mode == getattr(ccxt, "DECIMAL_PLACES", 2):
            step = Decimal(1).scaleb(-int(step))
        elif mode == getattr(ccxt, "SIGNIFICANT_DIGITS", 3):
            step = None  # no fixed step: ccxt's amount_to_precision is the reference
        fee_side = market.get("feeSide")
        sell_fee = ZERO
        if fee_side in ("give", "base"):
            sell_fee = to_decimal(market.get("taker")) or ZERO
        return MarketInfo(
            symbol=symbol,
            base=str(market.get("base")),
            quote=str(market.get("quote")),
            amount_step=step if step and step > 0 else None,
            min_amount=to_decimal((limits.get("amount") or {}).get("min")),
            min_cost=to_decimal((limits.get("cost") or {}).get("min")),
            sell_fee_rate_in_base=sell_fee if not market.get("contract") else ZERO,
            contract=bool(market.get("contract")),
            contract_size=to_decimal(market.get("contractSize")) or Decimal(1),
        )

    def is_exit(self, call: OrderCall, market: MarketInfo) -> bool:
        """Spot: an exit gives up the base asset. (Derivatives: see :meth:`position`.)"""
        return call.side == "sell" or call.entry.kind == "close_position"

    def position(self, positions: Any, symbol: str) -> tuple[str | None, Decimal, int | None]:
        """(side, contracts, timestamp) of the open position on ``symbol``: side None when flat.

        ccxt reports ``contracts`` (absolute) and ``side`` (long/short); a venue in
        hedge mode may list both sides: the larger one is the one an exit closes.
        """
        best: tuple[str | None, Decimal, int | None] = (None, ZERO, None)
        for position in positions or ():
            if not isinstance(position, Mapping) or position.get("symbol") != symbol:
                continue
            contracts = abs(to_decimal(position.get("contracts")) or ZERO)
            side = position.get("side")
            if contracts > best[1] and side in ("long", "short"):
                # lastUpdateTimestamp: ccxt's "timestamp" of a position is often
                # when it was opened (okx cTime), not when the snapshot was true.
                stamp = position.get("lastUpdateTimestamp")
                best = (
                    side,
                    contracts,
                    int(stamp) if isinstance(stamp, (int, float)) and stamp > 0 else None,
                )
        return best

    def holdings(
        self, balance: Mapping[str, Any], asset: str
    ) -> tuple[Decimal, Decimal, int | None]:
        """(free, total, timestamp) of ``asset`` in a ccxt balance structure."""
        entry = balance.get(asset)
        if type(entry) is dict or isinstance(entry, Mapping):
            free, total = entry.get("free"), entry.get("total")
        else:
            free = (balance.get("free") or {}).get(asset)
            total = (balance.get("total") or {}).get(asset)
        free_d = to_decimal(free) or ZERO
        total_d = to_decimal(total)
        if total_d is None:
            used = to_decimal((balance.get("used") or {}).get(asset)) or ZERO
            total_d = free_d + used
        stamp = balance.get("timestamp")
        return free_d, total_d, int(stamp) if isinstance(stamp, (int, float)) and stamp else None

    # -- client order ids ------------------------------------------------------------
    def new_client_order_id(self, client: Any) -> str:
        """A fresh id in a format the venue accepts.

        OKX: 1-32 alphanumerics; Binance: at most 36 of ``[.A-Z:/a-z0-9_-]``;
        Kraken: a UUID. ``njg`` + 24 hex digits satisfies all but Kraken.
        """
        if getattr(client, "id", None) in ("kraken", "krakenfutures"):
            return UUID_MARKER + str(uuid.uuid4())[8:]
        return CLIENT_ID_PREFIX + unique_id()

    def owns_client_order_id(self, client_order_id: str | None) -> bool:
        if not client_order_id:
            return False
        return client_order_id.startswith((CLIENT_ID_PREFIX, UUID_MARKER))

    def submission_params(
        self, call: OrderCall, client_order_id: str, client: Any
    ) -> dict[str, Any]:
        params = dict(call.params)
        if self.sends_client_order_id(call, client):
            params["clientOrderId"] = client_order_id
        if call.contract_exit:
            params["reduceOnly"] = True  # the venue itself then never opens or flips a position
        return params

    def submission(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str, client: Any
    ) -> tuple[str, dict[str, Any]]:
        """The method and arguments that send ``call`` with the clamped amount and our id."""
        params = self.submission_params(call, client_order_id, client)
        if call.cost is not None and call.amount is None:
            # Sized in quote currency: sent as the amount the clamp allowed.
            return "create_order", {
                "symbol": call.symbol,
                "type": "market",
                "side": "sell",
                "amount": float(amount or 0),
                "price": None,
                "params": params,
            }
        return call.entry.name, call.with_submission(
            amount if call.amount is not None else None, params
        )

    def sizes_close(self, call: OrderCall) -> bool:
        """Whether a close_position call can be sent for part of the position (ccxt: no)."""
        return False

    def lists_prices(self, client: Any) -> bool:
        """Whether one call lists every ticker (``fetch_tickers``), for a shared price fetch."""
        has = getattr(client, "has", None)
        return isinstance(has, Mapping) and bool(has.get("fetchTickers"))

    def sends_client_order_id(self, call: OrderCall, client: Any = None) -> bool:
        """Whether the order carries the guard's client id (unified ``clientOrderId``).

        Every order does, except an edit where ccxt reads ``clientOrderId`` as the
        id *of the order to amend* (okx sends it as ``clOrdId``, bybit as
        ``orderLinkId``): a new id there names no order, and the edit fails.
        """
        if call.entry.kind == "edit" and getattr(client, "id", None) in EDITS_NAME_BY_CLIENT_ID:
            return bool(call.params.get("clientOrderId"))  # the bot's own: it names the order
        return True

    def lists_open_orders(self, client: Any) -> bool:
        """Whether ``fetch_open_orders()`` lists every spot order of the account in one call.

        Only where that is known to hold: without a symbol, most ccxt exchanges
        list one market type (``options['defaultType']``: bybit's is swap, so its
        spot orders would be missing) and one page (bybit's is 20 orders). A
        resting exit missing from the listing would let a second exit through,
        so everywhere else the engine asks per symbol, as it always could.
        """
        return getattr(client, "id", None) in LISTS_EVERY_SPOT_ORDER

    def batch_request(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str | None, client: Any
    ) -> dict[str, Any]:
        """One order of a ``create_orders`` list; no client id: sent as the bot wrote it."""
        params = (
            self.submission_params(call, client_order_id, client)
            if client_order_id is not None
            else call.params
        )
        return {
            "symbol": call.symbol,
            "type": call.type,
            "side": call.side,
            "amount": float(amount) if amount is not None else None,
            "price": float(call.price) if call.price is not None else None,
            "params": params,
        }

    def bot_client_order_id(self, call: OrderCall) -> str | None:
        if not call.params:
            return None
        for key in ("clientOrderId", "newClientOrderId", "clOrdId", "orderLinkId", "cl_ord_id"):
            value = call.params.get(key)
            if value:
                return str(value)
        return None

    def lookup_by_client_id(
        self, symbol: str, client_order_id: str, client: Any = None
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """Calls that find an order by client id, in the order to try them.

        Most venues: ``fetch_order`` with ``clientOrderId`` (binance sends it as
        ``origClientOrderId``, okx as ``clOrdId``). Kraken cannot: its
        ``fetch_order`` sends the param as an integer ``userref``; its open and
        closed order listings filter by ``cl_ord_id`` instead.
        """
        params = {"clientOrderId": client_order_id}
        if getattr(client, "id", None) == "kraken":
            return [
                ("fetch_open_orders", (symbol, None, None, params)),
                ("fetch_closed_orders", (symbol, None, None, params)),
            ]
        return [("fetch_order", (None, symbol, params))]

    # -- orders ----------------------------------------------------------------------
    def order_view(self, order: Any) -> OrderView:
        if type(order) is not dict and not isinstance(order, Mapping):
            raise ccxt.BadResponse(f"expected an order structure, got {type(order).__name__}")
        get = order.get
        status = get("status")
        fee_base = ZERO
        symbol = get("symbol")
        fees = get("fees") or ([order["fee"]] if get("fee") else None)
        if fees:
            base = symbol.split("/")[0] if isinstance(symbol, str) and "/" in symbol else None
            for fee in fees:
                if isinstance(fee, Mapping) and base and fee.get("currency") == base:
                    fee_base += to_decimal(fee.get("cost")) or ZERO
        ts = get("timestamp")
        order_id = get("id")
        # Positional: a named tuple built from keywords costs twice as much.
        return OrderView(
            str(order_id) if order_id is not None and order_id != "" else None,  # id
            get("clientOrderId"),
            symbol,
            get("side"),
            str(status).lower() if status else None,
            to_decimal(get("amount")),
            to_decimal(get("filled")),
            to_decimal(get("remaining")),
            to_decimal(get("average")) or to_decimal(get("price")),  # average
            # Binance answers an untriggered stop with timestamp -1: no timestamp.
            int(ts) if isinstance(ts, (int, float)) and ts > 0 else None,
            fee_base,
            order,
        )

    # -- errors --------------------------------------------------------------------
    def outcome_is_unknown(self, error: BaseException) -> bool:
        """True when a failed submit may still have created the order.

        Definite refusals (every ExchangeError subclass, rate limits, nonce and
        argument errors) leave nothing on the exchange. Timeouts, 5xx, dropped
        connections, unparseable replies, a bare ExchangeError (async transports
        raise it for socket faults), a duplicate client id (the order exists)
        and anything that is not a ccxt error at all are treated as unknown.
        """
        if isinstance(error, ccxt.DuplicateOrderId):
            return True
        if isinstance(error, ccxt.InvalidOrder) and "duplicate" in str(error).lower():
            # Binance reports a reused client order id as a plain InvalidOrder
            # ("Duplicate order sent."): the order exists.
            return True
        if isinstance(error, (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.InvalidNonce)):
            return False
        if isinstance(error, (ccxt.NetworkError, ccxt.BadResponse)):
            return True
        if type(error) is ccxt.ExchangeError:
            return True
        # Any other ccxt error is a refusal. A KeyError while parsing a reply, a
        # cancelled task, a KeyboardInterrupt: the request may have gone out.
        return not isinstance(error, ccxt.BaseError)
