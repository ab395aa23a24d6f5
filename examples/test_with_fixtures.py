"""Test a service with the pytest fixtures that ship with todo-observability.

The fixtures load automatically once the package is installed:
`make_observability` calls `configure()` with test defaults (a fresh registry,
in-memory spans, every trace kept, logs into `captured_logs`) and shuts it down
after the test. Run with `pytest examples/test_with_fixtures.py`.
"""

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from examples.quickstart import router
from todo_observability import Observability
from todo_observability.testing import LogCapture, metric_value


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_reading_a_task_is_logged_traced_and_counted(
    make_observability: Callable[..., Observability],
    captured_logs: LogCapture,
    metrics_registry: CollectorRegistry,
) -> None:
    app = FastAPI()
    app.include_router(router)
    obs = make_observability(app, service_name="quickstart")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/tasks/42", headers={"X-Request-ID": "test-42"})

    assert response.headers["X-Request-ID"] == "test-42"

    [line] = captured_logs.find(message="task read")
    assert line["request_id"] == "test-42"
    assert line["context"] == {"task_id": 42}

    [access] = captured_logs.access()
    assert access["context"]["route"] == "/tasks/{task_id}"
    assert access["trace_id"] == line["trace_id"]

    assert obs.span_exporter is not None
    [span] = obs.span_exporter.get_finished_spans()
    assert span.name == "GET /tasks/{task_id}"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200

    requests = metric_value(
        metrics_registry,
        "http_server_requests_total",
        method="GET",
        route="/tasks/{task_id}",
        status_code="200",
    )
    assert requests == 1.0
