"""Three real ccxt clients, each against its loopback fake, behind one interface.

The guarantee suite (tests/test_venues.py) runs the same scenarios on each:
binance spot, kraken spot (whose order replies carry no status or fill) and
okx linear swaps (positions, reduceOnly, close_position).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from fakes.binance_spot import FakeBinance
from fakes.kraken_spot import FakeKraken
from fakes.okx_swap import FakeOkx


class VenueCase:
    name = ""
    symbol = ""
    size = 1.0  # a full position: 1 BTC, or 10 contracts
    high = 60_000.0  # a limit exit price above the market (it rests)
    create = ("POST", "")  # the request that places an order
    fake: Any

    @property
    def exit(self) -> dict[str, Any]:
        """Params that make an order an exit. Spot: a sell is one. Swaps: a sell on a
        flat position opens a short, so a bot closing says reduceOnly (or uses close_position)."""
        return {}

    def client(self) -> Any:
        return self.fake.client()

    def async_client(self) -> Any:
        return self.fake.async_client()

    def start(self) -> VenueCase:
        self.fake.start()
        return self

    def stop(self) -> None:
        self.fake.stop()

    def orders_sent(self) -> list[dict[str, Any]]:
        """The orders that reached the exchange (one dict of fields per order)."""
        return [r.params for r in self.fake.requests_to(*self.create)]

    def client_id_on_the_wire(self, order: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def lookups(self, cid: str) -> list[Any]:
        raise NotImplementedError

    def held(self) -> Decimal:
        raise NotImplementedError

    def set_price(self, price: float) -> None:
        self.fake.venue.set_price(self.symbol, price)

    def fill(self, order_id: str, amount: float) -> None:
        self.fake.venue.fill(self.venue_id(order_id), str(amount))

    def venue_id(self, order_id: str) -> str:
        return order_id

    def ghost(self) -> None:
        """The next order executes, then the connection drops before the reply."""
        self.fake.inject(*self.create, "drop_after")

    def sold(self) -> Decimal:
        return Decimal(str(self.size)) - self.held()


class Binance(VenueCase):
    name = "binance"
    symbol = "BTC/USDT"
    create = ("POST", "/api/v3/order")

    def __init__(self) -> None:
        self.fake = FakeBinance(api_key=f"k-{uuid.uuid4().hex}", balances={"BTC": 1, "USDT": 0})

    def client_id_on_the_wire(self, order: dict[str, Any]) -> str | None:
        return order.get("newClientOrderId")

    def lookups(self, cid: str) -> list[Any]:
        return [
            r
            for r in self.fake.requests_to("GET", "/api/v3/order")
            if r.params.get("origClientOrderId") == cid
        ]

    def held(self) -> Decimal:
        return self.fake.venue.holdings("BTC")


class Kraken(VenueCase):
    name = "kraken"
    symbol = "BTC/USDT"
    create = ("POST", "/0/private/AddOrder")

    def __init__(self) -> None:
        self.fake = FakeKraken(api_key=f"k-{uuid.uuid4().hex}", balances={"BTC": 1, "USDT": 0})

    def client_id_on_the_wire(self, order: dict[str, Any]) -> str | None:
        return order.get("cl_ord_id")

    def lookups(self, cid: str) -> list[Any]:
        return [
            r
            for path in ("/0/private/OpenOrders", "/0/private/ClosedOrders")
            for r in self.fake.requests_to("POST", path)
            if r.params.get("cl_ord_id") == cid
        ]

    def held(self) -> Decimal:
        return self.fake.venue.holdings("BTC")

    def venue_id(self, order_id: str) -> str:
        """ccxt sees Kraken txids; the venue numbers its orders."""
        for order in self.fake.venue.all_orders():
            if self.fake.txid(order.id) == order_id:
                return str(order.id)
        raise KeyError(order_id)


class Okx(VenueCase):
    name = "okx"
    symbol = "BTC/USDT:USDT"
    size = 10.0  # contracts of 0.01 BTC
    create = ("POST", "/api/v5/trade/batch-orders")

    @property
    def exit(self) -> dict[str, Any]:
        return {"reduceOnly": True}

    def __init__(self) -> None:
        self.fake = FakeOkx(api_key=f"k-{uuid.uuid4().hex}")
        self.fake.venue.place(self.symbol, "buy", "market", "10")  # a long position to close

    def orders_sent(self) -> list[dict[str, Any]]:
        sent = []
        for request in self.fake.requests_to(*self.create):
            sent.extend(request.body if isinstance(request.body, list) else [request.params])
        closes = self.fake.requests_to("POST", "/api/v5/trade/close-position")
        return sent + [r.params for r in closes]

    def client_id_on_the_wire(self, order: dict[str, Any]) -> str | None:
        return order.get("clOrdId")

    def lookups(self, cid: str) -> list[Any]:
        return [
            r
            for r in self.fake.requests_to("GET", "/api/v5/trade/order")
            if r.params.get("clOrdId") == cid
        ]

    def held(self) -> Decimal:
        position = self.fake.venue.position(self.symbol)
        return abs(position.contracts) if position.side == "long" else Decimal(0)

    def fill(self, order_id: str, amount: float) -> None:
        self.fake.venue.fill(order_id, str(amount))


CASES = {"binance": Binance, "kraken": Kraken, "okx": Okx}
