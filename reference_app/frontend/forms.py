"""What the page sends to create a task, and how it becomes backend's `POST /tasks` body.

The page speaks the user's terms: a `datetime-local` due time (which has no time zone; the page
says it is UTC), tags as one comma-separated string, a reminder as minutes before the due time.
Backend speaks absolute instants: `due_at` and `remind_at` in UTC, tags as a list.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from dateutil.parser import isoparse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MAX_REMINDER_MINUTES", "NewTask", "format_utc"]

MAX_REMINDER_MINUTES = 4 * 7 * 24 * 60
"""The earliest reminder the page offers: four weeks before the due time."""


class NewTask(BaseModel):
    """A task as the page's form sends it (`POST /api/tasks`).

    Attributes:
        title: What to do.
        description: More about it.
        due_at: When it is due; a time without a zone is UTC.
        priority: low, medium or high.
        tags: Labels, a list or one comma-separated string.
        recurrence: A preset (DAILY, WEEKLY, MONTHLY) or an RRULE; backend validates it.
        remind_minutes_before: Send a reminder this many minutes before `due_at`.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    due_at: datetime | None = None
    priority: Literal["low", "medium", "high"] = "medium"
    tags: list[str] = Field(default_factory=list, max_length=20)
    recurrence: str | None = Field(default=None, max_length=500)
    # Backend wants a reminder strictly before the due time: at least a minute.
    remind_minutes_before: int | None = Field(default=None, ge=1, le=MAX_REMINDER_MINUTES)

    @field_validator("due_at", "recurrence", "remind_minutes_before", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # An empty form field means "not given", not an invalid value.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            tags: list[Any] = []
            for tag in value:
                tag = tag.strip().lstrip("#") if isinstance(tag, str) else tag
                if tag and tag not in tags:
                    tags.append(tag)
            return tags
        return value

    @field_validator("due_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _reminder_needs_due_time(self) -> NewTask:
        if self.remind_minutes_before is not None and self.due_at is None:
            raise ValueError("reminder: needs a due time; set 'Due at' or clear the reminder")
        return self

    def to_backend(self) -> dict[str, Any]:
        """The body of backend's `POST /tasks`: only what was given, instants in UTC."""
        body: dict[str, Any] = {"title": self.title, "priority": self.priority}
        if self.description:
            body["description"] = self.description
        if self.tags:
            body["tags"] = self.tags
        if self.recurrence:
            body["recurrence"] = self.recurrence
        if self.due_at is not None:
            body["due_at"] = self.due_at.isoformat()
            if self.remind_minutes_before is not None:
                remind_at = self.due_at - timedelta(minutes=self.remind_minutes_before)
                body["remind_at"] = remind_at.isoformat()
        return body


def format_utc(value: Any) -> str:
    """`2026-12-01 09:00 UTC` for an ISO 8601 instant; other values as given, None as ''."""
    if value is None or value == "":
        return ""
    try:
        instant = isoparse(str(value))
    except ValueError:
        return str(value)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
