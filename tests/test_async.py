"""asyncio: the same guarantees for ccxt.async_support and ccxt.pro clients, one engine."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder

import nija_guard
from nija_guard.testing import AsyncPaperExchange
from nija_guard.testing._venue import Market


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def guarded(paper: AsyncPaperExchange, recorder: Recorder | None = None, **options: Any) -> Any:
    plugins = [recorder] if recorder is not None else []
    return nija_guard.guard(paper, **{**FAST, "plugins": plugins, **options})


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate`` holds (the guard's tasks do the work)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


def no_leaks(ex: Any) -> None:
    g = ex.nija_guard
    assert g.locked_symbols() == []
    assert g.backend.leases(g.account + "/") == []
    assert g.status()["in_flight"] == []


def many_markets(n: int) -> dict[str, Market]:
    return {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(n)
    }


# -- the seven scenarios, async ---------------------------------------------------------
def test_async_methods_are_coroutines_and_the_proxy_is_transparent() -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper) as ex:
            assert isinstance(ex, AsyncPaperExchange) and isinstance(
                ex, ccxt.async_support.Exchange
            )
            call = ex.create_market_sell_order("BTC/USDT", 0.1)
            assert asyncio.iscoroutine(call)
            assert (await call)["status"] == "closed"
            assert (await ex.fetch_ticker("BTC/USDT"))["last"] == 50_000

    run(main())


def test_async_scenario_1_two_tasks_one_order(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1}, latency=0.002)
        async with guarded(paper, recorder) as ex:
            await ex.load_markets()
            results = await asyncio.gather(
                *(ex.create_market_sell_order("BTC/USDT", 1) for _ in range(20)),
                return_exceptions=True,
            )
            sold = [r for r in results if isinstance(r, dict)]
            refused = [
                r
                for r in results
                if isinstance(r, (nija_guard.ExitInProgress, nija_guard.NothingToSell))
            ]
            assert len(sold) == 1 and len(refused) == 19
            assert len(paper.sell_orders()) == 1
            no_leaks(ex)

    run(main())


def test_async_scenario_2_resting_sell_refuses_then_settles(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper, recorder) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
            with pytest.raises(nija_guard.ExitInProgress):
                await ex.create_market_sell_order("BTC/USDT", 0.1)
            paper.set_price("BTC/USDT", 61_000)
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            assert recorder.named("order_settled")[0]["exit"].outcome == nija_guard.Outcome.FILLED

    run(main())


def test_async_scenarios_3_to_7(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1, "ETH": 10, "USDT": 0})
        async with guarded(paper, recorder) as ex:
            # 4 + 5: refreshed before the sell, clamped to holdings
            order = await ex.create_market_sell_order("ETH/USDT", 12.5)
            assert order["amount"] == pytest.approx(10)
            calls = paper.calls
            assert calls.index("fetch_balance") < calls.index("create_order")
            # 3: full close flushed; the next exit refreshes and finds nothing (6)
            assert [f["symbol"] for f in recorder.named("position_flushed")] == ["ETH/USDT"]
            with pytest.raises(nija_guard.NothingToSell):
                await ex.create_market_sell_order("ETH/USDT", 1)
            # 7: partial exit releases the lock
            paper.venue.market_fill_ratio = Decimal("0.5")
            partial = await ex.create_market_sell_order("BTC/USDT", 0.8)
            assert partial["filled"] == pytest.approx(0.4)
            assert ex.nija_guard.locked_symbols() == []
            paper.venue.market_fill_ratio = Decimal(1)
            await ex.create_market_sell_order("BTC/USDT", 0.6)
            assert paper.holdings("BTC") == pytest.approx(0)
            no_leaks(ex)

    run(main())


def test_async_ghost_order_reconciled(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper, recorder) as ex:
            paper.ghost_next_order()
            order = await ex.create_market_sell_order("BTC/USDT", 0.4)
            assert order["filled"] == pytest.approx(0.4)
            assert len(paper.sell_orders()) == 1
            assert len(recorder.named("outcome_unknown")) == 1
            no_leaks(ex)

    run(main())


# -- many tasks, many loops -----------------------------------------------------------------
def test_thousand_tasks_zero_double_sells_zero_leaks() -> None:
    async def main() -> None:
        markets = many_markets(50)
        # The account holds twice what the bot owns: only the guard prevents a double-sell.
        paper = AsyncPaperExchange(markets=markets, balances={m.base: 2 for m in markets.values()})
        paper.venue.balance_lag = 0.002
        owned = {m.base: 1 for m in markets.values()}
        async with guarded(paper, ownership="ledger", ledger_seed=owned) as ex:
            await ex.load_markets()
            symbols = list(markets)

            async def sell(i: int) -> str:
                try:
                    await ex.create_market_sell_order(symbols[i % len(symbols)], 1)
                    return "sold"
                except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
                    return type(exc).__name__

            outcomes = Counter(await asyncio.gather(*(sell(i) for i in range(1000))))
            assert outcomes["sold"] == 50
            assert sum(outcomes.values()) == 1000
            per_symbol = Counter(o.symbol for o in paper.sell_orders())
            assert set(per_symbol.values()) == {1}
            assert all(paper.venue.sold(s) == 1 for s in symbols)
            no_leaks(ex)

    run(main())


def test_threads_with_their_own_loops_share_one_account() -> None:
    """One worker thread per loop, each with its own client of the same account."""
    markets = many_markets(20)
    first = AsyncPaperExchange(
        {"apiKey": "shared"}, markets=markets, balances={m.base: 2 for m in markets.values()}
    )
    venue = first.venue
    owned = {m.base: 1 for m in markets.values()}
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(4)
    guards: list[Any] = []

    def worker(client: AsyncPaperExchange) -> None:
        async def main() -> None:
            ex = guarded(client, ownership="ledger", ledger_seed=owned)
            guards.append(ex)
            await ex.load_markets()
            barrier.wait()

            async def sell(symbol: str) -> None:
                try:
                    await ex.create_market_sell_order(symbol, 1)
                    result = "sold"
                except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
                    result = type(exc).__name__
                with lock:
                    outcomes[result] += 1

            await asyncio.gather(*(sell(s) for s in list(markets) * 5))
            await ex.nija_guard.aclose()
            await client.close()

        asyncio.run(main())

    clients = [first] + [AsyncPaperExchange({"apiKey": "shared"}, venue=venue) for _ in range(3)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len({g.nija_guard.book for g in guards}) == 1  # one account, one book
    assert outcomes["sold"] == 20 and sum(outcomes.values()) == 4 * 100
    assert set(Counter(o.symbol for o in first.sell_orders()).values()) == {1}


# -- cancellation at every await point ------------------------------------------------------
# An exit of each kind: a plain market sell, one whose reply is lost after the
# exchange executed it (reconciled by client id), and one whose order rests.
SCENARIOS: dict[str, tuple[Callable[[AsyncPaperExchange], None], float | None]] = {
    "market": (lambda paper: None, None),
    "ghost": (lambda paper: paper.ghost_next_order(), None),
    "resting": (lambda paper: None, 90_000.0),
}


async def _exit(ex: Any, price: float | None) -> Any:
    if price is None:
        return await ex.create_market_sell_order("BTC/USDT", 0.5)
    return await ex.create_limit_sell_order("BTC/USDT", 0.5, price)


def _calls_per_exit(scenario: str) -> int:
    prepare, price = SCENARIOS[scenario]

    async def main() -> int:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper) as ex:
            await ex.load_markets()
            start = paper.numbered_calls
            prepare(paper)
            await _exit(ex, price)
            return paper.numbered_calls - start

    return int(run(main()))


CANCEL_POINTS = [
    (scenario, k, phase)
    for scenario in SCENARIOS
    for k in range(1, _calls_per_exit(scenario) + 1)
    for phase in ("before", "after")
]


@pytest.mark.parametrize(
    ("scenario", "k", "phase"), CANCEL_POINTS, ids=[f"{s}-call{k}-{p}" for s, k, p in CANCEL_POINTS]
)
def test_cancel_at_every_broker_call(scenario: str, k: int, phase: str, recorder: Recorder) -> None:
    """Cancel the exit's task at its k-th broker call, before the venue acts or after it did."""
    prepare, price = SCENARIOS[scenario]

    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper, recorder) as ex:
            await ex.load_markets()
            start = paper.numbered_calls
            task: asyncio.Task[Any] | None = None
            hit: list[str] = []

            async def interrupt(number: int, method: str, when: str) -> None:
                if task is not None and number - start == k and when == phase and not hit:
                    hit.append(method)
                    task.cancel()
                    await asyncio.sleep(0)  # the cancellation lands on this await

            paper.interrupt = interrupt
            prepare(paper)
            task = asyncio.ensure_future(_exit(ex, price))
            with pytest.raises(asyncio.CancelledError):
                await task
            assert hit, "the cancellation point was not reached"
            paper.interrupt = None
            assert len(paper.sell_orders()) <= 1
            if price is not None and paper.sell_orders():
                paper.set_price("BTC/USDT", price + 1)  # let a resting order finish
            # Whatever happened, the guard ends up knowing: no lock stays held.
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            no_leaks(ex)
            # The bot retries the same exit: never a second order.
            with contextlib.suppress(nija_guard.NothingToSell):
                await _exit(ex, price)
            if price is not None:
                paper.set_price("BTC/USDT", price + 1)
                await until(lambda: ex.nija_guard.locked_symbols() == [])
            sold = [o for o in paper.sell_orders() if o.filled > 0]
            assert len(sold) == 1
            assert paper.holdings("BTC") == pytest.approx(0.5)
            no_leaks(ex)
            settled = recorder.named("order_settled")
            assert len({s["exit"].exit_id for s in settled}) == len(settled)  # once per exit

    run(main())


