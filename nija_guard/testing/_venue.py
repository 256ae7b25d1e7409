"""An in-memory spot exchange: balances, resting orders, fills and trades.

The venue is the exchange itself, without any client protocol in front of it.
:class:`~nija_guard.testing.PaperExchange` puts a ccxt-shaped client in front of
it, and the loopback HTTP fakes in ``tests/`` put exchange REST APIs in front of
the same venue, so every front end agrees on what the exchange did.

Everything is guarded by one re-entrant lock: the venue is the serialization
point, as a matching engine is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

import ccxt

__all__ = ["Market", "Venue", "VenueOrder", "VenueTrade"]

ZERO = Decimal(0)
FINAL_STATUSES = frozenset({"closed", "canceled", "expired", "rejected"})


def to_decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ccxt.BadRequest(f"invalid number: {value!r}")
    try:
        number = Decimal(str(value))
    except Exception as exc:
        raise ccxt.BadRequest(f"invalid number: {value!r}") from exc
    if not number.is_finite():
        raise ccxt.BadRequest(f"invalid number: {value!r}")
    return number


@dataclass
class Market:
    """One spot market of the venue."""

    symbol: str
    price: Decimal
    amount_step: Decimal = Decimal("0.0001")
    price_step: Decimal = Decimal("0.01")
    min_amount: Decimal = Decimal("0.0001")
    min_cost: Decimal = Decimal("5")

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    @property
    def id(self) -> str:
        return self.symbol.replace("/", "")


@dataclass
class VenueOrder:
    id: str
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    amount: Decimal
    price: Decimal | None
    timestamp: int
    trigger_price: Decimal | None = None
    status: str = "open"
    filled: Decimal = ZERO
    cost: Decimal = ZERO
    fee: Decimal = ZERO
    fee_currency: str | None = None
    last_trade_timestamp: int | None = None
    updated_timestamp: int | None = None  # the last change: a fill, a cancel, an expiry
    reduce_only: bool = False
    # A stop-loss sell triggers when the price falls to its trigger ("down"),
    # a take-profit sell when it rises to it ("up").
    trigger_direction: str = "down"
    triggered: bool = False
    # What acceptance moved from free to used, and how much of it fills consumed.
    locked_asset: str = ""
    locked_amount: Decimal = ZERO
    spent: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def average(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass
class VenueTrade:
    id: str
    order_id: str
    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    timestamp: int
    fee: Decimal
    fee_currency: str


@dataclass
class _Snapshot:
    timestamp: int
    free: dict[str, Decimal]
    used: dict[str, Decimal]


@dataclass
class Venue:
    """The exchange's own books. All amounts are :class:`~decimal.Decimal`.

    ``balance_lag`` (seconds) makes :meth:`balance` report the balance as it
    was that long ago, the way a broker's account endpoint trails its matching
    engine. ``fee_rate`` is charged on every fill; with ``fee_in_base`` a buy
    pays its fee in the base asset it receives (the holder gets less than the
    order's amount), otherwise fees are paid in the quote asset.
    """

    markets: dict[str, Market]
    free: dict[str, Decimal]
    clock: Callable[[], float] = time.time
    fee_rate: Decimal = Decimal("0.001")
    fee_in_base: bool = False
    balance_lag: float = 0.0
    market_fill_ratio: Decimal = Decimal(1)
    used: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, VenueOrder] = field(default_factory=dict)
    trades: list[VenueTrade] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Called (under the venue's lock, so: quickly) with every order that changed.
    listeners: list[Callable[[VenueOrder], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)
        # (when, free or used, asset, value before): what a lagged reader rolls back
        self._changes: deque[tuple[int, bool, str, Decimal]] = deque()
        self._base_ms = self.now_ms()
        self._by_client_id: dict[str, VenueOrder] = {}  # newest order per client id
        self._record_balance()

    # -- time and balances -------------------------------------------------
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _record_balance(self) -> None:
        """Forget changes no lagged reader can still need."""
        horizon = self.now_ms() - int(max(self.balance_lag, 1.0) * 1000) * 4
        changes = self._changes
        while changes and changes[0][0] <= horizon:
            self._base_ms = changes.popleft()[0]

    def _adjust(
        self, bucket: dict[str, Decimal], asset: str, delta: Decimal, at: int | None = None
    ) -> None:
        """Move a balance; ``at``: the event's own time (a fill's), so a snapshot
        stamped with it shows the fill whole, never half of it."""
        old = bucket.get(asset, ZERO)
        bucket[asset] = old + delta
        if self.balance_lag > 0:
            # A change log, not snapshots: a venue can hold 10,000 assets.
            stamp = self.now_ms() if at is None else at
            self._changes.append((stamp, bucket is self.free, asset, old))

    def balance(self) -> _Snapshot:
        """The balance as the account endpoint reports it.

        With ``balance_lag`` it is the balance of ``balance_lag`` seconds ago,
        stamped with the time of the last change it includes (lag applies to
        changes made while it is set).
        """
        with self.lock:
            free, used = dict(self.free), dict(self.used)
            if self.balance_lag <= 0:
                return _Snapshot(self.now_ms(), free, used)
            cutoff = self.now_ms() - int(self.balance_lag * 1000)
            stamp = self._base_ms
            for ts, is_free, asset, old in reversed(self._changes):
                if ts <= cutoff:
                    stamp = ts
                    break
                (free if is_free else used)[asset] = old
            return _Snapshot(stamp, free, used)

    def holdings(self, asset: str) -> Decimal:
        """The true total of ``asset`` right now (no lag): what tests assert on."""
        with self.lock:
            return self.free.get(asset, ZERO) + self.used.get(asset, ZERO)

    def deposit(self, asset: str, amount: object) -> None:
        with self.lock:
            self._adjust(self.free, asset, to_decimal(amount))
            self._record_balance()

    # -- orders --------------------------------------------------------------
    def market(self, symbol: str) -> Market:
        try:
            return self.markets[symbol]
        except KeyError:
            raise ccxt.BadSymbol(f"paper does not have market symbol {symbol}") from None

    def place(
        self,
        symbol: str,
        side: str,
        type: str,
        amount: object,
        price: object = None,
        *,
        client_order_id: str | None = None,
        trigger_price: object = None,
        trigger_direction: str | None = None,
        reduce_only: bool = False,
    ) -> VenueOrder:
        """Accept or reject an order, like a matching engine."""
        with self.lock:
            market = self.market(symbol)
            if side not in ("buy", "sell"):
                raise ccxt.InvalidOrder(f"invalid side {side!r}")
            if type not in ("market", "limit"):
                raise ccxt.InvalidOrder(f"invalid order type {type!r}")
            qty = to_decimal(amount)
            if qty <= 0:
                raise ccxt.InvalidOrder("amount must be positive")
            if qty != qty.quantize(market.amount_step, rounding=ROUND_DOWN):
                raise ccxt.InvalidOrder(f"amount {qty} does not match step {market.amount_step}")
            if qty < market.min_amount:
                raise ccxt.InvalidOrder(f"amount {qty} below minimum {market.min_amount}")
            limit_price = to_decimal(price) if price is not None and type == "limit" else None
            if type == "limit" and (limit_price is None or limit_price <= 0):
                raise ccxt.InvalidOrder("a limit order needs a positive price")
            reference = limit_price if limit_price is not None else market.price
            if qty * reference < market.min_cost:
                raise ccxt.InvalidOrder(f"order cost below minimum {market.min_cost}")
            if client_order_id is not None:
                # Venues dedupe client ids among open orders only.
                other = self._by_client_id.get(client_order_id)
                if other is not None and not other.is_final:
                    raise ccxt.DuplicateOrderId(f"duplicate client order id {client_order_id}")
            # Funds are locked at acceptance, as on every spot exchange.
            if side == "sell":
                lock_asset, lock_amount = market.base, qty
            else:
                lock_asset = market.quote
                lock_amount = qty * reference * (1 + self.fee_rate)
            if self.free.get(lock_asset, ZERO) < lock_amount:
                raise ccxt.InsufficientFunds(
                    f"insufficient {lock_asset}: need {lock_amount}, "
                    f"free {self.free.get(lock_asset, ZERO)}"
                )
            now = self.now_ms()  # one event, one time: the lock and the order's acceptance
            self._adjust(self.free, lock_asset, -lock_amount, now)
            self._adjust(self.used, lock_asset, lock_amount, now)
            order = VenueOrder(
                id=str(next(self._ids)),
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                type=type,
                amount=qty,
                price=limit_price,
                timestamp=now,
                trigger_price=to_decimal(trigger_price) if trigger_price is not None else None,
                reduce_only=reduce_only,
                trigger_direction=trigger_direction or ("down" if side == "sell" else "up"),
                locked_asset=lock_asset,
                locked_amount=lock_amount,
            )
            self.orders[order.id] = order
            if client_order_id is not None:
                self._by_client_id[client_order_id] = order
            self._match(order)
            self._record_balance()
            # A fill or an IOC cancel at placement stamped it already: keep that time.
            self._changed(order, order.updated_timestamp or now)
            return order

    def _changed(self, order: VenueOrder, at: int | None = None) -> None:
        order.updated_timestamp = self.now_ms() if at is None else at
        for listener in self.listeners:
            listener(order)

    def _crosses(self, order: VenueOrder, market: Market) -> bool:
        if order.trigger_price is not None and not order.triggered:
            hit = (
                market.price <= order.trigger_price
                if order.trigger_direction == "down"
                else market.price >= order.trigger_price
            )
            if not hit:
                return False
            order.triggered = True
        if order.type == "market" or order.price is None:
            return True
        return market.price >= order.price if order.side == "sell" else market.price <= order.price

    def _match(self, order: VenueOrder) -> None:
        market = self.markets[order.symbol]
        if order.is_final or not self._crosses(order, market):
            return
        qty = order.remaining
        if order.type == "market":
            qty = (qty * self.market_fill_ratio).quantize(market.amount_step, rounding=ROUND_DOWN)
        limit = order.type == "limit" and order.price is not None
        fill_price = order.price if limit and order.price is not None else market.price
        if qty > 0:
            self._fill(order, qty, fill_price)
        if order.type == "market" and not order.is_final:
            # Market orders never rest: what did not fill is cancelled (IOC).
            self._finish(order, "canceled")

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal) -> None:
        market = self.markets[order.symbol]
        qty = min(qty, order.remaining)
        cost = qty * price
        now = self.now_ms()
        if order.side == "sell":
            self._adjust(self.used, market.base, -qty, now)
            fee, fee_ccy = cost * self.fee_rate, market.quote
            self._adjust(self.free, market.quote, cost - fee, now)
            order.spent += qty
        else:
            spent = cost * (1 + self.fee_rate) if not self.fee_in_base else cost
            self._adjust(self.used, market.quote, -spent, now)
            order.spent += spent
            if self.fee_in_base:
                fee, fee_ccy = qty * self.fee_rate, market.base
                self._adjust(self.free, market.base, qty - fee, now)
            else:
                fee, fee_ccy = cost * self.fee_rate, market.quote
                self._adjust(self.free, market.base, qty, now)
        order.filled += qty
        order.cost += cost
        order.fee += fee
        order.fee_currency = fee_ccy
        order.last_trade_timestamp = now
        self.trades.append(
            VenueTrade(
                id=str(next(self._ids)),
                order_id=order.id,
                symbol=order.symbol,
                side=order.side,
                amount=qty,
                price=price,
                timestamp=now,
                fee=fee,
                fee_currency=fee_ccy,
            )
        )
        if order.remaining <= 0:
            self._finish(order, "closed", now)
        else:
            self._changed(order, now)

    def _finish(self, order: VenueOrder, status: str, at: int | None = None) -> None:
        """Make ``order`` final at ``at`` (default: now): the release of what it still
        locked and its update time are one event, one time."""
        at = self.now_ms() if at is None else at
        leftover = order.locked_amount - order.spent
        if leftover > 0:
            self._adjust(self.used, order.locked_asset, -leftover, at)
            self._adjust(self.free, order.locked_asset, leftover, at)
        order.spent = order.locked_amount
        order.status = status
        self._changed(order, at)

    def cancel(self, order_id: str) -> VenueOrder:
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                raise ccxt.OrderNotFound(f"order {order_id} not found")
            if order.is_final:
                raise ccxt.OrderNotFound(f"order {order_id} is {order.status}; cannot cancel")
            self._finish(order, "canceled")
            self._record_balance()
            return order

    def fill(self, order_id: str, amount: object = None) -> VenueOrder:
        """Fill a resting order (all of it, or ``amount``) at its limit price."""
        with self.lock:
            order = self.get(order_id)
            if order.is_final:
                raise ccxt.InvalidOrder(f"order {order_id} is {order.status}")
            qty = order.remaining if amount is None else to_decimal(amount)
            price = order.price if order.price is not None else self.markets[order.symbol].price
            self._fill(order, qty, price)
            self._record_balance()
            return order

    def set_price(self, symbol: str, price: object) -> list[VenueOrder]:
        """Move the market; resting orders that now cross are filled."""
        with self.lock:
            self.market(symbol).price = to_decimal(price)
            touched = []
            for order in list(self.orders.values()):
                if order.symbol == symbol and not order.is_final:
                    before = order.filled
                    self._match(order)
                    if order.filled != before or order.is_final:
                        touched.append(order)
            self._record_balance()
            return touched

    def get(self, order_id: str | None = None, client_order_id: str | None = None) -> VenueOrder:
        with self.lock:
            if order_id is not None and order_id in self.orders:
                return self.orders[order_id]
            if client_order_id is not None and client_order_id in self._by_client_id:
                # The newest: a client id may be reused once its order is final.
                return self._by_client_id[client_order_id]
            raise ccxt.OrderNotFound(f"order {order_id or client_order_id} not found")

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        with self.lock:
            return [
                o
                for o in self.orders.values()
                if not o.is_final and (symbol is None or o.symbol == symbol)
            ]

    def all_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        with self.lock:
            return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def my_trades(self, symbol: str | None = None, since: int | None = None) -> list[VenueTrade]:
        with self.lock:
            return [
                t
                for t in self.trades
                if (symbol is None or t.symbol == symbol)
                and (since is None or t.timestamp >= since)
            ]

    def sold(self, symbol: str | None = None) -> Decimal:
        """Total base amount sold (filled sells): what tests compare with positions."""
        with self.lock:
            return sum(
                (t.amount for t in self.trades if t.side == "sell" and symbol in (None, t.symbol)),
                ZERO,
            )


def default_markets(symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT")) -> dict[str, Market]:
    prices = {"BTC": Decimal("50000"), "ETH": Decimal("3000"), "SOL": Decimal("150")}
    markets = {}
    for symbol in symbols:
        base = symbol.split("/")[0]
        markets[symbol] = Market(symbol=symbol, price=prices.get(base, Decimal("10")))
    return markets
