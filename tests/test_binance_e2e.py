"""End to end: a real, unmodified ccxt.binance through the guard, against the loopback fake.

ccxt's own request building, HMAC signing and reply parsing run on every call;
the fake checks each signature and logs each request, which is what these
tests assert on: what actually went over the wire.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder, assert_no_leaks, wait_until
from fakes.binance_spot import FakeBinance

import nija_guard

ORDER = "/api/v3/order"


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    # Each test its own account: guards of one account in one process share locks.
    with FakeBinance(
        api_key=f"key-{uuid.uuid4().hex}", balances={"BTC": 1, "ETH": 10, "USDT": 1000}
    ) as server:
        yield server
    assert server.unknown == []  # ccxt never asked for something the fake does not serve
    assert server.server_errors == []


@pytest.fixture
def binance(fake: FakeBinance, recorder: Recorder) -> Iterator[Any]:
    ex = nija_guard.guard(fake.client(), **FAST, plugins=[recorder])
    yield ex
    ex.nija_guard.close()


def posted(fake: FakeBinance) -> list[Any]:
    return [r for r in fake.requests_to("POST", ORDER) if r.status is not None or r.fault]


def test_is_a_real_binance_client(binance: Any) -> None:
    assert isinstance(binance, ccxt.binance)
    assert binance.id == "binance"
    assert binance.nija_guard.account.startswith("binance:")
    assert binance.apiKey not in binance.nija_guard.account  # a digest, never the key


def test_clamp_client_order_id_and_refresh_on_the_wire(
    binance: Any, fake: FakeBinance, recorder: Recorder
) -> None:
    order = binance.create_market_sell_order("BTC/USDT", 2.5)  # holds 1
    assert order["status"] == "closed" and order["filled"] == pytest.approx(1)
    [post] = fake.requests_to("POST", ORDER)
    assert post.signed and post.params["side"] == "SELL" and post.params["type"] == "MARKET"
    assert post.params["quantity"] == "1"
    assert post.params["newClientOrderId"].startswith("njg")
    assert post.params["newClientOrderId"] == order["clientOrderId"]
    paths = [r.path for r in fake.requests]
    assert paths.index("/api/v3/account") < paths.index(ORDER)  # balance refreshed first
    assert recorder.named("quantity_clamped")[0]["requested_amount"] == 2.5
    assert [f["symbol"] for f in recorder.named("position_flushed")] == ["BTC/USDT"]
    with pytest.raises(nija_guard.NothingToSell):
        binance.create_market_sell_order("BTC/USDT", 1)
    assert len(fake.requests_to("POST", ORDER)) == 1
    assert_no_leaks(binance)


def test_uppercase_side_is_guarded(binance: Any, fake: FakeBinance) -> None:
    binance.create_order("ETH/USDT", "market", "SELL", 1)
    [post] = fake.requests_to("POST", ORDER)
    assert post.params["newClientOrderId"].startswith("njg")


def test_two_threads_one_order(binance: Any, fake: FakeBinance) -> None:
    binance.load_markets()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def sell() -> None:
        barrier.wait()
        try:
            binance.create_market_sell_order("BTC/USDT", 1)
            outcomes.append("sold")
        except (nija_guard.ExitInProgress, nija_guard.NothingToSell) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=sell) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("sold") == 1 and len(outcomes) == 8
    assert len(fake.requests_to("POST", ORDER)) == 1
    assert_no_leaks(binance)


def test_resting_limit_sell_holds_the_lock_until_filled(
    binance: Any, fake: FakeBinance, recorder: Recorder
) -> None:
    order = binance.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    assert order["status"] == "open"
    with pytest.raises(nija_guard.ExitInProgress):
        binance.create_market_sell_order("BTC/USDT", 0.5)
    assert len(fake.requests_to("POST", ORDER)) == 1
    fake.venue.set_price("BTC/USDT", 61_000)
    wait_until(lambda: binance.nija_guard.locked_symbols() == [])  # the tracker polled GET /order
    assert fake.requests_to("GET", ORDER)
    assert recorder.named("order_settled")[0]["exit"].outcome == nija_guard.Outcome.FILLED
    assert_no_leaks(binance)


@pytest.mark.parametrize(
    ("fault", "status"),
    [("drop_after", 500), ("error_after", 503), ("error_after", 504), ("bad_json_after", 200)],
    ids=["connection-dropped", "503", "504-timeout", "cut-off-reply"],
)
def test_ghost_order_is_reconciled_by_client_id(
    binance: Any, fake: FakeBinance, recorder: Recorder, fault: str, status: int
) -> None:
    binance.load_markets()
    fake.inject("POST", ORDER, fault, status=status)
    order = binance.create_market_sell_order("BTC/USDT", 0.4)
    assert order["status"] == "closed" and order["filled"] == pytest.approx(0.4)
    assert len(fake.venue.all_orders()) == 1  # one order, never two
    lookups = [r for r in fake.requests_to("GET", ORDER) if "origClientOrderId" in r.params]
    assert lookups and lookups[0].params["origClientOrderId"] == order["clientOrderId"]
    # A cut-off 200 is looked up by client id at once: found, it never was unknown.
    assert len(recorder.named("outcome_unknown")) == (0 if fault == "bad_json_after" else 1)
    assert_no_leaks(binance)


@pytest.mark.parametrize("fault", ["drop_before", "error_before"])
def test_request_that_never_arrived_is_safe_to_retry(
    binance: Any, fake: FakeBinance, fault: str
) -> None:
    binance.load_markets()
    fake.inject("POST", ORDER, fault, status=503)
    with pytest.raises(ccxt.NetworkError) as raised:
        binance.create_market_sell_order("BTC/USDT", 0.4)
    assert "safe to retry" in " ".join(getattr(raised.value, "__notes__", []))
    assert fake.venue.all_orders() == []
    assert_no_leaks(binance)
    binance.create_market_sell_order("BTC/USDT", 0.4)
    assert len(fake.venue.all_orders()) == 1


def test_rate_limit_is_a_refusal_not_an_unknown(
    binance: Any, fake: FakeBinance, recorder: Recorder
) -> None:
    binance.load_markets()
    fake.inject("POST", ORDER, "error_before", status=429)
    with pytest.raises(ccxt.DDoSProtection):
        binance.create_market_sell_order("BTC/USDT", 0.4)
    assert recorder.named("outcome_unknown") == []
    assert fake.requests_to("GET", ORDER) == []
    assert_no_leaks(binance)


def test_exchange_side_insufficient_funds(fake: FakeBinance, recorder: Recorder) -> None:
    """The account endpoint says 1 BTC, the matching engine has less: Binance refuses."""
    ex = nija_guard.guard(fake.client(), **FAST, plugins=[recorder])
    try:
        ex.load_markets()
        ex.fetch_balance()
        fake.venue.balance_lag = 60  # the account endpoint now trails by a minute
        fake.venue.place("BTC/USDT", "sell", "market", "0.9")  # sold elsewhere
        with pytest.raises(ccxt.InsufficientFunds):
            ex.create_market_sell_order("BTC/USDT", 1)
        assert recorder.named("order_settled")[-1]["exit"].outcome == nija_guard.Outcome.REJECTED
        assert_no_leaks(ex)
    finally:
        ex.nija_guard.close()


def test_dust_on_binance_sends_nothing(recorder: Recorder) -> None:
    with FakeBinance(api_key="dust-key", balances={"BTC": "0.00005", "USDT": 0}) as fake:
        ex = nija_guard.guard(fake.client(), **FAST, plugins=[recorder])
        with pytest.raises(nija_guard.DustPosition):
            ex.create_market_sell_order("BTC/USDT", 1)
        assert fake.requests_to("POST", ORDER) == []
        assert len(recorder.named("dust_detected")) == 1
        ex.nija_guard.close()


def test_replace_cancels_over_the_wire(fake: FakeBinance, recorder: Recorder) -> None:
    ex = nija_guard.guard(fake.client(), **FAST, plugins=[recorder], on_conflict="replace")
    try:
        tp = ex.create_limit_sell_order("BTC/USDT", 1, 90_000)
        fake.venue.fill(tp["id"], "0.25")
        stop = ex.create_market_sell_order("BTC/USDT", 1)
        assert fake.requests_to("DELETE", ORDER)
        assert stop["filled"] == pytest.approx(0.75)
        assert fake.venue.holdings("BTC") == 0
        assert_no_leaks(ex)
    finally:
        ex.nija_guard.close()
