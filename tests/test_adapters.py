"""The adapter seam and the declarative adapter (nija_guard.Broker) on a house broker class."""

from __future__ import annotations

import asyncio
import logging
import threading
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder, wait_until
from house_broker import (
    BrokerTimeout,
    HouseBroker,
    InsufficientBalance,
    OrderRejected,
    describe,
)

import nija_guard
from nija_guard._broker import read_order_fields
from nija_guard.testing import PaperExchange

SYMBOL = "BTC-USD"


def fetch_house_order(broker: Any, order_id: str, symbol: str | None) -> Any:
    return broker.get_order(order_id)


def guarded(broker: Any, adapter: nija_guard.Broker | None = None, **options: Any) -> Any:
    return nija_guard.guard(broker, adapter=adapter or describe(), **{**FAST, **options})


# -- choosing an adapter -------------------------------------------------------------------
def test_guard_refuses_a_client_it_cannot_read_and_says_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"nija_guard\.Broker"):
        nija_guard.guard(HouseBroker())


def test_ccxt_clients_get_the_ccxt_adapter_and_an_adapter_option_is_checked() -> None:
    paper = PaperExchange({"apiKey": "k"}, balances={"BTC": 1})
    ex = nija_guard.guard(paper, **FAST)
    assert type(ex.nija_guard.adapter).__name__ == "CcxtAdapter"
    ex.nija_guard.close()
    with pytest.raises(TypeError, match="adapter must be a broker adapter"):
        nija_guard.guard(HouseBroker(), adapter=object())


def test_the_proxy_is_transparent_for_a_house_broker() -> None:
    broker = HouseBroker()
    ex = guarded(broker)
    try:
        assert isinstance(ex, HouseBroker)
        assert ex.get_account_balance() == broker.get_account_balance()  # passthrough
        assert nija_guard.unguarded(ex) is broker
        assert nija_guard.guard(ex) is ex
        assert "house" in repr(ex.nija_guard)
    finally:
        ex.nija_guard.close()


