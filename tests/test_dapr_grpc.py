"""The Dapr SDK's `DaprClient` carries the trace and the correlation ids, over gRPC and HTTP.

As in the python-sdk's own tests, the sidecar is faked with a real `grpc.server`
implementing the generated `DaprServicer` (recording each call's metadata and
request) and a stdlib HTTP server answering the health probe the client
constructor waits for and recording service invocations.
"""

from __future__ import annotations

import asyncio
import contextvars
import http.server
import json
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dapr.proto.runtime.v1 as api_v1
import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
from dapr.clients import Job
from dapr.clients.exceptions import DaprGrpcError
from dapr.conf import settings
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from google.protobuf import empty_pb2  # type: ignore[import-untyped, unused-ignore]
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from prometheus_client import CollectorRegistry

from examples import dapr_grpc_client
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.dapr.grpc import (
    AsyncTracingClientInterceptor,
    TracingClientInterceptor,
    headers_callback,
    instrumented_async_dapr_client,
    instrumented_dapr_client,
)
from todo_observability.exceptions import ConfigurationError, MissingExtraError
from todo_observability.testing import LogCapture

PUBLISH = "/dapr.proto.runtime.v1.Dapr/PublishEvent"
SAVE_STATE = "/dapr.proto.runtime.v1.Dapr/SaveState"
SCHEDULE_JOB = "/dapr.proto.runtime.v1.Dapr/ScheduleJob"
SCHEDULE_JOB_ALPHA1 = "/dapr.proto.runtime.v1.Dapr/ScheduleJobAlpha1"
SUBSCRIBE_CONFIGURATION = "/dapr.proto.runtime.v1.Dapr/SubscribeConfiguration"
PROPAGATED = ("traceparent", "tracestate", "baggage", "x-request-id")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


# --- the fake sidecar -------------------------------------------------------


@dataclass
class GrpcCall:
    """One RPC as the fake sidecar received it."""

    method: str
    metadata: list[tuple[str, str]]
    request: Any

    def values(self, key: str) -> list[str]:
        return [value for name, value in self.metadata if name == key]

    def one(self, key: str) -> str:
        values = self.values(key)
        assert len(values) == 1, f"{key}: {values}"
        return values[0]


class FakeDapr(dapr_pb2_grpc.DaprServicer):
    """The RPCs these tests make; publishing to topic `missing` fails with NOT_FOUND."""

    def __init__(self) -> None:
        self.calls: list[GrpcCall] = []
        self._lock = threading.Lock()

    def _record(self, method: str, request: Any, context: Any) -> None:
        metadata = [(item.key, item.value) for item in context.invocation_metadata()]
        with self._lock:
            self.calls.append(GrpcCall(method, metadata, request))

    def PublishEvent(self, request: Any, context: Any) -> Any:
        self._record(PUBLISH, request, context)
        if request.topic == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such topic")
        return empty_pb2.Empty()

    def SaveState(self, request: Any, context: Any) -> Any:
        self._record(SAVE_STATE, request, context)
        return empty_pb2.Empty()

    def ScheduleJob(self, request: Any, context: Any) -> Any:
        self._record(SCHEDULE_JOB, request, context)
        return api_v1.ScheduleJobResponse()

    def ScheduleJobAlpha1(self, request: Any, context: Any) -> Any:
        # Builds of the dapr package whose client has only the alpha Jobs RPCs call this one.
        self._record(SCHEDULE_JOB_ALPHA1, request, context)
        return api_v1.ScheduleJobResponse()

    def SubscribeConfiguration(self, request: Any, context: Any) -> Iterator[Any]:
        self._record(SUBSCRIBE_CONFIGURATION, request, context)
        yield api_v1.SubscribeConfigurationResponse(id="subscription-1")

    def only(self, method: str) -> GrpcCall:
        calls = [call for call in self.calls if call.method == method]
        assert len(calls) == 1, [call.method for call in self.calls]
        return calls[0]


