"""The recurring-task-service app: subscriptions, dead-letter park, health checks, observability."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI

from reference_app.common.auth import Tokens
from reference_app.common.database import prepare_sqlite_file
from reference_app.common.events import (
    PUBSUB,
    RECURRING,
    TASK_COMPLETED,
    TASK_EVENTS,
    TASK_EVENTS_DLQ,
)
from reference_app.recurring.handler import NextOccurrences
from reference_app.recurring.settings import Settings
from todo_observability import configure, get_logger, instrument_sqlalchemy
from todo_observability.dapr import (
    DaprClient,
    DaprStateIdempotencyStore,
    IdempotencyStore,
    InMemoryDeadLetterStore,
    Message,
    SqlDeadLetterStore,
    Subscriptions,
)
from todo_observability.health import checks

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from todo_observability.dapr import DeadLetterStore
    from todo_observability.health import Check

__all__ = ["STATE_STORE", "TOKEN_TTL_SECONDS", "create_app"]

log = get_logger(__name__)

STATE_STORE = "statestore"
"""The Dapr state store holding processed message ids when `IDEMPOTENCY_STORE=dapr`."""
TOKEN_TTL_SECONDS = 300
"""Lifetime of the token recurring signs for each call to backend: one call, a few retries."""


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """Build the recurring-task-service.

    It subscribes to `task.completed` on `task-events`, creates each recurring
    task's next occurrence through backend, and parks what it cannot handle from
    `task-events-dlq` (list and replay them under `/dapr/dead-letters`).

    Args:
        settings: The settings; by default `Settings.from_env()`.
        dapr_transport: How to reach the Dapr sidecar instead of `settings.dapr_endpoint` over
            the network (tests: `httpx.ASGITransport(app=sidecar.asgi)`).
        **observability: Overrides of `todo_observability.configure()` (`registry=`,
            `traces_exporter=`, `log_stream=`, ...).

    Returns:
        The app; its lifespan closes the sidecar client and the dead-letter database.

    Raises:
        ConfigurationError: a setting is invalid.
    """
    settings = settings if settings is not None else Settings.from_env()
    dapr = DaprClient(
        settings.dapr_endpoint, api_token=settings.dapr_api_token, transport=dapr_transport
    )
    # The health checks share one client when the sidecar is reached through a transport;
    # otherwise each run opens a short-lived one (the SDK's default).
    probe = (
        httpx.AsyncClient(base_url=settings.dapr_endpoint, transport=dapr_transport)
        if dapr_transport is not None
        else None
    )
    engine: AsyncEngine | None = None
    dead_letters: DeadLetterStore
    if settings.dlq_database_url is not None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(settings.dlq_database_url)

        instrument_sqlalchemy(engine)
        dead_letters = SqlDeadLetterStore(engine)
    else:
        dead_letters = InMemoryDeadLetterStore()
    idempotency: IdempotencyStore | bool = (
        DaprStateIdempotencyStore(dapr, STATE_STORE)
        if settings.idempotency_store == "dapr"
        else True
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.dlq_database_url is not None:
            prepare_sqlite_file(settings.dlq_database_url)
        try:
            yield
        finally:
            await dapr.aclose()
            if probe is not None:
                await probe.aclose()
            if engine is not None:
                await engine.dispose()

    app = FastAPI(
        title="recurring-task-service",
        summary="Creates the next occurrence of each completed recurring task.",
        lifespan=lifespan,
    )
    health: list[Check] = [
        checks.dapr_sidecar(
            base_url=settings.dapr_endpoint, api_token=settings.dapr_api_token, client=probe
        ),
        checks.dapr_pubsub(
            PUBSUB,
            topics=[TASK_EVENTS, TASK_EVENTS_DLQ],
            base_url=settings.dapr_endpoint,
            api_token=settings.dapr_api_token,
            client=probe,
        ),
    ]
    if engine is not None:
        health.append(checks.database(engine, name="dlq-database"))
    options: dict[str, Any] = {
        "service_name": RECURRING,
        "environment": settings.environment,
        "health_checks": health,
    }
    obs = configure(app, **(options | observability))
    if settings.uses_dev_jwt_secret:
        log.warning(
            "JWT_SECRET is not set: signing tokens with the public development secret",
            extra={
                "variable": "JWT_SECRET",
                "environment": settings.environment,
                "fix": "set JWT_SECRET to the value backend uses (required in prod)",
            },
        )

    admin_token = settings.admin_token
    if not admin_token and settings.is_production:
        # The SDK closes the dead-letter API without a token only when the environment is
        # spelled exactly "prod"; an unguessable token closes it for "production" too.
        admin_token = secrets.token_urlsafe(32)
    subscriptions = Subscriptions(
        client=dapr,
        idempotency=idempotency,
        dead_letters=dead_letters,
        app_api_token=settings.app_api_token,
        admin_token=admin_token,
    )
    handler = NextOccurrences(dapr, Tokens(settings.jwt_secret, TOKEN_TTL_SECONDS), obs)
    subscriptions.subscribe(
        PUBSUB,
        TASK_EVENTS,
        match=f'event.type == "{TASK_COMPLETED}"',
        dead_letter_topic=TASK_EVENTS_DLQ,
        route=f"/dapr/events/{PUBSUB}/{TASK_EVENTS}/completed",
    )(handler.handle)

    @subscriptions.subscribe(PUBSUB, TASK_EVENTS, dead_letter_topic=TASK_EVENTS_DLQ)
    async def other_task_event(message: Message) -> None:
        # Without a default route the sidecar would dead-letter every other type published on
        # task-events (DAPR.md §2.1): they are not for us, so they are acknowledged.
        log.debug("task event of another type ignored", extra={"event_type": message.type})

    subscriptions.park_dead_letters(PUBSUB, TASK_EVENTS_DLQ)
    subscriptions.install(app)
    log.info(
        "recurring-task-service configured",
        extra={
            "dapr_endpoint": settings.dapr_endpoint,
            "idempotency_store": settings.idempotency_store,
            "dead_letter_store": "sql" if engine is not None else "memory",
        },
    )
    return app
