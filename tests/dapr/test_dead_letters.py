"""Dead letters: reasons recorded at failure, parking on arrival, the park API, replay, stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.dapr.test_subscriptions import PRODUCER, ROUTE, cloudevent
from tests.helpers import client
from todo_observability.dapr import (
    DaprClient,
    DaprStateDeadLetterStore,
    DeadLetterStore,
    Drop,
    InMemoryDeadLetterStore,
    Message,
    Outcome,
    ParkedMessage,
    Retry,
    SqlDeadLetterStore,
    Subscriptions,
)
from todo_observability.dapr.dead_letters import FailureNote, classify
from todo_observability.testing import metric_value

pytestmark = pytest.mark.anyio

MAIN = "/dapr/events/pubsub/task-events"
DLQ = "/dapr/events/pubsub/task-events-dlq"


class Published:
    """A sidecar that accepts publishes and records them."""

    def __init__(self, status: int = 204):
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status >= 300:
            return httpx.Response(
                self.status,
                json={"errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE", "message": "broker down"},
            )
        return httpx.Response(self.status)


def build(
    make_observability: Any,
    sidecar: Published | None = None,
    *,
    environment: str = "dev",
    **kwargs: Any,
) -> tuple[Any, Subscriptions]:
    dapr = DaprClient(
        "http://127.0.0.1:3500", transport=httpx.MockTransport(sidecar or Published())
    )
    subs = Subscriptions(client=dapr, **kwargs)

    @subs.subscribe("pubsub", "task-events", dead_letter_topic="task-events-dlq")
    async def handle(message: Message) -> None:
        if message.data.get("poison"):
            raise Drop("invalid_rrule", "FREQ=SOMETIMES is not a frequency")
        if message.data.get("flaky"):
            raise Retry("smtp_unavailable", "connection refused")

    subs.park_dead_letters("pubsub", "task-events-dlq")
    app = Starlette()
    make_observability(app, service_name="recurring", environment=environment)
    subs.install(app)
    return app, subs


async def post(app: Any, route: str, event: Any, **headers: str) -> httpx.Response:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    async with client(app) as http:
        return await http.post(
            route, content=body, headers={"content-type": "application/cloudevents+json", **headers}
        )


async def test_a_dropped_message_is_parked_with_the_reason_recorded_when_it_failed(
    make_observability: Any, metrics_registry: Any, captured_logs: Any
) -> None:
    app, subs = build(make_observability)
    event = cloudevent("m-1", {"poison": True})
    assert (await post(app, MAIN, event)).json() == {"status": "DROP"}
    # Dapr republishes the original bytes to the dead-letter topic (DAPR.md §2.5).
    assert (await post(app, DLQ, event, __topic="task-events", __offset="9")).json() == {
        "status": "SUCCESS"
    }
    [parked] = await subs.dead_letters.list()
    assert parked.park_id == "pubsub/task-events/m-1"
    assert (parked.origin_topic, parked.dead_letter_topic) == ("task-events", "task-events-dlq")
    assert (parked.reason, parked.attempts) == ("invalid_rrule", 1)
    assert "FREQ=SOMETIMES" in parked.detail
    assert parked.event == event
    assert parked.metadata["__offset"] == "9"
    assert parked.traceparent == PRODUCER
    assert (
        metric_value(
            metrics_registry,
            "messaging_dead_letters_total",
            origin_topic="task-events",
            reason="invalid_rrule",
        )
        == 1
    )
    assert (
        metric_value(metrics_registry, "messaging_dead_letters_parked", origin_topic="task-events")
        == 1
    )
    [line] = [line for line in captured_logs.lines if line["message"] == "dead letter parked"]
    assert line["level"] == "WARNING"
    # A redelivery of the dead letter does not park or count it twice.
    await post(app, DLQ, event)
    assert len(await subs.dead_letters.list()) == 1
    assert (
        metric_value(
            metrics_registry,
            "messaging_dead_letters_total",
            origin_topic="task-events",
            reason="invalid_rrule",
        )
        == 1
    )


async def test_a_message_out_of_retries_is_parked_with_its_last_failure(
    make_observability: Any,
) -> None:
    app, subs = build(make_observability)
    event = cloudevent("m-2", {"flaky": True})
    for _ in range(3):
        assert (await post(app, MAIN, event)).json() == {"status": "RETRY"}
    await post(app, DLQ, event)
    [parked] = await subs.dead_letters.list()
    assert (parked.reason, parked.attempts) == ("smtp_unavailable", 3)


async def test_a_message_the_sidecar_dropped_itself_is_parked_as_unrecorded(
    make_observability: Any,
) -> None:
    app, subs = build(make_observability)
    await post(app, DLQ, cloudevent("m-3"))
    [parked] = await subs.dead_letters.list()
    assert parked.reason == "unrecorded"


async def test_a_malformed_dead_letter_is_parked_raw(make_observability: Any) -> None:
    app, subs = build(make_observability)
    assert (await post(app, DLQ, b"\xff not an event", __topic="task-events")).json() == {
        "status": "SUCCESS"
    }
    [parked] = await subs.dead_letters.list()
    assert parked.reason == "malformed"
    assert parked.event is None
    assert parked.body is not None
    assert parked.body.startswith("base64:")
    assert parked.origin_topic == "task-events"


async def test_the_park_api_lists_shows_replays_and_purges(
    make_observability: Any, metrics_registry: Any
) -> None:
    sidecar = Published()
    app, _subs = build(make_observability, sidecar)
    for event_id in ("a", "b"):
        await post(app, DLQ, cloudevent(event_id, {"poison": True}))
    async with client(app) as http:
        listing = (await http.get("/dapr/dead-letters")).json()
        assert listing["counts"] == {"task-events": 2}
        assert [m["event_id"] for m in listing["parked"]] == ["a", "b"]
        shown = (await http.get("/dapr/dead-letters/pubsub/task-events/a")).json()
        assert shown["event"]["id"] == "a"
        assert (await http.get("/dapr/dead-letters/pubsub/task-events/zzz")).status_code == 404
        replayed = await http.post("/dapr/dead-letters/pubsub/task-events/a/replay")
        assert replayed.status_code == 200, replayed.text
        refused = await http.delete("/dapr/dead-letters/pubsub/task-events/b")
        assert refused.status_code == 400
        assert "confirm=true" in refused.json()["error"]
        purged = await http.delete(
            "/dapr/dead-letters/pubsub/task-events/b", params={"confirm": "true"}
        )
        assert purged.json() == {"purged": "pubsub/task-events/b"}
        assert (await http.get("/dapr/dead-letters")).json()["counts"] == {}
        assert (await http.get("/dapr/dead-letters", params={"limit": "lots"})).status_code == 400
    [publish] = sidecar.requests
    assert publish.url.path == "/v1.0/publish/pubsub/task-events"
    assert publish.url.params["metadata.cloudevent.id"] == "a"  # same id: idempotency holds
    assert publish.url.params["metadata.cloudevent.type"] == "com.dapr.event.sent"
    assert publish.url.params["metadata.cloudevent.source"] == "backend"
    assert json.loads(publish.content) == {"poison": True}
    assert (
        metric_value(metrics_registry, "messaging_dead_letters_parked", origin_topic="task-events")
        == 0
    )
    assert (
        metric_value(
            metrics_registry,
            "messaging_dead_letter_replays_total",
            origin_topic="task-events",
            outcome="success",
        )
        == 1
    )


async def test_a_refused_replay_leaves_the_message_parked(
    make_observability: Any, captured_spans: Any
) -> None:
    app, subs = build(make_observability, Published(status=500))
    await post(app, DLQ, cloudevent("a"))
    async with client(app) as http:
        response = await http.post("/dapr/dead-letters/pubsub/task-events/a/replay")
        assert response.status_code == 502
        assert "still parked" in response.json()["error"]
        bulk = await http.post("/dapr/dead-letters/replay")
        assert bulk.status_code == 207
    [parked] = await subs.dead_letters.list()
    assert parked.replays == 2
    [replay, *_] = [s for s in captured_spans.spans if s.name == "task-events publish"]
    [link] = replay.links
    assert f"{link.context.span_id:016x}" == PRODUCER.split("-")[2]


async def test_the_park_api_needs_a_token_when_one_is_set_and_in_prod(
    make_observability: Any,
) -> None:
    app, _subs = build(make_observability, admin_token="t0k")
    async with client(app) as http:
        assert (await http.get("/dapr/dead-letters")).status_code == 401
        ok = await http.get("/dapr/dead-letters", headers={"authorization": "Bearer t0k"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "environment", ["prod", "production", "Prod", "PRODUCTION", "staging", "prd", "qa", "dev2"]
)
async def test_the_park_api_is_closed_without_a_token_outside_development(
    make_observability: Any, environment: str
) -> None:
    dapr = DaprClient("http://127.0.0.1:3500", transport=httpx.MockTransport(Published()))
    subs = Subscriptions(client=dapr, admin_token="")
    app = Starlette()
    make_observability(app, service_name="recurring", environment=environment)
    subs.install(app)
    async with client(app) as http:
        listing = await http.get("/dapr/dead-letters")
        purge = await http.delete("/dapr/dead-letters/pubsub/t/x", params={"confirm": "true"})
        replay = await http.post("/dapr/dead-letters/replay")
    for response in (listing, purge, replay):
        assert response.status_code == 403
        assert "TODO_OBS_ADMIN_TOKEN" in response.json()["error"]
        assert repr(environment) in response.json()["error"]


@pytest.mark.parametrize("environment", ["dev", "development", "local", "test", "DEV", "Local"])
async def test_the_park_api_answers_without_a_token_only_in_development(
    make_observability: Any, environment: str
) -> None:
    app, _subs = build(make_observability, admin_token="", environment=environment)
    async with client(app) as http:
        assert (await http.get("/dapr/dead-letters")).status_code == 200


class Unprintable(Exception):
    """An exception that cannot say what it is: its `__str__` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


