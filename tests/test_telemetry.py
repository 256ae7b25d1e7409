"""OpenTelemetry: spans, links, context and metrics of guarded exits (with the SDK)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder, wait_until
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import nija_guard
from nija_guard.testing import AsyncPaperExchange, PaperExchange


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def exit_spans(self) -> list[ReadableSpan]:
        return self.spans("nija_guard.exit")

    def children(self, parent: ReadableSpan) -> list[str]:
        assert parent.context is not None
        return [
            s.name
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "nija_guard"
                for metric in scope.metrics:
                    found[metric.name] = list(metric.data.data_points)
        return found

    def counted(self, name: str, **attributes: Any) -> float:
        points = self.metrics().get(name, [])
        wanted = {f"nija_guard.{k}": v for k, v in attributes.items()}
        return sum(p.value for p in points if wanted.items() <= dict(p.attributes).items())


@pytest.fixture
def otel() -> Iterator[Otel]:
    telemetry = Otel()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def guarded(paper: Any, otel: Otel, **options: Any) -> Any:
    return nija_guard.guard(
        paper,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        **{**FAST, **options},
    )


def test_exit_span_attributes_and_stages(otel: Otel) -> None:
    ex = guarded(PaperExchange(balances={"BTC": 1}), otel)
    order = ex.create_market_sell_order("BTC/USDT", 2)
    [span] = otel.exit_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "nija_guard"
    attributes = dict(span.attributes or {})
    assert attributes["nija_guard.symbol"] == "BTC/USDT"
    assert attributes["nija_guard.side"] == "sell"
    assert attributes["nija_guard.requested_amount"] == 2
    assert attributes["nija_guard.amount"] == 1
    assert attributes["nija_guard.outcome"] == "filled"
    assert attributes["nija_guard.exchange"] == "paper"
    assert attributes["nija_guard.account"] == ex.nija_guard.account
    assert attributes["nija_guard.client_order_id"] == order["clientOrderId"]
    assert span.status.status_code == StatusCode.UNSET
    assert {
        "nija_guard.lock_wait",
        "nija_guard.balance_refresh",
        "nija_guard.submit",
        "nija_guard.settlement",
    } <= set(otel.children(span))
    assert [e.name for e in span.events] == ["nija_guard.clamped"]
    ex.nija_guard.close()


def test_the_bots_span_is_the_parent(otel: Otel) -> None:
    ex = guarded(PaperExchange(balances={"BTC": 1}), otel)
    tracer = otel.tracer_provider.get_tracer("bot")
    with tracer.start_as_current_span("bot.tick") as tick:
        ex.create_market_sell_order("BTC/USDT", 0.5)
    [span] = otel.exit_spans()
    assert span.parent is not None and span.parent.span_id == tick.get_span_context().span_id
    ex.nija_guard.close()


def test_one_span_per_sell_call_refused_ones_included_none_for_buys(otel: Otel) -> None:
    paper = PaperExchange(balances={"BTC": 1, "USDT": 100_000})
    ex = guarded(paper, otel)
    ex.create_market_buy_order("BTC/USDT", 0.1)
    ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_market_sell_order("BTC/USDT", -1)
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("ETH/USDT", 1)
    outcomes = [dict(s.attributes or {})["nija_guard.outcome"] for s in otel.exit_spans()]
    assert outcomes == ["resting", "blocked", "invalid", "nothing_to_sell"]
    ex.nija_guard.close()


def test_failures_are_errors_recorded_once(otel: Otel) -> None:
    ex = guarded(PaperExchange(balances={"USDT": 1}), otel)
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 1)
    [span] = otel.exit_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "NothingToSell"
    exceptions = [e for s in otel.spans() for e in s.events if e.name == "exception"]
    assert len(exceptions) == 1
    ex.nija_guard.close()


def test_background_settlement_is_linked_to_its_exit(otel: Otel) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = guarded(paper, otel)
    ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    [exit_span] = otel.exit_spans()
    paper.set_price("BTC/USDT", 61_000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    settlement = [s for s in otel.spans("nija_guard.settlement") if s.parent is None]
    assert len(settlement) == 1
    assert exit_span.context is not None
    assert [link.context.span_id for link in settlement[0].links] == [exit_span.context.span_id]
    assert dict(settlement[0].attributes or {})["nija_guard.outcome"] == "filled"
    ex.nija_guard.close()


def test_hooks_and_broker_calls_run_inside_the_exit(otel: Otel) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    seen: dict[str, Any] = {}

    class Probe:
        @nija_guard.hookimpl
        def nija_guard_order_submitted(self) -> None:
            seen["hook"] = trace.get_current_span().get_span_context()

    original = paper.create_order

    def create_order(*args: Any, **kwargs: Any) -> Any:
        seen["call"] = trace.get_current_span().get_span_context()
        return original(*args, **kwargs)

    paper.create_order = create_order  # type: ignore[method-assign]
    ex = guarded(paper, otel, plugins=[Probe()])
    ex.create_market_sell_order("BTC/USDT", 0.5)
    [exit_span] = otel.exit_spans()
    [submit] = otel.spans("nija_guard.submit")
    assert exit_span.context is not None and submit.context is not None
    assert seen["call"].span_id == submit.context.span_id  # an HTTP instrumentation nests here
    assert seen["hook"].trace_id == exit_span.context.trace_id
    ex.nija_guard.close()


def test_metrics(otel: Otel) -> None:
    paper = PaperExchange(balances={"BTC": 1, "ETH": "0.001"})

    class Broken:
        @nija_guard.hookimpl
        def nija_guard_order_settled(self) -> None:
            raise RuntimeError("plugin bug")

    ex = guarded(paper, otel, plugins=[Broken()], reconcile_timeout=0.05)
    ex.create_market_sell_order("BTC/USDT", 0.2)
    ex.create_market_sell_order("BTC/USDT", 5)  # clamped
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 1)
    with pytest.raises(nija_guard.DustPosition):
        ex.create_market_sell_order("ETH/USDT", 1)
    paper.venue.free["BTC"] = Decimal(1)
    ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert otel.counted("nija_guard.exits", outcome="filled") == 2
    assert otel.counted("nija_guard.exits", outcome="resting") == 1
    assert otel.counted("nija_guard.exits", outcome="nothing_to_sell") == 1
    assert otel.counted("nija_guard.exits.blocked", reason="in_progress") == 1
    assert otel.counted("nija_guard.clamps", reason="holdings") == 1
    assert otel.counted("nija_guard.dust") == 1
    assert otel.counted("nija_guard.hook.errors", hook="nija_guard_order_settled") == 2
    metrics = otel.metrics()
    for histogram in (
        "nija_guard.exit.duration",
        "nija_guard.lock.wait",
        "nija_guard.settlement.latency",
    ):
        assert sum(p.count for p in metrics[histogram]) > 0, histogram
    # Low cardinality: no symbol, account or order id in any metric attribute.
    keys = {k for points in metrics.values() for p in points for k in (p.attributes or {})}
    assert keys <= {
        "nija_guard.exchange",
        "nija_guard.side",
        "nija_guard.outcome",
        "nija_guard.reason",
        "nija_guard.hook",
    }
    ex.nija_guard.close()


def test_unknown_outcomes_are_counted(otel: Otel) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = guarded(paper, otel)
    paper.ghost_next_order()
    ex.create_market_sell_order("BTC/USDT", 0.5)
    assert otel.counted("nija_guard.outcomes.unknown") == 1
    [span] = otel.exit_spans()
    assert "nija_guard.outcome_unknown" in [e.name for e in span.events]
    assert "nija_guard.reconcile" in otel.children(span)
    ex.nija_guard.close()


def test_no_global_provider_is_ever_set(otel: Otel) -> None:
    before = trace.get_tracer_provider()
    ex = guarded(PaperExchange(balances={"BTC": 1}), otel)
    ex.create_market_sell_order("BTC/USDT", 0.5)
    assert trace.get_tracer_provider() is before
    ex.nija_guard.close()


def test_without_an_sdk_everything_is_a_no_op() -> None:
    recording: list[bool] = []

    class Probe:
        @nija_guard.hookimpl
        def nija_guard_order_submitted(self) -> None:
            recording.append(trace.get_current_span().is_recording())

    ex = nija_guard.guard(PaperExchange(balances={"BTC": 1}), **FAST, plugins=[Probe()])
    order = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert order["status"] == "closed"
    assert recording == [False]  # the global, unconfigured provider: nothing recorded
    ex.nija_guard.close()


def test_async_exit_spans_and_detached_tracker(otel: Otel) -> None:
    async def main() -> None:
        paper = AsyncPaperExchange(balances={"BTC": 1})
        tracer = otel.tracer_provider.get_tracer("bot")
        async with guarded(paper, otel) as ex:
            with tracer.start_as_current_span("bot.tick"):
                await ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
                task = ex.nija_guard.driver.tracker._task
                assert task is not None
            paper.set_price("BTC/USDT", 61_000)
            while ex.nija_guard.locked_symbols():
                await asyncio.sleep(0.005)
        [exit_span] = otel.exit_spans()
        assert exit_span.parent is not None  # the bot's span
        settlement = [s for s in otel.spans("nija_guard.settlement") if s.parent is None]
        assert len(settlement) == 1  # not parented on bot.tick by the tracker task

    asyncio.run(main())


SENTINELS = {
    "apiKey": "APIKEY-SENTINEL",
    "secret": "SECRET-SENTINEL",
    "password": "PASSWORD-SENTINEL",
    "uid": "UID-SENTINEL",
    "privateKey": "PRIVATEKEY-SENTINEL",
    "walletAddress": "WALLET-SENTINEL",
    "token": "TOKEN-SENTINEL",
}


def test_secrets_never_reach_spans_metrics_logs_or_hooks(
    otel: Otel, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nija_guard")
    paper = PaperExchange(
        dict(SENTINELS),
        balances={"BTC": 1, "ETH": "0.0001", "USDT": 100_000},
        symbols=("BTC/USDT", "ETH/USDT", "SOL/USDT"),
    )

    class Veto:
        @nija_guard.hookimpl
        def nija_guard_exit_veto(self, exit: Any) -> str | None:
            return "vetoed" if exit.symbol == "ETH/USDT" and exit.type == "limit" else None

    ex = guarded(paper, otel, plugins=[recorder, Veto()], reconcile_timeout=0.05)
    params = dict(SENTINELS)
    ex.create_market_sell_order("BTC/USDT", 0.1, dict(params))  # filled
    ex.create_limit_sell_order("BTC/USDT", 0.1, 90_000, dict(params))  # resting
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.1, dict(params))  # blocked
    with pytest.raises(nija_guard.DustPosition):
        ex.create_market_sell_order("ETH/USDT", 1, dict(params))  # dust
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_limit_sell_order("ETH/USDT", 1, 4000, dict(params))  # vetoed
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("SOL/USDT", 5, dict(params))  # nothing held
    paper.inject("create_order", ccxt.InvalidOrder("filter failure -1013"))
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_market_sell_order(
            "BTC/USDT", 0.1, {"nija_guard": {"on_conflict": "replace"}, **params}
        )
    paper.inject("create_order", ccxt.NetworkError("never arrived"))
    with pytest.raises(ccxt.NetworkError):
        ex.create_market_sell_order(
            "BTC/USDT", 0.1, {"nija_guard": {"on_conflict": "replace"}, **params}
        )
    paper.ghost_next_order()
    ex.create_market_sell_order(
        "BTC/USDT", 0.1, {"nija_guard": {"on_conflict": "replace"}, **params}
    )
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_market_sell_order("BTC/USDT", float("nan"), dict(params))
    ex.nija_guard.close()

    def scan(value: Any, where: str) -> None:
        text = repr(value)
        for sentinel in SENTINELS.values():
            assert sentinel not in text, f"{sentinel} leaked into {where}"

    for span in otel.spans():
        scan(span.name, "a span name")
        scan(dict(span.attributes or {}), f"attributes of {span.name}")
        for event in span.events:
            scan(dict(event.attributes or {}), f"event {event.name} of {span.name}")
        scan(span.status.description, f"status of {span.name}")
    scan(otel.metrics(), "metrics")
    for record in caplog.records:
        scan(record.getMessage(), "a log message")
        scan(getattr(record, "nija_guard", None), "a log record's fields")
    for name, kwargs in recorder.calls:
        for key, value in kwargs.items():
            if key == "order":
                continue  # the exchange's own reply
            scan(value, f"hook {name} argument {key}")
    outcomes = {dict(s.attributes or {}).get("nija_guard.outcome") for s in otel.exit_spans()}
    assert {
        "filled",
        "resting",
        "blocked",
        "dust",
        "vetoed",
        "nothing_to_sell",
        "rejected",
        "not_placed",
        "invalid",
    } <= outcomes


def test_the_console_example_runs() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "tracing_console.py"
    done = subprocess.run(  # noqa: S603 - our own interpreter and file
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    spans = []
    decoder = json.JSONDecoder()
    text, at = done.stdout, 0
    while (start := text.find("{", at)) != -1:
        try:
            value, at = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        if isinstance(value, dict) and "name" in value and "context" in value:
            spans.append(value)
    names = [s["name"] for s in spans]
    assert names.count("nija_guard.exit") == 3
    assert "nija_guard.settlement" in names
    assert "refused:" in done.stdout
