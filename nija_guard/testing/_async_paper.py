"""AsyncPaperExchange: the paper exchange as a ``ccxt.async_support`` client.

Every endpoint is a coroutine that awaits (``latency``, and the ``interrupt``
test hook) before and after the venue acts, the way a network call would, so
a task can be cancelled exactly there. With ``stream=True`` it also speaks
ccxt.pro's ``watch_orders``: order updates pushed from the venue.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ccxt.async_support.base.exchange import Exchange as AsyncExchange

from ._paper import PaperExchange
from ._venue import Market, Venue, VenueOrder

__all__ = ["AsyncPaperExchange"]

# The endpoints the async client forwards to the sync paper client's logic.
_ENDPOINTS = (
    "fetch_ticker",
    "fetch_tickers",
    "fetch_balance",
    "create_order",
    "create_orders",
    "cancel_order",
    "fetch_order",
    "fetch_open_orders",
    "fetch_closed_orders",
    "fetch_canceled_orders",
    "fetch_orders",
    "fetch_my_trades",
    "edit_order",
    "create_market_order_with_cost",
    "create_market_sell_order_with_cost",
    "create_market_buy_order_with_cost",
)

Interrupt = Callable[[int, str, str], Awaitable[None]]


class AsyncPaperExchange(AsyncExchange):  # type: ignore[misc]
    """An async ccxt client over an in-memory venue. Safe for tasks and threads."""

    def describe(self) -> dict[str, Any]:
        core_has = PaperExchange.describe(PaperExchange.__new__(PaperExchange))["has"]
        return self.deep_extend(  # type: ignore[no-any-return]
            super().describe(),
            {"id": "paper", "name": "Paper Exchange (async)", "rateLimit": 0, "has": core_has},
        )

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        balances: Mapping[str, object] | None = None,
        symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT"),
        markets: Mapping[str, Market] | None = None,
        venue: Venue | None = None,
        latency: float = 0.0,
        stream: bool = False,
    ) -> None:
        super().__init__(dict(config or {}))
        self.core = PaperExchange(
            config, balances=balances, symbols=symbols, markets=markets, venue=venue
        )
        self.venue = self.core.venue
        self.latency = latency
        self.interrupt: Interrupt | None = None
        self.calls = self.core.calls
        self.call_counts = self.core.call_counts
        self.numbered_calls = 0
        self.stream = stream
        self._updates: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []
        if stream:
            has: dict[str, Any] = dict(getattr(self, "has", None) or {})
            has["watchOrders"] = True
            self.has = has
            self.venue.listeners.append(self._push)

    # -- test controls (delegated) ------------------------------------------------
    def inject(
        self, method: str, error: BaseException, *, after: bool = False, times: int = 1
    ) -> None:
        self.core.inject(method, error, after=after, times=times)

    def ghost_next_order(self, times: int = 1) -> None:
        self.core.ghost_next_order(times)

    def set_price(self, symbol: str, price: object) -> None:
        self.venue.set_price(symbol, price)

    def fill(self, order_id: str, amount: object = None) -> dict[str, Any]:
        return self.core.fill(order_id, amount)

    def holdings(self, asset: str) -> float:
        return self.core.holdings(asset)

    def sell_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return self.core.sell_orders(symbol)

    # -- the endpoints -----------------------------------------------------------------
    async def _pause(self, number: int, method: str, phase: str) -> None:
        if self.latency:
            await asyncio.sleep(self.latency / 2)
        if self.interrupt is not None:
            await self.interrupt(number, method, phase)

    async def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.numbered_calls += 1
        number = self.numbered_calls
        await self._pause(number, method, "before")
        try:
            result = getattr(self.core, method)(*args, **kwargs)
        finally:
            # The reply, or the error, travels back over an await too.
            await self._pause(number, method, "after")
        return result

    async def fetch_markets(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.core.fetch_markets(params)

    async def fetch_currencies(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self.stream and self._push in self.venue.listeners:
            self.venue.listeners.remove(self._push)
        await super().close()

    # -- ccxt.pro ------------------------------------------------------------------------
    def _push(self, order: VenueOrder) -> None:
        if not self._updates:
            return
        update = self.core._order(order)
        for loop, queue in list(self._updates):
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, update)

    async def create_order_ws(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """ccxt.pro's order entry over the stream (here: the same venue call)."""
        if not self.stream:
            raise NotImplementedError("AsyncPaperExchange(stream=True) speaks create_order_ws")
        order: dict[str, Any] = await self._forward(
            "create_order", symbol, type, side, amount, price, params
        )
        return order

    async def watch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Waits for order updates, then returns every update since the last call."""
        if not self.stream:
            raise NotImplementedError("AsyncPaperExchange(stream=True) speaks watch_orders")
        loop = asyncio.get_running_loop()
        entry = next(((lp, q) for lp, q in self._updates if lp is loop), None)
        if entry is None:
            entry = (loop, asyncio.Queue())
            self._updates.append(entry)
        queue = entry[1]
        updates = [await queue.get()]
        while not queue.empty():
            updates.append(queue.get_nowait())
        return [u for u in updates if symbol is None or u["symbol"] == symbol]


def _endpoint(name: str) -> Callable[..., Any]:
    # Same name and signature as the sync method: clients (and the guard) read them.
    @functools.wraps(getattr(PaperExchange, name))
    async def method(self: AsyncPaperExchange, *args: Any, **kwargs: Any) -> Any:
        return await self._forward(name, *args, **kwargs)

    return method


for _name in _ENDPOINTS:
    setattr(AsyncPaperExchange, _name, _endpoint(_name))
