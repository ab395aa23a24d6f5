"""The sidecar client: what each call sends, spans, metrics and typed errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from todo_observability import bind_context, set_user_id
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.dapr import DaprClient, DaprError, sidecar_endpoint
from todo_observability.exceptions import ConfigurationError
from todo_observability.testing import metric_value

pytestmark = pytest.mark.anyio


class Sidecar:
    """Records requests and answers them with a canned response per path prefix."""

    def __init__(self, answers: dict[str, Callable[[httpx.Request], httpx.Response]] | None = None):
        self.requests: list[httpx.Request] = []
        self.answers = answers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for prefix, answer in self.answers.items():
            if request.url.path.startswith(prefix):
                return answer(request)
        return httpx.Response(204)


def dapr(sidecar: Sidecar, obs: Any, **kwargs: Any) -> DaprClient:
    return DaprClient(
        "http://127.0.0.1:3500", transport=httpx.MockTransport(sidecar), observability=obs, **kwargs
    )


def traceparent_of(span: Any) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def dapr_error(status: int, code: str, message: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json={"errorCode": code, "message": message})


async def test_publish_sends_json_with_the_producer_context_in_the_cloudevent(
    make_observability: Any, captured_spans: Any, metrics_registry: Any
) -> None:
    obs = make_observability(service_name="backend")
    sidecar = Sidecar()
    token = _enter_context(RequestContext("req-1", "alice", obs.signals))
    try:
        async with dapr(sidecar, obs, api_token="tok") as client:
            await client.publish("pubsub", "task-events", {"task_id": 1}, event_id="e-1")
    finally:
        _exit_context(token)
    [request] = sidecar.requests
    assert request.url.path == "/v1.0/publish/pubsub/task-events"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["dapr-api-token"] == "tok"
    assert json.loads(request.content) == {"task_id": 1}
    [producer] = [s for s in captured_spans.spans if s.kind is SpanKind.PRODUCER]
    assert producer.name == "task-events publish"
    assert producer.attributes["messaging.destination.name"] == "task-events"
    assert producer.attributes["messaging.message.id"] == "e-1"
    expected = traceparent_of(producer)
    params = request.url.params
    assert params["metadata.cloudevent.traceparent"] == expected
    assert request.headers["traceparent"] == expected
    assert params["metadata.cloudevent.id"] == "e-1"
    assert "request_id=req-1" in params["metadata.baggage"]
    assert "user_id=alice" in params["metadata.baggage"]
    assert request.headers["x-request-id"] == "req-1"
    labels = {"topic": "task-events", "outcome": "success"}
    assert metric_value(metrics_registry, "messaging_publish_messages_total", **labels) == 1
    assert (
        metric_value(
            metrics_registry, "messaging_publish_duration_seconds_count", topic="task-events"
        )
        == 1
    )


async def test_publish_content_types_and_raw_payload(make_observability: Any) -> None:
    obs = make_observability()
    sidecar = Sidecar()
    async with dapr(sidecar, obs) as client:
        await client.publish("pubsub", "t", "hello")
        await client.publish("pubsub", "t", b"\x00\x01")
        await client.publish(
            "pubsub", "t", {"a": 1}, raw_payload=True, ttl_seconds=60, partition_key="k"
        )
    text, binary, raw = sidecar.requests
    assert text.headers["content-type"] == "text/plain"
    assert binary.headers["content-type"] == "application/octet-stream"
    assert raw.url.params["metadata.rawPayload"] == "true"
    assert raw.url.params["metadata.traceparent"].startswith("00-")
    assert "metadata.cloudevent.traceparent" not in raw.url.params
    assert raw.url.params["metadata.ttlInSeconds"] == "60"
    assert raw.url.params["metadata.partitionKey"] == "k"


async def test_a_sidecar_error_is_a_typed_exception(
    make_observability: Any, captured_spans: Any, metrics_registry: Any
) -> None:
    obs = make_observability()
    sidecar = Sidecar(
        {"/v1.0/publish": dapr_error(404, "ERR_PUBSUB_NOT_FOUND", "pubsub nope is not found")}
    )
    async with dapr(sidecar, obs) as client:
        with pytest.raises(DaprError) as caught:
            await client.publish("nope", "t", {})
    error = caught.value
    assert (error.status, error.error_code) == (404, "ERR_PUBSUB_NOT_FOUND")
    assert "pubsub nope is not found" in str(error)
    assert "publish nope/t" in str(error)
    [span] = captured_spans.spans
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "ERR_PUBSUB_NOT_FOUND"
    assert (
        metric_value(
            metrics_registry, "messaging_publish_messages_total", topic="t", outcome="error"
        )
        == 1
    )


async def test_an_unreachable_sidecar_is_a_dapr_error(make_observability: Any) -> None:
    obs = make_observability()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with DaprClient(
        "http://127.0.0.1:3500", transport=httpx.MockTransport(refuse), observability=obs
    ) as client:
        with pytest.raises(DaprError) as caught:
            await client.publish("pubsub", "t", {})
        assert caught.value.status is None
        assert caught.value.error_code == "ERR_SIDECAR_UNREACHABLE"
        with pytest.raises(DaprError, match="not ready after"):
            await client.wait_for_sidecar(timeout=0.05, interval=0.01)


async def test_invoke_is_a_client_span_with_red_metrics_by_app_id(
    make_observability: Any, captured_spans: Any, metrics_registry: Any
) -> None:
    obs = make_observability()
    sidecar = Sidecar(
        {
            "/v1.0/invoke/backend/method/tasks": lambda r: httpx.Response(201, json={"id": 7}),
            "/v1.0/invoke/backend/method/broken": lambda r: httpx.Response(500, text="oops"),
            "/v1.0/invoke/ghost": dapr_error(500, "ERR_DIRECT_INVOKE", "app id ghost not found"),
        }
    )
    with bind_context(step="create"):
        set_user_id("alice")
        async with dapr(sidecar, obs) as client:
            created = await client.invoke("backend", "/tasks", json={"title": "x"})
            broken = await client.invoke("backend", "broken", http_method="get")
            with pytest.raises(DaprError, match="ERR_DIRECT_INVOKE"):
                await client.invoke("ghost", "x")
    assert created.status_code == 201
    assert created.json() == {"id": 7}
    assert broken.status_code == 500  # the callee's answer is returned, not raised
    first = sidecar.requests[0]
    assert first.url.path == "/v1.0/invoke/backend/method/tasks"
    [span, *_] = [s for s in captured_spans.spans if s.kind is SpanKind.CLIENT]
    assert span.attributes["rpc.service"] == "backend"
    assert first.headers["traceparent"] == (traceparent_of(span))
    assert "user_id=alice" in first.headers["baggage"]
    assert (
        metric_value(
            metrics_registry,
            "http_client_requests_total",
            method="POST",
            server_address="backend",
            status_code="201",
        )
        == 1
    )
    assert (
        metric_value(
            metrics_registry,
            "http_client_requests_total",
            method="GET",
            server_address="backend",
            status_code="500",
        )
        == 1
    )


async def test_schedule_job_embeds_the_context_and_falls_back_to_the_alpha_api(
    make_observability: Any, captured_spans: Any, metrics_registry: Any
) -> None:
    obs = make_observability()
    sidecar = Sidecar({"/v1.0/jobs": lambda r: httpx.Response(404, text="404 page not found")})
    token = _enter_context(RequestContext("req-9", "bob", obs.signals))
    try:
        async with dapr(sidecar, obs) as client:
            await client.schedule_job("reminder-42", data={"task": 42}, due_time="10s")
            await client.schedule_job("reminder-43", data={"task": 43}, due_time="10s")
    finally:
        _exit_context(token)
    stable, alpha, alpha_again = sidecar.requests
    assert stable.url.path == "/v1.0/jobs/reminder-42"
    assert alpha.url.path == "/v1.0-alpha1/jobs/reminder-42"
    assert alpha_again.url.path == "/v1.0-alpha1/jobs/reminder-43"  # remembered
    body = json.loads(alpha.content)
    assert body["dueTime"] == "10s"
    assert "name" not in body
    embedded = body["data"]["todo_observability"]
    assert body["data"]["data"] == {"task": 42}
    assert (embedded["request_id"], embedded["user_id"]) == ("req-9", "bob")
    [schedule, _] = [s for s in captured_spans.spans if s.name == "reminder schedule"]
    assert embedded["traceparent"] == (traceparent_of(schedule))
    assert (
        metric_value(
            metrics_registry, "jobs_scheduled_total", job_type="reminder", outcome="success"
        )
        == 2
    )


async def test_schedule_job_needs_a_time(make_observability: Any) -> None:
    async with dapr(Sidecar(), make_observability()) as client:
        with pytest.raises(ValueError, match="due_time="):
            await client.schedule_job("x")


async def test_state_round_trip_with_etags(make_observability: Any) -> None:
    stored: dict[str, Any] = {}

    def state(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            [item] = json.loads(request.content)
            if "etag" in item and item["etag"] != "1":
                return httpx.Response(409, json={"errorCode": "ERR_STATE_SAVE", "message": "etag"})
            stored[item["key"]] = item["value"]
            return httpx.Response(204)
        key = request.url.path.rsplit("/", 1)[1]
        if request.method == "DELETE":
            stored.pop(key, None)
            return httpx.Response(204)
        if key not in stored:
            return httpx.Response(204)
        return httpx.Response(200, json=stored[key], headers={"etag": "1"})

    async with dapr(Sidecar({"/v1.0/state": state}), make_observability()) as client:
        assert await client.get_state("statestore", "k") == (None, None)
        assert await client.save_state("statestore", "k", {"v": 1})
        assert await client.get_state("statestore", "k") == ({"v": 1}, "1")
        assert not await client.save_state("statestore", "k", {"v": 2}, etag="7")
        assert await client.save_state("statestore", "k", {"v": 2}, etag="1", first_write=True)
        assert await client.delete_state("statestore", "k")
        assert await client.get_state("statestore", "k") == (None, None)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:3500"),
        ({"DAPR_HTTP_PORT": "3601"}, "http://127.0.0.1:3601"),
        (
            {"DAPR_HTTP_ENDPOINT": "https://dapr.example:443/", "DAPR_HTTP_PORT": "1"},
            "https://dapr.example:443",
        ),
    ],
)
def test_the_sidecar_endpoint_comes_from_dapr_variables(env: dict[str, str], expected: str) -> None:
    assert sidecar_endpoint(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DAPR_HTTP_PORT": "http"}, "DAPR_HTTP_PORT"),
        ({"DAPR_HTTP_ENDPOINT": "dapr:3500"}, "DAPR_HTTP_ENDPOINT"),
    ],
)
def test_bad_dapr_variables_say_what_to_set(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        sidecar_endpoint(env)
    assert caught.value.env_var == variable
    assert variable in str(caught.value)
