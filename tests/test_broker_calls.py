"""The guard makes no broker call a shared fetch or a fresh answer makes unnecessary."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from conftest import FAST

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market


def _paper(symbols: int) -> PaperExchange:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(symbols)
    }
    return PaperExchange(markets=markets, balances={m.base: 10 for m in markets.values()})


def test_a_burst_on_many_symbols_shares_one_price_fetch_and_few_balance_fetches() -> None:
    paper = _paper(20)
    paper.latency = 0.002  # exits overlap on the wire
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    ex.load_markets()
    paper.calls.clear()
    start = threading.Barrier(20)

    def sell(symbol: str) -> None:
        start.wait()
        ex.create_market_sell_order(symbol, 1)

    threads = [threading.Thread(target=sell, args=(s,)) for s in paper.venue.markets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    calls = Counter(paper.calls)
    ex.nija_guard.close()
    assert calls["create_order"] == 20
    assert calls["fetch_ticker"] == 0  # no ticker per exit for the minimum-cost check ...
    assert 1 <= calls["fetch_tickers"] <= 2  # ... one shared listing (at most: on the wire + next)
    assert 1 <= calls["fetch_balance"] <= 2 * 20  # single flight: never more than one per exit


def test_a_stale_price_never_refuses_an_exit_as_dust() -> None:
    paper = _paper(1)
    paper.set_price("C0/USDT", 100)
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        book = ex.nija_guard.book
        # A price minutes old, at which 0.05 coins would be below the 1 USDT minimum.
        book.prices.put("C0/USDT", Decimal("10"), book.clock())
        paper.calls.clear()
        order = ex.create_market_sell_order("C0/USDT", 0.05)  # 5 USDT at the real price
        assert order["filled"] == 0.05
        assert paper.calls.count("fetch_ticker") == 1  # the dust verdict was checked, fresh
    finally:
        ex.nija_guard.close()


def test_dust_at_a_fresh_price_is_refused_once_without_an_order() -> None:
    paper = _paper(1)
    paper.venue.free["C0"] = Decimal("0.005")  # 0.5 USDT: below the 1 USDT minimum
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        for _ in range(3):
            with pytest.raises(nija_guard.DustPosition):
                ex.create_market_sell_order("C0/USDT", 1)
        assert "create_order" not in paper.calls
    finally:
        ex.nija_guard.close()


def test_more_symbols_than_the_price_cache_holds_still_share_one_listing() -> None:
    """5,000 symbols on one loop: the shared tickers reply is read once, and a symbol the
    price cache had to forget is read from that reply, not fetched again."""
    import asyncio

    from nija_guard.testing import AsyncPaperExchange

    async def main() -> Counter[str]:
        markets = {
            f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
            for i in range(5000)
        }
        paper = AsyncPaperExchange(markets=markets, balances={m.base: 10 for m in markets.values()})
        paper.latency = 0.001
        ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
        await ex.load_markets()
        assert ex.nija_guard.book.prices.size < len(markets)
        paper.calls.clear()
        replies = await asyncio.gather(*(ex.create_market_sell_order(s, 1) for s in markets))
        calls = Counter(paper.calls)
        await ex.nija_guard.aclose()
        assert all(r["status"] == "closed" for r in replies)
        return calls

    calls = asyncio.run(main())
    assert calls["create_order"] == 5000
    assert calls["fetch_ticker"] == 0
    assert calls["fetch_tickers"] == 1
