"""A lean ccxt-like exchange for memory runs: it keeps nothing per order.

What it has is what the guard asks of a spot ccxt client (checked against
nija_guard's adapter and engine): ``id``, ``apiKey``, ``precisionMode``,
``markets`` (precision and limits per symbol), ``load_markets``,
``fetch_balance`` (a lazy mapping answering every asset), ``fetch_open_orders``
(adoption after a restart: none here), ``fetch_ticker`` (the minimum-cost check
needs a price), ``create_order`` and ``create_market_sell_order`` (answered at
once with a closed, filled order that is not kept), and, for the seed
baseline, ``market`` and ``amount_to_precision``. ``calls`` counts calls by
method. Anything else it is asked raises ``AttributeError``: a memory run
tells what the guard needs.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any

__all__ = ["AsyncStubExchange", "StubExchange"]

PRICE = 100.0
TICK_SIZE = 4  # ccxt.TICK_SIZE: precision given as step sizes
_PRECISION = {"amount": 0.0001, "price": 0.01}
_LIMITS = {
    "amount": {"min": 0.0001, "max": None},
    "price": {"min": None, "max": None},
    "cost": {"min": 1.0, "max": None},
}
_STEP = Decimal("0.0001")
_HELD = {"free": 1e12, "used": 0.0, "total": 1e12}


class _Balance(Mapping[str, Any]):
    """A balance that holds 1e12 of every asset, built on demand."""

    def __init__(self, timestamp: int) -> None:
        self._timestamp = timestamp

    def __getitem__(self, key: str) -> Any:
        if key == "timestamp":
            return self._timestamp
        if key == "info":
            return {}
        if key in ("free", "used", "total"):
            return _Column(key)
        return _HELD

    def __iter__(self) -> Iterator[str]:
        return iter(("info", "timestamp"))

    def __len__(self) -> int:
        return 2


class _Column(Mapping[str, float]):
    def __init__(self, key: str) -> None:
        self._key = key

    def __getitem__(self, asset: str) -> float:
        return float(_HELD[self._key])

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class StubExchange:
    """Spot markets ``S0/USDT`` .. ``S{n-1}/USDT``, at price 100, every order filled at once."""

    id = "stub"
    precisionMode = TICK_SIZE

    def __init__(self, symbols: int, api_key: str = "", lazy_balance: bool = True) -> None:
        self.apiKey = api_key
        self.symbol_count = symbols
        # lazy: a balance answering every asset, built on demand (100,000 symbols);
        # else a plain dict of this stub's assets, the shape a ccxt client returns.
        self.lazy_balance = lazy_balance
        self.markets: dict[str, dict[str, Any]] | None = None
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)

    def load_markets(self, reload: bool = False, params: Any = None) -> dict[str, Any]:
        self.calls["load_markets"] += 1
        if self.markets is None or reload:
            self.markets = {}
            for i in range(self.symbol_count):
                symbol = f"S{i}/USDT"
                self.markets[symbol] = {
                    "id": f"S{i}USDT",
                    "symbol": symbol,
                    "base": f"S{i}",
                    "quote": "USDT",
                    "type": "spot",
                    "spot": True,
                    "contract": False,
                    "taker": 0.001,
                    "maker": 0.001,
                    "feeSide": "get",
                    "precision": _PRECISION,
                    "limits": _LIMITS,
                }
        return self.markets

    def market(self, symbol: str) -> dict[str, Any]:
        return (self.markets or {})[symbol]

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return str(Decimal(str(amount)).quantize(_STEP, rounding=ROUND_DOWN))

    def fetch_balance(self, params: Any = None) -> Mapping[str, Any]:
        self.calls["fetch_balance"] += 1
        if self.lazy_balance:
            return _Balance(int(time.time() * 1000))
        balance: dict[str, Any] = {"info": {}, "timestamp": int(time.time() * 1000)}
        for i in range(self.symbol_count):
            balance[f"S{i}"] = dict(_HELD)
        return balance

    def fetch_open_orders(
        self, symbol: str | None = None, since: Any = None, limit: Any = None, params: Any = None
    ) -> list[dict[str, Any]]:
        self.calls["fetch_open_orders"] += 1
        return []

    def fetch_ticker(self, symbol: str, params: Any = None) -> dict[str, Any]:
        self.calls["fetch_ticker"] += 1
        return {"symbol": symbol, "last": PRICE, "bid": PRICE, "ask": PRICE, "close": PRICE}

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.calls["create_order"] += 1
        now = int(time.time() * 1000)
        amount = float(amount)
        return {
            "id": str(next(self._ids)),
            "clientOrderId": (params or {}).get("clientOrderId"),
            "timestamp": now,
            "lastTradeTimestamp": now,
            "lastUpdateTimestamp": now,
            "symbol": symbol,
            "type": type,
            "side": side,
            "price": PRICE,
            "average": PRICE,
            "amount": amount,
            "filled": amount,
            "remaining": 0.0,
            "cost": amount * PRICE,
            "status": "closed",
            "fee": None,
            "fees": [],
            "trades": [],
            "info": {},
        }

    def create_market_sell_order(
        self, symbol: str, amount: float, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.create_order(symbol, "market", "sell", amount, None, params)


class AsyncStubExchange(StubExchange):
    """The same stub with ccxt.async_support's coroutine methods."""

    async def load_markets(  # type: ignore[override]
        self, reload: bool = False, params: Any = None
    ) -> dict[str, Any]:
        return StubExchange.load_markets(self, reload, params)

    async def fetch_balance(self, params: Any = None) -> Mapping[str, Any]:  # type: ignore[override]
        return StubExchange.fetch_balance(self, params)

    async def fetch_open_orders(  # type: ignore[override]
        self, symbol: str | None = None, since: Any = None, limit: Any = None, params: Any = None
    ) -> list[dict[str, Any]]:
        return StubExchange.fetch_open_orders(self, symbol, since, limit, params)

    async def fetch_ticker(self, symbol: str, params: Any = None) -> dict[str, Any]:  # type: ignore[override]
        return StubExchange.fetch_ticker(self, symbol, params)

    async def create_order(  # type: ignore[override]
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return StubExchange.create_order(self, symbol, type, side, amount, price, params)

    async def create_market_sell_order(  # type: ignore[override]
        self, symbol: str, amount: float, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.create_order(symbol, "market", "sell", amount, None, params)
