"""Review of the hot-path shortcuts and caches: each test pins one guarantee that a
cache or fast path could break. Interleavings use Events, never sleeps."""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from test_regressions import drive_polls, quiet

import nija_guard
from nija_guard import _model
from nija_guard._model import MarketInfo, check_amount, to_decimal
from nija_guard.testing import PaperExchange


class SettledSeen:
    """A plugin that only watches settlements."""

    def __init__(self) -> None:
        self.settled: list[Any] = []

    @nija_guard.hookimpl
    def nija_guard_order_settled(self, exit: Any) -> None:
        self.settled.append(exit)


# =====================================================================================
# Hooks.wants: a plugin registered while another thread fills the cache
# =====================================================================================
class _GatedCaller:
    """A pluggy HookCaller whose first get_hookimpls() (off the main thread) pauses
    after it has read the implementations, before its caller uses the answer."""

    def __init__(self, real: Any, read: threading.Event, go: threading.Event) -> None:
        self._real, self._read, self._go = real, read, go
        self._armed = True

    def get_hookimpls(self) -> Any:
        impls = self._real.get_hookimpls()
        if self._armed and threading.current_thread() is not threading.main_thread():
            self._armed = False
            self._read.set()
            assert self._go.wait(10)
        return impls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real(*args, **kwargs)


def test_a_plugin_registered_while_an_exit_reads_the_hook_cache_is_not_forgotten(
    make_guard: Any,
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, plugins=[])
    ex.load_markets()
    hooks = ex.nija_guard.hooks
    name = "nija_guard_order_settled"
    read, go = threading.Event(), threading.Event()
    setattr(hooks.pm.hook, name, _GatedCaller(getattr(hooks.pm.hook, name), read, go))

    box: dict[str, Any] = {}

    def first_exit() -> None:
        try:
            box["order"] = ex.create_market_sell_order("BTC/USDT", 0.1)
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=first_exit)
    thread.start()
    assert read.wait(10)  # the exit looked: nobody implements order_settled (yet)
    seen = SettledSeen()
    ex.nija_guard.register(seen)  # documented: exchange.nija_guard.register(plugin)
    go.set()
    thread.join(10)
    assert "order" in box, box
    # register() has returned: every exit that *starts* now must reach the plugin.
    ex.create_market_sell_order("BTC/USDT", 0.1)
    assert [e.symbol for e in seen.settled][-1:] == ["BTC/USDT"], (
        "order_settled never fired for an exit started after register(): "
        "Hooks.wants cached a stale False"
    )


