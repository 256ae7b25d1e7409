"""The proxy is transparent, and guarding is idempotent."""

from __future__ import annotations

import pickle
from typing import Any

import ccxt
import pytest

import nija_guard
from nija_guard.testing import PaperExchange


def test_isinstance_and_passthrough(ex: Any, paper: PaperExchange) -> None:
    assert isinstance(ex, PaperExchange)
    assert isinstance(ex, ccxt.Exchange)
    assert ex.id == "paper"
    ex.load_markets()
    assert ex.markets is paper.markets
    assert ex.fetch_ticker("BTC/USDT")["last"] == 50_000
    ex.verbose = True  # writes reach the client
    assert paper.verbose is True
    assert ex.amount_to_precision("BTC/USDT", 0.123456) == "0.1234"


def test_with_gives_back_the_proxy_and_closes_the_guard(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    with make_guard(paper) as ex:
        assert type(ex).__name__.startswith("Guarded")
        ex.create_limit_sell_order("BTC/USDT", 0.1, 90_000)
        assert ex.nija_guard.driver.tracker.running
    assert ex.nija_guard.closed
    assert not ex.nija_guard.driver.tracker.running


def test_repr_is_readable_and_free_of_secrets(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "AKIA-SENTINEL-KEY", "secret": "SENTINEL-SECRET"})
    ex = make_guard(paper)
    text = repr(ex)
    assert "nija_guard" in text and "PaperExchange" in text and "ownership='account'" in text
    assert "SENTINEL" not in text
    assert "SENTINEL" not in repr(ex.nija_guard)
    assert "SENTINEL" not in str(ex.nija_guard.status())


def test_guarding_twice_returns_the_same_guard(make_guard: Any, paper: PaperExchange) -> None:
    ex = make_guard(paper)
    assert nija_guard.guard(paper) is ex
    assert nija_guard.guard(ex) is ex
    assert nija_guard.guard(paper, ownership="account") is ex
    with pytest.raises(ValueError, match="already guarded"):
        nija_guard.guard(paper, ownership="ledger")


def test_two_clients_of_one_account_share_locks(make_guard: Any) -> None:
    """Same exchange and API key: one set of locks, even through two client objects."""
    venue_owner = PaperExchange({"apiKey": "k1"}, balances={"BTC": 1, "USDT": 0})
    other = PaperExchange({"apiKey": "k1"}, venue=venue_owner.venue)
    a, b = make_guard(venue_owner), make_guard(other)
    assert a.nija_guard.account == b.nija_guard.account
    a.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        b.create_market_sell_order("BTC/USDT", 0.5)
    different = make_guard(PaperExchange({"apiKey": "k2"}, venue=venue_owner.venue))
    assert different.nija_guard.account != a.nija_guard.account


def test_named_account_overrides_the_key(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "k1"})
    ex = make_guard(paper, account="desk-7")
    assert ex.nija_guard.account == "paper:desk-7"


def test_escape_hatch(ex: Any, paper: PaperExchange) -> None:
    raw = nija_guard.unguarded(ex)
    assert raw is paper and ex.__wrapped__ is paper and ex.nija_guard.raw is paper
    assert nija_guard.unguarded(paper) is paper
    raw.load_markets()
    raw.create_market_sell_order("BTC/USDT", 0.1)  # unprotected, on purpose
    assert not paper.sell_orders()[0].client_order_id


def test_camel_case_aliases_are_guarded(ex: Any, paper: PaperExchange, recorder: Any) -> None:
    ex.createMarketSellOrder("BTC/USDT", 0.2)
    ex.createOrder("BTC/USDT", "market", "sell", 0.2)
    assert len(recorder.named("exit_requested")) == 2
    assert all(o.client_order_id.startswith("njg") for o in paper.sell_orders())


def test_buys_pass_through_untouched(ex: Any, paper: PaperExchange, recorder: Any) -> None:
    order = ex.create_market_buy_order("BTC/USDT", 0.1)
    assert order["side"] == "buy"
    assert recorder.named("exit_requested") == []
    assert paper.call_counts["fetch_balance"] == 0
    assert not paper.venue.all_orders()[0].client_order_id


def test_pickling_is_refused(ex: Any) -> None:
    with pytest.raises((TypeError, NotImplementedError)):
        pickle.dumps(ex)


def test_bot_supplied_client_order_id_is_kept(ex: Any, paper: PaperExchange) -> None:
    order = ex.create_market_sell_order("BTC/USDT", 0.1, {"clientOrderId": "bot-42"})
    assert order["clientOrderId"] == "bot-42"
