from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry

from tests.helpers import LoopbackServer
from todo_observability._export import (
    EncodedBatchSpanProcessor,
    ZipkinJsonEncoder,
    ZipkinJsonExporter,
    join,
)
from todo_observability.metrics import SPANS_DROPPED, _metric_set
from todo_observability.redaction import Redactor
from todo_observability.testing import metric_value
from todo_observability.tracing import GuardedSpanExporter

SCHEMA = Path(__file__).parent / "schemas" / "zipkin" / "zipkin2-api.yaml"
REMOTE_PARENT = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)


class Collector:
    """A Zipkin collector on loopback that keeps every body posted to it, parsed."""

    def __init__(self) -> None:
        self.bodies: list[list[dict[str, Any]]] = []
        self.content_types: list[str] = []
        bodies, content_types = self.bodies, self.content_types

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                bodies.append(json.loads(body))
                content_types.append(self.headers["content-type"])
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = LoopbackServer(Handler)
        self.url = f"{self._server.url}/api/v2/spans"

    def __enter__(self) -> Collector:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def spans(self) -> list[dict[str, Any]]:
        return [span for body in self.bodies for span in body]


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


def dropped_counter(registry: CollectorRegistry) -> Any:
    return _metric_set(registry).counter(SPANS_DROPPED)


def processor_for(
    url: str, registry: CollectorRegistry, redactor: Redactor | None = None, **options: Any
) -> EncodedBatchSpanProcessor:
    dropped = dropped_counter(registry)
    return EncodedBatchSpanProcessor(
        GuardedSpanExporter(ZipkinJsonExporter(url, timeout=5, redactor=redactor), dropped),
        dropped,
        **options,
    )


