"""The guard makes no broker call a shared fetch or a fresh answer makes unnecessary."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import FAST

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market


def _paper(symbols: int) -> PaperExchange:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(symbols)
    }
    return PaperExchange(markets=markets, balances={m.base: 10 for m in markets.values()})


class _WaitsForAdmissions(PaperExchange):
    """Account-wide reads (the balance, the open-orders listing) answer only once every
    exit of the burst was admitted.

    So the first shared fetch ends after every admission: exits admitted after it
    started share the next one, and no third is ever needed, on any schedule. (An
    exit holds its lock at least until its first shared read answers, so polling
    the locked symbols sees every admission.)
    """

    admitted: Any = None

    def _wait_for_admissions(self) -> None:
        done = threading.Event()
        for _ in range(10_000):  # bounded: 10 s at most, never a hang
            if self.admitted is None or self.admitted() or done.wait(0.001):
                break

    def fetch_balance(self, params: Any = None) -> Any:
        self._wait_for_admissions()
        return super().fetch_balance(params)

    def fetch_open_orders(self, symbol: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if symbol is None:
            self._wait_for_admissions()
        return super().fetch_open_orders(symbol, *args, **kwargs)


def _gated(symbols: int) -> _WaitsForAdmissions:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(symbols)
    }
    return _WaitsForAdmissions(markets=markets, balances={m.base: 10 for m in markets.values()})


def _every_exit_admitted(ex: Any, count: int) -> Any:
    seen: set[str] = set()  # every symbol whose exit has been admitted (and may be done)

    def admitted() -> bool:
        seen.update(ex.nija_guard.locked_symbols())
        return len(seen) == count

    return admitted


def test_a_burst_on_many_symbols_shares_one_price_fetch_and_few_balance_fetches() -> None:
    paper = _gated(20)
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    paper.admitted = _every_exit_admitted(ex, 20)
    ex.load_markets()
    paper.calls.clear()
    start = threading.Barrier(20)

    def sell(symbol: str) -> None:
        start.wait()
        ex.create_market_sell_order(symbol, 1)

    threads = [threading.Thread(target=sell, args=(s,)) for s in paper.venue.markets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    calls = Counter(paper.calls)
    ex.nija_guard.close()
    assert calls["create_order"] == 20
    assert calls["fetch_ticker"] == 0  # no ticker per exit for the minimum-cost check ...
    assert calls["fetch_tickers"] == 1  # ... one shared listing, fetched after every admission
    assert 1 <= calls["fetch_balance"] <= 2  # single flight: the one on the wire and the next


def test_a_stale_price_never_refuses_an_exit_as_dust() -> None:
    paper = _paper(1)
    paper.set_price("C0/USDT", 100)
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        book = ex.nija_guard.book
        # A price minutes old, at which 0.05 coins would be below the 1 USDT minimum.
        book.prices.put("C0/USDT", Decimal("10"), book.clock())
        paper.calls.clear()
        order = ex.create_market_sell_order("C0/USDT", 0.05)  # 5 USDT at the real price
        assert order["filled"] == 0.05
        assert paper.calls.count("fetch_ticker") == 1  # the dust verdict was checked, fresh
    finally:
        ex.nija_guard.close()


def test_dust_at_a_fresh_price_is_refused_once_without_an_order() -> None:
    paper = _paper(1)
    paper.venue.free["C0"] = Decimal("0.005")  # 0.5 USDT: below the 1 USDT minimum
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        for _ in range(3):
            with pytest.raises(nija_guard.DustPosition):
                ex.create_market_sell_order("C0/USDT", 1)
        assert "create_order" not in paper.calls
    finally:
        ex.nija_guard.close()


def test_more_symbols_than_the_price_cache_holds_still_share_one_listing() -> None:
    """5,000 symbols on one loop: the shared tickers reply is read once, and a symbol the
    price cache had to forget is read from that reply, not fetched again."""
    import asyncio

    from nija_guard.testing import AsyncPaperExchange

    async def main() -> Counter[str]:
        markets = {
            f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
            for i in range(5000)
        }
        paper = AsyncPaperExchange(markets=markets, balances={m.base: 10 for m in markets.values()})
        paper.latency = 0.001
        ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
        await ex.load_markets()
        assert ex.nija_guard.book.prices.size < len(markets)
        paper.calls.clear()
        replies = await asyncio.gather(*(ex.create_market_sell_order(s, 1) for s in markets))
        calls = Counter(paper.calls)
        await ex.nija_guard.aclose()
        assert all(r["status"] == "closed" for r in replies)
        return calls

    calls = asyncio.run(main())
    assert calls["create_order"] == 5000
    assert calls["fetch_ticker"] == 0
    assert calls["fetch_tickers"] == 1


def _outcomes_of_a_burst(ex: Any, symbols: list[str]) -> dict[str, str]:
    """Every symbol sold at once from its own thread: symbol -> "sold" or the error's name."""
    start = threading.Barrier(len(symbols))
    outcomes: dict[str, str] = {}

    def sell(symbol: str) -> None:
        start.wait()
        try:
            ex.create_market_sell_order(symbol, 1)
            outcomes[symbol] = "sold"
        except Exception as error:  # recorded, asserted below
            outcomes[symbol] = type(error).__name__

    threads = [threading.Thread(target=sell, args=(s,)) for s in symbols]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def _earlier_runs_exit(paper: PaperExchange, symbol: str, n: int) -> None:
    """A take-profit an earlier run of the guard left resting (the guard's client id)."""
    paper.venue.place(symbol, "sell", "limit", "5", "1000", client_order_id=f"njg{n:024x}")


