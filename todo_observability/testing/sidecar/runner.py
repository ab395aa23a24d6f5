"""Run emulated sidecars as a process: one event loop, one broker, one uvicorn server per app.

`todo-obs sidecar --app backend:8001:3501 --app recurring:8002:3502` serves each app's Dapr API
on its own port, like one daprd per app, all sharing the in-memory broker. A fourth field
(`backend:8001:3501:9091`) is the sidecar's metrics port (daprd's `--metrics-port`), where its
Prometheus metrics are served on `/metrics`; `--kafka-exporter-port` serves the broker's under
kafka_exporter's names. SIGINT or SIGTERM stop it cleanly: servers closed, deliveries
cancelled, spans flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import make_asgi_app

from todo_observability.exceptions import ConfigurationError, MissingExtraError
from todo_observability.testing.sidecar.broker import Broker
from todo_observability.testing.sidecar.metrics import kafka_exporter_registry
from todo_observability.testing.sidecar.retry import RetryPolicy
from todo_observability.testing.sidecar.sidecar import Sidecar

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    import uvicorn

__all__ = ["SidecarSpec", "build_specs", "run_sidecars", "serve"]

_log = logging.getLogger("todo_observability.sidecar")


@dataclass(frozen=True)
class SidecarSpec:
    """One app to emulate a sidecar for: its id, its port, the sidecar's HTTP and metrics ports.

    Without a metrics port the sidecar's metrics are not served (they are still counted).
    """

    app_id: str
    app_port: int
    dapr_http_port: int
    metrics_port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SidecarSpec:
        """`backend:8001:3501` (app id, app port, Dapr HTTP port), or with `:9091` the metrics port.

        Raises:
            ConfigurationError: not three or four fields with ports.
        """
        parts = text.split(":")
        try:
            if len(parts) in (3, 4) and parts[0]:
                metrics = _port(parts[3]) if len(parts) == 4 else None
                return cls(parts[0], _port(parts[1]), _port(parts[2]), metrics)
        except ValueError:
            pass
        raise ConfigurationError(
            f"--app takes APP_ID:APP_PORT:DAPR_HTTP_PORT[:METRICS_PORT], for example "
            f"backend:8001:3501 or backend:8001:3501:9091, got {text!r}.",
            field="app",
            value=text,
        )


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(text)
    return port


def build_specs(
    apps: Sequence[str] = (),
    *,
    app_id: str | None = None,
    app_port: int | None = None,
    dapr_http_port: int | None = None,
) -> list[SidecarSpec]:
    """The apps of a command line: every `--app`, plus `--app-id` with its ports.

    `--app-id`, `--app-port` and `--dapr-http-port` fall back to `APP_ID`, `APP_PORT` and
    `DAPR_HTTP_PORT` (then 3500), as for daprd.

    Raises:
        ConfigurationError: no app, or an app without a port.
    """
    specs = [SidecarSpec.parse(text) for text in apps]
    app_id = app_id or os.environ.get("APP_ID") or None
    if app_id:
        try:
            port = app_port or _port(os.environ.get("APP_PORT", ""))
        except ValueError:
            raise ConfigurationError(
                f"--app-id {app_id} needs --app-port (or APP_PORT), the port the app listens on.",
                field="app_port",
                value=os.environ.get("APP_PORT"),
            ) from None
        try:
            dapr_port = dapr_http_port or _port(os.environ.get("DAPR_HTTP_PORT") or "3500")
        except ValueError:
            raise ConfigurationError(
                f"DAPR_HTTP_PORT must be a port number, got {os.environ.get('DAPR_HTTP_PORT')!r}.",
                field="dapr_http_port",
                env_var="DAPR_HTTP_PORT",
                value=os.environ.get("DAPR_HTTP_PORT"),
            ) from None
        specs.append(SidecarSpec(app_id, port, dapr_port))
    if not specs:
        raise ConfigurationError(
            "todo-obs sidecar needs at least one app: --app APP_ID:APP_PORT:DAPR_HTTP_PORT, "
            "or --app-id with --app-port.",
            field="app",
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.app_id in seen:
            raise ConfigurationError(
                f"app id {spec.app_id!r} is given twice.", field="app", value=spec.app_id
            )
        seen.add(spec.app_id)
    return specs


class _SharedExporter(SpanExporter):
    """One exporter used by every sidecar's provider.

    It exports one batch at a time (lines of a span file never interleave) and is shut down with
    the last provider.
    """

    def __init__(self, exporter: SpanExporter):
        self._exporter = exporter
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    def acquire(self) -> _SharedExporter:
        self._users += 1
        return self

    @property
    def in_use(self) -> bool:
        return self._users > 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            return self._exporter.export(spans)

    def shutdown(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users <= 0 and not self._closed:
                self._closed = True
                self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            return self._exporter.force_flush(timeout_millis)


def _exporters(zipkin_endpoint: str | None, span_file: str | None) -> list[_SharedExporter]:
    exporters: list[_SharedExporter] = []
    if zipkin_endpoint:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporters.append(_SharedExporter(ZipkinExporter(endpoint=zipkin_endpoint, timeout=5)))
    if span_file:
        from todo_observability.tracing import ZipkinFileSpanExporter

        exporters.append(_SharedExporter(ZipkinFileSpanExporter(span_file)))
    return exporters


def _server(config: uvicorn.Config) -> uvicorn.Server:
    import uvicorn

    class _Server(uvicorn.Server):
        # Several servers share one loop: the runner owns the signals, not each server.
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return _Server(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def run_sidecars(
    specs: Sequence[SidecarSpec],
    *,
    host: str = "127.0.0.1",
    sampling_rate: float = 1.0,
    retry_policy: RetryPolicy | None = None,
    zipkin_endpoint: str | None = None,
    span_file: str | None = None,
    api_token: str | None = None,
    app_api_token: str | None = None,
    pubsubs: Sequence[str] = ("pubsub",),
    state_stores: Sequence[str] = ("statestore",),
    partitions: int = 1,
    runtime_version: str = "1.18.3",
    kafka_exporter_port: int | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[list[Sidecar]], None] | None = None,
) -> None:
    """Serve one emulated sidecar per spec until `stop` is set (for ever when None).

    Spans of every sidecar go, batched, to `zipkin_endpoint` (Zipkin v2 JSON) and/or
    `span_file` (one JSON array per line, readable by `todo-obs trace`). Each sidecar whose
    spec has a metrics port serves its metrics there on `/metrics`; `kafka_exporter_port`
    serves the broker's (see `todo_observability.testing.sidecar.metrics`).

    Raises:
        OSError: a port is already in use.
        MissingExtraError: uvicorn is not installed (the `sidecar` extra).
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("The sidecar emulator", "sidecar", "uvicorn") from None
    if not 0 <= sampling_rate <= 1:
        raise ConfigurationError(
            f"--sampling-rate must be between 0 and 1, got {sampling_rate!r}.",
            field="sampling_rate",
            value=sampling_rate,
        )
    stop = stop or asyncio.Event()
    broker = Broker(partitions=partitions)
    exporters: list[_SharedExporter] = []
    sockets: list[socket.socket] = []
    providers: list[TracerProvider] = []
    sidecars: list[Sidecar] = []
    servers: list[uvicorn.Server] = []
    serving: list[asyncio.Task[None]] = []
    starting: list[asyncio.Task[None]] = []
    try:
        exporters.extend(_exporters(zipkin_endpoint, span_file))
        api_sockets = [_bind(host, spec.dapr_http_port) for spec in specs]
        sockets.extend(api_sockets)
        metrics_sockets = [
            (spec, _bind(host, spec.metrics_port)) for spec in specs if spec.metrics_port
        ]
        sockets.extend(sock for _, sock in metrics_sockets)
        if kafka_exporter_port:
            kafka_socket = _bind(host, kafka_exporter_port)
            sockets.append(kafka_socket)
        for spec in specs:
            provider = TracerProvider(
                resource=Resource.create({"service.name": spec.app_id}),
                sampler=ParentBased(TraceIdRatioBased(sampling_rate)),
            )
            providers.append(provider)
            for exporter in exporters:
                provider.add_span_processor(BatchSpanProcessor(exporter.acquire()))
            sidecars.append(
                Sidecar(
                    spec.app_id,
                    broker=broker,
                    app_port=spec.app_port,
                    dapr_http_port=spec.dapr_http_port,
                    sampling_rate=sampling_rate,
                    api_token=api_token,
                    app_api_token=app_api_token,
                    retry_policy=retry_policy,
                    tracer_provider=provider,
                    pubsubs=pubsubs,
                    state_stores=state_stores,
                    runtime_version=runtime_version,
                )
            )
        for sidecar, sock in zip(sidecars, api_sockets, strict=True):
            config = uvicorn.Config(
                sidecar.asgi,
                # Leave logging alone: the process (or the caller) configures it.
                log_level=None,
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,  # Go's net/http sends no Server header
                date_header=False,  # Go adds Date only when missing: GoServerHeaders does
            )
            server = _server(config)
            servers.append(server)
            serving.append(
                asyncio.create_task(
                    server.serve(sockets=[sock]), name=f"dapr {sidecar.app_id} http"
                )
            )
        by_app = {sidecar.app_id: sidecar for sidecar in sidecars}
        metrics_apps = [
            (
                f"dapr {spec.app_id} metrics",
                make_asgi_app(by_app[spec.app_id].metrics.registry),
                sock,
            )
            for spec, sock in metrics_sockets
        ]
        if kafka_exporter_port:
            registry = kafka_exporter_registry(broker)
            metrics_apps.append(("kafka exporter", make_asgi_app(registry), kafka_socket))
        for name, app, sock in metrics_apps:
            server = _server(
                uvicorn.Config(
                    app,
                    log_level=None,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    server_header=False,
                )
            )
            servers.append(server)
            serving.append(asyncio.create_task(server.serve(sockets=[sock]), name=name))
        while not all(server.started for server in servers):
            if any(task.done() for task in serving):
                raise RuntimeError("a sidecar's HTTP server stopped during start-up")
            await asyncio.sleep(0.01)  # uvicorn has no "started" event to wait on
        for spec, sidecar in zip(specs, sidecars, strict=True):
            _log.info(
                "[%s] Dapr HTTP API on http://%s:%d, app on port %d (emulated daprd %s)%s",
                spec.app_id,
                host,
                spec.dapr_http_port,
                spec.app_port,
                runtime_version,
                f", metrics on http://{host}:{spec.metrics_port}/metrics"
                if spec.metrics_port
                else "",
            )
            task = asyncio.create_task(sidecar.start(), name=f"dapr {spec.app_id} start")
            task.add_done_callback(_report_start_failure)
            starting.append(task)
        if kafka_exporter_port:
            _log.info("kafka exporter metrics on http://%s:%d/metrics", host, kafka_exporter_port)
        if on_ready is not None:
            on_ready(sidecars)
        await stop.wait()
        _log.info("shutting down")
    finally:
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)
        for sidecar in sidecars:
            await sidecar.stop()
        for provider in providers:
            provider.shutdown()  # flushes the batches, then shuts the shared exporters down
        for exporter in exporters:
            if not exporter.in_use:  # never given to a provider
                exporter.shutdown()
        for sock in sockets:
            sock.close()


