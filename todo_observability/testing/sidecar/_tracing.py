"""The sidecar's own tracing: W3C trace context parsed as strictly as daprd, and its own provider.

Each emulated sidecar has its own `TracerProvider` (resource `service.name` = the app id, sampler
`ParentBased(TraceIdRatioBased(rate))`), never the global one, so its spans are the sidecar hops
in a trace, exported like a real daprd's. Spans are always started from an explicit parent (or
none): the emulator runs in the same process, often the same task, as the app it serves, and must
not pick up the app's current span.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "SidecarTracing",
    "format_traceparent",
    "format_tracestate",
    "parse_traceparent",
]

_HEX = re.compile(r"^[0-9a-f]+$")
_ANY_HEX = re.compile(r"^[0-9a-fA-F]{2}$")
_MAX_TRACESTATE = 512


def parse_traceparent(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The span context in a `traceparent` string, or None when daprd would reject it.

    Like daprd (`SpanContextFromW3CString`): a 2-hex version other than `ff`, exactly four parts
    for version 00, 32 lowercase hex trace id and 16 lowercase hex span id, neither all zeros,
    2-hex flags. Anything else means "no parent".
    """
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or not _ANY_HEX.match(parts[0]):
        return None
    version = int(parts[0], 16)
    if version == 0xFF or (version == 0 and len(parts) != 4):
        return None
    trace_hex, span_hex, flags_hex = parts[1], parts[2], parts[3]
    if len(trace_hex) != 32 or not _HEX.match(trace_hex):
        return None
    if len(span_hex) != 16 or not _HEX.match(span_hex):
        return None
    if not _ANY_HEX.match(flags_hex[:2]) or (version == 0 and len(flags_hex) != 2):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex[:2], 16) & TraceFlags.SAMPLED),
        trace_state=_parse_tracestate(tracestate),
    )


def _parse_tracestate(header: str | None) -> TraceState:
    if not header or len(header) > _MAX_TRACESTATE:
        return TraceState()
    entries: list[tuple[str, str]] = []
    for member in header.split(","):
        member = member.strip()
        if not member:
            continue
        key, sep, value = member.partition("=")
        if not sep or not key or not value:
            return TraceState()  # daprd drops the whole header when one member is invalid
        entries.append((key.strip(), value.strip()))
    try:
        return TraceState(entries)
    except ValueError:
        return TraceState()


def format_traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of `context`, with daprd's flags: `01` (sampled) or `00`.

    OpenTelemetry Python also sets the W3C Level 2 "random" flag (`02`) on the trace ids it
    generates; daprd's Go SDK keeps only the sampled bit, so the emulator writes that alone.
    """
    flags = int(context.trace_flags) & TraceFlags.SAMPLED
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def format_tracestate(context: SpanContext) -> str:
    """The W3C `tracestate` of `context`, or "" (daprd omits it when longer than 512 chars)."""
    header = context.trace_state.to_header() if context.trace_state else ""
    return header if len(header) <= _MAX_TRACESTATE else ""


def http_status_description(status: int) -> str:
    """Daprd's span status description for an HTTP error: `Code(404): Not Found`."""
    try:
        text = HTTPStatus(status).phrase
    except ValueError:
        text = "Unknown"
    return f"Code({status}): {text}"


class SidecarTracing:
    """The tracer of one emulated sidecar.

    Args:
        app_id: Becomes the resource's `service.name`.
        sampling_rate: daprd's `samplingRate`: 0 turns tracing off (no spans, trace headers pass
            through untouched), 1 keeps every trace; a sampled parent is always kept.
        exporter: Where finished spans go (through a `SimpleSpanProcessor`), if anywhere.
        tracer_provider: Use this provider instead (the caller shuts it down).
    """

    def __init__(
        self,
        app_id: str,
        sampling_rate: float,
        *,
        exporter: SpanExporter | None = None,
        tracer_provider: TracerProvider | None = None,
    ):
        self.enabled = sampling_rate > 0
        self._owned = tracer_provider is None
        if tracer_provider is None:
            tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": app_id}),
                sampler=ParentBased(TraceIdRatioBased(sampling_rate)),
            )
        if exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("dapr.sidecar.emulator")

    def start_span(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: Mapping[str, str] | None = None,
    ) -> trace.Span:
        """A span child of `parent` (or a root), never of the caller's current context."""
        ctx = otel_context.Context()
        if parent is not None:
            ctx = trace.set_span_in_context(NonRecordingSpan(parent), ctx)
        return self._tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)

    @staticmethod
    def end_span(span: trace.Span, status: int | None, error: str | None = None) -> None:
        """Set daprd's status for an HTTP answer (error from 400), or for a failure, and end."""
        if status is not None and status >= 400:
            span.set_status(Status(StatusCode.ERROR, http_status_description(status)))
        elif status is None and error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def shutdown(self) -> None:
        """Flush; shut the provider down if this tracing created it."""
        self.provider.force_flush()
        if self._owned:
            self.provider.shutdown()


def trace_headers(span: trace.Span) -> dict[str, str]:
    """`traceparent` (and `tracestate` when there is one) describing `span`."""
    context = span.get_span_context()
    headers = {"traceparent": format_traceparent(context)}
    state = format_tracestate(context)
    if state:
        headers["tracestate"] = state
    return headers


def attributes_of(values: Mapping[str, Any]) -> dict[str, str]:
    """Span attributes from `values`, as strings (daprd's attributes are all strings)."""
    return {key: str(value) for key, value in values.items()}
