"""The loopback Kraken spot fake, driven by a real, unmodified ccxt.kraken client.

These tests pin two things at once: that the fake speaks Kraken's protocol the
way ccxt.kraken expects it, and how ccxt.kraken turns Kraken's replies and
transport failures into ccxt exceptions (what nija_guard has to classify).
Kraken's AddOrder reply carries no status and no filled amount: every order
test confirms through fetch_order (QueryOrders), as a client has to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import Clock
from fakes.kraken_spot import DEFAULT_SECRET, FakeKraken

from nija_guard.testing import Market, Venue

ADD = "/0/private/AddOrder"
QUERY = "/0/private/QueryOrders"
CANCEL = "/0/private/CancelOrder"
TXID = re.compile(r"^O[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{6}$")
OTHER_SECRET = base64.b64encode(b"\x01" * 64).decode()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeKraken]:
    venue = Venue(
        markets={
            "BTC/USDT": Market("BTC/USDT", price=Decimal(50000)),
            "ETH/USDT": Market("ETH/USDT", price=Decimal(3000)),
            "SOL/USDT": Market(
                "SOL/USDT",
                price=Decimal(150),
                amount_step=Decimal("0.01"),
                price_step=Decimal("0.05"),
                min_amount=Decimal("0.1"),
                min_cost=Decimal(10),
            ),
        },
        free={"BTC": Decimal(1), "ETH": Decimal(10), "USDT": Decimal(100_000)},
        clock=clock,
    )
    with FakeKraken(venue) as server:
        yield server
        # Every request went to a path the fake serves, and the fake never crashed.
        assert server.unknown == []
        assert server.server_errors == []
        assert server.pending_faults() == []


@pytest.fixture
def ex(fake: FakeKraken) -> ccxt.kraken:
    client = fake.client()
    client.load_markets()
    return client


def sent(fake: FakeKraken, path: str, method: str = "POST") -> dict[str, str]:
    """The params of the last request to ``path``, without the nonce."""
    params = dict(fake.requests_to(method, path)[-1].params)
    params.pop("nonce", None)
    return params


def venue_id(fake: FakeKraken, txid: str) -> str:
    """The venue's id of the order ccxt knows by its Kraken txid."""
    order = fake._order_by_txid(txid)
    assert order is not None
    return order.id


# -- markets, balances, tickers ------------------------------------------------------


def test_load_markets_maps_kraken_names_back_to_the_venue_symbols() -> None:
    venue = Venue(
        markets={
            "BTC/USDT": Market("BTC/USDT", price=Decimal(50000)),
            "BTC/USD": Market("BTC/USD", price=Decimal(50000), price_step=Decimal("0.1")),
            "ETH/BTC": Market(
                "ETH/BTC",
                price=Decimal("0.06"),
                amount_step=Decimal("0.00000001"),
                price_step=Decimal("0.00001"),
                min_amount=Decimal("0.002"),
                min_cost=Decimal("0.00002"),
            ),
            "SOL/USDT": Market(
                "SOL/USDT",
                price=Decimal(150),
                amount_step=Decimal("0.01"),
                price_step=Decimal("0.001"),
                min_amount=Decimal("0.1"),
                min_cost=Decimal(10),
            ),
        },
        free={"USD": Decimal(1000), "BTC": Decimal(1)},
    )
    with FakeKraken(venue) as fake:
        ex = fake.client()
        markets = ex.load_markets()
        assert set(markets) == {"BTC/USDT", "BTC/USD", "ETH/BTC", "SOL/USDT"}
        # Two legacy X/Z assets: keyed by ids; anything else by altnames.
        ids = {symbol: (m["id"], m["altname"]) for symbol, m in markets.items()}
        assert ids == {
            "BTC/USDT": ("XBTUSDT", "XBTUSDT"),
            "BTC/USD": ("XXBTZUSD", "XBTUSD"),
            "ETH/BTC": ("XETHXXBT", "ETHXBT"),
            "SOL/USDT": ("SOLUSDT", "SOLUSDT"),
        }
        sol = markets["SOL/USDT"]
        assert (sol["base"], sol["quote"], sol["spot"], sol["active"]) == (
            "SOL",
            "USDT",
            True,
            True,
        )
        assert sol["precision"] == {"amount": 0.01, "price": 0.001}
        assert sol["limits"]["amount"]["min"] == 0.1 and sol["limits"]["cost"]["min"] == 10
        assert markets["ETH/BTC"]["precision"] == {"amount": 1e-8, "price": 1e-5}
        assert markets["ETH/BTC"]["limits"]["amount"]["min"] == 0.002
        assert markets["BTC/USD"]["precision"]["price"] == 0.1
        assert markets["BTC/USDT"]["taker"] == markets["BTC/USDT"]["maker"] == 0.001
        raw = ex.public_get_assetpairs({"pair": "XBTUSD"})["result"]
        assert list(raw) == ["XXBTZUSD"]
        assert (raw["XXBTZUSD"]["base"], raw["XXBTZUSD"]["quote"]) == ("XXBT", "ZUSD")
        assert raw["XXBTZUSD"]["tick_size"] == "0.1"
        assert {c: ex.currencies[c]["id"] for c in ("BTC", "ETH", "USD", "USDT", "SOL")} == {
            "BTC": "XXBT",
            "ETH": "XETH",
            "USD": "ZUSD",
            "USDT": "USDT",
            "SOL": "SOL",
        }
        # load_markets is two public requests: Assets (fetchCurrencies), AssetPairs.
        assert [(r.method, r.path, r.signed) for r in fake.requests[:2]] == [
            ("GET", "/0/public/Assets", False),
            ("GET", "/0/public/AssetPairs", False),
        ]
        assert ex.fetch_balance()["total"] == {"BTC": 1.0, "USD": 1000.0}
        assert list(ex.private_post_balance()["result"]) == ["XXBT", "ZUSD"]


