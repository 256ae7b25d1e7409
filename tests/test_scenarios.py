"""The seed's seven scenarios, each against the paper exchange, each able to fail.

Races are lined up with gates, not sleeps: a gated exchange call blocks until
the test lets it go, so the dangerous interleaving happens every run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import assert_no_leaks, wait_until

import nija_guard
from nija_guard.testing import PaperExchange


class GatedPaper(PaperExchange):
    """A paper exchange whose chosen methods wait at a gate before reaching the venue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gated: set[str] = set()
        self.arrived = threading.Semaphore(0)
        self.gate = threading.Event()

    def _call(self, method: str, action: Callable[[], Any]) -> Any:
        if method in self.gated:
            self.arrived.release()
            assert self.gate.wait(10), "test never opened the gate"
        return super()._call(method, action)


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


# -- 1. Two threads close the same position at once: only one order reaches the exchange
def test_scenario_1_two_threads_close_the_same_position_only_one_order(make_guard: Any) -> None:
    paper = GatedPaper(balances={"BTC": 1, "USDT": 1000})
    ex = make_guard(paper)
    ex.load_markets()
    paper.gated.add("create_order")

    first, first_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1.0))
    assert paper.arrived.acquire(timeout=10)  # the first exit is on the wire
    second, second_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1.0))
    second.join(10)
    paper.gate.set()
    first.join(10)

    assert isinstance(second_box.get("error"), nija_guard.ExitInProgress)
    assert first_box["result"]["status"] == "closed"
    assert len(paper.sell_orders("BTC/USDT")) == 1
    assert paper.holdings("BTC") == 0
    assert_no_leaks(ex)


def test_scenario_1_control_unguarded_client_double_sells() -> None:
    """The same interleaving without the guard: two orders (this is what the guard prevents)."""
    paper = GatedPaper(balances={"BTC": 2, "USDT": 1000})  # a shared account holds more
    paper.load_markets()
    paper.gated.add("create_order")
    first, _ = run_in_thread(lambda: paper.create_market_sell_order("BTC/USDT", 1.0))
    assert paper.arrived.acquire(timeout=10)
    second, _ = run_in_thread(lambda: paper.create_market_sell_order("BTC/USDT", 1.0))
    assert paper.arrived.acquire(timeout=10)
    paper.gate.set()
    first.join(10)
    second.join(10)
    assert len(paper.sell_orders("BTC/USDT")) == 2


def test_scenario_1_many_threads_one_order(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 1000})
    ex = make_guard(paper)
    ex.load_markets()
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def sell() -> None:
        barrier.wait()
        try:
            ex.create_market_sell_order("BTC/USDT", 1.0)
            outcomes.append("sold")
        except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=sell) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("sold") == 1
    assert len(outcomes) == 16
    assert len(paper.sell_orders()) == 1
    assert_no_leaks(ex)


