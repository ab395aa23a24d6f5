"""The notification service's app: subscriptions, the reminder job, health checks, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.events import (
    NOTIFICATIONS,
    PUBSUB,
    REMINDER_SCHEDULED,
    REMINDERS,
    REMINDERS_DLQ,
)
from reference_app.notifications.reminders import JOB_TYPE, Reminders
from reference_app.notifications.settings import Settings
from todo_observability import configure, get_logger
from todo_observability.dapr import DaprClient, Job, Message, Subscriptions
from todo_observability.health import checks

__all__ = ["create_app"]

_log = get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """Build the notification service (Dapr app id `notification-service`).

    It subscribes to `reminders` (type `reminder.scheduled`), schedules one Dapr job per
    reminder, e-mails the reminder when the job triggers and marks it sent on backend. It
    parks `reminders-dlq` and the reminder jobs it gives up on; both replay with `todo-obs dlq`.

    Args:
        settings: The settings; by default `Settings.from_env()`.
        dapr_transport: How to reach the sidecar instead of `settings.dapr_endpoint` over TCP
            (tests pass `httpx.ASGITransport(app=sidecar.asgi)`); used by the Dapr client and
            the Dapr health checks.
        **observability: Passed to `todo_observability.configure` (tests pass `registry=`,
            `traces_exporter=`, `log_stream=`, ...).

    Returns:
        The FastAPI app; its lifespan closes the sidecar client.
    """
    settings = settings or Settings.from_env()
    dapr = DaprClient(
        settings.dapr_endpoint, api_token=settings.dapr_api_token or "", transport=dapr_transport
    )
    # The health checks make short-lived clients of their own, unless the sidecar is in process.
    checks_client = httpx.AsyncClient(transport=dapr_transport) if dapr_transport else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dapr.aclose()
            if checks_client is not None:
                await checks_client.aclose()

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
    observability.setdefault("environment", settings.environment)
    obs = configure(
        app,
        service_name=NOTIFICATIONS,
        health_checks=[
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
        ],
        **observability,
    )
    if settings.jwt_secret == DEV_JWT_SECRET:
        _log.warning(
            "JWT_SECRET is not set: using the public development secret",
            extra={
                "environment": settings.environment,
                "fix": "set JWT_SECRET to the secret every service shares",
            },
        )

    reminders = Reminders(settings, dapr, obs)
    subscriptions = Subscriptions(
        client=dapr,
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
        },
    )
    return app
