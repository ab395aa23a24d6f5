"""JSON logs: a python-json-logger formatter that adds the correlation context, and its wiring.

Every line is one JSON object with `timestamp` (RFC 3339, UTC, milliseconds,
`Z`), `level`, `service_name`, `logger`, `message`, `request_id`, `user_id`,
`trace_id`, `span_id` and `context` (bound fields and `extra=`), plus an
`exception` object (type, message, stack) when one is logged.

A log call never loses its line and never raises into the caller: what cannot be
rendered (an argument whose `repr` fails, a value JSON cannot hold) becomes
`[UNRENDERABLE]` in a line that is still valid JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.trace import get_current_span
from pythonjsonlogger.core import RESERVED_ATTRS, BaseJsonFormatter

from todo_observability.context import _current_fields, current_context
from todo_observability.redaction import CIRCULAR, REDACTED, TOO_DEEP, Redactor

_JsonBase: type[BaseJsonFormatter]
_orjson_dumps: Callable[..., bytes] | None
try:  # orjson is optional; python-json-logger's orjson formatter is used when it is there.
    from orjson import OPT_NON_STR_KEYS as _ORJSON_OPTIONS
    from orjson import dumps as _orjson_dumps
    from pythonjsonlogger.orjson import OrjsonFormatter as _JsonBase
except ImportError:  # pragma: no cover - exercised by the no-orjson test session
    from pythonjsonlogger.json import JsonFormatter as _JsonBase

    _orjson_dumps = None
    _ORJSON_OPTIONS = 0

__all__ = [
    "ACCESS_LOGGER",
    "UNRENDERABLE",
    "JsonFormatter",
    "LoggingSetup",
    "configure_logging",
    "get_logger",
]

ACCESS_LOGGER = "todo_observability.access"
"""The logger that writes one line per HTTP request."""
UNRENDERABLE = "[UNRENDERABLE]"
"""What a value that cannot be rendered becomes (a failing `str`, an integer JSON cannot hold)."""
_TRUSTED_CONTEXT_ATTR = "todo_context"
"""A record attribute holding context fields that need no redaction (the SDK's own)."""
_HANDLER_MARK = "_todo_observability_handler"
# uvicorn adds `color_message` (the message with ANSI colours) to its records: not context.
_SKIP = frozenset(RESERVED_ATTRS) | {"message", "asctime", "color_message", _TRUSTED_CONTEXT_ATTR}
# What LogRecord.__init__ sets (never context: each of them is in _SKIP).
_STANDARD = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) & _SKIP
_INVALID_SPAN_ID = trace.INVALID_SPAN_ID
_MAX_DEPTH = 32
_COULD_NOT_ENCODE = "__could_not_encode__"
"""python-json-logger's answer for an object whose str() fails; ours is UNRENDERABLE."""
# orjson holds integers in [-2**63, 2**64); the standard library any size.
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1
# The end of every timestamp, by millisecond: one lookup instead of a format per line.
# (A fraction of a second below 1 never scales to 1000: 1000 * (1 - 2**-53) rounds down.)
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_LEVEL_NAMES = {
    level: logging.getLevelName(level)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}

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
        self._base_default: Callable[[Any], Any] = (
            self.json_default or self.json_encoder().default  # type: ignore[has-type]
        )
        # What the encoder makes of other objects (str() of them, a dataclass's fields) is
        # scrubbed like any value, and an object whose rendering fails is marked, not fatal.
        self.json_default = self._default
        # (second, its text) and (span context, trace id, span id) of the latest line, each
        # replaced as one object so that threads never see halves of two: one strftime per
        # second, and the lines of one span format its ids once.
        self._clock: tuple[int, str] = (-1, "")
        self._ids: tuple[object, str | None, str | None] = (None, None, None)
        # python-json-logger's OrjsonFormatter serialises with one orjson call: make that call
        # directly (two method calls fewer per line) unless a subclass changed how.
        cls = type(self)
        self._direct_orjson = (
            _orjson_dumps is not None
            and cls.serialize_log_record is BaseJsonFormatter.serialize_log_record
            and cls.jsonify_log_record is _JsonBase.jsonify_log_record
        )

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one JSON line; this never raises (see `UNRENDERABLE`)."""
        scrub = self.redactor.scrub_text
        try:
            data = self.fields(
                record.levelname, record.name, scrub(record.getMessage()), record.created
            )
            data["context"] = self._context(record)
            if record.exc_info and record.exc_info[1] is not None:
                data["exception"] = self._exception(record)
            if record.stack_info:
                data["stack"] = scrub(self.formatStack(record.stack_info))
        except Exception:  # noqa: BLE001 - the line is written anyway, piece by piece
            # RecursionError included: StreamHandler.emit re-raises it into the caller.
            data = self._salvage(record)
        return self.render(data)

    def _salvage(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line of a record whose normal rendering failed: each part that fails is marked."""
        scrub = self.redactor.scrub_text
        try:
            message = scrub(record.getMessage())
        except Exception:  # noqa: BLE001 - an argument whose str/repr fails, a bad format
            message = f"{_safe_text(record.msg)} {UNRENDERABLE}"
        data = self.fields(
            _safe_text(record.levelname), _safe_text(record.name), message, record.created
        )
        data["context"] = self._salvage_context(record)
        if record.exc_info and record.exc_info[1] is not None:
            try:
                data["exception"] = self._exception(record)
            except Exception:  # noqa: BLE001
                data["exception"] = {"type": UNRENDERABLE, "message": UNRENDERABLE, "stack": None}
        if record.stack_info:
            try:
                data["stack"] = scrub(self.formatStack(record.stack_info))
            except Exception:  # noqa: BLE001
                data["stack"] = UNRENDERABLE
        return data

    def _salvage_context(self, record: logging.LogRecord) -> dict[Any, Any]:
        context: dict[Any, Any] = {}
        try:
            fields = {**_current_fields(), **record.__dict__}
        except Exception:  # noqa: BLE001
            return {"context": UNRENDERABLE}
        redactor = self.redactor
        for key, value in fields.items():
            if key in _SKIP:
                continue
            try:
                context[key] = REDACTED if redactor.is_sensitive(key) else redactor.scrub(value)
            except Exception:  # noqa: BLE001
                context[key] = UNRENDERABLE
        trusted = getattr(record, _TRUSTED_CONTEXT_ATTR, None)
        if isinstance(trusted, dict):
            context.update(trusted)
        return context

    def _default(self, value: Any) -> Any:
        try:
            rendered = self._base_default(value)
        except Exception:  # noqa: BLE001 - e.g. an object whose __str__ raises
            return UNRENDERABLE
        if rendered == _COULD_NOT_ENCODE:
            return UNRENDERABLE
        return self.redactor.scrub(rendered)

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
            span_context = get_current_span().get_span_context()
            if ctx is None:
                service_name, request_id, user_id = self.service_name, None, None
            else:
                request_id, user_id = ctx.request_id, ctx.user_id
                # Several apps may share one process (and this handler): name the one serving.
                signals = ctx.signals
                service_name = self.service_name if signals is None else signals.service_name
        else:
            service_name, request_id, user_id, span_context = correlation
        ids = self._ids
        if ids[0] is not span_context:
            if span_context.span_id == _INVALID_SPAN_ID:
                ids = (span_context, None, None)
            else:
                # %-formatting: a third of what a format spec costs.
                ids = (
                    span_context,
                    "%032x" % span_context.trace_id,  # noqa: UP031
                    "%016x" % span_context.span_id,  # noqa: UP031
                )
            self._ids = ids
        second = int(created)
        clock = self._clock
        if clock[0] != second:
            clock = self._clock = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        return {
            "timestamp": clock[1] + _MILLIS[int((created - second) * 1000)],
            "level": level,
            "service_name": service_name,
            "logger": logger,
            "message": message,
            "request_id": request_id,
            "user_id": user_id,
            "trace_id": ids[1],
            "span_id": ids[2],
            "context": None,
        }

    if (
        _JsonBase.__name__ == "JsonFormatter"
    ):  # pragma: no cover - runs in a subprocess test without orjson

        def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
            """Serialise with one reused encoder (python-json-logger builds one per line)."""
            encoder = self.__dict__.get("_encoder")
            if encoder is None:
                # allow_nan=False: NaN is not JSON; refused here, it becomes null in render().
                encoder = self._encoder = self.json_encoder(
                    default=self.json_default, separators=(",", ":"), allow_nan=False
                )
            line: str = encoder.encode(log_data)
            return line

    def render(self, data: dict[str, Any]) -> str:
        """Let the enrichers (plugins) see the line, then serialise it; this never raises.

        What the encoder refuses (lone surrogates, integers beyond 64 bits with
        orjson, keys that are not strings, NaN) is made JSON-safe and the line
        encoded again; only then do the values that cannot be rendered become
        `UNRENDERABLE`.
        """
        for enrich in self.enrichers:
            enrich(data)
        try:
            if self._direct_orjson and not self.prefix and not self.json_indent:
                # Exactly OrjsonFormatter.jsonify_log_record, without the calls around it.
                line: str = _orjson_dumps(  # type: ignore[misc]
                    data, default=self.json_default, option=_ORJSON_OPTIONS
                ).decode()
            else:
                line = self.serialize_log_record(data)
        except Exception:  # noqa: BLE001 - the rare line the encoder refuses: the slow path
            try:
                line = self.serialize_log_record(self._jsonable(data, ()))
            except Exception:  # noqa: BLE001 - nothing of the line can be trusted any more
                line = _last_resort(data)
        return line

    def _jsonable(self, value: Any, seen: tuple[int, ...]) -> Any:
        """`value` as what any JSON encoder accepts: str keys, valid text, 64-bit integers."""
        if isinstance(value, str):
            return _valid_text(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if _MIN_INT <= value <= _MAX_INT:
                return value
            return _safe_text(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict | list | tuple):
            if id(value) in seen:
                return CIRCULAR
            if len(seen) >= _MAX_DEPTH:
                return TOO_DEEP
            seen = (*seen, id(value))
            if isinstance(value, dict):
                return {
                    _valid_text(key) if isinstance(key, str) else _safe_text(key): self._jsonable(
                        item, seen
                    )
                    for key, item in value.items()
                }
            return [self._jsonable(item, seen) for item in value]
        if len(seen) >= _MAX_DEPTH:
            return TOO_DEEP
        return self._jsonable(self._default(value), (*seen, id(value)))

    def _context(self, record: logging.LogRecord) -> dict[str, Any]:
        attrs = record.__dict__
        extra = _extras(attrs)
        bound = _current_fields()
        merged = {**bound, **extra} if bound else extra
        context = self.redactor.redact(merged) if merged else {}
        trusted = attrs.get(_TRUSTED_CONTEXT_ATTR)
        if trusted:
            context.update(trusted)
        return context

    def _exception(self, record: logging.LogRecord) -> dict[str, Any]:
        exc_info = record.exc_info
        assert exc_info is not None
        exc = exc_info[1]
        if not record.exc_text:
            record.exc_text = logging.Formatter.formatException(self, exc_info)
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001 - an exception whose __str__ fails is still logged
            message = UNRENDERABLE
        scrub = self.redactor.scrub_text
        return {
            "type": type(exc).__qualname__,
            "message": scrub(message),
            "stack": scrub(record.exc_text),
        }


def _extras(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a record that are context (from `extra=`, a filter), in the order set.

    `LogRecord.__init__` sets its attributes first, so those set later sit at the end of
    the record's `__dict__`: read from the end, up to the first standard attribute. When
    the count says anything else came before them (a record class that sets attributes
    of its own first), every attribute is looked at.
    """
    names: list[str] = []
    scanned = 0
    for name in reversed(attrs):
        if name in _STANDARD:
            break
        scanned += 1
        if name not in _SKIP:
            names.append(name)
    if len(attrs) - scanned != len(_STANDARD):
        return {name: value for name, value in attrs.items() if name not in _SKIP}
    if not names:
        return {}
    return {name: attrs[name] for name in reversed(names)}


def _valid_text(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate becomes its backslash escape."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_text(value: object) -> str:
    """`str(value)` as valid text, or `UNRENDERABLE` when it fails."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a __str__ that raises, an integer of too many digits
        return UNRENDERABLE
    return _valid_text(text)


def _last_resort(data: dict[str, Any]) -> str:
    """A minimal line from the fixed fields alone, with the standard library's encoder."""
    line = {key: _safe_text(data.get(key)) for key in ("timestamp", "level", "logger", "message")}
    line["context"] = UNRENDERABLE
    return json.dumps(line, separators=(",", ":"))


@dataclass
class LoggingSetup:
    """What `configure_logging` changed, so that `undo()` can put it back."""

    handler: logging.Handler
    root_level: int
    saved: dict[str, tuple[list[logging.Handler], bool, bool]] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)

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
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger("uvicorn.error").removeFilter(_already_logged)


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
    `httpx` logs at WARNING unless its level was set: its INFO line holds the full
    URL of every outgoing call, which client spans already record.
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
        setup = LoggingSetup(handler, previous.root_level, previous.saved, previous.levels)
    else:
        setup = LoggingSetup(handler, root.level)
        for name in _UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            setup.saved[name] = (list(logger.handlers), logger.propagate, logger.disabled)
        for name in _QUIETED_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                # The user's own choice of level stands; only the inherited INFO is lowered.
                setup.levels[name] = logger.level
                logger.setLevel(logging.WARNING)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = name != "uvicorn.access"
    logging.getLogger("uvicorn.access").disabled = True
    server_errors = logging.getLogger("uvicorn.error")
    if _already_logged not in server_errors.filters:
        server_errors.addFilter(_already_logged)
    _installed = setup
    return setup


_LOGGED_MARK = "_todo_observability_logged"
"""Set on an exception once a line of the SDK (the access line of its request) carried it."""


def _mark_logged(error: BaseException) -> None:
    """Note that `error` has been logged with its request's ids, so the server need not repeat it."""
    with contextlib.suppress(Exception):  # an exception class that refuses attributes: logged twice
        setattr(error, _LOGGED_MARK, True)


def _already_logged(record: logging.LogRecord) -> bool:
    """A filter of `uvicorn.error`: False for the server's line about an exception already logged.

    An unhandled exception is on the request's access line, with its request id and trace id;
    uvicorn's own "Exception in ASGI application" would repeat its traceback without them.
    """
    exc_info = record.exc_info
    return not (exc_info and getattr(exc_info[1], _LOGGED_MARK, False))


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_QUIETED_LOGGERS = ("httpx",)
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
        _LEVEL_NAMES.get(level) or logging.getLevelName(level),
        logger.name,
        message,
        time.time(),
        correlation,
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
