"""The correlation context: one object per unit of work, read by every signal.

An HTTP request, a delivered message or a job trigger sets ONE `ContextVar` to a
small mutable `RequestContext`. Values set later in the same unit of work (the
user id, resolved in a dependency that may run in a thread pool) are written
into that object, so the access log and every later log line see them: a
`ContextVar.set()` made inside a thread-pool worker would be lost, a mutation of
the object the request already holds is not.

Bound fields (`bind_context`) live in a second variable holding an immutable
mapping, copied on bind, so concurrent tasks of one request never see each
other's fields.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from todo_observability._decorators import ContextDecorator

if TYPE_CHECKING:
    from todo_observability._observability import Observability

__all__ = [
    "RequestContext",
    "bind_context",
    "current_context",
    "get_request_id",
    "get_user_id",
    "new_request_id",
    "set_user_id",
    "valid_request_id",
]


REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:/+=@]{1,128}")
"""An incoming request id is accepted when it matches this: 1 to 128 characters of letters, digits and `- _ . : / + = @`. Anything else is replaced."""
BAGGAGE_REQUEST_ID = "request_id"
"""Baggage keys that carry the ids from one service to the next."""
BAGGAGE_USER_ID = "user_id"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class RequestContext:
    """What one unit of work (request, message, job) knows about itself.

    Attributes:
        request_id: The correlation id, echoed in ``X-Request-ID`` and carried in baggage.
        user_id: The authenticated user, when known.
        observability: The `Observability` serving this unit of work, if any.
    """

    __slots__ = ("observability", "request_id", "user_id")

    def __init__(
        self,
        request_id: str,
        user_id: str | None = None,
        observability: Observability | None = None,
    ):
        self.request_id = request_id
        self.user_id = user_id
        self.observability = observability

    def __repr__(self) -> str:
        return f"RequestContext(request_id={self.request_id!r}, user_id={self.user_id!r})"


_current: ContextVar[RequestContext | None] = ContextVar("todo_observability_request", default=None)
_fields: ContextVar[Mapping[str, Any]] = ContextVar("todo_observability_fields", default=_EMPTY)

current_context = _current.get
current_fields = _fields.get


_default_observability: list[Observability] = []


def active_observability() -> Observability | None:
    """The `Observability` serving the current unit of work, else the last one configured."""
    ctx = _current.get()
    if ctx is not None and ctx.observability is not None:
        return ctx.observability
    return _default_observability[-1] if _default_observability else None


def push_default_observability(obs: Observability) -> None:
    """Make `obs` the process default (used by `configure`)."""
    _default_observability.append(obs)


def remove_default_observability(obs: Observability) -> None:
    """Forget `obs` as a default (used by `Observability.shutdown`)."""
    if obs in _default_observability:
        _default_observability.remove(obs)


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex characters."""
    # getrandbits is ~10x cheaper than uuid4 and reseeded after fork; request ids
    # need to be unique, not unguessable.
    return f"{random.getrandbits(128):032x}"


def valid_request_id(value: str | None) -> str | None:
    """The value if it is an acceptable request id, else None."""
    if value and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return None


def get_request_id() -> str | None:
    """The request id of the current unit of work, or None outside one."""
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def get_user_id() -> str | None:
    """The user id of the current unit of work, or None."""
    ctx = _current.get()
    return ctx.user_id if ctx is not None else None


def set_user_id(user_id: str | None) -> None:
    """Record the authenticated user for the rest of the current unit of work.

    Safe to call from a sync FastAPI dependency (run in a thread pool): the value
    reaches the access log and every later log line of the same request. Outside
    a request it starts a context for the current task.
    """
    ctx = _current.get()
    if ctx is None:
        _current.set(RequestContext(new_request_id(), user_id))
    else:
        ctx.user_id = user_id


def enter_context(ctx: RequestContext) -> Token[RequestContext | None]:
    """Make `ctx` current; reset the returned token in `finally`."""
    return _current.set(ctx)


def exit_context(token: Token[RequestContext | None]) -> None:
    """Undo `enter_context`."""
    _current.reset(token)


class bind_context(ContextDecorator):
    """Bind fields to every log line written inside a block or a function.

    Usable as a context manager and as a decorator of sync and async functions:

        with bind_context(task_id=task.id):
            log.info("completed")           # context: {"task_id": 42}

        @bind_context(component="rrule")
        async def next_occurrence(...): ...

    The fields are visible to code called from inside, including thread-pool
    calls made with `run_in_threadpool`, and are removed on exit.
    """

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: Any):
        self._fields = fields
        self._tokens: list[Token[Mapping[str, Any]]] = []

    def _fresh(self, func: Callable[..., Any]) -> bind_context:
        return bind_context(**self._fields)

    def __enter__(self) -> Mapping[str, Any]:
        merged = MappingProxyType({**_fields.get(), **self._fields})
        self._tokens.append(_fields.set(merged))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _fields.reset(self._tokens.pop())
