"""Regression tests from a review of the engine: each pins a bug that was found and fixed.

Among them: a batch whose reply was lost inviting a second sell, "not placed"
decided on a balance older than the submit, a caller left without an answer
after the order was acknowledged, quote-sized sells at a stale price, edits
releasing the lock of the order they amend, a lease failure leaking the close
lock, a busy-spinning second replacer, and more (one comment heads each test).

Interleavings are lined up with gates, barriers and a silenced tracker
(``quiet``: the test drives every poll with ``exchange.nija_guard.poll()``), never
with sleeps.
"""

from __future__ import annotations

import contextlib
import threading
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import assert_no_leaks, wait_until
from test_scenarios import GatedPaper, run_in_thread

import nija_guard
from nija_guard.testing import PaperExchange


def quiet(ex: Any) -> Any:
    """Stop the background tracker: from now on only the test polls (deterministic)."""
    ex.nija_guard.driver.tracker.close()
    return ex


def drive_polls(ex: Any, rounds: int = 3) -> None:
    """Make every tracked record due and poll it, ``rounds`` times, on this thread."""
    for _ in range(rounds):
        for rec in ex.nija_guard.book.tracked_records():
            rec.next_poll = 0.0
        ex.nija_guard.poll()


class Interrupting:
    """A plugin whose chosen hook raises once (a Ctrl-C while a slow hook runs)."""

    def __init__(self, hook: str, error: BaseException) -> None:
        self.hook, self.error, self.armed = hook, error, True

    def _maybe(self, name: str) -> None:
        if self.armed and name == self.hook:
            self.armed = False
            raise self.error

    @nija_guard.hookimpl
    def nija_guard_outcome_unknown(self) -> None:
        self._maybe("outcome_unknown")

    @nija_guard.hookimpl
    def nija_guard_order_submitted(self) -> None:
        self._maybe("order_submitted")


# =====================================================================================
# 1. An edit refused by the guard before sending releases the lock of the order it edits
# =====================================================================================
@pytest.mark.parametrize("refusal", ["below-minimum", "veto", "balance-timeout"])
def test_edit_refused_before_submit_keeps_the_resting_order_locked(
    make_guard: Any, refusal: str
) -> None:
    class Veto:
        armed = False

        @nija_guard.hookimpl
        def nija_guard_exit_veto(self) -> str | None:
            return "no edits now" if self.armed else None

    veto = Veto()
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, plugins=[veto]))
    resting = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    amount = 0.5
    if refusal == "below-minimum":
        amount = 0.00001  # a bad edit: ccxt.InvalidOrder, nothing sent
    elif refusal == "veto":
        veto.armed = True
    else:
        paper.inject("fetch_balance", ccxt.RequestTimeout("balance timed out"))
    with pytest.raises(ccxt.BaseError):
        ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", amount, 95_000)
    veto.armed = False
    assert "edit_order" not in paper.calls  # the guard refused it: the order still rests
    assert paper.venue.get(resting["id"]).status == "open"
    # Guarantee 2: the resting exit keeps the lock until it is final ...
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]
    # ... so a second exit is refused instead of resting beside it (two live sells).
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert len(paper.sell_orders()) == 1


# =====================================================================================
# 2. Ledger mode: an edit of a resting exit does not count the ledger the edited order holds
# =====================================================================================
def test_ledger_mode_edit_of_a_resting_exit_is_not_nothing_to_sell(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, ownership="ledger", ledger_seed={"BTC": 1}))
    resting = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)  # reserves the whole ledger
    edited = ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", 1, 95_000)
    assert edited["amount"] == pytest.approx(
        1
    )  # today: NothingToSell ("holdings are 0 in the ledger")


