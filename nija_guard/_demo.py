"""``nija-guard demo``: the same concurrent bot, unguarded then guarded, side by side.

The bot is written the way bots are: worker threads read the bot's own
position record, sell what it says, then mark the position closed. Between the
read and the mark, another worker can read the same record: a double-sell.
The exchange loses some replies after executing the order (ghost orders) and
the bot retries on a timeout, as most bots do. The account is shared with
another strategy, so a double-sell is not rejected by the exchange: it sells
coins the bot does not own.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import ccxt

from ._errors import DustPosition, ExitInProgress, NothingToSell, OutcomeUnknown
from ._guard import guard
from .testing import PaperExchange
from .testing._venue import Market

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    mode: str
    double_sells: int = 0
    oversold: float = 0.0
    rejections: int = 0
    unknown_left: int = 0
    exits_completed: int = 0
    refused: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data["oversold"] = round(self.oversold, 8)
        data["p50_ms"] = round(self.p50_ms, 3)
        data["p99_ms"] = round(self.p99_ms, 3)
        return data


def _exchange(
    symbols: int, seed: int, latency: float, ghost_rate: float
) -> tuple[PaperExchange, list[str]]:
    names = [f"C{i:03d}/USDT" for i in range(symbols)]
    markets = {s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in names}
    # The bot owns 1 of each coin; another strategy in the same account owns 1 more.
    paper = PaperExchange(
        markets=markets, balances={s.split("/")[0]: 2 for s in names} | {"USDT": 10**9}
    )
    paper.latency = latency
    paper.venue.balance_lag = 0.05  # the broker's balance trails its matching engine
    paper.ghost_rate = ghost_rate
    paper.rng = random.Random(seed)
    return paper, names


def _run_bot(
    client: Any,
    paper: PaperExchange,
    names: list[str],
    threads: int,
    seconds: float,
    seed: int,
    result: DemoResult,
    progress: Any,
) -> None:
    positions = dict.fromkeys(names, 1.0)  # the bot's own record
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    rounds = 0

    def worker(worker_seed: int) -> None:
        rng = random.Random(worker_seed)
        order_of_symbols = names[:]
        rng.shuffle(order_of_symbols)
        for symbol in order_of_symbols:
            amount = positions[symbol]  # read the record ...
            if amount <= 0:
                continue
            started = time.perf_counter()
            try:
                try:
                    client.create_market_sell_order(symbol, amount)
                except ccxt.RequestTimeout:
                    client.create_market_sell_order(symbol, amount)  # ... the usual retry
                with lock:
                    result.exits_completed += 1
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)
            except (ExitInProgress, NothingToSell, DustPosition):
                with lock:
                    result.refused += 1
            except OutcomeUnknown:
                pass
            except ccxt.InsufficientFunds:
                with lock:
                    result.rejections += 1
            except ccxt.BaseError:
                with lock:
                    result.rejections += 1
            positions[symbol] = 0.0  # ... and mark it closed, a little later

    while True:
        rounds += 1
        workers = [
            threading.Thread(target=worker, args=(seed * 1000 + rounds * 100 + i,))
            for i in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        _score_round(paper, names, result)
        progress(min(1.0, 1 - (deadline - time.monotonic()) / seconds))
        if time.monotonic() >= deadline:
            break
        # Re-enter every position for the next round (single-threaded, as a bot's entry logic).
        for symbol in names:
            base = symbol.split("/")[0]
            held = paper.venue.holdings(base)
            paper.venue.free[base] = paper.venue.free.get(base, Decimal(0)) + (Decimal(2) - held)
            positions[symbol] = 1.0
        if hasattr(client, "nija_guard"):
            for symbol in names:
                base = symbol.split("/")[0]
                client.nija_guard.seed(base, Decimal(1) - client.nija_guard.owned(base))
        paper.venue.orders.clear()
        paper.venue.trades.clear()


def _score_round(paper: PaperExchange, names: list[str], result: DemoResult) -> None:
    for symbol in names:
        sold = paper.venue.sold(symbol)
        orders = [o for o in paper.sell_orders(symbol) if o.filled > 0]
        if len(orders) > 1:
            result.double_sells += len(orders) - 1
        if sold > 1:
            result.oversold += float(sold - 1)


def run_demo(
    threads: int = 8,
    symbols: int = 50,
    seconds: float = 2.0,
    seed: int = 1,
    latency: float = 0.002,
    ghost_rate: float = 0.05,
    show_progress: bool = True,
) -> list[DemoResult]:
    results = []
    for mode in ("unguarded", "guarded"):
        paper, names = _exchange(symbols, seed, latency, ghost_rate)
        result = DemoResult(mode)
        if mode == "guarded":
            client = guard(
                paper,
                ownership="ledger",
                ledger_seed={s.split("/")[0]: 1 for s in names},
                load_entrypoints=False,
                absent_after=0.2,
                poll_interval=0.05,
            )
        else:
            client = paper
        client.load_markets()

        def progress(fraction: float, mode: str = mode) -> None:
            if show_progress:
                filled = int(fraction * 30)
                print(
                    f"\r  {mode:<10} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}",
                    end="",
                    flush=True,
                )

        _run_bot(client, paper, names, threads, seconds, seed, result, progress)
        if show_progress:
            print()
        if mode == "guarded":
            result.unknown_left = len(client.nija_guard.status()["unknown"])
            client.nija_guard.close()
        results.append(result)
    return results


def format_table(results: list[DemoResult]) -> str:
    rows = [
        ("double-sells", "double_sells", "{:d}"),
        ("oversold quantity", "oversold", "{:.4f}"),
        ("exchange rejections", "rejections", "{:d}"),
        ("unknown outcomes left", "unknown_left", "{:d}"),
        ("exits completed", "exits_completed", "{:d}"),
        ("exits refused by the guard", "refused", "{:d}"),
        ("p50 exit latency (ms)", "p50_ms", "{:.2f}"),
        ("p99 exit latency (ms)", "p99_ms", "{:.2f}"),
    ]
    width = 28
    lines = [f"{'':<{width}}" + "".join(f"{r.mode:>14}" for r in results)]
    for label, attr, fmt in rows:
        lines.append(
            f"{label:<{width}}" + "".join(f"{fmt.format(getattr(r, attr)):>14}" for r in results)
        )
    return "\n".join(lines)
