"""Offline check of the freqtrade recipe (docs/recipes/freqtrade.md).

freqtrade's own ``Exchange`` class (its ``Binance`` subclass) with its real
``ccxt.binance`` clients, guarded by ``nija_freqtrade.py`` exactly as the recipe
installs it, against the repository's loopback fake of Binance's REST API
(``tests/fakes/binance_spot.py``). No network. Needs freqtrade, which is not a
dependency of nija-guard; from the repository root, in a separate virtualenv:

    pip install -e . freqtrade
    python docs/recipes/freqtrade_check.py

It exits non-zero if any check fails. Only freqtrade's ``Exchange`` layer runs
here (the methods the bot calls to place, cancel and fetch orders), not the bot's
trading loop.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

import ccxt  # noqa: E402
import freqtrade  # noqa: E402
import nija_freqtrade  # noqa: E402  (the recipe: patches ExchangeResolver.load_exchange)
from fakes.binance_spot import FakeBinance  # noqa: E402
from fakes.ccxt_urls import point_at  # noqa: E402
from freqtrade.enums import RunMode  # noqa: E402
from freqtrade.exceptions import (  # noqa: E402
    InsufficientFundsError,
    InvalidOrderException,
    TemporaryError,
)
from freqtrade.exchange import exchange as ft_exchange  # noqa: E402
from freqtrade.resolvers import ExchangeResolver  # noqa: E402

import nija_guard  # noqa: E402

ORDER = "/api/v3/order"
STOP = {"stoploss": "limit"}
_current: dict[str, FakeBinance] = {}
_init_ccxt = ft_exchange.Exchange._init_ccxt


def _init_pointed_at_the_fake(self: Any, *args: Any, **kwargs: Any) -> Any:
    # The harness's only change to freqtrade: its ccxt clients talk to the loopback fake.
    return point_at(_init_ccxt(self, *args, **kwargs), _current["fake"].url)


ft_exchange.Exchange._init_ccxt = _init_pointed_at_the_fake


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def start(on_conflict: str) -> tuple[FakeBinance, Any]:
    """A fresh fake account (1 BTC) and freqtrade's exchange object, guarded by the recipe."""
    fake = FakeBinance(api_key=f"key-{uuid.uuid4().hex}", balances={"BTC": 1, "USDT": 1000})
    fake.start()
    _current["fake"] = fake
    nija_freqtrade.GUARD_OPTIONS = {"on_conflict": on_conflict}
    client = fake.client_config()
    config = {
        "dry_run": False,
        "runmode": RunMode.LIVE,
        "exchange": {
            "name": "binance",
            "key": client["apiKey"],
            "secret": client["secret"],
            "enable_ws": False,
            "ccxt_config": {"enableRateLimit": False, "options": client["options"]},
        },
    }
    exchange = ExchangeResolver.load_exchange(config, validate=False)
    exchange.reload_markets(True)
    return fake, exchange


def stop(fake: FakeBinance, exchange: Any) -> None:
    exchange._api.nija_guard.close()
    exchange.close()
    fake.stop()


def orders_sent(fake: FakeBinance) -> int:
    return len([r for r in fake.requests_to("POST", ORDER) if r.status is not None or r.fault])


def sell(exchange: Any, amount: float = 1.0, ordertype: str = "market", rate: float = 50_000.0):
    return exchange.create_order(
        pair="BTC/USDT", ordertype=ordertype, side="sell", amount=amount, rate=rate, leverage=1.0
    )


def stop_loss(exchange: Any) -> Any:
    return exchange.create_stoploss(
        pair="BTC/USDT",
        amount=1.0,
        stop_price=45_000.0,
        order_types=STOP,
        side="sell",
        leverage=1.0,
    )


def refused(call: Any, error: type[Exception], cause: type[Exception]) -> bool:
    """``call()`` raised freqtrade's ``error``, caused by the guard's ``cause``."""
    try:
        call()
    except error as raised:
        return isinstance(raised.__cause__, cause)
    return False


