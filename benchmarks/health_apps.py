"""Apps for the probe-storm benchmark: one 50 ms dependency check behind a readiness probe.

    HEALTH_VARIANT=ours python -m uvicorn benchmarks.health_apps:create_app --factory
    HEALTH_VARIANT=fastapi-health python -m uvicorn benchmarks.health_apps:create_app --factory

`GET /calls` answers how many times the dependency was called.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from benchmarks.apps import _fastapi, open_sink

CHECK_SECONDS = 0.05
TTL_SECONDS = 5.0


class Dependency:
    """A dependency whose check takes 50 ms, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def ping(self) -> bool:
        self.calls += 1
        await asyncio.sleep(CHECK_SECONDS)
        return True


def ours(dependency: Dependency, ttl: float = TTL_SECONDS) -> FastAPI:
    from todo_observability import configure
    from todo_observability.health import Check

    app = _fastapi()
    configure(
        app,
        service_name="storm",
        traces_exporter="none",
        registry=CollectorRegistry(),
        log_stream=open_sink(),
        load_plugins=False,
        health_checks=[Check("dependency", dependency.ping, ttl=ttl)],
    )
    return app


def fastapi_health(dependency: Dependency) -> FastAPI:
    from fastapi_health import health

    async def dependency_check() -> bool:
        return await dependency.ping()

    app = _fastapi()
    app.add_api_route("/health/ready", health([dependency_check]))
    return app


def create_app() -> Any:
    dependency = Dependency()
    variant = os.environ.get("HEALTH_VARIANT", "ours")
    app = ours(dependency) if variant == "ours" else fastapi_health(dependency)

    @app.get("/calls")
    async def calls() -> int:
        return dependency.calls

    return app
