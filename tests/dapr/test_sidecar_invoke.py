"""Service invocation (DAPR.md §1.3): forwarding, trace override, errors."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import free_port, serve_app
from todo_observability.testing.sidecar import SidecarSpec

from .conftest import (
    APP_SPAN_ID,
    APP_TRACEPARENT,
    TRACE_ID,
    FakeApp,
    SidecarFactory,
    by_name,
    only,
    parent_span_id,
    serve_sidecars,
)

pytestmark = pytest.mark.anyio


async def test_invoke_forwards_method_query_headers_and_body(make_sidecar: SidecarFactory) -> None:
    caller_app, callee_app = FakeApp(), FakeApp()
    callee_app.answer(
        "/tasks/7", JSONResponse({"done": True}, status_code=201, headers={"x-answer": "yes"})
    )
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.put(
            "/v1.0/invoke/recurring/method/tasks/7",
            params={"q": "1", "r": "a b"},
            content=b'{"n": 1}',
            headers={"content-type": "application/json", "x-custom": "c"},
        )
    assert response.status_code == 201
    assert response.json() == {"done": True}
    assert response.headers["x-answer"] == "yes"
    request = only(callee_app.received("/tasks/7"))
    assert request.method == "PUT"
    assert request.query == "q=1&r=a+b"
    assert request.body == b'{"n": 1}'
    assert request.headers["x-custom"] == "c"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["dapr-caller-app-id"] == "backend"
    assert request.headers["dapr-callee-app-id"] == "recurring"


async def test_invoke_with_the_dapr_app_id_header(make_sidecar: SidecarFactory) -> None:
    caller_app, callee_app = FakeApp(), FakeApp()
    callee_app.answer("/tasks", Response(b"listed", 200))
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.get("/tasks", headers={"dapr-app-id": "recurring"})
    assert (response.status_code, response.text) == (200, "listed")
    request = only(callee_app.received("/tasks"))
    assert "dapr-app-id" not in request.headers


async def test_the_callee_app_gets_the_callee_sidecar_span_overriding_the_forwarded_one(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    caller_app, callee_app = FakeApp(), FakeApp()
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.post(
            "/v1.0/invoke/recurring/method/run",
            headers={"traceparent": APP_TRACEPARENT, "tracestate": "app=1"},
        )
    named = by_name(spans, "CallLocal/recurring/run")
    client_span = only([s for s in named if s.kind is SpanKind.CLIENT])
    server_span = only([s for s in named if s.kind is SpanKind.SERVER])
    assert client_span.resource.attributes["service.name"] == "backend"
    assert server_span.resource.attributes["service.name"] == "recurring"
    assert server_span.name == "CallLocal/recurring/run"
    # app -> caller CLIENT span -> callee SERVER span -> callee app
    assert client_span.parent is not None
    assert f"{client_span.parent.span_id:016x}" == APP_SPAN_ID
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    request = only(callee_app.received("/run"))
    assert request.headers["traceparent"] == f"00-{TRACE_ID}-{server_span.context.span_id:016x}-01"
    assert parent_span_id(request.headers["traceparent"]) != APP_SPAN_ID
    assert request.headers["tracestate"] == "app=1"
    # the response carries a traceparent (the caller sidecar's, the app set none)
    assert response.headers["traceparent"] == (
        f"00-{TRACE_ID}-{client_span.context.span_id:016x}-01"
    )


async def test_a_traceparent_set_by_the_callee_app_is_returned(
    make_sidecar: SidecarFactory,
) -> None:
    callee_app = FakeApp()
    mine = f"00-{'1' * 32}-{'2' * 16}-01"
    callee_app.answer("/run", Response(status_code=200, headers={"traceparent": mine}))
    caller = await make_sidecar(FakeApp(), app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.post("/v1.0/invoke/recurring/method/run")
    assert response.headers["traceparent"] == mine


async def test_tracing_off_passes_the_trace_headers_through(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    callee_app = FakeApp()
    caller = await make_sidecar(FakeApp(), app_id="backend", sampling_rate=0)
    await make_sidecar(callee_app, app_id="recurring", sampling_rate=0)
    async with caller.client() as client:
        response = await client.post(
            "/v1.0/invoke/recurring/method/run",
            headers={"traceparent": APP_TRACEPARENT, "tracestate": "app=1"},
        )
    request = only(callee_app.received("/run"))
    assert request.headers["traceparent"] == APP_TRACEPARENT
    assert request.headers["tracestate"] == "app=1"
    assert "traceparent" not in response.headers
    assert spans.get_finished_spans() == ()


async def test_the_callee_status_and_body_are_returned_as_they_are(
    make_sidecar: SidecarFactory,
) -> None:
    callee_app = FakeApp()
    callee_app.answer("/boom", Response(b"it broke", 503, media_type="text/plain"))
    caller = await make_sidecar(FakeApp(), app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.get("/v1.0/invoke/recurring/method/boom")
    assert (response.status_code, response.text) == (503, "it broke")
    assert response.headers["content-type"].startswith("text/plain")


async def test_an_unknown_app_id_is_a_direct_invoke_error(make_sidecar: SidecarFactory) -> None:
    caller = await make_sidecar(FakeApp(), app_id="backend")
    async with caller.client() as client:
        response = await client.post("/v1.0/invoke/nowhere/method/run")
    assert response.status_code == 500
    assert response.json() == {
        "errorCode": "ERR_DIRECT_INVOKE",
        "message": "failed to invoke, id: nowhere, err: couldn't find service: nowhere",
    }


async def test_a_callee_app_that_is_down_is_a_direct_invoke_error(
    make_sidecar: SidecarFactory,
) -> None:
    caller = await make_sidecar(FakeApp(), app_id="backend")
    callee = await make_sidecar(FakeApp(), app_id="recurring")
    callee.set_app_down()
    async with caller.client() as client:
        response = await client.post("/v1.0/invoke/recurring/method/run")
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert "connection refused" in response.json()["message"]


async def test_an_invocation_without_app_id_is_refused(make_sidecar: SidecarFactory) -> None:
    caller = await make_sidecar(FakeApp(), app_id="backend")
    async with caller.client() as client:
        missing = await client.post("/v1.0/invoke/recurring")
        unrouted = await client.get("/not/an/api")
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert (unrouted.status_code, unrouted.text) == (404, "404 page not found\n")


async def test_tokens_are_checked_and_replaced_on_the_way(make_sidecar: SidecarFactory) -> None:
    callee_app = FakeApp()
    caller = await make_sidecar(FakeApp(), app_id="backend", api_token="caller-token")
    await make_sidecar(callee_app, app_id="recurring", app_api_token="callee-app-token")
    async with caller.client() as client:
        refused = await client.post("/v1.0/invoke/recurring/method/run")
        accepted = await client.post(
            "/v1.0/invoke/recurring/method/run", headers={"dapr-api-token": "caller-token"}
        )
    assert (refused.status_code, accepted.status_code) == (401, 200)
    request = only(callee_app.received("/run"))
    assert request.headers["dapr-api-token"] == "callee-app-token"


async def test_an_app_can_invoke_itself(make_sidecar: SidecarFactory) -> None:
    app = FakeApp()
    app.answer("/ping", Response(b"pong"))
    sidecar = await make_sidecar(app, app_id="backend")
    async with sidecar.client() as client:
        response = await client.get("/v1.0/invoke/backend/method/ping")
    assert response.text == "pong"


# --- what Go's net/http and daprd's metadata do to headers ------------------------------------


async def test_an_answer_without_content_type_gets_the_one_go_sniffs(
    make_sidecar: SidecarFactory,
) -> None:
    caller_app, callee_app = FakeApp(), FakeApp()
    callee_app.answer("/json", Response(b'{"ok": true}'))
    callee_app.answer("/page", Response(b"  <html><body>hi</body></html>"))
    callee_app.answer("/bytes", Response(b"\x00\x01\x02"))
    callee_app.answer("/typed", Response(b"{}", media_type="application/problem+json"))
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        answers = {
            path: (await client.get(f"/v1.0/invoke/recurring/method/{path}")).headers
            for path in ("json", "page", "bytes", "typed")
        }
    assert answers["json"].get_list("content-type") == ["text/plain; charset=utf-8"]
    assert answers["page"]["content-type"] == "text/html; charset=utf-8"
    assert answers["bytes"]["content-type"] == "application/octet-stream"
    assert answers["typed"].get_list("content-type") == ["application/problem+json"]


async def test_repeated_headers_cross_an_invocation_with_their_first_value(
    make_sidecar: SidecarFactory,
) -> None:
    caller_app, callee_app = FakeApp(), FakeApp()
    answer = Response(b"ok", media_type="text/plain")
    answer.raw_headers += [(b"x-answer", b"first"), (b"x-answer", b"second")]
    callee_app.answer("/tasks", answer)
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        response = await client.get(
            "/v1.0/invoke/recurring/method/tasks",
            headers=[("x-tenant", "a"), ("x-tenant", "b")],
        )
    assert response.headers.get_list("x-answer") == ["first"]
    assert only(callee_app.received("/tasks")).headers["x-tenant"] == "a"


async def test_the_first_of_repeated_traceparent_headers_is_the_parent(
    make_sidecar: SidecarFactory, spans: InMemorySpanExporter
) -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    caller_app, callee_app = FakeApp(), FakeApp()
    caller = await make_sidecar(caller_app, app_id="backend")
    await make_sidecar(callee_app, app_id="recurring")
    async with caller.client() as client:
        await client.get(
            "/v1.0/invoke/recurring/method/ping",
            headers=[("traceparent", APP_TRACEPARENT), ("traceparent", other)],
        )
    client_span = only(
        [s for s in by_name(spans, "CallLocal/recurring/ping") if s.kind is SpanKind.CLIENT]
    )
    assert client_span.parent is not None
    assert f"{client_span.parent.span_id:016x}" == APP_SPAN_ID
    assert f"{client_span.context.trace_id:032x}" == TRACE_ID


async def test_a_served_invocation_has_one_date_header() -> None:
    app_port, dapr_port = free_port(), free_port()

    async def ping(request: Request) -> Response:
        return Response(b'{"pong": true}')  # uvicorn adds the app's Date; no Content-Type

    app = Starlette(routes=[Route("/ping", ping)])
    async with (
        serve_app(app, app_port),
        serve_sidecars(SidecarSpec("recurring", app_port, dapr_port)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{dapr_port}") as client,
    ):
        invoked = await client.get("/v1.0/invoke/recurring/method/ping")
        health = await client.get("/v1.0/healthz")
    assert invoked.status_code == 200
    assert len(invoked.headers.get_list("date")) == 1
    assert len(health.headers.get_list("date")) == 1
    assert invoked.headers["content-type"] == "text/plain; charset=utf-8"
