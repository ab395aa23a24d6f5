"""The frontend in process: its sidecar and a fake backend's sidecar on one broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from reference_app.common.auth import Tokens
from reference_app.frontend import Settings, create_app
from reference_app.frontend.auth import SESSION_COOKIE
from todo_observability.testing import LogCapture, SpanCapture
from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar

from .fake_backend import FakeBackend

SECRET = "frontend-tests-secret-of-at-least-32-bytes"
BASE_URL = "http://frontend.test"


@dataclass
class System:
    """The frontend app, a client of it, the fake backend and both sidecars."""

    app: FastAPI
    client: httpx.AsyncClient
    backend: FakeBackend
    frontend_sidecar: Sidecar
    backend_sidecar: Sidecar
    sidecar_spans: InMemorySpanExporter
    registry: CollectorRegistry

    def sign_in(self, user_id: str = "alice", email: str | None = None) -> str:
        """Put a session for `user_id` in the client's cookie jar; the token."""
        token = Tokens(SECRET).issue(user_id, email=email or f"{user_id}@todo.local")
        self.client.cookies.set(SESSION_COOKIE, token, domain="frontend.test")
        return token


def make_settings(**changes: Any) -> Settings:
    """Settings for a test: the tests' secret, anything else as given."""
    return Settings(jwt_secret=SECRET, **changes)


@pytest.fixture
async def system(
    make_observability: Any,
    captured_logs: LogCapture,
    captured_spans: SpanCapture,
    metrics_registry: CollectorRegistry,
) -> AsyncIterator[System]:
    broker = Broker()
    sidecar_spans = InMemorySpanExporter()
    backend = FakeBackend(secret=SECRET)
    make_observability(backend.app, service_name="backend", registry=CollectorRegistry())
    frontend: FastAPI | None = None

    async def frontend_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        # The sidecar is built before the app it serves, which needs the sidecar's API.
        assert frontend is not None
        await frontend(scope, receive, send)

    startup = RetryPolicy.constant(0.001, 3)
    frontend_sidecar = Sidecar(
        "frontend",
        app_transport=httpx.ASGITransport(app=frontend_asgi),
        broker=broker,
        span_exporter=sidecar_spans,
        startup_retry=startup,
    )
    backend_sidecar = Sidecar(
        "backend",
        app_transport=httpx.ASGITransport(app=backend.app),
        broker=broker,
        span_exporter=sidecar_spans,
        startup_retry=startup,
    )
    frontend = create_app(
        make_settings(),
        dapr_transport=httpx.ASGITransport(app=frontend_sidecar.asgi),
        registry=metrics_registry,
        traces_exporter="memory",
        sample_ratio=1.0,
        load_plugins=False,
        log_stream=captured_logs,
    )
    captured_spans.watch(frontend.state.observability)
    try:
        async with (
            frontend.router.lifespan_context(frontend),
            backend_sidecar,
            frontend_sidecar,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=frontend), base_url=BASE_URL
            ) as client,
        ):
            yield System(
                frontend,
                client,
                backend,
                frontend_sidecar,
                backend_sidecar,
                sidecar_spans,
                metrics_registry,
            )
    finally:
        frontend.state.observability.shutdown()
