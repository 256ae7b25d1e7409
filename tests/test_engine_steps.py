"""The engine is sans-I/O: a test drives exits effect by effect and interleaves them at will."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import ccxt
import pytest

import nija_guard
from nija_guard._engine import Call, FetchBalance
from nija_guard.testing import PaperExchange


class Stepper:
    """Runs a flow one effect at a time, performing effects with the guard's own driver."""

    def __init__(self, ex: Any, flow: Generator[Any, Any, Any]) -> None:
        self.driver = ex.nija_guard.driver
        self.flow = flow
        self.pending: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self._advance(None, None)

    def _advance(self, value: Any, error: BaseException | None) -> None:
        try:
            self.pending = self.flow.send(value) if error is None else self.flow.throw(error)
        except StopIteration as stop:
            self.done, self.result = True, stop.value
        except BaseException as exc:
            self.done, self.error = True, exc

    def step(self) -> None:
        try:
            value = self.driver._handlers[type(self.pending)](self.pending)
        except BaseException as exc:
            self._advance(None, exc)
        else:
            self._advance(value, None)

    def run_until(self, stop: Callable[[Any], bool]) -> None:
        while not self.done and not stop(self.pending):
            self.step()

    def finish(self) -> Any:
        while not self.done:
            self.step()
        if self.error is not None:
            raise self.error
        return self.result


def submit(effect: Any) -> bool:
    return isinstance(effect, Call) and effect.purpose == "submit"


def sell(ex: Any, amount: float) -> Generator[Any, Any, Any]:
    entry = ex.nija_guard.adapter.entry_points(type(ex.nija_guard.raw))["create_market_sell_order"]
    return ex.nija_guard.engine.call(entry, ("BTC/USDT", amount), {})


def test_second_exit_interleaved_at_the_submit_is_refused(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    first = Stepper(ex, sell(ex, 1))
    first.run_until(submit)  # the first exit is about to send its order
    assert not first.done and ex.nija_guard.locked_symbols() == ["BTC/USDT"]

    second = Stepper(ex, sell(ex, 1))
    with pytest.raises(nija_guard.ExitInProgress):
        second.finish()
    assert "create_order" not in paper.calls  # nothing was sent by either yet

    order = first.finish()
    assert order["filled"] == pytest.approx(1)
    assert len(paper.sell_orders()) == 1
    assert ex.nija_guard.locked_symbols() == []


def test_balance_refresh_comes_after_admission_and_before_submit(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper, adopt=False)
    flow = Stepper(ex, sell(ex, 0.5))
    kinds = []
    locked_at_refresh = None
    while not flow.done:
        kinds.append(
            type(flow.pending).__name__
            + (f":{flow.pending.purpose}" if isinstance(flow.pending, Call) else "")
        )
        if isinstance(flow.pending, FetchBalance):
            locked_at_refresh = ex.nija_guard.locked_symbols()
        flow.step()
    assert locked_at_refresh == ["BTC/USDT"]  # admitted (close lock held) before the refresh
    assert kinds.index("FetchBalance") < kinds.index("Call:submit")


def test_an_exception_thrown_in_at_the_balance_step_releases_everything(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    flow = Stepper(ex, sell(ex, 0.5))
    flow.run_until(lambda e: isinstance(e, FetchBalance) and e.what == "balance")
    flow._advance(None, ccxt.RequestTimeout("balance timed out"))
    with pytest.raises(ccxt.RequestTimeout):
        flow.finish()  # the flow releases its lease on the way out
    assert ex.nija_guard.locked_symbols() == []
    assert ex.nija_guard.backend.leases(ex.nija_guard.account + "/") == []


def test_an_interrupt_at_the_submit_leaves_the_symbol_unknown_not_free(
    make_guard: Any, recorder: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = make_guard(paper)
    flow = Stepper(ex, sell(ex, 0.5))
    flow.run_until(submit)
    flow._advance(None, KeyboardInterrupt())  # interrupted before the request went out
    assert flow.done  # a cancelled call does no more I/O
    assert isinstance(flow.error, KeyboardInterrupt)
    assert ex.nija_guard.status()["unknown"] == ["BTC/USDT"]
    # The next exit must first prove the interrupted one never reached the exchange.
    order = ex.create_market_sell_order("BTC/USDT", 0.5)
    outcomes = [s["exit"].outcome for s in recorder.named("order_settled")]
    assert outcomes == [nija_guard.Outcome.NOT_PLACED, nija_guard.Outcome.FILLED]
    assert order["filled"] == pytest.approx(0.5)
    assert len(paper.sell_orders()) == 1
