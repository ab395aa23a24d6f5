from __future__ import annotations

import asyncio
import logging
import random
import string
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from todo_observability import (
    ConfigurationError,
    bind_context,
    get_logger,
    get_request_id,
    set_user_id,
)
from todo_observability._observability import Observability
from todo_observability.asgi import ObservabilityMiddleware
from todo_observability.metrics import OVERFLOW_VALUE, UNMATCHED_ROUTE
from todo_observability.testing import LogCapture, metric_value

from .helpers import client, server_spans, spans

pytestmark = pytest.mark.anyio

Factory = Callable[..., Observability]
log = get_logger("tests.app")


def tasks_app() -> FastAPI:
    app = FastAPI()

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: int) -> dict[str, int]:
        log.info("task read", extra={"task_id": task_id})
        return {"id": task_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="no such task")

    return app


async def test_request_id_is_generated_and_echoed(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = tasks_app()
    make_observability(app, service_name="backend")
    async with client(app) as http:
        response = await http.get("/tasks/7")
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    assert int(request_id, 16) >= 0
    [line] = captured_logs.find(message="task read")
    assert line["request_id"] == request_id
    assert line["service_name"] == "backend"
    assert line["context"] == {"task_id": 7}
    [access] = captured_logs.access()
    assert access["request_id"] == request_id


async def test_valid_incoming_request_id_is_kept(make_observability: Factory) -> None:
    app = tasks_app()
    make_observability(app)
    async with client(app) as http:
        response = await http.get("/tasks/1", headers={"X-Request-ID": "req-123:abc"})
    assert response.headers["x-request-id"] == "req-123:abc"


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "new\\nline", "<script>", "é"])
async def test_invalid_request_id_is_replaced_and_never_logged(
    make_observability: Factory, captured_logs: LogCapture, bad: str
) -> None:
    app = tasks_app()
    make_observability(app)
    async with client(app) as http:
        response = await http.get("/tasks/1", headers=[(b"X-Request-ID", bad.encode("utf-8"))])
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32
    assert all(bad not in str(line) for line in captured_logs.lines)


async def test_unhandled_exception_is_a_500_with_request_id_span_error_and_log(
    make_observability: Factory, captured_logs: LogCapture, metrics_registry: Any
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app, raise_app_exceptions=False) as http:
        response = await http.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    [access] = captured_logs.access()
    assert access["level"] == "ERROR"
    assert access["context"]["status"] == 500
    assert access["exception"]["type"] == "RuntimeError"
    assert access["exception"]["message"] == "kaboom"
    assert "raise RuntimeError" in access["exception"]["stack"]
    [span] = server_spans(obs)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    assert [event.name for event in span.events] == ["exception"]
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/boom",
            status_code="500",
        )
        == 1
    )


async def test_error_raised_by_inner_middleware_still_gets_request_id(
    make_observability: Factory,
) -> None:
    class Broken:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                raise ValueError("middleware bug")
            await self.app(scope, receive, send)

    app = Starlette(
        routes=[Route("/", lambda r: PlainTextResponse("ok"))], middleware=[Middleware(Broken)]
    )
    make_observability(app)
    async with client(app, raise_app_exceptions=False) as http:
        response = await http.get("/", headers={"X-Request-ID": "inner-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "inner-1"


async def test_custom_exception_handler_response_keeps_its_body(
    make_observability: Factory,
) -> None:
    app = tasks_app()

    @app.exception_handler(RuntimeError)
    async def handle(request: Request, exc: RuntimeError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503)

    make_observability(app)
    async with client(app) as http:
        response = await http.get("/boom")
    assert response.status_code == 503
    assert response.json() == {"error": "kaboom"}
    assert "x-request-id" in response.headers


async def test_route_label_is_the_template(
    make_observability: Factory, metrics_registry: Any
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        for task_id in range(5):
            await http.get(f"/tasks/{task_id}")
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/tasks/{task_id}",
            status_code="200",
        )
        == 5
    )
    assert (
        metric_value(
            metrics_registry,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="/tasks/{task_id}",
        )
        == 5
    )
    names = {span.name for span in server_spans(obs)}
    assert names == {"GET /tasks/{task_id}"}


async def test_unmatched_route_is_labelled_as_placeholder(
    make_observability: Factory, metrics_registry: Any
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        response = await http.get("/no/such/path")
    assert response.status_code == 404
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route=UNMATCHED_ROUTE,
            status_code="404",
        )
        == 1
    )
    [span] = server_spans(obs)
    assert span.name == "GET"
    assert "http.route" not in span.attributes