def dapr_stub(channel: Any) -> Any:
    """The generated client stub (the generated module has no annotations)."""
    return dapr_pb2_grpc.DaprStub(channel)  # type: ignore[no-untyped-call]


@dataclass
class HttpCall:
    """One HTTP request (other than the health probe) as the fake sidecar received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def one(self, key: str) -> str:
        values = [value for name, value in self.headers if name.lower() == key]
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    def has(self, key: str) -> bool:
        return any(name.lower() == key for name, _ in self.headers)


@dataclass
class Sidecar:
    grpc_address: str
    http_endpoint: str
    dapr: FakeDapr
    http_calls: list[HttpCall] = field(default_factory=list)
    health_probes: int = 0

    def channel(self, *interceptors: Any) -> Any:
        return grpc.intercept_channel(grpc.insecure_channel(self.grpc_address), *interceptors)


def _http_handler(sidecar: Sidecar) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1.0/healthz/outbound":
                sidecar.health_probes += 1
                self.send_response(204)
                self.end_headers()
                return
            self._record()

        def do_POST(self) -> None:
            self._record()

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            sidecar.http_calls.append(
                HttpCall(self.command, self.path, list(self.headers.items()), body)
            )
            payload = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler


@pytest.fixture
def sidecar(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sidecar]:
    """A fake daprd: gRPC API on one port, HTTP (health, invocation) on another."""
    executor = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(executor)
    servicer = FakeDapr()
    dapr_pb2_grpc.add_DaprServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    http_server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler
    )
    http_server.daemon_threads = False  # server_close() joins the request threads
    fake = Sidecar(
        grpc_address=f"127.0.0.1:{grpc_port}",
        http_endpoint=f"http://127.0.0.1:{http_server.server_address[1]}",
        dapr=servicer,
    )
    http_server.RequestHandlerClass = _http_handler(fake)
    http_thread = threading.Thread(
        target=http_server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-daprd-http"
    )
    http_thread.start()

    # Builds of dapr 1.19 differ: some read the environment once at import, some at each
    # use. An attribute assigned on `settings` wins in both, so assign every one we rely on
    # (monkeypatch restores them), and mirror the endpoints in the environment.
    from dapr.conf import global_settings

    values = {
        "DAPR_HTTP_ENDPOINT": fake.http_endpoint,
        "DAPR_GRPC_ENDPOINT": fake.grpc_address,
        "DAPR_HEALTH_TIMEOUT": 5,
        "DAPR_API_TOKEN": None,
        "DAPR_API_METHOD_INVOCATION_PROTOCOL": "http",
        "DAPR_API_MAX_RETRIES": getattr(global_settings, "DAPR_API_MAX_RETRIES", 0),
    }
    for name, value in values.items():
        monkeypatch.setattr(settings, name, value, raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", fake.http_endpoint)
    monkeypatch.setenv("DAPR_GRPC_ENDPOINT", fake.grpc_address)
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "5")
    try:
        yield fake
    finally:
        http_server.shutdown()
        http_server.server_close()
        http_thread.join()
        server.stop(grace=None).wait()
        executor.shutdown(wait=True)


@pytest.fixture
def dapr_event_loops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close the event loops the sync `invoke_method` creates and leaves open.

    dapr's synchronous HTTP invocation runs `asyncio.new_event_loop()` and
    `set_event_loop()` on each call and never closes the loop; its garbage
    collection would raise a ResourceWarning in some later test.
    """
    created: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop

    def tracked() -> asyncio.AbstractEventLoop:
        loop = real()
        created.append(loop)
        return loop

    monkeypatch.setattr(asyncio, "new_event_loop", tracked)
    yield
    if created:
        asyncio.set_event_loop(None)
    for loop in created:
        loop.close()


# --- tracing and the unit of work -------------------------------------------


