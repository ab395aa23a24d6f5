"""Handler outcomes, dead-letter parking and replay: nothing delivered is ever lost.

A message handler ends in one of three outcomes, answered to the sidecar as
Dapr's `{"status": ...}` (DAPR.md §2.3):

- it returns: **SUCCESS**, the message is acknowledged;
- it raises `Retry` or any unexpected exception: **RETRY**, the sidecar delivers
  it again under its resiliency policy, then dead-letters it;
- it raises `Drop` (or a validation error): **DROP**, the sidecar dead-letters it.

Dapr sends nothing about *why* with a dead-lettered message (§2.5), so the SDK
writes a `FailureNote` for every failure; when the message arrives on the
dead-letter topic, the note gives the reason it is parked under. Parked messages
keep their full CloudEvent, delivery metadata and trace context, and leave the
park only after a replay was accepted by the sidecar.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry.trace import Link

from todo_observability._propagate import propagate
from todo_observability.exceptions import ObservabilityError, _describe
from todo_observability.metrics import DEAD_LETTER_REPLAYS, DEAD_LETTERS_PARKED, MetricSet

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from todo_observability.dapr.client import DaprClient

__all__ = [
    "DaprStateDeadLetterStore",
    "DeadLetterStore",
    "DeadLetters",
    "Drop",
    "FailureNote",
    "HandlerOutcome",
    "InMemoryDeadLetterStore",
    "NotReplayable",
    "Outcome",
    "ParkedMessage",
    "Retry",
    "SqlDeadLetterStore",
    "classify",
]

REPLAYS_HEADER = "todo-obs-replays"
"""Publish metadata (a broker header on delivery) counting the replays of a message."""
MAX_DETAIL = 500
"""Characters of an error's text kept as the detail of a failure."""


class Outcome(str, enum.Enum):
    """What the handler of a message answers the sidecar (Dapr's status strings)."""

    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    DROP = "DROP"

    @property
    def label(self) -> str:
        """The value of the `outcome` label of the messaging and job metrics (`success`, ...)."""
        return self.value.lower()


class HandlerOutcome(ObservabilityError):
    """Base of the exceptions a handler raises to choose a non-success outcome.

    Args:
        reason: A short, stable code (`smtp_unavailable`, `invalid_rrule`): a metric label.
        detail: Free text for logs, spans and the parked record.
    """

    outcome: Outcome

    def __init__(self, reason: str, detail: str = ""):
        if not reason:
            raise ValueError(
                f"{type(self).__name__}() needs a reason code, such as 'invalid_rrule'."
            )
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Retry(HandlerOutcome):
    """The message failed for a reason that may pass: deliver it again (RETRY)."""

    outcome = Outcome.RETRY


class Drop(HandlerOutcome):
    """The message can never succeed: dead-letter it (DROP)."""

    outcome = Outcome.DROP


