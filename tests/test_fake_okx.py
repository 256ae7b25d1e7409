"""The loopback OKX swap fake, driven by a real, unmodified ccxt.okx client.

These tests pin three things: that the fake speaks OKX's v5 protocol the way
ccxt.okx expects it; how ccxt.okx represents swap markets, positions and
orders (contracts, not base units); and how ccxt.okx turns OKX's replies and
transport failures into ccxt exceptions (what nija_guard has to classify).
The venue behind it (fakes.derivatives) is tested directly at the end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import Clock
from fakes.derivatives import DerivativesVenue, SwapMarket, VenueError, default_swap_markets
from fakes.okx_swap import FakeOkx

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
V5 = "/api/v5/"
BATCH = V5 + "trade/batch-orders"
ORDER = V5 + "trade/order"
CANCEL = V5 + "trade/cancel-order"
CLOSE = V5 + "trade/close-position"
POSITIONS = V5 + "account/positions"


@pytest.fixture
def venue(clock: Clock) -> DerivativesVenue:
    return DerivativesVenue(markets=default_swap_markets(), cash=Decimal(100_000), clock=clock)


@pytest.fixture
def fake(venue: DerivativesVenue) -> Iterator[FakeOkx]:
    with FakeOkx(venue) as server:
        yield server
        # Every request went to a path the fake serves, and the fake never crashed.
        assert server.unknown == []
        assert server.server_errors == []
        assert server.pending_faults() == []


@pytest.fixture
def ex(fake: FakeOkx) -> ccxt.okx:
    client = fake.client()
    client.load_markets()
    return client


def sent(fake: FakeOkx, method: str, path: str) -> Any:
    """The JSON body (POST) or query params (GET) of the last request to ``method path``."""
    request = fake.requests_to(method, path)[-1]
    return request.body if method == "POST" else request.params


def contracts(fake: FakeOkx, symbol: str = BTC) -> Decimal:
    return fake.venue.position(symbol).contracts


# -- markets, balance, tickers ------------------------------------------------------------


def test_load_markets_shows_linear_swaps_in_contracts(fake: FakeOkx) -> None:
    markets = fake.client().load_markets()
    assert set(markets) == {BTC, ETH}
    btc = markets[BTC]
    assert (btc["id"], btc["base"], btc["quote"], btc["settle"]) == (
        "BTC-USDT-SWAP",
        "BTC",
        "USDT",
        "USDT",
    )
    assert btc["type"] == "swap" and btc["swap"] and btc["contract"] and btc["linear"]
    assert btc["inverse"] is False and btc["active"] is True
    # Amounts are contracts: 1 contract of 0.01 BTC, in steps of 1 contract.
    assert btc["contractSize"] == 0.01
    assert btc["precision"] == {"amount": 1, "price": 0.1}
    assert btc["limits"]["amount"]["min"] == 1
    assert btc["limits"]["leverage"]["max"] == 100
    eth = markets[ETH]
    assert eth["contractSize"] == 0.1 and eth["precision"]["price"] == 0.01
    # ccxt.okx asks for currencies (private, as the client has keys), then SWAP instruments.
    assert [(r.method, r.path, r.params, r.signed) for r in fake.requests] == [
        ("GET", V5 + "asset/currencies", {}, True),
        ("GET", V5 + "public/instruments", {"instType": "SWAP"}, False),
    ]


def test_fetch_balance_is_the_usdt_margin_account(
    fake: FakeOkx, ex: ccxt.okx, clock: Clock
) -> None:
    assert ex.fetch_balance()["USDT"] == {"free": 100_000, "used": 0, "total": 100_000}
    ex.create_order(BTC, "market", "buy", 10)  # 0.1 BTC at 50,000: 5,000 USDT notional
    balance = ex.fetch_balance()
    # Taker fee 0.05% = 2.5 USDT; initial margin at 10x = 500 USDT.
    assert balance["USDT"] == {"free": 99_497.5, "used": 500, "total": 99_997.5}
    assert balance["timestamp"] == int(clock.now * 1000)
    fake.venue.set_price(BTC, 51_000)  # +100 USDT unrealized, margin 510
    balance = ex.fetch_balance()
    assert balance["USDT"] == {"free": 99_587.5, "used": 510, "total": 100_097.5}
    assert balance["info"]["data"][0]["details"][0]["upl"] == "100"


def test_fetch_ticker_and_mark_price_use_the_venue_price(fake: FakeOkx, ex: ccxt.okx) -> None:
    fake.venue.set_price(ETH, "3123.45")
    ticker = ex.fetch_ticker(ETH)
    assert ticker["last"] == ticker["bid"] == ticker["ask"] == 3123.45
    assert sent(fake, "GET", V5 + "market/ticker") == {"instId": "ETH-USDT-SWAP"}
    assert ex.fetch_mark_price(ETH)["markPrice"] == 3123.45
    assert [level[:2] for level in ex.fetch_order_book(BTC)["bids"]] == [[50000.0, 1000.0]]
    assert ex.fetch_time() == 1_700_000_000_000


def test_single_order_endpoint_and_position_mode(fake: FakeOkx) -> None:
    """With options createOrder = privatePostTradeOrder, ccxt.okx posts one object."""
    client = fake.client(options={"createOrder": "privatePostTradeOrder"})
    placed = client.create_order(BTC, "market", "buy", 2, None, {"clientOrderId": "single1"})
    body = sent(fake, "POST", ORDER)
    assert body == {
        "instId": "BTC-USDT-SWAP",
        "side": "buy",
        "ordType": "market",
        "sz": "2",
        "tdMode": "cross",
        "clOrdId": "single1",
    }
    assert placed["id"] == fake.venue.get(client_order_id="single1").id
    assert contracts(fake) == 2
    assert client.fetch_position_mode(BTC)["hedged"] is False  # account/config: net_mode
    assert client.fetch_leverage(BTC)["longLeverage"] == 10


# -- positions -------------------------------------------------------------------------------------


def test_open_reduce_and_close_a_long(fake: FakeOkx, ex: ccxt.okx, clock: Clock) -> None:
    opened = ex.create_order(BTC, "market", "buy", 5)
    # OKX's reply to an order is an acknowledgement: an id, no state, no fill.
    assert opened["id"] and opened["status"] is None and opened["filled"] is None
    assert opened["info"]["sCode"] == "0"
    body = sent(fake, "POST", BATCH)  # ccxt.okx places orders through batch-orders
    assert body == [
        {
            "instId": "BTC-USDT-SWAP",
            "side": "buy",
            "ordType": "market",
            "sz": "5",
            "tdMode": "cross",
            "clOrdId": body[0]["clOrdId"],
            "tag": "6b9ad766b55dBCDE",
        }
    ]
    # ccxt makes up a client id: its broker id and 16 hex digits.
    assert body[0]["clOrdId"].startswith("6b9ad766b55dBCDE") and len(body[0]["clOrdId"]) == 32

    [position] = ex.fetch_positions()
    assert position["symbol"] == BTC and position["side"] == "long"
    assert position["contracts"] == 5 and position["contractSize"] == 0.01
    assert position["entryPrice"] == 50_000 and position["notional"] == 2_500
    assert position["marginMode"] == "cross" and position["hedged"] is False
    assert position["timestamp"] == int(clock.now * 1000)
    assert position["info"]["pos"] == "5" and position["info"]["posSide"] == "net"

    clock.now += 60
    fake.venue.set_price(BTC, 52_000)
    reduce = ex.create_order(BTC, "market", "sell", 2, None, {"reduceOnly": True})
    assert sent(fake, "POST", BATCH)[0]["reduceOnly"] is True
    assert ex.fetch_order(reduce["id"], BTC)["reduceOnly"] is True
    [position] = ex.fetch_positions([BTC])
    assert sent(fake, "GET", POSITIONS) == {"instId": "BTC-USDT-SWAP"}
    assert position["contracts"] == 3 and position["side"] == "long"
    assert position["unrealizedPnl"] == 60  # 3 contracts * 0.01 * (52,000 - 50,000)
    # OKX's realizedPnl includes fees: 2 * 0.01 * 2,000 = 40, less 1.25 + 0.52 fees.
    assert position["realizedPnl"] == pytest.approx(40 - 1.25 - 0.52)
    assert fake.venue.position(BTC).realized_pnl == 40

    closed = ex.close_position(BTC)
    assert sent(fake, "POST", CLOSE) == {"instId": "BTC-USDT-SWAP", "mgnMode": "cross"}
    # close-position answers instId/posSide only: ccxt returns an order without an id.
    assert closed["id"] is None and closed["status"] is None
    assert closed["info"] == {"clOrdId": "", "instId": "BTC-USDT-SWAP", "posSide": "net", "tag": ""}
    assert ex.fetch_positions() == []  # OKX lists open positions only
    assert contracts(fake) == 0
    with pytest.raises(ccxt.NullResponse):
        ex.fetch_position(BTC)  # ccxt.okx's answer for a flat position
    # What close_position placed: a reduce-only market order for the whole position.
    [last] = [o for o in fake.venue.all_orders(BTC) if o.close_position]
    assert (last.side, last.type, last.amount, last.reduce_only) == ("sell", "market", 3, True)
    assert last.status == "filled"


def test_a_second_close_position_is_an_error_and_never_opens_a_short(
    fake: FakeOkx, ex: ccxt.okx
) -> None:
    ex.create_order(BTC, "market", "buy", 4)
    ex.close_position(BTC)
    with pytest.raises(ccxt.ExchangeError, match="51023") as raised:
        ex.close_position(BTC)
    assert type(raised.value) is ccxt.ExchangeError  # ccxt.okx does not map 51023
    assert contracts(fake) == 0 and fake.venue.positions() == []
    assert [r.status for r in fake.requests_to("POST", CLOSE)] == [200, 200]
    # With a client order id: the order close_position places carries it.
    ex.create_order(BTC, "market", "sell", 2)
    closed = ex.close_position(BTC, None, {"clientOrderId": "flatten1"})
    assert closed["clientOrderId"] == "flatten1"
    assert fake.venue.get(client_order_id="flatten1").side == "buy"
    assert ex.fetch_order(None, BTC, {"clientOrderId": "flatten1"})["status"] == "closed"
    assert contracts(fake) == 0


def test_close_position_refuses_while_reduce_only_orders_rest(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.create_order(BTC, "market", "buy", 4)
    take_profit = ex.create_order(BTC, "limit", "sell", 4, 55_000, {"reduceOnly": True})
    # OKX: a market close needs autoCxl (or no pending close orders); 51115 is InvalidOrder.
    with pytest.raises(ccxt.InvalidOrder, match="51115"):
        ex.close_position(BTC)
    assert contracts(fake) == 4
    ex.close_position(BTC, None, {"autoCxl": True})
    assert contracts(fake) == 0
    assert ex.fetch_order(take_profit["id"], BTC)["status"] == "canceled"


def test_a_fill_stamps_its_position_with_its_own_time() -> None:
    """The guard compares a fill's time with the position's update time: a snapshot
    stamped before the fill would hide it. One fill, one time, however the clock moves."""

    class TickingClock:
        now = 1_700_000_000.0

        def __call__(self) -> float:
            self.now += 0.001  # every read is the next millisecond
            return self.now

    venue = DerivativesVenue(
        markets=default_swap_markets(), cash=Decimal(100_000), clock=TickingClock()
    )
    opened = venue.place(BTC, "buy", "market", 5)
    resting = venue.place(BTC, "sell", "limit", 5, price=60_000, reduce_only=True)
    venue.fill(resting.id, 2)
    for order in (opened, resting):
        [trade] = [t for t in venue.trades if t.order_id == order.id]
        assert venue.get(order.id).last_trade_timestamp == trade.timestamp
    assert venue.position(BTC).updated_timestamp == venue.trades[-1].timestamp


def test_short_positions_and_flips(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.create_order(ETH, "market", "sell", 30)  # 3 ETH short
    [short] = ex.fetch_positions([ETH])
    assert short["side"] == "short" and short["contracts"] == 30
    assert short["info"]["pos"] == "-30" and short["contractSize"] == 0.1
    # A plain order (not reduce-only) may flip the net position.
    ex.create_order(ETH, "market", "buy", 50)
    [long] = ex.fetch_positions([ETH])
    assert long["side"] == "long" and long["contracts"] == 20


# -- reduce-only -----------------------------------------------------------------------------------


def test_reduce_only_on_a_flat_position_is_rejected(fake: FakeOkx, ex: ccxt.okx) -> None:
    with pytest.raises(ccxt.ExchangeError, match="51169") as raised:
        ex.create_order(BTC, "market", "sell", 1, None, {"reduceOnly": True})
    # ccxt.okx has no mapping for 51169: a plain ExchangeError, not InvalidOrder.
    assert type(raised.value) is ccxt.ExchangeError
    assert fake.venue.orders == {} and contracts(fake) == 0


def test_reduce_only_on_the_positions_side_is_rejected(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.create_order(BTC, "market", "buy", 3)
    with pytest.raises(ccxt.ExchangeError, match="51170") as raised:
        ex.create_order(BTC, "market", "buy", 1, None, {"reduceOnly": True})
    assert type(raised.value) is ccxt.ExchangeError
    assert contracts(fake) == 3


def test_reduce_only_larger_than_the_position_is_cut_to_it(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.create_order(BTC, "market", "buy", 3)
    placed = ex.create_order(BTC, "market", "sell", 10, None, {"reduceOnly": True})
    order = ex.fetch_order(placed["id"], BTC)
    # The order's size is cut to the position: it closes it and never opens a short.
    assert order["amount"] == 3 and order["filled"] == 3 and order["status"] == "closed"
    assert fake.venue.get(placed["id"]).original_amount == 10
    assert contracts(fake) == 0 and ex.fetch_positions() == []


def test_resting_reduce_only_orders_follow_the_position(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.create_order(BTC, "market", "buy", 5)
    near = ex.create_order(BTC, "limit", "sell", 3, 55_000, {"reduceOnly": True})
    far = ex.create_order(BTC, "limit", "sell", 3, 56_000, {"reduceOnly": True})
    # Together they would close 6 of 5 contracts: the worse-priced one is cut.
    assert ex.fetch_order(far["id"], BTC)["amount"] == 2
    ex.create_order(BTC, "market", "sell", 3)  # the position shrinks to 2 by other means
    assert ex.fetch_order(near["id"], BTC)["amount"] == 2
    gone = ex.fetch_order(far["id"], BTC)
    assert gone["status"] == "canceled" and gone["info"]["cancelSource"] == "22"
    fake.venue.set_price(BTC, 55_000)
    assert ex.fetch_order(near["id"], BTC)["status"] == "closed"
    assert contracts(fake) == 0


# -- limit orders, fetch, cancel -------------------------------------------------------------------


def test_limit_order_rests_then_fills_when_the_price_crosses(fake: FakeOkx, ex: ccxt.okx) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 2, 49_000.5)
    assert sent(fake, "POST", BATCH)[0]["px"] == "49000.5"
    resting = ex.fetch_order(placed["id"], BTC)
    assert resting["status"] == "open" and resting["info"]["state"] == "live"
    assert resting["price"] == 49_000.5 and resting["amount"] == 2 and resting["filled"] == 0
    assert [o["id"] for o in ex.fetch_open_orders(BTC)] == [placed["id"]]
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(98.001)  # 2*0.01*49000.5/10
    fake.venue.set_price(BTC, 49_500)
    assert ex.fetch_order(placed["id"], BTC)["status"] == "open"
    fake.venue.set_price(BTC, 48_000)
    filled = ex.fetch_order(placed["id"], BTC)
    # A resting order fills at its own price, as maker (0.02%).
    assert filled["status"] == "closed" and filled["average"] == 49_000.5
    assert filled["fee"] == {"cost": pytest.approx(0.196002), "currency": "USDT"}
    assert ex.fetch_open_orders(BTC) == []
    assert contracts(fake) == 2


def test_partial_fill_then_cancel(fake: FakeOkx, ex: ccxt.okx) -> None:
    placed = ex.create_order(ETH, "limit", "sell", 10, 3_100)
    fake.venue.fill(placed["id"], 4)
    partial = ex.fetch_order(placed["id"], ETH)
    assert partial["info"]["state"] == "partially_filled" and partial["status"] == "open"
    assert partial["filled"] == 4 and partial["remaining"] == 6
    canceled = ex.cancel_order(placed["id"], ETH)
    assert sent(fake, "POST", CANCEL) == {"instId": "ETH-USDT-SWAP", "ordId": placed["id"]}
    # The cancel reply is an acknowledgement too: ccxt has no status for it.
    assert canceled["id"] == placed["id"] and canceled["status"] is None
    after = ex.fetch_order(placed["id"], ETH)
    assert after["status"] == "canceled" and after["filled"] == 4
    assert [o["id"] for o in ex.fetch_canceled_orders(ETH)] == [placed["id"]]
    assert sent(fake, "GET", V5 + "trade/orders-history")["state"] == "canceled"
    assert contracts(fake, ETH) == -4
    with pytest.raises(ccxt.OrderNotFound, match="51400"):
        ex.cancel_order(placed["id"], ETH)


def test_post_only_that_would_take_is_canceled_not_rejected(fake: FakeOkx, ex: ccxt.okx) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 1, 51_000, {"postOnly": True})
    assert sent(fake, "POST", BATCH)[0]["ordType"] == "post_only"
    order = ex.fetch_order(placed["id"], BTC)
    assert order["status"] == "canceled" and order["postOnly"] is True
    assert order["info"]["cancelSource"] == "31" and contracts(fake) == 0


def test_fetch_order_by_id_and_by_client_order_id(fake: FakeOkx, ex: ccxt.okx) -> None:
    placed = ex.create_order(BTC, "limit", "sell", 1, 60_000, {"clientOrderId": "njgExit1"})
    assert placed["clientOrderId"] == "njgExit1"
    body = sent(fake, "POST", BATCH)[0]
    # A client id of our own goes out as clOrdId, without ccxt's broker tag.
    assert body["clOrdId"] == "njgExit1" and "tag" not in body
    by_id = ex.fetch_order(placed["id"], BTC)
    assert sent(fake, "GET", ORDER) == {"instId": "BTC-USDT-SWAP", "ordId": placed["id"]}
    found = ex.fetch_order(None, BTC, {"clientOrderId": "njgExit1"})
    assert sent(fake, "GET", ORDER) == {"instId": "BTC-USDT-SWAP", "clOrdId": "njgExit1"}
    assert found["id"] == by_id["id"] == placed["id"]
    assert found["clientOrderId"] == "njgExit1" and found["status"] == "open"
    with pytest.raises(ccxt.OrderNotFound, match="51603"):
        ex.fetch_order(None, BTC, {"clientOrderId": "neverSent"})
    with pytest.raises(ccxt.OrderNotFound, match="51603"):
        ex.fetch_order("424242", BTC)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(placed["id"], ETH)  # an order exists only in its instrument
    # Cancel by client id too (ccxt sends clOrdId instead of ordId).
    ex.cancel_order(None, BTC, {"clientOrderId": "njgExit1"})
    assert sent(fake, "POST", CANCEL) == {"instId": "BTC-USDT-SWAP", "clOrdId": "njgExit1"}
    assert ex.fetch_order(placed["id"], BTC)["status"] == "canceled"


def test_client_order_ids_must_be_alphanumeric_and_unique_among_open_orders(
    fake: FakeOkx, ex: ccxt.okx
) -> None:
    # OKX allows letters and digits only, up to 32: a dash is a parameter error.
    with pytest.raises(ccxt.BadRequest, match="51000"):
        ex.create_order(BTC, "limit", "buy", 1, 40_000, {"clientOrderId": "njg-exit-1"})
    ex.create_order(BTC, "limit", "buy", 1, 40_000, {"clientOrderId": "same"})
    with pytest.raises(ccxt.InvalidOrder, match="51016") as raised:
        ex.create_order(BTC, "limit", "buy", 1, 40_000, {"clientOrderId": "same"})
    assert type(raised.value) is ccxt.InvalidOrder  # not DuplicateOrderId
    ex.cancel_order(None, BTC, {"clientOrderId": "same"})
    again = ex.create_order(BTC, "limit", "buy", 1, 40_000, {"clientOrderId": "same"})
    # A reused id names the newest order.
    assert ex.fetch_order(None, BTC, {"clientOrderId": "same"})["id"] == again["id"]


def test_fetch_my_trades(fake: FakeOkx, ex: ccxt.okx, clock: Clock) -> None:
    first = ex.create_order(BTC, "market", "buy", 4)
    clock.now += 60
    since = int(clock.now * 1000)
    resting = ex.create_order(BTC, "limit", "sell", 4, 51_000)
    clock.now += 60
    fake.venue.set_price(BTC, 51_000)
    trades = ex.fetch_my_trades(BTC)
    assert sent(fake, "GET", V5 + "trade/fills-history") == {
        "instId": "BTC-USDT-SWAP",
        "instType": "SWAP",
    }
    assert [t["order"] for t in trades] == [first["id"], resting["id"]]
    assert [t["side"] for t in trades] == ["buy", "sell"]
    assert [t["takerOrMaker"] for t in trades] == ["taker", "maker"]
    # A trade's amount is in contracts too.
    assert trades[1]["amount"] == 4 and trades[1]["price"] == 51_000
    assert trades[1]["fee"] == {"cost": pytest.approx(0.408), "currency": "USDT"}
    assert trades[1]["info"]["fillPnl"] == "40" and trades[1]["info"]["subType"] == "5"
    assert trades[1]["timestamp"] == int(clock.now * 1000)
    assert [t["order"] for t in ex.fetch_my_trades(BTC, since)] == [resting["id"]]
    assert [t["order"] for t in ex.fetch_order_trades(first["id"], BTC)] == [first["id"]]
    # Without a symbol, the client's defaultType (swap) picks instType SWAP.
    assert len(ex.fetch_my_trades()) == 2
    # The last 3 days endpoint has the same rows.
    raw = ex.private_get_trade_fills({"instId": "BTC-USDT-SWAP", "begin": since})
    assert [f["ordId"] for f in raw["data"]] == [resting["id"]]


def test_fetch_open_and_closed_orders(fake: FakeOkx, ex: ccxt.okx) -> None:
    btc = ex.create_order(BTC, "limit", "buy", 1, 45_000)
    eth = ex.create_order(ETH, "limit", "buy", 1, 2_500)
    done = ex.create_order(BTC, "market", "buy", 1)
    assert [o["id"] for o in ex.fetch_open_orders(BTC)] == [btc["id"]]
    assert {o["id"] for o in ex.fetch_open_orders()} == {btc["id"], eth["id"]}
    assert [o["id"] for o in ex.fetch_closed_orders(BTC)] == [done["id"]]
    assert sent(fake, "GET", V5 + "trade/orders-history") == {
        "instId": "BTC-USDT-SWAP",
        "instType": "SWAP",
        "state": "filled",
    }


def test_insufficient_margin(fake: FakeOkx, ex: ccxt.okx) -> None:
    # 5,000 BTC contracts = 50 BTC = 2.5M USDT notional: 250k margin at 10x.
    with pytest.raises(ccxt.InsufficientFunds, match="51008"):
        ex.create_order(BTC, "market", "buy", 5_000)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(ETH, "limit", "sell", 50_000, 3_000)
    assert fake.venue.orders == {} and fake.venue.positions() == []
    # Leverage changes what fits: at 50x the same order needs 50k.
    ex.set_leverage(50, BTC)
    assert sent(fake, "POST", V5 + "account/set-leverage") == {
        "lever": 50,
        "mgnMode": "cross",
        "instId": "BTC-USDT-SWAP",
    }
    ex.create_order(BTC, "market", "buy", 5_000)
    assert contracts(fake) == 5_000


@pytest.mark.parametrize(
    ("order", "error", "code"),
    [
        ({"sz": "1.5"}, ccxt.InvalidOrder, "51121"),  # lot size
        ({"instId": "DOGE-USDT-SWAP"}, ccxt.BadSymbol, "51001"),
        ({"posSide": "long"}, ccxt.BadRequest, "51000"),  # hedge mode only
        ({"tdMode": "cash"}, ccxt.BadRequest, "51000"),
        ({"ordType": "limit", "px": "50000.05"}, ccxt.BadRequest, "51000"),  # off the tick
        ({"sz": "20000"}, ccxt.InvalidOrder, "51202"),  # largest market order
    ],
    ids=["lot-size", "bad-symbol", "pos-side", "td-mode", "tick", "max-market"],
)
def test_rejections_map_to_ccxt_classes(
    fake: FakeOkx, ex: ccxt.okx, order: dict[str, str], error: type[Exception], code: str
) -> None:
    # The raw endpoint: ccxt's unified methods would round these before sending.
    request = {"instId": "BTC-USDT-SWAP", "tdMode": "cross", "side": "buy", "ordType": "market"}
    with pytest.raises(error, match=code) as raised:
        ex.private_post_trade_order({**request, "sz": "1", **order})
    assert type(raised.value) is error
    assert fake.venue.orders == {}
    assert fake.requests_to("POST", ORDER)[-1].status == 200  # OKX: HTTP 200, code "1"


def test_missing_parameters_are_http_400(fake: FakeOkx, ex: ccxt.okx) -> None:
    with pytest.raises(ccxt.BadRequest, match="50014"):
        ex.private_post_trade_order({"instId": "BTC-USDT-SWAP", "side": "buy"})
    assert fake.requests_to("POST", ORDER)[-1].status == 400


# -- credentials and signing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"secret": "wrong-secret"}, "50113"),
        ({"apiKey": "wrong-key"}, "50111"),
        ({"password": "wrong-passphrase"}, "50105"),
    ],
    ids=["bad-secret", "bad-key", "bad-passphrase"],
)
def test_bad_credentials_raise_authentication_error(
    fake: FakeOkx, config: dict[str, str], code: str
) -> None:
    client = fake.client(**config)
    # load_markets' first call (asset/currencies) is private: it fails already.
    with pytest.raises(ccxt.AuthenticationError, match=code):
        client.load_markets()
    client.has["fetchCurrencies"] = False  # skip it, to reach the order endpoint
    with pytest.raises(ccxt.AuthenticationError, match=code):
        client.create_order(BTC, "market", "buy", 1)
    assert fake.venue.orders == {}
    assert {r.status for r in fake.requests if r.signed} == {401}


def test_stale_timestamp_is_invalid_nonce(venue: DerivativesVenue) -> None:
    """With max_clock_skew the timestamp must be near the venue clock (here: 2023)."""
    with FakeOkx(venue, max_clock_skew=30) as fake:
        client = fake.client()  # signs with the machine's clock, years away
        with pytest.raises(ccxt.InvalidNonce, match="50102"):
            client.load_markets()


def test_signature_covers_path_query_and_body(fake: FakeOkx) -> None:
    """Raw HTTP: OK-ACCESS-SIGN = base64(HMAC-SHA256(secret, ts + METHOD + path + body))."""
    stamp = "2023-11-14T22:13:20.000Z"

    def sign(prehash: str) -> str:
        digest = hmac.new(b"test-secret", prehash.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def call(method: str, path: str, body: str = "", **headers: str) -> tuple[int, Any]:
        base = {
            "OK-ACCESS-KEY": "test-key",
            "OK-ACCESS-PASSPHRASE": "test-passphrase",
            "OK-ACCESS-TIMESTAMP": stamp,
            "OK-ACCESS-SIGN": sign(stamp + method + path + body),
            "Content-Type": "application/json",
        }
        base.update({k.replace("_", "-"): v for k, v in headers.items()})
        data = body.encode() if body else None
        request = urllib.request.Request(  # noqa: S310 (the fake: http://127.0.0.1:PORT)
            fake.url + path, data=data, method=method, headers=base
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    order = json.dumps(
        {
            "instId": "BTC-USDT-SWAP",
            "tdMode": "cross",
            "side": "buy",
            "ordType": "market",
            "sz": "1",
        }
    )
    tampered = order.replace('"sz": "1"', '"sz": "9"')
    status, reply = call(
        "POST", ORDER, tampered, OK_ACCESS_SIGN=sign(stamp + "POST" + ORDER + order)
    )
    assert (status, reply) == (401, {"msg": "Invalid Sign", "code": "50113"})
    # The query string is part of what a GET signs.
    path = V5 + "account/balance?ccy=USDT"
    assert call("GET", path)[0] == 200
    assert (
        call("GET", path, OK_ACCESS_SIGN=sign(stamp + "GET" + V5 + "account/balance"))[1]["code"]
        == "50113"
    )
    assert call("GET", path, OK_ACCESS_TIMESTAMP="1700000000")[1]["code"] == "50112"
    assert call("GET", path, OK_ACCESS_PASSPHRASE="")[1]["code"] == "50104"
    assert call("GET", path, OK_ACCESS_KEY="")[1]["code"] == "50103"
    assert fake.venue.orders == {}
    status, reply = call("POST", ORDER, order)
    assert status == 200 and reply["code"] == "0" and reply["data"][0]["sCode"] == "0"
    assert len(fake.venue.orders) == 1


def test_requests_log_marks_signed_private_calls(fake: FakeOkx, ex: ccxt.okx) -> None:
    ex.fetch_balance()
    ex.fetch_ticker(BTC)
    order = ex.create_order(BTC, "limit", "buy", 1, 45_000)
    ex.fetch_open_orders(BTC)
    ex.cancel_order(order["id"], BTC)
    ex.fetch_positions()
    ex.fetch_my_trades(BTC)
    seen = {(r.method, r.path, r.signed) for r in fake.requests}
    assert seen == {
        ("GET", V5 + "asset/currencies", True),
        ("GET", V5 + "public/instruments", False),
        ("GET", V5 + "account/balance", True),
        ("GET", V5 + "market/ticker", False),
        ("POST", BATCH, True),
        ("GET", V5 + "trade/orders-pending", True),
        ("POST", CANCEL, True),
        ("GET", POSITIONS, True),
        ("GET", V5 + "trade/fills-history", True),
    }
    for request in fake.requests:
        assert request.status == 200
        if request.signed:
            assert request.headers["OK-ACCESS-TIMESTAMP"].endswith("Z")


def test_unknown_paths_get_404_and_are_recorded() -> None:
    with FakeOkx() as fake:
        client = fake.client()
        with pytest.raises(ccxt.ExchangeError):
            client.public_get_system_status()  # a path the fake does not serve
        assert [(r.path, r.status) for r in fake.unknown] == [(V5 + "system/status", 404)]


# -- faults ----------------------------------------------------------------------------------------

BUSY = {
    "code": "50001",
    "data": [],
    "msg": "Service temporarily unavailable. Please try again later.",
}


@pytest.mark.parametrize(
    ("fault", "status", "body", "error", "placed"),
    [
        ("error_before", 503, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 429, None, ccxt.RateLimitExceeded, False),
        # An OKX JSON error wins over the HTTP status: 50001 is OnMaintenance.
        ("error_before", 503, BUSY, ccxt.OnMaintenance, False),
        ("error_after", 500, None, ccxt.ExchangeNotAvailable, True),
        ("error_after", 504, None, ccxt.RequestTimeout, True),
        ("drop_before", 500, None, ccxt.NetworkError, False),
        ("drop_after", 500, None, ccxt.NetworkError, True),
    ],
    ids=[
        "503-before",
        "429-before",
        "okx-50001-before",
        "500-after",
        "504-after",
        "drop-before",
        "drop-after",
    ],
)
def test_create_order_faults(
    fake: FakeOkx,
    ex: ccxt.okx,
    fault: str,
    status: int,
    body: dict[str, Any] | None,
    error: type[Exception],
    placed: bool,
) -> None:
    fake.inject("POST", BATCH, fault, status=status, body=body)
    with pytest.raises(error) as raised:
        ex.create_order(BTC, "market", "buy", 2, None, {"clientOrderId": "ghost1"})
    assert type(raised.value) is error
    assert fake.requests_to("POST", BATCH)[-1].fault == fault
    if placed:
        # The venue opened the position although the client saw an error: a ghost order.
        assert fake.venue.get(client_order_id="ghost1").status == "filled"
        assert contracts(fake) == 2
        assert ex.fetch_order(None, BTC, {"clientOrderId": "ghost1"})["status"] == "closed"
    else:
        assert fake.venue.orders == {} and contracts(fake) == 0
    # The fault is used up: the next call goes through.
    assert ex.create_order(BTC, "market", "buy", 1)["id"]


def test_bad_json_reply_is_not_an_exception_in_ccxt(fake: FakeOkx, ex: ccxt.okx) -> None:
    """A 200 with a truncated body: ccxt.okx returns an empty order, it does not raise."""
    fake.inject("POST", "trade/batch-orders", "bad_json_after")  # the /api/v5/ prefix may go
    order = ex.create_order(BTC, "market", "buy", 1, None, {"clientOrderId": "garbled"})
    assert order["id"] is None and order["status"] is None and order["clientOrderId"] is None
    assert fake.venue.get(client_order_id="garbled").status == "filled"
    assert fake.requests_to("POST", BATCH)[-1].status == 200


@pytest.mark.parametrize(
    ("path", "call"),
    [
        (CLOSE, lambda ex: ex.close_position(BTC)),
        (CANCEL, lambda ex: ex.cancel_order(ex.fetch_open_orders(BTC)[0]["id"], BTC)),
    ],
    ids=["close-position", "cancel"],
)
def test_error_after_on_other_trade_endpoints(
    fake: FakeOkx, ex: ccxt.okx, path: str, call: Any
) -> None:
    ex.create_order(BTC, "market", "buy", 2)
    ex.create_order(BTC, "limit", "buy", 1, 40_000)
    fake.inject("POST", path, "error_after", status=502)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        call(ex)
    # ...but it happened.
    if path == CLOSE:
        assert contracts(fake) == 0
    else:
        assert fake.venue.open_orders(BTC) == []


def test_hang_after_leaves_the_client_timed_out(fake: FakeOkx) -> None:
    client = fake.client(timeout=300)
    client.load_markets()
    fake.inject("POST", BATCH, "hang_after")
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(BTC, "market", "buy", 1, None, {"clientOrderId": "stuck"})
    assert fake.wait_hung(1, timeout=5)
    assert fake.venue.get(client_order_id="stuck").status == "filled"
    fake.release_hung()


def test_fault_applies_times_then_is_used_up(fake: FakeOkx, ex: ccxt.okx) -> None:
    fake.inject("GET", "account/balance", "error_before", times=2, status=503)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_balance()
    assert ex.fetch_balance()["USDT"]["total"] == 100_000
    statuses = [r.status for r in fake.requests_to("GET", V5 + "account/balance")]
    assert statuses == [503, 503, 200]


def test_inject_validates_its_arguments(fake: FakeOkx) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.inject("POST", BATCH, "explode")
    with pytest.raises(ValueError, match="does not serve"):
        fake.inject("POST", V5 + "trade/order-algo", "error_before")


# -- async client ----------------------------------------------------------------------------------


def test_async_client(fake: FakeOkx) -> None:
    async def scenario() -> None:
        client = fake.async_client()
        try:
            await client.load_markets()
            opened = await client.create_order(BTC, "market", "buy", 3)
            assert (await client.fetch_order(opened["id"], BTC))["status"] == "closed"
            [position] = await client.fetch_positions([BTC])
            assert position["contracts"] == 3 and position["side"] == "long"

            # A dropped POST surfaces as ExchangeNotAvailable (aiohttp); the order exists.
            fake.inject("POST", BATCH, "drop_after")
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await client.create_order(
                    BTC, "market", "buy", 1, None, {"clientOrderId": "aGhost"}
                )
            assert fake.venue.get(client_order_id="aGhost").status == "filled"

            # aiohttp silently re-sends an idempotent GET once after a dropped
            # connection, so one drop is invisible; two surface.
            fake.inject("GET", ORDER, "drop_after")
            found = await client.fetch_order(None, BTC, {"clientOrderId": "aGhost"})
            assert found["status"] == "closed"
            assert [r.status for r in fake.requests_to("GET", ORDER)][-2:] == [None, 200]
            fake.inject("GET", ORDER, "drop_after", times=2)
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await client.fetch_order(None, BTC, {"clientOrderId": "aGhost"})

            closed = await client.close_position(BTC)
            assert closed["id"] is None
            assert await client.fetch_positions() == []
            with pytest.raises(ccxt.ExchangeError, match="51023"):
                await client.close_position(BTC)
        finally:
            await client.close()

    asyncio.run(scenario())
    assert contracts(fake) == 0


# -- the venue itself ------------------------------------------------------------------------------


def test_venue_reduce_only_never_flips_or_grows(venue: DerivativesVenue) -> None:
    with pytest.raises(VenueError) as flat:
        venue.place(BTC, "sell", "market", 1, reduce_only=True)
    assert flat.value.reason == "reduce_only_flat"
    venue.place(BTC, "buy", "market", 5)
    with pytest.raises(VenueError) as same:
        venue.place(BTC, "buy", "limit", 1, 40_000, reduce_only=True)
    assert same.value.reason == "reduce_only_same_side"
    resting = venue.place(BTC, "sell", "limit", 5, 55_000, reduce_only=True)
    # The position goes short by other means: the resting reduce-only order is canceled.
    venue.place(BTC, "sell", "market", 7)
    assert venue.position(BTC).contracts == -2
    assert resting.status == "canceled" and resting.cancel_reason == "reduce_only"
    venue.set_price(BTC, 56_000)
    assert venue.position(BTC).contracts == -2


def test_venue_fill_of_a_reduce_only_order_is_capped_at_the_position(
    venue: DerivativesVenue,
) -> None:
    venue.place(BTC, "buy", "market", 4)
    order = venue.place(BTC, "sell", "limit", 4, 55_000, reduce_only=True)
    venue.fill(order.id, 1)
    assert (order.status, order.filled, venue.position(BTC).contracts) == ("partially_filled", 1, 3)
    venue.place(BTC, "sell", "market", 2)  # the position shrinks to 1: the order follows
    assert order.amount == 2 and order.remaining == 1
    venue.set_price(BTC, 55_000)
    assert order.status == "filled" and venue.position(BTC).contracts == 0
    assert venue.positions() == []


def test_venue_trigger_orders_fire_on_set_price(venue: DerivativesVenue) -> None:
    venue.place(BTC, "buy", "market", 2)
    stop = venue.place(BTC, "sell", "market", 2, trigger_price=48_000, reduce_only=True)
    assert stop.trigger_direction == "down" and stop.status == "live" and not stop.triggered
    venue.set_price(BTC, 49_000)
    assert stop.status == "live"
    venue.set_price(BTC, 47_900)
    assert stop.triggered and stop.status == "filled"
    assert stop.average == Decimal(47_900) and venue.position(BTC).contracts == 0
    # A reduce-only trigger that fires on a flat position is canceled, never opening one.
    late = venue.place(BTC, "sell", "market", 1, trigger_price=47_000, reduce_only=True)
    venue.set_price(BTC, 46_000)
    assert late.status == "canceled" and venue.positions() == []


def test_venue_pnl_fees_and_margin(clock: Clock) -> None:
    venue = DerivativesVenue(
        markets={BTC: SwapMarket(BTC, Decimal(50_000), leverage=Decimal(5))},
        cash=Decimal(1_100),
        clock=clock,
    )
    with pytest.raises(VenueError) as margin:
        venue.place(BTC, "buy", "market", 11)  # 1,100 margin at 5x, plus the fee
    assert margin.value.reason == "insufficient_margin"
    venue.place(BTC, "buy", "market", 10)  # 5,000 notional: 1,000 margin at 5x, 2.5 fee
    assert venue.balance().available == Decimal("97.5")
    venue.deposit(400)
    venue.set_price(BTC, 51_000)
    snap = venue.balance()
    assert snap.unrealized_pnl == 100 and snap.position_margin == 1_020
    venue.close_position(BTC)
    pos = venue.position(BTC)
    assert pos.contracts == 0 and pos.realized_pnl == 100
    assert venue.cash == Decimal(1_500) - Decimal("2.5") + 100 - Decimal("2.55")
    with pytest.raises(VenueError) as raised:
        venue.close_position(BTC)
    assert raised.value.reason == "no_position"
    with pytest.raises(VenueError) as margin:
        venue.place(BTC, "sell", "market", 100)
    assert margin.value.reason == "insufficient_margin"


def test_venue_is_thread_safe_under_concurrent_orders(venue: DerivativesVenue) -> None:
    def trade(side: str) -> None:
        for _ in range(50):
            venue.place(BTC, side, "market", 1)

    threads = [threading.Thread(target=trade, args=(s,)) for s in ("buy", "sell", "buy")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert venue.position(BTC).contracts == 50
    assert len(venue.trades) == 150
