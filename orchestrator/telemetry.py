"""OpenTelemetry tracing. One trace covers a lifecycle: the API's accept span is its root (or continues the
caller's ``traceparent``), and the generator, the webhook attempts and the callback open child spans of the
trace context stored with the lifecycle and carried in the Kafka headers. The webhook request carries its
span's ``traceparent`` to the customer's backend, which can send it back with the callback.

Spans are recorded in every process; they are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
(OTLP over HTTP, configured by the standard ``OTEL_*`` variables), so by default this costs next to nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
provider: TracerProvider | None = None


def setup() -> None:
    """Install the tracer provider once per process (called when the lifecycle app is ready)."""
    global provider
    if provider is not None:
        return
    process = os.environ.get("PROCESS_NAME") or "app"
    provider = TracerProvider(resource=Resource.create({"service.name": f"lifecycle-orchestrator-{process}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


@contextlib.contextmanager
def span(name: str, *, parent: str | None = None, **attributes: str | int | float) -> Iterator[str]:
    """Run the block in a new span, a child of ``parent`` (a traceparent; the current span if None).
    Yields the new span's own ``traceparent``, to hand on to the next hop."""
    context = _propagator.extract({"traceparent": parent}) if parent else None
    tracer = trace.get_tracer("orchestrator")
    with tracer.start_as_current_span(name, context=context, attributes=attributes):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        yield carrier.get("traceparent", parent or "")