# -- describing a broker: mistakes are caught at once ----------------------------------------
@pytest.mark.parametrize(
    ("orders", "error", "match"),
    [
        (
            {"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=7)},
            TypeError,
            "no argument at position 7",
        ),
        (
            {"place_market_order": nija_guard.OrderMethod(symbol="sym", side=1, amount=2)},
            TypeError,
            "no argument 'sym'",
        ),
        (
            {"sell_everything": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
            TypeError,
            "has no sell_everything",
        ),
        # place_limit_order left out: a sell through it would go unguarded
        (
            {"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
            TypeError,
            "leaves out: place_limit_order",
        ),
    ],
)
def test_a_wrong_description_fails_at_guard_time(
    orders: dict[str, nija_guard.OrderMethod], error: type[Exception], match: str
) -> None:
    adapter = nija_guard.Broker(
        name="house", orders=orders, holdings="get_positions", fetch_order=fetch_house_order
    )
    with pytest.raises(error, match=match):
        nija_guard.guard(HouseBroker(), adapter=adapter, **FAST)


def test_methods_that_never_sell_can_be_declared_as_such() -> None:
    adapter = nija_guard.Broker(
        name="house-ignore",
        orders={"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
        holdings="get_positions",
        fetch_order=fetch_house_order,
        ignore=["place_limit_order"],
    )
    ex = nija_guard.guard(HouseBroker(), adapter=adapter, **FAST)
    ex.nija_guard.close()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: nija_guard.OrderMethod(symbol=0, amount=1), "side"),
        (lambda: nija_guard.OrderMethod(symbol=0, side=1, amount=2, kind="spot"), "kind"),
        (lambda: nija_guard.OrderMethod(symbol=0, amount=1, fixed_side="short"), "fixed_side"),
        (lambda: nija_guard.OrderMethod(read=lambda a: a), "together"),
        (lambda: nija_guard.Broker(name="", orders={}, holdings="x"), "name"),
        (lambda: nija_guard.Broker(name="b", orders={}, holdings="x"), "at least one"),
        (
            lambda: nija_guard.Broker(
                name="b",
                orders={"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
                holdings="get_positions",
                fetch_order=fetch_house_order,
                errors={OrderRejected: "nope"},
            ),
            "must be one of",
        ),
    ],
)
def test_bad_descriptions_get_clear_errors(build: Any, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        build()


# -- the broker's own answers reach the bot ----------------------------------------------------
def test_a_refusal_is_the_brokers_own_exception_and_frees_the_symbol(recorder: Recorder) -> None:
    broker = HouseBroker()
    ex = guarded(broker, plugins=[recorder])
    try:
        broker.fail_next("place_market_order", "reject")
        with pytest.raises(OrderRejected, match="market closed"):
            ex.place_market_order(SYMBOL, "sell", 1)
        assert ex.nija_guard.locked_symbols() == []
        assert recorder.named("order_settled")[0]["exit"].outcome == nija_guard.Outcome.REJECTED
        reply = ex.place_market_order(SYMBOL, "sell", 1)  # the symbol is free again
        assert reply["status"] == "FILLED"
    finally:
        ex.nija_guard.close()


def test_insufficient_balance_from_the_broker_is_its_own_exception() -> None:
    """The broker's positions lag: they still show a coin sold by hand a moment ago."""
    broker = HouseBroker()
    ex = guarded(broker)
    try:
        stale = broker.get_positions()
        broker.venue.free["BTC"] = Decimal(0)  # sold elsewhere
        broker.get_positions = lambda: stale  # type: ignore[method-assign]
        with pytest.raises(InsufficientBalance):
            ex.place_market_order(SYMBOL, "sell", 1)
        assert ex.nija_guard.locked_symbols() == []
    finally:
        ex.nija_guard.close()


def test_a_timeout_before_the_broker_acted_is_settled_as_never_placed(recorder: Recorder) -> None:
    broker = HouseBroker()
    ex = guarded(broker, plugins=[recorder])
    try:
        broker.fail_next("place_market_order", "timeout_before")
        with pytest.raises(BrokerTimeout):  # its own error: the guard made sure nothing exists
            ex.place_market_order(SYMBOL, "sell", 1)
        assert ex.nija_guard.locked_symbols() == []
        resolved = recorder.wait_for("outcome_resolved")[0]["exit"]
        assert resolved.outcome == nija_guard.Outcome.NOT_PLACED
        assert broker.sent == []
        assert ex.place_market_order(SYMBOL, "sell", 1)["status"] == "FILLED"
        assert len(broker.sent) == 1
    finally:
        ex.nija_guard.close()


def test_without_client_ids_a_lost_reply_stays_unknown_and_is_never_sent_twice(
    recorder: Recorder,
) -> None:
    """A broker that takes no client order id: the guard cannot find the order.

    Holdings fell, so it was executed; the symbol stays locked (UNKNOWN) and
    every retry gets OutcomeUnknown, never a second order.
    """
    broker = HouseBroker()
    ex = guarded(broker, describe(client_ids=False), plugins=[recorder], reconcile_timeout=0.3)
    try:
        broker.fail_next("place_market_order", "timeout_after")
        with pytest.raises(nija_guard.OutcomeUnknown):
            ex.place_market_order(SYMBOL, "sell", 1)
        assert broker.sent[0]["client_id"] is None
        for _ in range(3):
            with pytest.raises(nija_guard.OutcomeUnknown):
                ex.place_market_order(SYMBOL, "sell", 1)
        assert len(broker.sent) == 1
        assert ex.nija_guard.status()["unknown"]
    finally:
        ex.nija_guard.close()


def test_the_bots_own_client_id_is_kept() -> None:
    broker = HouseBroker()
    ex = guarded(broker)
    try:
        reply = ex.place_market_order(SYMBOL, "sell", 0.5, client_id="my-exit-1")
        assert reply["client_id"] == "my-exit-1" and broker.sent[0]["client_id"] == "my-exit-1"
    finally:
        ex.nija_guard.close()


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(Decimal("3"), Decimal("1.0000")), ("3", "1.0000"), (3.0, 1.0), (3, 1)],
)
def test_the_clamped_amount_keeps_the_type_the_bot_passed(requested: Any, expected: Any) -> None:
    broker = HouseBroker()
    ex = guarded(broker)
    try:
        ex.place_market_order(SYMBOL, "sell", requested)
        sent = broker.sent[0]["quantity"]
        assert type(sent) is type(expected) and Decimal(str(sent)) == Decimal(str(expected))
    finally:
        ex.nija_guard.close()


def test_bad_input_is_refused_before_the_broker_sees_it() -> None:
    broker = HouseBroker()
    ex = guarded(broker)
    try:
        for args in (
            (SYMBOL, "sideways", 1),
            (SYMBOL, "sell", -1),
            (SYMBOL, "sell", float("nan")),
            ("", "sell", 1),
            (None, "sell", 1),
        ):
            with pytest.raises(ccxt.BaseError):
                ex.place_market_order(*args)
        with pytest.raises(ccxt.BaseError):
            ex.place_market_order(SYMBOL, "sell")  # a missing argument
        assert broker.sent == []
        assert ex.nija_guard.locked_symbols() == []
    finally:
        ex.nija_guard.close()


def test_dust_below_the_described_minimum_is_refused_once() -> None:
    broker = HouseBroker({"BTC-USD": 0.00005})
    ex = guarded(broker)
    try:
        with pytest.raises(nija_guard.DustPosition):
            ex.place_market_order(SYMBOL, "sell", 1)
        assert broker.sent == []
    finally:
        ex.nija_guard.close()


def test_buys_pass_through_and_count_in_ledger_mode() -> None:
    broker = HouseBroker({"BTC-USD": 2.0})
    ex = guarded(broker, ownership="ledger")
    try:
        bought = ex.place_market_order(SYMBOL, "buy", 0.5)
        assert bought["status"] == "FILLED" and bought["side"] == "BUY"  # the broker's reply
        reply = ex.place_market_order(SYMBOL, "sell", 2)  # the bot owns 0.5 of the 2.5 held
        assert reply["filled_quantity"] == pytest.approx(0.5)
        assert broker.held() == Decimal("2.0")
    finally:
        ex.nija_guard.close()


def test_a_stop_loss_replaces_a_resting_take_profit(recorder: Recorder) -> None:
    broker = HouseBroker()
    ex = guarded(broker, plugins=[recorder], on_conflict="replace")
    try:
        take_profit = ex.place_limit_order(SYMBOL, "sell", 1, 70_000)
        broker.fill(take_profit["order_id"], "0.25")
        stop_loss = ex.place_market_order(SYMBOL, "sell", 1)
        # The take-profit was cancelled through cancel_order, its fill accounted for.
        assert broker.venue.get(take_profit["order_id"].removeprefix("H-")).status == "canceled"
        assert stop_loss["filled_quantity"] == pytest.approx(0.75)
        assert [o["quantity"] for o in broker.sent] == [1, 0.75]
        assert broker.held() == 0
        wait_until(lambda: ex.nija_guard.locked_symbols() == [])
        outcomes = sorted(str(s["exit"].outcome) for s in recorder.wait_for("order_settled", 2))
        assert outcomes == sorted(
            [str(nija_guard.Outcome.FILLED), str(nija_guard.Outcome.PARTIALLY_FILLED)]
        )
    finally:
        ex.nija_guard.close()


def test_unknown_status_words_keep_the_order_tracked(caplog: pytest.LogCaptureFixture) -> None:
    adapter = describe()
    with caplog.at_level(logging.WARNING, logger="nija_guard"):
        order = adapter._order({"order_id": "1", "status": "MYSTERIOUS", "quantity": 1})
    assert order["status"] == "open"
    assert "unknown order status" in caplog.text
    assert adapter._order({"id": 2, "state": "Cancelled"})["status"] == "canceled"


def test_the_default_reader_reads_objects_and_enums() -> None:
    import enum
    import uuid
    from datetime import datetime, timezone

    class Side(str, enum.Enum):
        SELL = "sell"

    class Order:
        id = uuid.UUID(int=7)
        client_order_id = "njg1"
        status = "filled"
        side = Side.SELL
        qty = "2"
        filled_qty = "2"
        filled_avg_price = "10.5"
        submitted_at = datetime(2026, 1, 1, tzinfo=timezone.utc)

    fields = read_order_fields(Order())
    order = describe()._order(Order())
    assert fields["id"] == Order.id
    assert (order["id"], order["side"], order["filled"], order["average"]) == (
        str(uuid.UUID(int=7)),
        "sell",
        2.0,
        10.5,
    )
    assert order["timestamp"] == 1767225600000 and order["info"] is not None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"BTC-USD": 1.5}, (1.5, 1.5)),
        ({"BTC-USD": (1.0, 1.5)}, (1.0, 1.5)),
        ({"BTC-USD": {"free": "1", "total": "2"}}, (1.0, 2.0)),
        ([{"symbol": "BTC-USD", "qty": "3", "qty_available": "2"}], (2.0, 3.0)),
        ([{"symbol": "BTC-USD", "quantity": -4}], (0.0, 0.0)),  # a short: nothing to sell
    ],
)
def test_holdings_shapes(reply: Any, expected: tuple[float, float]) -> None:
    balance = describe()._balance(reply)
    assert (balance["BTC-USD"]["free"], balance["BTC-USD"]["total"]) == expected
    assert isinstance(balance["BTC-USD"]["free"], Decimal)  # never rounded through a float


