"""Delivery to an HTTP subscriber (DAPR.md §1.5, §2.2): request, headers, trace, ordering."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from todo_observability.testing.sidecar import Broker

from .conftest import (
    APP_TRACEPARENT,
    TRACE_ID,
    FakeApp,
    SidecarFactory,
    by_name,
    only,
    parent_span_id,
    publish,
    subscription,
)

pytestmark = pytest.mark.anyio


async def test_delivery_posts_the_stored_bytes_as_cloudevents_json(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"task": 7})
    await broker.idle()
    request = only(app.received("/orders"))
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.body == sidecar.published[0].value
    assert request.json()["data"] == {"task": 7}


async def test_delivery_headers_are_the_message_metadata(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {}, metadata={"partitionKey": "user-7", "custom-header": "v"})
    await broker.idle()
    request = only(app.received("/orders"))
    record = sidecar.published[0]
    assert request.headers["pubsubname"] == "pubsub"
    assert request.headers["__key"] == "user-7"
    assert request.headers["__topic"] == "orders"
    assert request.headers["__partition"] == "0"
    assert request.headers["__offset"] == "0"
    assert request.headers["__timestamp"] == str(record.timestamp_ms)
    assert request.headers["custom-header"] == "v"
    assert request.headers["partitionkey"] == "user-7"  # the source adds it as a header too
    attempt = only(sidecar.deliveries)
    assert attempt.headers["pubsubName"] == "pubsub"


async def test_delivery_traceparent_is_a_pubsub_span_child_of_the_cloudevent(
    make_sidecar: SidecarFactory, broker: Broker, spans: InMemorySpanExporter
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {}, headers={"traceparent": APP_TRACEPARENT})
    await broker.idle()
    request = only(app.received("/orders"))
    event = request.json()
    delivery = only(by_name(spans, "pubsub/orders"))
    assert delivery.kind is SpanKind.CLIENT
    assert delivery.parent is not None
    assert f"{delivery.parent.span_id:016x}" == parent_span_id(event["traceparent"])
    assert request.headers["traceparent"] == f"00-{TRACE_ID}-{delivery.context.span_id:016x}-01"
    assert "tracestate" not in request.headers  # the CE tracestate is not read


async def test_delivery_falls_back_to_the_cloudevent_traceid(
    make_sidecar: SidecarFactory, broker: Broker, spans: InMemorySpanExporter
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    producer = f"00-{'1' * 32}-{'2' * 16}-01"
    event = {"id": "e1", "traceid": producer, "data": 1}
    await publish(
        sidecar,
        content=json.dumps(event).encode(),
        metadata={"rawPayload": "true"},  # stored as is: a CE with traceid but no traceparent
    )
    await broker.idle()
    delivery = only(by_name(spans, "pubsub/orders"))
    assert delivery.parent is not None
    assert f"{delivery.parent.span_id:016x}" == "2" * 16
    assert only(app.received("/orders")).headers["traceparent"].startswith(f"00-{'1' * 32}-")


async def test_without_trace_fields_in_the_event_the_record_headers_are_the_parent(
    make_sidecar: SidecarFactory, broker: Broker, spans: InMemorySpanExporter
) -> None:
    app = FakeApp([subscription(metadata={"rawPayload": "true"})])
    sidecar = await make_sidecar(app)
    producer = f"00-{'1' * 32}-{'2' * 16}-01"
    await publish(
        sidecar,
        content=b"plain bytes",
        metadata={"rawPayload": "true", "traceparent": producer},
    )
    await broker.idle()
    request = only(app.received("/orders"))
    event = request.json()
    # rawPayload subscription: daprd builds the envelope, with the trace fields of the metadata
    assert base64.b64decode(event["data_base64"]) == b"plain bytes"
    assert event["datacontenttype"] == "application/octet-stream"
    assert event["traceparent"] == producer
    delivery = only(by_name(spans, "pubsub/orders"))
    assert delivery.parent is not None
    assert f"{delivery.parent.span_id:016x}" == "2" * 16
    assert request.headers["traceparent"] != producer


async def test_tracing_off_forwards_a_traceparent_record_header(
    make_sidecar: SidecarFactory, broker: Broker, spans: InMemorySpanExporter
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app, sampling_rate=0)
    producer = f"00-{'1' * 32}-{'2' * 16}-01"
    await publish(sidecar, {}, metadata={"traceparent": producer})
    await publish(sidecar, {})
    await broker.idle()
    with_header, without = app.received("/orders")
    assert with_header.headers["traceparent"] == producer
    assert "traceparent" not in without.headers
    assert spans.get_finished_spans() == ()


async def test_app_api_token_is_sent_to_the_app(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app, app_api_token="app-secret")
    await publish(sidecar, {})
    await broker.idle()
    assert only(app.received("/orders")).headers["dapr-api-token"] == "app-secret"
    assert app.received("/dapr/subscribe")[0].headers["dapr-api-token"] == "app-secret"
    assert app.received("/dapr/subscribe")[0].headers["dapr-app-id"] == "backend"


async def test_messages_of_a_partition_arrive_in_order(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    for index in range(20):
        await publish(sidecar, {"n": index})
    await broker.idle()
    assert [r.json()["data"]["n"] for r in app.received("/orders")] == list(range(20))
    assert broker.lag("backend", "pubsub", "orders") == 0


async def test_each_subscriber_app_gets_every_message_independently(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    backend, audit = FakeApp([subscription()]), FakeApp([subscription(route="/audit")])
    publisher = await make_sidecar(backend)
    auditor = await make_sidecar(audit, app_id="audit")
    auditor.set_app_down()  # one subscriber failing does not hold the other back
    await publish(publisher, {"n": 1})
    await broker.wait_for(lambda: len(backend.received("/orders")) == 1)
    await broker.wait_for(lambda: len(auditor.deliveries) >= 2)
    assert audit.received("/audit") == []
    auditor.set_app_down(False)
    await broker.idle()
    assert len(audit.received("/audit")) == 1
    assert len(backend.received("/orders")) == 1


async def test_a_new_consumer_group_starts_at_the_newest_offset(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    publisher = await make_sidecar(FakeApp())
    await publish(publisher, {"before": True})
    late = FakeApp([subscription()])
    await make_sidecar(late, app_id="late")
    await publish(publisher, {"after": True})
    await broker.idle()
    assert [r.json()["data"] for r in late.received("/orders")] == [{"after": True}]


async def test_a_restarted_app_resumes_from_its_committed_offset(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    publisher = await make_sidecar(FakeApp())
    first = FakeApp([subscription()])
    consumer = await make_sidecar(first, app_id="worker")
    await publish(publisher, {"n": 1})
    await broker.idle()
    await consumer.stop()
    await publish(publisher, {"n": 2})  # published while the worker is away
    second = FakeApp([subscription()])
    await make_sidecar(second, app_id="worker")
    await broker.idle()
    assert [r.json()["data"]["n"] for r in first.received("/orders")] == [1]
    assert [r.json()["data"]["n"] for r in second.received("/orders")] == [2]


async def test_oldest_initial_offset_delivers_earlier_records(make_sidecar: SidecarFactory) -> None:
    broker = Broker(initial_offset="oldest", component_retry_interval=0.005)
    publisher = await make_sidecar(FakeApp(), broker=broker)
    await publish(publisher, {"n": 1})
    late = FakeApp([subscription()])
    await make_sidecar(late, app_id="late", broker=broker)
    await broker.idle()
    assert len(late.received("/orders")) == 1


async def test_keyed_messages_keep_their_order_across_partitions(
    make_sidecar: SidecarFactory,
) -> None:
    broker = Broker(partitions=3, component_retry_interval=0.005)
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app, broker=broker)
    for index in range(12):
        await publish(
            sidecar, {"user": index % 3, "n": index}, metadata={"partitionKey": f"u{index % 3}"}
        )
    await broker.idle()
    for user in range(3):
        seen = [
            r.json()["data"]["n"]
            for r in app.received("/orders")
            if r.json()["data"]["user"] == user
        ]
        assert seen == [n for n in range(12) if n % 3 == user]
    assert len({r.headers["__partition"] for r in app.received("/orders")}) > 1


async def test_metadata_headers_that_http_cannot_carry_are_left_out(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([subscription()])
    sidecar = await make_sidecar(app)
    await publish(
        sidecar,
        {},
        metadata={"grpc-trace": "x", "content-length": "9", "connection": "close", "bad name": "v"},
    )
    await broker.idle()
    headers = only(app.received("/orders")).headers
    assert "grpc-trace" not in headers
    assert "bad name" not in headers
    assert headers["content-length"] == str(len(sidecar.published[0].value))