@dataclass
class Tracing:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests")

    def finished(self, name: str) -> ReadableSpan:
        spans = [span for span in self.exporter.get_finished_spans() if span.name == name]
        assert len(spans) == 1, [span.name for span in self.exporter.get_finished_spans()]
        return spans[0]


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    """A tracer provider of this test only (the global one is never set)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider, exporter)
    provider.shutdown()


@contextmanager
def unit_of_work(request_id: str, user_id: str | None = None) -> Iterator[None]:
    """What the middleware does for a request: a current request id and user id."""
    token = _enter_context(RequestContext(request_id, user_id))
    try:
        yield
    finally:
        _exit_context(token)


def ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parse_traceparent(value: str) -> tuple[str, str]:
    match = TRACEPARENT.fullmatch(value)
    assert match is not None, value
    return match.group(1), match.group(2)


def baggage_of(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(","))


# --- gRPC: publish ------------------------------------------------------------


def test_publish_event_carries_current_span_and_correlation_ids(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        unit_of_work("req-1", "alice"),
        tracing.tracer.start_as_current_span("handler") as span,
    ):
        client.publish_event(
            "pubsub",
            "task-created",
            '{"id": 1}',
            publish_metadata={"ttlInSeconds": "60"},
            data_content_type="application/json",
        )

    call = sidecar.dapr.only(PUBLISH)
    traceparent = call.one("traceparent")
    assert parse_traceparent(traceparent) == ids(span)
    assert int(traceparent[-2:], 16) & 0x01  # the sampling decision travels with it
    assert call.values("tracestate") == []  # the span has none
    assert baggage_of(call.one("baggage")) == {"request_id": "req-1", "user_id": "alice"}
    assert call.one("x-request-id") == "req-1"
    assert dict(call.request.metadata) == {
        "ttlInSeconds": "60",
        "cloudevent.traceparent": traceparent,
    }
    assert call.request.data == b'{"id": 1}'


def test_tracestate_is_sent_and_named_in_the_cloudevent(sidecar: Sidecar, tracing: Tracing) -> None:
    upstream = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque")]),
    )
    parent = trace.set_span_in_context(trace.NonRecordingSpan(upstream))
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        tracing.tracer.start_as_current_span("handler", context=parent) as span,
    ):
        client.publish_event("pubsub", "task-created", "{}")

    call = sidecar.dapr.only(PUBLISH)
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert ids(span)[0] == "0af7651916cd43dd8448eb211c80319c"
    assert call.one("tracestate") == "vendor=opaque"
    assert call.request.metadata["cloudevent.traceparent"] == call.one("traceparent")
    assert call.request.metadata["cloudevent.tracestate"] == "vendor=opaque"


def test_outside_any_span_only_the_correlation_ids_are_sent(sidecar: Sidecar) -> None:
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        unit_of_work("req-2"),
    ):
        client.publish_event("pubsub", "task-created", "{}")

    call = sidecar.dapr.only(PUBLISH)
    assert call.values("traceparent") == []
    assert call.values("tracestate") == []
    assert baggage_of(call.one("baggage")) == {"request_id": "req-2"}
    assert call.one("x-request-id") == "req-2"
    assert "cloudevent.traceparent" not in call.request.metadata


def test_nothing_is_added_outside_any_span_and_unit_of_work(sidecar: Sidecar) -> None:
    with instrumented_dapr_client(address=sidecar.grpc_address) as client:
        client.publish_event("pubsub", "task-created", "{}", publish_metadata={"k": "v"})

    call = sidecar.dapr.only(PUBLISH)
    assert {name for name, _ in call.metadata}.isdisjoint(PROPAGATED)
    assert dict(call.request.metadata) == {"k": "v"}


def test_raw_payload_publish_also_carries_traceparent_as_message_metadata(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        tracing.tracer.start_as_current_span("handler") as span,
    ):
        client.publish_event(
            "pubsub", "task-created", "{}", publish_metadata={"rawPayload": "true"}
        )

    metadata = sidecar.dapr.only(PUBLISH).request.metadata
    assert parse_traceparent(metadata["traceparent"]) == ids(span)
    assert metadata["cloudevent.traceparent"] == metadata["traceparent"]


# --- gRPC: other RPCs ---------------------------------------------------------


def test_state_and_jobs_calls_carry_the_trace_too(sidecar: Sidecar, tracing: Tracing) -> None:
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        unit_of_work("req-3", "bob"),
        tracing.tracer.start_as_current_span("handler") as span,
    ):
        client.save_state("statestore", "task-1", '{"done": false}')
        stable = hasattr(client, "schedule_job")
        schedule = client.schedule_job if stable else client.schedule_job_alpha1  # type: ignore[attr-defined,unused-ignore]
        with warnings.catch_warnings():
            # The alpha client warns that the Jobs API is an alpha; that is what it calls.
            warnings.filterwarnings("ignore", "The Jobs API is an Alpha", UserWarning)
            schedule(Job(name="remind-1", due_time="10s", data=None))

    schedule_method = SCHEDULE_JOB if stable else SCHEDULE_JOB_ALPHA1
    for method in (SAVE_STATE, schedule_method):
        call = sidecar.dapr.only(method)
        assert parse_traceparent(call.one("traceparent")) == ids(span), method
        assert baggage_of(call.one("baggage")) == {"request_id": "req-3", "user_id": "bob"}
        assert call.one("x-request-id") == "req-3"
    # Only a PublishEventRequest is given the cloudevent keys.
    assert sidecar.dapr.only(SAVE_STATE).request.states[0].metadata == {}
    assert sidecar.dapr.only(schedule_method).request.job.name == "remind-1"


def test_server_streaming_calls_carry_the_trace(sidecar: Sidecar, tracing: Tracing) -> None:
    channel = sidecar.channel(TracingClientInterceptor())
    stub = dapr_stub(channel)
    try:
        with tracing.tracer.start_as_current_span("handler") as span:
            responses = stub.SubscribeConfiguration(
                api_v1.SubscribeConfigurationRequest(store_name="config", keys=["a"])
            )
            assert [response.id for response in responses] == ["subscription-1"]
    finally:
        channel.close()

    call = sidecar.dapr.only(SUBSCRIBE_CONFIGURATION)
    assert parse_traceparent(call.one("traceparent")) == ids(span)


# --- gRPC: what the caller set is left alone ------------------------------------


def test_metadata_the_caller_set_is_neither_replaced_nor_duplicated(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    theirs = "00-11111111111111111111111111111111-2222222222222222-01"
    channel = sidecar.channel(TracingClientInterceptor())
    stub = dapr_stub(channel)
    request = api_v1.PublishEventRequest(
        pubsub_name="pubsub",
        topic="task-created",
        data=b"{}",
        metadata={"cloudevent.traceparent": theirs},
    )
    try:
        with unit_of_work("req-4", "carol"), tracing.tracer.start_as_current_span("handler"):
            stub.PublishEvent(
                request, metadata=(("traceparent", theirs), ("x-request-id", "caller-id"))
            )
    finally:
        channel.close()

    call = sidecar.dapr.only(PUBLISH)
    assert call.one("traceparent") == theirs
    assert call.one("x-request-id") == "caller-id"
    assert baggage_of(call.one("baggage")) == {"request_id": "req-4", "user_id": "carol"}
    assert dict(call.request.metadata) == {"cloudevent.traceparent": theirs}


def test_the_callers_request_is_not_mutated(sidecar: Sidecar, tracing: Tracing) -> None:
    channel = sidecar.channel(TracingClientInterceptor())
    stub = dapr_stub(channel)
    request = api_v1.PublishEventRequest(
        pubsub_name="pubsub", topic="task-created", data=b"{}", metadata={"k": "v"}
    )
    try:
        with tracing.tracer.start_as_current_span("handler"):
            stub.PublishEvent(request)
            stub.PublishEvent(request)  # as a retry would send it again
    finally:
        channel.close()

    assert dict(request.metadata) == {"k": "v"}
    sent = [call.request for call in sidecar.dapr.calls]
    assert len(sent) == 2
    for received in sent:
        assert set(received.metadata) == {"k", "cloudevent.traceparent"}


def test_the_cloudevent_keys_can_be_turned_off(sidecar: Sidecar, tracing: Tracing) -> None:
    channel = sidecar.channel(TracingClientInterceptor(cloudevent_context=False))
    stub = dapr_stub(channel)
    try:
        with tracing.tracer.start_as_current_span("handler") as span:
            stub.PublishEvent(api_v1.PublishEventRequest(pubsub_name="p", topic="t"))
    finally:
        channel.close()

    call = sidecar.dapr.only(PUBLISH)
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert dict(call.request.metadata) == {}


# --- gRPC: CLIENT spans -------------------------------------------------------


def test_client_spans_name_the_method_and_are_the_parent_the_sidecar_sees(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    with (
        instrumented_dapr_client(
            address=sidecar.grpc_address, client_spans=True, tracer_provider=tracing.provider
        ) as client,
        tracing.tracer.start_as_current_span("handler") as handler,
    ):
        client.publish_event("pubsub", "task-created", "{}")

    span = tracing.finished("dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == handler.get_span_context().span_id
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "dapr.proto.runtime.v1.Dapr",
        "rpc.method": "PublishEvent",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET
    call = sidecar.dapr.only(PUBLISH)
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert call.request.metadata["cloudevent.traceparent"] == call.one("traceparent")


def test_a_failed_call_ends_its_client_span_with_the_grpc_status(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    with (
        instrumented_dapr_client(
            address=sidecar.grpc_address, client_spans=True, tracer_provider=tracing.provider
        ) as client,
        pytest.raises(DaprGrpcError, match="no such topic"),
    ):
        client.publish_event("pubsub", "missing", "{}")

    span = tracing.finished("dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert span.parent is None  # no span was current: the CLIENT span is a root
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.attributes["error.type"] == "NOT_FOUND"
    assert span.status.status_code is StatusCode.ERROR
    assert parse_traceparent(sidecar.dapr.only(PUBLISH).one("traceparent")) == ids(span)


class _EndedSpans(SpanProcessor):
    """Signals each span's end: a future's callback ends its span on grpc's own thread."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.set()