def _report_start_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("a sidecar failed to start", exc_info=task.exception())


def serve(
    specs: Sequence[SidecarSpec],
    *,
    retry: str | RetryPolicy | None = None,
    api_token: str | None = None,
    app_api_token: str | None = None,
    log_level: str = "info",
    **options: Any,
) -> int:
    """Run `run_sidecars` until SIGINT or SIGTERM, logging to stderr; the exit status.

    `api_token` and `app_api_token` default to `DAPR_API_TOKEN` and `APP_API_TOKEN`, as for
    daprd; `retry` may be a policy string (`constant:1s:3`). Other options go to
    `run_sidecars`.
    """
    policy = RetryPolicy.parse(retry) if isinstance(retry, str) else retry
    if api_token is None:
        api_token = os.environ.get("DAPR_API_TOKEN") or None
    if app_api_token is None:
        app_api_token = os.environ.get("APP_API_TOKEN") or None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if policy is not None:
            _log.info("pub/sub inbound retry policy: %s", policy.describe())
        await run_sidecars(
            specs,
            retry_policy=policy,
            api_token=api_token,
            app_api_token=app_api_token,
            stop=stop,
            **options,
        )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s dapr-emulator %(message)s"))
    level, propagate = _log.level, _log.propagate
    _log.addHandler(handler)
    _log.setLevel(log_level.upper())
    _log.propagate = False
    try:
        asyncio.run(main())
    except (OSError, ImportError) as exc:
        _log.error("cannot serve: %s", exc)
        return 1
    finally:
        _log.removeHandler(handler)
        _log.setLevel(level)
        _log.propagate = propagate
    return 0
