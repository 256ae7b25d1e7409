"""OpenTelemetry: one ``nija_guard.exit`` span per guarded exit, children per stage.

Only opentelemetry-api is used; with no SDK configured every call is a no-op.
Spans are started with an explicit parent and never attached across a yield
of the engine, so the same code serves threads and tasks.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._model import Exit, Outcome

__all__ = ["Telemetry"]

SCOPE = "nija_guard"
EXIT_SPAN = "nija_guard.exit"


class Telemetry:
    def __init__(self, tracer_provider: Any = None, version: str = "") -> None:
        self.tracer = trace.get_tracer(SCOPE, version, tracer_provider=tracer_provider)

    def start_exit(self, exit: Exit) -> Span:
        """The exit span, child of whatever span is current in the bot's code."""
        span = self.tracer.start_span(EXIT_SPAN, kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attributes(
                {
                    "nija_guard.symbol": exit.symbol,
                    "nija_guard.side": exit.side,
                    "nija_guard.account": exit.account,
                    "nija_guard.method": exit.method,
                }
            )
            if exit.requested_amount is not None:
                span.set_attribute("nija_guard.requested_amount", exit.requested_amount)
        return span

    def child(self, parent: Span | None, name: str) -> Span:
        if parent is None or not parent.is_recording():
            return trace.INVALID_SPAN
        ctx = trace.set_span_in_context(parent, otel_context.Context())
        return self.tracer.start_span(name, context=ctx)

    def finish_exit(self, span: Span, exit: Exit, error: BaseException | None = None) -> None:
        if span.is_recording():
            if exit.amount is not None:
                span.set_attribute("nija_guard.amount", exit.amount)
            if exit.client_order_id:
                span.set_attribute("nija_guard.client_order_id", exit.client_order_id)
            if exit.order_id:
                span.set_attribute("nija_guard.order_id", exit.order_id)
            outcome = exit.outcome.value if isinstance(exit.outcome, Outcome) else "error"
            span.set_attribute("nija_guard.outcome", outcome)
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
