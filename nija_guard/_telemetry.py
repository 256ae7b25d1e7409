"""OpenTelemetry: a ``nija_guard.exit`` span per guarded exit, stage spans, and metrics.

Only opentelemetry-api is used: with no SDK configured every call is a no-op.
The guard never sets a global provider; it takes ``tracer_provider=`` and
``meter_provider=`` or uses the global ones.

Spans are started with an explicit parent and never attached across a yield
of the engine, so the same code serves threads and tasks. The exit span's
parent is the bot's current span. Work the guard finishes later in the
background (a settlement found by the tracker, a reconciliation) gets a span
of its own, *linked* to the exit span, never parented on whatever context the
tracker thread or task happened to start in.

Metric attributes are low-cardinality: exchange id, side, outcome, reason,
hook name; never symbols, accounts or order ids.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_api
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from ._model import Exit, Outcome

__all__ = ["EXIT_SPAN", "SCOPE", "Telemetry"]

SCOPE = "nija_guard"
EXIT_SPAN = "nija_guard.exit"
_EMPTY = otel_context.Context()
# The API's stand-ins while no SDK is configured (the proxy's class is private).
_NO_METERS = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider"})
_UNKNOWN = object()


def _unset(api: Any, name: str) -> bool:
    """Whether the API's global provider ``name`` is certainly still unset.

    The API's getters look up an environment variable on every call (half a
    microsecond each); its module global says the same for free. Should a
    future API rename it, the getter is asked instead.
    """
    return getattr(api, name, _UNKNOWN) is None


class Telemetry:
    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        version: str = "",
        exchange: str = "",
    ) -> None:
        self._own_tracer = tracer_provider is not None
        self._own_meter = meter_provider is not None
        self._global_tracing = self._global_metering = False
        # Loads a provider named by OTEL_PYTHON_{TRACER,METER}_PROVIDER, if any, now.
        trace.get_tracer_provider()
        metrics.get_meter_provider()
        self.tracer = trace.get_tracer(SCOPE, version, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, version, meter_provider=meter_provider)
        self.exchange = exchange
        self.exits = meter.create_counter(
            "nija_guard.exits", unit="{exit}", description="Guarded exits, by outcome"
        )
        self.blocked = meter.create_counter(
            "nija_guard.exits.blocked",
            unit="{exit}",
            description="Exits refused or timed out because another exit held the close lock",
        )
        self.clamps = meter.create_counter(
            "nija_guard.clamps", unit="{exit}", description="Exits whose amount was clamped"
        )
        self.dust = meter.create_counter(
            "nija_guard.dust", unit="{exit}", description="Exits refused as dust"
        )
        self.unknown = meter.create_counter(
            "nija_guard.outcomes.unknown",
            unit="{exit}",
            description="Submits whose outcome was unknown and had to be reconciled",
        )
        self.hook_errors = meter.create_counter(
            "nija_guard.hook.errors", unit="{error}", description="Observer hooks that raised"
        )
        self.duration = meter.create_histogram(
            "nija_guard.exit.duration", unit="s", description="Duration of the guarded exit call"
        )
        self.lock_wait = meter.create_histogram(
            "nija_guard.lock.wait", unit="s", description="Time spent waiting for the close lock"
        )
        self.settlement = meter.create_histogram(
            "nija_guard.settlement.latency",
            unit="s",
            description="From submit until the order was final on the exchange",
        )

    # With no SDK anywhere, building spans and metric attributes is pure cost. Until
    # a real global provider is found, each exit looks again: one installed later
    # serves the very next exit. Once found, it is never looked up again:
    # OpenTelemetry's global providers cannot be unset. A provider configured by
    # environment variable is loaded when the guard is made (the getters below).
    def _tracing(self) -> bool:
        """Whether spans can go anywhere: a provider given, or a real global one."""
        if self._own_tracer or self._global_tracing:
            return True
        if _unset(trace, "_TRACER_PROVIDER"):
            return False
        self._global_tracing = not isinstance(
            trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        )
        return self._global_tracing

    def metering(self) -> bool:
        """Whether metrics can go anywhere: a provider given, or a real global one."""
        return self._metering()

    def _metering(self) -> bool:
        if self._own_meter or self._global_metering:
            return True
        if _unset(_metrics_api, "_METER_PROVIDER"):
            return False
        self._global_metering = type(metrics.get_meter_provider()).__name__ not in _NO_METERS
        return self._global_metering

    # -- spans -----------------------------------------------------------------------------
    def start_exit(self, exit: Exit) -> Span:
        """The exit span, child of whatever span is current in the bot's code."""
        if not self._tracing():
            return trace.INVALID_SPAN  # no SDK anywhere: nothing to build, nothing to end
        span = self.tracer.start_span(EXIT_SPAN, kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attributes(
                {
                    "nija_guard.exit_id": exit.exit_id,
                    "nija_guard.symbol": exit.symbol,
                    "nija_guard.side": exit.side,
                    "nija_guard.type": exit.type,
                    "nija_guard.method": exit.method,
                    "nija_guard.exchange": self.exchange,
                    "nija_guard.account": exit.account,
                }
            )
            if exit.requested_amount is not None:
                span.set_attribute("nija_guard.requested_amount", exit.requested_amount)
        return span

    def child(self, parent: Span, name: str) -> Span:
        """A stage of a running exit (lock wait, balance refresh, submit...)."""
        if not parent.is_recording():
            return trace.INVALID_SPAN
        return self.tracer.start_span(name, context=trace.set_span_in_context(parent, _EMPTY))

    def background(self, link_to: SpanContext | None, name: str, exit: Exit) -> Span:
        """A root span for work finished after the exit's call, linked to its exit span."""
        links = [Link(link_to)] if link_to is not None and link_to.is_valid else []
        span = self.tracer.start_span(name, context=_EMPTY, links=links)
        if span.is_recording():
            span.set_attributes(
                {
                    "nija_guard.exit_id": exit.exit_id,
                    "nija_guard.symbol": exit.symbol,
                    "nija_guard.exchange": self.exchange,
                    "nija_guard.account": exit.account,
                }
            )
        return span

    @staticmethod
    def event(span: Span | None, name: str, attributes: Mapping[str, Any]) -> None:
        if span is not None and span.is_recording():
            span.add_event(name, {k: v for k, v in attributes.items() if v is not None})

    def finish_exit(
        self, span: Span, exit: Exit, error: BaseException | None, started: float | None = None
    ) -> None:
        outcome = exit.outcome.value if isinstance(exit.outcome, Outcome) else "error"
        if span.is_recording():
            attributes: dict[str, Any] = {"nija_guard.outcome": outcome}
            for name in ("amount", "client_order_id", "order_id", "reason"):
                value = getattr(exit, name)
                if value is not None:
                    attributes[f"nija_guard.{name}"] = value
            if exit.filled:
                attributes["nija_guard.filled"] = exit.filled
            span.set_attributes(attributes)
            if error is not None:
                # Recorded once, here, on the exit span; stages only end.
                span.set_attribute("error.type", type(error).__name__)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
        if not self._metering():
            return
        attrs = {
            "nija_guard.exchange": self.exchange,
            "nija_guard.side": exit.side,
            "nija_guard.outcome": outcome,
        }
        self.exits.add(1, attrs)
        if started is not None:
            self.duration.record(time.monotonic() - started, attrs)

    # -- metrics -----------------------------------------------------------------------------
    def count(self, instrument: str, **attributes: Any) -> None:
        if not self._metering():
            return
        getattr(self, instrument).add(
            1, {"nija_guard.exchange": self.exchange, **_prefixed(attributes)}
        )

    def record(self, instrument: str, seconds: float, **attributes: Any) -> None:
        if not self._metering():
            return
        getattr(self, instrument).record(
            max(seconds, 0.0), {"nija_guard.exchange": self.exchange, **_prefixed(attributes)}
        )


def _prefixed(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {f"nija_guard.{k}": v for k, v in attributes.items() if v is not None}
