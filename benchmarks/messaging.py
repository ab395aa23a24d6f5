"""Per-message cost of the Dapr subscription wrapper, driving the ASGI callables directly.

Three kinds of FastAPI app receive the same deliveries, as a Dapr sidecar
makes them (``POST /dapr/events/pubsub/task-events``, ``content-type:
application/cloudevents+json``, a ~400-byte CloudEvent, the sidecar's
``traceparent``, Kafka metadata and ``baggage`` headers), every message with a
new CloudEvent id, and a handler doing nothing:

- ``bare``: a FastAPI POST handler that parses the body (``request.json()``)
  and answers ``{"status": "SUCCESS"}``;
- ``handwritten``: the same, plus what a user would write by hand:
  ``propagate.extract(request.headers)``, one CONSUMER span started in that
  context, one prometheus_client counter increment labelled with the topic;
- ``ours``: ``configure(app)`` and ``Subscriptions`` with one
  ``@subscribe("pubsub", "task-events")`` handler: CloudEvent parsing and
  validation, the trace-context rule, baggage, the CONSUMER span and its
  attributes, the idempotency claim (in memory), the outcome, four metrics and
  one log line.

Both instrumented kinds get a tracer provider sampling
``ParentBased(TraceIdRatioBased(ratio))``, a batch span processor and the same
exporter: the Zipkin exporter, aimed at an unreachable endpoint, behind the
SDK's ``GuardedSpanExporter`` (which drops spans, unencoded, while the
collector is down). The hand-written handler gets that guard too, so both pay
the same for exporting and the comparison is about the per-message work.

The sampling decision follows the delivery's ``traceparent`` (ParentBased), so
the fraction of deliveries whose parent is sampled (flags ``01``) matters more
than the ratio: each instrumented variant is measured with every parent sampled
(what a producer sampling at 1.0 sends), one in ten (a producer sampling at
0.1) and none.

Method as in `benchmarks.inprocess`: one process, one event loop, N messages
per variant per round, round-robin with the starting variant rotated; each
variant's span processors are flushed at the end of its slice, on its clock;
the messages of a slice are made before its clock starts. Per-message time is
the median over rounds of (messages + flush) / N; overheads (time minus the
bare app's) and ratios are paired within a round before taking medians.

Two more kinds can be measured for context (``--variants``): ``bare-asgi``, a
raw ASGI route like the one ``Subscriptions.install`` adds (its negative
overhead is what ours saves by bypassing FastAPI's request and response
handling), and ``handwritten-plain``, the hand-written handler with the plain
Zipkin exporter (which encodes every batch for a collector that is down).

    python -m benchmarks.messaging --rounds 40 --messages 600
    python -m benchmarks.messaging --variants bare-asgi,handwritten:1.0:1.0,ours:1.0:1.0
    python -m benchmarks.messaging --no-message-log      # ours without its log line
    python -m benchmarks.messaging --profile ours:1.0 --messages 20000
    python -m benchmarks.messaging --profile ours:1.0:0.1 --profiler pyinstrument
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, ClassVar

from fastapi import FastAPI, Request

from benchmarks.apps import (
    NO_NATIVE_TELEMETRY,
    SERVICE_NAME,
    UNREACHABLE_ZIPKIN,
    BenchApp,
    Message,
    Receive,
    Scope,
    Send,
    native_telemetry_enabled,
    open_sink,
    span_queues,
)
from benchmarks.inprocess import SETTLE, Lifespan

PUBSUB = "pubsub"
TOPIC = "task-events"
#: The delivery route (Subscriptions' default: <route_prefix>/<pubsub>/<topic>).
ROUTE = f"/dapr/events/{PUBSUB}/{TOPIC}"
EXPECTED_BODY = b'{"status":"SUCCESS"}'
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "POST",
    "root_path": "",
    "path": ROUTE,
    "raw_path": ROUTE.encode(),
    "query_string": b"",
}

#: Messages per slice by default: one span each at most, far below a span queue (2,048).
SLICE = 600
#: The target: ours overhead / handwritten overhead, at most.
TARGET = 1.5

#: A delivery: the request headers and the body.
Delivery = tuple[tuple[tuple[bytes, bytes], ...], bytes]


@dataclass(frozen=True)
class Variant:
    """One measured app: its kind, its sampling ratio and how many delivered parents are sampled."""

    name: str
    sample_ratio: float | None = None
    #: The fraction of deliveries whose traceparent has flags 01 (sampled).
    parents: float = 1.0

    @property
    def label(self) -> str:
        if self.sample_ratio is None:
            return self.name
        return (
            f"{self.name} (sampling {self.sample_ratio:g}, {self.parents:.0%} of parents sampled)"
        )

    @property
    def setting(self) -> tuple[float | None, float]:
        """What the ours and handwritten variants are paired on."""
        return self.sample_ratio, self.parents


VARIANTS: tuple[Variant, ...] = (
    Variant("bare"),
    Variant("handwritten", 1.0, 1.0),
    Variant("ours", 1.0, 1.0),
    Variant("handwritten", 0.1, 1.0),
    Variant("ours", 0.1, 1.0),
    Variant("handwritten", 0.1, 0.1),
    Variant("ours", 0.1, 0.1),
    Variant("handwritten", 0.1, 0.0),
    Variant("ours", 0.1, 0.0),
)


# -- the deliveries ----------------------------------------------------------------------


class Sidecar:
    """Makes deliveries as a Dapr sidecar does: each one a new message, its own trace."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._offset = 0

    def _hex(self, bits: int) -> str:
        return f"{self._random.getrandbits(bits):0{bits // 4}x}"

    def delivery(self, sampled: bool, published: str) -> Delivery:
        self._offset += 1
        flags = "01" if sampled else "00"
        trace_id = self._hex(128)
        producer = f"00-{trace_id}-{self._hex(64)}-{flags}"
        sidecar = f"00-{trace_id}-{self._hex(64)}-{flags}"
        event_id = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        task_id = self._random.randrange(1, 100_000)
        event = {
            "data": {"task_id": task_id, "status": "completed"},
            "datacontenttype": "application/json",
            "id": event_id,
            "pubsubname": PUBSUB,
            "source": "tasks-api",
            "specversion": "1.0",
            "time": published,
            "topic": TOPIC,
            "traceid": producer,
            "traceparent": producer,
            "tracestate": "",
            "type": "com.dapr.event.sent",
        }
        # Go's encoding/json writes map keys sorted and without spaces.
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        headers = (
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"Go-http-client/1.1"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/cloudevents+json"),
            (b"traceparent", sidecar.encode()),
            (b"pubsubname", PUBSUB.encode()),
            (b"__key", f"task-{task_id}".encode()),
            (b"__partition", b"3"),
            (b"__offset", str(self._offset).encode()),
            (b"baggage", f"request_id={self._hex(128)},user_id=user-42".encode()),
            (b"accept-encoding", b"gzip"),
        )
        return headers, body

    def batch(self, count: int, parents: float) -> list[Delivery]:
        """`count` deliveries, of which a fraction `parents` (evenly spread) have a sampled parent."""
        published = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [
            self.delivery(int((i + 1) * parents) > int(i * parents), published)
            for i in range(count)
        ]


