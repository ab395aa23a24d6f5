"""The backend in process: its app, its emulated sidecar on a broker, SQLite or a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from psycopg import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reference_app.backend import Settings
from reference_app.backend.app import create_app
from reference_app.common.auth import Tokens
from reference_app.common.events import PUBSUB, REMINDERS, TASK_EVENTS, TASK_UPDATES
from tests.health.conftest import PostgresCluster, postgres_cluster
from todo_observability import Observability
from todo_observability.testing import LogCapture, SpanCapture, metric_value
from todo_observability.testing.sidecar import Broker, Sidecar

SECRET = "backend-tests-secret-0123456789-abcdef"
TOPICS = (TASK_EVENTS, REMINDERS, TASK_UPDATES)


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresCluster]:
    """One real PostgreSQL for the session; without its binaries: skipped, or failed under CI."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgresql(postgresql_server: PostgresCluster) -> Iterator[PostgresCluster]:
    """The session's PostgreSQL, running when the test starts and again after it."""
    if not postgresql_server.running:
        postgresql_server.start()
    yield postgresql_server
    if not postgresql_server.running:
        postgresql_server.start()


def fresh_database(cluster: PostgresCluster) -> str:
    """A new, empty database on `cluster`: its async SQLAlchemy URL."""
    name = f"backend_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'backend.db'}"
    return fresh_database(request.getfixturevalue("postgresql"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database (tests that need no second dialect)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'backend.db'}"


# --- the backend and its sidecar ---------------------------------------------------------------


class LateApp:
    """An ASGI app forwarding to one given later: the sidecar and the app each need the other."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "LateApp.app was never set"
        await self.app(scope, receive, send)


@dataclass
class Harness:
    """A running backend: its app and client, its sidecar and broker, and what they recorded."""

    app: FastAPI
    client: httpx.AsyncClient
    sidecar: Sidecar
    broker: Broker
    registry: CollectorRegistry
    observability: Observability
    settings: Settings
    tokens: Tokens = field(default_factory=lambda: Tokens(SECRET))

    def auth(self, user: str = "alice", *, email: str | None = "", **claims: Any) -> dict[str, str]:
        """An Authorization header for `user` (e-mail `<user>@example.org` unless given)."""
        address = f"{user}@example.org" if email == "" else email
        token = self.tokens.issue(user, email=address, **claims)
        return {"authorization": f"Bearer {token}"}

    def events(self, topic: str) -> list[dict[str, Any]]:
        """The CloudEvents published on `topic`, in order."""
        return [json.loads(record.value) for record in self.broker.messages(PUBSUB, topic)]

    def all_events(self) -> dict[str, list[dict[str, Any]]]:
        """The CloudEvents of the backend's three topics."""
        return {topic: self.events(topic) for topic in TOPICS}

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the backend's registry (0.0 when never recorded)."""
        return metric_value(self.registry, name, **labels)

    async def create(self, user: str = "alice", **fields: Any) -> dict[str, Any]:
        """POST /tasks as `user`, expecting 201; the task."""
        fields.setdefault("title", "Daily standup")
        response = await self.client.post("/tasks", json=fields, headers=self.auth(user))
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task


@asynccontextmanager
async def running_backend(
    settings: Settings,
    *,
    registry: CollectorRegistry,
    logs: LogCapture,
    spans: SpanCapture | None = None,
    broker: Broker | None = None,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Harness]:
    """The backend with its lifespan started, behind `Sidecar("backend")` on `broker`.

    The backend reaches its sidecar in process, or through `dapr_transport` when given.
    """
    broker = broker if broker is not None else Broker(component_retry_interval=0.005)
    late = LateApp()
    sidecar = Sidecar("backend", app_transport=httpx.ASGITransport(app=late), broker=broker)
    app = create_app(
        settings,
        dapr_transport=dapr_transport or httpx.ASGITransport(app=sidecar.asgi),
        registry=registry,
        traces_exporter="memory",
        sample_ratio=1.0,
        load_plugins=False,
        log_stream=logs,
    )
    late.app = app
    observability: Observability = app.state.observability
    if spans is not None:
        spans.watch(observability)
    async with AsyncExitStack() as stack:
        stack.callback(observability.shutdown)
        await stack.enter_async_context(app.router.lifespan_context(app))
        await stack.enter_async_context(sidecar)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://backend")
        )
        yield Harness(app, client, sidecar, broker, registry, observability, settings)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: the test secret, quick outbox retries."""
    base = Settings(
        database_url=database_url,
        jwt_secret=SECRET,
        outbox_retry=0.02,
        outbox_max_backoff=0.2,
        outbox_poll=0.2,
    )
    return replace(base, **overrides)


@pytest.fixture
async def backend(
    database_url: str,
    metrics_registry: CollectorRegistry,
    captured_logs: LogCapture,
    captured_spans: SpanCapture,
) -> AsyncIterator[Harness]:
    """The backend on SQLite and on PostgreSQL (the test runs once with each)."""
    settings = make_settings(database_url)
    async with running_backend(
        settings, registry=metrics_registry, logs=captured_logs, spans=captured_spans
    ) as harness:
        yield harness


@pytest.fixture
async def sqlite_backend(
    sqlite_url: str,
    metrics_registry: CollectorRegistry,
    captured_logs: LogCapture,
    captured_spans: SpanCapture,
) -> AsyncIterator[Harness]:
    """The backend on SQLite only."""
    settings = make_settings(sqlite_url)
    async with running_backend(
        settings, registry=metrics_registry, logs=captured_logs, spans=captured_spans
    ) as harness:
        yield harness


# --- a consumer of the backend's events ----------------------------------------------------------


@dataclass
class Listener:
    """Another app on the broker, subscribed to the backend's topics: what it received."""

    sidecar: Sidecar
    received: list[tuple[str, dict[str, Any], dict[str, str]]]

    def of(self, topic: str) -> list[dict[str, Any]]:
        """The CloudEvents delivered from `topic`."""
        return [event for got, event, _ in self.received if got == topic]


@asynccontextmanager
async def listening(broker: Broker) -> AsyncIterator[Listener]:
    """A tiny Starlette app behind `Sidecar("listener")`, subscribed to the three topics."""
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def subscribe(request: Request) -> Response:
        return JSONResponse(
            [{"pubsubname": PUBSUB, "topic": topic, "route": f"/on/{topic}"} for topic in TOPICS]
        )

    async def on_event(request: Request) -> Response:
        received.append((request.path_params["topic"], await request.json(), dict(request.headers)))
        return JSONResponse({"status": "SUCCESS"})

    app = Starlette(
        routes=[
            Route("/dapr/subscribe", subscribe),
            Route("/on/{topic}", on_event, methods=["POST"]),
        ]
    )
    async with Sidecar(
        "listener", app_transport=httpx.ASGITransport(app=app), broker=broker
    ) as sidecar:
        yield Listener(sidecar, received)


# --- waiting -----------------------------------------------------------------------------------


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Wait until `predicate()` holds, polling (for state the emulator does not signal)."""
    with anyio.fail_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(interval)