# =====================================================================================
# 3. A backend failure (or interrupt) between admission and _prepare's try leaks the lock
#    REGRESSION PIN: fixed in 633498d (_admit moved inside _prepare's try); passes on HEAD.
# =====================================================================================
@pytest.mark.parametrize("where", ["lease-acquire", "adopt-interrupted"])
def test_failure_right_after_admission_releases_the_lock(
    make_guard: Any, monkeypatch: Any, where: str, tmp_path: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, backend=f"sqlite:///{tmp_path}/guard.db"))
    ex.load_markets()
    backend = ex.nija_guard.backend
    if where == "lease-acquire":

        def broken_acquire(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("lock service went away")

        monkeypatch.setattr(backend, "acquire", broken_acquire)
        expected: type[BaseException] = nija_guard.BackendUnavailable
    else:
        paper.inject("fetch_open_orders", KeyboardInterrupt())  # Ctrl-C during adoption
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    monkeypatch.undo()
    assert "create_order" not in paper.calls  # nothing was sent ...
    assert_no_leaks(ex)  # ... so nothing may stay locked (today: BTC/USDT locked forever)


# =====================================================================================
# 4. A failing lease release in _settle's finally skips the lock release
# =====================================================================================
def test_lease_release_failure_at_settlement_still_releases_the_close_lock(
    make_guard: Any, monkeypatch: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper))
    ex.load_markets()
    backend = ex.nija_guard.backend
    real_release = backend.release
    calls = []

    def flaky_release(lease: Any) -> bool:
        calls.append(lease)
        if len(calls) == 1:
            raise ConnectionError("lock service blipped")
        return real_release(lease)

    monkeypatch.setattr(backend, "release", flaky_release)
    # Whether a filled order should raise here is debatable; the leak below is the bug.
    with contextlib.suppress(nija_guard.BackendUnavailable):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    monkeypatch.undo()
    assert paper.venue.sold("BTC/USDT") == Decimal("0.5")  # the exit is over on the exchange
    assert ex.nija_guard.locked_symbols() == []  # today: locked forever, nothing tracks it


# =====================================================================================
# 5. An interrupt at the outcome_unknown notification leaves `reconciler` set for ever
# =====================================================================================
def test_interrupt_in_outcome_unknown_hook_does_not_lock_the_symbol_for_ever(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(
        make_guard(paper, plugins=[recorder, Interrupting("outcome_unknown", KeyboardInterrupt())])
    )
    ex.load_markets()
    paper.ghost_next_order()  # executed, reply lost
    with pytest.raises(KeyboardInterrupt):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert ex.nija_guard.status()["unknown"] == ["BTC/USDT"]  # right: locked while unknown
    drive_polls(ex)  # the tracker's job: reconcile it
    # today: poll() returns at once because rec.reconciler still points at the dead call
    assert ex.nija_guard.locked_symbols() == []
    assert [s["exit"].outcome for s in recorder.named("order_settled")] == [
        nija_guard.Outcome.FILLED
    ]


# =====================================================================================
# 6. A caller left in the dark after its order went out: the retry must not sell again
# =====================================================================================
@pytest.mark.parametrize(
    "dark",
    [
        "interrupt-while-reconciling",  # PASSES on HEAD 633498d (failed on fa6d245): a pin
        "interrupt-in-submitted-hook",
        "journal-fails-after-ack",
    ],
)
def test_retry_after_interrupt_once_the_order_exists_gets_that_order(
    make_guard: Any, recorder: Any, monkeypatch: Any, dark: str, tmp_path: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    plugins: list[Any] = [recorder]
    if dark == "interrupt-in-submitted-hook":
        plugins.append(Interrupting("order_submitted", KeyboardInterrupt()))
    # A durable backend: the memory backend keeps no journal that could fail.
    ex = quiet(make_guard(paper, plugins=plugins, backend=f"sqlite:///{tmp_path}/guard.db"))
    ex.load_markets()
    expected: type[BaseException] = KeyboardInterrupt
    if dark == "interrupt-while-reconciling":
        paper.ghost_next_order()  # the sell executes, its reply is lost ...
        paper.inject("fetch_order", KeyboardInterrupt())  # ... and Ctrl-C hits the lookup
    elif dark == "journal-fails-after-ack":
        backend = ex.nija_guard.backend
        real_record = backend.record

        def record(entry: Any) -> None:
            if entry.state == "submitted":
                raise ConnectionError("journal store went away")
            real_record(entry)

        monkeypatch.setattr(backend, "record", record)
        expected = nija_guard.BackendUnavailable
    with pytest.raises(expected):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    monkeypatch.undo()
    assert len(paper.sell_orders()) == 1
    drive_polls(ex)  # the tracker settles the executed order
    assert ex.nija_guard.locked_symbols() == []
    # The bot never saw its order; it retries the very same exit (docs/design.md:
    # "When a call raised OutcomeUnknown (or was interrupted) ... gets the executed order back").
    again = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert len(paper.sell_orders()) == 1, "the retry sold a second time"
    assert again["clientOrderId"] == paper.sell_orders()[0].client_order_id


# =====================================================================================
# 7. Race: the tracker resolves an UNKNOWN record between `reconciler = None` and
#    `caller_saw_unknown = True` in _submit_failed; the retry then sells again.
#    REGRESSION PIN: fixed in 633498d (flag set at the UNKNOWN transition); passes on HEAD.
#    The window has no yield: _schedule (called inside it on fa6d245) is the gate.
# =====================================================================================
def test_tracker_resolving_in_the_unknown_window_still_answers_the_retry(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, reconcile_timeout=0.001, absent_after=60))
    ex.load_markets()
    engine = ex.nija_guard.engine
    paper.ghost_next_order()
    for method in ("fetch_order", "fetch_open_orders", "fetch_my_trades"):
        paper.inject(method, ccxt.ExchangeNotAvailable("degraded"), times=50)

    in_window, go_on = threading.Event(), threading.Event()
    original = engine._schedule

    def schedule(rec: Any, *, progressed: bool) -> None:
        # _schedule runs right after `rec.reconciler = None` (the tracker is
        # silenced: only the bot's thread gets here first): hold it exactly there.
        if threading.current_thread() is not threading.main_thread() and not go_on.is_set():
            in_window.set()
            assert go_on.wait(10)
        original(rec, progressed=progressed)

    engine._schedule = schedule
    thread, box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 0.5))
    assert in_window.wait(10)
    paper._faults.clear()  # the exchange recovered
    ex.nija_guard.poll()  # the tracker's poll, in the window: finds the order, settles it
    go_on.set()
    thread.join(10)
    # Today the record is marked as being reconciled in the same critical section
    # that makes it UNKNOWN, so the tracker's poll waits and the bot's call gets
    # the order itself. Either way: no lock left, and a retry never sells twice.
    assert "result" in box or isinstance(box.get("error"), nija_guard.OutcomeUnknown)
    drive_polls(ex)
    assert ex.nija_guard.locked_symbols() == []
    with contextlib.suppress(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 0.5)  # the bot's retry (or a new exit)
    if isinstance(box.get("error"), nija_guard.OutcomeUnknown):
        assert len(paper.sell_orders()) == 1, "the retry sold a second time"


