"""Fixtures for the sidecar emulator's conformance tests: a fake app, a broker, span capture."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar, SidecarSpec
from todo_observability.testing.sidecar.runner import run_sidecars

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN_ID = "00f067aa0ba902b7"
APP_TRACEPARENT = f"00-{TRACE_ID}-{APP_SPAN_ID}-01"

Answer = Response | Callable[["Received"], Response]


@dataclass(frozen=True)
class Received:
    """A request the fake app received from its sidecar."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeApp:
    """The app behind a sidecar: serves `/dapr/subscribe`, records and answers everything else.

    `answer(path, a, b, c)` answers the first request to `path` with `a`, the second with `b`,
    then `c` for ever; unanswered paths get 200 with an empty body.
    """

    subscriptions: Any = field(default_factory=list)
    subscribe_status: int = 200
    requests: list[Received] = field(default_factory=list)
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    def answer(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: Request) -> Response:
        if request.url.path == "/dapr/subscribe" and request.method == "GET":
            self.requests.append(await self._record(request))
            if self.subscribe_status != 200:
                return Response(status_code=self.subscribe_status)
            return JSONResponse(self.subscriptions)
        received = await self._record(request)
        self.requests.append(received)
        answers = self.answers.get(received.path)
        if not answers:
            return Response(status_code=200)
        index = self.calls.get(received.path, 0)
        self.calls[received.path] = index + 1
        answer = answers[min(index, len(answers) - 1)]
        if isinstance(answer, Response):
            return answer
        return answer(received)

    @staticmethod
    async def _record(request: Request) -> Received:
        return Received(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            body=await request.body(),
        )


def subscription(topic: str = "orders", route: str = "/orders", **extra: Any) -> dict[str, Any]:
    """A v1 subscription entry of `/dapr/subscribe`."""
    return {"pubsubname": "pubsub", "topic": topic, "route": route, **extra}


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_span_id(traceparent: str) -> str:
    return traceparent.split("-")[2]


@pytest.fixture
def broker() -> Broker:
    """A broker whose redeliveries (component retries) are 5 ms apart."""
    return Broker(component_retry_interval=0.005)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


SidecarFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def make_sidecar(
    broker: Broker, spans: InMemorySpanExporter
) -> AsyncIterator[SidecarFactory]:
    """Start sidecars for fake apps (`await make_sidecar(app, app_id="backend", **options)`);
    every one is stopped after the test."""
    started: list[Sidecar] = []

    async def factory(app: FakeApp, app_id: str = "backend", **options: Any) -> Sidecar:
        options.setdefault("broker", broker)
        options.setdefault("span_exporter", spans)
        options.setdefault("startup_retry", RetryPolicy.constant(0.001, 3))
        sidecar = Sidecar(app_id, app_transport=app.transport(), **options)
        await sidecar.start()
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in reversed(started):
        await sidecar.stop()


async def publish(
    sidecar: Sidecar,
    body: Any = None,
    *,
    topic: str = "orders",
    pubsub: str = "pubsub",
    content: bytes | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    metadata: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /v1.0/publish through the sidecar's API, JSON unless `content` is given."""
    params = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
    async with sidecar.client() as client:
        if content is not None:
            return await client.post(
                f"/v1.0/publish/{pubsub}/{topic}", content=content, headers=headers, params=params
            )
        return await client.post(
            f"/v1.0/publish/{pubsub}/{topic}", json=body, headers=headers, params=params
        )


def only(items: Sequence[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


@contextlib.asynccontextmanager
async def serve_sidecars(*specs: SidecarSpec, **options: Any) -> AsyncIterator[list[Sidecar]]:
    """Serve emulated sidecars over real HTTP (uvicorn, in this event loop), as the command does.

    Yields once every sidecar has read its app's subscriptions.
    """
    stop = asyncio.Event()
    ready: asyncio.Future[list[Sidecar]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_sidecars(specs, stop=stop, on_ready=ready.set_result, **options))
    try:
        sidecars = await asyncio.wait_for(asyncio.shield(ready), 20)
        await sidecars[0].broker.wait_for(lambda: all(s.ready for s in sidecars), timeout=20)
        yield sidecars
    finally:
        stop.set()
        await task
