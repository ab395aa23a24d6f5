from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from tests.helpers import LoopbackServer, SilentServer, eventually, spans
from todo_observability import traced
from todo_observability._export import EncodedBatchSpanProcessor
from todo_observability._observability import Observability
from todo_observability.config import resolve_settings
from todo_observability.exceptions import MissingExtraError
from todo_observability.metrics import SPANS_DROPPED, _metric_set
from todo_observability.testing import SpanCapture, metric_value
from todo_observability.tracing import (
    CountingBatchSpanProcessor,
    GuardedSpanExporter,
    ScrubbingSpanExporter,
    _ParentBasedTraceIdRatio,
    build_tracer_provider,
)

Factory = Callable[..., Observability]


def finished(tracer_provider: TracerProvider, count: int) -> list[ReadableSpan]:
    tracer = tracer_provider.get_tracer("t")
    spans: list[ReadableSpan] = []
    for i in range(count):
        with tracer.start_as_current_span(f"op-{i}") as span:
            pass
        assert isinstance(span, ReadableSpan)
        spans.append(span)
    return spans


def test_traced_creates_a_child_span_with_redacted_attributes(make_observability: Factory) -> None:
    obs = make_observability()

    @traced(
        "rrule.calculate_next_occurrence", attributes={"rule": "FREQ=DAILY", "api_token": "t0k"}
    )
    def calculate() -> str:
        return "ok"

    @traced()
    async def fetch() -> str:
        calculate()
        await asyncio.sleep(0)
        return "fetched"

    async def main() -> str:
        return await fetch()

    assert asyncio.run(main()) == "fetched"
    assert obs.span_exporter is not None
    inner, outer = obs.span_exporter.get_finished_spans()
    assert inner.name == "rrule.calculate_next_occurrence"
    assert outer.name == "test_traced_creates_a_child_span_with_redacted_attributes.<locals>.fetch"
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id
    assert dict(inner.attributes or {}) == {"rule": "FREQ=DAILY", "api_token": "[REDACTED]"}
    assert inner.kind is SpanKind.INTERNAL


def test_traced_records_the_exception_and_sets_error(make_observability: Factory) -> None:
    obs = make_observability()

    @traced("failing")
    def fail() -> None:
        raise LookupError("missing task")

    with pytest.raises(LookupError):
        fail()
    assert obs.span_exporter is not None
    [span] = obs.span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "LookupError: missing task"
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "LookupError"


def test_sampler_is_parent_based_ratio(make_observability: Factory) -> None:
    obs = make_observability(sample_ratio=0.25)
    description = obs.tracer_provider.sampler.get_description()
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    # The SDK's decisions, in one pass (see the property below).
    assert isinstance(obs.tracer_provider.sampler, _ParentBasedTraceIdRatio)


def test_file_exporter_writes_zipkin_v2_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    settings = resolve_settings(
        env={}, service_name="recurring", traces_exporter="file", traces_file=str(path)
    )
    provider, _ = build_tracer_provider(
        settings, _metric_set(CollectorRegistry()).counter(SPANS_DROPPED)
    )
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER),
        tracer.start_as_current_span("child"),
    ):
        pass
    provider.shutdown()
    lines = path.read_text().splitlines()
    spans = [span for line in lines for span in json.loads(line)]
    assert {span["name"] for span in spans} == {"parent", "child"}
    by_name = {span["name"]: span for span in spans}
    assert by_name["child"]["parentId"] == by_name["parent"]["id"]
    assert by_name["parent"]["kind"] == "SERVER"
    assert by_name["parent"]["localEndpoint"]["serviceName"] == "recurring"
    for span in spans:
        assert len(span["traceId"]) == 32
        assert len(span["id"]) == 16
        assert isinstance(span["timestamp"], int)
        assert isinstance(span["duration"], int)


class Failing(SpanExporter):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.mode == "raise":
            raise ConnectionError("connection refused")
        if self.mode == "fail":
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def test_guarded_exporter_backs_off_counts_and_logs_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    dropped = _metric_set(registry).counter(SPANS_DROPPED)
    inner = Failing("raise")
    guarded = GuardedSpanExporter(inner, dropped)
    spans = finished(TracerProvider(), 3)
    assert guarded.export(spans) is SpanExportResult.FAILURE
    assert guarded.export(spans) is SpanExportResult.FAILURE  # backing off: not even called
    assert inner.calls == 2  # the first failure is retried once at once
    assert (
        metric_value(registry, "todo_observability_spans_dropped_total", reason="export_failed")
        == 3
    )
    assert (
        metric_value(
            registry, "todo_observability_spans_dropped_total", reason="exporter_unavailable"
        )
        == 3
    )
    guarded._retry_at = time.monotonic() - 1  # the backoff has passed
    inner.mode = "ok"
    assert guarded.export(spans) is SpanExportResult.SUCCESS
    messages = [r.getMessage() for r in caplog.records if r.name == "todo_observability.tracing"]
    assert len(messages) == 2
    assert "Failing failed, spans are dropped until it recovers: connection refused" in messages[0]
    assert "recovered" in messages[1]


