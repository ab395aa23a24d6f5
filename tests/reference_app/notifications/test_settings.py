"""Settings: defaults, validation with messages that name the variable, the value and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from reference_app.common.auth import DEV_JWT_SECRET
from reference_app.common.events import ReminderScheduled
from reference_app.notifications import Settings, create_app
from reference_app.notifications.reminders import due_time, job_name
from todo_observability import ConfigurationError
from todo_observability.testing import LogCapture

ROOT = Path(__file__).resolve().parents[3]
SECRET = "s" * 40


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8003)
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.smtp_from == "reminders@todo.local"
    assert (settings.smtp_username, settings.smtp_password) == (None, None)
    assert settings.smtp_starttls is False
    assert settings.smtp_timeout == 10.0
    assert (settings.smtp_attempts, settings.smtp_backoff_seconds) == (3, 0.5)
    assert settings.job_trigger_attempts == 4
    assert settings.dapr_endpoint == "http://127.0.0.1:3500"
    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.uses_dev_secret
    assert settings.dlq_database_url is None  # dead letters in memory


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "TODO_OBS_ENVIRONMENT": "prod",
            "JWT_SECRET": SECRET,
            "HOST": "0.0.0.0",
            "PORT": "9003",
            "SMTP_HOST": "mail.internal",
            "SMTP_PORT": "587",
            "SMTP_FROM": "todo@example.test",
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD": "hunter2-hunter2",
            "SMTP_STARTTLS": "true",
            "SMTP_TIMEOUT": "2.5",
            "SMTP_ATTEMPTS": "5",
            "SMTP_BACKOFF_SECONDS": "1",
            "REMINDER_JOB_ATTEMPTS": "6",
            "DAPR_HTTP_PORT": "3503",
            "DAPR_API_TOKEN": "dapr-token",
            "APP_API_TOKEN": "app-token",
            "TODO_OBS_ADMIN_TOKEN": "admin-token",
            "DLQ_DATABASE_URL": "postgresql+psycopg://todo:db-password@postgres/todo_dead_letters",
        }
    )
    assert settings == Settings(
        environment="prod",
        jwt_secret=SECRET,
        host="0.0.0.0",
        port=9003,
        smtp_host="mail.internal",
        smtp_port=587,
        smtp_from="todo@example.test",
        smtp_username="mailer",
        smtp_password="hunter2-hunter2",
        smtp_starttls=True,
        smtp_timeout=2.5,
        smtp_attempts=5,
        smtp_backoff_seconds=1.0,
        job_trigger_attempts=6,
        dapr_endpoint="http://127.0.0.1:3503",
        dapr_api_token="dapr-token",
        app_api_token="app-token",
        admin_token="admin-token",
        dlq_database_url="postgresql+psycopg://todo:db-password@postgres/todo_dead_letters",
    )
    assert settings.mail_domain == "example.test"
    text = repr(settings)
    for secret in (SECRET, "hunter2-hunter2", "dapr-token", "app-token", "admin-token", "db-pass"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "variable", "shown"),
    [
        ({"PORT": "http"}, "PORT", "'http'"),
        ({"PORT": "0"}, "PORT", "0"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT", "70000"),
        ({"SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS", "'maybe'"),
        ({"SMTP_TIMEOUT": "soon"}, "SMTP_TIMEOUT", "'soon'"),
        ({"SMTP_TIMEOUT": "-1"}, "SMTP_TIMEOUT", "'-1'"),
        ({"SMTP_TIMEOUT": "301"}, "SMTP_TIMEOUT", "301.0"),
        ({"SMTP_ATTEMPTS": "0"}, "SMTP_ATTEMPTS", "0"),
        ({"SMTP_ATTEMPTS": "2.5"}, "SMTP_ATTEMPTS", "'2.5'"),
        ({"SMTP_BACKOFF_SECONDS": "nan"}, "SMTP_BACKOFF_SECONDS", "nan"),
        ({"SMTP_FROM": "reminders"}, "SMTP_FROM", "'reminders'"),
        ({"REMINDER_JOB_ATTEMPTS": "0"}, "REMINDER_JOB_ATTEMPTS", "0"),
        ({"DAPR_HTTP_PORT": "sidecar"}, "DAPR_HTTP_PORT", "'sidecar'"),
    ],
)
def test_a_bad_value_is_named_with_its_value(
    env: dict[str, str], variable: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert message.startswith(f"{variable}=") or message.startswith(f"{variable} ")
    assert shown in message
    assert raised.value.env_var == variable


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///./data/notifications.db",
        "sqlite+aiosqlite:////var/lib/todo/notifications-dlq.db",
        "postgresql+psycopg://todo:password@postgres:5432/todo_dead_letters",
    ],
)
def test_an_async_dead_letter_database_url_is_accepted(url: str) -> None:
    assert Settings.from_env({"DLQ_DATABASE_URL": f" {url} "}).dlq_database_url == url


def test_a_blank_dead_letter_database_url_keeps_dead_letters_in_memory() -> None:
    assert Settings.from_env({"DLQ_DATABASE_URL": " "}).dlq_database_url is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "DLQ_DATABASE_URL is not an SQLAlchemy URL: 'not a url'"),
        (
            # The sync sqlite3 driver: SQLAlchemy's asyncio engine refuses it.
            "sqlite:///notifications.db",
            "DLQ_DATABASE_URL 'sqlite:///notifications.db' cannot be used with SQLAlchemy's "
            "asyncio engine",
        ),
        ("nosuchdb://todo:hunter2@db/dlq", "'nosuchdb://todo:***@db/dlq'"),
        ("postgres ql://todo:hunter2@db/dlq", "'postgres ql://todo:***@db/dlq'"),
        # One slash short: not even split into scheme and authority, still masked.
        ("postgresql+psycopg:/todo:hunter2@db/dlq", "'postgresql+psycopg:***@db/dlq'"),
    ],
)
def test_a_bad_dead_letter_database_url_is_refused_without_its_password(
    url: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"DLQ_DATABASE_URL": url})
    message = str(raised.value)
    assert says in message
    assert "hunter2" not in message
    assert "sqlite+aiosqlite:///./data/notifications.db" in message  # how to fix it
    assert "or unset it to keep dead letters in memory" in message
    assert (raised.value.env_var, raised.value.field) == ("DLQ_DATABASE_URL", "dlq_database_url")


def test_a_dead_letter_database_url_given_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings(dlq_database_url="sqlite:///x.db")
    assert str(raised.value).startswith("DLQ_DATABASE_URL 'sqlite:///x.db' cannot be used")


def test_smtp_credentials_come_in_pairs() -> None:
    with pytest.raises(ConfigurationError, match="SMTP_USERNAME is set but SMTP_PASSWORD is not"):
        Settings.from_env({"SMTP_USERNAME": "mailer"})
    with pytest.raises(ConfigurationError, match="SMTP_PASSWORD is set but SMTP_USERNAME is not"):
        Settings.from_env({"SMTP_PASSWORD": "secret"})


@pytest.mark.parametrize("environment", ["prod", "production", "PROD"])
def test_prod_requires_a_jwt_secret(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET is required") as raised:
        Settings.from_env({"TODO_OBS_ENVIRONMENT": environment})
    assert raised.value.env_var == "JWT_SECRET"
    with pytest.raises(ConfigurationError, match="the public development secret"):
        Settings.from_env({"TODO_OBS_ENVIRONMENT": environment, "JWT_SECRET": DEV_JWT_SECRET})
    assert Settings.from_env({"TODO_OBS_ENVIRONMENT": environment, "JWT_SECRET": SECRET}).is_prod


def test_a_short_jwt_secret_is_refused() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"JWT_SECRET must be at least 32 bytes for HS256, got 5 byte\(s\)",
    ):
        Settings.from_env({"JWT_SECRET": "short"})


def test_the_development_secret_is_logged_as_a_warning(captured_logs: LogCapture) -> None:
    def build(settings: Settings) -> None:
        app = create_app(
            settings,
            registry=CollectorRegistry(),
            traces_exporter="none",
            load_plugins=False,
            log_stream=captured_logs,
        )
        app.state.observability.shutdown()

    build(Settings())
    [warning] = captured_logs.find(
        message="JWT_SECRET is not set: using the public development secret"
    )
    assert warning["level"] == "WARNING"
    assert warning["service_name"] == "notification-service"

    captured_logs.lines.clear()
    build(Settings(jwt_secret=SECRET))
    assert not captured_logs.find(
        message="JWT_SECRET is not set: using the public development secret"
    )


def test_the_module_exits_with_the_message_on_a_bad_setting() -> None:
    env = {**os.environ, "PORT": "eighty"}
    result = subprocess.run(
        [sys.executable, "-m", "reference_app.notifications"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "notification-service: PORT must be a port number between 1 and 65535, got 'eighty'; "
        "set it like PORT=8003, or unset it."
    ]


def _reminder(remind_at: datetime) -> ReminderScheduled:
    return ReminderScheduled(
        task_id=5, user_id="u", email="u@example.test", title="t", remind_at=remind_at
    )


def test_job_names_and_due_times() -> None:
    now = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    later = now + timedelta(minutes=30, seconds=0.25)
    assert job_name(_reminder(later)) == f"reminder-5-{int(later.timestamp())}"
    # A naive time is taken as UTC, so it names the same job.
    assert job_name(_reminder(later.replace(tzinfo=None))) == job_name(_reminder(later))
    assert due_time(later, now) == "2026-11-26T09:30:00.250000Z"
    paris = timezone(timedelta(hours=1))
    assert due_time(later.astimezone(paris), now) == "2026-11-26T09:30:00.250000Z"
    assert due_time(now, now) == "0s"
    assert due_time(now - timedelta(days=1), now) == "0s"
