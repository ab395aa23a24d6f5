"""A real PostgreSQL stopped under the backend: clear 503s, readiness down, nothing half-written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.health.conftest import PostgresCluster
from todo_observability.testing import LogCapture

from .conftest import Harness, fresh_database, make_settings, running_backend

pytestmark = pytest.mark.anyio

UNAVAILABLE = {"detail": "the database is unavailable; try again in a few seconds"}


async def readiness(backend: Harness) -> tuple[int, dict[str, Any]]:
    backend.observability.health.invalidate()  # no cached result: ask the database now
    response = await backend.client.get("/health/ready")
    return response.status_code, response.json()


async def test_requests_get_503_and_readiness_fails_while_the_database_is_down(
    postgresql: PostgresCluster, metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    settings = make_settings(fresh_database(postgresql))
    async with running_backend(settings, registry=metrics_registry, logs=captured_logs) as backend:
        kept = await backend.create(title="Before the outage")
        assert (await readiness(backend))[0] == 200

        await asyncio.to_thread(postgresql.stop)
        auth = backend.auth()
        answers = [
            await backend.client.get("/tasks", headers=auth),
            await backend.client.post("/tasks", json={"title": "During"}, headers=auth),
            await backend.client.post(f"/tasks/{kept['id']}/complete", headers=auth),
        ]
        assert [(a.status_code, a.json()) for a in answers] == [(503, UNAVAILABLE)] * 3
        assert answers[0].headers["retry-after"] == "5"
        status, body = await readiness(backend)
        assert status == 503
        assert body["checks"]["database"]["status"] == "DOWN"
        assert body["checks"]["dapr-sidecar"]["status"] == "UP"
        [line, *_] = captured_logs.find(message="database unavailable")
        assert line["level"] == "WARNING"
        assert line["request_id"] == answers[0].headers["x-request-id"]
        assert "OperationalError" in line["context"]["error"]
        # The access log records each 503 at ERROR (and the failing probe at WARNING).
        access = [a for a in captured_logs.access() if a["context"]["status"] == 503]
        assert [a["level"] for a in access] == ["ERROR", "ERROR", "ERROR", "WARNING"]

        await asyncio.to_thread(postgresql.start)
        assert (await readiness(backend))[0] == 200
        listed = (await backend.client.get("/tasks", headers=auth)).json()
        # Nothing of the failed requests was written: no task, no completion, no event.
        assert [(t["title"], t["completed"]) for t in listed] == [("Before the outage", False)]
        assert [e["data"]["action"] for e in backend.events("task-updates")] == ["created"]
        assert backend.events("task-events") == []


async def test_the_backend_starts_while_the_database_is_down_and_recovers(
    postgresql: PostgresCluster, metrics_registry: CollectorRegistry, captured_logs: LogCapture
) -> None:
    settings = make_settings(fresh_database(postgresql))
    await asyncio.to_thread(postgresql.stop)
    async with running_backend(settings, registry=metrics_registry, logs=captured_logs) as backend:
        [startup] = captured_logs.find(
            message="database unavailable at startup; tables are created once it answers"
        )
        assert startup["level"] == "ERROR"
        response = await backend.client.post("/tasks", json={"title": "x"}, headers=backend.auth())
        assert (response.status_code, response.json()) == (503, UNAVAILABLE)
        assert (await readiness(backend))[0] == 503

        await asyncio.to_thread(postgresql.start)
        created = await backend.client.post("/tasks", json={"title": "x"}, headers=backend.auth())
        assert created.status_code == 201
        assert (await readiness(backend))[0] == 200
