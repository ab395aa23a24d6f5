"""Reminders: from `reminder.scheduled` to a Dapr job, and from the job's trigger to an e-mail.

Three steps, each safe to run again:

1. `schedule` (subscription to `reminders`): one job per reminder, named
   `reminder-<task id>-<remind_at as a Unix time>` and scheduled with `overwrite`, so a
   redelivered or replayed event reschedules the same job rather than adding one.
2. `deliver` (the job's trigger): send the e-mail, record it sent, then tell backend. The
   record is kept in `SentReminders`: in the `DLQ_DATABASE_URL` database when there is one
   (`SqlSentReminders`, so it outlives a restart), else in memory (`SentJobs`). A trigger retried
   because backend was away, or replayed from the park, even on a new process, finds the record
   and skips straight to telling backend: the e-mail goes once.
3. `cancel` (subscription to `reminders`, type `reminder.cancelled`): record the cancel, then
   delete the job. The record (`CancelledReminders`, beside the sent ones) is what makes the
   order of events not matter: a `reminder.scheduled` of that job written before the cancel
   (its `at` at or before the cancel's), arriving late from a replay of the park, is not
   scheduled, and a trigger of a cancelled job (one already under way, or replayed from the
   park) sends nothing. A schedule written after the cancel (the same time set again) goes
   through. A cancel of a job that fired or never existed, or a cancel delivered twice, only
   records it again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from reference_app.common.auth import Tokens
from reference_app.common.events import (
    BACKEND,
    NOTIFICATIONS,
    ReminderCancelled,
    ReminderScheduled,
    reminder_job,
)
from reference_app.common.metrics import (
    REMINDER_DELIVERY_LATENCY,
    REMINDER_EMAILS,
    REMINDER_FAILURES,
    REMINDERS_SCHEDULED,
)
from reference_app.notifications.mailer import DeliveryFailed, Mailer, compose
from todo_observability import get_logger, get_user_id, set_user_id
from todo_observability.dapr import DaprError, Drop, Retry

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine

    from reference_app.notifications.settings import Settings
    from todo_observability import Observability
    from todo_observability.dapr import DaprClient, Job, Message

__all__ = [
    "BACKEND_REJECTED",
    "BACKEND_UNAVAILABLE",
    "JOBS_UNAVAILABLE",
    "JOB_TYPE",
    "CancelledJobs",
    "CancelledReminders",
    "Reminders",
    "SentJobs",
    "SentReminders",
    "SqlCancelledReminders",
    "SqlSentReminders",
    "job_name",
]

JOB_TYPE = "reminder"
"""The job type of reminder jobs (their names start with `reminder-`)."""
JOBS_UNAVAILABLE = "jobs_unavailable"
"""Reason: the Jobs API refused or missed the reminder's job (the message is retried)."""
BACKEND_UNAVAILABLE = "backend_unavailable"
"""Reason: backend could not be told the reminder was sent (5xx, or not reachable)."""
BACKEND_REJECTED = "backend_rejected"
"""Reason: backend refused to mark the reminder sent (a 4xx other than 404)."""

_log = get_logger(__name__)