def test_assets_ccxt_would_rename_are_refused() -> None:
    with pytest.raises(ValueError, match="LUNA"):
        FakeKraken(symbols=("LUNA/USDT",))
    with pytest.raises(ValueError, match="base64"):
        FakeKraken(secret="not base64!")


def test_fetch_balance_matches_the_venue(fake: FakeKraken, ex: ccxt.kraken) -> None:
    fake.venue.place("BTC/USDT", "sell", "limit", "0.25", "60000")  # locks 0.25 BTC
    balance = ex.fetch_balance()
    assert balance["BTC"] == {"free": 0.75, "used": 0.25, "total": 1.0}
    assert balance["USDT"]["free"] == 100_000 and balance["ETH"]["total"] == 10
    assert balance["timestamp"] is None  # Kraken's balance carries no time
    raw = balance["info"]["result"]
    assert raw["XXBT"] == {
        "balance": "1.0000000000",
        "credit": "0.0000",
        "credit_used": "0.0000",
        "hold_trade": "0.2500000000",
    }
    assert set(raw) == {"XXBT", "XETH", "USDT"}
    assert [r.path for r in fake.requests if r.signed] == ["/0/private/BalanceEx"]


def test_fetch_ticker_uses_the_venue_price(fake: FakeKraken, ex: ccxt.kraken) -> None:
    fake.venue.set_price("ETH/USDT", "3123.45")
    ticker = ex.fetch_ticker("ETH/USDT")
    assert ticker["symbol"] == "ETH/USDT"
    assert ticker["last"] == ticker["bid"] == ticker["ask"] == 3123.45
    assert sent(fake, "/0/public/Ticker", "GET") == {"pair": "ETHUSDT"}
    with pytest.raises(ccxt.ExchangeError, match="EQuery:Unknown asset pair") as raised:
        ex.public_get_ticker({"pair": "NOPEUSD"})
    assert type(raised.value) is ccxt.ExchangeError  # ccxt maps only "Invalid asset pair"


# -- orders -------------------------------------------------------------------------------


def test_market_sell_reply_has_no_outcome_until_fetch_order(
    fake: FakeKraken, ex: ccxt.kraken, clock: Clock
) -> None:
    placed = ex.create_market_sell_order("BTC/USDT", 0.1)
    # AddOrder answers with a description and a txid: nothing about what happened.
    assert set(placed["info"]) == {"descr", "txid"}
    assert placed["info"]["descr"] == {"order": "sell 0.10000000 XBTUSDT @ market"}
    assert TXID.match(placed["id"]) and placed["info"]["txid"] == [placed["id"]]
    assert placed["status"] is None and placed["filled"] is None
    assert placed["timestamp"] is None and placed["average"] is None
    assert (placed["symbol"], placed["side"], placed["type"]) == ("BTC/USDT", "sell", "market")
    assert placed["amount"] == 0.1
    assert sent(fake, ADD) == {
        "pair": "XBTUSDT",
        "type": "sell",
        "ordertype": "market",
        "volume": "0.1",
    }
    # The venue did fill it: fetch_order (QueryOrders) is how a client finds out.
    assert fake.venue.holdings("BTC") == Decimal("0.9")
    order = ex.fetch_order(placed["id"])
    assert sent(fake, QUERY) == {"trades": "True", "txid": placed["id"]}
    assert order["status"] == "closed" and order["info"]["status"] == "closed"
    assert order["filled"] == 0.1 and order["remaining"] == 0
    assert order["average"] == 50000 and order["cost"] == 5000
    # ccxt.kraken leaves an order's fee cost a string.
    assert order["fee"] == {"cost": "5.0000000", "rate": None, "currency": "USDT"}
    assert order["timestamp"] == order["lastUpdateTimestamp"] == int(clock.now * 1000)
    assert [t["id"] for t in order["trades"]] == [ex.fetch_my_trades()[0]["id"]]
    assert fake.venue.holdings("USDT") == Decimal("104995")