async def test_ten_thousand_random_paths_add_a_bounded_number_of_series(
    make_observability: Factory, metrics_registry: Any
) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    # A mount whose sub-app is not a router: the route is the mount itself, the rest is free-form.
    app = Starlette(routes=[Mount("/files", app=raw)])
    make_observability(app, max_label_values=20, access_log=False)
    rng = random.Random(7)
    async with client(app) as http:
        for _ in range(5_000):
            path = "".join(rng.choices(string.ascii_lowercase, k=12))
            await http.get(f"/{path}")
            await http.get(f"/files/{path}")
    series = [
        sample
        for metric in metrics_registry.collect()
        if metric.name == "http_server_requests"
        for sample in metric.samples
        if sample.name == "http_server_requests_total"
    ]
    routes = {sample.labels["route"] for sample in series}
    assert routes == {UNMATCHED_ROUTE, "/files/{path}"}
    assert sum(sample.value for sample in series) == 10_000


async def test_label_guard_caps_distinct_values_and_counts_overflow(
    make_observability: Factory, metrics_registry: Any
) -> None:
    obs = make_observability(max_label_values=3)
    for route in ["/a", "/b", "/c", "/d", "/e", "/a"]:
        counter, _ = obs.metrics.server_children("GET", route, 200)
        counter.inc()

    def value(route: str) -> float:
        return metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route=route,
            status_code="200",
        )

    assert [value(r) for r in ["/a", "/b", "/c", OVERFLOW_VALUE]] == [2, 1, 1, 2]
    assert (
        metric_value(
            metrics_registry,
            "todo_observability_label_overflow_total",
            metric="http_server_requests_total",
            label="route",
        )
        == 2
    )


async def test_mount_with_parameters_is_labelled_with_its_template(
    make_observability: Factory, metrics_registry: Any
) -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    inner = Starlette(routes=[Route("/items/{item_id}", item)])
    app = Starlette(routes=[Mount("/api/{version}", routes=[Mount("/shop", app=inner)])])
    obs = make_observability(app)
    async with client(app) as http:
        assert (await http.get("/api/v1/shop/items/3")).text == "3"
        assert (await http.get("/api/v2/shop/items/4")).text == "4"
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/api/{version}/shop/items/{item_id}",
            status_code="200",
        )
        == 2
    )
    assert {span.name for span in server_spans(obs)} == {"GET /api/{version}/shop/items/{item_id}"}


async def test_fastapi_router_prefix_is_part_of_the_template(
    make_observability: Factory, metrics_registry: Any
) -> None:
    from fastapi import APIRouter

    router = APIRouter(prefix="/v1/users/{user}")

    @router.get("/tasks/{task_id}")
    async def task(user: str, task_id: int) -> int:
        return task_id

    app = FastAPI()
    app.include_router(router)
    make_observability(app)
    async with client(app) as http:
        await http.get("/v1/users/ann/tasks/3")
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/v1/users/{user}/tasks/{task_id}",
            status_code="200",
        )
        == 1
    )


async def test_non_standard_method_is_labelled_other(
    make_observability: Factory, metrics_registry: Any
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        await http.request("PURGE", "/tasks/1")
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="_OTHER",
            route="/tasks/{task_id}",
            status_code="405",
        )
        == 1
    )
    [span] = server_spans(obs)
    assert span.attributes["http.request.method_original"] == "PURGE"


async def test_one_server_span_with_semantic_attributes(make_observability: Factory) -> None:
    app = tasks_app()
    obs = make_observability(
        app, service_name="backend", service_version="2.0.0", environment="test"
    )
    async with client(app) as http:
        await http.get("/tasks/9?x=1", headers={"User-Agent": "probe/1"})
    [span] = spans(obs)
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /tasks/{task_id}"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.route"] == "/tasks/{task_id}"
    assert span.attributes["url.path"] == "/tasks/9"
    assert span.attributes["url.scheme"] == "http"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["user_agent.original"] == "probe/1"
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "backend"
    assert span.resource.attributes["service.version"] == "2.0.0"
    assert span.resource.attributes["deployment.environment.name"] == "test"


