"""The Jobs API (DAPR.md §3, §1.6): validation, storage, triggers and failure policies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from todo_observability.testing.sidecar import Broker, Sidecar
from todo_observability.testing.sidecar._jobs import (
    DEFAULT_FAILURE_POLICY,
    CronSchedule,
    ScheduleError,
    parse_schedule,
)

from .conftest import APP_TRACEPARENT, FakeApp, SidecarFactory, only

pytestmark = pytest.mark.anyio

QUICK_RETRIES = {"constant": {"interval": "0.001s", "maxRetries": 2}}


async def schedule(sidecar: Sidecar, name: str, job: Any, api: str = "v1.0") -> httpx.Response:
    async with sidecar.client() as client:
        return await client.post(
            f"/{api}/jobs/{name}", content=json.dumps(job), headers={"traceparent": APP_TRACEPARENT}
        )


async def get_job(sidecar: Sidecar, name: str, api: str = "v1.0") -> httpx.Response:
    async with sidecar.client() as client:
        return await client.get(f"/{api}/jobs/{name}")


async def test_a_due_job_triggers_post_job_name_with_its_data_and_no_trace(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app, app_api_token="app-secret")
    response = await schedule(sidecar, "cleanup", {"dueTime": "0s", "data": {"task": 7}})
    assert response.status_code == 204
    await broker.idle()
    request = only(app.received("/job/cleanup"))
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"task": 7}
    assert "traceparent" not in request.headers  # the scheduler path starts no span
    assert request.headers["dapr-api-token"] == "app-secret"
    trigger = only(sidecar.job_triggers)
    assert (trigger.name, trigger.trigger, trigger.attempt, trigger.outcome) == (
        "cleanup",
        1,
        1,
        "success",
    )
    # a job is deleted after its last trigger
    assert (await get_job(sidecar, "cleanup")).status_code == 500


async def test_get_returns_the_job_as_scheduled(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    job = {
        "schedule": "@every 1h",
        "repeats": 3,
        "dueTime": "10m",
        "ttl": "2h",
        "data": {"n": 12345678901234567890},
        "failurePolicy": {"constant": {"interval": "1.5s", "maxRetries": 4}},
    }
    assert (await schedule(sidecar, "report", job)).status_code == 204
    response = await get_job(sidecar, "report")
    assert response.status_code == 200
    # protobuf JSON writes durations with 0, 3, 6 or 9 fractional digits
    policy = {"constant": {"interval": "1.500s", "maxRetries": 4}}
    assert response.json() == {"name": "report", **job, "failurePolicy": policy}
    assert b"12345678901234567890" in response.content  # numbers as written
    assert list(response.json()) == [
        "name",
        "schedule",
        "repeats",
        "dueTime",
        "ttl",
        "data",
        "failurePolicy",
    ]


async def test_the_name_belongs_in_the_url_only(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await schedule(sidecar, "test", {"name": "test1", "schedule": "@daily"})
    assert response.status_code == 400
    body = response.json()
    assert (body["errorCode"], body["message"]) == (
        "DAPR_SCHEDULER_JOB_NAME",
        "Set the job name in the url only",
    )
    assert only(body["details"])["reason"] == "DAPR_SCHEDULER_JOB_NAME"


async def test_schedule_or_due_time_is_required(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await schedule(sidecar, "test", {"data": 1})
    assert response.status_code == 400
    assert (response.json()["errorCode"], response.json()["message"]) == (
        "DAPR_SCHEDULER_SCHEDULE_EMPTY",
        "Schedule is empty",
    )


async def test_an_empty_name_is_refused(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await schedule(sidecar, "%20", {"schedule": "@daily"})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "DAPR_SCHEDULER_JOB_NAME_EMPTY"
    assert response.json()["message"] == "Name is empty"


async def test_getting_a_missing_job_is_daprd_500_not_found(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await get_job(sidecar, "nothing")
    assert response.status_code == 500
    assert response.json()["errorCode"] == "DAPR_SCHEDULER_GET_JOB"
    assert response.json()["message"].startswith("failed to get job due to: ")
    assert "not found" in response.json()["message"]


async def test_deleting_stops_a_job_and_deleting_twice_succeeds(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "later", {"dueTime": "1h"})
    async with sidecar.client() as client:
        first = await client.delete("/v1.0/jobs/later")
        second = await client.delete("/v1.0/jobs/later")
    assert (first.status_code, second.status_code) == (204, 204)
    assert (await get_job(sidecar, "later")).status_code == 500
    await broker.idle()
    assert app.received("/job/later") == []


async def test_a_404_answer_is_not_retried_but_counted_as_not_found(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    app.answer("/job/gone", Response(status_code=404))
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "gone", {"dueTime": "0s", "failurePolicy": QUICK_RETRIES})
    await broker.idle()
    assert len(app.received("/job/gone")) == 1
    assert only(sidecar.job_triggers).outcome == "not_found"


async def test_a_failing_trigger_follows_the_constant_failure_policy(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    app.answer("/job/flaky", Response(status_code=500))
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "flaky", {"dueTime": "0s", "failurePolicy": QUICK_RETRIES})
    await broker.idle()
    assert [(t.attempt, t.outcome, t.status_code) for t in sidecar.job_triggers] == [
        (1, "failure", 500),
        (2, "failure", 500),
        (3, "failure", 500),
    ]


async def test_a_retried_trigger_can_succeed(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp()
    app.answer("/job/flaky", Response(status_code=503), Response(status_code=200))
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "flaky", {"dueTime": "0s", "failurePolicy": QUICK_RETRIES})
    await broker.idle()
    assert [t.outcome for t in sidecar.job_triggers] == ["failure", "success"]


async def test_the_drop_policy_does_not_retry(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp()
    app.answer("/job/once", Response(status_code=500))
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "once", {"dueTime": "0s", "failurePolicy": {"drop": {}}})
    await broker.idle()
    assert len(sidecar.job_triggers) == 1


def test_the_default_failure_policy_is_constant_one_second_three_retries() -> None:
    assert (DEFAULT_FAILURE_POLICY.drop, DEFAULT_FAILURE_POLICY.interval) == (False, 1.0)
    assert DEFAULT_FAILURE_POLICY.max_retries == 3


async def test_an_every_schedule_triggers_repeats_times(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "tick", {"schedule": "@every 5ms", "repeats": 3, "data": "t"})
    await broker.wait_for(lambda: len(sidecar.job_triggers) == 3)
    await broker.wait_for(lambda: not broker.busy())
    assert [t.trigger for t in sidecar.job_triggers] == [1, 2, 3]
    assert (await get_job(sidecar, "tick")).status_code == 500  # done: deleted


async def test_ttl_ends_a_recurring_job(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app)
    await schedule(sidecar, "short", {"dueTime": "0s", "schedule": "@every 1h", "ttl": "PT1S"})
    await broker.wait_for(lambda: len(sidecar.job_triggers) == 1)
    await broker.wait_for(lambda: not broker.busy())
    assert (await get_job(sidecar, "short")).status_code == 500


async def test_due_time_accepts_rfc3339_go_durations_and_iso8601(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app)
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name, due in [("rfc", past), ("go", "1ms"), ("iso", "PT0S")]:
        assert (await schedule(sidecar, name, {"dueTime": due})).status_code == 204
    await broker.wait_for(lambda: len(sidecar.job_triggers) == 3)
    assert {t.name for t in sidecar.job_triggers} == {"rfc", "go", "iso"}
    bad = await schedule(sidecar, "bad", {"dueTime": "soon"})
    assert bad.status_code == 500
    assert bad.json()["errorCode"] == "DAPR_SCHEDULER_SCHEDULE_JOB"


async def test_an_existing_job_needs_overwrite(make_sidecar: SidecarFactory) -> None:
    sidecar = await make_sidecar(FakeApp())
    assert (await schedule(sidecar, "job", {"dueTime": "1h", "data": 1})).status_code == 204
    again = await schedule(sidecar, "job", {"dueTime": "1h", "data": 2})
    assert again.status_code == 500
    assert "already exists" in again.json()["message"]
    replaced = await schedule(sidecar, "job", {"dueTime": "1h", "data": 3, "overwrite": True})
    assert replaced.status_code == 204
    assert (await get_job(sidecar, "job")).json()["data"] == 3


@pytest.mark.parametrize(
    "job",
    [
        {"dueTime": "0s", "failurePolicy": {"constant": {"interval": "10ms"}}},  # not protobuf JSON
        {"dueTime": "0s", "failurePolicy": {"drop": {}, "constant": {}}},
        {"dueTime": "0s", "repeats": -1},
        {"dueTime": 5},
    ],
)
async def test_bodies_protobuf_json_refuses_are_bad_requests(
    make_sidecar: SidecarFactory, job: dict[str, Any]
) -> None:
    sidecar = await make_sidecar(FakeApp())
    response = await schedule(sidecar, "job", job)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "ERR_BAD_REQUEST"


async def test_a_pre_1_18_sidecar_has_only_the_alpha_jobs_api(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp()
    sidecar = await make_sidecar(app, runtime_version="1.17.5")
    stable = await schedule(sidecar, "job", {"dueTime": "0s"})
    assert (stable.status_code, stable.text) == (404, "404 page not found\n")
    alpha = await schedule(sidecar, "job", {"dueTime": "0s"}, api="v1.0-alpha1")
    assert alpha.status_code == 204
    await broker.idle()
    assert len(app.received("/job/job")) == 1


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 30 * * * *", "2026-03-04T10:15:00", "2026-03-04T10:30:00"),
        ("0 30 * * * *", "2026-03-04T10:30:00", "2026-03-04T11:30:00"),
        ("*/15 * * * * *", "2026-03-04T10:15:07", "2026-03-04T10:15:15"),
        ("0 15 3 * * *", "2026-03-04T10:00:00", "2026-03-05T03:15:00"),
        ("@hourly", "2026-03-04T10:00:00", "2026-03-04T11:00:00"),
        ("@daily", "2026-03-04T10:00:00", "2026-03-05T00:00:00"),
        ("@weekly", "2026-03-04T10:00:00", "2026-03-08T00:00:00"),  # next Sunday
        ("@monthly", "2026-03-04T10:00:00", "2026-04-01T00:00:00"),
        ("@yearly", "2026-03-04T10:00:00", "2027-01-01T00:00:00"),
        ("0 0 9 * * mon-fri", "2026-03-06T10:00:00", "2026-03-09T09:00:00"),  # Fri -> Mon
        ("0 0 0 13 * 5", "2026-03-01T00:00:00", "2026-03-06T00:00:00"),  # 13th OR Friday
        ("0 0 0 1,15 jan,jul *", "2026-03-04T00:00:00", "2026-07-01T00:00:00"),
        ("0 0 12 29 2 *", "2026-03-01T00:00:00", "2028-02-29T12:00:00"),
    ],
)
def test_cron_schedules(schedule: str, after: str, expected: str) -> None:
    parsed = parse_schedule(schedule)
    assert parsed.next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    "schedule", ["0 30 * * *", "0 0 0 L * *", "0 0 0 * * 1#2", "@fortnightly", "61 * * * * *"]
)
def test_unsupported_or_invalid_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(schedule)


def test_every_schedule_adds_its_interval() -> None:
    assert parse_schedule("@every 1h30m").next_after(at("2026-01-01T00:00:00")) == at(
        "2026-01-01T01:30:00"
    )
    assert isinstance(parse_schedule("0 0 * * * *"), CronSchedule)