def test_cancel_while_waiting_for_the_lock_leaves_nothing_behind() -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper, on_conflict="wait", wait_timeout=30) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
            waiter = asyncio.ensure_future(ex.create_market_sell_order("BTC/USDT", 1))
            state = ex.nija_guard.book.symbols["BTC/USDT"]
            await until(lambda: len(state.waiters) == 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert state.waiters == []
            assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]  # still the resting order's

    run(main())


# -- tracking: watch_orders, polling, cleanup -------------------------------------------------
def test_pro_watch_orders_settles_without_polling(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1}, stream=True)
        # Polls would only start in 60 s: the stream must be what settles the order.
        async with guarded(paper, recorder, poll_interval=60, poll_max_interval=60) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
            await until(lambda: ex.nija_guard.driver.tracker._watch is not None)
            await asyncio.sleep(0)
            paper.set_price("BTC/USDT", 61_000)
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            assert "fetch_order" not in paper.calls
            assert recorder.named("order_settled")[0]["exit"].outcome == nija_guard.Outcome.FILLED

    run(main())


def test_polling_settles_without_a_stream() -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
            assert ex.nija_guard.driver.tracker.running
            paper.set_price("BTC/USDT", 61_000)
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            assert "fetch_order" in paper.calls
            await until(lambda: not ex.nija_guard.driver.tracker.running)  # ends when idle

    run(main())