def test_limit_sell_rests_then_fills_when_the_price_crosses(
    fake: FakeKraken, ex: ccxt.kraken
) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.2, 51000)
    assert placed["status"] is None and placed["price"] == 51000
    assert placed["info"]["descr"]["order"] == "sell 0.20000000 XBTUSDT @ limit 51000.00"
    assert sent(fake, ADD)["price"] == "51000"
    resting = ex.fetch_order(placed["id"])
    assert resting["status"] == "open" and resting["filled"] == 0 and resting["price"] == 51000
    assert ex.fetch_balance()["BTC"]["used"] == 0.2
    fake.venue.set_price("BTC/USDT", 51000)
    filled = ex.fetch_order(placed["id"])
    assert filled["status"] == "closed"
    assert filled["filled"] == 0.2 and filled["average"] == 51000
    assert filled["lastUpdateTimestamp"] is not None


def test_partial_fill_is_open_with_filled_amount(fake: FakeKraken, ex: ccxt.kraken) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.5, 55000)
    fake.venue.fill(venue_id(fake, placed["id"]), "0.2")
    partial = ex.fetch_order(placed["id"])
    assert partial["info"]["status"] == "open"  # Kraken has no partially-filled status
    assert partial["status"] == "open"
    assert partial["filled"] == 0.2 and partial["remaining"] == 0.3
    assert ex.fetch_closed_orders() == []
    assert [o["id"] for o in ex.fetch_open_orders()] == [placed["id"]]


def test_client_order_id_round_trip(fake: FakeKraken, ex: ccxt.kraken) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000, {"clientOrderId": "njg-exit-1"})
    # ccxt sends the unified clientOrderId as cl_ord_id; AddOrder's reply does not echo it.
    assert sent(fake, ADD)["cl_ord_id"] == "njg-exit-1"
    assert placed["clientOrderId"] is None
    assert fake.venue.get(venue_id(fake, placed["id"])).client_order_id == "njg-exit-1"
    assert ex.fetch_order(placed["id"])["clientOrderId"] == "njg-exit-1"

    # Lookup by client id: fetch_open_orders / fetch_closed_orders send cl_ord_id.
    found = ex.fetch_open_orders(params={"clientOrderId": "njg-exit-1"})
    assert [o["id"] for o in found] == [placed["id"]]
    assert sent(fake, "/0/private/OpenOrders") == {"cl_ord_id": "njg-exit-1"}
    assert ex.fetch_open_orders(params={"clientOrderId": "never-sent"}) == []
    fake.venue.set_price("BTC/USDT", 55000)
    closed = ex.fetch_closed_orders(params={"clientOrderId": "njg-exit-1"})
    assert [(o["id"], o["status"]) for o in closed] == [(placed["id"], "closed")]
    assert sent(fake, "/0/private/ClosedOrders") == {"cl_ord_id": "njg-exit-1"}

    # fetch_order cannot: ccxt sends the client id as userref (Kraken's int32 tag)
    # next to txid (even None), and Kraken refuses a userref that is not an integer.
    with pytest.raises(ccxt.ExchangeError, match="Invalid arguments:userref") as raised:
        ex.fetch_order(placed["id"], None, {"clientOrderId": "njg-exit-1"})
    assert type(raised.value) is ccxt.ExchangeError
    with pytest.raises(ccxt.ExchangeError, match="Invalid arguments:userref"):
        ex.fetch_order(None, None, {"clientOrderId": "njg-exit-1"})
    assert sent(fake, QUERY) == {"trades": "True", "txid": "None", "userref": "njg-exit-1"}


def test_client_order_id_formats_and_userref(fake: FakeKraken, ex: ccxt.kraken) -> None:
    uuid = "d15708c1-dbb6-465d-b77d-47258319cc90"
    long_id = ex.create_limit_sell_order("BTC/USDT", 0.1, 60000, {"clientOrderId": uuid})
    assert ex.fetch_order(long_id["id"])["clientOrderId"] == uuid
    # Free text is limited to 18 characters.
    with pytest.raises(ccxt.ExchangeError, match="Invalid arguments:cl_ord_id") as raised:
        ex.create_limit_sell_order("BTC/USDT", 0.1, 60000, {"clientOrderId": "x" * 19})
    assert type(raised.value) is ccxt.ExchangeError
    # A cl_ord_id is unique among open orders; ccxt has no mapping for the rejection.
    with pytest.raises(ccxt.ExchangeError, match="EOrder:Duplicate order") as raised:
        ex.create_limit_sell_order("BTC/USDT", 0.1, 60000, {"clientOrderId": uuid})
    assert type(raised.value) is ccxt.ExchangeError
    # userref (an integer passed through as a raw param) works with fetch_order.
    tagged = ex.create_limit_sell_order("BTC/USDT", 0.1, 61000, {"userref": 42})
    assert sent(fake, ADD)["userref"] == "42"
    assert ex.fetch_order(tagged["id"], None, {"userref": 42})["clientOrderId"] == "42"
    assert [o["id"] for o in ex.fetch_open_orders(params={"userref": 42})] == [tagged["id"]]
    with pytest.raises(ccxt.OrderNotFound):  # a userref filter that excludes the txid
        ex.fetch_order(tagged["id"], None, {"userref": 7})
    assert len(fake.venue.orders) == 2


