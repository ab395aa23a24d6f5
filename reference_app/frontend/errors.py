"""How the JSON API answers a missing session, an invalid request, and backend's refusals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from reference_app.frontend.auth import (
    NOT_SIGNED_IN,
    SIGN_IN_AGAIN,
    SignInRequired,
    clear_session_cookie,
)
from reference_app.frontend.backend import (
    BackendUnavailable,
    RequestRejected,
    SessionRejected,
    describe_detail,
)
from reference_app.frontend.state import NO_STORE, frontend_of
from todo_observability import get_logger

if TYPE_CHECKING:
    from fastapi import FastAPI, Request, Response

__all__ = ["API_ERRORS", "api_error", "install", "on_api_error"]

log = get_logger(__name__)
API_ERRORS: tuple[type[Exception], ...] = (
    SignInRequired,
    SessionRejected,
    RequestRejected,
    BackendUnavailable,
    RequestValidationError,
)
"""The exceptions `on_api_error` answers."""


def api_error(status: int, message: str, detail: Any = None, **extra: str) -> JSONResponse:
    """An error of the JSON API: `message` for people, `detail` as given (backend's, passed on)."""
    body = {"detail": message if detail is None else detail, "message": message, **extra}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=NO_STORE)


async def on_api_error(request: Request, exc: Exception) -> Response:
    """What the JSON API answers for a missing session and for backend's refusals and failures."""
    if isinstance(exc, SignInRequired | SessionRejected):
        # The page's script sends the user to `signin`; the refused cookie goes.
        message = exc.message if isinstance(exc, SessionRejected) else NOT_SIGNED_IN
        response = api_error(401, message, signin=SIGN_IN_AGAIN)
        clear_session_cookie(response, frontend_of(request).settings)
        return response
    if isinstance(exc, RequestRejected):
        return api_error(exc.status, exc.message, exc.detail)
    if isinstance(exc, BackendUnavailable):
        return api_error(502, exc.message)
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    message = describe_detail(errors, 422)
    log.info("request refused: invalid", extra={"errors": message})
    return api_error(422, message, errors)


def install(app: FastAPI) -> None:
    """Answer each of `API_ERRORS` raised in `app` with `on_api_error`."""
    for kind in API_ERRORS:
        app.add_exception_handler(kind, on_api_error)
