"""Jobs through the sidecar emulator: schedule, trigger with the embedded context, get, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from todo_observability import get_request_id, get_user_id
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.dapr import DaprClient, Job, Retry, Subscriptions
from todo_observability.testing.sidecar import Sidecar

pytestmark = pytest.mark.anyio


@dataclass
class Notifications:
    sidecar: Sidecar
    dapr: DaprClient
    seen: list[tuple[Job, Any, Any]]
    observability: Any


@pytest.fixture(params=["1.18.3", "1.17.0"])
async def notifications(
    request: pytest.FixtureRequest, make_observability: Any
) -> AsyncIterator[Notifications]:
    seen: list[tuple[Job, Any, Any]] = []
    subs = Subscriptions()

    @subs.job("reminder")
    async def remind(job: Job) -> None:
        seen.append((job, get_request_id(), get_user_id()))
        if job.data.get("fail_once") and job.attempt == 1:
            raise Retry("smtp_unavailable")

    app = Starlette()
    obs = make_observability(app, service_name="notifications")
    subs.install(app)
    sidecar = Sidecar(
        "notifications", app_transport=httpx.ASGITransport(app=app), runtime_version=request.param
    )
    async with sidecar:
        transport = httpx.ASGITransport(app=sidecar.asgi)
        async with DaprClient("http://127.0.0.1:3500", transport=transport) as dapr:
            yield Notifications(sidecar, dapr, seen, obs)


async def test_a_scheduled_job_triggers_with_the_scheduling_context(
    notifications: Notifications, captured_spans: Any
) -> None:
    token = _enter_context(RequestContext("req-5", "carol", notifications.observability.signals))
    try:
        await notifications.dapr.schedule_job("reminder-5", data={"task_id": 5}, due_time="0s")
    finally:
        _exit_context(token)
    await notifications.sidecar.wait_for(lambda: bool(notifications.seen), timeout=10)
    [(job, request_id, user_id)] = notifications.seen
    assert (job.name, job.job_type, job.data) == ("reminder-5", "reminder", {"task_id": 5})
    assert (request_id, user_id) == ("req-5", "carol")
    [trigger] = notifications.sidecar.job_triggers
    assert "traceparent" not in trigger.headers  # as daprd: a trigger carries no trace context
    schedule = next(s for s in captured_spans.spans if s.name == "reminder schedule")
    consumer = next(s for s in captured_spans.spans if s.name == "reminder trigger")
    assert consumer.kind is SpanKind.CONSUMER
    [link] = consumer.links
    assert link.context.span_id == schedule.context.span_id


async def test_a_failed_trigger_is_retried_by_the_failure_policy(
    notifications: Notifications,
) -> None:
    await notifications.dapr.schedule_job(
        "reminder-6",
        data={"fail_once": True},
        due_time="0s",
        failure_policy={"constant": {"interval": "0.05s", "maxRetries": 3}},
    )
    await notifications.sidecar.wait_for(lambda: len(notifications.seen) == 2, timeout=10)
    assert [job.attempt for job, _, _ in notifications.seen] == [1, 2]
    assert [t.status_code for t in notifications.sidecar.job_triggers] == [500, 200]


async def test_get_and_delete_a_job(notifications: Notifications) -> None:
    await notifications.dapr.schedule_job("reminder-7", data={"task_id": 7}, due_time="1h")
    job = await notifications.dapr.get_job("reminder-7")
    assert job is not None
    assert job["dueTime"] == "1h"
    assert job["data"]["data"] == {"task_id": 7}
    await notifications.dapr.delete_job("reminder-7")
    assert await notifications.dapr.get_job("reminder-7") is None


async def test_a_dropped_job_is_parked_and_a_replay_schedules_it_again(
    make_observability: Any, metrics_registry: Any
) -> None:
    from todo_observability.dapr import Drop
    from todo_observability.testing import metric_value

    broken = True
    seen: list[Job] = []
    app = Starlette()
    make_observability(app, service_name="notifications")
    sidecar = Sidecar("notifications", app_transport=httpx.ASGITransport(app=app))
    dapr = DaprClient("http://127.0.0.1:3500", transport=httpx.ASGITransport(app=sidecar.asgi))
    subs = Subscriptions(client=dapr)

    @subs.job("reminder")
    async def remind(job: Job) -> None:
        seen.append(job)
        if broken:
            raise Drop("smtp_unavailable", "connection refused")

    subs.install(app)

    def parked_one() -> bool:
        labels = {"origin_topic": "job/reminder"}
        return metric_value(metrics_registry, "messaging_dead_letters_parked", **labels) == 1

    async with sidecar, dapr:
        await dapr.schedule_job("reminder-9", data={"task_id": 9}, due_time="0s")
        await sidecar.wait_for(parked_one, timeout=10)
        [parked] = await subs.dead_letters.list()
        assert (parked.park_id, parked.kind, parked.origin_topic) == (
            "job/reminder-9",
            "job",
            "job/reminder",
        )
        assert (parked.reason, parked.job_data) == ("smtp_unavailable", {"task_id": 9})
        assert [t.status_code for t in sidecar.job_triggers] == [404]  # not triggered again
        assert (
            metric_value(
                metrics_registry,
                "messaging_dead_letters_total",
                origin_topic="job/reminder",
                reason="smtp_unavailable",
            )
            == 1
        )

        broken = False
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            response = await http.post("http://app/dapr/dead-letters/job/reminder-9/replay")
        assert response.status_code == 200, response.text
        await sidecar.wait_for(lambda: len(seen) == 2, timeout=10)
        assert seen[1].name == "reminder-9"
        assert seen[1].data == {"task_id": 9}
        assert await subs.dead_letters.list() == []
