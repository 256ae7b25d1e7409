"""One asset, several symbols: BTC/USDT and BTC/EUR have two close locks but one holding.

Exits through the two symbols run side by side; each reads the holding and clamps
to it. The read and the reservation of what it may sell are one step, so the
second exit sees the first's reservation: together they never sell more than
there is (account mode) or than the bot owns (ledger mode). A barrier in the
``balance_refreshed`` hook holds both exits right after that step, the moment
where, before the fix, both had read the same holding and neither had reserved.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import FAST, wait_until

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market

SYMBOLS = ("BTC/USDT", "BTC/EUR")


class BothRefreshed:
    """Holds each exit after its balance refresh until the other one got there too."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    @nija_guard.hookimpl
    def nija_guard_balance_refreshed(self, exit: Any) -> None:
        self.barrier.wait()


def _sell_through_both(**options: Any) -> tuple[PaperExchange, list[object]]:
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in SYMBOLS}
    balances = {"BTC": options.pop("btc"), "USDT": 0, "EUR": 0}
    paper = PaperExchange(markets=markets, balances=balances)
    ex = nija_guard.guard(paper, plugins=[BothRefreshed(len(SYMBOLS))], **{**FAST, **options})
    ex.load_markets()
    outcomes: list[object] = []
    lock = threading.Lock()

    def sell(symbol: str) -> None:
        try:
            result: object = ex.create_market_sell_order(symbol, 1)
        except Exception as exc:  # what each exit ended with is the point of the test
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=sell, args=(s,)) for s in SYMBOLS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    ex.nija_guard.close()
    return paper, outcomes


def test_ledger_two_symbols_of_one_asset_never_sell_more_than_owned() -> None:
    paper, outcomes = _sell_through_both(btc=10, ownership="ledger", ledger_seed={"BTC": 1})
    assert paper.venue.sold() == 1, outcomes  # 2 before: each exit counted the one owned BTC
    assert len(paper.sell_orders()) == 1
    assert sum(isinstance(o, nija_guard.NothingToSell) for o in outcomes) == 1


def test_account_two_symbols_of_one_asset_clamp_to_what_is_held() -> None:
    paper, outcomes = _sell_through_both(btc=1)
    # Before: both sent a sell of 1 BTC and the venue refused the second for funds.
    refused_by_venue = [
        o
        for o in outcomes
        if isinstance(o, ccxt.InsufficientFunds) and not isinstance(o, nija_guard.GuardError)
    ]
    assert not refused_by_venue, outcomes
    assert len(paper.sell_orders()) == 1
    assert paper.venue.sold() == 1
    assert sum(isinstance(o, nija_guard.NothingToSell) for o in outcomes) == 1


class LowerUsdtAndHoldIt:
    """BTC/USDT's exit: its amount lowered to 0.4, then held after its submit until
    BTC/EUR's exit is over."""

    def __init__(self) -> None:
        self.other_done = threading.Event()

    @nija_guard.hookimpl
    def nija_guard_exit_amount(self, exit: Any, amount: float) -> float | None:
        return 0.4 if exit.symbol == "BTC/USDT" else None

    @nija_guard.hookimpl
    def nija_guard_order_submitted(self, exit: Any, order: Any) -> None:
        if exit.symbol == "BTC/USDT":
            assert self.other_done.wait(10)


def test_what_the_clamp_or_a_policy_takes_off_a_reservation_is_sellable_at_once() -> None:
    """Ledger of 1 BTC: the first exit reserves 1, a policy lowers it to 0.4, and while
    it is still in flight the other symbol's exit may sell the 0.6 given back."""
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in SYMBOLS}
    paper = PaperExchange(markets=markets, balances={"BTC": 10, "USDT": 0, "EUR": 0})
    hold = LowerUsdtAndHoldIt()
    ex = nija_guard.guard(
        paper, plugins=[hold], **{**FAST, "ownership": "ledger", "ledger_seed": {"BTC": 1}}
    )
    ex.load_markets()
    first = threading.Thread(target=ex.create_market_sell_order, args=("BTC/USDT", 1))
    first.start()
    try:
        # The first exit is held after its submit: its order is on the venue.
        wait_until(lambda: paper.sell_orders("BTC/USDT"))
        second = ex.create_market_sell_order("BTC/EUR", 1)
    finally:
        hold.other_done.set()
        first.join(10)
        ex.nija_guard.close()
    assert second["amount"] == 0.6
    assert paper.venue.sold() == 1


