"""Settings.from_env: defaults, and a clear error for each bad variable."""

from __future__ import annotations

import pytest

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.recurring import Settings
from todo_observability import ConfigurationError

SECRET = "s" * 32


def test_defaults_outside_prod() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.uses_dev_jwt_secret
    assert (settings.host, settings.port) == ("127.0.0.1", 8002)
    assert settings.dapr_endpoint == "http://127.0.0.1:3500"
    assert settings.dlq_database_url is None
    assert settings.idempotency_store == "memory"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "JWT_SECRET": SECRET,
            "TODO_OBS_ENVIRONMENT": "production",
            "HOST": "0.0.0.0",
            "PORT": "9002",
            "DAPR_HTTP_PORT": "3502",
            "DAPR_API_TOKEN": "dapr-token",
            "APP_API_TOKEN": "app-token",
            "TODO_OBS_ADMIN_TOKEN": "admin-token",
            "DLQ_DATABASE_URL": "sqlite+aiosqlite:///./data/recurring.db",
            "IDEMPOTENCY_STORE": "Dapr",
        }
    )
    assert settings.is_production
    assert not settings.uses_dev_jwt_secret
    assert (settings.host, settings.port) == ("0.0.0.0", 9002)
    assert settings.dapr_endpoint == "http://127.0.0.1:3502"
    assert (settings.dapr_api_token, settings.app_api_token, settings.admin_token) == (
        "dapr-token",
        "app-token",
        "admin-token",
    )
    assert settings.dlq_database_url == "sqlite+aiosqlite:///./data/recurring.db"
    assert settings.idempotency_store == "dapr"
    assert SECRET not in repr(settings)  # secrets stay out of logs and tracebacks
    assert "admin-token" not in repr(settings)


def test_blank_variables_count_as_unset() -> None:
    blank = {"HOST": " ", "PORT": "", "IDEMPOTENCY_STORE": "", "DLQ_DATABASE_URL": " "}
    assert Settings.from_env(blank) == Settings()


def test_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigurationError, match="PORT must be a port number") as caught:
        Settings(port=0)
    assert caught.value.env_var == "PORT"


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"TODO_OBS_ENVIRONMENT": "prod"}, "JWT_SECRET", "JWT_SECRET is required"),
        (
            {"TODO_OBS_ENVIRONMENT": "prod", "JWT_SECRET": DEV_JWT_SECRET},
            "JWT_SECRET",
            "public development secret",
        ),
        ({"JWT_SECRET": "short"}, "JWT_SECRET", "at least 32 bytes for HS256, got 5"),
        (
            {"PORT": "eighty"},
            "PORT",
            "PORT must be a port number between 1 and 65535, got 'eighty'",
        ),
        ({"PORT": "70000"}, "PORT", "got '70000'"),
        ({"IDEMPOTENCY_STORE": "redis"}, "IDEMPOTENCY_STORE", "got 'redis'"),
        ({"DAPR_HTTP_PORT": "x"}, "DAPR_HTTP_PORT", "DAPR_HTTP_PORT='x' is not a port number"),
        ({"DLQ_DATABASE_URL": "not a url"}, "DLQ_DATABASE_URL", "is not an SQLAlchemy URL"),
        (
            {"DLQ_DATABASE_URL": "sqlite:///recurring.db"},
            "DLQ_DATABASE_URL",
            "cannot be used with SQLAlchemy's asyncio engine",
        ),
        (
            {"DLQ_DATABASE_URL": "nosuchdb://user:hunter2@db/dlq"},
            "DLQ_DATABASE_URL",
            "'nosuchdb://user:***@db/dlq'",
        ),
        (
            # One slash short: SQLAlchemy cannot parse it, so cannot mask it; we do.
            {"DLQ_DATABASE_URL": "postgresql+psycopg:/user:hunter2@db/dlq"},
            "DLQ_DATABASE_URL",
            "not an SQLAlchemy URL: 'postgresql+psycopg:***@db/dlq'",
        ),
    ],
)
def test_a_bad_variable_is_named_with_its_value_and_the_fix(
    env: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert caught.value.env_var == variable
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert any(hint in str(caught.value) for hint in ("set it", "unset it", "generate one"))
