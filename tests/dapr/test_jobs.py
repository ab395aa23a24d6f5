"""Job triggers: the embedded scheduling context is restored and linked; outcomes become statuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from tests.helpers import client
from todo_observability import get_request_id, get_user_id
from todo_observability.dapr import Drop, Job, Retry, Subscriptions
from todo_observability.testing import metric_value

pytestmark = pytest.mark.anyio

SCHEDULER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def app_with(subs: Subscriptions, make_observability: Any) -> Any:
    app = Starlette()
    make_observability(app, service_name="notifications")
    subs.install(app)
    return app


async def trigger(app: Any, name: str, body: Any) -> int:
    async with client(app) as http:
        response = await http.post(
            f"/job/{name}",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
    return response.status_code


async def test_a_trigger_restores_ids_and_links_the_scheduling_span(
    make_observability: Any, captured_spans: Any, captured_logs: Any, metrics_registry: Any
) -> None:
    seen: list[tuple[Job, Any, Any]] = []
    subs = Subscriptions()

    @subs.job("reminder")
    async def remind(job: Job) -> None:
        seen.append((job, get_request_id(), get_user_id()))

    app = app_with(subs, make_observability)
    body = {
        "data": {"task_id": 42},
        "todo_observability": {
            "traceparent": SCHEDULER,
            "request_id": "req-7",
            "user_id": "alice",
            "scheduled_at": 1_700_000_000.5,
        },
    }
    assert await trigger(app, "reminder-42", body) == 200
    [(job, request_id, user_id)] = seen
    assert (job.name, job.job_type, job.data, job.attempt) == (
        "reminder-42",
        "reminder",
        {"task_id": 42},
        1,
    )
    assert job.scheduled_at == 1_700_000_000.5
    assert (request_id, user_id) == ("req-7", "alice")
    [span] = [s for s in captured_spans.spans if s.kind is SpanKind.CONSUMER]
    assert span.name == "reminder trigger"
    assert span.parent is None  # a new trace: triggers arrive without traceparent
    [link] = span.links
    assert f"{link.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    [line] = [line for line in captured_logs.lines if line["message"] == "job done"]
    assert line["request_id"] == "req-7"
    assert (
        metric_value(metrics_registry, "job_triggers_total", job_type="reminder", outcome="success")
        == 1
    )


async def test_plain_job_data_is_passed_through(make_observability: Any) -> None:
    seen: list[Any] = []
    subs = Subscriptions()

    @subs.job("cleanup")
    def cleanup(job: Job) -> None:
        seen.append(job.data)

    app = app_with(subs, make_observability)
    assert await trigger(app, "cleanup", {"older_than": "30d"}) == 200
    assert seen == [{"older_than": "30d"}]


@pytest.mark.parametrize(
    ("raised", "status", "outcome", "attempts_seen"),
    [
        (Retry("smtp_down"), 500, "retry", [1, 2]),
        (RuntimeError("x"), 500, "retry", [1, 2]),
        # A dropped trigger is parked; a later trigger (a replay) starts again at 1.
        (Drop("gone"), 404, "drop", [1, 1]),
    ],
)
async def test_outcomes_become_statuses_the_scheduler_understands(
    make_observability: Any,
    metrics_registry: Any,
    raised: Exception,
    status: int,
    outcome: str,
    attempts_seen: list[int],
) -> None:
    attempts: list[int] = []
    subs = Subscriptions()

    @subs.job("reminder")
    async def remind(job: Job) -> None:
        attempts.append(job.attempt)
        raise raised

    app = app_with(subs, make_observability)
    assert await trigger(app, "reminder-1", {}) == status
    assert await trigger(app, "reminder-1", {}) == status
    assert attempts == attempts_seen
    parked = await subs.dead_letters.list()
    assert [m.park_id for m in parked] == (["job/reminder-1"] if outcome == "drop" else [])
    assert (
        metric_value(metrics_registry, "job_triggers_total", job_type="reminder", outcome=outcome)
        == 2
    )


async def test_a_job_without_a_handler_is_not_found(
    make_observability: Any, captured_logs: Any
) -> None:
    subs = Subscriptions()

    @subs.job("reminder")
    async def remind(job: Job) -> None:
        pass

    app = app_with(subs, make_observability)
    assert await trigger(app, "invoice-3", {}) == 404
    [line] = [line for line in captured_logs.lines if line["message"].startswith("job failed")]
    assert line["context"]["reason"] == "no_handler"
