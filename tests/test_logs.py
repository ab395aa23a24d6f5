from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from todo_observability import bind_context, get_logger
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.logs import JsonFormatter, configure_logging
from todo_observability.redaction import REDACTED, Redactor

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def record(
    msg: str = "hello", *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    logger = logging.getLogger("tests.logs")
    return logger.makeRecord(logger.name, level, __file__, 1, msg, args, None, extra=extra or None)


def render(formatter: JsonFormatter, rec: logging.LogRecord) -> dict[str, object]:
    line = formatter.format(rec)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_line_has_every_field_in_order() -> None:
    line = render(JsonFormatter("backend"), record("task %s done", 42))
    assert list(line) == [
        "timestamp",
        "level",
        "service_name",
        "logger",
        "message",
        "request_id",
        "user_id",
        "trace_id",
        "span_id",
        "context",
    ]
    assert TIMESTAMP.match(str(line["timestamp"]))
    assert line["level"] == "INFO"
    assert line["service_name"] == "backend"
    assert line["logger"] == "tests.logs"
    assert line["message"] == "task 42 done"
    assert line["context"] == {}


def test_timestamp_is_utc_with_milliseconds() -> None:
    rec = record()
    rec.created = 1767225600.0456  # 2026-01-01T00:00:00.045Z
    assert render(JsonFormatter(), rec)["timestamp"] == "2026-01-01T00:00:00.045Z"
    rec.created = 1767225601.999
    assert render(JsonFormatter(), rec)["timestamp"] == "2026-01-01T00:00:01.999Z"


def test_request_context_trace_and_bound_fields_are_included() -> None:
    tracer = TracerProvider().get_tracer("t")
    token = _enter_context(RequestContext("req-1", "user-2"))
    try:
        with tracer.start_as_current_span("op") as span, bind_context(task_id=7, component="rrule"):
            line = render(JsonFormatter(), record(extra_field="x"))
    finally:
        _exit_context(token)
    ctx = span.get_span_context()
    assert line["request_id"] == "req-1"
    assert line["user_id"] == "user-2"
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert line["context"] == {"task_id": 7, "component": "rrule", "extra_field": "x"}


def test_extra_wins_over_bound_fields() -> None:
    with bind_context(task_id=1):
        assert render(JsonFormatter(), record(task_id=2))["context"] == {"task_id": 2}


def test_exception_is_structured_in_the_same_line() -> None:
    try:
        raise ValueError("bad rule")
    except ValueError:
        rec = record(level=logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = render(JsonFormatter(), rec)
    exception = line["exception"]
    assert isinstance(exception, dict)
    assert exception["type"] == "ValueError"
    assert exception["message"] == "bad rule"
    assert exception["stack"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("bad rule")' in exception["stack"]


def test_stack_info_is_included() -> None:
    rec = record()
    rec.stack_info = "Stack (most recent call last):\n  File x"
    assert render(JsonFormatter(), rec)["stack"] == "Stack (most recent call last):\n  File x"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "client_secret",
        "access_token",
        "Authorization",
        "cookie",
        "api_key",
        "x-api-key",
        "credentials",
        "private_key",
        "session_id",
    ],
)
def test_sensitive_keys_are_redacted(key: str) -> None:
    rec = record()
    setattr(rec, key, "hunter2")
    line = render(JsonFormatter(), rec)
    assert line["context"] == {key: REDACTED}
    assert "hunter2" not in json.dumps(line)


def test_redaction_is_recursive_and_extendable() -> None:
    formatter = JsonFormatter(redactor=Redactor(["ssn"]))
    line = render(
        formatter, record(user={"name": "ann", "ssn": "123", "tokens": [{"refresh_token": "r"}]})
    )
    assert line["context"] == {"user": {"name": "ann", "ssn": REDACTED, "tokens": REDACTED}}
    nested = render(formatter, record(items=[{"password": "p", "id": 1}]))
    assert nested["context"] == {"items": [{"password": REDACTED, "id": 1}]}


def test_bound_fields_are_redacted_too() -> None:
    with bind_context(password="p"):
        assert render(JsonFormatter(), record())["context"] == {"password": REDACTED}


def test_enrichers_may_change_the_line() -> None:
    def add_region(data: dict[str, object]) -> None:
        data["region"] = "eu-west"

    assert render(JsonFormatter(enrichers=[add_region]), record())["region"] == "eu-west"


def test_values_json_cannot_encode_natively_are_stringified() -> None:
    import datetime
    import decimal

    line = render(
        JsonFormatter(), record(when=datetime.date(2026, 1, 2), amount=decimal.Decimal("1.5"))
    )
    assert line["context"] == {"when": "2026-01-02", "amount": "1.5"}


@pytest.fixture
def clean_root() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_twice_keeps_one_handler_and_undo_restores(
    clean_root: logging.Logger,
) -> None:
    before = list(clean_root.handlers)
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.addHandler(logging.NullHandler())
    first_stream, second_stream = io.StringIO(), io.StringIO()
    configure_logging(service_name="a", stream=first_stream)
    setup = configure_logging(service_name="b", stream=second_stream, level="DEBUG")
    ours = [h for h in clean_root.handlers if h not in before]
    assert len(ours) == 1
    assert clean_root.level == logging.DEBUG
    logging.getLogger("uvicorn.error").info("server started")
    uvicorn_access.info("access line replaced by ours")
    get_logger("app").debug("debug line")
    lines = [json.loads(line) for line in second_stream.getvalue().splitlines()]
    assert [(line["service_name"], line["logger"], line["message"]) for line in lines] == [
        ("b", "uvicorn.error", "server started"),
        ("b", "app", "debug line"),
    ]
    assert first_stream.getvalue() == ""
    setup.undo()
    assert clean_root.handlers == before
    assert len(uvicorn_access.handlers) == 1
    assert uvicorn_access.disabled is False
    uvicorn_access.handlers.clear()


def test_root_logger_is_untouched_until_configured() -> None:
    import subprocess

    code = (
        "import logging, todo_observability as t; t.get_logger('x'); "
        "from todo_observability import logs, asgi, metrics, tracing; "
        "print(len(logging.getLogger().handlers), logging.getLogger().level)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(logging.WARNING)]


def test_without_orjson_the_standard_json_backend_writes_the_same_line() -> None:
    import subprocess

    code = (
        "import sys, logging, json\n"
        "if sys.argv[1] == 'hide': sys.modules['orjson'] = None\n"
        "from todo_observability.logs import JsonFormatter\n"
        "f = JsonFormatter('svc')\n"
        "r = logging.getLogger('x').makeRecord('x', 20, 'f', 1, 'caf\\u00e9 %s', (1,), None, extra={'n': [1, 2.5], 'd': {'k': None}})\n"
        "r.created = 1767225600.5\n"
        "line = f.format(r); line2 = f.format(r)\n"
        "assert line == line2\n"
        "print(type(f).__mro__[1].__name__, json.dumps(json.loads(line), sort_keys=True))\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True
        ).stdout.split(" ", 1)
        for mode in ("hide", "keep")
    ]
    assert [base for base, _ in outputs] == ["JsonFormatter", "OrjsonFormatter"]
    assert outputs[0][1] == outputs[1][1]
    assert json.loads(outputs[0][1])["message"] == "café 1"