async def test_incoming_traceparent_is_continued(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with client(app) as http:
        await http.get("/tasks/1", headers={"traceparent": traceparent, "tracestate": "vendor=1"})
    [span] = server_spans(obs)
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "1"
    [line] = captured_logs.find(message="task read")
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == f"{span.context.span_id:016x}"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # missing flags
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
        "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # bad version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "garbage",
    ],
)
async def test_malformed_traceparent_starts_a_new_trace(
    make_observability: Factory, traceparent: str
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        response = await http.get(
            "/tasks/1", headers={"traceparent": traceparent, "tracestate": "=,=bad"}
        )
    assert response.status_code == 200
    [span] = server_spans(obs)
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != "0af7651916cd43dd8448eb211c80319c"


async def test_baggage_restores_request_id_and_user_id(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = tasks_app()
    make_observability(app)
    async with client(app) as http:
        response = await http.get(
            "/tasks/1", headers={"baggage": "request_id=up-42,user_id=ann,other=x"}
        )
    assert response.headers["x-request-id"] == "up-42"
    [line] = captured_logs.find(message="task read")
    assert (line["request_id"], line["user_id"]) == ("up-42", "ann")


async def test_repeated_baggage_fields_are_combined(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    # RFC 9110 section 5.3: repeated list fields are one list, in order; the last one does not win.
    app = tasks_app()
    make_observability(app)
    async with client(app) as http:
        response = await http.get(
            "/tasks/1", headers=[("baggage", "request_id=up-42"), ("baggage", "user_id=ann")]
        )
    assert response.headers["x-request-id"] == "up-42"
    [line] = captured_logs.find(message="task read")
    assert (line["request_id"], line["user_id"]) == ("up-42", "ann")


async def test_repeated_tracestate_fields_are_combined_in_order(
    make_observability: Factory,
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        await http.get(
            "/tasks/1",
            headers=[
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
    [span] = server_spans(obs)
    assert span.parent is not None
    assert span.context.trace_state.to_header() == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


async def test_a_repeated_traceparent_restarts_the_trace(make_observability: Factory) -> None:
    app = tasks_app()
    obs = make_observability(app)
    async with client(app) as http:
        await http.get(
            "/tasks/1",
            headers=[
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
    [span] = server_spans(obs)
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" not in {
        "0af7651916cd43dd8448eb211c80319c",
        "0af7651916cd43dd8448eb211c80319d",
    }
    assert "congo" not in span.context.trace_state


async def test_header_request_id_wins_over_baggage(make_observability: Factory) -> None:
    app = tasks_app()
    make_observability(app)
    async with client(app) as http:
        response = await http.get(
            "/tasks/1", headers={"baggage": "request_id=up-42", "X-Request-ID": "direct"}
        )
    assert response.headers["x-request-id"] == "direct"


async def test_user_id_set_in_sync_dependency_reaches_access_log_and_later_lines(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    def authenticate(request: Request) -> str:  # sync: FastAPI runs it in a thread pool
        user = request.headers["authorization"].removeprefix("Bearer ")
        set_user_id(user)
        return user

    app = FastAPI()

    @app.get("/me")
    async def me(user: str = Depends(authenticate)) -> dict[str, str]:
        log.info("profile read")
        return {"user": user}

    make_observability(app)
    async with client(app) as http:
        await http.get("/me", headers={"Authorization": "Bearer user-9"})
    [line] = captured_logs.find(message="profile read")
    assert line["user_id"] == "user-9"
    [access] = captured_logs.access()
    assert access["user_id"] == "user-9"


async def test_context_survives_sync_endpoints_threadpool_and_background_tasks(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = FastAPI()

    def in_thread() -> None:
        log.info("in thread")

    def in_background(task_id: int) -> None:
        with bind_context(task_id=task_id):
            log.info("in background")

    @app.get("/sync")
    def sync_endpoint(tasks: BackgroundTasks) -> str | None:
        log.info("in sync endpoint")
        tasks.add_task(in_background, 5)
        return get_request_id()

    @app.get("/pool")
    async def pool() -> str:
        await run_in_threadpool(in_thread)
        return "ok"

    make_observability(app)
    async with client(app) as http:
        first = await http.get("/sync")
        second = await http.get("/pool")
    rid1, rid2 = first.headers["x-request-id"], second.headers["x-request-id"]
    assert first.json() == rid1
    assert captured_logs.find(message="in sync endpoint")[0]["request_id"] == rid1
    [background] = captured_logs.find(message="in background")
    assert background["request_id"] == rid1
    assert background["context"] == {"task_id": 5}
    assert captured_logs.find(message="in thread")[0]["request_id"] == rid2


async def test_concurrent_requests_keep_their_own_context(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = FastAPI()

    @app.get("/slow/{n}")
    async def slow(n: int) -> str | None:
        set_user_id(f"user-{n}")
        await asyncio.sleep(0.01 * (5 - n))
        log.info("done", extra={"n": n})
        return get_request_id()

    make_observability(app)
    async with client(app) as http:
        responses = await asyncio.gather(*(http.get(f"/slow/{n}") for n in range(5)))
    by_n = {line["context"]["n"]: line for line in captured_logs.find(message="done")}
    for n, response in enumerate(responses):
        assert by_n[n]["request_id"] == response.headers["x-request-id"] == response.json()
        assert by_n[n]["user_id"] == f"user-{n}"


async def test_probe_and_metrics_paths_are_not_measured_but_failing_probes_are_logged(
    make_observability: Factory, captured_logs: LogCapture, metrics_registry: Any
) -> None:
    state = {"ready": True}

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", status_code=200 if state["ready"] else 503)

    app = Starlette(routes=[Route("/ping", ready)])
    obs = make_observability(app, excluded_paths="/ping,/metrics")
    async with client(app) as http:
        ok = await http.get("/ping")
        await http.get("/metrics")
        state["ready"] = False
        failing = await http.get("/ping")
    assert "x-request-id" in ok.headers
    assert failing.status_code == 503
    assert spans(obs) == []
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/ping",
            status_code="200",
        )
        == 0
    )
    [access] = captured_logs.access()
    assert access["context"]["status"] == 503
    assert access["context"]["path"] == "/ping"
    assert access["level"] == "WARNING"


async def test_user_id_header_is_ignored_unless_trusted(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    untrusted, trusted = tasks_app(), tasks_app()
    make_observability(untrusted)
    async with client(untrusted) as http:
        await http.get("/tasks/1", headers={"X-User-ID": "mallory"})
    make_observability(trusted, user_id_header="X-User-ID")
    async with client(trusted) as http:
        await http.get("/tasks/2", headers={"X-User-ID": "gateway-user"})
    users = [line["user_id"] for line in captured_logs.find(message="task read")]
    assert users == [None, "gateway-user"]


async def test_user_id_resolver_is_failsafe(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    calls: list[str] = []

    def resolver(scope: Any) -> str | None:
        calls.append(scope["path"])
        if scope["path"] == "/tasks/2":
            raise KeyError("resolver bug")
        return "resolved-user"

    app = tasks_app()
    make_observability(app, user_id_resolver=resolver)
    async with client(app) as http:
        assert (await http.get("/tasks/1")).status_code == 200
        assert (await http.get("/tasks/2")).status_code == 200
        assert (await http.get("/tasks/2")).status_code == 200
    assert calls == ["/tasks/1", "/tasks/2", "/tasks/2"]
    users = [line["user_id"] for line in captured_logs.find(message="task read")]
    assert users == ["resolved-user", None, None]
    reports = [
        line for line in captured_logs.lines if line["logger"] == "todo_observability.plugins"
    ]
    assert len(reports) == 1
    assert reports[0]["exception"]["type"] == "KeyError"


async def test_captured_headers_are_span_attributes_with_secrets_redacted(
    make_observability: Factory,
) -> None:
    app = tasks_app()
    obs = make_observability(app, capture_headers="X-Tenant, Authorization")
    async with client(app) as http:
        await http.get("/tasks/1", headers={"X-Tenant": "acme", "Authorization": "Bearer s3cr3t"})
    [span] = server_spans(obs)
    assert span.attributes["http.request.header.x_tenant"] == "acme"
    assert span.attributes["http.request.header.authorization"] == "[REDACTED]"
    assert "s3cr3t" not in str(dict(span.attributes))


async def test_unsampled_request_still_counts_and_propagates(
    make_observability: Factory, metrics_registry: Any, captured_logs: LogCapture
) -> None:
    app = tasks_app()
    obs = make_observability(app, sample_ratio=0.0)
    async with client(app) as http:
        await http.get("/tasks/1")
    assert spans(obs) == []
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/tasks/{task_id}",
            status_code="200",
        )
        == 1
    )
    [line] = captured_logs.find(message="task read")
    assert line["trace_id"] is not None  # the context exists, it is just not recorded


async def test_sampled_parent_flag_is_honoured_at_low_ratio(make_observability: Factory) -> None:
    app = tasks_app()
    obs = make_observability(app, sample_ratio=0.0)
    async with client(app) as http:
        await http.get(
            "/tasks/1",
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
    assert len(server_spans(obs)) == 1


async def test_configuring_the_same_app_twice_warns_and_does_nothing(
    make_observability: Factory,
) -> None:
    app = tasks_app()
    first = make_observability(app)
    with pytest.warns(RuntimeWarning, match="already called for this app"):
        second = make_observability(app)
    assert second is first
    async with client(app) as http:
        await http.get("/tasks/1")
    assert len(server_spans(first)) == 1


async def test_shutdown_undoes_the_wiring(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    app = tasks_app()
    obs = make_observability(app)
    obs.shutdown()
    obs.shutdown()  # idempotent
    async with client(app) as http:
        response = await http.get("/tasks/1")
    assert "x-request-id" not in response.headers
    assert not hasattr(app.state, "observability")
    assert captured_logs.access() == []


async def test_middleware_wraps_a_bare_asgi_app_and_answers_500_itself(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/fail":
            raise RuntimeError("bare failure")
        await PlainTextResponse("hello")(scope, receive, send)

    obs = make_observability()
    app = ObservabilityMiddleware(bare, observability=obs)
    async with client(app, raise_app_exceptions=False) as http:
        ok = await http.get("/hello", headers={"X-Request-ID": "bare-1"})
        failed = await http.get("/fail", headers={"X-Request-ID": "bare-2"})
    assert ok.text == "hello"
    assert ok.headers["x-request-id"] == "bare-1"
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "bare-2"
    assert [line["context"]["status"] for line in captured_logs.access()] == [200, 500]
    assert [span.name for span in server_spans(obs)] == ["GET", "GET"]


async def test_non_http_scopes_pass_through_untouched(make_observability: Factory) -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.shutdown.complete"})

    obs = make_observability()
    flushed: list[int] = []

    def flush(timeout_millis: int = 30_000) -> bool:
        flushed.append(timeout_millis)
        return True

    obs.flush = flush  # type: ignore[method-assign]
    middleware = ObservabilityMiddleware(inner, observability=obs)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {}

    await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert seen == ["websocket", "lifespan"]
    assert sent == [{"type": "lifespan.shutdown.complete"}]
    # The lifespan work is the Observability's (configure(app) runs it), not the middleware's.
    assert flushed == []
    async with obs.lifespan():
        assert flushed == []
    assert flushed == [5_000]


async def test_fastapi_native_tracing_is_turned_off_while_configured(
    make_observability: Factory,
) -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> int:
        return 1

    obs = make_observability(app)
    assert app._telemetry["tracing"] is False
    async with client(app) as http:
        await http.get("/x")
    assert [span.name for span in spans(obs)] == ["GET /x"]
    obs.shutdown()
    assert app._telemetry["tracing"] is True


async def test_configure_rejects_something_that_is_not_a_starlette_app(
    make_observability: Factory,
) -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(TypeError, match=r"Wrap any other ASGI app with ObservabilityMiddleware"):
        make_observability(bare)


async def test_middleware_alone_records_into_the_observability_configured_last(
    make_observability: Factory,
) -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("hi")(scope, receive, send)

    obs = make_observability(service_name="standalone")
    middleware = ObservabilityMiddleware(bare)
    async with client(middleware) as http:
        response = await http.get("/")
    assert response.text == "hi"
    assert middleware.observability is obs
    assert [span.resource.attributes["service.name"] for span in spans(obs)] == ["standalone"]


def test_middleware_alone_without_any_observability_says_what_to_pass() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(
        ConfigurationError, match=r"pass observability=configure\(service_name="
    ) as raised:
        ObservabilityMiddleware(bare)
    assert raised.value.field == "observability"
    # Nothing was configured behind the caller's back: no handler on the root logger.
    assert not any(
        getattr(handler, "_todo_observability_handler", False)
        for handler in logging.getLogger().handlers
    )
