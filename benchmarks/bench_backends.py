"""Cost per uncontended exit for each backend: backend round trips and microseconds.

Run with ``python benchmarks/run.py --only backends`` (or this file). The redis
row needs Redis at 127.0.0.1:6379 (``NIJA_GUARD_BENCH_REDIS`` overrides the URL);
without it the row says it was skipped.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

from _common import fmt_calls

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market

METHODS = ("acquire", "renew", "release", "record", "in_flight", "leases", "holder")
REDIS_URL = os.environ.get("NIJA_GUARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def measure(url: str, runs: int = 1000) -> dict[str, Any]:
    markets = {"C0/USDT": Market(symbol="C0/USDT", price=Decimal(100), min_cost=Decimal(1))}
    paper = PaperExchange({"apiKey": uuid.uuid4().hex}, markets=markets, balances={"C0": 10**9})
    ex = nija_guard.guard(paper, backend=url, load_entrypoints=False)
    ex.load_markets()
    backend = ex.nija_guard.backend
    calls: Counter[str] = Counter()
    for name in METHODS:
        original = getattr(backend, name)

        def counting(
            *args: Any, __name: str = name, __original: Any = original, **kwargs: Any
        ) -> Any:
            calls[__name] += 1
            return __original(*args, **kwargs)

        setattr(backend, name, counting)
    for _ in range(50):
        ex.create_market_sell_order("C0/USDT", 0.01)
    calls.clear()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        ex.create_market_sell_order("C0/USDT", 0.01)
        samples.append((time.perf_counter_ns() - start) / 1000)
    ex.nija_guard.close()
    return {
        "backend": url.split(":")[0],
        "runs": runs,
        "exit_us": round(statistics.median(samples), 1),
        "round_trips_per_exit": round(sum(calls.values()) / runs, 2),
        "by_operation": {k: round(v / runs, 2) for k, v in sorted(calls.items())},
    }


def backends(quick: bool = False) -> dict[str, Any]:
    """Row 7: memory, SQLite and Redis backends, one uncontended exit at a time."""
    runs = 100 if quick else 1000
    results = [measure("memory", runs)]
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure(f"sqlite:///{tmp}/bench.db", runs))
    skipped = None
    try:
        results.append(measure(f"{REDIS_URL}?prefix=bench-{uuid.uuid4().hex[:8]}:", runs))
    except nija_guard.BackendUnavailable as exc:
        skipped = f"redis skipped: {exc}"
        print(skipped, file=sys.stderr)
    rows = [
        {
            "measure": f"market sell, backend={r['backend']!r} (median)",
            "conditions": f"sync, PaperExchange latency 0, 1 symbol, {runs} sells, "
            + (
                "in-process"
                if r["backend"] == "memory"
                else "local file, WAL"
                if r["backend"] == "sqlite"
                else "Redis on loopback"
            ),
            "raw": "n/a",
            "baseline": "n/a",
            "guard": f"{r['exit_us']:.1f} µs",
            "note": f"{r['round_trips_per_exit']:g} backend calls per exit"
            + (f": {fmt_calls(r['by_operation'])}" if r["by_operation"] else ""),
        }
        for r in results
    ]
    if skipped:
        rows.append(
            {
                "measure": "market sell, backend='redis'",
                "conditions": REDIS_URL,
                "raw": "n/a",
                "baseline": "n/a",
                "guard": "skipped",
                "note": skipped,
            }
        )
    return {"title": "Backend cost per uncontended exit", "rows": rows, "data": results}


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "backends", *sys.argv[1:]]))
