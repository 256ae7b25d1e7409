from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import nija_guard
from nija_guard.testing import PaperExchange

# Tests never load plugins installed in the environment.
os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

# Small timings keep fault tests quick; correctness never depends on them.
FAST = {
    "poll_interval": 0.02,
    "poll_max_interval": 0.1,
    "max_polls_per_second": 1000.0,
    "absent_after": 0.05,
    "reconcile_timeout": 2.0,
    "confirm_timeout": 2.0,
    "load_entrypoints": False,
}


class Recorder:
    """A plugin that records every hook call: (hook name, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.event = threading.Condition(self.lock)

    def _record(self, name: str, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append((name, kwargs))
            self.event.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [kw for n, kw in self.calls if n == f"nija_guard_{name}"]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.lock:
            self.event.wait_for(
                lambda: sum(1 for n, _ in self.calls if n == f"nija_guard_{name}") >= count, timeout
            )
        found = self.named(name)
        assert len(found) >= count, f"{name}: expected {count}, got {len(found)}"
        return found

    @nija_guard.hookimpl
    def nija_guard_exit_requested(self, exit: Any) -> None:
        self._record("nija_guard_exit_requested", exit=exit)

    @nija_guard.hookimpl
    def nija_guard_exit_blocked(self, exit: Any, holder: Any, reason: str) -> None:
        self._record("nija_guard_exit_blocked", exit=exit, holder=holder, reason=reason)

    @nija_guard.hookimpl
    def nija_guard_balance_refreshed(
        self, exit: Any, free: float, total: float, sellable: float, balance_timestamp: Any
    ) -> None:
        self._record(
            "nija_guard_balance_refreshed",
            exit=exit,
            free=free,
            total=total,
            sellable=sellable,
            balance_timestamp=balance_timestamp,
        )

    @nija_guard.hookimpl
    def nija_guard_quantity_clamped(
        self, exit: Any, requested_amount: float, amount: float, sellable: float, reason: str
    ) -> None:
        self._record(
            "nija_guard_quantity_clamped",
            exit=exit,
            requested_amount=requested_amount,
            amount=amount,
            sellable=sellable,
            reason=reason,
        )

    @nija_guard.hookimpl
    def nija_guard_dust_detected(self, exit: Any, amount: float, reason: str) -> None:
        self._record("nija_guard_dust_detected", exit=exit, amount=amount, reason=reason)

    @nija_guard.hookimpl
    def nija_guard_order_submitted(self, exit: Any, order: Any) -> None:
        self._record("nija_guard_order_submitted", exit=exit, order=order)

    @nija_guard.hookimpl
    def nija_guard_outcome_unknown(self, exit: Any, error: BaseException) -> None:
        self._record("nija_guard_outcome_unknown", exit=exit, error=error)

    @nija_guard.hookimpl
    def nija_guard_order_filled(self, exit: Any, order: Any, amount: float) -> None:
        self._record("nija_guard_order_filled", exit=exit, order=order, amount=amount)

    @nija_guard.hookimpl
    def nija_guard_order_settled(self, exit: Any, order: Any) -> None:
        self._record("nija_guard_order_settled", exit=exit, order=order)

    @nija_guard.hookimpl
    def nija_guard_position_flushed(self, exit: Any, symbol: str) -> None:
        self._record("nija_guard_position_flushed", exit=exit, symbol=symbol)


@pytest.fixture
def paper() -> PaperExchange:
    return PaperExchange(balances={"BTC": 1, "ETH": 10, "USDT": 100_000})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_guard(recorder: Recorder) -> Iterator[Any]:
    made: list[Any] = []

    def make(client: Any, **options: Any) -> Any:
        opts = {**FAST, "plugins": [recorder], **options}
        proxy = nija_guard.guard(client, **opts)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.nija_guard.close()


@pytest.fixture
def ex(paper: PaperExchange, make_guard: Any) -> Any:
    """A guarded paper exchange with a hook recorder."""
    return make_guard(paper)


def assert_no_leaks(proxy: Any) -> None:
    """No close lock held, no lease held, nothing tracked."""
    g = proxy.nija_guard
    assert g.locked_symbols() == []
    assert g.backend.leases(g.account + "/") == []
    assert g.status()["in_flight"] == []


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait for the guard's tracker; the bound is generous, the condition exact."""
    done = threading.Event()
    deadline = timeout
    step = 0.005
    waited = 0.0
    while not predicate():
        if waited >= deadline:
            raise AssertionError("condition not reached")
        done.wait(step)
        waited += step
