"""The service around the handler: health probes, metrics page, dead-letter database, startup, process."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from reference_app.common.events import RECURRING
from reference_app.recurring import Settings, create_app
from tests.helpers import free_port
from tests.reference_app.recurring.conftest import SECRET, System, SystemFactory, completed
from todo_observability.testing import LogCapture

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.anyio
async def test_ready_when_the_sidecar_and_the_subscriptions_are_up(system: System) -> None:
    async with system.client() as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["service"] == RECURRING
    checks = report["checks"]
    assert set(checks) == {"dapr-sidecar", "dapr-pubsub-pubsub"}
    assert checks["dapr-sidecar"]["status"] == "UP"
    assert checks["dapr-pubsub-pubsub"]["status"] == "UP"
    assert checks["dapr-pubsub-pubsub"]["details"]["subscribed"] == [
        "task-events",
        "task-events-dlq",
    ]


@pytest.mark.anyio
async def test_not_ready_while_the_sidecar_cannot_be_reached(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = create_app(
        Settings(jwt_secret=SECRET),
        dapr_transport=httpx.MockTransport(refuse),
        registry=metrics_registry,
        traces_exporter="none",
        load_plugins=False,
        log_stream=captured_logs,
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c,
        ):
            ready = await c.get("/health/ready")
            live = await c.get("/health/live")
    finally:
        app.state.observability.shutdown()
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["dapr-sidecar"]["status"] == "DOWN"
    assert "unreachable" in checks["dapr-sidecar"]["error"]
    assert live.status_code == 200  # a sidecar outage never restarts the pod


@pytest.mark.anyio
async def test_dead_letters_are_parked_in_the_dlq_database_which_readiness_checks(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "recurring.db"  # the lifespan creates data/
    system = await make_system(dlq_database_url=f"sqlite+aiosqlite:///{database}")
    await system.publish(completed(recurrence="EVERY=DAY"), event_id="evt-poison")
    await system.settle()
    async with system.client() as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["dlq-database"]["status"] == "UP"
    # sqlite3's own context manager commits but does not close (3.13 warns about that).
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT park_id FROM todo_obs_dead_letters").fetchall()
    assert rows == [("pubsub/task-events/evt-poison",)]


@pytest.mark.anyio
async def test_the_metrics_page_shows_the_services_series_from_the_start(system: System) -> None:
    async with system.client() as client:
        page = (await client.get("/metrics")).text
    for series in (
        'recurring_next_occurrences_total{outcome="created"} 0.0',
        'recurring_next_occurrences_total{outcome="existing"} 0.0',
        'recurring_next_occurrence_failures_total{reason="invalid_rule"} 0.0',
        'recurring_next_occurrence_failures_total{reason="rule_exhausted"} 0.0',
        'recurring_next_occurrence_failures_total{reason="backend_error"} 0.0',
        "recurring_next_occurrence_duration_seconds_count 0.0",
    ):
        assert series in page


def started(settings: Settings, registry: CollectorRegistry, logs: LogCapture) -> FastAPI:
    """The app, built for a test (the caller runs its lifespan and shuts its observability down)."""
    return create_app(
        settings, registry=registry, traces_exporter="none", load_plugins=False, log_stream=logs
    )


@pytest.mark.anyio
async def test_the_development_jwt_secret_is_used_with_a_warning(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    app = started(Settings.from_env({}), metrics_registry, captured_logs)
    async with app.router.lifespan_context(app):
        pass
    app.state.observability.shutdown()
    [line] = captured_logs.find(
        message="JWT_SECRET is not set: signing tokens with the public development secret"
    )
    assert line["level"] == "WARNING"
    assert line["context"]["variable"] == "JWT_SECRET"


@pytest.mark.anyio
async def test_no_warning_with_a_jwt_secret_of_its_own(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    app = started(Settings(jwt_secret=SECRET), metrics_registry, captured_logs)
    async with app.router.lifespan_context(app):
        pass
    app.state.observability.shutdown()
    assert captured_logs.find(level="WARNING") == []
    assert captured_logs.find(message="recurring-task-service configured") != []


@pytest.mark.anyio
@pytest.mark.parametrize("environment", ["prod", "production"])
async def test_the_dead_letter_api_is_closed_in_production_without_the_admin_token(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture, environment: str
) -> None:
    settings = Settings(jwt_secret=SECRET, environment=environment)
    app = started(settings, metrics_registry, captured_logs)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c,
        ):
            response = await c.get("/dapr/dead-letters")
    finally:
        app.state.observability.shutdown()
    assert response.status_code in (401, 403)


@pytest.mark.anyio
async def test_the_dead_letter_api_answers_with_the_admin_token(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    settings = Settings(jwt_secret=SECRET, environment="prod", admin_token="operator-token")
    app = started(settings, metrics_registry, captured_logs)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c,
        ):
            refused = await c.get("/dapr/dead-letters")
            listed = await c.get(
                "/dapr/dead-letters", headers={"authorization": "Bearer operator-token"}
            )
    finally:
        app.state.observability.shutdown()
    assert refused.status_code == 401
    assert listed.status_code == 200
    assert listed.json()["parked"] == []


@pytest.mark.slow
def test_python_m_runs_the_service_under_uvicorn_with_json_logs(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "recurring.log"
    env: dict[str, Any] = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "DAPR_HTTP_PORT": str(free_port()),  # no sidecar there: not ready, but alive
        "OTEL_TRACES_EXPORTER": "none",
    }
    env.pop("JWT_SECRET", None)
    env.pop("TODO_OBS_ENVIRONMENT", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reference_app.recurring"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        live = ready = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and live is None:
            assert process.poll() is None, log.read_text()
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert live is not None, log.read_text()
    assert ready is not None
    assert live.status_code == 200
    assert ready.status_code == 503
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    messages = {line["message"] for line in lines}
    assert "JWT_SECRET is not set: signing tokens with the public development secret" in messages
    assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in messages
    assert {line["service_name"] for line in lines} == {RECURRING}


@pytest.mark.slow
def test_python_m_refuses_a_bad_setting_with_a_clear_message() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TODO_OBS_ENVIRONMENT": "prod"}
    env.pop("JWT_SECRET", None)
    finished = subprocess.run(
        [sys.executable, "-m", "reference_app.recurring"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert finished.stderr.startswith("recurring-task-service: JWT_SECRET is required")
