"""Ledger mode (never sell what the bot does not own) and fees charged in the base asset."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from conftest import assert_no_leaks

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market


def test_stale_second_exit_after_full_close_sells_nothing_in_a_shared_account(
    make_guard: Any, recorder: Any
) -> None:
    # The account holds 3 BTC; this bot owns 1 of them.
    paper = PaperExchange(balances={"BTC": 3, "USDT": 0})
    ex = make_guard(paper, ownership="ledger", ledger_seed={"BTC": 1})
    first = ex.create_market_sell_order("BTC/USDT", 1)
    assert first["filled"] == pytest.approx(1)
    assert [f["symbol"] for f in recorder.named("position_flushed")] == ["BTC/USDT"]
    with pytest.raises(nija_guard.NothingToSell, match="ledger"):
        ex.create_market_sell_order("BTC/USDT", 1)  # the stale duplicate
    assert paper.holdings("BTC") == pytest.approx(2)  # the other strategy's coins are intact
    assert len(paper.sell_orders()) == 1
    assert_no_leaks(ex)


def test_ledger_clamps_to_what_the_bot_owns(make_guard: Any, recorder: Any) -> None:
    paper = PaperExchange(balances={"BTC": 3, "USDT": 0})
    ex = make_guard(paper, ownership="ledger", ledger_seed={"BTC": "0.75"})
    order = ex.create_market_sell_order("BTC/USDT", 2)
    assert order["amount"] == pytest.approx(0.75)
    assert recorder.named("quantity_clamped")[0]["reason"] == "holdings"
    assert ex.nija_guard.owned("BTC") == 0


def test_buys_through_the_guard_are_credited_net_of_base_fees(make_guard: Any) -> None:
    paper = PaperExchange(balances={"USDT": 100_000})
    paper.venue.fee_in_base = True  # a buy's fee is taken from the BTC received
    ex = make_guard(paper, ownership="ledger")
    ex.create_market_buy_order("BTC/USDT", 0.5)
    assert ex.nija_guard.owned("BTC") == Decimal("0.4995")  # 0.5 minus 0.1 % fee
    order = ex.create_market_sell_order("BTC/USDT", 0.5)  # the bot thinks it holds 0.5
    assert order["amount"] == pytest.approx(0.4995)
    assert paper.holdings("BTC") == pytest.approx(0)
    assert_no_leaks(ex)


def test_resting_buy_is_credited_when_it_fills(make_guard: Any) -> None:
    paper = PaperExchange(balances={"USDT": 100_000})
    ex = make_guard(paper, ownership="ledger")
    buy = ex.create_limit_buy_order("BTC/USDT", 0.2, 40_000)
    assert ex.nija_guard.owned("BTC") == 0
    paper.fill(buy["id"], "0.05")
    ex.fetch_order(buy["id"], "BTC/USDT")  # seen through the proxy
    assert ex.nija_guard.owned("BTC") == Decimal("0.05")
    paper.fill(buy["id"])
    ex.nija_guard.poll()
    ex.fetch_order(buy["id"], "BTC/USDT")
    assert ex.nija_guard.owned("BTC") == Decimal("0.2")


def test_in_flight_sells_reserve_the_ledger_across_markets_of_one_asset(make_guard: Any) -> None:
    markets = {
        "BTC/USDT": Market("BTC/USDT", price=Decimal(50_000)),
        "BTC/EUR": Market("BTC/EUR", price=Decimal(46_000)),
    }
    paper = PaperExchange(markets=markets, balances={"BTC": 5})
    ex = make_guard(paper, ownership="ledger", ledger_seed={"BTC": 1})
    ex.create_limit_sell_order("BTC/USDT", "0.6", 90_000)  # rests, reserving 0.6
    order = ex.create_market_sell_order("BTC/EUR", 1)  # another symbol, same coin
    assert order["amount"] == pytest.approx(0.4)
    assert ex.nija_guard.owned("BTC") == 0


def test_cancelled_exit_gives_its_reservation_back(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 5})
    ex = make_guard(paper, ownership="ledger", ledger_seed={"BTC": 1})
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    paper.fill(tp["id"], "0.3")
    assert ex.nija_guard.owned("BTC") == 0
    ex.cancel_order(tp["id"], "BTC/USDT")
    assert ex.nija_guard.owned("BTC") == Decimal("0.7")


def test_seed_api(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 2})
    ex = make_guard(paper, ownership="ledger")
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 1)
    assert ex.nija_guard.seed("BTC", 0.5) == Decimal("0.5")
    with pytest.raises(ValueError, match="seed"):
        ex.nija_guard.seed("BTC", -1)
    assert ex.create_market_sell_order("BTC/USDT", 1)["amount"] == pytest.approx(0.5)
    account_mode = make_guard(PaperExchange(balances={"BTC": 1}))
    with pytest.raises(ValueError, match="ledger"):
        account_mode.nija_guard.seed("BTC", 1)


def test_one_account_one_ownership_mode(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "shared"}, balances={"BTC": 1})
    make_guard(paper, ownership="ledger")
    other = PaperExchange({"apiKey": "shared"}, venue=paper.venue)
    with pytest.raises(ValueError, match="ownership"):
        nija_guard.guard(other, ownership="account", load_entrypoints=False)


def test_sell_fee_in_base_is_left_for_the_fee(make_guard: Any) -> None:
    """A market whose sell fee is taken from the base coin: sell at most holdings / (1 + fee)."""
    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(paper)
    ex.load_markets()
    paper.markets["BTC/USDT"]["feeSide"] = "give"  # fee charged in what the seller gives
    order = ex.create_market_sell_order("BTC/USDT", 1)
    assert order["amount"] == pytest.approx(0.999)  # floor(1 / 1.001, 0.0001)


def test_exit_values_are_immutable(ex: Any, recorder: Any) -> None:
    ex.create_market_sell_order("BTC/USDT", 0.1)
    exit_value = recorder.named("order_settled")[0]["exit"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        exit_value.amount = 5
    with pytest.raises(TypeError):
        exit_value.evolve(nonsense=1)
    assert exit_value.evolve(reason="x").reason == "x" and exit_value.reason is None
