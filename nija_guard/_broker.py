"""The declarative adapter: any broker class guarded from a few lines of description.

A bot built on a house broker class describes it once::

    nija = nija_guard.Broker(
        name="nija",
        orders={"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
        holdings="get_positions",
        fetch_order=lambda broker, order_id, symbol: broker.get_order(order_id),
    )
    broker = nija_guard.guard(HouseBroker(...), adapter=nija)

The engine speaks ccxt's unified vocabulary. A :class:`Broker` translates: its
operations call the broker's own methods, replies are read into ccxt's order
and balance shapes, exceptions become ccxt errors by the category the user
gives them, and the bot gets back exactly what its broker returned or raised.
See docs/adapters.md.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

import ccxt

from ._adapter import CcxtAdapter, EntryPoint, OrderCall, _check_price, _normalize_side
from ._model import ZERO, MarketInfo, check_amount, to_decimal

__all__ = ["CATEGORIES", "Broker", "OrderMethod"]

log = logging.getLogger("nija_guard")

# What an exception of the broker means for an order, and the ccxt error the
# engine decides on. Unmapped exceptions are "unknown": the order may exist.
CATEGORIES: dict[str, type[ccxt.BaseError]] = {
    "rejected": ccxt.InvalidOrder,  # refused: nothing exists on the broker
    "insufficient_funds": ccxt.InsufficientFunds,  # refused for want of holdings
    "not_found": ccxt.OrderNotFound,  # a lookup found no such order
    "rate_limited": ccxt.RateLimitExceeded,  # refused: too many requests
    "unknown": ccxt.NetworkError,  # timeouts, dropped connections, 5xx: may exist
    "duplicate": ccxt.DuplicateOrderId,  # our client id is taken: the order exists
    "unsupported": ccxt.NotSupported,  # the broker cannot do this
}

# How brokers name order states, and the ccxt status each one is.
_STATUSES = {
    "closed": "closed",
    "filled": "closed",
    "done": "closed",
    "complete": "closed",
    "completed": "closed",
    "executed": "closed",
    "canceled": "canceled",
    "cancelled": "canceled",
    "rejected": "rejected",
    "refused": "rejected",
    "failed": "rejected",
    "expired": "expired",
    "replaced": "canceled",  # alpaca: final for this id; a new order took its place
}
_OPEN_STATUSES = frozenset(
    {
        "open",
        "new",
        "accepted",
        "pending",
        "pending_new",
        "partially_filled",
        "partial",
        "partiallyfilled",
        "working",
        "active",
        "live",
        "submitted",
        "held",
        "pending_cancel",
        "pending_replace",
        "accepted_for_bidding",
        "calculated",
        "done_for_day",
        "stopped",
        "suspended",
    }
)

_ID_KEYS = ("id", "order_id", "orderId", "orderID")
_CLIENT_ID_KEYS = ("clientOrderId", "client_order_id", "client_id", "clientId")
_FILLED_KEYS = ("filled", "filled_qty", "filled_quantity", "executed_qty", "executedQty")
_AMOUNT_KEYS = ("amount", "qty", "quantity", "size")
_AVERAGE_KEYS = ("average", "filled_avg_price", "avg_price", "average_price", "avgPrice")
_TIME_KEYS = ("timestamp", "submitted_at", "created_at", "time", "created")
_SYMBOL_KEYS = ("symbol", "asset", "currency", "instrument", "ticker")
# A quantity first: in a position, "total" may well be its money value.
_TOTAL_KEYS = ("quantity", "qty", "total", "amount", "size", "position", "balance")
_FREE_KEYS = ("free", "available", "qty_available", "quantity_available")


@dataclass(frozen=True)
class OrderMethod:
    """How to read one order-entry method of a broker class.

    Roles name arguments: by position (0 is the first after ``self``) or by
    name. ``fixed_side`` / ``order_type`` say what the method's name fixes
    (``sell_market(symbol, qty)``: ``fixed_side="sell"``). ``kind`` is
    ``"order"``, ``"close_position"`` (sells a whole position; ``symbol``
    needed) or ``"close_all"`` (every position; one account-wide exit).

    For arguments that roles cannot describe (a request object), ``read``
    returns the roles' values from the call's arguments by name (keys among
    symbol, side, amount, cost, price, type, client_order_id) and ``rewrite``
    returns the arguments to send, given the clamped amount and the guard's
    client order id (None when the method takes none).
    """

    symbol: int | str | None = None
    amount: int | str | None = None
    side: int | str | None = None
    price: int | str | None = None
    type: int | str | None = None
    client_order_id: int | str | None = None
    fixed_side: str | None = None
    order_type: str | None = None
    kind: str = "order"
    read: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    rewrite: Callable[[Mapping[str, Any], Decimal | None, str | None], Mapping[str, Any]] | None = (
        None
    )

    ROLES: ClassVar[tuple[str, ...]] = (
        "symbol",
        "amount",
        "side",
        "price",
        "type",
        "client_order_id",
    )

    def __post_init__(self) -> None:
        if self.kind not in ("order", "close_position", "close_all", "unsupported"):
            raise ValueError(
                "OrderMethod kind must be 'order', 'close_position', 'close_all' or "
                f"'unsupported', got {self.kind!r}"
            )
        if self.fixed_side is not None and self.fixed_side not in ("buy", "sell"):
            raise ValueError(f"fixed_side must be 'buy' or 'sell', got {self.fixed_side!r}")
        if (self.read is None) != (self.rewrite is None):
            raise ValueError("give read and rewrite together (or neither)")
        if self.read is None and self.kind == "order":
            missing = [r for r in ("symbol", "amount") if getattr(self, r) is None]
            if self.side is None and self.fixed_side is None:
                missing.append("side (or fixed_side)")
            if missing:
                raise ValueError(f"an order method needs the roles {', '.join(missing)}")
        if self.read is None and self.kind == "close_position" and self.symbol is None:
            raise ValueError("a close_position method needs the symbol role")


# What a method named in ``observe=`` is: its results settle the guard's records.
_OBSERVABLE = frozenset({"fetch_order", "fetch_orders", "fetch_open_orders", "cancel_order"})


class _BrokerReply(dict):  # type: ignore[type-arg]
    """A broker's reply read into ccxt's order shape; ``info`` is the reply itself."""


class Broker(CcxtAdapter):
    """The declarative adapter: name a broker's methods, or give small callables.

    Arguments (all keyword):

    - ``name``: the broker's name (logs, spans, and the account's lock identity).
    - ``orders``: method name -> :class:`OrderMethod`, for every method that can sell.
    - ``holdings``: a method name, or ``callable(client)``, whose result lists
      what the account holds: ``{key: quantity}``, ``{key: (free, total)}`` or a
      list of dicts/objects with a symbol and a quantity (``symbol`` /
      ``quantity``, ``qty``, ``qty_available``, ``free``... are recognized).
    - ``asset``: ``callable(symbol) -> holdings key`` (default: the symbol
      itself, for brokers that report positions per symbol).
    - ``fetch_order``: ``callable(client, order_id, symbol)``: the order, or None.
    - ``fetch_order_by_client_id``: ``callable(client, client_order_id, symbol)``.
    - ``fetch_open_orders``: ``callable(client, symbol)``: a list of orders.
    - ``cancel_order``: ``callable(client, order_id, symbol)`` (for on_conflict="replace").
    - ``price``: ``callable(client, symbol)``: a price, for minimum-cost checks.
    - ``markets``: ``{symbol: {"amount_step":, "min_amount":, "min_cost":}}`` or
      ``callable(client, symbol)`` returning such a dict (cached per symbol).
    - ``read_order``: ``callable(reply)`` returning a dict with the keys id,
      client_order_id, status, symbol, side, amount, filled, average,
      timestamp; the default reads common field names of dicts and objects.
    - ``errors``: ``{ExceptionClass: category}`` (first match wins) or
      ``callable(exc) -> category | None``; categories are the keys of
      :data:`CATEGORIES`. Unmapped errors are "unknown": the order may exist.
    - ``account``: ``callable(client) -> str``: which account a client trades.
    - ``ignore``: names of methods that look like order entry but never sell.
    """

    def __init__(
        self,
        *,
        name: str,
        orders: Mapping[str, OrderMethod],
        holdings: str | Callable[[Any], Any],
        asset: Callable[[str], str] | None = None,
        fetch_order: Callable[[Any, str, str | None], Any] | None = None,
        fetch_order_by_client_id: Callable[[Any, str, str | None], Any] | None = None,
        fetch_open_orders: Callable[[Any, str | None], Any] | None = None,
        cancel_order: Callable[[Any, str, str | None], Any] | None = None,
        price: Callable[[Any, str], Any] | None = None,
        markets: Mapping[str, Mapping[str, Any]] | Callable[[Any, str], Any] | None = None,
        read_order: Callable[[Any], Mapping[str, Any]] | None = None,
        errors: Mapping[type[BaseException], str] | Callable[[BaseException], str | None] | None = (
            None
        ),
        account: Callable[[Any], str] | None = None,
        observe: Mapping[str, str] | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Broker name must be a non-empty string, got {name!r}")
        if not isinstance(orders, Mapping) or not orders:
            raise ValueError("Broker orders must map at least one method name to an OrderMethod")
        for method, spec in orders.items():
            if not isinstance(spec, OrderMethod):
                raise TypeError(f"orders[{method!r}] must be an OrderMethod, got {spec!r}")
        if not (isinstance(holdings, str) or callable(holdings)):
            raise TypeError("holdings must be a method name or a callable(client)")
        if isinstance(errors, Mapping):
            for cls, category in errors.items():
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise TypeError(f"errors keys must be exception classes, got {cls!r}")
                if category not in CATEGORIES:
                    raise ValueError(
                        f"errors[{cls.__name__}] must be one of {sorted(CATEGORIES)}, "
                        f"got {category!r}"
                    )
        elif errors is not None and not callable(errors):
            raise TypeError("errors must map exception classes to categories, or be a callable")
        if fetch_order is None and fetch_order_by_client_id is None:
            raise TypeError(
                "give fetch_order (or fetch_order_by_client_id): the guard holds a symbol's "
                "lock until the broker says the exit's order is final, and must ask"
            )
        if callable(markets) and inspect.iscoroutinefunction(markets):
            raise TypeError("markets must be a dict or a plain function (it runs in the caller)")
        if isinstance(markets, Mapping):
            for symbol, rules in markets.items():
                unknown = set(rules) - {"amount_step", "min_amount", "min_cost"}
                if unknown:
                    raise ValueError(
                        f"markets[{symbol!r}] has unknown keys {sorted(unknown)}; "
                        "known: amount_step, min_amount, min_cost"
                    )
        self.name = name
        self.orders = dict(orders)
        self._holdings = holdings
        self._asset = asset or (lambda symbol: symbol)
        self._fetch_order = fetch_order
        self._fetch_by_client_id = fetch_order_by_client_id
        self._fetch_open_orders = fetch_open_orders
        self._cancel_order = cancel_order
        self._price = price
        self._markets = markets
        self._read_order = read_order or read_order_fields
        self._errors = errors
        self._account = account
        self.ignore = frozenset(ignore)
        self.observe = dict(observe or {})
        for method, what in self.observe.items():
            if what not in _OBSERVABLE:
                raise ValueError(
                    f"observe[{method!r}] must be one of {sorted(_OBSERVABLE)}, got {what!r}"
                )
        # Order id -> client order id, read from replies: how a broker that looks
        # orders up only by client id is asked about an order known by its id.
        self._client_ids: dict[str, str] = {}
        # (id(client), symbol) -> (the client, weakly when it can be, its rules)
        self._rules: dict[tuple[int, str], tuple[Callable[[], Any], MarketInfo]] = {}
        self._rules_lock = threading.Lock()
        self._async_types: dict[type, bool] = {}

    def __repr__(self) -> str:
        return f"<nija_guard.Broker {self.name!r}: {', '.join(self.orders)}>"

    # -- identity ----------------------------------------------------------------
    def venue_name(self, client: Any) -> str:
        return self.name

    def account_id(self, client: Any, alias: str | None) -> str:
        """``name:alias``, ``name:<account(client)>``, or ``name:default``.

        The default puts every client of this broker in one account: two
        accounts traded from one process then exclude each other (safe, not
        wrong). Name them with ``account=`` to keep them apart.
        """
        if alias:
            return f"{self.name}:{alias}"
        if self._account is not None:
            return f"{self.name}:{self._account(client)}"
        return f"{self.name}:default"

    # -- which methods enter orders ----------------------------------------------
    def entry_points(self, client_type: type) -> Mapping[str, EntryPoint]:
        cached = self._entry_cache.get(client_type)
        if cached is not None:
            return cached
        if isinstance(self._holdings, str) and not callable(
            getattr(client_type, self._holdings, None)
        ):
            raise TypeError(
                f"Broker {self.name!r}: {client_type.__name__} has no {self._holdings}() "
                "to read holdings from"
            )
        found: dict[str, EntryPoint] = {}
        for method, spec in self.orders.items():
            func = getattr(client_type, method, None)
            if not callable(func):
                raise TypeError(f"Broker {self.name!r}: {client_type.__name__} has no {method}()")
            found[method] = self._entry(client_type, method, func, spec)
        undeclared = sorted(
            attr
            for attr in dir(client_type)
            if not attr.startswith("_")
            and attr not in found
            and attr not in self.ignore
            and callable(getattr(client_type, attr, None))
            and _looks_like_order_entry(attr)
        )
        if undeclared:
            raise TypeError(
                f"Broker {self.name!r}: {client_type.__name__} has order methods the "
                f"description leaves out: {', '.join(undeclared)}. Describe each in orders= "
                "(a sell through one would go unguarded), or list those that never sell "
                "in ignore="
            )
        self._entry_cache[client_type] = found
        return found

    def _entry(
        self, client_type: type, method: str, func: Callable[..., Any], spec: OrderMethod
    ) -> EntryPoint:
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Broker {self.name!r}: cannot read the signature of {method}()"
            ) from exc
        if parameters and parameters[0].name == "self":
            parameters = parameters[1:]
        names = tuple(
            p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in parameters):
            raise TypeError(
                f"Broker {self.name!r}: {method}() takes positional-only or *args arguments, "
                "which the guard cannot name; wrap it in a method with named arguments"
            )
        extra_keywords = any(p.kind is p.VAR_KEYWORD for p in parameters)
        for role in OrderMethod.ROLES:
            where = getattr(spec, role)
            if where is None:
                continue
            if isinstance(where, bool) or not isinstance(where, (int, str)):
                raise TypeError(f"{method}(): role {role} must be a position or a name")
            if isinstance(where, int) and not 0 <= where < len(names):
                raise TypeError(
                    f"Broker {self.name!r}: {method}() has no argument at position {where} "
                    f"(its arguments: {', '.join(names)})"
                )
            if isinstance(where, str) and where not in names:
                raise TypeError(
                    f"Broker {self.name!r}: {method}() has no argument {where!r} "
                    f"(its arguments: {', '.join(names)})"
                )
        defaults = {
            p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty
        }
        kind = spec.kind
        order_type = spec.order_type
        if order_type is None and spec.type is None and kind == "order" and spec.read is None:
            order_type = "limit" if spec.price is not None else "market"
        return EntryPoint(
            method, kind, names, defaults, spec.fixed_side, order_type, extra_keywords
        )

    def _role(self, entry: EntryPoint, spec: OrderMethod, role: str) -> str | None:
        where = getattr(spec, role)
        if isinstance(where, int):
            return entry.arg_names[where]
        return str(where) if where is not None else None

    # -- reading a call ------------------------------------------------------------
    def parse_call(
        self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> list[OrderCall]:
        spec = self.orders[entry.name]
        bound = entry.bind(args, kwargs)
        if entry.kind == "close_all":
            return []
        if spec.read is not None:
            try:
                values = dict(spec.read(bound))
            except Exception as exc:
                raise ccxt.BadRequest(f"{entry.name}(): cannot read the order: {exc}") from exc
        else:
            values = {}
            for role in OrderMethod.ROLES:
                arg = self._role(entry, spec, role)
                if arg is not None:
                    values[role] = bound.get(arg)
        method = entry.name
        symbol = _plain(values.get("symbol"))
        if not isinstance(symbol, str) or not symbol:
            raise ccxt.BadSymbol(f"{method}(): symbol must be a non-empty string, got {symbol!r}")
        if entry.kind == "close_position":
            return [OrderCall(entry, bound, symbol, "sell", "market", None, None, {}, {})]
        side = _normalize_side(_plain(entry.side or values.get("side")), method)
        order_type = _plain(entry.type or values.get("type") or "market")
        if not isinstance(order_type, str):
            raise ccxt.InvalidOrder(f"{method}(): type must be an order type, got {order_type!r}")
        amount: Decimal | None = None
        cost: Decimal | None = None
        try:
            if values.get("amount") is None and values.get("cost") is not None:
                cost = check_amount(values.get("cost"))
            else:
                amount = check_amount(values.get("amount"))
        except ValueError as exc:
            raise ccxt.InvalidOrder(f"{method}(): {exc}") from None
        price = _check_price(values.get("price"), method)
        return [
            OrderCall(
                entry,
                bound,
                symbol,
                side,
                order_type.lower(),
                amount,
                price,
                {},
                {},
                None,
                cost,
            )
        ]

    def bot_client_order_id(self, call: OrderCall) -> str | None:
        spec = self.orders[call.entry.name]
        if spec.read is not None:
            value = spec.read(call.arguments).get("client_order_id")
        else:
            arg = self._role(call.entry, spec, "client_order_id")
            value = call.arguments.get(arg) if arg else None
        return str(value) if value else None

    def submission(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str, client: Any
    ) -> tuple[str, dict[str, Any]]:
        spec = self.orders[call.entry.name]
        takes_id = self.sends_client_order_id(call)
        if call.cost is not None and call.amount is None:
            send = amount  # sized in quote currency by the bot, sent as the clamped amount
        elif call.entry.kind == "close_position":
            send = amount  # sized when the method can be: never more than the clamp allows
        else:
            send = amount if call.amount is not None else None
        if spec.rewrite is not None:
            rewritten = spec.rewrite(call.arguments, send, client_order_id if takes_id else None)
            return call.entry.name, dict(rewritten)
        arguments = dict(call.arguments)
        amount_arg = self._role(call.entry, spec, "amount")
        if send is not None and amount_arg is not None:
            arguments[amount_arg] = _like(arguments.get(amount_arg), send)
        cid_arg = self._role(call.entry, spec, "client_order_id")
        if cid_arg is not None:
            arguments[cid_arg] = client_order_id
        return call.entry.name, arguments

    def lists_prices(self, client: Any) -> bool:
        return False  # ``price=`` answers one symbol at a time

    def sends_client_order_id(self, call: OrderCall, client: Any = None) -> bool:
        spec = self.orders[call.entry.name]
        return spec.client_order_id is not None or spec.read is not None

    def lists_open_orders(self, client: Any) -> bool:
        return False  # ``fetch_open_orders=`` is only promised to answer for one symbol

    def sizes_close(self, call: OrderCall) -> bool:
        spec = self.orders[call.entry.name]
        return spec.rewrite is not None or spec.amount is not None

    def batch_request(
        self, call: OrderCall, amount: Decimal | None, client_order_id: str | None, client: Any
    ) -> dict[str, Any]:  # pragma: no cover - a Broker has no batch methods
        raise ccxt.NotSupported(f"{self.name} has no batch orders")

    def lookup_by_client_id(
        self, symbol: str, client_order_id: str, client: Any = None
    ) -> list[tuple[str, tuple[Any, ...]]]:
        if self._fetch_by_client_id is None:
            return []
        return [("fetch_order_by_client_id", (client_order_id, symbol))]

    # -- markets and holdings ------------------------------------------------------
    def markets_loaded(self, client: Any) -> bool:
        return True  # rules are read per symbol, when first needed

    def market_info(self, client: Any, symbol: str) -> MarketInfo:
        key = (id(client), symbol)
        with self._rules_lock:
            cached = self._rules.get(key)
        if cached is not None and cached[0]() is client:  # not a dead client's id
            return cached[1]
        rules: Any = None
        if callable(self._markets):
            try:
                rules = self._markets(client, symbol)
            except ccxt.BaseError:
                raise
            except Exception as exc:
                raise self._translated(exc, "markets") from exc
        elif isinstance(self._markets, Mapping):
            rules = self._markets.get(symbol)
        info = self._market(symbol, rules)
        with self._rules_lock:
            if len(self._rules) > 100_000:
                self._rules.clear()
            try:
                ref: Callable[[], Any] = weakref.ref(client)
            except TypeError:
                ref = lambda: client  # noqa: E731 - kept alive, as the ccxt adapter keeps markets
            self._rules[key] = (ref, info)
        return info

    def _market(self, symbol: str, rules: Any) -> MarketInfo:
        rules = dict(rules or {})
        unknown = set(rules) - {"amount_step", "min_amount", "min_cost"}
        if unknown:
            raise ccxt.BadRequest(
                f"{self.name} market rules for {symbol} have unknown keys {sorted(unknown)}; "
                "known: amount_step, min_amount, min_cost"
            )
        step = to_decimal(rules.get("amount_step"))
        return MarketInfo(
            symbol=symbol,
            base=self._asset(symbol),
            quote="",
            amount_step=step if step and step > 0 else None,
            min_amount=to_decimal(rules.get("min_amount")),
            min_cost=to_decimal(rules.get("min_cost")),
        )

    # -- performing -----------------------------------------------------------------
    def is_async(self, client_type: type) -> bool:
        known = self._async_types.get(client_type)
        if known is None:
            known = any(
                inspect.iscoroutinefunction(getattr(client_type, method, None))
                for method in self.orders
            )
            self._async_types[client_type] = known
        return known

    def observed(self, client_type: type) -> Mapping[str, str]:
        return {
            m: what for m, what in self.observe.items() if callable(getattr(client_type, m, None))
        }

    def observed_reply(self, operation: str, reply: Any) -> Any:
        """A bot's own lookup or cancel, read like the guard's (unreadable: nothing)."""
        items = reply if isinstance(reply, (list, tuple)) else [reply]
        seen = []
        for item in items:
            if item is None or isinstance(item, (bool, int, str)):
                continue
            try:
                order = self._order(item)
            except Exception as exc:  # not an order (a cancel acknowledgement...)
                log.debug("%s: nothing to learn from %s: %s", self.name, operation, exc)
                continue
            if order["id"] or order["clientOrderId"]:
                seen.append(order)
        return seen

    def operation(self, client: Any, name: str) -> Callable[..., Any]:
        """An engine operation performed the broker's way; its errors become ccxt errors."""
        if name in self.orders:
            native = getattr(client, name)
            return self._performed(client, lambda *a, **k: native(*a, **k), self._order_reply)
        if name == "fetch_balance":
            return self._performed(client, lambda: self._call_holdings(client), self._balance)
        if name == "fetch_order":
            return self._performed(client, self._order_lookup(client), self._found_order)
        if name == "fetch_order_by_client_id" and self._fetch_by_client_id is not None:
            lookup = self._fetch_by_client_id
            return self._performed(
                client, lambda cid, symbol=None: lookup(client, cid, symbol), self._found_order
            )
        if name == "fetch_open_orders" and self._fetch_open_orders is not None:
            open_orders = self._fetch_open_orders
            return self._performed(
                client,
                lambda symbol=None, *_, **__: open_orders(client, symbol),
                self._order_list,
            )
        if name == "cancel_order" and self._cancel_order is not None:
            cancel = self._cancel_order
            return self._performed(
                client,
                lambda order_id, symbol=None, *_, **__: cancel(client, order_id, symbol),
                self._cancel_reply,
            )
        if name == "fetch_ticker" and self._price is not None:
            price = self._price
            return self._performed(client, lambda symbol, *_, **__: price(client, symbol), _ticker)
        if name == "load_markets":
            return self._performed(client, lambda *_, **__: None, lambda reply: reply)
        return self._unsupported(client, name)

    def _unsupported(self, client: Any, name: str) -> Callable[..., Any]:
        def refuse(*_: Any, **__: Any) -> Any:
            raise ccxt.NotSupported(f"{self.name} adapter has no {name}")

        if self.is_async(type(client)):

            async def refuse_async(*args: Any, **kwargs: Any) -> Any:
                return refuse(*args, **kwargs)

            return refuse_async
        return refuse

    def _order_lookup(self, client: Any) -> Callable[..., Any]:
        def lookup(order_id: Any, symbol: str | None = None, params: Any = None) -> Any:
            cid = (params or {}).get("clientOrderId") if isinstance(params, Mapping) else None
            if order_id is None and cid and self._fetch_by_client_id is not None:
                return self._fetch_by_client_id(client, str(cid), symbol)
            if order_id is None:
                raise ccxt.NotSupported(f"{self.name} adapter has no lookup by client id")
            if self._fetch_order is not None:
                return self._fetch_order(client, str(order_id), symbol)
            known = self._client_ids.get(str(order_id))
            if known is None or self._fetch_by_client_id is None:
                raise ccxt.NotSupported(f"{self.name}: no way to look order {order_id} up")
            return self._fetch_by_client_id(client, known, symbol)

        return lookup

    def _performed(
        self, client: Any, action: Callable[..., Any], read: Callable[[Any], Any]
    ) -> Callable[..., Any]:
        if self.is_async(type(client)):

            async def perform_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    reply = action(*args, **kwargs)
                    if inspect.isawaitable(reply):
                        reply = await reply
                except ccxt.BaseError:
                    raise
                except Exception as exc:
                    raise self._translated(exc) from exc
                return self._read(read, reply)

            return perform_async

        def perform(*args: Any, **kwargs: Any) -> Any:
            try:
                reply = action(*args, **kwargs)
            except ccxt.BaseError:
                raise
            except Exception as exc:
                raise self._translated(exc) from exc
            return self._read(read, reply)

        return perform

    def _read(self, read: Callable[[Any], Any], reply: Any) -> Any:
        try:
            return read(reply)
        except ccxt.BaseError:
            raise
        except Exception as exc:
            # The call went through; we only cannot read its answer. For a submit
            # that is an unknown outcome (BadResponse), never a refusal.
            raise ccxt.BadResponse(
                f"{self.name}: cannot read the reply ({type(exc).__name__}: {exc})"
            ) from exc

    def _call_holdings(self, client: Any) -> Any:
        if isinstance(self._holdings, str):
            return getattr(client, self._holdings)()
        return self._holdings(client)

    # -- errors ------------------------------------------------------------------------
    def category(self, error: BaseException) -> str:
        """What a broker exception means, per ``errors=``; unmapped: "unknown"."""
        found: str | None = None
        if isinstance(self._errors, Mapping):
            for cls, category in self._errors.items():
                if isinstance(error, cls):
                    found = category
                    break
        elif self._errors is not None:
            try:
                found = self._errors(error)
            except Exception:
                log.exception(
                    "%s errors= classifier raised; treating the error as unknown", self.name
                )
                found = None
            if found is not None and found not in CATEGORIES:
                log.warning(
                    "%s errors= classifier answered %r (not one of %s); treating as unknown",
                    self.name,
                    found,
                    sorted(CATEGORIES),
                )
                found = None
        return found or "unknown"

    def _translated(self, error: BaseException, what: str = "") -> ccxt.BaseError:
        category = self.category(error)
        translated = CATEGORIES[category](
            f"{self.name}{' ' + what if what else ''}: {type(error).__name__}: {error}"
        )
        translated.native = error
        return translated

    def native_error(self, error: BaseException) -> BaseException:
        native = getattr(error, "native", None)
        return native if isinstance(native, BaseException) else error

    def native_reply(self, reply: Any) -> Any:
        if isinstance(reply, _BrokerReply):
            return reply["info"]
        return reply

    # -- replies -----------------------------------------------------------------------
    def _order_reply(self, reply: Any) -> Any:
        if reply is None:
            return _BrokerReply(info=None)
        if isinstance(reply, (list, tuple)):
            return reply  # close_all's answer: passed back as it is
        return self._order(reply)

    def _cancel_reply(self, reply: Any) -> Any:
        """The order, if the broker's answer to a cancel is one; else None (then fetched)."""
        if reply is None or isinstance(reply, (bool, int, str)):
            return None
        try:
            order = self._order(reply)
        except Exception:
            return None
        return order if order["id"] and order["status"] else None

    def _found_order(self, reply: Any) -> Any:
        if reply is None:
            raise ccxt.OrderNotFound(f"{self.name}: no such order")
        return self._order(reply)

    def _order_list(self, reply: Any) -> list[Any]:
        return [self._order(item) for item in (reply or ())]

    def _order(self, reply: Any) -> _BrokerReply:
        fields = self._read_order(reply)
        status = _plain(fields.get("status"))
        normalized = None
        if status is not None:
            word = str(status).strip().lower()
            normalized = _STATUSES.get(word)
            if normalized is None:
                # Unknown words keep the order open: tracked until a final one appears.
                normalized = "open"
                if word not in _OPEN_STATUSES:
                    log.warning("%s: unknown order status %r read as open", self.name, status)
        amount = to_decimal(_plain(fields.get("amount")))
        filled = to_decimal(_plain(fields.get("filled")))
        stamp = fields.get("timestamp")
        if isinstance(stamp, datetime):
            stamp = int(stamp.timestamp() * 1000)
        order_id = _plain(fields.get("id"))
        side = _plain(fields.get("side"))
        client_order_id = _plain(fields.get("client_order_id")) or None
        if order_id and client_order_id and self._fetch_order is None:
            if len(self._client_ids) > 100_000:
                self._client_ids.clear()
            self._client_ids[str(order_id)] = str(client_order_id)
        return _BrokerReply(
            id=str(order_id) if order_id not in (None, "") else None,
            clientOrderId=client_order_id,
            status=normalized,
            symbol=_plain(fields.get("symbol")),
            side=str(side).lower() if side else None,
            amount=_float(amount),
            filled=_float(filled),
            remaining=_float(amount - filled)
            if amount is not None and filled is not None
            else None,
            average=_float(to_decimal(_plain(fields.get("average")))),
            timestamp=stamp if isinstance(stamp, int) else None,
            info=reply,
        )

    def _balance(self, reply: Any) -> dict[str, Any]:
        # Decimals throughout: a float could round a holding up past what is held.
        free: dict[str, Decimal] = {}
        total: dict[str, Decimal] = {}
        for key, (f, t) in _holdings_items(reply):
            free[key] = free.get(key, ZERO) + f
            total[key] = total.get(key, ZERO) + t
        balance: dict[str, Any] = {k: {"free": free[k], "total": total[k]} for k in total}
        balance.update(free=free, total=total, info=reply)
        return balance


