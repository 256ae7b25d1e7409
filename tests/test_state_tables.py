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
