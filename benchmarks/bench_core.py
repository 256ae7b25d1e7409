"""Core benchmarks: guard overhead per exit, broker calls per exit in a burst, passthrough cost.

Run: ``python benchmarks/bench_core.py`` (writes benchmarks/results/core.json and
prints a markdown table). Numbers are measurements, never assertions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market

RESULTS = Path(__file__).parent / "results"


def _paper(symbols: int = 1) -> PaperExchange:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(symbols)
    }
    return PaperExchange(markets=markets, balances={m.base: 10**9 for m in markets.values()})


def _median_us(fn: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def overhead_per_exit(runs: int = 3000) -> dict[str, float]:
    raw = _paper()
    raw.load_markets()
    guarded_client = _paper()
    guarded = nija_guard.guard(guarded_client, load_entrypoints=False)
    guarded.load_markets()
    for client in (raw, guarded):  # warm up (adoption, caches)
        for _ in range(50):
            client.create_market_sell_order("C0/USDT", 0.01)
    raw_us = _median_us(lambda: raw.create_market_sell_order("C0/USDT", 0.01), runs)
    guarded_us = _median_us(lambda: guarded.create_market_sell_order("C0/USDT", 0.01), runs)
    balance_us = _median_us(guarded_client.fetch_balance, runs)
    guarded.nija_guard.close()
    return {
        "raw_exit_us": round(raw_us, 1),
        "guarded_exit_us": round(guarded_us, 1),
        "overhead_us": round(guarded_us - raw_us, 1),
        "ratio": round(guarded_us / raw_us, 2),
        "of_which_paper_fetch_balance_us": round(balance_us, 1),
        "guard_only_us": round(guarded_us - raw_us - balance_us, 1),
    }


def burst_calls(exits: int = 100) -> dict[str, Any]:
    paper = _paper(exits)
    paper.latency = 0.001  # a loopback-fast exchange, so exits overlap
    ex = nija_guard.guard(paper, load_entrypoints=False, adopt=False)
    ex.load_markets()
    barrier = threading.Barrier(exits)

    def sell(symbol: str) -> None:
        barrier.wait()
        ex.create_market_sell_order(symbol, 1)

    threads = [threading.Thread(target=sell, args=(s,)) for s in paper.venue.markets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(paper.calls)
    ex.nija_guard.close()
    return {
        "exits": exits,
        "broker_calls": dict(counts),
        "calls_per_exit": round(sum(counts.values()) / exits, 2),
        "balance_calls": counts["fetch_balance"],
    }


def passthrough(runs: int = 20000) -> dict[str, float]:
    raw = _paper()
    raw.load_markets()
    guarded = nija_guard.guard(_paper(), load_entrypoints=False)
    guarded.load_markets()
    raw_us = _median_us(lambda: raw.fetch_ticker("C0/USDT"), runs)
    guarded_us = _median_us(lambda: guarded.fetch_ticker("C0/USDT"), runs)
    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        raw.fetch_ticker  # noqa: B018 - attribute lookup only
    raw_lookup = (time.perf_counter() - start) / n * 1e9
    start = time.perf_counter()
    for _ in range(n):
        guarded.fetch_ticker  # noqa: B018
    guarded_lookup = (time.perf_counter() - start) / n * 1e9
    guarded.nija_guard.close()
    return {
        "raw_fetch_ticker_us": round(raw_us, 2),
        "guarded_fetch_ticker_us": round(guarded_us, 2),
        "raw_attribute_lookup_ns": round(raw_lookup, 1),
        "guarded_attribute_lookup_ns": round(guarded_lookup, 1),
    }


def main() -> int:
    results = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "overhead_per_exit": overhead_per_exit(),
        "burst_100_exits_100_symbols": burst_calls(),
        "passthrough": passthrough(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))
    o = results["overhead_per_exit"]
    b = results["burst_100_exits_100_symbols"]
    p = results["passthrough"]
    rows = [
        (
            "market sell, zero-latency paper (median)",
            f"{o['raw_exit_us']} µs",
            f"{o['guarded_exit_us']} µs",
            f"x{o['ratio']}; includes one paper fetch_balance "
            f"({o['of_which_paper_fetch_balance_us']} µs); guard alone ≈ {o['guard_only_us']} µs",
        ),
        (
            f"broker calls per exit, burst of {b['exits']} exits on {b['exits']} symbols",
            "1",
            str(b["calls_per_exit"]),
            f"{b['balance_calls']} fetch_balance calls for {b['exits']} exits",
        ),
        (
            "fetch_ticker through the proxy (median)",
            f"{p['raw_fetch_ticker_us']} µs",
            f"{p['guarded_fetch_ticker_us']} µs",
            "",
        ),
        (
            "attribute lookup",
            f"{p['raw_attribute_lookup_ns']} ns",
            f"{p['guarded_attribute_lookup_ns']} ns",
            "wrapt passthrough",
        ),
    ]
    print("| measure | raw | guarded | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
