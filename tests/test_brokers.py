"""The guarantees on brokers that are not ccxt: a house broker class and alpaca-py.

The seven scenarios, client ids, the ghost order and a stress run, through
the adapter seam: a declarative nija_guard.Broker for the house class, the
built-in alpaca adapter for alpaca-py's TradingClient (against a loopback
fake of Alpaca's REST API).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from brokers import CASES, BrokerCase
from conftest import FAST, Recorder, wait_until

import nija_guard


@pytest.fixture(params=sorted(CASES))
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerCase]:
    case = CASES[request.param]().start()
    yield case
    case.stop()


@pytest.fixture
def ex(broker: BrokerCase, recorder: Recorder) -> Iterator[Any]:
    guarded = nija_guard.guard(
        broker.client(), **FAST, **broker.guard_options(), plugins=[recorder]
    )
    yield guarded
    guarded.nija_guard.close()


def no_leaks(ex: Any) -> None:
    g = ex.nija_guard
    assert g.locked_symbols() == []
    assert g.backend.leases(g.account + "/") == []


def until_settled(ex: Any) -> None:
    """Alpaca answers a market order "accepted": the exit holds the lock until it fills."""
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])


def test_1_two_threads_one_order(broker: BrokerCase, ex: Any) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def close() -> None:
        barrier.wait()
        try:
            broker.sell(ex, broker.size)
            outcomes.append("sold")
        except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("sold") == 1 and len(outcomes) == 8, outcomes
    assert len(broker.orders_sent()) == 1
    until_settled(ex)
    assert broker.held() == 0
    no_leaks(ex)


def test_1_control_unguarded_double_sells(broker: BrokerCase) -> None:
    """The same race on the raw client: both sells reach the broker."""
    raw = broker.client()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def close() -> None:
        barrier.wait()
        try:
            broker.sell(raw, broker.size / 2)
        except Exception as exc:  # the broker refusing is fine: we count requests
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(broker.orders_sent()) == 2


def test_2_resting_exit_refuses_a_new_one_until_final(
    broker: BrokerCase, ex: Any, recorder: Recorder
) -> None:
    resting = broker.sell_limit(ex, broker.size / 2, broker.high)
    with pytest.raises(nija_guard.ExitInProgress):
        broker.sell(ex, broker.size / 2)
    assert len(broker.orders_sent()) == 1
    broker.set_price(broker.high + 1000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")
    assert settled[0]["exit"].order_id == broker.order_id(resting)
    assert settled[0]["exit"].outcome == nija_guard.Outcome.FILLED
    no_leaks(ex)


def test_3_full_close_flushes_and_the_next_exit_finds_nothing(
    broker: BrokerCase, ex: Any, recorder: Recorder
) -> None:
    reply = broker.sell(ex, broker.size)
    assert broker.amount(reply) == pytest.approx(broker.size)  # the broker's own reply
    until_settled(ex)  # alpaca: once the fill is seen
    assert [f["symbol"] for f in recorder.named("position_flushed")] == [broker.symbol]
    with pytest.raises(nija_guard.NothingToSell):
        broker.sell(ex, broker.size)
    assert len(broker.orders_sent()) == 1
    until_settled(ex)
    no_leaks(ex)


def test_4_holdings_refreshed_before_the_sell(
    broker: BrokerCase, ex: Any, recorder: Recorder
) -> None:
    broker.sell(ex, broker.size / 2)
    refreshed = recorder.named("balance_refreshed")
    assert refreshed[0]["total"] == pytest.approx(broker.size)
    assert recorder.names().index("balance_refreshed") < recorder.names().index("order_submitted")


def test_5_clamped_to_what_is_held(broker: BrokerCase, ex: Any, recorder: Recorder) -> None:
    reply = broker.sell(ex, broker.size * 3)
    assert broker.amount(reply) == pytest.approx(broker.size)
    clamp = recorder.named("quantity_clamped")[0]
    assert (clamp["requested_amount"], clamp["amount"]) == (broker.size * 3, broker.size)
    wait_until(lambda: broker.held() == 0)


def test_6_nothing_held_nothing_sent(broker: BrokerCase, ex: Any) -> None:
    broker.sell(ex, broker.size)
    until_settled(ex)
    sent = len(broker.orders_sent())
    with pytest.raises(nija_guard.NothingToSell):
        broker.sell(ex, 1)
    assert len(broker.orders_sent()) == sent
    no_leaks(ex)


def test_7_lock_released_after_a_partial_exit(
    broker: BrokerCase, ex: Any, recorder: Recorder
) -> None:
    resting = broker.sell_limit(ex, broker.size, broker.high)
    broker.fill(broker.order_id(resting), broker.size / 2)
    broker.cancel(ex, broker.order_id(resting))
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")[0]["exit"]
    assert settled.outcome == nija_guard.Outcome.PARTIALLY_FILLED
    assert settled.filled == pytest.approx(broker.size / 2)
    broker.sell(ex, broker.size)  # the rest
    until_settled(ex)
    assert broker.held() == 0
    no_leaks(ex)


def test_client_order_ids_reach_the_broker(broker: BrokerCase, ex: Any) -> None:
    broker.sell(ex, broker.size / 2)
    [cid] = broker.client_ids_sent()
    assert cid is not None and cid.startswith("njg")


def test_ghost_order_is_reconciled_by_client_id(
    broker: BrokerCase, ex: Any, recorder: Recorder
) -> None:
    broker.ghost()
    reply = broker.sell(ex, broker.size)  # the reply was lost; the guard found the order
    assert broker.is_filled(reply) and broker.amount(reply) == pytest.approx(broker.size)
    [cid] = broker.client_ids_sent()
    assert cid is not None and broker.looked_up(cid)
    assert broker.held() == 0
    assert len(recorder.wait_for("order_settled")) == 1
    with pytest.raises(nija_guard.NothingToSell):
        broker.sell(ex, broker.size)  # the bot's retry: no second order
    assert len(broker.orders_sent()) == 1
    no_leaks(ex)


def test_stress_many_threads_many_tries(broker: BrokerCase, ex: Any) -> None:
    barrier = threading.Barrier(6)

    def hammer() -> None:
        barrier.wait()
        for _ in range(5):
            with contextlib.suppress(nija_guard.ExitInProgress, nija_guard.NothingToSell):
                broker.sell(ex, broker.size)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(broker.orders_sent()) == 1  # zero double-sells
    until_settled(ex)
    assert broker.held() == 0 and broker.sold() == Decimal(str(broker.size))  # zero oversell
    no_leaks(ex)
