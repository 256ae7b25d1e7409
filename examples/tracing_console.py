"""Trace guarded exits to the console: python examples/tracing_console.py

Needs opentelemetry-sdk (pip install opentelemetry-sdk). Runs offline against
the paper exchange: one clamped sell, one refused duplicate, one resting order
settled in the background (its settlement span links to its exit span).
"""

from __future__ import annotations

import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import nija_guard
from nija_guard.testing import PaperExchange

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
meter_provider = MeterProvider(metric_readers=[reader])

paper = PaperExchange(balances={"BTC": 1, "ETH": 2})
exchange = nija_guard.guard(
    paper,
    tracer_provider=tracer_provider,  # never set globally by the guard
    meter_provider=meter_provider,
    load_entrypoints=False,
    poll_interval=0.05,
)

tracer = tracer_provider.get_tracer("my-bot")
with tracer.start_as_current_span("bot.tick"):  # the exit spans are its children
    exchange.create_market_sell_order("ETH/USDT", 5)  # clamped to the 2 held
    exchange.create_limit_sell_order("BTC/USDT", 0.5, 60_000)  # rests, holds the lock
    try:
        exchange.create_market_sell_order("BTC/USDT", 0.5)
    except nija_guard.ExitInProgress as refused:
        print("refused:", refused)

paper.set_price("BTC/USDT", 61_000)  # the resting order fills; the tracker settles it
while exchange.nija_guard.locked_symbols():
    time.sleep(0.01)

exchange.nija_guard.close()
meter_provider.force_flush()
tracer_provider.shutdown()
meter_provider.shutdown()