async def test_a_handler_exception_whose_str_raises_is_a_retry_and_releases_its_claim(
    make_observability: Any, captured_logs: Any
) -> None:
    calls: list[int] = []
    dapr = DaprClient("http://127.0.0.1:3500", transport=httpx.MockTransport(Published()))
    subs = Subscriptions(client=dapr)

    @subs.subscribe("pubsub", "task-events", dead_letter_topic="task-events-dlq")
    async def handle(message: Message) -> None:
        calls.append(message.attempt)
        if len(calls) == 1:
            raise Unprintable

    app = Starlette()
    make_observability(app, service_name="recurring")
    subs.install(app)
    first = await post(app, ROUTE, cloudevent("u-1"))
    assert first.json() == {"status": "RETRY"}
    # The claim was given back: the redelivery runs the handler, not "in progress".
    second = await post(app, ROUTE, cloudevent("u-1"))
    assert second.json() == {"status": "SUCCESS"}
    assert calls == [1, 2]
    [note_line] = [
        line for line in captured_logs.lines if line["message"].startswith("message failed")
    ]
    assert note_line["context"]["reason"] == "Unprintable"
    assert note_line["context"]["detail"] == "Unprintable: <Unprintable whose str() raised>"


def test_classify_never_raises() -> None:
    assert classify(Unprintable()) == (
        Outcome.RETRY,
        "Unprintable",
        "Unprintable: <Unprintable whose str() raised>",
    )


