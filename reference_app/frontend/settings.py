"""The frontend's settings: every environment variable it reads, validated once, at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.events import BACKEND
from todo_observability import ConfigurationError
from todo_observability.dapr import sidecar_endpoint

__all__ = ["DEFAULT_DEMO_USERS", "DEV_JWT_SECRET", "DemoUser", "Settings"]

"""The JWT secret used outside production when `JWT_SECRET` is not set (a WARNING says so)."""
DEFAULT_DEMO_USERS = "alice:alice@todo.local,bob:bob@todo.local"
PROD_ENVIRONMENTS = frozenset({"prod", "production"})
"""Values of `TODO_OBS_ENVIRONMENT` that mean production (as the SDK reads them)."""

_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,:]+@[^@\s,:]+$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
T = TypeVar("T")


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
        if len(self.jwt_secret.encode()) < 32:
            raise ConfigurationError(
                f"JWT_SECRET must be at least 32 bytes for HS256, got {len(self.jwt_secret.encode())} "
                "byte(s); generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                field="jwt_secret",
                env_var="JWT_SECRET",
                value="<redacted>",
            )
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
        return self.environment.lower() in PROD_ENVIRONMENTS

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
        environment = env.get("TODO_OBS_ENVIRONMENT", "").strip() or "dev"
        production = environment.lower() in PROD_ENVIRONMENTS
        secret = env.get("JWT_SECRET", "")
        if production and not secret:
            raise ConfigurationError(
                f"JWT_SECRET is required when TODO_OBS_ENVIRONMENT={environment!r}: set it to the "
                "secret every service shares (at least 32 bytes; generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))').",
                field="jwt_secret",
                env_var="JWT_SECRET",
                value="",
            )
        if production and secret == DEV_JWT_SECRET:
            raise ConfigurationError(
                "JWT_SECRET is the public development secret, which must not be used when "
                f"TODO_OBS_ENVIRONMENT={environment!r}: set a secret of your own.",
                field="jwt_secret",
                env_var="JWT_SECRET",
                value="<the development secret>",
            )
        return cls(
            jwt_secret=secret or DEV_JWT_SECRET,
            environment=environment,
            demo_users=_demo_users(env.get("DEMO_USERS", "").strip() or DEFAULT_DEMO_USERS),
            host=_read(env, "HOST", "127.0.0.1", _host, "an interface address such as 0.0.0.0"),
            port=_read(env, "PORT", "8000", _port, "a port number between 1 and 65535"),
            dapr_endpoint=sidecar_endpoint(env),
            dapr_api_token=env.get("DAPR_API_TOKEN", ""),
            backend_app_id=_read(
                env, "BACKEND_APP_ID", BACKEND, _app_id, "a Dapr app id such as 'backend'"
            ),
            backend_timeout=_read(
                env,
                "BACKEND_TIMEOUT_SECONDS",
                "10",
                _positive_float,
                "a number of seconds greater than 0, such as 10",
            ),
            session_ttl_seconds=_read(
                env,
                "SESSION_TTL_SECONDS",
                str(8 * 3600),
                _positive_int,
                "a whole number of seconds greater than 0, such as 28800",
            ),
            cookie_secure=_read(
                env,
                "SESSION_COOKIE_SECURE",
                "true" if production else "false",
                _bool,
                "true or false",
            ),
        )


def _read(
    env: Mapping[str, str],
    name: str,
    default: str,
    parse: Callable[[str], T],
    expected: str,
) -> T:
    raw = env.get(name, "")
    value = raw.strip() or default
    try:
        return parse(value)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be {expected}, got {raw!r}; fix or unset it (default: {default!r}).",
            field=name.lower(),
            env_var=name,
            value=raw,
        ) from None


def _host(value: str) -> str:
    if any(char.isspace() for char in value):
        raise ValueError(value)
    return value


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(value)
    return port


def _app_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ValueError(value)
    return value


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(value)
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(value)


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
