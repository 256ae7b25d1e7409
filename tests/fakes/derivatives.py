"""An in-memory exchange of USDT-margined linear perpetual swaps.

:class:`DerivativesVenue` is the exchange itself, without a client protocol in
front of it: ``tests/fakes/okx_swap.py`` puts OKX's v5 REST API in front of
it, and a test drives prices with :meth:`~DerivativesVenue.set_price` and
asserts on :meth:`~DerivativesVenue.positions` while the code under test talks
to the exchange through ccxt.

The model, kept small on purpose:

- a market trades **contracts** of ``contract_size`` base units (OKX's
  ``ctVal``: BTC-USDT-SWAP 0.01 BTC, ETH-USDT-SWAP 0.1 ETH), in multiples of
  ``lot_size`` and at least ``min_size``; it has one price, both mark and last;
- the account is **cross margin in USDT**: ``cash`` (realized PnL and fees
  settle into it), equity = cash + unrealized PnL, initial margin =
  notional / leverage for positions and for resting orders that could open
  exposure. An order whose opening part needs more margin than is available is
  rejected (``insufficient_margin``). There is no liquidation and no funding;
- **one-way (net) positions**: one signed contract count per market, with an
  average entry price and the PnL realized since it was opened. Buys add,
  sells subtract; an order that is not reduce-only may flip the position;
- orders: ``market`` and ``limit`` (with ``post_only``, or ``time_in_force``
  ``IOC``/``FOK``), a trigger price (the order is placed when the price
  reaches it), a client order id, a ``reduce_only`` flag. States are OKX's:
  ``live``, ``partially_filled``, ``filled``, ``canceled``. The book has no
  depth: an order that crosses the price at placement fills in full at the
  market price (taker); a resting limit order fills in full at its own price
  when the market reaches it (maker), or partly with :meth:`fill`;
- **reduce-only** orders can only ever bring the position towards zero: one
  is rejected when the position is flat (``reduce_only_flat``) or on the
  order's side (``reduce_only_same_side``); one larger than the position is
  cut to it (its ``amount`` shrinks, ``original_amount`` keeps what was asked).
  After every position change the resting reduce-only orders are re-fitted,
  best price first: those beyond the position are cut or canceled, and all of
  them when the position is flat or has changed side (as OKX documents for its
  close orders). No fill of a reduce-only order ever increases or flips the
  position;
- :meth:`close_position` market-closes the whole position with a reduce-only
  order; on a flat position it raises ``no_position``, never opening one.

Everything is guarded by one re-entrant lock (:attr:`DerivativesVenue.lock`).
Rejections raise :class:`VenueError` with a ``reason`` from :data:`REASONS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

__all__ = [
    "REASONS",
    "DerivativesVenue",
    "Position",
    "SwapMarket",
    "SwapOrder",
    "SwapTrade",
    "VenueError",
    "default_swap_markets",
]

ZERO = Decimal(0)
OPEN_STATES = frozenset({"live", "partially_filled"})
FINAL_STATES = frozenset({"filled", "canceled"})

#: Why the venue refused something (:attr:`VenueError.reason`).
REASONS = frozenset(
    {
        "bad_symbol",  # no such market
        "bad_side",
        "bad_type",
        "bad_amount",  # not a positive number
        "lot_size",  # not a multiple of the lot size
        "min_size",  # below the minimum size
        "max_size",  # above the largest market order
        "bad_price",  # missing, not positive, or off the tick
        "insufficient_margin",
        "duplicate_client_id",  # the client order id names an open order
        "no_such_order",
        "order_final",  # filled or canceled: cannot cancel or fill it
        "reduce_only_flat",  # reduce-only with no position to reduce
        "reduce_only_same_side",  # reduce-only on the position's own side
        "no_position",  # close_position on a flat position
        "pending_close_orders",  # close_position while reduce-only orders rest
        "bad_leverage",
    }
)

#: Why an order was canceled (:attr:`SwapOrder.cancel_reason`).
CANCEL_REASONS = frozenset({"user", "ioc", "post_only", "reduce_only", "close_position", "system"})


class VenueError(Exception):
    """The venue refused a request; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def to_decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or value is None:
        raise VenueError("bad_amount", f"invalid number: {value!r}")
    else:
        try:
            number = Decimal(str(value))
        except (InvalidOperation, ValueError):
            raise VenueError("bad_amount", f"invalid number: {value!r}") from None
    if not number.is_finite():
        raise VenueError("bad_amount", f"invalid number: {value!r}")
    return number