def _aware(moment: datetime) -> datetime:
    """`moment` in UTC; a naive time is taken as UTC (the contract asks for aware ones)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def job_name(reminder: ReminderScheduled | ReminderCancelled) -> str:
    """`reminder-<task id>-<remind_at as whole seconds since the epoch>` (`reminder_job`)."""
    return reminder_job(reminder.task_id, reminder.remind_at)


def due_time(remind_at: datetime, now: datetime | None = None) -> str:
    """`remind_at` as an RFC 3339 UTC time, or `0s` (trigger now) when it has passed."""
    remind_at = _aware(remind_at)
    if remind_at <= (now or datetime.now(timezone.utc)):
        return "0s"
    return remind_at.isoformat().replace("+00:00", "Z")


class SentReminders(Protocol):
    """Where the reminders whose e-mail was sent are recorded, by job name."""

    async def was_sent(self, name: str) -> bool:
        """Whether the e-mail of job `name` was sent."""
        ...

    async def record(self, name: str, reminder: ReminderScheduled) -> None:
        """Record that the e-mail of job `name` was sent (again: no change)."""
        ...


class SentJobs:
    """The job names whose e-mail was sent, the most recent `limit` of them (in memory).

    Used when the dead letters are in memory too: a process restart forgets them, and a
    reminder whose backend update was still pending is then e-mailed again, under the same
    `Message-ID`.
    """

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self._names: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> None:
        """Remember `name`, forgetting the oldest name beyond the limit."""
        self._names[name] = None
        self._names.move_to_end(name)
        while len(self._names) > self.limit:
            self._names.popitem(last=False)

    async def was_sent(self, name: str) -> bool:
        """Whether `name` is remembered."""
        return name in self

    async def record(self, name: str, reminder: ReminderScheduled) -> None:
        """Remember `name`."""
        self.add(name)


class _SqlTable:
    """One table of the notification service's own in the dead letters' database, created at first use."""

    def __init__(self, engine: AsyncEngine, table: Table):
        self.engine = engine
        self.table = table
        self._created = False
        self._lock = asyncio.Lock()

    async def _ensure_table(self) -> None:
        if self._created:
            return
        async with self._lock:
            if not self._created:
                async with self.engine.begin() as connection:
                    await connection.run_sync(self.table.metadata.create_all)
                self._created = True


class SqlSentReminders(_SqlTable):
    """The sent reminders in a table `<prefix>sent_reminders` of an SQL database.

    One row per job name (`reminder-<task id>-<remind_at>`, the primary key), with the task id
    and `remind_at` it stands for; the table is created at first use. Recording twice keeps the
    first row.

    Args:
        engine: The async engine of the database (the one the dead letters are parked in).
        table_prefix: Prefix of the table's name.
    """

    def __init__(self, engine: AsyncEngine, *, table_prefix: str = ""):
        from sqlalchemy import Column, DateTime, Integer, MetaData, String
        from sqlalchemy import Table as SqlTable

        table = SqlTable(
            f"{table_prefix}sent_reminders",
            MetaData(),
            Column("job", String(200), primary_key=True),
            Column("task_id", Integer, nullable=False),
            Column("remind_at", DateTime(timezone=True), nullable=False),
            Column("sent_at", DateTime(timezone=True), nullable=False),
        )
        super().__init__(engine, table)

    async def was_sent(self, name: str) -> bool:
        """Whether a row for `name` exists."""
        from sqlalchemy import select

        await self._ensure_table()
        async with self.engine.connect() as connection:
            found = await connection.scalar(
                select(self.table.c.job).where(self.table.c.job == name)
            )
        return found is not None

    async def record(self, name: str, reminder: ReminderScheduled) -> None:
        """Insert the row for `name`; one already there (a concurrent trigger's) is kept."""
        from sqlalchemy.exc import IntegrityError

        await self._ensure_table()
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    self.table.insert().values(
                        job=name,
                        task_id=reminder.task_id,
                        remind_at=_aware(reminder.remind_at),
                        sent_at=_utc(None),
                    )
                )
        except IntegrityError:
            # The primary key: recorded already, which is all this asks.
            return


class CancelledReminders(Protocol):
    """Where the cancelled reminders are recorded, by job name, with the latest cancel's `at`."""

    async def cancelled_at(self, name: str) -> datetime | None:
        """The `at` of the latest cancel of job `name` (aware, UTC), or None."""
        ...

    async def record(self, name: str, cancel: ReminderCancelled) -> None:
        """Record the cancel of job `name`; an older or equal `at` than the recorded one: no change."""
        ...


class CancelledJobs:
    """The cancelled job names and their cancel's `at`, the most recent `limit` (in memory).

    Used where the dead letters are in memory too: a restart forgets them, and a parked
    schedule of a cancelled reminder replayed after it goes through.
    """

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self._at: OrderedDict[str, datetime] = OrderedDict()

    async def cancelled_at(self, name: str) -> datetime | None:
        """The recorded `at` of `name`, or None."""
        return self._at.get(name)

    async def record(self, name: str, cancel: ReminderCancelled) -> None:
        """Keep the latest `at` of `name`, forgetting the oldest names beyond the limit."""
        at = _aware(cancel.at)
        known = self._at.get(name)
        self._at[name] = at if known is None else max(known, at)
        self._at.move_to_end(name)
        while len(self._at) > self.limit:
            self._at.popitem(last=False)


