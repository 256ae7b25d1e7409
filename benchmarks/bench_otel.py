"""Exit overhead with no OpenTelemetry SDK, and with the SDK and in-memory exporters.

Run: ``python benchmarks/bench_otel.py`` (writes benchmarks/results/otel.json).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard.testing._venue import Market

RESULTS = Path(__file__).parent / "results"


def _exchange(**options: Any) -> Any:
    markets = {"C0/USDT": Market(symbol="C0/USDT", price=Decimal(100), min_cost=Decimal(1))}
    paper = PaperExchange(markets=markets, balances={"C0": 10**9})
    ex = nija_guard.guard(paper, load_entrypoints=False, **options)
    ex.load_markets()
    return ex


def _median_us(ex: Any, runs: int) -> float:
    for _ in range(50):
        ex.create_market_sell_order("C0/USDT", 0.01)
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        ex.create_market_sell_order("C0/USDT", 0.01)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def main() -> int:
    runs = 3000
    plain = _median_us(_exchange(), runs)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    traced = _median_us(
        _exchange(tracer_provider=tracer_provider, meter_provider=meter_provider), runs
    )
    spans_per_exit = len(exporter.get_finished_spans()) / (runs + 50)
    results = {
        "no_sdk_exit_us": round(plain, 1),
        "sdk_in_memory_exit_us": round(traced, 1),
        "tracing_cost_us": round(traced - plain, 1),
        "spans_per_exit": round(spans_per_exit, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "otel.json").write_text(json.dumps(results, indent=2))
    print("| measure | value |")
    print("|---|---|")
    print(f"| guarded market sell, no SDK (median) | {results['no_sdk_exit_us']} µs |")
    print(f"| same, SDK + in-memory exporters (median) | {results['sdk_in_memory_exit_us']} µs |")
    print(f"| spans per exit | {results['spans_per_exit']} |")
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
