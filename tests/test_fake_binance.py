"""The loopback Binance spot fake, driven by a real, unmodified ccxt.binance client.

These tests pin two things at once: that the fake speaks Binance's protocol the
way ccxt.binance expects it, and how ccxt.binance turns Binance's replies and
transport failures into ccxt exceptions (what nija_guard has to classify).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import Clock
from fakes.binance_spot import FakeBinance

from nija_guard.testing import Market, Venue

ORDER = "/api/v3/order"
PRIVATE_PATHS = {
    "/api/v3/account",
    "/api/v3/order",
    "/api/v3/order/test",
    "/api/v3/openOrders",
    "/api/v3/allOrders",
    "/api/v3/myTrades",
}


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBinance]:
    venue = Venue(
        markets={
            "BTC/USDT": Market("BTC/USDT", price=Decimal(50000)),
            "ETH/USDT": Market("ETH/USDT", price=Decimal(3000)),
        },
        free={"BTC": Decimal(1), "ETH": Decimal(10), "USDT": Decimal(100_000)},
        clock=clock,
    )
    with FakeBinance(venue) as server:
        yield server
        # Every request went to a path the fake serves, and the fake never crashed.
        assert server.unknown == []
        assert server.server_errors == []
        assert server.pending_faults() == []


@pytest.fixture
def ex(fake: FakeBinance) -> ccxt.binance:
    client = fake.client()
    client.load_markets()
    return client


def sent(fake: FakeBinance, method: str, path: str) -> dict[str, str]:
    """The params of the last request to ``method path``."""
    return fake.requests_to(method, path)[-1].params


# -- markets, balances, tickers ------------------------------------------------------


def test_load_markets_reflects_the_venue_markets() -> None:
    venue = Venue(
        markets={
            "BTC/USDT": Market("BTC/USDT", price=Decimal(50000)),
            "SOL/USDT": Market(
                "SOL/USDT",
                price=Decimal(150),
                amount_step=Decimal("0.01"),
                price_step=Decimal("0.001"),
                min_amount=Decimal("0.1"),
                min_cost=Decimal(10),
            ),
        },
        free={"USDT": Decimal(1000)},
    )
    with FakeBinance(venue) as fake:
        markets = fake.client().load_markets()
        assert set(markets) == {"BTC/USDT", "SOL/USDT"}
        sol = markets["SOL/USDT"]
        assert (sol["id"], sol["base"], sol["quote"]) == ("SOLUSDT", "SOL", "USDT")
        assert sol["spot"] is True and sol["active"] is True
        assert sol["precision"]["amount"] == 0.01
        assert sol["precision"]["price"] == 0.001
        assert sol["limits"]["amount"]["min"] == 0.1
        assert sol["limits"]["price"]["min"] == 0.001
        assert sol["limits"]["cost"]["min"] == 10
        btc = markets["BTC/USDT"]
        assert btc["precision"]["amount"] == 0.0001
        assert btc["precision"]["price"] == 0.01
        assert btc["limits"]["cost"]["min"] == 5
        # load_markets is one public request: no currencies, margins or futures.
        assert [(r.method, r.path, r.signed) for r in fake.requests] == [
            ("GET", "/api/v3/exchangeInfo", False)
        ]


def test_fetch_balance_matches_the_venue(fake: FakeBinance, ex: ccxt.binance, clock: Clock) -> None:
    fake.venue.place("BTC/USDT", "sell", "limit", "0.25", "60000")  # locks 0.25 BTC
    balance = ex.fetch_balance()
    assert balance["BTC"] == {"free": 0.75, "used": 0.25, "total": 1.0}
    assert balance["USDT"]["free"] == 100_000
    assert balance["ETH"]["total"] == 10
    assert balance["timestamp"] == int(clock.now * 1000)


def test_fetch_ticker_uses_the_venue_price(fake: FakeBinance, ex: ccxt.binance) -> None:
    fake.venue.set_price("ETH/USDT", "3123.45")
    ticker = ex.fetch_ticker("ETH/USDT")
    assert ticker["last"] == ticker["bid"] == ticker["ask"] == 3123.45
    assert sent(fake, "GET", "/api/v3/ticker/24hr") == {"symbol": "ETHUSDT"}


# -- orders -------------------------------------------------------------------------------


def test_market_sell_fills_and_changes_balances(fake: FakeBinance, ex: ccxt.binance) -> None:
    order = ex.create_market_sell_order("BTC/USDT", 0.1)
    assert order["status"] == "closed"
    assert order["filled"] == 0.1 and order["remaining"] == 0
    assert order["cost"] == 5000 and order["average"] == 50000
    assert order["fee"] == {"currency": "USDT", "cost": 5.0}
    # ccxt sends its own client order id (broker prefix) and the reply echoes it.
    assert order["clientOrderId"].startswith("x-TKT5PX2F")
    assert order["clientOrderId"] == fake.venue.get(order["id"]).client_order_id
    params = sent(fake, "POST", ORDER)
    assert (params["type"], params["side"], params["quantity"]) == ("MARKET", "SELL", "0.1")
    assert params["newOrderRespType"] == "FULL"
    assert fake.venue.holdings("BTC") == Decimal("0.9")
    assert fake.venue.holdings("USDT") == Decimal("104995")
    balance = ex.fetch_balance()
    assert balance["BTC"]["total"] == 0.9 and balance["USDT"]["total"] == 104995


def test_market_buy_by_cost_sends_quote_order_qty(fake: FakeBinance, ex: ccxt.binance) -> None:
    order = ex.create_market_buy_order_with_cost("ETH/USDT", 300)
    assert sent(fake, "POST", ORDER)["quoteOrderQty"] == "300"
    assert order["status"] == "closed" and order["filled"] == 0.1
    assert fake.venue.holdings("ETH") == Decimal("10.1")


def test_limit_sell_rests_then_fills_when_the_price_crosses(
    fake: FakeBinance, ex: ccxt.binance
) -> None:
    order = ex.create_limit_sell_order("BTC/USDT", 0.2, 51000)
    assert order["status"] == "open" and order["filled"] == 0
    assert sent(fake, "POST", ORDER)["timeInForce"] == "GTC"
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "open"
    fake.venue.set_price("BTC/USDT", 51000)
    filled = ex.fetch_order(order["id"], "BTC/USDT")
    assert filled["status"] == "closed"
    assert filled["filled"] == 0.2 and filled["price"] == 51000
    assert sent(fake, "GET", ORDER) == {
        "symbol": "BTCUSDT",
        "orderId": order["id"],
        "timestamp": sent(fake, "GET", ORDER)["timestamp"],
        "recvWindow": "10000",
    }


def test_partial_fill_is_open_with_filled_amount(fake: FakeBinance, ex: ccxt.binance) -> None:
    order = ex.create_limit_sell_order("BTC/USDT", 0.5, 55000)
    fake.venue.fill(order["id"], "0.2")
    partial = ex.fetch_order(order["id"], "BTC/USDT")
    assert partial["info"]["status"] == "PARTIALLY_FILLED"
    assert partial["status"] == "open"
    assert partial["filled"] == 0.2 and partial["remaining"] == 0.3
    closed = ex.fetch_closed_orders("BTC/USDT")
    assert closed == []
    assert [o["id"] for o in ex.fetch_orders("BTC/USDT")] == [order["id"]]


def test_limit_ioc_that_does_not_cross_expires(fake: FakeBinance, ex: ccxt.binance) -> None:
    order = ex.create_order("BTC/USDT", "limit", "sell", 0.1, 52000, {"timeInForce": "IOC"})
    assert order["status"] == "expired"
    assert fake.venue.holdings("BTC") == 1 and fake.venue.open_orders() == []


def test_fetch_order_by_client_order_id(fake: FakeBinance, ex: ccxt.binance) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000, {"clientOrderId": "njg-exit-1"})
    assert placed["clientOrderId"] == "njg-exit-1"
    assert sent(fake, "POST", ORDER)["newClientOrderId"] == "njg-exit-1"
    found = ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "njg-exit-1"})
    assert found["id"] == placed["id"] and found["clientOrderId"] == "njg-exit-1"
    # ccxt sends a client id as origClientOrderId, without orderId.
    params = sent(fake, "GET", ORDER)
    assert params["origClientOrderId"] == "njg-exit-1" and "orderId" not in params
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "never-sent"})
    # Both ids sent (raw endpoint): Binance requires them to name the same order.
    raw = {"symbol": "BTCUSDT", "orderId": placed["id"]}
    assert ex.private_get_order({**raw, "origClientOrderId": "njg-exit-1"})["status"] == "NEW"
    with pytest.raises(ccxt.OrderNotFound):
        ex.private_get_order({**raw, "origClientOrderId": "someone-else"})


def test_cancel_order_releases_the_funds(fake: FakeBinance, ex: ccxt.binance) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.3, 55000, {"clientOrderId": "to-cancel"})
    assert ex.fetch_balance()["BTC"]["used"] == 0.3
    canceled = ex.cancel_order(placed["id"], "BTC/USDT")
    assert canceled["status"] == "canceled" and canceled["id"] == placed["id"]
    # Binance's cancel reply names the cancel request: clientOrderId is not ours.
    assert canceled["clientOrderId"] != "to-cancel"
    assert canceled["info"]["origClientOrderId"] == "to-cancel"
    assert fake.venue.get(placed["id"]).status == "canceled"
    assert ex.fetch_balance()["BTC"] == {"free": 1.0, "used": 0.0, "total": 1.0}
    assert ex.fetch_order(placed["id"], "BTC/USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        ex.cancel_order(placed["id"], "BTC/USDT")


def test_fetch_open_orders(fake: FakeBinance, ex: ccxt.binance) -> None:
    btc = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000)
    eth = ex.create_limit_sell_order("ETH/USDT", 1, 3500)
    ex.create_market_sell_order("BTC/USDT", 0.1)  # fills: never open
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [btc["id"]]
    assert sent(fake, "GET", "/api/v3/openOrders")["symbol"] == "BTCUSDT"
    assert {o["id"] for o in ex.fetch_open_orders()} == {btc["id"], eth["id"]}
    assert "symbol" not in sent(fake, "GET", "/api/v3/openOrders")


def test_fetch_my_trades(fake: FakeBinance, ex: ccxt.binance, clock: Clock) -> None:
    first = ex.create_market_sell_order("BTC/USDT", 0.1)
    clock.now += 60
    since = int(clock.now * 1000)
    resting = ex.create_limit_sell_order("BTC/USDT", 0.2, 51000)
    clock.now += 60
    fake.venue.set_price("BTC/USDT", 51000)

    trades = ex.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in trades] == [first["id"], resting["id"]]
    assert [t["takerOrMaker"] for t in trades] == ["taker", "maker"]
    assert [t["side"] for t in trades] == ["sell", "sell"]
    assert trades[1]["amount"] == 0.2 and trades[1]["price"] == 51000
    assert trades[1]["fee"] == {"currency": "USDT", "cost": 10.2}
    assert trades[1]["timestamp"] == int(clock.now * 1000)

    recent = ex.fetch_my_trades("BTC/USDT", since)
    assert [t["order"] for t in recent] == [resting["id"]]
    assert sent(fake, "GET", "/api/v3/myTrades")["startTime"] == str(since)
    # ccxt filters by since itself too: check the server's own filtering raw.
    raw = ex.private_get_mytrades({"symbol": "BTCUSDT", "startTime": since})
    assert [t["orderId"] for t in raw] == [int(resting["id"])]
    by_order = ex.private_get_mytrades({"symbol": "BTCUSDT", "orderId": first["id"]})
    assert [t["orderId"] for t in by_order] == [int(first["id"])]


def test_stop_loss_order_rests_until_the_price_falls(fake: FakeBinance, ex: ccxt.binance) -> None:
    stop = ex.create_stop_loss_order("BTC/USDT", "market", "sell", 0.1, None, 45000)
    params = sent(fake, "POST", ORDER)
    assert (params["type"], params["stopPrice"]) == ("STOP_LOSS", "45000")
    assert stop["status"] == "open" and stop["triggerPrice"] == 45000
    # Binance reports workingTime -1 until a stop triggers (ccxt reads it as the timestamp).
    assert stop["info"]["workingTime"] == -1
    fake.venue.set_price("BTC/USDT", 46000)
    assert ex.fetch_order(stop["id"], "BTC/USDT")["status"] == "open"
    fake.venue.set_price("BTC/USDT", 44000)
    done = ex.fetch_order(stop["id"], "BTC/USDT")
    assert done["status"] == "closed" and done["filled"] == 0.1 and done["average"] == 44000
    assert done["type"] == "market"  # ccxt maps spot STOP_LOSS to market


def test_trigger_price_and_take_profit_variants(fake: FakeBinance, ex: ccxt.binance) -> None:
    ex.create_order("BTC/USDT", "market", "sell", 0.1, None, {"stopLossPrice": 45000})
    assert sent(fake, "POST", ORDER)["type"] == "STOP_LOSS"
    ex.create_order("BTC/USDT", "limit", "sell", 0.1, 44000, {"triggerPrice": 45000})
    assert sent(fake, "POST", ORDER)["type"] == "STOP_LOSS_LIMIT"
    tp = ex.create_take_profit_order("BTC/USDT", "market", "sell", 0.1, None, 55000)
    assert sent(fake, "POST", ORDER)["type"] == "TAKE_PROFIT"
    fake.venue.set_price("BTC/USDT", 56000)
    assert ex.fetch_order(tp["id"], "BTC/USDT")["status"] == "closed"
    # A stop the market has already passed is rejected, as on Binance.
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        ex.create_stop_loss_order("BTC/USDT", "market", "sell", 0.1, None, 57000)


# -- rejections and errors ----------------------------------------------------------------


def test_insufficient_funds(fake: FakeBinance, ex: ccxt.binance) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_market_sell_order("BTC/USDT", 2)
    assert fake.venue.orders == {} and fake.venue.holdings("BTC") == 1
    assert fake.requests_to("POST", ORDER)[-1].status == 400


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {"type": "LIMIT", "quantity": "0.00015", "price": "60000", "timeInForce": "GTC"},
            ccxt.InvalidOrder,
        ),
        (
            {"type": "LIMIT", "quantity": "0.1", "price": "60000.001", "timeInForce": "GTC"},
            ccxt.InvalidOrder,
        ),
        # Binance's NOTIONAL rejection is -1013, which ccxt maps to BadRequest.
        (
            {"type": "LIMIT", "quantity": "0.0001", "price": "40000", "timeInForce": "GTC"},
            ccxt.BadRequest,
        ),
        ({"type": "LIMIT", "quantity": "0.1", "price": "60000"}, ccxt.BadRequest),  # no timeInForce
        (
            {"type": "LIMIT_MAKER", "quantity": "0.1", "price": "40000"},
            ccxt.OrderImmediatelyFillable,
        ),
        ({"type": "MARKET", "quantity": "0.1", "symbol": "DOGEUSDT"}, ccxt.BadSymbol),
        ({"type": "MARKET", "quantity": "0.1", "newClientOrderId": "bad id!"}, ccxt.BadRequest),
    ],
    ids=[
        "lot-size",
        "price-filter",
        "notional",
        "no-tif",
        "maker-would-take",
        "bad-symbol",
        "bad-client-id",
    ],
)
def test_rejections_map_to_ccxt_classes(
    fake: FakeBinance, ex: ccxt.binance, params: dict[str, str], error: type[Exception]
) -> None:
    # The raw endpoint: ccxt's unified methods would round these before sending.
    with pytest.raises(error) as raised:
        ex.private_post_order({"symbol": "BTCUSDT", "side": "SELL", **params})
    assert type(raised.value) is error
    assert fake.venue.orders == {}


def test_duplicate_client_order_id_is_invalid_order(fake: FakeBinance, ex: ccxt.binance) -> None:
    ex.create_limit_sell_order("BTC/USDT", 0.1, 60000, {"clientOrderId": "same"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent") as raised:
        ex.create_limit_sell_order("BTC/USDT", 0.1, 60000, {"clientOrderId": "same"})
    # ccxt.binance has no DuplicateOrderId mapping: -2010 is a plain InvalidOrder.
    assert type(raised.value) is ccxt.InvalidOrder
    assert len(fake.venue.orders) == 1


def test_unknown_order_id(ex: ccxt.binance) -> None:
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        ex.fetch_order("424242", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        ex.cancel_order("424242", "BTC/USDT")
    # An order exists only in its own symbol.
    btc = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(btc["id"], "ETH/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(btc["id"], "ETH/USDT")
    assert ex.fetch_order(btc["id"], "BTC/USDT")["status"] == "open"


@pytest.mark.parametrize(
    ("config", "code"),
    [({"secret": "wrong-secret"}, "-1022"), ({"apiKey": "wrong-key"}, "-2015")],
    ids=["bad-secret", "bad-key"],
)
def test_bad_credentials_raise_authentication_error(
    fake: FakeBinance, config: dict[str, str], code: str
) -> None:
    client = fake.client(**config)
    with pytest.raises(ccxt.AuthenticationError, match=code):
        client.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        client.create_market_sell_order("BTC/USDT", 0.1)
    assert fake.venue.orders == {}
    assert {r.status for r in fake.requests if r.path in PRIVATE_PATHS} == {401}


def test_revoked_key_after_success_is_ddos_protection(fake: FakeBinance, ex: ccxt.binance) -> None:
    """ccxt reads -2015 as a temporary ban once the client has authenticated."""
    ex.fetch_balance()
    ex.apiKey = "revoked-key"
    with pytest.raises(ccxt.DDoSProtection, match="-2015"):
        ex.fetch_balance()


def test_signature_covers_every_parameter(fake: FakeBinance) -> None:
    """Raw HTTP: a signature over other params, or none, or no timestamp is refused."""

    def post(body: str, key: str = "test-key") -> tuple[int, dict[str, Any]]:
        url = fake.url + ORDER  # http://127.0.0.1:PORT/...: a fixed scheme and host
        headers = {"X-MBX-APIKEY": key}
        request = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def sign(payload: str) -> str:
        return hmac.new(b"test-secret", payload.encode(), hashlib.sha256).hexdigest()

    signed = "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.1&timestamp=1"
    tampered = signed.replace("0.1", "0.9")
    assert post(f"{tampered}&signature={sign(signed)}") == (
        401,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    )
    assert post(signed)[1]["code"] == -1102  # no signature
    no_ts = "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.1"
    assert post(f"{no_ts}&signature={sign(no_ts)}")[1]["code"] == -1102
    assert post(f"{signed}&signature={sign(signed)}", key="other")[1]["code"] == -2015
    assert fake.venue.orders == {}
    status, reply = post(f"{signed}&signature={sign(signed)}")
    assert status == 200 and reply["status"] == "FILLED"
    assert len(fake.venue.orders) == 1


def test_spot_error_map_applies_on_loopback(fake: FakeBinance, ex: ccxt.binance) -> None:
    """ccxt picks Binance's spot error map by URL; the fake's client keeps it."""
    busy = {"code": -1008, "msg": "Server is currently overloaded with other requests."}
    fake.inject("GET", "/api/v3/account", "error_before", status=503, body=busy)
    with pytest.raises(ccxt.OperationFailed) as raised:
        ex.fetch_balance()
    assert type(raised.value) is ccxt.OperationFailed  # not a NetworkError


# -- faults -----------------------------------------------------------------------------


BUSY = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}


@pytest.mark.parametrize(
    ("fault", "status", "body", "error", "placed"),
    [
        ("error_before", 503, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 429, None, ccxt.DDoSProtection, False),
        # A JSON Binance error wins over the HTTP status: -1001 is OperationFailed.
        ("error_before", 500, BUSY, ccxt.OperationFailed, False),
        ("error_after", 500, None, ccxt.ExchangeNotAvailable, True),
        ("error_after", 504, None, ccxt.RequestTimeout, True),
        ("drop_before", 500, None, ccxt.NetworkError, False),
        ("drop_after", 500, None, ccxt.NetworkError, True),
    ],
    ids=[
        "503-before",
        "429-before",
        "binance-1001-before",
        "500-after",
        "504-after",
        "drop-before",
        "drop-after",
    ],
)
def test_create_order_faults(
    fake: FakeBinance,
    ex: ccxt.binance,
    fault: str,
    status: int,
    body: dict[str, Any] | None,
    error: type[Exception],
    placed: bool,
) -> None:
    fake.inject("POST", ORDER, fault, status=status, body=body)
    with pytest.raises(error) as raised:
        ex.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "ghost-1"})
    assert type(raised.value) is error
    assert fake.requests_to("POST", ORDER)[-1].fault == fault
    if placed:
        # The venue executed the sell although the client saw an error: a ghost order.
        ghost = fake.venue.get(client_order_id="ghost-1")
        assert ghost.status == "closed" and fake.venue.holdings("BTC") == Decimal("0.9")
        assert ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "ghost-1"})["status"] == "closed"
    else:
        assert fake.venue.orders == {} and fake.venue.holdings("BTC") == 1
    # The fault is used up: the next call goes through.
    assert ex.create_market_sell_order("BTC/USDT", 0.1)["status"] == "closed"


def test_bad_json_reply_is_not_an_exception_in_ccxt(fake: FakeBinance, ex: ccxt.binance) -> None:
    """A 200 with a non-JSON body: ccxt.binance returns an empty order, it does not raise."""
    fake.inject("POST", ORDER, "bad_json_after")
    order = ex.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "garbled"})
    assert order["id"] is None and order["status"] is None and order["clientOrderId"] is None
    assert isinstance(order["info"], str)
    assert fake.venue.get(client_order_id="garbled").status == "closed"
    assert fake.requests_to("POST", ORDER)[-1].status == 200


def test_fault_applies_times_then_is_used_up(fake: FakeBinance, ex: ccxt.binance) -> None:
    fake.inject("GET", "/api/v3/account", "error_before", times=2, status=503)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_balance()
    assert fake.pending_faults() == []
    assert ex.fetch_balance()["BTC"]["total"] == 1
    statuses = [r.status for r in fake.requests_to("GET", "/api/v3/account")]
    assert statuses == [503, 503, 200]


def test_inject_validates_its_arguments(fake: FakeBinance) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.inject("POST", ORDER, "explode")
    with pytest.raises(ValueError, match="does not serve"):
        fake.inject("POST", "/api/v3/orders", "error_before")


# -- the request log ------------------------------------------------------------------------


def test_requests_log_marks_signed_private_calls(fake: FakeBinance, ex: ccxt.binance) -> None:
    ex.fetch_balance()
    ex.fetch_ticker("BTC/USDT")
    order = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000)
    ex.fetch_open_orders("BTC/USDT")
    ex.cancel_order(order["id"], "BTC/USDT")
    ex.fetch_my_trades("BTC/USDT")
    seen = {(r.method, r.path, r.signed) for r in fake.requests}
    assert seen == {
        ("GET", "/api/v3/exchangeInfo", False),
        ("GET", "/api/v3/account", True),
        ("GET", "/api/v3/ticker/24hr", False),
        ("POST", ORDER, True),
        ("GET", "/api/v3/openOrders", True),
        ("DELETE", ORDER, True),
        ("GET", "/api/v3/myTrades", True),
    }
    for request in fake.requests:
        assert "signature" not in request.params
        assert request.signed == (request.path in PRIVATE_PATHS)
        assert ("timestamp" in request.params) == request.signed
        assert request.status == 200


def test_unknown_paths_get_404_and_are_recorded() -> None:
    with FakeBinance() as fake:
        client = fake.client()
        with pytest.raises(ccxt.ExchangeError):
            client.sapi_get_system_status()  # a path the fake does not serve
        assert [(r.path, r.status) for r in fake.unknown] == [("/sapi/v1/system/status", 404)]


# -- async client ------------------------------------------------------------------------------


def test_async_client(fake: FakeBinance) -> None:
    async def scenario() -> None:
        client = fake.async_client()
        try:
            await client.load_markets()
            order = await client.create_market_sell_order("BTC/USDT", 0.1)
            assert order["status"] == "closed"
            resting = await client.create_limit_sell_order("BTC/USDT", 0.1, 55000)
            assert (await client.fetch_order(resting["id"], "BTC/USDT"))["status"] == "open"
            assert (await client.fetch_balance())["BTC"]["used"] == 0.1

            # A dropped POST surfaces as ExchangeNotAvailable (aiohttp), the order exists.
            fake.inject("POST", ORDER, "drop_after")
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await client.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "a-ghost"})
            assert fake.venue.get(client_order_id="a-ghost").status == "closed"

            # aiohttp silently retries an idempotent request once after a dropped
            # connection: a dropped cancel is re-sent, and the retry finds the order
            # already canceled (-2011), so the caller sees OrderNotFound.
            fake.inject("DELETE", ORDER, "drop_after")
            with pytest.raises(ccxt.OrderNotFound):
                await client.cancel_order(resting["id"], "BTC/USDT")
            assert fake.venue.get(resting["id"]).status == "canceled"
            assert [r.status for r in fake.requests_to("DELETE", ORDER)] == [None, 400]
        finally:
            await client.close()

    asyncio.run(scenario())
    assert fake.venue.holdings("BTC") == Decimal("0.8")