# -- 2. While an exit is active (a resting limit sell), a new exit for that symbol is refused
def test_scenario_2_resting_limit_sell_refuses_a_new_exit(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    resting = ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    assert resting["status"] == "open"
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]

    with pytest.raises(nija_guard.ExitInProgress) as refused:
        ex.create_market_sell_order("BTC/USDT", 0.2)
    assert isinstance(refused.value, ccxt.OperationRejected)  # a bot's existing handler still works
    blocked = recorder.named("exit_blocked")
    assert blocked[-1]["reason"] == "in_progress"
    assert blocked[-1]["holder"].order_id == resting["id"]
    assert len(paper.sell_orders()) == 1

    # The lock is held until the order is final on the exchange, not until the call returned.
    paper.set_price("BTC/USDT", 61_000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")
    assert settled[-1]["exit"].outcome == nija_guard.Outcome.FILLED
    ex.create_market_sell_order("BTC/USDT", 0.2)  # admitted again
    assert_no_leaks(ex)


def test_scenario_2_stop_loss_and_take_profit_hold_the_lock(ex: Any, paper: PaperExchange) -> None:
    ex.create_stop_loss_order("BTC/USDT", "market", "sell", 0.5, None, 40_000)
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_take_profit_order("BTC/USDT", "limit", "sell", 0.5, 70_000, 70_000)
    paper.set_price("BTC/USDT", 39_000)  # the stop triggers and fills
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    assert paper.holdings("BTC") == pytest.approx(0.5)


# -- 3. After a full close, the position state is flushed at once
def test_scenario_3_full_close_flushes_state_and_next_exit_finds_nothing(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    order = ex.create_market_sell_order("BTC/USDT", 1.0)
    assert order["status"] == "closed"
    flushed = recorder.named("position_flushed")
    assert [f["symbol"] for f in flushed] == ["BTC/USDT"]
    # flushed before the lock was released: the hook saw the exit settled
    assert flushed[0]["exit"].outcome == nija_guard.Outcome.FILLED
    tables = ex.nija_guard.status()["tables"]
    assert tables["symbols"] == 0 and tables["tracked"] == 0 and tables["dust"] == 0

    balance_calls = paper.call_counts["fetch_balance"]
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 1.0)
    assert paper.call_counts["fetch_balance"] == balance_calls + 1  # it refreshed
    assert len(paper.sell_orders()) == 1
    assert_no_leaks(ex)


def test_scenario_3_partial_exit_does_not_flush(ex: Any, recorder: Any) -> None:
    ex.create_market_sell_order("BTC/USDT", 0.4)
    assert recorder.named("position_flushed") == []


# -- 4. Balances are refreshed from the broker before an emergency sell
def test_scenario_4_balance_refreshed_before_emergency_sell(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    ex.load_markets()
    bot_view = ex.fetch_balance()["BTC"]["free"]  # what the bot believes: 1.0
    paper.venue.place("BTC/USDT", "sell", "market", "0.3")  # sold elsewhere meanwhile
    calls_before = len(paper.calls)
    order = ex.create_order("BTC/USDT", "market", "sell", bot_view, None, {"stopLossPrice": None})
    calls = paper.calls[calls_before:]
    assert "fetch_balance" in calls
    assert calls.index("fetch_balance") < calls.index("create_order")
    assert order["amount"] == pytest.approx(0.7)
    refreshed = recorder.named("balance_refreshed")[-1]
    assert refreshed["free"] == pytest.approx(0.7)
    assert paper.holdings("BTC") == pytest.approx(0)


# -- 5. Orphan with mismatch: requested quantity exceeds holdings: clamped to the actual balance
def test_scenario_5_orphan_mismatch_is_clamped_to_holdings(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    order = ex.create_market_sell_order("ETH/USDT", 12.34567)
    assert order["amount"] == pytest.approx(10)
    assert order["filled"] == pytest.approx(10)
    clamp = recorder.named("quantity_clamped")[-1]
    assert clamp["requested_amount"] == pytest.approx(12.34567)
    assert clamp["amount"] == pytest.approx(10)
    assert clamp["reason"] == "holdings"
    assert paper.holdings("ETH") == 0


def test_scenario_5_clamp_rounds_down_to_the_market_step(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    paper.venue.free["ETH"] = Decimal("3.33339")
    order = ex.create_market_sell_order("ETH/USDT", 5)
    assert order["amount"] == pytest.approx(3.3333)  # floor(3.33339 / 0.0001) * 0.0001
    assert recorder.named("quantity_clamped")[-1]["amount"] == pytest.approx(3.3333)


# -- 6. Orphan already closed on the broker: NothingToSell, nothing sent
def test_scenario_6_orphan_already_closed_nothing_sent(make_guard: Any) -> None:
    paper = PaperExchange(balances={"USDT": 1000})
    ex = make_guard(paper)
    with pytest.raises(nija_guard.NothingToSell) as refused:
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert isinstance(refused.value, ccxt.InsufficientFunds)
    assert "create_order" not in paper.calls
    assert refused.value.exit.outcome == nija_guard.Outcome.NOTHING_TO_SELL
    assert_no_leaks(ex)


# -- 7. Locks are released after a partial exit; the next exit on that symbol proceeds
def test_scenario_7_lock_released_after_partial_fill(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    paper.venue.market_fill_ratio = Decimal("0.5")
    order = ex.create_market_sell_order("BTC/USDT", 0.8)
    assert order["status"] == "canceled" and order["filled"] == pytest.approx(0.4)
    assert (
        recorder.named("order_settled")[-1]["exit"].outcome == nija_guard.Outcome.PARTIALLY_FILLED
    )
    assert ex.nija_guard.locked_symbols() == []
    paper.venue.market_fill_ratio = Decimal(1)
    nxt = ex.create_market_sell_order("BTC/USDT", 0.6)
    assert nxt["filled"] == pytest.approx(0.6)
    assert_no_leaks(ex)


def test_scenario_7_resting_partial_fill_then_cancel_releases(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    order = ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    paper.fill(order["id"], 0.2)
    ex.nija_guard.poll()
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]  # partially filled: still held
    ex.cancel_order(order["id"], "BTC/USDT")  # the bot cancels: the guard sees it through the proxy
    assert ex.nija_guard.locked_symbols() == []
    settled = recorder.named("order_settled")[-1]["exit"]
    assert settled.outcome == nija_guard.Outcome.PARTIALLY_FILLED
    assert settled.filled == pytest.approx(0.2)
    ex.create_market_sell_order("BTC/USDT", 0.8)
    assert paper.holdings("BTC") == pytest.approx(0)
    assert_no_leaks(ex)