# -- the apps ----------------------------------------------------------------------------


@dataclass
class MessagingApp:
    """A built variant: its app and resources, and what it counted (for checks)."""

    variant: Variant
    bench: BenchApp
    #: (messages processed, duplicates) as the variant's own metrics say; None for bare.
    counted: Callable[[], tuple[float, float]] | None = None
    #: The tracer provider, when the variant has one.
    provider: Any = None
    delivered: int = 0


def _app() -> FastAPI:
    return FastAPI(telemetry=NO_NATIVE_TELEMETRY)  # type: ignore[arg-type,unused-ignore]


def bare(variant: Variant) -> MessagingApp:
    app = _app()

    @app.post(ROUTE)
    async def handle(request: Request) -> dict[str, str]:
        await request.json()
        return {"status": "SUCCESS"}

    return MessagingApp(variant, BenchApp("bare", app))


def bare_asgi(variant: Variant) -> MessagingApp:
    """Context, not a baseline: a raw ASGI route (as ours installs), orjson, a pre-encoded answer.

    Its (negative) overhead is what ours saves by not going through FastAPI's
    request and response handling.
    """
    import orjson
    from starlette.routing import Route

    app = _app()
    # An instance, not a function: Starlette calls it as an ASGI app.
    app.router.routes.append(Route(ROUTE, _RawEndpoint(orjson.loads), methods=["POST"]))
    return MessagingApp(variant, BenchApp("bare-asgi", app))


