"""A trading bot in its own OS process, driven line by line by tests/test_multiprocess.py.

It builds a real ``ccxt.binance`` pointed at the test's loopback FakeBinance
(``--client-config``: the fake's client config, so the same API key and secret in
every worker: one account, so the workers share leases through the backend),
wraps it with ``nija_guard.guard(...)`` and then obeys JSON commands read from
stdin, one per line. It reports on stdout, one
JSON object per line (every line is flushed at once):

- ``{"event": "ready", "account": ..., "pid": ...}`` once the guard is built and
  the markets are loaded;
- ``{"event": "result", "symbol": ..., "outcome": ...}`` per sell: ``outcome``
  is ``"sold"`` (an order came back) or the exception's class name
  (``NothingToSell``, ``ExitInProgress``, ``BackendUnavailable``...);
- ``{"event": "PAUSED", "hook": ..., "symbol": ...}`` from inside an armed hook,
  which then blocks reading stdin until the test writes a line;
- ``{"event": "hook", "hook": ..., ...}`` for the hooks the tests watch
  (lease lost, backend failed, exit blocked), from whatever thread fired them;
- ``{"event": "done"}`` after a ``hammer`` command, ``{"event": "bye"}`` at exit.

Commands: ``sell`` (symbol, amount, optional type/price/on_conflict/wait_timeout),
``hammer`` (symbols: sell 1.0 of each in that order), ``pause`` (hook, symbol or
"*", times), ``status``, ``quit``. Logging goes to stderr (the tests read it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

import ccxt

import nija_guard

_out = threading.Lock()
# The stdin the command loop reads; a paused hook reads its "continue" line from it too
# (the hook runs on the thread that called the exit: the command loop's own).
_stdin = sys.stdin


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.time(), **fields}, default=str)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Probe:
    """Hooks: report what the tests watch; pause where the test armed a pause."""

    def __init__(self) -> None:
        self.pauses: dict[str, dict[str, int]] = {}  # hook -> symbol ("*": any) -> times left
        self.mutex = threading.Lock()

    def arm(self, hook: str, symbol: str, times: int) -> None:
        with self.mutex:
            self.pauses.setdefault(hook, {})[symbol] = times

    def _maybe_pause(self, hook: str, symbol: str, **fields: Any) -> None:
        with self.mutex:
            armed = self.pauses.get(hook, {})
            key = symbol if armed.get(symbol) else "*" if armed.get("*") else None
            if key is None:
                return
            armed[key] -= 1
        emit("PAUSED", hook=hook, symbol=symbol, **fields)
        line = _stdin.readline()  # the test says when to go on
        emit("resumed", hook=hook, symbol=symbol, line=line.strip())

    @nija_guard.hookimpl
    def nija_guard_balance_refreshed(
        self, exit: Any, free: float, total: float, sellable: float, balance_timestamp: Any
    ) -> None:
        self._maybe_pause("balance_refreshed", exit.symbol, sellable=sellable, exit_id=exit.exit_id)

    @nija_guard.hookimpl
    def nija_guard_lease_lost(self, exit: Any, key: str) -> None:
        emit(
            "hook",
            hook="lease_lost",
            symbol=exit.symbol,
            exit_id=exit.exit_id,
            key=key,
            thread=threading.current_thread().name,
        )

    @nija_guard.hookimpl
    def nija_guard_backend_failed(self, exit: Any, error: BaseException) -> None:
        emit("hook", hook="backend_failed", symbol=exit.symbol, error=type(error).__name__)

    @nija_guard.hookimpl
    def nija_guard_exit_blocked(self, exit: Any, holder: Any, reason: str) -> None:
        emit("hook", hook="exit_blocked", symbol=exit.symbol, reason=reason)

    @nija_guard.hookimpl
    def nija_guard_order_submitted(self, exit: Any, order: dict[str, Any]) -> None:
        emit(
            "hook",
            hook="order_submitted",
            symbol=exit.symbol,
            exit_id=exit.exit_id,
            client_order_id=exit.client_order_id,
        )


def sell(exchange: Any, command: dict[str, Any]) -> None:
    symbol = command["symbol"]
    amount = float(command.get("amount", 1.0))
    options = {k: command[k] for k in ("on_conflict", "wait_timeout") if k in command}
    params = {"nija_guard": options} if options else {}
    started = time.monotonic()
    fields: dict[str, Any] = {"symbol": symbol}
    try:
        if command.get("type", "market") == "limit":
            order = exchange.create_limit_sell_order(symbol, amount, command["price"], params)
        else:
            order = exchange.create_market_sell_order(symbol, amount, params)
    except ccxt.BaseError as exc:
        fields.update(outcome=type(exc).__name__, error=str(exc)[:300])
    else:
        fields.update(
            outcome="sold",
            order_id=order.get("id"),
            client_order_id=order.get("clientOrderId"),
            status=order.get("status"),
            filled=order.get("filled"),
        )
    fields["elapsed"] = time.monotonic() - started
    emit("result", **fields)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--client-config", required=True, help="FakeBinance.client_config(), JSON")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    parser.add_argument("--backend-timeout", type=float, default=2.0)
    parser.add_argument("--on-backend-failure", default="fail")
    parser.add_argument("--name", default="bot")
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format=f"%(levelname)s {args.name} %(threadName)s %(name)s: %(message)s",
    )

    from fakes.ccxt_urls import point_at  # not the fake itself: its imports are heavy

    client = point_at(ccxt.binance(json.loads(args.client_config)), args.exchange_url)

    probe = Probe()
    exchange = nija_guard.guard(
        client,
        backend=args.backend,
        lease_ttl=args.lease_ttl,
        backend_timeout=args.backend_timeout,
        on_backend_failure=args.on_backend_failure,
        load_entrypoints=False,
        poll_interval=0.05,
        poll_max_interval=0.2,
        absent_after=0.2,
        reconcile_timeout=2,
        plugins=[probe],
    )
    exchange.load_markets()
    emit("ready", account=exchange.nija_guard.account, pid=os.getpid(), name=args.name)
    try:
        for raw in iter(_stdin.readline, ""):
            line = raw.strip()
            if not line:
                continue
            command = json.loads(line)
            op = command["op"]
            if op == "sell":
                sell(exchange, command)
            elif op == "hammer":
                for symbol in command["symbols"]:
                    sell(exchange, {"symbol": symbol, "amount": command.get("amount", 1.0)})
                emit("done")
            elif op == "pause":
                probe.arm(command["hook"], command.get("symbol", "*"), command.get("times", 1))
                emit("armed", hook=command["hook"])
            elif op == "status":
                emit("status", status=exchange.nija_guard.status())
            elif op == "quit":
                break
            else:
                emit("error", error=f"unknown op {op!r}")
    except Exception:
        emit("error", error=traceback.format_exc())
        return 1
    finally:
        exchange.nija_guard.close()
    emit("bye")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
