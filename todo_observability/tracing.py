"""Tracing: the tracer provider, its sampler and exporters, and the `traced` decorator.

Spans leave through a batch processor with a bounded queue. For Zipkin (and the
Zipkin file) each span is encoded to bytes when it ends and the bytes are queued
(`todo_observability._export`), so that queued spans give the garbage collector
nothing to track; other exporters get OpenTelemetry's batch processor. An
unreachable collector costs the request path nothing more: exports happen on the
processor's thread, a failing exporter is skipped while it backs off, and every
span that is never exported is counted in
`todo_observability_spans_dropped_total{reason}`.

Nothing secret leaves with a span: every exporter the SDK builds sits behind
`ScrubbingSpanExporter` (Zipkin's and the file's scrub the same way as they encode),
and the SDK's own spans (`traced`, outgoing calls) are
scrubbed when they are recorded, for span processors of your own too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, Status, StatusCode, get_current_span

from todo_observability._decorators import ContextDecorator
from todo_observability._export import (
    NOT_SECRET_KEYS,
    EncodedBatchSpanProcessor,
    EncodedSpanSink,
    ZipkinJsonEncoder,
    ZipkinJsonExporter,
    join,
)
from todo_observability.context import _current_signals
from todo_observability.exceptions import MissingExtraError, _describe
from todo_observability.redaction import REDACTED, Redactor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager

    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import TraceState
    from opentelemetry.util.types import Attributes
    from prometheus_client import Counter

    from todo_observability.config import Settings

__all__ = [
    "GuardedSpanExporter",
    "ScrubbingSpanExporter",
    "ZipkinFileSpanExporter",
    "build_tracer_provider",
    "traced",
]


_log = logging.getLogger("todo_observability.tracing")
_NOT_SECRET_KEYS = NOT_SECRET_KEYS


def _scrub_attributes(
    attributes: Mapping[str, Any] | None, redactor: Redactor
) -> dict[str, Any] | None:
    """A scrubbed copy of `attributes`, or None when nothing in them needs scrubbing."""
    if not attributes:
        return None
    scrubbed: dict[str, Any] | None = None
    for key, value in attributes.items():
        if key not in _NOT_SECRET_KEYS and redactor.is_sensitive(key):
            new: Any = REDACTED
        elif isinstance(value, str):
            new = redactor.scrub_text(value)
        elif isinstance(value, tuple | list) and any(isinstance(item, str) for item in value):
            new = tuple(redactor.scrub_text(i) if isinstance(i, str) else i for i in value)
        else:
            continue
        if new != value:
            if scrubbed is None:
                scrubbed = dict(attributes)
            scrubbed[key] = new
    return scrubbed


def _scrubbed_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """`span`, or a copy of it with its name, attributes, events, links and status scrubbed."""
    scrub = redactor.scrub_text
    name = scrub(span.name)
    attributes = _scrub_attributes(span.attributes, redactor)
    events: list[Event] | None = None
    for index, event in enumerate(span.events):
        event_attributes = _scrub_attributes(event.attributes, redactor)
        if event_attributes is not None:
            if events is None:
                events = list(span.events)
            events[index] = Event(event.name, event_attributes, event.timestamp)
    links: list[Link] | None = None
    for index, link in enumerate(span.links):
        link_attributes = _scrub_attributes(link.attributes, redactor)
        if link_attributes is not None:
            if links is None:
                links = list(span.links)
            links[index] = Link(link.context, link_attributes)
    status = span.status
    description = scrub(status.description) if status.description else status.description
    if description != status.description:
        status = Status(status.status_code, description)
    unchanged = attributes is None and events is None and links is None
    if unchanged and name == span.name and status is span.status:
        return span  # the common case: nothing to copy
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=span.events if events is None else events,
        links=span.links if links is None else links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Wraps an exporter so that what is secret in a span never reaches it.

    Each span is passed on scrubbed by `redactor`: values under sensitive
    attribute keys become `[REDACTED]`, and secrets recognisable by their shape
    (URL passwords, `Bearer` credentials, JWTs, sensitive query parameters) are
    replaced in the name, the attributes, the events (the message and stack
    trace of exception events), the links and the status description. A span
    with nothing to scrub is passed on as it is, without a copy. This runs on
    the exporting thread, off the request path.

    `configure()` puts every exporter it builds behind one; wrap your own when
    you pass `tracer_provider=`:

        provider.add_span_processor(BatchSpanProcessor(ScrubbingSpanExporter(exporter)))

    Args:
        exporter: Where the scrubbed spans go.
        redactor: Decides what is sensitive; default patterns when omitted.
    """

    def __init__(self, exporter: SpanExporter, redactor: Redactor | None = None):
        self.exporter = exporter
        self.redactor = redactor or Redactor()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export `spans`, scrubbed."""
        redactor = self.redactor
        return self.exporter.export([_scrubbed_span(span, redactor) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


def _record_exception(span: trace.Span, exc: BaseException, redactor: Redactor) -> str:
    """Record `exc` on `span` as OpenTelemetry's exception event, its message and stack scrubbed.

    Returns the scrubbed message, for the span's status.

    `Span.record_exception` would call `str(exc)` unguarded and put the raw text on the span,
    where processors of the user's own see it before any exporter.
    """
    message = _describe(exc)
    kind = type(exc)
    module = kind.__module__
    scrub = redactor.scrub_text
    span.add_event(
        "exception",
        {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": scrub(message),
            "exception.stacktrace": scrub("".join(traceback.format_exception(exc))),
            "exception.escaped": "False",
        },
    )
    return scrub(message)


def _sampler(name: str, ratio: float) -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` names (validated by the settings)."""
    if name == "parentbased_traceidratio":
        return _ParentBasedTraceIdRatio(ratio)
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
    }.get(name.removeprefix("parentbased_")) or TraceIdRatioBased(ratio)
    return ParentBased(root) if name.startswith("parentbased_") else root