# =====================================================================================
# Telemetry: an SDK installed globally after guard() (and after a first exit)
# =====================================================================================
def test_every_sell_gets_a_span_right_after_a_global_sdk_is_installed(
    make_guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider is already set in this process")
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    ex.load_markets()
    ex.create_market_sell_order("BTC/USDT", 0.1)  # no SDK anywhere yet: no span, right

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    trace.set_tracer_provider(provider)  # the bot configures tracing now

    ex.create_market_sell_order("BTC/USDT", 0.1)
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("nija_guard.exit") == 1, (
        f"docs/tracing.md: every call of a sell method gets its own nija_guard.exit span; "
        f"got {names}"
    )


# =====================================================================================
# The resolved-retry cache: one TTL per account, set by whichever guard came last
# =====================================================================================
def test_a_second_guard_of_the_account_does_not_shorten_the_first_guards_retry_window(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = quiet(make_guard(paper, account="shared"))  # retry_window: the default, 120 s
    ex.load_markets()
    # Another part of the program guards its own client of the same account.
    make_guard(PaperExchange(balances={"BTC": 1}), account="shared", retry_window=1.0)

    paper.ghost_next_order()  # the sell executes, its reply is lost ...
    paper.inject("fetch_order", KeyboardInterrupt())  # ... and Ctrl-C hits the lookup
    with pytest.raises(KeyboardInterrupt):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    drive_polls(ex)  # the tracker finds the executed order and settles it
    assert ex.nija_guard.locked_symbols() == []
    assert len(paper.sell_orders()) == 1

    engine = ex.nija_guard.engine
    engine.clock = lambda: time.monotonic() + 5.0  # the bot retries 5 s later
    ex.create_market_sell_order("BTC/USDT", 0.5)  # the very same exit, within 120 s
    assert len(paper.sell_orders()) == 1, "the retry within retry_window sold a second time"


# =====================================================================================
# Proxy: a bot's own subclass helpers must sell through the guard
# =====================================================================================
class _BotPaper(PaperExchange):
    __module__ = "mybot.exchange"  # the bot's own code, not a library's

    # A helper made with functools.partialmethod instead of def.
    market_sell = functools.partialmethod(PaperExchange.create_order, type="market", side="sell")


def test_a_partialmethod_helper_of_the_bots_subclass_sells_through_the_guard(
    make_guard: Any,
) -> None:
    paper = _BotPaper(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    ex.load_markets()
    ex.market_sell(symbol="BTC/USDT", amount=0.1)
    sent = paper.sell_orders()
    assert sent and all(o.client_order_id and o.client_order_id.startswith("njg") for o in sent), (
        "market_sell() reached the exchange without the guard (no guard client order id)"
    )


class _LaterPaper(PaperExchange):
    __module__ = "mybot.exchange2"


def test_a_helper_added_to_the_bots_class_after_guard_sells_through_the_guard(
    make_guard: Any,
) -> None:
    paper = _LaterPaper(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    ex.load_markets()

    def market_sell(self: Any, symbol: str, amount: float) -> Any:
        return self.create_order(symbol, "market", "sell", amount)

    _LaterPaper.market_sell = market_sell  # type: ignore[attr-defined]
    ex.market_sell("BTC/USDT", 0.1)
    sent = paper.sell_orders()
    assert sent and all(o.client_order_id and o.client_order_id.startswith("njg") for o in sent), (
        "the helper's sell reached the exchange without the guard"
    )


# =====================================================================================
# Sound: the float cache, check_amount, the quantize fast path (pins, pass today)
# =====================================================================================
@pytest.mark.parametrize(
    "value", [0.0, -0.0, 1e-8, 0.1, 1e308, -1e-300, 5e-324, 123456.789, 2.0**53 + 2]
)
def test_float_cache_answers_as_the_uncached_conversion(value: float) -> None:
    expect = Decimal(repr(value))
    for _ in range(3):  # cold, then cached
        got = to_decimal(value)
        assert got == expect and str(got) == str(expect)
        assert got.is_signed() == expect.is_signed()


def test_float_cache_refuses_non_finite_and_bad_amounts() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        assert to_decimal(bad) is None
        with pytest.raises(ValueError):
            check_amount(bad)
    for bad in (0.0, -0.0, -1.0, True, None):
        with pytest.raises(ValueError):
            check_amount(bad)
    # Once cached as a positive amount, -x is still refused.
    assert check_amount(0.25) == Decimal("0.25")
    with pytest.raises(ValueError):
        check_amount(-0.25)


def test_float_cache_clear_racing_readers_never_gives_a_wrong_value() -> None:
    values = [random.Random(i).uniform(0, 10) for i in range(_model._FLOAT_DECIMALS_MAX * 2)]
    barrier = threading.Barrier(4)
    wrong: list[float] = []

    def work(offset: int) -> None:
        barrier.wait()
        for v in values[offset:] + values[:offset]:
            if to_decimal(v) != Decimal(repr(v)):
                wrong.append(v)

    threads = [threading.Thread(target=work, args=(i * 997,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.parametrize(
    "step",
    ["1", "0.1", "0.01", "1E-8", "1e-18", "0.5", "5", "10", "1E+1", "0.25", "0.10", "1.0", "0.001"],
)
def test_quantize_fast_path_equals_the_exact_floor(step: str) -> None:
    s = Decimal(step)
    market = MarketInfo("X/Y", "X", "Y", s, None, None)
    plain = MarketInfo("X/Y", "X", "Y", s, None, None)
    object.__setattr__(plain, "_quantum", None)  # force the divide_int path
    rng = random.Random(step)
    amounts = [Decimal("1E+12") + Decimal("1E-18"), Decimal("0.99999999999"), s, s * 3]
    amounts += [Decimal(repr(rng.uniform(0, 1000))) for _ in range(300)]
    amounts += [Decimal(rng.randrange(1, 10**30)).scaleb(-rng.randrange(0, 30)) for _ in range(300)]
    for a in amounts:
        fast, slow = market.floor_amount(a), plain.floor_amount(a)
        assert fast == slow, (step, a, fast, slow)
        assert fast <= a and (fast == 0 or a - fast < s)


# =====================================================================================
# Broker adapter: market rules cached by id(client), a client that is gone included
# =====================================================================================
class _TinyBroker:
    def __init__(self, step: str) -> None:
        self.step = step

    def place_market_order(self, symbol: str, side: str, amount: float) -> Any:
        raise AssertionError("not sent in this test")

    def get_positions(self) -> Any:
        return {}


def test_broker_market_rules_are_never_served_to_another_client_that_reuses_an_id() -> None:
    import gc

    broker = nija_guard.Broker(
        name="tiny",
        orders={"place_market_order": nija_guard.OrderMethod(symbol=0, side=1, amount=2)},
        holdings="get_positions",
        fetch_order=lambda client, order_id, symbol: None,
        # The documented callable form: the rules depend on the client (its account).
        markets=lambda client, symbol: {"amount_step": client.step},
    )
    first = _TinyBroker("0.001")
    assert broker.market_info(first, "BTC-USD").amount_step == Decimal("0.001")
    old_id = id(first)
    del first
    gc.collect()
    keep = []
    second = None
    for _ in range(100_000):  # CPython hands a freed block out again soon
        candidate = _TinyBroker("1")
        if id(candidate) == old_id:
            second = candidate
            break
        keep.append(candidate)
    if second is None:
        pytest.skip("the interpreter never reused the id")
    info = broker.market_info(second, "BTC-USD")
    assert info.amount_step == Decimal("1"), (
        f"a new client got the rules of a dead one (step {info.amount_step}, its own is 1)"
    )