class _RawEndpoint:
    _headers: ClassVar[list[tuple[bytes, bytes]]] = [(b"content-type", b"application/json")]

    def __init__(self, loads: Callable[[bytes], Any]) -> None:
        self.loads = loads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.loads(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        await send({"type": "http.response.body", "body": EXPECTED_BODY})


def guarded_zipkin(registry: Any) -> Any:
    """The exporter ``configure(traces_exporter="zipkin")`` builds, in `registry`."""
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from prometheus_client import Counter

    from todo_observability.tracing import GuardedSpanExporter

    dropped = Counter("handwritten_spans_dropped", "Spans dropped.", ["reason"], registry=registry)
    return GuardedSpanExporter(ZipkinExporter(endpoint=UNREACHABLE_ZIPKIN, timeout=5), dropped)


def handwritten(variant: Variant, plain_exporter: bool = False) -> MessagingApp:
    """Extract, one CONSUMER span, one counter: the instrumentation a user writes by hand.

    The provider is built as the peer stack's in `benchmarks.apps` (service.name
    resource, ParentBased(TraceIdRatioBased) sampler, BatchSpanProcessor), the
    exporter as ours (see the module docstring); `plain_exporter` drops the guard.
    """
    from opentelemetry import propagate
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind
    from prometheus_client import CollectorRegistry, Counter

    assert variant.sample_ratio is not None
    registry = CollectorRegistry()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME}),
        sampler=ParentBased(TraceIdRatioBased(variant.sample_ratio)),
    )
    exporter = (
        ZipkinExporter(endpoint=UNREACHABLE_ZIPKIN) if plain_exporter else guarded_zipkin(registry)
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("bench.handwritten")
    processed = Counter(
        "messages_processed", "Messages handled, by topic.", ["topic"], registry=registry
    )
    span_name = f"{TOPIC} process"
    app = _app()

    @app.post(ROUTE)
    async def handle(request: Request) -> dict[str, str]:
        parent = propagate.extract(request.headers)
        with tracer.start_as_current_span(span_name, context=parent, kind=SpanKind.CONSUMER):
            event = await request.json()
            processed.labels(event.get("topic", TOPIC)).inc()
        return {"status": "SUCCESS"}

    def counted() -> tuple[float, float]:
        return registry.get_sample_value("messages_processed_total", {"topic": TOPIC}) or 0.0, 0.0

    bench = BenchApp("handwritten", app, variant.sample_ratio)
    bench.span_queues = span_queues(provider)
    bench.flushers.append(provider.force_flush)
    bench.closers.append(provider.shutdown)
    return MessagingApp(variant, bench, counted, provider)


def ours(variant: Variant, sink: IO[str] | None = None) -> MessagingApp:
    """``configure(app)`` as in `benchmarks.apps.ours`, and one subscription installed on the app."""
    from prometheus_client import CollectorRegistry

    import todo_observability
    from todo_observability.dapr import Message as DaprMessage
    from todo_observability.dapr import Subscriptions

    assert variant.sample_ratio is not None
    app = _app()
    sink = open_sink() if sink is None else sink
    registry = CollectorRegistry()
    obs = todo_observability.configure(
        app,
        service_name=SERVICE_NAME,
        sample_ratio=variant.sample_ratio,
        traces_exporter="zipkin",
        zipkin_endpoint=UNREACHABLE_ZIPKIN,
        registry=registry,
        log_stream=sink,
        load_plugins=False,
    )
    # observability=obs: several configured apps share this process, and a
    # delivery would otherwise record into the last one configured.
    subscriptions = Subscriptions(observability=obs, app_api_token="")

    @subscriptions.subscribe(PUBSUB, TOPIC)
    async def on_task_event(message: DaprMessage) -> None:
        return None

    subscriptions.install(app)

    def counted() -> tuple[float, float]:
        processed = registry.get_sample_value(
            "messaging_process_messages_total", {"topic": TOPIC, "outcome": "success"}
        )
        duplicates = registry.get_sample_value(
            "messaging_duplicate_messages_total", {"topic": TOPIC}
        )
        return processed or 0.0, duplicates or 0.0

    bench = BenchApp("ours", app, variant.sample_ratio)
    bench.span_queues = span_queues(obs.tracer_provider)
    bench.flushers.append(obs.flush)
    bench.closers += [sink.close, obs.shutdown]
    return MessagingApp(variant, bench, counted, obs.tracer_provider)


def build(variant: Variant, sink: IO[str] | None = None) -> MessagingApp:
    if variant.name == "bare":
        return bare(variant)
    if variant.name == "bare-asgi":
        return bare_asgi(variant)
    if variant.name == "handwritten":
        return handwritten(variant)
    if variant.name == "handwritten-plain":
        return handwritten(variant, plain_exporter=True)
    if variant.name == "ours":
        return ours(variant, sink)
    raise ValueError(
        f"unknown variant {variant.name!r}; expected bare, bare-asgi, handwritten, "
        "handwritten-plain or ours"
    )


def close(apps: list[MessagingApp]) -> None:
    """Release every app: ours last, the last configured first (each undoes its logging setup).

    The other variants' exporters log their failures through the root logger
    that ours set up, so they shut down while it still writes to an open sink.
    """
    for built in [a for a in apps if a.variant.name != "ours"]:
        built.bench.close()
    for built in reversed([a for a in apps if a.variant.name == "ours"]):
        built.bench.close()


# -- driving them ------------------------------------------------------------------------


async def deliver(app: Any, state: dict[str, Any], delivery: Delivery) -> bool:
    """One delivery through `app`; whether it answered 200 ``{"status":"SUCCESS"}``."""
    headers, body = delivery
    status = 0
    answer = b""
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, answer
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            answer += message.get("body", b"")

    await app({**SCOPE, "headers": list(headers), "state": dict(state)}, receive, send)
    return status == 200 and answer == EXPECTED_BODY


@dataclass
class VariantTimes:
    variant: Variant
    message_us: list[float] = field(default_factory=list)
    flush_us: list[float] = field(default_factory=list)
    queue_fill: list[float] = field(default_factory=list)

    @property
    def total_us(self) -> list[float]:
        return [m + f for m, f in zip(self.message_us, self.flush_us, strict=True)]


@dataclass
class MessagingResult:
    rounds: int
    messages: int
    warmup: int
    times: list[VariantTimes]
    native_telemetry: dict[str, bool]
    failures: int
    #: label -> (delivered, processed as counted by the variant, duplicates counted).
    counts: dict[str, tuple[int, float, float]]
    body_bytes: int

    def max_queue_fill(self) -> float:
        return max((max(t.queue_fill, default=0.0) for t in self.times), default=0.0)

    def counts_ok(self) -> bool:
        return all(p == d and dup == 0 for d, p, dup in self.counts.values())


async def _measure(
    apps: list[MessagingApp], rounds: int, messages: int, warmup: int, settle: float
) -> tuple[list[VariantTimes], int]:
    sidecar = Sidecar()
    lifespans = [Lifespan(a.bench.app) for a in apps]
    for lifespan in lifespans:
        await lifespan.startup()
    try:
        failures = 0
        for built, lifespan in zip(apps, lifespans, strict=True):
            for delivery in sidecar.batch(warmup + 1, built.variant.parents):
                if not await deliver(built.bench.app, lifespan.state, delivery):
                    raise RuntimeError(f"{built.variant.label}: a delivery was not a SUCCESS")
            built.delivered += warmup + 1
            built.bench.flush()
        times = [VariantTimes(a.variant) for a in apps]
        count = len(apps)
        perf = time.perf_counter_ns
        for round_index in range(rounds):
            for offset in range(count):
                i = (round_index + offset) % count
                built, state, app = apps[i], lifespans[i].state, apps[i].bench.app
                batch = sidecar.batch(messages, built.variant.parents)
                gc.collect()
                t0 = perf()
                for delivery in batch:
                    if not await deliver(app, state, delivery):
                        failures += 1
                t1 = perf()
                times[i].queue_fill.append(built.bench.fullest_queue())
                built.bench.flush()
                t2 = perf()
                built.delivered += messages
                times[i].message_us.append((t1 - t0) / messages / 1000)
                times[i].flush_us.append((t2 - t1) / messages / 1000)
                # As in benchmarks.inprocess: worker threads run now, not in the next slice.
                time.sleep(settle)
        return times, failures
    finally:
        for lifespan in lifespans:
            await lifespan.shutdown()


def run(
    rounds: int = 40,
    messages: int = SLICE,
    warmup: int = 500,
    variants: tuple[Variant, ...] = VARIANTS,
    settle: float = SETTLE,
) -> MessagingResult:
    apps = [build(v) for v in variants]
    try:
        native = {a.variant.label: native_telemetry_enabled(a.bench.app) for a in apps}
        times, failures = asyncio.run(_measure(apps, rounds, messages, warmup, settle))
        counts = {
            a.variant.label: (a.delivered, *a.counted()) for a in apps if a.counted is not None
        }
    finally:
        close(apps)
    body = len(Sidecar().delivery(True, "2026-11-26T10:00:00Z")[1])
    return MessagingResult(rounds, messages, warmup, times, native, failures, counts, body)


# -- results -----------------------------------------------------------------------------


@dataclass
class Row:
    variant: Variant
    per_message_us: float
    flush_us: float
    overhead_us: float | None
    ratio: float | None
    ratio_spread: tuple[float, float] | None


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(result: MessagingResult) -> list[Row]:
    """Median per-message times; overheads and ratios paired within rounds."""
    bare_times = next(t for t in result.times if t.variant.name == "bare").total_us
    paired = {
        (t.variant.name, t.variant.setting): [
            v - b for v, b in zip(t.total_us, bare_times, strict=True)
        ]
        for t in result.times
        if t.variant.name != "bare"
    }
    rows = []
    for t in result.times:
        overhead = ratio = spread = None
        mine = paired.get((t.variant.name, t.variant.setting))
        if mine is not None:
            overhead = statistics.median(mine)
            theirs = paired.get(("handwritten", t.variant.setting))
            if t.variant.name == "ours" and theirs is not None:
                ratios = [o / h for o, h in zip(mine, theirs, strict=True) if h > 0]
                if ratios:
                    ratio = statistics.median(ratios)
                    spread = _quartiles(ratios)
        rows.append(
            Row(
                t.variant,
                statistics.median(t.total_us),
                statistics.median(t.flush_us),
                overhead,
                ratio,
                spread,
            )
        )
    return rows


def format_ratio(row: Row) -> str:
    if row.ratio is None or row.ratio_spread is None:
        return "-"
    return f"{row.ratio:.2f} [{row.ratio_spread[0]:.2f}-{row.ratio_spread[1]:.2f}]"


def format_rows(rows: list[Row]) -> str:
    out = [
        "| variant | per message µs | of which span flush µs | overhead µs | ours/handwritten [IQR] | target | met? |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        overhead = f"{r.overhead_us:.1f}" if r.overhead_us is not None else "-"
        target = met = "-"
        if r.ratio is not None:
            target, met = f"≤ {TARGET:g}", "yes" if r.ratio <= TARGET else "**no**"
        out.append(
            f"| {r.variant.label} | {r.per_message_us:.1f} | {r.flush_us:.1f} | {overhead} "
            f"| {format_ratio(r)} | {target} | {met} |"
        )
    return "\n".join(out)


def describe(result: MessagingResult) -> str:
    """What the run checked: answers, counts, queues, native telemetry."""
    native = ", ".join(label for label, on in result.native_telemetry.items() if on)
    counts = "; ".join(
        f"{label}: {processed:.0f} of {delivered}" + (f", {dup:.0f} duplicates" if dup else "")
        for label, (delivered, processed, dup) in result.counts.items()
    )
    return (
        f"Answers other than 200 `{EXPECTED_BODY.decode()}`: {result.failures}. "
        f"CloudEvent body: {result.body_bytes} bytes. Messages counted by each variant's own "
        f"counter ({'all counted, no duplicate' if result.counts_ok() else 'MISMATCH'}): {counts}. "
        f"Fullest span queue at the end of a slice: {result.max_queue_fill():.0%}. "
        f"FastAPI native telemetry enabled for: {native or 'none'}."
    )


@dataclass
class Outputs:
    """What the instrumented variants record for a few deliveries (sinks and exporters in memory)."""

    #: label -> (deliveries, recorded spans)
    spans: dict[str, tuple[int, int]]
    #: One recorded span of each kind: name, kind, parent span id, links, attribute names.
    span_samples: dict[str, str]
    #: ours' log lines by logger name, and one of its message lines.
    log_counts: dict[str, int]
    log_sample: dict[str, Any]


def check_outputs(deliveries: int = 20) -> Outputs:
    """Deliver a few messages per setting to fresh variants whose spans are kept in memory."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    sink = io.StringIO()
    settings = [v for v in VARIANTS if v.name != "bare"]
    apps = [build(v, sink if v.name == "ours" else None) for v in settings]
    exporters = []
    for built in apps:
        exporter = InMemorySpanExporter()
        built.provider.add_span_processor(SimpleSpanProcessor(exporter))
        exporters.append(exporter)

    async def drive() -> None:
        sidecar = Sidecar(seed=1)
        for built in apps:
            lifespan = Lifespan(built.bench.app)
            await lifespan.startup()
            for delivery in sidecar.batch(deliveries, built.variant.parents):
                if not await deliver(built.bench.app, lifespan.state, delivery):
                    raise RuntimeError(f"{built.variant.label}: a delivery was not a SUCCESS")
            await lifespan.shutdown()

    try:
        asyncio.run(drive())
        text = sink.getvalue()
    finally:
        close(apps)
    spans: dict[str, tuple[int, int]] = {}
    samples: dict[str, str] = {}
    for built, exporter in zip(apps, exporters, strict=True):
        finished = exporter.get_finished_spans()
        spans[built.variant.label] = (deliveries, len(finished))
        if finished and built.variant.name not in samples:
            span = finished[-1]
            parent = f"{span.parent.span_id:016x}" if span.parent else None
            samples[built.variant.name] = (
                f"{span.name!r}, {span.kind.name}, parent {parent}, {len(span.links)} link(s), "
                f"attributes {sorted(span.attributes or {})}"
            )
    parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
    log_counts: dict[str, int] = {}
    for line in parsed:
        log_counts[line.get("logger", "")] = log_counts.get(line.get("logger", ""), 0) + 1
    messages = [p for p in parsed if p.get("logger") == "todo_observability.messaging"]
    return Outputs(spans, samples, log_counts, messages[-1] if messages else {})


def format_outputs(outputs: Outputs) -> str:
    out = ["Recorded spans per setting (fresh apps, spans also kept in memory):", ""]
    out += [
        f"- {label}: {recorded} spans for {delivered} deliveries"
        for label, (delivered, recorded) in outputs.spans.items()
    ]
    out += ["", "One recorded span of each:", ""]
    out += [f"- {name}: {sample}" for name, sample in outputs.span_samples.items()]
    out += [
        "",
        f"Lines written by ours, by logger: {outputs.log_counts}; one message line: "
        f"`{json.dumps(outputs.log_sample)}`",
    ]
    return "\n".join(out)


# -- profiling ---------------------------------------------------------------------------


def parse_spec(spec: str) -> Variant:
    """``NAME[:RATIO[:PARENTS]]`` -> Variant (parents default to 1.0: all sampled)."""
    name, _, rest = spec.partition(":")
    ratio, _, parents = rest.partition(":")
    return Variant(name, float(ratio) if ratio else None, float(parents) if parents else 1.0)


def profile(spec: str, messages: int, sort: str, limit: int, profiler: str) -> None:
    variant = parse_spec(spec)
    built = build(variant)

    async def loop() -> None:
        import cProfile
        import pstats

        sidecar = Sidecar()
        lifespan = Lifespan(built.bench.app)
        await lifespan.startup()
        for delivery in sidecar.batch(500, variant.parents):
            await deliver(built.bench.app, lifespan.state, delivery)
        built.bench.flush()
        batches = [
            sidecar.batch(min(SLICE, messages - start), variant.parents)
            for start in range(0, messages, SLICE)
        ]
        header = f"# {profiler} of {variant.label}, {messages} messages (per message = time / {messages})"
        if profiler == "pyinstrument":
            from pyinstrument import Profiler

            sampler = Profiler(interval=0.0001, async_mode="disabled")
            sampler.start()
            for batch in batches:
                for delivery in batch:
                    await deliver(built.bench.app, lifespan.state, delivery)
                built.bench.flush()  # as in the measurement: no span queue overflows
            sampler.stop()
            await lifespan.shutdown()
            print(header)
            print(sampler.output_text(unicode=True, color=False, show_all=False))
            return
        cprofile = cProfile.Profile()
        cprofile.enable()
        for batch in batches:
            for delivery in batch:
                await deliver(built.bench.app, lifespan.state, delivery)
            built.bench.flush()
        cprofile.disable()
        await lifespan.shutdown()
        print(header)
        pstats.Stats(cprofile, stream=sys.stdout).sort_stats(sort).print_stats(limit)

    try:
        asyncio.run(loop())
    finally:
        built.bench.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--messages", type=int, default=SLICE, help="messages per slice")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--variants",
        metavar="NAME:RATIO:PARENTS,...",
        help="measure these instead (bare is always added); NAME is handwritten, ours, "
        "handwritten-plain (no exporter guard) or bare-asgi (a raw ASGI route, for context)",
    )
    parser.add_argument("--profile", metavar="NAME[:RATIO[:PARENTS]]", help="profile one variant")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --profile")
    parser.add_argument("--limit", type=int, default=40, help="rows printed by --profile")
    parser.add_argument(
        "--no-message-log",
        action="store_true",
        help="raise the level of ours' messaging logger to WARNING (no line per message)",
    )
    args = parser.parse_args(argv)
    if args.no_message_log:
        logging.getLogger("todo_observability.messaging").setLevel(logging.WARNING)
    if args.profile:
        profile(args.profile, args.messages, args.sort, args.limit, args.profiler)
        return
    variants = VARIANTS
    if args.variants:
        chosen = tuple(parse_spec(spec) for spec in args.variants.split(","))
        variants = (Variant("bare"), *(v for v in chosen if v.name != "bare"))
    result = run(args.rounds, args.messages, args.warmup, variants)
    print(format_rows(summarize(result)))
    print()
    print(describe(result))
    if not args.variants:
        print()
        print(format_outputs(check_outputs()))


if __name__ == "__main__":
    main()
