"""The frontend's app factory: a sign-in page, the task page, and the JSON API the page's script calls.

Pages are rendered on the server (Jinja2, `pages`); `static/app.js` posts to `/api/...`
(`proxy`) and re-renders the lists. Every call to backend goes through Dapr service invocation
with the signed-in user's bearer token (`backend.TasksBackend`), so one click is one trace:
frontend → backend → (pub/sub) → recurring → backend. Sessions are in `auth`, the JSON API's
error answers in `errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from reference_app.common.auth import Tokens
from reference_app.common.events import FRONTEND
from reference_app.frontend import errors
from reference_app.frontend.backend import TasksBackend
from reference_app.frontend.forms import format_utc
from reference_app.frontend.pages import pages
from reference_app.frontend.proxy import api
from reference_app.frontend.settings import Settings
from reference_app.frontend.state import Frontend
from todo_observability import configure, get_logger
from todo_observability.dapr import DaprClient
from todo_observability.health import checks

__all__ = ["create_app"]

log = get_logger(__name__)
HERE = Path(__file__).resolve().parent


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """Build the frontend app.

    Args:
        settings: The settings; by default `Settings.from_env()`.
        dapr_transport: How to reach the sidecar instead of its HTTP endpoint (tests pass
            `httpx.ASGITransport(app=sidecar.asgi)`); used by the Dapr client and the
            readiness check.
        **observability: Passed on to `todo_observability.configure` (tests give a registry,
            the memory span exporter, a log stream).

    Returns:
        The app, instrumented, with its readiness check on the Dapr sidecar.
    """
    settings = settings or Settings.from_env()
    dapr = DaprClient(
        settings.dapr_endpoint,
        api_token=settings.dapr_api_token,
        timeout=settings.backend_timeout,
        transport=dapr_transport,
    )
    # The readiness check makes a short-lived client per run unless it is given one; with an
    # injected transport it needs one of its own, closed with the app.
    probe_client = httpx.AsyncClient(transport=dapr_transport) if dapr_transport else None
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["utc"] = format_utc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info(
            "frontend started",
            extra={
                "backend_app_id": settings.backend_app_id,
                "dapr_endpoint": settings.dapr_endpoint,
                "demo_users": [user.user_id for user in settings.demo_users],
            },
        )
        try:
            yield
        finally:
            await dapr.aclose()
            if probe_client is not None:
                await probe_client.aclose()

    app = FastAPI(
        title="todo frontend", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.frontend = Frontend(
        settings=settings,
        tokens=Tokens(settings.jwt_secret, ttl_seconds=settings.session_ttl_seconds),
        backend=TasksBackend(dapr, settings.backend_app_id),
        templates=templates,
    )
    app.include_router(pages)
    app.include_router(api)
    errors.install(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    observability.setdefault("environment", settings.environment)
    configure(
        app,
        service_name=FRONTEND,
        # The public edge: who a request belongs to is the session's word, never the browser's
        # baggage, and what a browser sent in baggage is not passed on into the mesh.
        trust_incoming_context=False,
        health_checks=[
            checks.dapr_sidecar(
                base_url=settings.dapr_endpoint,
                api_token=settings.dapr_api_token,
                client=probe_client,
            )
        ],
        **observability,
    )
    if settings.uses_dev_secret:
        log.warning(
            "JWT_SECRET is not set: sessions are signed with the public development secret; "
            "set JWT_SECRET (the secret every service shares) outside development",
            extra={"environment": settings.environment},
        )
    return app
