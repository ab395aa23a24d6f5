"""The notification service's app: subscriptions, the reminder job, health checks, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.database import prepare_sqlite_file
from reference_app.common.events import (
    NOTIFICATIONS,
    PUBSUB,
    REMINDER_CANCELLED,
    REMINDER_SCHEDULED,
    REMINDERS,
    REMINDERS_DLQ,
)
from reference_app.notifications.reminders import (
    JOB_TYPE,
    CancelledJobs,
    CancelledReminders,
    Reminders,
    SentJobs,
    SentReminders,
    SqlCancelledReminders,
    SqlSentReminders,
)
from reference_app.notifications.settings import Settings
from todo_observability import configure, get_logger, instrument_sqlalchemy
from todo_observability.dapr import (
    DaprClient,
    InMemoryDeadLetterStore,
    Job,
    Message,
    SqlDeadLetterStore,
    Subscriptions,
)
from todo_observability.health import checks

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from todo_observability.dapr import DeadLetterStore
    from todo_observability.health import Check

__all__ = ["DEAD_LETTER_TABLE_PREFIX", "create_app"]

DEAD_LETTER_TABLE_PREFIX = "todo_obs_notifications_"
"""Prefix of the park's tables in the `DLQ_DATABASE_URL` database.

In prod that database also holds recurring-task-service's park (the SDK's default tables,
`todo_obs_dead_letters`): tables of its own keep each service listing and replaying only
what it parked.
"""

_log = get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """Build the notification service (Dapr app id `notification-service`).

    It subscribes to `reminders` (types `reminder.scheduled` and `reminder.cancelled`),
    schedules one Dapr job per reminder and deletes it when the reminder is cancelled, e-mails
    the reminder when the job triggers and marks it sent on backend. It
    parks `reminders-dlq` and the reminder jobs it gives up on; both replay with `todo-obs dlq`.
    The park is in memory, or with `settings.dlq_database_url` in that database (tables
    prefixed `DEAD_LETTER_TABLE_PREFIX`), which readiness then checks as `dlq-database`; the
    records of the reminders sent and cancelled are kept with it (tables
    `<prefix>sent_reminders`, `<prefix>cancelled_reminders`).

    Args:
        settings: The settings; by default `Settings.from_env()`.
        dapr_transport: How to reach the sidecar instead of `settings.dapr_endpoint` over TCP
            (tests pass `httpx.ASGITransport(app=sidecar.asgi)`); used by the Dapr client and
            the Dapr health checks.
        **observability: Passed to `todo_observability.configure` (tests pass `registry=`,
            `traces_exporter=`, `log_stream=`, ...).

    Returns:
        The FastAPI app; its lifespan closes the sidecar client and the dead-letter database.
    """
    settings = settings or Settings.from_env()
    dapr = DaprClient(
        settings.dapr_endpoint, api_token=settings.dapr_api_token or "", transport=dapr_transport
    )
    # The health checks make short-lived clients of their own, unless the sidecar is in process.
    checks_client = httpx.AsyncClient(transport=dapr_transport) if dapr_transport else None
    engine: AsyncEngine | None = None
    dead_letters: DeadLetterStore
    sent: SentReminders
    cancelled: CancelledReminders
    if settings.dlq_database_url is not None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(settings.dlq_database_url)

        instrument_sqlalchemy(engine)
        dead_letters = SqlDeadLetterStore(engine, table_prefix=DEAD_LETTER_TABLE_PREFIX)
        # The sent reminders beside the dead letters: both must outlive a restart, or a
        # reminder replayed (or retried) on a new process is e-mailed twice.
        sent = SqlSentReminders(engine, table_prefix=DEAD_LETTER_TABLE_PREFIX)
        # And the cancels: a parked schedule replayed after its cancel must stay cancelled.
        cancelled = SqlCancelledReminders(engine, table_prefix=DEAD_LETTER_TABLE_PREFIX)
    else:
        dead_letters = InMemoryDeadLetterStore()
        sent = SentJobs()
        cancelled = CancelledJobs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if settings.dlq_database_url is not None:
                prepare_sqlite_file(settings.dlq_database_url)
            yield
        finally:
            await dapr.aclose()
            if checks_client is not None:
                await checks_client.aclose()
            if engine is not None:
                await engine.dispose()

    app = FastAPI(
        title="notification-service",
        summary="Reminder e-mails for the todo reference system, scheduled as Dapr jobs.",
        lifespan=lifespan,
    )
    dapr_checks: dict[str, Any] = {
        "base_url": settings.dapr_endpoint,
        "api_token": settings.dapr_api_token or "",
        "client": checks_client,
    }
    health: list[Check] = [
        # Critical: sending e-mails is all this service does.
        checks.smtp(
            settings.smtp_host,
            settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=min(settings.smtp_timeout, 2.0),
            critical=True,
        ),
        checks.dapr_sidecar(**dapr_checks),
        checks.dapr_jobs(**dapr_checks),
    ]
    if engine is not None:
        # Critical, as in recurring-task-service: without it nothing can be parked or replayed.
        health.append(checks.database(engine, name="dlq-database"))
    observability.setdefault("environment", settings.environment)
    obs = configure(app, service_name=NOTIFICATIONS, health_checks=health, **observability)
    if settings.jwt_secret == DEV_JWT_SECRET:
        _log.warning(
            "JWT_SECRET is not set: using the public development secret",
            extra={
                "environment": settings.environment,
                "fix": "set JWT_SECRET to the secret every service shares",
            },
        )

    reminders = Reminders(settings, dapr, obs, sent=sent, cancelled=cancelled)
    subscriptions = Subscriptions(
        client=dapr,
        dead_letters=dead_letters,
        app_api_token=settings.app_api_token or "",
        admin_token=settings.admin_token or "",
        observability=obs,
    )

    @subscriptions.subscribe(
        PUBSUB,
        REMINDERS,
        match=f'event.type == "{REMINDER_SCHEDULED}"',
        dead_letter_topic=REMINDERS_DLQ,
    )
    async def on_reminder_scheduled(message: Message) -> None:
        await reminders.schedule(message)

    # The same topic, so the same partition as the task's schedules: in the order written.
    @subscriptions.subscribe(
        PUBSUB,
        REMINDERS,
        match=f'event.type == "{REMINDER_CANCELLED}"',
        dead_letter_topic=REMINDERS_DLQ,
    )
    async def on_reminder_cancelled(message: Message) -> None:
        await reminders.cancel(message)

    @subscriptions.job(JOB_TYPE)
    async def on_reminder_due(job: Job) -> None:
        await reminders.deliver(job)

    subscriptions.park_dead_letters(PUBSUB, REMINDERS_DLQ)
    subscriptions.install(app)
    app.state.reminders = reminders
    app.state.subscriptions = subscriptions
    _log.info(
        "notification service configured",
        extra={
            "smtp_server": f"{settings.smtp_host}:{settings.smtp_port}",
            "smtp_attempts": settings.smtp_attempts,
            "dapr_endpoint": settings.dapr_endpoint,
            "dead_letter_store": "sql" if engine is not None else "memory",
            "sent_reminders_store": "sql" if engine is not None else "memory",
            "cancelled_reminders_store": "sql" if engine is not None else "memory",
        },
    )
    return app