# =====================================================================================
# 8. The not-placed client id is reused by *every* later identical exit, so a later
#    failed submit is "reconciled" with an older, unrelated order
# =====================================================================================
def test_a_later_identical_exit_that_never_arrived_is_not_answered_with_an_old_order(
    ex: Any, paper: PaperExchange
) -> None:
    paper.inject("create_order", ccxt.RequestTimeout("never arrived"))
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_market_sell_order("BTC/USDT", 0.1)  # absent: "safe to retry"
    retry = ex.create_market_sell_order("BTC/USDT", 0.1)  # reuses the client id: right
    assert len(paper.sell_orders()) == 1

    # Minutes later the strategy sells 0.1 again; this request never reaches the venue.
    paper.inject("create_order", ccxt.RequestTimeout("never arrived"))
    try:
        third = ex.create_market_sell_order("BTC/USDT", 0.1)
    except ccxt.RequestTimeout:
        third = None
    assert len(paper.sell_orders()) == 1  # nothing new was sold ...
    # ... but today the guard answers with the *retry's* order (found by the reused id):
    # the bot believes it sold 0.1 more than it did, and ledger/position books drift.
    assert third is None or third["id"] != retry["id"]


# =====================================================================================
# 9. Sells sized in quote currency are clamped with a stale price hint
# =====================================================================================
def test_cost_sized_sell_never_sells_more_than_the_ledger_after_the_price_moved(
    make_guard: Any,
) -> None:
    # The account holds 1 BTC; this bot owns 0.5 of it (ledger mode).
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, ownership="ledger", ledger_seed={"BTC": "0.5"}))
    ex.create_market_sell_order("BTC/USDT", 0.01)  # fills at 50,000: the guard's price hint
    paper.set_price("BTC/USDT", 25_000)  # the market halves
    # 20,000 USDT is 0.4 BTC at the stale hint (< 0.49 owned, no clamp) but 0.8 BTC now.
    ex.create_market_sell_order_with_cost("BTC/USDT", 20_000)
    assert paper.venue.sold("BTC/USDT") <= Decimal("0.5"), "sold coins the bot does not own"


