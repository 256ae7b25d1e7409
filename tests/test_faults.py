"""Faults around the submit: no double-sell, no leaked lock, a clear error or the real order."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest
from conftest import assert_no_leaks, wait_until

import nija_guard
from nija_guard.testing import PaperExchange


def sells(paper: PaperExchange) -> int:
    return len(paper.sell_orders())


@pytest.mark.parametrize(
    "error",
    [
        ccxt.RequestTimeout("reply lost"),
        ccxt.ExchangeNotAvailable("502 Bad Gateway"),
        ccxt.NetworkError("connection reset by peer"),
        ccxt.BadResponse("unparseable reply"),
        ccxt.ExchangeError("bare exchange error from a transport"),
    ],
    ids=["timeout", "5xx", "dropped", "bad-response", "bare-exchange-error"],
)
def test_reply_lost_after_the_exchange_accepted(
    ex: Any, paper: PaperExchange, recorder: Any, error: Exception
) -> None:
    paper.inject("create_order", error, after=True)  # the venue executed the sell
    order = ex.create_market_sell_order("BTC/USDT", 0.4)
    assert order["status"] == "closed" and order["filled"] == pytest.approx(0.4)
    assert order["clientOrderId"].startswith("njg")
    assert sells(paper) == 1
    assert recorder.named("outcome_unknown")[0]["error"] is error
    assert len(recorder.named("order_settled")) == 1
    assert_no_leaks(ex)
    # The caller got the order: the same call again is a new exit, not a retry.
    again = ex.create_market_sell_order("BTC/USDT", 0.4)
    assert again["id"] != order["id"]
    assert sells(paper) == 2


@pytest.mark.parametrize(
    "error",
    [
        ccxt.ExchangeNotAvailable("503 before"),
        ccxt.NetworkError("connect refused"),
        ccxt.RequestTimeout("lost"),
    ],
    ids=["5xx", "dropped", "timeout"],
)
def test_request_never_arrived(
    ex: Any, paper: PaperExchange, recorder: Any, error: Exception
) -> None:
    paper.inject("create_order", error, after=False)
    with pytest.raises(type(error)) as raised:
        ex.create_market_sell_order("BTC/USDT", 0.4)
    assert "safe to retry" in " ".join(getattr(raised.value, "__notes__", []))
    assert sells(paper) == 0
    settled = recorder.named("order_settled")
    assert [s["exit"].outcome for s in settled] == [nija_guard.Outcome.NOT_PLACED]
    assert_no_leaks(ex)
    retried = ex.create_market_sell_order("BTC/USDT", 0.4)
    assert retried["filled"] == pytest.approx(0.4)
    assert sells(paper) == 1


@pytest.mark.parametrize(
    "error",
    [
        ccxt.RateLimitExceeded("429"),
        ccxt.InsufficientFunds("-2010 insufficient balance"),
        ccxt.InvalidOrder("-1013 filter failure"),
        ccxt.AuthenticationError("-2015 invalid key"),
    ],
    ids=["rate-limit", "insufficient-funds", "rejected", "auth"],
)
def test_definite_refusals_raise_at_once(
    ex: Any, paper: PaperExchange, recorder: Any, error: Exception
) -> None:
    ex.load_markets()
    paper.inject("create_order", error)
    calls = len(paper.calls)
    with pytest.raises(type(error)):
        ex.create_market_sell_order("BTC/USDT", 0.4)
    after = paper.calls[calls:]
    assert "fetch_order" not in after and "fetch_my_trades" not in after  # no reconciling a refusal
    assert recorder.named("outcome_unknown") == []
    assert recorder.named("order_settled")[-1]["exit"].outcome == nija_guard.Outcome.REJECTED
    assert sells(paper) == 0
    assert_no_leaks(ex)


def test_exchange_rejects_oversell_when_balance_lags(make_guard: Any) -> None:
    """A real rejection (not injected): the exchange refuses; the guard releases and reports it."""
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    ex.load_markets()
    real_fetch = paper.fetch_balance
    paper.fetch_balance = lambda params=None: {
        **real_fetch(),
        "BTC": {"free": 5.0, "used": 0.0, "total": 5.0},
    }
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_market_sell_order("BTC/USDT", 3)
    assert_no_leaks(ex)


def test_unknown_outcome_keeps_the_symbol_locked_until_reconciled(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, reconcile_timeout=0.2)
    ex.load_markets()
    paper.ghost_next_order()
    # Every way of finding the order fails for a while: the exchange is degraded.
    for method in ("fetch_order", "fetch_open_orders", "fetch_my_trades"):
        paper.inject(method, ccxt.ExchangeNotAvailable("degraded"), times=10_000)
    with pytest.raises(nija_guard.OutcomeUnknown) as unknown:
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert isinstance(unknown.value, ccxt.NetworkError)
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]
    assert ex.nija_guard.status()["unknown"] == ["BTC/USDT"]

    # A retry while unknown: refused, still exactly one order on the exchange.
    with pytest.raises(nija_guard.OutcomeUnknown):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    # A different exit is refused too: nothing may sell until the outcome is known.
    with pytest.raises(nija_guard.OutcomeUnknown):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    assert len(paper.sell_orders()) == 1

    paper._faults.clear()  # the exchange recovers; the tracker reconciles in the background
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settled = recorder.wait_for("order_settled")
    assert settled[0]["exit"].outcome == nija_guard.Outcome.FILLED
    # The bot's retry of that exit now gets the executed order back, once.
    again = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert again["clientOrderId"] == settled[0]["exit"].client_order_id
    assert len(paper.sell_orders()) == 1
    assert_no_leaks(ex)
    # A later exit with the same arguments is a new exit: the memo was consumed.
    ex.create_market_sell_order("BTC/USDT", 0.5)
    assert len(paper.sell_orders()) == 2


def test_ghost_resting_order_is_tracked_to_settlement(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    paper.ghost_next_order()
    order = ex.create_limit_sell_order("BTC/USDT", 0.5, 70_000)
    assert order["status"] == "open"
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]
    paper.set_price("BTC/USDT", 71_000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    assert len(recorder.named("order_settled")) == 1
    assert len(paper.sell_orders()) == 1


def test_interrupt_during_submit_leaves_unknown_then_reconciles(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    ex.load_markets()
    paper.inject("create_order", KeyboardInterrupt(), after=True)
    with pytest.raises(KeyboardInterrupt):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    # The request may have gone out: the symbol is UNKNOWN, never silently free.
    recorder.wait_for("order_settled")
    assert recorder.named("outcome_unknown")
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    assert len(paper.sell_orders()) == 1
    assert_no_leaks(ex)


def test_interrupt_before_submit_releases_the_lock(ex: Any, paper: PaperExchange) -> None:
    ex.load_markets()
    paper.inject("fetch_balance", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert_no_leaks(ex)
    assert len(paper.sell_orders()) == 0


def test_balance_fetch_failure_sends_nothing(ex: Any, paper: PaperExchange) -> None:
    paper.inject("fetch_balance", ccxt.RequestTimeout("balance timed out"))
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    assert_no_leaks(ex)


def test_settled_fires_exactly_once_when_the_fill_is_reported_twice(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    """The same final fill seen by the bot, the tracker and a listing (freqtrade#13331)."""
    order = ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    paper.fill(order["id"])
    # The bot, the tracker and a cancel all report the same final order.
    ex.fetch_order(order["id"], "BTC/USDT")
    ex.fetch_order(order["id"], "BTC/USDT")
    ex.fetch_closed_orders("BTC/USDT")
    ex.nija_guard.poll()
    assert len(recorder.named("order_settled")) == 1
    assert sum(f["amount"] for f in recorder.named("order_filled")) == pytest.approx(0.5)


def test_observer_hook_errors_never_break_an_exit(make_guard: Any, paper: PaperExchange) -> None:
    class Broken:
        @nija_guard.hookimpl
        def nija_guard_order_settled(self, exit: Any) -> None:
            raise RuntimeError("plugin bug")

        @nija_guard.hookimpl
        def nija_guard_exit_requested(self, exit: Any) -> None:
            raise ValueError("plugin bug")

    ex = make_guard(paper, plugins=[Broken()])
    order = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert order["status"] == "closed"
    assert ex.nija_guard.status()["hook_errors"] == 2
    assert_no_leaks(ex)


def test_veto_hook_refuses_and_a_raising_veto_fails_closed(
    make_guard: Any, paper: PaperExchange
) -> None:
    class Policy:
        def __init__(self) -> None:
            self.mode = "veto"

        @nija_guard.hookimpl
        def nija_guard_exit_veto(self, exit: Any) -> str | None:
            if self.mode == "raise":
                raise RuntimeError("policy bug")
            return "market closed for maintenance" if self.mode == "veto" else None

    policy = Policy()
    ex = make_guard(paper, plugins=[policy])
    with pytest.raises(nija_guard.ExitVetoed, match="maintenance"):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    policy.mode = "raise"
    with pytest.raises(nija_guard.ExitVetoed, match="raised"):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    policy.mode = "allow"
    ex.create_market_sell_order("BTC/USDT", 0.5)
    assert_no_leaks(ex)
