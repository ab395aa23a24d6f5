"""Publish → sidecar → delivery, in process: the consumer joins the producer's trace, tracing on or off."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from todo_observability import get_request_id, get_user_id
from todo_observability.context import RequestContext, _enter_context, _exit_context
from todo_observability.dapr import DaprClient, Message, Subscriptions
from todo_observability.testing.sidecar import Sidecar

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("sampling_rate", [1.0, 0.0])
async def test_the_consumer_joins_the_producers_trace(
    make_observability: Any, captured_spans: Any, sampling_rate: float
) -> None:
    seen: list[tuple[Any, Any]] = []
    subs = Subscriptions()

    @subs.subscribe("pubsub", "task-events")
    async def handle(message: Message) -> None:
        seen.append((get_request_id(), get_user_id()))

    app = Starlette()
    obs = make_observability(app, service_name="worker")
    subs.install(app)
    sidecar_spans = InMemorySpanExporter()
    sidecar = Sidecar(
        "worker",
        app_transport=httpx.ASGITransport(app=app),
        sampling_rate=sampling_rate,
        span_exporter=sidecar_spans,
    )
    async with sidecar:
        transport = httpx.ASGITransport(app=sidecar.asgi)
        async with DaprClient("http://127.0.0.1:3500", transport=transport) as dapr:
            token = _enter_context(RequestContext("req-77", "dave", obs.signals))
            try:
                await dapr.publish("pubsub", "task-events", {"task_id": 1})
            finally:
                _exit_context(token)
        await sidecar.idle()

    assert seen == [("req-77", "dave")]  # the ids travelled as baggage in the broker headers
    producer = next(s for s in captured_spans.spans if s.kind is SpanKind.PRODUCER)
    consumer = next(s for s in captured_spans.spans if s.kind is SpanKind.CONSUMER)
    assert consumer.context.trace_id == producer.context.trace_id
    relayed = {s.name: s for s in sidecar_spans.get_finished_spans()}
    if sampling_rate:
        # The sidecar's delivery span is the parent; the producer is linked.
        delivery = relayed["pubsub/task-events"]
        assert delivery.parent is not None
        assert delivery.parent.span_id == producer.context.span_id
        assert consumer.parent is not None
        assert consumer.parent.span_id == delivery.context.span_id
        [link] = consumer.links
        assert link.context.span_id == producer.context.span_id
        assert consumer.attributes["todo_observability.trace_parent_source"] == "header"
    else:
        # Tracing off: no sidecar spans, no header; the CloudEvent kept the producer's context.
        assert relayed == {}
        assert consumer.parent is not None
        assert consumer.parent.span_id == producer.context.span_id
        assert consumer.attributes["todo_observability.trace_parent_source"] == (
            "cloudevent.traceparent"
        )
