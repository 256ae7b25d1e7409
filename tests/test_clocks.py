"""One event, one time: venues driven by a clock that moves a millisecond on every read.

The guard compares a balance snapshot's time with the times of the orders it may
or may not show. A venue (the paper exchange, a fake) that stamps one event with
two clock reads can stamp a snapshot before an order it shows, or after a cancel
it does not: with a real clock that happens when two reads straddle a millisecond,
rarely, as a flaky test. A clock that ticks on every read makes it happen every time.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from conftest import FAST
from fakes.binance_spot import FakeBinance
from test_regressions import quiet

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Venue, default_markets


class Clock:
    """``ticking``: every read is the next millisecond; otherwise frozen (jumped by hand)."""

    def __init__(self, ticking: bool) -> None:
        self.now, self.ticking = 1_000_000.0, ticking

    def __call__(self) -> float:
        if self.ticking:
            self.now += 0.001
        return self.now


CLOCKS = [pytest.param(False, id="frozen"), pytest.param(True, id="ticking")]


@pytest.mark.parametrize("ticking", CLOCKS)
def test_venue_stamps_one_event_once(ticking: bool) -> None:
    clock = Clock(ticking)
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0}, clock=clock)
    venue = paper.venue
    venue.balance_lag = 5.0
    clock.now += 10
    order = venue.place("BTC/USDT", "sell", "limit", 1, 90_000)  # rests: 1 BTC locked
    clock.now += 10
    placed = venue.balance()
    assert placed.used.get("BTC") == 1  # the snapshot shows the order's lock ...
    assert placed.timestamp >= order.timestamp, "... but is stamped before the order"
    venue.cancel(order.id)
    clock.now += 10
    canceled = venue.balance()
    assert canceled.free.get("BTC") == 1  # the snapshot shows the cancel's release ...
    assert canceled.timestamp >= order.updated_timestamp, "... but is stamped before the cancel"


@pytest.mark.parametrize("ticking", CLOCKS)
def test_replace_on_a_lagging_balance(make_guard: Any, ticking: bool) -> None:
    """tests/test_regressions.py #15, with the clock as the only change."""
    clock = Clock(ticking)
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0}, clock=clock)
    paper.venue.balance_lag = 5.0
    clock.now += 10
    ex = quiet(make_guard(paper, on_conflict="replace"))
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    clock.now += 10
    stop = ex.create_market_sell_order("BTC/USDT", 1)
    assert paper.venue.get(tp["id"]).status == "canceled"
    assert stop["filled"] == pytest.approx(1)


@pytest.mark.parametrize("ticking", CLOCKS)
def test_a_cancelled_exit_is_not_counted_as_free_twice(make_guard: Any, ticking: bool) -> None:
    """A snapshot that shows a cancel's release must not get the release added back."""
    clock = Clock(ticking)
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0}, clock=clock)
    paper.venue.balance_lag = 5.0
    clock.now += 10
    ex = quiet(make_guard(paper))
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    ex.cancel_order(tp["id"], "BTC/USDT")
    clock.now += 10  # the lagging endpoint now shows the cancel (1 BTC free)
    assert paper.fetch_balance()["BTC"]["free"] == 1
    order = ex.create_market_sell_order("BTC/USDT", 2)  # "sell what I have"
    assert order["amount"] == pytest.approx(1)


@pytest.mark.parametrize("ticking", CLOCKS)
def test_binance_cancelled_exit_is_not_counted_as_free_twice(ticking: bool) -> None:
    clock = Clock(ticking)
    venue = Venue(
        markets=default_markets(("BTC/USDT",)),
        free={"BTC": Decimal(1), "USDT": Decimal(0)},
        clock=clock,
        balance_lag=5.0,
    )
    clock.now += 10
    with FakeBinance(venue, api_key=f"key-{uuid.uuid4().hex}", symbols=("BTC/USDT",)) as fake:
        ex = nija_guard.guard(fake.client(), **FAST)
        try:
            ex.load_markets()
            tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
            ex.cancel_order(tp["id"], "BTC/USDT")
            clock.now += 10
            order = ex.create_market_sell_order("BTC/USDT", 2)
            assert order["amount"] == pytest.approx(1)
        finally:
            ex.nija_guard.close()
