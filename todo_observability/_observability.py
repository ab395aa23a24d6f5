"""`Observability`: what `configure()` built for one service, its lifespan, and the way to undo it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from todo_observability._signals import TRACER_NAME, Signals
from todo_observability._version import __version__
from todo_observability._workers import warn_if_workers_share_nothing
from todo_observability.context import _push_default_signals, _remove_default_signals
from todo_observability.exceptions import ConfigurationError
from todo_observability.health.endpoints import chain_shutdown_signals
from todo_observability.health.engine import HealthEngine
from todo_observability.health.model import Check
from todo_observability.metrics import (
    PLUGIN_ERRORS,
    SPANS_DROPPED,
    MetricSet,
    _metric_set,
    metrics_app,
)
from todo_observability.plugins import PluginHost
from todo_observability.redaction import Redactor
from todo_observability.tracing import _BoundedCall, build_tracer_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp, Receive, Scope, Send

    from todo_observability import logs
    from todo_observability.config import Settings

__all__ = ["Observability"]

_log = logging.getLogger("todo_observability")

UserIdResolver = Callable[[MutableMapping[str, Any]], "str | None"]


class Observability:
    """Everything `configure()` set up for one service, and the way to undo it.

    `configure(app)` also stores it as `app.state.observability`.

    Attributes:
        settings: The resolved settings.
        registry: The Prometheus registry metrics are recorded in.
        metrics: The catalogue's metrics in that registry.
        tracer_provider: The OpenTelemetry tracer provider spans go through.
        tracer: The tracer of the SDK's own spans.
        span_exporter: The in-memory exporter, when the `memory` exporter is configured.
        plugins: The loaded plugins.
        health: The health engine behind the probes; `add()` registers checks. It starts
            with one liveness check, `event-loop` (how late the loop runs a callback).
        redactor: Decides which keys are sensitive (logs, span attributes, headers).
        metrics_app: The ASGI app serving `/metrics`.
        user_id_resolvers: Called in order with each request's scope until one returns a user id.
        signals: Where this service's signals go (its name, tracer, metrics and redactor).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
        user_id_resolver: UserIdResolver | None = None,
        plugins: Iterable[object] = (),
    ):
        from prometheus_client import REGISTRY

        self.settings: Settings = settings
        self.redactor: Redactor = Redactor(settings.redact_keys)
        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self.metrics: MetricSet = _metric_set(self.registry)
        # Several apps may share a registry; the caps are the latest configured ones.
        self.metrics.guard.max_values = settings.max_label_values
        self.metrics.guard.max_series = settings.max_series_per_metric
        self._target_info = {
            "service_name": settings.service_name,
            "service_version": settings.service_version,
            "deployment_environment": settings.environment,
        }
        self._set_target_info()
        self.plugins: PluginHost = PluginHost(
            plugins,
            load_entry_points=settings.load_plugins,
            errors=self.metrics.counter(PLUGIN_ERRORS),
        )
        self.span_exporter: InMemorySpanExporter | None = None
        self._owns_provider = tracer_provider is None
        if tracer_provider is None:
            tracer_provider, self.span_exporter = build_tracer_provider(
                settings, self.metrics.counter(SPANS_DROPPED), self.redactor
            )
        self.tracer_provider: TracerProvider = tracer_provider
        self.tracer: Tracer = tracer_provider.get_tracer(TRACER_NAME, __version__)
        self.signals: Signals = Signals(
            settings.service_name,
            self.tracer,
            self.metrics,
            self.redactor,
            settings.request_id_header,
            settings.internal_hosts,
            tracer_provider,
        )
        self.health: HealthEngine = HealthEngine(self.metrics)
        self.metrics_app: ASGIApp = _health_first(
            metrics_app(self.registry, target_info=self._target_info), self.health
        )
        resolvers = self.plugins.user_id_resolvers
        if user_id_resolver is not None:
            resolvers = (self.plugins.failsafe("user_id_resolver", user_id_resolver), *resolvers)
        self.user_id_resolvers: tuple[UserIdResolver, ...] = resolvers
        for check in self.plugins.health_checks(settings):
            if not isinstance(check, Check):
                raise ConfigurationError(
                    f"a plugin contributed {check!r} as a health check; "
                    "todo_observability_health_checks must return Check objects.",
                    field="plugins",
                    value=check,
                )
            self.health.add(check)
        self._logging: logs.LoggingSetup | None = None
        self._uninstall: Callable[[], None] | None = None
        self._restore_propagator: Callable[[], None] | None = None
        self._closed = False
        self._shut_down = True
        self._flush_lock = threading.Lock()
        self._flushing: _BoundedCall | None = None

    def _set_target_info(self) -> None:
        labels = self._target_info
        current = self.registry.get_target_info()
        if current is None:
            self.registry.set_target_info(labels)
        elif current != labels:
            _log.warning(
                "registry already describes service %r; target_info left as it is. "
                "Give each service its own registry= to tell them apart.",
                current.get("service_name"),
            )

    def shutdown(self, timeout_millis: int = 5_000) -> bool:
        """Flush spans and undo everything `configure()` did. Calling it again does nothing.

        It returns within `timeout_millis` (plus a few milliseconds), whatever the
        collector does. The global OpenTelemetry tracer provider, if `configure()`
        installed one, stays installed (OpenTelemetry allows setting it only once)
        but no longer exports.

        Returns:
            Whether every finished span was exported in time (as `flush()`); what was
            not is counted in `todo_observability_spans_dropped_total`, or lost with
            the process.
        """
        if self._closed:
            return self._shut_down
        self._closed = True
        if self._uninstall is not None:
            uninstall, self._uninstall = self._uninstall, None
            uninstall()
        if self._restore_propagator is not None:
            restore, self._restore_propagator = self._restore_propagator, None
            restore()
        if self.registry.get_target_info() == self._target_info:
            self.registry.set_target_info(None)
        provider = self.tracer_provider
        if self._owns_provider:

            def flush_and_shut_down(seconds: float) -> bool:
                flushed = provider.force_flush(int(seconds * 1000))
                provider.shutdown()
                return flushed

            # Not queued behind a flush still under way: the shutdown must start, whatever it
            # then waits for.
            deadline = time.monotonic() + timeout_millis / 1000
            self._shut_down = _BoundedCall(flush_and_shut_down, deadline).wait(deadline)
        else:
            self._shut_down = self.flush(timeout_millis)
        if not self._shut_down:
            _log.warning("spans were not all exported within %d ms at shutdown", timeout_millis)
        if self._logging is not None:
            self._logging.undo()
            self._logging = None
        _remove_default_signals(self.signals)
        if self in _configured:
            _configured.remove(self)
        return self._shut_down

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now, waiting `timeout_millis` at most.

        A slow or unreachable collector cannot hold the caller longer: no request is
        given more time than the flush has left, and the wait itself is bounded (an
        export already under way goes on in the background).

        Returns:
            True if every span finished before the call was exported in time; False if
            time ran out or an export failed (those spans are counted in
            `todo_observability_spans_dropped_total`).
        """
        deadline = time.monotonic() + timeout_millis / 1000
        provider = self.tracer_provider
        # A flush under way may export (or drop) this call's spans before ours starts:
        # any span dropped from now on makes the answer False.
        dropped = self._spans_dropped()
        while True:
            with self._flush_lock:
                call = self._flushing
                mine = call is None or not call.running
                if mine:
                    # One flush thread at a time: repeated calls against a hung collector
                    # wait for the flush under way instead of piling up threads.
                    call = self._flushing = _BoundedCall(
                        lambda seconds: provider.force_flush(int(seconds * 1000)), deadline
                    )
            assert call is not None
            result = call.wait(deadline)
            if mine:
                return result and self._spans_dropped() == dropped
            if call.running:
                return False
            # An earlier flush ended in time, but spans may have ended after it began: ours now.

    def _spans_dropped(self) -> float:
        """Spans counted as never exported so far, for every reason."""
        return sum(
            self.registry.get_sample_value(SPANS_DROPPED.name, {"reason": reason}) or 0.0
            for reason in ("queue_full", "export_failed", "exporter_unavailable")
        )

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The service's run, from server start-up to shutdown; `configure(app)` enters it for you.

        At start-up: SIGTERM and SIGINT first flip readiness to 503 (then reach the
        server's own handlers, which drain), and the background health refresh starts
        (`health_refresh`, by default each check as its result expires). At shutdown:
        readiness is down, the refresh stops, the signal handlers are put back and queued
        spans are exported (5 s at most), so the last requests' spans are not lost. A worker
        that starts beside live workers of the same service, without
        `PROMETHEUS_MULTIPROC_DIR`, warns once that a scrape sees one worker's numbers. A bare
        ASGI server runs it around its app:

            async with obs.lifespan():
                await server.serve()
        """
        health = self.health
        # The server's own SIGTERM handler is in place by now (uvicorn installs it before
        # the lifespan starts): ours runs before it.
        restore = chain_shutdown_signals(health.begin_shutdown)
        refresh = self.settings.health_refresh
        workers = warn_if_workers_share_nothing(self.settings.service_name)
        try:
            if refresh != "off":
                health.start_refresh(None if refresh == "ttl" else refresh)
            yield
        finally:
            health.begin_shutdown()
            try:
                await health.stop_refresh()
            finally:
                restore()
                if workers is not None:
                    workers.leave()
                if not self.flush(5_000):
                    _log.warning("spans were not all exported within 5 s at shutdown")


def _health_first(app: ASGIApp, health: HealthEngine) -> ASGIApp:
    """`app` (the metrics page), which first runs stale health checks when no background refresh runs.

    Without a lifespan (or with `health_refresh=off`) nothing else would run the checks between
    probes, and `health_check_status` would show whatever the last probe saw. The scrape waits at
    most the slowest check's timeout; a fresh result is reused, so scrapes cost no more calls than
    the TTL allows.
    """

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not health.refreshing:
            try:
                await health.refresh()
            except Exception:  # noqa: BLE001 - the page is served whatever the checks do
                _log.exception("health checks failed to run before a scrape")
        await app(scope, receive, send)

    return metrics


_configured: list[Observability] = []


def _active_observability() -> Observability | None:
    """The `Observability` configured last and not shut down, if any."""
    return _configured[-1] if _configured else None


def _register(obs: Observability) -> None:
    """Make `obs` the process default: its signals are where code outside a unit of work records."""
    _configured.append(obs)
    _push_default_signals(obs.signals)
