"""`configure()`: one call wires logging, metrics, tracing, health and the middleware for a service."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import trace

from todo_observability import logs
from todo_observability._observability import Observability, UserIdResolver, _register
from todo_observability.asgi import ObservabilityMiddleware
from todo_observability.config import resolve_settings
from todo_observability.health.checks import event_loop_lag
from todo_observability.propagation import _install_default_propagator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from todo_observability.health.model import Check

__all__ = ["configure"]

_log = logging.getLogger("todo_observability")


def configure(
    app: Any = None,
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: dict[str, str] | None = None,
    log_level: str | int | None = None,
    access_log: bool | None = None,
    redact_keys: Iterable[str] | None = None,
    traces_sampler: str | None = None,
    sample_ratio: float | None = None,
    traces_exporter: str | Iterable[str] | None = None,
    zipkin_endpoint: str | None = None,
    otlp_endpoint: str | None = None,
    otlp_traces_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_traces_protocol: str | None = None,
    traces_file: str | None = None,
    metrics_path: str | None = None,
    health_path: str | None = None,
    health_details: str | None = None,
    health_refresh: float | str | None = None,
    health_token: str | None = None,
    health_checks: Iterable[Check] = (),
    excluded_paths: Iterable[str] | None = None,
    max_label_values: int | None = None,
    max_series_per_metric: int | None = None,
    request_id_header: str | None = None,
    user_id_header: str | None = None,
    trust_incoming_context: bool | None = None,
    internal_hosts: Iterable[str] | None = None,
    capture_headers: Iterable[str] | None = None,
    load_plugins: bool | None = None,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    user_id_resolver: UserIdResolver | None = None,
    plugins: Iterable[object] = (),
    configure_logging: bool = True,
    log_stream: IO[str] | None = None,
) -> Observability:
    """Wire JSON logs, RED metrics, tracing and the middleware in one call.

    Every setting falls back to its environment variable, then to a documented
    default (see the configuration page). `None` means "not given". The service's
    identity (name, version, environment, resource attributes) is the other way
    round: the environment wins, and the argument is the default.

    Args:
        app: A Starlette or FastAPI app to instrument; omit it for a worker without HTTP.
        service_name: The default name; `OTEL_SERVICE_NAME` wins over it.
        service_version: The default version; `TODO_OBS_SERVICE_VERSION` wins over it.
        environment: The default environment; `TODO_OBS_ENVIRONMENT` wins over it. dev keeps
            every trace, prod one in ten.
        resource_attributes: Merged under the pairs of `OTEL_RESOURCE_ATTRIBUTES`.
        log_level: `TODO_OBS_LOG_LEVEL`.
        access_log: `TODO_OBS_ACCESS_LOG`.
        redact_keys: `TODO_OBS_REDACT_KEYS`, patterns added to the default sensitive keys.
        traces_sampler: `OTEL_TRACES_SAMPLER`: `always_on`, `always_off`, `traceidratio`, or
            `parentbased_` of each (default `parentbased_traceidratio`).
        sample_ratio: `OTEL_TRACES_SAMPLER_ARG`.
        traces_exporter: `OTEL_TRACES_EXPORTER`: zipkin, otlp, console, file, memory, none.
        zipkin_endpoint: `OTEL_EXPORTER_ZIPKIN_ENDPOINT`.
        otlp_endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT`.
        otlp_traces_endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it is; wins over
            `otlp_endpoint`.
        otlp_protocol: `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` or `grpc`
            (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` wins over it).
        otlp_traces_protocol: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`; wins over `otlp_protocol`.
        traces_file: `TODO_OBS_TRACES_FILE`, for the file exporter.
        metrics_path: `TODO_OBS_METRICS_PATH`; "" serves no metrics.
        health_path: `TODO_OBS_HEALTH_PATH`, prefix of the live, ready and startup probes; "" serves none.
        health_details: `TODO_OBS_HEALTH_DETAILS`: `full`, or `authenticated` (errors shown only with the token).
        health_refresh: `TODO_OBS_HEALTH_REFRESH`: `ttl` (the default) runs each check again in the
            background as its result expires, a number of seconds runs them all at that interval,
            `off` runs them only when probed (or when `/metrics` is scraped).
        health_token: `TODO_OBS_HEALTH_TOKEN`, the bearer token of the `authenticated` policy.
        health_checks: Checks to register now (more with `obs.health.add(...)`).
        excluded_paths: `TODO_OBS_EXCLUDED_PATHS`.
        max_label_values: `TODO_OBS_MAX_LABEL_VALUES`.
        max_series_per_metric: `TODO_OBS_MAX_SERIES`, label combinations kept per metric.
        request_id_header: `TODO_OBS_REQUEST_ID_HEADER`.
        user_id_header: `TODO_OBS_USER_ID_HEADER`; trusted only when set.
        trust_incoming_context: `TODO_OBS_TRUST_INCOMING_CONTEXT`; false at a public edge, where
            callers must not choose the `user_id` and `request_id` of the lines they cause.
        internal_hosts: `TODO_OBS_INTERNAL_HOSTS`, the hosts (or `*.suffix` patterns) outgoing
            calls carry `user_id` and `request_id` to; the Dapr sidecar always counts.
        capture_headers: `TODO_OBS_CAPTURE_HEADERS`.
        load_plugins: `TODO_OBS_LOAD_PLUGINS`.
        registry: Prometheus registry (default: prometheus_client's global one).
        tracer_provider: Use this provider instead of building one; it is flushed, not shut down.
        user_id_resolver: Called with the ASGI scope; returns the user id or None.
        plugins: Plugin objects to register besides entry points.
        configure_logging: Route the standard library's logging through the JSON formatter.
        log_stream: Where JSON lines go (default: standard output).

    Returns:
        The `Observability`; call its `shutdown()` when the service stops.

    Raises:
        ConfigurationError: a setting is invalid; the message says which and how to fix it.
        TypeError: `app` is not a Starlette or FastAPI app.
    """
    if app is not None:
        if not hasattr(app, "build_middleware_stack") or not hasattr(app, "state"):
            raise TypeError(
                f"configure(app) needs a Starlette or FastAPI app, got {type(app).__name__}. "
                "Wrap any other ASGI app with ObservabilityMiddleware(app, observability=configure())."
            )
        existing = getattr(app.state, "observability", None)
        if isinstance(existing, Observability):
            warnings.warn(
                "configure() was already called for this app; the second call does nothing.",
                RuntimeWarning,
                stacklevel=2,
            )
            return existing
    settings = resolve_settings(
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        resource_attributes=resource_attributes,
        log_level=log_level,
        access_log=access_log,
        redact_keys=redact_keys,
        traces_sampler=traces_sampler,
        sample_ratio=sample_ratio,
        traces_exporter=traces_exporter,
        zipkin_endpoint=zipkin_endpoint,
        otlp_endpoint=otlp_endpoint,
        otlp_traces_endpoint=otlp_traces_endpoint,
        otlp_protocol=otlp_protocol,
        otlp_traces_protocol=otlp_traces_protocol,
        traces_file=traces_file,
        metrics_path=metrics_path,
        health_path=health_path,
        health_details=health_details,
        health_refresh=health_refresh,
        health_token=health_token,
        excluded_paths=excluded_paths,
        max_label_values=max_label_values,
        max_series_per_metric=max_series_per_metric,
        request_id_header=request_id_header,
        user_id_header=user_id_header,
        trust_incoming_context=trust_incoming_context,
        internal_hosts=internal_hosts,
        capture_headers=capture_headers,
        load_plugins=load_plugins,
    )
    obs = Observability(
        settings,
        registry=registry,
        tracer_provider=tracer_provider,
        user_id_resolver=user_id_resolver,
        plugins=plugins,
    )
    obs.health.add(*health_checks)
    if "event-loop" not in obs.health.checks:
        # Liveness needs something to say: whether the event loop still runs callbacks on time.
        obs.health.add(event_loop_lag())
    if configure_logging:
        obs._logging = logs.configure_logging(
            service_name=settings.service_name,
            level=settings.log_level,
            redactor=obs.redactor,
            enrichers=obs.plugins.log_enrichers,
            stream=log_stream,
        )
    if obs._owns_provider and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # Libraries instrumented with OpenTelemetry (SQLAlchemy, ...) use the global provider.
        trace.set_tracer_provider(obs.tracer_provider)
    # W3C Trace Context as it now reads, unless OTEL_PROPAGATORS (or the code) chose a propagator.
    obs._restore_propagator = _install_default_propagator()
    _register(obs)
    if app is not None:
        obs._uninstall = _install(app, obs)
    return obs


def _install(app: Any, obs: Observability) -> Callable[[], None]:
    """Make `obs` observe `app`; returns what undoes it."""
    previous_build = vars(app).get("build_middleware_stack")
    build = app.build_middleware_stack
    # opentelemetry-instrumentation-fastapi (by `opentelemetry-instrument`, or
    # FastAPIInstrumentor) wraps the stack in its own server middleware and keeps the
    # original: we build from the original, so each request has one server span, ours.
    original = getattr(app, "_original_build_middleware_stack", None)
    if getattr(app, "_is_instrumented_by_opentelemetry", False) and callable(original):
        build = original
        _log.info(
            "opentelemetry-instrumentation-fastapi's server middleware is left out of this "
            "app: todo-observability makes its server spans"
        )

    def build_middleware_stack() -> Any:
        # Outermost, around Starlette's ServerErrorMiddleware: we see (and tag
        # with X-Request-ID) the 500 it sends for an unhandled exception.
        return ObservabilityMiddleware(build(), observability=obs, routes_app=app)

    router = app.router
    app_lifespan = router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(lifespan_app: Any) -> AsyncIterator[Any]:
        async with obs.lifespan(), app_lifespan(lifespan_app) as state:
            try:
                yield state
            finally:
                # Before the app's own shutdown closes what the checks use (engines, clients).
                await obs.health.stop_refresh()

    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None
    router.lifespan_context = lifespan
    app.state.observability = obs
    # FastAPI's native telemetry (FastAPI(telemetry=...)) would open a second
    # server span around ours once a global tracer provider exists. We own the
    # server span, so its tracing goes off; its config dict is the one the
    # constructor documents, kept on the app.
    telemetry = getattr(app, "_telemetry", None)
    restore_fastapi_tracing = isinstance(telemetry, dict) and bool(telemetry.get("tracing"))
    if restore_fastapi_tracing:
        telemetry["tracing"] = False  # type: ignore[index]

    def uninstall() -> None:
        if previous_build is None:
            vars(app).pop("build_middleware_stack", None)
        else:
            app.build_middleware_stack = previous_build
        if router.lifespan_context is lifespan:
            router.lifespan_context = app_lifespan
        if restore_fastapi_tracing:
            app._telemetry["tracing"] = True
        app.middleware_stack = None
        if getattr(app.state, "observability", None) is obs:
            del app.state.observability

    return uninstall