# =====================================================================================
# 10. Venues that amend in place (same order id): one exchange order, two records
# =====================================================================================
class AmendingPaper(PaperExchange):
    """edit_order amends the order in place, keeping its id (OKX, Bybit amend)."""

    def edit_order(  # type: ignore[override]
        self,
        id: str,
        symbol: str,
        type: str,
        side: str,
        amount: float | None = None,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        def action() -> dict[str, Any]:
            with self.venue.lock:
                order = self.venue.get(id)
                if price is not None:
                    order.price = Decimal(str(price))
                return self._order(order)

        return self._call("edit_order", action)  # type: ignore[no-any-return]


def test_in_place_amend_settles_the_one_order_once(make_guard: Any, recorder: Any) -> None:
    paper = AmendingPaper(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    first = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    edited = ex.edit_order(first["id"], "BTC/USDT", "limit", "sell", 0.5, 95_000)
    assert edited["id"] == first["id"]  # one order on the exchange (two records track it)
    paper.fill(first["id"])
    ex.fetch_order(first["id"], "BTC/USDT")
    wait_until(lambda: ex.nija_guard.status()["in_flight"] == [])
    assert len(recorder.named("order_settled")) == 1  # "exactly once per order"
    assert sum(f["amount"] for f in recorder.named("order_filled")) == pytest.approx(0.5)


# =====================================================================================
# 11. create_orders swallows an interrupt after a sell was acknowledged, reports it
#     "rejected" and never wakes the tracker
# =====================================================================================
def test_batch_does_not_turn_an_interrupt_into_a_rejected_report(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, plugins=[recorder, Interrupting("order_submitted", KeyboardInterrupt())])
    ex.load_markets()
    request = {"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.5}
    try:
        results = ex.create_orders([request])
    except KeyboardInterrupt:
        results = None
    assert len(paper.sell_orders()) == 1  # the venue executed it
    # Today: [{"status": "rejected", ...}] for an executed sell, the Ctrl-C is lost ...
    assert results is None or results[0]["status"] != "rejected"
    # ... and its record waits for a tracker nobody woke.
    wait_until(lambda: ex.nija_guard.locked_symbols() == [], timeout=0.5)


# =====================================================================================
# 12. A batch with two sells of one symbol waits for itself under on_conflict="wait"
# =====================================================================================
def test_batch_second_sell_of_the_same_symbol_is_refused_at_once(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, on_conflict="wait", wait_timeout=0.2)
    request = {"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.3}
    results = ex.create_orders([request, dict(request)])
    assert results[0]["status"] == "closed" and results[1]["status"] == "rejected"
    # The holder is this very batch: waiting can only time out (30 s by default).
    assert recorder.named("exit_blocked")[-1]["reason"] == "in_progress"


# =====================================================================================
# 13. A second "replace" exit busy-spins while the first replace confirms its cancel
# =====================================================================================
def test_second_replacer_waits_instead_of_spinning(make_guard: Any) -> None:
    paper = GatedPaper(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, on_conflict="replace", wait_timeout=0.05))
    book = ex.nija_guard.book
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    admits = [0]
    real_admit = book.admit

    def counting_admit(rec: Any) -> Any:
        admits[0] += 1
        return real_admit(rec)

    book.admit = counting_admit  # type: ignore[method-assign]
    paper.gated.add("cancel_order")
    first, first_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1))
    assert paper.arrived.acquire(timeout=10)  # the first replacer's cancel is on the wire
    second, _second_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 1))
    # Either the second exit gives up after wait_timeout, or it spins on admit().
    wait_until(lambda: not second.is_alive() or admits[0] > 20_000)
    spun = admits[0]
    paper.gate.set()
    first.join(10)
    second.join(10)
    del book.admit
    assert first_box["result"]["filled"] == pytest.approx(1)
    assert paper.venue.get(tp["id"]).status == "canceled"
    assert spun < 100, f"the second replacer called Book.admit {spun} times without waiting"


# =====================================================================================
# 14. Fills discovered by a replace's cancel never fire nija_guard_order_filled
# =====================================================================================
def test_replace_reports_the_partial_fill_of_the_order_it_cancels(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, on_conflict="replace"))
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
    paper.fill(tp["id"], 0.4)  # nobody polled: the guard learns it from the cancel reply
    ex.create_market_sell_order("BTC/USDT", 1)
    filled_of_tp = [
        f["amount"] for f in recorder.named("order_filled") if f["order"]["id"] == tp["id"]
    ]
    assert filled_of_tp == [pytest.approx(0.4)]  # "new fills observed (partial or final)"