def test_a_future_call_ends_its_client_span_when_the_rpc_completes(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    ended = _EndedSpans()
    tracing.provider.add_span_processor(ended)
    interceptor = TracingClientInterceptor(client_spans=True, tracer_provider=tracing.provider)
    channel = sidecar.channel(interceptor)
    stub = dapr_stub(channel)
    try:
        future = stub.SaveState.future(api_v1.SaveStateRequest(store_name="statestore"))
        future.result(timeout=5)
        assert ended.ended.wait(timeout=5)
    finally:
        channel.close()

    span = tracing.finished("dapr.proto.runtime.v1.Dapr/SaveState")
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert parse_traceparent(sidecar.dapr.only(SAVE_STATE).one("traceparent")) == ids(span)


# --- HTTP: service invocation --------------------------------------------------


@pytest.mark.usefixtures("dapr_event_loops")
def test_invoke_method_over_http_carries_the_headers(sidecar: Sidecar, tracing: Tracing) -> None:
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        unit_of_work("req-5", "dave"),
        tracing.tracer.start_as_current_span("handler") as span,
    ):
        response = client.invoke_method(
            "notify",
            "tasks/created",
            '{"id": 1}',
            content_type="application/json",
            http_verb="POST",
        )

    assert response.json() == {"ok": True}
    (call,) = sidecar.http_calls
    assert (call.method, call.path) == ("POST", "/v1.0/invoke/notify/method/tasks/created")
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert baggage_of(call.one("baggage")) == {"request_id": "req-5", "user_id": "dave"}
    assert call.one("x-request-id") == "req-5"
    assert not call.has("tracestate")


