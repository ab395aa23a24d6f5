"""The backend's settings: every environment variable it reads, validated once, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.database import without_password
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

"""The development JWT secret, shared by every service when `JWT_SECRET` is unset outside prod."""

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/backend.db"
PROD_ENVIRONMENTS = frozenset({"prod", "production"})
ASYNC_DRIVERS = ("sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg")
_MIN_SECRET_BYTES = 32


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
        environment = (env.get("TODO_OBS_ENVIRONMENT", "").strip() or "dev").lower()
        return cls(
            database_url=_database_url(env),
            database_connect_timeout=_seconds(env, "DATABASE_CONNECT_TIMEOUT", 3.0),
            jwt_secret=_jwt_secret(env, environment),
            environment=environment,
            host=_host(env),
            port=_port(env),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=env.get("DAPR_API_TOKEN") or None,
            dapr_timeout=_seconds(env, "DAPR_TIMEOUT_SECONDS", 5.0),
            outbox_retry=_seconds(env, "OUTBOX_RETRY_SECONDS", 1.0),
            outbox_max_backoff=_seconds(env, "OUTBOX_MAX_BACKOFF_SECONDS", 30.0),
            outbox_poll=_seconds(env, "OUTBOX_POLL_SECONDS", 5.0),
            outbox_lease=_seconds(env, "OUTBOX_LEASE_SECONDS", 30.0),
            outbox_batch=_count(env, "OUTBOX_BATCH_SIZE", 100),
        )


def _error(variable: str, value: str, problem: str, fix: str) -> ConfigurationError:
    return ConfigurationError(
        f"{variable}={value!r} {problem}; {fix}",
        field=variable.lower(),
        env_var=variable,
        value=value,
    )


def _database_url(env: Mapping[str, str]) -> str:
    value = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    fix = (
        "use an async SQLAlchemy URL such as sqlite+aiosqlite:///./data/backend.db "
        "or postgresql+psycopg://user:password@host:5432/todo"
    )
    # The URL may hold a password: errors show it masked, never as given.
    shown = without_password(value)
    try:
        url = make_url(value)
    except ArgumentError:
        raise _error("DATABASE_URL", shown, "is not a database URL", fix) from None
    if url.drivername not in ASYNC_DRIVERS:
        raise _error(
            "DATABASE_URL",
            url.render_as_string(hide_password=True),
            f"uses the driver {url.drivername!r}, which is not one of {', '.join(ASYNC_DRIVERS)}",
            fix,
        )
    return value


def _jwt_secret(env: Mapping[str, str], environment: str) -> str:
    secret = env.get("JWT_SECRET", "")
    if not secret:
        if environment in PROD_ENVIRONMENTS:
            raise ConfigurationError(
                f"JWT_SECRET is required when TODO_OBS_ENVIRONMENT={environment!r}: set it to the "
                "secret every service shares, e.g. from: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                field="jwt_secret",
                env_var="JWT_SECRET",
                value="",
            )
        return DEV_JWT_SECRET
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        # The value is a secret: say how long it is, never what it is.
        raise ConfigurationError(
            f"JWT_SECRET is {len(secret.encode())} bytes long, HS256 needs at least "
            f"{_MIN_SECRET_BYTES}; generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            field="jwt_secret",
            env_var="JWT_SECRET",
        )
    if environment in PROD_ENVIRONMENTS and secret == DEV_JWT_SECRET:
        raise ConfigurationError(
            "JWT_SECRET is the public development secret, which anyone can sign tokens with: "
            "set a secret of your own in production",
            field="jwt_secret",
            env_var="JWT_SECRET",
        )
    return secret


def _host(env: Mapping[str, str]) -> str:
    value = env.get("HOST", "127.0.0.1")
    if not value.strip() or any(char.isspace() for char in value):
        raise _error(
            "HOST", value, "is not a host name or address", "use e.g. 127.0.0.1 or 0.0.0.0"
        )
    return value


def _port(env: Mapping[str, str]) -> int:
    value = env.get("PORT", "").strip() or "8001"
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise _error("PORT", value, "is not a port number", "use a number from 1 to 65535")
    return int(value)


def _seconds(env: Mapping[str, str], variable: str, default: float) -> float:
    value = env.get(variable, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise _error(
            variable, value, "is not a positive number of seconds", f"use e.g. {default:g}"
        )
    return seconds


def _count(env: Mapping[str, str], variable: str, default: int) -> int:
    value = env.get(variable, "").strip() or str(default)
    if not value.isdigit() or int(value) < 1:
        raise _error(variable, value, "is not a positive whole number", f"use e.g. {default}")
    return int(value)
