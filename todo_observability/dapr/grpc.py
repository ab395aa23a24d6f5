"""Trace propagation for the Dapr Python SDK's `DaprClient`, over gRPC and HTTP.

`DaprClient` talks gRPC to its sidecar for everything except service
invocation, which goes over HTTP by default. Its `headers_callback` reaches the
HTTP requests only, so the gRPC calls (publish, state, jobs, ...) need a client
interceptor. This module provides both halves:

- `TracingClientInterceptor` (and `AsyncTracingClientInterceptor` for
  `dapr.aio.clients.DaprClient`) adds `traceparent`/`tracestate`, a `baggage`
  entry carrying the SDK's `request_id` and `user_id`, and `x-request-id` to the
  metadata of every call. daprd reads `traceparent` when `grpc-trace-bin` is
  absent. On `PublishEvent` it also sets `cloudevent.traceparent` and
  `cloudevent.tracestate` in the request's metadata: the only way the
  producer's context reaches the CloudEvent when the sidecar's tracing is off.
- `headers_callback` gives the HTTP path the same headers.
- `instrumented_dapr_client()` builds a `DaprClient` with both.

```python
with instrumented_dapr_client() as dapr:
    dapr.publish_event("pubsub", "task-created", payload, data_content_type="application/json")
```
"""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

from opentelemetry import baggage, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from todo_observability._propagate import propagate
from todo_observability.context import (
    BAGGAGE_REQUEST_ID,
    BAGGAGE_USER_ID,
    get_request_id,
    get_user_id,
)
from todo_observability.exceptions import ConfigurationError, MissingExtraError

try:
    # grpc ships no type information: without stubs it is Any here (the
    # unused-ignore code keeps these lines clean once stubs or an override exist).
    import grpc  # type: ignore[import-untyped, unused-ignore]
    import grpc.aio  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - grpcio comes with the dapr extra
    raise MissingExtraError(__name__, "dapr", "grpcio") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from dapr.aio.clients import DaprClient as AsyncDaprClient
    from dapr.clients import DaprClient
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

__all__ = [
    "REQUEST_ID_HEADER",
    "AsyncTracingClientInterceptor",
    "TracingClientInterceptor",
    "headers_callback",
    "instrumented_async_dapr_client",
    "instrumented_dapr_client",
]

REQUEST_ID_HEADER = "x-request-id"
"""The metadata key (gRPC) and header (HTTP) that carries the request id by default."""

_TRACER_NAME = "todo_observability"
_PUBLISH_REQUEST = "dapr.proto.runtime.v1.PublishEventRequest"
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
_CE_TRACEPARENT = "cloudevent.traceparent"
_CE_TRACESTATE = "cloudevent.tracestate"

_Metadata: TypeAlias = "list[tuple[str, str | bytes]]"
_HEADER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class _Propagation:
    """What every interceptor and the headers callback share: which context to send, and how."""

    __slots__ = ("_cloudevent_context", "_request_id_header", "_tracer")

    def __init__(
        self,
        *,
        client_spans: bool,
        tracer_provider: TracerProvider | None,
        request_id_header: str,
        cloudevent_context: bool,
    ):
        if not _HEADER_NAME.fullmatch(request_id_header) or request_id_header.lower().endswith(
            "-bin"
        ):
            raise ConfigurationError(
                "request_id_header must be a header name of letters, digits, '-', '_' and '.' "
                f"(and not a binary '-bin' key), got {request_id_header!r}.",
                field="request_id_header",
                value=request_id_header,
            )
        # gRPC rejects metadata keys with capitals; HTTP header names ignore case.
        self._request_id_header = request_id_header.lower()
        self._cloudevent_context = cloudevent_context
        self._tracer = (
            trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
            if client_spans
            else None
        )

    def carrier(self, span: Span | None = None) -> dict[str, str]:
        """The headers to send: the propagator's output for `span` (or the current span) and the request id."""
        ctx: Context | None = trace.set_span_in_context(span) if span is not None else None
        request_id = get_request_id()
        if request_id is not None:
            ctx = baggage.set_baggage(BAGGAGE_REQUEST_ID, request_id, ctx)
        user_id = get_user_id()
        if user_id is not None:
            ctx = baggage.set_baggage(BAGGAGE_USER_ID, user_id, ctx)
        carrier: dict[str, str] = {}
        # The configured propagators (W3C trace context and baggage by default) write
        # nothing for an invalid span context and an empty baggage.
        propagate.inject(carrier, context=ctx)
        if request_id is not None:
            carrier[self._request_id_header] = request_id
        return carrier

    def start_span(self, method: str) -> Span | None:
        """A CLIENT span for one RPC, when client spans are on."""
        if self._tracer is None:
            return None
        name = method.lstrip("/")
        service, _, rpc_method = name.rpartition("/")
        return self._tracer.start_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method},
        )

    def prepare(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, request: Any, span: Span | None
    ) -> tuple[_Metadata | None, Any]:
        """The call's metadata with the propagation keys added (None: unchanged), and the request to send."""
        carrier = self.carrier(span)
        if not carrier:
            return None, request
        pairs: _Metadata = list(metadata) if metadata is not None else []
        present = {key.lower(): value for key, value in pairs}
        added = False
        for key, value in carrier.items():
            lowered = key.lower()
            if lowered not in present:
                pairs.append((lowered, value))
                present[lowered] = value
                added = True
        if self._cloudevent_context:
            request = _with_cloudevent_context(request, present)
        return (pairs if added else None), request


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value


