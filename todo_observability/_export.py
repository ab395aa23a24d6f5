"""Span export without tracked objects: each finished span is encoded to bytes when it ends.

A batch processor that queues `ReadableSpan` objects keeps them alive for up to its
schedule delay: long enough for the collector to promote them, with everything they
hold, to the oldest generation, where they end up triggering full collections (tens
of milliseconds each, paid by whichever request is running). Bytes are not tracked by
the garbage collector. So `EncodedBatchSpanProcessor` encodes a span in `on_end`, in
the Zipkin v2 JSON form the Zipkin exporter of OpenTelemetry sends (scrubbed as
`ScrubbingSpanExporter` scrubs), queues the bytes, and its thread writes the batch as
one JSON array: the spans' own objects die with the request.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from todo_observability import _json
from todo_observability.redaction import REDACTED, Redactor

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan, Span
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from prometheus_client import Counter

    from todo_observability.tracing import GuardedSpanExporter

__all__ = [
    "EncodedBatchSpanProcessor",
    "ZipkinJsonEncoder",
    "ZipkinJsonExporter",
]

_log = logging.getLogger("todo_observability.tracing")

# Attributes of the SDK's own whose names look sensitive but whose values are not secrets.
NOT_SECRET_KEYS = frozenset({"messaging.kafka.message.key"})
_KINDS = {
    SpanKind.SERVER: "SERVER",
    SpanKind.CLIENT: "CLIENT",
    SpanKind.PRODUCER: "PRODUCER",
    SpanKind.CONSUMER: "CONSUMER",
}
_MAX_SCOPES = 256
_UNSET = StatusCode.UNSET
_ERROR = StatusCode.ERROR
# Strings seen to hold nothing to scrub (HTTP methods, routes, addresses, user agents recur).
_MAX_CLEAN = 4096


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    """What the encoder reads of a finished span, in one pass.

    The SDK's spans keep these in their instance dictionary, where reading them costs a
    fraction of the ~15 property calls the public API takes (a large part of encoding).
    Anything else is read through the public properties; so is everything if the SDK's
    layout ever changes. The dropped counts are None when the public properties must say.
    """
    state = getattr(span, "__dict__", None)
    if state is not None:
        try:
            attributes, events, links = state["_attributes"], state["_events"], state["_links"]
            dropped = (
                getattr(attributes, "dropped", 0),
                getattr(events, "dropped", 0),
                getattr(links, "dropped", 0),
            )
            return (
                state["_context"],
                state["_name"],
                state["_kind"],
                state["_parent"],
                state["_start_time"],
                state["_end_time"],
                attributes,
                events,
                state["_status"],
                dropped,
            )
        except KeyError:
            pass
    return (
        span.context,
        span.name,
        span.kind,
        span.parent,
        span.start_time,
        span.end_time,
        span.attributes,
        span.events,
        span.status,
        None,
    )


def _items(attributes: Any) -> Iterable[tuple[str, Any]]:
    """The items of a finished span's attributes, read without the per-item lock of `BoundedAttributes`.

    A finished span no longer changes; the mapping's `items()` would go through the
    `Mapping` machinery and take its lock for every key.
    """
    raw = getattr(attributes, "_dict", None)
    if isinstance(raw, dict):
        return raw.items()
    items: Iterable[tuple[str, Any]] = attributes.items()
    return items


def _usec(nanoseconds: int) -> int:
    """Nanoseconds as Zipkin's microseconds, rounded as OpenTelemetry's Zipkin encoder rounds."""
    return (nanoseconds + 500) // 1000


def _text(value: Any) -> str | None:
    """An attribute value as the Zipkin encoder writes a tag: None for what it skips."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, tuple | list):
        items: list[str | None] = []
        for item in value:
            if isinstance(item, bool):
                items.append("true" if item else "false")
            elif isinstance(item, int | float | str):
                items.append(str(item))
            elif item is None:
                items.append(None)
        # The standard library, not orjson: the same escapes as the Zipkin encoder's.
        return json.dumps(items, separators=(",", ":"))
    return None


