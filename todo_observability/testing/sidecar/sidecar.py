"""One emulated daprd: the Dapr HTTP API as an ASGI app, and the sidecar's work behind it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import posixpath
import time
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.trace import Span, SpanKind
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Route

from todo_observability.exceptions import ConfigurationError
from todo_observability.testing.sidecar import _cloudevents, _json
from todo_observability.testing.sidecar._delivery import Consumer, DeliveryContext
from todo_observability.testing.sidecar._errors import DaprApiError
from todo_observability.testing.sidecar._gohttp import GoServerHeaders, first_value, first_values
from todo_observability.testing.sidecar._jobs import JobContext, JobScheduler, parse_job_request
from todo_observability.testing.sidecar._state import (
    ETagInvalidError,
    ETagMismatchError,
    Operation,
    StateStore,
)
from todo_observability.testing.sidecar._strconv import parse_bool
from todo_observability.testing.sidecar._tracing import (
    SidecarTracing,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    trace_headers,
)
from todo_observability.testing.sidecar.broker import Broker, Record
from todo_observability.testing.sidecar.metrics import DaprMetrics, MetricsMiddleware
from todo_observability.testing.sidecar.retry import RetryPolicy
from todo_observability.testing.sidecar.subscriptions import (
    Subscription,
    SubscriptionError,
    parse_subscriptions,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from todo_observability.testing.sidecar.records import (
        DeliveryAttempt,
        JobTrigger,
        MessageResult,
    )

__all__ = ["Sidecar"]

_SPAN = "dapr.emulator.span"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED_TO_CALLEE = _HOP_BY_HOP | {
    b"content-length",
    b"host",
    b"dapr-app-id",
    b"dapr-api-token",
}
_PUBSUB_TYPE = ("pubsub.kafka", "v1", ["BULK_PUBSUB"])
_STATE_TYPE = (
    "state.in-memory",
    "v1",
    ["ETAG", "TRANSACTIONAL", "TTL", "DELETE_WITH_PREFIX", "ACTOR"],
)

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

RawHeaders = list[tuple[bytes, bytes]]


class _AppIdAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.extra['app_id'] if self.extra else '?'}] {msg}", kwargs


def _version(text: str) -> tuple[int, ...]:
    numbers: list[int] = []
    for part in text.split("-")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.split(b"?", 1)[0].decode("latin-1")
    return urllib.parse.quote(scope["path"])


def _metadata_from_query(request: Request) -> dict[str, str]:
    # daprd reads `metadata.<key>` query parameters; the first value of a repeated key counts.
    metadata: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata.") and key[len("metadata.") :] not in metadata:
            metadata[key[len("metadata.") :]] = value
    return metadata


def _encode_headers(headers: Mapping[str, str] | RawHeaders) -> RawHeaders:
    if isinstance(headers, list):
        return headers
    return [(name.encode("latin-1"), value.encode("utf-8")) for name, value in headers.items()]


def _bulk_entry_bytes(event: Any, content_type: str) -> bytes:
    """A bulk publish entry's bytes, as daprd's `ConvertEventToBytes` makes them."""
    lowered = content_type.lower().split(";", 1)[0].strip()
    if lowered in ("application/json", _cloudevents.CLOUD_EVENT_CONTENT_TYPE):
        return _json.dumps(event)
    if lowered.startswith("text/") or lowered == "application/xml":
        if _json.is_text(event):
            return event.encode("utf-8")
        raise ValueError(f"error: mismatch between contentType {content_type} and event")
    if lowered == "application/octet-stream":
        if _json.is_text(event):
            try:
                return base64.b64decode(event, validate=True)
            except ValueError as exc:
                raise ValueError(f"error decoding base64 event: {exc}") from None
        raise ValueError(f"error: mismatch between contentType {content_type} and event")
    raise ValueError(f"error: unsupported content type {content_type!r} for bulk publish")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _json_response(value: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(_jsonable(value), ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type="application/json",
    )


def _span(request: Request) -> Span | None:
    span = request.scope.get("state", {}).get(_SPAN)
    return span if isinstance(span, Span) else None


def _annotate(request: Request, name: str | None = None, **attributes: str) -> None:
    span = _span(request)
    if span is None:
        return
    if name is not None:
        span.update_name(name)
    span.set_attributes(attributes)


async def _send_plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _ApiMiddleware:
    """daprd's HTTP middleware: the API token check, then a CLIENT span per API call.

    The span's context is added to the response unless it has a `traceparent`; healthz is
    neither checked nor traced.
    """

    def __init__(self, app: ASGIApp, *, sidecar: Sidecar):
        self.app = app
        self.sidecar = sidecar

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if "/healthz" in path:
            await self.app(scope, receive, send)
            return
        token = self.sidecar.api_token
        if token is not None:
            given = next((v for k, v in scope["headers"] if k == b"dapr-api-token"), None)
            if given is None or given.decode("latin-1") != token:
                await _send_plain(send, 401, "invalid api token\n")
                return
            # daprd removes the token once checked: it is not forwarded to other apps.
            scope = dict(
                scope, headers=[(k, v) for k, v in scope["headers"] if k != b"dapr-api-token"]
            )
        tracing = self.sidecar.tracing
        if not tracing.enabled or path.startswith("/emulator/"):
            await self.app(scope, receive, send)
            return
        raw: RawHeaders = scope["headers"]
        # Go's `Header.Get`: the first of repeated headers counts.
        parent = parse_traceparent(first_value(raw, "traceparent"), first_value(raw, "tracestate"))
        span = tracing.start_span(path, SpanKind.CLIENT, parent)
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), _SPAN: span}
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = MutableHeaders(scope=message)
                if "traceparent" not in response_headers:
                    for name, value in trace_headers(span).items():
                        response_headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception as exc:
            span.record_exception(exc)
            SidecarTracing.end_span(span, 500)
            raise
        span.set_attributes(
            {
                "dapr.api": f"{scope['method']} {path}",
                "dapr.protocol": "http",
                "dapr.status_code": str(status),
            }
        )
        SidecarTracing.end_span(span, status)


class Sidecar:
    """An emulated Dapr sidecar (daprd) for one app, with its own spans.

    It serves the Dapr HTTP API (pub/sub, service invocation, jobs, state, health, metadata)
    and delivers messages and job triggers to the app.

    Serve `asgi` (uvicorn, or `httpx.ASGITransport` in tests), then `await start()`: it waits
    for the app, reads its `GET /dapr/subscribe` (with daprd's start-up retries) and starts
    delivering. `stop()` cancels everything and flushes the spans. Used as `async with`.

    Args:
        app_id: The app's id (`--app-id`); also the consumer group and the spans' service name.
        broker: The broker and name resolution shared with the other sidecars of the process
            (default: a new one, for this sidecar alone).
        app_port: The app's port on `app_host` (`--app-port`).
        app_transport: How to reach the app instead of a port, e.g.
            `httpx.ASGITransport(app=app)` in tests.
        app_host: The app's host (daprd: `127.0.0.1`).
        dapr_http_port: The port this sidecar is served on, for `client()` and logs.
        sampling_rate: Tracing `samplingRate`: 0 turns tracing off (no spans; trace headers
            pass through), 1 samples every trace; the parent's decision always wins.
        api_token: `DAPR_API_TOKEN`: when set, API calls without this `dapr-api-token` get 401.
        app_api_token: `APP_API_TOKEN`: sent to the app as `dapr-api-token` on every request.
        retry_policy: The pub/sub inbound resiliency retry policy. None (the default, as daprd
            without a Resiliency resource): one attempt per delivery.
        span_exporter: Where the sidecar's spans go (an `InMemorySpanExporter` in tests).
        tracer_provider: A provider to use instead of the sidecar's own (you shut it down).
        pubsubs: The pub/sub components (Kafka, on the shared broker).
        state_stores: The state store components (in memory, per sidecar).
        runtime_version: The daprd version emulated: below 1.18 there is no stable Jobs API
            (`/v1.0/jobs` answers 404), below 1.17 a 404 from the app is dropped without
            dead-lettering and `cloudevent.subject` is ignored.
        startup_retry: Retries of `GET /dapr/subscribe` while the app cannot be reached (daprd:
            exponential from 0.5 s, 3 retries).
        app_timeout: Seconds before a request to the app gives up.
    """

    def __init__(
        self,
        app_id: str,
        *,
        broker: Broker | None = None,
        app_port: int | None = None,
        app_transport: httpx.AsyncBaseTransport | None = None,
        app_host: str = "127.0.0.1",
        dapr_http_port: int | None = None,
        sampling_rate: float = 1.0,
        api_token: str | None = None,
        app_api_token: str | None = None,
        retry_policy: RetryPolicy | None = None,
        span_exporter: SpanExporter | None = None,
        tracer_provider: TracerProvider | None = None,
        pubsubs: Sequence[str] = ("pubsub",),
        state_stores: Sequence[str] = ("statestore",),
        runtime_version: str = "1.18.3",
        startup_retry: RetryPolicy | None = None,
        app_timeout: float = 60.0,
    ):
        if not app_id:
            raise ConfigurationError("A sidecar needs an app id.", field="app_id", value=app_id)
        if app_port is None and app_transport is None:
            raise ConfigurationError(
                f"Sidecar {app_id!r} needs app_port or app_transport to reach its app.",
                field="app_port",
            )
        if not 0 <= sampling_rate <= 1:
            raise ConfigurationError(
                f"sampling_rate must be between 0 and 1, got {sampling_rate!r}.",
                field="sampling_rate",
                value=sampling_rate,
            )
        self.app_id = app_id
        self.broker = broker if broker is not None else Broker()
        self.app_port = app_port
        self.app_host = app_host
        self.dapr_http_port = dapr_http_port
        self.api_token = api_token
        self.app_api_token = app_api_token
        self.retry_policy = retry_policy
        self.runtime_version = runtime_version
        self.pubsubs = tuple(pubsubs)
        self.tracing = SidecarTracing(
            app_id, sampling_rate, exporter=span_exporter, tracer_provider=tracer_provider
        )
        #: daprd's metrics of this sidecar; `metrics.registry` is what its metrics port serves.
        self.metrics = DaprMetrics(app_id)
        self.span_exporter = span_exporter
        self._app_transport = app_transport
        self._app_timeout = app_timeout
        self.startup_retry = startup_retry or RetryPolicy.exponential(0.5, max_retries=3)
        self._version = _version(runtime_version)
        self._state = {name: StateStore(name) for name in state_stores}
        self._log = _AppIdAdapter(
            logging.getLogger("todo_observability.sidecar"), {"app_id": app_id}
        )
        self._client: httpx.AsyncClient | None = None
        self._app_ready = asyncio.Event()
        self._ready = False
        self._started = False
        self._closed = False
        self._app_down = False
        self._publish_faults: list[tuple[int, str]] = []
        self._extended: dict[str, str] = {}
        self._consumers: list[Consumer] = []
        self._subscriptions: list[Subscription] = []
        self.subscription_errors: list[str] = []
        self._attempts: list[DeliveryAttempt] = []
        self._results: list[MessageResult] = []
        self._triggers: list[JobTrigger] = []
        self._published: list[Record] = []
        self._jobs = JobScheduler(
            JobContext(
                app_id=app_id,
                app_api_token=app_api_token,
                call_app=self._call_app,
                app_ready=self._app_ready,
                record=self._record_trigger,
                notify_change=self.broker.notify_change,
                log=self._log,
            )
        )
        self.asgi: Starlette = self._build_app()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether start-up is done (subscriptions read): `/v1.0/healthz` answers 204."""
        return self._ready

    async def start(self) -> None:
        """Connect to the app, read its subscriptions and start delivering.

        Like daprd, it first waits for the app's port to accept connections (for ever), then
        asks `GET /dapr/subscribe`, retried while the app cannot be reached. An answer that
        cannot be read is logged and leaves the app without subscriptions.

        Raises:
            ConfigurationError: another running sidecar on the broker has the same app id.
        """
        if self._started:
            return
        if self._closed:
            raise RuntimeError(
                f"sidecar {self.app_id!r} was stopped: its spans are flushed and its provider "
                "shut down; start a new Sidecar (on the same broker, it resumes the app's offsets)"
            )
        self.broker.register(self)
        self._started = True
        self._client = self._make_client()
        try:
            await self._wait_for_app()
            self._app_ready.set()
            self._subscriptions = await self._load_subscriptions()
            for subscription in self._subscriptions:
                consumer = Consumer(self._delivery_context(), subscription)
                self._consumers.append(consumer)
                consumer.start()
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        self._log.info(
            "sidecar ready: %d subscription(s): %s",
            len(self._subscriptions),
            ", ".join(f"{s.pubsub}/{s.topic}" for s in self._subscriptions) or "none",
        )
        self.broker.notify_change()

    async def stop(self) -> None:
        """Stop delivering, cancel jobs, close the app client, flush and shut down the spans."""
        self._ready = False
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()
        await self._jobs.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._app_ready.clear()
        if self._started:
            self.broker.unregister(self)
            self._started = False
        if not self._closed:
            self._closed = True
            self.tracing.shutdown()

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` calling this sidecar's API in process (close it after use)."""
        kwargs.setdefault("base_url", f"http://127.0.0.1:{self.dapr_http_port or 3500}")
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.asgi), **kwargs)

    # --- what tests look at ---------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions read from the app."""
        return list(self._subscriptions)

    @property
    def deliveries(self) -> list[DeliveryAttempt]:
        """Every delivery attempt, in order."""
        return list(self._attempts)

    @property
    def results(self) -> list[MessageResult]:
        """What became of each message delivered to this app, in order."""
        return list(self._results)

    @property
    def job_triggers(self) -> list[JobTrigger]:
        """Every job trigger request, in order."""
        return list(self._triggers)

    @property
    def published(self) -> list[Record]:
        """The records published through this sidecar's API (not dead-letter republishes)."""
        return list(self._published)

    @property
    def tracer_provider(self) -> TracerProvider:
        """The sidecar's tracer provider."""
        return self.tracing.provider

    def clear_records(self) -> None:
        """Forget the recorded attempts, results, triggers and publishes."""
        self._attempts.clear()
        self._results.clear()
        self._triggers.clear()
        self._published.clear()
        self.broker.notify_change()

    def busy(self) -> list[str]:
        """What this sidecar is doing or has due (empty when idle)."""
        items = [item for consumer in self._consumers for item in consumer.busy()]
        return items + self._jobs.busy()

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until the whole emulator is idle (`Broker.idle`)."""
        await self.broker.idle(timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` is true (`Broker.wait_for`)."""
        await self.broker.wait_for(predicate, timeout)

    # --- faults ---------------------------------------------------------------------------------

    def fail_next_publishes(
        self,
        count: int = 1,
        status: int = 500,
        message: str = "kafka: client has run out of available brokers",
    ) -> None:
        """Make the pub/sub component fail this sidecar's next `count` publishes.

        API publishes answer `status` with `ERR_PUBSUB_PUBLISH_MESSAGE`; a dead-letter
        republish fails (the message is then redelivered).
        """
        self._publish_faults.extend([(status, message)] * count)

    def set_app_down(self, down: bool = True) -> None:
        """Take the app down (requests to it fail as if refused), or bring it back."""
        self._app_down = down
        self._log.warning("app %s", "taken down (emulated)" if down else "back up")
        self.broker.notify_change()

    # --- recording --------------------------------------------------------------------------------

    def _record_attempt(self, attempt: DeliveryAttempt) -> None:
        self._attempts.append(attempt)
        self.metrics.delivery_attempt(attempt)
        self.broker.notify_change()

    def _record_result(self, result: MessageResult) -> None:
        self._results.append(result)
        self.broker.notify_change()

    def _record_trigger(self, trigger: JobTrigger) -> None:
        self._triggers.append(trigger)
        self.metrics.job_trigger(trigger)
        self.broker.notify_change()

    # --- the app channel ------------------------------------------------------------------------

    def _make_client(self) -> httpx.AsyncClient:
        port = f":{self.app_port}" if self.app_port else ""
        client = httpx.AsyncClient(
            transport=self._app_transport,
            base_url=f"http://{self.app_host}{port}",
            timeout=self._app_timeout,
        )
        # Look like daprd's Go client, not like httpx.
        for name in ("accept", "accept-encoding", "connection"):
            del client.headers[name]
        client.headers["user-agent"] = "Go-http-client/1.1"
        return client

    async def _call_app(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | RawHeaders,
        body: bytes,
        *,
        raw_path: bytes | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        if self._app_down:
            raise httpx.ConnectError(
                f"dial tcp {self.app_host}:{self.app_port or 80}: connect: connection refused "
                "(the app is down: emulated fault)"
            )
        client = self._client
        if client is None:
            raise httpx.ConnectError("the sidecar is not started")
        url = client.base_url.copy_with(raw_path=raw_path) if raw_path is not None else path
        request = client.build_request(method, url, headers=_encode_headers(headers), content=body)
        start = time.perf_counter()
        response = await client.send(request, stream=stream)
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.metrics.app_request(method, request.url.path, response.status_code, elapsed_ms)
        return response

    async def _wait_for_app(self) -> None:
        if self._app_transport is not None or not self.app_port:
            return
        logged = False
        while not self._app_down:
            try:
                _, writer = await asyncio.open_connection(self.app_host, self.app_port)
            except OSError:
                if not logged:
                    self._log.info("waiting for the app on %s:%d", self.app_host, self.app_port)
                    logged = True
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def _load_subscriptions(self) -> list[Subscription]:
        headers = {"dapr-app-id": self.app_id}
        if self.app_api_token is not None:
            headers["dapr-api-token"] = self.app_api_token
        policy, retries = self.startup_retry, 0
        while True:
            try:
                response = await self._call_app("GET", "/dapr/subscribe", headers, b"")
                break
            except httpx.HTTPError as exc:
                if policy.allows_retry(retries):
                    await asyncio.sleep(policy.interval(retries))
                    retries += 1
                    continue
                return self._subscription_error(f"failed to get subscriptions from the app: {exc}")
        if response.status_code == 404:
            self._log.debug("the app has no subscriptions (GET /dapr/subscribe answered 404)")
            return []
        if response.status_code != 200:
            return self._subscription_error(
                f"app returned http status code {response.status_code} from subscription endpoint"
            )
        try:
            subscriptions, warnings = parse_subscriptions(response.content, self.pubsubs)
        except SubscriptionError as exc:
            return self._subscription_error(str(exc))
        except ValueError as exc:
            return self._subscription_error(f"error getting topics from app: {exc}")
        for warning in warnings:
            self._log.warning("%s", warning)
            self.subscription_errors.append(warning)
        return subscriptions

    def _subscription_error(self, message: str) -> list[Subscription]:
        self._log.error("%s", message)
        self.subscription_errors.append(message)
        return []

    def _delivery_context(self) -> DeliveryContext:
        return DeliveryContext(
            app_id=self.app_id,
            broker=self.broker,
            tracing=self.tracing,
            retry_policy=self.retry_policy,
            dead_letter_on_404=self._version >= (1, 17),
            app_api_token=self.app_api_token,
            call_app=self._call_app,
            publish=self._publish_internal,
            record_attempt=self._record_attempt,
            record_result=self._record_result,
            log=self._log,
        )

    def _publish_internal(
        self, pubsub: str, topic: str, data: bytes, metadata: Mapping[str, str]
    ) -> Record:
        start = time.perf_counter()
        success = False
        try:
            record = self._produce(pubsub, topic, data, metadata)
            success = True
            return record
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            self.metrics.publish(pubsub, topic, success=success, elapsed_ms=elapsed_ms)

    def _produce(self, pubsub: str, topic: str, data: bytes, metadata: Mapping[str, str]) -> Record:
        if self._publish_faults:
            status, message = self._publish_faults.pop(0)
            raise DaprApiError(
                status,
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                f"error when publishing to topic {topic} in pubsub {pubsub}: {message}",
                reason="DAPR_PUBSUB_PUBLISH_MESSAGE",
                resource=("pubsub", pubsub),
            )
        try:
            return self.broker.produce(pubsub, topic, data, metadata)
        except ValueError as exc:
            raise DaprApiError.publish_message(pubsub, topic, str(exc)) from None

    # --- the API --------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        jobs = [
            Route("/v1.0-alpha1/jobs/{name}", self._job_schedule, methods=["POST"]),
            Route("/v1.0-alpha1/jobs/{name}", self._job_get, methods=["GET"]),
            Route("/v1.0-alpha1/jobs/{name}", self._job_delete, methods=["DELETE"]),
        ]
        if self._version >= (1, 18):
            jobs += [
                Route("/v1.0/jobs/{name}", self._job_schedule, methods=["POST"]),
                Route("/v1.0/jobs/{name}", self._job_get, methods=["GET"]),
                Route("/v1.0/jobs/{name}", self._job_delete, methods=["DELETE"]),
            ]
        routes = [
            Route("/v1.0/healthz", self._healthz, methods=["GET"]),
            Route("/v1.0/healthz/outbound", self._healthz_outbound, methods=["GET"]),
            Route("/v1.0/metadata", self._metadata, methods=["GET"]),
            Route("/v1.0/metadata/{key}", self._put_metadata, methods=["PUT"]),
            # Before the plain publish route, which would take `bulk` for a component name.
            Route(
                "/v1.0-alpha1/publish/bulk/{pubsub}/{topic:path}",
                self._bulk_publish,
                methods=["POST", "PUT"],
            ),
            Route(
                "/v1.0/publish/bulk/{pubsub}/{topic:path}",
                self._bulk_publish,
                methods=["POST", "PUT"],
            ),
            Route("/v1.0/publish/{pubsub}/{topic:path}", self._publish, methods=["POST", "PUT"]),
            Route("/v1.0/invoke/{target:path}", self._invoke_path, methods=_ALL_METHODS),
            Route("/v1.0/state/{store}", self._state_save, methods=["POST", "PUT"]),
            Route("/v1.0/state/{store}/bulk", self._state_bulk, methods=["POST", "PUT"]),
            Route(
                "/v1.0/state/{store}/transaction", self._state_transaction, methods=["POST", "PUT"]
            ),
            Route("/v1.0/state/{store}/{key}", self._state_get, methods=["GET"]),
            Route("/v1.0/state/{store}/{key}", self._state_delete, methods=["DELETE"]),
            *jobs,
            Route("/emulator/v1/deliveries", self._emu_deliveries, methods=["GET"]),
            Route("/emulator/v1/results", self._emu_results, methods=["GET"]),
            Route("/emulator/v1/published", self._emu_published, methods=["GET"]),
            Route("/emulator/v1/jobs/triggers", self._emu_triggers, methods=["GET"]),
            Route("/emulator/v1/topics/{pubsub}/{topic:path}", self._emu_topic, methods=["GET"]),
            Route("/emulator/v1/faults/publish", self._emu_fault_publish, methods=["POST"]),
            Route("/emulator/v1/faults/app", self._emu_fault_app, methods=["POST"]),
            Route("/emulator/v1/idle", self._emu_idle, methods=["POST"]),
            Route("/emulator/v1/records", self._emu_clear, methods=["DELETE"]),
            Route("/{path:path}", self._fallback, methods=_ALL_METHODS),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(GoServerHeaders),
                Middleware(MetricsMiddleware, metrics=self.metrics),
                Middleware(_ApiMiddleware, sidecar=self),
            ],
            exception_handlers={DaprApiError: self._on_api_error},
        )

    @staticmethod
    async def _on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DaprApiError)
        return exc.response()

    async def _fallback(self, request: Request) -> Response:
        # daprd invokes another app for any unrouted path carrying `dapr-app-id`.
        target = request.headers.get("dapr-app-id")
        if not target:
            return Response(b"404 page not found\n", 404, media_type="text/plain; charset=utf-8")
        raw = _raw_path(request.scope)
        cleaned = posixpath.normpath(raw) if raw else "/"
        if raw.endswith("/") and cleaned != "/":
            cleaned += "/"
        return await self._invoke(request, target, cleaned.lstrip("/"))

    # --- health and metadata --------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        app_id = request.query_params.get("appid")
        if app_id and app_id != self.app_id:
            raise DaprApiError.health_app_id_mismatch()
        if not self._ready:
            raise DaprApiError.health_not_ready(["app"])
        return Response(status_code=204)

    async def _healthz_outbound(self, request: Request) -> Response:
        return Response(status_code=204)

    async def _metadata(self, request: Request) -> Response:
        components = [
            _json.Struct(
                name=name,
                type=_PUBSUB_TYPE[0],
                version=_PUBSUB_TYPE[1],
                capabilities=_PUBSUB_TYPE[2],
            )
            for name in self.pubsubs
        ] + [
            _json.Struct(
                name=name, type=_STATE_TYPE[0], version=_STATE_TYPE[1], capabilities=_STATE_TYPE[2]
            )
            for name in self._state
        ]
        body = _json.Struct(id=self.app_id, runtimeVersion=self.runtime_version)
        if components:
            body["components"] = components
        if self._subscriptions:
            body["subscriptions"] = [s.as_metadata() for s in self._subscriptions]
        body["extended"] = {"daprRuntimeVersion": self.runtime_version, **self._extended}
        connection = _json.Struct()
        if self.app_port:
            connection["port"] = self.app_port
        connection["protocol"] = "http"
        connection["channelAddress"] = self.app_host
        body["appConnectionProperties"] = connection
        return Response(_json.dumps(body), media_type="application/json")

    async def _put_metadata(self, request: Request) -> Response:
        self._extended[request.path_params["key"]] = (await request.body()).decode(
            "utf-8", "replace"
        )
        return Response(status_code=204)

    # --- publish --------------------------------------------------------------------------------

    async def _publish(self, request: Request) -> Response:
        pubsub: str = request.path_params["pubsub"]
        topic: str = request.path_params["topic"]
        metadata = _metadata_from_query(request)
        if pubsub not in self.pubsubs:
            raise DaprApiError.pubsub_not_found(pubsub)
        if not topic:
            raise DaprApiError.topic_empty(pubsub)
        _annotate(request, **{"messaging.system": "pubsub", "messaging.destination.name": topic})
        body = await request.body()
        try:
            raw_payload = (
                parse_bool(metadata["rawPayload"]) if metadata.get("rawPayload") else False
            )
        except ValueError as exc:
            raise DaprApiError.pubsub_metadata(pubsub, str(exc)) from None
        data = body
        if not raw_payload:
            data = self._envelope(
                pubsub=pubsub,
                topic=topic,
                body=body,
                content_type=request.headers.get("content-type", ""),
                metadata=metadata,
                span=_span(request),
            )
        record = self._publish_internal(pubsub, topic, data, metadata)
        self._published.append(record)
        self._log.debug(
            "published %s/%s[%d] offset %d", pubsub, topic, record.partition, record.offset
        )
        return Response(status_code=204)

    def _envelope(
        self,
        *,
        pubsub: str,
        topic: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        span: Span | None,
    ) -> bytes:
        """The CloudEvent daprd stores for a publish, as bytes."""
        traceparent = format_traceparent(span.get_span_context()) if span else ""
        tracestate = format_tracestate(span.get_span_context()) if span else ""
        now = datetime.now(timezone.utc)
        try:
            if _cloudevents.is_cloud_event(content_type):
                event = _cloudevents.from_cloud_event(
                    body=body,
                    topic=topic,
                    pubsub=pubsub,
                    traceparent=traceparent,
                    tracestate=tracestate,
                    now=now,
                )
            else:
                event = _cloudevents.new_cloud_event(
                    body=body,
                    content_type=content_type,
                    source=self.app_id,
                    topic=topic,
                    pubsub=pubsub,
                    traceparent=traceparent,
                    tracestate=tracestate,
                    metadata=metadata,
                    now=now,
                    allow_subject=self._version >= (1, 17),
                )
        except ValueError:
            raise DaprApiError.cloud_event_creation(pubsub) from None
        _cloudevents.apply_ttl(event, metadata, now)
        return _json.dumps(event)

    async def _bulk_publish(self, request: Request) -> Response:
        pubsub: str = request.path_params["pubsub"]
        topic: str = request.path_params["topic"]
        metadata = _metadata_from_query(request)
        if pubsub not in self.pubsubs:
            raise DaprApiError.pubsub_not_found(pubsub)
        if not topic:
            raise DaprApiError.topic_empty(pubsub)
        _annotate(request, **{"messaging.system": "pubsub", "messaging.destination.name": topic})
        try:
            raw_payload = (
                parse_bool(metadata["rawPayload"]) if metadata.get("rawPayload") else False
            )
        except ValueError as exc:
            raise DaprApiError.pubsub_metadata(pubsub, str(exc)) from None
        try:
            entries = _json.unmarshal(await request.body(), _json.BULK_PUBLISH_ENTRIES, stream=True)
        except _json.GoTypeError as exc:
            raise DaprApiError.bulk_unmarshal(pubsub, topic, str(exc)) from None
        prepared: list[tuple[str, bytes, dict[str, str], str]] = []
        seen: set[str] = set()
        for entry in entries or []:
            entry_id, content_type = entry["entryId"], entry["contentType"]
            try:
                data = _bulk_entry_bytes(entry["event"], content_type)
            except ValueError as exc:
                raise DaprApiError.bulk_marshal_envelope(pubsub, topic, str(exc)) from None
            if not entry_id or entry_id in seen:
                raise DaprApiError.bulk_marshal_events(
                    pubsub, topic, "entryId is duplicated or not present for entry"
                )
            seen.add(entry_id)
            merged = dict(metadata)
            merged.update(entry["metadata"] or {})
            prepared.append((entry_id, data, merged, content_type))
        request_span = _span(request)
        failed: list[dict[str, str]] = []
        for entry_id, data, entry_metadata, content_type in prepared:
            # daprd starts a PRODUCER span per entry, child of the request's span.
            span = (
                self.tracing.start_span(
                    request.url.path, SpanKind.PRODUCER, request_span.get_span_context()
                )
                if request_span is not None
                else None
            )
            status = 204
            try:
                value = (
                    data
                    if raw_payload
                    else self._envelope(
                        pubsub=pubsub,
                        topic=topic,
                        body=data,
                        content_type=content_type,
                        metadata=entry_metadata,
                        span=span,
                    )
                )
                self._published.append(self._publish_internal(pubsub, topic, value, entry_metadata))
            except DaprApiError as exc:
                status = exc.status
                failed.append(_json.Struct(entryId=entry_id, error=exc.message))
            finally:
                if span is not None:
                    SidecarTracing.end_span(span, status)
        if failed:
            body = _json.Struct(failedEntries=failed, errorCode="ERR_PUBSUB_PUBLISH_MESSAGE")
            return Response(_json.dumps(body), status_code=500, media_type="application/json")
        return Response(status_code=204)

    # --- service invocation ---------------------------------------------------------------------

    async def _invoke_path(self, request: Request) -> Response:
        rest = _raw_path(request.scope)[len("/v1.0/invoke/") :]
        index = rest.find("/method/")
        if index <= 0:
            raise DaprApiError.direct_invoke_no_app_id()
        target = urllib.parse.unquote(rest[:index])
        return await self._invoke(request, target, rest[index + len("/method/") :])

    async def _invoke(self, request: Request, target: str, method: str) -> Response:
        _annotate(
            request,
            f"CallLocal/{target}/{method}",
            **{"rpc.service": "ServiceInvocation", "net.peer.name": target},
        )
        callee = self.broker.resolve(target)
        if callee is None or not callee.ready:
            raise DaprApiError.direct_invoke(target, f"couldn't find service: {target}")
        headers: RawHeaders = [
            (name, value)
            for name, value in request.headers.raw
            if name not in _NOT_FORWARDED_TO_CALLEE
        ]
        span = _span(request)
        if span is not None:
            # The caller sidecar sends its own span's context to the callee sidecar.
            headers = [(n, v) for n, v in headers if n not in (b"traceparent", b"tracestate")]
            headers += [(n.encode(), v.encode()) for n, v in trace_headers(span).items()]
        try:
            status, response_headers, body = await callee.handle_invocation(
                caller=self.app_id,
                verb=request.method,
                method=method,
                query=request.scope.get("query_string", b""),
                headers=headers,
                body=await request.body(),
            )
        except httpx.HTTPError as exc:
            raise DaprApiError.direct_invoke(
                target, f"error invoking app channel: {str(exc) or type(exc).__name__}"
            ) from None
        response = Response(body, status_code=status)
        response.raw_headers.extend(response_headers)
        return response

    async def handle_invocation(
        self,
        *,
        caller: str,
        verb: str,
        method: str,
        query: bytes,
        headers: RawHeaders,
        body: bytes,
    ) -> tuple[int, RawHeaders, bytes]:
        """Serve an invocation from another sidecar (daprd's internal `CallLocal`).

        A SERVER span, then the request to this sidecar's app with that span's `traceparent`.

        Returns:
            The app's status, headers (hop-by-hop and length left out) and raw body.

        Raises:
            httpx.HTTPError: the app could not be reached.
        """
        span: Span | None = None
        # daprd carries the caller's headers as metadata and sets the first value of each.
        forwarded = first_values(headers)
        if self.tracing.enabled:
            parent = parse_traceparent(
                first_value(forwarded, "traceparent"), first_value(forwarded, "tracestate")
            )
            span = self.tracing.start_span(
                f"CallLocal/{self.app_id}/{method}",
                SpanKind.SERVER,
                parent,
                {"rpc.service": "ServiceInvocation", "dapr.caller.app_id": caller},
            )
            # Set after copying the headers: the callee sidecar's span wins over any forwarded one.
            forwarded = [(n, v) for n, v in forwarded if n not in (b"traceparent", b"tracestate")]
            forwarded += [(n.encode(), v.encode()) for n, v in trace_headers(span).items()]
        forwarded = [
            (n, v)
            for n, v in forwarded
            if n not in (b"dapr-caller-app-id", b"dapr-callee-app-id", b"dapr-api-token")
        ]
        forwarded += [
            (b"dapr-caller-app-id", caller.encode()),
            (b"dapr-callee-app-id", self.app_id.encode()),
        ]
        if self.app_api_token is not None:
            forwarded.append((b"dapr-api-token", self.app_api_token.encode()))
        raw_path = b"/" + method.encode("latin-1")
        if query:
            raw_path += b"?" + query
        try:
            response = await self._call_app(
                verb, "", forwarded, body, raw_path=raw_path, stream=True
            )
            try:
                content = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            if span is not None:
                SidecarTracing.end_span(span, None, str(exc) or type(exc).__name__)
            raise
        if span is not None:
            SidecarTracing.end_span(span, response.status_code)
        # Only the first value of a repeated response header reaches the caller (see _gohttp).
        response_headers = [
            (n, v)
            for n, v in first_values(response.headers.raw)
            if n not in _HOP_BY_HOP and n != b"content-length"
        ]
        return response.status_code, response_headers, content

    # --- state ----------------------------------------------------------------------------------

    def _store(self, request: Request) -> StateStore:
        name: str = request.path_params["store"]
        store = self._state.get(name)
        if store is None:
            raise DaprApiError.state_store_not_found(name)
        _annotate(request, **{"db.system": "state", "db.name": name})
        return store

    @staticmethod
    def _check_key(store: StateStore, key: str) -> None:
        if "||" in key:
            raise DaprApiError.state_illegal_key(store.name, key)

    @staticmethod
    async def _decode(request: Request, target: _json.GoType) -> Any:
        """The body as daprd's `json.NewDecoder(body).Decode` reads it into `target`."""
        try:
            return _json.unmarshal(await request.body(), target, stream=True)
        except _json.GoTypeError as exc:
            raise DaprApiError.malformed_request(str(exc)) from None

    @staticmethod
    def _ttl(metadata: Mapping[str, str] | None, query: Mapping[str, str]) -> float | None:
        # Query metadata is merged over the request's own (daprd: query keys win).
        text = query.get("ttlInSeconds", (metadata or {}).get("ttlInSeconds"))
        try:
            seconds = int(text) if text is not None else 0
        except ValueError:
            return None
        return float(seconds) if seconds > 0 else None

    def _operation(
        self, store: StateStore, kind: str, item: Mapping[str, Any], query: Mapping[str, str]
    ) -> Operation:
        """A decoded `state.SetRequest` (or `DeleteRequest`) as a write."""
        key: str = item["key"]
        if not key:
            raise DaprApiError(400, "ERR_MALFORMED_REQUEST", '"key" is a required field')
        self._check_key(store, key)
        options = item["options"]
        return Operation(
            kind=kind,
            key=key,
            value=_json.dumps(item["value"]) if kind == "upsert" else b"",
            etag=item["etag"] or None,
            first_write=(options.get("Concurrency") or options.get("concurrency")) == "first-write",
            ttl=self._ttl(item["metadata"], query),
        )

    async def _state_save(self, request: Request) -> Response:
        store = self._store(request)
        try:
            items = _json.unmarshal(await request.body(), _json.STATE_SET_REQUESTS, stream=True)
        except _json.GoTypeError as exc:
            # daprd answers the decoder's own message here, without a prefix.
            raise DaprApiError(400, "ERR_MALFORMED_REQUEST", str(exc)) from None
        query = _metadata_from_query(request)
        operations = [self._operation(store, "upsert", item, query) for item in items or []]
        try:
            for operation in operations:
                store.write(operation)
        except ETagMismatchError as exc:
            raise DaprApiError(
                409, "ERR_STATE_SAVE", f"failed saving state in state store {store.name}: {exc}"
            ) from None
        except ETagInvalidError as exc:
            raise DaprApiError(
                400, "ERR_STATE_SAVE", f"failed saving state in state store {store.name}: {exc}"
            ) from None
        return Response(status_code=204)

    async def _state_get(self, request: Request) -> Response:
        store = self._store(request)
        key: str = request.path_params["key"]
        self._check_key(store, key)
        found = store.get(key)
        if found is None:
            return Response(status_code=204)
        value, etag, expires = found
        response = Response(value, media_type="application/json")
        response.headers["ETag"] = etag
        if expires is not None:
            moment = datetime.fromtimestamp(expires, timezone.utc)
            response.headers["metadata.ttlExpireTime"] = moment.isoformat().replace("+00:00", "Z")
        return response

    async def _state_delete(self, request: Request) -> Response:
        store = self._store(request)
        key: str = request.path_params["key"]
        self._check_key(store, key)
        operation = Operation(
            kind="delete",
            key=key,
            etag=request.headers.get("if-match") or None,
            first_write=request.query_params.get("concurrency") == "first-write",
        )
        try:
            store.write(operation)
        except ETagMismatchError as exc:
            raise DaprApiError(
                409, "ERR_STATE_DELETE", f"failed deleting state with key {key}: {exc}"
            ) from None
        except ETagInvalidError as exc:
            raise DaprApiError(
                400, "ERR_STATE_DELETE", f"failed deleting state with key {key}: {exc}"
            ) from None
        return Response(status_code=204)

    async def _state_bulk(self, request: Request) -> Response:
        store = self._store(request)
        body = await self._decode(request, _json.BULK_GET_REQUEST)
        answers: list[dict[str, Any]] = []
        for key in body["keys"] or []:
            self._check_key(store, key)
            found = store.get(key)
            if found is None:
                answers.append(_json.Struct(key=key))
            else:
                answers.append(_json.Struct(key=key, data=_json.loads(found[0]), etag=found[1]))
        # daprd writes it with a `json.Encoder`, which ends the document with a newline.
        return Response(_json.dumps(answers) + b"\n", media_type="application/json")

    async def _state_transaction(self, request: Request) -> Response:
        store = self._store(request)
        body = await self._decode(request, _json.TRANSACTION_REQUEST)
        query = _metadata_from_query(request)
        operations: list[Operation] = []
        for item in body["operations"] or []:
            kind = item["operation"]
            if kind not in ("upsert", "delete"):
                raise DaprApiError(
                    400, "ERR_NOT_SUPPORTED_STATE_OPERATION", f"operation type {kind} not supported"
                )
            target = _json.SET_REQUEST if kind == "upsert" else _json.DELETE_REQUEST
            try:
                # daprd reads each request with mapstructure: Go field names, any letter case.
                decoded = _json.map_decode(item["request"], target)
            except _json.GoTypeError as exc:
                raise DaprApiError.malformed_request(str(exc)) from None
            decoded.setdefault("value", None)
            operations.append(self._operation(store, kind, decoded, query))
        try:
            store.transact(operations)
        except (ETagMismatchError, ETagInvalidError) as exc:
            raise DaprApiError(
                500, "ERR_STATE_TRANSACTION", f"error while executing state transaction: {exc}"
            ) from None
        return Response(status_code=204)

    # --- jobs -------------------------------------------------------------------------------------

    async def _job_schedule(self, request: Request) -> Response:
        name, spec = parse_job_request(
            request.path_params["name"], await request.body(), self.app_id
        )
        self._jobs.schedule(name, spec)
        return Response(status_code=204)

    async def _job_get(self, request: Request) -> Response:
        job = self._jobs.get(request.path_params["name"])
        return Response(_json.dumps(job), media_type="application/json")

    async def _job_delete(self, request: Request) -> Response:
        self._jobs.delete(request.path_params["name"])
        return Response(status_code=204)

    # --- emulator control (/emulator/v1) ------------------------------------------------------

    async def _emu_deliveries(self, request: Request) -> Response:
        return _json_response(self._attempts)

    async def _emu_results(self, request: Request) -> Response:
        return _json_response(self._results)

    async def _emu_published(self, request: Request) -> Response:
        return _json_response(self._published)

    async def _emu_triggers(self, request: Request) -> Response:
        return _json_response(self._triggers)

    async def _emu_topic(self, request: Request) -> Response:
        pubsub, topic = request.path_params["pubsub"], request.path_params["topic"]
        return _json_response(self.broker.messages(pubsub, topic))

    async def _emu_body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise DaprApiError.malformed_request(str(exc)) from None
        if not isinstance(body, dict):
            raise DaprApiError.malformed_request("expected a JSON object")
        return body

    async def _emu_fault_publish(self, request: Request) -> Response:
        body = await self._emu_body(request)
        self.fail_next_publishes(
            int(body.get("count", 1)),
            int(body.get("status", 500)),
            str(body.get("message", "kafka: client has run out of available brokers")),
        )
        return Response(status_code=204)

    async def _emu_fault_app(self, request: Request) -> Response:
        body = await self._emu_body(request)
        self.set_app_down(bool(body.get("down", True)))
        return Response(status_code=204)

    async def _emu_idle(self, request: Request) -> Response:
        timeout = float(request.query_params.get("timeout", "10"))
        try:
            await self.broker.idle(timeout)
        except TimeoutError:
            return _json_response({"busy": self.broker.busy()}, 504)
        return Response(status_code=204)

    async def _emu_clear(self, request: Request) -> Response:
        self.clear_records()
        return Response(status_code=204)
