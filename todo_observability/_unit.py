"""The unit of work: one HTTP request, delivered message or job trigger, from ids in to context reset.

Each kind shares one lifecycle. On the way in: the correlation context is entered,
the span started and attached, the unit counted in flight and its clock started. On
the way out: metrics, span status and the outcome line (`record`, which each kind
writes for itself), then the span ends, the OpenTelemetry context is detached and the
correlation context reset. The way out is this class's, not the caller's: whatever
`record` does (a log stream closed under it, a metric that raises), the span ends and
nothing stays current.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanKind

from todo_observability.context import (
    BAGGAGE_REQUEST_ID,
    BAGGAGE_USER_ID,
    RequestContext,
    _current,
    valid_request_id,
    valid_user_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextvars import Token
    from types import TracebackType

    from opentelemetry.context import Context

    from todo_observability._signals import Signals

__all__ = ["UnitOfWork", "baggage_ids"]

_U = TypeVar("_U", bound="UnitOfWork")
# Bound once: entering and leaving a unit is on every request's path.
_enter = _current.set
_reset = _current.reset
_now = time.perf_counter
_current_otel_context = otel_context.get_current
_attach = otel_context.attach
_detach = otel_context.detach


def baggage_ids(parent: Context | None) -> tuple[str | None, str | None]:
    """(request id, user id) carried in the baggage of `parent`; an invalid value is None."""
    if parent is None:
        return None, None
    request_id = baggage.get_baggage(BAGGAGE_REQUEST_ID, parent)
    user_id = baggage.get_baggage(BAGGAGE_USER_ID, parent)
    return (
        valid_request_id(request_id) if isinstance(request_id, str) else None,
        valid_user_id(user_id) if isinstance(user_id, str) else None,
    )


class UnitOfWork:
    """One unit of work's context, span and clock; subclasses say what to record at the end.

    Use it as a context manager around the work:

        with _Delivery(signals, context, ...) as unit:
            unit.result = await process()

    An exception escaping the block is kept in `error` (and re-raised); `record`
    sees it.

    Args:
        signals: Where the unit's span and metrics go.
        context: The correlation context to make current.
        name: The span's name; None for a unit that records no span (a health probe).
        parent: The span's parent context (None: the current one).
        kind: The span's kind.
        links: Links of the span.
        attributes: Attributes of the span at its start.
        in_flight: Adds to a gauge counting units in flight (`metrics.increment` of its
            child), or None.
    """

    __slots__ = (
        "_in_flight",
        "_otel_token",
        "_token",
        "context",
        "error",
        "signals",
        "span",
        "start",
    )

    def __init__(
        self,
        signals: Signals,
        context: RequestContext,
        name: str | None,
        *,
        parent: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
        attributes: dict[str, Any] | None = None,
        in_flight: Callable[[float], None] | None = None,
    ):
        self.signals = signals
        self.context = context
        self.error: BaseException | None = None
        self._in_flight = in_flight
        self._token = _enter(context)
        self.span: trace.Span = trace.INVALID_SPAN
        self._otel_token: Token[Context] | None = None
        if name is not None:
            if parent is None:
                # What the SDK would read for None, read once: the tracer, the sampler and
                # the context of the span each look the parent up again.
                parent = _current_otel_context()
            self.span = signals.tracer.start_span(
                name, context=parent, kind=kind, links=links, attributes=attributes
            )
            self._otel_token = _attach(trace.set_span_in_context(self.span, parent))
        if in_flight is not None:
            in_flight(1)
        self.start = _now()

    def __enter__(self: _U) -> _U:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the outcome, then end the span, detach and reset, in that order, whatever recording does."""
        elapsed = _now() - self.start
        if exc is not None and self.error is None:
            self.error = exc
        try:
            if self._in_flight is not None:
                self._in_flight(-1)
            self.record(elapsed)
        except Exception as failure:  # noqa: BLE001 - observability must not fail the unit it observes
            _report(failure)
        finally:
            otel_token = self._otel_token
            try:
                if otel_token is not None:
                    self.span.end()
            finally:
                if otel_token is not None:
                    _detach(otel_token)
                _reset(self._token)

    def record(self, elapsed: float) -> None:
        """Record metrics, span status and the outcome line; `elapsed` is the work's duration in seconds."""


def _report(exc: BaseException) -> None:
    """Say on stderr that recording failed, as the logging module does for a failed line."""
    if not logging.raiseExceptions:
        return
    try:
        sys.stderr.write("--- todo_observability: recording a unit of work failed ---\n")
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    except Exception:  # noqa: BLE001, S110 - stderr itself is gone: nothing is left to tell
        pass
