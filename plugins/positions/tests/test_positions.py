from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard_positions import Positions
from pytest_nija_guard import FAST_OPTIONS


def guard(paper: PaperExchange, plugin: Positions, **options: Any) -> Any:
    return nija_guard.guard(paper, plugins=[plugin], **{**FAST_OPTIONS, **options})


def test_partial_fills_lower_the_position_and_a_full_close_deletes_it() -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    record = {"BTC/USDT": 1.0, "ETH/USDT": 2.0}
    ex = guard(paper, Positions(record))
    order = ex.create_limit_sell_order("BTC/USDT", 1, 60_000)
    paper.fill(order["id"], "0.25")
    ex.nija_guard.poll()
    ex.fetch_order(order["id"], "BTC/USDT")
    assert record["BTC/USDT"] == pytest.approx(0.75)
    paper.fill(order["id"])
    ex.fetch_order(order["id"], "BTC/USDT")
    assert "BTC/USDT" not in record  # flushed at once
    assert record == {"ETH/USDT": 2.0}  # other symbols untouched
    ex.nija_guard.close()


def test_the_record_is_gone_before_the_lock_is_released() -> None:
    """A bot reading its record while the guard holds the lock never sees the closed position."""
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    record = {"BTC/USDT": 1.0}
    seen: list[tuple[bool, list[str]]] = []

    class Probe:  # registered first, so pluggy calls it after Positions
        @nija_guard.hookimpl
        def nija_guard_position_flushed(self, symbol: str) -> None:
            seen.append((symbol in record, ex.nija_guard.locked_symbols()))

    ex = nija_guard.guard(paper, plugins=[Probe(), Positions(record)], **FAST_OPTIONS)
    ex.create_market_sell_order("BTC/USDT", 1)
    assert seen == [(False, ["BTC/USDT"])]  # deleted, and the lock still held
    assert ex.nija_guard.locked_symbols() == []
    ex.nija_guard.close()


def test_symbols_the_bot_does_not_track_are_left_alone() -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    record: dict[str, Any] = {}
    ex = guard(paper, Positions(record))
    ex.create_market_sell_order("BTC/USDT", 1)
    assert record == {}
    ex.nija_guard.close()


def test_value_types_are_kept_and_never_negative() -> None:
    paper = PaperExchange(balances={"BTC": 1, "ETH": 5, "USDT": 0})
    record: dict[str, Any] = {"BTC/USDT": Decimal("2"), "ETH/USDT": 3}
    ex = guard(paper, Positions(record))
    ex.create_market_sell_order("BTC/USDT", "0.5")
    ex.create_market_sell_order("ETH/USDT", 1)
    assert record["BTC/USDT"] == Decimal("1.5") and isinstance(record["BTC/USDT"], Decimal)
    assert record["ETH/USDT"] == 2 and isinstance(record["ETH/USDT"], int)
    record["ETH/USDT"] = 1  # the bot thought it held less than it sold
    paper.venue.free["ETH"] = Decimal(10)
    ex.create_market_sell_order("ETH/USDT", 3)
    assert record.get("ETH/USDT", 0) == 0
    ex.nija_guard.close()


def test_concurrent_exits_keep_the_record_consistent() -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    paper = PaperExchange(balances={"BTC": 10, "ETH": 10, "USDT": 0})
    record = dict.fromkeys(symbols, 10.0)
    plugin = Positions(record)
    ex = guard(paper, plugin, on_conflict="wait")
    barrier = threading.Barrier(8)

    def sell(symbol: str) -> None:
        barrier.wait()
        for _ in range(5):
            ex.create_market_sell_order(symbol, 0.5)

    threads = [threading.Thread(target=sell, args=(symbols[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # 4 threads x 5 sells x 0.5 per symbol: everything sold, every fill counted, then flushed.
    assert all(paper.venue.sold(symbol) == 10 for symbol in symbols)
    assert record == {}
    ex.nija_guard.close()


def test_bad_mapping_is_refused() -> None:
    with pytest.raises(TypeError, match="mutable mapping"):
        Positions([("BTC/USDT", 1)])  # type: ignore[arg-type]


def test_registered_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    assert "nija_guard_positions:plugin" in [ep.value for ep in entry_points(group="nija_guard")]
