"""The guard's state stays bounded: what an exit leaves behind goes away on its own."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from conftest import FAST

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_settled_sells_of_assets_never_traded_again_are_let_go() -> None:
    names = [f"C{i}/USDT" for i in range(50)]
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in names}
    paper = PaperExchange(markets=markets, balances={s.split("/")[0]: 10 for s in names})
    ex: Any = nija_guard.guard(paper, **FAST)
    book = ex.nija_guard.book
    clock = FakeClock()
    book.clock = clock
    try:
        for symbol in names:
            ex.create_market_sell_order(symbol, 1)
        tables = ex.nija_guard.status()["tables"]
        assert tables["assets"] == 50 and tables["sells"] == 50  # kept for lagging balances
        clock.now += book.SETTLED_KEEP_SECONDS + 1
        ex.create_market_sell_order(names[0], 1)  # any later settlement sweeps the others
        tables = ex.nija_guard.status()["tables"]
        assert tables["assets"] == 1 and tables["sells"] == 1
        assert tables["symbols"] == 0 and tables["tracked"] == 0
        assert len(book._scheduled) == 1 and len(book._sweep_queue) == 1
    finally:
        ex.nija_guard.close()


def test_an_asset_traded_again_is_looked_at_again_later() -> None:
    paper = PaperExchange(balances={"BTC": 10, "ETH": 10, "USDT": 0})
    ex: Any = nija_guard.guard(paper, **FAST)
    book = ex.nija_guard.book
    clock = FakeClock()
    book.clock = clock
    try:
        ex.create_market_sell_order("BTC/USDT", 1)
        clock.now += 100
        ex.create_market_sell_order("BTC/USDT", 1)  # a newer sell of the same asset
        clock.now += 30  # the first is past the window, the second is not
        ex.create_market_sell_order("ETH/USDT", 1)
        assert len(book.sells["BTC"].settled) == 1
        clock.now += 100
        ex.create_market_sell_order("ETH/USDT", 1)
        assert "BTC" not in book.sells
    finally:
        ex.nija_guard.close()


# -- a balance snapshot older than our own settled sells still counts them ---------------
def _settle(
    book: Any,
    *,
    exchange_ts: int | None,
    local_ack_ms: int,
    filled: str,
    amount: str = "1",
    final_ts: int | None = None,
) -> None:
    from nija_guard._book import ExitRecord
    from nija_guard._model import Exit, MarketInfo

    market = MarketInfo("BTC/USDT", "BTC", "USDT", None, None, None)
    exit_value = Exit("e", "a", "BTC/USDT", "sell", "limit", "create_order", 1.0)
    rec = ExitRecord(exit=exit_value, market=market, key="BTC/USDT")
    rec.amount, rec.filled = Decimal(amount), Decimal(filled)
    rec.exchange_ts, rec.local_ack_ms, rec.final_ts = exchange_ts, local_ack_ms, final_ts
    book.add_sell(rec)
    rec.settled = True
    book.settle(rec)


def test_settled_sells_count_until_a_snapshot_shows_them_whole() -> None:
    from nija_guard._book import Book

    book = Book("a")
    other: Any = object()  # the exit asking: none of these
    unreflected = lambda snapshot_ms, local_ms=0: book.unreflected_sells(  # noqa: E731
        "BTC", snapshot_ms, local_ms, exclude=other
    )
    _settle(book, exchange_ts=1000, local_ack_ms=1000, filled="1")
    _settle(book, exchange_ts=2000, local_ack_ms=2000, filled="1")
    assert unreflected(2500) == 0  # shows both
    assert unreflected(1500) == 1  # misses the second
    assert unreflected(500) == 2
    assert unreflected(2500) == 0  # and again after a look at each
    # Resting, then cancelled with 0.25 of 1 filled: a snapshot taken while it rested
    # shows 0.75 locked that is free again now, proven by the exchange's clocks.
    _settle(book, exchange_ts=3000, local_ack_ms=3000, filled="0.25", final_ts=4000)
    assert unreflected(3500) == Decimal("-0.75")
    assert unreflected(4000) == 0
    # No exchange time on this one: only the local clock tells, whatever snapshot_ms says.
    _settle(book, exchange_ts=None, local_ack_ms=9000, filled="1")
    assert unreflected(10_000, local_ms=8000) == 1
    assert unreflected(10_000, local_ms=9500) == 0
    # A snapshot without exchange time: local clocks decide for every sell.
    assert unreflected(None, local_ms=8000) == 1
    assert unreflected(None, local_ms=500) == 1 + 1 + Decimal("0.25") + 1