_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_DROP = SamplingResult(Decision.DROP)


class _ParentBasedTraceIdRatio(ParentBased):
    """`ParentBased(TraceIdRatioBased(ratio))`, deciding in one pass.

    The same decisions, attributes and trace state as the SDK's composition (a test
    holds them to it); it reads the parent from the context once where the pair
    reads it twice, and shares one result for every root span it drops. A sampler
    runs for every span, recorded or not.
    """

    def __init__(self, ratio: float):
        root = TraceIdRatioBased(ratio)
        super().__init__(root)
        self._bound = root.bound

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid:
            if trace_id & _TRACE_ID_LIMIT < self._bound:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, None)
            return _DROP
        # The parent decided (remote or local alike, with the default delegates).
        if parent.trace_flags.sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
        return SamplingResult(Decision.DROP, None, parent.trace_state)


def _one_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + "\n"


def _timeout_knob(exporter: SpanExporter) -> tuple[object, str] | None:
    """Where `exporter` keeps the seconds one export may take: (object, attribute name), if known.

    The exporters take a timeout at construction only; a flush with less time left
    must shorten the next request, so the guard sets it for each attempt. The Zipkin
    exporter reads its public `timeout` on every request; the OTLP/HTTP exporter keeps
    it on its client, where this SDK version has it (if that ever moves, the flush is
    still bounded by its caller, only the request is not shortened). The scrubbing
    wrapper in front of it is looked through.
    """
    while isinstance(exporter, ScrubbingSpanExporter):
        exporter = exporter.exporter
    if isinstance(getattr(exporter, "timeout", None), (int, float)):
        return exporter, "timeout"
    client = getattr(exporter, "_client", None)
    if isinstance(getattr(client, "_timeout", None), (int, float)):
        return client, "_timeout"
    return None


