"""Every program in examples/ runs, and the documentation's tables match the code.

Each example is driven for real: its app is built with test overrides (a fresh
registry, in-memory spans, logs into `captured_logs`), requests go through
`httpx.ASGITransport`, and the assertions read the JSON lines, the response
headers, the finished spans and the `/metrics` page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from examples import (
    bare_asgi,
    bind_context,
    health,
    http_client,
    plugin,
    quickstart,
    scrubbing,
    starlette_app,
    traced_measured,
    user_id,
)
from todo_observability import Observability, ObservabilityMiddleware
from todo_observability.config import OPTIONS
from todo_observability.metrics import CATALOGUE
from todo_observability.testing import LogCapture, metric_value

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass
class Built:
    """An example's app, built with test overrides, and what it records into."""

    app: Any
    observability: Observability
    registry: CollectorRegistry

    def client(self, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=raise_app_exceptions)
        return httpx.AsyncClient(transport=transport, base_url="http://test")

    def spans(self) -> dict[str, ReadableSpan]:
        exporter = self.observability.span_exporter
        assert exporter is not None
        return {span.name: span for span in exporter.get_finished_spans()}


def _observability_of(app: Any) -> Observability:
    if isinstance(app, ObservabilityMiddleware):
        return app.observability
    obs = app.state.observability
    assert isinstance(obs, Observability)
    return obs


@pytest.fixture
def build(captured_logs: LogCapture) -> Iterator[Callable[..., Built]]:
    """Build an example's app with test overrides; shut everything down after the test."""
    built: list[Built] = []

    def factory(create_app: Callable[..., Any], **overrides: Any) -> Built:
        registry = CollectorRegistry()
        overrides.setdefault("traces_exporter", "memory")
        overrides.setdefault("sample_ratio", 1.0)
        overrides.setdefault("load_plugins", False)
        overrides.setdefault("log_stream", captured_logs)
        app = create_app(registry=registry, **overrides)
        result = Built(app, _observability_of(app), registry)
        built.append(result)
        return result

    yield factory
    for result in reversed(built):
        result.observability.shutdown()


# --- quickstart -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_quickstart_logs_json_with_request_id_and_trace(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(quickstart.create_app)
    async with service.client() as client:
        response = await client.get("/tasks/42", headers={"X-Request-ID": "req-42"})

    assert response.status_code == 200
    assert response.json() == {"id": 42, "title": "Daily standup"}
    assert response.headers["X-Request-ID"] == "req-42"

    [line] = captured_logs.find(message="task read")
    assert line["service_name"] == "quickstart"
    assert line["logger"] == "examples.quickstart"
    assert line["level"] == "INFO"
    assert line["request_id"] == "req-42"
    assert line["context"] == {"task_id": 42}
    span = service.spans()["GET /tasks/{task_id}"]
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"

    [access] = captured_logs.access()
    assert access["message"] == "GET /tasks/{task_id} 200"
    assert access["request_id"] == "req-42"
    assert access["context"]["route"] == "/tasks/{task_id}"
    assert access["context"]["path"] == "/tasks/42"
    assert access["context"]["status"] == 200


@pytest.mark.anyio
async def test_quickstart_generates_a_request_id_when_none_or_an_invalid_one_comes(
    build: Callable[..., Built],
) -> None:
    service = build(quickstart.create_app)
    async with service.client() as client:
        plain = await client.get("/tasks/1")
        hostile = await client.get("/tasks/1", headers={"X-Request-ID": "bad id\twith spaces"})

    assert HEX32.fullmatch(plain.headers["X-Request-ID"])
    assert HEX32.fullmatch(hostile.headers["X-Request-ID"])