def test_cancel_order_by_txid_and_by_client_order_id(fake: FakeKraken, ex: ccxt.kraken) -> None:
    placed = ex.create_limit_sell_order("BTC/USDT", 0.3, 55000)
    canceled = ex.cancel_order(placed["id"])
    assert sent(fake, CANCEL) == {"txid": placed["id"]}
    # Kraken answers {"count": 1}: ccxt returns an order with no id and no status.
    assert canceled["info"] == {"error": [], "result": {"count": 1}}
    assert canceled["id"] is None and canceled["status"] is None
    after = ex.fetch_order(placed["id"])
    assert after["status"] == "canceled" and after["info"]["reason"] == "User requested"
    assert ex.fetch_balance()["BTC"] == {"free": 1.0, "used": 0.0, "total": 1.0}
    # Cancelling again: EOrder:Unknown order, which cancel_order turns into OrderNotFound.
    with pytest.raises(ccxt.OrderNotFound, match="EOrder:Unknown order"):
        ex.cancel_order(placed["id"])

    by_client = ex.create_limit_sell_order("BTC/USDT", 0.1, 56000, {"clientOrderId": "to-cancel"})
    ex.cancel_order(None, None, {"clientOrderId": "to-cancel"})
    assert sent(fake, CANCEL) == {"cl_ord_id": "to-cancel"}  # no txid at all
    assert ex.fetch_order(by_client["id"])["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(None, None, {"clientOrderId": "to-cancel"})


def test_fetch_open_and_closed_orders(fake: FakeKraken, ex: ccxt.kraken, clock: Clock) -> None:
    btc = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000)
    eth = ex.create_limit_sell_order("ETH/USDT", 1, 3500)
    clock.now += 60
    sold = ex.create_market_sell_order("BTC/USDT", 0.1)  # fills: never open
    assert {o["id"] for o in ex.fetch_open_orders()} == {btc["id"], eth["id"]}
    # The symbol is not sent: ccxt filters the reply itself.
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [btc["id"]]
    assert sent(fake, "/0/private/OpenOrders") == {}
    clock.now += 60
    ex.cancel_order(eth["id"])
    closed = ex.fetch_closed_orders()
    # ccxt sorts by timestamp (opentm).
    assert [(o["id"], o["status"]) for o in closed] == [
        (eth["id"], "canceled"),
        (sold["id"], "closed"),
    ]
    assert [o["id"] for o in ex.fetch_closed_orders("ETH/USDT")] == [eth["id"]]
    # Kraken's own order: newest (by close time) first, with a count.
    raw = ex.private_post_closedorders()["result"]
    assert list(raw["closed"]) == [eth["id"], sold["id"]] and raw["count"] == 2


