"""Signing in: the session cookie, the dependencies that read it, and the same-origin guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response

from reference_app.common.auth import InvalidToken
from reference_app.frontend.state import frontend_of
from todo_observability import get_logger, set_user_id

if TYPE_CHECKING:
    from reference_app.frontend.settings import Settings

__all__ = [
    "NOT_SIGNED_IN",
    "SESSION_COOKIE",
    "SIGN_IN",
    "SIGN_IN_AGAIN",
    "MaybeSession",
    "Session",
    "SignInRequired",
    "SignedIn",
    "clear_session_cookie",
    "current_session",
    "require_session",
    "same_origin",
    "set_session_cookie",
]

log = get_logger(__name__)
SESSION_COOKIE = "todo_session"
"""The cookie holding the signed-in user's JWT (HttpOnly, SameSite=Lax)."""
SIGN_IN = "/"
SIGN_IN_AGAIN = "/?reason=expired"
NOT_SIGNED_IN = "You are not signed in, or your session has ended: sign in again."


@dataclass(frozen=True)
class Session:
    """A signed-in user, read from the session cookie.

    Attributes:
        user_id: The user.
        email: Their e-mail address, from the token.
        token: The JWT, sent to backend as the bearer token.
    """

    user_id: str
    email: str | None
    token: str


class SignInRequired(Exception):
    """A JSON API call without a valid session: the page sends the user to sign in."""


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """Hold `token` in an HttpOnly, SameSite=Lax cookie for the session's lifetime."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


async def current_session(request: Request) -> Session | None:
    """The session of a valid session cookie (and the request's user id), else None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        identity = frontend_of(request).tokens.verify(token)
    except InvalidToken as exc:
        log.info("session cookie refused", extra={"reason": str(exc)})
        return None
    set_user_id(identity.user_id)
    return Session(identity.user_id, identity.email, token)


MaybeSession = Annotated[Session | None, Depends(current_session)]


async def require_session(session: MaybeSession) -> Session:
    """The session; without one, `SignInRequired` (a 401 the page's script acts on)."""
    if session is None:
        raise SignInRequired(NOT_SIGNED_IN)
    return session


SignedIn = Annotated[Session, Depends(require_session)]


async def same_origin(request: Request) -> None:
    """Refuse a POST that another site's page sent (the browser names it in `Origin`)."""
    # Defence in depth beside SameSite=Lax, which already keeps the cookie off such requests.
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        log.warning("cross-origin request refused", extra={"origin": origin})
        raise HTTPException(403, "Cross-origin requests are not accepted.")