def read_order_fields(reply: Any) -> dict[str, Any]:
    """Common field names of an order, from a dict or an object (pydantic, dataclass...)."""
    get = _getter(reply)
    return {
        "id": _first(get, _ID_KEYS),
        "client_order_id": _first(get, _CLIENT_ID_KEYS),
        "status": _first(get, ("status", "state")),
        "symbol": _first(get, ("symbol",)),
        "side": _first(get, ("side",)),
        "amount": _first(get, _AMOUNT_KEYS),
        "filled": _first(get, _FILLED_KEYS),
        "average": _first(get, _AVERAGE_KEYS),
        "timestamp": _first(get, _TIME_KEYS),
    }


def _holdings_items(reply: Any) -> Iterable[tuple[str, tuple[Decimal, Decimal]]]:
    if isinstance(reply, Mapping):
        for key, value in reply.items():
            yield str(key), _quantities(value, f"holdings[{key!r}]")
        return
    if isinstance(reply, (str, bytes)) or not isinstance(reply, Iterable):
        raise ValueError(f"holdings must be a mapping or a list, got {type(reply).__name__}")
    for item in reply:
        key = _first(_getter(item), _SYMBOL_KEYS)
        if key is None:
            raise ValueError(f"a holdings item has no symbol: {item!r}")
        yield str(_plain(key)), _quantities(item, f"holdings item {key!r}")


