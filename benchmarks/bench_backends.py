"""Cost per uncontended exit for each backend: backend round trips and microseconds.

Run: ``python benchmarks/bench_backends.py`` (needs Redis at 127.0.0.1:6379 for
the redis row; writes benchmarks/results/backends.json).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market

RESULTS = Path(__file__).parent / "results"
METHODS = ("acquire", "renew", "release", "record", "in_flight")


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
        "exit_us": round(statistics.median(samples), 1),
        "round_trips_per_exit": round(sum(calls.values()) / runs, 2),
        "by_operation": {k: round(v / runs, 2) for k, v in sorted(calls.items())},
    }


def main() -> int:
    rows = [measure("memory")]
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(measure(f"sqlite:///{tmp}/bench.db"))
    try:
        rows.append(measure(f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}:"))
    except nija_guard.BackendUnavailable as exc:
        print(f"redis skipped: {exc}", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backends.json").write_text(json.dumps(rows, indent=2))
    print("| backend | market sell (median) | backend round trips per exit | of which |")
    print("|---|---|---|---|")
    for row in rows:
        detail = ", ".join(f"{k} {v}" for k, v in row["by_operation"].items())
        print(
            f"| {row['backend']} | {row['exit_us']} µs | {row['round_trips_per_exit']} | {detail} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
