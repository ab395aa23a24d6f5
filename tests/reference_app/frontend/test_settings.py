"""The frontend's settings: defaults, validation with clear errors, and what they change."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.frontend import Settings, create_app
from reference_app.frontend.forms import NewTask
from reference_app.frontend.settings import DemoUser
from tests.helpers import free_port
from todo_observability import ConfigurationError
from todo_observability.testing import LogCapture

from .conftest import SECRET

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def build(captured_logs: LogCapture) -> Iterator[Callable[[Settings], FastAPI]]:
    """Build the frontend with test observability; shut it down after the test."""
    built: list[FastAPI] = []

    def factory(settings: Settings) -> FastAPI:
        app = create_app(
            settings,
            registry=CollectorRegistry(),
            traces_exporter="none",
            load_plugins=False,
            log_stream=captured_logs,
        )
        built.append(app)
        return app

    yield factory
    for app in built:
        app.state.observability.shutdown()


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://frontend.test"
    )


def error_of(env: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    return caught.value


def test_defaults_outside_production() -> None:
    settings = Settings.from_env({})

    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.uses_dev_secret
    assert settings.demo_users == (
        DemoUser("alice", "alice@todo.local"),
        DemoUser("bob", "bob@todo.local"),
    )
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.dapr_endpoint == "http://127.0.0.1:3500"
    assert (settings.backend_app_id, settings.backend_timeout) == ("backend", 10.0)
    assert settings.cookie_secure is False
    assert settings.session_ttl_seconds == 8 * 3600


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "JWT_SECRET": SECRET,
            "TODO_OBS_ENVIRONMENT": "prod",
            "DEMO_USERS": " carol:carol@example.com , dave:dave@example.com",
            "HOST": "0.0.0.0",
            "PORT": "8080",
            "DAPR_HTTP_PORT": "3600",
            "DAPR_API_TOKEN": "dapr-token",
            "BACKEND_APP_ID": "backend.todo",
            "BACKEND_TIMEOUT_SECONDS": "2.5",
            "SESSION_TTL_SECONDS": "600",
        }
    )

    assert settings.production
    assert not settings.uses_dev_secret
    assert [user.user_id for user in settings.demo_users] == ["carol", "dave"]
    assert settings.demo_user("dave") == DemoUser("dave", "dave@example.com")
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.dapr_endpoint == "http://127.0.0.1:3600"
    assert settings.dapr_api_token == "dapr-token"
    assert (settings.backend_app_id, settings.backend_timeout) == ("backend.todo", 2.5)
    assert settings.session_ttl_seconds == 600
    assert settings.cookie_secure is True  # production serves over HTTPS
    assert SECRET not in repr(settings)
    assert "dapr-token" not in repr(settings)


def test_production_requires_a_secret_of_its_own() -> None:
    missing = error_of({"TODO_OBS_ENVIRONMENT": "production"})
    public = error_of({"TODO_OBS_ENVIRONMENT": "prod", "JWT_SECRET": DEV_JWT_SECRET})

    assert missing.env_var == "JWT_SECRET"
    assert str(missing).startswith("JWT_SECRET is required when TODO_OBS_ENVIRONMENT='production'")
    assert "secrets.token_urlsafe(32)" in str(missing)
    assert public.env_var == "JWT_SECRET"
    assert "public development secret" in str(public)


def test_a_short_secret_is_refused_without_being_shown() -> None:
    error = error_of({"JWT_SECRET": "hunter2"})

    assert error.env_var == "JWT_SECRET"
    assert "at least 32 bytes for HS256, got 7 byte(s)" in str(error)
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "80a", "PORT must be a port number between 1 and 65535, got '80a'"),
        ("PORT", "70000", "PORT must be a port number between 1 and 65535, got '70000'"),
        ("BACKEND_TIMEOUT_SECONDS", "0", "BACKEND_TIMEOUT_SECONDS must be a number of seconds"),
        ("SESSION_TTL_SECONDS", "-5", "SESSION_TTL_SECONDS must be a whole number of seconds"),
        ("SESSION_COOKIE_SECURE", "maybe", "SESSION_COOKIE_SECURE must be true or false, got"),
        ("BACKEND_APP_ID", "back end", "BACKEND_APP_ID must be a Dapr app id"),
        ("DAPR_HTTP_PORT", "dapr", "DAPR_HTTP_PORT='dapr' is not a port number"),
    ],
)
def test_an_invalid_value_is_named_with_its_variable_and_value(
    variable: str, value: str, expected: str
) -> None:
    error = error_of({variable: value})

    assert error.env_var == variable
    assert expected in str(error)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("alice", "'alice' has no e-mail address after ':'"),
        ("alice:alice@todo.local,alice:other@todo.local", "user 'alice' is given twice"),
        ("bad user:x@y", "'bad user' is not a user id"),
        (",", "DEMO_USERS names no user"),
    ],
)
def test_demo_users_must_be_id_email_pairs(value: str, problem: str) -> None:
    error = error_of({"DEMO_USERS": value})

    assert error.env_var == "DEMO_USERS"
    assert problem in str(error)
    assert repr(value) in str(error)


@pytest.mark.anyio
async def test_the_development_secret_is_announced_with_a_warning(
    build: Callable[[Settings], FastAPI], captured_logs: LogCapture
) -> None:
    build(Settings())
    [warning] = captured_logs.find(level="WARNING", logger="reference_app.frontend.app")
    assert warning["message"].startswith("JWT_SECRET is not set")
    assert warning["service_name"] == "frontend"

    build(Settings(jwt_secret=SECRET))
    assert len(captured_logs.find(level="WARNING")) == 1


def test_observability_follows_the_settings_environment(
    build: Callable[[Settings], FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the other services: the environment the settings were built with is the one the
    # SDK runs in (production samples 0.1 of new traces), not whatever the process has.
    monkeypatch.delenv("TODO_OBS_ENVIRONMENT", raising=False)
    prod = build(Settings(jwt_secret=SECRET, environment="prod", cookie_secure=True))
    assert prod.state.observability.settings.environment == "prod"
    assert prod.state.observability.settings.sample_ratio == 0.1

    dev = build(Settings(jwt_secret=SECRET))
    assert dev.state.observability.settings.environment == "dev"
    assert dev.state.observability.settings.sample_ratio == 1.0


@pytest.mark.anyio
async def test_in_production_the_cookie_is_secure(build: Callable[[Settings], FastAPI]) -> None:
    app = build(Settings(jwt_secret=SECRET, environment="prod", cookie_secure=True))
    async with client(app) as http:
        response = await http.post("/login", data={"user_id": "alice"})

    assert response.status_code == 303
    assert "; Secure" in response.headers["set-cookie"]


@pytest.mark.anyio
async def test_readiness_is_down_when_the_sidecar_cannot_be_reached(
    build: Callable[[Settings], FastAPI],
) -> None:
    port = free_port()
    app = build(Settings(jwt_secret=SECRET, dapr_endpoint=f"http://127.0.0.1:{port}"))
    async with client(app) as http:
        ready = await http.get("/health/ready")
        live = await http.get("/health/live")

    assert ready.status_code == 503
    check = ready.json()["checks"]["dapr-sidecar"]
    assert check["status"] == "DOWN"
    assert f"Dapr sidecar unreachable at http://127.0.0.1:{port}" in check["error"]
    assert live.status_code == 200  # the sidecar is a dependency: never a liveness matter


def test_a_form_time_with_a_zone_is_converted_to_utc() -> None:
    task = NewTask.model_validate(
        {"title": "x", "due_at": "2026-12-01T10:30:00+01:00", "remind_minutes_before": 30}
    )

    assert task.to_backend() == {
        "title": "x",
        "priority": "medium",
        "due_at": "2026-12-01T09:30:00+00:00",
        "remind_at": "2026-12-01T09:00:00+00:00",
    }


@pytest.mark.slow
def test_the_module_refuses_to_start_with_an_invalid_setting() -> None:
    env: dict[str, Any] = {"PATH": "", "PYTHONPATH": str(ROOT), "PORT": "eighty"}
    result = subprocess.run(
        [sys.executable, "-m", "reference_app.frontend"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "frontend: PORT must be a port number between 1 and 65535, got 'eighty'; "
        "set it like PORT=8000, or unset it."
    )
