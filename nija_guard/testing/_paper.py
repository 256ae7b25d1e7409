"""PaperExchange: a ccxt client for an in-memory venue.

It *is* a ``ccxt.Exchange`` subclass, so every helper (``create_market_sell_order``,
``create_stop_loss_order``, camelCase aliases, ``amount_to_precision``...) is
ccxt's own code, and errors are ccxt's classes. Only the endpoints are local.

Knobs, all settable after construction:

- ``latency``: seconds each call sleeps before it reaches the venue;
- ``venue.balance_lag``: how stale ``fetch_balance`` is (the broker's state sync
  trailing its matching engine);
- ``venue.market_fill_ratio``: market orders fill only this share (rest cancelled);
- resting limit, stop-loss and take-profit orders, filled by :meth:`set_price`
  or :meth:`fill`;
- ``venue.fee_in_base``: buys pay their fee in the base asset;
- :meth:`inject`: faults before or after the venue acted, e.g. a ghost order
  (accepted, reply lost) or a 5xx before the request arrived.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt
from ccxt.base.exchange import Exchange

from ._venue import FINAL_STATUSES, ZERO, Market, Venue, VenueOrder, VenueTrade, default_markets

__all__ = ["Fault", "PaperExchange"]


@dataclass
class Fault:
    """A fault for the next call(s) of ``method``.

    ``after=False``: the request never reached the venue (nothing happened),
    then ``error`` is raised. ``after=True``: the venue acted, then the reply was
    lost and ``error`` is raised: a ghost order when the method places one.
    """

    method: str
    error: BaseException
    after: bool = False
    times: int = 1


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


class PaperExchange(Exchange):  # type: ignore[misc]
    """A ccxt client whose exchange lives in memory. Thread-safe."""

    def describe(self) -> dict[str, Any]:
        return self.deep_extend(  # type: ignore[no-any-return]
            super().describe(),
            {
                "id": "paper",
                "name": "Paper Exchange",
                "countries": [],
                "rateLimit": 0,
                "pro": False,
                "precisionMode": ccxt.TICK_SIZE if hasattr(ccxt, "TICK_SIZE") else 4,
                "has": {
                    "spot": True,
                    "fetchMarkets": True,
                    "fetchCurrencies": False,
                    "fetchBalance": True,
                    "fetchTicker": True,
                    "fetchTickers": True,
                    "createOrder": True,
                    "createOrders": True,
                    "createMarketOrder": True,
                    "createLimitOrder": True,
                    "createStopLossOrder": True,
                    "createTakeProfitOrder": True,
                    "createTriggerOrder": True,
                    "createStopOrder": True,
                    "createStopLimitOrder": True,
                    "createStopMarketOrder": True,
                    "createPostOnlyOrder": True,
                    "createOrderWithTakeProfitAndStopLoss": True,
                    "createMarketOrderWithCost": True,
                    "createMarketSellOrderWithCost": True,
                    "createMarketBuyOrderWithCost": True,
                    "cancelOrder": True,
                    "editOrder": True,
                    "fetchOrder": True,
                    "fetchOrders": True,
                    "fetchOpenOrders": True,
                    "fetchClosedOrders": True,
                    "fetchCanceledOrders": True,
                    "fetchMyTrades": True,
                },
            },
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(dict(config or {}))
        if venue is None:
            free = {k: Decimal(str(v)) for k, v in (balances or {"USDT": 100_000}).items()}
            venue = Venue(
                markets=dict(markets) if markets else default_markets(symbols),
                free=free,
                clock=clock,
            )
        self.venue = venue
        self.latency = latency
        # Random ghost orders: each create_order is accepted but its reply lost
        # with this probability (deterministic for a given ``rng``).
        self.ghost_rate = 0.0
        self.rng = random.Random(0)
        self.calls: list[str] = []
        self.call_counts: collections.Counter[str] = collections.Counter()
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()

    # -- test controls ---------------------------------------------------------
    def inject(
        self, method: str, error: BaseException, *, after: bool = False, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (see :class:`Fault`)."""
        with self._fault_lock:
            self._faults.append(Fault(method, error, after, times))

    def ghost_next_order(self, times: int = 1) -> None:
        """The next order is accepted by the venue but the reply is lost (timeout)."""
        self.inject(
            "create_order", ccxt.RequestTimeout("paper: reply lost"), after=True, times=times
        )

    def set_price(self, symbol: str, price: object) -> None:
        self.venue.set_price(symbol, price)

    def fill(self, order_id: str, amount: object = None) -> dict[str, Any]:
        return self._order(self.venue.fill(order_id, amount))

    def holdings(self, asset: str) -> float:
        return float(self.venue.holdings(asset))

    def sell_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        """Every sell order the venue accepted (what double-sell counters read)."""
        return [o for o in self.venue.all_orders(symbol) if o.side == "sell"]

    def _take_fault(self, method: str, after: bool) -> BaseException | None:
        with self._fault_lock:
            for fault in self._faults:
                if fault.method == method and fault.after == after and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault.error
        return None

    def _call(self, method: str, action: Callable[[], Any]) -> Any:
        self.calls.append(method)
        self.call_counts[method] += 1
        if self.latency:
            time.sleep(self.latency)
        error = self._take_fault(method, after=False)
        if error is not None:
            raise error
        result = action()
        if method == "create_order" and self.ghost_rate and self.rng.random() < self.ghost_rate:
            raise ccxt.RequestTimeout("paper: reply lost (ghost order)")
        error = self._take_fault(method, after=True)
        if error is not None:
            raise error
        return result

    # -- markets -----------------------------------------------------------------
    def fetch_markets(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = []
        for m in self.venue.markets.values():
            result.append(
                {
                    "id": m.id,
                    "symbol": m.symbol,
                    "base": m.base,
                    "quote": m.quote,
                    "baseId": m.base,
                    "quoteId": m.quote,
                    "settle": None,
                    "settleId": None,
                    "type": "spot",
                    "spot": True,
                    "margin": False,
                    "swap": False,
                    "future": False,
                    "option": False,
                    "active": True,
                    "contract": False,
                    "linear": None,
                    "inverse": None,
                    "contractSize": None,
                    "expiry": None,
                    "expiryDatetime": None,
                    "strike": None,
                    "optionType": None,
                    "taker": float(self.venue.fee_rate),
                    "maker": float(self.venue.fee_rate),
                    "feeSide": "get",
                    "precision": {"amount": float(m.amount_step), "price": float(m.price_step)},
                    "limits": {
                        "amount": {"min": float(m.min_amount), "max": None},
                        "price": {"min": None, "max": None},
                        "cost": {"min": float(m.min_cost), "max": None},
                        "leverage": {"min": None, "max": None},
                    },
                    "created": None,
                    "info": {},
                }
            )
        return result

    def _ticker(self, symbol: str) -> dict[str, Any]:
        market = self.venue.market(symbol)
        now = self.venue.now_ms()
        price = float(market.price)
        return self.safe_ticker(  # type: ignore[no-any-return]
            {
                "symbol": symbol,
                "timestamp": now,
                "datetime": self.iso8601(now),
                "last": price,
                "close": price,
                "bid": price,
                "ask": price,
                "info": {},
            }
        )

    def fetch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("fetch_ticker", lambda: self._ticker(symbol))  # type: ignore[no-any-return]

    def fetch_tickers(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        def action() -> dict[str, Any]:
            with self.venue.lock:
                names = list(symbols) if symbols else list(self.venue.markets)
                return {name: self._ticker(name) for name in names}

        return self._call("fetch_tickers", action)  # type: ignore[no-any-return]

    # -- account -----------------------------------------------------------------
    def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        def action() -> dict[str, Any]:
            snap = self.venue.balance()
            result: dict[str, Any] = {
                "info": {},
                "timestamp": snap.timestamp,
                "datetime": self.iso8601(snap.timestamp),
                "free": {},
                "used": {},
                "total": {},
            }
            for asset in sorted(set(snap.free) | set(snap.used)):
                free_d, used_d = snap.free.get(asset, ZERO), snap.used.get(asset, ZERO)
                if not free_d and not used_d:
                    continue  # like most venues, empty balances are left out
                entry = {
                    "free": float(free_d),
                    "used": float(used_d),
                    "total": float(free_d + used_d),
                }
                result[asset] = entry
                for key in ("free", "used", "total"):
                    result[key][asset] = entry[key]
            return result

        return self._call("fetch_balance", action)  # type: ignore[no-any-return]

    # -- orders ------------------------------------------------------------------
    def _order(self, o: VenueOrder) -> dict[str, Any]:
        with self.venue.lock:
            return {
                "id": o.id,
                "clientOrderId": o.client_order_id,
                "timestamp": o.timestamp,
                "datetime": self.iso8601(o.timestamp),
                "lastTradeTimestamp": o.last_trade_timestamp,
                "lastUpdateTimestamp": o.updated_timestamp or o.timestamp,
                "symbol": o.symbol,
                "type": o.type,
                "timeInForce": "IOC" if o.type == "market" else "GTC",
                "postOnly": False,
                "reduceOnly": o.reduce_only,
                "side": o.side,
                "price": _f(o.price) if o.price is not None else _f(o.average),
                "triggerPrice": _f(o.trigger_price),
                "stopPrice": _f(o.trigger_price),
                "amount": float(o.amount),
                "filled": float(o.filled),
                "remaining": float(o.remaining) if o.status == "open" else 0.0,
                "cost": float(o.cost),
                "average": _f(o.average),
                "status": o.status,
                "fee": {"cost": float(o.fee), "currency": o.fee_currency},
                "fees": [{"cost": float(o.fee), "currency": o.fee_currency}],
                "trades": [],
                "info": {"venue": "paper", "status": o.status},
            }

    def _trade(self, t: VenueTrade) -> dict[str, Any]:
        return {
            "id": t.id,
            "order": t.order_id,
            "timestamp": t.timestamp,
            "datetime": self.iso8601(t.timestamp),
            "symbol": t.symbol,
            "type": None,
            "side": t.side,
            "takerOrMaker": "taker",
            "price": float(t.price),
            "amount": float(t.amount),
            "cost": float(t.amount * t.price),
            "fee": {"cost": float(t.fee), "currency": t.fee_currency},
            "fees": [{"cost": float(t.fee), "currency": t.fee_currency}],
            "info": {},
        }

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = dict(params or {})

        def action() -> dict[str, Any]:
            client_id = params.get("clientOrderId") or params.get("newClientOrderId")
            trigger, direction = None, None
            for key, dflt in (
                ("stopLossPrice", "down"),
                ("takeProfitPrice", "up"),
                ("triggerPrice", None),
                ("stopPrice", None),
            ):
                if params.get(key) is not None:
                    trigger, direction = params[key], dflt
                    break
            order = self.venue.place(
                symbol,
                side,
                type,
                amount,
                price,
                client_order_id=client_id,
                trigger_price=trigger,
                trigger_direction=direction,
                reduce_only=bool(params.get("reduceOnly")),
            )
            return self._order(order)

        return self._call("create_order", action)  # type: ignore[no-any-return]

    def create_market_order_with_cost(
        self, symbol: str, side: str, cost: float, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A market order sized in quote currency, filled as its amount at the market price."""
        market = self.venue.market(symbol)
        amount = (Decimal(str(cost)) / market.price).quantize(
            market.amount_step, rounding="ROUND_DOWN"
        )
        return self.create_order(symbol, "market", side, float(amount), None, params)

    def create_market_sell_order_with_cost(
        self, symbol: str, cost: float, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.create_market_order_with_cost(symbol, "sell", cost, params)

    def create_market_buy_order_with_cost(
        self, symbol: str, cost: float, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.create_market_order_with_cost(symbol, "buy", cost, params)

    def create_orders(
        self, orders: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        results = []
        for req in orders:
            try:
                results.append(
                    self.create_order(
                        req["symbol"],
                        req["type"],
                        req["side"],
                        req["amount"],
                        req.get("price"),
                        self.extend(params or {}, req.get("params") or {}),
                    )
                )
            except ccxt.ExchangeError as exc:
                # Like most venues, a batch reports each rejection in place.
                results.append(self.safe_order({"info": {"error": str(exc)}, "status": "rejected"}))
        return results

    def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._call("cancel_order", lambda: self._order(self.venue.cancel(id)))  # type: ignore[no-any-return]

    def fetch_order(
        self, id: str | None, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        params = params or {}
        client_id = params.get("clientOrderId") or params.get("origClientOrderId")

        def action() -> dict[str, Any]:
            if id is None and client_id is None:
                raise ccxt.ArgumentsRequired("paper fetchOrder() needs an id or a clientOrderId")
            return self._order(self.venue.get(id, client_id))

        return self._call("fetch_order", action)  # type: ignore[no-any-return]

    def _orders(
        self,
        method: str,
        pick: Callable[[VenueOrder], bool],
        symbol: str | None,
        since: int | None,
        limit: int | None,
    ) -> list[dict[str, Any]]:
        def action() -> list[dict[str, Any]]:
            found = [
                self._order(o)
                for o in self.venue.all_orders(symbol)
                if pick(o) and (since is None or o.timestamp >= since)
            ]
            return found[-limit:] if limit else found

        return self._call(method, action)  # type: ignore[no-any-return]

    def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return self._orders("fetch_open_orders", lambda o: not o.is_final, symbol, since, limit)

    def fetch_closed_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return self._orders(
            "fetch_closed_orders", lambda o: o.status == "closed", symbol, since, limit
        )

    def fetch_canceled_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return self._orders(
            "fetch_canceled_orders", lambda o: o.status == "canceled", symbol, since, limit
        )

    def fetch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return self._orders("fetch_orders", lambda o: True, symbol, since, limit)

    def fetch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        def action() -> list[dict[str, Any]]:
            found = [self._trade(t) for t in self.venue.my_trades(symbol, since)]
            return found[-limit:] if limit else found

        return self._call("fetch_my_trades", action)  # type: ignore[no-any-return]

    def edit_order(
        self,
        id: str,
        symbol: str,
        type: str,
        side: str,
        amount: float | None = None,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Cancel-replace, as many venues implement an edit.
        def action() -> dict[str, Any]:
            with self.venue.lock:
                old = self.venue.cancel(id)
                qty = amount if amount is not None else float(old.remaining)
                p = dict(params or {})
                order = self.venue.place(
                    symbol,
                    side,
                    type,
                    qty,
                    price if price is not None else _f(old.price),
                    client_order_id=p.get("clientOrderId"),
                )
                return self._order(order)

        return self._call("edit_order", action)  # type: ignore[no-any-return]

    def close(self) -> None:
        return None


FINAL = FINAL_STATUSES
