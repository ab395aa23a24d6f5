"""Bearer tokens: HS256 JWTs whose subject is the user id, signed with a shared secret.

The backend verifies them; the frontend signs in demo users with them; recurring and
notifications act on behalf of a user (the event's `user_id`) by signing a short-lived token,
so the backend applies one rule everywhere: a user sees only their own tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

DEV_JWT_SECRET = "todo-reference-development-secret-change-me"  # noqa: S105 - public on purpose
"""The shared development secret every service uses when JWT_SECRET is unset outside prod."""
ALGORITHM = "HS256"
ISSUER = "todo-reference"


class InvalidToken(Exception):
    """A bearer token that is missing, malformed, expired or wrongly signed (the message says which)."""


@dataclass(frozen=True)
class Tokens:
    """Signs and verifies the system's bearer tokens.

    Args:
        secret: The shared HS256 secret (JWT_SECRET); at least 32 bytes.
        ttl_seconds: Lifetime of the tokens `issue` makes.
    """

    secret: str
    ttl_seconds: int = 3600

    def __post_init__(self) -> None:
        if len(self.secret.encode()) < 32:
            raise ValueError(
                "JWT_SECRET must be at least 32 bytes for HS256; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )

    def issue(
        self,
        user_id: str,
        *,
        email: str | None = None,
        ttl_seconds: int | None = None,
        actor: str | None = None,
    ) -> str:
        """A token for `user_id` (`email`: where reminders go; `actor`: a service acting for it)."""
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": user_id,
            "iss": ISSUER,
            "iat": now,
            "exp": now + (ttl_seconds or self.ttl_seconds),
        }
        if email:
            claims["email"] = email
        if actor:
            claims["act"] = {"sub": actor}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Identity:
        """Who a valid token speaks for.

        Raises:
            InvalidToken: saying what is wrong with it.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; sign in again") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token has no subject (user id)")
        email = claims.get("email")
        actor = claims.get("act", {}).get("sub") if isinstance(claims.get("act"), dict) else None
        return Identity(subject, email if isinstance(email, str) else None, actor)

    def header(self, user_id: str, *, actor: str | None = None) -> dict[str, str]:
        """An `Authorization` header for `user_id`."""
        return {"authorization": f"Bearer {self.issue(user_id, actor=actor)}"}


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for.

    Attributes:
        user_id: The user (the token's subject).
        email: The user's e-mail address, when the token carries one.
        actor: The service acting on the user's behalf, if any.
    """

    user_id: str
    email: str | None = None
    actor: str | None = None