def test_fetch_my_trades_and_kraken_s_exclusive_start(
    fake: FakeKraken, ex: ccxt.kraken, clock: Clock
) -> None:
    first = ex.create_market_sell_order("BTC/USDT", 0.1)
    clock.now += 60
    resting = ex.create_limit_sell_order("BTC/USDT", 0.2, 51000)
    clock.now += 60.5
    fake.venue.set_price("BTC/USDT", 51000)

    trades = ex.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in trades] == [first["id"], resting["id"]]
    assert [t["takerOrMaker"] for t in trades] == ["taker", "maker"]
    assert [t["side"] for t in trades] == ["sell", "sell"]
    assert trades[1]["amount"] == 0.2 and trades[1]["price"] == 51000
    assert trades[1]["fee"] == {"currency": "USDT", "cost": 10.2}
    assert trades[1]["timestamp"] == int(clock.now * 1000)
    assert sent(fake, "/0/private/TradesHistory") == {}
    assert ex.fetch_my_trades("ETH/USDT") == []  # filtered by ccxt, not by Kraken

    # ccxt sends since as whole seconds and Kraken's start is exclusive: a trade
    # made exactly at a whole-second since is not returned.
    at_first = int(clock.now * 1000) - 120_500  # the first trade's time, a whole second
    assert trades[0]["timestamp"] == at_first
    assert [t["order"] for t in ex.fetch_my_trades("BTC/USDT", at_first)] == [resting["id"]]
    assert sent(fake, "/0/private/TradesHistory") == {"start": str(at_first // 1000)}
    since = int(clock.now * 1000)  # the second trade's time, 500 ms past a whole second
    assert [t["order"] for t in ex.fetch_my_trades("BTC/USDT", since)] == [resting["id"]]


def test_stop_loss_rests_until_the_price_falls(fake: FakeKraken, ex: ccxt.kraken) -> None:
    stop = ex.create_order("BTC/USDT", "market", "sell", 0.1, None, {"stopLossPrice": 45000})
    assert sent(fake, ADD)["ordertype"] == "stop-loss" and sent(fake, ADD)["price"] == "45000"
    assert stop["info"]["descr"]["order"] == "sell 0.10000000 XBTUSDT @ stop loss 45000.00"
    assert stop["stopLossPrice"] == 45000 and stop["status"] is None
    fake.venue.set_price("BTC/USDT", 46000)
    assert ex.fetch_order(stop["id"])["status"] == "open"
    fake.venue.set_price("BTC/USDT", 44000)
    done = ex.fetch_order(stop["id"])
    assert done["status"] == "closed" and done["filled"] == 0.1 and done["average"] == 44000
    assert done["type"] == "market" and done["stopLossPrice"] == 45000

    limit = ex.create_order("BTC/USDT", "limit", "sell", 0.1, 43000, {"stopLossPrice": 43500})
    params = sent(fake, ADD)
    assert (params["ordertype"], params["price"], params["price2"]) == (
        "stop-loss-limit",
        "43500",
        "43000",
    )
    assert limit["price"] == 43000 and limit["stopLossPrice"] == 43500
    fetched = ex.fetch_order(limit["id"])
    assert (fetched["type"], fetched["price"], fetched["stopLossPrice"]) == ("limit", 43000, 43500)


def test_market_buy_by_cost_and_ioc(fake: FakeKraken, ex: ccxt.kraken) -> None:
    placed = ex.create_market_buy_order_with_cost("ETH/USDT", 300)
    assert sent(fake, ADD)["oflags"] == "viqc" and sent(fake, ADD)["volume"] == "300"
    assert placed["cost"] == 300 and placed["amount"] is None  # viqc: the volume is a cost
    assert ex.fetch_order(placed["id"])["filled"] == 0.1
    assert fake.venue.holdings("ETH") == Decimal("10.1")

    ioc = ex.create_order("BTC/USDT", "limit", "sell", 0.1, 52000, {"timeInForce": "IOC"})
    assert sent(fake, ADD)["timeinforce"] == "IOC"
    assert ex.fetch_order(ioc["id"])["status"] == "canceled"
    assert fake.venue.holdings("BTC") == 1 and fake.venue.open_orders() == []


# -- rejections and errors ----------------------------------------------------------------


def test_insufficient_funds(fake: FakeKraken, ex: ccxt.kraken) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="EOrder:Insufficient funds"):
        ex.create_market_sell_order("BTC/USDT", 2)
    assert fake.venue.orders == {} and fake.venue.holdings("BTC") == 1
    # Kraken reports errors with HTTP 200.
    assert fake.requests_to("POST", ADD)[-1].status == 200


@pytest.mark.parametrize(
    ("pair", "volume", "price", "extra", "message", "error"),
    [
        # More decimals than lot_decimals.
        ("XBTUSDT", "0.00015", "60000", {}, "arguments:volume", ccxt.InvalidOrder),
        # Below ordermin (SOL: 0.1).
        ("SOLUSDT", "0.05", "150", {}, "Order minimum not met", ccxt.InvalidOrder),
        # Below costmin: ccxt has no mapping.
        ("XBTUSDT", "0.0001", "40000", {}, "Cost minimum not met", ccxt.ExchangeError),
        # More decimals than pair_decimals; not a multiple of tick_size (SOL: 0.05).
        ("XBTUSDT", "0.1", "60000.001", {}, "Invalid price:XBTUSDT", ccxt.ExchangeError),
        ("SOLUSDT", "1", "150.01", {}, "Tick size check failed", ccxt.ExchangeError),
        ("NOPEUSDT", "1", "1", {}, "Unknown asset pair", ccxt.ExchangeError),
        ("XBTUSDT", "0.1", "-1", {}, "arguments:price", ccxt.InvalidOrder),
        (
            "XBTUSDT",
            "0.1",
            "1",
            {"ordertype": "iceberg"},
            "arguments:ordertype",
            ccxt.ExchangeError,
        ),
        # A post-only order that would take.
        ("XBTUSDT", "0.1", "40000", {"oflags": "post"}, "Post only order", ccxt.ExchangeError),
    ],
    ids=[
        "lot-decimals",
        "ordermin",
        "costmin",
        "price-decimals",
        "tick-size",
        "pair",
        "price",
        "ordertype",
        "post-only",
    ],
)
def test_add_order_rejections(
    fake: FakeKraken,
    ex: ccxt.kraken,
    pair: str,
    volume: str,
    price: str,
    extra: dict[str, str],
    message: str,
    error: type[Exception],
) -> None:
    # The raw endpoint: ccxt's unified methods would round these before sending.
    order = {"pair": pair, "type": "sell", "ordertype": "limit", "volume": volume, "price": price}
    with pytest.raises(error, match=re.escape(message)) as raised:
        ex.private_post_addorder({**order, **extra})
    assert type(raised.value) is error
    assert fake.venue.orders == {}


def test_validate_only_checks(fake: FakeKraken, ex: ccxt.kraken) -> None:
    reply = ex.private_post_addorder(
        {
            "pair": "XBTUSDT",
            "type": "sell",
            "ordertype": "market",
            "volume": "0.1",
            "validate": True,
        }
    )
    assert reply["result"] == {"descr": {"order": "sell 0.10000000 XBTUSDT @ market"}}
    assert fake.venue.orders == {}


def test_unknown_order_ids(ex: ccxt.kraken) -> None:
    # QueryOrders of an unknown txid: EOrder:Invalid order, which ccxt makes InvalidOrder.
    with pytest.raises(ccxt.InvalidOrder, match="EOrder:Invalid order") as raised:
        ex.fetch_order("OAAAAA-BBBBB-CCCCCC")
    assert type(raised.value) is ccxt.InvalidOrder  # not OrderNotFound
    with pytest.raises(ccxt.OrderNotFound, match="EOrder:Unknown order"):
        ex.cancel_order("OAAAAA-BBBBB-CCCCCC")
    # Outside cancel_order, EOrder:Unknown order is a plain InvalidOrder.
    with pytest.raises(ccxt.InvalidOrder) as raised:
        ex.private_post_cancelorder({"txid": "OAAAAA-BBBBB-CCCCCC"})
    assert type(raised.value) is ccxt.InvalidOrder


def test_bad_credentials(fake: FakeKraken) -> None:
    # A wrong secret: EAPI:Invalid signature, which ccxt.kraken does not map.
    with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature") as raised:
        fake.client(secret=OTHER_SECRET).fetch_balance()
    assert type(raised.value) is ccxt.ExchangeError  # NOT AuthenticationError
    with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
        fake.client(apiKey="wrong-key").fetch_balance()
    with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature"):
        fake.client(secret=OTHER_SECRET).create_market_sell_order("BTC/USDT", 0.1)
    assert fake.venue.orders == {}
    assert {r.status for r in fake.requests if r.signed} == {200}


def test_nonce_must_increase_per_key(fake: FakeKraken, ex: ccxt.kraken) -> None:
    ex.fetch_balance()
    # Another client whose nonces are behind: Kraken refuses them (InvalidNonce).
    behind = fake.client()
    behind.load_markets()
    behind.nonce = lambda: 1
    with pytest.raises(ccxt.InvalidNonce, match="EAPI:Invalid nonce"):
        behind.fetch_balance()
    with pytest.raises(ccxt.InvalidNonce):
        behind.create_market_sell_order("BTC/USDT", 0.1)
    assert fake.venue.orders == {}
    ex.fetch_balance()  # the first client goes on


def _sign(path: str, postdata: str, nonce: str, secret: str = DEFAULT_SECRET) -> str:
    """Kraken's API-Sign, as its docs define it."""
    digest = hashlib.sha256((nonce + postdata).encode()).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def _post(fake: FakeKraken, path: str, postdata: str, sign: str) -> dict[str, Any]:
    """Raw HTTP POST with Kraken's headers; Kraken's errors come with HTTP 200."""
    headers = {"API-Key": fake.api_key, "API-Sign": sign}
    url = fake.url + path  # http://127.0.0.1:PORT/...: a fixed scheme and host
    request = urllib.request.Request(url, data=postdata.encode(), method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def _signed_post(fake: FakeKraken, path: str, nonce: str, body: str = "") -> dict[str, Any]:
    postdata = f"nonce={nonce}" + (f"&{body}" if body else "")
    return _post(fake, path, postdata, _sign(path, postdata, nonce))


def test_signature_covers_path_nonce_and_body(fake: FakeKraken) -> None:
    invalid = {"error": ["EAPI:Invalid signature"]}
    order = "nonce=1000&pair=XBTUSDT&type=sell&ordertype=market&volume=0.1"
    sign = _sign(ADD, order, "1000")
    reply = _post(fake, ADD, order, sign)
    assert reply["error"] == [] and len(reply["result"]["txid"]) == 1
    # Replayed as is: the signature holds, the nonce is no longer greater than the last.
    assert _post(fake, ADD, order, sign) == {"error": ["EAPI:Invalid nonce"]}
    later = order.replace("nonce=1000", "nonce=1001")
    # The body changed after signing; signed for another path; another secret; garbage.
    assert _post(fake, ADD, later.replace("0.1", "0.9"), _sign(ADD, later, "1001")) == invalid
    assert _post(fake, ADD, later, _sign("/0/private/Balance", later, "1001")) == invalid
    assert _post(fake, ADD, later, _sign(ADD, later, "1001", OTHER_SECRET)) == invalid
    assert _post(fake, ADD, later, "not base64") == invalid
    assert len(fake.venue.orders) == 1
    # Nothing above consumed nonce 1001.
    assert _post(fake, ADD, later, _sign(ADD, later, "1001"))["error"] == []
    assert len(fake.venue.orders) == 2


def test_nonce_window_accepts_late_nonces_once() -> None:
    with FakeKraken(nonce_window=100) as fake:
        invalid = {"error": ["EAPI:Invalid nonce"]}
        assert _signed_post(fake, "/0/private/Balance", "500")["error"] == []
        assert _signed_post(fake, "/0/private/Balance", "450")["error"] == []
        assert _signed_post(fake, "/0/private/Balance", "450") == invalid  # used already
        assert _signed_post(fake, "/0/private/Balance", "400") == invalid  # outside the window
        assert _signed_post(fake, "/0/private/Balance", "501")["error"] == []
    with FakeKraken() as strict:
        assert _signed_post(strict, "/0/private/Balance", "500")["error"] == []
        assert _signed_post(strict, "/0/private/Balance", "499") == invalid


# -- faults -----------------------------------------------------------------------------


UNAVAILABLE = {"error": ["EService:Unavailable"]}
BUSY = {"error": ["EService:Busy"]}
RATE_LIMITED = {"error": ["EAPI:Rate limit exceeded"]}
INTERNAL = {"error": ["EGeneral:Internal error"]}


@pytest.mark.parametrize(
    ("fault", "status", "body", "error", "placed"),
    [
        # Kraken's gateway (Cloudflare) pages: the HTTP status decides.
        ("error_before", 500, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 502, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 503, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 520, None, ccxt.ExchangeNotAvailable, False),
        ("error_before", 429, None, ccxt.RateLimitExceeded, False),
        # Kraken's in-band errors (HTTP 200): the error string decides.
        ("error_before", 200, UNAVAILABLE, ccxt.ExchangeNotAvailable, False),
        ("error_before", 200, RATE_LIMITED, ccxt.DDoSProtection, False),
        ("error_before", 200, INTERNAL, ccxt.ExchangeNotAvailable, False),
        ("error_after", 500, None, ccxt.ExchangeNotAvailable, True),
        ("error_after", 504, None, ccxt.RequestTimeout, True),
        ("error_after", 200, BUSY, ccxt.ExchangeNotAvailable, True),
        ("drop_before", 500, None, ccxt.NetworkError, False),
        ("drop_after", 500, None, ccxt.NetworkError, True),
    ],
    ids=[
        "500-before",
        "502-before",
        "503-before",
        "520-before",
        "429-before",
        "unavailable-before",
        "rate-limit-before",
        "internal-before",
        "500-after",
        "504-after",
        "busy-after",
        "drop-before",
        "drop-after",
    ],
)
def test_add_order_faults(
    fake: FakeKraken,
    ex: ccxt.kraken,
    fault: str,
    status: int,
    body: dict[str, Any] | None,
    error: type[Exception],
    placed: bool,
) -> None:
    fake.inject("POST", ADD, fault, status=status, body=body)
    with pytest.raises(error) as raised:
        ex.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "ghost-1"})
    assert type(raised.value) is error
    assert fake.requests_to("POST", ADD)[-1].fault == fault
    # The client has no txid: its only handle on the order is the cl_ord_id.
    found = ex.fetch_closed_orders(params={"clientOrderId": "ghost-1"})
    if placed:
        # The venue executed the sell although the client saw an error: a ghost order.
        assert [o["status"] for o in found] == ["closed"]
        assert fake.venue.holdings("BTC") == Decimal("0.9")
    else:
        assert found == [] and fake.venue.orders == {} and fake.venue.holdings("BTC") == 1
    # The fault is used up: the next call goes through.
    assert TXID.match(ex.create_market_sell_order("BTC/USDT", 0.1)["id"])


