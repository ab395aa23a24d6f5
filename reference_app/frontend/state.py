"""What every route of the frontend shares: the settings, tokens, backend and pages of one app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Response

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

    from reference_app.common.auth import Tokens
    from reference_app.frontend.backend import TasksBackend
    from reference_app.frontend.settings import Settings

__all__ = ["NO_STORE", "PAGE_HEADERS", "Frontend", "UsesFrontend", "frontend_of"]

NO_STORE = {"cache-control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    # Scripts and styles come from /static only: there is no inline code to inject into.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@dataclass(frozen=True)
class Frontend:
    """What the routes share: settings, tokens, backend and templates (`app.state.frontend`).

    Attributes:
        settings: The service's settings.
        tokens: Signs and verifies the session tokens.
        backend: Backend's tasks API, through Dapr.
        templates: The Jinja2 pages.
    """

    settings: Settings
    tokens: Tokens
    backend: TasksBackend
    templates: Jinja2Templates

    def page(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        """Render the page `name` with the security and caching headers every page gets."""
        return self.templates.TemplateResponse(
            request, name, context, status_code=status_code, headers=PAGE_HEADERS
        )


def frontend_of(request: Request) -> Frontend:
    """The `Frontend` of the app serving `request`."""
    frontend: Frontend = request.app.state.frontend
    return frontend


UsesFrontend = Annotated[Frontend, Depends(frontend_of)]