def test_async_with_closes_tasks_and_client() -> None:
    closed: list[bool] = []

    class Closing(AsyncPaperExchange):
        async def close(self) -> None:
            closed.append(True)
            await super().close()

    async def main() -> None:
        paper = Closing(balances={"BTC": 1}, stream=True)
        async with guarded(paper) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
            assert ex.nija_guard.driver.tracker.running
        assert closed == [True]
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []  # no tracker or stream task left pending

    run(main())


def test_async_hook_results_are_awaited(recorder: Recorder) -> None:
    seen: list[str] = []

    class AsyncPlugin:
        @nija_guard.hookimpl
        async def nija_guard_order_settled(self, exit: Any) -> None:
            await asyncio.sleep(0)
            seen.append(exit.symbol)

        @nija_guard.hookimpl
        async def nija_guard_exit_requested(self, exit: Any) -> None:
            raise RuntimeError("async plugin bug")

        @nija_guard.hookimpl
        async def nija_guard_exit_veto(self, exit: Any) -> str | None:
            await asyncio.sleep(0)
            return "closed" if exit.symbol == "ETH/USDT" else None

    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1, "ETH": 1})
        async with guarded(paper, plugins=[AsyncPlugin()]) as ex:
            await ex.create_market_sell_order("BTC/USDT", 0.5)
            with pytest.raises(nija_guard.ExitVetoed):
                await ex.create_market_sell_order("ETH/USDT", 0.5)
            assert seen == ["BTC/USDT"]
            assert ex.nija_guard.status()["hook_errors"] == 2  # one per exit, none fatal

    run(main())


def test_async_bad_input_is_refused_before_any_call() -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        async with guarded(paper) as ex:
            with pytest.raises(ccxt.InvalidOrder):
                await ex.create_order("BTC/USDT", "market", "sell", float("nan"))
            with pytest.raises(ccxt.BadRequest):
                await ex.create_order("BTC/USDT", "market", "sell", 1, None, ["x"])
            assert paper.calls == []
            no_leaks(ex)

    run(main())


def test_pro_order_entry_over_the_stream_is_guarded(recorder: Recorder) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1}, stream=True)
        async with guarded(paper, recorder) as ex:
            order = await ex.create_order_ws("BTC/USDT", "market", "sell", 5)
            assert order["amount"] == pytest.approx(1)  # clamped
            assert order["clientOrderId"].startswith("njg")
            with pytest.raises(nija_guard.NothingToSell):
                await ex.createOrderWs("BTC/USDT", "market", "sell", 1)
            assert len(recorder.named("exit_requested")) == 2

    run(main())


