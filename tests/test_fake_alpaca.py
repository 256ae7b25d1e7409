"""The loopback Alpaca trading fake, driven by a real, unmodified alpaca-py TradingClient.

These tests pin two things at once: that the fake speaks Alpaca's Trading API v2
the way alpaca-py expects it (every reply validates against alpaca-py's pydantic
models), and how alpaca-py turns Alpaca's replies and transport failures into
exceptions (``APIError`` with ``status_code``/``code``, ``requests`` errors, its
own 429/504 retries): what nija_guard has to classify. Alpaca's reply to an
order submission says ``accepted`` and nothing filled: every order test confirms
through ``get_order_by_id``, as a client has to.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (
    AssetClass,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    QueryOrderStatus,
    TimeInForce,
)
from alpaca.trading.models import (
    ClosePositionResponse,
    FailedClosePositionDetails,
    Order,
    Position,
    TradeAccount,
)
from alpaca.trading.requests import (
    CancelOrderResponse,
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)
from conftest import Clock
from fakes.alpaca_trading import (
    ACCOUNT,
    BY_CLIENT_ID,
    ORDER,
    ORDERS,
    POSITION,
    FakeAlpaca,
)

from nija_guard.testing import Venue


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeAlpaca]:
    with FakeAlpaca(positions={"AAPL": 10, "MSFT": 5}, cash=100_000, clock=clock) as fake:
        yield fake
    assert fake.server_errors == [], fake.server_errors[0]


@pytest.fixture
def client(fake: FakeAlpaca) -> TradingClient:
    return fake.client()


def sell(symbol: str = "AAPL", qty: float = 4, **kw: Any) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, **kw
    )


def limit_sell(qty: float, price: float, **kw: Any) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide.SELL,
        time_in_force=TimeInForce.GTC,
        limit_price=price,
        **kw,
    )


def api_error(exc: pytest.ExceptionInfo[APIError]) -> tuple[int | None, int, str]:
    return exc.value.status_code, exc.value.code, exc.value.message


def statuses(fake: FakeAlpaca, method: str, path: str) -> list[tuple[int | None, str | None]]:
    return [(r.status, r.fault) for r in fake.requests_to(method, path)]


# -- account and assets ---------------------------------------------------------------
def test_account_is_a_trade_account_derived_from_the_venue(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    account = client.get_account()
    assert isinstance(account, TradeAccount)
    assert account.status == "ACTIVE"
    assert account.currency == "USD"
    assert Decimal(account.cash or "") == 100_000
    assert Decimal(account.buying_power or "") == 100_000
    # 10 AAPL at 190 and 5 MSFT at 420
    assert Decimal(account.long_market_value or "") == 1900 + 2100
    assert Decimal(account.equity or "") == 104_000
    assert account.shorting_enabled is False
    assert fake.requests_to("GET", ACCOUNT)[0].signed is True


def test_buying_power_excludes_cash_held_for_an_open_buy(client: TradingClient) -> None:
    client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=10,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=150,
        )
    )
    account = client.get_account()
    assert Decimal(account.cash or "") == 100_000
    assert Decimal(account.buying_power or "") == 100_000 - 1500


def test_assets(client: TradingClient) -> None:
    aapl = client.get_asset("AAPL")
    assert aapl.symbol == "AAPL"
    assert aapl.asset_class == AssetClass.US_EQUITY
    assert aapl.tradable and aapl.fractionable
    assert aapl.min_trade_increment == pytest.approx(1e-9)
    assert aapl.price_increment == pytest.approx(0.01)
    assert client.get_asset(aapl.id) == aapl  # by asset id too
    whole = client.get_asset("WHOLE")
    assert whole.fractionable is False
    assert whole.min_trade_increment == 1
    btc = client.get_asset("BTC/USD")
    assert btc.asset_class == AssetClass.CRYPTO
    assert btc.min_order_size == pytest.approx(0.0001)
    with pytest.raises(APIError) as exc:
        client.get_asset("NOPE")
    assert api_error(exc) == (404, 40410000, "asset not found")


# -- orders -----------------------------------------------------------------------------
def test_market_sell_fills_and_the_position_drops(fake: FakeAlpaca, client: TradingClient) -> None:
    placed = client.submit_order(sell(qty=4, client_order_id="exit-1"))
    assert isinstance(placed, Order)
    # The reply acknowledges: nothing about the fill yet, as on Alpaca.
    assert placed.status == OrderStatus.ACCEPTED
    assert placed.filled_qty == "0"
    assert placed.filled_at is None
    assert placed.client_order_id == "exit-1"
    assert placed.symbol == "AAPL"
    assert placed.qty == "4"
    assert placed.side == OrderSide.SELL
    assert placed.type == OrderType.MARKET

    order = client.get_order_by_id(placed.id)
    assert order.status == OrderStatus.FILLED
    assert order.filled_qty == "4"
    assert order.filled_avg_price == "190"
    assert order.filled_at is not None and order.filled_at >= order.submitted_at
    assert fake.holdings("AAPL") == 6
    assert fake.cash == 100_000 + 4 * 190

    position = client.get_open_position("AAPL")
    assert isinstance(position, Position)
    assert position.qty == "6"
    assert position.qty_available == "6"
    assert position.side == PositionSide.LONG
    assert Decimal(position.market_value or "") == 6 * 190
    assert Decimal(client.get_account().cash or "") == 100_760


def test_fractional_market_sell_and_a_notional_buy(fake: FakeAlpaca, client: TradingClient) -> None:
    client.submit_order(sell(qty=0.1))
    assert fake.orders_sent()[0]["qty"] == 0.1  # as alpaca-py sent it: a JSON number
    assert fake.holdings("AAPL") == Decimal("9.9")
    bought = client.submit_order(
        MarketOrderRequest(
            symbol="MSFT", notional=105, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
    )
    assert bought.notional == "105" and bought.qty is None
    order = client.get_order_by_id(bought.id)
    assert order.filled_qty == "0.25"  # 105 / 420
    assert fake.holdings("MSFT") == Decimal("5.25")


def test_client_order_id_round_trip(fake: FakeAlpaca, client: TradingClient) -> None:
    placed = client.submit_order(limit_sell(2, 250, client_order_id="my-id-42"))
    found = client.get_order_by_client_id("my-id-42")
    assert found.id == placed.id
    assert found.client_order_id == "my-id-42"
    assert found.status == OrderStatus.NEW
    assert fake.requests_to("GET", BY_CLIENT_ID)[0].params == {"client_order_id": "my-id-42"}
    with pytest.raises(APIError) as exc:
        client.get_order_by_client_id("never-sent")
    assert api_error(exc) == (404, 40410000, "order not found")
    # Without a client_order_id Alpaca makes one up (a UUID).
    other = client.submit_order(sell(qty=1))
    uuid.UUID(other.client_order_id)
    assert client.get_order_by_client_id(other.client_order_id).id == other.id


def test_duplicate_client_order_id_is_refused_whatever_the_first_orders_status(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    first = client.submit_order(sell(qty=1, client_order_id="once"))
    assert client.get_order_by_id(first.id).status == OrderStatus.FILLED
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=1, client_order_id="once"))
    assert api_error(exc) == (422, 40010001, "client_order_id must be unique")
    assert fake.holdings("AAPL") == 9  # only the first one sold

    resting = client.submit_order(limit_sell(1, 300, client_order_id="cancelled-one"))
    client.cancel_order_by_id(resting.id)
    with pytest.raises(APIError) as exc:
        client.submit_order(limit_sell(1, 300, client_order_id="cancelled-one"))
    assert exc.value.status_code == 422
    assert len(fake.venue.orders) == 2


def test_client_order_id_longer_than_128_characters_is_refused(client: TradingClient) -> None:
    client.submit_order(limit_sell(1, 300, client_order_id="x" * 128))
    with pytest.raises(APIError) as exc:
        client.submit_order(limit_sell(1, 300, client_order_id="y" * 129))
    assert exc.value.status_code == 422
    assert exc.value.code == 40010001


def test_a_sell_beyond_the_available_qty_is_refused_with_403(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=11))
    assert api_error(exc) == (
        403,
        40310000,
        "insufficient qty available for order (requested: 11, available: 10)",
    )
    # A resting sell holds its qty: what is left available is what can be sold.
    resting = client.submit_order(limit_sell(4, 250))
    assert client.get_open_position("AAPL").qty_available == "6"
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=7))
    assert exc.value.status_code == 403
    assert exc.value.message == "insufficient qty available for order (requested: 7, available: 6)"
    details = exc.value.response.json()
    assert details["existing_qty"] == "10"
    assert details["held_for_orders"] == "4"
    assert details["related_orders"] == [str(resting.id)]
    # No shorting: nothing held, nothing to sell.
    with pytest.raises(APIError) as exc:
        client.submit_order(sell("WHOLE", qty=1))
    assert exc.value.status_code == 403
    assert fake.holdings("AAPL") == 10
    assert fake.holdings("WHOLE") == 0


def test_a_buy_beyond_buying_power_is_refused_with_403(client: TradingClient) -> None:
    with pytest.raises(APIError) as exc:
        client.submit_order(
            MarketOrderRequest(
                symbol="MSFT", qty=1000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
    assert api_error(exc) == (403, 40310000, "insufficient buying power")


def test_fractional_qty_of_a_whole_share_asset_is_refused(fake: FakeAlpaca) -> None:
    fake.venue.deposit("WHOLE", 3)
    client = fake.client()
    with pytest.raises(APIError) as exc:
        client.submit_order(sell("WHOLE", qty=1.5))
    assert api_error(exc) == (422, 42210000, "requested asset is not fractionable")
    client.submit_order(sell("WHOLE", qty=1))
    assert fake.holdings("WHOLE") == 2


def test_invalid_orders_are_refused_with_422(fake: FakeAlpaca, client: TradingClient) -> None:
    with pytest.raises(APIError) as exc:
        client.submit_order(sell("NOPE", qty=1))
    assert api_error(exc) == (422, 40010001, 'asset "NOPE" not found')
    with pytest.raises(APIError) as exc:
        client.submit_order(limit_sell(1, 250.123))
    assert exc.value.status_code == 422
    assert "sub-penny increment" in exc.value.message
    with pytest.raises(APIError) as exc:
        client.submit_order(limit_sell(0.5, 250))  # fractional: DAY orders only
    assert exc.value.status_code == 422
    with pytest.raises(APIError) as exc:
        client.submit_order(
            MarketOrderRequest(
                symbol="BTC/USD", qty=0.01, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
    assert api_error(exc) == (422, 42210000, "invalid crypto time_in_force")
    # Bodies alpaca-py would not build: a raw POST through the client's own session.
    for body, field in (
        (
            {
                "symbol": "AAPL",
                "qty": "1",
                "side": "short",
                "type": "market",
                "time_in_force": "day",
            },
            "side",
        ),
        (
            {
                "symbol": "AAPL",
                "qty": "0",
                "side": "sell",
                "type": "market",
                "time_in_force": "day",
            },
            "qty",
        ),
        (
            {"symbol": "AAPL", "qty": "1", "side": "sell", "type": "bogus", "time_in_force": "day"},
            "type",
        ),
    ):
        with pytest.raises(APIError) as exc:
            client.post("/orders", body)
        assert api_error(exc) == (422, 40010001, f"invalid {field}")
    assert fake.venue.orders == {}
    assert len(fake.orders_sent()) == 7


def test_resting_limit_sell_then_partial_and_full_fill(
    fake: FakeAlpaca, client: TradingClient, clock: Clock
) -> None:
    placed = client.submit_order(limit_sell(5, 200, client_order_id="tp-1"))
    order = client.get_order_by_id(placed.id)
    assert order.status == OrderStatus.NEW
    assert order.limit_price == "200"
    assert order.filled_qty == "0"
    assert order.filled_avg_price is None
    assert client.get_open_position("AAPL").qty_available == "5"

    clock.tick()
    fake.fill(str(placed.id), 2)
    order = client.get_order_by_id(placed.id)
    assert order.status == OrderStatus.PARTIALLY_FILLED
    assert order.filled_qty == "2"
    assert order.filled_avg_price == "200"
    assert order.filled_at is None
    assert order.updated_at > order.created_at
    position = client.get_open_position("AAPL")
    assert (position.qty, position.qty_available) == ("8", "5")

    clock.tick()
    fake.fill(str(placed.id))
    order = client.get_order_by_id(placed.id)
    assert order.status == OrderStatus.FILLED
    assert order.filled_qty == "5"
    assert order.filled_at == datetime.fromtimestamp(clock.now, tz=timezone.utc)
    assert fake.holdings("AAPL") == 5


def test_a_price_move_fills_a_resting_limit_and_triggers_a_stop(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    take_profit = client.submit_order(limit_sell(3, 200))
    stop = client.submit_order(
        StopOrderRequest(
            symbol="MSFT",
            qty=5,
            side=OrderSide.SELL,
            time_in_force=TimeInForce.GTC,
            stop_price=400,
        )
    )
    assert client.get_order_by_id(stop.id).status == OrderStatus.NEW
    assert fake.set_price("AAPL", 201) == [str(take_profit.id)]
    assert client.get_order_by_id(take_profit.id).status == OrderStatus.FILLED
    assert fake.set_price("MSFT", 399) == [str(stop.id)]
    order = client.get_order_by_id(stop.id)
    assert order.status == OrderStatus.FILLED
    assert order.stop_price == "400"
    assert order.filled_avg_price == "399"
    assert fake.holdings("MSFT") == 0


def test_get_orders_filters(fake: FakeAlpaca, client: TradingClient, clock: Clock) -> None:
    resting_aapl = client.submit_order(limit_sell(1, 250))
    clock.tick()
    resting_msft = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=1,
            side=OrderSide.SELL,
            time_in_force=TimeInForce.GTC,
            limit_price=500,
        )
    )
    clock.tick()
    filled = client.submit_order(sell(qty=1))

    open_aapl = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=["AAPL"]))
    assert [o.id for o in open_aapl] == [resting_aapl.id]
    assert fake.requests_to("GET", ORDERS)[0].params == {"status": "open", "symbols": "AAPL"}
    assert {o.id for o in client.get_orders()} == {resting_aapl.id, resting_msft.id}  # open
    closed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [o.id for o in closed] == [filled.id]
    everything = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert [o.id for o in everything] == [filled.id, resting_msft.id, resting_aapl.id]  # newest 1st
    oldest_first = client.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc", limit=2)
    )
    assert [o.id for o in oldest_first] == [resting_aapl.id, resting_msft.id]
    after = datetime.fromtimestamp(clock.now - 1.5, tz=timezone.utc)
    recent = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, after=after))
    assert [o.id for o in recent] == [filled.id, resting_msft.id]
    until = after - timedelta(seconds=0.5)  # inclusive: the first order, placed at that time
    old = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, until=until))
    assert [o.id for o in old] == [resting_aapl.id]
    buys = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, side=OrderSide.BUY))
    assert buys == []


def test_cancel_order_by_id(fake: FakeAlpaca, client: TradingClient) -> None:
    resting = client.submit_order(limit_sell(4, 250))
    assert client.cancel_order_by_id(resting.id) is None  # 204, no body
    assert statuses(fake, "DELETE", ORDER) == [(204, None)]
    assert fake.requests_to("DELETE", ORDER)[0].params == {"order_id": str(resting.id)}
    order = client.get_order_by_id(resting.id)
    assert order.status == OrderStatus.CANCELED
    assert order.canceled_at is not None
    assert client.get_open_position("AAPL").qty_available == "10"  # the hold is released
    with pytest.raises(APIError) as exc:
        client.cancel_order_by_id(resting.id)
    assert api_error(exc) == (422, 42210000, 'order is already in "canceled" state')
    with pytest.raises(APIError) as exc:
        client.cancel_order_by_id(uuid.uuid4())
    assert api_error(exc) == (404, 40410000, "order not found")


def test_cancel_all_orders(fake: FakeAlpaca, client: TradingClient) -> None:
    first = client.submit_order(limit_sell(1, 250))
    second = client.submit_order(limit_sell(1, 260))
    client.submit_order(sell(qty=1))  # filled: not cancelled
    responses = client.cancel_orders()
    assert all(isinstance(r, CancelOrderResponse) for r in responses)
    assert {(r.id, r.status) for r in responses} == {(first.id, 200), (second.id, 200)}
    assert statuses(fake, "DELETE", ORDERS) == [(207, None)]
    assert client.get_orders() == []


def test_replace_order(fake: FakeAlpaca, client: TradingClient) -> None:
    old = client.submit_order(limit_sell(4, 250, client_order_id="first"))
    new = client.replace_order_by_id(old.id, ReplaceOrderRequest(qty=6, limit_price=240))
    assert new.id != old.id
    assert new.replaces == old.id
    assert new.client_order_id not in ("first", "")
    replaced = client.get_order_by_id(old.id)
    assert replaced.status == OrderStatus.REPLACED
    assert replaced.replaced_by == new.id
    assert replaced.replaced_at is not None
    current = client.get_order_by_id(new.id)
    assert (current.status, current.qty, current.limit_price) == (OrderStatus.NEW, "6", "240")
    assert client.get_open_position("AAPL").qty_available == "4"
    assert [o.id for o in client.get_orders()] == [new.id]
    with pytest.raises(APIError) as exc:
        client.replace_order_by_id(old.id, ReplaceOrderRequest(limit_price=230))
    assert api_error(exc) == (422, 42210000, 'order is already in "replaced" state')
    # The replacing order may not hold more than the position has.
    with pytest.raises(APIError) as exc:
        client.replace_order_by_id(new.id, ReplaceOrderRequest(qty=11))
    assert exc.value.status_code == 403
    assert client.get_order_by_id(new.id).status == OrderStatus.NEW


# -- positions ------------------------------------------------------------------------
def test_positions(fake: FakeAlpaca, client: TradingClient) -> None:
    fake.set_price("AAPL", 200)
    positions = client.get_all_positions()
    assert [p.symbol for p in positions] == ["AAPL", "MSFT"]
    aapl = positions[0]
    assert aapl.asset_class == AssetClass.US_EQUITY
    assert (aapl.qty, aapl.avg_entry_price, aapl.current_price) == ("10", "190", "200")
    assert aapl.unrealized_pl == "100"
    assert aapl.lastday_price == "190"
    with pytest.raises(APIError) as exc:
        client.get_open_position("WHOLE")
    assert api_error(exc) == (404, 40410000, "position does not exist")
    assert fake.requests_to("GET", POSITION)[-1].params == {"symbol_or_asset_id": "WHOLE"}


def test_average_entry_price_follows_buys(fake: FakeAlpaca, client: TradingClient) -> None:
    fake.set_price("AAPL", 210)
    client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force="day")
    )
    assert client.get_open_position("AAPL").avg_entry_price == "200"  # (10*190 + 10*210) / 20


def test_crypto_position_is_named_without_the_slash(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    placed = client.submit_order(
        MarketOrderRequest(
            symbol="BTC/USD", notional=600, side=OrderSide.BUY, time_in_force=TimeInForce.GTC
        )
    )
    assert client.get_order_by_id(placed.id).filled_qty == "0.01"
    position = client.get_open_position("BTCUSD")
    assert (position.symbol, position.asset_class, position.qty) == (
        "BTCUSD",
        AssetClass.CRYPTO,
        "0.01",
    )
    order = client.close_position("BTCUSD")
    assert order.symbol == "BTC/USD"
    assert order.time_in_force == TimeInForce.GTC
    assert fake.holdings("BTC/USD") == 0


def test_close_position(fake: FakeAlpaca, client: TradingClient) -> None:
    half = client.close_position("AAPL", ClosePositionRequest(percentage="50"))
    assert isinstance(half, Order)
    assert (half.side, half.type, half.qty) == (OrderSide.SELL, OrderType.MARKET, "5")
    assert client.get_order_by_id(half.id).status == OrderStatus.FILLED
    assert fake.holdings("AAPL") == 5
    assert fake.requests_to("DELETE", POSITION)[0].params == {
        "percentage": "50",
        "symbol_or_asset_id": "AAPL",
    }
    client.close_position("AAPL", ClosePositionRequest(qty="2"))
    assert fake.holdings("AAPL") == 3
    rest = client.close_position("AAPL")
    assert rest.qty == "3"
    with pytest.raises(APIError) as exc:
        client.get_open_position("AAPL")
    assert api_error(exc) == (404, 40410000, "position does not exist")
    with pytest.raises(APIError) as exc:
        client.close_position("AAPL")
    assert exc.value.status_code == 404


def test_close_position_held_by_an_open_order_is_refused(client: TradingClient) -> None:
    client.submit_order(limit_sell(10, 250))
    with pytest.raises(APIError) as exc:
        client.close_position("AAPL")
    assert api_error(exc) == (
        403,
        40310000,
        "insufficient qty available for order (requested: 10, available: 0)",
    )


def test_close_all_positions(fake: FakeAlpaca, client: TradingClient) -> None:
    resting = client.submit_order(limit_sell(10, 250))
    # Without cancel_orders, the AAPL position held by the resting sell is refused.
    responses = client.close_all_positions()
    assert all(isinstance(r, ClosePositionResponse) for r in responses)
    by_symbol = {r.symbol: r for r in responses}
    assert by_symbol["MSFT"].status == 200
    assert isinstance(by_symbol["MSFT"].body, Order)
    assert by_symbol["AAPL"].status == 403
    refusal = by_symbol["AAPL"].body
    assert isinstance(refusal, FailedClosePositionDetails)
    assert (refusal.code, refusal.available, refusal.held_for_orders) == (40310000, 0, 10)
    assert fake.holdings("MSFT") == 0 and fake.holdings("AAPL") == 10

    responses = client.close_all_positions(cancel_orders=True)
    assert [(r.symbol, r.status) for r in responses] == [("AAPL", 200)]
    assert client.get_order_by_id(resting.id).status == OrderStatus.CANCELED
    assert client.get_all_positions() == []
    assert fake.holdings("AAPL") == 0
    assert client.close_all_positions() == []


# -- authentication, unknown routes ------------------------------------------------------
def test_wrong_keys_are_refused_with_401(fake: FakeAlpaca) -> None:
    for client in (fake.client(secret_key="wrong-secret"), fake.client(api_key="PKWRONG")):
        with pytest.raises(APIError) as exc:
            client.submit_order(sell(qty=1))
        assert api_error(exc) == (401, 40110000, "request is not authorized")
        with pytest.raises(APIError) as exc:
            client.get_account()
        assert exc.value.status_code == 401
    assert fake.venue.orders == {}
    assert [r.signed for r in fake.requests] == [False] * 4
    fake.client().get_account()
    assert fake.requests[-1].signed is True


def test_unknown_routes_are_recorded(fake: FakeAlpaca, client: TradingClient) -> None:
    with pytest.raises(APIError) as exc:
        client.get_clock()
    assert exc.value.status_code == 404
    with pytest.raises(APIError):
        client.get_watchlists()
    assert [(r.method, r.path) for r in fake.unknown] == [
        ("GET", "/v2/clock"),
        ("GET", "/v2/watchlists"),
    ]
    client.get_account()
    assert len(fake.unknown) == 2


def test_a_fake_made_on_a_given_venue(clock: Clock) -> None:
    from fakes.alpaca_trading import DEFAULT_ASSETS

    venue = Venue(
        markets={a.venue_symbol: a.market() for a in DEFAULT_ASSETS},
        free={"USD": Decimal(1000), "AAPL": Decimal(2)},
        clock=clock,
        fee_rate=Decimal(0),
    )
    direct = venue.place("AAPL/USD", "sell", "limit", 1, 300, client_order_id="on-venue")
    with FakeAlpaca(venue, clock=clock) as fake:
        client = fake.client()
        # An order placed on the venue directly is an Alpaca order too.
        order = client.get_order_by_client_id("on-venue")
        assert order.id == uuid.UUID(fake.alpaca_id(direct.id))
        assert (order.status, order.limit_price) == (OrderStatus.NEW, "300")
        assert client.get_open_position("AAPL").qty_available == "1"
    with pytest.raises(TypeError):
        FakeAlpaca(venue, positions={"AAPL": 1})


# -- faults ----------------------------------------------------------------------------
def test_drop_after_raises_connection_error_and_the_order_exists(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "drop_after")
    with pytest.raises(requests.ConnectionError):
        client.submit_order(sell(qty=3, client_order_id="lost-reply"))
    assert statuses(fake, "POST", ORDERS) == [(None, "drop_after")]
    order = client.get_order_by_client_id("lost-reply")
    assert order.status == OrderStatus.FILLED
    assert fake.holdings("AAPL") == 7


def test_drop_before_raises_connection_error_and_nothing_happened(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "drop_before")
    with pytest.raises(requests.ConnectionError):
        client.submit_order(sell(qty=3, client_order_id="never-placed"))
    with pytest.raises(APIError) as exc:
        client.get_order_by_client_id("never-placed")
    assert exc.value.status_code == 404
    assert fake.holdings("AAPL") == 10
    assert fake.orders_sent()[0]["client_order_id"] == "never-placed"


def test_error_after_500_raises_api_error_and_the_order_exists(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "error_after", status=500)
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=2, client_order_id="failed-reply"))
    assert api_error(exc) == (500, 50010000, "internal server error occurred")
    assert statuses(fake, "POST", ORDERS) == [(500, "error_after")]  # 500: not retried
    assert client.get_order_by_client_id("failed-reply").status == OrderStatus.FILLED
    assert fake.holdings("AAPL") == 8


def test_error_before_503_is_an_html_page_and_nothing_happened(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "error_before", status=503)
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=2))
    assert exc.value.status_code == 503
    assert "<html>" in str(exc.value)
    assert fake.venue.orders == {}


def test_bad_json_after_raises_a_decode_error_and_the_order_exists(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "bad_json_after")
    with pytest.raises(requests.JSONDecodeError):
        client.submit_order(sell(qty=1, client_order_id="garbled"))
    assert client.get_order_by_client_id("garbled").status == OrderStatus.FILLED


def test_hang_after_holds_the_reply_until_released(fake: FakeAlpaca, client: TradingClient) -> None:
    fake.inject("DELETE", ORDER, "hang_after")
    resting = client.submit_order(limit_sell(2, 250))
    outcome: list[Any] = []

    def cancel() -> None:
        try:
            outcome.append(fake.client().cancel_order_by_id(resting.id))
        except Exception as exc:  # pragma: no cover - reported by the assert below
            outcome.append(exc)

    worker = threading.Thread(target=cancel)
    worker.start()
    try:
        assert fake.wait_hung(1, timeout=5)
        # The venue acted while the client still waits for its reply.
        assert fake.venue_order(str(resting.id)).status == "canceled"
        assert outcome == []
    finally:
        fake.release_hung()
        worker.join(timeout=5)
    assert outcome == [None]
    assert statuses(fake, "DELETE", ORDER) == [(204, "hang_after")]


def test_504_after_execution_then_the_clients_retry_hits_the_duplicate_client_order_id(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "error_after", status=504)
    with pytest.raises(APIError) as exc:
        client.submit_order(sell(qty=3, client_order_id="retried"))
    # alpaca-py retried the 504 by itself; the retry was refused as a duplicate.
    assert api_error(exc) == (422, 40010001, "client_order_id must be unique")
    assert statuses(fake, "POST", ORDERS) == [(504, "error_after"), (422, None)]
    sent = fake.orders_sent()
    assert len(sent) == 2 and sent[0] == sent[1]
    assert sent[0]["client_order_id"] == "retried"
    # The order executed exactly once.
    assert len(fake.venue.orders) == 1
    assert client.get_order_by_client_id("retried").status == OrderStatus.FILLED
    assert fake.holdings("AAPL") == 7


def test_504_retry_without_a_client_order_id_executes_twice(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    fake.inject("POST", ORDERS, "error_after", status=504)
    placed = client.submit_order(sell(qty=3))  # the retry succeeds: a second order
    assert statuses(fake, "POST", ORDERS) == [(504, "error_after"), (200, None)]
    assert len(fake.venue.orders) == 2
    assert fake.holdings("AAPL") == 4
    assert client.get_order_by_id(placed.id).status == OrderStatus.FILLED


def test_429_is_retried_by_the_client(fake: FakeAlpaca, client: TradingClient) -> None:
    fake.inject("GET", ACCOUNT, "error_before", status=429, times=2)
    assert isinstance(client.get_account(), TradeAccount)
    assert statuses(fake, "GET", ACCOUNT) == [
        (429, "error_before"),
        (429, "error_before"),
        (200, None),
    ]


def test_inject_knows_the_templated_routes(fake: FakeAlpaca) -> None:
    with pytest.raises(ValueError, match="does not serve"):
        fake.inject("GET", "/v2/orders/123", "error_before")
    fake.inject("PATCH", ORDER, "error_before", status=500)
    assert fake.pending_faults() == [("PATCH", ORDER, "error_before", 1)]


def test_error_after_on_replace_leaves_the_old_order_replaced(
    fake: FakeAlpaca, client: TradingClient
) -> None:
    old = client.submit_order(limit_sell(4, 250))
    fake.inject("PATCH", ORDER, "error_after", status=500)
    with pytest.raises(APIError) as exc:
        client.replace_order_by_id(old.id, ReplaceOrderRequest(limit_price=240))
    assert exc.value.status_code == 500
    assert statuses(fake, "PATCH", ORDER) == [(500, "error_after")]
    replaced = client.get_order_by_id(old.id)
    assert replaced.status == OrderStatus.REPLACED
    assert replaced.replaced_by is not None
    assert client.get_order_by_id(replaced.replaced_by).limit_price == "240"


def test_ack_status_none_replies_with_the_order_as_placed(clock: Clock) -> None:
    with FakeAlpaca(positions={"AAPL": 10}, ack_status=None, clock=clock) as fake:
        placed = fake.client().submit_order(sell(qty=4))
        assert (placed.status, placed.filled_qty, placed.filled_avg_price) == (
            OrderStatus.FILLED,
            "4",
            "190",
        )
