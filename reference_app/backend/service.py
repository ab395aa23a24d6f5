"""What the tasks API does: one transaction per change, with its events in the outbox.

Every query is scoped to the caller's user id, so another user's task is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

from anyio import to_thread
from sqlalchemy import CursorResult, Select, select, update
from sqlalchemy.exc import IntegrityError

from reference_app.backend.models import TAG_SEPARATOR, OutboxEvent, Task
from reference_app.backend.outbox import Outbox, utcnow
from reference_app.backend.schemas import Priority, TaskCreate, TaskUpdate, check_rules
from reference_app.common.events import (
    REMINDER_CANCELLED,
    REMINDER_SCHEDULED,
    REMINDERS,
    TASK_COMPLETED,
    TASK_EVENTS,
    TASK_UPDATED,
    TASK_UPDATES,
    ReminderCancelled,
    ReminderScheduled,
    TaskCompleted,
    TaskUpdated,
    reminder_job,
)
from reference_app.common.metrics import TASKS_COMPLETED, TASKS_CREATED
from todo_observability import get_logger

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlalchemy.ext.asyncio import AsyncSession

    from reference_app.backend.db import Database
    from reference_app.common.auth import Identity
    from todo_observability import Observability

log = get_logger(__name__)

Action = Literal["created", "updated", "completed", "deleted", "reminder_sent"]
CancelReason = Literal["rescheduled", "cleared", "deleted", "completed"]

REMINDER_FIELDS = frozenset({"title", "due_at", "remind_at"})
"""The fields a reminder carries: changing one schedules the reminder again."""


class TaskNotFound(LookupError):
    """No task with this id belongs to the caller (404, whoever owns it)."""

    def __init__(self, task_id: int):
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


@dataclass(frozen=True)
class TaskFilters:
    """The filters of `GET /tasks`; None means "any"."""

    completed: bool | None = None
    priority: str | None = None
    tag: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None
    limit: int = 50
    offset: int = 0


class Tasks:
    """The tasks of every user, changed through the outbox.

    Args:
        db: The database.
        outbox: Where each change's events are written, then published from.
        observability: Where `tasks_created_total` and `tasks_completed_total` go.
    """

    def __init__(self, db: Database, outbox: Outbox, observability: Observability):
        self.db = db
        self.outbox = outbox
        self.metrics = observability.metrics
        self.metrics.register(TASKS_CREATED)
        self.metrics.register(TASKS_COMPLETED)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, identity: Identity, task_id: int) -> Task:
        """The caller's task `task_id`.

        Raises:
            TaskNotFound: there is none (or it is another user's).
        """
        await self.db.ensure_schema()
        async with self.db.sessions() as session:
            task = await session.scalar(_own(identity, task_id))
        if task is None:
            raise TaskNotFound(task_id)
        return task

    async def find(self, identity: Identity, filters: TaskFilters) -> list[Task]:
        """The caller's tasks matching `filters`: by due time (none last), then id."""
        await self.db.ensure_schema()
        query = select(Task).where(Task.user_id == identity.user_id)
        if filters.completed is not None:
            query = query.where(Task.completed.is_(filters.completed))
        if filters.priority is not None:
            query = query.where(Task.priority == filters.priority)
        if filters.tag is not None:
            # Tags are stored as ",a,b,"; one tag matches whole, case-insensitively.
            pattern = f"{TAG_SEPARATOR}{filters.tag}{TAG_SEPARATOR}"
            query = query.where(Task.tag_index.icontains(pattern, autoescape=True))
        if filters.due_before is not None:
            query = query.where(Task.due_at < filters.due_before)
        if filters.due_after is not None:
            query = query.where(Task.due_at > filters.due_after)
        if filters.q:
            query = query.where(
                Task.title.icontains(filters.q, autoescape=True)
                | Task.description.icontains(filters.q, autoescape=True)
            )
        query = (
            query.order_by(Task.due_at.is_(None), Task.due_at, Task.id)
            .limit(filters.limit)
            .offset(filters.offset)
        )
        async with self.db.sessions() as session:
            return list(await session.scalars(query))

    # -- changing ----------------------------------------------------------------------------

    async def create(self, identity: Identity, body: TaskCreate) -> tuple[Task, bool]:
        """Create a task; (the task, True), or (the existing occurrence, False) for a repeat.

        With `recurrence_of`, the occurrence `(user, recurrence_of, due_at)` exists once:
        a repeat, even a concurrent one that loses the race on the unique constraint, gets
        the existing task and writes no event.

        Raises:
            InvalidTask: the fields do not fit together (the rule, remind_at after due_at).
        """
        await _check_rules(
            due_at=body.due_at,
            remind_at=body.remind_at,
            recurrence=body.recurrence,
            recurrence_of=body.recurrence_of,
        )
        await self.db.ensure_schema()
        if body.recurrence_of is not None:
            existing = await self._occurrence(identity, body)
            if existing is not None:
                return existing, False
        now = utcnow()
        task = Task(
            user_id=identity.user_id,
            title=body.title,
            description=body.description,
            due_at=body.due_at,
            priority=body.priority,
            recurrence=body.recurrence,
            remind_at=body.remind_at,
            completed=False,
            recurrence_of=body.recurrence_of,
            email=identity.email,
            created_at=now,
            updated_at=now,
        )
        task.tags = body.tags
        try:
            async with self.db.sessions() as session, session.begin():
                session.add(task)
                await session.flush()  # the id, for the events
                rows = [self._updated(session, task, "created", sorted(body.model_fields_set), now)]
                rows += self._reminder(session, task, now)
        except IntegrityError:
            # Only the occurrence is unique: a concurrent request created it first.
            existing = await self._occurrence(identity, body) if body.recurrence_of else None
            if existing is None:
                raise
            return existing, False
        origin = "recurrence" if task.recurrence_of is not None else "user"
        self.metrics.child(TASKS_CREATED, origin).inc()
        log.info(
            "task created",
            extra={
                "task_id": task.id,
                "origin": origin,
                "recurrence_of": task.recurrence_of,
                "actor": identity.actor,
            },
        )
        _log_reminder(task, rows)
        await self.outbox.publish_now(rows)
        return task, True

    async def update(self, identity: Identity, task_id: int, body: TaskUpdate) -> Task:
        """Change the fields given in `body` (null clears an optional one).

        A change of `remind_at` makes the reminder due again (`reminder_sent_at` cleared)
        and cancels the reminder of the old time; a change of what the reminder says
        schedules it again.

        Raises:
            TaskNotFound: no such task for the caller.
            InvalidTask: the result would not fit together.
        """
        await self.db.ensure_schema()
        async with self.db.sessions() as session, session.begin():
            task = await session.scalar(_own(identity, task_id).with_for_update())
            if task is None:
                raise TaskNotFound(task_id)
            # Taken under the row's lock: the `at` of one task's reminder events grows with
            # the order the changes commit in, which is what orders a cancel and a schedule.
            now = utcnow()
            before = task.snapshot()
            values = {name: getattr(body, name) for name in body.model_fields_set}
            merged = {**before, **values}
            await _check_rules(
                due_at=merged["due_at"],
                remind_at=merged["remind_at"],
                recurrence=merged["recurrence"],
            )
            for name, value in values.items():
                setattr(task, name, value)
            after = task.snapshot()
            changed = [name for name in before if before[name] != after[name]]
            if identity.email and identity.email != task.email:
                task.email = identity.email
                changed.append("email")
            if not changed:
                return task
            if "remind_at" in changed:
                task.reminder_sent_at = None
            task.updated_at = now
            rows = [self._updated(session, task, "updated", changed, now)]
            old_time, new_time = before["remind_at"], task.remind_at
            if old_time is not None and not task.completed:
                if new_time is None:
                    rows.append(self._cancel(session, task, old_time, "cleared", now))
                elif reminder_job(task.id, old_time) != reminder_job(task.id, new_time):
                    rows.append(self._cancel(session, task, old_time, "rescheduled", now))
            if REMINDER_FIELDS.intersection(changed) or "email" in changed:
                rows += self._reminder(session, task, now)
        log.info("task updated", extra={"task_id": task.id, "changed": changed})
        _log_reminder(task, rows)
        await self.outbox.publish_now(rows)
        return task

    async def delete(self, identity: Identity, task_id: int) -> None:
        """Delete the caller's task.

        Raises:
            TaskNotFound: no such task for the caller.
        """
        await self.db.ensure_schema()
        async with self.db.sessions() as session, session.begin():
            task = await session.scalar(_own(identity, task_id).with_for_update())
            if task is None:
                raise TaskNotFound(task_id)
            now = utcnow()  # under the lock, as in `update`
            rows = [self._updated(session, task, "deleted", [], now)]
            if task.remind_at is not None and not task.completed:
                rows.append(self._cancel(session, task, task.remind_at, "deleted", now))
            await session.delete(task)
        log.info("task deleted", extra={"task_id": task_id})
        _log_reminder(task, rows)
        await self.outbox.publish_now(rows)

    async def complete(self, identity: Identity, task_id: int) -> Task:
        """Mark the task complete; completing it again changes nothing and announces nothing.

        Raises:
            TaskNotFound: no such task for the caller.
        """
        await self.db.ensure_schema()
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            task, changed = await _set_once(
                session,
                identity,
                task_id,
                Task.completed.is_(False),
                completed=True,
                completed_at=now,
                updated_at=now,
            )
            if not changed:
                return task
            rows = [
                self.outbox.add(
                    session,
                    topic=TASK_EVENTS,
                    event_type=TASK_COMPLETED,
                    payload=TaskCompleted(
                        task_id=task.id,
                        user_id=task.user_id,
                        title=task.title,
                        description=task.description,
                        priority=cast("Priority", task.priority),
                        tags=task.tags,
                        due_at=task.due_at,
                        remind_at=task.remind_at,
                        email=task.email,
                        recurrence=task.recurrence,
                        completed_at=now,
                    ),
                    task_id=task.id,
                ),
                self._updated(session, task, "completed", ["completed", "completed_at"], now),
            ]
            if task.remind_at is not None:
                # Done before its reminder: nobody needs reminding (a reminder already sent,
                # or never scheduled, is cancelled for nothing). Its `at` is taken under the
                # row's lock, after any update that rescheduled the reminder first.
                rows.append(self._cancel(session, task, task.remind_at, "completed", utcnow()))
        recurring = "true" if task.recurrence else "false"
        self.metrics.child(TASKS_COMPLETED, recurring).inc()
        log.info(
            "task completed",
            extra={"task_id": task.id, "recurring": task.recurrence is not None},
        )
        _log_reminder(task, rows)
        await self.outbox.publish_now(rows)
        return task

    async def reminder_sent(self, identity: Identity, task_id: int) -> Task:
        """Record that the reminder e-mail went out; only the first call changes anything.

        Raises:
            TaskNotFound: no such task for the caller.
        """
        await self.db.ensure_schema()
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            task, changed = await _set_once(
                session,
                identity,
                task_id,
                Task.reminder_sent_at.is_(None),
                reminder_sent_at=now,
                updated_at=now,
            )
            if not changed:
                return task
            rows = [self._updated(session, task, "reminder_sent", ["reminder_sent_at"], now)]
        log.info("reminder marked sent", extra={"task_id": task.id, "actor": identity.actor})
        await self.outbox.publish_now(rows)
        return task

    # -- helpers -------------------------------------------------------------------------------

    async def _occurrence(self, identity: Identity, body: TaskCreate) -> Task | None:
        async with self.db.sessions() as session:
            existing = await session.scalar(
                select(Task).where(
                    Task.user_id == identity.user_id,
                    Task.recurrence_of == body.recurrence_of,
                    Task.due_at == body.due_at,
                )
            )
        if existing is not None:
            log.info(
                "next occurrence already exists",
                extra={"task_id": existing.id, "recurrence_of": body.recurrence_of},
            )
        return existing

    def _updated(
        self,
        session: AsyncSession,
        task: Task,
        action: Action,
        changed: list[str],
        now: datetime,
    ) -> OutboxEvent:
        return self.outbox.add(
            session,
            topic=TASK_UPDATES,
            event_type=TASK_UPDATED,
            payload=TaskUpdated(
                task_id=task.id, user_id=task.user_id, action=action, changed=changed, at=now
            ),
            task_id=task.id,
        )

    def _reminder(self, session: AsyncSession, task: Task, now: datetime) -> list[OutboxEvent]:
        """The `reminder.scheduled` event, when the task has a future reminder and an e-mail."""
        if task.completed or task.remind_at is None or task.remind_at <= now or not task.email:
            return []
        payload = ReminderScheduled(
            task_id=task.id,
            user_id=task.user_id,
            email=task.email,
            title=task.title,
            due_at=task.due_at,
            remind_at=task.remind_at,
            at=now,
        )
        event = self.outbox.add(
            session,
            topic=REMINDERS,
            event_type=REMINDER_SCHEDULED,
            payload=payload,
            task_id=task.id,
        )
        return [event]

    def _cancel(
        self,
        session: AsyncSession,
        task: Task,
        remind_at: datetime,
        reason: CancelReason,
        now: datetime,
    ) -> OutboxEvent:
        """The `reminder.cancelled` event of the task's reminder at `remind_at`.

        On the reminders topic with the task id as key, after the schedules written before it:
        notification-service sees a task's schedules and cancels in the order they were written.
        """
        payload = ReminderCancelled(
            task_id=task.id, user_id=task.user_id, remind_at=remind_at, reason=reason, at=now
        )
        return self.outbox.add(
            session,
            topic=REMINDERS,
            event_type=REMINDER_CANCELLED,
            payload=payload,
            task_id=task.id,
        )


async def _check_rules(**fields: Any) -> None:
    """`check_rules` in a worker thread: searching a rule's occurrences is CPU work."""
    await to_thread.run_sync(partial(check_rules, **fields))


def _log_reminder(task: Task, rows: Sequence[OutboxEvent]) -> None:
    """After the commit: the reminder events the change wrote, cancels first."""
    for row in rows:
        if row.event_type == REMINDER_CANCELLED:
            cancel = ReminderCancelled.model_validate_json(row.payload)
            log.info(
                "reminder cancelled",
                extra={
                    "task_id": cancel.task_id,
                    "remind_at": cancel.remind_at.isoformat(),
                    "reason": cancel.reason,
                },
            )
    if any(row.event_type == REMINDER_SCHEDULED for row in rows) and task.remind_at is not None:
        log.info(
            "reminder scheduled",
            extra={"task_id": task.id, "remind_at": task.remind_at.isoformat()},
        )


async def _set_once(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    unset: ColumnElement[bool],
    **values: Any,
) -> tuple[Task, bool]:
    """Set `values` on the caller's task if `unset` holds; the task, and whether this call did.

    One conditional UPDATE: of two concurrent calls, exactly one changes the task.

    Raises:
        TaskNotFound: no such task for the caller.
    """
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.user_id == identity.user_id, unset)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    task = await session.scalar(_own(identity, task_id))
    if task is None:
        raise TaskNotFound(task_id)
    return task, cast("CursorResult[Any]", result).rowcount > 0


def _own(identity: Identity, task_id: int) -> Select[tuple[Task]]:
    return select(Task).where(Task.id == task_id, Task.user_id == identity.user_id)
