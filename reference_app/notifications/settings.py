"""The notification service's settings: every environment variable, its default and its validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from reference_app.common import settings as common
from reference_app.common.database import check_async_database_url
from reference_app.common.settings import DEV_JWT_SECRET, PROD_ENVIRONMENTS, invalid
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

__all__ = ["DEV_JWT_SECRET", "PROD_ENVIRONMENTS", "Settings"]

DLQ_DATABASE_EXAMPLES = (
    "sqlite+aiosqlite:///./data/notifications.db or postgresql+psycopg://user:pass@host/db"
)
"""The URLs a bad `DLQ_DATABASE_URL` error suggests."""


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
        common.check_jwt_secret(self.jwt_secret, self.environment)
        common.check_port("PORT", self.port, 8003)
        common.check_port("SMTP_PORT", self.smtp_port, 1025)
        if not self.host:
            raise invalid("HOST", self.host, "an interface address", "try 127.0.0.1 or 0.0.0.0.")
        if not self.smtp_host:
            raise invalid("SMTP_HOST", self.smtp_host, "a host name", "try 127.0.0.1.")
        local, at, domain = self.smtp_from.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in self.smtp_from):
            raise invalid(
                "SMTP_FROM",
                self.smtp_from,
                "an e-mail address",
                "set it like reminders@todo.local.",
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
            raise invalid("SMTP_TIMEOUT", self.smtp_timeout, "seconds between 0 and 300", "try 10.")
        if not 1 <= self.smtp_attempts <= 10:
            raise invalid(
                "SMTP_ATTEMPTS", self.smtp_attempts, "a whole number from 1 to 10", "try 3."
            )
        if not 0 <= self.smtp_backoff_seconds <= 60:
            raise invalid(
                "SMTP_BACKOFF_SECONDS",
                self.smtp_backoff_seconds,
                "seconds between 0 and 60",
                "try 0.5 (doubled after each failed attempt).",
            )
        if not 1 <= self.job_trigger_attempts <= 100:
            raise invalid(
                "REMINDER_JOB_ATTEMPTS",
                self.job_trigger_attempts,
                "a whole number from 1 to 100",
                "match the job failure policy: 1 + maxRetries (4 for the Scheduler's default).",
            )
        if self.dlq_database_url is not None:
            check_async_database_url(
                self.dlq_database_url, env_var="DLQ_DATABASE_URL", example=DLQ_DATABASE_EXAMPLES
            )

    @property
    def is_prod(self) -> bool:
        """Whether `environment` is production."""
        return common.is_production(self.environment)

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
        environment = common.environment(env)
        return cls(
            environment=environment,
            jwt_secret=common.jwt_secret(env, environment),
            host=common.host(env, cls.host),
            port=common.port(env, "PORT", cls.port),
            smtp_host=common.text(env, "SMTP_HOST", cls.smtp_host),
            smtp_port=common.port(env, "SMTP_PORT", cls.smtp_port),
            smtp_from=common.text(env, "SMTP_FROM", cls.smtp_from),
            smtp_username=common.optional(env, "SMTP_USERNAME"),
            smtp_password=env.get("SMTP_PASSWORD") or None,
            smtp_starttls=common.flag(env, "SMTP_STARTTLS", cls.smtp_starttls),
            smtp_timeout=common.seconds(env, "SMTP_TIMEOUT", cls.smtp_timeout),
            smtp_attempts=common.whole_number(env, "SMTP_ATTEMPTS", cls.smtp_attempts),
            smtp_backoff_seconds=common.seconds(
                env, "SMTP_BACKOFF_SECONDS", cls.smtp_backoff_seconds, zero_allowed=True
            ),
            # The Scheduler's default failure policy triggers a job at most 4 times.
            job_trigger_attempts=common.whole_number(
                env, "REMINDER_JOB_ATTEMPTS", cls.job_trigger_attempts
            ),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=common.optional(env, "DAPR_API_TOKEN"),
            app_api_token=common.optional(env, "APP_API_TOKEN"),
            admin_token=common.optional(env, "TODO_OBS_ADMIN_TOKEN"),
            dlq_database_url=common.optional(env, "DLQ_DATABASE_URL"),
        )