@pytest.mark.anyio
async def test_quickstart_serves_red_metrics_labelled_by_route_template(
    build: Callable[..., Built],
) -> None:
    service = build(quickstart.create_app)
    async with service.client() as client:
        await client.get("/tasks/1")
        await client.get("/tasks/2")
        await client.get("/nowhere")
        page = await client.get("/metrics")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = page.text
    assert (
        'http_server_requests_total{method="GET",route="/tasks/{task_id}",status_code="200"} 2.0'
        in text
    )
    assert (
        'http_server_requests_total{method="GET",route="<unmatched>",status_code="404"} 1.0' in text
    )
    assert (
        'target_info{deployment_environment="dev",service_name="quickstart",service_version="0.0.0"} 1.0'
        in text
    )
    # The scrape itself is excluded from the metrics.
    assert 'route="/metrics"' not in text


@pytest.mark.anyio
async def test_quickstart_metrics_carry_trace_id_exemplars_in_openmetrics(
    build: Callable[..., Built],
) -> None:
    service = build(quickstart.create_app)
    async with service.client() as client:
        await client.get("/tasks/1")
        page = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    assert page.headers["content-type"].startswith("application/openmetrics-text")
    trace_id = f"{service.spans()['GET /tasks/{task_id}'].context.trace_id:032x}"
    assert f'# {{trace_id="{trace_id}"}}' in page.text
    assert page.text.endswith("# EOF\n")


@pytest.mark.anyio
async def test_quickstart_continues_an_incoming_w3c_trace(build: Callable[..., Built]) -> None:
    service = build(quickstart.create_app)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with service.client() as client:
        await client.get("/tasks/1", headers={"traceparent": traceparent})

    span = service.spans()["GET /tasks/{task_id}"]
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


