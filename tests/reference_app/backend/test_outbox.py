"""The outbox: a sidecar that refuses or cannot be reached fails no request and loses no event."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from reference_app.backend.models import OutboxEvent
from reference_app.common.events import REMINDERS, TASK_UPDATES
from todo_observability.testing import LogCapture, SpanCapture
from todo_observability.testing.sidecar import Broker

from .conftest import Harness, eventually, make_settings, running_backend

pytestmark = pytest.mark.anyio

DUE = "2030-01-01T09:00:00Z"
REMIND = "2030-01-01T08:45:00Z"


async def pending_rows(backend: Harness) -> int:
    db = backend.app.state.backend.db
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0


async def test_a_refused_publish_fails_no_request_and_is_delivered_later(
    backend: Harness, captured_logs: LogCapture
) -> None:
    backend.sidecar.fail_next_publishes(2)  # the request's attempt and the first retry
    response = await backend.client.post(
        "/tasks",
        json={"title": "Standup", "due_at": DUE, "remind_at": REMIND},
        headers=backend.auth(),
    )
    assert response.status_code == 201
    [failure, *_] = captured_logs.find(message="outbox: publish failed, kept for retry")
    assert failure["level"] == "WARNING"
    assert failure["request_id"] == response.headers["x-request-id"]
    assert failure["context"]["topic"] == TASK_UPDATES
    assert "ERR_PUBSUB_PUBLISH_MESSAGE" in failure["context"]["error"]

    await backend.sidecar.wait_for(
        lambda: len(backend.events(TASK_UPDATES)) == 1 and len(backend.events(REMINDERS)) == 1
    )
    await eventually(lambda: backend.metric("outbox_pending_events") == 0.0)
    assert await pending_rows(backend) == 0
    assert backend.metric("outbox_publish_failures_total", topic=TASK_UPDATES) == 2.0
    assert backend.metric("outbox_publish_failures_total", topic=REMINDERS) == 0.0
    assert (
        backend.metric("messaging_publish_messages_total", topic=TASK_UPDATES, outcome="error")
        == 2.0
    )
    # Delivered once each, with the id the row was written with.
    [updated] = backend.events(TASK_UPDATES)
    assert updated["data"]["action"] == "created"
    assert updated["id"] == failure["context"]["event_id"]


async def test_a_retry_runs_in_a_new_trace_linked_to_the_request(
    sqlite_backend: Harness, captured_spans: SpanCapture, captured_logs: LogCapture
) -> None:
    backend = sqlite_backend
    backend.sidecar.fail_next_publishes(1)
    response = await backend.client.post(
        "/tasks", json={"title": "Standup"}, headers=backend.auth()
    )
    await backend.sidecar.wait_for(lambda: len(backend.events(TASK_UPDATES)) == 1)
    await eventually(lambda: bool(captured_logs.find(message="outbox: event published on retry")))

    [server] = captured_spans.named("POST /tasks")
    refused, retried = captured_spans.named(f"{TASK_UPDATES} publish")
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.parent is not None
    assert refused.parent.span_id == server.context.span_id
    assert retried.parent is None
    assert retried.context.trace_id != server.context.trace_id
    [link] = retried.links
    assert link.context.span_id == server.context.span_id
    assert link.context.trace_id == server.context.trace_id
    [published] = captured_logs.find(message="outbox: event published on retry")
    assert published["context"]["origin_request_id"] == response.headers["x-request-id"]
    assert published["context"]["attempts"] == 2


async def test_one_tasks_events_keep_their_order_through_an_outage(
    backend: Harness, captured_logs: LogCapture
) -> None:
    backend.sidecar.fail_next_publishes(3)
    auth = backend.auth()
    task = await backend.create(title="Standup")
    path = f"/tasks/{task['id']}"
    assert (await backend.client.patch(path, json={"title": "Team"}, headers=auth)).is_success
    assert (await backend.client.post(f"{path}/complete", headers=auth)).is_success
    assert (await backend.client.delete(path, headers=auth)).is_success

    await backend.sidecar.wait_for(lambda: len(backend.events(TASK_UPDATES)) == 4)
    assert [e["data"]["action"] for e in backend.events(TASK_UPDATES)] == [
        "created",
        "updated",
        "completed",
        "deleted",
    ]
    assert len(backend.events("task-events")) == 1
    assert len({e["id"] for e in backend.events(TASK_UPDATES)}) == 4
    assert captured_logs.find(
        message="outbox: older events of the task are waiting; these follow them"
    )
    await eventually(lambda: backend.metric("outbox_pending_events") == 0.0)


async def test_events_left_by_a_stopped_backend_are_published_by_the_next(
    sqlite_url: str,
    metrics_registry: CollectorRegistry,
    captured_logs: LogCapture,
    tmp_path: Path,
) -> None:
    broker = Broker(component_retry_interval=0.005)
    settings = make_settings(sqlite_url)
    async with running_backend(
        settings, registry=metrics_registry, logs=captured_logs, broker=broker
    ) as first:
        first.sidecar.fail_next_publishes(10_000)  # an outage lasting past the shutdown
        task = await first.create(title="Standup", due_at=DUE, remind_at=REMIND)
        assert broker.messages("pubsub", TASK_UPDATES) == []
    async with running_backend(
        settings, registry=CollectorRegistry(), logs=captured_logs, broker=broker
    ) as second:
        await second.sidecar.wait_for(
            lambda: len(second.events(TASK_UPDATES)) == 1 and len(second.events(REMINDERS)) == 1
        )
        assert second.events(TASK_UPDATES)[0]["data"]["task_id"] == task["id"]
        await eventually(lambda: second.metric("outbox_pending_events") == 0.0)
        assert await pending_rows(second) == 0


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


async def test_an_unreachable_sidecar_fails_readiness_but_no_request(
    sqlite_url: str, metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    async with running_backend(
        make_settings(sqlite_url),
        registry=metrics_registry,
        logs=captured_logs,
        dapr_transport=httpx.MockTransport(_unreachable),
    ) as backend:
        created = await backend.client.post("/tasks", json={"title": "x"}, headers=backend.auth())
        assert created.status_code == 201
        ready = await backend.client.get("/health/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"]["status"] == "UP"
        assert checks["dapr-sidecar"]["status"] == "DOWN"
        assert "Connection refused" in checks["dapr-sidecar"]["error"]
        assert checks["dapr-pubsub-pubsub"]["status"] == "DOWN"
        # Kept, and retried with a backoff.
        await eventually(
            lambda: backend.metric("outbox_publish_failures_total", topic=TASK_UPDATES) >= 3
        )
        assert backend.metric("outbox_pending_events") == 1.0
        assert await pending_rows(backend) == 1
        failure = captured_logs.find(message="outbox: publish failed, kept for retry")[0]
        assert "ERR_SIDECAR_UNREACHABLE" in failure["context"]["error"]
