"""Nothing is lost: processed plus parked is every published id, none processed twice, replay completes.

N messages go through the sidecar emulator (Kafka-like broker, a resiliency retry
policy of two retries, a dead-letter topic) to a service whose handler sees a mix
of successes, transient failures within the retry budget, transient failures
beyond it, poison messages, and duplicates (the same CloudEvent id published
twice). After the system is idle, every distinct id is either processed exactly
once or parked with the reason recorded when it failed. Then the faults are
removed and the park replayed: every id is processed, still exactly once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from todo_observability.dapr import (
    DaprClient,
    DaprStateDeadLetterStore,
    DaprStateIdempotencyStore,
    Drop,
    Message,
    Retry,
    Subscriptions,
)
from todo_observability.testing import metric_value
from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar

pytestmark = pytest.mark.anyio

N = 240
MAX_RETRIES = 2  # so a message gets 3 deliveries before it is dead-lettered


@dataclass
class Worker:
    """The service under test: what its handler was asked to do and what it did."""

    faults: bool = True
    calls: Counter[str] = field(default_factory=Counter)
    processed: Counter[str] = field(default_factory=Counter)

    async def handle(self, message: Message) -> None:
        kind, _, needed = message.data["kind"].partition(":")
        self.calls[message.id] += 1
        if self.faults and kind == "poison":
            raise Drop("poison", f"message {message.id} can never succeed")
        if self.faults and kind == "flaky" and self.calls[message.id] <= int(needed):
            raise Retry("flaky", f"attempt {message.attempt} of {message.id} failed")
        self.processed[message.id] += 1


def plan(seed: int) -> list[tuple[str, str]]:
    """(event id, kind) per publish: the distinct ids plus the duplicates, shuffled."""
    rng = random.Random(seed)
    kinds = []
    for index in range(N):
        roll = rng.random()
        if roll < 0.10:
            kind = "poison"
        elif roll < 0.30:
            kind = f"flaky:{rng.randint(1, MAX_RETRIES)}"  # recovers within the budget
        elif roll < 0.38:
            kind = f"flaky:{MAX_RETRIES + 1 + rng.randint(0, 2)}"  # runs out of retries
        else:
            kind = "ok"
        kinds.append((f"msg-{index:04d}", kind))
    duplicates = rng.sample(kinds, N // 10)
    publishes = kinds + duplicates
    rng.shuffle(publishes)
    return publishes


@dataclass
class System:
    worker: Worker
    subscriptions: Subscriptions
    sidecar: Sidecar
    dapr: DaprClient
    registry: Any


@pytest.fixture(params=["in-memory stores", "dapr state stores"])
async def system(
    request: pytest.FixtureRequest, make_observability: Any, metrics_registry: Any
) -> AsyncIterator[System]:
    worker = Worker()
    app = Starlette()
    broker = Broker()
    sidecar = Sidecar(
        "worker",
        broker=broker,
        app_transport=httpx.ASGITransport(app=app),
        retry_policy=RetryPolicy.constant(0.001, max_retries=MAX_RETRIES),
    )
    dapr = DaprClient("http://127.0.0.1:3500", transport=httpx.ASGITransport(app=sidecar.asgi))
    stores: dict[str, Any] = {}
    if request.param == "dapr state stores":
        stores = {
            "idempotency": DaprStateIdempotencyStore(dapr),
            "dead_letters": DaprStateDeadLetterStore(dapr),
        }
    subscriptions = Subscriptions(client=dapr, **stores)
    subscriptions.subscribe("pubsub", "tasks", dead_letter_topic="tasks-dlq")(worker.handle)
    subscriptions.park_dead_letters("pubsub", "tasks-dlq")
    make_observability(app, service_name="worker", access_log=False)
    subscriptions.install(app)
    async with sidecar:
        yield System(worker, subscriptions, sidecar, dapr, metrics_registry)
    await dapr.aclose()


@pytest.mark.parametrize("seed", [1, 2])
async def test_processed_plus_parked_is_every_id_and_replay_completes(
    system: System, seed: int
) -> None:
    publishes = plan(seed)
    kinds = dict(publishes)
    for event_id, kind in publishes:
        await system.dapr.publish("pubsub", "tasks", {"kind": kind}, event_id=event_id)
    await system.sidecar.idle(timeout=60)

    processed = set(system.worker.processed)
    parked = {
        message.event_id: message
        for message in await system.subscriptions.dead_letters.list(limit=N)
    }
    assert processed | set(parked) == set(kinds), "an id was lost"
    assert processed & set(parked) == set(), "an id was both processed and parked"
    assert max(system.worker.processed.values()) == 1, "an id was processed twice"
    poison = {event_id for event_id, kind in kinds.items() if kind == "poison"}
    beyond_budget = {
        event_id
        for event_id, kind in kinds.items()
        if kind.startswith("flaky:") and int(kind[6:]) > MAX_RETRIES
    }
    # Poison never succeeds; a message beyond the retry budget is parked unless a duplicate
    # of it brought enough further deliveries to succeed (then its parked copy is resolved).
    assert poison <= set(parked) <= poison | beyond_budget
    assert set(parked) > poison
    for event_id, message in parked.items():
        assert message.reason == ("poison" if kinds[event_id] == "poison" else "flaky")
        assert message.origin_topic == "tasks"
        assert message.event is not None
        assert message.event["id"] == event_id
    # Duplicates of processed ids were acknowledged without running the handler.
    duplicates = len(publishes) - len(kinds)
    assert metric_value(system.registry, "messaging_duplicate_messages_total", topic="tasks") >= 1
    assert metric_value(
        system.registry, "messaging_dead_letters_parked", origin_topic="tasks"
    ) == len(parked)
    assert duplicates > 0

    system.worker.faults = False
    results = await system.subscriptions.dead_letters.replay_all(limit=N, wait=60)
    # The replay says what became of each message: every one was processed this time.
    assert results == {message.park_id: "processed" for message in parked.values()}
    await system.sidecar.idle(timeout=60)

    assert set(system.worker.processed) == set(kinds), "an id was never processed"
    assert max(system.worker.processed.values()) == 1, "an id was processed twice"
    assert await system.subscriptions.dead_letters.list() == []
    assert metric_value(system.registry, "messaging_dead_letters_parked", origin_topic="tasks") == 0
