"""The handler wrapper: outcomes, trace context restoration, duplicates, attempts, metrics, logs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from tests.helpers import client
from todo_observability.dapr import Drop, Message, Retry, Subscriptions
from todo_observability.exceptions import ConfigurationError
from todo_observability.testing import metric_value

pytestmark = pytest.mark.anyio

PRODUCER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SIDECAR = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
ROUTE = "/dapr/events/pubsub/task-events"


def cloudevent(event_id: str = "m-1", data: Any = None, **extra: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "source": "backend",
        "type": "com.dapr.event.sent",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {"task_id": 1} if data is None else data,
        "topic": "task-events",
        "pubsubname": "pubsub",
        "traceid": PRODUCER,
        "traceparent": PRODUCER,
        "tracestate": "",
        "time": "2026-11-26T10:00:00Z",
    }
    event.update(extra)
    return event


def app_with(subscriptions: Subscriptions, make_observability: Any) -> Any:
    app = Starlette()
    make_observability(app, service_name="worker")
    subscriptions.install(app)
    return app


async def deliver(app: Any, event: Any, *, route: str = ROUTE, **headers: str) -> dict[str, Any]:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    async with client(app) as http:
        response = await http.post(
            route,
            content=body,
            headers={"content-type": "application/cloudevents+json", **headers},
        )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def consumer_spans(captured_spans: Any) -> list[Any]:
    return [span for span in captured_spans.spans if span.kind is SpanKind.CONSUMER]


async def test_a_returning_handler_is_success_and_sees_the_message(make_observability: Any) -> None:
    seen: list[Message] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        seen.append(message)

    app = app_with(subs, make_observability)
    answer = await deliver(app, cloudevent(), __partition="2", __offset="17", __key="user-1")
    assert answer == {"status": "SUCCESS"}
    [message] = seen
    assert (message.id, message.topic, message.subscribed_topic, message.pubsub) == (
        "m-1",
        "task-events",
        "task-events",
        "pubsub",
    )
    assert message.data == {"task_id": 1}
    assert message.attempt == 1
    assert not message.is_dead_letter
    assert message.headers["__partition"] == "2"
    assert message.time is not None
    assert message.time.year == 2026


@pytest.mark.parametrize(
    ("raised", "status", "reason"),
    [
        (Retry("smtp_unavailable", "connection refused"), "RETRY", "smtp_unavailable"),
        (RuntimeError("boom"), "RETRY", "RuntimeError"),
        (Drop("invalid_rrule", "FREQ=SOMETIMES"), "DROP", "invalid_rrule"),
        (KeyError("task_id"), "DROP", "KeyError"),  # listed in drop_on below
    ],
)
async def test_failures_map_to_explicit_outcomes(
    make_observability: Any,
    captured_logs: Any,
    captured_spans: Any,
    metrics_registry: Any,
    raised: Exception,
    status: str,
    reason: str,
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events", drop_on=(KeyError,))
    async def handle(message: Message) -> None:
        raise raised

    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent()) == {"status": status}
    assert (
        metric_value(
            metrics_registry,
            "messaging_process_messages_total",
            **{"topic": "task-events", "outcome": status.lower()},
        )
        == 1
    )
    [span] = consumer_spans(captured_spans)
    assert span.attributes["error.type"] == reason
    assert span.status.status_code.name == "ERROR"
    [line] = [line for line in captured_logs.lines if line["context"].get("message_id") == "m-1"]
    assert line["context"]["reason"] == reason
    assert line["context"]["outcome"] == status
    assert line["level"] in ("WARNING", "ERROR")


async def test_a_pydantic_validation_error_is_a_drop(make_observability: Any) -> None:
    from pydantic import BaseModel

    class Task(BaseModel):
        task_id: int

    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        Task.model_validate(message.data)

    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent(data={"task_id": "not a number"})) == {"status": "DROP"}


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (json.dumps({"id": "x", "source": "s", "type": "t"}).encode(), "'specversion'"),
        (json.dumps({**cloudevent(), "specversion": "0.3"}).encode(), "0.3"),
        (
            json.dumps(
                {**{k: v for k, v in cloudevent().items() if k != "data"}, "data_base64": "%%%"}
            ).encode(),
            "base64",
        ),
    ],
)
async def test_a_malformed_event_is_dropped_with_what_was_wrong(
    make_observability: Any, captured_logs: Any, body: bytes, what: str
) -> None:
    called: list[Message] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        called.append(message)

    app = app_with(subs, make_observability)
    assert await deliver(app, body) == {"status": "DROP"}
    assert called == []
    [line] = [line for line in captured_logs.lines if line["context"].get("reason") == "malformed"]
    assert what in line["context"]["detail"]


async def test_data_base64_is_decoded_and_parsed_when_json(make_observability: Any) -> None:
    seen: list[Any] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        seen.append(message.data)

    app = app_with(subs, make_observability)
    event = {k: v for k, v in cloudevent().items() if k != "data"}
    event["data_base64"] = base64.b64encode(b'{"a": 1}').decode()
    await deliver(app, event)
    event["datacontenttype"] = "application/octet-stream"
    event["id"] = "m-2"
    await deliver(app, event)
    assert seen == [{"a": 1}, b'{"a": 1}']


async def test_header_traceparent_is_the_parent_and_the_producer_is_linked(
    make_observability: Any, captured_spans: Any
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = app_with(subs, make_observability)
    await deliver(app, cloudevent(), traceparent=SIDECAR)
    [span] = consumer_spans(captured_spans)
    assert span.name == "task-events process"
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    [link] = span.links
    assert f"{link.context.span_id:016x}" == "b7ad6b7169203331"
    assert span.attributes["todo_observability.trace_parent_source"] == "header"
    # The delivery is not also an HTTP server span: one span per message.
    assert [s for s in captured_spans.spans if s.kind is SpanKind.SERVER] == []


@pytest.mark.parametrize(
    ("fields", "parent_span", "source"),
    [
        ({}, "b7ad6b7169203331", "cloudevent.traceparent"),
        ({"traceparent": ""}, "b7ad6b7169203331", "cloudevent.traceid"),
        (
            {"traceparent": "garbage", "traceid": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},
            None,
            "none",
        ),
    ],
)
async def test_without_a_header_the_cloudevent_context_is_the_parent(
    make_observability: Any,
    captured_spans: Any,
    fields: dict[str, str],
    parent_span: str | None,
    source: str,
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = app_with(subs, make_observability)
    await deliver(app, cloudevent(**fields))
    [span] = consumer_spans(captured_spans)
    assert span.attributes["todo_observability.trace_parent_source"] == source
    if parent_span is None:
        assert span.parent is None
    else:
        assert f"{span.parent.span_id:016x}" == parent_span
        assert span.links == ()


async def test_baggage_restores_request_and_user_ids(
    make_observability: Any, captured_logs: Any
) -> None:
    seen: list[tuple[Any, Any]] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        from todo_observability import get_request_id, get_user_id

        seen.append((get_request_id(), get_user_id()))

    app = app_with(subs, make_observability)
    await deliver(app, cloudevent(), baggage="request_id=req-42,user_id=alice")
    assert seen == [("req-42", "alice")]
    [line] = [line for line in captured_logs.lines if line["message"] == "message processed"]
    assert (line["request_id"], line["user_id"]) == ("req-42", "alice")
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


async def test_repeated_propagation_fields_of_a_delivery_are_combined(
    make_observability: Any, captured_spans: Any
) -> None:
    # Broker headers arrive as separate fields; RFC 9110 section 5.3 makes each one list.
    seen: list[tuple[Any, Any]] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        from todo_observability import get_request_id, get_user_id

        seen.append((get_request_id(), get_user_id()))

    app = app_with(subs, make_observability)
    async with client(app) as http:
        response = await http.post(
            ROUTE,
            content=json.dumps(cloudevent()).encode(),
            headers=[
                ("content-type", "application/cloudevents+json"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("baggage", "request_id=req-42"),
                ("baggage", "user_id=alice"),
            ],
        )
    assert response.json() == {"status": "SUCCESS"}
    assert seen == [("req-42", "alice")]
    [span] = consumer_spans(captured_spans)
    assert span.context.trace_state.to_header() == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


async def test_a_repeated_traceparent_header_of_a_delivery_is_not_the_parent(
    make_observability: Any, captured_spans: Any
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = app_with(subs, make_observability)
    async with client(app) as http:
        await http.post(
            ROUTE,
            content=json.dumps(cloudevent()).encode(),
            headers=[
                ("content-type", "application/cloudevents+json"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("traceparent", "00-11111111111111111111111111111111-b7ad6b7169203331-01"),
            ],
        )
    [span] = consumer_spans(captured_spans)
    # Neither header field names the parent: the CloudEvent's own traceparent does.
    assert span.attributes["todo_observability.trace_parent_source"] == "cloudevent.traceparent"
    assert f"{span.context.trace_id:032x}" != "11111111111111111111111111111111"


async def test_a_duplicate_is_acknowledged_without_running_the_handler(
    make_observability: Any, metrics_registry: Any
) -> None:
    calls: list[str] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        calls.append(message.id)

    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent()) == {"status": "SUCCESS"}
    assert await deliver(app, cloudevent()) == {"status": "SUCCESS"}
    assert calls == ["m-1"]
    assert (
        metric_value(
            metrics_registry, "messaging_duplicate_messages_total", **{"topic": "task-events"}
        )
        == 1
    )
    assert (
        metric_value(
            metrics_registry,
            "messaging_process_messages_total",
            **{"topic": "task-events", "outcome": "success"},
        )
        == 1
    )


async def test_attempts_count_redeliveries_and_a_retried_message_can_succeed(
    make_observability: Any,
) -> None:
    attempts: list[int] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt < 3:
            raise Retry("not_yet")

    app = app_with(subs, make_observability)
    statuses = [(await deliver(app, cloudevent()))["status"] for _ in range(4)]
    assert statuses == ["RETRY", "RETRY", "SUCCESS", "SUCCESS"]
    assert attempts == [1, 2, 3]  # the fourth delivery was a duplicate


async def test_a_message_being_processed_elsewhere_is_retried(make_observability: Any) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    assert subs.idempotency is not None
    await subs.idempotency.claim("pubsub/task-events/m-1")
    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent()) == {"status": "RETRY"}


async def test_sync_handlers_run_in_a_thread(make_observability: Any) -> None:
    import threading

    threads: list[str] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    def handle(message: Message) -> None:
        threads.append(threading.current_thread().name)

    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent()) == {"status": "SUCCESS"}
    assert threads
    assert threads[0] != threading.main_thread().name


async def test_metrics_of_a_success(make_observability: Any, metrics_registry: Any) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = app_with(subs, make_observability)
    await deliver(app, cloudevent())
    labels = {"topic": "task-events"}
    assert metric_value(metrics_registry, "messaging_process_duration_seconds_count", **labels) == 1
    assert (
        metric_value(metrics_registry, "messaging_end_to_end_latency_seconds_count", **labels) == 1
    )
    assert metric_value(metrics_registry, "messaging_messages_in_flight", **labels) == 0
    # Deliveries are not counted as HTTP requests (one pass, one set of metrics).
    assert (
        metric_value(
            metrics_registry,
            "http_server_requests_total",
            **{"method": "POST", "route": ROUTE, "status_code": "200"},
        )
        == 0
    )


def test_outcome_series_exist_at_zero_once_installed(
    make_observability: Any, metrics_registry: Any
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events", dead_letter_topic="task-events-dlq")
    async def handle(message: Message) -> None:
        pass

    subs.park_dead_letters("pubsub", "task-events-dlq")
    app_with(subs, make_observability)
    for topic in ("task-events", "task-events-dlq"):
        for outcome in ("success", "retry", "drop"):
            labels = {"topic": topic, "outcome": outcome}
            value = metrics_registry.get_sample_value("messaging_process_messages_total", labels)
            assert value == 0.0, (labels, value)


async def test_dapr_subscribe_lists_rules_defaults_dead_letters_and_bulk(
    make_observability: Any,
) -> None:
    subs = Subscriptions()

    @subs.subscribe(
        "pubsub", "task-events", match='event.type == "task.completed"', dead_letter_topic="dlq"
    )
    async def completed(message: Message) -> None:
        pass

    @subs.subscribe("pubsub", "task-events", dead_letter_topic="dlq")
    async def other(message: Message) -> None:
        pass

    @subs.subscribe(
        "pubsub", "reminders", metadata={"rawPayload": "false"}, bulk={"maxMessagesCount": 10}
    )
    async def reminders(message: Message) -> None:
        pass

    subs.park_dead_letters("pubsub", "dlq")
    app = app_with(subs, make_observability)
    async with client(app) as http:
        listed = (await http.get("/dapr/subscribe")).json()
    assert listed == [
        {
            "pubsubname": "pubsub",
            "topic": "task-events",
            "routes": {
                "rules": [
                    {
                        "match": 'event.type == "task.completed"',
                        "path": "/dapr/events/pubsub/task-events/completed",
                    }
                ],
                "default": "/dapr/events/pubsub/task-events",
            },
            "deadLetterTopic": "dlq",
        },
        {
            "pubsubname": "pubsub",
            "topic": "reminders",
            "routes": {"default": "/dapr/events/pubsub/reminders"},
            "metadata": {"rawPayload": "false"},
            "bulkSubscribe": {"enabled": True, "maxMessagesCount": 10},
        },
        {"pubsubname": "pubsub", "topic": "dlq", "routes": {"default": "/dapr/events/pubsub/dlq"}},
    ]


def test_conflicting_declarations_are_refused_with_the_fix() -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "t")
    async def first(message: Message) -> None:
        pass

    with pytest.raises(ConfigurationError, match="two default handlers"):

        @subs.subscribe("pubsub", "t", route="/other")
        async def second(message: Message) -> None:
            pass

    with pytest.raises(ConfigurationError, match="used by two subscriptions"):
        subs.park_dead_letters("pubsub", "x", route="/dapr/events/pubsub/t")
    with pytest.raises(ConfigurationError, match="maxMessagesCount"):
        subs.subscribe("pubsub", "u", bulk={"max": 1})(first)
    with pytest.raises(ConfigurationError, match="no '-'"):
        subs.job("reminder-1")


async def test_a_dead_letter_topic_nobody_parks_is_warned_about(
    make_observability: Any, captured_logs: Any
) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events", dead_letter_topic="task-events-dlq")
    async def handle(message: Message) -> None:
        pass

    @subs.subscribe(
        "pubsub", "other", dead_letter_topic="elsewhere-dlq", dead_letters_elsewhere=True
    )
    async def handle_other(message: Message) -> None:
        pass

    app_with(subs, make_observability)
    warnings = [line for line in captured_logs.lines if line["level"] == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0]["context"]["dead_letter_topic"] == "task-events-dlq"
    assert "park_dead_letters" in warnings[0]["context"]["fix"]


async def test_the_app_api_token_is_required_when_set(make_observability: Any) -> None:
    subs = Subscriptions(app_api_token="s3cret")

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = app_with(subs, make_observability)
    body = json.dumps(cloudevent()).encode()
    async with client(app) as http:
        refused = await http.post(ROUTE, content=body)
        accepted = await http.post(ROUTE, content=body, headers={"dapr-api-token": "s3cret"})
        listing = await http.get("/dapr/subscribe")
    assert refused.status_code == 401
    assert "APP_API_TOKEN" in refused.json()["error"]
    assert accepted.json() == {"status": "SUCCESS"}
    assert listing.status_code == 401


async def test_bulk_deliveries_answer_a_status_per_entry(make_observability: Any) -> None:
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events", bulk=True)
    async def handle(message: Message) -> None:
        if message.data.get("poison"):
            raise Drop("poison")

    app = app_with(subs, make_observability)
    envelope = {
        "id": "b-1",
        "type": "com.dapr.event.sent.bulk",
        "topic": "task-events",
        "pubsubname": "pubsub",
        "metadata": {},
        "entries": [
            {
                "entryId": "e1",
                "event": cloudevent("m-1"),
                "metadata": {},
                "contentType": "application/cloudevents+json",
            },
            {
                "entryId": "e2",
                "event": cloudevent("m-2", {"poison": True}),
                "metadata": {},
                "contentType": "application/cloudevents+json",
            },
        ],
    }
    async with client(app) as http:
        response = await http.post(ROUTE, json=envelope)
    assert response.json() == {
        "statuses": [{"entryId": "e1", "status": "SUCCESS"}, {"entryId": "e2", "status": "DROP"}]
    }


async def test_each_app_records_into_its_own_observability(make_observability: Any) -> None:
    from prometheus_client import CollectorRegistry

    apps, registries = [], []
    for name in ("first", "second"):
        subs = Subscriptions()

        @subs.subscribe("pubsub", "task-events")
        async def handle(message: Message) -> None:
            pass

        app = Starlette()
        registry = CollectorRegistry()
        make_observability(app, service_name=name, registry=registry)
        subs.install(app)
        apps.append(app)
        registries.append(registry)
    await deliver(apps[0], cloudevent("m-1"))
    labels = {"topic": "task-events", "outcome": "success"}
    assert metric_value(registries[0], "messaging_process_messages_total", **labels) == 1
    assert metric_value(registries[1], "messaging_process_messages_total", **labels) == 0


async def test_an_object_with_an_async_call_is_awaited_on_the_loop(make_observability: Any) -> None:
    import threading

    class Handler:
        def __init__(self) -> None:
            self.threads: list[str] = []

        async def __call__(self, message: Message) -> None:
            self.threads.append(threading.current_thread().name)

    handler = Handler()
    subs = Subscriptions()
    subs.subscribe("pubsub", "task-events")(handler)
    app = app_with(subs, make_observability)
    assert await deliver(app, cloudevent()) == {"status": "SUCCESS"}
    assert handler.threads == [threading.main_thread().name]


async def test_sdk_routes_are_labelled_by_template_in_fastapi_apps(
    make_observability: Any, metrics_registry: Any
) -> None:
    from fastapi import FastAPI

    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        pass

    app = FastAPI()
    make_observability(app, service_name="worker")
    subs.install(app)
    async with client(app) as http:
        assert (await http.get("/dapr/subscribe")).status_code == 200
        assert (await http.get("/dapr/dead-letters/pubsub/t/1")).status_code == 404
    for route, status in (("/dapr/subscribe", "200"), ("/dapr/dead-letters/{park_id}", "404")):
        labels = {"method": "GET", "route": route, "status_code": status}
        assert metric_value(metrics_registry, "http_server_requests_total", **labels) == 1
