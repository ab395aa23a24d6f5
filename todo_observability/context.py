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
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from todo_observability._decorators import ContextDecorator
from todo_observability._signals import Signals, fallback_signals

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "RequestContext",
    "bind_context",
    "current_context",
    "get_request_id",
    "get_user_id",
    "new_request_id",
    "set_user_id",
    "valid_request_id",
    "valid_user_id",
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
        signals: Where this unit of work's signals go (the serving service's), if known.
    """

    __slots__ = ("request_id", "signals", "user_id")

    def __init__(
        self,
        request_id: str,
        user_id: str | None = None,
        signals: Signals | None = None,
    ):
        self.request_id = request_id
        self.user_id = user_id
        self.signals = signals

    def __repr__(self) -> str:
        return f"RequestContext(request_id={self.request_id!r}, user_id={self.user_id!r})"


_current: ContextVar[RequestContext | None] = ContextVar("todo_observability_request", default=None)
_fields: ContextVar[Mapping[str, Any]] = ContextVar("todo_observability_fields", default=_EMPTY)

current_context = _current.get
_current_fields = _fields.get


_default_signals: list[Signals] = []


def _current_signals(explicit: Signals | None = None) -> Signals:
    """Where a signal recorded now goes.

    `explicit` when given, else the service serving the current unit of work, else the
    service configured last, else a default built on first use (OpenTelemetry's global
    tracer, prometheus_client's default registry).
    """
    if explicit is not None:
        return explicit
    ctx = _current.get()
    if ctx is not None and ctx.signals is not None:
        return ctx.signals
    return _default_signals[-1] if _default_signals else fallback_signals()


def _push_default_signals(signals: Signals) -> None:
    """Make `signals` the default of the process (`configure` does, for each service)."""
    _default_signals.append(signals)


def _remove_default_signals(signals: Signals) -> None:
    """Forget `signals` as a default (`Observability.shutdown` does)."""
    if signals in _default_signals:
        _default_signals.remove(signals)


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex characters."""
    # getrandbits is ~10x cheaper than uuid4 and reseeded after fork; request ids
    # need to be unique, not unguessable.
    return "%032x" % random.getrandbits(128)  # noqa: UP031 - a third of a format spec's cost


def valid_request_id(value: str | None) -> str | None:
    """The value if it is an acceptable request id, else None."""
    if value and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return None


def valid_user_id(value: str | None) -> str | None:
    """The value if it is an acceptable user id from outside (baggage, a trusted header), else None.

    The rule is the request id's (`REQUEST_ID_PATTERN`): 1 to 128 letters, digits and
    `- _ . : / + = @`, which holds user names, e-mail addresses and UUIDs, and never a
    newline, a control or escape character, a bidirectional override or a 4,000-character
    value. The application's own resolvers and `set_user_id()` are not held to it.
    """
    return valid_request_id(value)


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


def _enter_context(ctx: RequestContext) -> Token[RequestContext | None]:
    """Make `ctx` current; reset the returned token in `finally`."""
    return _current.set(ctx)


def _exit_context(token: Token[RequestContext | None]) -> None:
    """Undo `_enter_context`."""
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
