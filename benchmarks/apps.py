"""The benchmarked apps: bare FastAPI, FastAPI with our SDK, FastAPI with the peer stack.

Every variant serves the same single route, ``GET /tasks/{task_id}``, and owns
its resources: its own Prometheus registry, its own tracer provider with a
batch processor exporting to an unreachable Zipkin endpoint, and its own log
sink. Log sinks are the same kind of object for both stacks (a text file open
on ``/dev/null``; `StreamHandler` flushes it after every line), so neither
stack writes more cheaply than the other.

FastAPI's native OpenTelemetry telemetry (FastAPI >= 0.16x, on by default as
soon as a global tracer provider exists) is turned off in every variant: our
``configure()`` installs the global tracer provider the first time it runs,
which would otherwise switch native tracing on for the bare and peer apps
built in the same process. `native_telemetry_enabled()` checks it is off.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import IO, Any

from fastapi import FastAPI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where both stacks export spans: nothing listens on the discard port.
UNREACHABLE_ZIPKIN = "http://127.0.0.1:9/api/v2/spans"
SERVICE_NAME = "bench"
ROUTE = "/tasks/{task_id}"
#: The native telemetry switches of FastAPI >= 0.16x, all off.
NO_NATIVE_TELEMETRY: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}

VARIANT_NAMES = ("bare", "ours", "peer")


@dataclass
class BenchApp:
    """One variant: its ASGI app and how to flush and release what it owns."""

    name: str
    app: Any
    sample_ratio: float | None = None
    flushers: list[Callable[[], object]] = field(default_factory=list)
    closers: list[Callable[[], object]] = field(default_factory=list)
    #: The span queues of its batch processors (a diagnostic: were spans dropped?).
    span_queues: list[Any] = field(default_factory=list)
    #: Our variants' `Observability` (None for the others).
    observability: Any = None

    @property
    def label(self) -> str:
        if self.sample_ratio is None:
            return self.name
        return f"{self.name} (sampling {self.sample_ratio:g})"

    def flush(self) -> None:
        """Export (or drop) every queued span now, on the calling thread."""
        for flush in self.flushers:
            flush()

    def fullest_queue(self) -> float:
        """How full the fullest span queue is now, 0 to 1."""
        return max((len(q) / q.maxlen for q in self.span_queues if q.maxlen), default=0.0)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def open_sink() -> IO[str]:
    """A log sink: a text file on /dev/null (the same for both stacks)."""
    return open(os.devnull, "w", encoding="utf-8")


def _fastapi() -> FastAPI:
    app = FastAPI(telemetry=NO_NATIVE_TELEMETRY)  # type: ignore[arg-type,unused-ignore]

    @app.get(ROUTE)
    async def get_task(task_id: int) -> dict[str, Any]:
        return {"id": task_id, "title": "write the benchmarks", "done": False}

    return app


@dataclass
class _BoundedQueue:
    """The queue of an `EncodedBatchSpanProcessor`, seen as the SDK's (a length and a `maxlen`)."""

    queue: Any
    maxlen: int

    def __len__(self) -> int:
        return len(self.queue)


def span_queues(provider: Any) -> list[Any]:
    """The queues of the provider's batch span processors (SDK internals, for diagnostics)."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    queues: list[Any] = []
    for processor in processors:
        queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
        if queue is not None:
            queues.append(queue)
        elif hasattr(processor, "_max_queue"):  # ours: encoded spans, bounded by a check
            queues.append(_BoundedQueue(processor._queue, processor._max_queue))
    return queues


def native_telemetry_enabled(app: Any) -> bool:
    """Whether FastAPI's own OpenTelemetry telemetry would run for this app."""
    while app is not None and not isinstance(app, FastAPI):
        app = getattr(app, "app", None)
    native = getattr(app, "_native_telemetry", None)
    return bool(native is not None and native.enabled())


def bare() -> BenchApp:
    return BenchApp("bare", _fastapi())


def ours(sample_ratio: float, sink: IO[str] | None = None, **overrides: Any) -> BenchApp:
    """Our SDK fully on; `overrides` go to ``configure()`` (for breakdowns)."""
    from prometheus_client import CollectorRegistry

    import todo_observability

    app = _fastapi()
    sink = open_sink() if sink is None else sink
    options: dict[str, Any] = {
        "service_name": SERVICE_NAME,
        "sample_ratio": sample_ratio,
        "traces_exporter": "zipkin",
        "zipkin_endpoint": UNREACHABLE_ZIPKIN,
        "registry": CollectorRegistry(),
        "log_stream": sink,
        "load_plugins": False,
        **overrides,
    }
    obs = todo_observability.configure(app, **options)
    bench = BenchApp("ours", app, sample_ratio, observability=obs)
    bench.span_queues = span_queues(obs.tracer_provider)
    bench.flushers.append(obs.flush)
    bench.closers += [sink.close, obs.shutdown]
    return bench


