"""Spans from the libraries a service uses, through OpenTelemetry's maintained instrumentations.

    import todo_observability as obs

    engine = create_async_engine(url)
    obs.instrument_sqlalchemy(engine)  # a CLIENT span per statement
    obs.instrument_httpx()  # a CLIENT span per request of every httpx client

Each helper wraps the instrumentation OpenTelemetry maintains for the library (an extra:
`pip install 'todo-observability[sqlalchemy]'`, `[httpx]`, `[asyncpg]`, `[redis]`), and can
be called any number of times: the first call instruments, the others do nothing.

The spans go to the service whose unit of work is current (else the service configured
last): a library is instrumented once per process, but its spans follow the request that
made them, with that service's sampler, exporters and scrubbing. They are children of the
request's span, and while a statement or a request runs its span is the current one, so
the log lines written meanwhile carry its `span_id`.

`opentelemetry-instrument`: an instrumentation it already installed is left as it is (its
spans then go to OpenTelemetry's global provider, which `configure()` sets to the service's
own when nothing else did). Its FastAPI server middleware is left out of a configured app,
so each request has one server span, ours. See the tracing page.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from todo_observability.context import _current_signals
from todo_observability.exceptions import MissingExtraError, ObservabilityError

if TYPE_CHECKING:
    import httpx
    from opentelemetry.util.types import Attributes
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "instrument_asyncpg",
    "instrument_httpx",
    "instrument_redis",
    "instrument_sqlalchemy",
]

_lock = threading.Lock()


# --- spans follow the current service -------------------------------------------------------


class _RoutingTracer(trace.Tracer):
    """A tracer that starts each span with the current service's provider, in its own scope."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any):
        self._scope = (name, version, schema_url, attributes)
        self._tracers: weakref.WeakKeyDictionary[trace.TracerProvider, trace.Tracer] = (
            weakref.WeakKeyDictionary()
        )

    def _tracer(self) -> trace.Tracer:
        provider = _current_signals().tracer_provider or trace.get_tracer_provider()
        tracer = self._tracers.get(provider)
        if tracer is None:
            name, version, schema_url, attributes = self._scope
            tracer = provider.get_tracer(name, version, schema_url, attributes)
            self._tracers[provider] = tracer
        return tracer

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._tracer().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @contextmanager  # as the API's own proxy tracer does
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        with self._tracer().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        ) as span:
            yield span


class _RoutingTracerProvider(trace.TracerProvider):
    """What the instrumentations are given: tracers whose spans go to the current service."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return _RoutingTracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )


_PROVIDER = _RoutingTracerProvider()


def _import(feature: str, module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module.replace(".", "-")) from exc


def _instrument_once(feature: str, extra: str, instrumentor: Any, **kwargs: Any) -> None:
    """Instrument with our provider unless already instrumented (by us, or by `opentelemetry-instrument`).

    Raises:
        ObservabilityError: The installed library is a version the instrumentation does not
            support (it would log that and instrument nothing).
    """
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
    if conflict is not None:
        raise ObservabilityError(
            f"{feature} cannot instrument anything: {conflict}. Install the versions it "
            f"supports: pip install 'todo-observability[{extra}]'"
        )
    instrumentor.instrument(tracer_provider=_PROVIDER, **kwargs)


# --- SQLAlchemy ------------------------------------------------------------------------------

_ATTACHED = "_todo_observability_context"


def _enter_statement_span(
    conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: bool
) -> None:
    """Make the statement's span (started by the instrumentation just before) the current one."""
    span = getattr(context, "_otel_span", None)
    if span is not None and getattr(context, _ATTACHED, None) is None:
        setattr(context, _ATTACHED, otel_context.attach(trace.set_span_in_context(span)))


def _leave_statement_span(context: Any) -> None:
    token = getattr(context, _ATTACHED, None)
    if token is not None:
        setattr(context, _ATTACHED, None)
        otel_context.detach(token)


def _after_statement(
    conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: bool
) -> None:
    _leave_statement_span(context)


def _statement_failed(exception_context: Any) -> None:
    context = exception_context.execution_context
    if context is not None:
        _leave_statement_span(context)


def _engines(engine: Any) -> list[Engine]:
    if engine is None:
        return []
    items = engine if isinstance(engine, Iterable) else [engine]
    # An AsyncEngine runs its statements on the Engine it wraps.
    return [item.sync_engine if hasattr(item, "sync_engine") else item for item in items]


