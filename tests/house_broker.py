"""A NIJA-style house broker class, and its nija-guard description.

The kind of client a bot writes for itself: ``place_market_order(symbol, side,
quantity)``, ``get_account_balance()``, ``get_positions()`` returning dicts with
symbol and quantity, its own exceptions. Behind it is the same in-memory venue
the other fakes use, so tests can fill, cancel, move prices and lose replies.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt

import nija_guard
from nija_guard.testing import Market, Venue, VenueOrder


class BrokerError(Exception):
    """Anything the broker refuses."""


class OrderRejected(BrokerError):
    pass


class InsufficientBalance(OrderRejected):
    pass


class BrokerTimeout(TimeoutError):
    """The request went out; no answer came back."""


class HouseBroker:
    """Symbols look like ``BTC-USD``; statuses like ``FILLED``; ids like ``H-1000``."""

    def __init__(
        self,
        positions: dict[str, float] | None = None,
        cash: float = 100_000,
        prices: dict[str, float] | None = None,
    ) -> None:
        prices = prices or {"BTC-USD": 50_000.0, "ETH-USD": 3_000.0}
        markets = {
            _venue_symbol(s): Market(
                symbol=_venue_symbol(s),
                price=Decimal(str(p)),
                amount_step=Decimal("0.0001"),
                min_amount=Decimal("0.0001"),
                min_cost=Decimal("1"),
            )
            for s, p in prices.items()
        }
        free = {"USD": Decimal(str(cash))}
        for symbol, quantity in (positions or {"BTC-USD": 1.0}).items():
            free[symbol.split("-")[0]] = Decimal(str(quantity))
        self.venue = Venue(markets=markets, free=free, fee_rate=Decimal(0))
        self.sent: list[dict[str, Any]] = []  # every order request that reached the broker
        self.lookups: list[tuple[str, str]] = []  # (how, key) of every order lookup
        self._faults: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.gate: Callable[[], None] | None = None  # runs inside the next submit (races)

    # -- faults for tests --------------------------------------------------------
    def fail_next(self, method: str, how: str, times: int = 1) -> None:
        """``how``: "timeout_after" (executed, reply lost), "timeout_before", "reject"."""
        with self._lock:
            self._faults.setdefault(method, []).extend([how] * times)

    def _fault(self, method: str) -> str | None:
        with self._lock:
            pending = self._faults.get(method)
            return pending.pop(0) if pending else None

    # -- the broker's API ----------------------------------------------------------
    def place_market_order(
        self, symbol: str, side: str, quantity: float, client_id: str | None = None
    ) -> dict[str, Any]:
        return self._place("place_market_order", symbol, side, quantity, None, client_id)

    def place_limit_order(
        self,
        symbol: str,
        side: str,
        quantity: float,
        price: float,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        return self._place("place_limit_order", symbol, side, quantity, price, client_id)

    def _place(
        self,
        method: str,
        symbol: str,
        side: str,
        quantity: float,
        price: float | None,
        client_id: str | None,
    ) -> dict[str, Any]:
        fault = self._fault(method)
        if fault == "timeout_before":
            raise BrokerTimeout(f"{method}: no answer")
        if fault == "reject":
            raise OrderRejected(f"{method}: market closed")
        gate, self.gate = self.gate, None
        if gate is not None:
            gate()
        self.sent.append(
            {
                "method": method,
                "symbol": symbol,
                "side": side,
                "quantity": quantity,
                "price": price,
                "client_id": client_id,
            }
        )
        try:
            order = self.venue.place(
                _venue_symbol(symbol),
                side.lower(),
                "market" if price is None else "limit",
                quantity,
                price,
                client_order_id=client_id,
            )
        except ccxt.InsufficientFunds as exc:
            raise InsufficientBalance(str(exc)) from None
        except ccxt.BaseError as exc:
            raise OrderRejected(str(exc)) from None
        if fault == "timeout_after":
            raise BrokerTimeout(f"{method}: no answer")
        return _reply(order)

    def get_account_balance(self) -> dict[str, float]:
        snapshot = self.venue.balance()
        return {"USD": float(snapshot.free.get("USD", 0))}

    def get_positions(self) -> list[dict[str, Any]]:
        snapshot = self.venue.balance()
        positions = []
        for asset, free in snapshot.free.items():
            if asset == "USD":
                continue
            total = free + snapshot.used.get(asset, Decimal(0))
            if total > 0:
                positions.append(
                    {"symbol": f"{asset}-USD", "quantity": float(total), "available": float(free)}
                )
        return positions

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        self.lookups.append(("id", order_id))
        try:
            return _reply(self.venue.get(order_id=order_id.removeprefix("H-")))
        except ccxt.OrderNotFound:
            return None

    def get_order_by_client_id(self, client_id: str) -> dict[str, Any] | None:
        self.lookups.append(("client_id", client_id))
        try:
            return _reply(self.venue.get(client_order_id=client_id))
        except ccxt.OrderNotFound:
            return None

    def get_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        venue_symbol = _venue_symbol(symbol) if symbol else None
        return [_reply(o) for o in self.venue.open_orders(venue_symbol)]

    def cancel_order(self, order_id: str) -> dict[str, Any]:
        try:
            return _reply(self.venue.cancel(order_id.removeprefix("H-")))
        except ccxt.OrderNotFound as exc:
            raise OrderRejected(str(exc)) from None

    # -- for tests -------------------------------------------------------------------
    def held(self, symbol: str = "BTC-USD") -> Decimal:
        return self.venue.holdings(symbol.split("-")[0])

    def fill(self, order_id: str, amount: object = None) -> None:
        """The market trades through a resting order (all of it, or ``amount``)."""
        self.venue.fill(order_id.removeprefix("H-"), amount)


def _venue_symbol(symbol: str) -> str:
    return symbol.replace("-", "/")


_STATUS = {"open": "NEW", "closed": "FILLED", "canceled": "CANCELED", "rejected": "REJECTED"}


def _reply(order: VenueOrder) -> dict[str, Any]:
    status = _STATUS.get(order.status, order.status.upper())
    if status == "NEW" and order.filled > 0:
        status = "PARTIALLY_FILLED"
    return {
        "order_id": f"H-{order.id}",
        "client_id": order.client_order_id,
        "symbol": order.symbol.replace("/", "-"),
        "side": order.side.upper(),
        "status": status,
        "quantity": float(order.amount),
        "filled_quantity": float(order.filled),
        "avg_price": float(order.average) if order.average is not None else None,
        "created_at": order.timestamp,
    }


_ids = itertools.count()


def describe(*, client_ids: bool = True, lookups: bool = True) -> nija_guard.Broker:
    """The house broker described for nija-guard (what docs/adapters.md shows)."""
    cid: dict[str, Any] = {"client_order_id": "client_id"} if client_ids else {}
    return nija_guard.Broker(
        name=f"house-{next(_ids)}",
        orders={
            "place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2, **cid),
            "place_limit_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2, price=3, **cid),
        },
        holdings="get_positions",
        fetch_order=(lambda broker, order_id, symbol: broker.get_order(order_id))
        if lookups
        else None,
        fetch_order_by_client_id=(lambda broker, cid, symbol: broker.get_order_by_client_id(cid))
        if lookups
        else None,
        fetch_open_orders=lambda broker, symbol: broker.get_open_orders(symbol),
        cancel_order=lambda broker, order_id, symbol: broker.cancel_order(order_id),
        # The bot's own lookups and cancels through the proxy settle exits at once.
        observe={
            "get_order": "fetch_order",
            "get_order_by_client_id": "fetch_order",
            "get_open_orders": "fetch_open_orders",
            "cancel_order": "cancel_order",
        },
        markets={
            "BTC-USD": {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": 1},
            "ETH-USD": {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": 1},
        },
        errors={
            InsufficientBalance: "insufficient_funds",
            OrderRejected: "rejected",
            BrokerTimeout: "unknown",
        },
    )
