"""Async benchmarks: overhead per exit, and many concurrent exits on one event loop.

Run with ``python benchmarks/run.py --only exit_async`` (``async_concurrency``);
this file alone runs both. Measurements only, no assertions.
"""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any

from _common import (
    SYSTEMS,
    aclose,
    ainterleaved_us,
    fmt_calls,
    paper,
    per_exit,
    stub_clients,
    wrap,
)
from bench_core import stub_result, stub_row


async def _exit_async(quick: bool) -> dict[str, Any]:
    runs = 300 if quick else 2000
    clients = {s: wrap(s, paper(1, is_async=True)) for s in SYSTEMS}
    exchanges = {s: c.__wrapped__ if s != "raw" else c for s, c in clients.items()}
    for client in clients.values():
        await client.load_markets()
        for _ in range(50):
            await client.create_market_sell_order("C0/USDT", 0.01)
    before = {s: Counter(e.call_counts) for s, e in exchanges.items()}
    calls = {
        s: (lambda c=c: c.create_market_sell_order("C0/USDT", 0.01)) for s, c in clients.items()
    }
    balance_paper = paper(1, is_async=True)
    calls["fetch_balance"] = balance_paper.fetch_balance
    timings = await ainterleaved_us(calls, runs)
    done = timings["raw"]["samples"]
    broker = {s: per_exit(Counter(e.call_counts) - before[s], done) for s, e in exchanges.items()}
    for system, client in clients.items():
        await aclose(system, client)
    med = {k: v["median"] for k, v in timings.items()}
    balance_us = med["fetch_balance"]
    data = {
        "runs_per_system": done,
        "timings_us": timings,
        "broker_calls_per_exit": broker,
        "paper_fetch_balance_us": balance_us,
        "baseline_only_us": round(med["baseline"] - med["raw"] - balance_us, 1),
        "guard_only_us": round(med["guard"] - med["raw"] - balance_us, 1),
        "zero_cost_exchange": await _stub_exit_async(runs),
    }
    conditions = (
        f"asyncio, AsyncPaperExchange latency 0, 1 symbol, {done} sells per system awaited "
        "one at a time (interleaved blocks, after 50 warm-up sells)"
    )
    return {
        "title": "Overhead per exit, async",
        "rows": [
            {
                "measure": "market sell, async (median)",
                "conditions": conditions,
                "raw": f"{med['raw']:.1f} µs",
                "baseline": f"{med['baseline']:.1f} µs",
                "guard": f"{med['guard']:.1f} µs",
                "note": "broker calls per exit: "
                + "; ".join(f"{s} {fmt_calls(broker[s])}" for s in SYSTEMS),
            },
            {
                "measure": "same, minus the raw sell and one paper fetch_balance",
                "conditions": f"async paper fetch_balance median {balance_us:.1f} µs",
                "raw": "0",
                "baseline": f"{data['baseline_only_us']:.1f} µs",
                "guard": f"{data['guard_only_us']:.1f} µs",
                "note": "the wrapper's own work",
            },
            stub_row(data["zero_cost_exchange"], "async"),
        ],
        "data": data,
    }


async def _stub_exit_async(runs: int) -> dict[str, Any]:
    """Row 2 again on a zero-cost async stub exchange: the guard's own CPU."""
    clients = stub_clients(is_async=True)
    for name, client in clients.items():
        if name != "fetch_balance":
            await client.load_markets()
            for _ in range(50):
                await client.create_market_sell_order("S0/USDT", 0.01)
    calls = {
        name: (lambda c=c: c.create_market_sell_order("S0/USDT", 0.01))
        for name, c in clients.items()
        if name != "fetch_balance"
    }
    calls["fetch_balance"] = clients["fetch_balance"]
    timings = await ainterleaved_us(calls, runs * 2)
    await aclose("guard", clients["guard"])
    return stub_result(timings)


def exit_async(quick: bool = False) -> dict[str, Any]:
    """Row 2."""
    return asyncio.run(_exit_async(quick))


async def concurrent(system: str, exits: int, trace_memory: bool = False) -> dict[str, Any]:
    """``exits`` sells of distinct symbols gathered at once on one loop, 1 ms per broker call.

    ``trace_memory``: under tracemalloc, for the peak (it slows every allocation
    several times over, so wall times come from an untraced run).
    """
    exchange = paper(exits, is_async=True)
    # 1 ms per call, as on a fast network: with none, no task would ever wait
    # for another and "concurrent" would mean one after the other.
    exchange.latency = 0.001
    client = wrap(system, exchange)
    await client.load_markets()
    symbols = list(exchange.venue.markets)
    if trace_memory:
        tracemalloc.start()
    start = time.perf_counter()
    results = await asyncio.gather(
        *(client.create_market_sell_order(s, 1) for s in symbols), return_exceptions=True
    )
    wall = time.perf_counter() - start
    peak = 0
    if trace_memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    failures = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    calls = dict(exchange.call_counts)
    await aclose(system, client)
    return {
        "exits": exits,
        "wall_s": round(wall, 3),
        "exits_per_s": round(exits / wall, 1),
        "peak_traced_mib": round(peak / 2**20, 1),
        "broker_calls": calls,
        "failures": dict(failures),
    }


async def _async_concurrency(quick: bool) -> dict[str, Any]:
    # 2,000 in a full run: the baseline fetches the whole balance (every asset of
    # the account) for each exit, one exit at a time, so its time grows with n².
    exits = 500 if quick else 2_000
    results = {s: await concurrent(s, exits) for s in SYSTEMS}
    for system in SYSTEMS:
        traced = await concurrent(system, exits, trace_memory=True)
        results[system]["peak_traced_mib"] = traced["peak_traced_mib"]
    conditions = f"{exits:,} tasks on one loop, {exits:,} symbols, 1 ms per broker call"
    guard_calls = per_exit(results["guard"]["broker_calls"], exits)
    rows = [
        {
            "measure": f"{exits:,} concurrent async exits: wall time",
            "conditions": conditions,
            **{s: f"{results[s]['wall_s']} s" for s in SYSTEMS},
            "note": "baseline: one global asyncio.Lock, so exits run one at a time, each "
            "fetching the whole balance; guard calls per exit: "
            f"{fmt_calls(guard_calls)}",
        },
        {
            "measure": f"{exits:,} concurrent async exits: peak traced memory",
            "conditions": conditions + ", tracemalloc (a second run: wall times are untraced)",
            **{s: f"{results[s]['peak_traced_mib']} MiB" for s in SYSTEMS},
            "note": "failures: "
            + "; ".join(f"{s} {fmt_calls(results[s]['failures']) or 'none'}" for s in SYSTEMS),
        },
    ]
    return {"title": "Concurrent async exits", "rows": rows, "data": results}


def async_concurrency(quick: bool = False) -> dict[str, Any]:
    """Extra row: many concurrent async exits (the guard's task fan-out and memory)."""
    return asyncio.run(_async_concurrency(quick))


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "exit_async,async_concurrency", *sys.argv[1:]]))
