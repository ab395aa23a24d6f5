"""The frontend's settings: every environment variable it reads, validated once, at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reference_app.common import settings as common
from reference_app.common.events import BACKEND
from reference_app.common.settings import DEV_JWT_SECRET
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

__all__ = ["DEFAULT_DEMO_USERS", "DEV_JWT_SECRET", "DemoUser", "Settings"]

DEFAULT_DEMO_USERS = "alice:alice@todo.local,bob:bob@todo.local"

_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,:]+@[^@\s,:]+$")
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DemoUser:
    """A user who can sign in on the demo page.

    Attributes:
        user_id: The user id (the token's subject; backend keeps tasks per user id).
        email: Where reminders go (the token's `email` claim).
    """

    user_id: str
    email: str


@dataclass(frozen=True)
class Settings:
    """What the frontend needs to run; `Settings.from_env()` reads and validates it.

    Attributes:
        jwt_secret: `JWT_SECRET`, the HS256 secret shared by every service (at least 32 bytes).
            Outside production it defaults to `DEV_JWT_SECRET`; in production it is required.
        environment: `TODO_OBS_ENVIRONMENT` (default `dev`); `prod`/`production` is production.
        demo_users: `DEMO_USERS`, `id:email` pairs separated by commas.
        host: `HOST`, the interface uvicorn listens on.
        port: `PORT`, the port uvicorn listens on.
        dapr_endpoint: The sidecar's HTTP API, from `DAPR_HTTP_ENDPOINT` or `DAPR_HTTP_PORT`.
        dapr_api_token: `DAPR_API_TOKEN`, sent to the sidecar as `dapr-api-token` when set.
        backend_app_id: `BACKEND_APP_ID`, the Dapr app id of the tasks API.
        backend_timeout: `BACKEND_TIMEOUT_SECONDS`, how long a call to backend may take.
        session_ttl_seconds: `SESSION_TTL_SECONDS`, the lifetime of a sign-in (cookie and token).
        cookie_secure: `SESSION_COOKIE_SECURE`, send the session cookie over HTTPS only
            (default: true in production, false elsewhere, where the page is served over HTTP).
    """

    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    environment: str = "dev"
    demo_users: tuple[DemoUser, ...] = (
        DemoUser("alice", "alice@todo.local"),
        DemoUser("bob", "bob@todo.local"),
    )
    host: str = "127.0.0.1"
    port: int = 8000
    dapr_endpoint: str = "http://127.0.0.1:3500"
    dapr_api_token: str = field(default="", repr=False)
    backend_app_id: str = BACKEND
    backend_timeout: float = 10.0
    session_ttl_seconds: int = 8 * 3600
    cookie_secure: bool = False

    def __post_init__(self) -> None:
        common.check_jwt_secret(self.jwt_secret, self.environment)
        if not self.demo_users:
            raise ConfigurationError(
                "DEMO_USERS names no user; give at least one as id:email, "
                f"such as {DEFAULT_DEMO_USERS!r}.",
                field="demo_users",
                env_var="DEMO_USERS",
                value="",
            )

    @property
    def production(self) -> bool:
        """Whether `environment` is production."""
        return common.is_production(self.environment)

    @property
    def uses_dev_secret(self) -> bool:
        """Whether tokens are signed with the public development secret."""
        return self.jwt_secret == DEV_JWT_SECRET

    def demo_user(self, user_id: str) -> DemoUser | None:
        """The demo user called `user_id`, or None."""
        return next((user for user in self.demo_users if user.user_id == user_id), None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: `os.environ`).

        Raises:
            ConfigurationError: a variable has an invalid value; the message names it, shows
                the value and says how to fix it.
        """
        env = os.environ if env is None else env
        environment = common.environment(env)
        return cls(
            jwt_secret=common.jwt_secret(env, environment),
            environment=environment,
            demo_users=_demo_users(common.text(env, "DEMO_USERS", DEFAULT_DEMO_USERS)),
            host=common.host(env),
            port=common.port(env, "PORT", 8000),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=env.get("DAPR_API_TOKEN", ""),
            backend_app_id=_app_id(common.text(env, "BACKEND_APP_ID", BACKEND)),
            backend_timeout=common.seconds(env, "BACKEND_TIMEOUT_SECONDS", 10.0),
            session_ttl_seconds=common.whole_number(
                env,
                "SESSION_TTL_SECONDS",
                8 * 3600,
                expected="a whole number of seconds greater than 0",
            ),
            # Production serves the page over HTTPS; elsewhere it is plain HTTP on loopback.
            cookie_secure=common.flag(
                env, "SESSION_COOKIE_SECURE", common.is_production(environment)
            ),
        )


def _app_id(value: str) -> str:
    if not _APP_ID.fullmatch(value):
        raise common.invalid(
            "BACKEND_APP_ID",
            value,
            "a Dapr app id (letters, digits, '.', '_', '-')",
            f"set it like BACKEND_APP_ID={BACKEND}, or unset it.",
        )
    return value


def _demo_users(raw: str) -> tuple[DemoUser, ...]:
    users: list[DemoUser] = []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        user_id, _, email = (part.strip() for part in entry.partition(":"))
        problem = ""
        if not _USER_ID.fullmatch(user_id):
            problem = f"{user_id!r} is not a user id (letters, digits, '.', '_', '-')"
        elif not _EMAIL.fullmatch(email):
            problem = f"{entry!r} has no e-mail address after ':'"
        elif any(user.user_id == user_id for user in users):
            problem = f"user {user_id!r} is given twice"
        if problem:
            raise ConfigurationError(
                f"DEMO_USERS must be id:email pairs separated by commas, got {raw!r}: {problem}; "
                f"for example {DEFAULT_DEMO_USERS!r}.",
                field="demo_users",
                env_var="DEMO_USERS",
                value=raw,
            )
        users.append(DemoUser(user_id, email))
    if not users:
        raise ConfigurationError(
            f"DEMO_USERS names no user, got {raw!r}; give at least one as id:email, "
            f"such as {DEFAULT_DEMO_USERS!r}.",
            field="demo_users",
            env_var="DEMO_USERS",
            value=raw,
        )
    return tuple(users)
