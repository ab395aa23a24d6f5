"""The probes as Kubernetes sees them: status codes, bodies, exclusions, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from todo_observability._observability import Observability
from todo_observability.health import Check, CheckResult
from todo_observability.health.endpoints import chain_shutdown_signals
from todo_observability.testing import LogCapture, SpanCapture, metric_value

from ..helpers import client

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]


def checks(state: dict[str, bool]) -> list[Check]:
    def database() -> CheckResult:
        if state["db"]:
            return CheckResult.up(dialect="postgresql")
        return CheckResult.down("connection refused", host="db:5432")

    return [Check("database", database, groups=("ready", "startup"), ttl=0)]


@pytest.mark.parametrize("framework", [FastAPI, Starlette])
async def test_probes_answer_for_fastapi_and_starlette(
    make_observability: Factory, framework: type[Any]
) -> None:
    app = framework()
    state = {"db": True}
    make_observability(
        app, service_name="backend", service_version="1.2.3", health_checks=checks(state)
    )
    async with client(app) as http:
        live = await http.get("/health/live")
        ready = await http.get("/health/ready")
        startup = await http.get("/health/startup")
        state["db"] = False
        not_ready = await http.get("/health/ready")
        still_started = await http.get("/health/startup")
        still_live = await http.get("/health/live")
    assert [
        r.status_code for r in (live, ready, startup, not_ready, still_started, still_live)
    ] == [
        200,
        200,
        200,
        503,
        200,
        200,
    ]
    body = not_ready.json()
    assert body["status"] == "DOWN"
    assert (body["service"], body["version"]) == ("backend", "1.2.3")
    assert body["timestamp"].endswith("Z")
    assert body["checks"]["database"]["status"] == "DOWN"
    assert body["checks"]["database"]["error"] == "connection refused"
    assert body["checks"]["database"]["details"] == {"host": "db:5432"}
    assert isinstance(body["checks"]["database"]["duration_ms"], float)
    assert not_ready.headers["cache-control"] == "no-store"
    assert "x-request-id" in not_ready.headers


async def test_probes_stay_out_of_metrics_traces_and_access_log_unless_failing(
    make_observability: Factory,
    captured_logs: LogCapture,
    captured_spans: SpanCapture,
    metrics_registry: CollectorRegistry,
) -> None:
    app = FastAPI()
    state = {"db": True}
    make_observability(app, health_checks=checks(state))
    async with client(app) as http:
        for _ in range(3):
            await http.get("/health/ready")
        state["db"] = False
        await http.get("/health/ready")
    assert captured_spans.spans == []
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/health/ready",
            status_code="200",
        )
        == 0
    )
    [access] = captured_logs.access()
    assert (access["level"], access["context"]["status"]) == ("WARNING", 503)
    assert metric_value(metrics_registry, "health_check_status", check="database") == 0.0


async def test_details_need_the_token_under_the_authenticated_policy(
    make_observability: Factory,
) -> None:
    app = FastAPI()
    make_observability(
        app, environment="production", health_token="s3cret", health_checks=checks({"db": False})
    )
    async with client(app) as http:
        anonymous = (await http.get("/health/ready")).json()
        wrong = (await http.get("/health/ready", headers={"Authorization": "Bearer nope"})).json()
        operator = (
            await http.get("/health/ready", headers={"Authorization": "Bearer s3cret"})
        ).json()
    assert anonymous["checks"]["database"] == {
        "status": "DOWN",
        "duration_ms": anonymous["checks"]["database"]["duration_ms"],
    }
    assert "error" not in wrong["checks"]["database"]
    assert operator["checks"]["database"]["error"] == "connection refused"


async def test_probe_paths_follow_the_configured_prefix(make_observability: Factory) -> None:
    app = FastAPI()
    make_observability(app, health_path="/internal/health")
    async with client(app) as http:
        assert (await http.get("/internal/health/ready")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 404
        assert (await http.post("/internal/health/ready")).status_code == 405


async def test_lifespan_shutdown_turns_readiness_down(make_observability: Factory) -> None:
    app = FastAPI()
    obs = make_observability(app)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    before = signal.getsignal(signal.SIGTERM)
    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert obs.health.shutting_down
    assert signal.getsignal(signal.SIGTERM) is before  # the server's handler is back
    async with client(app) as http:
        response = await http.get("/health/ready")
    assert (response.status_code, response.json()["reason"]) == (503, "shutting down")


def test_sigterm_flips_readiness_before_the_servers_own_handler_runs() -> None:
    order: list[str] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:
        order.append("server")

    previous = signal.signal(signal.SIGTERM, server_handler)
    try:
        restore = chain_shutdown_signals(lambda: order.append("readiness down"))
        os.kill(os.getpid(), signal.SIGTERM)
        assert order == ["readiness down", "server"]
        restore()
        assert signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_liveness_checks_the_event_loop_by_default(make_observability: Factory) -> None:
    app = FastAPI()
    make_observability(app)
    async with client(app) as http:
        body = (await http.get("/health/live")).json()
    assert list(body["checks"]) == ["event-loop"]
    assert body["checks"]["event-loop"]["status"] == "UP"


async def test_background_refresh_keeps_results_warm_without_probes(
    make_observability: Factory,
) -> None:
    calls = 0

    def dependency() -> bool:
        nonlocal calls
        calls += 1
        return True

    app = FastAPI()
    obs = make_observability(
        app, health_refresh=0.05, health_checks=[Check("db", dependency, ttl=0)]
    )
    messages: list[dict[str, str]] = [{"type": "lifespan.startup"}]
    done = asyncio.Event()

    async def receive() -> Any:
        if messages:
            return messages.pop()
        await done.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Any) -> None:
        return None

    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )

    async def three_runs() -> None:
        while calls < 3:  # the checks run with no probe at all
            await asyncio.sleep(0.01)

    await asyncio.wait_for(three_runs(), 5.0)
    done.set()
    await lifespan
    stopped_at = calls
    await asyncio.sleep(0.15)
    assert calls == stopped_at  # stopped with the lifespan
    assert obs.health.shutting_down


class Lifespan:
    """Drives an app's lifespan by hand, as a server does: startup now, shutdown on `stop()`."""

    def __init__(self, app: Any) -> None:
        self._messages: list[dict[str, str]] = [{"type": "lifespan.startup"}]
        self._done = asyncio.Event()
        self._task = asyncio.ensure_future(
            app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._receive,
                self._send,
            )
        )

    async def _receive(self) -> Any:
        if self._messages:
            return self._messages.pop()
        await self._done.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Any) -> None:
        return None

    async def stop(self) -> None:
        self._done.set()
        await self._task