def varied_spans() -> list[ReadableSpan]:
    """Finished spans covering what the Zipkin encoder distinguishes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "backend", "service.version": "1.2.3"}),
        span_limits=SpanLimits(max_span_attributes=12, max_events=3, max_links=1),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("todo.backend", "0.9")
    unversioned = provider.get_tracer("no.version")
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    with tracer.start_as_current_span(
        "GET /tasks/{task_id}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/tasks/{task_id}",
            "server.port": 8000,
            "ratio": 0.25,
            "big": 10**20 * 1.0,
            "cached": True,
            "tags": ("a", "é", "c"),
            "ids": (1, 2, 3),
            "flags": (True, False),
            "weights": (0.5, 1.5),
            "label": "tâche ✓",
        },
    ) as server:
        server.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span(
            "POST dapr publish",
            kind=SpanKind.PRODUCER,
            links=[Link(REMOTE_PARENT, {"link.kind": "cause"})],
        ) as producer:
            producer.add_event("sent", {"bytes": 428, "topics": ("a", "b"), "note": "fine"})
            producer.add_event("acked")
        with tracer.start_as_current_span(
            "GET /users",
            kind=SpanKind.CLIENT,
            # The resource's own keys: the resource wins, then the status.
            attributes={"service.version": "9.9", "otel.status_code": "set by hand"},
        ) as client:
            client.set_status(Status(StatusCode.ERROR))  # an error without a description
        with tracer.start_as_current_span("next_occurrence") as internal:
            try:
                raise ValueError("no occurrence after 2026-12-07")
            except ValueError as exc:
                internal.record_exception(exc)
            internal.set_status(Status(StatusCode.ERROR, "ValueError: no occurrence"))
        with tracer.start_as_current_span(
            "task-events process",
            kind=SpanKind.CONSUMER,
            links=[Link(REMOTE_PARENT), Link(REMOTE_PARENT)],  # one over the limit: dropped
        ) as consumer:
            for index in range(5):  # two over the limit
                consumer.add_event(f"retry {index}", {"attempt": index})
            for index in range(15):  # three over the limit
                consumer.set_attribute(f"attribute.{index}", index)
        with unversioned.start_as_current_span("no version"):
            pass
    spans = list(memory.get_finished_spans())
    assert len(spans) == 6
    return spans


def without_nulls(span: dict[str, Any]) -> dict[str, Any]:
    """A span with its null fields and null tags left out: Zipkin reads them as absent."""
    out = {key: value for key, value in span.items() if value is not None}
    if "tags" in out:
        out["tags"] = {key: value for key, value in out["tags"].items() if value is not None}
    return out


def zipkin_schema() -> jsonschema_rs.Draft4Validator:
    definitions = yaml.safe_load(SCHEMA.read_text())["definitions"]
    return jsonschema_rs.Draft4Validator(
        {"$ref": "#/definitions/ListOfSpans", "definitions": definitions}
    )


def test_spans_are_field_for_field_those_of_opentelemetrys_zipkin_exporter(
    collector: Collector,
) -> None:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    spans = varied_spans()
    reference = ZipkinExporter(endpoint=collector.url)
    assert reference.export(spans) is SpanExportResult.SUCCESS  # type: ignore[arg-type]
    reference.shutdown()
    processor = processor_for(collector.url, CollectorRegistry())
    for span in spans:
        processor.on_end(span)
    assert processor.force_flush(5000) is True
    processor.shutdown()

    theirs, ours = collector.bodies
    assert len(ours) == len(theirs) == 6
    by_id = {span["id"]: span for span in ours}
    for expected in theirs:
        actual = by_id[expected["id"]]
        assert actual == without_nulls(expected), expected["name"]
        # What OpenTelemetry leaves null, this encoder leaves out (the schema allows no null).
        assert {key for key, value in expected.items() if value is None} <= {"kind"}
    assert set(collector.content_types) == {"application/json"}
    # What the comparison covered: every field the Zipkin exporter writes.
    fields = {key for span in theirs for key in span}
    assert fields == {
        "traceId",
        "id",
        "parentId",
        "name",
        "kind",
        "timestamp",
        "duration",
        "localEndpoint",
        "tags",
        "annotations",
        "debug",
    }
    tags = {key for span in theirs for key in span.get("tags", {})}
    assert {
        "otel.status_code",
        "error",
        "otel.dropped_attributes_count",
        "otel.dropped_events_count",
        "otel.dropped_links_count",
        "otel.scope.version",
    } <= tags
    named = {span["name"]: span for span in ours}
    assert named["GET /tasks/{task_id}"]["parentId"] == "00f067aa0ba902b7"
    assert named["GET /tasks/{task_id}"]["tags"]["tags"] == '["a","\\u00e9","c"]'
    assert named["GET /users"]["tags"]["error"] == ""
    assert "kind" not in named["next_occurrence"]
    exception = json.loads(named["next_occurrence"]["annotations"][0]["value"])["exception"]
    assert exception["exception.type"] == "ValueError"
    assert named["no version"]["tags"]["otel.scope.version"] == ""


def test_what_is_posted_is_valid_by_the_zipkin_v2_schema(collector: Collector) -> None:
    processor = processor_for(collector.url, CollectorRegistry())
    for span in varied_spans():
        processor.on_end(span)
    # A span shorter than half a microsecond: Zipkin's rule is to round its duration up.
    instant = ReadableSpan(
        name="instant",
        context=SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        resource=Resource.create({"service.name": "backend"}),
        start_time=1_765_000_000_000_000_000,
        end_time=1_765_000_000_000_000_000,
    )
    processor.on_end(instant)
    assert processor.force_flush(5000) is True
    processor.shutdown()
    [body] = collector.bodies
    validator = zipkin_schema()
    assert [str(error) for error in validator.iter_errors(body)] == []
    assert {span["name"]: span["duration"] for span in body}["instant"] == 1


def test_the_schema_check_can_fail() -> None:
    validator = zipkin_schema()
    span = {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "00f067aa0ba902b7"}
    assert validator.is_valid([span])
    assert not validator.is_valid([{**span, "kind": None}])
    assert not validator.is_valid([{**span, "tags": {"otel.scope.version": None}}])
    assert not validator.is_valid([{**span, "duration": 0}])


def test_secrets_are_scrubbed_before_the_span_is_encoded(collector: Collector) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "backend"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    processor = processor_for(collector.url, CollectorRegistry(), Redactor(["tenant"]))
    provider.add_span_processor(processor)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    with provider.get_tracer("t").start_as_current_span(
        "GET /callback?api_key=hunter2",
        attributes={
            "db.connection_string": "postgres://app:pw@db/todo",
            "url.full": "https://svc/callback?token=abc123&page=2",
            "http.request.header.authorization": ("Bearer abc",),
            "tenant_id": 42,
            "messages": (f"Bearer {token}", "plain"),
            "messaging.kafka.message.key": "task-7",
        },
    ) as span:
        span.add_event("exception", {"exception.message": "connect to postgres://u:pw@db failed"})
        span.set_status(Status(StatusCode.ERROR, "login failed for password=hunter2"))
    assert processor.force_flush(5000) is True
    provider.shutdown()
    [posted] = collector.spans()
    text = json.dumps(posted)
    for secret in ("hunter2", "abc123", ":pw@", "Bearer abc", token):
        assert secret not in text
    tags = posted["tags"]
    assert posted["name"] == "GET /callback?api_key=[REDACTED]"
    assert tags["db.connection_string"] == "[REDACTED]"
    assert tags["url.full"] == "https://svc/callback?token=[REDACTED]&page=2"
    assert tags["http.request.header.authorization"] == "[REDACTED]"
    assert tags["tenant_id"] == "[REDACTED]"
    assert tags["messages"] == '["Bearer [REDACTED]","plain"]'
    assert tags["messaging.kafka.message.key"] == "task-7"
    assert tags["error"] == "login failed for password=[REDACTED]"
    assert "postgres://u:[REDACTED]@db" in posted["annotations"][0]["value"]
    # Another processor on the same provider still gets the span as it was recorded.
    [recorded] = memory.get_finished_spans()
    assert recorded.attributes is not None
    assert recorded.attributes["url.full"] == "https://svc/callback?token=abc123&page=2"


def test_the_queue_holds_bytes_and_no_span(collector: Collector) -> None:
    provider = TracerProvider()
    processor = processor_for(collector.url, CollectorRegistry(), schedule_delay_millis=60_000)
    provider.add_span_processor(processor)
    refs = []
    for index in range(3):
        with provider.get_tracer("t").start_as_current_span(f"op-{index}") as span:
            pass
        refs.append(weakref.ref(span))
    del span
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]  # nothing holds the spans
    assert len(processor._queue) == 3
    assert all(type(item) is bytes and not gc.is_tracked(item) for item in processor._queue)
    assert processor.force_flush(5000) is True
    assert [span["name"] for span in collector.spans()] == ["op-0", "op-1", "op-2"]
    provider.shutdown()


def test_unsampled_spans_are_not_encoded(collector: Collector) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    processor = processor_for(collector.url, CollectorRegistry())
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("dropped by the sampler"):
        pass
    assert len(processor._queue) == 0
    provider.shutdown()
    assert collector.bodies == []


class Stuck:
    """A sink whose writes wait until released."""

    def __init__(self) -> None:
        self.encoder = ZipkinJsonEncoder()
        self.release = threading.Event()
        self.written: list[bytes] = []

    def write_encoded(self, encoded: Sequence[bytes]) -> SpanExportResult:
        self.release.wait(10)
        self.written.extend(encoded)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_a_full_queue_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    dropped = dropped_counter(registry)
    sink = Stuck()
    processor = EncodedBatchSpanProcessor(
        GuardedSpanExporter(sink, dropped),  # type: ignore[arg-type]
        dropped,
        max_queue_size=2,
        max_export_batch_size=1,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    start = time.perf_counter()
    for index in range(10):
        with provider.get_tracer("t").start_as_current_span(f"op-{index}"):
            pass
    assert time.perf_counter() - start < 2.0  # the stuck sink blocked no request
    full = metric_value(registry, "todo_observability_spans_dropped_total", reason="queue_full")
    # The queue holds 2 and the stuck sink holds at most 1 batch of 1.
    assert 7 <= full <= 8
    sink.release.set()
    provider.shutdown()
    assert len(sink.written) + full == 10
    assert not [r for r in caplog.records if "Queue full" in r.getMessage()]


def test_otel_bsp_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "7")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    processor = processor_for("http://127.0.0.1:9/api/v2/spans", CollectorRegistry())
    assert (processor._max_queue, processor._delay, processor._batch_size) == (7, 0.25, 3)
    processor.shutdown()
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")  # more than the queue holds
    with pytest.raises(ValueError, match="max_export_batch_size"):
        processor_for("http://127.0.0.1:9/api/v2/spans", CollectorRegistry())


def test_a_full_batch_is_exported_before_the_schedule_delay(collector: Collector) -> None:
    provider = TracerProvider()
    processor = processor_for(
        collector.url, CollectorRegistry(), schedule_delay_millis=60_000, max_export_batch_size=2
    )
    provider.add_span_processor(processor)
    for index in range(2):
        with provider.get_tracer("t").start_as_current_span(f"op-{index}"):
            pass
    deadline = time.monotonic() + 5
    while not collector.bodies and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [[span["name"] for span in body] for body in collector.bodies] == [["op-0", "op-1"]]
    provider.shutdown()


def test_shutdown_exports_what_is_queued(collector: Collector) -> None:
    provider = TracerProvider()
    processor = processor_for(collector.url, CollectorRegistry(), schedule_delay_millis=60_000)
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("last words"):
        pass
    provider.shutdown()
    assert [span["name"] for span in collector.spans()] == ["last words"]
    with provider.get_tracer("t").start_as_current_span("after shutdown"):
        pass
    assert len(processor._queue) == 0


def test_a_span_that_cannot_be_encoded_is_counted_and_never_raises(
    caplog: pytest.LogCaptureFixture, collector: Collector
) -> None:
    registry = CollectorRegistry()
    processor = processor_for(collector.url, registry)

    def broken(span: ReadableSpan) -> bytes:
        raise RuntimeError("cannot encode")

    processor._encode = broken
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(2):
        with provider.get_tracer("t").start_as_current_span("op"):
            pass
    assert (
        metric_value(registry, "todo_observability_spans_dropped_total", reason="export_failed")
        == 2
    )
    assert len([r for r in caplog.records if "could not be encoded" in r.getMessage()]) == 1
    provider.shutdown()


def test_the_exporter_encodes_and_posts_spans_itself(collector: Collector) -> None:
    spans = varied_spans()
    exporter = ZipkinJsonExporter(collector.url)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown
    encoder = ZipkinJsonEncoder()
    assert collector.bodies == [json.loads(join([encoder.encode(span) for span in spans]))]


def test_a_collector_that_refuses_the_batch_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(400)
            self.send_header("content-length", "3")
            self.end_headers()
            self.wfile.write(b"bad")

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = LoopbackServer(Refusing)
    server.start()
    try:
        exporter = ZipkinJsonExporter(f"{server.url}/api/v2/spans")
        assert exporter.export(varied_spans()[:1]) is SpanExportResult.FAILURE
        exporter.shutdown()
    finally:
        server.stop()
    assert any("Zipkin refused 1 spans: 400 bad" in r.getMessage() for r in caplog.records)


def test_a_keep_alive_connection_the_collector_closed_while_idle_loses_no_span() -> None:
    """The exporter keeps its connection; one the collector closed is replaced, not lost."""
    batches: list[list[dict[str, object]]] = []

    class ClosingIdle(BaseHTTPRequestHandler):
        """Answers the first request of a connection, closes it unanswered on the second."""

        protocol_version = "HTTP/1.1"
        served = 0

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.served:
                self.close_connection = True  # closed without a response
                return
            self.served += 1
            batches.append(json.loads(body))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = LoopbackServer(ClosingIdle)
    server.start()
    registry = CollectorRegistry()
    try:
        guarded = GuardedSpanExporter(
            ZipkinJsonExporter(f"{server.url}/api/v2/spans", timeout=5),
            dropped_counter(registry),
        )
        encoder = ZipkinJsonEncoder()
        spans = varied_spans()
        assert guarded.export_encoded([encoder.encode(spans[0])]) is SpanExportResult.SUCCESS
        assert guarded.export_encoded([encoder.encode(spans[1])]) is SpanExportResult.SUCCESS
        guarded.shutdown()
    finally:
        server.stop()
    assert [[span["name"] for span in batch] for batch in batches] == [
        [spans[0].name],
        [spans[1].name],
    ]
    for reason in ("export_failed", "exporter_unavailable"):
        assert metric_value(registry, "todo_observability_spans_dropped_total", reason=reason) == 0


def test_a_configured_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            received.append(self.path)  # a proxy is sent the absolute URL
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    proxy = LoopbackServer(Proxy)
    proxy.start()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        exporter = ZipkinJsonExporter("http://zipkin.invalid:9411/api/v2/spans")
        assert exporter.export(varied_spans()[:1]) is SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        proxy.stop()
    assert received == ["http://zipkin.invalid:9411/api/v2/spans"]


def test_an_endpoint_that_is_not_an_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="must be an http\\(s\\) URL, got 'zipkin:9411'"):
        ZipkinJsonExporter("zipkin:9411")


def test_without_orjson_the_standard_library_encodes_the_same_spans() -> None:
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "if sys.argv[1] == 'hide': sys.modules['orjson'] = None\n"
        "from opentelemetry.sdk.resources import Resource\n"
        "from opentelemetry.sdk.trace import Event, ReadableSpan\n"
        "from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags\n"
        "from todo_observability import _json\n"
        "from todo_observability._export import ZipkinJsonEncoder, join\n"
        "context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, False, TraceFlags(1))\n"
        "span = ReadableSpan(name='t\\u00e2che', context=context, parent=context, kind=SpanKind.CLIENT,\n"
        "    resource=Resource.create({'service.name': 'svc', 'service.instance.id': 'i'}),\n"
        "    attributes={'a': 'caf\\u00e9', 'n': 2**40, 'f': 0.1, 'l': ('x', 'y')},\n"
        "    events=[Event('e', {'k': 'v'}, 1_765_000_000_000_001_000)],\n"
        "    status=Status(StatusCode.ERROR, 'bad'), start_time=1_765_000_000_000_000_000,\n"
        "    end_time=1_765_000_000_002_000_000)\n"
        "body = join([ZipkinJsonEncoder().encode(span)] * 2)\n"
        "print(_json.dumps.__module__, json.dumps(json.loads(body), sort_keys=True))\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True
        ).stdout.split(" ", 1)
        for mode in ("hide", "keep")
    ]
    assert [backend for backend, _ in outputs] == ["todo_observability._json", "orjson"]
    assert outputs[0][1] == outputs[1][1]
    [span, _] = json.loads(outputs[0][1])
    assert span["name"] == "tâche"
    assert span["tags"]["a"] == "café"
    assert span["tags"]["error"] == "bad"


class PublicOnly:
    """A finished span seen only through the public properties of `ReadableSpan`."""

    __slots__ = ("_span",)

    def __init__(self, span: ReadableSpan) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._span, name)


def test_a_span_read_through_its_public_properties_encodes_the_same() -> None:
    encoder = ZipkinJsonEncoder()
    for span in varied_spans():
        public = PublicOnly(span)
        assert not hasattr(public, "__dict__")
        assert encoder.encode(public) == encoder.encode(span)  # type: ignore[arg-type]