def _with_cloudevent_context(request: Any, sent: dict[str, str | bytes]) -> Any:
    """A copy of a `PublishEventRequest` whose metadata names the producer's context, else `request`.

    daprd copies `cloudevent.traceparent`/`cloudevent.tracestate` into the
    CloudEvent whether or not its own tracing is on; with a raw payload there is
    no CloudEvent, and the plain `traceparent`/`tracestate` keys become broker
    headers instead. Keys the caller set are never replaced, and a caller who
    set the traceparent key keeps the tracestate key theirs too.
    """
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None or descriptor.full_name != _PUBLISH_REQUEST:
        return request
    traceparent = _text(sent.get(_TRACEPARENT))
    if not traceparent:
        return request
    tracestate = _text(sent.get(_TRACESTATE))
    event_metadata = request.metadata
    wanted: dict[str, str] = {}
    if _CE_TRACEPARENT not in event_metadata:
        wanted[_CE_TRACEPARENT] = traceparent
        if tracestate and _CE_TRACESTATE not in event_metadata:
            wanted[_CE_TRACESTATE] = tracestate
    if (
        event_metadata.get("rawPayload", "").lower() == "true"
        and _TRACEPARENT not in event_metadata
    ):
        wanted[_TRACEPARENT] = traceparent
        if tracestate and _TRACESTATE not in event_metadata:
            wanted[_TRACESTATE] = tracestate
    if not wanted:
        return request
    # The caller's message may be reused (the SDK's retry policy sends the same one
    # again), so it is copied rather than changed behind the caller's back.
    copy = type(request)()
    copy.CopyFrom(request)
    for key, value in wanted.items():
        copy.metadata[key] = value
    return copy


def _method_name(method: str | bytes) -> str:
    # grpc.aio passes the method as bytes, the synchronous stack as str.
    return method.decode("ascii", errors="replace") if isinstance(method, bytes) else method


def _end_span(span: Span, code: Any, error: BaseException | None = None) -> None:
    """Record the gRPC status `code` (a `grpc.StatusCode`, or None if unknown) and end `span`."""
    try:
        if error is not None:
            span.record_exception(error)
        if code is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not None and code is not grpc.StatusCode.OK:
            span.set_attribute("error.type", code.name)
            span.set_status(Status(StatusCode.ERROR, code.name))
        elif error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(error)))
    finally:
        span.end()


def _end_span_with_outcome(span: Span, outcome: Any) -> None:
    """Done-callback of a synchronous call: `outcome` is a finished `grpc.Call`/`grpc.Future`."""
    code = None
    try:
        code = outcome.code()
    finally:
        _end_span(span, code)