async def test_health_check_status_follows_the_dependency_with_no_probe_by_default(
    make_observability: Factory,
) -> None:
    state = {"up": True}
    registry = CollectorRegistry()
    app = FastAPI()
    obs = make_observability(
        app,
        registry=registry,
        health_checks=[Check("db", lambda: state["up"], ttl=0.2)],
    )

    async def status_is(value: float) -> None:
        while metric_value(registry, "health_check_status", check="db") != value:
            await asyncio.sleep(0.05)

    lifespan = Lifespan(app)
    try:
        await asyncio.wait_for(status_is(1.0), 10.0)  # not a single probe
        state["up"] = False
        await asyncio.wait_for(status_is(0.0), 10.0)
        state["up"] = True
        await asyncio.wait_for(status_is(1.0), 10.0)
    finally:
        await lifespan.stop()
    assert not obs.health.refreshing
    assert obs.settings.health_refresh == "ttl"


@pytest.mark.parametrize("refresh", ["off", None])
async def test_a_scrape_runs_stale_checks_when_nothing_refreshes_them(
    make_observability: Factory, refresh: str | None
) -> None:
    calls = 0
    state = {"up": True}

    def dependency() -> bool:
        nonlocal calls
        calls += 1
        return state["up"]

    app = FastAPI()
    make_observability(
        app,
        registry=CollectorRegistry(),
        health_refresh=refresh,  # None: the default, but no lifespan ever runs
        health_checks=[Check("db", dependency, ttl=60)],
    )
    async with client(app) as http:
        first = (await http.get("/metrics")).text
        state["up"] = False
        cached = (await http.get("/metrics")).text  # within the TTL: no new call
        app.state.observability.health.invalidate("db")
        stale = (await http.get("/metrics")).text
    assert 'health_check_status{check="db"} 1.0' in first
    assert 'health_check_status{check="db"} 1.0' in cached
    assert 'health_check_status{check="db"} 0.0' in stale
    assert calls == 2


async def test_the_refresh_stops_before_the_apps_own_shutdown(make_observability: Factory) -> None:
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        seen.append(app.state.observability.health.refreshing)  # the app closes its engines here

    app = FastAPI(lifespan=lifespan)
    obs = make_observability(app, health_checks=[Check("db", lambda: True)])
    running = Lifespan(app)
    while not obs.health.refreshing:
        await asyncio.sleep(0.01)
    await running.stop()
    assert seen == [False]
