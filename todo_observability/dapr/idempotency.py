"""Idempotency stores: a message id is processed at most once, whatever the sidecar redelivers.

The handler wrapper claims a message's key before running its handler:

- `Claim.NEW`: nobody has it; run the handler, then `complete` (or `release` on failure);
- `Claim.DONE`: already processed; acknowledge without running the handler (a duplicate);
- `Claim.BUSY`: another delivery is processing it now; answer RETRY.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from todo_observability.dapr.client import DaprClient

__all__ = ["Claim", "DaprStateIdempotencyStore", "IdempotencyStore", "InMemoryIdempotencyStore"]


class Claim(enum.Enum):
    """The answer to a claim on a message key."""

    NEW = "new"
    DONE = "done"
    BUSY = "busy"


@runtime_checkable
class IdempotencyStore(Protocol):
    """Remembers which message keys were processed."""

    async def claim(self, key: str) -> Claim:
        """Try to take `key` for processing."""

    async def complete(self, key: str) -> None:
        """`key` was processed: later claims answer DONE."""

    async def release(self, key: str) -> None:
        """Processing `key` failed: a later claim may take it again."""


# A store may also offer `async def processed(self, key: str) -> bool` (both stores here do): a
# look that takes nothing. Replays use it to report that a replayed message was processed.


class InMemoryIdempotencyStore:
    """Keys in process memory, the most recent `max_keys` processed ones remembered.

    Args:
        max_keys: Processed keys kept (the oldest are forgotten first).
        processing_timeout: Seconds after which a claim that was never completed
            or released (a crashed handler) may be taken again.
    """

    def __init__(self, max_keys: int = 100_000, *, processing_timeout: float = 300.0):
        self.max_keys = max_keys
        self.processing_timeout = processing_timeout
        self._done: OrderedDict[str, None] = OrderedDict()
        self._busy: dict[str, float] = {}

    async def claim(self, key: str) -> Claim:
        """Take `key`, or say it is done or busy."""
        if key in self._done:
            return Claim.DONE
        since = self._busy.get(key)
        now = time.monotonic()
        if since is not None and now - since < self.processing_timeout:
            return Claim.BUSY
        self._busy[key] = now
        return Claim.NEW

    async def complete(self, key: str) -> None:
        """Remember `key` as processed."""
        self._busy.pop(key, None)
        self._done[key] = None
        if len(self._done) > self.max_keys:
            self._done.popitem(last=False)

    async def release(self, key: str) -> None:
        """Let `key` be claimed again."""
        self._busy.pop(key, None)

    async def processed(self, key: str) -> bool:
        """Whether `key` was processed (a look that claims nothing)."""
        return key in self._done


def _flat(key: str) -> str:
    """`key` without '/', which the sidecar's state API cannot take in a key (reversible)."""
    return key.replace("~", "~7E").replace("/", "~2F")


class DaprStateIdempotencyStore:
    """Keys in a Dapr state store, shared by every replica of a service.

    A claim writes `{"state": "processing"}` with first-write-wins concurrency
    (an etag from the read, or none for a new key), so two replicas never both
    take a key; completion writes `{"state": "done"}` kept for `ttl_seconds`.

    Args:
        client: The sidecar client.
        store: The state store component name.
        prefix: Prefix of the keys written.
        ttl_seconds: How long processed keys are remembered.
        processing_timeout: Seconds after which an unfinished claim may be taken again.
    """

    def __init__(
        self,
        client: DaprClient,
        store: str = "statestore",
        *,
        prefix: str = "todo-obs-idempotency-",
        ttl_seconds: int = 7 * 24 * 3600,
        processing_timeout: float = 300.0,
    ):
        self.client = client
        self.store = store
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.processing_timeout = processing_timeout

    async def claim(self, key: str) -> Claim:
        """Take `key`, or say it is done or busy."""
        value, etag = await self.client.get_state(self.store, self.prefix + _flat(key))
        if isinstance(value, dict):
            if value.get("state") == "done":
                return Claim.DONE
            since = value.get("since")
            if isinstance(since, (int, float)) and time.time() - since < self.processing_timeout:
                return Claim.BUSY
        taken = await self.client.save_state(
            self.store,
            self.prefix + _flat(key),
            {"state": "processing", "since": time.time()},
            etag=etag,
            first_write=True,
            ttl_seconds=self.ttl_seconds,
        )
        return Claim.NEW if taken else Claim.BUSY

    async def complete(self, key: str) -> None:
        """Remember `key` as processed."""
        await self.client.save_state(
            self.store, self.prefix + _flat(key), {"state": "done"}, ttl_seconds=self.ttl_seconds
        )

    async def release(self, key: str) -> None:
        """Let `key` be claimed again."""
        await self.client.delete_state(self.store, self.prefix + _flat(key))

    async def processed(self, key: str) -> bool:
        """Whether `key` was processed (a look that claims nothing)."""
        value, _etag = await self.client.get_state(self.store, self.prefix + _flat(key))
        return isinstance(value, dict) and value.get("state") == "done"
