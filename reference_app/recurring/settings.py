"""The recurring-task-service's settings: every environment variable it reads, validated once.

`Settings.from_env()` reads the process environment; a bad value raises a
`ConfigurationError` naming the variable, showing the value and saying how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from reference_app.common import settings as common
from reference_app.common.database import check_async_database_url
from reference_app.common.settings import DEV_JWT_SECRET, PROD_ENVIRONMENTS
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

__all__ = ["DEFAULT_PORT", "DEV_JWT_SECRET", "PROD_ENVIRONMENTS", "Settings"]

DEFAULT_PORT = 8002
"""The port uvicorn listens on when `PORT` is not set."""
IDEMPOTENCY_STORES = ("memory", "dapr")
DLQ_DATABASE_EXAMPLES = (
    "sqlite+aiosqlite:///./data/recurring.db or postgresql+psycopg://user:pass@host/db"
)

IdempotencyStoreName = Literal["memory", "dapr"]


@dataclass(frozen=True)
class Settings:
    """How one recurring-task-service process runs.

    Every attribute comes from one environment variable (see `from_env`); secrets
    are left out of `repr()`.

    Attributes:
        jwt_secret: `JWT_SECRET`, the HS256 secret shared with backend: tokens signed with
            it let recurring act for a task's owner. Outside prod it defaults to
            `DEV_JWT_SECRET`; in prod it is required.
        environment: `TODO_OBS_ENVIRONMENT` (`dev` by default; `prod`/`production` is production).
        host: `HOST`, the interface uvicorn binds to.
        port: `PORT`, the port uvicorn listens on.
        dapr_endpoint: The sidecar's HTTP API: `DAPR_HTTP_ENDPOINT`, else
            `http://127.0.0.1:$DAPR_HTTP_PORT` (3500 by default).
        dapr_api_token: `DAPR_API_TOKEN`, sent to the sidecar as `dapr-api-token` ("" for none).
        app_api_token: `APP_API_TOKEN`, required from the sidecar on delivery routes ("" for none).
        admin_token: `TODO_OBS_ADMIN_TOKEN`, the bearer token of the dead-letter API
            (`/dapr/dead-letters`); without it that API is closed in prod.
        dlq_database_url: `DLQ_DATABASE_URL`, an SQLAlchemy async URL
            (`sqlite+aiosqlite:///./data/recurring.db`) for parked dead letters; None keeps
            them in memory.
        idempotency_store: `IDEMPOTENCY_STORE`: `memory` (processed message ids kept by this
            process) or `dapr` (the Dapr state store `statestore`, shared by every replica).
    """

    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    environment: str = "dev"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    dapr_endpoint: str = "http://127.0.0.1:3500"
    dapr_api_token: str = field(default="", repr=False)
    app_api_token: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    dlq_database_url: str | None = field(default=None, repr=False)
    idempotency_store: IdempotencyStoreName = "memory"

    def __post_init__(self) -> None:
        if not self.environment.strip():
            raise ConfigurationError(
                "TODO_OBS_ENVIRONMENT must not be empty; set it to dev, test or prod, or unset it "
                "(dev).",
                field="environment",
                env_var="TODO_OBS_ENVIRONMENT",
                value=self.environment,
            )
        common.check_jwt_secret(self.jwt_secret, self.environment)
        if not self.host.strip():
            raise ConfigurationError(
                "HOST must not be empty; set it to the interface to listen on, such as "
                "127.0.0.1 or 0.0.0.0, or unset it (127.0.0.1).",
                field="host",
                env_var="HOST",
                value=self.host,
            )
        common.check_port("PORT", self.port, DEFAULT_PORT)
        if self.idempotency_store not in IDEMPOTENCY_STORES:
            raise ConfigurationError(
                f"IDEMPOTENCY_STORE must be 'memory' or 'dapr', got {self.idempotency_store!r}; "
                "use 'dapr' when several replicas run, or unset it (memory).",
                field="idempotency_store",
                env_var="IDEMPOTENCY_STORE",
                value=self.idempotency_store,
            )
        if self.dlq_database_url is not None:
            check_async_database_url(
                self.dlq_database_url,
                env_var="DLQ_DATABASE_URL",
                example=DLQ_DATABASE_EXAMPLES,
            )

    @property
    def is_production(self) -> bool:
        """Whether `environment` names production."""
        return common.is_production(self.environment)

    @property
    def uses_dev_jwt_secret(self) -> bool:
        """Whether tokens are signed with the public development secret."""
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Read and validate the settings from `env` (the process environment by default).

        Raises:
            ConfigurationError: a variable has a bad value (or `JWT_SECRET` is missing in
                prod); the message names it, shows the value and says how to fix it.
        """
        environment = common.environment(env)
        store = common.text(env, "IDEMPOTENCY_STORE", "memory").lower()
        if store not in IDEMPOTENCY_STORES:
            raise ConfigurationError(
                f"IDEMPOTENCY_STORE must be 'memory' or 'dapr', got {env.get('IDEMPOTENCY_STORE')!r}; "
                "use 'dapr' when several replicas run, or unset it (memory).",
                field="idempotency_store",
                env_var="IDEMPOTENCY_STORE",
                value=env.get("IDEMPOTENCY_STORE"),
            )
        return cls(
            jwt_secret=common.jwt_secret(env, environment),
            environment=environment,
            host=common.host(env),
            port=common.port(env, "PORT", DEFAULT_PORT),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=env.get("DAPR_API_TOKEN", ""),
            app_api_token=env.get("APP_API_TOKEN", ""),
            admin_token=env.get("TODO_OBS_ADMIN_TOKEN", ""),
            dlq_database_url=common.optional(env, "DLQ_DATABASE_URL"),
            idempotency_store="dapr" if store == "dapr" else "memory",
        )
