"""Concurrency: races lined up with barriers and gates, counted, never slept on."""

from __future__ import annotations

import random
import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from conftest import assert_no_leaks, wait_until
from test_scenarios import GatedPaper, run_in_thread

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market


def many_markets(n: int) -> dict[str, Market]:
    return {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(n)
    }


def test_stress_threads_zero_double_sells_zero_leaks(make_guard: Any) -> None:
    """16 threads, 40 symbols, a lagging balance, partial fills and resting orders."""
    symbols = 40
    markets = many_markets(symbols)
    # The account holds twice each position; the bot owns one (ledger mode):
    # a double-sell would be accepted by the exchange, so only the guard stops it.
    balances = {m.base: 2 for m in markets.values()} | {"USDT": 0}
    paper = PaperExchange(markets=markets, balances=balances)
    paper.venue.balance_lag = 0.005
    ex = make_guard(
        paper,
        ownership="ledger",
        ledger_seed={m.base: 1 for m in markets.values()},
        on_conflict="reject",
    )
    ex.load_markets()
    rng = random.Random(7)
    plan = [[rng.choice(list(markets)) for _ in range(60)] for _ in range(16)]
    barrier = threading.Barrier(16)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(symbols_to_sell: list[str]) -> None:
        barrier.wait()
        for symbol in symbols_to_sell:
            try:
                kind = rng.random()
                if kind < 0.2:
                    order = ex.create_limit_sell_order(
                        symbol, 1, 100
                    )  # at the market: fills at once
                else:
                    order = ex.create_market_sell_order(symbol, 1)
                result = order["status"]
            except (
                nija_guard.ExitInProgress,
                nija_guard.NothingToSell,
                nija_guard.DustPosition,
            ) as exc:
                result = type(exc).__name__
            with lock:
                outcomes[result] += 1

    threads = [threading.Thread(target=worker, args=(p,)) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(outcomes.values()) == 16 * 60
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])

    # Zero double-sells: every position sold exactly once, never more.
    per_symbol = Counter(o.symbol for o in paper.sell_orders())
    sold = {s: paper.venue.sold(s) for s in markets}
    assert all(count == 1 for count in per_symbol.values()), per_symbol
    assert all(amount <= 1 for amount in sold.values()), sold
    touched = {s for p in plan for s in p}
    assert all(sold[s] == 1 for s in touched)
    assert_no_leaks(ex)
    tables = ex.nija_guard.status()["tables"]
    assert tables["symbols"] == 0 and tables["tracked"] == 0


def test_stress_unguarded_control_double_sells() -> None:
    """Without the guard, the workload's race sells a position many times (the test can fail)."""
    markets = many_markets(1)
    paper = GatedPaper(markets=markets, balances={"C0": 8})
    paper.load_markets()
    paper.gated.add("create_order")
    positions = {"C0/USDT": 1.0}  # the bot's own record, read by every worker

    def worker() -> None:
        amount = positions["C0/USDT"]
        if amount > 0:
            paper.create_market_sell_order("C0/USDT", amount)
            positions["C0/USDT"] = 0.0

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in threads:  # every worker read the record before any sold
        assert paper.arrived.acquire(timeout=10)
    paper.gate.set()
    for t in threads:
        t.join(10)
    assert len(paper.sell_orders()) == 8


def test_different_symbols_run_in_parallel(make_guard: Any) -> None:
    """No global lock across broker I/O: an exit stuck on the wire does not block another symbol."""
    paper = GatedPaper(balances={"BTC": 1, "ETH": 1, "USDT": 0})
    ex = make_guard(paper)
    ex.load_markets()
    ex.create_market_sell_order("ETH/USDT", 0.1)  # warm up adoption for ETH
    paper.gated.add("create_order")
    stuck, stuck_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 0.5))
    assert paper.arrived.acquire(timeout=10)
    paper.gated.clear()  # only the BTC exit stays at the gate
    done = ex.create_market_sell_order("ETH/USDT", 0.5)
    assert done["status"] == "closed"
    paper.gate.set()
    stuck.join(10)
    assert stuck_box["result"]["status"] == "closed"


def test_balance_refreshes_coalesce_into_one_call(make_guard: Any) -> None:
    markets = many_markets(20)
    paper = GatedPaper(markets=markets, balances={m.base: 1 for m in markets.values()})
    ex = make_guard(paper, adopt=False)
    ex.load_markets()
    paper.gated.add("fetch_balance")
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def sell(symbol: str) -> None:
        barrier.wait()
        try:
            ex.create_market_sell_order(symbol, 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sell, args=(s,)) for s in markets]
    for t in threads:
        t.start()
    assert paper.arrived.acquire(timeout=10)  # one fetch is on the wire
    # Every other exit is admitted by now or will be shortly; they join a flight
    # that started after their admission, or start one more.
    wait_until(lambda: len(ex.nija_guard.locked_symbols()) == 20)
    paper.gate.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert paper.call_counts["fetch_balance"] <= 2  # 20 exits, at most two balance calls
    assert len(paper.sell_orders()) == 20


