from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from todo_observability import bind_context, get_logger
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.logs import UNRENDERABLE, JsonFormatter, configure_logging
from todo_observability.redaction import CIRCULAR, REDACTED, Redactor

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


def test_context_keeps_the_order_of_extra() -> None:
    line = render(JsonFormatter(), record(zeta=1, alpha=2, mid="m"))
    assert list(line["context"]) == ["zeta", "alpha", "mid"]  # type: ignore[call-overload]


def test_attributes_a_record_class_sets_before_the_standard_ones_are_context() -> None:
    class EarlyRecord(logging.LogRecord):
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.tenant = "acme"
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    rec = EarlyRecord("tests.logs", logging.INFO, __file__, 1, "hello", (), None)
    rec.task_id = 3
    assert render(JsonFormatter(), rec)["context"] == {"tenant": "acme", "task_id": 3}


def test_a_standard_attribute_set_again_is_still_not_context() -> None:
    rec = record(task_id=1)
    del rec.msg
    rec.msg = "again"  # now after the extras in the record's attributes
    line = render(JsonFormatter(), rec)
    assert line["message"] == "again"
    assert line["context"] == {"task_id": 1}


def test_a_timestamp_a_hair_before_the_next_second_stays_in_its_second() -> None:
    rec = record()
    rec.created = math.nextafter(1767225602.0, 0)
    assert render(JsonFormatter(), rec)["timestamp"] == "2026-01-01T00:00:01.999Z"
    rec.created = math.nextafter(1.0, 0)
    assert render(JsonFormatter(), rec)["timestamp"] == "1970-01-01T00:00:00.999Z"


def test_lines_of_successive_spans_carry_their_own_ids() -> None:
    tracer = TracerProvider().get_tracer("t")
    formatter = JsonFormatter()
    seen = []
    with tracer.start_as_current_span("outer") as outer:
        seen.append((outer, render(formatter, record())))
        with tracer.start_as_current_span("inner") as inner:
            seen.append((inner, render(formatter, record())))
        seen.append((outer, render(formatter, record())))
    no_span = render(formatter, record())
    for span, line in seen:
        ctx = span.get_span_context()
        assert (line["trace_id"], line["span_id"]) == (
            f"{ctx.trace_id:032x}",
            f"{ctx.span_id:016x}",
        )
    assert (no_span["trace_id"], no_span["span_id"]) == (None, None)


def test_a_subclass_that_serialises_its_own_way_is_honoured() -> None:
    class Prefixed(JsonFormatter):
        def serialize_log_record(self, log_record: dict[str, object]) -> str:
            return "@" + str(super().serialize_log_record(log_record))

    line = Prefixed().format(record())
    assert line.startswith("@{")
    assert json.loads(line[1:])["message"] == "hello"
    formatter = JsonFormatter()
    formatter.prefix = "json: "
    assert formatter.format(record()).startswith('json: {"timestamp":')


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
    null = logging.NullHandler()
    uvicorn_access.addHandler(null)
    # What uvicorn's access logger holds now (earlier tests of the session may have left more).
    access_before = list(uvicorn_access.handlers)
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
    assert uvicorn_access.handlers == access_before
    assert uvicorn_access.disabled is False
    uvicorn_access.removeHandler(null)


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


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("str() of this exception fails")


class _Opaque:
    """An object whose str() and repr() both fail."""

    def __repr__(self) -> str:
        raise ValueError("repr() of this object fails")

    __str__ = __repr__


def _loop() -> dict[str, object]:
    loop: dict[str, object] = {"name": "a"}
    loop["self"] = loop
    return loop


def _log_unprintable_exception(log: logging.Logger) -> None:
    try:
        raise _Unprintable
    except _Unprintable:
        log.exception("boom")


@contextlib.contextmanager
def _json_logger() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A logger writing through the SDK's formatter on a standard StreamHandler; stderr captured."""
    stream, stderr = io.StringIO(), io.StringIO()
    log = logging.getLogger("tests.logs.hostile")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stderr(stderr):
            yield log, stream, stderr
    finally:
        log.removeHandler(handler)
        log.propagate = True


HOSTILE_CALLS: dict[str, Callable[[logging.Logger], None]] = {
    "exception whose str fails": _log_unprintable_exception,
    "int dict keys": lambda log: log.info("m", extra={"d": {1: "a", 2: "b"}}),
    "tuple dict keys": lambda log: log.info("m", extra={"d": {(1, 2): "a"}}),
    "integer above 64 bits": lambda log: log.info("m", extra={"n": 2**64, "m": -(2**63) - 1}),
    "integer of too many digits": lambda log: log.info("m", extra={"n": 10**5000}),
    "lone surrogate in the message": lambda log: log.info("bad \udc80 text"),
    "lone surrogate in extra": lambda log: log.info("m", extra={"v": "\ud800", "\udfff": 1}),
    "argument whose repr fails": lambda log: log.info("value %r", _Opaque()),
    "argument whose str fails": lambda log: log.info("value %s", _Opaque()),
    "too few arguments": lambda log: log.info("value %s %s", 1),
    "extra value whose str fails": lambda log: log.info("m", extra={"o": _Opaque()}),
    "self-referential dict in extra": lambda log: log.info("m", extra={"d": _loop()}),
    "not a number": lambda log: log.info("m", extra={"f": float("nan"), "g": float("inf")}),
}