def _is_validation_error(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__name__ == "ValidationError" and kind.__module__.split(".", 1)[0] in (
        "pydantic",
        "pydantic_core",
    )


def classify(
    exc: BaseException, drop_on: Sequence[type[BaseException]] = ()
) -> tuple[Outcome, str, str]:
    """(outcome, reason, detail) for an exception a handler raised.

    `Retry`/`Drop` carry their own; a pydantic `ValidationError` or an instance
    of `drop_on` is a DROP with reason `validation` (or the class name); anything
    else is a RETRY with the exception's class name as the reason.
    """
    if isinstance(exc, HandlerOutcome):
        return exc.outcome, str(exc.reason), str(exc.detail)
    name = type(exc).__name__
    detail = f"{name}: {_describe(exc)}"[:MAX_DETAIL]
    if _is_validation_error(exc):
        return Outcome.DROP, "validation", detail
    if drop_on and isinstance(exc, tuple(drop_on)):
        return Outcome.DROP, name, detail
    return Outcome.RETRY, name, detail


@dataclass(frozen=True)
class FailureNote:
    """Why a delivery of a message failed, written when the handler answered RETRY or DROP.

    Attributes:
        outcome: `RETRY` or `DROP`.
        reason: The reason code.
        detail: The error's text.
        attempt: The delivery attempt that failed (1 for the first).
        at: When (seconds since the epoch).
    """

    outcome: str
    reason: str
    detail: str
    attempt: int
    at: float


@dataclass(frozen=True)
class ParkedMessage:
    """A dead-lettered message, kept with everything needed to understand and replay it.

    Attributes:
        park_id: `<pubsub>/<origin topic>/<CloudEvent id>`: unique, stable across redeliveries.
        event_id: The CloudEvent id (kept on replay, so idempotency holds).
        pubsub: The pub/sub component.
        origin_topic: The topic the message was first published to.
        dead_letter_topic: The topic it arrived on.
        reason: The reason recorded when it failed (`unrecorded` when the SDK saw no
            failure: the sidecar dropped it itself, for an expired TTL or no matching route).
        detail: The recorded error text.
        attempts: Delivery attempts the SDK saw.
        event: The full CloudEvent; None when the body was not one (see `body`).
        body: The delivered body as text, when it was not a valid CloudEvent.
        metadata: The delivery metadata (broker headers: key, partition, offset, ...).
        traceparent: The producer's trace context (from the CloudEvent).
        tracestate: Its tracestate.
        parked_at: When it was parked (seconds since the epoch).
        replays: How many replays were attempted.
        kind: `message` (a dead-lettered pub/sub message) or `job` (a job trigger whose
            handler dropped it: `park_id` is `job/<name>`, `origin_topic` is `job/<type>`).
        job_data: For a job: the data it was scheduled with, rescheduled on replay.
    """

    park_id: str
    event_id: str
    pubsub: str
    origin_topic: str
    dead_letter_topic: str
    reason: str
    detail: str = ""
    attempts: int = 0
    event: dict[str, Any] | None = None
    body: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    tracestate: str | None = None
    parked_at: float = 0.0
    replays: int = 0
    kind: str = "message"
    job_data: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParkedMessage:
        """The message `to_dict` described."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def park_key(pubsub: str, topic: str, event_id: str) -> str:
    """The key of a message's failure notes and parked record."""
    return f"{pubsub}/{topic}/{event_id}"


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where failure notes and parked messages live. Every method may be called concurrently."""

    async def note_failure(self, key: str, note: FailureNote) -> None:
        """Record the latest failure of the message `key`."""

    async def pop_failure(self, key: str) -> FailureNote | None:
        """The latest failure note of `key`, forgotten."""

    async def park(self, message: ParkedMessage) -> None:
        """Keep `message` (replacing a record of the same `park_id`)."""

    async def get(self, park_id: str) -> ParkedMessage | None:
        """The parked message `park_id`, or None."""

    async def list(
        self, *, origin_topic: str | None = None, limit: int = 100
    ) -> list[ParkedMessage]:
        """Parked messages, oldest first."""

    async def remove(self, park_id: str) -> bool:
        """Forget `park_id`; False when it was not parked."""

    async def counts(self) -> dict[str, int]:
        """How many messages are parked, by origin topic."""


class InMemoryDeadLetterStore:
    """A store in process memory: for tests and single-process services.

    Failure notes are bounded (the oldest are forgotten first); parked messages are not.
    """

    def __init__(self, max_notes: int = 100_000):
        self.max_notes = max_notes
        self._notes: OrderedDict[str, FailureNote] = OrderedDict()
        self._parked: dict[str, ParkedMessage] = {}

    async def note_failure(self, key: str, note: FailureNote) -> None:
        """Record the latest failure of `key`."""
        self._notes[key] = note
        self._notes.move_to_end(key)
        while len(self._notes) > self.max_notes:
            self._notes.popitem(last=False)

    async def pop_failure(self, key: str) -> FailureNote | None:
        """The latest note of `key`, forgotten."""
        return self._notes.pop(key, None)

    async def park(self, message: ParkedMessage) -> None:
        """Keep `message`."""
        self._parked[message.park_id] = message

    async def get(self, park_id: str) -> ParkedMessage | None:
        """The parked message, or None."""
        return self._parked.get(park_id)

    async def list(
        self, *, origin_topic: str | None = None, limit: int = 100
    ) -> list[ParkedMessage]:
        """Parked messages, oldest first."""
        found = [m for m in self._parked.values() if origin_topic in (None, m.origin_topic)]
        return sorted(found, key=lambda m: m.parked_at)[:limit]

    async def remove(self, park_id: str) -> bool:
        """Forget `park_id`."""
        return self._parked.pop(park_id, None) is not None

    async def counts(self) -> dict[str, int]:
        """Parked messages by origin topic."""
        counts: dict[str, int] = {}
        for message in self._parked.values():
            counts[message.origin_topic] = counts.get(message.origin_topic, 0) + 1
        return counts


class SqlDeadLetterStore:
    """A store in a SQL database through SQLAlchemy's asyncio engine (extra `sql`).

    Two tables, created on first use: `todo_obs_dead_letters` and
    `todo_obs_failure_notes`. Give it the service's own engine to keep dead
    letters next to the data they concern.

    Args:
        engine: An `sqlalchemy.ext.asyncio.AsyncEngine`.
        table_prefix: Prefix of the two table names.
    """

    def __init__(self, engine: Any, *, table_prefix: str = "todo_obs_"):
        try:
            import sqlalchemy as sa
        except ImportError:
            from todo_observability.exceptions import MissingExtraError

            raise MissingExtraError("SqlDeadLetterStore", "sql", "sqlalchemy") from None
        self.engine = engine
        self._sa = sa
        meta = sa.MetaData()
        self._parked = sa.Table(
            f"{table_prefix}dead_letters",
            meta,
            sa.Column("park_id", sa.String(512), primary_key=True),
            sa.Column("origin_topic", sa.String(255), nullable=False, index=True),
            sa.Column("parked_at", sa.Float, nullable=False),
            sa.Column("record", sa.Text, nullable=False),
        )
        self._notes = sa.Table(
            f"{table_prefix}failure_notes",
            meta,
            sa.Column("key", sa.String(512), primary_key=True),
            sa.Column("noted_at", sa.Float, nullable=False),
            sa.Column("note", sa.Text, nullable=False),
        )
        self._meta = meta
        self._ready = False
        self._lock = asyncio.Lock()

    async def _tables(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                async with self.engine.begin() as conn:
                    await conn.run_sync(self._meta.create_all)
                self._ready = True

    async def _upsert(self, table: Any, key_column: str, key: str, values: dict[str, Any]) -> None:
        sa = self._sa
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                sa.update(table).where(table.c[key_column] == key).values(**values)
            )
            if updated.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(sa.insert(table).values({key_column: key, **values}))
                except sa.exc.IntegrityError:
                    await conn.execute(
                        sa.update(table).where(table.c[key_column] == key).values(**values)
                    )

    async def note_failure(self, key: str, note: FailureNote) -> None:
        """Record the latest failure of `key`."""
        await self._tables()
        await self._upsert(
            self._notes, "key", key, {"noted_at": note.at, "note": json.dumps(asdict(note))}
        )

    async def pop_failure(self, key: str) -> FailureNote | None:
        """The latest note of `key`, forgotten."""
        await self._tables()
        sa, table = self._sa, self._notes
        async with self.engine.begin() as conn:
            row = (await conn.execute(sa.select(table.c.note).where(table.c.key == key))).first()
            if row is None:
                return None
            await conn.execute(sa.delete(table).where(table.c.key == key))
        return FailureNote(**json.loads(row[0]))

    async def park(self, message: ParkedMessage) -> None:
        """Keep `message`."""
        await self._tables()
        await self._upsert(
            self._parked,
            "park_id",
            message.park_id,
            {
                "origin_topic": message.origin_topic,
                "parked_at": message.parked_at,
                "record": json.dumps(message.to_dict()),
            },
        )

    async def get(self, park_id: str) -> ParkedMessage | None:
        """The parked message, or None."""
        await self._tables()
        sa, table = self._sa, self._parked
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(table.c.record).where(table.c.park_id == park_id))
            ).first()
        return ParkedMessage.from_dict(json.loads(row[0])) if row is not None else None

    async def list(
        self, *, origin_topic: str | None = None, limit: int = 100
    ) -> list[ParkedMessage]:
        """Parked messages, oldest first."""
        await self._tables()
        sa, table = self._sa, self._parked
        query = sa.select(table.c.record).order_by(table.c.parked_at).limit(limit)
        if origin_topic is not None:
            query = query.where(table.c.origin_topic == origin_topic)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ParkedMessage.from_dict(json.loads(row[0])) for row in rows]

    async def remove(self, park_id: str) -> bool:
        """Forget `park_id`."""
        await self._tables()
        sa, table = self._sa, self._parked
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(table).where(table.c.park_id == park_id))
        return bool(result.rowcount)

    async def counts(self) -> dict[str, int]:
        """Parked messages by origin topic."""
        await self._tables()
        sa, table = self._sa, self._parked
        query = sa.select(table.c.origin_topic, sa.func.count()).group_by(table.c.origin_topic)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {topic: int(count) for topic, count in rows}


def _flat(key: str) -> str:
    """`key` without '/', which the sidecar's state API cannot take in a key (reversible)."""
    return key.replace("~", "~7E").replace("/", "~2F")


class DaprStateDeadLetterStore:
    """A store in a Dapr state store, reached through the sidecar.

    Each parked message is one item (`<prefix>parked-<park_id>`, with `/` escaped); an index item
    lists them, updated with etag concurrency so concurrent parkers never lose
    an entry. Failure notes expire after `note_ttl_seconds`.

    Args:
        client: The sidecar client.
        store: The state store component name.
        prefix: Prefix of every key this store writes.
        note_ttl_seconds: How long failure notes are kept.
    """

    def __init__(
        self,
        client: DaprClient,
        store: str = "statestore",
        *,
        prefix: str = "todo-obs-dlq-",
        note_ttl_seconds: int = 7 * 24 * 3600,
    ):
        self.client = client
        self.store = store
        self.prefix = prefix
        self.note_ttl_seconds = note_ttl_seconds
        self._index = f"{prefix}index"

    async def note_failure(self, key: str, note: FailureNote) -> None:
        """Record the latest failure of `key`."""
        await self.client.save_state(
            self.store,
            f"{self.prefix}note-{_flat(key)}",
            asdict(note),
            ttl_seconds=self.note_ttl_seconds,
        )

    async def pop_failure(self, key: str) -> FailureNote | None:
        """The latest note of `key`, forgotten."""
        value, _etag = await self.client.get_state(self.store, f"{self.prefix}note-{_flat(key)}")
        if value is None:
            return None
        await self.client.delete_state(self.store, f"{self.prefix}note-{_flat(key)}")
        return FailureNote(**value)

    async def _update_index(self, add: str | None = None, remove: str | None = None) -> bool:
        for _ in range(50):
            value, etag = await self.client.get_state(self.store, self._index)
            ids: list[str] = list(value or [])
            before = list(ids)
            if add is not None and add not in ids:
                ids.append(add)
            if remove is not None and remove in ids:
                ids.remove(remove)
            if ids == before:
                return remove is None or remove in before
            if await self.client.save_state(
                self.store, self._index, ids, etag=etag, first_write=True
            ):
                return True
        raise ObservabilityError(
            f"the dead-letter index {self._index!r} in state store {self.store!r} kept changing "
            "under concurrent writers; try again."
        )

    async def park(self, message: ParkedMessage) -> None:
        """Keep `message`."""
        await self.client.save_state(
            self.store, f"{self.prefix}parked-{_flat(message.park_id)}", message.to_dict()
        )
        await self._update_index(add=message.park_id)

    async def get(self, park_id: str) -> ParkedMessage | None:
        """The parked message, or None."""
        value, _etag = await self.client.get_state(
            self.store, f"{self.prefix}parked-{_flat(park_id)}"
        )
        return ParkedMessage.from_dict(value) if value is not None else None

    async def list(
        self, *, origin_topic: str | None = None, limit: int = 100
    ) -> list[ParkedMessage]:
        """Parked messages, oldest first."""
        ids, _etag = await self.client.get_state(self.store, self._index)
        found = [message for park_id in ids or () if (message := await self.get(park_id))]
        found = [m for m in found if origin_topic in (None, m.origin_topic)]
        return sorted(found, key=lambda m: m.parked_at)[:limit]

    async def remove(self, park_id: str) -> bool:
        """Forget `park_id`."""
        existed = await self._update_index(remove=park_id)
        await self.client.delete_state(self.store, f"{self.prefix}parked-{_flat(park_id)}")
        return existed

    async def counts(self) -> dict[str, int]:
        """Parked messages by origin topic."""
        counts: dict[str, int] = {}
        for message in await self.list(limit=1_000_000):
            counts[message.origin_topic] = counts.get(message.origin_topic, 0) + 1
        return counts


class NotReplayable(ObservabilityError):
    """A parked message cannot be republished (it was never a valid CloudEvent)."""


class DeadLetters:
    """The park: list, show, replay and purge dead-lettered messages.

    Replay republishes a message to its origin topic with its original CloudEvent
    id, type, source and data, in a PRODUCER span linked to the original trace;
    the message leaves the park only once the sidecar accepted the publish.

    A replay reports what became of each message: `published` (the sidecar accepted it),
    and, when asked to wait, `processed` (the idempotency store saw it through) or `parked
    again (<reason>)`.

    Args:
        store: Where parked messages live.
        client: The sidecar client replays publish through.
        metrics: The metric set the parked gauge and replay counter live in.
        idempotency: The subscriber's idempotency store, if it can say that a key was
            processed (`processed(key)`); without one a wait sees only a message parked again.
    """

    def __init__(
        self,
        store: DeadLetterStore,
        client: DaprClient | None,
        metrics: MetricSet,
        *,
        idempotency: object | None = None,
    ):
        self.store = store
        self.client = client
        self.metrics = metrics
        processed = getattr(idempotency, "processed", None)
        self._processed: Callable[[str], Awaitable[bool]] | None = (
            processed if callable(processed) else None
        )
        self._known_topics: set[str] = set()

    async def refresh_gauge(self) -> dict[str, int]:
        """Set `messaging_dead_letters_parked` from the store; the counts by origin topic."""
        counts = await self.store.counts()
        for topic in self._known_topics | set(counts):
            self.metrics.child(DEAD_LETTERS_PARKED, topic).set(counts.get(topic, 0))
        self._known_topics |= set(counts)
        return counts

    async def list(
        self, *, origin_topic: str | None = None, limit: int = 100
    ) -> list[ParkedMessage]:
        """Parked messages, oldest first."""
        return await self.store.list(origin_topic=origin_topic, limit=limit)

    async def get(self, park_id: str) -> ParkedMessage | None:
        """One parked message."""
        return await self.store.get(park_id)

    async def replay(self, park_id: str) -> ParkedMessage:
        """Republish `park_id` to its origin topic; remove it from the park once accepted.

        Raises:
            KeyError: nothing is parked under `park_id`.
            NotReplayable: the message was not a valid CloudEvent.
            DaprError: the sidecar refused the publish (the message stays parked).

        A parked job is scheduled again instead, due now, with its name and data.
        """
        from todo_observability.dapr.cloudevents import decode_data

        message = await self.store.get(park_id)
        if message is None:
            raise KeyError(park_id)
        if message.kind == "job":
            return await self._reschedule(message)
        if message.event is None:
            raise NotReplayable(
                f"{park_id} was not a valid CloudEvent when it arrived ({message.detail}); "
                "inspect it with `todo-obs dlq show` and purge it once handled."
            )
        if self.client is None:
            raise ObservabilityError("replay needs a DaprClient: pass client= to Subscriptions.")
        event = message.event
        links = _links_to(message)
        await self.store.park(replace(message, replays=message.replays + 1))
        metadata = {
            f"cloudevent.{key}": event[key]
            for key in ("source", "subject")
            if isinstance(event.get(key), str) and event[key]
        }
        # A broker header on delivery: if the replay is dead-lettered again, its new
        # parked record still knows how many replays it had.
        metadata[REPLAYS_HEADER] = str(message.replays + 1)
        data = decode_data(event)
        outcome = "error"
        try:
            await self.client.publish(
                message.pubsub,
                message.origin_topic,
                data,
                content_type=event.get("datacontenttype") or None,
                event_id=message.event_id,
                event_type=event.get("type"),
                metadata=metadata,
                links=links,
            )
            outcome = "success"
        finally:
            self.metrics.child(DEAD_LETTER_REPLAYS, message.origin_topic, outcome).inc()
        await self._remove_unless_parked_again(message)
        return message

    async def _reschedule(self, message: ParkedMessage) -> ParkedMessage:
        """Schedule a parked job again, due now, under its name and with its data."""
        if self.client is None:
            raise ObservabilityError("replay needs a DaprClient: pass client= to Subscriptions.")
        await self.store.park(replace(message, replays=message.replays + 1))
        outcome = "error"
        try:
            await self.client.schedule_job(
                message.event_id,
                data=message.job_data,
                due_time="0s",
                overwrite=True,
                links=_links_to(message),
            )
            outcome = "success"
        finally:
            self.metrics.child(DEAD_LETTER_REPLAYS, message.origin_topic, outcome).inc()
        await self._remove_unless_parked_again(message)
        return message

    async def _remove_unless_parked_again(self, message: ParkedMessage) -> None:
        """Take the replayed record out of the park, unless the replay already came back to it.

        A replay that fails at once can be dead-lettered and parked again before the sidecar's
        answer to the publish arrives: that newer record (its own `parked_at`) must stay.
        """
        current = await self.store.get(message.park_id)
        if current is not None and current.parked_at == message.parked_at:
            await self.store.remove(message.park_id)
        await self.refresh_gauge()

    async def fate(self, message: ParkedMessage, *, wait: float) -> str:
        """What became of `message` since it was replayed, looking for at most `wait` seconds.

        `processed`, `parked again (<reason>)`, or `published` when neither was seen in time.
        """
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            current = await self.store.get(message.park_id)
            if current is not None and current.parked_at != message.parked_at:
                return f"parked again ({current.reason})"
            if (
                message.kind != "job"
                and self._processed is not None
                and await self._processed(message.park_id)
            ):
                return "processed"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "published"
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    async def replay_all(
        self, *, origin_topic: str | None = None, limit: int = 1000, wait: float = 0.0
    ) -> dict[str, str]:
        """Replay every parked message (of `origin_topic`); what became of each, by park id.

        Each value is `published`, `processed`, `parked again (<reason>)` (see `fate`; the
        last two only when `wait` seconds are given to watch), or why the replay failed.
        """
        results: dict[str, str] = {}
        published: list[ParkedMessage] = []
        for message in await self.store.list(origin_topic=origin_topic, limit=limit):
            try:
                published.append(await self.replay(message.park_id))
                results[message.park_id] = "published"
            except (ObservabilityError, KeyError) as exc:  # noqa: PERF203 - one replay failing must not stop the others
                results[message.park_id] = f"failed: {exc}"
        if wait > 0 and published:
            deadline = time.monotonic() + wait
            fates = await asyncio.gather(
                *(self.fate(m, wait=max(0.0, deadline - time.monotonic())) for m in published)
            )
            results.update((m.park_id, fate) for m, fate in zip(published, fates, strict=True))
        return results

    async def purge(self, park_id: str) -> bool:
        """Delete `park_id` from the park for good; False when it was not there."""
        removed = await self.store.remove(park_id)
        await self.refresh_gauge()
        return removed


def _links_to(message: ParkedMessage) -> list[Link]:
    """A link to the parked message's original trace, when it has one."""
    if not message.traceparent:
        return []
    carrier = {"traceparent": message.traceparent}
    if message.tracestate:
        carrier["tracestate"] = message.tracestate
    original = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    if not original.is_valid:
        return []
    return [Link(original, {"messaging.link.source": "dead_letter_replay"})]


def body_text(body: bytes) -> str:
    """A delivered body as text for the park: UTF-8, else base64 prefixed by `base64:`."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")


def now() -> float:
    """Seconds since the epoch (patchable in tests)."""
    return time.time()