class GuardedSpanExporter(SpanExporter):
    """Wraps an exporter so that a dead collector is cheap, quiet and counted.

    A failed export is tried once more at once (a stale keep-alive connection fails
    the first request it carries), unless a flush's deadline has passed; after a second
    failure the wrapped exporter is not called again until a backoff (1 s, doubling up
    to `max_backoff`) has passed; batches that arrive meanwhile are dropped without
    being encoded. Each outage is logged once when it starts and once when it ends.

    While a flush waits (`deadline` is set), no request is given more time than the
    flush has left.

    Attributes:
        deadline: `time.monotonic()` by which a flush wants its spans exported, or None.
        failed: Spans not exported so far (failed, or dropped while backing off).
    """

    def __init__(self, exporter: SpanExporter, dropped: Counter, *, max_backoff: float = 30.0):
        self.exporter = exporter
        self._export_failed = dropped.labels("export_failed")
        self._unavailable = dropped.labels("exporter_unavailable")
        self._max_backoff = max_backoff
        self._backoff = 0.0
        self._retry_at = 0.0
        self._name = type(exporter).__name__
        self._knob = _timeout_knob(exporter)
        self._timeout: float | None = (
            float(getattr(*self._knob)) if self._knob is not None else None
        )
        self.deadline: float | None = None
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export `spans`, or drop and count them while the exporter backs off."""
        exporter = self.exporter
        return self._guarded(len(spans), lambda: exporter.export(spans))

    def export_encoded(self, encoded: Sequence[bytes]) -> SpanExportResult:
        """Write spans encoded by the wrapped sink's encoder, or drop and count them while it backs off."""
        sink: EncodedSpanSink = self.exporter  # type: ignore[assignment]
        return self._guarded(len(encoded), lambda: sink.write_encoded(encoded))

    def _guarded(self, count: int, send: Callable[[], SpanExportResult]) -> SpanExportResult:
        if self._backoff and time.monotonic() < self._retry_at:
            self._unavailable.inc(count)
            self.failed += count
            return SpanExportResult.FAILURE
        deadline = self.deadline
        result, error = self._attempt(send, deadline)
        if (
            result is not SpanExportResult.SUCCESS
            and not self._backoff
            and (deadline is None or time.monotonic() < deadline)
        ):
            # Once more at once while the collector is believed up: a pooled keep-alive
            # connection that the server timed out just as the batch was sent fails with no
            # answer, and the retry opens a fresh one. A collector that is really down costs
            # one extra call per outage, not per batch.
            result, error = self._attempt(send, deadline)
        if result is SpanExportResult.SUCCESS:
            if self._backoff:
                _log.warning("%s recovered; spans are exported again", self._name)
            self._backoff = 0.0
            return result
        if not self._backoff:
            _log.warning(
                "%s failed, spans are dropped until it recovers: %s",
                self._name,
                error or "export returned FAILURE",
            )
        # The backoff is in place before the drop is counted: whoever sees the count sees it.
        self._backoff = min(self._max_backoff, self._backoff * 2 or 1.0)
        self._retry_at = time.monotonic() + self._backoff
        self.failed += count
        self._export_failed.inc(count)
        return result

    def _attempt(
        self, send: Callable[[], SpanExportResult], deadline: float | None
    ) -> tuple[SpanExportResult, Exception | None]:
        knob, timeout = self._knob, self._timeout
        left = None if deadline is None else deadline - time.monotonic()
        # A deadline already passed is a flush that gave up waiting: the usual timeout then.
        budget = None
        if knob is not None and timeout is not None and left is not None and left > 0:
            budget = min(timeout, left)
            setattr(*knob, budget)
        try:
            return send(), None
        except Exception as exc:  # noqa: BLE001 - an exporter must never break the processor thread
            return SpanExportResult.FAILURE, exc
        finally:
            if knob is not None and budget is not None:
                setattr(*knob, timeout)

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans it drops because its queue is full.

    The SDK drops silently (and logs a warning per span); we count instead and
    skip the per-span warning, which would otherwise flood the logs exactly when
    the system is already in trouble. Its `force_flush` tells the truth: the SDK's
    returns True even when nothing was exported, and ignores its timeout.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        dropped: Counter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
    ):
        # None means the SDK default, which honours OTEL_BSP_MAX_QUEUE_SIZE and friends.
        super().__init__(
            exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size
        )
        self._queue_full = dropped.labels("queue_full")
        self._guard = exporter if isinstance(exporter, GuardedSpanExporter) else None
        # The SDK exposes no public queue length; read it where this SDK version
        # keeps it, and fall back to the SDK's own behaviour if that ever moves.
        processor = getattr(self, "_batch_processor", None)
        self._queue = getattr(processor, "_queue", None)
        self._max_queue = getattr(processor, "_max_queue_size", None)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue `span` for export, or count it as dropped when the queue is full."""
        if (
            self._queue is not None
            and self._max_queue is not None
            and len(self._queue) >= self._max_queue
        ):
            self._queue_full.inc()
            return
        super().on_end(span)

    def force_flush(self, timeout_millis: int | None = 30000) -> bool:
        """Export the queued spans now; True only if all were exported within `timeout_millis`.

        Requests made meanwhile get no more time than is left. It can still wait
        longer, for an export already under way on the processor's thread:
        `Observability.flush()` bounds the wait itself.
        """
        timeout = 30.0 if timeout_millis is None else timeout_millis / 1000
        deadline = time.monotonic() + timeout
        guard = self._guard
        failed = guard.failed if guard is not None else 0
        if guard is not None:
            guard.deadline = deadline
        try:
            flushed = super().force_flush(timeout_millis)
        finally:
            if guard is not None and guard.deadline == deadline:
                guard.deadline = None
        return (
            flushed
            and time.monotonic() <= deadline
            and (guard is None or guard.failed == failed)
            and not self._queue
        )


class _BoundedCall:
    """`function(seconds_left)` on a daemon thread, which callers wait for until a deadline at most.

    An export already under way cannot be interrupted, so waiting for it from
    another thread is the only way to keep a promise about time. The thread may
    outlive the wait; it ends with the export it waits for.
    """

    def __init__(
        self, function: Callable[[float], bool], deadline: float, *, name: str = "todo-obs-flush"
    ):
        self._outcome: list[bool] = []
        self.thread = threading.Thread(
            target=self._run, args=(function, deadline), name=name, daemon=True
        )
        self.thread.start()

    def _run(self, function: Callable[[float], bool], deadline: float) -> None:
        try:
            self._outcome.append(bool(function(max(0.0, deadline - time.monotonic()))))
        except Exception:  # noqa: BLE001 - a flush that fails says False, it never raises
            _log.exception("flushing spans failed")

    @property
    def running(self) -> bool:
        """Whether `function` has not returned yet."""
        return self.thread.is_alive()

    def wait(self, deadline: float) -> bool:
        """`function`'s result, or False if it raised or had not returned by `deadline`."""
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return not self.thread.is_alive() and bool(self._outcome) and self._outcome[0]