def test_first_exits_of_a_burst_share_one_open_orders_listing_and_still_adopt() -> None:
    paper = _gated(20)
    _earlier_runs_exit(paper, "C3/USDT", 1)
    paper.venue.place("C4/USDT", "sell", "limit", "5", "1000", client_order_id="the-bots-own")
    ex: Any = nija_guard.guard(paper, **FAST)  # adopt=True: the default
    paper.admitted = _every_exit_admitted(ex, 20)
    try:
        ex.load_markets()
        paper.calls.clear()
        outcomes = _outcomes_of_a_burst(ex, list(paper.venue.markets))
        calls = Counter(paper.calls)
    finally:
        ex.nija_guard.close()
    # The earlier run's exit on C3 was found and holds the lock: no second exit.
    assert outcomes.pop("C3/USDT") == "ExitInProgress"
    assert set(outcomes.values()) == {"sold"}  # C4's order is not ours: C4 sells
    assert calls["create_order"] == 19
    assert 1 <= calls["fetch_open_orders"] <= 2  # one listing for the burst, not one per symbol


class _NeedsASymbol(PaperExchange):
    """A venue that lists open orders only per symbol (as bybit, or binance by default)."""

    def fetch_open_orders(self, symbol: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if symbol is None:
            self.calls.append("fetch_open_orders")
            raise ccxt.ArgumentsRequired("fetchOpenOrders() requires a symbol argument")
        return super().fetch_open_orders(symbol, *args, **kwargs)


def test_a_venue_that_needs_a_symbol_is_asked_per_symbol_from_then_on() -> None:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(3)
    }
    paper = _NeedsASymbol(markets=markets, balances={m.base: 10 for m in markets.values()})
    _earlier_runs_exit(paper, "C2/USDT", 2)
    ex: Any = nija_guard.guard(paper, **FAST)
    try:
        ex.load_markets()
        paper.calls.clear()
        ex.create_market_sell_order("C0/USDT", 1)
        ex.create_market_sell_order("C1/USDT", 1)
        with pytest.raises(nija_guard.ExitInProgress):  # found per symbol, still adopted
            ex.create_market_sell_order("C2/USDT", 1)
        calls = Counter(paper.calls)
    finally:
        ex.nija_guard.close()
    assert calls["fetch_open_orders"] == 1 + 3  # one refused listing, then one per symbol


def test_a_long_listing_that_may_be_one_page_is_not_trusted() -> None:
    paper = _paper(3)
    for n in range(60):  # the bot's own resting orders: the listing may be a first page
        paper.venue.place("C0/USDT", "sell", "limit", "0.1", "1000", client_order_id=f"b{n}")
    paper.venue.deposit("C0", 10)
    _earlier_runs_exit(paper, "C1/USDT", 3)
    ex: Any = nija_guard.guard(paper, **FAST)
    try:
        ex.load_markets()
        paper.calls.clear()
        with pytest.raises(nija_guard.ExitInProgress):
            ex.create_market_sell_order("C1/USDT", 1)
        calls = Counter(paper.calls)
    finally:
        ex.nija_guard.close()
    assert calls["fetch_open_orders"] == 2  # the listing, then this symbol's own


