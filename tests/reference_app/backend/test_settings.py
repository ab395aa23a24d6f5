"""Settings.from_env: defaults, every variable read, and errors that name the variable, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from reference_app.backend import DEV_JWT_SECRET, Settings
from reference_app.backend.app import create_app
from todo_observability import ConfigurationError
from todo_observability.testing import LogCapture

from .conftest import SECRET


def test_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./data/backend.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8001)
    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.uses_dev_secret
    assert settings.dapr_endpoint == "http://127.0.0.1:3500"
    assert settings.dapr_api_token is None


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg://todo:pw@db:5432/todo",
            "DATABASE_CONNECT_TIMEOUT": "7",
            "JWT_SECRET": SECRET,
            "TODO_OBS_ENVIRONMENT": "Prod",
            "HOST": "0.0.0.0",
            "PORT": "9001",
            "DAPR_HTTP_PORT": "3601",
            "DAPR_API_TOKEN": "dapr-token",
            "DAPR_TIMEOUT_SECONDS": "2.5",
            "OUTBOX_RETRY_SECONDS": "0.5",
            "OUTBOX_MAX_BACKOFF_SECONDS": "60",
            "OUTBOX_POLL_SECONDS": "10",
            "OUTBOX_LEASE_SECONDS": "45",
            "OUTBOX_BATCH_SIZE": "20",
        }
    )
    assert settings == Settings(
        database_url="postgresql+psycopg://todo:pw@db:5432/todo",
        database_connect_timeout=7.0,
        jwt_secret=SECRET,
        environment="prod",
        host="0.0.0.0",
        port=9001,
        dapr_endpoint="http://127.0.0.1:3601",
        dapr_api_token="dapr-token",
        dapr_timeout=2.5,
        outbox_retry=0.5,
        outbox_max_backoff=60.0,
        outbox_poll=10.0,
        outbox_lease=45.0,
        outbox_batch=20,
    )
    assert not settings.uses_dev_secret


def test_dapr_http_endpoint_wins_over_the_port() -> None:
    settings = Settings.from_env(
        {"DAPR_HTTP_ENDPOINT": "http://sidecar:3500/", "DAPR_HTTP_PORT": "3601"}
    )
    assert settings.dapr_endpoint == "http://sidecar:3500"


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        ("PORT", "eighty", "set it like PORT=8001"),
        ("PORT", "70000", "set it like PORT=8001"),
        ("HOST", "0.0.0.0 8001", "set it like HOST=0.0.0.0"),
        ("DATABASE_URL", "not a url", "sqlite+aiosqlite:///./data/backend.db"),
        ("DATABASE_URL", "postgresql://todo@db/todo", "postgresql+psycopg://"),
        ("DATABASE_URL", "sqlite:///./data/backend.db", "sqlite+aiosqlite"),
        ("DATABASE_CONNECT_TIMEOUT", "soon", "set it like DATABASE_CONNECT_TIMEOUT=3"),
        ("OUTBOX_RETRY_SECONDS", "-1", "set it like OUTBOX_RETRY_SECONDS=1"),
        ("OUTBOX_MAX_BACKOFF_SECONDS", "inf", "set it like OUTBOX_MAX_BACKOFF_SECONDS=30"),
        ("OUTBOX_BATCH_SIZE", "0", "set it like OUTBOX_BATCH_SIZE=100"),
        ("DAPR_HTTP_PORT", "dapr", "3500"),
    ],
)
def test_an_invalid_variable_is_named_with_its_value_and_a_fix(
    variable: str, value: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    # The SDK's DAPR_HTTP_PORT error reads `DAPR_HTTP_PORT='dapr' is not ...`; ours `X must be`.
    assert message.startswith((f"{variable} must be ", f"{variable}={value!r}"))
    assert repr(value) in message
    assert fix in message
    assert caught.value.env_var == variable


@pytest.mark.parametrize(
    "value", ["postgresql://todo:hunter2@db/todo", "postgresql+psycopg:/todo:hunter2@db/todo"]
)
def test_a_database_url_error_never_shows_the_password(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"DATABASE_URL": value})
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize("environment", ["prod", "production"])
def test_jwt_secret_is_required_in_production(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET is required") as caught:
        Settings.from_env({"TODO_OBS_ENVIRONMENT": environment})
    assert caught.value.env_var == "JWT_SECRET"
    assert "secrets.token_urlsafe" in str(caught.value)


def test_the_development_secret_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="public development secret"):
        Settings.from_env({"TODO_OBS_ENVIRONMENT": "prod", "JWT_SECRET": DEV_JWT_SECRET})


def test_a_short_secret_is_refused_without_being_shown() -> None:
    with pytest.raises(
        ConfigurationError, match=r"at least 32 bytes for HS256, got 12 byte\(s\)"
    ) as caught:
        Settings.from_env({"JWT_SECRET": "short-secret"})
    assert "short-secret" not in str(caught.value)


@pytest.mark.parametrize(("secret", "warned"), [(DEV_JWT_SECRET, True), (SECRET, False)])
def test_the_development_secret_is_used_with_a_warning(
    tmp_path: Path,
    metrics_registry: CollectorRegistry,
    captured_logs: LogCapture,
    secret: str,
    warned: bool,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/b.db", jwt_secret=secret)
    app = create_app(
        settings,
        registry=metrics_registry,
        traces_exporter="none",
        load_plugins=False,
        log_stream=captured_logs,
    )
    app.state.observability.shutdown()
    warnings = [
        line
        for line in captured_logs.find(level="WARNING", logger="reference_app.backend.app")
        if "JWT_SECRET is not set" in line["message"]
    ]
    assert len(warnings) == (1 if warned else 0)
