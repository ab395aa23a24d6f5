"""An async client of the Dapr sidecar's HTTP API that carries the trace and the correlation ids.

Every call sends `traceparent`/`tracestate`, `baggage` with `request_id` and
`user_id`, the request id header and `dapr-api-token` (when `DAPR_API_TOKEN` is
set). On top of that:

- `publish` runs in a PRODUCER span `<topic> publish` and also passes that
  span's context as `metadata.cloudevent.traceparent`/`tracestate`, the only
  way it reaches the consumer when the sidecar's tracing is off (DAPR.md §1.4),
  and the baggage as `metadata.baggage` (a broker header on delivery);
- `invoke` runs in a CLIENT span and records client RED metrics by app id;
- `schedule_job` embeds the scheduling trace context and correlation ids in
  the job data, since job triggers arrive without `traceparent` (§1.6).

A sidecar error becomes a `DaprError` carrying daprd's `errorCode` and message.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from todo_observability._json import dumps as _dumps
from todo_observability._propagate import sending_as
from todo_observability.context import _current_signals, current_context
from todo_observability.exceptions import ConfigurationError, ObservabilityError
from todo_observability.httpclient import inject_correlation
from todo_observability.metrics import (
    JOBS_SCHEDULED,
    MESSAGING_PUBLISH_DURATION,
    MESSAGING_PUBLISHED,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from opentelemetry import trace

    from todo_observability._observability import Observability
    from todo_observability._signals import Signals

__all__ = ["JOB_CONTEXT_KEY", "DaprClient", "DaprError", "sidecar_endpoint"]

JOB_CONTEXT_KEY = "todo_observability"
"""The key of job data under which `schedule_job` embeds the scheduling context."""
UNREACHABLE = "ERR_SIDECAR_UNREACHABLE"
"""The `error_code` of a `DaprError` raised when no answer came from the sidecar."""


class DaprError(ObservabilityError):
    """The sidecar refused or failed a request.

    Attributes:
        operation: What was asked (`publish pubsub/task-events`, `invoke backend/tasks`, ...).
        status: The HTTP status the sidecar answered, or None when it could not be reached.
        error_code: daprd's `errorCode` (`ERR_PUBSUB_NOT_FOUND`, ...), or
            `ERR_SIDECAR_UNREACHABLE` when no answer came.
        detail: daprd's message.
    """

    def __init__(self, operation: str, status: int | None, error_code: str, detail: str):
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Dapr sidecar {where} to {operation}: {error_code}: {detail}")
        self.operation = operation
        self.status = status
        self.error_code = error_code
        self.detail = detail


def sidecar_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The sidecar's HTTP API base URL: `DAPR_HTTP_ENDPOINT`, else `http://127.0.0.1:$DAPR_HTTP_PORT`.

    Raises:
        ConfigurationError: when `DAPR_HTTP_PORT` is not a port number or
            `DAPR_HTTP_ENDPOINT` is not an http(s) URL.
    """
    env = os.environ if env is None else env
    endpoint = env.get("DAPR_HTTP_ENDPOINT", "").strip()
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"DAPR_HTTP_ENDPOINT={endpoint!r} is not an http(s) URL; "
                "set it like http://127.0.0.1:3500 or unset it to use DAPR_HTTP_PORT.",
                field="endpoint",
                env_var="DAPR_HTTP_ENDPOINT",
                value=endpoint,
            )
        return endpoint.rstrip("/")
    port = env.get("DAPR_HTTP_PORT", "").strip() or "3500"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"DAPR_HTTP_PORT={port!r} is not a port number; set it to the sidecar's HTTP port "
            "(1-65535, Dapr's default is 3500).",
            field="endpoint",
            env_var="DAPR_HTTP_PORT",
            value=port,
        )
    return f"http://127.0.0.1:{port}"


def _error(operation: str, response: httpx.Response) -> DaprError:
    code, detail = "ERR_UNKNOWN", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("errorCode") or code)
        detail = str(body.get("message") or detail)
    return DaprError(operation, response.status_code, code, detail or response.reason_phrase)


