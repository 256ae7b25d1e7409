"""Bad input: a clear ccxt error before any broker call, and nothing locked afterwards."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest
from conftest import assert_no_leaks

import nija_guard
from nija_guard.testing import PaperExchange


@pytest.mark.parametrize(
    "amount",
    [-1, 0, 0.0, float("nan"), float("inf"), float("-inf"), None, "abc", "", True, [1], {"a": 1}],
    ids=[
        "negative",
        "zero",
        "zero-float",
        "nan",
        "inf",
        "-inf",
        "none",
        "text",
        "empty",
        "bool",
        "list",
        "dict",
    ],
)
def test_bad_amount(ex: Any, paper: PaperExchange, amount: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="amount"):
        ex.create_order("BTC/USDT", "market", "sell", amount)
    assert paper.calls == []  # not even markets were loaded
    assert_no_leaks(ex)


def test_numeric_strings_and_decimals_are_amounts(ex: Any, paper: PaperExchange) -> None:
    from decimal import Decimal

    ex.create_order("BTC/USDT", "market", "sell", "0.25")
    ex.create_order("BTC/USDT", "market", "sell", Decimal("0.25"))
    assert paper.holdings("BTC") == pytest.approx(0.5)


def test_unknown_symbol(ex: Any, paper: PaperExchange) -> None:
    with pytest.raises(ccxt.BadSymbol):
        ex.create_market_sell_order("NOPE/USDT", 1)
    with pytest.raises(ccxt.BadSymbol):
        ex.create_market_sell_order(None, 1)
    with pytest.raises(ccxt.BadSymbol):
        ex.create_market_sell_order(42, 1)
    assert "fetch_balance" not in paper.calls and "create_order" not in paper.calls
    assert_no_leaks(ex)


@pytest.mark.parametrize("side", ["SELL", "Sell", "sElL", " sell "])
def test_sell_in_any_letter_case_is_guarded(
    ex: Any, paper: PaperExchange, recorder: Any, side: str
) -> None:
    """Binance upper-cases the side itself: 'SELL' must not slip past the guard."""
    order = ex.create_order("BTC/USDT", "market", side, 5)  # more than held: clamped
    assert order["side"] == "sell"
    assert order["amount"] == pytest.approx(1)
    assert recorder.named("exit_requested")
    assert paper.sell_orders()[0].client_order_id.startswith("njg")


@pytest.mark.parametrize("side", ["sel", "short", "", None, 1, "buy sell"])
def test_bad_side(ex: Any, paper: PaperExchange, side: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="side"):
        ex.create_order("BTC/USDT", "market", side, 0.5)
    assert paper.calls == []
    assert_no_leaks(ex)


@pytest.mark.parametrize("params", [[1, 2], "clientOrderId=x", 5, ("a",)])
def test_params_not_a_dict(ex: Any, paper: PaperExchange, params: Any) -> None:
    with pytest.raises(ccxt.BadRequest, match="params"):
        ex.create_order("BTC/USDT", "market", "sell", 0.5, None, params)
    assert paper.calls == []
    assert_no_leaks(ex)


@pytest.mark.parametrize("price", [-5, 0, float("nan"), "cheap"])
def test_bad_price(ex: Any, paper: PaperExchange, price: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="price"):
        ex.create_limit_sell_order("BTC/USDT", 0.5, price)
    assert paper.calls == []


def test_wrong_arguments(ex: Any, paper: PaperExchange) -> None:
    with pytest.raises(ccxt.ArgumentsRequired):
        ex.create_order("BTC/USDT", "market", "sell")
    with pytest.raises(ccxt.BadRequest):
        ex.create_order("BTC/USDT", "market", "sell", 1, None, {}, "extra")
    with pytest.raises(ccxt.BadRequest):
        ex.create_order("BTC/USDT", "market", "sell", 1, bogus=True)
    assert paper.calls == []


def test_request_below_market_minimum_is_invalid_not_dust(ex: Any, paper: PaperExchange) -> None:
    with pytest.raises(ccxt.InvalidOrder) as raised:
        ex.create_market_sell_order("BTC/USDT", 0.00001)
    assert not isinstance(raised.value, nija_guard.DustPosition)
    assert "create_order" not in paper.calls
    assert_no_leaks(ex)


def test_dust_is_refused_once_with_one_hook(make_guard: Any, recorder: Any) -> None:
    paper = PaperExchange(balances={"BTC": "0.00005", "USDT": 10})  # below 0.0001 BTC minimum
    ex = make_guard(paper)
    for _ in range(3):
        with pytest.raises(nija_guard.DustPosition) as raised:
            ex.create_market_sell_order("BTC/USDT", 1)
        assert isinstance(raised.value, ccxt.InvalidOrder)
    assert "create_order" not in paper.calls
    assert len(recorder.named("dust_detected")) == 1  # once per dust position, no alert loop
    assert_no_leaks(ex)


def test_dust_by_minimum_cost(make_guard: Any, recorder: Any) -> None:
    paper = PaperExchange(balances={"ETH": "0.001", "USDT": 10})  # 0.001 ETH * 3000 = 3 < 5 USDT
    ex = make_guard(paper)
    with pytest.raises(nija_guard.DustPosition, match="cost"):
        ex.create_market_sell_order("ETH/USDT", 1)
    assert "create_order" not in paper.calls


def test_bad_guard_options() -> None:
    paper = PaperExchange()
    with pytest.raises(TypeError, match="unknown option"):
        nija_guard.guard(paper, ownershp="ledger")
    with pytest.raises(ValueError, match="ownership"):
        nija_guard.guard(paper, ownership="mine")
    with pytest.raises(ValueError, match="on_conflict"):
        nija_guard.guard(paper, on_conflict="ignore")
    with pytest.raises(ValueError, match="wait_timeout"):
        nija_guard.guard(paper, wait_timeout=-1)
    with pytest.raises(ValueError, match="backend"):
        nija_guard.guard(paper, backend="mongodb://x")
    with pytest.raises(ValueError, match="ledger_seed"):
        nija_guard.guard(paper, ledger_seed={"BTC": 1})
    with pytest.raises(TypeError):
        nija_guard.guard(object())
    # None of these left a guard behind.
    assert "_nija_guard_proxy" not in paper.__dict__


def test_bad_per_call_option(ex: Any, paper: PaperExchange) -> None:
    with pytest.raises(ccxt.BadRequest, match="on_conflict"):
        ex.create_market_sell_order("BTC/USDT", 0.5, {"nija_guard": {"on_conflict": "yolo"}})
    assert_no_leaks(ex)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"on_confict": "wait"}, "unknown option"),  # a typo must not fall back to 'reject'
        ({"wait_timeout": "abc"}, "wait_timeout"),
        ({"wait_timeout": -1}, "wait_timeout"),
        ({"wait_timeout": float("nan")}, "wait_timeout"),
        ({"wait_timeout": True}, "wait_timeout"),
        ("wait", "must be a dict"),
    ],
)
def test_bad_per_call_options(ex: Any, paper: PaperExchange, options: Any, match: str) -> None:
    with pytest.raises(ccxt.BadRequest, match=match):
        ex.create_market_sell_order("BTC/USDT", 0.5, {"nija_guard": options})
    assert paper.calls == []
    assert_no_leaks(ex)


@pytest.mark.parametrize("key", ["triggerPrice", "stopPrice", "stopLossPrice", "takeProfitPrice"])
@pytest.mark.parametrize("value", [-1, 0, "abc", float("nan")])
def test_bad_trigger_price_in_params(ex: Any, paper: PaperExchange, key: str, value: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match=key):
        ex.create_order("BTC/USDT", "limit", "sell", 0.5, 50_000, {key: value})
    assert paper.calls == []
    assert_no_leaks(ex)


def test_an_async_policy_hook_on_a_sync_guard_vetoes_with_a_reason(paper: PaperExchange) -> None:
    class AsyncVeto:
        @nija_guard.hookimpl
        async def nija_guard_exit_veto(self, exit: nija_guard.Exit) -> str | None:
            return None  # would allow: but a sync guard can never know

    guarded: Any = nija_guard.guard(paper, plugins=[AsyncVeto()], load_entrypoints=False)
    try:
        with pytest.raises(nija_guard.ExitVetoed, match="is async; a sync guard cannot await"):
            guarded.create_market_sell_order("BTC/USDT", 0.5)
        assert "create_order" not in paper.calls
        assert_no_leaks(guarded)
    finally:
        guarded.nija_guard.close()
