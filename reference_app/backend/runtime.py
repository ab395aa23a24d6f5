"""The backend's running parts, built once per app and started and stopped with its lifespan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from sqlalchemy.engine import make_url

from reference_app.backend.db import Database, is_unavailable
from reference_app.backend.outbox import Outbox
from reference_app.backend.service import Tasks
from reference_app.common.auth import Tokens
from reference_app.common.events import PUBSUB
from todo_observability import Observability, get_logger
from todo_observability.dapr import DaprClient
from todo_observability.health import checks

if TYPE_CHECKING:
    from reference_app.backend.settings import Settings

log = get_logger(__name__)


class Backend:
    """Settings, token verifier, database, outbox and tasks of one app (`app.state.backend`).

    Args:
        settings: The validated settings.
        observability: What `configure()` returned for the app.
        dapr_transport: An httpx transport to the sidecar instead of the network (tests:
            `httpx.ASGITransport(app=sidecar.asgi)`); used by the publishes and the Dapr
            health checks.
    """

    def __init__(
        self,
        settings: Settings,
        observability: Observability,
        dapr_transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.settings = settings
        self.observability = observability
        self.tokens = Tokens(settings.jwt_secret)
        self.db = Database(settings.database_url, connect_timeout=settings.database_connect_timeout)
        self.outbox = Outbox(self.db, settings, observability)
        self.tasks = Tasks(self.db, self.outbox, observability)
        self.dapr: DaprClient | None = None
        self._dapr_transport = dapr_transport
        self._health_http: httpx.AsyncClient | None = None
        observability.health.add(checks.database(self.db.engine))

    async def start(self) -> None:
        """Open the sidecar client, register its health checks, create the tables, start the outbox.

        A database that is down does not stop the start: readiness says so, requests get
        503, and the tables are created once it answers.
        """
        settings = self.settings
        token = settings.dapr_api_token or ""  # "": no token (not the environment's)
        self.dapr = DaprClient(
            settings.dapr_endpoint,
            api_token=token,
            timeout=settings.dapr_timeout,
            observability=self.observability,
            transport=self._dapr_transport,
        )
        if self._dapr_transport is not None:
            self._health_http = httpx.AsyncClient(transport=self._dapr_transport)
        endpoint, client = settings.dapr_endpoint, self._health_http
        self.observability.health.add(
            checks.dapr_sidecar(base_url=endpoint, api_token=token, client=client),
            checks.dapr_pubsub(PUBSUB, base_url=endpoint, api_token=token, client=client),
            replace=True,
        )
        try:
            await self.db.ensure_schema()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.error(
                "database unavailable at startup; tables are created once it answers",
                extra={"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"},
            )
        self.outbox.start(self.dapr)
        log.info(
            "backend started",
            extra={
                "database": make_url(settings.database_url).render_as_string(hide_password=True),
                "dapr_endpoint": settings.dapr_endpoint,
            },
        )

    async def stop(self) -> None:
        """Stop the outbox loop and close the sidecar client and the database pool."""
        await self.outbox.stop()
        if self.dapr is not None:
            await self.dapr.aclose()
            self.dapr = None
        if self._health_http is not None:
            await self._health_http.aclose()
            self._health_http = None
        await self.db.dispose()