def instrument_sqlalchemy(
    engine: Engine | AsyncEngine | Iterable[Engine | AsyncEngine] | None = None,
) -> None:
    """A CLIENT span for every SQL statement (`db.statement`, with placeholders, never values).

    Uses `opentelemetry-instrumentation-sqlalchemy` (extra `sqlalchemy`). Engines created
    after the first call are traced too; an engine that already exists must be passed.

    Args:
        engine: An `Engine` or `AsyncEngine` (or several) that exist already.

    Raises:
        MissingExtraError: The instrumentation is not installed.
        ObservabilityError: The library is a version the instrumentation does not support.
    """
    instrumentation = _import(
        "instrument_sqlalchemy()", "opentelemetry.instrumentation.sqlalchemy", "sqlalchemy"
    )
    from opentelemetry.instrumentation.sqlalchemy import engine as traced_engine
    from sqlalchemy import event

    engines = _engines(engine)
    with _lock:
        instrumentor = instrumentation.SQLAlchemyInstrumentor()
        untraced = [
            e
            for e in engines
            if not event.contains(e, "after_cursor_execute", traced_engine._after_cur_exec)
        ]
        if not instrumentor.is_instrumented_by_opentelemetry:
            _instrument_once(
                "instrument_sqlalchemy()", "sqlalchemy", instrumentor, engines=untraced
            )
        elif untraced:
            # Instrumented already, and these engines existed before that: trace them the way
            # the instrumentor traces the engines it is given.
            from opentelemetry.metrics import get_meter

            meter = get_meter(traced_engine.__name__)
            usage = meter.create_up_down_counter("db.client.connections.usage", "connections")
            tracer = _PROVIDER.get_tracer(instrumentation.__name__)
            for e in untraced:
                traced_engine.EngineTracer(tracer, e, usage)  # type: ignore[no-untyped-call]
        for e in engines:
            if not event.contains(e, "before_cursor_execute", _enter_statement_span):
                # After the instrumentation's own listener (listeners run in the order they
                # were added): its span exists by then, and is current while the statement
                # runs, so the engine's own log lines carry its span_id.
                event.listen(e, "before_cursor_execute", _enter_statement_span)
                event.listen(e, "after_cursor_execute", _after_statement)
                event.listen(e, "handle_error", _statement_failed)


# --- httpx -----------------------------------------------------------------------------------


def instrument_httpx(client: httpx.Client | httpx.AsyncClient | None = None) -> None:
    """A CLIENT span (and trace context) for every request of every httpx client, or of `client`.

    Uses `opentelemetry-instrumentation-httpx` (extra `httpx`). Clients made by
    `create_http_client()` and the Dapr client are traced by the SDK already and keep one
    span per request.

    Args:
        client: Instrument only this client; by default every client.

    Raises:
        MissingExtraError: The instrumentation is not installed.
        ObservabilityError: The library is a version the instrumentation does not support.
    """
    instrumentation = _import("instrument_httpx()", "opentelemetry.instrumentation.httpx", "httpx")
    from todo_observability.httpclient import AsyncInstrumentedTransport, InstrumentedTransport

    instrumentor_class = instrumentation.HTTPXClientInstrumentor
    with _lock:
        instrumentor = instrumentor_class()
        if client is None:
            _instrument_once("instrument_httpx()", "httpx", instrumentor)
            return
        if instrumentor.is_instrumented_by_opentelemetry:
            return  # every client is
        if isinstance(
            getattr(client, "_transport", None), (AsyncInstrumentedTransport, InstrumentedTransport)
        ):
            return  # ours: a second span per request would be one too many
        if not getattr(client, "_is_instrumented_by_opentelemetry", False):
            instrumentor_class.instrument_client(client, tracer_provider=_PROVIDER)


# --- asyncpg, redis --------------------------------------------------------------------------


def instrument_asyncpg() -> None:
    """A CLIENT span for every asyncpg query (`db.statement`, without its arguments).

    Uses `opentelemetry-instrumentation-asyncpg` (extra `asyncpg`).

    Raises:
        MissingExtraError: The instrumentation is not installed.
        ObservabilityError: The library is a version the instrumentation does not support.
    """
    instrumentation = _import(
        "instrument_asyncpg()", "opentelemetry.instrumentation.asyncpg", "asyncpg"
    )
    with _lock:
        _instrument_once("instrument_asyncpg()", "asyncpg", instrumentation.AsyncPGInstrumentor())


def instrument_redis() -> None:
    """A CLIENT span for every redis command (the command name and its key, never the values).

    Uses `opentelemetry-instrumentation-redis` (extra `redis`).

    Raises:
        MissingExtraError: The instrumentation is not installed.
        ObservabilityError: The library is a version the instrumentation does not support.
    """
    instrumentation = _import("instrument_redis()", "opentelemetry.instrumentation.redis", "redis")
    with _lock:
        _instrument_once("instrument_redis()", "redis", instrumentation.RedisInstrumentor())
