"""The events the services exchange over Dapr pub/sub: topics, CloudEvent types, payloads.

Every payload is a pydantic model, published as JSON (`application/json`) with the CloudEvent
`type` below; a consumer validates with the same model, and a payload that does not validate is a
DROP (the SDK turns a pydantic `ValidationError` into one).
"""

from __future__ import annotations

from datetime import datetime
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


class ReminderScheduled(Event):
    """Topic `reminders`, type `reminder.scheduled`: send `email` a reminder at `remind_at`."""

    task_id: int
    user_id: str
    email: str
    title: str
    due_at: datetime | None = None
    remind_at: datetime


class TaskUpdated(Event):
    """Topic `task-updates`, type `task.updated`: a task was created, changed or deleted."""

    task_id: int
    user_id: str
    action: Literal["created", "updated", "completed", "deleted", "reminder_sent"]
    changed: list[str] = Field(default_factory=list)
    at: datetime
