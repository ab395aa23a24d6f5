"""The faults the probes exist for, end to end through the HTTP probes of a configured app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI

from tests.helpers import SilentServer
from todo_observability._observability import Observability
from todo_observability.health import checks

from ..helpers import client
from .conftest import PostgresCluster

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]
TTL = 0.3


async def test_killed_postgresql_turns_readiness_down_within_one_ttl_and_back(
    make_observability: Factory, postgresql: PostgresCluster
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgresql.url, connect_args={"connect_timeout": 2})
    app = FastAPI()
    make_observability(
        app,
        health_checks=[
            checks.database(engine, ttl=TTL, timeout=2.0),
            checks.event_loop_lag(ttl=TTL),
        ],
    )
    try:
        async with client(app) as http:
            assert (await http.get("/health/ready")).status_code == 200
            postgresql.stop("immediate")  # a crash, not a clean shutdown
            await asyncio.sleep(TTL)  # the cached UP expires
            started = time.perf_counter()
            down = await http.get("/health/ready")
            assert time.perf_counter() - started < 2.0 + 0.5
            live = await http.get("/health/live")
            postgresql.start()
            await asyncio.sleep(TTL)
            recovered = await http.get("/health/ready")
    finally:
        await engine.dispose()
    assert down.status_code == 503
    assert down.json()["checks"]["database"]["status"] == "DOWN"
    assert live.status_code == 200
    assert recovered.status_code == 200, recovered.json()


@pytest.mark.parametrize(
    ("critical", "status", "overall"), [(True, 503, "DOWN"), (False, 200, "DEGRADED")]
)
async def test_a_silent_smtp_server_is_down_within_the_timeout(
    make_observability: Factory,
    silent_port: SilentServer,
    critical: bool,
    status: int,
    overall: str,
) -> None:
    app = FastAPI()
    check = checks.smtp("127.0.0.1", silent_port.port, timeout=0.5, critical=critical)
    make_observability(app, health_checks=[check])
    async with client(app) as http:
        started = time.perf_counter()
        response = await http.get("/health/ready")
        elapsed = time.perf_counter() - started
    assert elapsed < 0.5 + 0.5
    assert (response.status_code, response.json()["status"]) == (status, overall)
    assert response.json()["checks"]["smtp"]["status"] == "DOWN"
