"""Non-ccxt brokers behind one interface, for the guarantee suite (tests/test_brokers.py).

- ``house``: a NIJA-style house broker class described with nija_guard.Broker;
- ``alpaca``: alpaca-py's real TradingClient against a loopback fake of
  Alpaca's trading REST API (the adapter guard() picks by itself).

Each case says how a bot on that broker sells, and how to look at the broker.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from fakes.alpaca_trading import BY_CLIENT_ID, FakeAlpaca
from house_broker import HouseBroker, describe


class BrokerCase:
    name = ""
    symbol = ""
    size = 1.0
    high = 60_000.0  # a limit sell price above the market: it rests

    def start(self) -> BrokerCase:
        return self

    def stop(self) -> None:
        pass

    def client(self) -> Any:
        raise NotImplementedError

    def guard_options(self) -> dict[str, Any]:
        return {}

    # -- how the bot sells ----------------------------------------------------------------
    def sell(self, ex: Any, amount: float) -> Any:
        raise NotImplementedError

    def sell_limit(self, ex: Any, amount: float, price: float) -> Any:
        raise NotImplementedError

    def cancel(self, ex: Any, order_id: str) -> None:
        raise NotImplementedError

    # -- reading replies -------------------------------------------------------------------
    def order_id(self, reply: Any) -> str:
        raise NotImplementedError

    def amount(self, reply: Any) -> float:
        """The quantity the order was sent for."""
        raise NotImplementedError

    def is_filled(self, reply: Any) -> bool:
        raise NotImplementedError

    # -- the broker's side ------------------------------------------------------------------
    def held(self) -> Decimal:
        raise NotImplementedError

    def sold(self) -> Decimal:
        return Decimal(str(self.size)) - self.held()

    def orders_sent(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def client_ids_sent(self) -> list[str | None]:
        raise NotImplementedError

    def set_price(self, price: float) -> None:
        raise NotImplementedError

    def fill(self, order_id: str, amount: float) -> None:
        raise NotImplementedError

    def ghost(self) -> None:
        """The next order executes; its reply is lost."""
        raise NotImplementedError

    def looked_up(self, client_order_id: str) -> bool:
        raise NotImplementedError


class House(BrokerCase):
    name = "house"
    symbol = "BTC-USD"

    def __init__(self) -> None:
        self.broker = HouseBroker({"BTC-USD": self.size})
        self.adapter = describe()

    def client(self) -> Any:
        return self.broker

    def guard_options(self) -> dict[str, Any]:
        return {"adapter": self.adapter}

    def sell(self, ex: Any, amount: float) -> Any:
        return ex.place_market_order(self.symbol, "SELL", amount)

    def sell_limit(self, ex: Any, amount: float, price: float) -> Any:
        return ex.place_limit_order(self.symbol, "SELL", amount, price)

    def cancel(self, ex: Any, order_id: str) -> None:
        ex.cancel_order(order_id)

    def order_id(self, reply: Any) -> str:
        return str(reply["order_id"])

    def amount(self, reply: Any) -> float:
        return float(reply["quantity"])

    def is_filled(self, reply: Any) -> bool:
        return bool(reply["status"] == "FILLED")

    def held(self) -> Decimal:
        return self.broker.held(self.symbol)

    def orders_sent(self) -> list[dict[str, Any]]:
        return self.broker.sent

    def client_ids_sent(self) -> list[str | None]:
        return [o["client_id"] for o in self.broker.sent]

    def set_price(self, price: float) -> None:
        self.broker.venue.set_price("BTC/USD", price)

    def fill(self, order_id: str, amount: float) -> None:
        self.broker.venue.fill(order_id.removeprefix("H-"), str(amount))

    def ghost(self) -> None:
        self.broker.fail_next("place_market_order", "timeout_after")

    def looked_up(self, client_order_id: str) -> bool:
        return ("client_id", client_order_id) in self.broker.lookups


class Alpaca(BrokerCase):
    """alpaca-py: a new order is answered "accepted"; its fill shows on the next GET."""

    name = "alpaca"
    symbol = "AAPL"
    size = 10.0
    high = 250.0

    def __init__(self) -> None:
        # A key of its own: guards of one account share their locks, across tests too.
        self.fake = FakeAlpaca(positions={"AAPL": self.size}, api_key=f"k-{uuid.uuid4().hex}")

    def start(self) -> BrokerCase:
        self.fake.start()
        return self

    def stop(self) -> None:
        self.fake.stop()

    def client(self) -> Any:
        return self.fake.client()

    def sell(self, ex: Any, amount: float) -> Any:
        return ex.submit_order(
            MarketOrderRequest(
                symbol=self.symbol, qty=amount, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
            )
        )

    def sell_limit(self, ex: Any, amount: float, price: float) -> Any:
        return ex.submit_order(
            LimitOrderRequest(
                symbol=self.symbol,
                qty=amount,
                side=OrderSide.SELL,
                limit_price=price,
                time_in_force=TimeInForce.DAY,
            )
        )

    def cancel(self, ex: Any, order_id: str) -> None:
        ex.cancel_order_by_id(order_id)

    def order_id(self, reply: Any) -> str:
        return str(reply.id)

    def amount(self, reply: Any) -> float:
        return float(reply.qty)

    def is_filled(self, reply: Any) -> bool:
        return bool(reply.status == OrderStatus.FILLED)

    def held(self) -> Decimal:
        return self.fake.holdings(self.symbol)

    def orders_sent(self) -> list[dict[str, Any]]:
        return list(self.fake.orders_sent())

    def client_ids_sent(self) -> list[str | None]:
        return [o.get("client_order_id") for o in self.fake.orders_sent()]

    def set_price(self, price: float) -> None:
        self.fake.set_price(self.symbol, price)

    def fill(self, order_id: str, amount: float) -> None:
        self.fake.fill(order_id, amount)

    def ghost(self) -> None:
        self.fake.inject("POST", "/v2/orders", "drop_after")

    def looked_up(self, client_order_id: str) -> bool:
        return any(
            r.params.get("client_order_id") == client_order_id
            for r in self.fake.requests_to("GET", BY_CLIENT_ID)
        )


CASES: dict[str, type[BrokerCase]] = {"house": House, "alpaca": Alpaca}
