"""`GET /dapr/subscribe` (DAPR.md §2.1): v1/v2 routes, CEL rules, start-up, bulk delivery."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from todo_observability.testing.sidecar import (
    Broker,
    RetryPolicy,
    Sidecar,
    UnsupportedExpressionError,
)
from todo_observability.testing.sidecar.subscriptions import parse_subscriptions

from .conftest import FakeApp, SidecarFactory, only, publish, subscription

pytestmark = pytest.mark.anyio


def routes(rules: list[dict[str, str]], default: str | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"pubsubname": "pubsub", "topic": "orders", **extra}
    entry["routes"] = {"rules": rules, **({"default": default} if default else {})}
    return entry


async def test_v1_route(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp([subscription(route="/v1-orders")])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {})
    await broker.idle()
    assert only(sidecar.deliveries).route == "/v1-orders"


async def test_v2_rules_are_evaluated_in_order_then_default(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp(
        [
            routes(
                [
                    {"match": 'event.type == "order.created"', "path": "/created"},
                    {
                        "match": 'event.data.kind == "vip" || event.data.kind == "gold"',
                        "path": "/vip",
                    },
                    {"match": 'event.type != "x" && event.data.kind == "vip"', "path": "/never"},
                ],
                default="/other",
            )
        ]
    )
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"kind": "vip"}, metadata={"cloudevent.type": "order.created"})
    await publish(sidecar, {"kind": "vip"})
    await publish(sidecar, {"kind": "gold"})
    await publish(sidecar, {"kind": "plain"})
    await broker.idle()
    assert [a.route for a in sidecar.deliveries] == ["/created", "/vip", "/vip", "/other"]


async def test_routes_default_wins_over_route(make_sidecar: SidecarFactory, broker: Broker) -> None:
    entry = routes([], default="/from-default")
    entry["route"] = "/from-route"
    sidecar = await make_sidecar(FakeApp([entry]))
    await publish(sidecar, {})
    await broker.idle()
    assert only(sidecar.deliveries).route == "/from-default"


async def test_a_message_matching_no_rule_is_dropped(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([routes([{"match": 'event.type == "wanted"', "path": "/wanted"}])])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {})
    await broker.idle()
    assert sidecar.deliveries == []
    result = only(sidecar.results)
    assert (result.outcome, result.reason) == ("dropped", "no_route")


async def test_an_entry_without_any_route_is_skipped(make_sidecar: SidecarFactory) -> None:
    app = FakeApp([{"pubsubname": "pubsub", "topic": "orders"}, subscription(topic="kept")])
    sidecar = await make_sidecar(app)
    assert [s.topic for s in sidecar.subscriptions] == ["kept"]
    assert any("empty routes" in e for e in sidecar.subscription_errors)


async def test_paths_get_a_leading_slash(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = FakeApp([subscription(route="orders-handler")])
    sidecar = await make_sidecar(app)
    await publish(sidecar, {})
    await broker.idle()
    assert only(app.received("/orders-handler")).method == "POST"


async def test_a_missing_field_is_a_cel_error_and_the_message_is_retried(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp([routes([{"match": 'event.data.kind == "vip"', "path": "/vip"}], default="/d")])
    sidecar = await make_sidecar(app)
    await publish(sidecar, "text, not an object")
    await broker.wait_for(lambda: any("redelivered 2 time" in b for b in broker.busy()))
    assert sidecar.deliveries == []  # CEL cannot select `kind` on a string: never routed


async def test_cel_absorbs_an_error_when_the_other_side_decides(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp(
        [
            routes(
                [
                    {"match": 'event.type == "t" || event.data.missing == 1', "path": "/either"},
                    {"match": 'event.type == "nope" && event.data.missing == 1', "path": "/never"},
                    {"match": "has(event.data.kind) && event.data.kind == 'x'", "path": "/kind"},
                ],
                default="/default",
            )
        ]
    )
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"a": 1}, metadata={"cloudevent.type": "t"})
    await publish(sidecar, {"missing": 0, "kind": "x"}, metadata={"cloudevent.type": "u"})
    await publish(sidecar, {"missing": 0}, metadata={"cloudevent.type": "u"})
    await broker.idle()
    assert [a.route for a in sidecar.deliveries] == ["/either", "/kind", "/default"]


@pytest.mark.parametrize(
    "match",
    [
        "event.data.count > 3",
        'event.type.startsWith("order")',
        "size(event.data) == 1",
        'other.type == "x"',
        'event.type in ["a", "b"]',
        "event.type ==",
    ],
)
async def test_unsupported_cel_is_refused_and_no_subscription_is_loaded(
    make_sidecar: SidecarFactory, match: str
) -> None:
    app = FakeApp([routes([{"match": match, "path": "/x"}]), subscription(topic="fine")])
    sidecar = await make_sidecar(app)
    assert sidecar.subscriptions == []
    assert "not supported by the sidecar emulator" in sidecar.subscription_errors[-1]
    with pytest.raises(UnsupportedExpressionError, match="evaluates ==, !=, &&"):
        parse_subscriptions([routes([{"match": match, "path": "/x"}])])


def test_cel_literals_and_equality() -> None:
    entry = routes(
        [
            {
                "match": "event.data.n == 2 && event.data.ok == true && event.data.none == null",
                "path": "/a",
            },
            {"match": "event.data.n != 2.0", "path": "/b"},
            {"match": '!(event["data"]["s"] == "x\\"y") ', "path": "/c"},
        ]
    )
    [parsed], _ = parse_subscriptions([entry])
    assert parsed.route({"data": {"n": 2, "ok": True, "none": None, "s": 'x"y'}}) == "/a"
    assert parsed.route({"data": {"n": 3, "ok": True, "none": None, "s": 'x"y'}}) == "/b"
    assert parsed.route({"data": {"n": 2.0, "ok": False, "none": None, "s": "z"}}) == "/c"
    assert parsed.route({"data": {"n": "2", "ok": True, "none": None, "s": 'x"y'}}) == "/b"


async def test_a_404_from_dapr_subscribe_means_no_subscriptions(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp(subscribe_status=404))
    assert sidecar.subscriptions == []
    assert sidecar.subscription_errors == []
    assert sidecar.ready


async def test_another_status_from_dapr_subscribe_is_an_error_without_retry(
    make_sidecar: SidecarFactory,
) -> None:
    app = FakeApp(subscribe_status=500)
    sidecar = await make_sidecar(app)
    assert sidecar.subscriptions == []
    assert sidecar.subscription_errors == [
        "app returned http status code 500 from subscription endpoint"
    ]
    assert len(app.received("/dapr/subscribe")) == 1
    assert sidecar.ready  # daprd carries on without subscriptions


class FlakyTransport(httpx.AsyncBaseTransport):
    """Refuses the first `failures` connections, then reaches the app."""

    def __init__(self, app: FakeApp, failures: int):
        self.inner = app.transport()
        self.failures = failures
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused < self.failures:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize(("failures", "loaded"), [(3, True), (4, False)])
async def test_dapr_subscribe_is_retried_while_the_app_is_unreachable(
    broker: Broker, failures: int, loaded: bool
) -> None:
    app = FakeApp([subscription()])
    transport = FlakyTransport(app, failures)
    sidecar = Sidecar(
        "backend",
        app_transport=transport,
        broker=broker,
        startup_retry=RetryPolicy.constant(0.001, max_retries=3),
    )
    async with sidecar:
        assert sidecar.ready
        assert transport.refused == min(failures, 4)
        if loaded:
            assert [s.topic for s in sidecar.subscriptions] == ["orders"]
            assert sidecar.subscription_errors == []
        else:
            assert sidecar.subscriptions == []
            assert "failed to get subscriptions" in sidecar.subscription_errors[0]


def test_daprd_start_up_retry_is_exponential_from_half_a_second() -> None:
    sidecar = Sidecar("backend", app_port=1)
    assert sidecar.startup_retry == RetryPolicy.exponential(0.5, max_retries=3)


async def test_subscriptions_for_unknown_components_and_duplicates_are_skipped(
    make_sidecar: SidecarFactory,
) -> None:
    app = FakeApp(
        [
            subscription(),
            subscription(route="/again"),
            {"pubsubname": "missing", "topic": "t", "route": "/t"},
        ]
    )
    sidecar = await make_sidecar(app)
    assert [(s.pubsub, s.topic, s.rules[0].path) for s in sidecar.subscriptions] == [
        ("pubsub", "orders", "/orders")
    ]
    assert len(sidecar.subscription_errors) == 2


async def test_metadata_lists_the_subscriptions(make_sidecar: SidecarFactory) -> None:
    app = FakeApp(
        [
            routes(
                [{"match": 'event.type == "a"', "path": "/a"}],
                default="/d",
                deadLetterTopic="dlq",
                metadata={"rawPayload": "false"},
            )
        ]
    )
    sidecar = await make_sidecar(app)
    async with sidecar.client() as client:
        metadata = (await client.get("/v1.0/metadata")).json()
    assert metadata["subscriptions"] == [
        {
            "pubsubname": "pubsub",
            "topic": "orders",
            "metadata": {"rawPayload": "false"},
            "rules": [{"match": 'event.type == "a"', "path": "/a"}, {"path": "/d"}],
            "deadLetterTopic": "dlq",
            "type": "PROGRAMMATIC",
        }
    ]


# --- bulk ---------------------------------------------------------------------------------------


def bulk_app(statuses: Any = None) -> FakeApp:
    app = FakeApp(
        [
            subscription(
                bulkSubscribe={"enabled": True, "maxMessagesCount": 3, "maxAwaitDurationMs": 20},
                deadLetterTopic="dlq",
            )
        ]
    )
    if statuses is not None:
        app.answer("/orders", statuses)
    return app


async def test_bulk_delivery_format(make_sidecar: SidecarFactory, broker: Broker) -> None:
    app = bulk_app()
    app.answer(
        "/orders",
        lambda received: JSONResponse(
            {
                "statuses": [
                    {"entryId": e["entryId"], "status": "SUCCESS"}
                    for e in received.json()["entries"]
                ]
            }
        ),
    )
    sidecar = await make_sidecar(app)
    for index in range(3):
        await publish(sidecar, {"n": index})
    await broker.idle()
    request = only(app.received("/orders"))
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["type"] == "com.dapr.event.sent.bulk"
    assert (body["topic"], body["pubsubname"], body["metadata"]) == ("orders", "pubsub", {})
    assert [e["event"]["data"]["n"] for e in body["entries"]] == [0, 1, 2]
    entry = body["entries"][0]
    assert entry["contentType"] == "application/cloudevents+json"
    assert entry["metadata"]["__offset"] == "0"
    assert entry["metadata"]["pubsubName"] == "pubsub"
    assert entry["event"] == json.loads(sidecar.published[0].value)
    assert [r.outcome for r in sidecar.results] == ["delivered"] * 3


async def test_bulk_waits_at_most_max_await_for_a_full_batch(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = bulk_app()
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"n": 0})
    await broker.idle()  # flushed after maxAwaitDurationMs with one entry
    assert len(only(app.received("/orders")).json()["entries"]) == 1


async def test_bulk_entry_statuses_drive_each_message(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    def answer(received: Any) -> Response:
        entries = received.json()["entries"]
        by_n = {e["event"]["data"]["n"]: e["entryId"] for e in entries}
        statuses = []
        if 0 in by_n:
            statuses.append({"entryId": by_n[0], "status": "SUCCESS"})
        if 1 in by_n:
            statuses.append({"entryId": by_n[1], "status": "DROP"})
        # entry 2 is missing from the answer: RETRY
        return JSONResponse({"statuses": statuses})

    app = bulk_app(answer)
    sidecar = await make_sidecar(app, retry_policy=RetryPolicy.constant(0.001, max_retries=1))
    for index in range(3):
        await publish(sidecar, {"n": index})
    await broker.idle()
    sent = [len(r.json()["entries"]) for r in app.received("/orders")]
    assert sent == [3, 1]  # the retry carries only the entry still pending
    outcomes = {r.offset: (r.outcome, r.reason) for r in sidecar.results}
    assert outcomes == {
        0: ("delivered", "success"),
        1: ("dead_lettered", "drop"),
        2: ("dead_lettered", "retries_exhausted"),
    }
    assert [a.outcome for a in sidecar.deliveries if a.offset == 2] == ["retry", "retry"]
    assert all(a.bulk for a in sidecar.deliveries)


# --- read as Go reads `[]SubscriptionJSON` ---------------------------------------------------


async def test_subscription_keys_in_any_letter_case_are_read(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    app = FakeApp(
        [
            {"PubsubName": "pubsub", "Topic": "orders", "Route": "orders", "unknown": 1},
            {"pubsubname": "pubsub", "TOPIC": "tasks", "Routes": {"Rules": [{"Path": "/t"}]}},
        ]
    )
    sidecar = await make_sidecar(app)
    assert [(s.topic, s.rules[-1].path) for s in sidecar.subscriptions] == [
        ("orders", "/orders"),
        ("tasks", "/t"),
    ]
    await publish(sidecar, {"n": 1})
    await broker.idle()
    assert only(sidecar.results).outcome == "delivered"


async def test_a_subscription_field_of_the_wrong_type_loads_none(
    make_sidecar: SidecarFactory,
) -> None:
    sidecar = await make_sidecar(FakeApp([subscription(), {"pubsubname": "pubsub", "topic": 5}]))
    assert sidecar.subscriptions == []
    assert sidecar.subscription_errors == [
        "error getting topics from app: json: cannot unmarshal number into Go struct field "
        "SubscriptionJSON.topic of type string"
    ]


async def test_bulk_statuses_are_read_in_any_letter_case(
    make_sidecar: SidecarFactory, broker: Broker
) -> None:
    def answer(received: Any) -> Response:
        entries = received.json()["entries"]
        return JSONResponse(
            {"Statuses": [{"EntryID": e["entryId"], "Status": "SUCCESS"} for e in entries]}
        )

    app = bulk_app(answer)
    sidecar = await make_sidecar(app)
    await publish(sidecar, {"n": 1})
    await broker.idle()
    assert [(r.outcome, r.reason) for r in sidecar.results] == [("delivered", "success")]