@pytest.mark.anyio
async def test_quickstart_file_exporter_writes_zipkin_v2_json_lines(
    build: Callable[..., Built], tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    service = build(quickstart.create_app, traces_exporter="file", traces_file=str(spans_file))
    async with service.client() as client:
        await client.get("/tasks/1")
    service.observability.shutdown()

    [line] = spans_file.read_text(encoding="utf-8").splitlines()
    [span] = json.loads(line)
    assert span["name"] == "GET /tasks/{task_id}"
    assert span["kind"] == "SERVER"
    assert span["localEndpoint"] == {"serviceName": "quickstart"}
    assert HEX32.fullmatch(span["traceId"])
    assert span["tags"]["http.route"] == "/tasks/{task_id}"
    assert span["tags"]["http.response.status_code"] == "200"


@pytest.mark.slow
def test_quickstart_main_runs_under_uvicorn_with_json_logs() -> None:
    env = {**os.environ, "PORT": "0", "OTEL_TRACES_EXPORTER": "none", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # If the server never says where it listens, stop waiting for it after a while.
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        lines: list[dict[str, Any]] = []
        url = None
        for raw in process.stdout:
            lines.append(json.loads(raw))
            match = re.search(r"Uvicorn running on (http://\S+)", lines[-1]["message"])
            if match:
                url = match[1]
                break
        assert url is not None, lines
        response = httpx.get(f"{url}/tasks/7", headers={"X-Request-ID": "uvicorn-7"})
        assert response.headers["X-Request-ID"] == "uvicorn-7"
    finally:
        watchdog.cancel()
        process.terminate()
        out, err = process.communicate(timeout=10)
    lines += [json.loads(raw) for raw in out.splitlines()]
    assert err == ""  # nothing printed outside the JSON handler
    assert {"uvicorn.error", "__main__", "todo_observability.access"} <= {
        line["logger"] for line in lines
    }
    [access] = [line for line in lines if line["logger"] == "todo_observability.access"]
    assert access["request_id"] == "uvicorn-7"
    assert access["message"] == "GET /tasks/{task_id} 200"


MULTIPROCESS_WORKER = """
import asyncio, sys
import httpx
from examples.quickstart import create_app

async def main() -> None:
    app = create_app(traces_exporter="none", configure_logging=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        await client.get("/tasks/1")
        if sys.argv[1:] == ["scrape"]:
            print((await client.get("/metrics")).text)

asyncio.run(main())
"""


@pytest.mark.slow
def test_quickstart_metrics_add_up_over_processes_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_WORKER, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    worker()
    worker()
    page = worker("scrape")
    assert (
        'http_server_requests_total{method="GET",route="/tasks/{task_id}",status_code="200"} 3.0'
        in page.splitlines()
    )


# --- other app shapes ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_starlette_app_is_instrumented_like_fastapi(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(starlette_app.create_app)
    async with service.client() as client:
        response = await client.get("/users/alice/tasks")

    assert response.json() == [{"id": 1, "owner": "alice"}]
    request_id = response.headers["X-Request-ID"]
    [line] = captured_logs.find(message="tasks listed")
    assert line["service_name"] == "starlette-example"
    assert line["request_id"] == request_id
    assert line["context"] == {"owner": "alice"}
    assert "GET /users/{owner}/tasks" in service.spans()
    assert (
        metric_value(
            service.registry,
            "http_server_requests_total",
            method="GET",
            route="/users/{owner}/tasks",
            status_code="200",
        )
        == 1.0
    )


@pytest.mark.anyio
async def test_bare_asgi_app_gets_request_id_span_and_unmatched_route(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(bare_asgi.create_app)
    async with service.client() as client:
        response = await client.get("/anything", headers={"X-Request-ID": "bare-1"})
        page = await client.get("/metrics")

    assert response.text == "hello\n"
    assert response.headers["X-Request-ID"] == "bare-1"
    [line] = captured_logs.find(message="hello")
    assert line["request_id"] == "bare-1"
    assert line["context"] == {"path": "/anything"}
    assert list(service.spans()) == ["GET"]
    assert (
        'http_server_requests_total{method="GET",route="<unmatched>",status_code="200"} 1.0'
        in page.text
    )


# --- context: user id and bound fields ------------------------------------------------------


@pytest.mark.anyio
async def test_user_id_set_in_a_sync_dependency_reaches_later_lines_and_access_log(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(user_id.create_app)
    async with service.client() as client:
        response = await client.get("/me/tasks", headers={"Authorization": "Bearer token-alice"})

    assert response.json() == [{"id": 1, "owner": "alice"}]
    [line] = captured_logs.find(message="listing tasks")
    assert line["user_id"] == "alice"
    [access] = captured_logs.access()
    assert access["user_id"] == "alice"
    assert access["context"]["status"] == 200


@pytest.mark.anyio
async def test_user_id_stays_empty_when_authentication_fails(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(user_id.create_app)
    async with service.client() as client:
        response = await client.get("/me/tasks", headers={"Authorization": "Bearer forged"})

    assert response.status_code == 401
    assert captured_logs.find(message="listing tasks") == []
    [rejected] = captured_logs.find(message="rejected credentials")
    assert rejected["level"] == "WARNING"
    assert rejected["context"] == {"authorization": "[REDACTED]"}
    assert "forged" not in json.dumps(captured_logs.lines)
    [access] = captured_logs.access()
    assert access["user_id"] is None
    assert access["context"]["status"] == 401


@pytest.mark.anyio
async def test_bind_context_fields_apply_inside_the_block_and_the_decorated_function(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(bind_context.create_app)
    async with service.client() as client:
        response = await client.post("/tasks/9/complete")

    assert response.json() == {"id": 9, "completed": True}
    contexts = {
        line["message"]: line["context"]
        for line in captured_logs.lines
        if line["logger"] == "examples.bind_context"
    }
    assert contexts == {
        "task completed": {"task_id": 9},
        "reminder scheduled": {"task_id": 9, "component": "scheduler"},
        "done": {},
    }


# --- traced and measured ----------------------------------------------------------------


@pytest.mark.anyio
async def test_traced_functions_are_child_spans_and_measured_ones_count(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(traced_measured.create_app)
    async with service.client() as client:
        response = await client.post("/tasks/3/recur", params={"every_days": 7})

    assert response.json() == {"id": 3, "next": "2025-01-13"}
    spans = service.spans()
    server = spans["POST /tasks/{task_id}/recur"]
    for name in ("recurrence.next_date", "send_reminder"):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == server.context.span_id
    assert spans["recurrence.next_date"].attributes == {"component": "recurring"}
    [line] = captured_logs.find(message="next date computed")
    assert line["span_id"] == f"{spans['recurrence.next_date'].context.span_id:016x}"
    assert line["context"] == {"next": "2025-01-13"}
    for operation in ("recurrence.next_date", "reminder.send"):
        assert (
            metric_value(
                service.registry, "operations_total", operation=operation, outcome="success"
            )
            == 1.0
        )
        assert (
            metric_value(service.registry, "operation_duration_seconds_count", operation=operation)
            == 1.0
        )
    assert (
        metric_value(service.registry, "operation_duration_seconds_sum", operation="reminder.send")
        >= 0.01
    )


@pytest.mark.anyio
async def test_an_escaping_exception_marks_span_metric_and_access_line_as_errors(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(traced_measured.create_app)
    async with service.client(raise_app_exceptions=False) as client:
        response = await client.post("/tasks/3/recur", params={"every_days": 0})

    assert response.status_code == 500
    assert HEX32.fullmatch(response.headers["X-Request-ID"])
    spans = service.spans()
    assert spans["recurrence.next_date"].status.status_code is StatusCode.ERROR
    assert spans["POST /tasks/{task_id}/recur"].status.status_code is StatusCode.ERROR
    assert (
        metric_value(
            service.registry, "operations_total", operation="recurrence.next_date", outcome="error"
        )
        == 1.0
    )
    [access] = captured_logs.access()
    assert access["level"] == "ERROR"
    assert access["request_id"] == response.headers["X-Request-ID"]
    assert access["exception"]["type"] == "ValueError"
    assert access["exception"]["message"] == "every_days must be positive"


# --- outgoing calls --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_client_propagates_trace_request_id_and_user_id(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    backend = build(http_client.create_backend)
    frontend = build(
        http_client.create_frontend,
        backend_url="http://backend",
        backend_transport=httpx.ASGITransport(app=backend.app),
    )
    async with (
        frontend.app.router.lifespan_context(frontend.app),
        frontend.client() as client,
    ):
        response = await client.get("/call-backend", headers={"X-Request-ID": "chain-1"})

    saw = response.json()["backend_saw"]
    client_span = frontend.spans()["GET"]
    assert client_span.kind is SpanKind.CLIENT
    trace_id = f"{client_span.context.trace_id:032x}"
    version, parent_trace, parent_span, flags = saw["traceparent"].split("-")
    assert (version, parent_trace) == ("00", trace_id)
    assert parent_span == f"{client_span.context.span_id:016x}"
    assert int(flags, 16) & 0x01  # sampled
    assert saw["x-request-id"] == "chain-1"
    assert sorted(saw["baggage"].split(",")) == ["request_id=chain-1", "user_id=alice"]

    backend_span = backend.spans()["GET /headers"]
    assert backend_span.parent is not None
    assert backend_span.parent.span_id == client_span.context.span_id
    [backend_line] = captured_logs.find(message="backend called")
    assert backend_line["service_name"] == "backend"
    assert backend_line["request_id"] == "chain-1"
    assert backend_line["user_id"] == "alice"
    assert backend_line["trace_id"] == trace_id
    assert (
        metric_value(
            frontend.registry,
            "http_client_requests_total",
            method="GET",
            server_address="backend",
            status_code="200",
        )
        == 1.0
    )


# --- plugins ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_plugin_enriches_log_lines_and_resolves_the_user_id(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(plugin.create_app)
    async with service.client() as client:
        await client.get("/ping", headers={"X-Authenticated-User": "bob"})
        await client.get("/ping")

    first, second = captured_logs.find(message="pong")
    assert first["team"] == "tasks"
    assert first["user_id"] == "bob"
    assert second["user_id"] is None
    assert [line["user_id"] for line in captured_logs.access()] == ["bob", None]
    assert all(line["team"] == "tasks" for line in captured_logs.lines)


# --- the pytest example --------------------------------------------------------------------


@pytest.mark.slow
def test_fixture_example_is_a_passing_pytest_file() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/test_with_fixtures.py",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.anyio
async def test_health_example_reports_the_dependency_and_recovers(
    build: Callable[..., Built],
) -> None:
    service = build(health.create_app)
    async with service.client() as client:
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
        health.queue.reachable = False
        try:
            service.observability.health.invalidate("queue")  # rather than wait out the TTL
            down = await client.get("/health/ready")
            still_live = await client.get("/health/live")
        finally:
            health.queue.reachable = True
    assert (ready.status_code, live.status_code, down.status_code, still_live.status_code) == (
        200,
        200,
        503,
        200,
    )
    assert ready.json()["checks"]["queue"]["status"] == "UP"
    assert down.json()["checks"]["queue"]["error"] == "ConnectionError: queue unreachable"


def test_every_example_is_run_by_a_test_and_included_in_the_docs() -> None:
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("*.py"))
    groups = re.findall(r"^from examples import \(([^)]*)\)", sources, re.M)
    groups += re.findall(r"^from examples import ([\w, ]+)$", sources, re.M)
    imported = {name.strip() for group in groups for name in group.split(",") if name.strip()}
    imported |= set(re.findall(r"examples[./](\w+)", sources))
    examples = {path.stem for path in EXAMPLES.glob("*.py")} - {"__init__"}
    assert examples - imported == set(), "examples no test runs"
    docs = "\n".join(page.read_text(encoding="utf-8") for page in DOCS.rglob("*.md"))
    included = set(re.findall(r'--8<-- "examples/(\w+)\.py', docs))
    assert included == examples


# --- the docs' tables match the code -----------------------------------------------------------


def _table(page: str, first_header: str) -> list[list[str]]:
    """The rows of the markdown table on `page` whose first column is `first_header`."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("|") and line.strip("| ").split(" |")[0] == first_header
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"expected a single code span, got {cell!r}"
    return match[1]


def test_configuration_page_lists_every_option_with_its_env_var_and_default() -> None:
    rows = _table("configuration.md", "Parameter")
    documented = [(_code(row[0]), _code(row[1]), row[2]) for row in rows]
    assert [(field, env) for field, env, _ in documented] == [
        (option.field, option.env) for option in OPTIONS
    ]
    for (field, _, default), option in zip(documented, OPTIONS, strict=True):
        assert default.replace("`", "") == option.default, field


def test_metrics_page_lists_the_whole_catalogue() -> None:
    rows = _table("metrics.md", "Metric")
    documented = [
        (
            _code(row[0]),
            row[1],
            tuple(_code(label) for label in row[2].split(", ") if label != "none"),
            row[3].replace("`", ""),
        )
        for row in rows
    ]
    assert documented == [(spec.name, spec.type, spec.labels, spec.help) for spec in CATALOGUE]


# --- scrubbing --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_scrubbing_example_keeps_every_secret_out_of_lines_and_probe_bodies(
    build: Callable[..., Built], captured_logs: LogCapture
) -> None:
    service = build(scrubbing.create_app, health_details="full")
    async with service.client() as client:
        assert (await client.post("/login")).json() == {"ok": False}
        ready = await client.get("/health/ready")
    lines = [line for line in captured_logs.lines if line["logger"] == "examples.scrubbing"]
    text = json.dumps(lines) + ready.text
    assert "s3cr3t-pw" not in text
    assert "tok-123" not in text
    connecting, refused, failed = lines
    assert connecting["message"] == (
        "connecting to postgresql://todo:[REDACTED]@db.internal:5432/todo"
    )
    assert refused["context"] == {
        "url": "https://api.example.com/v1/me?page=1&access_token=[REDACTED]",
        "headers": {"Authorization": "[REDACTED]", "Accept": "application/json"},
        "db_pass": "[REDACTED]",
    }
    assert failed["exception"]["message"] == "token=[REDACTED] was rejected"
    assert ready.json()["checks"]["database"]["error"] == (
        "ConnectionError: could not connect to postgresql://todo:[REDACTED]@db.internal:5432/todo"
    )