async def test_a_replay_says_what_became_of_each_message(
    make_observability: Any,
) -> None:
    """Processed, parked again, or only published: never "replayed" for a message that failed."""
    sidecar = Published()
    app, subs = build(make_observability, sidecar)
    for event_id in ("good", "poison"):
        await post(app, DLQ, cloudevent(event_id, {"poison": event_id == "poison"}))

    # The sidecar of this test delivers nothing by itself: deliver each replay as daprd would,
    # to the subscription, and its dead letter to the park.
    async def deliver_replays() -> None:
        delivered = 0
        while delivered < 2:
            await asyncio.sleep(0.01)
            while delivered < len(sidecar.requests):
                request = sidecar.requests[delivered]
                delivered += 1
                event = cloudevent(
                    request.url.params["metadata.cloudevent.id"], json.loads(request.content)
                )
                answer = (await post(app, ROUTE, event)).json()
                if answer == {"status": "DROP"}:
                    await post(app, DLQ, event)

    delivering = asyncio.ensure_future(deliver_replays())
    async with client(app) as http:
        response = await http.post("/dapr/dead-letters/replay", params={"wait": "10"})
    await delivering
    assert response.status_code == 207  # one of them failed again
    body = response.json()
    assert body["results"] == {
        "pubsub/task-events/good": "processed",
        "pubsub/task-events/poison": "parked again (invalid_rrule)",
    }
    assert (body["processed"], body["parked_again"], body["published"], body["failed"]) == (
        1,
        1,
        0,
        0,
    )
    # The poison is parked (again), the good one is not: nothing lost, nothing falsely claimed.
    assert [m.event_id for m in await subs.dead_letters.list()] == ["poison"]
    async with client(app) as http:
        refused = await http.post("/dapr/dead-letters/replay", params={"wait": "61"})
    assert refused.status_code == 400


