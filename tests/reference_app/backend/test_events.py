"""The events each action publishes through the sidecar, the next occurrence's idempotency, metrics."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from reference_app.common.events import (
    REMINDER_CANCELLED,
    REMINDER_SCHEDULED,
    REMINDERS,
    TASK_EVENTS,
    TASK_UPDATES,
    ReminderCancelled,
    ReminderScheduled,
    TaskCompleted,
    TaskUpdated,
)
from todo_observability.testing import LogCapture, SpanCapture

from .conftest import Harness, listening

pytestmark = pytest.mark.anyio

DUE = "2030-01-01T09:00:00Z"
REMIND = "2030-01-01T08:45:00Z"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def actions(backend: Harness) -> list[str]:
    return [event["data"]["action"] for event in backend.events(TASK_UPDATES)]


def reminders(backend: Harness) -> list[tuple[str, str, str | None]]:
    """(type, remind_at, cancel reason) of each event on `reminders`, in order."""
    return [
        (event["type"], event["data"]["remind_at"], event["data"].get("reason"))
        for event in backend.events(REMINDERS)
    ]


async def test_creating_publishes_task_updated_and_the_reminder(backend: Harness) -> None:
    task = await backend.create(title="Standup", due_at=DUE, remind_at=REMIND, tags=["work"])
    [updated] = backend.events(TASK_UPDATES)
    assert updated["type"] == "task.updated"
    assert updated["source"] == "backend"
    assert updated["datacontenttype"] == "application/json"
    uuid.UUID(updated["id"])  # the outbox row's id
    payload = TaskUpdated.model_validate(updated["data"])
    assert (payload.task_id, payload.user_id, payload.action) == (task["id"], "alice", "created")
    assert payload.changed == ["due_at", "remind_at", "tags", "title"]
    assert payload.at == _at(task["created_at"])

    [reminder] = backend.events(REMINDERS)
    assert reminder["type"] == "reminder.scheduled"
    assert ReminderScheduled.model_validate(reminder["data"]) == ReminderScheduled(
        task_id=task["id"],
        user_id="alice",
        email="alice@example.org",
        title="Standup",
        due_at=_at(DUE),
        remind_at=_at(REMIND),
        at=_at(task["created_at"]),
    )
    assert backend.events(TASK_EVENTS) == []


@pytest.mark.parametrize(
    ("remind_at", "email"),
    [
        (None, "alice@example.org"),  # no reminder
        ("2020-01-01T08:45:00Z", "alice@example.org"),  # in the past
        (REMIND, None),  # nobody to send it to
    ],
)
async def test_no_reminder_is_scheduled_without_a_future_time_and_an_email(
    backend: Harness, remind_at: str | None, email: str | None
) -> None:
    response = await backend.client.post(
        "/tasks",
        json={"title": "x", "due_at": DUE, "remind_at": remind_at},
        headers=backend.auth("alice", email=email),
    )
    assert response.status_code == 201
    assert backend.events(REMINDERS) == []
    assert actions(backend) == ["created"]


async def test_completing_publishes_task_completed_once(backend: Harness) -> None:
    task = await backend.create(
        title="Standup",
        description="daily",
        due_at=DUE,
        remind_at=REMIND,
        recurrence="FREQ=DAILY;BYHOUR=9",
        priority="high",
        tags=["work"],
    )
    path = f"/tasks/{task['id']}/complete"
    done = (await backend.client.post(path, headers=backend.auth())).json()
    again = await backend.client.post(path, headers=backend.auth())
    assert again.status_code == 200

    [completed] = backend.events(TASK_EVENTS)
    assert completed["type"] == "task.completed"
    assert TaskCompleted.model_validate(completed["data"]) == TaskCompleted(
        task_id=task["id"],
        user_id="alice",
        title="Standup",
        description="daily",
        priority="high",
        tags=["work"],
        due_at=_at(DUE),
        remind_at=_at(REMIND),
        email="alice@example.org",
        recurrence="FREQ=DAILY;BYHOUR=9",
        completed_at=_at(done["completed_at"]),
    )
    assert actions(backend) == ["created", "completed"]
    assert backend.metric("tasks_completed_total", recurring="true") == 1.0
    assert backend.metric("tasks_completed_total", recurring="false") == 0.0


async def test_concurrent_completions_publish_one_event(backend: Harness) -> None:
    task = await backend.create()
    path = f"/tasks/{task['id']}/complete"
    answers = await asyncio.gather(
        *(backend.client.post(path, headers=backend.auth()) for _ in range(4))
    )
    assert [answer.status_code for answer in answers] == [200] * 4
    assert len({answer.json()["completed_at"] for answer in answers}) == 1
    assert len(backend.events(TASK_EVENTS)) == 1
    assert backend.metric("tasks_completed_total", recurring="false") == 1.0


async def test_each_change_is_announced_once(backend: Harness) -> None:
    task = await backend.create(title="Standup", due_at=DUE)
    path = f"/tasks/{task['id']}"
    auth = backend.auth()
    await backend.client.patch(path, json={"title": "Team standup", "tags": ["a"]}, headers=auth)
    await backend.client.patch(path, json={"title": "Team standup"}, headers=auth)  # no change
    await backend.client.patch(path, json={"remind_at": REMIND}, headers=auth)
    await backend.client.post(f"{path}/reminder-sent", headers=auth)
    await backend.client.post(f"{path}/reminder-sent", headers=auth)
    await backend.client.delete(path, headers=auth)

    events = [TaskUpdated.model_validate(e["data"]) for e in backend.events(TASK_UPDATES)]
    assert [(e.action, e.changed) for e in events] == [
        ("created", ["due_at", "title"]),
        ("updated", ["title", "tags"]),
        ("updated", ["remind_at"]),
        ("reminder_sent", ["reminder_sent_at"]),
        ("deleted", []),
    ]
    assert {e.task_id for e in events} == {task["id"]}
    # Setting a reminder schedules it, deleting the task cancels it; nothing else did.
    assert reminders(backend) == [
        (REMINDER_SCHEDULED, REMIND, None),
        (REMINDER_CANCELLED, REMIND, "deleted"),
    ]
    # One task's events keep their order on the broker: the task id is the Kafka key.
    keys = {record.key for record in backend.broker.messages("pubsub", TASK_UPDATES)}
    assert keys == {str(task["id"])}


async def test_moving_the_due_time_schedules_the_reminder_again(backend: Harness) -> None:
    task = await backend.create(due_at=DUE, remind_at=REMIND)
    await backend.client.patch(
        f"/tasks/{task['id']}", json={"due_at": "2030-01-02T09:00:00Z"}, headers=backend.auth()
    )
    assert [e["data"]["due_at"] for e in backend.events(REMINDERS)] == [
        DUE,
        "2030-01-02T09:00:00Z",
    ]


# --- cancelling a reminder ------------------------------------------------------------------------

LATER = "2030-01-01T08:50:00Z"


async def test_moving_the_reminder_cancels_the_old_time_then_schedules_the_new(
    backend: Harness,
) -> None:
    task = await backend.create(due_at=DUE, remind_at=REMIND)
    changed = await backend.client.patch(
        f"/tasks/{task['id']}", json={"remind_at": LATER}, headers=backend.auth()
    )
    assert changed.status_code == 200, changed.text

    assert reminders(backend) == [
        (REMINDER_SCHEDULED, REMIND, None),
        (REMINDER_CANCELLED, REMIND, "rescheduled"),
        (REMINDER_SCHEDULED, LATER, None),
    ]
    _, cancel, new = backend.events(REMINDERS)
    assert ReminderCancelled.model_validate(cancel["data"]) == ReminderCancelled(
        task_id=task["id"],
        user_id="alice",
        remind_at=_at(REMIND),
        reason="rescheduled",
        at=_at(changed.json()["updated_at"]),
    )
    # Written in one change: the new schedule is not older than the cancel, so it is not
    # cancelled by it (notification-service compares the two `at`).
    assert new["data"]["at"] == cancel["data"]["at"]
    # One Kafka key for the task: the cancel cannot overtake the schedule it cancels.
    keys = {record.key for record in backend.broker.messages("pubsub", REMINDERS)}
    assert keys == {str(task["id"])}


async def test_clearing_the_reminder_cancels_it(backend: Harness) -> None:
    task = await backend.create(due_at=DUE, remind_at=REMIND)
    await backend.client.patch(
        f"/tasks/{task['id']}", json={"remind_at": None}, headers=backend.auth()
    )
    assert reminders(backend) == [
        (REMINDER_SCHEDULED, REMIND, None),
        (REMINDER_CANCELLED, REMIND, "cleared"),
    ]


async def test_completing_cancels_the_reminder_and_deleting_afterwards_does_not_again(
    backend: Harness,
) -> None:
    task = await backend.create(due_at=DUE, remind_at=REMIND)
    path = f"/tasks/{task['id']}"
    await backend.client.post(f"{path}/complete", headers=backend.auth())
    await backend.client.post(f"{path}/complete", headers=backend.auth())  # no change
    await backend.client.delete(path, headers=backend.auth())
    assert reminders(backend) == [
        (REMINDER_SCHEDULED, REMIND, None),
        (REMINDER_CANCELLED, REMIND, "completed"),
    ]


async def test_changes_that_keep_the_reminders_second_cancel_nothing(backend: Harness) -> None:
    task = await backend.create(due_at=DUE, remind_at=REMIND)
    path = f"/tasks/{task['id']}"
    auth = backend.auth()
    await backend.client.patch(path, json={"title": "Team standup"}, headers=auth)
    # The same second: the same reminder (and job), scheduled again rather than cancelled.
    await backend.client.patch(path, json={"remind_at": "2030-01-01T08:45:00.500Z"}, headers=auth)
    await backend.client.patch(path, json={"description": "in room 4"}, headers=auth)
    assert [kind for kind, _, _ in reminders(backend)] == [REMINDER_SCHEDULED] * 3


async def test_a_task_without_a_reminder_cancels_nothing(backend: Harness) -> None:
    task = await backend.create(due_at=DUE)
    await backend.client.post(f"/tasks/{task['id']}/complete", headers=backend.auth())
    other = await backend.create(due_at=DUE)
    await backend.client.delete(f"/tasks/{other['id']}", headers=backend.auth())
    assert backend.events(REMINDERS) == []


async def test_a_subscriber_receives_the_events_in_the_requests_trace(
    backend: Harness, captured_spans: SpanCapture
) -> None:
    async with listening(backend.broker) as listener:
        task = await backend.create(due_at=DUE, remind_at=REMIND)
        await backend.client.post(f"/tasks/{task['id']}/complete", headers=backend.auth())
        await listener.sidecar.wait_for(lambda: len(listener.received) == 5)
    assert [e["type"] for e in listener.of(TASK_UPDATES)] == ["task.updated", "task.updated"]
    assert [e["type"] for e in listener.of(REMINDERS)] == [
        "reminder.scheduled",
        "reminder.cancelled",  # completed before its reminder
    ]
    [completed] = listener.of(TASK_EVENTS)
    assert completed["data"]["task_id"] == task["id"]

    [server] = captured_spans.named("POST /tasks/{task_id}/complete")
    [producer] = [
        span
        for span in captured_spans.named(f"{TASK_EVENTS} publish")
        if span.context.trace_id == server.context.trace_id
    ]
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None
    assert producer.parent.span_id == server.context.span_id
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.id"] == completed["id"]
    # The consumer's delivery carries the same trace.
    assert completed["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"


# --- the next occurrence of a recurring task ------------------------------------------------------


async def test_the_same_occurrence_is_created_once(backend: Harness) -> None:
    original = await backend.create(title="Standup", due_at=DUE, recurrence="DAILY")
    body: dict[str, Any] = {
        "title": "Standup",
        "due_at": "2030-01-02T09:00:00Z",
        "recurrence": "DAILY",
        "recurrence_of": original["id"],
    }
    auth = backend.auth("alice", actor="recurring-task-service")
    first = await backend.client.post("/tasks", json=body, headers=auth)
    second = await backend.client.post("/tasks", json=body, headers=auth)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    assert first.json()["recurrence_of"] == original["id"]
    assert actions(backend) == ["created", "created"]
    assert backend.metric("tasks_created_total", origin="recurrence") == 1.0
    assert backend.metric("tasks_created_total", origin="user") == 1.0
    # Another due time is another occurrence.
    later = await backend.client.post(
        "/tasks", json={**body, "due_at": "2030-01-03T09:00:00Z"}, headers=auth
    )
    assert later.status_code == 201


async def test_concurrent_creates_of_one_occurrence_make_one_row(
    backend: Harness, captured_logs: LogCapture
) -> None:
    original = await backend.create(title="Standup", due_at=DUE, recurrence="DAILY")
    body = {
        "title": "Standup",
        "due_at": "2030-01-02T09:00:00+00:00",
        "recurrence_of": original["id"],
    }
    answers = await asyncio.gather(
        *(backend.client.post("/tasks", json=body, headers=backend.auth()) for _ in range(5))
    )
    assert sorted(answer.status_code for answer in answers) == [200, 200, 200, 200, 201]
    assert len({answer.json()["id"] for answer in answers}) == 1
    listed = (await backend.client.get("/tasks", headers=backend.auth())).json()
    assert len(listed) == 2
    assert actions(backend) == ["created", "created"]
    assert backend.metric("tasks_created_total", origin="recurrence") == 1.0
    assert len(captured_logs.find(message="next occurrence already exists")) == 4


async def test_sdk_metrics_count_the_publishes(backend: Harness) -> None:
    await backend.create(due_at=DUE, remind_at=REMIND)
    metrics = await backend.client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for line in (
        'tasks_created_total{origin="user"} 1.0',
        'messaging_publish_messages_total{outcome="success",topic="task-updates"} 1.0',
        'messaging_publish_messages_total{outcome="success",topic="reminders"} 1.0',
        "outbox_pending_events 0.0",
        'http_server_requests_total{method="POST",route="/tasks",status_code="201"} 1.0',
    ):
        assert line in text
    assert backend.metric("outbox_publish_failures_total", topic="task-updates") == 0.0


async def test_a_create_losing_the_race_on_the_constraint_answers_the_winner(
    backend: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = await backend.create(title="Standup", due_at=DUE, recurrence="DAILY")
    body = {"title": "Standup", "due_at": "2030-01-02T09:00:00Z", "recurrence_of": original["id"]}
    winner = await backend.client.post("/tasks", json=body, headers=backend.auth())
    # The pre-check misses the winner, as when both requests check before either inserts:
    # the unique constraint refuses the second row, and the loser answers the winner's task.
    tasks = backend.app.state.backend.tasks
    lookup = tasks._occurrence
    calls: list[int] = []

    async def late_lookup(*args: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else await lookup(*args)

    monkeypatch.setattr(tasks, "_occurrence", late_lookup)
    loser = await backend.client.post("/tasks", json=body, headers=backend.auth())
    assert (winner.status_code, loser.status_code) == (201, 200)
    assert loser.json() == winner.json()
    assert len(calls) == 2
    assert actions(backend) == ["created", "created"]