@dataclass
class SwapMarket:
    """A USDT-margined linear perpetual, e.g. ``BTC/USDT:USDT`` (OKX ``BTC-USDT-SWAP``)."""

    symbol: str
    price: Decimal
    contract_size: Decimal = Decimal("0.01")
    lot_size: Decimal = Decimal("1")
    min_size: Decimal = Decimal("1")
    tick_size: Decimal = Decimal("0.1")
    leverage: Decimal = Decimal("10")
    max_leverage: Decimal = Decimal("100")
    max_market_size: Decimal = Decimal("12000")
    max_limit_size: Decimal = Decimal("100000000")
    maintenance_rate: Decimal = Decimal("0.004")

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]

    @property
    def settle(self) -> str:
        return self.symbol.split(":")[1]

    @property
    def id(self) -> str:
        return f"{self.base}-{self.quote}-SWAP"

    def notional(self, contracts: Decimal, price: Decimal | None = None) -> Decimal:
        """The value of ``contracts`` in the settle currency at ``price`` (default: now)."""
        return abs(contracts) * self.contract_size * (self.price if price is None else price)


@dataclass
class SwapOrder:
    id: str
    client_order_id: str | None
    symbol: str
    side: str  # buy, sell
    type: str  # market, limit
    amount: Decimal  # contracts; a reduce-only order's may shrink
    price: Decimal | None
    timestamp: int
    original_amount: Decimal = ZERO
    post_only: bool = False
    time_in_force: str = "GTC"  # GTC, IOC, FOK
    reduce_only: bool = False
    close_position: bool = False  # placed by close_position()
    trigger_price: Decimal | None = None
    trigger_direction: str = "up"  # the trigger fires when the price reaches it going up/down
    triggered: bool = False
    status: str = "live"  # live, partially_filled, filled, canceled
    filled: Decimal = ZERO  # contracts
    cost: Decimal = ZERO  # settle currency: sum of contracts * contract size * price
    fee: Decimal = ZERO  # paid, in the settle currency
    fee_currency: str = "USDT"
    pnl: Decimal = ZERO  # realized by this order's fills
    cancel_reason: str | None = None
    tag: str = ""
    last_trade_timestamp: int | None = None
    updated_timestamp: int | None = None

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def average(self) -> Decimal | None:
        """The average fill price."""
        if not self.filled:
            return None
        return self.cost / self.filled / self._contract_size

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    @property
    def working(self) -> bool:
        """Open and, for a trigger order, triggered: it is in the book."""
        return self.is_open and (self.trigger_price is None or self.triggered)

    _contract_size: Decimal = field(default=Decimal(1), repr=False)


@dataclass
class SwapTrade:
    id: str
    order_id: str
    client_order_id: str | None
    symbol: str
    side: str
    amount: Decimal  # contracts
    price: Decimal
    timestamp: int
    fee: Decimal  # paid, in the settle currency
    fee_currency: str
    fee_rate: Decimal
    taker: bool
    pnl: Decimal  # realized by this fill
    position_after: Decimal  # signed contracts
    opening: bool  # did it open or add to the position (else it reduced one)


@dataclass
class Position:
    """A net position: ``contracts`` is signed (long > 0, short < 0)."""

    id: str
    symbol: str
    contracts: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # trading PnL since the position was opened, fees apart
    fees: Decimal = ZERO  # fees paid since the position was opened
    timestamp: int = 0  # when it was opened (from flat)
    updated_timestamp: int = 0
    last_trade_id: str = ""

    @property
    def side(self) -> str | None:
        if self.contracts > 0:
            return "long"
        if self.contracts < 0:
            return "short"
        return None