# -- the store contract, for every store ---------------------------------------------------


class FakeStateStore:
    """The Dapr state API in memory, with etags and first-write concurrency."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[Any, int]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            for item in json.loads(request.content):
                current = self.items.get(item["key"])
                if "etag" in item and (current is None or str(current[1]) != item["etag"]):
                    return httpx.Response(
                        409, json={"errorCode": "ERR_STATE_SAVE", "message": "etag mismatch"}
                    )
                if (
                    "etag" not in item
                    and current is not None
                    and item.get("options", {}).get("concurrency") == "first-write"
                ):
                    return httpx.Response(
                        409, json={"errorCode": "ERR_STATE_SAVE", "message": "exists"}
                    )
                self.items[item["key"]] = (item["value"], (current[1] + 1) if current else 1)
            return httpx.Response(204)
        key = request.url.path.split("/", 4)[4]
        if request.method == "DELETE":
            self.items.pop(key, None)
            return httpx.Response(204)
        if key not in self.items:
            return httpx.Response(204)
        value, etag = self.items[key]
        return httpx.Response(200, json=value, headers={"etag": str(etag)})


@pytest.fixture(params=["memory", "sql", "dapr-state"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[DeadLetterStore]:
    if request.param == "memory":
        yield InMemoryDeadLetterStore()
    elif request.param == "sql":
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/dlq.db")
        yield SqlDeadLetterStore(engine)
        await engine.dispose()
    else:
        async with DaprClient(
            "http://127.0.0.1:3500", transport=httpx.MockTransport(FakeStateStore())
        ) as dapr:
            yield DaprStateDeadLetterStore(dapr)


def parked(park_id: str, topic: str, at: float) -> ParkedMessage:
    return ParkedMessage(
        park_id=park_id,
        event_id=park_id,
        pubsub="pubsub",
        origin_topic=topic,
        dead_letter_topic=f"{topic}-dlq",
        reason="r",
        event={"id": park_id},
        parked_at=at,
    )


async def test_every_store_keeps_notes_and_parked_messages(store: DeadLetterStore) -> None:
    assert isinstance(store, DeadLetterStore)
    note = FailureNote("DROP", "invalid_rrule", "detail", 2, 1.0)
    await store.note_failure("k", note)
    await store.note_failure("k", FailureNote("RETRY", "later", "", 3, 2.0))
    assert (await store.pop_failure("k")) == FailureNote("RETRY", "later", "", 3, 2.0)
    assert await store.pop_failure("k") is None
    await store.park(parked("b", "reminders", 2.0))
    await store.park(parked("a", "task-events", 1.0))
    await store.park(parked("c", "task-events", 3.0))
    await store.park(parked("c", "task-events", 3.0))  # parking again replaces
    assert [m.park_id for m in await store.list()] == ["a", "b", "c"]
    assert [m.park_id for m in await store.list(origin_topic="task-events", limit=1)] == ["a"]
    assert await store.counts() == {"task-events": 2, "reminders": 1}
    got = await store.get("b")
    assert got is not None
    assert got.event == {"id": "b"}
    assert await store.remove("b")
    assert not await store.remove("b")
    assert await store.get("b") is None
    assert await store.counts() == {"task-events": 2}
