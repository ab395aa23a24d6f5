"""The recurring service in process: its sidecar, a fake backend behind another, and a publisher.

Three emulated sidecars share one broker: `recurring-task-service` (the app under
test), `backend` (a fake backend implementing `POST /tasks` with the contract's
201/200 semantics, verifying the bearer token) and `task-publisher` (publishes
`task.completed` events through the Dapr HTTP API, as backend's sidecar would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from reference_app.common.auth import Identity, InvalidToken, Tokens
from reference_app.common.events import BACKEND, PUBSUB, RECURRING, TASK_COMPLETED, TASK_EVENTS
from reference_app.recurring import Settings, create_app
from todo_observability import Observability
from todo_observability.testing import LogCapture, SpanCapture, metric_value
from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar

SECRET = "a-test-secret-for-recurring-0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PUBLISHER_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
MAX_RETRIES = 5


def completed(**changes: Any) -> dict[str, Any]:
    """A `task.completed` payload: the daily standup, due Thursday 09:00, reminded 15 min before."""
    payload: dict[str, Any] = {
        "task_id": 7,
        "user_id": "alice",
        "email": "alice@example.com",
        "title": "Daily standup",
        "description": "What I did, what I will do",
        "priority": "high",
        "tags": ["work", "team"],
        "due_at": "2026-11-26T09:00:00Z",
        "remind_at": "2026-11-26T08:45:00Z",
        "recurrence": "DAILY",
        "completed_at": "2026-11-26T09:30:00Z",
    }
    payload.update(changes)
    return payload


@dataclass(frozen=True)
class Creation:
    """A `POST /tasks` the fake backend received, and its answer."""

    body: dict[str, Any]
    identity: Identity | None
    headers: dict[str, str]
    status: int


@dataclass
class FakeBackend:
    """Backend's `POST /tasks` as its contract says: 201 created, 200 for a repeat, 401 without a valid token.

    Attributes:
        unavailable: Answer 503 to this many requests first.
        reject_with: Answer every request with this status instead (a 4xx).
    """

    tokens: Tokens
    unavailable: int = 0
    reject_with: int | None = None
    requests: list[Creation] = field(default_factory=list)
    tasks: dict[tuple[str, int, datetime], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app = FastAPI()
        self.app.post("/tasks")(self._create)

    @property
    def statuses(self) -> list[int]:
        return [request.status for request in self.requests]

    async def _create(self, request: Request) -> JSONResponse:
        body = await request.json()
        headers = dict(request.headers)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        identity: Identity | None = None
        if scheme.lower() == "bearer":
            try:
                identity = self.tokens.verify(token)
            except InvalidToken:
                identity = None
        if identity is None:
            answer = JSONResponse({"detail": "not authenticated"}, status_code=401)
        elif self.unavailable > 0:
            self.unavailable -= 1
            answer = JSONResponse({"detail": "database unavailable"}, status_code=503)
        elif self.reject_with is not None:
            answer = JSONResponse({"detail": "title too long"}, status_code=self.reject_with)
        else:
            key = (
                identity.user_id,
                int(body["recurrence_of"]),
                datetime.fromisoformat(body["due_at"]),
            )
            existing = self.tasks.get(key)
            if existing is not None:
                answer = JSONResponse(existing, status_code=200)
            else:
                task = {"id": 100 + len(self.tasks), **body}
                self.tasks[key] = task
                answer = JSONResponse(task, status_code=201)
        self.requests.append(Creation(body, identity, headers, answer.status_code))
        return answer


class Deferred:
    """An ASGI app standing in for one built later: an app and its sidecar each need the other."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "the app behind this sidecar was never set"
        await self.target(scope, receive, send)