class _Tail(NamedTuple):
    tags: dict[str, str]
    json: bytes


class ZipkinJsonEncoder:
    """Encodes a finished span as one Zipkin v2 JSON object (bytes), scrubbed.

    The fields are those OpenTelemetry's `ZipkinExporter` (JSON v2) sends: ids, name,
    kind, timestamp and duration in microseconds, `localEndpoint` (the resource's
    `service.name`), tags (the span's attributes, then the resource's, the
    instrumentation scope, `otel.status_code`, `error`, dropped counts), annotations
    (one per event, its value `{"name": {attributes}}` as JSON) and `debug`. Where that
    encoder writes what the Zipkin schema does not allow, this one follows the schema:
    no `"kind": null` for internal spans (absent means local), no `null` tag (a scope
    without version), and a duration of at least 1 (Zipkin rounds shorter ones up).

    What `ScrubbingSpanExporter` scrubs is scrubbed here, before anything is encoded:
    the name, sensitive attribute keys (values become `[REDACTED]`), secret-shaped text
    in attribute and event values, and the status description (the `error` tag).

    Args:
        redactor: Decides what is sensitive; default patterns when omitted.
    """

    def __init__(self, redactor: Redactor | None = None):
        self.redactor = redactor or Redactor()
        self._resource: Resource | None = None
        self._endpoint = b""
        self._resource_tags: dict[str, str] = {}
        # Per instrumentation scope (few per process): the resource's tags and the scope's.
        self._scopes: dict[int, tuple[InstrumentationScope | None, _Tail]] = {}
        self._sensitive: dict[str, bool] = {}
        self._clean: set[str] = set()

    def _tail(self, span: ReadableSpan) -> _Tail:
        """The tags every span of this resource and scope carries after its own attributes."""
        resource = span.resource
        if resource is not self._resource:
            service = resource.attributes.get("service.name")
            self._endpoint = b',"localEndpoint":' + _json.dumps(
                {"serviceName": service or "unknown_service"}
            )
            self._resource_tags = self._tags(resource.attributes, scrub=False)
            self._scopes = {}
            self._resource = resource
        scope = span.instrumentation_scope
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        tags = dict(self._resource_tags)
        if scope is not None:
            tags["otel.library.name"] = tags["otel.scope.name"] = scope.name
            if scope.version is not None:
                tags["otel.library.version"] = tags["otel.scope.version"] = scope.version
        # The tags as JSON members without their braces, to be spliced after the span's own.
        tail = _Tail(tags, _json.dumps(tags)[1:-1])
        if len(self._scopes) >= _MAX_SCOPES:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, tail)  # the scope is kept: its id stays its own
        return tail

    def _tags(self, attributes: Mapping[str, Any] | None, *, scrub: bool = True) -> dict[str, str]:
        tags: dict[str, str] = {}
        if not attributes:
            return tags
        redactor = self.redactor
        sensitive = self._sensitive
        clean = self._clean
        for key, value in _items(attributes):
            if scrub:
                hit = sensitive.get(key)
                if hit is None:
                    hit = key not in NOT_SECRET_KEYS and redactor.is_sensitive(key)
                    if len(sensitive) < _MAX_CLEAN:
                        sensitive[key] = hit
                if hit:
                    tags[key] = REDACTED
                    continue
            kind = type(value)
            if kind is str:
                tags[key] = self._scrub(value) if scrub and value not in clean else value
                continue
            if kind is int:
                tags[key] = str(value)
                continue
            if scrub and kind is tuple:
                value = tuple(redactor.scrub_text(i) if isinstance(i, str) else i for i in value)
            text = _text(value)
            if text is None:
                _log.warning("Could not serialize tag %s", key)
                continue
            tags[key] = text
        return tags

    def _annotations(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        redactor = self.redactor
        annotations = []
        for event in events:
            attributes: dict[str, Any] = {}
            for key, value in (event.attributes or {}).items():
                if key not in NOT_SECRET_KEYS and redactor.is_sensitive(key):
                    value = REDACTED
                elif isinstance(value, str):
                    value = redactor.scrub_text(value)
                elif isinstance(value, tuple | list):
                    value = [redactor.scrub_text(i) if isinstance(i, str) else i for i in value]
                attributes[key] = value
            annotations.append(
                {
                    "timestamp": _usec(event.timestamp),
                    # The Zipkin encoder's own form of the value, with the standard library's escapes.
                    "value": json.dumps({event.name: attributes}, sort_keys=True),
                }
            )
        return annotations

    def _scrub(self, text: str) -> str:
        if text in self._clean:
            return text
        scrubbed = self.redactor.scrub_text(text)
        if scrubbed is text and len(text) <= 256 and len(self._clean) < _MAX_CLEAN:
            self._clean.add(text)
        return scrubbed

    def encode(self, span: ReadableSpan) -> bytes:
        """`span` as one Zipkin v2 JSON object."""
        (context, name, kind, parent, start, end, attributes, events, status, dropped) = _fields(
            span
        )
        start = start or 0
        end = end or start
        tags = self._tags(attributes)
        tail = self._tail(span)
        code = status.status_code
        late: dict[str, str] | None = None  # tags that win over the resource's and the scope's
        if code is not _UNSET:
            late = {"otel.status_code": code.name}
            if code is _ERROR:
                late["error"] = self._scrub(status.description) if status.description else ""
        if dropped is None:
            dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
        if dropped[0]:
            late = late or {}
            late["otel.dropped_attributes_count"] = str(dropped[0])
        annotations = None
        if events:
            if dropped[1]:
                late = late or {}
                late["otel.dropped_events_count"] = str(dropped[1])
            annotations = self._annotations(events)
        if dropped[2]:
            late = late or {}
            late["otel.dropped_links_count"] = str(dropped[2])
        duration = (end - start + 500) // 1000
        encoded: dict[str, Any] = {
            # int.to_bytes().hex() is the fastest way from an int to fixed-width hex.
            "traceId": context.trace_id.to_bytes(16, "big").hex(),
            "id": context.span_id.to_bytes(8, "big").hex(),
            "name": self._scrub(name),
            "timestamp": (start + 500) // 1000,
            "duration": duration if duration > 0 else 1,
        }
        zipkin_kind = _KINDS.get(kind)
        if zipkin_kind is not None:
            encoded["kind"] = zipkin_kind
        if annotations:
            encoded["annotations"] = annotations
        if context.trace_flags.sampled:
            encoded["debug"] = True
        if parent is not None:
            encoded["parentId"] = parent.span_id.to_bytes(8, "big").hex()
        splice = tail.json
        if late:
            tags.update(late)
        if not tail.tags.keys().isdisjoint(tags):
            # A key of the span's own that the resource or the scope also sets: merge in the
            # encoder's order (attributes, then resource and scope, then status and counts).
            merged = dict(tags)
            merged.update(tail.tags)
            merged.update(late or {})
            tags, splice = merged, b""
        if not splice:
            if tags:
                encoded["tags"] = tags
            return _json.dumps(encoded)[:-1] + self._endpoint + b"}"
        encoded["tags"] = tags
        # The tags come last: `..."tags":{own}}` becomes `..."tags":{own,tail}`.
        head = _json.dumps(encoded)[:-2]
        return b"".join((head, b"," if tags else b"", splice, b"}", self._endpoint, b"}"))


def join(encoded: Sequence[bytes]) -> bytes:
    """Encoded spans as one Zipkin v2 JSON array."""
    return b"[" + b",".join(encoded) + b"]"


class EncodedSpanSink(Protocol):
    """Where a batch of encoded spans goes: it writes them all, or fails."""

    def write_encoded(self, encoded: Sequence[bytes]) -> SpanExportResult:
        """Deliver `encoded` (spans encoded by the sink's `encoder`)."""
        ...


class ZipkinJsonExporter(SpanExporter):
    """Posts spans to a Zipkin collector's `/api/v2/spans`, as Zipkin v2 JSON.

    A span exporter like OpenTelemetry's `ZipkinExporter` (it posts what that one
    posts, see `ZipkinJsonEncoder`), and what `EncodedBatchSpanProcessor` writes
    through: `write_encoded` posts spans that were encoded when they ended.

    Requests go over one kept-alive `http.client` connection (a fraction of the CPU
    time of a `requests` call); when a proxy is configured for the endpoint
    (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) they go through `requests`, which honours it.

    Args:
        endpoint: The collector's URL (`http://` or `https://`).
        timeout: Seconds one request may take (read for every request).
        redactor: What the spans are scrubbed of.
    """

    def __init__(self, endpoint: str, *, timeout: float = 10, redactor: Redactor | None = None):
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"a Zipkin endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self.encoder = ZipkinJsonEncoder(redactor)
        self._url = url
        self._target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # the export thread and a flush may post at once
        self._session: Any = None
        proxies = urllib.request.getproxies()
        if url.scheme in proxies and not urllib.request.proxy_bypass(url.hostname):
            import requests

            self._session = requests.Session()
            self._session.headers["Content-Type"] = "application/json"
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and post `spans`."""
        encode = self.encoder.encode
        return self.write_encoded([encode(span) for span in spans])

    def write_encoded(self, encoded: Sequence[bytes]) -> SpanExportResult:
        """Post spans already encoded by `encoder`, as one JSON array."""
        if self._closed:
            return SpanExportResult.FAILURE
        body = join(encoded)
        if self._session is not None:
            response = self._session.post(self.endpoint, data=body, timeout=self.timeout)
            status, text = response.status_code, response.text
        else:
            with self._lock:
                status, text = self._post(body)
        if not 200 <= status < 300:
            _log.error("Zipkin refused %d spans: %s %s", len(encoded), status, text[:200])
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _post(self, body: bytes) -> tuple[int, str]:
        connection = self._connection
        if connection is None:
            url = self._url
            kind = (
                http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            )
            connection = self._connection = kind(url.hostname or "", url.port, timeout=self.timeout)
        elif connection.sock is not None:
            connection.sock.settimeout(self.timeout)
        connection.timeout = self.timeout
        try:
            connection.request("POST", self._target, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
        except BaseException:
            # A connection that failed half-way is not reused: the retry opens a new one.
            connection.close()
            self._connection = None
            raise
        if response.will_close:
            connection.close()
            self._connection = None
        return response.status, text.decode("utf-8", "replace")

    def shutdown(self) -> None:
        """Close the connections."""
        self._closed = True
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        if self._session is not None:
            self._session.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True


class EncodedBatchSpanProcessor(SpanProcessor):
    """A batch span processor that queues each sampled span encoded, as bytes.

    It behaves as OpenTelemetry's `BatchSpanProcessor` (and reads the same `OTEL_BSP_*`
    variables): a bounded queue, exports in batches of at most `max_export_batch_size`
    when a batch is full or every `schedule_delay_millis`, on its own thread. What it
    queues is the span encoded by the sink's encoder when the span ended; the span
    itself is released with the request.

    A full queue drops the span and counts it (`queue_full`), without encoding it or
    blocking. Spans are written through `guard` (a `GuardedSpanExporter` around the
    sink), which counts what fails and backs off from a dead collector. `force_flush`
    exports what is queued on the calling thread and says True only if all of it was
    exported within its timeout.

    Args:
        guard: The guarded sink (a `ZipkinJsonExporter` or `ZipkinFileSpanExporter`).
        dropped: `todo_observability_spans_dropped_total`.
        max_queue_size: Default `OTEL_BSP_MAX_QUEUE_SIZE`, else 2048.
        schedule_delay_millis: Default `OTEL_BSP_SCHEDULE_DELAY`, else 5000.
        max_export_batch_size: Default `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, else 512.
    """

    def __init__(
        self,
        guard: GuardedSpanExporter,
        dropped: Counter,
        *,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ):
        if max_queue_size is None:
            max_queue_size = BatchSpanProcessor._default_max_queue_size()  # type: ignore[no-untyped-call]
        if schedule_delay_millis is None:
            schedule_delay_millis = BatchSpanProcessor._default_schedule_delay_millis()  # type: ignore[no-untyped-call]
        if max_export_batch_size is None:
            max_export_batch_size = BatchSpanProcessor._default_max_export_batch_size()  # type: ignore[no-untyped-call]
        # The SDK's own defaults (OTEL_BSP_* or the specification's) and checks.
        BatchSpanProcessor._validate_arguments(  # type: ignore[no-untyped-call]
            max_queue_size, schedule_delay_millis, max_export_batch_size
        )
        sink = guard.exporter
        encoder = getattr(sink, "encoder", None)
        if not isinstance(encoder, ZipkinJsonEncoder) or not hasattr(sink, "write_encoded"):
            raise TypeError(f"{type(sink).__name__} takes no encoded spans")
        self._encode = encoder.encode
        self._guard = guard
        self._queue_full = dropped.labels("queue_full")
        self._encode_failed = dropped.labels("export_failed")
        self._max_queue = max_queue_size
        self._batch_size = max_export_batch_size
        self._delay = schedule_delay_millis / 1000
        self._queue: collections.deque[bytes] = collections.deque(maxlen=max_queue_size)
        self._shutdown = False
        self._encode_warned = False
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork)

            def after_in_child() -> None:
                method = reinit()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def _start_worker(self) -> None:
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._run, name="todo-obs-span-export", daemon=True)
        self._worker.start()

    def _after_fork(self) -> None:
        # The parent's spans are the parent's to export; the child starts empty, with a thread.
        self._queue.clear()
        if not self._shutdown:
            self._start_worker()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Encode `span` and queue it, or count it as dropped when the queue is full."""
        context = span.context
        if context is None or not context.trace_flags.sampled or self._shutdown:
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._queue_full.inc()
            return
        try:
            encoded = self._encode(span)
        except Exception:  # noqa: BLE001 - a span that cannot be encoded must not fail the request
            self._encode_failed.inc()
            if not self._encode_warned:
                self._encode_warned = True
                _log.exception("a span could not be encoded; such spans are dropped")
            return
        queue.append(encoded)
        if len(queue) >= self._batch_size:
            self._wake.set()

    def _run(self) -> None:
        while not self._shutdown:
            self._wake.wait(self._delay)
            self._wake.clear()
            with self._export_lock:
                self._export_batches(deadline=None)
        # At shutdown: what is left goes now.
        with self._export_lock:
            self._export_batches(deadline=None)

    def _export_batches(self, deadline: float | None) -> bool:
        """Export what is queued, batch by batch (the caller holds the export lock).

        Returns whether everything was exported by `deadline`.
        """
        queue = self._queue
        ok = True
        while queue:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            count = min(len(queue), self._batch_size)
            batch = [queue.popleft() for _ in range(count)]
            if self._guard.export_encoded(batch) is not SpanExportResult.SUCCESS:
                ok = False
        return ok

    def force_flush(self, timeout_millis: int | None = 30000) -> bool:
        """Export the queued spans now; True only if all were exported within `timeout_millis`.

        Requests made meanwhile get no more time than is left. It waits for an export
        already under way on the processor's thread at most until the deadline.
        """
        if self._shutdown:
            return not self._queue
        timeout = 30.0 if timeout_millis is None else timeout_millis / 1000
        deadline = time.monotonic() + timeout
        if not self._export_lock.acquire(timeout=max(0.0, timeout)):
            return False
        guard = self._guard
        failed = guard.failed
        guard.deadline = deadline
        try:
            exported = self._export_batches(deadline)
        finally:
            guard.deadline = None
            self._export_lock.release()
        return (
            exported and time.monotonic() <= deadline and guard.failed == failed and not self._queue
        )

    def shutdown(self) -> None:
        """Export what is queued, stop the thread and shut the sink down."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._worker.join()
        self._guard.shutdown()