# -- the same exchange millisecond -----------------------------------------------------------
def _acknowledged_sell(book: Any, symbol: str, exchange_ts: int) -> Any:
    """A sell of 1 BTC through ``symbol`` that the exchange accepted at ``exchange_ts``."""
    from nija_guard._book import ExitRecord
    from nija_guard._model import Exit, MarketInfo

    market = MarketInfo(symbol, "BTC", symbol.split("/")[1], None, None, None)
    rec = ExitRecord(Exit("x", "a", symbol, "sell", "market", "create_order", 1.0), market, symbol)
    assert book.admit(rec).verdict == "admitted"
    rec.amount, rec.exchange_ts = Decimal(1), exchange_ts
    rec.local_ack_ms, rec.ack_seq = exchange_ts, book.next_ticket()
    book.settle_reservation(rec)  # in flight
    return rec


def _reader(book: Any) -> Any:
    from nija_guard._book import ExitRecord
    from nija_guard._model import Exit, MarketInfo

    market = MarketInfo("BTC/USDT", "BTC", "USDT", None, None, None)
    rec = ExitRecord(
        Exit("r", "a", "BTC/USDT", "sell", "market", "create_order", 1.0), market, "BTC/USDT"
    )
    assert book.admit(rec).verdict == "admitted"
    return rec


@pytest.mark.parametrize("settled", [False, True])
def test_a_snapshot_of_the_same_millisecond_shows_only_orders_acknowledged_before(
    settled: bool,
) -> None:
    """Venues stamp a balance with its last change: a snapshot of the order's own
    millisecond usually shows it. Not when the reader was admitted before the order
    was acknowledged: its fetch may have been read first (2 exits of one asset)."""
    from nija_guard._book import Book

    stamp = 1_700_000_000_000
    # The other symbol's sell was acknowledged before this exit was admitted: shown.
    book = Book("a")
    before = _acknowledged_sell(book, "BTC/EUR", stamp)
    reader = _reader(book)
    if settled:
        before.filled = Decimal(1)
        book.claim_settlement(before)
        book.settle(before)
    assert book.reserve_sellable(reader, Decimal(2), stamp, stamp) == 2
    # Acknowledged after this exit's admission, in the snapshot's millisecond: not shown.
    book = Book("a")
    reader = _reader(book)
    after = _acknowledged_sell(book, "BTC/EUR", stamp)
    if settled:
        after.filled = Decimal(1)
        book.claim_settlement(after)
        book.settle(after)
    assert book.reserve_sellable(reader, Decimal(2), stamp, stamp) == 1
    # Any later snapshot shows it either way.
    assert book.reserve_sellable(reader, Decimal(2), stamp + 1, stamp + 1) == 2


FROZEN = 1_700_000_000.0  # one exchange millisecond for everything the venue stamps


class HoldEurAfterAdmission:
    """The BTC/EUR exit waits in its veto hook (admitted, nothing fetched yet)."""

    def __init__(self) -> None:
        self.inside, self.go = threading.Event(), threading.Event()

    @nija_guard.hookimpl
    def nija_guard_exit_veto(self, exit: Any) -> str | None:
        if exit.symbol == "BTC/EUR":
            self.inside.set()
            assert self.go.wait(10)
        return None


class UsdtFetchesBeforeEurIsAdmitted(HoldEurAfterAdmission):
    def __init__(self) -> None:
        super().__init__()
        self.usdt_fetched = threading.Event()

    @nija_guard.hookimpl
    def nija_guard_balance_refreshed(self, exit: Any) -> None:
        if exit.symbol == "BTC/USDT":
            self.usdt_fetched.set()
            assert self.inside.wait(5)  # the EUR exit is admitted before USDT's order


def _try_sell(ex: Any, symbol: str) -> Any:
    try:
        return ex.create_market_sell_order(symbol, 1)
    except Exception as exc:  # the outcome is what the test looks at
        return exc


def _frozen_paper() -> PaperExchange:
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in SYMBOLS}
    return PaperExchange(
        markets=markets, balances={"BTC": 2, "USDT": 0, "EUR": 0}, clock=lambda: FROZEN
    )