def _quantities(value: Any, what: str) -> tuple[Decimal, Decimal]:
    """(free, total) of one holding; a short holding (negative, or marked short) is
    nothing to sell."""
    if isinstance(value, tuple) and len(value) == 2:
        free, total = to_decimal(value[0]), to_decimal(value[1])
    elif isinstance(value, (int, float, str, Decimal)):
        free = total = to_decimal(value)
    else:
        get = _getter(value)
        total = to_decimal(_plain(_first(get, _TOTAL_KEYS)))
        free_value = _first(get, _FREE_KEYS)
        free = total if free_value is None else to_decimal(_plain(free_value))
        side = _plain(_first(get, ("side", "position_side", "positionSide")))
        if isinstance(side, str) and side.strip().lower() in ("short", "sell"):
            return ZERO, ZERO
    if free is None or total is None:
        raise ValueError(f"{what}: no quantity in {value!r}")
    return max(free, ZERO), max(total, ZERO)


def _getter(value: Any) -> Callable[[str], Any]:
    if isinstance(value, Mapping):
        return value.get
    return lambda key: getattr(value, key, None)


def _first(get: Callable[[str], Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = get(key)
        if value is not None:
            return value
    return None


def _plain(value: Any) -> Any:
    """Enum members (OrderSide.SELL) as their values; UUIDs as text."""
    if isinstance(value, Enum):
        return value.value
    if value is not None and type(value).__name__ == "UUID":
        return str(value)
    return value


def _float(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def _like(original: Any, amount: Decimal) -> Any:
    """The clamped amount in the type the bot passed: Decimal, str, int (whole), else float."""
    if isinstance(original, Decimal):
        return amount
    if isinstance(original, str):
        return format(amount, "f")
    if (
        isinstance(original, int)
        and not isinstance(original, bool)
        and amount == amount.to_integral()
    ):
        return int(amount)
    return float(amount)


def _ticker(reply: Any) -> dict[str, Any]:
    price = to_decimal(_plain(reply))
    return {"last": float(price) if price is not None else None}


# Verbs that, with an order/position noun, make a method name look like order entry.
_ENTRY_VERBS = frozenset(
    {
        "create",
        "edit",
        "close",
        "place",
        "amend",
        "modify",
        "replace",
        "submit",
        "send",
        "new",
        "execute",
        "liquidate",
        "flatten",
        "exit",
        "post",
    }
)
_ENTRY_NOUNS = frozenset({"order", "orders", "position", "positions", "trade", "trades"})


def _looks_like_order_entry(name: str) -> bool:
    """Method names that may enter an order, snake_case or camelCase.

    ``place_market_order``, ``placeOrder``, ``submitOrder``, ``closePosition``,
    ``send_order``, ``sell``, ``buy_limit``, ``market_sell``... Erring wide is
    safe: a false match is one ``ignore=`` entry; a miss is an unguarded sell.
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().strip("_").split("_")
    if words[0] in ("buy", "sell") or (
        words[0] in ("market", "limit", "stop") and not {"buy", "sell", "order"}.isdisjoint(words)
    ):
        return True
    return words[0] in _ENTRY_VERBS and not _ENTRY_NOUNS.isdisjoint(words)
