"""The nija-guard pytest plugin: fixtures to test a bot with the guard in a few lines.

Installed with nija-guard (entry point ``pytest11``). It imports nothing heavy
until a fixture is used, so it costs a test session nothing otherwise.

Fixtures:

- ``paper_exchange``: a :class:`nija_guard.testing.PaperExchange` holding 1 BTC,
  10 ETH and 100,000 USDT (markets BTC/USDT and ETH/USDT);
- ``hook_recorder``: a :class:`nija_guard.testing.HookRecorder`;
- ``guarded_exchange``: ``paper_exchange`` behind ``nija_guard.guard`` with the
  recorder plugged in, entry-point plugins off, and short timings; closed after
  the test.

::

    def test_my_bot_never_double_sells(guarded_exchange, hook_recorder):
        my_bot.close_position(guarded_exchange, "BTC/USDT")
        my_bot.close_position(guarded_exchange, "BTC/USDT")
        assert len(hook_recorder.named("order_settled")) == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Quick enough for tests; correctness never depends on these timings.
FAST_OPTIONS: dict[str, Any] = {
    "poll_interval": 0.02,
    "poll_max_interval": 0.1,
    "max_polls_per_second": 1000.0,
    "absent_after": 0.05,
    "reconcile_timeout": 2.0,
    "confirm_timeout": 2.0,
    "load_entrypoints": False,
}


@pytest.fixture
def paper_exchange() -> Any:
    from nija_guard.testing import PaperExchange

    return PaperExchange(balances={"BTC": 1, "ETH": 10, "USDT": 100_000})


@pytest.fixture
def hook_recorder() -> Any:
    from nija_guard.testing import HookRecorder

    return HookRecorder()


@pytest.fixture
def guarded_exchange(paper_exchange: Any, hook_recorder: Any) -> Iterator[Any]:
    import nija_guard

    exchange = nija_guard.guard(paper_exchange, plugins=[hook_recorder], **FAST_OPTIONS)
    yield exchange
    exchange.nija_guard.close()