def test_unreadable_holdings_fail_closed() -> None:
    broker = HouseBroker()
    adapter = nija_guard.Broker(
        name="house-bad-holdings",
        orders=describe().orders,
        holdings=lambda b: [{"quantity": 1}],  # no symbol
        fetch_order=fetch_house_order,
    )
    ex = nija_guard.guard(broker, adapter=adapter, **FAST)
    try:
        with pytest.raises(ccxt.BadResponse, match="holdings"):
            ex.place_market_order(SYMBOL, "sell", 1)
        assert broker.sent == [] and ex.nija_guard.locked_symbols() == []
    finally:
        ex.nija_guard.close()


def test_an_errors_callable_classifies(recorder: Recorder) -> None:
    broker = HouseBroker()
    adapter = nija_guard.Broker(
        name="house-callable-errors",
        orders=describe().orders,
        holdings="get_positions",
        fetch_order_by_client_id=lambda b, cid, symbol: b.get_order_by_client_id(cid),
        errors=lambda exc: "rejected" if isinstance(exc, OrderRejected) else None,
    )
    ex = nija_guard.guard(broker, adapter=adapter, **FAST)
    try:
        broker.fail_next("place_market_order", "reject")
        with pytest.raises(OrderRejected):
            ex.place_market_order(SYMBOL, "sell", 1)
        broker.fail_next("place_market_order", "timeout_after")  # unmapped: unknown
        reply = ex.place_market_order(SYMBOL, "sell", 1)
        assert reply["status"] == "FILLED"  # found by client id
    finally:
        ex.nija_guard.close()


