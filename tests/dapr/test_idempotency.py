"""Idempotency stores: NEW once, BUSY while processing, DONE after completion, NEW again after release."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.dapr.test_dead_letters import FakeStateStore
from todo_observability.dapr import (
    Claim,
    DaprClient,
    DaprStateIdempotencyStore,
    IdempotencyStore,
    InMemoryIdempotencyStore,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "dapr-state"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield InMemoryIdempotencyStore(max_keys=2)
    else:
        transport = httpx.MockTransport(FakeStateStore())
        async with DaprClient("http://127.0.0.1:3500", transport=transport) as dapr:
            yield DaprStateIdempotencyStore(dapr)


async def test_claims(store: IdempotencyStore) -> None:
    assert isinstance(store, IdempotencyStore)
    assert await store.claim("a") is Claim.NEW
    assert await store.claim("a") is Claim.BUSY
    await store.release("a")
    assert await store.claim("a") is Claim.NEW
    await store.complete("a")
    assert await store.claim("a") is Claim.DONE


async def test_a_stale_claim_can_be_taken_again(store: Any) -> None:
    store.processing_timeout = 0.0
    assert await store.claim("a") is Claim.NEW
    assert await store.claim("a") is Claim.NEW


async def test_the_in_memory_store_forgets_the_oldest_keys() -> None:
    store = InMemoryIdempotencyStore(max_keys=2)
    for key in ("a", "b", "c"):
        assert await store.claim(key) is Claim.NEW
        await store.complete(key)
    assert await store.claim("a") is Claim.NEW
    assert await store.claim("c") is Claim.DONE