class ZipkinFileSpanExporter(SpanExporter):
    """Appends spans to a file as Zipkin v2 JSON, one JSON array of spans per line.

    For local runs without a collector: the file can be read by `todo-obs`,
    uploaded to Zipkin's `/api/v2/spans` line by line, or inspected with jq.
    The spans are those the Zipkin exporter posts (`ZipkinJsonEncoder`), scrubbed.

    Args:
        path: The file, appended to.
        redactor: What the spans are scrubbed of; default patterns when omitted.
    """

    def __init__(self, path: str, redactor: Redactor | None = None):
        self.path = path
        self.encoder = ZipkinJsonEncoder(redactor)
        self._lock = threading.Lock()
        self._file = open(path, "ab")  # noqa: SIM115 - closed in shutdown()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append one line holding `spans`."""
        encode = self.encoder.encode
        return self.write_encoded([encode(span) for span in spans])

    def write_encoded(self, encoded: Sequence[bytes]) -> SpanExportResult:
        """Append one line holding spans already encoded by `encoder`."""
        if not encoded:
            return SpanExportResult.SUCCESS
        line = join(encoded) + b"\n"
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(line)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def _exporter(name: str, settings: Settings) -> SpanExporter:
    if name == "otlp":
        return _otlp_exporter(settings)
    assert name == "console"
    # The SDK's default binds the sys.stdout of import time; use today's.
    # One line per span: stdout stays a stream of JSON lines, the logs' among them.
    return ConsoleSpanExporter(out=sys.stdout, formatter=_one_line)


def _encoding_processor(
    name: str, settings: Settings, redactor: Redactor, dropped: Counter
) -> SpanProcessor:
    """The batch processor of a Zipkin sink: spans encoded (and scrubbed) as they end."""
    sink: SpanExporter
    if name == "zipkin":
        sink = ZipkinJsonExporter(settings.zipkin_endpoint, timeout=5, redactor=redactor)
    else:
        assert name == "file"
        assert settings.traces_file
        sink = ZipkinFileSpanExporter(settings.traces_file, redactor)
    return EncodedBatchSpanProcessor(GuardedSpanExporter(sink, dropped), dropped)