# -- async house brokers ------------------------------------------------------------------------
class AsyncHouseBroker:
    """The same broker with coroutine methods (an asyncio bot's own client)."""

    def __init__(self, broker: HouseBroker) -> None:
        self.inner = broker

    async def place_market_order(
        self, symbol: str, side: str, quantity: float, client_id: str | None = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.inner.place_market_order(symbol, side, quantity, client_id)

    async def place_limit_order(
        self, symbol: str, side: str, quantity: float, price: float, client_id: str | None = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.inner.place_limit_order(symbol, side, quantity, price, client_id)

    async def get_positions(self) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return self.inner.get_positions()

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return self.inner.get_order(order_id)

    async def get_order_by_client_id(self, client_id: str) -> dict[str, Any] | None:
        return self.inner.get_order_by_client_id(client_id)

    async def get_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self.inner.get_open_orders(symbol)

    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        return self.inner.cancel_order(order_id)

    async def close(self) -> None:
        pass


def test_an_async_house_broker_is_guarded_too() -> None:
    inner = HouseBroker()

    async def main() -> None:
        ex = guarded(AsyncHouseBroker(inner))
        assert ex.nija_guard.is_async
        results = await asyncio.gather(
            *(ex.place_market_order(SYMBOL, "sell", 1) for _ in range(20)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, dict) for r in results) == 1, results
        assert all(
            isinstance(r, (dict, nija_guard.ExitInProgress, nija_guard.NothingToSell))
            for r in results
        )
        inner.fail_next("place_market_order", "timeout_after")
        inner.venue.deposit("BTC", 1)
        reply = await ex.place_market_order(SYMBOL, "sell", 1)  # ghost: found by client id
        assert reply["status"] == "FILLED"
        inner.fail_next("place_market_order", "reject")
        inner.venue.deposit("BTC", 1)
        with pytest.raises(OrderRejected):
            await ex.place_market_order(SYMBOL, "sell", 1)
        await ex.nija_guard.aclose()

    asyncio.run(main())
    assert len(inner.sent) == 2 and inner.held() == 1


def test_lined_up_race_many_threads_no_double_sell() -> None:
    """The first exit is held inside the broker call while 16 others arrive."""
    broker = HouseBroker()
    ex = guarded(broker)
    inside, go_on = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert go_on.wait(10)

    broker.gate = hold
    outcomes: list[str] = []
    first = threading.Thread(
        target=lambda: outcomes.append(str(ex.place_market_order(SYMBOL, "sell", 1)["status"]))
    )
    first.start()
    assert inside.wait(10)
    barrier = threading.Barrier(16)

    def second() -> None:
        barrier.wait()
        try:
            ex.place_market_order(SYMBOL, "sell", 1)
            outcomes.append("sold")
        except nija_guard.ExitInProgress:
            outcomes.append("refused")

    others = [threading.Thread(target=second) for _ in range(16)]
    for t in others:
        t.start()
    for t in others:
        t.join(10)
    go_on.set()
    first.join(10)
    assert sorted(outcomes) == ["FILLED"] + ["refused"] * 16
    assert len(broker.sent) == 1 and broker.held() == 0
    assert ex.nija_guard.locked_symbols() == []
    ex.nija_guard.close()


# -- the guide ----------------------------------------------------------------------------
def test_the_adapter_guide_runs() -> None:
    """docs/adapters.md's example, block after block, as written."""
    import re
    from pathlib import Path

    guide = Path(__file__).resolve().parent.parent / "docs" / "adapters.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) == 3
    namespace: dict[str, Any] = {"__name__": "adapters_guide"}
    for block in blocks:
        exec(compile(block, str(guide), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["NIJA"].name == "nija"
    assert len(namespace["raw"].sent) == 1
