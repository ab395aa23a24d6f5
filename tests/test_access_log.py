"""The access line: the direct path to our handler writes exactly what the standard logging path writes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from todo_observability._observability import Observability
from todo_observability.logs import _emit_trusted
from todo_observability.testing import LogCapture

from .helpers import client

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]


@contextlib.contextmanager
def only_our_handler() -> Iterator[None]:
    """Take pytest's capture handlers off the root logger, as in production."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers[:] = [h for h in saved if getattr(h, "_todo_observability_handler", False)]
    try:
        yield
    finally:
        root.handlers[:] = saved


@pytest.fixture
def standard_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each access line that went through Logger.handle (the standard path)."""
    calls: list[str] = []
    access = logging.getLogger("todo_observability.access")
    original = access.handle

    def handle(record: logging.LogRecord) -> None:
        calls.append(record.getMessage())
        original(record)

    monkeypatch.setattr(access, "handle", handle)
    return calls


def app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", lambda request: PlainTextResponse("x"))])


async def request_once(application: Starlette) -> None:
    async with client(application) as http:
        await http.get("/items/1", headers={"X-Request-ID": "same", "User-Agent": "ua"})


async def test_direct_and_standard_paths_write_the_same_line(
    make_observability: Factory, captured_logs: LogCapture, standard_path_calls: list[str]
) -> None:
    application = app()
    make_observability(application, service_name="svc")
    with only_our_handler():
        await request_once(application)
    assert standard_path_calls == []
    await request_once(application)  # pytest's capture handler is on the root logger again
    assert standard_path_calls == ["GET /items/{item_id} 200"]
    direct, standard = captured_logs.access()
    for line in (direct, standard):
        line.pop("timestamp")
        line["context"].pop("duration_ms")
        line.pop("trace_id")
        line.pop("span_id")
    assert direct == standard
    assert direct["message"] == "GET /items/{item_id} 200"
    assert direct["context"] == {
        "method": "GET",
        "route": "/items/{item_id}",
        "path": "/items/1",
        "status": 200,
        "client": "127.0.0.1",
        "user_agent": "ua",
    }


def test_direct_path_declines_when_anything_else_would_see_the_record(
    make_observability: Factory,
) -> None:
    make_observability()
    with only_our_handler():
        check_declines()


def check_declines() -> None:
    logger = logging.getLogger("todo_observability.access")
    assert _emit_trusted(logger, logging.INFO, "m", {}) is True
    logger.addFilter(lambda record: True)
    try:
        assert _emit_trusted(logger, logging.INFO, "m", {}) is False
    finally:
        logger.filters.clear()
    logger.addHandler(logging.NullHandler())
    try:
        assert _emit_trusted(logger, logging.INFO, "m", {}) is False
    finally:
        logger.handlers.clear()
    ours = next(
        h for h in logging.getLogger().handlers if getattr(h, "_todo_observability_handler", False)
    )
    ours.setLevel(logging.ERROR)
    assert _emit_trusted(logger, logging.INFO, "m", {}) is False
    ours.setLevel(logging.NOTSET)
    logger.propagate = False
    try:
        assert _emit_trusted(logger, logging.INFO, "m", {}) is False  # no handler at all
    finally:
        logger.propagate = True


async def test_access_log_can_be_turned_off(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    application = app()
    make_observability(application, access_log=False)
    async with client(application) as http:
        await http.get("/items/1")
    assert captured_logs.access() == []


async def test_access_logger_level_is_respected(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    application = app()
    make_observability(application)
    logging.getLogger("todo_observability.access").setLevel(logging.WARNING)
    try:
        async with client(application) as http:
            await http.get("/items/1")
    finally:
        logging.getLogger("todo_observability.access").setLevel(logging.NOTSET)
    assert captured_logs.access() == []


async def test_log_capture_can_redirect_an_installed_handler(make_observability: Factory) -> None:
    import io

    stream = io.StringIO()
    application = app()
    make_observability(application, log_stream=stream)
    capture = LogCapture()
    capture.install()
    try:
        async with client(application) as http:
            await http.get("/items/2")
    finally:
        capture.uninstall()
    assert [line["context"]["path"] for line in capture.access()] == ["/items/2"]
    assert stream.getvalue() == ""
    with pytest.raises(AssertionError, match="log line is not JSON"):
        capture.write("plain text\n")


async def test_failing_probe_that_raises_still_answers_and_is_logged(
    make_observability: Factory, captured_logs: LogCapture
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("probe crashed")

    from todo_observability.asgi import ObservabilityMiddleware

    obs = make_observability(excluded_paths="/ping")
    middleware = ObservabilityMiddleware(broken, observability=obs)
    async with client(middleware, raise_app_exceptions=False) as http:
        response = await http.get("/ping")
    assert response.status_code == 500
    assert "x-request-id" in response.headers
    [line] = captured_logs.access()
    assert (line["level"], line["context"]["status"]) == ("WARNING", 500)