# =====================================================================================
# 15. Replace on a lagging broker: the stop-loss sees the cancelled take-profit's coins
#     as still locked and refuses to sell (NothingToSell)
# =====================================================================================
def test_replace_on_a_lagging_balance_sells_what_the_cancel_freed(make_guard: Any) -> None:
    now = [1_000_000.0]
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0}, clock=lambda: now[0])
    paper.venue.balance_lag = 5.0  # the account endpoint trails the matching engine by 5 s
    now[0] += 10
    ex = quiet(make_guard(paper, on_conflict="replace"))
    tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)  # take-profit rests: 1 BTC used
    now[0] += 10
    # The stop-loss: cancels the take-profit (confirmed final), then sizes itself.
    # The balance it fetches is 5 s old: it still shows the 1 BTC in "used".
    stop = ex.create_market_sell_order("BTC/USDT", 1)
    assert paper.venue.get(tp["id"]).status == "canceled"
    assert stop["filled"] == pytest.approx(1)  # today: NothingToSell, the position stays open


# =====================================================================================
# 16. (regression in 633498d) The retry memo is published while the bot's own call is
#     still reconciling: a *concurrent, new* identical exit is answered with that order
# =====================================================================================
def test_a_concurrent_identical_exit_is_not_answered_with_an_order_its_caller_still_gets(
    make_guard: Any,
) -> None:
    class SlowSettledHook:
        def __init__(self) -> None:
            self.inside, self.go_on = threading.Event(), threading.Event()

        @nija_guard.hookimpl
        def nija_guard_order_settled(self) -> None:
            if threading.current_thread() is not threading.main_thread():
                self.inside.set()
                assert self.go_on.wait(10)

    hook = SlowSettledHook()
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, plugins=[hook]))
    ex.load_markets()
    paper.ghost_next_order()  # the first exit's reply is lost; it reconciles in its own call
    first, first_box = run_in_thread(lambda: ex.create_market_sell_order("BTC/USDT", 0.5))
    assert hook.inside.wait(10)  # found and settling, still inside the first call
    try:
        second: Any = ex.create_market_sell_order("BTC/USDT", 0.5)  # another strategy thread
    except nija_guard.ExitInProgress as exc:
        second = exc
    hook.go_on.set()
    first.join(10)
    assert first_box["result"]["filled"] == pytest.approx(0.5)  # the first caller got its order
    # The second call is a new exit (its caller was never in the dark): refused while the
    # lock is held, or sold on its own -- never handed the first caller's order.
    first_id = first_box["result"]["id"]
    assert isinstance(second, nija_guard.ExitInProgress) or second["id"] != first_id


