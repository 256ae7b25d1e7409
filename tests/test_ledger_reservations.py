"""Ledger mode: reservations taken at the balance refresh, and given back.

An exit reserves the most it may sell when it reads its holding (so a second
symbol of the asset sees it); an edit may reserve the amended order's part too,
which the ledger owes until that order gives it back. Refusals must give every
reservation back, and a full close counts what other exits still hold reserved.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal as D
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder
from test_regressions import AmendingPaper, drive_polls, quiet

import nija_guard
from nija_guard.testing import AsyncPaperExchange, PaperExchange
from nija_guard.testing._venue import Market


class AmountHook:
    armed = False

    @nija_guard.hookimpl
    def nija_guard_exit_amount(self, exit: Any, amount: float) -> float | None:
        if self.armed:
            raise RuntimeError("policy service down")
        return None


@pytest.mark.parametrize("refusal", ["policy-raises", "below-minimum"])
def test_refused_ledger_edit_does_not_inflate_the_ledger(make_guard: Any, refusal: str) -> None:
    hook = AmountHook()
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, plugins=[hook], ownership="ledger", ledger_seed={"BTC": 1}))
    resting = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)  # the whole ledger reserved
    g = ex.nija_guard
    assert g.book.ledger_available("BTC") == 0
    amount = 1
    if refusal == "policy-raises":
        hook.armed = True
    else:
        amount = 0.00001
    with pytest.raises(ccxt.BaseError):
        ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", amount, 95_000)
    hook.armed = False
    assert "edit_order" not in paper.calls
    # The resting order still holds its 1 BTC reservation: nothing else is owned.
    assert g.book.ledger_available("BTC") == 0


def test_refused_ledger_edit_then_fill_sells_what_the_bot_does_not_own(make_guard: Any) -> None:
    """Shared account: 10 BTC, the bot owns 1 (seed). Its 1 BTC limit sell rests; an edit
    is refused by a failing policy hook; the order then fills. The bot owns 0."""
    hook = AmountHook()
    paper = PaperExchange(balances={"BTC": 10, "USDT": 0})
    ex = quiet(make_guard(paper, plugins=[hook], ownership="ledger", ledger_seed={"BTC": 1}))
    resting = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    hook.armed = True
    with pytest.raises(nija_guard.ExitVetoed):
        ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", 1, 95_000)
    hook.armed = False
    paper.fill(resting["id"])
    drive_polls(ex)
    assert ex.nija_guard.locked_symbols() == []
    with pytest.raises(nija_guard.NothingToSell):  # guarantee 7
        ex.create_market_sell_order("BTC/USDT", 1)


class Lower:
    to: float | None = None

    @nija_guard.hookimpl
    def nija_guard_exit_amount(self, exit: Any, amount: float) -> float | None:
        return self.to


@pytest.mark.parametrize("lower", [None, 0.4])
def test_a_ledger_edit_books_what_it_sold_and_nothing_else(make_guard: Any, lower: Any) -> None:
    hook = Lower()
    paper = PaperExchange(balances={"BTC": 10, "USDT": 0})
    ex = quiet(make_guard(paper, plugins=[hook], ownership="ledger", ledger_seed={"BTC": 1}))
    resting = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    hook.to = lower
    edited = ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", 1, 95_000)
    hook.to = None
    paper.fill(edited["id"])
    drive_polls(ex)
    left = ex.nija_guard.book.ledger_available("BTC")
    assert float(left) == pytest.approx(1 - edited["amount"])


class Stall:
    def __init__(self) -> None:
        self.entered = asyncio.Event()

    @nija_guard.hookimpl
    async def nija_guard_exit_amount(self, exit: Any, amount: float) -> float | None:
        self.entered.set()
        await asyncio.sleep(60)
        return None


@pytest.mark.parametrize("ownership", ["ledger", "account"])
def test_an_exit_cancelled_after_its_reservation_gives_it_back(ownership: str) -> None:
    async def main() -> None:
        markets = {
            s: Market(symbol=s, price=D(100), min_cost=D(1)) for s in ("BTC/USDT", "BTC/EUR")
        }
        paper = AsyncPaperExchange(markets=markets, balances={"BTC": 1, "USDT": 0, "EUR": 0})
        stall = Stall()
        ex = nija_guard.guard(
            paper,
            **{
                **FAST,
                "plugins": [stall],
                "ownership": ownership,
                "ledger_seed": {"BTC": 1} if ownership == "ledger" else {},
            },
        )
        await ex.load_markets()
        task = asyncio.ensure_future(ex.create_market_sell_order("BTC/USDT", 1))
        await asyncio.wait_for(stall.entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        g = ex.nija_guard
        assert g.locked_symbols() == []
        assert g.book.sells.get("BTC") is None or not g.book.sells["BTC"].inflight
        if ownership == "ledger":
            assert g.book.ledger_available("BTC") == 1
        stall.entered = asyncio.Event()
        await ex.close()

    asyncio.run(main())


class HoldEurThenVeto:
    def __init__(self) -> None:
        self.inside = threading.Event()
        self.go = threading.Event()

    @nija_guard.hookimpl
    def nija_guard_exit_amount(self, exit: Any, amount: float) -> float | None:
        if exit.symbol != "BTC/EUR":
            return None
        self.inside.set()
        assert self.go.wait(10)
        raise RuntimeError("risk service says no")


def test_no_flush_while_another_symbol_of_the_asset_holds_a_reservation(make_guard: Any) -> None:
    markets = {s: Market(symbol=s, price=D(100), min_cost=D(1)) for s in ("BTC/USDT", "BTC/EUR")}
    paper = PaperExchange(markets=markets, balances={"BTC": 10, "USDT": 0, "EUR": 0})
    hold, rec = HoldEurThenVeto(), Recorder()
    ex = quiet(
        nija_guard.guard(
            paper, plugins=[hold, rec], **{**FAST, "ownership": "ledger", "ledger_seed": {"BTC": 1}}
        )
    )
    ex.load_markets()
    a = ex.create_limit_sell_order("BTC/USDT", 0.5, 200)
    errors: list[BaseException] = []

    def b() -> None:
        try:
            ex.create_market_sell_order("BTC/EUR", 0.5)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=b)
    t.start()
    assert hold.inside.wait(5)
    paper.fill(a["id"])
    drive_polls(ex)
    hold.go.set()
    t.join(10)
    assert isinstance(errors[0], nija_guard.ExitVetoed)
    assert ex.nija_guard.book.ledger_available("BTC") == D("0.5")
    flushed = rec.named("nija_guard_position_flushed")
    ex.nija_guard.close()
    assert flushed == []  # the bot still owns 0.5 BTC: nothing to flush


def test_an_in_place_edit_after_a_partial_fill_books_the_fill_as_sold() -> None:
    """Shared account (10 BTC), the bot owns 1. Its 1 BTC limit sell fills 0.7, then
    is amended in place (same id) for the 0.3 left. The bot owns 0.3, all reserved:
    another symbol may sell nothing (it sold 0.7 more before)."""
    markets = {s: Market(symbol=s, price=D(100), min_cost=D(1)) for s in ("BTC/USDT", "BTC/EUR")}
    paper = AmendingPaper(markets=markets, balances={"BTC": 10, "USDT": 0, "EUR": 0})
    ex = quiet(
        nija_guard.guard(paper, **{**FAST, "ownership": "ledger", "ledger_seed": {"BTC": 1}})
    )
    ex.load_markets()
    try:
        first = ex.create_limit_sell_order("BTC/USDT", 1, 200)
        paper.fill(first["id"], 0.7)
        drive_polls(ex)
        ex.edit_order(first["id"], "BTC/USDT", "limit", "sell", 1, 190)
        assert ex.nija_guard.owned("BTC") == 0
        with pytest.raises(nija_guard.NothingToSell):
            ex.create_market_sell_order("BTC/EUR", 1)
    finally:
        ex.nija_guard.close()


def test_an_adopted_partly_filled_order_still_counts_as_owned() -> None:
    """After a restart the guard adopts its resting 1 BTC sell that filled 0.5 already
    (0.5 reserved). The bot sells its other 0.5 through BTC/EUR: the adopted order may
    still give 0.5 back, so nothing is flushed."""
    markets = {s: Market(symbol=s, price=D(100), min_cost=D(1)) for s in ("BTC/USDT", "BTC/EUR")}
    paper = PaperExchange(markets=markets, balances={"BTC": 10, "USDT": 0, "EUR": 0})
    resting = paper.venue.place(
        "BTC/USDT", "sell", "limit", "1", "1000", client_order_id=f"njg{7:024x}"
    )
    paper.fill(resting.id, 0.5)
    recorder = Recorder()
    ex = quiet(
        nija_guard.guard(
            paper,
            plugins=[recorder],
            **{**FAST, "ownership": "ledger", "ledger_seed": {"BTC": 1}},
        )
    )
    ex.load_markets()
    try:
        with pytest.raises(nija_guard.ExitInProgress):
            ex.create_market_sell_order("BTC/USDT", 1)  # adopts the resting order
        assert ex.nija_guard.owned("BTC") == D("0.5")
        ex.create_market_sell_order("BTC/EUR", 0.5)
        assert recorder.named("nija_guard_position_flushed") == []
    finally:
        ex.nija_guard.close()
