"""An in-memory broker shaped like Kafka, shared by the emulated sidecars of a process.

Topics are split in partitions of records with offsets, keys and headers; consumer groups
remember their offsets. It is shared by every emulated sidecar of a process, the way several daprd processes share one
Kafka cluster, and it is also their name resolution (which app id is served where), the way
daprd finds other apps through mDNS.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from todo_observability.exceptions import ConfigurationError
from todo_observability.testing.sidecar import _json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from todo_observability.testing.sidecar.sidecar import Sidecar

__all__ = ["Broker", "BrokerSnapshot", "Record"]


@dataclass(frozen=True)
class Record:
    """One record on a topic partition, as Kafka stores it.

    Attributes:
        pubsub: The pub/sub component (daprd's name for the broker connection).
        topic: The topic.
        partition: The partition of the topic.
        offset: The record's offset in its partition.
        key: The record key (`partitionKey` or `__key` metadata), if any.
        value: The bytes published: a CloudEvent as daprd marshalled it, or a raw payload.
        headers: The record headers: every publish metadata key and value.
        timestamp_ms: When it was appended, in Unix milliseconds (Kafka's `__timestamp`).
    """

    pubsub: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0

    def json(self) -> Any:
        """The value decoded as JSON (a CloudEvent is a dict).

        Raises:
            ValueError: the value is not JSON.
        """
        return _json.loads(self.value)


@dataclass(frozen=True)
class BrokerSnapshot:
    """Offsets at one moment, as a Kafka exporter reads them (see `Broker.snapshot`).

    Attributes:
        ends: Each topic's next offset per partition (Kafka's high watermark).
        committed: Each consumer group's and topic's committed offset per partition.
        members: Each consumer group's members: its running sidecar, when it has one.
    """

    ends: Mapping[str, list[int]]
    committed: Mapping[tuple[str, str], Mapping[int, int]]
    members: Mapping[str, int]


def _fnv1a_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@dataclass
class _Topic:
    partitions: list[list[Record]]
    next_partition: Iterator[int]


class Broker:
    """The in-memory broker (and name resolution) shared by the emulated sidecars of a process.

    Records are partitioned like Dapr's Kafka component does it (sarama's hash partitioner):
    `partitionNumber` metadata picks the partition, else the FNV-1a hash of the key
    (`partitionKey`, or `__key` when republishing to a dead-letter topic), else the partitions
    are used in turn (Kafka picks one at random; turns keep tests deterministic).

    Each app id is a consumer group: a subscription resumes from its group's committed offset,
    or starts at `initial_offset` the first time (Dapr's Kafka default: `newest`, so records
    published before an app first subscribed are not delivered to it).

    When a message cannot be processed and no dead-letter topic takes it, the sidecar hands the
    error back to the broker, which redelivers the same message every
    `component_retry_interval` seconds for ever, holding back the rest of its partition (Kafka
    with `consumeRetryEnabled`, Dapr's default for pub/sub).

    Args:
        partitions: Partitions of a topic created on first use.
        initial_offset: Where a new consumer group starts: `newest` or `oldest`.
        component_retry_interval: Seconds between two redeliveries of a failing message.
    """

    def __init__(
        self,
        *,
        partitions: int = 1,
        initial_offset: Literal["newest", "oldest"] = "newest",
        component_retry_interval: float = 0.1,
    ):
        if partitions < 1:
            raise ConfigurationError(
                f"A topic needs at least one partition, got {partitions!r}.",
                field="partitions",
                value=partitions,
            )
        if initial_offset not in ("newest", "oldest"):
            raise ConfigurationError(
                f"initial_offset is 'newest' or 'oldest', got {initial_offset!r}.",
                field="initial_offset",
                value=initial_offset,
            )
        self.partitions = partitions
        self.initial_offset = initial_offset
        self.component_retry_interval = component_retry_interval
        self._topics: dict[tuple[str, str], _Topic] = {}
        self._log: list[Record] = []
        self._committed: dict[tuple[str, str, str, int], int] = {}
        self._sidecars: dict[str, Sidecar] = {}
        self._event = asyncio.Event()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # --- topics and records -----------------------------------------------------------------

    def create_topic(self, pubsub: str, topic: str, partitions: int | None = None) -> None:
        """Create `topic` with `partitions` partitions (default: the broker's), if it is new."""
        if (pubsub, topic) not in self._topics:
            count = partitions or self.partitions
            self._topics[pubsub, topic] = _Topic(
                partitions=[[] for _ in range(count)], next_partition=itertools.cycle(range(count))
            )

    def partition_count(self, pubsub: str, topic: str) -> int:
        """The partitions of `topic` (created on first use)."""
        self.create_topic(pubsub, topic)
        return len(self._topics[pubsub, topic].partitions)

    def produce(self, pubsub: str, topic: str, value: bytes, metadata: Mapping[str, str]) -> Record:
        """Append a record, as Dapr's Kafka producer does with a publish request.

        Every metadata key becomes a record header; `partitionKey` (or `__key`) also sets the key,
        `partitionNumber` the partition.

        Raises:
            ValueError: `partitionNumber` is not a partition of the topic.
        """
        self.create_topic(pubsub, topic)
        state = self._topics[pubsub, topic]
        count = len(state.partitions)
        key = metadata.get("partitionKey") or metadata.get("__key") or None
        number = metadata.get("partitionNumber")
        if number is not None:
            try:
                partition = int(number)
            except ValueError:
                raise ValueError(f"invalid partitionNumber {number!r}") from None
            if not 0 <= partition < count:
                raise ValueError(
                    f"partition {partition} does not exist: topic {topic} has {count} partition(s)"
                )
        elif key is not None:
            hashed = _fnv1a_32(key.encode("utf-8"))
            signed = hashed - (1 << 32) if hashed >= 1 << 31 else hashed
            partition = abs(signed) % count
        else:
            partition = next(state.next_partition)
        log = state.partitions[partition]
        record = Record(
            pubsub=pubsub,
            topic=topic,
            partition=partition,
            offset=len(log),
            key=key,
            value=bytes(value),
            headers=MappingProxyType(dict(metadata)),
            timestamp_ms=int(time.time() * 1000),
        )
        log.append(record)
        self._log.append(record)
        self.notify_change()
        return record

    def messages(self, pubsub: str, topic: str) -> list[Record]:
        """Every record of `topic`, in the order they were produced."""
        return [r for r in self._log if r.pubsub == pubsub and r.topic == topic]

    def partition_log(self, pubsub: str, topic: str, partition: int) -> list[Record]:
        """The records of one partition, by offset."""
        self.create_topic(pubsub, topic)
        return self._topics[pubsub, topic].partitions[partition]

    # --- consumer groups --------------------------------------------------------------------

    def committed(self, group: str, pubsub: str, topic: str, partition: int) -> int | None:
        """The next offset `group` will read on a partition, or None if it never read it."""
        return self._committed.get((group, pubsub, topic, partition))

    def commit(self, group: str, pubsub: str, topic: str, partition: int, offset: int) -> None:
        """Record that `group` will next read `offset` on a partition."""
        self._committed[group, pubsub, topic, partition] = offset
        self.notify_change()

    def start_offset(self, group: str, pubsub: str, topic: str, partition: int) -> int:
        """Where `group` starts reading a partition: its committed offset, or `initial_offset`."""
        committed = self.committed(group, pubsub, topic, partition)
        if committed is not None:
            return committed
        start = (
            0
            if self.initial_offset == "oldest"
            else len(self.partition_log(pubsub, topic, partition))
        )
        self._committed[group, pubsub, topic, partition] = start
        return start

    def lag(self, group: str, pubsub: str, topic: str) -> int:
        """Records of `topic` that `group` has not processed yet (Kafka's consumer lag)."""
        total = 0
        for partition in range(self.partition_count(pubsub, topic)):
            end = len(self.partition_log(pubsub, topic, partition))
            committed = self.committed(group, pubsub, topic, partition)
            total += end - (end if committed is None else committed)
        return total

    def snapshot(self) -> BrokerSnapshot:
        """The offsets of every topic and consumer group now, by topic name.

        The pub/sub components of the emulator share this one broker, as components pointing
        at one Kafka cluster do; a topic name is one topic.
        """
        ends: dict[str, list[int]] = {}
        for (_, topic), state in list(self._topics.items()):
            current = ends.setdefault(topic, [0] * len(state.partitions))
            for partition, log in enumerate(state.partitions):
                if partition < len(current):
                    current[partition] += len(log)
        committed: dict[tuple[str, str], dict[int, int]] = {}
        for (group, _, topic, partition), offset in list(self._committed.items()):
            offsets = committed.setdefault((group, topic), {})
            offsets[partition] = offsets.get(partition, 0) + offset
        members = dict.fromkeys(self._sidecars, 1)
        return BrokerSnapshot(ends, committed, members)

    # --- sidecars -----------------------------------------------------------------------------

    def register(self, sidecar: Sidecar) -> None:
        """Make `sidecar` reachable by its app id (done by `Sidecar.start`).

        Raises:
            ConfigurationError: another running sidecar serves the same app id.
        """
        current = self._sidecars.get(sidecar.app_id)
        if current is not None and current is not sidecar:
            raise ConfigurationError(
                f"app id {sidecar.app_id!r} is already served by another sidecar on this broker; "
                "stop it first (replicas of one app are not emulated).",
                field="app_id",
                value=sidecar.app_id,
            )
        self._sidecars[sidecar.app_id] = sidecar
        self.notify_change()

    def unregister(self, sidecar: Sidecar) -> None:
        """Forget `sidecar` (done by `Sidecar.stop`)."""
        if self._sidecars.get(sidecar.app_id) is sidecar:
            del self._sidecars[sidecar.app_id]
        self.notify_change()

    def resolve(self, app_id: str) -> Sidecar | None:
        """The running sidecar of `app_id`, if any."""
        return self._sidecars.get(app_id)

    @property
    def sidecars(self) -> list[Sidecar]:
        """The running sidecars."""
        return list(self._sidecars.values())

    # --- waiting ------------------------------------------------------------------------------

    def notify_change(self) -> None:
        """Wake whatever waits on the emulator (`wait_for`, `idle`); called after every change."""
        # The next waiters get a fresh event.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        if self._event_loop is not loop:
            # An event is bound to the loop that first waits on it: a broker kept across the
            # event loops of several tests needs a fresh one in each.
            self._event, self._event_loop = asyncio.Event(), loop
        while not predicate():
            await self._event.wait()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = 10.0) -> None:
        """Wait until `predicate()` is true, checked after every change in the emulator.

        A change is a record appended, a delivery attempt, a job trigger, an offset committed...

        Raises:
            TimeoutError: still false after `timeout` seconds (None: wait for ever).
        """
        if timeout is None:
            await self._until(predicate)
            return
        try:
            await asyncio.wait_for(self._until(predicate), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"condition still false after {timeout:g}s") from None

    def busy(self) -> list[str]:
        """What keeps the sidecars busy: deliveries under way or due, job triggers due or retried."""
        return [item for sidecar in self._sidecars.values() for item in sidecar.busy()]

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every delivery, retry, dead-lettering and due job trigger has settled.

        Triggers of jobs scheduled later are not waited for. A partition blocked by a message
        that keeps failing never settles: wait for something more specific with `wait_for`.

        Raises:
            TimeoutError: still busy after `timeout` seconds; the message says with what.
        """
        try:
            await asyncio.wait_for(self._until(lambda: not self.busy()), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"the emulator is still busy after {timeout:g}s: " + "; ".join(self.busy())
            ) from None
