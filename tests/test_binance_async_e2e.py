"""A real ccxt.async_support.binance through the guard, against the loopback fake."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import Iterator

import ccxt
import pytest
from conftest import FAST, Recorder
from fakes.binance_spot import FakeBinance
from test_async import no_leaks, until

import nija_guard

ORDER = "/api/v3/order"


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(
        api_key=f"key-{uuid.uuid4().hex}", balances={"BTC": 1, "ETH": 10, "USDT": 1000}
    ) as server:
        yield server
    assert server.unknown == []
    assert server.server_errors == []


def test_async_binance_clamps_and_sends_our_client_id(
    fake: FakeBinance, recorder: Recorder
) -> None:
    async def main() -> None:
        async with nija_guard.guard(fake.async_client(), **FAST, plugins=[recorder]) as ex:
            assert isinstance(ex, ccxt.async_support.binance)
            order = await ex.create_market_sell_order("BTC/USDT", 3)
            assert order["filled"] == pytest.approx(1)
            [post] = fake.requests_to("POST", ORDER)
            assert post.params["quantity"] == "1"
            assert post.params["newClientOrderId"] == order["clientOrderId"]
            assert order["clientOrderId"].startswith("njg")
            with pytest.raises(nija_guard.NothingToSell):
                await ex.create_market_sell_order("BTC/USDT", 1)
            no_leaks(ex)

    asyncio.run(main())


def test_async_binance_many_tasks_one_order(fake: FakeBinance) -> None:
    async def main() -> None:
        async with nija_guard.guard(fake.async_client(), **FAST) as ex:
            await ex.load_markets()
            results = await asyncio.gather(
                *(ex.create_market_sell_order("BTC/USDT", 1) for _ in range(25)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, dict) for r in results) == 1
            assert all(
                isinstance(r, (dict, nija_guard.ExitInProgress, nija_guard.NothingToSell))
                for r in results
            )
            assert len(fake.requests_to("POST", ORDER)) == 1
            no_leaks(ex)

    asyncio.run(main())


@pytest.mark.parametrize("fault", ["drop_after", "error_after", "bad_json_after"])
def test_async_binance_ghost_is_reconciled(
    fake: FakeBinance, recorder: Recorder, fault: str
) -> None:
    async def main() -> None:
        async with nija_guard.guard(fake.async_client(), **FAST, plugins=[recorder]) as ex:
            await ex.load_markets()
            fake.inject("POST", ORDER, fault, status=502 if fault == "error_after" else 500)
            order = await ex.create_market_sell_order("BTC/USDT", 0.4)
            assert order["filled"] == pytest.approx(0.4)
            assert len(fake.venue.all_orders()) == 1
            unknown = 0 if fault == "bad_json_after" else 1  # a cut-off 200 is found at once
            assert len(recorder.named("outcome_unknown")) == unknown
            no_leaks(ex)

    asyncio.run(main())


def test_async_binance_resting_order_is_polled_to_settlement(
    fake: FakeBinance, recorder: Recorder
) -> None:
    async def main() -> None:
        async with nija_guard.guard(fake.async_client(), **FAST, plugins=[recorder]) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
            with pytest.raises(nija_guard.ExitInProgress):
                await ex.create_market_sell_order("BTC/USDT", 0.5)
            fake.venue.set_price("BTC/USDT", 61_000)
            await until(lambda: ex.nija_guard.locked_symbols() == [])
            assert recorder.named("order_settled")[0]["exit"].outcome == nija_guard.Outcome.FILLED

    asyncio.run(main())


def test_async_with_leaves_no_unclosed_session(
    fake: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with nija_guard.guard(fake.async_client(), **FAST) as ex:
            await ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
            session = ex.session
            assert session is not None and not session.closed
        assert session.closed
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message) or "destroyed" in str(w.message)]
    # aiohttp and asyncio report leaks through the loop's exception handler: the 'asyncio' logger.
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