def test_a_fetch_begun_after_the_other_order_was_acknowledged_shows_it() -> None:
    """2 BTC. The EUR exit is admitted; a USDT limit sell of 1 is acknowledged; only
    then does the EUR exit fetch (free 1, stamped with the order's millisecond). The
    snapshot shows the order: the EUR exit sells the other 1, not NothingToSell."""
    paper = _frozen_paper()
    hold = HoldEurAfterAdmission()
    ex = nija_guard.guard(paper, plugins=[hold], **FAST)
    ex.load_markets()
    out: list[Any] = []
    eur = threading.Thread(target=lambda: out.append(_try_sell(ex, "BTC/EUR")))
    eur.start()
    try:
        assert hold.inside.wait(5)
        ex.create_limit_sell_order("BTC/USDT", 1, 200)  # acknowledged after EUR's admission
    finally:
        hold.go.set()
        eur.join(10)
        ex.nija_guard.close()
    assert not isinstance(out[0], Exception), out[0]
    assert out[0]["amount"] == 1


def test_a_fetch_begun_after_the_ack_shows_it_whoever_was_admitted_first() -> None:
    """The USDT exit fetches first, the EUR exit is admitted, USDT's limit sell of 1 is
    acknowledged, then the EUR exit fetches: the snapshot shows the order."""
    paper = _frozen_paper()
    hold = UsdtFetchesBeforeEurIsAdmitted()
    ex = nija_guard.guard(paper, plugins=[hold], **FAST)
    ex.load_markets()
    out: list[Any] = []
    usdt = threading.Thread(target=lambda: ex.create_limit_sell_order("BTC/USDT", 1, 200))
    eur = threading.Thread(target=lambda: out.append(_try_sell(ex, "BTC/EUR")))
    usdt.start()
    try:
        assert hold.usdt_fetched.wait(5)
        eur.start()
        usdt.join(10)  # its order acknowledged: after EUR's admission, before EUR's fetch
    finally:
        hold.go.set()
        eur.join(10)
        ex.nija_guard.close()
    assert not isinstance(out[0], Exception), out[0]
    assert out[0]["amount"] == 1


class _NoStampPaper(PaperExchange):
    """No balance timestamp (Kraken, Alpaca, a house broker): the guard judges by local
    times. USDT's create_order and EUR's balance read wait at gates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order_arrived, self.order_go = threading.Event(), threading.Event()
        self.read_done, self.read_go = threading.Event(), threading.Event()
        self.hold_read = False

    def create_order(self, symbol: str, *args: Any, **kwargs: Any) -> Any:
        if symbol == "BTC/USDT":
            self.order_arrived.set()
            assert self.order_go.wait(10)
        return super().create_order(symbol, *args, **kwargs)

    def fetch_balance(self, params: Any = None) -> Any:
        balance = super().fetch_balance(params)  # the venue's view, read now
        balance["timestamp"] = balance["datetime"] = None
        if self.hold_read:
            self.read_done.set()
            assert self.read_go.wait(10)
        return balance


@pytest.mark.parametrize("frozen", [False, True], ids=["ticking", "same-ms"])
def test_without_exchange_times_an_ack_after_the_fetch_began_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, frozen: bool
) -> None:
    now = [1_700_000_000.0]

    def clock() -> float:
        if not frozen:
            now[0] += 0.001
        return now[0]

    monkeypatch.setattr(time, "time", clock)
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in SYMBOLS}
    paper = _NoStampPaper(markets=markets, balances={"BTC": 2, "USDT": 0, "EUR": 0})
    ex = nija_guard.guard(paper, **FAST)
    ex.load_markets()
    out: list[Any] = []

    def eur() -> None:
        try:
            out.append(ex.create_market_sell_order("BTC/EUR", 2))
        except Exception as exc:
            out.append(exc)

    usdt = threading.Thread(target=lambda: ex.create_limit_sell_order("BTC/USDT", 1, 200))
    e = threading.Thread(target=eur)
    try:
        usdt.start()
        assert paper.order_arrived.wait(5)  # USDT reserved 1 and is on the wire
        paper.hold_read = True
        e.start()
        assert paper.read_done.wait(5)  # EUR's fetch began and read 2 free
        paper.order_go.set()
        usdt.join(10)  # USDT's order acknowledged after EUR's fetch began
        paper.read_go.set()
        e.join(10)
    finally:
        paper.order_go.set()
        paper.read_go.set()
        ex.nija_guard.close()
    assert not isinstance(out[0], Exception), repr(out[0])
    assert out[0]["amount"] == 1
