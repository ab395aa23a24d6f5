"""Test helpers: capture log lines and finished spans, read metric samples.

The pytest plugin (`todo_observability.testing.pytest_plugin`, loaded
automatically when the package is installed) turns these into fixtures:
`captured_logs`, `captured_spans`, `metrics_registry` and `make_observability`.
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from prometheus_client import CollectorRegistry

    from todo_observability._observability import Observability

__all__ = ["LogCapture", "SpanCapture", "metric_value"]


class LogCapture(io.TextIOBase):
    """A text stream that keeps each JSON log line written to it, parsed.

    Pass it as `configure(..., log_stream=capture)`, or call `install()` to
    redirect the handler `configure()` already installed.

    Attributes:
        lines: Every line written so far, parsed from JSON.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self._partial = ""
        self._redirected: list[tuple[logging.StreamHandler[Any], Any]] = []

    def writable(self) -> bool:
        """Always True: this is a sink."""
        return True

    def write(self, text: str) -> int:
        """Parse each complete line of `text`; a line that is not JSON is an error."""
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            if line.strip():
                try:
                    self.lines.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise AssertionError(f"log line is not JSON: {line!r}") from exc
        return len(text)

    def install(self) -> None:
        """Redirect the JSON handler that `configure()` installed on the root logger to this capture."""
        from todo_observability.logs import _HANDLER_MARK

        for handler in logging.getLogger().handlers:
            if getattr(handler, _HANDLER_MARK, False) and isinstance(
                handler, logging.StreamHandler
            ):
                self._redirected.append((handler, handler.setStream(self)))

    def uninstall(self) -> None:
        """Undo `install()`."""
        for handler, stream in self._redirected:
            handler.setStream(stream)
        self._redirected.clear()

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        """The lines whose top-level fields equal every given value (`logger=`, `message=`, ...)."""
        return [line for line in self.lines if all(line.get(k) == v for k, v in fields.items())]

    def access(self) -> list[dict[str, Any]]:
        """The access-log lines."""
        return self.find(logger="todo_observability.access")


class SpanCapture:
    """The finished spans of every `Observability` a test built with the memory exporter.

    The `captured_spans` fixture gathers those of `make_observability`; `watch()`
    adds any other.
    """

    def __init__(self) -> None:
        self._sources: list[Observability] = []

    def watch(self, observability: Observability) -> None:
        """Include the spans of `observability` (configured with the `memory` exporter)."""
        if observability.span_exporter is None:
            raise ValueError(
                "this Observability keeps no spans in memory: configure it with "
                "traces_exporter='memory' (make_observability does by default)"
            )
        self._sources.append(observability)

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in the order they ended (per Observability)."""
        return [
            span
            for obs in self._sources
            if obs.span_exporter is not None
            for span in obs.span_exporter.get_finished_spans()
        ]

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called `name`."""
        return [span for span in self.spans if span.name == name]

    def clear(self) -> None:
        """Forget the spans finished so far."""
        for obs in self._sources:
            if obs.span_exporter is not None:
                obs.span_exporter.clear()


def metric_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly `labels`, or 0.0 when it was never recorded."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