def test_bad_json_replies_do_not_raise_or_mislead(fake: FakeKraken, ex: ccxt.kraken) -> None:
    """A 200 whose body is not JSON: ccxt.kraken mostly returns empty structures."""
    fake.inject("POST", ADD, "bad_json_after")
    order = ex.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "garbled"})
    assert order["id"] is None and order["status"] is None
    assert fake.venue.get(client_order_id="garbled").status == "closed"
    [ghost] = ex.fetch_closed_orders(params={"clientOrderId": "garbled"})
    # A garbled QueryOrders reply reads as "no such order": OrderNotFound.
    fake.inject("POST", QUERY, "bad_json_after")
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(ghost["id"])
    assert ex.fetch_order(ghost["id"])["status"] == "closed"
    fake.inject("POST", "/0/private/BalanceEx", "bad_json_after")
    assert ex.fetch_balance()["total"] == {}  # an empty balance, no error


def test_hang_after_leaves_the_client_timed_out(fake: FakeKraken) -> None:
    impatient = fake.client(timeout=300)
    impatient.load_markets()
    fake.inject("POST", ADD, "hang_after")
    with pytest.raises(ccxt.RequestTimeout):
        impatient.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "hung-1"})
    assert fake.wait_hung(1, timeout=5)
    assert fake.venue.get(client_order_id="hung-1").status == "closed"
    fake.release_hung()
    assert fake.requests_to("POST", ADD)[-1].fault == "hang_after"