class DaprClient:
    """An async client of the Dapr sidecar's HTTP API (publish, invoke, jobs, state).

    Use it as an async context manager, or call `aclose()`:

        async with DaprClient() as dapr:
            await dapr.publish("pubsub", "task-events", {"task_id": 42})

    Args:
        endpoint: The sidecar's base URL; by default from `DAPR_HTTP_ENDPOINT` or `DAPR_HTTP_PORT`.
        api_token: Sent as `dapr-api-token`; by default `DAPR_API_TOKEN`.
        timeout: Seconds to wait for the sidecar per call.
        observability: Record into this; by default the one serving the current request.
        transport: The httpx transport (for tests: `httpx.ASGITransport(app=emulator)`).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_token: str | None = None,
        timeout: float = 10.0,
        observability: Observability | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.endpoint = (endpoint or sidecar_endpoint()).rstrip("/")
        token = api_token if api_token is not None else os.environ.get("DAPR_API_TOKEN", "")
        headers = {"dapr-api-token": token} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.endpoint, timeout=timeout, headers=headers, transport=transport
        )
        self._observability = observability
        self._jobs_prefix: str | None = None

    async def __aenter__(self) -> DaprClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections to the sidecar."""
        await self._http.aclose()

    def _signals(self) -> Signals:
        obs = self._observability
        return _current_signals(obs.signals if obs is not None else None)

    async def _send(
        self,
        operation: str,
        span: trace.Span,
        signals: Signals,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> httpx.Response:
        headers: dict[str, str] = dict(kwargs.pop("headers", None) or {})
        inject_correlation(headers, span, request_id_header=signals.request_id_header)
        try:
            with sending_as(span):
                return await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise DaprError(operation, None, UNREACHABLE, f"{type(exc).__name__}: {exc}") from exc

    # -- pub/sub -------------------------------------------------------------------------

    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
        raw_payload: bool = False,
        ttl_seconds: int | None = None,
        partition_key: str | None = None,
        links: Iterable[trace.Link] = (),
    ) -> None:
        """Publish `data` to `topic` of the `pubsub` component, wrapped by the sidecar in a CloudEvent.

        `data` of type bytes is sent as is (`application/octet-stream` unless
        `content_type` says otherwise), str as `text/plain`, anything else as
        JSON (`application/json`).

        Args:
            pubsub: The pub/sub component name.
            topic: The topic.
            data: The payload.
            content_type: Overrides the content type (the CloudEvent `datacontenttype`).
            metadata: Publish metadata (broker headers for Kafka).
            event_id: The CloudEvent `id` (`metadata.cloudevent.id`); the sidecar makes one when omitted.
            event_type: The CloudEvent `type` (`metadata.cloudevent.type`).
            raw_payload: Publish without the CloudEvent envelope (`metadata.rawPayload`);
                the trace context then travels as the `traceparent` broker header.
            ttl_seconds: Message time to live (`metadata.ttlInSeconds`).
            partition_key: The Kafka record key (`metadata.partitionKey`).
            links: Span links of the PRODUCER span (a replay links its original).

        Raises:
            DaprError: the sidecar refused the message or could not be reached.
        """
        if not pubsub or not topic:
            raise ValueError(
                f"publish() needs a pub/sub component name and a topic, got {pubsub!r}/{topic!r}."
            )
        if isinstance(data, bytes):
            body, ctype = data, content_type or "application/octet-stream"
        elif isinstance(data, str):
            body, ctype = data.encode(), content_type or "text/plain"
        else:
            body, ctype = _dumps(data), content_type or "application/json"
        signals = self._signals()
        tracer, metrics = signals.tracer, signals.metrics
        operation = f"publish {pubsub}/{topic}"
        span = tracer.start_span(f"{topic} publish", kind=SpanKind.PRODUCER, links=list(links))
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": "dapr",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": topic,
                    "messaging.dapr.pubsub": pubsub,
                    "messaging.message.body.size": len(body),
                    **({"messaging.message.id": event_id} if event_id else {}),
                }
            )
        params = {f"metadata.{key}": value for key, value in (metadata or {}).items()}
        carrier: dict[str, str] = {}
        inject_correlation(carrier, span, request_id_header=signals.request_id_header)
        if raw_payload:
            params["metadata.rawPayload"] = "true"
            params.setdefault("metadata.traceparent", carrier.get("traceparent", ""))
        else:
            for key in ("traceparent", "tracestate"):
                if carrier.get(key):
                    params.setdefault(f"metadata.cloudevent.{key}", carrier[key])
        if carrier.get("baggage"):
            params.setdefault("metadata.baggage", carrier["baggage"])
        if event_id:
            params["metadata.cloudevent.id"] = event_id
        if event_type:
            params["metadata.cloudevent.type"] = event_type
        if ttl_seconds is not None:
            params["metadata.ttlInSeconds"] = str(ttl_seconds)
        if partition_key is not None:
            params["metadata.partitionKey"] = partition_key
        params = {key: value for key, value in params.items() if value}
        start = time.perf_counter()
        outcome = "error"
        try:
            response = await self._send(
                operation,
                span,
                signals,
                "POST",
                f"/v1.0/publish/{pubsub}/{topic}",
                content=body,
                params=params,
                headers={"content-type": ctype},
            )
            if response.status_code >= 300:
                raise _error(operation, response)
            outcome = "success"
        except DaprError as exc:
            _fail(span, exc)
            raise
        finally:
            metrics.child(MESSAGING_PUBLISHED, topic, outcome).inc()
            metrics.child(MESSAGING_PUBLISH_DURATION, topic).observe(time.perf_counter() - start)
            span.end()

    # -- service invocation --------------------------------------------------------------

    async def invoke(
        self,
        app_id: str,
        method: str,
        *,
        http_method: str = "POST",
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Call `method` (a path) of the app `app_id` through the sidecar; the callee's response.

        The callee's error statuses are returned, not raised (check
        `response.is_success`); a failure of the sidecar itself (unknown app id,
        callee unreachable) raises `DaprError`.
        """
        if not app_id:
            raise ValueError("invoke() needs the app id of the service to call.")
        http_method = http_method.upper()
        signals = self._signals()
        tracer, metrics = signals.tracer, signals.metrics
        path = method.lstrip("/")
        operation = f"invoke {app_id}/{path}"
        span = tracer.start_span(http_method, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": http_method,
                    "rpc.system": "dapr",
                    "rpc.service": app_id,
                    "rpc.method": path,
                    "server.address": app_id,
                    "url.full": f"{self.endpoint}/v1.0/invoke/{app_id}/method/{path}",
                }
            )
        start = time.perf_counter()
        status: int | None = None
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = await self._send(
                operation,
                span,
                signals,
                http_method,
                f"/v1.0/invoke/{app_id}/method/{path}",
                json=json,
                content=content,
                params=params,
                headers=headers,
                **extra,
            )
            status = response.status_code
            if status >= 400 and _is_sidecar_error(response):
                raise _error(operation, response)
        except DaprError as exc:
            _fail(span, exc)
            raise
        finally:
            counter, histogram = metrics.client_children(
                http_method, app_id, str(status) if status is not None else "error"
            )
            counter.inc()
            histogram.observe(time.perf_counter() - start)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 400 and span.is_recording():
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        return response

    # -- jobs ----------------------------------------------------------------------------

    async def schedule_job(
        self,
        name: str,
        *,
        data: Any = None,
        due_time: str | None = None,
        schedule: str | None = None,
        repeats: int | None = None,
        ttl: str | None = None,
        overwrite: bool = False,
        failure_policy: Mapping[str, Any] | None = None,
        job_type: str | None = None,
        links: Iterable[trace.Link] = (),
    ) -> None:
        """Schedule the job `name` on the Jobs API (stable `/v1.0/jobs`, else the alpha path).

        The trigger (`POST /job/{name}` on this app) receives
        `{"data": data, "todo_observability": {...}}`: the scheduling span's
        `traceparent`/`tracestate`, `request_id` and `user_id`, which
        `Subscriptions.job` handlers restore.

        Args:
            name: The job name (unique per app; scheduling it again needs `overwrite`).
            data: The payload given to the trigger's handler.
            due_time: When to trigger: RFC 3339 time, Go duration (`10s`) or ISO 8601 duration.
            schedule: A repeating schedule: 6-field cron (seconds first) or `@every 1m`.
            repeats: How many times to trigger.
            ttl: When the job expires.
            overwrite: Replace an existing job of the same name.
            failure_policy: Dapr's failurePolicy (`{"drop": {}}` or `{"constant": {...}}`).
            job_type: The `job_type` metric label (default: `name` up to its first `-`, `:` or `/`).
            links: Span links of the scheduling span (a replay links its original).

        Raises:
            ValueError: neither `due_time` nor `schedule` was given.
            DaprError: the sidecar refused the job.
        """
        if due_time is None and schedule is None:
            raise ValueError(
                f"schedule_job({name!r}) needs due_time= (when to trigger once) "
                "or schedule= (cron or @every), or both."
            )
        signals = self._signals()
        tracer, metrics = signals.tracer, signals.metrics
        job_type = job_type or job_type_of(name)
        operation = f"schedule job {name}"
        span = tracer.start_span(f"{job_type} schedule", kind=SpanKind.PRODUCER, links=list(links))
        span.set_attribute("dapr.job.name", name)
        carrier: dict[str, str] = {}
        inject_correlation(carrier, span, request_id_header=signals.request_id_header)
        request_ctx = current_context()
        embedded = {
            key: value
            for key, value in (
                ("traceparent", carrier.get("traceparent")),
                ("tracestate", carrier.get("tracestate")),
                ("request_id", request_ctx.request_id if request_ctx else None),
                ("user_id", request_ctx.user_id if request_ctx else None),
                ("scheduled_at", time.time()),
            )
            if value
        }
        body: dict[str, Any] = {"data": {"data": data, JOB_CONTEXT_KEY: embedded}}
        options = {
            "dueTime": due_time,
            "schedule": schedule,
            "repeats": repeats,
            "ttl": ttl,
            "failurePolicy": failure_policy,
        }
        body.update({key: value for key, value in options.items() if value is not None})
        if overwrite:
            body["overwrite"] = True
        outcome = "error"
        try:
            response = await self._jobs_request(operation, span, signals, "POST", name, body)
            if response.status_code >= 300:
                raise _error(operation, response)
            outcome = "success"
        except DaprError as exc:
            _fail(span, exc)
            raise
        finally:
            metrics.child(JOBS_SCHEDULED, job_type, outcome).inc()
            span.end()

    async def get_job(self, name: str) -> dict[str, Any] | None:
        """The job `name` as the sidecar describes it, or None when there is none."""
        signals = self._signals()
        tracer = signals.tracer
        operation = f"get job {name}"
        with tracer.start_as_current_span("job get", kind=SpanKind.CLIENT) as span:
            response = await self._jobs_request(operation, span, signals, "GET", name)
        if response.status_code == 404 or (
            response.status_code >= 400 and "not found" in response.text.lower()
        ):
            return None
        if response.status_code >= 300:
            raise _error(operation, response)
        job: dict[str, Any] = response.json()
        return job

    async def delete_job(self, name: str) -> None:
        """Delete the job `name`."""
        signals = self._signals()
        tracer = signals.tracer
        operation = f"delete job {name}"
        with tracer.start_as_current_span("job delete", kind=SpanKind.CLIENT) as span:
            response = await self._jobs_request(operation, span, signals, "DELETE", name)
        if response.status_code >= 300:
            raise _error(operation, response)

    async def _jobs_request(
        self,
        operation: str,
        span: trace.Span,
        signals: Signals,
        method: str,
        name: str,
        body: Any = None,
    ) -> httpx.Response:
        content = _dumps(body) if body is not None else None
        headers = {"content-type": "application/json"} if body is not None else None
        prefixes = (
            (self._jobs_prefix,) if self._jobs_prefix else ("/v1.0/jobs", "/v1.0-alpha1/jobs")
        )
        response: httpx.Response | None = None
        for prefix in prefixes:
            response = await self._send(
                operation,
                span,
                signals,
                method,
                f"{prefix}/{name}",
                content=content,
                headers=headers,
            )
            # A sidecar older than 1.18 has no stable route: a 404 without daprd's error body.
            if response.status_code in (404, 405) and not _is_sidecar_error(response):
                continue
            self._jobs_prefix = prefix
            return response
        assert response is not None
        return response

    # -- state ---------------------------------------------------------------------------

    async def get_state(self, store: str, key: str) -> tuple[Any, str | None]:
        """(value, etag) of `key` in the state store `store`; (None, None) when absent."""
        signals = self._signals()
        tracer = signals.tracer
        operation = f"get state {store}/{key}"
        with tracer.start_as_current_span("state get", kind=SpanKind.CLIENT) as span:
            response = await self._send(
                operation, span, signals, "GET", f"/v1.0/state/{store}/{_state_key(key)}"
            )
        if response.status_code == 204 or not response.content:
            return None, None
        if response.status_code >= 300:
            raise _error(operation, response)
        return response.json(), response.headers.get("etag")

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        first_write: bool = False,
        ttl_seconds: int | None = None,
    ) -> bool:
        """Save `value` under `key`; False when the etag no longer matches (someone wrote first).

        Args:
            store: The state store component name.
            key: The key.
            value: Any JSON value.
            etag: Write only if the stored item still has this etag.
            first_write: First-write-wins concurrency (with `etag`, or for a new key).
            ttl_seconds: Expire the item after this many seconds (`metadata.ttlInSeconds`).
        """
        signals = self._signals()
        tracer = signals.tracer
        operation = f"save state {store}/{key}"
        item: dict[str, Any] = {"key": _state_key(key), "value": value}
        if etag is not None:
            item["etag"] = etag
        if first_write:
            item["options"] = {"concurrency": "first-write"}
        if ttl_seconds is not None:
            item["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
        with tracer.start_as_current_span("state save", kind=SpanKind.CLIENT) as span:
            response = await self._send(
                operation,
                span,
                signals,
                "POST",
                f"/v1.0/state/{store}",
                content=_dumps([item]),
                headers={"content-type": "application/json"},
            )
        if response.status_code == 409:
            return False
        if response.status_code >= 300:
            raise _error(operation, response)
        return True

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> bool:
        """Delete `key`; False when `etag` no longer matches."""
        signals = self._signals()
        tracer = signals.tracer
        operation = f"delete state {store}/{key}"
        headers = {"if-match": etag} if etag is not None else None
        with tracer.start_as_current_span("state delete", kind=SpanKind.CLIENT) as span:
            response = await self._send(
                operation,
                span,
                signals,
                "DELETE",
                f"/v1.0/state/{store}/{_state_key(key)}",
                headers=headers,
            )
        if response.status_code == 409:
            return False
        if response.status_code >= 300:
            raise _error(operation, response)
        return True

    # -- sidecar -------------------------------------------------------------------------

    async def wait_for_sidecar(self, timeout: float = 60.0, *, interval: float = 0.1) -> None:
        """Wait until the sidecar can serve outbound calls (`/v1.0/healthz/outbound` answers 2xx).

        Raises:
            DaprError: no 2xx within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = await self._http.get("/v1.0/healthz/outbound")
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise DaprError(
                    "wait for the sidecar",
                    None,
                    UNREACHABLE,
                    f"{self.endpoint} not ready after {timeout:g} s (last: {last})",
                )
            await anyio.sleep(interval)


def job_type_of(name: str) -> str:
    """A job's type: its name up to the first `-`, `:` or `/` (`reminder-42` → `reminder`)."""
    for index, char in enumerate(name):
        if char in "-:/":
            return name[:index] or name
    return name


def _state_key(key: str) -> str:
    if not key or "/" in key:
        raise ValueError(
            f"state key {key!r} must be non-empty and hold no '/': the sidecar's HTTP API "
            "routes /v1.0/state/<store>/<key> on slashes."
        )
    return quote(key, safe="")


def _is_sidecar_error(response: httpx.Response) -> bool:
    """Whether an error response was written by daprd itself (a JSON body with an `ERR_` code)."""
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("errorCode", "")).startswith("ERR_")


def _fail(span: trace.Span, exc: DaprError) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_attribute("error.type", exc.error_code)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