@dataclass
class AccountSnapshot:
    """The USDT account in the settle currency."""

    timestamp: int
    cash: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    position_margin: Decimal  # initial margin of the positions
    order_margin: Decimal  # initial margin frozen by resting orders
    maintenance_margin: Decimal
    available: Decimal  # equity less both margins, not below zero


@dataclass
class DerivativesVenue:
    """The exchange's own books. All amounts are :class:`~decimal.Decimal`."""

    markets: dict[str, SwapMarket]
    cash: Decimal = Decimal("100000")
    settle: str = "USDT"
    clock: Callable[[], float] = time.time
    taker_fee: Decimal = Decimal("0.0005")
    maker_fee: Decimal = Decimal("0.0002")
    #: "open": a client order id may be reused once its order is final; "all": never.
    client_id_scope: str = "open"
    orders: dict[str, SwapOrder] = field(default_factory=dict)
    trades: list[SwapTrade] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Called (under the venue's lock, so: quickly) with every order that changed.
    listeners: list[Callable[[SwapOrder], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cash = to_decimal(self.cash)
        self._ids = itertools.count(700_000_000_000_000_001)
        self._positions: dict[str, Position] = {}
        self._by_client_id: dict[str, SwapOrder] = {}  # newest order per client id
        self._client_ids: set[str] = set()

    # -- time, markets, account --------------------------------------------------
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _next_id(self) -> str:
        return str(next(self._ids))

    def market(self, symbol: str) -> SwapMarket:
        try:
            return self.markets[symbol]
        except KeyError:
            raise VenueError("bad_symbol", f"no market {symbol}") from None

    def market_by_id(self, market_id: str) -> SwapMarket:
        for market in self.markets.values():
            if market.id == market_id:
                return market
        raise VenueError("bad_symbol", f"no market {market_id}")

    def deposit(self, amount: object) -> None:
        with self.lock:
            self.cash += to_decimal(amount)

    def set_leverage(self, symbol: str, leverage: object) -> None:
        with self.lock:
            market = self.market(symbol)
            value = to_decimal(leverage)
            if not Decimal(1) <= value <= market.max_leverage:
                raise VenueError(
                    "bad_leverage", f"leverage {value} not in 1..{market.max_leverage}"
                )
            market.leverage = value

    def unrealized_pnl(self, symbol: str) -> Decimal:
        with self.lock:
            market = self.market(symbol)
            pos = self._positions.get(symbol)
            if pos is None or not pos.contracts:
                return ZERO
            return pos.contracts * market.contract_size * (market.price - pos.entry_price)

    def position_margin(self, symbol: str) -> Decimal:
        with self.lock:
            market = self.market(symbol)
            pos = self._positions.get(symbol)
            contracts = pos.contracts if pos is not None else ZERO
            return market.notional(contracts) / market.leverage

    def order_margin(self, symbol: str | None = None) -> Decimal:
        """Initial margin frozen by resting orders that could open exposure."""
        with self.lock:
            total = ZERO
            for order in self.orders.values():
                if order.is_open and not order.reduce_only and symbol in (None, order.symbol):
                    market = self.markets[order.symbol]
                    price = order.price if order.price is not None else market.price
                    total += market.notional(order.remaining, price) / market.leverage
            return total

    def balance(self) -> AccountSnapshot:
        with self.lock:
            upl = sum((self.unrealized_pnl(s) for s in self.markets), ZERO)
            imr = sum((self.position_margin(s) for s in self.markets), ZERO)
            mmr = ZERO
            for symbol, market in self.markets.items():
                pos = self._positions.get(symbol)
                if pos is not None and pos.contracts:
                    mmr += market.notional(pos.contracts) * market.maintenance_rate
            frozen = self.order_margin()
            equity = self.cash + upl
            available = max(ZERO, equity - imr - frozen)
            return AccountSnapshot(
                self.now_ms(), self.cash, upl, equity, imr, frozen, mmr, available
            )

    # -- positions ---------------------------------------------------------------------
    def _position(self, symbol: str) -> Position:
        pos = self._positions.get(symbol)
        if pos is None:
            pos = self._positions[symbol] = Position(id=self._next_id(), symbol=symbol)
        return pos

    def position(self, symbol: str) -> Position:
        """A copy of the position in ``symbol`` (``contracts == 0`` when flat)."""
        with self.lock:
            self.market(symbol)
            pos = self._positions.get(symbol)
            if pos is None:
                return Position(id="", symbol=symbol)
            return dataclasses.replace(pos)

    def positions(self) -> list[Position]:
        """Copies of the open (non-flat) positions."""
        with self.lock:
            return [dataclasses.replace(p) for p in self._positions.values() if p.contracts]

    def _apply_fill(
        self, symbol: str, side: str, qty: Decimal, price: Decimal, now: int
    ) -> tuple[Decimal, bool]:
        """Move the position by a fill at ``now``; the PnL it realized, and whether it opened.

        The position's update time is the fill's own time, as on the venue: two clock
        reads could straddle a millisecond and stamp the position before its fill.
        """
        market = self.markets[symbol]
        pos = self._position(symbol)
        signed = qty if side == "buy" else -qty
        before = pos.contracts
        realized = ZERO
        opening = before == 0 or (before > 0) == (signed > 0)
        if before == 0:
            pos.timestamp = now
            pos.realized_pnl = ZERO
            pos.fees = ZERO
            pos.entry_price = price
        elif opening:
            total = abs(before) + qty
            pos.entry_price = (abs(before) * pos.entry_price + qty * price) / total
        else:
            closed = min(qty, abs(before))
            direction = 1 if before > 0 else -1
            realized = closed * market.contract_size * (price - pos.entry_price) * direction
            pos.realized_pnl += realized
            if qty > abs(before):  # flipped: the rest opens the other side at this price
                pos.entry_price = price
                pos.timestamp = now
        pos.contracts = before + signed
        if pos.contracts == 0:
            pos.entry_price = ZERO
        pos.updated_timestamp = now
        return realized, opening

    # -- orders --------------------------------------------------------------------------
    def place(
        self,
        symbol: str,
        side: str,
        type: str,
        amount: object,
        price: object = None,
        *,
        client_order_id: str | None = None,
        reduce_only: bool = False,
        post_only: bool = False,
        time_in_force: str = "GTC",
        trigger_price: object = None,
        trigger_direction: str | None = None,
        tag: str = "",
    ) -> SwapOrder:
        """Accept or reject an order, like a matching engine (amounts in contracts)."""
        with self.lock:
            market = self.market(symbol)
            if side not in ("buy", "sell"):
                raise VenueError("bad_side", f"invalid side {side!r}")
            if type not in ("market", "limit"):
                raise VenueError("bad_type", f"invalid order type {type!r}")
            if time_in_force not in ("GTC", "IOC", "FOK"):
                raise VenueError("bad_type", f"invalid time in force {time_in_force!r}")
            if post_only and (type != "limit" or time_in_force != "GTC"):
                raise VenueError("bad_type", "post-only needs a GTC limit order")
            qty = to_decimal(amount)
            if qty <= 0:
                raise VenueError("bad_amount", f"amount {qty} must be positive")
            if qty % market.lot_size:
                raise VenueError("lot_size", f"amount {qty} is not a multiple of {market.lot_size}")
            if qty < market.min_size:
                raise VenueError("min_size", f"amount {qty} below minimum {market.min_size}")
            if type == "market" and qty > market.max_market_size:
                raise VenueError("max_size", f"amount {qty} above {market.max_market_size}")
            limit_price = None
            if type == "limit":
                if price is None:
                    raise VenueError("bad_price", "a limit order needs a price")
                limit_price = to_decimal(price)
                if limit_price <= 0 or limit_price % market.tick_size:
                    raise VenueError("bad_price", f"price {limit_price} is off the tick")
            trigger = to_decimal(trigger_price) if trigger_price is not None else None
            if trigger is not None and (trigger <= 0 or trigger % market.tick_size):
                raise VenueError("bad_price", f"trigger price {trigger} is off the tick")
            if client_order_id is not None:
                other = self._by_client_id.get(client_order_id)
                taken = client_order_id in self._client_ids and self.client_id_scope == "all"
                if taken or (other is not None and not other.is_final):
                    raise VenueError("duplicate_client_id", f"client order id {client_order_id}")
            pos = self._positions.get(symbol)
            current = pos.contracts if pos is not None else ZERO
            if reduce_only and trigger is None:
                qty = self._reduce_only_size(side, qty, current)
            if not reduce_only:
                self._check_margin(market, side, qty, limit_price, current)
            if trigger is not None and trigger_direction is None:
                trigger_direction = "up" if trigger >= market.price else "down"
            order = SwapOrder(
                id=self._next_id(),
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                type=type,
                amount=qty,
                price=limit_price,
                timestamp=self.now_ms(),
                original_amount=to_decimal(amount),
                post_only=post_only,
                time_in_force=time_in_force,
                reduce_only=reduce_only,
                trigger_price=trigger,
                trigger_direction=trigger_direction or "up",
                fee_currency=self.settle,
                tag=tag,
                _contract_size=market.contract_size,
            )
            self.orders[order.id] = order
            if client_order_id is not None:
                self._by_client_id[client_order_id] = order
                self._client_ids.add(client_order_id)
            self._changed(order)
            if trigger is None:
                self._execute(order, taker=True)
            else:
                self._check_trigger(order)
            return order

    def _reduce_only_size(self, side: str, qty: Decimal, position: Decimal) -> Decimal:
        """A reduce-only order's size: cut to the position, or refused."""
        if position == 0:
            raise VenueError("reduce_only_flat", "no position to reduce")
        if (position > 0) == (side == "buy"):
            raise VenueError(
                "reduce_only_same_side", f"a {side} cannot reduce a {position} position"
            )
        return min(qty, abs(position))

    def _check_margin(
        self, market: SwapMarket, side: str, qty: Decimal, price: Decimal | None, position: Decimal
    ) -> None:
        """Refuse an order whose opening part needs more margin than is available."""
        signed = qty if side == "buy" else -qty
        if position == 0 or (position > 0) == (signed > 0):
            opening = qty
        else:
            opening = max(ZERO, qty - abs(position))
        reference = price if price is not None else market.price
        need = market.notional(opening, reference) / market.leverage
        need += market.notional(qty, reference) * self.taker_fee
        available = self.balance().available
        if need > available:
            raise VenueError(
                "insufficient_margin",
                f"need {need} {self.settle} of margin, {available} available",
            )

    def _changed(self, order: SwapOrder) -> None:
        order.updated_timestamp = self.now_ms()
        for listener in self.listeners:
            listener(order)

    def _crosses(self, order: SwapOrder) -> bool:
        market = self.markets[order.symbol]
        if order.type == "market" or order.price is None:
            return True
        return market.price >= order.price if order.side == "sell" else market.price <= order.price

    def _execute(self, order: SwapOrder, *, taker: bool) -> None:
        """An order entering the book: fill what crosses, cancel what may not rest."""
        if order.reduce_only and not self._fit_reduce_only(order):
            return
        crosses = self._crosses(order)
        if order.post_only and crosses:
            self._finish(order, "canceled", "post_only")
            return
        if crosses:
            self._fill(order, order.remaining, self.markets[order.symbol].price, taker=taker)
        if not order.is_final and (order.type == "market" or order.time_in_force != "GTC"):
            self._finish(order, "canceled", "ioc")
        if not order.is_final:
            self._refit_reduce_only(order.symbol)

    def _fit_reduce_only(self, order: SwapOrder) -> bool:
        """Cut a reduce-only order to the position; cancel it if it cannot reduce it."""
        pos = self._positions.get(order.symbol)
        current = pos.contracts if pos is not None else ZERO
        closing = "sell" if current > 0 else "buy" if current < 0 else None
        if order.side != closing:
            self._finish(order, "canceled", "reduce_only")
            return False
        if order.remaining > abs(current):
            order.amount = order.filled + abs(current)
        return True

    def _refit_reduce_only(self, symbol: str) -> None:
        """Keep resting reduce-only orders within the position, best price first."""
        pos = self._positions.get(symbol)
        current = pos.contracts if pos is not None else ZERO
        closing = "sell" if current > 0 else "buy" if current < 0 else None
        resting = [
            o for o in self.orders.values() if o.symbol == symbol and o.reduce_only and o.working
        ]
        for order in resting:
            if order.side != closing:
                self._finish(order, "canceled", "reduce_only")

        def priority(order: SwapOrder) -> tuple[int, Decimal, int, int]:
            price = order.price if order.price is not None else ZERO
            # Market first; then the price that fills first: lowest sell, highest buy.
            rank = price if order.side == "sell" else -price
            return (0 if order.type == "market" else 1, rank, order.timestamp, int(order.id))

        budget = abs(current)
        for order in sorted((o for o in resting if o.is_open), key=priority):
            if order.remaining <= budget:
                budget -= order.remaining
            elif budget > 0:
                order.amount = order.filled + budget
                budget = ZERO
                self._changed(order)
            else:
                self._finish(order, "canceled", "reduce_only")

    def _fill(self, order: SwapOrder, qty: Decimal, price: Decimal, *, taker: bool) -> None:
        market = self.markets[order.symbol]
        qty = min(qty, order.remaining)
        if order.reduce_only:
            pos = self._positions.get(order.symbol)
            current = pos.contracts if pos is not None else ZERO
            if current == 0 or (current > 0) == (order.side == "buy"):
                self._finish(order, "canceled", "reduce_only")
                return
            qty = min(qty, abs(current))
        if qty <= 0:
            return
        rate = self.taker_fee if taker else self.maker_fee
        value = market.notional(qty, price)
        fee = value * rate
        now = self.now_ms()
        realized, opening = self._apply_fill(order.symbol, order.side, qty, price, now)
        self.cash += realized - fee
        pos = self._positions[order.symbol]
        pos.fees += fee
        order.filled += qty
        order.cost += value
        order.fee += fee
        order.pnl += realized
        order.last_trade_timestamp = now
        trade = SwapTrade(
            id=self._next_id(),
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            amount=qty,
            price=price,
            timestamp=now,
            fee=fee,
            fee_currency=self.settle,
            fee_rate=rate,
            taker=taker,
            pnl=realized,
            position_after=pos.contracts,
            opening=opening,
        )
        self.trades.append(trade)
        pos.last_trade_id = trade.id
        if order.remaining <= 0:
            order.status = "filled"
        else:
            order.status = "partially_filled"
        self._changed(order)
        self._refit_reduce_only(order.symbol)

    def _finish(self, order: SwapOrder, status: str, reason: str | None = None) -> None:
        order.status = status
        if status == "canceled":
            order.cancel_reason = reason or "system"
        self._changed(order)

    def _check_trigger(self, order: SwapOrder) -> None:
        """Place a trigger order in the book once the price reaches its trigger."""
        if order.triggered or not order.is_open or order.trigger_price is None:
            return
        price = self.markets[order.symbol].price
        up = order.trigger_direction == "up"
        if (price >= order.trigger_price) if up else (price <= order.trigger_price):
            order.triggered = True
            self._changed(order)
            self._execute(order, taker=True)

    def cancel(self, order_id: str) -> SwapOrder:
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                raise VenueError("no_such_order", f"order {order_id} not found")
            if order.is_final:
                raise VenueError("order_final", f"order {order_id} is {order.status}")
            self._finish(order, "canceled", "user")
            return order

    def fill(self, order_id: str, contracts: object = None) -> SwapOrder:
        """Fill a resting order (all of it, or ``contracts``) at its limit price, as maker."""
        with self.lock:
            order = self.get(order_id)
            if order.is_final:
                raise VenueError("order_final", f"order {order_id} is {order.status}")
            qty = order.remaining if contracts is None else to_decimal(contracts)
            if qty <= 0 or qty % self.markets[order.symbol].lot_size:
                raise VenueError("lot_size", f"cannot fill {qty} contracts")
            price = order.price if order.price is not None else self.markets[order.symbol].price
            self._fill(order, qty, price, taker=False)
            return order

    def set_price(self, symbol: str, price: object) -> list[SwapOrder]:
        """Move the market: trigger orders that it reaches fire, resting orders that cross fill."""
        with self.lock:
            market = self.market(symbol)
            market.price = to_decimal(price)
            touched = []
            for order in sorted(self.orders.values(), key=lambda o: int(o.id)):
                if order.symbol != symbol or not order.is_open:
                    continue
                before = (order.filled, order.status, order.triggered)
                if order.trigger_price is not None and not order.triggered:
                    self._check_trigger(order)
                elif self._crosses(order):
                    fill_price = order.price if order.price is not None else market.price
                    self._fill(order, order.remaining, fill_price, taker=False)
                if (order.filled, order.status, order.triggered) != before:
                    touched.append(order)
            return touched

    def close_position(
        self,
        symbol: str,
        *,
        client_order_id: str | None = None,
        cancel_reduce_only: bool = False,
        tag: str = "",
    ) -> SwapOrder:
        """Market-close the whole position with a reduce-only order.

        A flat position raises ``no_position``. Resting reduce-only orders block
        it (``pending_close_orders``) unless ``cancel_reduce_only`` cancels them
        first (OKX's ``autoCxl``).
        """
        with self.lock:
            self.market(symbol)
            pos = self._positions.get(symbol)
            current = pos.contracts if pos is not None else ZERO
            if current == 0:
                raise VenueError("no_position", f"no position in {symbol}")
            pending = [
                o
                for o in self.orders.values()
                if o.symbol == symbol and o.reduce_only and o.is_open
            ]
            if pending and not cancel_reduce_only:
                raise VenueError(
                    "pending_close_orders", f"{len(pending)} reduce-only orders rest in {symbol}"
                )
            for order in pending:
                self._finish(order, "canceled", "close_position")
            order = self.place(
                symbol,
                "sell" if current > 0 else "buy",
                "market",
                abs(current),
                client_order_id=client_order_id,
                reduce_only=True,
                tag=tag,
            )
            order.close_position = True
            return order

    def get(self, order_id: str | None = None, client_order_id: str | None = None) -> SwapOrder:
        with self.lock:
            if order_id is not None and order_id in self.orders:
                return self.orders[order_id]
            if client_order_id is not None and client_order_id in self._by_client_id:
                # The newest: a client id may be reused once its order is final.
                return self._by_client_id[client_order_id]
            raise VenueError("no_such_order", f"order {order_id or client_order_id} not found")

    def open_orders(self, symbol: str | None = None) -> list[SwapOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.is_open and symbol in (None, o.symbol)]

    def all_orders(self, symbol: str | None = None) -> list[SwapOrder]:
        with self.lock:
            return [o for o in self.orders.values() if symbol in (None, o.symbol)]

    def my_trades(self, symbol: str | None = None, since: int | None = None) -> list[SwapTrade]:
        with self.lock:
            return [
                t
                for t in self.trades
                if symbol in (None, t.symbol) and (since is None or t.timestamp >= since)
            ]


def default_swap_markets(
    symbols: Iterable[str] = ("BTC/USDT:USDT", "ETH/USDT:USDT"),
) -> dict[str, SwapMarket]:
    """BTC (ctVal 0.01, tick 0.1) and ETH (ctVal 0.1, tick 0.01) as OKX lists them."""
    specs = {
        "BTC": (Decimal("50000"), Decimal("0.01"), Decimal("0.1")),
        "ETH": (Decimal("3000"), Decimal("0.1"), Decimal("0.01")),
        "SOL": (Decimal("150"), Decimal("1"), Decimal("0.01")),
    }
    markets = {}
    for symbol in symbols:
        base = symbol.split("/")[0]
        price, size, tick = specs.get(base, (Decimal("10"), Decimal("1"), Decimal("0.001")))
        markets[symbol] = SwapMarket(symbol, price, contract_size=size, tick_size=tick)
    return markets