# =====================================================================================
# 17. create_orders: the batch reply is lost, reconciliation finds every order, and the
#     caller still gets the transport error -- so its retry sells everything again
# =====================================================================================
class LostBatchReply(PaperExchange):
    """create_orders executes every order, then the reply is lost."""

    lose_next = False

    def create_orders(  # type: ignore[override]
        self, orders: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        results = super().create_orders(orders, params)
        if self.lose_next:
            self.lose_next = False
            raise ccxt.RequestTimeout("batch reply lost")
        return results


def test_batch_whose_orders_were_all_found_does_not_invite_a_second_sell(make_guard: Any) -> None:
    paper = LostBatchReply(balances={"BTC": 1, "ETH": 10, "USDT": 0})
    ex = quiet(make_guard(paper))
    ex.load_markets()
    batch = [
        {"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.5},
        {"symbol": "ETH/USDT", "type": "market", "side": "sell", "amount": 5},
    ]
    paper.lose_next = True
    try:
        results = ex.create_orders(batch)
    except ccxt.RequestTimeout:
        results = None  # today: raised although both sells were found executed
    assert len(paper.sell_orders()) == 2
    if results is None:
        # The bot was left in the dark and does what a bot does: it retries the call.
        ex.create_orders(batch)
    assert len(paper.sell_orders()) == 2, "the retried batch sold every position a second time"


# =====================================================================================
# 18. "Absent" is declared on a balance snapshot older than the submit: on a lagging
#     broker that indexes new orders late, an executed sell is "not placed", and the
#     retry the guard calls safe sells again
# =====================================================================================
class LateIndexingPaper(PaperExchange):
    """Orders exist at once but lookups do not show them yet (exchange indexing delay)."""

    hidden = False

    def fetch_order(self, id: Any, symbol: Any = None, params: Any = None) -> Any:  # type: ignore[override]
        if self.hidden:
            raise ccxt.OrderNotFound("not indexed yet")
        return super().fetch_order(id, symbol, params)

    def fetch_open_orders(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return [] if self.hidden else super().fetch_open_orders(*args, **kwargs)

    def fetch_my_trades(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return [] if self.hidden else super().fetch_my_trades(*args, **kwargs)


def test_absent_is_not_declared_from_a_balance_older_than_the_submit(make_guard: Any) -> None:
    now = [1_000_000.0]
    paper = LateIndexingPaper(balances={"BTC": 1, "USDT": 0}, clock=lambda: now[0])
    paper.venue.balance_lag = 5.0  # the account endpoint trails by 5 s (the product's premise)
    now[0] += 10
    ex = quiet(make_guard(paper, reconcile_timeout=1.0))
    ex.load_markets()
    paper.hidden = True
    paper.ghost_next_order()  # executed; reply lost; lookups do not show it yet
    with pytest.raises((nija_guard.OutcomeUnknown, ccxt.RequestTimeout)) as first:
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert len(paper.sell_orders()) == 1
    if "safe to retry" in " ".join(getattr(first.value, "__notes__", [])):
        # The guard said so: the bot retries. (Today: the holdings check compared two
        # snapshots that both predate the sell, and called it absent.)
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert len(paper.sell_orders()) == 1, "an executed sell was declared not placed"


# =====================================================================================
# A hook's SystemExit on the tracker thread does not end tracking
# =====================================================================================
def test_tracker_survives_a_hook_that_raises_system_exit(make_guard: Any) -> None:
    class Exiting:
        armed = True

        @nija_guard.hookimpl
        def nija_guard_order_filled(self) -> None:
            if self.armed and threading.current_thread() is not threading.main_thread():
                self.armed = False
                raise SystemExit("a plugin called sys.exit() on the tracker thread")

    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, plugins=[Exiting()])
    first = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    paper.fill(first["id"], "0.1")  # the tracker sees the fill: the hook raises SystemExit
    paper.fill(first["id"])
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])  # tracking went on
    assert_no_leaks(ex)


# =====================================================================================
# Closing one of two guards of an account hands its resting orders to the other
# =====================================================================================
def test_closing_a_guard_hands_its_orders_to_another_guard_of_the_account(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "shared-close"}, balances={"BTC": 1, "USDT": 0})
    first = make_guard(paper)
    second = make_guard(PaperExchange({"apiKey": "shared-close"}, venue=paper.venue))
    order = first.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    first.nija_guard.close()
    paper.set_price("BTC/USDT", 91_000)
    wait_until(lambda: second.nija_guard.locked_symbols() == [])
    assert paper.venue.get(order["id"]).status == "closed"


# =====================================================================================
# Adoption: every resting exit of ours is tracked; in ledger mode it reserves the ledger
# =====================================================================================
def test_adoption_tracks_every_resting_exit_and_reserves_the_ledger(make_guard: Any) -> None:
    paper = PaperExchange({"apiKey": "adopt"}, balances={"BTC": 3, "USDT": 0})
    before = make_guard(paper, account="before-restart")
    before.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    # A second resting exit placed around the guard's lock (another of our processes).
    paper.venue.place(
        "BTC/USDT", "sell", "limit", "0.25", "96000", client_order_id="njg" + "0" * 24
    )
    after = make_guard(
        PaperExchange({"apiKey": "adopt-2"}, venue=paper.venue),
        account="after-restart",
        ownership="ledger",
        ledger_seed={"BTC": 2},
    )
    with pytest.raises(nija_guard.ExitInProgress):
        after.create_market_sell_order("BTC/USDT", 1)
    assert len(after.nija_guard.status()["in_flight"]) == 2
    assert after.nija_guard.owned("BTC") == Decimal("1.25")  # 2 owned, 0.75 spoken for
    paper.set_price("BTC/USDT", 97_000)
    wait_until(lambda: after.nija_guard.status()["in_flight"] == [])
    assert after.nija_guard.owned("BTC") == Decimal("1.25")  # the fills used the reservation