def test_fault_applies_times_then_is_used_up(fake: FakeKraken, ex: ccxt.kraken) -> None:
    fake.inject("POST", "/0/private/BalanceEx", "error_before", times=2, status=503)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_balance()
    assert fake.pending_faults() == []
    assert ex.fetch_balance()["BTC"]["total"] == 1
    statuses = [r.status for r in fake.requests_to("POST", "/0/private/BalanceEx")]
    assert statuses == [503, 503, 200]


def test_inject_validates_its_arguments(fake: FakeKraken) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.inject("POST", ADD, "explode")
    with pytest.raises(ValueError, match="does not serve"):
        fake.inject("GET", ADD, "error_before")  # private methods are POST only


# -- the request log ------------------------------------------------------------------------


def test_requests_log_names_the_urls_ccxt_uses(fake: FakeKraken, ex: ccxt.kraken) -> None:
    ex.fetch_balance()
    ex.fetch_ticker("BTC/USDT")
    order = ex.create_limit_sell_order("BTC/USDT", 0.1, 55000)
    ex.fetch_order(order["id"])
    ex.fetch_open_orders()
    ex.cancel_order(order["id"])
    ex.fetch_closed_orders()
    ex.fetch_my_trades()
    assert [(r.method, r.path, r.signed) for r in fake.requests] == [
        ("GET", "/0/public/Assets", False),
        ("GET", "/0/public/AssetPairs", False),
        ("POST", "/0/private/BalanceEx", True),
        ("GET", "/0/public/Ticker", False),
        ("POST", ADD, True),
        ("POST", QUERY, True),
        ("POST", "/0/private/OpenOrders", True),
        ("POST", CANCEL, True),
        ("POST", "/0/private/ClosedOrders", True),
        ("POST", "/0/private/TradesHistory", True),
    ]
    nonces = [int(r.params["nonce"]) for r in fake.requests if r.signed]
    assert nonces == sorted(set(nonces))  # strictly increasing
    assert all(r.status == 200 for r in fake.requests)


