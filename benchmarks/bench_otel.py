"""Exit overhead with no OpenTelemetry SDK, and with the SDK and in-memory exporters.

Run with ``python benchmarks/run.py --only otel`` (or this file).
"""

from __future__ import annotations

import sys
from typing import Any

from _common import interleaved_us, paper
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import nija_guard


def _exchange(**options: Any) -> Any:
    ex = nija_guard.guard(paper(1), load_entrypoints=False, **options)
    ex.load_markets()
    for _ in range(50):
        ex.create_market_sell_order("C0/USDT", 0.01)
    return ex


def otel(quick: bool = False) -> dict[str, Any]:
    """Extra row: what tracing costs per exit (the guard only: the others emit nothing)."""
    runs = 300 if quick else 3000
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    plain = _exchange()
    traced = _exchange(tracer_provider=tracer_provider, meter_provider=meter_provider)
    exporter.clear()
    timings = interleaved_us(
        {
            "no_sdk": lambda: plain.create_market_sell_order("C0/USDT", 0.01),
            "sdk": lambda: traced.create_market_sell_order("C0/USDT", 0.01),
        },
        runs,
    )
    done = timings["sdk"]["samples"]
    spans_per_exit = len(exporter.get_finished_spans()) / done
    plain.nija_guard.close()
    traced.nija_guard.close()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    no_sdk, sdk = timings["no_sdk"]["median"], timings["sdk"]["median"]
    return {
        "title": "OpenTelemetry cost",
        "rows": [
            {
                "measure": "market sell with the OpenTelemetry SDK + in-memory exporters (median)",
                "conditions": f"sync, PaperExchange latency 0, {done} sells each, interleaved",
                "raw": "n/a",
                "baseline": "n/a",
                "guard": f"{sdk:.1f} µs",
                "note": f"guard without an SDK {no_sdk:.1f} µs; tracing costs "
                f"{sdk - no_sdk:.1f} µs, {spans_per_exit:.2f} spans per exit",
            }
        ],
        "data": {
            "timings_us": timings,
            "tracing_cost_us": round(sdk - no_sdk, 1),
            "spans_per_exit": round(spans_per_exit, 2),
        },
    }


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "otel", *sys.argv[1:]]))
