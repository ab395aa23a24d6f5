"""The events the services exchange over Dapr pub/sub: topics, CloudEvent types, payloads.

Every payload is a pydantic model, published as JSON (`application/json`) with the CloudEvent
`type` below; a consumer validates with the same model, and a payload that does not validate is a
DROP (the SDK turns a pydantic `ValidationError` into one).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PUBSUB = "pubsub"
"""The pub/sub component (Kafka in Kubernetes, the emulator locally)."""

TASK_EVENTS = "task-events"
REMINDERS = "reminders"
TASK_UPDATES = "task-updates"
TASK_EVENTS_DLQ = "task-events-dlq"
REMINDERS_DLQ = "reminders-dlq"

TASK_COMPLETED = "task.completed"
REMINDER_SCHEDULED = "reminder.scheduled"
REMINDER_CANCELLED = "reminder.cancelled"
TASK_UPDATED = "task.updated"

BACKEND = "backend"
RECURRING = "recurring-task-service"
NOTIFICATIONS = "notification-service"
FRONTEND = "frontend"
"""Dapr app ids (also the services' `service_name`)."""


class Event(BaseModel):
    """Base of the payloads: unknown fields are kept out, datetimes are timezone-aware."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TaskCompleted(Event):
    """Topic `task-events`, type `task.completed`: a task was marked complete."""

    task_id: int
    user_id: str
    title: str
    description: str = ""
    priority: Literal["low", "medium", "high"] = "medium"
    tags: list[str] = Field(default_factory=list)
    due_at: datetime | None = None
    remind_at: datetime | None = None
    email: str | None = None
    recurrence: str | None = None
    """An RFC 5545 RRULE (`FREQ=DAILY;BYHOUR=9`) or a preset (`DAILY`, `WEEKLY`, `MONTHLY`)."""
    completed_at: datetime


def reminder_job(task_id: int, remind_at: datetime) -> str:
    """The identity of a reminder: `reminder-<task id>-<remind_at as whole seconds since the epoch>`.

    notification-service names the reminder's Dapr job so, and `reminder.cancelled` names the
    reminder it cancels by the same two fields: two times within one second are one reminder.
    A naive `remind_at` is taken as UTC.
    """
    if remind_at.tzinfo is None:
        remind_at = remind_at.replace(tzinfo=timezone.utc)
    return f"reminder-{task_id}-{int(remind_at.timestamp())}"


class ReminderScheduled(Event):
    """Topic `reminders`, type `reminder.scheduled`: send `email` a reminder at `remind_at`.

    Published again, with the same `task_id` and `remind_at`, when what the e-mail says changes:
    the same reminder, rescheduled.
    """

    task_id: int
    user_id: str
    email: str
    title: str
    due_at: datetime | None = None
    remind_at: datetime
    at: datetime | None = None
    """When backend made the change that scheduled it (absent from older publishers).

    It orders this event against a `reminder.cancelled` of the same reminder: a cancel with an
    `at` at or after this one outranks it, however late this event arrives (a replay from the
    park); a schedule without `at` is older than any cancel.
    """


class ReminderCancelled(Event):
    """Topic `reminders`, type `reminder.cancelled`: the reminder at `remind_at` is off.

    Published when the task's `remind_at` moves to another second (`rescheduled`, followed by
    the `reminder.scheduled` of the new time) or is cleared (`cleared`), or the task is deleted
    (`deleted`) or completed (`completed`) while it has a reminder. Whether the reminder already
    fired does not matter: a cancel of a reminder that fired, or never was scheduled, changes
    nothing. Same topic and Kafka key (the task id) as `reminder.scheduled`, so a task's
    schedules and cancels arrive in the order backend wrote them.
    """

    task_id: int
    user_id: str
    remind_at: datetime
    """The cancelled reminder's time (with `task_id`, its identity: `reminder_job`)."""
    reason: Literal["rescheduled", "cleared", "deleted", "completed"]
    at: datetime
    """When backend made the change: schedules of this reminder with an `at` up to this one
    are cancelled, later ones (the same time set again) are not."""


class TaskUpdated(Event):
    """Topic `task-updates`, type `task.updated`: a task was created, changed or deleted."""

    task_id: int
    user_id: str
    action: Literal["created", "updated", "completed", "deleted", "reminder_sent"]
    changed: list[str] = Field(default_factory=list)
    at: datetime