class _ClientCallDetails(grpc.ClientCallDetails):  # type: ignore[misc, unused-ignore]
    """`details` with other metadata (grpc's own implementation is private)."""

    def __init__(self, details: Any, metadata: _Metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = getattr(details, "compression", None)


class TracingClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc, unused-ignore]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc, unused-ignore]
):
    """A gRPC client interceptor that sends the current trace and correlation ids with every call.

    Each call's metadata gets `traceparent` and `tracestate` (from the configured
    OpenTelemetry propagators; nothing when there is no valid span context),
    `baggage` with `request_id` and `user_id` of the current unit of work, and
    `x-request-id`. A key the caller already set is left as it is. A
    `PublishEventRequest` is sent as a copy whose metadata also holds
    `cloudevent.traceparent` and `cloudevent.tracestate` (unless the caller set
    them), so subscribers see the producer's context even when the sidecar's
    tracing is off; with `rawPayload=true`, `traceparent` and `tracestate` too.

    Pass it to `dapr.clients.DaprClient(interceptors=[...])` or
    `grpc.intercept_channel`; `instrumented_dapr_client()` does it for you.

    Args:
        client_spans: Also record one CLIENT span per unary call, named after the
            method (`dapr.proto.runtime.v1.Dapr/PublishEvent`), with `rpc.system`,
            `rpc.service`, `rpc.method` and `rpc.grpc.status_code`; the span is
            then the parent sent to the sidecar. Streaming calls only propagate.
        tracer_provider: Where those spans go (default: the global provider).
        request_id_header: The metadata key of the request id.
        cloudevent_context: Set the `cloudevent.*` trace keys on `PublishEvent` requests.
    """

    def __init__(
        self,
        *,
        client_spans: bool = False,
        tracer_provider: TracerProvider | None = None,
        request_id_header: str = REQUEST_ID_HEADER,
        cloudevent_context: bool = True,
    ):
        self._propagation = _Propagation(
            client_spans=client_spans,
            tracer_provider=tracer_provider,
            request_id_header=request_id_header,
            cloudevent_context=cloudevent_context,
        )

    def _details(self, details: Any, request: Any, span: Span | None) -> tuple[Any, Any]:
        metadata, request = self._propagation.prepare(details.metadata, request, span)
        if metadata is not None:
            details = _ClientCallDetails(details, metadata)
        return details, request

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the propagation metadata to a unary call (and time it in a span, if enabled)."""
        span = self._propagation.start_span(_method_name(client_call_details.method))
        try:
            details, request = self._details(client_call_details, request, span)
            outcome = continuation(details, request)
        except BaseException as exc:
            if span is not None:
                _end_span(span, None, exc)
            raise
        if span is not None:
            # A blocking call's outcome is already done and runs the callback at once;
            # a `.future()` call runs it on grpc's thread when the RPC completes.
            outcome.add_done_callback(partial(_end_span_with_outcome, span))
        return outcome

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the propagation metadata to a server-streaming call."""
        details, request = self._details(client_call_details, request, None)
        return continuation(details, request)


class AsyncTracingClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc, unused-ignore]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc, unused-ignore]
):
    """The `grpc.aio` counterpart of `TracingClientInterceptor`, for `dapr.aio.clients.DaprClient`.

    grpc.aio runs interceptors in a task created when the call is made, so they
    see the caller's OpenTelemetry context and correlation ids.

    Args:
        client_spans: Also record one CLIENT span per unary call (see `TracingClientInterceptor`).
        tracer_provider: Where those spans go (default: the global provider).
        request_id_header: The metadata key of the request id.
        cloudevent_context: Set the `cloudevent.*` trace keys on `PublishEvent` requests.
    """

    def __init__(
        self,
        *,
        client_spans: bool = False,
        tracer_provider: TracerProvider | None = None,
        request_id_header: str = REQUEST_ID_HEADER,
        cloudevent_context: bool = True,
    ):
        self._propagation = _Propagation(
            client_spans=client_spans,
            tracer_provider=tracer_provider,
            request_id_header=request_id_header,
            cloudevent_context=cloudevent_context,
        )

    def _details(self, details: Any, request: Any, span: Span | None) -> tuple[Any, Any]:
        metadata, request = self._propagation.prepare(details.metadata, request, span)
        if metadata is not None:
            details = grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                grpc.aio.Metadata(*metadata),
                details.credentials,
                details.wait_for_ready,
            )
        return details, request

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the propagation metadata to a unary call (and time it in a span, if enabled)."""
        span = self._propagation.start_span(_method_name(client_call_details.method))
        if span is None:
            details, request = self._details(client_call_details, request, None)
            return await continuation(details, request)
        try:
            details, request = self._details(client_call_details, request, span)
            call = await continuation(details, request)
            # The status arrives with the response; a failed call reports it here
            # rather than raising (the caller's `await` raises AioRpcError).
            code = await call.code()
        except BaseException as exc:  # cancellation included: the span must still end
            _end_span(span, None, exc)
            raise
        _end_span(span, code)
        return call

    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the propagation metadata to a server-streaming call."""
        details, request = self._details(client_call_details, request, None)
        return await continuation(details, request)


_DEFAULT_PROPAGATION = _Propagation(
    client_spans=False,
    tracer_provider=None,
    request_id_header=REQUEST_ID_HEADER,
    cloudevent_context=False,
)