def test_unknown_paths_get_404_and_are_recorded() -> None:
    with FakeKraken() as fake:
        client = fake.client()
        with pytest.raises(ccxt.ExchangeError, match="EGeneral:Unknown method"):
            client.private_post_tradebalance()  # a method the fake does not serve
        assert [(r.path, r.status) for r in fake.unknown] == [("/0/private/TradeBalance", 404)]


# -- async client ------------------------------------------------------------------------------


def test_async_client(fake: FakeKraken) -> None:
    async def scenario() -> None:
        client = fake.async_client()
        try:
            await client.load_markets()
            placed = await client.create_market_sell_order("BTC/USDT", 0.1)
            assert placed["status"] is None
            assert (await client.fetch_order(placed["id"]))["status"] == "closed"
            resting = await client.create_limit_sell_order("BTC/USDT", 0.1, 55000)
            assert (await client.fetch_order(resting["id"]))["status"] == "open"
            assert (await client.fetch_balance())["BTC"]["used"] == 0.1

            # A dropped POST surfaces as ExchangeNotAvailable (aiohttp); the order exists.
            fake.inject("POST", ADD, "drop_after")
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await client.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "a-ghost"})
            assert fake.venue.get(client_order_id="a-ghost").status == "closed"
            # Every private call is a POST: aiohttp does not re-send them, so a dropped
            # cancel surfaces (a dropped public GET would be retried once, silently).
            fake.inject("POST", CANCEL, "drop_after")
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await client.cancel_order(resting["id"])
            assert fake.venue.get(venue_id(fake, resting["id"])).status == "canceled"
            fake.inject("GET", "/0/public/Ticker", "drop_after")
            assert (await client.fetch_ticker("BTC/USDT"))["last"] == 50000
            assert [r.status for r in fake.requests_to("GET", "/0/public/Ticker")] == [None, 200]
        finally:
            await client.close()

    asyncio.run(scenario())
    assert fake.venue.holdings("BTC") == Decimal("0.8")
