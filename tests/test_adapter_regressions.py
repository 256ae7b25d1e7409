"""Defects a review of the adapter seam found (4773e50), each pinned by the test that proved it.

Each docstring names the defect as it was found; all are fixed.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from conftest import FAST, wait_until
from fakes.alpaca_trading import FakeAlpaca
from house_broker import BrokerTimeout, HouseBroker, describe

import nija_guard

SYMBOL = "BTC-USD"


def fetch_house_order(broker: Any, order_id: str, symbol: str | None) -> Any:
    return broker.get_order(order_id)


# ---------------------------------------------------------------------------------------
# 1. close_position ignores the clamp: in ledger mode it sells what the bot does not own.
# ---------------------------------------------------------------------------------------
def test_alpaca_close_position_in_ledger_mode_sells_only_what_the_bot_owns() -> None:
    """Was a defect (_broker.py Broker.submission / kind="close_position"): the engine clamps a
    close_position exit to min(holdings, ledger) but the submission sends the broker's
    close_position(symbol) unchanged, which liquidates the WHOLE position. With
    ownership="ledger" the bot owns 2 of the 10 AAPL shares; the guard sells all 10
    (guarantee 7: never sells what the bot does not own). ccxt's close_position is only for
    derivatives (no ledger there), so this path is new with the Broker/alpaca adapter.
    Expected: the close is sent as a sized sell of the clamped amount (or refused when the
    clamp is smaller than the position)."""
    with FakeAlpaca(positions={"AAPL": 10}, api_key=f"k-{uuid.uuid4().hex}") as fake:
        ex = nija_guard.guard(fake.client(), **FAST, ownership="ledger", ledger_seed={"AAPL": 2})
        try:
            ex.close_position("AAPL")
            wait_until(lambda: ex.nija_guard.locked_symbols() == [])
            assert fake.holdings("AAPL") >= 8, f"sold {10 - fake.holdings('AAPL')} of 2 owned"
        finally:
            ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 2. Without client ids, a resting order whose reply was lost is declared "never placed".
# ---------------------------------------------------------------------------------------
def test_without_client_ids_a_lost_resting_sell_is_not_declared_never_placed() -> None:
    """Was a defect (_engine.py _reconcile via the Broker no-client-id path; docs/adapters.md
    "Without client order ids"): with no client id the only evidence is "did holdings
    fall". A resting limit sell reserves but does not lower holdings, so after a lost reply
    the guard settles it NOT_PLACED, frees the symbol and hands the bot the broker's
    timeout with "it is safe to retry" - while the order rests on the broker. That is an
    unknown outcome read as a refusal (double-sell risk; guarantee 2 and 6). The open-orders
    lookup the description provides even shows the untracked sell.
    Expected: the exit stays UNKNOWN (OutcomeUnknown, symbol locked) while an open sell
    order of the symbol it cannot account for exists."""
    broker = HouseBroker()
    ex = nija_guard.guard(broker, adapter=describe(client_ids=False), **FAST)
    try:
        broker.fail_next("place_limit_order", "timeout_after")  # accepted, reply lost
        with pytest.raises((BrokerTimeout, nija_guard.OutcomeUnknown)) as raised:
            ex.place_limit_order(SYMBOL, "sell", 1, 70_000)
        assert len(broker.get_open_orders(SYMBOL)) == 1  # the order rests on the broker
        assert isinstance(raised.value, nija_guard.OutcomeUnknown), repr(raised.value)
        assert ex.nija_guard.locked_symbols() != []
    finally:
        ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 3. A cancel through the proxy is invisible to a Broker adapter: the stop-loss is refused.
# ---------------------------------------------------------------------------------------
def test_house_broker_stop_loss_right_after_cancelling_the_take_profit_is_admitted() -> None:
    """Was a defect (_broker.py Broker.observed returns {}): on ccxt, cancel_order through the
    proxy is observed and frees the symbol at once. A Broker cannot declare which of its
    methods cancel/fetch orders, so the guard only learns of the cancel at its next poll
    (up to poll_max_interval, 10 s by default). The most common exit pattern - cancel the
    resting take-profit, sell at market - gets ExitInProgress: the emergency sell is refused.
    Expected: the cancel through the proxy settles the resting exit at once."""
    broker = HouseBroker()
    ex = nija_guard.guard(
        broker, adapter=describe(), **{**FAST, "poll_interval": 5, "poll_max_interval": 10}
    )
    try:
        take_profit = ex.place_limit_order(SYMBOL, "sell", 1, 70_000)
        cancelled = ex.cancel_order(take_profit["order_id"])
        assert cancelled["status"] == "CANCELED"
        reply = ex.place_market_order(SYMBOL, "sell", 1)  # was ExitInProgress
        assert reply["status"] == "FILLED"
    finally:
        ex.nija_guard.close()


def test_alpaca_stop_loss_right_after_cancelling_the_take_profit_is_admitted() -> None:
    """Same defect on the built-in alpaca adapter: cancel_order_by_id / cancel_orders /
    get_order_by_id through the proxy teach the guard nothing."""
    with FakeAlpaca(positions={"AAPL": 10}, api_key=f"k-{uuid.uuid4().hex}") as fake:
        ex = nija_guard.guard(
            fake.client(), **{**FAST, "poll_interval": 5, "poll_max_interval": 10}
        )
        try:
            resting = ex.submit_order(
                LimitOrderRequest(
                    symbol="AAPL",
                    qty=10,
                    side=OrderSide.SELL,
                    limit_price=500,
                    time_in_force=TimeInForce.DAY,
                )
            )
            ex.cancel_order_by_id(resting.id)
            ex.submit_order(  # was ExitInProgress
                MarketOrderRequest(
                    symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
                )
            )
        finally:
            ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 4. A broker method with **kwargs: every call with an extra keyword is refused.
# ---------------------------------------------------------------------------------------
class KwargsBroker(HouseBroker):
    """A house broker whose order method forwards extra options (time_in_force...)."""

    def place_market_order(  # type: ignore[override]
        self, symbol: str, side: str, quantity: float, client_id: str | None = None, **options: Any
    ) -> dict[str, Any]:
        self.options_seen = options
        return super().place_market_order(symbol, side, quantity, client_id)


def test_a_method_with_var_keyword_arguments_keeps_working_through_the_guard() -> None:
    """Was a defect (_adapter.py EntryPoint.bind, used by _broker.py Broker.parse_call): bind knows
    only the named parameters, so a described method that takes **options refuses every
    call that passes one (ccxt.BadRequest "unexpected argument") - buys included - though
    guard() accepted the description. The bot "keeps calling its own methods"
    (docs/adapters.md) no longer holds. Expected: extra keywords are passed through (and
    through the resubmission), or guard() refuses the description up front."""
    broker = KwargsBroker()
    ex = nija_guard.guard(broker, adapter=describe(), **FAST)
    try:
        bought = ex.place_market_order(SYMBOL, "buy", 0.1, time_in_force="ioc")
        assert bought["status"] == "FILLED"
        sold = ex.place_market_order(SYMBOL, "sell", 0.1, time_in_force="ioc")
        assert sold["status"] == "FILLED" and broker.options_seen == {"time_in_force": "ioc"}
    finally:
        ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 5. The "every method that can sell must be described" scan misses common names.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["placeOrder", "submitOrder", "closePosition", "send_order"])
def test_an_undescribed_order_method_is_an_error_at_guard_time(name: str) -> None:
    """Was a defect (_broker.py _looks_like_order_entry / Broker.entry_points): the scan only splits
    snake_case and only knows a few verbs, so camelCase order methods (ib_insync's
    IB.placeOrder, many REST wrappers) and send_/new_/execute_ order methods are not
    flagged: guard() succeeds and a sell through them goes unguarded, contrary to
    docs/adapters.md ("one that is neither in orders nor in ignore is an error, because a
    sell through it would go unguarded"). The ccxt adapter handles camelCase aliases.
    Expected: TypeError naming the method."""

    def extra(self: Any, symbol: str, side: str, quantity: float) -> Any:
        return self.place_market_order(symbol, side, quantity)

    broker_type = type("CamelBroker", (HouseBroker,), {name: extra})
    broker = broker_type()
    made: list[Any] = []
    try:
        with pytest.raises(TypeError, match=name):
            made.append(nija_guard.guard(broker, adapter=describe(), **FAST))
        # Today guard() succeeds, and getattr(proxy, name)(SYMBOL, "sell", 1) reaches
        # the broker with no lock, no holdings refresh, no clamp, no client order id.
    finally:
        for ex in made:
            ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 6. alpaca-py with raw_data=True: every order through the guard fails.
# ---------------------------------------------------------------------------------------
def test_alpaca_raw_data_client_is_guarded() -> None:
    """Was a defect (_alpaca.py _rules: ``asset.fractionable``; also _read_request/_rewrite_request
    assume models): TradingClient(raw_data=True) is a supported alpaca-py mode in which
    every method returns dicts. guard() recognizes the client, but market rules read
    attributes of get_asset()'s reply, so each order (sells and buys) dies with the
    AttributeError translated to "unknown" and re-raised raw. Expected: the adapter reads
    dict replies too (it already does for orders and positions), or guard() refuses a
    raw_data client with a clear message."""
    with FakeAlpaca(positions={"AAPL": 10}, api_key=f"k-{uuid.uuid4().hex}") as fake:
        ex = nija_guard.guard(fake.client(raw_data=True), **FAST)
        try:
            order = ex.submit_order(
                MarketOrderRequest(
                    symbol="AAPL", qty=4, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
                )
            )
            assert order["client_order_id"]
            wait_until(lambda: ex.nija_guard.locked_symbols() == [])
            assert fake.holdings("AAPL") == 6
        finally:
            ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 7. fetch_order left out: a resting exit's lock is never released (leaked lock).
# ---------------------------------------------------------------------------------------
def _house_without_fetch_order() -> nija_guard.Broker:
    full = describe()
    return nija_guard.Broker(
        name=f"house-no-fetch-{uuid.uuid4().hex[:6]}",
        orders=full.orders,
        holdings="get_positions",
        fetch_order=fetch_house_order,
        # No fetch_order: only the client-id lookup (and open orders), both optional per docs.
        fetch_order_by_client_id=lambda b, cid, symbol: b.get_order_by_client_id(cid),
        fetch_open_orders=lambda b, symbol: b.get_open_orders(symbol),
        markets={"BTC-USD": {"amount_step": "0.0001", "min_amount": "0.0001"}},
    )


def test_a_filled_resting_exit_is_released_without_fetch_order() -> None:
    """Was a defect (_broker.py Broker._order_lookup; _engine.py poll): once the order id is known
    the tracker polls fetch_order(id); a Broker without fetch_order raises NotSupported
    there instead of falling back to the client-id lookup it HAS, and the poll just
    reschedules. The resting sell fills, yet the symbol stays locked for ever: a leaked
    lock (guarantee 2: "every terminal path releases it"), every later exit refused with
    ExitInProgress. docs/adapters.md presents fetch_order as optional. Expected: polls fall
    back to fetch_order_by_client_id (or open orders), or guard() refuses a description
    that cannot track an order to its end."""
    broker = HouseBroker()
    ex = nija_guard.guard(broker, adapter=_house_without_fetch_order(), **FAST)
    try:
        resting = ex.place_limit_order(SYMBOL, "sell", 1, 70_000)
        broker.fill(resting["order_id"])
        assert broker.held() == 0
        wait_until(lambda: ex.nija_guard.locked_symbols() == [], timeout=3)
    finally:
        ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 8. Holdings are read through float: the clamp can round UP past what is held.
# ---------------------------------------------------------------------------------------
class PreciseBroker:
    """A broker that keeps exact decimal balances (18 decimals, like an ERC-20 token)."""

    def __init__(self, held: Decimal) -> None:
        self.held = held
        self.sent: list[Decimal] = []

    def place_market_order(self, symbol: str, side: str, quantity: Decimal) -> dict[str, Any]:
        if side.lower() == "sell":
            if quantity > self.held:
                raise ValueError(f"insufficient: {quantity} > {self.held}")
            self.sent.append(quantity)
            self.held -= quantity
        return {
            "order_id": str(len(self.sent)),
            "status": "filled",
            "quantity": quantity,
            "filled_quantity": quantity,
            "side": side,
        }

    def get_positions(self) -> dict[str, Decimal]:
        return {"ETH-USD": self.held}


def test_the_clamp_never_exceeds_exact_decimal_holdings() -> None:
    """Was a defect (_broker.py Broker._balance / _quantities: ``float(max(free, ZERO))``): the
    broker reports exact Decimals; the adapter turns them into floats, and the nearest
    float of 0.29999999999999999 is 0.3. With no amount_step described (markets is
    optional), the clamp sends 0.3 for a holding of 0.29999999999999999: more than is held
    (guarantee 5: the amount is min(requested, holdings) rounded DOWN). The broker refuses,
    and a stop-loss of the whole position can never go through. Expected: holdings kept as
    Decimals (or rounded down when converted)."""
    held = Decimal("0.29999999999999999")
    broker = PreciseBroker(held)
    adapter = nija_guard.Broker(
        name=f"precise-{uuid.uuid4().hex[:6]}",
        orders={"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
        holdings="get_positions",
        fetch_order=fetch_house_order,
        errors={ValueError: "insufficient_funds"},
    )
    ex = nija_guard.guard(broker, adapter=adapter, **FAST)
    try:
        ex.place_market_order("ETH-USD", "sell", Decimal(1))
        assert broker.sent == [held]
    finally:
        ex.nija_guard.close()


# ---------------------------------------------------------------------------------------
# 9. Any class with a create_order method is taken for ccxt: guarded by guesswork.
# ---------------------------------------------------------------------------------------
class CreateOrderBroker(HouseBroker):
    """A house broker that happens to name one of its methods create_order."""

    def create_order(
        self, symbol: str, side: str, quantity: float, client_id: str | None = None
    ) -> dict[str, Any]:
        return self.place_market_order(symbol, side, quantity, client_id)

    def market_sell(self, symbol: str, quantity: float) -> dict[str, Any]:
        return self.place_market_order(symbol, "SELL", quantity)


def test_a_house_broker_with_a_create_order_method_is_not_taken_for_ccxt() -> None:
    """Was a defect (_adapter.py CcxtAdapter.handles: ``callable(getattr(client, "create_order"))``;
    _guard.py adapter_for): docs/adapters.md promises "A client nothing recognizes is
    refused at guard() with a TypeError that says to describe it; nothing is guarded by
    guesswork". A house class with a create_order of its own is guarded with the ccxt
    adapter instead: its create_order/place_* calls are refused as unreadable, and
    market_sell (not a ccxt order-entry name) passes through UNGUARDED - no lock, no
    clamp, no client id. Expected: TypeError at guard() (recognize ccxt by
    isinstance(client, ccxt.Exchange) / the unified API surface, not one method name)."""
    broker = CreateOrderBroker()
    made: list[Any] = []
    try:
        with pytest.raises(TypeError, match="Broker"):
            made.append(nija_guard.guard(broker, **FAST))
        # Today guard() picks CcxtAdapter, and proxy.market_sell(SYMBOL, 0.5) reaches the
        # broker unguarded (broker.sent shows it, with client_id None).
    finally:
        for ex in made:
            ex.nija_guard.close()