def test_a_keep_alive_connection_the_collector_closed_while_idle_loses_no_span() -> None:
    """Collectors close idle keep-alive connections; the next batch must not be dropped."""
    from http.server import BaseHTTPRequestHandler

    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    batches: list[list[dict[str, object]]] = []

    class Collector(BaseHTTPRequestHandler):
        """Keeps connections alive, but closes one that waited too long, as servers do.

        A server that times an idle connection out while the client is sending on it closes it
        without an answer: the client sees RemoteDisconnected. Here that happens, for sure, to
        every request after a connection's first.
        """

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

    collector = LoopbackServer(Collector)
    collector.start()
    try:
        registry = CollectorRegistry()
        guarded = GuardedSpanExporter(
            ZipkinExporter(endpoint=f"{collector.url}/api/v2/spans", timeout=5),
            _metric_set(registry).counter(SPANS_DROPPED),
        )
        spans = finished(TracerProvider(), 2)
        assert guarded.export(spans[:1]) is SpanExportResult.SUCCESS
        assert guarded.export(spans[1:]) is SpanExportResult.SUCCESS
    finally:
        collector.stop()
    assert [[span["name"] for span in batch] for batch in batches] == [["op-0"], ["op-1"]]
    for reason in ("export_failed", "exporter_unavailable"):
        assert metric_value(registry, "todo_observability_spans_dropped_total", reason=reason) == 0


def test_guarded_exporter_backoff_doubles_up_to_a_cap() -> None:
    guarded = GuardedSpanExporter(
        Failing("fail"), _metric_set(CollectorRegistry()).counter(SPANS_DROPPED), max_backoff=4
    )
    backoffs = []
    for _ in range(5):
        guarded._retry_at = 0.0
        guarded.export([])
        backoffs.append(guarded._backoff)
    assert backoffs == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_unreachable_zipkin_never_raises_and_drops_are_counted() -> None:
    registry = CollectorRegistry()
    settings = resolve_settings(env={}, zipkin_endpoint="http://127.0.0.1:9/api/v2/spans")
    provider, _ = build_tracer_provider(settings, _metric_set(registry).counter(SPANS_DROPPED))
    finished(provider, 5)
    assert provider.force_flush(10_000) is False  # nothing was exported, and it says so
    provider.shutdown()
    assert (
        metric_value(registry, "todo_observability_spans_dropped_total", reason="export_failed")
        == 5
    )


