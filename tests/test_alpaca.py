"""alpaca-py's TradingClient guarded end to end, offline: what is particular to Alpaca.

The guarantee suite runs on it in tests/test_brokers.py; these are the cases
its API adds: alpaca-py's own retry of a POST after a 504, notional sells,
whole-share assets, crypto positions named without the slash, close_position
and close_all_positions, a replace refused, Alpaca's refusals as APIError.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from conftest import FAST, Recorder, wait_until
from fakes.alpaca_trading import ORDERS, FakeAlpaca

import nija_guard


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(
        positions={"AAPL": 10, "WHOLE": 3, "BTC/USD": 0.5}, api_key=f"k-{uuid.uuid4().hex}"
    ) as fake:
        yield fake
        assert fake.unknown == []


@pytest.fixture
def ex(fake: FakeAlpaca, recorder: Recorder) -> Iterator[Any]:
    guarded = nija_guard.guard(fake.client(), **FAST, plugins=[recorder])
    yield guarded
    guarded.nija_guard.close()


def market(symbol: str, side: OrderSide = OrderSide.SELL, **amount: Any) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, side=side, time_in_force=TimeInForce.DAY, **amount)


def settled(ex: Any) -> None:
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])


def test_guard_recognizes_the_trading_client(fake: FakeAlpaca, ex: Any) -> None:
    assert isinstance(ex, TradingClient)
    assert type(ex.nija_guard.adapter).__name__ == "AlpacaAdapter"
    assert ex.nija_guard.account.startswith("alpaca:")
    assert ex.get_account().status is not None  # everything else passes through


def test_alpaca_py_retrying_a_504_never_sells_twice(
    fake: FakeAlpaca, ex: Any, recorder: Recorder
) -> None:
    """The order executed; the reply was a 504; alpaca-py posted it again by itself.

    The guard's client order id makes the retry a duplicate (422), which the guard
    reads as "the order exists" and finds by its client id.
    """
    fake.inject("POST", ORDERS, "error_after", status=504)
    order = ex.submit_order(market("AAPL", qty=10))
    assert order.status == OrderStatus.FILLED and float(order.filled_qty) == 10
    assert [(r.status, r.fault) for r in fake.requests_to("POST", ORDERS)] == [
        (504, "error_after"),
        (422, None),
    ]
    assert fake.holdings("AAPL") == 0
    assert len(recorder.wait_for("order_settled")) == 1
    settled(ex)


def test_a_notional_sell_is_sent_as_the_clamped_qty(fake: FakeAlpaca, ex: Any) -> None:
    ex.submit_order(market("AAPL", notional=100_000))  # far more than the 10 shares are worth
    [sent] = fake.orders_sent()
    assert float(sent["qty"]) == 10 and "notional" not in sent
    settled(ex)
    assert fake.holdings("AAPL") == 0


def test_whole_share_assets_are_floored_to_whole_shares(
    fake: FakeAlpaca, ex: Any, recorder: Recorder
) -> None:
    ex.submit_order(market("WHOLE", qty=7.5))
    [sent] = fake.orders_sent()
    assert float(sent["qty"]) == 3
    settled(ex)
    assert fake.holdings("WHOLE") == 0


def test_crypto_holdings_are_read_from_the_slashless_position(fake: FakeAlpaca, ex: Any) -> None:
    ex.submit_order(
        MarketOrderRequest(symbol="BTC/USD", qty=2, side=OrderSide.SELL, time_in_force="gtc")
    )
    [sent] = fake.orders_sent()
    assert float(sent["qty"]) == 0.5
    settled(ex)
    assert fake.holdings("BTC/USD") == 0


def test_close_position_is_an_exit_and_a_second_finds_nothing(
    fake: FakeAlpaca, ex: Any, recorder: Recorder
) -> None:
    ex.close_position("AAPL")
    settled(ex)
    assert fake.holdings("AAPL") == 0
    with pytest.raises(nija_guard.NothingToSell):
        ex.close_position("AAPL")
    assert len(fake.requests_to("DELETE", "/v2/positions/{symbol_or_asset_id}")) == 1


def test_close_all_positions_waits_for_no_resting_exit(fake: FakeAlpaca, ex: Any) -> None:
    resting = ex.submit_order(
        LimitOrderRequest(
            symbol="AAPL", qty=5, side=OrderSide.SELL, limit_price=500, time_in_force="day"
        )
    )
    with pytest.raises(nija_guard.ExitInProgress):
        ex.close_all_positions(cancel_orders=True)
    ex.cancel_order_by_id(resting.id)
    settled(ex)
    ex.close_all_positions(cancel_orders=True)
    wait_until(lambda: fake.holdings("AAPL") == 0 and fake.holdings("WHOLE") == 0)


def test_replace_is_refused_with_a_way_out(fake: FakeAlpaca, ex: Any) -> None:
    resting = ex.submit_order(
        LimitOrderRequest(
            symbol="AAPL", qty=5, side=OrderSide.SELL, limit_price=500, time_in_force="day"
        )
    )
    with pytest.raises(nija_guard.GuardError, match="unguarded"):
        ex.replace_order_by_id(resting.id, ReplaceOrderRequest(qty=10))
    assert fake.requests_to("PATCH", "/v2/orders/{order_id}") == []


def test_alpacas_refusal_reaches_the_bot_as_api_error(fake: FakeAlpaca, ex: Any) -> None:
    """Alpaca refuses (403 insufficient qty: shares sold elsewhere after the guard looked)."""
    fake.inject(
        "POST",
        ORDERS,
        "error_before",
        status=403,
        body={
            "code": 40310000,
            "message": "insufficient qty available for order (requested: 10, available: 0)",
        },
    )
    with pytest.raises(APIError) as raised:
        ex.submit_order(market("AAPL", qty=10))
    assert raised.value.status_code == 403
    assert ex.nija_guard.locked_symbols() == []  # a refusal frees the symbol at once
    ex.submit_order(market("AAPL", qty=10))
    settled(ex)
    assert fake.holdings("AAPL") == 0


def test_a_dropped_connection_is_reconciled_by_client_id(fake: FakeAlpaca, ex: Any) -> None:
    fake.inject("POST", ORDERS, "drop_after")
    order = ex.submit_order(market("AAPL", qty=4))
    assert order.status == OrderStatus.FILLED
    [sent] = fake.orders_sent()
    assert sent["client_order_id"] == order.client_order_id
    assert fake.holdings("AAPL") == Decimal(6)


def test_buys_pass_through_untouched(fake: FakeAlpaca, ex: Any, recorder: Recorder) -> None:
    order = ex.submit_order(market("AAPL", side=OrderSide.BUY, qty=1))
    [sent] = fake.orders_sent()
    assert sent.get("client_order_id") in (None, order.client_order_id)
    assert recorder.named("exit_requested") == []
    wait_until(lambda: fake.holdings("AAPL") == 11)


def test_wrong_keys_surface_as_alpacas_own_error(fake: FakeAlpaca) -> None:
    ex = nija_guard.guard(fake.client(api_key="wrong", secret_key="nope"), **FAST)
    try:
        with pytest.raises(APIError) as raised:
            ex.submit_order(market("AAPL", qty=1))
        assert raised.value.status_code == 401
        assert fake.orders_sent() == []
    finally:
        ex.nija_guard.close()


def test_a_504_that_executed_then_429s_is_not_a_refusal() -> None:
    """alpaca-py retries a 504 by itself; when its retries are rate limited, the 429 it
    raises at the end follows an order that executed. Reading it as a refusal would let
    the bot's retry sell again."""
    with FakeAlpaca(positions={"AAPL": 10}, api_key=f"k-{uuid.uuid4().hex}") as fake:
        ex: Any = nija_guard.guard(fake.client(), **FAST)
        try:
            fake.inject("POST", ORDERS, "error_after", status=504)  # executed, reply lost
            fake.inject("POST", ORDERS, "error_before", status=429, times=3)
            request = MarketOrderRequest(
                symbol="AAPL", qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
            )
            order = ex.submit_order(request)  # reconciled by client id: the real order
            assert float(order.qty) == 5
            wait_until(lambda: ex.nija_guard.locked_symbols() == [])
            assert fake.holdings("AAPL") == 5  # the bot knows it sold: it will not retry
        finally:
            ex.nija_guard.close()