def headers_callback() -> dict[str, str]:
    """The propagation headers for the current context, for `DaprClient(headers_callback=headers_callback)`.

    The SDK calls it before each HTTP request it sends (service invocation):
    `traceparent` and `tracestate` when there is a valid span context, `baggage`
    with the request and user ids, and `x-request-id`. The SDK merges these over
    the headers of the call with `dict.update` and never shows them to the
    callback, so they replace a header spelled the same way (lowercase) passed
    in `invoke_method(metadata=...)`.

    Returns:
        Lowercase header names and their values; empty outside any trace or unit of work.
    """
    return _DEFAULT_PROPAGATION.carrier()


def _merged_headers_callback(
    propagation: _Propagation, user_callback: Callable[[], dict[str, str]] | None
) -> Callable[[], dict[str, str]]:
    if user_callback is None:
        return propagation.carrier

    def callback() -> dict[str, str]:
        # The application's own headers win over the propagated ones.
        return {**propagation.carrier(), **user_callback()}

    return callback


def _instrument(
    kwargs: dict[str, Any],
    interceptor: TracingClientInterceptor | AsyncTracingClientInterceptor,
    request_id_header: str,
) -> dict[str, Any]:
    # Innermost (last): it sees the metadata the caller and the application's own
    # interceptors set, so it never adds a key twice.
    kwargs["interceptors"] = [*(kwargs.get("interceptors") or ()), interceptor]
    propagation = _Propagation(
        client_spans=False,
        tracer_provider=None,
        request_id_header=request_id_header,
        cloudevent_context=False,
    )
    kwargs["headers_callback"] = _merged_headers_callback(
        propagation, kwargs.get("headers_callback")
    )
    return kwargs


def instrumented_dapr_client(
    *,
    client_spans: bool = False,
    tracer_provider: TracerProvider | None = None,
    request_id_header: str = REQUEST_ID_HEADER,
    **kwargs: Any,
) -> DaprClient:
    """A `dapr.clients.DaprClient` whose gRPC and HTTP calls carry the trace and the correlation ids.

    Appends a `TracingClientInterceptor` to `interceptors` and wraps
    `headers_callback` (the application's headers win over the propagated ones).
    Like `DaprClient` itself, it blocks until the sidecar answers
    `GET /v1.0/healthz/outbound` (`DAPR_HEALTH_TIMEOUT`, 60 s by default).

    Args:
        client_spans: Record a CLIENT span per gRPC call (see `TracingClientInterceptor`).
        tracer_provider: Where those spans go (default: the global provider).
        request_id_header: The metadata key and header of the request id.
        **kwargs: Passed to `DaprClient` (`address`, `interceptors`, `headers_callback`, ...).

    Returns:
        The client; close it (`with` or `close()`) when done.

    Raises:
        MissingExtraError: the `dapr` package is not installed.
    """
    try:
        from dapr.clients import DaprClient
    except ImportError as exc:
        raise MissingExtraError("instrumented_dapr_client()", "dapr", "dapr") from exc
    interceptor = TracingClientInterceptor(
        client_spans=client_spans,
        tracer_provider=tracer_provider,
        request_id_header=request_id_header,
    )
    return DaprClient(**_instrument(kwargs, interceptor, request_id_header))


def instrumented_async_dapr_client(
    *,
    client_spans: bool = False,
    tracer_provider: TracerProvider | None = None,
    request_id_header: str = REQUEST_ID_HEADER,
    **kwargs: Any,
) -> AsyncDaprClient:
    """The `dapr.aio.clients.DaprClient` counterpart of `instrumented_dapr_client`.

    Create it inside a coroutine, on the event loop that will use it (the client
    opens a `grpc.aio` channel). Its constructor waits for the sidecar's health
    endpoint synchronously, like the sync client's.

    Args:
        client_spans: Record a CLIENT span per gRPC call.
        tracer_provider: Where those spans go (default: the global provider).
        request_id_header: The metadata key and header of the request id.
        **kwargs: Passed to `dapr.aio.clients.DaprClient`.

    Returns:
        The client; close it (`async with` or `await close()`) when done.

    Raises:
        MissingExtraError: the `dapr` package is not installed.
    """
    try:
        from dapr.aio.clients import DaprClient as AsyncDaprClient
    except ImportError as exc:
        raise MissingExtraError("instrumented_async_dapr_client()", "dapr", "dapr") from exc
    interceptor = AsyncTracingClientInterceptor(
        client_spans=client_spans,
        tracer_provider=tracer_provider,
        request_id_header=request_id_header,
    )
    return AsyncDaprClient(**_instrument(kwargs, interceptor, request_id_header))
