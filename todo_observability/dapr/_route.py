"""`Route`: a Starlette route that names itself in the scope, for the SDK's own endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route as _StarletteRoute

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


class Route(_StarletteRoute):
    """A Starlette route that names itself in the scope, as FastAPI's own routes do.

    FastAPI's router does not record a plain Starlette route in `scope["route"]`,
    so the middleware would label its requests `<unmatched>`.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record this route in the scope, then serve the request."""
        scope["route"] = self
        await super().handle(scope, receive, send)
