"""The backend's app factory: the tasks API, its outbox and its observability, in one FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from reference_app.backend.api import install
from reference_app.backend.runtime import Backend
from reference_app.backend.settings import Settings
from reference_app.common.events import BACKEND
from todo_observability import configure, get_logger

if TYPE_CHECKING:
    import httpx

__all__ = ["create_app"]

log = get_logger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    backend: Backend = app.state.backend
    await backend.start()
    try:
        yield
    finally:
        await backend.stop()


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """The backend app.

    Args:
        settings: The settings; by default read from the environment (`Settings.from_env`).
        dapr_transport: Reach the sidecar through this httpx transport instead of the network
            (tests: `httpx.ASGITransport(app=sidecar.asgi)`).
        **observability: Passed to `todo_observability.configure` (tests: `registry=`,
            `traces_exporter="memory"`, `log_stream=`, ...).

    Raises:
        ConfigurationError: a setting read from the environment is invalid.
    """
    settings = settings if settings is not None else Settings.from_env()
    app = FastAPI(
        title="todo backend",
        summary="Every user's tasks; each change announced on Dapr pub/sub.",
        version="1.0.0",
        lifespan=_lifespan,
    )
    install(app)
    observability.setdefault("environment", settings.environment)
    obs = configure(app, service_name=BACKEND, **observability)
    app.state.backend = Backend(settings, obs, dapr_transport)
    if settings.uses_dev_secret:
        log.warning(
            "JWT_SECRET is not set: using the public development secret; set JWT_SECRET "
            "(the same for every service) anywhere but on a developer machine",
            extra={"environment": settings.environment},
        )
    return app