class PeerAccessLogMiddleware:
    """The access log a user writes today: one python-json-logger line per request.

    Pure ASGI (the cheapest way to write it; ``@app.middleware("http")`` would
    cost the peer stack much more), with the same fields as our access line.
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        from asgi_correlation_id import correlation_id
        from opentelemetry import trace

        self.app = app
        self.logger = logger
        self.correlation_id = correlation_id
        self.get_current_span = trace.get_current_span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration_ms = round((time.perf_counter() - start) * 1000, 3)
            route = getattr(scope.get("route"), "path", None) or scope["path"]
            user_agent = None
            for name, value in scope["headers"]:
                if name == b"user-agent":
                    user_agent = value.decode("latin-1")
                    break
            client = scope.get("client")
            span_context = self.get_current_span().get_span_context()
            valid = span_context.is_valid
            level = logging.ERROR if status >= 500 else logging.INFO
            self.logger.log(
                level,
                "%s %s %s",
                scope["method"],
                route,
                status,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                    "client": client[0] if client else None,
                    "user_agent": user_agent,
                    "request_id": self.correlation_id.get(),
                    "user_id": None,
                    "trace_id": f"{span_context.trace_id:032x}" if valid else None,
                    "span_id": f"{span_context.span_id:016x}" if valid else None,
                },
            )


def peer_json_formatter() -> logging.Formatter:
    """python-json-logger's plain JsonFormatter writing our line's fixed fields."""
    from pythonjsonlogger.json import JsonFormatter

    formatter: logging.Formatter = JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service_name": SERVICE_NAME},
        timestamp=True,
    )
    return formatter


_peer_count = 0


def peer(sample_ratio: float, sink: IO[str] | None = None) -> BenchApp:
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    global _peer_count
    _peer_count += 1
    app = _fastapi()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(ZipkinExporter(endpoint=UNREACHABLE_ZIPKIN)))

    sink = open_sink() if sink is None else sink
    handler = logging.StreamHandler(sink)
    handler.setFormatter(peer_json_formatter())
    logger = logging.getLogger(f"bench.peer{_peer_count}.access")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our configure() owns the root logger in this process

    # add_middleware puts each new middleware outside the previous ones: the
    # access log runs inside the correlation id, so it sees the request id.
    app.add_middleware(PeerAccessLogMiddleware, logger=logger)
    app.add_middleware(CorrelationIdMiddleware)
    Instrumentator(registry=CollectorRegistry()).instrument(app).expose(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    bench = BenchApp("peer", app, sample_ratio)
    bench.span_queues = span_queues(provider)
    bench.flushers.append(provider.force_flush)
    bench.closers += [sink.close, provider.shutdown]
    return bench


def build(name: str, sample_ratio: float | None = None, sink: IO[str] | None = None) -> BenchApp:
    """The variant `name` ("bare", "ours", "peer") at `sample_ratio`, logging to `sink`."""
    if name == "bare":
        return bare()
    if sample_ratio is None:
        raise ValueError(f"variant {name!r} needs a sample ratio")
    if name == "ours":
        return ours(sample_ratio, sink)
    if name == "peer":
        return peer(sample_ratio, sink)
    raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANT_NAMES)}")


def create_app() -> Any:
    """Uvicorn factory: the variant named by $BENCH_VARIANT at $BENCH_SAMPLE_RATIO.

        BENCH_VARIANT=ours BENCH_SAMPLE_RATIO=0.1 python -m uvicorn benchmarks.apps:create_app --factory

    Uvicorn configures its logging before it calls the factory, as it does
    before importing an app, so ``configure()`` sees the logging of a real
    deployment. The peer variant gets what its user would add: a root handler
    with python-json-logger (on /dev/null, like the access log), which takes
    the batch processor's export errors.
    """
    name = os.environ.get("BENCH_VARIANT", "bare")
    ratio = os.environ.get("BENCH_SAMPLE_RATIO")
    bench = build(name, float(ratio) if ratio else None)
    if name == "peer":
        handler = logging.StreamHandler(open_sink())
        handler.setFormatter(peer_json_formatter())
        logging.getLogger().addHandler(handler)
    return bench.app
