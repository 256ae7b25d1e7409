"""The guarantees on three real ccxt clients, end to end over HTTP, offline.

binance spot, kraken spot (its order replies have no status or fill: the guard
confirms with fetch_order) and okx linear swaps (exits close positions:
reduceOnly, close_position, the opposite side). Sync and async clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import FAST, Recorder, wait_until
from venues import CASES, VenueCase

import nija_guard


@pytest.fixture(params=sorted(CASES))
def venue(request: pytest.FixtureRequest) -> Iterator[VenueCase]:
    case = CASES[request.param]().start()
    yield case
    assert case.fake.unknown == []  # the real client asked for nothing the fake lacks
    assert case.fake.server_errors == []
    case.stop()


@pytest.fixture
def ex(venue: VenueCase, recorder: Recorder) -> Iterator[Any]:
    guarded = nija_guard.guard(venue.client(), **FAST, plugins=[recorder])
    yield guarded
    guarded.nija_guard.close()


def no_leaks(ex: Any) -> None:
    g = ex.nija_guard
    assert g.locked_symbols() == []
    assert g.backend.leases(g.account + "/") == []


def test_1_two_threads_one_order(venue: VenueCase, ex: Any) -> None:
    ex.load_markets()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def close() -> None:
        barrier.wait()
        try:
            ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
            outcomes.append("sold")
        except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("sold") == 1 and len(outcomes) == 8
    assert len(venue.orders_sent()) == 1
    assert venue.held() == 0
    no_leaks(ex)


def test_2_resting_exit_refuses_a_new_one_until_final(
    venue: VenueCase, ex: Any, recorder: Recorder
) -> None:
    resting = ex.create_limit_sell_order(venue.symbol, venue.size / 2, venue.high, venue.exit)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order(venue.symbol, venue.size / 2, venue.exit)
    assert len(venue.orders_sent()) == 1
    venue.set_price(venue.high + 1000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")
    assert settled[0]["exit"].order_id == resting["id"]
    assert settled[0]["exit"].outcome == nija_guard.Outcome.FILLED
    no_leaks(ex)


def test_3_full_close_flushes_and_the_next_exit_finds_nothing(
    venue: VenueCase, ex: Any, recorder: Recorder
) -> None:
    order = ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
    assert order["status"] == "closed"  # confirmed with fetch_order where the reply lacks it
    assert [f["symbol"] for f in recorder.named("position_flushed")] == [venue.symbol]
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
    assert len(venue.orders_sent()) == 1
    no_leaks(ex)


def test_4_holdings_refreshed_before_the_sell(
    venue: VenueCase, ex: Any, recorder: Recorder
) -> None:
    ex.create_market_sell_order(venue.symbol, venue.size / 2, venue.exit)
    refreshed = recorder.named("balance_refreshed")
    assert refreshed[0]["total"] == pytest.approx(venue.size)
    assert recorder.names().index("balance_refreshed") < recorder.names().index("order_submitted")


def test_5_clamped_to_what_is_held(venue: VenueCase, ex: Any, recorder: Recorder) -> None:
    order = ex.create_market_sell_order(venue.symbol, venue.size * 3, venue.exit)
    assert order["amount"] == pytest.approx(venue.size)
    clamp = recorder.named("quantity_clamped")[0]
    assert (clamp["requested_amount"], clamp["amount"]) == (venue.size * 3, venue.size)
    assert venue.held() == 0


def test_6_nothing_held_nothing_sent(venue: VenueCase, ex: Any) -> None:
    ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
    sent = len(venue.orders_sent())
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order(venue.symbol, 1, venue.exit)
    assert len(venue.orders_sent()) == sent
    no_leaks(ex)


def test_7_lock_released_after_a_partial_exit(
    venue: VenueCase, ex: Any, recorder: Recorder
) -> None:
    resting = ex.create_limit_sell_order(venue.symbol, venue.size, venue.high, venue.exit)
    venue.fill(resting["id"], venue.size / 2)
    ex.cancel_order(resting["id"], venue.symbol)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")[0]["exit"]
    assert settled.outcome == nija_guard.Outcome.PARTIALLY_FILLED
    assert settled.filled == pytest.approx(venue.size / 2)
    ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)  # the rest
    assert venue.held() == 0
    no_leaks(ex)


def test_client_order_ids_on_the_wire(venue: VenueCase, ex: Any) -> None:
    order = ex.create_market_sell_order(venue.symbol, venue.size / 2, venue.exit)
    [sent] = venue.orders_sent()
    cid = venue.client_id_on_the_wire(sent)
    assert (
        cid == ex.nija_guard.status()["in_flight"][0]["client_order_id"]
        if ex.nija_guard.status()["in_flight"]
        else cid
    )
    assert cid and (cid.startswith("njg") or cid.startswith("4e4a4700"))
    assert order["id"]


def test_ghost_order_is_reconciled_by_client_id(
    venue: VenueCase, ex: Any, recorder: Recorder
) -> None:
    ex.load_markets()
    venue.ghost()
    order = ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
    assert order["status"] == "closed"
    [sent] = venue.orders_sent()
    cid = venue.client_id_on_the_wire(sent)
    assert cid is not None and venue.lookups(cid), "the order was looked up by its client id"
    assert venue.held() == 0
    assert len(recorder.named("order_settled")) == 1
    no_leaks(ex)


def test_stress_many_threads_many_tries(venue: VenueCase, ex: Any) -> None:
    ex.load_markets()
    barrier = threading.Barrier(6)

    def hammer() -> None:
        barrier.wait()
        for _ in range(5):
            with contextlib.suppress(nija_guard.ExitInProgress, nija_guard.NothingToSell):
                ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(venue.orders_sent()) == 1  # zero double-sells
    assert venue.held() == 0 and venue.sold() == Decimal(str(venue.size))  # zero oversell
    no_leaks(ex)


def test_async_client(venue: VenueCase) -> None:
    async def main() -> None:
        async with nija_guard.guard(venue.async_client(), **FAST) as ex:
            await ex.load_markets()
            results = await asyncio.gather(
                *(
                    ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
                    for _ in range(10)
                ),
                return_exceptions=True,
            )
            assert sum(isinstance(r, dict) for r in results) == 1
            assert all(
                isinstance(r, (dict, nija_guard.ExitInProgress, nija_guard.NothingToSell))
                for r in results
            )
            assert len(venue.orders_sent()) == 1
            assert venue.held() == 0
            no_leaks(ex)

    asyncio.run(main())


def test_async_ghost(venue: VenueCase) -> None:
    async def main() -> None:
        async with nija_guard.guard(venue.async_client(), **FAST) as ex:
            await ex.load_markets()
            venue.ghost()
            order = await ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
            assert order["status"] == "closed"
            assert len(venue.orders_sent()) == 1 and venue.held() == 0

    asyncio.run(main())


def test_async_scenarios(venue: VenueCase, recorder: Recorder) -> None:
    """Scenarios 2, 3, 5, 6 on the venue's async client."""

    async def main() -> None:
        async with nija_guard.guard(venue.async_client(), **FAST, plugins=[recorder]) as ex:
            # 2: a resting exit refuses a new one until it is final
            await ex.create_limit_sell_order(venue.symbol, venue.size / 2, venue.high, venue.exit)
            with pytest.raises(nija_guard.ExitInProgress):
                await ex.create_market_sell_order(venue.symbol, venue.size / 2, venue.exit)
            venue.set_price(venue.high + 1000)
            for _ in range(2000):
                if not ex.nija_guard.locked_symbols():
                    break
                await asyncio.sleep(0.005)
            assert ex.nija_guard.locked_symbols() == []
            # 5 and 3: clamped to the rest, flushed
            order = await ex.create_market_sell_order(venue.symbol, venue.size * 3, venue.exit)
            assert order["amount"] == pytest.approx(venue.size / 2)
            assert venue.symbol in [f["symbol"] for f in recorder.named("position_flushed")]
            # 6: nothing left, nothing sent
            with pytest.raises(nija_guard.NothingToSell):
                await ex.create_market_sell_order(venue.symbol, venue.size, venue.exit)
            assert len(venue.orders_sent()) == 2
            no_leaks(ex)

    asyncio.run(main())


def test_an_earlier_runs_resting_exit_holds_the_lock_after_a_restart(venue: VenueCase) -> None:
    """Adoption on the real client: kraken from one account-wide listing, the others per
    symbol (binance refuses to list without one; okx swaps are derivatives)."""
    before = nija_guard.guard(venue.client(), **FAST, account="before-restart")
    resting = before.create_limit_sell_order(venue.symbol, venue.size / 2, venue.high, venue.exit)
    before.nija_guard.close()
    after = nija_guard.guard(venue.client(), **FAST, account="after-restart")
    try:
        with pytest.raises(nija_guard.ExitInProgress):
            after.create_market_sell_order(venue.symbol, venue.size / 2, venue.exit)
        assert [r["order_id"] for r in after.nija_guard.status()["in_flight"]] == [resting["id"]]
        assert len(venue.orders_sent()) == 1
        assert after.nija_guard.book.lists_open_orders is (True if venue.name == "kraken" else None)
    finally:
        after.nija_guard.close()
