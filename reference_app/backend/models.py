"""The backend's tables: tasks, and the outbox of events written in the same transaction."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid), which is 64-bit anyway.
Id = BigInteger().with_variant(Integer(), "sqlite")

TAG_SEPARATOR = ","
"""Tags are stored as `,a,b,` so that one tag is found with a portable LIKE '%,a,%'."""


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC.

    PostgreSQL keeps `timestamptz` as an instant; SQLite has no time zones, so the value is
    stored as naive UTC and made aware again when read. Either way the same instant always
    compares (and is unique) as the same value.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC (naive for SQLite); a naive value is a bug in the caller."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the backend stores aware datetimes only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC, whatever the driver returned."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the backend's tables."""


class Task(Base):
    """A user's task.

    `(user_id, recurrence_of, due_at)` is unique: the next occurrence of a recurring task
    exists once, however often (and however concurrently) it is requested.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("user_id", "recurrence_of", "due_at", name="uq_tasks_occurrence"),
        Index("ix_tasks_user_due", "user_id", "due_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    priority: Mapped[str] = mapped_column(String(6), default="medium")
    tag_index: Mapped[str] = mapped_column(Text, default="")
    recurrence: Mapped[str | None] = mapped_column(String(500))
    remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recurrence_of: Mapped[int | None] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def tags(self) -> list[str]:
        """The tags, in the order they were given."""
        return [tag for tag in self.tag_index.split(TAG_SEPARATOR) if tag]

    @tags.setter
    def tags(self, tags: list[str]) -> None:
        self.tag_index = TAG_SEPARATOR + TAG_SEPARATOR.join(tags) + TAG_SEPARATOR if tags else ""

    def snapshot(self) -> dict[str, Any]:
        """The user-visible fields, to tell which ones an update changed."""
        return {
            "title": self.title,
            "description": self.description,
            "due_at": self.due_at,
            "priority": self.priority,
            "tags": self.tags,
            "recurrence": self.recurrence,
            "remind_at": self.remind_at,
        }


class OutboxEvent(Base):
    """An event written with the change it announces, waiting for the sidecar to accept it.

    A row is deleted only once the sidecar accepted the publish. `claimed_until` reserves it
    for the replica publishing it now (right after the commit, or from the retry loop), so
    that two publishers do not race; a crashed publisher's claim simply expires.
    """

    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    pubsub: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    payload: Mapped[str] = mapped_column(Text)
    traceparent: Mapped[str | None] = mapped_column(String(64))
    tracestate: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