@pytest.mark.parametrize(
    ("venue", "lists"),
    [
        ("kraken", True),  # spot only, one unpaged OpenOrders call
        ("bybit", False),  # defaultType swap: a spot order would be missing; pages of 20
        ("binance", False),  # refuses without a symbol (rate-limit warning)
        ("okx", False),
        ("gate", False),
        ("kucoin", False),
        ("bitget", False),
        ("htx", False),
        ("coinbase", False),
    ],
)
def test_only_venues_known_to_list_every_spot_order_are_asked_once(venue: str, lists: bool) -> None:
    from nija_guard._adapter import CcxtAdapter

    assert CcxtAdapter().lists_open_orders(getattr(ccxt, venue)()) is lists


# -- prices: a listing only for bursts, never trusted over the exchange --------------------
def _resting_exit_elsewhere(ex: Any) -> None:
    """A take-profit resting on C1 holds C1's lock: the next exit is not alone."""
    ex.create_limit_sell_order("C1/USDT", 1, 10_000)


def test_a_single_exit_asks_for_its_own_ticker_not_the_whole_listing() -> None:
    paper = _paper(3)
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        paper.calls.clear()
        ex.create_market_sell_order("C0/USDT", 1)  # binance weighs the listing 40x a ticker
        calls = Counter(paper.calls)
    finally:
        ex.nija_guard.close()
    assert calls["fetch_ticker"] == 1 and calls["fetch_tickers"] == 0


class _TickersBreak(PaperExchange):
    """fetch_tickers trips over one exotic market (a parse bug, not a ccxt error)."""

    def fetch_tickers(self, symbols: Any = None, params: Any = None) -> Any:
        self.calls.append("fetch_tickers")
        raise TypeError("unsupported operand type(s) for *: 'NoneType' and 'float'")


def test_a_listing_that_breaks_falls_back_to_the_exits_own_ticker() -> None:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(2)
    }
    paper = _TickersBreak(markets=markets, balances={"C0": 10, "C1": 10})
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        _resting_exit_elsewhere(ex)
        ex.nija_guard.book.prices.pop("C0/USDT")
        paper.calls.clear()
        ex.create_market_sell_order("C0/USDT", 1)
        calls = Counter(paper.calls)
    finally:
        ex.nija_guard.close()
    assert calls["fetch_tickers"] == 1 and calls["fetch_ticker"] == 1
    assert calls["create_order"] == 1


def test_a_rejected_order_forgets_the_kept_price_and_the_retry_asks_anew() -> None:
    paper = _paper(1)
    paper.venue.deposit("C0", Decimal("-9.96"))  # 0.04 C0 held
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        book = ex.nija_guard.book
        book.prices.put("C0/USDT", Decimal(100), book.clock())  # kept minutes ago
        paper.set_price("C0/USDT", 5)  # 0.04 x 5 = 0.2 USDT: below the 1 USDT minimum now
        with pytest.raises(ccxt.InvalidOrder):  # the exchange refuses: nothing sold
            ex.create_market_sell_order("C0/USDT", 1)
        paper.calls.clear()
        with pytest.raises(nija_guard.DustPosition):  # the retry prices it fresh
            ex.create_market_sell_order("C0/USDT", 1)
        assert "create_order" not in paper.calls and "fetch_ticker" in paper.calls
    finally:
        ex.nija_guard.close()


class _NoTicker(PaperExchange):
    """No fetch_ticker to be had (ccxt cryptomus, deepcoin; or a rate limit for a while)."""

    def fetch_ticker(self, symbol: str, params: Any = None) -> Any:
        self.calls.append("fetch_ticker")
        raise ccxt.NotSupported("fetchTicker() is not supported yet")


def test_no_fresh_price_to_be_had_never_refuses_an_exit_on_a_stale_one() -> None:
    markets = {"C0/USDT": Market(symbol="C0/USDT", price=Decimal(100), min_cost=Decimal(1))}
    paper = _NoTicker(markets=markets, balances={"C0": Decimal("0.05")})
    ex: Any = nija_guard.guard(paper, **FAST, adopt=False)
    try:
        ex.load_markets()
        book = ex.nija_guard.book
        book.prices.put("C0/USDT", Decimal(10), book.clock())  # stale: 0.5 USDT, "dust"
        order = ex.create_market_sell_order("C0/USDT", 1)  # worth 5 USDT now: the exchange decides
    finally:
        ex.nija_guard.close()
    assert order["status"] == "closed" and order["filled"] == pytest.approx(0.05)
