"""OpenTelemetry spans for the pipeline stages, off and free unless asked.

Spans are recorded only when the optional ``otel`` extra is installed
(``pip install 'aimesh[otel]'``) and an OTLP/HTTP endpoint is configured
(``AIMESH_OTEL_ENDPOINT``, or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``).
Otherwise :data:`enabled` is False, callers skip even reading the clock, and
OpenTelemetry is never imported.

Every stage span of a message (admit, budget.reserve, queue, route,
deliver, budget.settle) belongs to the message's W3C trace (its
``trace_id``, from the agent's ``traceparent`` or made at admission), so an
agent's trace shows what AiMesh did with its call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

log = logging.getLogger("aimesh.telemetry")

#: True once :func:`configure` set up an exporter.
enabled = False
_tracer: Any = None
_provider: Any = None


def configure(endpoint: str | None = None, service_name: str = "aimesh") -> bool:
    """Export spans to ``endpoint`` (OTLP over HTTP, e.g.
    ``http://collector:4318``); answer whether tracing is on."""
    global enabled, _tracer, _provider
    endpoint = (
        endpoint
        or os.environ.get("AIMESH_OTEL_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "an OTLP endpoint is configured but OpenTelemetry is not installed: "
            "pip install 'aimesh[otel]'; tracing stays off"
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer, enabled = provider, provider.get_tracer("aimesh"), True
    log.info("OpenTelemetry spans exported to %s", endpoint)
    return True


def shutdown() -> None:
    """Flush and stop the exporter (at server exit)."""
    global enabled, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    enabled, _tracer, _provider = False, None, None


def now_ns() -> int:
    return time.time_ns()


def record(
    name: str, trace_id: str, message_id: str, start_ns: int, end_ns: int, **attributes: Any
) -> None:
    """One finished stage of one message as a span of the message's trace.
    Callers check :data:`enabled` first."""
    if _tracer is None or len(trace_id) != 32:
        return
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    # The stages are siblings under one parent per message, whose id is
    # derived from the message id (stable across the message's stages).
    digest = hashlib.blake2b(message_id.encode(), digest_size=8).digest()
    parent_id = int.from_bytes(digest, "big") or 1
    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=parent_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    attributes["aimesh.message_id"] = message_id
    span = _tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes)
    span.end(end_time=end_ns)
