"""What the per-exit CPU work relies on: ids, number conversions, the floor, the caches.

Each fast path here replaced slower code; these tests hold it to the old
behaviour (or to the property that matters) on the inputs where they could differ.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import random
import threading
from decimal import ROUND_DOWN, Context, Decimal
from unittest import mock

import ccxt
import pytest

from nija_guard._adapter import _normalize_side
from nija_guard._book import LRU
from nija_guard._model import (
    _FLOAT_DECIMALS,
    _FLOAT_DECIMALS_MAX,
    NO_PARAMS,
    Exit,
    MarketInfo,
    Outcome,
    check_amount,
    make_exit,
    to_decimal,
    unique_id,
)


def test_make_exit_builds_the_exit_the_dataclass_builds() -> None:
    """make_exit fills __dict__ itself: a field added to Exit must be added there too."""
    made = make_exit("e1", "acct", "BTC/USDT", "sell", "market", "m", 0.5, None, NO_PARAMS, 1.0)
    expected = Exit("e1", "acct", "BTC/USDT", "sell", "market", "m", 0.5, None, NO_PARAMS)
    expected = dataclasses.replace(expected, created_at=1.0)
    assert made == expected
    assert list(vars(made)) == [f.name for f in dataclasses.fields(Exit)]
    evolved = made.evolve(outcome=Outcome.FILLED, filled=0.5)
    assert evolved == dataclasses.replace(expected, outcome=Outcome.FILLED, filled=0.5)
    assert made.outcome is None  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.amount = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        made.evolve(amout=1.0)


class _Side(str, enum.Enum):
    SELL = "sell"


class _Text(str):
    pass


@pytest.mark.parametrize("side", ["sell", "SELL", " Sell ", _Side.SELL, _Text("sell")])
def test_a_side_comes_out_a_plain_lowercase_str(side: object) -> None:
    """The fast path takes only a plain "sell"/"buy"; an enum member or a str subclass
    equal to one goes the long way, so ccxt never gets an object that prints otherwise."""
    normalized = _normalize_side(side, "create_order")
    assert normalized == "sell"
    assert type(normalized) is str


@pytest.mark.parametrize("side", [mock.ANY, None, 1, "short", b"sell"])
def test_a_side_that_is_not_buy_or_sell_is_refused(side: object) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="side must be"):
        _normalize_side(side, "create_order")


def test_unique_ids_never_repeat_across_threads() -> None:
    threads, per_thread = 8, 5_000
    barrier = threading.Barrier(threads)
    seen: list[list[str]] = [[] for _ in range(threads)]

    def draw(slot: int) -> None:
        barrier.wait()  # all threads draw at once
        seen[slot].extend(unique_id() for _ in range(per_thread))

    workers = [threading.Thread(target=draw, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ids = [i for chunk in seen for i in chunk]
    assert len(set(ids)) == threads * per_thread
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_ids_of_its_own() -> None:
    before = unique_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave without pytest's cleanup
        os.write(write, unique_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = unique_id()
    # Same counter position, different prefix: the child would otherwise repeat ours.
    assert child[:16] != parent[:16]
    assert before[:16] == parent[:16]


def test_the_id_counter_rolling_over_draws_a_new_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    prefix, _ = unique_id._state
    monkeypatch.setattr(unique_id, "_state", (prefix, itertools.count(0xFFFFFFFF)))
    last = unique_id()
    after = unique_id()
    assert last == prefix + "ffffffff"
    assert after[:16] != prefix and after.endswith("00000000")


def test_float_conversion_cache_keeps_signs_and_refuses_non_finite() -> None:
    for value in (0.0, -0.0, 0.0, -0.0):
        number = to_decimal(value)
        assert number is not None and str(number) == repr(value)
    for value in (float("nan"), float("inf"), float("-inf")):
        assert to_decimal(value) is None
        assert to_decimal(value) is None  # and again, from wherever it went
    assert to_decimal(0.1 + 0.2) == Decimal("0.30000000000000004")
    assert to_decimal(True) is None and to_decimal(None) is None


def test_float_conversion_cache_is_bounded() -> None:
    for i in range(_FLOAT_DECIMALS_MAX * 2):
        assert to_decimal(i + 0.5) == Decimal(str(i + 0.5))
    assert len(_FLOAT_DECIMALS) <= _FLOAT_DECIMALS_MAX


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), -float("inf"), True])
def test_check_amount_fast_path_refuses_what_it_always_refused(value: float) -> None:
    with pytest.raises(ValueError):
        check_amount(value)


@pytest.mark.parametrize(
    "step", ["0.0001", "1", "0.001", "0.00010", "10", "0.5", "0.25", "1E+1", "5E-7"]
)
def test_floor_amount_equals_the_division_floor_and_never_rounds_up(step: str) -> None:
    rng = random.Random(step)
    market = MarketInfo("X/Y", "X", "Y", Decimal(step), None, None)
    for _ in range(3_000):
        if rng.random() < 0.7:
            amount = Decimal(repr(rng.uniform(0, 10_000)))
        else:
            amount = Decimal(rng.randint(1, 10**9)) / Decimal(10) ** rng.randint(0, 12)
        expected = (amount / Decimal(step)).to_integral_value(rounding=ROUND_DOWN) * Decimal(step)
        floored = market.floor_amount(amount)
        assert floored == expected
        assert floored <= amount


@pytest.mark.parametrize("step", ["0.0001", "1E-18", "0.00025"])
def test_floor_amount_of_more_digits_than_the_default_context_holds(step: str) -> None:
    """1e12 coins at a 1e-18 step is 31 digits: the default 28-digit context used to
    round the division to nearest, which could round the amount *up*."""
    market = MarketInfo("X/Y", "X", "Y", Decimal(step), None, None)
    for text in ("123456789012345678901234567.891", "999999999999.999999999999999999", "1e30"):
        amount = Decimal(text)
        floored = market.floor_amount(amount)
        assert floored <= amount
        assert amount - floored < Decimal(step)
        assert Context(prec=400).remainder(floored, Decimal(step)) == 0
    absurd = Decimal("1e5000")  # more digits between it and its step than any balance
    assert market.floor_amount(absurd) == 0


def test_a_fee_limit_is_divided_toward_zero() -> None:
    from nija_guard._model import divide_down

    # 28 digits to nearest would make this exactly 1: a floor at step 1 would then
    # allow one whole coin more than holdings net of the fee.
    sellable = Decimal("1.00099999999999999999999999995996")  # 1.001 * (1 - 4e-29)
    limit = divide_down(sellable, Decimal("1.001"))
    assert limit < 1
    assert sellable / Decimal("1.001") == 1  # what the default context says
    market = MarketInfo("X/Y", "X", "Y", Decimal("1"), None, None)
    assert market.floor_amount(limit) == 0


def test_lru_get_forgets_expired_entries_without_a_lock_on_hits() -> None:
    cache: LRU[str, int] = LRU(size=10, ttl=5.0)
    assert not cache
    cache.put("a", 1, now=100.0)
    assert cache and cache.get("a", now=104.0) == 1
    assert cache.get("a", now=106.0) is None
    assert not cache  # the expired entry is gone, not merely hidden
    cache.put("b", 2, now=100.0)
    cache.refresh("b", 2, now=100.1)  # same value, fresh: left as it was
    assert cache.get("b", now=104.9) == 2  # its time is the put's: expires up to ttl/10 early
    cache.refresh("b", 3, now=101.0)  # a new value is always put
    assert cache.get("b", now=101.0) == 3