class SqlCancelledReminders(_SqlTable):
    """The cancelled reminders in a table `<prefix>cancelled_reminders` of an SQL database.

    One row per job name (the primary key), with the task id, `remind_at`, the latest cancel's
    `at` and reason; created at first use. Times are stored in UTC.

    Args:
        engine: The async engine of the database (the one the dead letters are parked in).
        table_prefix: Prefix of the table's name.
    """

    def __init__(self, engine: AsyncEngine, *, table_prefix: str = ""):
        from sqlalchemy import Column, DateTime, Integer, MetaData, String
        from sqlalchemy import Table as SqlTable

        table = SqlTable(
            f"{table_prefix}cancelled_reminders",
            MetaData(),
            Column("job", String(200), primary_key=True),
            Column("task_id", Integer, nullable=False),
            Column("remind_at", DateTime(timezone=True), nullable=False),
            Column("cancelled_at", DateTime(timezone=True), nullable=False),
            Column("reason", String(32), nullable=False),
            Column("recorded_at", DateTime(timezone=True), nullable=False),
        )
        super().__init__(engine, table)

    async def cancelled_at(self, name: str) -> datetime | None:
        """The row's `cancelled_at` for `name`, or None."""
        from sqlalchemy import select

        await self._ensure_table()
        async with self.engine.connect() as connection:
            found = await connection.scalar(
                select(self.table.c.cancelled_at).where(self.table.c.job == name)
            )
        # SQLite hands back naive datetimes: they were stored in UTC.
        return None if found is None else _aware(found)

    async def record(self, name: str, cancel: ReminderCancelled) -> None:
        """Insert the row of `name`, or move its `cancelled_at` forward to this cancel's `at`."""
        from sqlalchemy.exc import IntegrityError

        await self._ensure_table()
        at = _utc(cancel.at)
        values = {"cancelled_at": at, "reason": cancel.reason, "recorded_at": _utc(None)}
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    self.table.insert().values(
                        job=name,
                        task_id=cancel.task_id,
                        remind_at=_utc(cancel.remind_at),
                        **values,
                    )
                )
        except IntegrityError:
            # Cancelled before (a redelivery, or the same time cancelled again): keep the latest.
            async with self.engine.begin() as connection:
                await connection.execute(
                    self.table.update()
                    .where(self.table.c.job == name, self.table.c.cancelled_at < at)
                    .values(**values)
                )


def _utc(moment: datetime | None) -> datetime:
    """`moment` (None: now) in UTC.

    PostgreSQL keeps the instant, SQLite the UTC wall time: times compare alike in both.
    """
    return _aware(moment or datetime.now(timezone.utc))