@pytest.mark.usefixtures("dapr_event_loops")
def test_invoke_method_headers_replace_same_named_caller_headers(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    # The SDK merges the callback's headers over the call's with dict.update and
    # never shows it the call's: a lowercase header of the caller is replaced, not doubled.
    with (
        instrumented_dapr_client(address=sidecar.grpc_address) as client,
        unit_of_work("req-11"),
    ):
        client.invoke_method("notify", "ping", "", metadata=(("x-request-id", "caller-id"),))

    (call,) = sidecar.http_calls
    assert call.one("x-request-id") == "req-11"


@pytest.mark.usefixtures("dapr_event_loops")
def test_the_applications_callback_and_interceptors_are_kept(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    seen: list[tuple[str, list[str]]] = []

    class Recording(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc, unused-ignore]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append((details.method, [key for key, _ in details.metadata or ()]))
            return continuation(details, request)

    with (
        instrumented_dapr_client(
            address=sidecar.grpc_address,
            interceptors=[Recording()],
            headers_callback=lambda: {"x-tenant": "acme", "x-request-id": "app-chosen"},
        ) as client,
        unit_of_work("req-6"),
        tracing.tracer.start_as_current_span("handler") as span,
    ):
        client.publish_event("pubsub", "task-created", "{}")
        client.invoke_method("notify", "ping", "", http_verb="GET")

    # The application's interceptor ran, before ours: it saw no propagation keys yet.
    assert seen == [(PUBLISH, [])]
    assert parse_traceparent(sidecar.dapr.only(PUBLISH).one("traceparent")) == ids(span)
    (call,) = sidecar.http_calls
    assert call.one("x-tenant") == "acme"
    assert call.one("x-request-id") == "app-chosen"  # the application's header wins
    assert parse_traceparent(call.one("traceparent")) == ids(span)


def test_headers_callback_reads_the_current_context(tracing: Tracing) -> None:
    assert headers_callback() == {}
    with unit_of_work("req-7", "erin"), tracing.tracer.start_as_current_span("handler") as span:
        headers = headers_callback()
    assert set(headers) == {"traceparent", "baggage", "x-request-id"}
    assert parse_traceparent(headers["traceparent"]) == ids(span)
    assert baggage_of(headers["baggage"]) == {"request_id": "req-7", "user_id": "erin"}
    assert headers["x-request-id"] == "req-7"


# --- grpc.aio: dapr.aio.clients.DaprClient ---------------------------------------


@pytest.mark.anyio
async def test_async_client_carries_the_trace_over_grpc_and_http(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    client = instrumented_async_dapr_client(
        address=sidecar.grpc_address, client_spans=True, tracer_provider=tracing.provider
    )
    try:
        with unit_of_work("req-8", "frank"), tracing.tracer.start_as_current_span("handler"):
            await client.publish_event("pubsub", "task-created", "{}")
            await client.invoke_method("notify", "tasks/created", "{}", http_verb="POST")
    finally:
        await client.close()  # type: ignore[no-untyped-call]

    span = tracing.finished("dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == 0
    call = sidecar.dapr.only(PUBLISH)
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert baggage_of(call.one("baggage")) == {"request_id": "req-8", "user_id": "frank"}
    assert call.one("x-request-id") == "req-8"
    assert call.request.metadata["cloudevent.traceparent"] == call.one("traceparent")
    (http_call,) = sidecar.http_calls
    handler = tracing.finished("handler")
    assert parse_traceparent(http_call.one("traceparent")) == ids(handler)
    assert http_call.one("x-request-id") == "req-8"


@pytest.mark.anyio
async def test_async_failed_call_ends_its_client_span_with_the_grpc_status(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    client = instrumented_async_dapr_client(
        address=sidecar.grpc_address, client_spans=True, tracer_provider=tracing.provider
    )
    try:
        with pytest.raises(DaprGrpcError, match="no such topic"):
            await client.publish_event("pubsub", "missing", "{}")
    finally:
        await client.close()  # type: ignore[no-untyped-call]

    span = tracing.finished("dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.anyio
async def test_async_interceptor_leaves_the_callers_metadata_alone(
    sidecar: Sidecar, tracing: Tracing
) -> None:
    channel = grpc.aio.insecure_channel(
        sidecar.grpc_address, interceptors=[AsyncTracingClientInterceptor()]
    )
    stub = dapr_stub(channel)
    request = api_v1.PublishEventRequest(pubsub_name="pubsub", topic="task-created")
    try:
        with unit_of_work("req-9"), tracing.tracer.start_as_current_span("handler") as span:
            await stub.PublishEvent(request, metadata=(("x-request-id", "caller-id"),))
    finally:
        await channel.close()

    call = sidecar.dapr.only(PUBLISH)
    assert call.one("x-request-id") == "caller-id"
    assert parse_traceparent(call.one("traceparent")) == ids(span)
    assert dict(request.metadata) == {}
    assert "cloudevent.traceparent" in call.request.metadata


# --- configuration and packaging -----------------------------------------------


def test_request_id_header_must_be_a_header_name() -> None:
    with pytest.raises(ConfigurationError, match="request_id_header") as caught:
        TracingClientInterceptor(request_id_header="X Request Id")
    assert caught.value.field == "request_id_header"
    with pytest.raises(ConfigurationError, match="binary"):
        TracingClientInterceptor(request_id_header="x-request-id-bin")


def test_a_custom_request_id_header_is_sent_lowercase(sidecar: Sidecar) -> None:
    channel = sidecar.channel(TracingClientInterceptor(request_id_header="X-Correlation-ID"))
    stub = dapr_stub(channel)
    try:
        with unit_of_work("req-10"):
            stub.SaveState(api_v1.SaveStateRequest(store_name="statestore"))
    finally:
        channel.close()

    call = sidecar.dapr.only(SAVE_STATE)
    assert call.one("x-correlation-id") == "req-10"
    assert call.values("x-request-id") == []


def test_without_the_dapr_package_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dapr.clients", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'todo-observability\[dapr\]'"):
        instrumented_dapr_client()


# --- the example ---------------------------------------------------------------


@pytest.mark.usefixtures("dapr_event_loops")
def test_example_announces_a_task_with_one_trace(
    sidecar: Sidecar, tracing: Tracing, captured_logs: LogCapture
) -> None:
    run: Callable[..., None] = dapr_grpc_client.main
    # set_user_id starts a unit of work in the calling context; keep it out of the test's.
    contextvars.copy_context().run(
        run,
        tracer_provider=tracing.provider,
        registry=CollectorRegistry(),
        log_stream=captured_logs,
        load_plugins=False,
    )

    announce = tracing.finished("tasks.announce")
    trace_id, announce_id = ids(announce)
    save = tracing.finished("dapr.proto.runtime.v1.Dapr/SaveState")
    publish = tracing.finished("dapr.proto.runtime.v1.Dapr/PublishEvent")
    for span, method in ((save, SAVE_STATE), (publish, PUBLISH)):
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == announce_id
        call = sidecar.dapr.only(method)
        assert parse_traceparent(call.one("traceparent")) == ids(span)
        bag = baggage_of(call.one("baggage"))
        assert bag["user_id"] == "alice"
        assert bag["request_id"] == call.one("x-request-id")
    published = sidecar.dapr.only(PUBLISH).request
    assert json.loads(published.data) == {"id": 1, "title": "Write the docs", "owner": "alice"}
    assert published.metadata["cloudevent.traceparent"] == sidecar.dapr.only(PUBLISH).one(
        "traceparent"
    )
    (invoke,) = sidecar.http_calls
    assert invoke.path == "/v1.0/invoke/notify/method/tasks/created"
    assert parse_traceparent(invoke.one("traceparent")) == (trace_id, announce_id)
    (line,) = captured_logs.find(message="task announced")
    assert (line["trace_id"], line["span_id"]) == (trace_id, announce_id)
    assert line["request_id"] == sidecar.dapr.only(PUBLISH).one("x-request-id")
    assert line["user_id"] == "alice"
    assert sidecar.health_probes >= 1
