"""One lifecycle for requests, deliveries and job triggers: the teardown runs whatever recording does."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from todo_observability import get_logger, get_request_id
from todo_observability._unit import UnitOfWork
from todo_observability.context import RequestContext
from todo_observability.dapr import Subscriptions
from todo_observability.testing import metric_value

from .helpers import client, spans

pytestmark = pytest.mark.anyio


def closed_stream() -> io.StringIO:
    """A log stream whose every write raises, as a dead log shipper's pipe does."""
    stream = io.StringIO()
    stream.close()
    return stream


@contextlib.contextmanager
def sdk_handler_only() -> Iterator[None]:
    """Leave only the SDK's JSON handler on the root logger, as in a service.

    pytest's log capture adds a handler to the root logger; with it there, the SDK's
    direct line writer stands aside for the standard path, which handles its own write
    errors. A service has no such second handler, so the direct writer is what runs.
    """
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [h for h in saved if getattr(h, "_todo_observability_handler", False)]
    assert len(root.handlers) == 1
    try:
        yield
    finally:
        root.handlers[:] = saved


def nothing_current() -> bool:
    return get_request_id() is None and not trace.get_current_span().get_span_context().is_valid


async def test_a_closed_log_stream_neither_fails_a_request_nor_leaves_it_current(
    make_observability: Any, metrics_registry: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hello(request: Any) -> PlainTextResponse:
        get_logger("app").info("inside the request")
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello)])
    obs = make_observability(app, log_stream=closed_stream())
    with sdk_handler_only():
        async with client(app) as http:
            response = await http.get("/hello")
    assert response.status_code == 200
    assert response.text == "hello"
    assert nothing_current()
    assert [span.name for span in spans(obs)] == ["GET /hello"]  # the span was ended
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/hello",
            status_code="200",
        )
        == 1
    )
    # The failed write is reported the standard library's way, on stderr.
    assert "I/O operation on closed file" in capsys.readouterr().err


async def test_a_closed_log_stream_neither_fails_a_delivery_nor_leaves_it_current(
    make_observability: Any, metrics_registry: Any
) -> None:
    subscriptions = Subscriptions(client=None)

    @subscriptions.subscribe("pubsub", "task-events")
    async def handle(message: Any) -> None:
        return None

    app = Starlette()
    obs = make_observability(app, log_stream=closed_stream())
    subscriptions.install(app)
    event = {
        "id": "m-1",
        "source": "backend",
        "type": "task.completed",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {"task_id": 1},
        "topic": "task-events",
        "pubsubname": "pubsub",
    }
    with sdk_handler_only():
        async with client(app) as http:
            response = await http.post(
                "/dapr/events/pubsub/task-events",
                content=json.dumps(event).encode(),
                headers={"content-type": "application/cloudevents+json"},
            )
    assert response.json() == {"status": "SUCCESS"}
    assert nothing_current()
    assert [span.name for span in spans(obs)] == ["task-events process"]
    processed = metric_value(
        metrics_registry,
        "messaging_process_messages_total",
        topic="task-events",
        outcome="success",
    )
    assert processed == 1


async def test_a_closed_log_stream_neither_fails_a_job_trigger_nor_leaves_it_current(
    make_observability: Any,
) -> None:
    subscriptions = Subscriptions(client=None)

    @subscriptions.job("reminder")
    async def remind(job: Any) -> None:
        return None

    app = Starlette()
    obs = make_observability(app, log_stream=closed_stream())
    subscriptions.install(app)
    with sdk_handler_only():
        async with client(app) as http:
            response = await http.post("/job/reminder-1", content=b'{"task_id": 1}')
    assert response.status_code == 200
    assert nothing_current()
    assert [span.name for span in spans(obs)] == ["reminder trigger"]


async def test_a_unit_whose_recording_raises_still_ends_its_span_and_resets_everything(
    make_observability: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = make_observability()

    class Broken(UnitOfWork):
        __slots__ = ()

        def record(self, elapsed: float) -> None:
            raise RuntimeError("a metric backend gone wrong")

    with Broken(obs.signals, RequestContext("req-1", None, obs.signals), "work") as unit:
        assert get_request_id() == "req-1"
        assert trace.get_current_span() is unit.span
    assert nothing_current()
    assert [span.name for span in spans(obs)] == ["work"]
    assert "a metric backend gone wrong" in capsys.readouterr().err


async def test_an_exception_of_the_work_is_kept_for_recording_and_raised(
    make_observability: Any,
) -> None:
    obs = make_observability()
    seen: list[BaseException | None] = []

    class Recording(UnitOfWork):
        __slots__ = ()

        def record(self, elapsed: float) -> None:
            seen.append(self.error)

    with pytest.raises(KeyError), Recording(obs.signals, RequestContext("req-2"), "work"):
        raise KeyError("lost")
    assert [type(error) for error in seen] == [KeyError]
    assert nothing_current()


async def test_probes_answer_whatever_excluded_paths_says(
    make_observability: Any, captured_logs: Any, metrics_registry: Any
) -> None:
    async def internal(request: Any) -> PlainTextResponse:
        return PlainTextResponse("internal")

    app = Starlette(routes=[Route("/internal", internal)])
    obs = make_observability(app, excluded_paths="/internal")
    async with client(app) as http:
        probes = {
            path: await http.get(path)
            for path in ("/health/live", "/health/ready", "/health/startup")
        }
        excluded = await http.get("/internal")
    assert {path: response.status_code for path, response in probes.items()} == dict.fromkeys(
        probes, 200
    )
    assert all(response.json()["status"] == "UP" for response in probes.values())
    assert excluded.text == "internal"
    # excluded_paths means "no telemetry": /internal has none; the probes, no longer excluded, do.
    assert [span.name for span in spans(obs)] == [
        "GET /health/live",
        "GET /health/ready",
        "GET /health/startup",
    ]
    assert [line["context"]["route"] for line in captured_logs.access()] == [
        "/health/live",
        "/health/ready",
        "/health/startup",
    ]
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            method="GET",
            route="/health/live",
            status_code="200",
        )
        == 1
    )
