"""Every order-entry method of real ccxt classes is guarded; none can sell around the guard."""

from __future__ import annotations

import re
from typing import Any

import ccxt
import ccxt.pro
import pytest

import nija_guard
from nija_guard._adapter import CcxtAdapter
from nija_guard._guard import GuardedClient, proxy_class
from nija_guard.testing import PaperExchange

EXCHANGES = [
    "binance",
    "kraken",
    "bybit",
    "okx",
    "kucoin",
    "coinbase",
    "bitget",
    "gate",
    "mexc",
    "hyperliquid",
    "deribit",
    "krakenfutures",
]

# Independent of the adapter's own rule: anything that looks like it could
# place, amend or close with an order. A name matching this must either be
# guarded or be listed below as a pure builder that sends nothing.
LOOKS_LIKE_ORDER_ENTRY = re.compile(
    r"^(create|edit|close|place|amend|modify|replace|submit)_.*(order|position|trade)"
)
KNOWN_BUILDERS = re.compile(
    r"(_request|_appendix|_nonce|_settlement_data|_id_from_parts|^create_ccxt_trade_id)$"
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _client_classes() -> list[tuple[str, type]]:
    classes = [(f"ccxt.{n}", getattr(ccxt, n)) for n in EXCHANGES]
    classes += [(f"ccxt.pro.{n}", getattr(ccxt.pro, n)) for n in EXCHANGES if hasattr(ccxt.pro, n)]
    return classes


@pytest.mark.parametrize(
    ("label", "cls"), _client_classes(), ids=[label for label, _ in _client_classes()]
)
def test_every_order_entry_method_is_guarded(label: str, cls: type) -> None:
    cls()  # ccxt creates the camelCase aliases on first construction
    guarded = proxy_class(cls)
    entries = CcxtAdapter().entry_points(cls)
    unguarded = []
    for attr in dir(cls):
        if attr.startswith("_"):
            continue
        func = getattr(cls, attr, None)
        if not callable(func):
            continue
        name = getattr(func, "__name__", attr)
        for candidate in {name, _snake(attr)}:
            looks = LOOKS_LIKE_ORDER_ENTRY.match(candidate) and not KNOWN_BUILDERS.search(candidate)
            if looks and (attr not in vars(guarded) or attr not in entries):
                unguarded.append(attr)
    assert unguarded == [], (
        f"{label}: order-entry methods the proxy does not guard: {sorted(set(unguarded))}"
    )
    # And the guarded ones are understood: none falls back to 'unsupported'.
    kinds = {e.kind for e in entries.values()}
    assert "unsupported" not in kinds
    assert {
        "create_order",
        "createOrder",
        "create_market_sell_order",
        "createMarketSellOrder",
        "edit_order",
        "close_position",
    } <= set(entries)


def test_every_exchange_class_has_its_entry_points_classified() -> None:
    adapter = CcxtAdapter()
    for exchange_id in ccxt.exchanges:
        for attr, entry in adapter.entry_points(getattr(ccxt, exchange_id)).items():
            assert entry.kind != "unsupported", f"{exchange_id}.{attr}"


SELL_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("create_order", ("BTC/USDT", "market", "sell", 0.01)),
    ("createOrder", ("BTC/USDT", "market", "sell", 0.01)),
    ("create_market_sell_order", ("BTC/USDT", 0.01)),
    ("createMarketSellOrder", ("BTC/USDT", 0.01)),
    ("create_limit_sell_order", ("BTC/USDT", 0.01, 40_000)),
    ("createLimitSellOrder", ("BTC/USDT", 0.01, 40_000)),
    ("create_market_order", ("BTC/USDT", "sell", 0.01)),
    ("create_limit_order", ("BTC/USDT", "sell", 0.01, 40_000)),
    ("create_stop_loss_order", ("BTC/USDT", "market", "sell", 0.01, None, 60_000)),
    ("create_take_profit_order", ("BTC/USDT", "limit", "sell", 0.01, 40_000, 40_000)),
    ("create_trigger_order", ("BTC/USDT", "market", "sell", 0.01, None, 60_000)),
    ("create_stop_order", ("BTC/USDT", "market", "sell", 0.01, None, 60_000)),
    ("create_stop_limit_order", ("BTC/USDT", "sell", 0.01, 40_000, 60_000)),
    ("create_stop_market_order", ("BTC/USDT", "sell", 0.01, 60_000)),
    (
        "create_order_with_take_profit_and_stop_loss",
        ("BTC/USDT", "market", "sell", 0.01, None, None, 40_000),
    ),
    ("create_post_only_order", ("BTC/USDT", "limit", "sell", 0.01, 90_000)),
    ("create_market_sell_order_with_cost", ("BTC/USDT", 600)),
    ("create_market_order_with_cost", ("BTC/USDT", "sell", 600)),
    (
        "create_orders",
        ([{"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.01}],),
    ),
]


@pytest.mark.parametrize(("method", "args"), SELL_CALLS, ids=[m for m, _ in SELL_CALLS])
def test_each_sell_path_goes_through_the_guard(
    make_guard: Any, recorder: Any, method: str, args: tuple[Any, ...]
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    getattr(ex, method)(*args)
    assert len(recorder.named("exit_requested")) == 1, method
    orders = paper.sell_orders()
    assert len(orders) == 1
    assert orders[0].client_order_id and orders[0].client_order_id.startswith("njg")


def test_helpers_that_venue_lacks_are_still_guarded(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    """create_reduce_only_order and close_position raise NotSupported on spot, through the guard."""
    with pytest.raises(ccxt.NotSupported):
        ex.create_reduce_only_order("BTC/USDT", "market", "sell", 0.1)
    with pytest.raises(ccxt.NotSupported):
        ex.close_position("BTC/USDT")
    assert len(recorder.named("exit_requested")) == 2
    assert ex.nija_guard.locked_symbols() == []


def test_edit_of_a_guarded_sell_keeps_the_exit_locked(
    ex: Any, paper: PaperExchange, recorder: Any
) -> None:
    first = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    edited = ex.edit_order(first["id"], "BTC/USDT", "limit", "sell", 0.8, 95_000)
    assert edited["status"] == "open" and edited["amount"] == pytest.approx(0.8)
    assert (
        edited["clientOrderId"].startswith("njg")
        and edited["clientOrderId"] != first["clientOrderId"]
    )
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    # an edit clamps too: 0.8 resting + 0.2 free is all there is
    bigger = ex.edit_order(edited["id"], "BTC/USDT", "limit", "sell", 5, 95_000)
    assert bigger["amount"] == pytest.approx(1.0)
    ex.cancel_order(bigger["id"], "BTC/USDT")
    ex.nija_guard.poll()
    assert ex.nija_guard.locked_symbols() == []


def test_convert_trades_are_refused_not_unguarded(ex: Any) -> None:
    with pytest.raises(nija_guard.GuardError, match="unguarded"):
        ex.create_convert_trade("quote-1", "BTC", "USDT", 0.1)


def test_proxy_class_is_cached_and_thin() -> None:
    assert proxy_class(PaperExchange) is proxy_class(PaperExchange)
    assert issubclass(proxy_class(PaperExchange), GuardedClient)
    # Passthrough is a C property reading the client's attribute, not a Python wrapper.
    passthrough = vars(proxy_class(PaperExchange))["fetch_ticker"]
    assert isinstance(passthrough, property)
    assert type(passthrough.fget).__name__ == "attrgetter"


def test_a_rejected_edit_gives_the_lock_back_to_the_resting_order(
    ex: Any, paper: PaperExchange
) -> None:
    resting = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    paper.inject("edit_order", ccxt.InvalidOrder("edit rejected"))
    with pytest.raises(ccxt.InvalidOrder):
        ex.edit_order(resting["id"], "BTC/USDT", "limit", "sell", 0.5, 95_000)
    assert paper.venue.get(resting["id"]).status == "open"
    assert ex.nija_guard.locked_symbols() == ["BTC/USDT"]  # the resting order still holds it
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.1)
    paper.set_price("BTC/USDT", 91_000)
    ex.fetch_order(resting["id"], "BTC/USDT")
    assert ex.nija_guard.locked_symbols() == []
    lease_prefix = ex.nija_guard.account + "/"
    assert ex.nija_guard.backend.leases(lease_prefix) == []


def test_compatibility_table_is_current() -> None:
    """docs/compatibility.md's table is what the enumeration gives for the installed ccxt."""
    from pathlib import Path

    from nija_guard._compat import rows, table

    assert all(not row["unguarded"] for row in rows()), "an order-entry method is not guarded"
    doc = (Path(__file__).resolve().parent.parent / "docs" / "compatibility.md").read_text()
    start = doc.index("<!-- generated: python -m nija_guard._compat -->") + len(
        "<!-- generated: python -m nija_guard._compat -->\n"
    )
    end = doc.index("<!-- end generated -->")
    assert doc[start:end] == table(), "regenerate the table: python -m nija_guard._compat"