class Reminders:
    """The service's three handlers and what they share.

    Args:
        settings: The service's settings.
        dapr: The sidecar client (jobs, invocation of backend).
        observability: Where the reminder metrics are recorded.
        mailer: Sends the e-mails; by default one built from `settings`.
        sent: Where sent reminders are recorded; by default in memory (`SentJobs`).
        cancelled: Where cancelled reminders are recorded; by default in memory
            (`CancelledJobs`).
    """

    def __init__(
        self,
        settings: Settings,
        dapr: DaprClient,
        observability: Observability,
        mailer: Mailer | None = None,
        sent: SentReminders | None = None,
        cancelled: CancelledReminders | None = None,
    ):
        self.settings = settings
        self.dapr = dapr
        self.metrics = observability.metrics
        self.mailer = mailer or Mailer(settings, observability)
        self.tokens = Tokens(settings.jwt_secret)
        self.sent: SentReminders = sent if sent is not None else SentJobs()
        self.cancelled: CancelledReminders = cancelled if cancelled is not None else CancelledJobs()
        for spec in (
            REMINDERS_SCHEDULED,
            REMINDER_EMAILS,
            REMINDER_FAILURES,
            REMINDER_DELIVERY_LATENCY,
        ):
            observability.metrics.register(spec)
        # The expected series exist from the start, at 0: rate() and alerts see them at once.
        for outcome in ("success", "error"):
            self.metrics.child(REMINDERS_SCHEDULED, outcome)
        for outcome in ("sent", "failed"):
            self.metrics.child(REMINDER_EMAILS, outcome)

    # -- reminders: schedule the job -------------------------------------------------------

    async def schedule(self, message: Message) -> None:
        """Handle `reminder.scheduled`: schedule the reminder's job, due at `remind_at`.

        Raises:
            pydantic.ValidationError: the payload is not a `ReminderScheduled` (DROP).
            Retry: the Jobs API did not take the job (`jobs_unavailable`).
        """
        reminder = ReminderScheduled.model_validate(message.data)
        if get_user_id() is None:
            set_user_id(reminder.user_id)
        name = job_name(reminder)
        due = due_time(reminder.remind_at)
        data: dict[str, Any] = {**reminder.model_dump(mode="json"), "event_id": message.id}
        fields = {
            "job": name,
            "task_id": reminder.task_id,
            "remind_at": _aware(reminder.remind_at).isoformat(),
            "due_time": due,
            "event_id": message.id,
        }
        cancelled_at = await self._cancelled(name, reminder)
        if cancelled_at is not None:
            # Written before the cancel (a replay from the park, or a late delivery): the
            # reminder is off. Acknowledged, so that it is neither retried nor parked.
            _log.info(
                "reminder not scheduled: it was cancelled after this event was written",
                extra={**fields, "cancelled_at": cancelled_at.isoformat()},
            )
            return
        try:
            await self.dapr.schedule_job(name, data=data, due_time=due, overwrite=True)
        except DaprError as exc:
            self.metrics.child(REMINDERS_SCHEDULED, "error").inc()
            _log.warning(
                "reminder job not scheduled: the Jobs API refused it",
                extra={**fields, "error": str(exc), "error_code": exc.error_code},
            )
            raise Retry(JOBS_UNAVAILABLE, str(exc)) from exc
        self.metrics.child(REMINDERS_SCHEDULED, "success").inc()
        _log.info("reminder scheduled", extra=fields)

    async def _cancelled(self, name: str, reminder: ReminderScheduled) -> datetime | None:
        """The `at` of a cancel that outranks this schedule of job `name`, or None."""
        cancelled_at = await self.cancelled.cancelled_at(name)
        if cancelled_at is None:
            return None
        if reminder.at is not None and _aware(reminder.at) > cancelled_at:
            return None  # scheduled again after the cancel: the same time set anew
        return cancelled_at

    # -- reminders: cancel the job ---------------------------------------------------------

    async def cancel(self, message: Message) -> None:
        """Handle `reminder.cancelled`: record the cancel, then delete the reminder's job.

        Recorded first: should the delete fail, or a trigger be under way already, the
        trigger finds the record and sends nothing.

        Raises:
            pydantic.ValidationError: the payload is not a `ReminderCancelled` (DROP).
            Retry: the Jobs API did not delete the job (`jobs_unavailable`).
        """
        cancel = ReminderCancelled.model_validate(message.data)
        if get_user_id() is None:
            set_user_id(cancel.user_id)
        name = job_name(cancel)
        fields = {
            "job": name,
            "task_id": cancel.task_id,
            "remind_at": _aware(cancel.remind_at).isoformat(),
            "reason": cancel.reason,
            "event_id": message.id,
        }
        await self.cancelled.record(name, cancel)
        try:
            await self.dapr.delete_job(name)
        except DaprError as exc:
            if exc.status != 404 and "not found" not in exc.detail.lower():
                _log.warning(
                    "reminder job not deleted: the Jobs API refused; the cancel is retried",
                    extra={**fields, "error": str(exc), "error_code": exc.error_code},
                )
                raise Retry(JOBS_UNAVAILABLE, str(exc)) from exc
            # No such job (it fired, or was never scheduled): nothing to delete.
        _log.info("reminder cancelled", extra=fields)

    # -- the job: send the e-mail, tell backend --------------------------------------------

    async def deliver(self, job: Job) -> None:
        """Handle a reminder job's trigger: e-mail the reminder once, then mark it sent on backend.

        Raises:
            pydantic.ValidationError: the job's data is not a reminder (dropped, parked).
            Drop: SMTP refused the e-mail or stayed unavailable (`smtp_rejected`,
                `smtp_unavailable`), or backend refused the update or stayed unavailable
                until the last trigger (`backend_rejected`, `backend_unavailable`): the SDK
                parks the job for a replay.
            Retry: backend is unavailable (`backend_unavailable`): the scheduler triggers
                the job again under its failure policy.
        """
        reminder = ReminderScheduled.model_validate(job.data)
        if get_user_id() is None:
            set_user_id(reminder.user_id)
        fields = {"job": job.name, "task_id": reminder.task_id, "attempt": job.attempt}
        cancelled_at = await self._cancelled(job.name, reminder)
        if cancelled_at is not None:
            # The delete came too late for this trigger, or a parked job was replayed after
            # the cancel: the job is done, with no e-mail and nothing to tell backend.
            _log.info(
                "reminder cancelled; not e-mailed",
                extra={**fields, "cancelled_at": cancelled_at.isoformat()},
            )
            return
        if await self.sent.was_sent(job.name):
            _log.info("reminder e-mail already sent; marking it sent on backend", extra=fields)
        else:
            await self._send(reminder, job, fields)
        await self._mark_sent(reminder, job, fields)

    async def _send(self, reminder: ReminderScheduled, job: Job, fields: dict[str, Any]) -> None:
        message = compose(reminder, job.name, self.settings)
        try:
            smtp_attempts = await self.mailer.send(message)
        except DeliveryFailed as failure:
            self.metrics.child(REMINDER_EMAILS, "failed").inc()
            self.metrics.child(REMINDER_FAILURES, failure.reason).inc()
            _log.warning(
                "reminder e-mail not sent; the reminder is parked for replay",
                extra={
                    **fields,
                    "reason": failure.reason,
                    "detail": failure.detail,
                    "smtp_attempts": failure.attempts,
                    "park_id": f"job/{job.name}",
                },
            )
            raise Drop(failure.reason, failure.detail) from failure
        # Recorded before backend is told: a trigger that finds backend away, or a new process
        # after a restart, sees the record and does not e-mail again.
        await self.sent.record(job.name, reminder)
        latency = max(
            0.0, datetime.now(timezone.utc).timestamp() - _aware(reminder.remind_at).timestamp()
        )
        self.metrics.child(REMINDER_EMAILS, "sent").inc()
        self.metrics.histogram(REMINDER_DELIVERY_LATENCY).observe(latency)
        _log.info(
            "reminder e-mail sent",
            extra={
                **fields,
                "message_id": message["Message-ID"],
                "smtp_attempts": smtp_attempts,
                "latency_seconds": round(latency, 3),
            },
        )

    async def _mark_sent(
        self, reminder: ReminderScheduled, job: Job, fields: dict[str, Any]
    ) -> None:
        method = f"tasks/{reminder.task_id}/reminder-sent"
        try:
            response = await self.dapr.invoke(
                BACKEND,
                method,
                http_method="POST",
                json={"job": job.name, "remind_at": _aware(reminder.remind_at).isoformat()},
                headers=self.tokens.header(reminder.user_id, actor=NOTIFICATIONS),
            )
        except DaprError as exc:
            problem = str(exc)
        else:
            status = response.status_code
            if response.is_success:
                _log.info("reminder marked sent on backend", extra=fields)
                return
            if status == 404:
                # The task was deleted after the reminder was scheduled: nothing left to mark.
                _log.warning(
                    "reminder sent, but backend no longer has the task; nothing marked",
                    extra={**fields, "status_code": status},
                )
                return
            problem = f"backend answered {status} to POST /{method}: {response.text[:200]}"
            if status < 500 and status not in (408, 429):
                # Authentication or contract trouble: another trigger would get the same answer.
                self._fail(BACKEND_REJECTED, problem, fields)
                raise Drop(BACKEND_REJECTED, problem)
        if job.attempt >= self.settings.job_trigger_attempts:
            # The scheduler's failure policy has no trigger left: park rather than lose it.
            self._fail(BACKEND_UNAVAILABLE, problem, fields)
            raise Drop(BACKEND_UNAVAILABLE, problem)
        _log.warning(
            "backend unavailable; the reminder's job will be triggered again",
            extra={**fields, "reason": BACKEND_UNAVAILABLE, "detail": problem},
        )
        raise Retry(BACKEND_UNAVAILABLE, problem)

    def _fail(self, reason: str, detail: str, fields: dict[str, Any]) -> None:
        self.metrics.child(REMINDER_FAILURES, reason).inc()
        _log.warning(
            "reminder not marked sent on backend; the reminder is parked for replay",
            extra={**fields, "reason": reason, "detail": detail, "park_id": f"job/{fields['job']}"},
        )
