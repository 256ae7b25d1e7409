"""The seed-style baseline: the way the seed guarded exits, for comparison only.

A ``wrapt.ObjectProxy`` with ONE global lock held around every sell. Inside
it: a ``fetch_balance()``, the amount clamped to the free balance of the base
asset and rounded with ``amount_to_precision``, ``InsufficientFunds`` when
nothing is held, then the order. No per-symbol locks, no client order ids, no
settlement tracking, no state kept between exits. Buys pass straight through.

``SeedGuard`` wraps a sync ccxt-style client, ``AsyncSeedGuard`` an async one
(its global lock is an ``asyncio.Lock``, one per event loop: a thread lock
would block the loop).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import ccxt
import wrapt

__all__ = ["AsyncSeedGuard", "SeedGuard"]

# The one lock every sell of every symbol (and every guarded client) waits on.
SELL_LOCK = threading.Lock()
_ASYNC_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _clamp(client: Any, symbol: str, amount: float, balance: Any) -> float:
    """``min(amount, free)`` rounded down to the exchange's precision; refused when none held."""
    base = client.market(symbol)["base"]
    entry = balance.get(base) or {}
    free = float(entry.get("free") or 0.0)
    if free <= 0:
        raise ccxt.InsufficientFunds(f"seed guard: no {base} held, nothing to sell")
    return float(client.amount_to_precision(symbol, min(float(amount), free)))


class SeedGuard(wrapt.ObjectProxy):  # type: ignore[misc]
    """Sync clients: every sell runs under :data:`SELL_LOCK`."""

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        client = self.__wrapped__
        if str(side).lower() != "sell":
            return client.create_order(symbol, type, side, amount, price, params or {})
        with SELL_LOCK:
            balance = client.fetch_balance()
            amount = _clamp(client, symbol, amount, balance)
            return client.create_order(symbol, type, "sell", amount, price, params or {})

    def create_market_sell_order(
        self, symbol: str, amount: float, params: dict[str, Any] | None = None
    ) -> Any:
        return self.create_order(symbol, "market", "sell", amount, None, params)

    def create_limit_sell_order(
        self, symbol: str, amount: float, price: float, params: dict[str, Any] | None = None
    ) -> Any:
        return self.create_order(symbol, "limit", "sell", amount, price, params)

    def create_market_order(
        self,
        symbol: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return self.create_order(symbol, "market", side, amount, price, params)

    def create_limit_order(
        self,
        symbol: str,
        side: str,
        amount: float,
        price: float,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return self.create_order(symbol, "limit", side, amount, price, params)

    # ccxt's camelCase names, so they cannot bypass the lock
    createOrder = create_order
    createMarketSellOrder = create_market_sell_order
    createLimitSellOrder = create_limit_sell_order
    createMarketOrder = create_market_order
    createLimitOrder = create_limit_order


def _async_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _ASYNC_LOCKS.get(loop)
    if lock is None:
        lock = _ASYNC_LOCKS[loop] = asyncio.Lock()
    return lock


class AsyncSeedGuard(wrapt.ObjectProxy):  # type: ignore[misc]
    """Async clients (``ccxt.async_support``): every sell runs under one ``asyncio.Lock``."""

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        client = self.__wrapped__
        if str(side).lower() != "sell":
            return await client.create_order(symbol, type, side, amount, price, params or {})
        async with _async_lock():
            balance = await client.fetch_balance()
            amount = _clamp(client, symbol, amount, balance)
            return await client.create_order(symbol, type, "sell", amount, price, params or {})

    async def create_market_sell_order(
        self, symbol: str, amount: float, params: dict[str, Any] | None = None
    ) -> Any:
        return await self.create_order(symbol, "market", "sell", amount, None, params)

    async def create_limit_sell_order(
        self, symbol: str, amount: float, price: float, params: dict[str, Any] | None = None
    ) -> Any:
        return await self.create_order(symbol, "limit", "sell", amount, price, params)

    async def create_market_order(
        self,
        symbol: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return await self.create_order(symbol, "market", side, amount, price, params)

    async def create_limit_order(
        self,
        symbol: str,
        side: str,
        amount: float,
        price: float,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return await self.create_order(symbol, "limit", side, amount, price, params)

    createOrder = create_order
    createMarketSellOrder = create_market_sell_order
    createLimitSellOrder = create_limit_sell_order
    createMarketOrder = create_market_order
    createLimitOrder = create_limit_order
