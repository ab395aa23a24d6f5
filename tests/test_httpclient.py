from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from todo_observability import create_http_client, get_logger, set_user_id
from todo_observability._observability import Observability
from todo_observability.httpclient import AsyncInstrumentedTransport, InstrumentedTransport
from todo_observability.testing import LogCapture, metric_value

from .helpers import client, spans

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]
log = get_logger("tests.services")


def downstream_app() -> FastAPI:
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, str]:
        log.info("downstream handled")
        return {
            k: v
            for k, v in request.headers.items()
            if k in {"traceparent", "tracestate", "baggage", "x-request-id"}
        }

    return app


async def test_two_services_share_trace_request_id_and_user_id(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    downstream = downstream_app()
    down_obs = make_observability(
        downstream, service_name="recurring", registry=CollectorRegistry()
    )
    upstream = FastAPI()
    up_registry = CollectorRegistry()

    @upstream.get("/complete")
    async def complete() -> Any:
        set_user_id("user-7")
        async with create_http_client(
            transport=httpx.ASGITransport(app=downstream), base_url="http://recurring"
        ) as http:
            return (await http.get("/echo")).json()

    up_obs = make_observability(
        upstream, service_name="backend", registry=up_registry, internal_hosts=["recurring"]
    )
    async with client(upstream) as http:
        response = await http.get("/complete", headers={"X-Request-ID": "flow-1"})
    seen = response.json()
    assert seen["x-request-id"] == "flow-1"
    assert "request_id=flow-1" in seen["baggage"]
    assert "user_id=user-7" in seen["baggage"]

    up_spans = {span.kind: span for span in spans(up_obs)}
    [down_server] = spans(down_obs)
    client_span = up_spans[SpanKind.CLIENT]
    version, trace_id, span_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{client_span.context.trace_id:032x}",
        f"{client_span.context.span_id:016x}",
    )
    assert int(flags, 16) & 0x01  # sampled
    assert down_server.context.trace_id == up_spans[SpanKind.SERVER].context.trace_id
    assert down_server.parent.span_id == client_span.context.span_id
    assert client_span.parent.span_id == up_spans[SpanKind.SERVER].context.span_id
    assert client_span.attributes["server.address"] == "recurring"
    assert client_span.attributes["http.response.status_code"] == 200

    [handled] = captured_logs.find(message="downstream handled")
    assert (handled["service_name"], handled["request_id"], handled["user_id"]) == (
        "recurring",
        "flow-1",
        "user-7",
    )
    assert (
        metric_value(
            up_registry,
            "http_client_requests_total",
            method="GET",
            server_address="recurring",
            status_code="200",
        )
        == 1
    )


async def test_transport_errors_are_counted_and_recorded(
    make_observability: Factory, metrics_registry: CollectorRegistry
) -> None:
    obs = make_observability()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with create_http_client(observability=obs, transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("http://smtp-relay:8025/send")
    assert (
        metric_value(
            metrics_registry,
            "http_client_requests_total",
            method="POST",
            server_address="smtp-relay",
            status_code="error",
        )
        == 1
    )
    [span] = spans(obs)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ConnectError"
    assert span.attributes["server.port"] == 8025


async def test_error_status_marks_the_client_span(make_observability: Factory) -> None:
    obs = make_observability()
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    async with create_http_client(observability=obs, transport=transport) as http:
        assert (await http.get("http://backend/tasks")).status_code == 503
    [span] = spans(obs)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "503"


async def test_an_explicit_request_id_header_is_not_overwritten(
    make_observability: Factory,
) -> None:
    obs = make_observability(internal_hosts=["a"])
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    from todo_observability.context import RequestContext, _enter_context, _exit_context

    token = _enter_context(RequestContext("ambient"))
    try:
        async with httpx.AsyncClient(
            transport=AsyncInstrumentedTransport(httpx.MockTransport(record), observability=obs)
        ) as http:
            await http.get("http://a/", headers={"X-Request-ID": "explicit"})
            await http.get("http://a/")
    finally:
        _exit_context(token)
    assert [r.headers["x-request-id"] for r in seen] == ["explicit", "ambient"]


def test_sync_transport_injects_and_measures(
    make_observability: Factory, metrics_registry: CollectorRegistry
) -> None:
    obs = make_observability()
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with httpx.Client(
        transport=InstrumentedTransport(httpx.MockTransport(record), observability=obs)
    ) as http:
        http.delete("http://backend/tasks/1")
    [request] = seen
    [span] = spans(obs)
    assert request.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert "x-request-id" not in request.headers  # no request context: nothing to carry
    assert (
        metric_value(
            metrics_registry,
            "http_client_requests_total",
            method="DELETE",
            server_address="backend",
            status_code="204",
        )
        == 1
    )


async def record_outgoing(
    obs: Observability, url: str, request_id: str, user_id: str
) -> httpx.Request:
    """The request an instrumented client sends to `url` inside a unit of work of those ids."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    from todo_observability.context import RequestContext, _enter_context, _exit_context

    token = _enter_context(RequestContext(request_id, user_id, obs.signals))
    try:
        async with httpx.AsyncClient(
            transport=AsyncInstrumentedTransport(httpx.MockTransport(record), observability=obs)
        ) as http:
            await http.get(url)
    finally:
        _exit_context(token)
    [request] = seen
    return request


@pytest.mark.parametrize(
    ("url", "internal"),
    [
        ("http://backend/tasks", True),
        ("http://notifications.todo.svc.cluster.local/x", True),
        ("http://todo.svc.cluster.local/x", False),  # the suffix pattern needs a label before it
        ("https://api.third-party.example/charge", False),
        ("http://backend.evil.example/", False),
    ],
)
async def test_identity_goes_only_to_internal_hosts(
    make_observability: Factory, url: str, internal: bool
) -> None:
    obs = make_observability(internal_hosts="backend,*.todo.svc.cluster.local")
    request = await record_outgoing(obs, url, "req-1", "alice")
    assert "traceparent" in request.headers  # the trace context always flows
    if internal:
        assert request.headers["baggage"] == "request_id=req-1,user_id=alice"
        assert request.headers["x-request-id"] == "req-1"
    else:
        assert "user_id" not in request.headers.get("baggage", "")
        assert "request_id" not in request.headers.get("baggage", "")
        assert "x-request-id" not in request.headers


async def test_by_default_no_host_gets_the_identity(make_observability: Factory) -> None:
    request = await record_outgoing(make_observability(), "http://anywhere/", "req-2", "bob")
    assert "bob" not in str(request.headers)
    assert "req-2" not in str(request.headers)


def test_internal_hosts_must_be_host_names() -> None:
    from todo_observability.config import resolve_settings
    from todo_observability.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"TODO_OBS_INTERNAL_HOSTS.*'http://backend'"):
        resolve_settings(env={"TODO_OBS_INTERNAL_HOSTS": "http://backend"})