@dataclass
class System:
    """The recurring service and its neighbours, wired in process."""

    app: FastAPI
    backend: FakeBackend
    broker: Broker
    recurring: Sidecar
    publisher: Sidecar
    registry: CollectorRegistry
    logs: LogCapture
    spans: SpanCapture
    start_backend: Callable[[], Awaitable[Sidecar]]

    @property
    def observability(self) -> Observability:
        obs: Observability = self.app.state.observability
        return obs

    async def publish(
        self,
        data: Any,
        *,
        event_id: str | None = None,
        event_type: str = TASK_COMPLETED,
        request_id: str = "req-42",
        user_id: str = "alice",
    ) -> None:
        """Publish to `task-events` as backend does: a CloudEvent type, baggage, a traceparent."""
        params = {
            "metadata.cloudevent.type": event_type,
            "metadata.baggage": f"request_id={request_id},user_id={user_id}",
        }
        if event_id is not None:
            params["metadata.cloudevent.id"] = event_id
        async with self.publisher.client() as client:
            response = await client.post(
                f"/v1.0/publish/{PUBSUB}/{TASK_EVENTS}",
                json=data,
                params=params,
                headers={"traceparent": PUBLISHER_TRACEPARENT},
            )
        assert response.status_code == 204, response.text

    async def settle(self) -> None:
        """Wait until every delivery, retry and dead-lettering is done."""
        await self.broker.idle(timeout=20)

    def client(self) -> httpx.AsyncClient:
        """A client of the recurring app itself (close it)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://recurring"
        )

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.registry, name, **labels)

    def results(self, topic: str = TASK_EVENTS) -> list[Any]:
        """What became of each message recurring's sidecar delivered on `topic`."""
        return [result for result in self.recurring.results if result.topic == topic]


SystemFactory = Callable[..., Awaitable[System]]


@pytest.fixture
async def make_system(
    metrics_registry: CollectorRegistry, captured_logs: LogCapture, captured_spans: SpanCapture
) -> AsyncIterator[SystemFactory]:
    """Start the system (`await make_system(backend_up=True, **settings)`); stopped after the test."""
    async with AsyncExitStack() as stack:

        async def factory(*, backend_up: bool = True, **settings: Any) -> System:
            broker = Broker(component_retry_interval=0.005)
            startup = RetryPolicy.constant(0.001, 3)
            behind = Deferred()
            recurring = Sidecar(
                RECURRING,
                broker=broker,
                app_transport=httpx.ASGITransport(app=behind),
                retry_policy=RetryPolicy.constant(0.01, max_retries=MAX_RETRIES),
                startup_retry=startup,
            )
            app = create_app(
                Settings(**{"jwt_secret": SECRET, **settings}),
                dapr_transport=httpx.ASGITransport(app=recurring.asgi),
                registry=metrics_registry,
                traces_exporter="memory",
                sample_ratio=1.0,
                load_plugins=False,
                log_stream=captured_logs,
            )
            behind.target = app
            stack.callback(app.state.observability.shutdown)
            captured_spans.watch(app.state.observability)
            await stack.enter_async_context(app.router.lifespan_context(app))
            backend = FakeBackend(Tokens(SECRET))

            async def start_backend() -> Sidecar:
                sidecar = Sidecar(
                    BACKEND,
                    broker=broker,
                    app_transport=httpx.ASGITransport(app=backend.app),
                    startup_retry=startup,
                )
                return await stack.enter_async_context(sidecar)

            if backend_up:
                await start_backend()
            publisher = await stack.enter_async_context(
                Sidecar(
                    "task-publisher",
                    broker=broker,
                    app_transport=httpx.ASGITransport(app=Starlette()),
                    startup_retry=startup,
                )
            )
            await stack.enter_async_context(recurring)
            return System(
                app,
                backend,
                broker,
                recurring,
                publisher,
                metrics_registry,
                captured_logs,
                captured_spans,
                start_backend,
            )

        yield factory


@pytest.fixture
async def system(make_system: SystemFactory) -> System:
    """The system with default settings (in-memory idempotency and dead letters)."""
    return await make_system()