def test_real_pro_classes_get_coroutine_guards() -> None:
    import inspect

    import ccxt.pro

    from nija_guard._guard import proxy_class

    for exchange_id in ("binance", "bybit", "okx", "kraken"):
        cls = getattr(ccxt.pro, exchange_id)
        cls()  # camelCase aliases appear on first construction
        proxy = proxy_class(cls)
        for name in (
            "create_order",
            "create_order_ws",
            "edit_order_ws",
            "createOrderWs",
            "create_market_sell_order",
        ):
            assert inspect.iscoroutinefunction(vars(proxy)[name]), (exchange_id, name)


def test_one_guarded_client_shared_by_threads_with_their_own_loops() -> None:
    """One guard object used from four threads, each running its own event loop."""
    markets = many_markets(10)
    paper = AsyncPaperExchange(markets=markets, balances={m.base: 2 for m in markets.values()})
    ex = guarded(paper, ownership="ledger", ledger_seed={m.base: 1 for m in markets.values()})
    # ccxt's load_markets shares one future among its callers, bound to the loop
    # that created it: a client used from several loops loads its markets first.
    asyncio.run(ex.load_markets())
    barrier = threading.Barrier(4)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        async def main() -> None:
            barrier.wait()

            async def sell(symbol: str) -> None:
                try:
                    await ex.create_market_sell_order(symbol, 1)
                    result = "sold"
                except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
                    result = type(exc).__name__
                with lock:
                    outcomes[result] += 1

            await asyncio.gather(*(sell(s) for s in list(markets) * 3))

        asyncio.run(main())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes["sold"] == 10 and sum(outcomes.values()) == 4 * 30
    assert set(Counter(o.symbol for o in paper.sell_orders()).values()) == {1}
    no_leaks(ex)


def test_an_order_the_stream_reports_is_polled_only_as_a_safety_net() -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1}, stream=True)
        # No poll is due within the test (20 s): whatever the guard learns, the stream said.
        async with guarded(paper, poll_interval=20, poll_max_interval=30) as ex:
            order = await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
            engine = ex.nija_guard.driver.engine
            (rec,) = ex.nija_guard.book.tracked_records()
            assert rec.streamed_by is None and rec.poll_interval == 20
            await until(lambda: ex.nija_guard.driver.tracker._watch is not None)
            await asyncio.sleep(0)  # the stream listens from here on
            paper.venue.fill(order["id"], "0.1")  # a partial fill, pushed by the stream
            await until(lambda: rec.filled == Decimal("0.1"))
            assert rec.streamed_by is engine
            assert rec.poll_interval == 30  # the stream will say when it ends
            assert rec.next_poll - engine.clock() > 25
            engine.stream_lost()  # e.g. the websocket dropped
            assert rec.streamed_by is None and rec.poll_interval == 20
            assert rec.next_poll - engine.clock() < 21
            paper.set_price("BTC/USDT", 61_000)
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            assert "fetch_order" not in paper.calls

    run(main())


def test_a_guard_closing_its_stream_hands_the_orders_it_reported_back_to_polling() -> None:
    async def main() -> None:
        a_raw = AsyncPaperExchange(balances={"BTC": 1, "ETH": 1})  # async_support: no stream
        b_raw = AsyncPaperExchange(venue=a_raw.venue, stream=True)  # ccxt.pro, same account
        options: dict[str, Any] = {"poll_interval": 20, "poll_max_interval": 30, "adopt": False}
        a: Any = nija_guard.guard(a_raw, **options, account="one-account")
        b: Any = nija_guard.guard(b_raw, **options, account="one-account")
        await a.load_markets()
        await b.load_markets()
        order = await a.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
        await b.create_limit_sell_order("ETH/USDT", 0.5, 60_000)  # B's stream starts
        await until(lambda: b.nija_guard.driver.tracker._watch is not None)
        await asyncio.sleep(0)
        (rec,) = [r for r in a.nija_guard.book.tracked_records() if r.exit.symbol == "BTC/USDT"]
        a_raw.venue.fill(order["id"], "0.1")  # B's account-wide stream reports A's order
        await until(lambda: rec.streamed_by is not None)
        assert rec.poll_interval == 30
        await b.nija_guard.aclose()  # B's stream is gone: A's order is A's to poll again
        assert rec.streamed_by is None and rec.poll_interval == 20
        await a.nija_guard.aclose()

    run(main())
