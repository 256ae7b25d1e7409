"""Derivatives exits on a real ccxt.okx against the loopback OKX swap fake.

An exit closes a position: a reduceOnly order, close_position, or an order
opposite to the open position. Holdings come from fetch_positions, the clamp is
to the open position, the guard adds reduceOnly, and a double close never flips
the position.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder, wait_until
from fakes.ccxt_urls import point_at
from venues import Binance, Okx

import nija_guard

SYMBOL = "BTC/USDT:USDT"


@pytest.fixture
def okx() -> Iterator[Okx]:
    case = Okx().start()  # long 10 contracts
    yield case
    assert case.fake.unknown == []
    case.stop()


@pytest.fixture
def ex(okx: Okx, recorder: Recorder) -> Iterator[Any]:
    guarded = nija_guard.guard(okx.client(), **FAST, plugins=[recorder])
    yield guarded
    guarded.nija_guard.close()


def position(okx: Okx) -> tuple[str | None, float]:
    p = okx.fake.venue.position(SYMBOL)
    return p.side, float(abs(p.contracts))


def test_an_opposite_order_is_an_exit_and_gets_reduce_only(
    okx: Okx, ex: Any, recorder: Recorder
) -> None:
    ex.create_market_sell_order(SYMBOL, 4)  # no reduceOnly from the bot
    [sent] = okx.orders_sent()
    assert sent["reduceOnly"] in (True, "true")
    assert sent["clOrdId"].startswith("njg")
    assert position(okx) == ("long", 6.0)
    assert recorder.named("exit_requested")


def test_an_order_on_the_positions_side_is_an_entry(okx: Okx, ex: Any, recorder: Recorder) -> None:
    ex.create_market_buy_order(SYMBOL, 2)
    [sent] = okx.orders_sent()
    assert "reduceOnly" not in sent or sent["reduceOnly"] in (False, "false")
    assert not sent.get("clOrdId", "").startswith("njg")  # not touched
    assert recorder.named("exit_requested") == []
    assert position(okx) == ("long", 12.0)


def test_the_clamp_is_to_the_open_position(okx: Okx, ex: Any, recorder: Recorder) -> None:
    order = ex.create_market_sell_order(SYMBOL, 30, {"reduceOnly": True})
    assert order["amount"] == pytest.approx(10)
    refreshed = recorder.named("balance_refreshed")[0]
    assert refreshed["total"] == pytest.approx(10)  # contracts, from fetch_positions
    assert okx.fake.requests_to("GET", "/api/v5/account/positions")
    assert position(okx)[1] == 0


def test_a_double_close_never_flips_the_position(okx: Okx, ex: Any) -> None:
    ex.load_markets()
    barrier = threading.Barrier(6)
    outcomes: list[str] = []
    others_returned = threading.Event()

    class HoldTheWinner:
        """The one admitted exit waits, past its balance refresh, until the other five
        returned: they overlap it however the threads are scheduled. (A thread that
        came only after the winner had ended would find the position flat, where a
        plain sell opens a short: an entry, not an exit; see docs/compatibility.md.)"""

        @nija_guard.hookimpl
        def nija_guard_balance_refreshed(self) -> None:
            assert others_returned.wait(10)

    ex.nija_guard.register(HoldTheWinner())

    def close(how: int) -> None:
        barrier.wait()
        try:
            if how % 2:
                ex.close_position(SYMBOL)
            else:
                ex.create_market_sell_order(SYMBOL, 10)  # opposite side: an exit too
            outcomes.append("closed")
        except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
            outcomes.append(type(exc).__name__)
            if len(outcomes) >= 5:
                others_returned.set()

    threads = [threading.Thread(target=close, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("closed") == 1, outcomes
    assert position(okx) == (None, 0.0)  # flat, never short
    assert len(okx.orders_sent()) == 1


def test_a_late_duplicate_close_with_reduce_only_finds_nothing(okx: Okx, ex: Any) -> None:
    """The advice in docs/faq.md: a duplicate close signal that comes after the first close
    ended finds a flat position. Sent with reduceOnly it is an exit: NothingToSell."""
    ex.load_markets()
    ex.close_position(SYMBOL)
    sent = len(okx.orders_sent())
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order(SYMBOL, 10, {"reduceOnly": True})
    assert len(okx.orders_sent()) == sent
    assert position(okx) == (None, 0.0)


def test_close_position_is_guarded_and_a_second_finds_nothing(
    okx: Okx, ex: Any, recorder: Recorder
) -> None:
    ex.close_position(SYMBOL)
    assert position(okx) == (None, 0.0)
    assert okx.fake.requests_to("POST", "/api/v5/trade/close-position")
    assert [f["symbol"] for f in recorder.named("position_flushed")] == [SYMBOL]
    with pytest.raises(nija_guard.NothingToSell):
        ex.close_position(SYMBOL)
    assert len(okx.fake.requests_to("POST", "/api/v5/trade/close-position")) == 1


def test_a_short_is_closed_by_a_buy(okx: Okx, ex: Any) -> None:
    okx.fake.venue.place(SYMBOL, "sell", "market", "25")  # now short 15
    order = ex.create_market_buy_order(SYMBOL, 40)  # closing a short: clamped to 15, reduceOnly
    assert order["amount"] == pytest.approx(15)
    [sent] = okx.orders_sent()
    assert sent["reduceOnly"] in (True, "true")
    assert position(okx) == (None, 0.0)


def test_reduce_only_on_a_flat_position_sends_nothing(okx: Okx, ex: Any) -> None:
    ex.close_position(SYMBOL)
    sent = len(okx.orders_sent())
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order(SYMBOL, 1, {"reduceOnly": True})
    assert len(okx.orders_sent()) == sent


def test_spot_orders_never_get_reduce_only() -> None:
    case = Binance().start()
    try:
        ex = nija_guard.guard(case.client(), **FAST)
        ex.create_market_sell_order("BTC/USDT", 0.5)
        [sent] = case.orders_sent()
        assert "reduceOnly" not in sent
        ex.nija_guard.close()
    finally:
        case.stop()


class OkxClosingAll(ccxt.okx):  # type: ignore[misc]
    """ccxt.okx has no close_all_positions (bitget, bingx, mexc... have one endpoint
    for it). This one closes every open position, one close_position each, on the
    raw client: what the guard sees is the one account-wide call."""

    inside = threading.Event()  # set while closing; the test lines up a race on it
    go_on = threading.Event()

    def close_all_positions(self, params: dict[str, Any] | None = None) -> list[Any]:
        type(self).inside.set()
        assert type(self).go_on.wait(30)
        open_positions = [p for p in self.fetch_positions() if p["contracts"]]
        for p in open_positions:
            self.close_position(p["symbol"])
        return open_positions


def closing_all_client(okx: Okx) -> Any:
    OkxClosingAll.inside = threading.Event()
    OkxClosingAll.go_on = threading.Event()
    return point_at(OkxClosingAll(okx.fake.client_config()), okx.fake.url)


def test_close_all_positions_excludes_every_exit_while_it_runs(
    okx: Okx, recorder: Recorder
) -> None:
    okx.fake.venue.place("ETH/USDT:USDT", "sell", "market", "7")  # and short ETH
    ex = nija_guard.guard(closing_all_client(okx), **FAST, plugins=[recorder])
    try:
        ex.load_markets()
        closing = threading.Thread(target=ex.close_all_positions)
        closing.start()
        assert OkxClosingAll.inside.wait(30)
        # While it runs, an exit of any symbol is refused and sends nothing.
        with pytest.raises(nija_guard.ExitInProgress):
            ex.create_market_sell_order(SYMBOL, 10, {"reduceOnly": True})
        with pytest.raises(nija_guard.ExitInProgress):
            ex.close_position("ETH/USDT:USDT")
        with pytest.raises(nija_guard.ExitInProgress):
            ex.close_all_positions()
        OkxClosingAll.go_on.set()
        closing.join(30)
        assert not closing.is_alive()
        assert position(okx) == (None, 0.0)
        assert okx.fake.venue.position("ETH/USDT:USDT").side is None
        assert len(okx.fake.requests_to("POST", "/api/v5/trade/close-position")) == 2
        assert ex.nija_guard.locked_symbols() == []
        # A stale exit afterwards finds nothing to close: holdings are fetched again.
        with pytest.raises(nija_guard.NothingToSell):
            ex.create_market_sell_order(SYMBOL, 10, {"reduceOnly": True})
        assert okx.orders_sent() == [
            r.params for r in okx.fake.requests_to("POST", "/api/v5/trade/close-position")
        ]
    finally:
        OkxClosingAll.go_on.set()
        ex.nija_guard.close()


def test_close_all_positions_is_refused_while_an_exit_rests(okx: Okx, recorder: Recorder) -> None:
    ex = nija_guard.guard(closing_all_client(okx), **FAST, plugins=[recorder])
    try:
        OkxClosingAll.go_on.set()
        resting = ex.create_limit_sell_order(SYMBOL, 4, okx.high, {"reduceOnly": True})
        assert resting["status"] == "open"
        with pytest.raises(nija_guard.ExitInProgress):
            ex.close_all_positions()
        assert not okx.fake.requests_to("POST", "/api/v5/trade/close-position")
        ex.cancel_order(resting["id"], SYMBOL)
        wait_until(lambda: ex.nija_guard.locked_symbols() == [])
        ex.close_all_positions()
        assert position(okx) == (None, 0.0)
        assert ex.nija_guard.locked_symbols() == []
    finally:
        ex.nija_guard.close()


def test_an_order_sized_in_quote_currency_is_refused_on_derivatives(okx: Okx, ex: Any) -> None:
    """A cost is in quote currency; a swap order is in contracts: converting needs the
    contract size, and reduceOnly would only cap it at the whole position. Refused."""
    with pytest.raises(ccxt.InvalidOrder, match="in contracts"):
        ex.create_market_sell_order_with_cost(SYMBOL, 100, {"reduceOnly": True})
    assert okx.orders_sent() == []
    assert position(okx) == ("long", 10.0)
    assert ex.nija_guard.locked_symbols() == []
