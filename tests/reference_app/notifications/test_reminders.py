"""Reminders end to end: published, scheduled as a job, e-mailed over real SMTP, marked sent on backend.

Each test runs the notification service with its emulated sidecar, a fake backend behind its
own sidecar on the same broker, and a real aiosmtpd server (see conftest.py).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from reference_app.common.events import NOTIFICATIONS
from tests.helpers import spans
from tests.reference_app.notifications.conftest import (
    REQUEST_ID,
    USER_ID,
    StartSystem,
    System,
    job_name_of,
    reminder,
)

pytestmark = pytest.mark.anyio


def smtp_spans(system: System) -> list[Any]:
    found = [s for s in spans(system.observability) if s.name == "smtp send"]
    return sorted(found, key=lambda s: s.start_time)


async def parked(system: System) -> dict[str, dict[str, object]]:
    """The dead-letter park of the service, through its HTTP API."""
    response = await system.client.get("/dapr/dead-letters")
    assert response.status_code == 200, response.text
    return {entry["park_id"]: entry for entry in response.json()["parked"]}


async def test_a_reminder_due_in_a_second_is_emailed_and_marked_sent(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    payload = reminder(42, in_seconds=1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    await system.sidecar.wait_for(lambda: bool(system.sidecar.results), timeout=5)
    [scheduled] = system.service_logs("reminder scheduled")
    assert scheduled["context"]["job"] == name
    # Scheduled for remind_at itself, as an RFC 3339 UTC time, not triggered at once.
    assert scheduled["context"]["due_time"].endswith("Z")
    assert datetime.fromisoformat(
        scheduled["context"]["due_time"].replace("Z", "+00:00")
    ) == datetime.fromisoformat(payload["remind_at"].replace("Z", "+00:00"))

    assert system.triggers(name) == []  # due in a second, not at once
    assert await system.wait_for_triggers(name, 1) == [200]
    # wait_for returns as soon as the trigger is recorded: it came once the reminder was due.
    assert (
        time.time()
        >= datetime.fromisoformat(payload["remind_at"].replace("Z", "+00:00")).timestamp() - 0.05
    )

    [mail] = system.mailbox.received
    assert mail.rcpt_tos == ["alice@example.test"]
    assert mail.mail_from == "reminders@todo.local"
    assert mail.message["To"] == "alice@example.test"
    assert mail.message["Subject"] == "Reminder: Daily standup"
    assert mail.message["Message-ID"] == f"<{name}@todo.local>"
    due = datetime.fromisoformat(payload["due_at"].replace("Z", "+00:00")).astimezone(timezone.utc)
    assert "Daily standup" in mail.body
    assert f"Due: {due.strftime('%A %d %B %Y, %H:%M UTC')}" in mail.body

    [marked] = system.backend.marked
    assert marked.task_id == 42
    assert (marked.identity.user_id, marked.identity.actor) == (USER_ID, NOTIFICATIONS)
    assert marked.body["job"] == name

    assert system.metric("reminders_scheduled_total", outcome="success") == 1
    assert system.metric("reminders_scheduled_total", outcome="error") == 0
    assert system.metric("reminder_emails_total", outcome="sent") == 1
    assert system.metric("reminder_emails_total", outcome="failed") == 0
    assert system.metric("reminder_smtp_attempts_total", attempt="1", outcome="success") == 1
    [smtp] = smtp_spans(system)
    assert smtp.kind is SpanKind.CLIENT
    assert smtp.status.status_code is StatusCode.UNSET
    assert smtp.attributes["smtp.attempt"] == 1
    assert smtp.attributes["server.port"] == system.mailbox.port
    [trigger] = [s for s in spans(system.observability) if s.name == "reminder trigger"]
    assert smtp.parent is not None
    assert smtp.parent.span_id == trigger.context.span_id
    assert system.metric("reminder_delivery_latency_seconds_count") == 1
    latency = system.metric("reminder_delivery_latency_seconds_sum")
    assert 0 <= latency < 5
    assert system.metric("job_triggers_total", job_type="reminder", outcome="success") == 1
    assert await parked(system) == {}


async def test_logs_of_the_reminder_carry_the_publishers_request_id_and_user(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    payload = reminder(7, in_seconds=-1.0)  # already due: triggered at once ("0s")
    name = job_name_of(payload)

    await system.publish(payload, request_id=REQUEST_ID, user_id="bob")
    assert await system.wait_for_triggers(name, 1) == [200]

    [scheduled] = system.service_logs("reminder scheduled")
    assert scheduled["context"]["due_time"] == "0s"
    lines = [
        *system.service_logs("message processed"),
        scheduled,
        *system.service_logs("SMTP attempt succeeded"),
        *system.service_logs("reminder e-mail sent"),
        *system.service_logs("reminder marked sent on backend"),
        *system.service_logs("job done"),
    ]
    assert len(lines) == 6
    # Through pub/sub (baggage), then embedded in the job's data by the SDK.
    assert {(line["request_id"], line["user_id"]) for line in lines} == {(REQUEST_ID, "bob")}
    [sent] = system.service_logs("reminder e-mail sent")
    assert sent["context"]["job"] == name
    assert sent["context"]["message_id"] == f"<{name}@todo.local>"
    ours = [
        line
        for line in system.logs.lines
        if line["logger"].startswith(("reference_app", "todo_observability"))
    ]
    assert ours
    assert "alice@example.test" not in str(ours)  # the service logs no e-mail addresses


async def test_smtp_down_parks_the_reminder_and_a_replay_sends_it_exactly_once(
    start_system: StartSystem,
) -> None:
    system = await start_system(smtp_attempts=3)
    system.mailbox.stop()
    payload = reminder(8, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    # Drop: answered 404, which the scheduler does not retry.
    assert await system.wait_for_triggers(name, 1) == [404]
    await system.sidecar.idle()
    assert system.triggers(name) == [404]
    for attempt in ("1", "2", "3"):
        assert system.metric("reminder_smtp_attempts_total", attempt=attempt, outcome="error") == 1
    assert system.metric("reminder_smtp_attempts_total", attempt="4", outcome="error") == 0
    attempts = smtp_spans(system)
    assert [s.attributes["smtp.attempt"] for s in attempts] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert all(s.events[0].name == "exception" for s in attempts)
    assert system.metric("reminder_emails_total", outcome="failed") == 1
    assert system.metric("reminder_failures_total", reason="smtp_unavailable") == 1
    assert [line["context"]["attempt"] for line in system.service_logs("SMTP attempt failed")] == [
        1,
        2,
        3,
    ]
    [failed] = system.service_logs("reminder e-mail not sent; the reminder is parked for replay")
    assert failed["context"]["reason"] == "smtp_unavailable"
    assert failed["context"]["smtp_attempts"] == 3

    park = await parked(system)
    assert list(park) == [f"job/{name}"]
    assert park[f"job/{name}"]["origin_topic"] == "job/reminder"
    assert park[f"job/{name}"]["reason"] == "smtp_unavailable"
    assert system.backend.marked == []

    system.mailbox.start()
    response = await system.client.post(f"/dapr/dead-letters/job/{name}/replay")
    assert response.status_code == 200, response.text
    assert await system.wait_for_triggers(name, 2) == [404, 200]
    await system.sidecar.idle()

    assert len(system.mailbox.received) == 1
    assert system.mailbox.received[0].message["Message-ID"] == f"<{name}@todo.local>"
    assert [m.task_id for m in system.backend.marked] == [8]
    assert system.metric("reminder_emails_total", outcome="sent") == 1
    assert await parked(system) == {}


async def test_a_permanent_refusal_is_not_retried_and_parks_the_reminder(
    start_system: StartSystem,
) -> None:
    system = await start_system(smtp_attempts=3)
    system.mailbox.refuse.add("alice@example.test")
    payload = reminder(9, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 1) == [404]

    assert system.metric("reminder_smtp_attempts_total", attempt="1", outcome="error") == 1
    assert system.metric("reminder_smtp_attempts_total", attempt="2", outcome="error") == 0
    assert system.metric("reminder_failures_total", reason="smtp_rejected") == 1
    assert system.metric("reminder_failures_total", reason="smtp_unavailable") == 0
    park = await parked(system)
    assert park[f"job/{name}"]["reason"] == "smtp_rejected"
    assert "550" in str(park[f"job/{name}"]["detail"])
    assert system.mailbox.received == []


async def test_backend_down_after_the_email_retries_the_trigger_without_a_second_email(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    system.backend_sidecar.set_app_down()
    payload = reminder(10, in_seconds=-1.0)
    name = job_name_of(payload)

    # Published straight through the backend sidecar's API: its app is down.
    async with system.backend_sidecar.client() as api:
        response = await api.post(
            "/v1.0/publish/pubsub/reminders",
            json=payload,
            params={"metadata.cloudevent.type": "reminder.scheduled"},
        )
    assert response.status_code == 204
    assert await system.wait_for_triggers(name, 1) == [500]
    assert len(system.mailbox.received) == 1
    [retry] = system.service_logs("backend unavailable; the reminder's job will be triggered again")
    assert retry["context"]["reason"] == "backend_unavailable"

    system.backend_sidecar.set_app_down(False)
    # The job's failure policy (the Scheduler's default: 1 s, 3 retries) triggers it again.
    assert await system.wait_for_triggers(name, 2) == [500, 200]

    assert len(system.mailbox.received) == 1
    assert [m.task_id for m in system.backend.marked] == [10]
    assert system.metric("reminder_emails_total", outcome="sent") == 1
    assert system.metric("reminder_smtp_attempts_total", attempt="1", outcome="success") == 1
    assert system.metric("job_triggers_total", job_type="reminder", outcome="retry") == 1
    assert system.service_logs("reminder e-mail already sent; marking it sent on backend")


async def test_backend_unavailable_until_the_last_trigger_parks_the_reminder(
    start_system: StartSystem,
) -> None:
    system = await start_system(job_trigger_attempts=2)
    system.backend.answers = [503, 503, 200]
    payload = reminder(11, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 2) == [500, 404]
    park = await parked(system)
    assert park[f"job/{name}"]["reason"] == "backend_unavailable"
    assert system.metric("reminder_failures_total", reason="backend_unavailable") == 1

    response = await system.client.post(f"/dapr/dead-letters/job/{name}/replay")
    assert response.status_code == 200, response.text
    assert await system.wait_for_triggers(name, 3) == [500, 404, 200]
    assert len(system.mailbox.received) == 1
    assert [m.task_id for m in system.backend.marked] == [11, 11, 11]


async def test_backend_refusing_the_update_parks_the_reminder_at_once(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    system.backend.answers = [403]
    payload = reminder(12, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 1) == [404]
    park = await parked(system)
    assert park[f"job/{name}"]["reason"] == "backend_rejected"
    assert system.metric("reminder_failures_total", reason="backend_rejected") == 1
    assert len(system.mailbox.received) == 1


async def test_a_task_deleted_meanwhile_is_not_an_error(start_system: StartSystem) -> None:
    system = await start_system()
    system.backend.answers = [404]
    payload = reminder(13, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 1) == [200]
    assert len(system.mailbox.received) == 1
    assert system.service_logs("reminder sent, but backend no longer has the task; nothing marked")
    assert await parked(system) == {}


async def test_the_same_reminder_published_twice_is_emailed_once(start_system: StartSystem) -> None:
    system = await start_system()
    payload = reminder(14, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 1) == [200]
    # A new event for the same reminder: the same job is scheduled again (overwrite).
    await system.publish(payload)
    assert await system.wait_for_triggers(name, 2) == [200, 200]

    assert system.metric("reminders_scheduled_total", outcome="success") == 2
    assert len(system.mailbox.received) == 1
    assert [m.task_id for m in system.backend.marked] == [14, 14]


async def test_a_payload_that_does_not_validate_is_dropped_and_parked(
    start_system: StartSystem,
) -> None:
    system = await start_system()

    await system.publish({"task_id": 15, "title": "no user, no address, no time"})
    await system.sidecar.idle()

    [result] = [r for r in system.sidecar.results if r.topic == "reminders"]
    assert result.outcome == "dead_lettered"
    park = await parked(system)
    [(park_id, entry)] = park.items()
    assert park_id.startswith("pubsub/reminders/")
    assert entry["origin_topic"] == "reminders"
    assert entry["dead_letter_topic"] == "reminders-dlq"
    assert entry["reason"] == "validation"
    assert system.sidecar.job_triggers == []
    assert system.metric("reminders_scheduled_total", outcome="success") == 0
    assert (
        system.metric("messaging_dead_letters_total", origin_topic="reminders", reason="validation")
        == 1
    )


async def test_jobs_api_unavailable_retries_the_message(start_system: StartSystem) -> None:
    system = await start_system()
    system.sidecar_api.failing_jobs = 1
    payload = reminder(16, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    assert await system.wait_for_triggers(name, 1) == [200]

    assert [d.outcome for d in system.sidecar.deliveries if d.topic == "reminders"] == [
        "retry",
        "success",
    ]
    assert system.metric("reminders_scheduled_total", outcome="error") == 1
    assert system.metric("reminders_scheduled_total", outcome="success") == 1
    [refused] = system.service_logs("reminder job not scheduled: the Jobs API refused it")
    assert refused["context"]["error_code"] == "DAPR_SCHEDULER_SCHEDULE_JOB"
    assert len(system.mailbox.received) == 1


async def test_jobs_api_down_beyond_the_retries_parks_the_message_for_replay(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    system.sidecar_api.failing_jobs = 3  # the delivery and both retries
    payload = reminder(17, in_seconds=-1.0)
    name = job_name_of(payload)

    await system.publish(payload)
    await system.sidecar.idle()
    park = await parked(system)
    [(park_id, entry)] = park.items()
    assert entry["reason"] == "jobs_unavailable"
    assert system.metric("reminders_scheduled_total", outcome="error") == 3

    response = await system.client.post(f"/dapr/dead-letters/{park_id}/replay")
    assert response.status_code == 200, response.text
    assert await system.wait_for_triggers(name, 1) == [200]
    assert len(system.mailbox.received) == 1
    assert await parked(system) == {}


async def test_readiness_needs_smtp(start_system: StartSystem) -> None:
    system = await start_system()

    ready = await system.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert set(body["checks"]) == {"smtp", "dapr-sidecar", "dapr-jobs"}
    assert {check["status"] for check in body["checks"].values()} == {"UP"}

    system.mailbox.stop()
    system.observability.health.invalidate()
    ready = await system.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["smtp"]["status"] == "DOWN"
    assert ready.json()["checks"]["dapr-sidecar"]["status"] == "UP"
    live = await system.client.get("/health/live")
    assert live.status_code == 200
