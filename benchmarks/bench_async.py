"""Async benchmarks: overhead per exit, and 10,000 concurrent exits on one loop.

Run: ``python benchmarks/bench_async.py`` (writes benchmarks/results/async.json,
prints a markdown table). Measurements only, no assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

import nija_guard
from nija_guard.testing import AsyncPaperExchange
from nija_guard.testing._venue import Market

RESULTS = Path(__file__).parent / "results"


def _paper(symbols: int) -> AsyncPaperExchange:
    markets = {
        f"C{i}/USDT": Market(symbol=f"C{i}/USDT", price=Decimal(100), min_cost=Decimal(1))
        for i in range(symbols)
    }
    return AsyncPaperExchange(markets=markets, balances={m.base: 10**9 for m in markets.values()})


async def _median_us(make_call: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        await make_call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


async def overhead(runs: int = 2000) -> dict[str, float]:
    raw = _paper(1)
    await raw.load_markets()
    guarded = nija_guard.guard(_paper(1), load_entrypoints=False)
    await guarded.load_markets()
    for client in (raw, guarded):
        for _ in range(50):
            await client.create_market_sell_order("C0/USDT", 0.01)
    raw_us = await _median_us(lambda: raw.create_market_sell_order("C0/USDT", 0.01), runs)
    guarded_us = await _median_us(lambda: guarded.create_market_sell_order("C0/USDT", 0.01), runs)
    await guarded.nija_guard.aclose()
    return {
        "raw_exit_us": round(raw_us, 1),
        "guarded_exit_us": round(guarded_us, 1),
        "overhead_us": round(guarded_us - raw_us, 1),
        "ratio": round(guarded_us / raw_us, 2),
    }


async def concurrent(exits: int, guard_it: bool) -> dict[str, Any]:
    paper = _paper(exits)
    # 1 ms per call, as on a fast network: with none, no task would ever wait
    # for another and "concurrent" would mean one after the other.
    paper.latency = 0.001
    client: Any = (
        nija_guard.guard(paper, load_entrypoints=False, adopt=False) if guard_it else paper
    )
    await client.load_markets()
    symbols = list(paper.venue.markets)
    tracemalloc.start()
    start = time.perf_counter()
    await asyncio.gather(*(client.create_market_sell_order(s, 1) for s in symbols))
    wall = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    calls = dict(paper.call_counts)
    if guard_it:
        await client.nija_guard.aclose()
    return {
        "exits": exits,
        "wall_s": round(wall, 3),
        "peak_mib": round(peak / 2**20, 1),
        "broker_calls": calls,
    }


async def main_async() -> dict[str, Any]:
    return {
        "overhead_per_exit": await overhead(),
        "concurrent_raw": await concurrent(10_000, False),
        "concurrent_guarded": await concurrent(10_000, True),
    }


def main() -> int:
    results = asyncio.run(main_async())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "async.json").write_text(json.dumps(results, indent=2))
    o, r, g = results["overhead_per_exit"], results["concurrent_raw"], results["concurrent_guarded"]
    rows = [
        (
            "async market sell, zero-latency paper (median)",
            f"{o['raw_exit_us']} µs",
            f"{o['guarded_exit_us']} µs",
            f"x{o['ratio']}",
        ),
        (
            "10,000 concurrent exits on one loop: wall time",
            f"{r['wall_s']} s",
            f"{g['wall_s']} s",
            f"{g['broker_calls'].get('fetch_balance', 0)} fetch_balance calls for 10,000 exits",
        ),
        (
            "10,000 concurrent exits: peak traced memory",
            f"{r['peak_mib']} MiB",
            f"{g['peak_mib']} MiB",
            "",
        ),
    ]
    print("| measure | raw | guarded | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
