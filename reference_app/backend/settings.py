"""The backend's settings: every environment variable it reads, validated once, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reference_app.common import settings as common
from reference_app.common.database import without_password
from reference_app.common.settings import DEV_JWT_SECRET
from todo_observability.dapr import sidecar_endpoint

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/backend.db"
ASYNC_DRIVERS = ("sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg")


@dataclass(frozen=True)
class Settings:
    """The backend's configuration.

    Build it with `Settings.from_env()` (what `python -m reference_app.backend` does), or
    directly in tests. Durations are in seconds.

    Attributes:
        database_url: SQLAlchemy async URL (`DATABASE_URL`): SQLite through aiosqlite or
            PostgreSQL through psycopg.
        database_connect_timeout: Seconds to wait for a database connection
            (`DATABASE_CONNECT_TIMEOUT`); a request then gets 503.
        jwt_secret: The HS256 secret shared by every service (`JWT_SECRET`).
        environment: `TODO_OBS_ENVIRONMENT`; `prod`/`production` require `JWT_SECRET`.
        host: Interface uvicorn listens on (`HOST`).
        port: Port uvicorn listens on (`PORT`).
        dapr_endpoint: The sidecar's HTTP API (`DAPR_HTTP_ENDPOINT`, else
            `http://127.0.0.1:$DAPR_HTTP_PORT`).
        dapr_api_token: Sent to the sidecar as `dapr-api-token` (`DAPR_API_TOKEN`).
        dapr_timeout: Seconds to wait for the sidecar to accept a publish (`DAPR_TIMEOUT_SECONDS`).
        outbox_retry: First delay before the outbox retries events the sidecar refused
            (`OUTBOX_RETRY_SECONDS`); it doubles on every failed pass.
        outbox_max_backoff: Longest delay between retries (`OUTBOX_MAX_BACKOFF_SECONDS`).
        outbox_poll: Seconds between sweeps of the outbox when nothing is known to be pending
            (`OUTBOX_POLL_SECONDS`): picks up events left by a crashed replica.
        outbox_lease: Seconds an event stays reserved by the replica publishing it
            (`OUTBOX_LEASE_SECONDS`); after that another one may publish it.
        outbox_batch: Events published per sweep (`OUTBOX_BATCH_SIZE`).
    """

    database_url: str = DEFAULT_DATABASE_URL
    database_connect_timeout: float = 3.0
    jwt_secret: str = DEV_JWT_SECRET
    environment: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8001
    dapr_endpoint: str = "http://127.0.0.1:3500"
    dapr_api_token: str | None = None
    dapr_timeout: float = 5.0
    outbox_retry: float = 1.0
    outbox_max_backoff: float = 30.0
    outbox_poll: float = 5.0
    outbox_lease: float = 30.0
    outbox_batch: int = 100

    @property
    def uses_dev_secret(self) -> bool:
        """Whether the JWT secret is the public development default."""
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings from `env` (default: `os.environ`).

        Raises:
            ConfigurationError: a variable is invalid or missing; the message names it, shows
                the value and says how to fix it.
        """
        env = os.environ if env is None else env
        environment = common.environment(env).lower()
        return cls(
            database_url=_database_url(env),
            database_connect_timeout=common.seconds(env, "DATABASE_CONNECT_TIMEOUT", 3.0),
            jwt_secret=common.jwt_secret(env, environment),
            environment=environment,
            host=common.host(env),
            port=common.port(env, "PORT", 8001),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=common.optional(env, "DAPR_API_TOKEN"),
            dapr_timeout=common.seconds(env, "DAPR_TIMEOUT_SECONDS", 5.0),
            outbox_retry=common.seconds(env, "OUTBOX_RETRY_SECONDS", 1.0),
            outbox_max_backoff=common.seconds(env, "OUTBOX_MAX_BACKOFF_SECONDS", 30.0),
            outbox_poll=common.seconds(env, "OUTBOX_POLL_SECONDS", 5.0),
            outbox_lease=common.seconds(env, "OUTBOX_LEASE_SECONDS", 30.0),
            outbox_batch=common.whole_number(env, "OUTBOX_BATCH_SIZE", 100),
        )


def _database_url(env: Mapping[str, str]) -> str:
    value = common.text(env, "DATABASE_URL", DEFAULT_DATABASE_URL)
    fix = (
        "use an async SQLAlchemy URL such as sqlite+aiosqlite:///./data/backend.db "
        "or postgresql+psycopg://user:password@host:5432/todo."
    )
    # The URL may hold a password: errors show it masked, never as given.
    try:
        url = make_url(value)
    except ArgumentError:
        raise common.invalid(
            "DATABASE_URL", without_password(value), "an SQLAlchemy URL", fix
        ) from None
    if url.drivername not in ASYNC_DRIVERS:
        raise common.invalid(
            "DATABASE_URL",
            url.render_as_string(hide_password=True),
            f"a URL with one of the drivers {', '.join(ASYNC_DRIVERS)}, not {url.drivername!r}",
            fix,
        )
    return value
