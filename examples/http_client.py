"""`create_http_client`: calls to other services carry the trace, the request id and the user id.

Two services: `frontend` calls `backend`, which answers with the propagation
headers it received. In production the base URL would be the other service (or
its Dapr sidecar); tests pass an in-process transport instead.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request

from todo_observability import configure, create_http_client, get_logger, set_user_id

log = get_logger(__name__)
PROPAGATED = ("traceparent", "tracestate", "baggage", "x-request-id")

backend_router = APIRouter()


@backend_router.get("/headers")
async def received_headers(request: Request) -> dict[str, str]:
    log.info("backend called")
    return {name: request.headers[name] for name in PROPAGATED if name in request.headers}


def create_backend(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(backend_router)
    configure(app, service_name="backend", **overrides)
    return app


def create_frontend(
    backend_url: str = "http://127.0.0.1:8001",
    backend_transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> FastAPI:
    # One client for the life of the app: it keeps connections to the backend open.
    backend = create_http_client(transport=backend_transport, base_url=backend_url, timeout=5.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await backend.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/call-backend")
    async def call_backend() -> dict[str, Any]:
        set_user_id("alice")  # as an authentication dependency would
        response = await backend.get("/headers")
        log.info("backend answered", extra={"status": response.status_code})
        return {"backend_saw": response.json()}

    # The backend is one of ours: calls to it carry the request id and the user id. Calls to
    # any other host carry the trace context only.
    overrides.setdefault("internal_hosts", ["127.0.0.1", "backend"])
    configure(app, service_name="frontend", **overrides)
    return app


def main() -> None:
    """Run one of the two services: `SERVICE=backend PORT=8001` or `SERVICE=frontend PORT=8000`."""
    import uvicorn

    service = os.environ.get("SERVICE", "frontend")
    app = create_backend() if service == "backend" else create_frontend()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_config=None)


if __name__ == "__main__":
    main()