def test_full_queue_drops_are_counted_and_nothing_else_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    registry = CollectorRegistry()
    release = threading.Event()
    exported: list[str] = []

    class Stuck(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            release.wait(10)
            exported.extend(span.name for span in spans)
            return SpanExportResult.SUCCESS

    processor = CountingBatchSpanProcessor(
        Stuck(),
        _metric_set(registry).counter(SPANS_DROPPED),
        max_queue_size=2,
        max_export_batch_size=1,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    finished(provider, 10)
    dropped = metric_value(registry, "todo_observability_spans_dropped_total", reason="queue_full")
    # The queue holds 2 and the stuck exporter holds at most 1 batch of 1.
    assert 7 <= dropped <= 8
    release.set()
    provider.shutdown()
    assert len(exported) + dropped == 10
    assert not [r for r in caplog.records if "Queue full" in r.getMessage()]


def test_otlp_without_its_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    settings = resolve_settings(env={}, traces_exporter="otlp")
    with pytest.raises(MissingExtraError, match=r"pip install 'todo-observability\[otlp\]'"):
        build_tracer_provider(settings, _metric_set(CollectorRegistry()).counter(SPANS_DROPPED))


def test_console_exporter_writes_one_json_line_per_span(capsys: pytest.CaptureFixture[str]) -> None:
    settings = resolve_settings(env={}, traces_exporter="console")
    provider, _ = build_tracer_provider(
        settings, _metric_set(CollectorRegistry()).counter(SPANS_DROPPED)
    )
    finished(provider, 2)
    provider.shutdown()
    # stdout stays a stream of JSON lines, between the JSON log lines.
    lines = capsys.readouterr().out.splitlines()
    assert sorted(json.loads(line)["name"] for line in lines) == ["op-0", "op-1"]


def test_shutdown_flushes_pending_spans(tmp_path: Path, make_observability: Factory) -> None:
    path = tmp_path / "spans.jsonl"
    obs = make_observability(traces_exporter="file", traces_file=str(path))
    with obs.tracer.start_as_current_span("last words"):
        pass
    obs.shutdown()
    assert "last words" in path.read_text()


def test_injected_provider_is_flushed_not_shut_down(make_observability: Factory) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    obs = make_observability(tracer_provider=provider)
    obs.shutdown()
    with provider.get_tracer("t").start_as_current_span("after"):
        pass
    assert [span.name for span in exporter.get_finished_spans()] == ["after"]


def test_otlp_exporter_posts_to_the_traces_path_of_the_endpoint() -> None:
    settings = resolve_settings(
        env={}, traces_exporter="otlp", otlp_endpoint="http://collector:4318/"
    )
    provider, _ = build_tracer_provider(
        settings, _metric_set(CollectorRegistry()).counter(SPANS_DROPPED)
    )
    [processor] = provider._active_span_processor._span_processors
    assert isinstance(processor, CountingBatchSpanProcessor)
    guarded = processor._batch_processor._exporter
    assert isinstance(guarded, GuardedSpanExporter)
    scrubbing = guarded.exporter
    assert isinstance(scrubbing, ScrubbingSpanExporter)
    assert scrubbing.exporter._endpoint == "http://collector:4318/v1/traces"  # type: ignore[attr-defined]
    provider.shutdown()


def test_captured_spans_gathers_every_observability_of_the_test(
    make_observability: Factory, captured_spans: SpanCapture
) -> None:
    first, second = make_observability(service_name="a"), make_observability(service_name="b")
    with first.tracer.start_as_current_span("one"), second.tracer.start_as_current_span("two"):
        pass
    assert sorted(span.name for span in captured_spans.spans) == ["one", "two"]
    assert [span.resource.attributes["service.name"] for span in captured_spans.named("two")] == [
        "b"
    ]
    captured_spans.clear()
    assert captured_spans.spans == []
    with pytest.raises(ValueError, match="traces_exporter='memory'"):
        captured_spans.watch(make_observability(traces_exporter="none"))


# --- flush and shutdown keep their timeout ------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[SilentServer]:
    """A collector address that accepts connections and never answers a byte."""
    hole = SilentServer()
    try:
        yield hole
    finally:
        hole.close()


def spans_url(server: SilentServer) -> str:
    return f"http://127.0.0.1:{server.port}/api/v2/spans"


def slow_collector(delay: float, received: list[str]) -> LoopbackServer:
    from http.server import BaseHTTPRequestHandler

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(delay)
            received.extend(span["name"] for span in body)
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = LoopbackServer(Slow)
    server.start()
    return server


def flush_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "todo-obs-flush"]


def dropped(registry: CollectorRegistry, reason: str = "export_failed") -> float:
    return metric_value(registry, "todo_observability_spans_dropped_total", reason=reason) or 0.0


def test_flush_against_a_blackholed_collector_says_false_on_time(
    make_observability: Factory, blackhole: SilentServer
) -> None:
    registry = CollectorRegistry()
    obs = make_observability(
        registry=registry, traces_exporter="zipkin", zipkin_endpoint=spans_url(blackhole)
    )
    with obs.tracer.start_as_current_span("lost"):
        pass
    start = time.perf_counter()
    flushed = obs.flush(1000)
    elapsed = time.perf_counter() - start
    assert flushed is False
    assert elapsed < 1.0 + 1.0
    # The request had only the flush's second, and was not retried past the deadline
    # (the exporter's own timeout is 5 s, and it used to be retried once at once).
    eventually(lambda: dropped(registry) == 1, timeout=4.0, what="the failed export")
    assert len(blackhole.accepted) == 1
    start = time.perf_counter()
    assert obs.shutdown(timeout_millis=500) is True  # nothing left to export
    assert time.perf_counter() - start < 0.5 + 1.0


def test_shutdown_against_a_blackholed_collector_says_false_on_time(
    make_observability: Factory, blackhole: SilentServer
) -> None:
    registry = CollectorRegistry()
    obs = make_observability(
        registry=registry, traces_exporter="zipkin", zipkin_endpoint=spans_url(blackhole)
    )
    with obs.tracer.start_as_current_span("lost"):
        pass
    start = time.perf_counter()
    shut_down = obs.shutdown(timeout_millis=1000)
    assert time.perf_counter() - start < 1.0 + 1.0
    assert shut_down is False
    assert obs.shutdown() is False  # again: nothing more happens, and the answer stands


def test_an_exporter_request_gets_no_more_time_than_the_flush_has_left(
    blackhole: SilentServer,
) -> None:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    registry = CollectorRegistry()
    counter = _metric_set(registry).counter(SPANS_DROPPED)
    exporter = ZipkinExporter(endpoint=spans_url(blackhole), timeout=60)
    provider = TracerProvider()
    provider.add_span_processor(
        CountingBatchSpanProcessor(GuardedSpanExporter(exporter, counter), counter)
    )
    finished(provider, 3)
    start = time.perf_counter()
    assert provider.force_flush(500) is False
    # Not 2 x 60 s: the request was cut at the flush's deadline, and not retried after it.
    assert time.perf_counter() - start < 10.0
    assert dropped(registry) == 3
    assert exporter.timeout == 60  # the exporter's own timeout, for the next export
    provider.shutdown()


def test_flush_against_a_slow_collector_says_false_on_time_then_true_in_time(
    make_observability: Factory,
) -> None:
    received: list[str] = []
    collector = slow_collector(2.0, received)
    try:
        registry = CollectorRegistry()
        obs = make_observability(
            registry=registry,
            traces_exporter="zipkin",
            zipkin_endpoint=f"{collector.url}/api/v2/spans",
        )
        with obs.tracer.start_as_current_span("late"):
            pass
        start = time.perf_counter()
        assert obs.flush(500) is False
        assert time.perf_counter() - start < 0.5 + 1.0
        eventually(lambda: dropped(registry) == 1, timeout=10.0, what="the cut request")
        [processor] = obs.tracer_provider._active_span_processor._span_processors
        assert isinstance(processor, EncodedBatchSpanProcessor)
        guard = processor._guard
        assert isinstance(guard, GuardedSpanExporter)
        eventually(lambda: time.monotonic() > guard._retry_at, what="the backoff to pass")
        eventually(lambda: not flush_threads(), what="the cut flush to end")
        with obs.tracer.start_as_current_span("in time"):
            pass
        assert obs.flush(10_000) is True
    finally:
        collector.stop()
    assert "in time" in received


@pytest.mark.parametrize(
    ("sampler", "recorded"),
    [
        ("always_on", True),
        ("always_off", False),
        ("traceidratio", True),
        ("parentbased_always_on", True),
        ("parentbased_always_off", False),
        ("parentbased_traceidratio", True),
        ("ALWAYS_OFF", False),
    ],
)
def test_every_sampler_the_specification_lists_is_honoured(
    make_observability: Factory, monkeypatch: pytest.MonkeyPatch, sampler: str, recorded: bool
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    obs = make_observability(sample_ratio=1.0)
    with obs.tracer.start_as_current_span("work") as span:
        assert span.is_recording() is recorded
    assert len(spans(obs)) == (1 if recorded else 0)


def test_a_parent_based_sampler_follows_the_callers_decision(make_observability: Factory) -> None:
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    obs = make_observability(traces_sampler="parentbased_always_on")
    unsampled_parent = otel_trace.set_span_in_context(
        NonRecordingSpan(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(0)))
    )
    with obs.tracer.start_as_current_span("child", context=unsampled_parent) as span:
        assert not span.is_recording()
    always = make_observability(traces_sampler="always_on", registry=CollectorRegistry())
    with always.tracer.start_as_current_span("child", context=unsampled_parent) as span:
        assert span.is_recording()


_TRACE_STATES = st.lists(
    st.tuples(
        st.sampled_from(["vendor", "congo", "rojo@t"]), st.sampled_from(["t61rcWkgMzE", "1"])
    ),
    max_size=3,
    unique_by=lambda entry: entry[0],
)


@st.composite
def _parent_contexts(draw: st.DrawFn) -> Any:
    """None, an empty context, an invalid span, or a remote or local parent, sampled or not."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    kind = draw(st.sampled_from(["none", "empty", "invalid", "parent"]))
    if kind == "none":
        return None
    if kind == "empty":
        return otel_context.Context()
    if kind == "invalid":
        return otel_trace.set_span_in_context(otel_trace.INVALID_SPAN)
    parent = SpanContext(
        draw(st.integers(1, 2**128 - 1)),
        draw(st.integers(1, 2**64 - 1)),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1, 2, 3]))),
        trace_state=TraceState(draw(_TRACE_STATES)),
    )
    return otel_trace.set_span_in_context(NonRecordingSpan(parent))


@given(
    ratio=st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0)),
    trace_id=st.integers(1, 2**128 - 1),
    parent=_parent_contexts(),
    attributes=st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers())),
)
# Either side of the bound (2**63 at 0.5); only the low 64 bits of the trace id count.
@example(ratio=0.5, trace_id=2**63, parent=None, attributes=None)
@example(ratio=0.5, trace_id=2**63 - 1, parent=None, attributes={"a": 1})
@example(ratio=0.5, trace_id=(1 << 100) | (2**63 - 1), parent=None, attributes=None)
@example(ratio=1.0, trace_id=2**128 - 1, parent=None, attributes=None)
def test_the_default_sampler_decides_as_the_sdk_s_parent_based_ratio_sampler(
    ratio: float, trace_id: int, parent: Any, attributes: dict[str, int] | None
) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

    ours: Sampler = _ParentBasedTraceIdRatio(ratio)
    sdk: Sampler = ParentBased(TraceIdRatioBased(ratio))
    mine = ours.should_sample(parent, trace_id, "GET /tasks", SpanKind.SERVER, attributes)
    theirs = sdk.should_sample(parent, trace_id, "GET /tasks", SpanKind.SERVER, attributes)
    assert mine.decision is theirs.decision
    assert dict(mine.attributes) == dict(theirs.attributes)
    assert mine.trace_state == theirs.trace_state
    assert ours.get_description() == sdk.get_description()


@pytest.mark.parametrize("sampler", ["jaeger_remote", "xray", "sometimes", ""])
def test_an_unsupported_sampler_is_refused_with_what_is_supported(sampler: str) -> None:
    from todo_observability.exceptions import ConfigurationError

    if not sampler:
        assert resolve_settings(env={"OTEL_TRACES_SAMPLER": sampler}).traces_sampler == (
            "parentbased_traceidratio"
        )
        return
    with pytest.raises(ConfigurationError, match=r"OTEL_TRACES_SAMPLER.*always_off.*traceidratio"):
        resolve_settings(env={"OTEL_TRACES_SAMPLER": sampler})


def test_todo_obs_config_shows_otel_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from todo_observability.cli import main

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    out = io.StringIO()
    assert main(["config"], out) == 0
    [row] = [line for line in out.getvalue().splitlines() if line.startswith("sdk_disabled")]
    assert row.split() == ["sdk_disabled", "True", "$OTEL_SDK_DISABLED"]


def _otlp_exporter_of(settings: Any) -> Any:
    provider, _ = build_tracer_provider(
        settings, _metric_set(CollectorRegistry()).counter(SPANS_DROPPED)
    )
    [processor] = provider._active_span_processor._span_processors
    assert isinstance(processor, CountingBatchSpanProcessor)
    guarded = processor._batch_processor._exporter
    assert isinstance(guarded, GuardedSpanExporter)
    assert isinstance(guarded.exporter, ScrubbingSpanExporter)
    exporter = guarded.exporter.exporter
    provider.shutdown()
    return exporter


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom/path"},
            "http://t:9999/custom/path",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom/path",
            },
            "http://t:9999/custom/path",  # the signal's own variable wins, used as it is
        ),
    ],
)
def test_otlp_endpoints_follow_the_specifications_precedence(
    env: dict[str, str], endpoint: str
) -> None:
    settings = resolve_settings(env={"OTEL_TRACES_EXPORTER": "otlp", **env})
    assert _otlp_exporter_of(settings)._endpoint == endpoint


def test_otlp_protocol_must_be_one_with_a_python_exporter() -> None:
    from todo_observability.exceptions import ConfigurationError

    with pytest.raises(
        ConfigurationError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL.*http/protobuf or grpc"
    ):
        resolve_settings(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_otlp_over_grpc_without_its_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from todo_observability.exceptions import MissingExtraError

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    settings = resolve_settings(
        env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'todo-observability\[otlp-grpc\]'"):
        _otlp_exporter_of(settings)


def test_otlp_over_grpc_delivers_spans_to_a_real_grpc_collector(
    make_observability: Factory,
) -> None:
    from concurrent import futures

    import grpc  # type: ignore[import-untyped, unused-ignore]
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    received: list[str] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc, unused-ignore]
        def Export(self, request: Any, context: Any) -> Any:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    received.extend(span.name for span in scope_spans.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)  # type: ignore[no-untyped-call, unused-ignore]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        obs = make_observability(
            traces_exporter="otlp",
            otlp_protocol="grpc",
            otlp_traces_endpoint=f"http://127.0.0.1:{port}",
        )
        with obs.tracer.start_as_current_span("over grpc"):
            pass
        assert obs.flush(10_000) is True
        assert received == ["over grpc"]
    finally:
        server.stop(grace=None)