def test_a_fetch_started_before_admission_is_not_reused(make_guard: Any) -> None:
    """Each exit sees holdings fetched after it was admitted."""
    paper = GatedPaper(balances={"BTC": 1, "ETH": 1, "USDT": 0})
    ex = make_guard(paper, adopt=False)
    ex.load_markets()
    paper.gated.add("fetch_balance")
    first, _ = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1))
    assert paper.arrived.acquire(timeout=10)  # the BTC exit's fetch is in flight
    second, _ = run_in_thread(lambda: ex.create_market_sell_order("ETH/USDT", 1))
    wait_until(
        lambda: "ETH/USDT" in ex.nija_guard.locked_symbols()
    )  # admitted after that fetch began
    paper.gate.set()
    first.join(10)
    second.join(10)
    # The ETH exit waited for the fetch on the wire to end, then fetched anew.
    assert paper.call_counts["fetch_balance"] == 2
    assert len(paper.sell_orders()) == 2


def test_stale_balance_after_own_fill_is_corrected(make_guard: Any) -> None:
    """The broker's balance trails its matching engine; the guard subtracts its own recent sells."""
    now = [1_000_000.0]
    paper = PaperExchange(balances={"BTC": 2, "USDT": 0}, clock=lambda: now[0])
    paper.venue.balance_lag = 5.0  # the account endpoint is 5 s behind
    now[0] += 10
    ex = make_guard(paper, ownership="account")
    ex.create_market_sell_order("BTC/USDT", 1.5)
    now[0] += 1  # the balance endpoint still shows 2 BTC
    assert paper.fetch_balance()["BTC"]["free"] == 2
    order = ex.create_market_sell_order("BTC/USDT", 2)
    assert order["amount"] == pytest.approx(0.5)  # not 2: 1.5 of it is already sold
    assert paper.holdings("BTC") == pytest.approx(0)


@pytest.mark.parametrize("policy", ["wait", "replace"])
def test_wait_and_replace_policies(make_guard: Any, recorder: Any, policy: str) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, on_conflict=policy, wait_timeout=5)
    take_profit = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    if policy == "wait":
        waiter, box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1))
        state = ex.nija_guard.book.symbols["BTC/USDT"]
        wait_until(lambda: len(state.waiters) == 1)  # the second exit is waiting on the lock
        paper.fill(take_profit["id"], 0.4)  # partly filled ...
        ex.cancel_order(take_profit["id"], "BTC/USDT")  # ... then cancelled: the waiter goes
        waiter.join(10)
        assert box["result"]["amount"] == pytest.approx(0.6)
    else:
        paper.fill(take_profit["id"], 0.4)
        stop = ex.create_market_sell_order("BTC/USDT", 1)  # the stop-loss replaces the take-profit
        assert paper.venue.get(take_profit["id"]).status == "canceled"
        assert stop["amount"] == pytest.approx(0.6)  # its partial fill accounted for
    assert paper.holdings("BTC") == pytest.approx(0)
    settled = [s["exit"].outcome for s in recorder.named("order_settled")]
    assert settled == [nija_guard.Outcome.PARTIALLY_FILLED, nija_guard.Outcome.FILLED]
    assert_no_leaks(ex)


def test_wait_policy_times_out(make_guard: Any, recorder: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, on_conflict="wait", wait_timeout=0.05)
    ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    with pytest.raises(nija_guard.ExitInProgress, match="timed out"):
        ex.create_market_sell_order("BTC/USDT", 1)
    assert recorder.named("exit_blocked")[-1]["reason"] == "wait_timeout"


def test_per_call_policy_overrides_the_guard_default(ex: Any, paper: PaperExchange) -> None:
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 1)
    stop = ex.create_market_sell_order("BTC/USDT", 1, {"nija_guard": {"on_conflict": "replace"}})
    assert stop["filled"] == pytest.approx(1)
    assert paper.venue.get(tp["id"]).status == "canceled"
    # the guard's own option never reaches the exchange
    assert all("nija_guard" not in str(o.client_order_id) for o in paper.sell_orders())


def test_state_table_does_not_grow_without_bound(make_guard: Any) -> None:
    markets = many_markets(600)
    paper = PaperExchange(markets=markets, balances={m.base: 1 for m in markets.values()})
    ex = make_guard(paper, adopt=False)
    ex.load_markets()
    for symbol in markets:
        ex.create_market_sell_order(symbol, 1)
    tables = ex.nija_guard.status()["tables"]
    assert tables["symbols"] == 0
    assert tables["tracked"] == 0 and tables["by_order_id"] == 0 and tables["by_client_id"] == 0
    assert tables["sells"] <= 600  # settled sells kept per asset, bounded by count and age
    assert tables["dust"] <= 4096 and tables["prices"] <= 4096


def test_adoption_after_restart_respects_our_resting_exit(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "k"}, balances={"BTC": 1, "USDT": 0})
    first = make_guard(paper, account="restart")
    tp = first.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    # The bot restarts: a new process, a new client and guard on the same exchange.
    restarted = make_guard(PaperExchange({"apiKey": "k2"}, venue=paper.venue), account="restart-2")
    with pytest.raises(nija_guard.ExitInProgress):
        restarted.create_market_sell_order("BTC/USDT", 0.5)
    assert restarted.nija_guard.status()["in_flight"][0]["order_id"] == tp["id"]
    paper.set_price("BTC/USDT", 91_000)
    wait_until(lambda: restarted.nija_guard.locked_symbols() == [])
    restarted.create_market_sell_order("BTC/USDT", 0.5)
