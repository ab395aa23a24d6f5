"""The notification service's settings: every environment variable, its default and its validation."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.database import check_async_database_url
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

__all__ = ["DEV_JWT_SECRET", "PROD_ENVIRONMENTS", "Settings"]

PROD_ENVIRONMENTS = frozenset({"prod", "production"})
"""Values of `TODO_OBS_ENVIRONMENT` that mean production (as the SDK reads it)."""
DLQ_DATABASE_EXAMPLES = (
    "sqlite+aiosqlite:///./data/notifications.db or postgresql+psycopg://user:pass@host/db"
)
"""The URLs a bad `DLQ_DATABASE_URL` error suggests."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
T = TypeVar("T")


def _fail(env_var: str, value: object, expected: str, fix: str) -> ConfigurationError:
    return ConfigurationError(
        f"{env_var} must be {expected}, got {value!r}. {fix}",
        field=env_var.lower(),
        env_var=env_var,
        value=value,
    )


@dataclass(frozen=True)
class Settings:
    """Everything the notification service reads from its environment.

    Build it with `Settings.from_env()`; constructing it directly (in tests) runs the same
    range checks. Secrets are left out of `repr()`.

    Attributes:
        environment: `TODO_OBS_ENVIRONMENT` (default `dev`); `prod`/`production` require `JWT_SECRET`.
        jwt_secret: `JWT_SECRET`, the HS256 secret shared by every service (at least 32 bytes);
            outside prod it defaults to `DEV_JWT_SECRET`, with a WARNING at start-up.
        host: `HOST`, the interface uvicorn listens on (default `127.0.0.1`).
        port: `PORT` (default 8003).
        smtp_host: `SMTP_HOST` (default `127.0.0.1`).
        smtp_port: `SMTP_PORT` (default 1025).
        smtp_from: `SMTP_FROM`, the sender address (default `reminders@todo.local`); its domain
            also names the `Message-ID` of every reminder.
        smtp_username: `SMTP_USERNAME`, to log in (with `smtp_password`); optional.
        smtp_password: `SMTP_PASSWORD`; optional.
        smtp_starttls: `SMTP_STARTTLS`, upgrade the connection with STARTTLS (default false).
        smtp_timeout: `SMTP_TIMEOUT`, seconds per SMTP conversation (default 10).
        smtp_attempts: `SMTP_ATTEMPTS`, deliveries tried per job trigger (default 3, at most 10).
        smtp_backoff_seconds: `SMTP_BACKOFF_SECONDS`, the wait after the first failed attempt,
            doubled after each further one (default 0.5).
        job_trigger_attempts: `REMINDER_JOB_ATTEMPTS`, the trigger of a reminder job at which a
            backend that is still unavailable parks the reminder instead of asking the
            scheduler for another trigger. Default 4: the Scheduler's default failure
            policy (constant, 1 s, 3 retries) triggers a job at most 4 times.
        dapr_endpoint: The sidecar's HTTP API: `DAPR_HTTP_ENDPOINT`, else
            `http://127.0.0.1:$DAPR_HTTP_PORT` (port 3500 by default).
        dapr_api_token: `DAPR_API_TOKEN`, sent to the sidecar; optional.
        app_api_token: `APP_API_TOKEN`, required from the sidecar on the Dapr routes; optional.
        admin_token: `TODO_OBS_ADMIN_TOKEN`, the bearer token of the dead-letter API; without
            it the API is closed in prod.
        dlq_database_url: `DLQ_DATABASE_URL`, an SQLAlchemy async URL
            (`sqlite+aiosqlite:///./data/notifications.db`) where parked reminder jobs and
            `reminders-dlq` messages are kept, so they outlive the process and every replica
            sees the same park; None (the default) keeps them in this process's memory.
    """

    environment: str = "dev"
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    host: str = "127.0.0.1"
    port: int = 8003
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_from: str = "reminders@todo.local"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    smtp_timeout: float = 10.0
    smtp_attempts: int = 3
    smtp_backoff_seconds: float = 0.5
    job_trigger_attempts: int = 4
    dapr_endpoint: str = "http://127.0.0.1:3500"
    dapr_api_token: str | None = field(default=None, repr=False)
    app_api_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # The URL may carry the database password.
    dlq_database_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.is_prod and self.jwt_secret == DEV_JWT_SECRET:
            raise ConfigurationError(
                f"JWT_SECRET must be set in {self.environment!r}: the development secret is "
                "public. Generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))' and give every service the same value.",
                field="jwt_secret",
                env_var="JWT_SECRET",
            )
        if len(self.jwt_secret.encode()) < 32:
            raise ConfigurationError(
                f"JWT_SECRET must be at least 32 bytes for HS256, got {len(self.jwt_secret.encode())} "
                "bytes. Generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'.",
                field="jwt_secret",
                env_var="JWT_SECRET",
            )
        for env_var, port in (("PORT", self.port), ("SMTP_PORT", self.smtp_port)):
            if not 0 < port < 65536:
                raise _fail(env_var, port, "a port number (1-65535)", "Set it or unset it.")
        if not self.host:
            raise _fail("HOST", self.host, "an interface address", "Try 127.0.0.1 or 0.0.0.0.")
        if not self.smtp_host:
            raise _fail("SMTP_HOST", self.smtp_host, "a host name", "Try 127.0.0.1.")
        local, at, domain = self.smtp_from.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in self.smtp_from):
            raise _fail(
                "SMTP_FROM",
                self.smtp_from,
                "an e-mail address",
                "Set it like reminders@todo.local.",
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            given, missing = (
                ("SMTP_USERNAME", "SMTP_PASSWORD")
                if self.smtp_password is None
                else ("SMTP_PASSWORD", "SMTP_USERNAME")
            )
            raise ConfigurationError(
                f"{given} is set but {missing} is not: set both to log in to the SMTP server, "
                "or neither.",
                field=missing.lower(),
                env_var=missing,
            )
        if not 0 < self.smtp_timeout <= 300:
            raise _fail("SMTP_TIMEOUT", self.smtp_timeout, "seconds between 0 and 300", "Try 10.")
        if not 1 <= self.smtp_attempts <= 10:
            raise _fail(
                "SMTP_ATTEMPTS", self.smtp_attempts, "a whole number from 1 to 10", "Try 3."
            )
        if not 0 <= self.smtp_backoff_seconds <= 60:
            raise _fail(
                "SMTP_BACKOFF_SECONDS",
                self.smtp_backoff_seconds,
                "seconds between 0 and 60",
                "Try 0.5 (doubled after each failed attempt).",
            )
        if not 1 <= self.job_trigger_attempts <= 100:
            raise _fail(
                "REMINDER_JOB_ATTEMPTS",
                self.job_trigger_attempts,
                "a whole number from 1 to 100",
                "Match the job failure policy: 1 + maxRetries (4 for the Scheduler's default).",
            )
        if self.dlq_database_url is not None:
            check_async_database_url(
                self.dlq_database_url, env_var="DLQ_DATABASE_URL", example=DLQ_DATABASE_EXAMPLES
            )

    @property
    def is_prod(self) -> bool:
        """Whether `environment` is production."""
        return self.environment.lower() in PROD_ENVIRONMENTS

    @property
    def uses_dev_secret(self) -> bool:
        """Whether the JWT secret is the public development one (logged as a WARNING)."""
        return self.jwt_secret == DEV_JWT_SECRET

    @property
    def mail_domain(self) -> str:
        """The domain of `smtp_from`: the right-hand side of every reminder's `Message-ID`."""
        return self.smtp_from.rpartition("@")[2]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Read and validate the settings from `env`.

        Raises:
            ConfigurationError: a variable is invalid; the message names it, shows the value
                and says how to fix it.
        """

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def optional(name: str) -> str | None:
            return env.get(name, "").strip() or None

        def parsed(name: str, default: T, parse: Callable[[str], T], expected: str, fix: str) -> T:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except ValueError:
                raise _fail(name, raw, expected, fix) from None

        def flag(name: str) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw in _TRUE:
                return True
            if raw in _FALSE:
                return False
            raise _fail(name, env[name], "true or false", "Use true/false, 1/0, yes/no or on/off.")

        environment = text("TODO_OBS_ENVIRONMENT", "dev")
        secret = env.get("JWT_SECRET", "")
        if not secret and environment.lower() in PROD_ENVIRONMENTS:
            raise ConfigurationError(
                f"JWT_SECRET is required when TODO_OBS_ENVIRONMENT={environment!r}: set it to the "
                "secret every service shares (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))').",
                field="jwt_secret",
                env_var="JWT_SECRET",
            )
        port_fix = "Set a number from 1 to 65535."
        return cls(
            environment=environment,
            jwt_secret=secret or DEV_JWT_SECRET,
            host=text("HOST", cls.host),
            port=parsed("PORT", cls.port, int, "a port number (1-65535)", port_fix),
            smtp_host=text("SMTP_HOST", cls.smtp_host),
            smtp_port=parsed("SMTP_PORT", cls.smtp_port, int, "a port number", port_fix),
            smtp_from=text("SMTP_FROM", cls.smtp_from),
            smtp_username=optional("SMTP_USERNAME"),
            smtp_password=env.get("SMTP_PASSWORD") or None,
            smtp_starttls=flag("SMTP_STARTTLS"),
            smtp_timeout=parsed(
                "SMTP_TIMEOUT", cls.smtp_timeout, float, "a number of seconds", "Try 10."
            ),
            smtp_attempts=parsed(
                "SMTP_ATTEMPTS", cls.smtp_attempts, int, "a whole number", "Try 3."
            ),
            smtp_backoff_seconds=parsed(
                "SMTP_BACKOFF_SECONDS",
                cls.smtp_backoff_seconds,
                float,
                "a number of seconds",
                "Try 0.5.",
            ),
            job_trigger_attempts=parsed(
                "REMINDER_JOB_ATTEMPTS",
                cls.job_trigger_attempts,
                int,
                "a whole number",
                "Try 4 (the Scheduler's default failure policy triggers a job at most 4 times).",
            ),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=optional("DAPR_API_TOKEN"),
            app_api_token=optional("APP_API_TOKEN"),
            admin_token=optional("TODO_OBS_ADMIN_TOKEN"),
            dlq_database_url=optional("DLQ_DATABASE_URL"),
        )