def _otlp_exporter(settings: Settings) -> SpanExporter:
    """The OTLP exporter the settings describe, by the specification's precedence.

    The traces-specific variables win over the generic ones; a traces endpoint is used as
    it is, the generic one gets `/v1/traces` appended over HTTP.
    """
    protocol = settings.otlp_traces_protocol or settings.otlp_protocol
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise MissingExtraError(
                "The otlp trace exporter over gRPC",
                "otlp-grpc",
                "opentelemetry-exporter-otlp-proto-grpc",
            ) from None
        endpoint = (
            settings.otlp_traces_endpoint or settings.otlp_endpoint or "http://localhost:4317"
        )
        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))  # type: ignore[no-any-return,unused-ignore]
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise MissingExtraError(
            "The otlp trace exporter", "otlp", "opentelemetry-exporter-otlp-proto-http"
        ) from None
    endpoint = settings.otlp_traces_endpoint or (
        (settings.otlp_endpoint or "http://localhost:4318").rstrip("/") + "/v1/traces"
    )
    return OTLPSpanExporter(endpoint=endpoint)  # type: ignore[no-any-return,unused-ignore]


def build_resource(settings: Settings) -> Resource:
    """The resource every span carries: service name, version and environment."""
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    attributes.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            # The older key, still read by Zipkin-era tooling and dashboards.
            "deployment.environment": settings.environment,
        }
    )
    return Resource.create(attributes)


def build_tracer_provider(
    settings: Settings, dropped: Counter, redactor: Redactor | None = None
) -> tuple[TracerProvider, InMemorySpanExporter | None]:
    """A provider with the configured sampler (by default ParentBased(TraceIdRatioBased(ratio))) and exporters.

    Every exporter, the in-memory one included, sits behind a `ScrubbingSpanExporter`
    using `redactor` (default: one with the configured `redact_keys`), or, for Zipkin and
    the Zipkin file, encodes spans through a `ZipkinJsonEncoder` that scrubs as it does.

    Returns the provider and, when the `memory` exporter is configured, its exporter.
    """
    if redactor is None:
        redactor = Redactor(settings.redact_keys)
    provider = TracerProvider(
        resource=build_resource(settings),
        sampler=_sampler(settings.traces_sampler, settings.sample_ratio),
    )
    memory: InMemorySpanExporter | None = None
    for name in settings.traces_exporter:
        processor: SpanProcessor
        if name == "memory":
            memory = InMemorySpanExporter()
            processor = SimpleSpanProcessor(ScrubbingSpanExporter(memory, redactor))
        elif name in ("zipkin", "file"):
            processor = _encoding_processor(name, settings, redactor, dropped)
        else:
            processor = CountingBatchSpanProcessor(
                GuardedSpanExporter(
                    ScrubbingSpanExporter(_exporter(name, settings), redactor), dropped
                ),
                dropped,
            )
        provider.add_span_processor(processor)
    return provider, memory


def get_tracer() -> trace.Tracer:
    """The tracer of the service serving the current unit of work (else configured last, else global)."""
    return _current_signals().tracer


@contextlib.contextmanager
def _traced_span(name: str, attributes: Mapping[str, Any] | None) -> Iterator[trace.Span]:
    signals = _current_signals()
    redactor = signals.redactor
    with signals.tracer.start_as_current_span(
        name,
        attributes=redactor.redact(attributes) if attributes else None,
        # Recorded below, scrubbed: the SDK would put the raw message on the span.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:  # as the SDK: GeneratorExit and friends are not errors
            if span.is_recording():
                message = _record_exception(span, exc, redactor)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
            raise


class traced(ContextDecorator):
    """Run a function (sync or async) inside a child span.

    The span is named `name` (default: the function's qualified name), carries
    `attributes` (scrubbed: sensitive keys redacted, secret-shaped values
    replaced), records an escaping exception (its message and stack scrubbed)
    and sets the span status to ERROR, then re-raises.

        @traced("rrule.calculate_next_occurrence", attributes={"component": "recurring"})
        def next_occurrence(rule: str, after: datetime) -> datetime | None: ...
    """

    __slots__ = ("_attributes", "_name")

    def __init__(self, name: str | None = None, *, attributes: Mapping[str, Any] | None = None):
        self._name = name
        self._attributes = attributes

    def _fresh(self, func: Callable[..., Any]) -> AbstractContextManager[trace.Span]:
        return _traced_span(self._name or func.__qualname__, self._attributes)
