"""Throughput under contention: many threads selling random symbols of one account.

Each of ``threads`` workers sells one coin of a random symbol (of ``symbols``)
again and again for ``seconds``; the account holds exactly the bot's
positions: one coin per symbol at the start, and a worker whose sell
succeeded buys the coin back (``venue.deposit``) before its next pick. Every
broker call takes ``latency`` seconds (1 ms). Two workers often pick the same
symbol at once: that is the contention.

Counted per system: sells the exchange executed (exits/s), attempts refused
(by the guard, by the baseline's own balance check, or by the exchange), and
double-sells, from the venue's own trades: per symbol, coins sold beyond the
coins the bot held (its first coin plus every buy-back), in whole positions.

Run with ``python benchmarks/run.py --only contention`` (or this file).
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import ccxt
from _common import SYSTEMS, close, fmt_calls, paper, per_exit, symbol_names, wrap

import nija_guard

POSITION = Decimal(1)
GUARD_REFUSALS = (nija_guard.ExitInProgress, nija_guard.NothingToSell, nija_guard.DustPosition)


def overlapping_executions(spans: list[tuple[str, float, float]]) -> int:
    """Executed sells that began while an executed sell of the same symbol was in flight."""
    by_symbol: dict[str, list[tuple[float, float]]] = {}
    for symbol, began, ended in spans:
        by_symbol.setdefault(symbol, []).append((began, ended))
    count = 0
    for calls in by_symbol.values():
        calls.sort()
        busy_until = float("-inf")
        for began, ended in calls:
            if began < busy_until:
                count += 1
            busy_until = max(busy_until, ended)
    return count


def run_contention(
    system: str,
    threads: int = 16,
    symbols: int = 100,
    seconds: float = 10.0,
    latency: float = 0.001,
    seed: int = 0,
) -> dict[str, Any]:
    exchange = paper(symbols, holdings=POSITION, latency=latency)
    venue = exchange.venue
    client = wrap(system, exchange)
    client.load_markets()
    names = symbol_names(symbols)
    bases = {s: s.split("/")[0] for s in names}
    start_line = threading.Barrier(threads + 1)
    deadline = [0.0]
    results: list[dict[str, Any]] = []
    results_lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        outcomes: Counter[str] = Counter()
        bought: Counter[str] = Counter()
        latencies: list[float] = []
        spans: list[tuple[str, float, float]] = []
        start_line.wait()
        end = deadline[0]
        clock = time.monotonic
        while clock() < end:
            symbol = rng.choice(names)
            began = time.perf_counter()
            try:
                client.create_market_sell_order(symbol, 1)
            except GUARD_REFUSALS as exc:
                outcomes[f"refused by guard ({type(exc).__name__})"] += 1
                continue
            except ccxt.InsufficientFunds:
                outcomes["refused: insufficient funds"] += 1
                continue
            except ccxt.BaseError as exc:
                outcomes[f"error ({type(exc).__name__})"] += 1
                continue
            ended = time.perf_counter()
            latencies.append(ended - began)
            spans.append((symbol, began, ended))
            outcomes["sold"] += 1
            venue.deposit(bases[symbol], POSITION)  # the bot buys the position back
            bought[symbol] += 1
        with results_lock:
            results.append(
                {"outcomes": outcomes, "bought": bought, "latencies": latencies, "spans": spans}
            )

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.monotonic() + seconds
    began = time.perf_counter()
    start_line.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    close(system, client)

    outcomes: Counter[str] = Counter()
    bought: Counter[str] = Counter()
    latencies: list[float] = []
    spans: list[tuple[str, float, float]] = []
    for r in results:
        outcomes.update(r["outcomes"])
        bought.update(r["bought"])
        latencies.extend(r["latencies"])
        spans.extend(r["spans"])
    sold: dict[str, Decimal] = {}
    with venue.lock:
        for trade in venue.trades:
            if trade.side == "sell":
                sold[trade.symbol] = sold.get(trade.symbol, Decimal(0)) + trade.amount
        accepted = sum(1 for o in venue.orders.values() if o.side == "sell")
    oversold = Decimal(0)
    double_sells = 0
    for symbol, amount in sold.items():
        held = POSITION * (1 + bought[symbol])  # the first coin and every buy-back
        if amount > held:
            oversold += amount - held
            double_sells += int((amount - held) / POSITION)
    calls = dict(exchange.call_counts)
    exits = outcomes["sold"]
    duplicates = overlapping_executions(spans)
    latencies.sort()
    return {
        "system": system,
        "threads": threads,
        "symbols": symbols,
        "seconds": round(elapsed, 2),
        "latency_s": latency,
        "exits": exits,
        "exits_per_s": round(exits / elapsed, 1),
        "attempts": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "refused_by_exchange": calls.get("create_order", 0) - accepted,
        "double_sells": double_sells,
        "overlapping_executed": duplicates,
        "oversold_coins": float(oversold),
        "exit_latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        },
        "broker_calls": calls,
        "broker_calls_per_exit": per_exit(calls, max(exits, 1)),
    }


def contention(quick: bool = False) -> dict[str, Any]:
    """Row 5: exits/s and double-sells, 16 threads x 100 symbols, 1 ms per broker call."""
    seconds = 1.5 if quick else 10.0
    results = {s: run_contention(s, seconds=seconds) for s in SYSTEMS}
    conditions = (
        f"16 threads x 100 symbols, {seconds:g} s per system, 1 ms per broker call, "
        "one coin per symbol, bought back after each sell"
    )

    def refused(r: dict[str, Any]) -> str:
        out = {k: v for k, v in r["outcomes"].items() if k != "sold"}
        return fmt_calls(out) or "none"

    rows = [
        {
            "measure": "throughput under contention: exits/s",
            "conditions": conditions,
            **{s: f"{results[s]['exits_per_s']:,.0f}/s" for s in SYSTEMS},
            "note": "p50/p99 exit latency: "
            + "; ".join(
                f"{s} {lat['p50']}/{lat['p99']} ms"
                for s, lat in ((s, results[s]["exit_latency_ms"]) for s in SYSTEMS)
            ),
        },
        {
            "measure": "double-sells under contention (from the venue's trades)",
            "conditions": conditions,
            **{s: str(results[s]["double_sells"]) for s in SYSTEMS},
            "note": "sells the exchange refused: "
            + "; ".join(f"{s} {results[s]['refused_by_exchange']}" for s in SYSTEMS)
            + ". Attempts refused before the exchange: "
            + "; ".join(f"{s} {refused(results[s])}" for s in SYSTEMS),
        },
        {
            "measure": "overlapping exits of one symbol that both executed",
            "conditions": conditions,
            **{
                s: f"{results[s]['overlapping_executed']:,} of {results[s]['exits']:,}"
                for s in SYSTEMS
            },
            "note": "a sell that began while another sell of the same symbol was in flight, and "
            "executed too: it sold the coin the first seller had just bought back (not a "
            "double-sell by the venue's count, but a duplicate exit signal acted on twice)",
        },
        {
            "measure": "broker calls per executed exit under contention",
            "conditions": conditions,
            **{
                s: f"{sum(results[s]['broker_calls'].values()) / max(results[s]['exits'], 1):.2f}"
                for s in SYSTEMS
            },
            "note": "; ".join(
                f"{s}: {fmt_calls(results[s]['broker_calls_per_exit'])}" for s in SYSTEMS
            ),
        },
    ]
    return {"title": "Throughput under contention", "rows": rows, "data": results}


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "contention", *sys.argv[1:]]))
