"""`measured`: RED metrics (count, outcome, duration) for any operation, as a decorator or a block."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from todo_observability._decorators import ContextDecorator
from todo_observability.context import _current_signals

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["measured"]


class measured(ContextDecorator):
    """RED metrics for any operation: a decorator (sync or async) and a context manager.

    Records `operations_total{operation, outcome}` (outcome `success`, or
    `error` when an exception escapes) and `operation_duration_seconds{operation}`:

        @measured("rrule.next_occurrence")
        def next_occurrence(rule: str) -> datetime: ...

        with measured("smtp.send"):
            await smtp.send_message(message)

    Metrics go to the registry of the service serving the current unit of
    work, else of the one configured last, else prometheus_client's default.
    """

    __slots__ = ("_operation", "_starts")

    def __init__(self, operation: str):
        if not operation:
            raise ValueError("measured() needs an operation name, such as 'smtp.send'.")
        self._operation = operation
        self._starts: list[float] = []

    def _fresh(self, func: Callable[..., Any]) -> measured:
        return measured(self._operation)

    def __enter__(self) -> None:
        self._starts.append(time.perf_counter())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._starts.pop()
        _record_operation(self._operation, "error" if exc_type is not None else "success", elapsed)


def _record_operation(operation: str, outcome: str, elapsed: float) -> None:
    counter, histogram = _current_signals().metrics.operation_children(operation, outcome)
    counter.inc()
    histogram.observe(elapsed)