@pytest.mark.parametrize("call", HOSTILE_CALLS.values(), ids=HOSTILE_CALLS.keys())
def test_a_hostile_log_call_writes_exactly_one_valid_json_line(
    call: Callable[[logging.Logger], None],
) -> None:
    with _json_logger() as (log, stream, stderr):
        call(log)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, stderr.getvalue()
    assert json.loads(lines[0])["logger"] == "tests.logs.hostile"
    assert stderr.getvalue() == ""


def test_what_cannot_be_rendered_is_marked_and_the_rest_kept() -> None:
    with _json_logger() as (log, stream, _):
        _log_unprintable_exception(log)
        log.info("value %s", _Opaque(), extra={"kept": 1})
        log.info("m", extra={"d": {(1, 2): "a", 3: "b"}, "n": 2**70, "o": _Opaque()})
        log.info("bad \udc80 text", extra={"loop": _loop()})
    error, args, values, text = (json.loads(line) for line in stream.getvalue().splitlines())
    assert error["exception"]["message"] == UNRENDERABLE
    assert error["exception"]["type"] == "_Unprintable"
    assert error["message"] == "boom"
    assert args["message"] == f"value %s {UNRENDERABLE}"
    assert args["context"] == {"kept": 1}
    assert values["context"] == {
        "d": {"(1, 2)": "a", "3": "b"},
        "n": str(2**70),
        "o": UNRENDERABLE,
    }
    assert text["message"] == "bad \\udc80 text"
    assert text["context"] == {"loop": {"name": "a", "self": CIRCULAR}}


def test_a_self_referential_extra_does_not_raise_into_the_caller_on_the_root_path(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    setup = configure_logging(stream=stream)
    try:
        get_logger("app").info("loop", extra={"d": _loop()})
    finally:
        setup.undo()
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["context"] == {"d": {"name": "a", "self": CIRCULAR}}
    assert "Logging error" not in capsys.readouterr().err


def test_a_closed_stream_on_the_standard_path_falls_back_to_handle_error(
    clean_root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    stream.close()
    setup = configure_logging(stream=stream)
    failed: list[logging.LogRecord] = []
    monkeypatch.setattr(setup.handler, "handleError", failed.append)
    log = get_logger("app")
    try:
        log.info("plain")
        log.info("hostile", extra={"d": _loop(), "o": _Opaque()})
        _log_unprintable_exception(log)
    finally:
        setup.undo()
    assert [record.getMessage() for record in failed] == ["plain", "hostile", "boom"]


_KEYS = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.floats(),
    st.none(),
    st.booleans(),
)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.builds(_Opaque),
    st.builds(_Unprintable),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(_KEYS, children, max_size=3),
        st.sets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(st.text(max_size=6).map(lambda k: f"k_{k}"), _VALUES, max_size=4),
    looped=st.booleans(),
    message=st.text(max_size=30),
    args=st.lists(_LEAVES, max_size=3),
)
def test_any_extra_message_and_args_make_exactly_one_valid_json_line(
    extra: dict[str, object], looped: bool, message: str, args: list[object]
) -> None:
    if looped:
        extra["k_loop"] = extra
    with _json_logger() as (log, stream, stderr):
        log.warning(message, *args, extra=extra)
    # Split on "\n" only, as a log shipper does: U+2028 and friends are valid inside JSON text.
    line, end = stream.getvalue().split("\n")
    assert end == ""
    assert isinstance(json.loads(line), dict)
    assert stderr.getvalue() == ""


def test_without_orjson_hostile_calls_still_write_one_valid_line() -> None:
    import subprocess

    code = (
        "import sys, io, logging, json\n"
        "sys.modules['orjson'] = None\n"
        "from todo_observability.logs import JsonFormatter\n"
        "s = io.StringIO(); h = logging.StreamHandler(s); h.setFormatter(JsonFormatter('svc'))\n"
        "log = logging.getLogger('x'); log.addHandler(h); log.propagate = False; log.setLevel(20)\n"
        "d = {}; d['d'] = d\n"
        "log.info('m', extra={'t': {(1, 2): 1}, 'n': 2**70, 'f': float('nan'), 'd': d})\n"
        "log.info('bad \\udc80')\n"
        "lines = s.getvalue().split('\\n'); assert len(lines) == 3 and not lines[2], lines\n"
        "print(json.dumps(json.loads(lines[0])['context'], sort_keys=True))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "d": {"d": CIRCULAR},
        "f": None,
        "n": str(2**70),  # as with orjson: the line is the same with either backend
        "t": {"(1, 2)": 1},
    }
    assert out.stderr == ""


def test_httpx_request_lines_are_quieted_and_scrubbed_when_wanted(
    clean_root: logging.Logger,
) -> None:
    import httpx

    url = "http://svc:hunter2-canary@upstream/status?api_key=hunter2-canary"
    httpx_logger = logging.getLogger("httpx")
    assert httpx_logger.level == logging.NOTSET

    def call() -> None:
        with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as http:
            http.get(url)

    quiet = io.StringIO()
    setup = configure_logging(stream=quiet)
    try:
        call()  # the root is at INFO, httpx's own INFO line names every URL in full
    finally:
        setup.undo()
    assert quiet.getvalue() == ""
    assert httpx_logger.level == logging.NOTSET

    httpx_logger.setLevel(logging.INFO)  # the user asks for those lines: they get them, scrubbed
    wanted = io.StringIO()
    setup = configure_logging(stream=wanted)
    try:
        call()
    finally:
        setup.undo()
        httpx_logger.setLevel(logging.NOTSET)
    [line] = [json.loads(text) for text in wanted.getvalue().splitlines()]
    assert line["logger"] == "httpx"
    assert "hunter2-canary" not in line["message"]
    assert f"api_key={REDACTED}" in line["message"]
