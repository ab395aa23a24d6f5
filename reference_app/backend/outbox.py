"""The transactional outbox: events are rows written with the change, published once the sidecar takes them.

A request writes its task change and its event rows in one transaction, so an event exists
if and only if the change does. Right after the commit the request publishes its rows itself,
inside its own trace; a row is deleted only once the sidecar has accepted it. What the sidecar
refuses (or a crash leaves behind) stays in the table, and a background loop publishes it
later with a growing backoff, in a new trace linked to the request's. The CloudEvent id is the
row's uuid, the same on every attempt, so consumers deduplicate a repeat.

Events of one task leave in the order they were written: a row is not published while an
older row of the same task is still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import CursorResult, delete, func, or_, select, update

from reference_app.backend.db import Database, is_unavailable
from reference_app.backend.models import OutboxEvent
from reference_app.common.events import PUBSUB, Event
from reference_app.common.metrics import OUTBOX_PENDING, OUTBOX_PUBLISH_FAILURES
from todo_observability import get_logger, get_request_id
from todo_observability.dapr import DaprError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from reference_app.backend.settings import Settings
    from todo_observability import Observability
    from todo_observability.dapr import DaprClient

log = get_logger(__name__)
_propagator = TraceContextTextMapPropagator()


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(timezone.utc)


class Outbox:
    """Writes events with the change they announce and publishes them through the sidecar.

    Args:
        db: The database the rows live in.
        settings: Retry, lease and batch settings.
        observability: Where `outbox_pending_events` and `outbox_publish_failures_total` go.
    """

    def __init__(self, db: Database, settings: Settings, observability: Observability):
        self.db = db
        self.settings = settings
        self.metrics = observability.metrics
        self.metrics.register(OUTBOX_PENDING)
        self.metrics.register(OUTBOX_PUBLISH_FAILURES)
        self.pending = self.metrics.gauge(OUTBOX_PENDING)
        self.dapr: DaprClient | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        session: AsyncSession,
        *,
        topic: str,
        event_type: str,
        payload: Event,
        task_id: int,
    ) -> OutboxEvent:
        """Add an event to `session`'s transaction, reserved for the request writing it.

        The current trace context is stored with it, so that a later retry can link to it.
        """
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        now = utcnow()
        row = OutboxEvent(
            event_id=str(uuid.uuid4()),
            pubsub=PUBSUB,
            topic=topic,
            event_type=event_type,
            task_id=task_id,
            payload=json.dumps(payload.model_dump(mode="json"), separators=(",", ":")),
            traceparent=carrier.get("traceparent"),
            tracestate=carrier.get("tracestate") or None,
            request_id=get_request_id(),
            created_at=now,
            attempts=0,
            # Reserved for the request, which publishes it right after the commit; should the
            # process die before that, the reservation expires and the loop takes it.
            claimed_until=now + timedelta(seconds=self.settings.outbox_lease),
        )
        session.add(row)
        return row

    # -- publishing right after the commit --------------------------------------------------

    async def publish_now(self, rows: Sequence[OutboxEvent]) -> None:
        """Publish the rows a request just committed, in its trace; never raises.

        What the sidecar refuses, or what cannot be published yet because an older event of
        the same task is waiting, is released to the background loop.
        """
        if not rows:
            return
        self.pending.inc(len(rows))
        remaining = list(rows)
        try:
            if await self._older_waiting(remaining):
                log.info(
                    "outbox: older events of the task are waiting; these follow them",
                    extra={"task_id": remaining[0].task_id, "events": len(remaining)},
                )
            else:
                while remaining and await self._publish(remaining[0], linked=False):
                    remaining.pop(0)
            if remaining:
                await self._release(remaining)
        except Exception as exc:  # noqa: BLE001 - the change is committed: the request must succeed
            log.warning(
                "outbox: could not finish publishing after the commit; the retry loop will",
                extra={"error": _describe(exc), "events": len(remaining)},
            )
        if remaining:
            self.wake()

    async def _older_waiting(self, rows: Sequence[OutboxEvent]) -> bool:
        first_by_task: dict[int, int] = {}
        for row in rows:
            first_by_task.setdefault(row.task_id, row.seq)
        async with self.db.sessions() as session:
            for task_id, seq in first_by_task.items():
                older = await session.scalar(
                    select(OutboxEvent.seq)
                    .where(OutboxEvent.task_id == task_id, OutboxEvent.seq < seq)
                    .limit(1)
                )
                if older is not None:
                    return True
        return False

    # -- publishing what is left: the background loop ----------------------------------------

    def start(self, dapr: DaprClient) -> None:
        """Publish through `dapr` from now on, and start the retry loop (in the lifespan)."""
        self.dapr = dapr
        self._stopping = False
        self._wake = asyncio.Event()
        self._wake.set()  # sweep at once: events a previous run left behind go first
        self._task = asyncio.create_task(self._run(), name="backend-outbox")

    async def stop(self) -> None:
        """Stop the retry loop; what is still pending stays in the table for the next start."""
        # The flag ends the loop even if a library on its path swallows the cancellation
        # (a database driver cleaning up a connection can).
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Ask the loop to sweep now (unless it is backing off from a failure)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = 0.0
        while not self._stopping:
            if backoff:
                # A wake-up does not cut a backoff short: the sidecar just refused.
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError before 3.11
                    await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll)
            self._wake.clear()
            try:
                failed, more = await self.sweep()
            except Exception as exc:  # the loop must outlive any one sweep
                if is_unavailable(exc):
                    log.warning(
                        "outbox: the database is unavailable; retrying",
                        extra={"error": _describe(exc)},
                    )
                else:
                    log.exception("outbox: sweep failed; retrying")
                failed, more = True, False
            if failed:
                backoff = min(
                    backoff * 2 if backoff else self.settings.outbox_retry,
                    self.settings.outbox_max_backoff,
                )
            else:
                backoff = 0.0
                if more:
                    self._wake.set()

    async def sweep(self) -> tuple[bool, bool]:
        """Publish the rows nobody holds, oldest first: (whether one failed, whether more remain)."""
        await self.db.ensure_schema()
        now = utcnow()
        free = or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now)
        async with self.db.sessions() as session:
            rows = list(
                await session.scalars(
                    select(OutboxEvent)
                    .where(free)
                    .order_by(OutboxEvent.seq)
                    .limit(self.settings.outbox_batch)
                )
            )
            # A task whose older event is being published elsewhere must wait for it.
            held = set(
                await session.scalars(
                    select(OutboxEvent.task_id).where(OutboxEvent.claimed_until >= now).distinct()
                )
            )
            total = await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0
        self.pending.set(total)
        blocked, failed, published = held, False, 0
        for row in rows:
            if row.task_id in blocked:
                continue
            if not await self._claim(row, now):
                blocked.add(row.task_id)
                continue
            if await self._publish(row, linked=True):
                published += 1
            else:
                await self._release([row])
                blocked.add(row.task_id)
                failed = True
        if published:
            log.info(
                "outbox: delivered events left over",
                extra={"published": published, "pending": total - published},
            )
        # A full batch that made progress may have more behind it; one that made none would spin.
        return failed, published > 0 and len(rows) == self.settings.outbox_batch

    async def _claim(self, row: OutboxEvent, now: datetime) -> bool:
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.seq == row.seq,
                    or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now),
                )
                .values(claimed_until=now + timedelta(seconds=self.settings.outbox_lease))
            )
        return cast("CursorResult[Any]", result).rowcount == 1

    # -- one publish ----------------------------------------------------------------------------

    async def _publish(self, row: OutboxEvent, *, linked: bool) -> bool:
        """Publish one held row; delete it once the sidecar accepted it. False if refused."""
        assert self.dapr is not None, "Outbox.start() was not called (the app's lifespan)"
        links = _link(row) if linked else []
        try:
            await self.dapr.publish(
                row.pubsub,
                row.topic,
                json.loads(row.payload),
                event_type=row.event_type,
                event_id=row.event_id,
                partition_key=str(row.task_id),
                links=links,
            )
        except DaprError as exc:
            row.attempts += 1
            row.last_error = str(exc)[:2000]
            self.metrics.child(OUTBOX_PUBLISH_FAILURES, row.topic).inc()
            log.warning(
                "outbox: publish failed, kept for retry",
                extra={
                    "topic": row.topic,
                    "event_id": row.event_id,
                    "event_type": row.event_type,
                    "task_id": row.task_id,
                    "attempts": row.attempts,
                    "error": str(exc),
                },
            )
            return False
        async with self.db.sessions() as session, session.begin():
            await session.execute(delete(OutboxEvent).where(OutboxEvent.seq == row.seq))
        self.pending.dec()
        log.debug(
            "outbox: event published",
            extra={"topic": row.topic, "event_id": row.event_id, "task_id": row.task_id},
        )
        if linked:
            log.info(
                "outbox: event published on retry",
                extra={
                    "topic": row.topic,
                    "event_id": row.event_id,
                    "task_id": row.task_id,
                    "attempts": row.attempts + 1,
                    "origin_request_id": row.request_id,
                    "origin_traceparent": row.traceparent,
                },
            )
        return True

    async def _release(self, rows: Sequence[OutboxEvent]) -> None:
        """Give rows back to the loop, recording the failed attempt of the first one."""
        async with self.db.sessions() as session, session.begin():
            for row in rows:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.seq == row.seq)
                    .values(claimed_until=None, attempts=row.attempts, last_error=row.last_error)
                )


def _link(row: OutboxEvent) -> list[trace.Link]:
    """A link to the span of the request that wrote the row (a retry runs in a new trace)."""
    if not row.traceparent:
        return []
    context = _propagator.extract(
        {"traceparent": row.traceparent, "tracestate": row.tracestate or ""}
    )
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return []
    return [trace.Link(span_context, {"todo.outbox.event_id": row.event_id})]


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split())[:500]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
