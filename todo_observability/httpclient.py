"""An instrumented httpx client: outgoing calls carry the trace and the correlation ids.

Each request gets a CLIENT span, `traceparent`/`tracestate`, a `baggage` header
holding `request_id` and `user_id`, the `X-Request-ID` header, and client RED
metrics (`http_client_requests_total`, `http_client_request_duration_seconds`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import baggage, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from todo_observability._propagate import propagate, sending_as
from todo_observability.context import (
    BAGGAGE_REQUEST_ID,
    BAGGAGE_USER_ID,
    _current_signals,
    current_context,
)
from todo_observability.metrics import OTHER_METHOD, STANDARD_METHODS
from todo_observability.tracing import _record_exception

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from todo_observability._observability import Observability

__all__ = [
    "AsyncInstrumentedTransport",
    "InstrumentedTransport",
    "create_http_client",
    "inject_correlation",
]


def inject_correlation(
    headers: MutableMapping[str, str],
    span: trace.Span,
    *,
    request_id_header: str = "x-request-id",
    identity: bool = True,
) -> None:
    """Write `span`'s trace context, baggage with the correlation ids, and the request id header.

    `traceparent`/`tracestate` (and any other configured propagator's headers)
    describe `span`. With `identity`, `baggage` carries `request_id` and `user_id` of
    the current unit of work (never values that merely arrived with it) and the request
    id header is set unless `headers` has one; without, neither id leaves.
    """
    ctx = trace.set_span_in_context(span)
    entries = baggage.get_all(ctx)
    # What leaves is this unit of work's word, not what a caller sent in.
    if BAGGAGE_USER_ID in entries:
        ctx = baggage.remove_baggage(BAGGAGE_USER_ID, ctx)
    if BAGGAGE_REQUEST_ID in entries:
        ctx = baggage.remove_baggage(BAGGAGE_REQUEST_ID, ctx)
    request_ctx = current_context()
    if identity and request_ctx is not None:
        ctx = baggage.set_baggage(BAGGAGE_REQUEST_ID, request_ctx.request_id, ctx)
        if request_ctx.user_id is not None:
            ctx = baggage.set_baggage(BAGGAGE_USER_ID, request_ctx.user_id, ctx)
        if request_id_header not in headers:
            headers[request_id_header] = request_ctx.request_id
    propagate.inject(headers, context=ctx)


class _Call:
    """One outgoing request: span, propagation headers, and metrics when it ends."""

    __slots__ = ("method", "metrics", "redactor", "server", "span", "start")

    def __init__(self, request: httpx.Request, observability: Observability | None):
        signals = _current_signals(observability.signals if observability is not None else None)
        tracer = signals.tracer
        self.metrics = signals.metrics
        self.redactor = signals.redactor
        method = request.method
        self.method = method if method in STANDARD_METHODS else OTHER_METHOD
        url = request.url
        self.server = url.host or "unknown"
        self.span = span = tracer.start_span(self.method, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": self.method,
                    "server.address": self.server,
                    "server.port": url.port or (443 if url.scheme == "https" else 80),
                    # Neither the query (api_key=...) nor the user-info goes on the span.
                    "url.full": str(
                        url.copy_with(username=None, password=None, query=None, fragment=None)
                    ),
                }
            )
        # The ids go only where the service says its own live; elsewhere the trace context.
        inject_correlation(
            request.headers,
            span,
            request_id_header=signals.request_id_header,
            identity=signals.is_internal(self.server),
        )
        self.start = time.perf_counter()

    def finish(self, status: int | None, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - self.start
        counter, histogram = self.metrics.client_children(
            self.method, self.server, str(status) if status is not None else "error"
        )
        counter.inc()
        histogram.observe(elapsed)
        span = self.span
        if span.is_recording():
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                message = _record_exception(span, error, self.redactor)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, message))
            elif status is not None and status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class AsyncInstrumentedTransport(httpx.AsyncBaseTransport):
    """An httpx async transport that instruments every request it sends.

    Args:
        transport: The transport that does the I/O (default: `httpx.AsyncHTTPTransport()`).
        observability: Record into this; by default the one serving the current request.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        observability: Observability | None = None,
    ):
        self.transport = transport or httpx.AsyncHTTPTransport()
        self.observability = observability

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` inside a CLIENT span with propagation headers."""
        call = _Call(request, self.observability)
        try:
            with sending_as(call.span):
                response = await self.transport.handle_async_request(request)
        except BaseException as exc:
            call.finish(None, exc)
            raise
        call.finish(response.status_code, None)
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()


class InstrumentedTransport(httpx.BaseTransport):
    """The synchronous counterpart of `AsyncInstrumentedTransport`."""

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        observability: Observability | None = None,
    ):
        self.transport = transport or httpx.HTTPTransport()
        self.observability = observability

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` inside a CLIENT span with propagation headers."""
        call = _Call(request, self.observability)
        try:
            with sending_as(call.span):
                response = self.transport.handle_request(request)
        except BaseException as exc:
            call.finish(None, exc)
            raise
        call.finish(response.status_code, None)
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


def create_http_client(
    *,
    observability: Observability | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose requests carry trace context and correlation ids.

    Args:
        observability: Record into this; by default the one serving the current request.
        transport: The transport that does the I/O (default: httpx's own).
        **kwargs: Passed to `httpx.AsyncClient` (base_url, timeout, headers, ...).
    """
    return httpx.AsyncClient(
        transport=AsyncInstrumentedTransport(transport, observability=observability), **kwargs
    )
