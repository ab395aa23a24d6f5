"""Dead-letter topics (DAPR.md §2.5): what triggers them and what is republished."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar

from .conftest import APP_TRACEPARENT, FakeApp, SidecarFactory, only, publish, subscription

pytestmark = pytest.mark.anyio

DLQ = "orders-dlq"


def app_with_dlq(dlq_metadata: dict[str, str] | None = None, **extra: Any) -> FakeApp:
    return FakeApp(
        [
            subscription(deadLetterTopic=DLQ, **extra),
            subscription(topic=DLQ, route="/dead-letters", metadata=dlq_metadata or {}),
        ]
    )


async def publish_plain(sidecar: Sidecar) -> None:
    await publish(sidecar, {"task": 1})


async def publish_expired(sidecar: Sidecar) -> None:
    event = {"id": "old", "expiration": "2001-01-01T00:00:00Z", "data": 1}
    await publish(
        sidecar,
        content=json.dumps(event).encode(),
        headers={"content-type": "application/cloudevents+json"},
    )


async def publish_undecodable(sidecar: Sidecar) -> None:
    await publish(sidecar, content=b"not a cloudevent", metadata={"rawPayload": "true"})


@pytest.mark.parametrize(
    ("answer", "send", "reason", "extra"),
    [
        pytest.param(
            Response(status_code=500),
            publish_plain,
            "retries_exhausted",
            {},
            id="retries-exhausted",
        ),
        pytest.param(JSONResponse({"status": "DROP"}), publish_plain, "drop", {}, id="DROP"),
        pytest.param(Response(status_code=404), publish_plain, "not_found", {}, id="404"),
        pytest.param(
            None,
            publish_plain,
            "no_route",
            {"route": "", "routes": {"rules": [{"match": 'event.type == "other"', "path": "/x"}]}},
            id="no-matching-route",
        ),
        pytest.param(None, publish_expired, "expired", {}, id="expired"),
        pytest.param(
            None,
            publish_undecodable,
            "undecodable",
            # not a CloudEvent for the dead-letter subscriber either: it reads raw payloads
            {"dlq_metadata": {"rawPayload": "true"}},
            id="undecodable-cloudevent",
        ),
        pytest.param(
            None,
            publish_plain,
            "undecodable",
            {"metadata": {"rawPayload": "yes please"}},
            id="bad-rawPayload-metadata",
        ),
    ],
)
async def test_these_send_the_message_to_the_dead_letter_topic(
    make_sidecar: SidecarFactory,
    broker: Broker,
    answer: Response | None,
    send: Callable[[Sidecar], Awaitable[None]],
    reason: str,
    extra: dict[str, Any],
) -> None:
    app = app_with_dlq(**extra)
    if answer is not None:
        app.answer("/orders", answer)
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=1))
    await send(sidecar)
    await broker.idle()
    original = sidecar.published[0]
    result = next(r for r in sidecar.results if r.topic == "orders")
    assert (result.outcome, result.reason, result.dead_letter_topic) == (
        "dead_lettered",
        reason,
        DLQ,
    )
    dead = only(broker.messages("pubsub", DLQ))
    assert dead.value == original.value  # the original bytes, unchanged
    if reason == "expired":
        # still expired when consumed from the dead-letter topic: dropped there too
        assert app.received("/dead-letters") == []
        assert next(r for r in sidecar.results if r.topic == DLQ).reason == "expired"
    elif "dlq_metadata" in extra:
        event = only(app.received("/dead-letters")).json()
        assert base64.b64decode(event["data_base64"]) == original.value
    else:
        assert only(app.received("/dead-letters")).body == original.value


async def test_404_is_dropped_without_dead_lettering_before_1_17(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = app_with_dlq()
    app.answer("/orders", Response(status_code=404))
    sidecar = await make_sidecar(app, runtime_version="1.16.4")
    await publish(sidecar, {})
    await broker.idle()
    result = only(sidecar.results)
    assert (result.outcome, result.reason) == ("dropped", "not_found")
    assert broker.messages("pubsub", DLQ) == []


async def test_the_dead_letter_keeps_the_original_metadata_and_cloudevent(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = app_with_dlq()
    app.answer("/orders", JSONResponse({"status": "DROP"}))
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"task": 1}, headers={"traceparent": APP_TRACEPARENT})
    await publish(sidecar, {"task": 2}, metadata={"partitionKey": "user-7", "custom": "c"})
    await broker.idle()
    second = sidecar.published[1]
    dead = broker.messages("pubsub", DLQ)[1]
    # the original metadata is the publish metadata: consumer keys and headers become headers
    assert dead.headers["__topic"] == "orders"
    assert dead.headers["__offset"] == "1"
    assert dead.headers["pubsubName"] == "pubsub"
    assert dead.headers["custom"] == "c"
    assert dead.key == "user-7"  # the original key, via __key
    received = app.received("/dead-letters")
    first_event = received[0].json()
    # the handler sees the original topic and offset, and the original trace context
    assert received[1].headers["__topic"] == "orders"
    assert received[1].headers["__offset"] == "1"
    assert received[1].headers["custom"] == "c"
    assert first_event["topic"] == "orders"
    assert first_event["id"] == json.loads(sidecar.published[0].value)["id"]
    assert first_event["traceparent"] == json.loads(sidecar.published[0].value)["traceparent"]
    # nothing about the failure is added
    assert set(dead.headers) - set(second.headers) == {
        "__key",
        "__topic",
        "__offset",
        "__partition",
        "__timestamp",
        "pubsubName",
    }


async def test_a_failed_dead_letter_publish_hands_the_message_back_to_the_broker(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = app_with_dlq()
    app.answer("/orders", Response(status_code=500))
    sidecar = await make_sidecar(app)
    await publish(sidecar, {})
    sidecar.fail_next_publishes(2)  # the dead-letter republishes fail twice
    await broker.idle()
    assert [a.redelivery for a in sidecar.deliveries if a.topic == "orders"] == [0, 1, 2]
    assert len(broker.messages("pubsub", DLQ)) == 1
    assert next(r for r in sidecar.results if r.topic == "orders").outcome == "dead_lettered"


async def test_without_dead_letter_topic_a_drop_is_just_dropped(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    app.answer("/orders", JSONResponse({"status": "DROP"}))
    sidecar = await make_sidecar(app)
    await publish(sidecar, {})
    await broker.idle()
    assert only(sidecar.results).outcome == "dropped"
    assert broker.messages("pubsub", DLQ) == []


async def test_an_undecodable_message_without_dead_letter_topic_blocks_its_partition(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    await publish(sidecar, content=b"garbage", metadata={"rawPayload": "true"})
    await broker.wait_for(lambda: any("redelivered 3 time" in b for b in broker.busy()))
    assert app.received("/orders") == []
    assert sidecar.results == []