def main() -> None:
    print(f"freqtrade {freqtrade.__version__}, ccxt {ccxt.__version__}")

    fake, ex = start("reject")
    check(type(ex).__name__ == "Binance", "freqtrade's Binance class is used")
    check(isinstance(ex._api, ccxt.binance), "the guarded client is still a ccxt.binance")
    check(ex.id == "binance" and "BTC/USDT" in ex.markets, "freqtrade reads it as before")
    print("1. the guard is in place; isinstance and freqtrade's market loading work")

    fake.inject("POST", ORDER, "hang_after")  # the venue executes, the reply is held
    first: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: first.setdefault("order", sell(ex)))
    worker.start()
    check(fake.wait_hung(), "the first exit reached the venue")
    check(
        refused(lambda: sell(ex), TemporaryError, nija_guard.ExitInProgress),
        "a second exit during the first is refused",
    )
    fake.release_hung()
    worker.join()
    check(first["order"]["status"] == "closed" and orders_sent(fake) == 1, "one order")
    print("2. on_conflict='reject': a second exit during the first gets ExitInProgress,")
    print("   which freqtrade's create_order raises as TemporaryError; one order sent")

    check(
        refused(lambda: sell(ex), InsufficientFundsError, nija_guard.NothingToSell),
        "a stale exit after the full close",
    )
    check(orders_sent(fake) == 1, "nothing sent")
    print("3. a stale exit after the full close: NothingToSell -> InsufficientFundsError")
    stop(fake, ex)

    fake, ex = start("replace")
    fake.inject("POST", ORDER, "hang_after")
    worker = threading.Thread(target=lambda: sell(ex))
    worker.start()
    check(fake.wait_hung(), "the first exit reached the venue")
    threading.Timer(0.5, fake.release_hung).start()
    began = time.monotonic()
    check(
        refused(lambda: sell(ex), InsufficientFundsError, nija_guard.NothingToSell),
        "the waiting exit finds nothing left",
    )
    waited = time.monotonic() - began
    worker.join()
    check(waited >= 0.4 and orders_sent(fake) == 1, "it waited for the first; one order")
    print(f"4. on_conflict='replace': a second exit during the first waits ({waited:.1f} s),")
    print("   then finds nothing left (InsufficientFundsError); one order sent")
    stop(fake, ex)

    fake, ex = start("replace")
    fake.inject("POST", ORDER, "drop_after")  # executed, then the connection drops
    order = sell(ex, 0.4)
    check(order["status"] == "closed" and order["filled"] == 0.4, "the executed order")
    check(order["clientOrderId"].startswith("njg") and orders_sent(fake) == 1, "one order")
    print("5. reply lost after execution: create_order returns the executed order")
    stop(fake, ex)

    fake, ex = start("reject")
    sl = stop_loss(ex)
    check(sl["status"] == "open", "the stop-loss rests")
    check(
        refused(lambda: sell(ex), TemporaryError, nija_guard.ExitInProgress),
        "an exit while the stop-loss rests is refused",
    )
    ex.cancel_stoploss_order_with_result(sl["id"], "BTC/USDT", 1.0)  # what freqtrade does first
    order = sell(ex)
    check(order["status"] == "closed" and order["filled"] == 1.0, "then the exit sells")
    print("6. a resting stop-loss holds the lock; after freqtrade cancels it, the exit sells")
    stop(fake, ex)

    fake, ex = start("reject")
    check(sell(ex, 1.0, "limit", 60_000.0)["status"] == "open", "a limit exit rests")
    check(
        refused(lambda: stop_loss(ex), InvalidOrderException, nija_guard.ExitInProgress),
        "a stop-loss placed while the limit exit rests is refused",
    )
    print("7. on_conflict='reject': a stop-loss placed while a limit exit rests fails with")
    print("   InvalidOrderException (freqtrade then exits the trade with a market order)")
    stop(fake, ex)

    fake, ex = start("replace")
    limit = sell(ex, 1.0, "limit", 60_000.0)
    sl = stop_loss(ex)
    check(sl["status"] == "open", "the stop-loss replaced the limit exit")
    check(ex.fetch_order(limit["id"], "BTC/USDT")["status"] == "canceled", "limit cancelled")
    order = sell(ex)
    check(order["filled"] == 1.0, "a market exit replaced the stop-loss")
    check(ex.fetch_order(sl["id"], "BTC/USDT")["status"] == "canceled", "stop cancelled")
    check(orders_sent(fake) == 3, "three orders, 1 BTC sold once")
    print("8. on_conflict='replace': the stop-loss replaces the resting limit exit, and a")
    print("   market exit replaces the resting stop-loss; 1 BTC sold once")
    stop(fake, ex)
    print("all checks passed")


if __name__ == "__main__":
    main()
