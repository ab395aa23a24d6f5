"""JSON logs: a python-json-logger formatter that adds the correlation context, and its wiring.

Every line is one JSON object with `timestamp` (RFC 3339, UTC, milliseconds,
`Z`), `level`, `service_name`, `logger`, `message`, `request_id`, `user_id`,
`trace_id`, `span_id` and `context` (bound fields and `extra=`), plus an
`exception` object (type, message, stack) when one is logged.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS, BaseJsonFormatter

from todo_observability.context import _current_fields, current_context
from todo_observability.redaction import Redactor

_JsonBase: type[BaseJsonFormatter]
try:  # orjson is optional; python-json-logger's orjson formatter is used when it is there.
    from pythonjsonlogger.orjson import OrjsonFormatter as _JsonBase
except ImportError:  # pragma: no cover - exercised by the no-orjson test session
    from pythonjsonlogger.json import JsonFormatter as _JsonBase

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "LoggingSetup", "configure_logging", "get_logger"]

ACCESS_LOGGER = "todo_observability.access"
"""The logger that writes one line per HTTP request."""
_TRUSTED_CONTEXT_ATTR = "todo_context"
"""A record attribute holding context fields that need no redaction (the SDK's own)."""
_HANDLER_MARK = "_todo_observability_handler"
# uvicorn adds `color_message` (the message with ANSI colours) to its records: not context.
_SKIP = frozenset(RESERVED_ATTRS) | {"message", "asctime", "color_message", _TRUSTED_CONTEXT_ATTR}
_INVALID_SPAN_ID = trace.INVALID_SPAN_ID

LogEnricher = Callable[[dict[str, Any]], None]
Correlation = tuple[str, "str | None", "str | None", trace.SpanContext]
"""(service_name, request_id, user_id, span context) of a line, when the caller holds them."""


class JsonFormatter(_JsonBase):  # type: ignore[valid-type,misc]
    """Formats a record as one JSON line carrying the correlation context.

    Built on python-json-logger (its orjson formatter when orjson is
    installed), with a `format` that builds the fixed fields directly: this
    runs for every log line, and the generic path is several times slower.

    Args:
        service_name: Written on every line as `service_name`.
        redactor: Scrubs sensitive keys of `context`; default patterns when omitted.
        enrichers: Callables (plugin hooks) that may add or change fields of each line.
    """

    def __init__(
        self,
        service_name: str = "unknown_service",
        *,
        redactor: Redactor | None = None,
        enrichers: Iterable[LogEnricher] = (),
    ):
        super().__init__()
        self.service_name = service_name
        self.redactor = redactor or Redactor()
        self.enrichers = tuple(enrichers)
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            # One strftime per second instead of per line.
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one JSON line."""
        data = self.fields(record.levelname, record.name, record.getMessage(), record.created)
        data["context"] = self._context(record)
        if record.exc_info and record.exc_info[1] is not None:
            data["exception"] = self._exception(record)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return self.render(data)

    def fields(
        self,
        level: str,
        logger: str,
        message: str,
        created: float,
        correlation: Correlation | None = None,
    ) -> dict[str, Any]:
        """The fixed fields of a line (`context` left empty).

        The correlation fields come from `correlation` when the caller already
        holds them, else from the current request context and span.
        """
        if correlation is None:
            ctx = current_context()
            service_name = self.service_name
            if ctx is not None and ctx.signals is not None:
                # Several apps may share one process (and this handler): name the one serving.
                service_name = ctx.signals.service_name
            correlation = (
                service_name,
                ctx.request_id if ctx is not None else None,
                ctx.user_id if ctx is not None else None,
                trace.get_current_span().get_span_context(),
            )
        service_name, request_id, user_id, span_context = correlation
        data: dict[str, Any] = {
            "timestamp": self._timestamp(created),
            "level": level,
            "service_name": service_name,
            "logger": logger,
            "message": message,
            "request_id": request_id,
            "user_id": user_id,
            "trace_id": None,
            "span_id": None,
            "context": None,
        }
        if span_context.span_id != _INVALID_SPAN_ID:
            data["trace_id"] = f"{span_context.trace_id:032x}"
            data["span_id"] = f"{span_context.span_id:016x}"
        return data

    if (
        _JsonBase.__name__ == "JsonFormatter"
    ):  # pragma: no cover - runs in a subprocess test without orjson

        def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
            """Serialise with one reused encoder (python-json-logger builds one per line)."""
            encoder = self.__dict__.get("_encoder")
            if encoder is None:
                encoder = self._encoder = self.json_encoder(
                    default=self.json_default, separators=(",", ":")
                )
            line: str = encoder.encode(log_data)
            return line

    def render(self, data: dict[str, Any]) -> str:
        """Let the enrichers (plugins) see the line, then serialise it."""
        for enrich in self.enrichers:
            enrich(data)
        line: str = self.serialize_log_record(data)
        return line

    def _context(self, record: logging.LogRecord) -> dict[str, Any]:
        bound = _current_fields()
        extra = {k: v for k, v in record.__dict__.items() if k not in _SKIP}
        merged = {**bound, **extra} if bound else extra
        context = self.redactor.redact(merged) if merged else {}
        trusted = getattr(record, _TRUSTED_CONTEXT_ATTR, None)
        if trusted:
            context.update(trusted)
        return context

    def _exception(self, record: logging.LogRecord) -> dict[str, Any]:
        exc_info = record.exc_info
        assert exc_info is not None
        exc = exc_info[1]
        if not record.exc_text:
            record.exc_text = logging.Formatter.formatException(self, exc_info)
        return {"type": type(exc).__qualname__, "message": str(exc), "stack": record.exc_text}


@dataclass
class LoggingSetup:
    """What `configure_logging` changed, so that `undo()` can put it back."""

    handler: logging.Handler
    root_level: int
    saved: dict[str, tuple[list[logging.Handler], bool, bool]] = field(default_factory=dict)

    superseded: bool = False

    def undo(self) -> None:
        """Remove our handler and restore the root and uvicorn loggers as they were.

        Does nothing once a later `configure_logging` call has taken over.
        """
        global _installed
        if self.superseded:
            return
        if _installed is self:
            _installed = None
        logging.getLogger().removeHandler(self.handler)
        logging.getLogger().setLevel(self.root_level)
        for name, (handlers, propagate, disabled) in self.saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled


def configure_logging(
    *,
    service_name: str = "unknown_service",
    level: str | int = "INFO",
    redactor: Redactor | None = None,
    enrichers: Iterable[LogEnricher] = (),
    stream: IO[str] | None = None,
) -> LoggingSetup:
    """Route the standard library and uvicorn loggers through one JSON handler.

    Adds one handler to the root logger (replacing the one a previous call
    added, never adding a second), sends `uvicorn` and `uvicorn.error` through
    it, and silences `uvicorn.access`, whose line the SDK's access log replaces.
    Nothing is touched until this is called.

    Args:
        service_name: Written on every line.
        level: Level of the root logger.
        redactor: Scrubs sensitive keys; default patterns when omitted.
        enrichers: Callables that may add or change fields of each line.
        stream: Where lines go (default: standard output).

    Returns:
        A `LoggingSetup` whose `undo()` reverses the changes.
    """
    global _installed
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(service_name, redactor=redactor, enrichers=enrichers))
    previous = _installed
    if previous is not None:
        # Take over from the earlier call: same originals to restore, one handler.
        previous.superseded = True
        root.removeHandler(previous.handler)
        setup = LoggingSetup(handler, previous.root_level, previous.saved)
    else:
        setup = LoggingSetup(handler, root.level)
        for name in _UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            setup.saved[name] = (list(logger.handlers), logger.propagate, logger.disabled)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = name != "uvicorn.access"
    logging.getLogger("uvicorn.access").disabled = True
    _installed = setup
    return setup


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_NO_LOCK = contextlib.nullcontext()
_installed: LoggingSetup | None = None


def _emit_trusted(
    logger: logging.Logger,
    level: int,
    message: str,
    context: dict[str, Any],
    correlation: Correlation | None = None,
) -> bool:
    """Write a line with already-safe `context` straight to our handler, skipping LogRecord.

    Only when our JSON handler is the one place `logger`'s records would go
    (no other handler, no filter on the way): the line is then exactly what
    the standard path would write, at a fraction of the cost. Returns False
    when that does not hold; the caller then logs the usual way.
    """
    handler: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return False
        for candidate in current.handlers:
            if handler is not None or not getattr(candidate, _HANDLER_MARK, False):
                return False
            handler = candidate
        if not current.propagate:
            break
        current = current.parent
    if handler is None or handler.filters or level < handler.level:
        return False
    assert isinstance(handler, logging.StreamHandler)
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    data = formatter.fields(
        logging.getLevelName(level), logger.name, message, time.time(), correlation
    )
    data["context"] = context
    line = formatter.render(data) + handler.terminator
    try:
        with handler.lock or _NO_LOCK:
            stream = handler.stream
            stream.write(line)
            stream.flush()
    except Exception:  # noqa: BLE001 - as StreamHandler.emit: the handler deals with its failures
        # A closed or broken stream (a dead log shipper): the standard library's answer,
        # never an exception into the request that was only being logged.
        handler.handleError(
            logger.makeRecord(logger.name, level, "(unknown file)", 0, message, (), None)
        )
    return True


def get_logger(name: str | None = None) -> logging.Logger:
    """A standard library logger; its lines are JSON once `configure()` has run.

    Pass structured fields with `extra=`; they appear under `context`:

        log = get_logger(__name__)
        log.info("task completed", extra={"task_id": task.id})
    """
    return logging.getLogger(name)
