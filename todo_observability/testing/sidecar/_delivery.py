"""Delivering a topic's records to a subscriber app, as daprd's subscription handler does.

One task per subscription and partition reads records in offset order. For each message:
decode the CloudEvent (or wrap a raw payload), drop it if expired, pick the route, POST it to the
app, read the answer (§2.3 of the protocol brief), retry within the resiliency policy, then
dead-letter it or hand the error back to the broker, which redelivers it, holding back the
partition.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.trace import Span, SpanKind

from todo_observability.testing.sidecar import _json
from todo_observability.testing.sidecar._cel import CelError
from todo_observability.testing.sidecar._cloudevents import (
    CLOUD_EVENT_CONTENT_TYPE,
    has_expired,
    raw_payload_event,
)
from todo_observability.testing.sidecar._tracing import (
    SidecarTracing,
    parse_traceparent,
    trace_headers,
)
from todo_observability.testing.sidecar.broker import Broker, Record
from todo_observability.testing.sidecar.records import (
    AttemptOutcome,
    DeliveryAttempt,
    MessageResult,
    ResultOutcome,
    ResultReason,
)

if TYPE_CHECKING:
    import logging

    from todo_observability.testing.sidecar.retry import RetryPolicy
    from todo_observability.testing.sidecar.subscriptions import Subscription

__all__ = ["Consumer", "DeliveryContext", "http_headers_from_metadata"]

_NOT_FORWARDED = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

CallApp = Callable[[str, str, Mapping[str, str], bytes], Awaitable[httpx.Response]]
Publish = Callable[[str, str, bytes, Mapping[str, str]], Record]


@dataclass
class DeliveryContext:
    """What a consumer needs from its sidecar."""

    app_id: str
    broker: Broker
    tracing: SidecarTracing
    retry_policy: RetryPolicy | None
    dead_letter_on_404: bool
    app_api_token: str | None
    call_app: CallApp
    publish: Publish
    record_attempt: Callable[[DeliveryAttempt], None]
    record_result: Callable[[MessageResult], None]
    log: logging.LoggerAdapter[logging.Logger]


def consumer_metadata(record: Record) -> dict[str, str]:
    """The message metadata daprd gets from Dapr's Kafka consumer, then `pubsubName`.

    Record headers come after the consumer's own keys: a dead-lettered record keeps the
    `__topic` and `__offset` of the original.
    """
    metadata: dict[str, str] = {}
    if record.key is not None:
        metadata["__key"] = record.key
    metadata["__offset"] = str(record.offset)
    metadata["__topic"] = record.topic
    metadata["__timestamp"] = str(record.timestamp_ms)
    metadata["__partition"] = str(record.partition)
    metadata.update(record.headers)
    metadata["pubsubName"] = record.pubsub
    return metadata


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing one with the same name in another letter case."""
    for existing in [key for key in headers if key.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def http_headers_from_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The HTTP headers daprd sends for message metadata.

    Hop-by-hop, length and `grpc-*` keys (and names or values HTTP cannot carry) are left out.
    """
    headers: dict[str, str] = {}
    for name, value in metadata.items():
        lowered = name.lower()
        if lowered in _NOT_FORWARDED or lowered.startswith("grpc-") or not _TOKEN.match(name):
            continue
        if "\r" in value or "\n" in value:
            continue
        set_header(headers, name, value)
    return headers


def _delivery_parent(event: Mapping[str, Any], metadata: Mapping[str, str]) -> Any:
    # The CloudEvent's traceparent, else its traceid (its tracestate is not read); when the
    # event has neither, the broker metadata (Kafka headers) traceparent/traceid + tracestate.
    for key in ("traceparent", "traceid"):
        if event.get(key) is not None:
            value = event[key]
            return parse_traceparent(value if isinstance(value, str) else None)
    for key in ("traceparent", "traceid"):
        if metadata.get(key):
            return parse_traceparent(metadata[key], metadata.get("tracestate"))
    return None


def _app_answer(
    response: httpx.Response, event_id: str | None
) -> tuple[AttemptOutcome, str | None, str | None]:
    """Daprd's reading of the app's answer: outcome, the body's `status`, error text."""
    status = response.status_code
    if 200 <= status <= 299:
        try:
            # Go's decoder: `{"Status": "RETRY"}` counts, trailing bytes are not read; a body
            # it cannot decode (not JSON, `{"status": 5}`, a list) is an acknowledgement.
            app_status = _json.unmarshal(response.content, _json.APP_RESPONSE, stream=True)[
                "status"
            ]
        except _json.GoTypeError:
            return "success", None, None
        if app_status in ("", "SUCCESS"):  # the values are matched exactly, case included
            return "success", app_status or None, None
        if app_status == "DROP":
            return "drop", app_status, None
        if app_status == "RETRY":
            return (
                "retry",
                app_status,
                "RETRY status returned from app while processing pub/sub event",
            )
        return (
            "retry",
            app_status,
            f"unknown status returned from app while processing pub/sub event {event_id}: "
            f"{app_status}",
        )
    text = response.content.decode("utf-8", "replace")
    if status == 404:
        return (
            "drop",
            None,
            f"non-retriable error returned from app while processing pub/sub event {event_id}: "
            f"{text}. status code returned: 404",
        )
    return (
        "retry",
        None,
        f"retriable error returned from app while processing pub/sub event {event_id}, "
        f"body: {text}. status code returned: {status}",
    )


def _worth_logging(redelivery: int) -> bool:
    # A blocked partition fails every few milliseconds: log its 1st, 10th, 100th... redelivery.
    while redelivery >= 10 and redelivery % 10 == 0:
        redelivery //= 10
    return redelivery in (0, 1)


@dataclass
class _Message:
    record: Record
    metadata: dict[str, str]
    event: dict[str, Any]
    body: bytes
    event_id: str | None
    route: str = ""
    entry_id: str = ""


class Consumer:
    """Delivers one subscription's messages, one task per partition."""

    def __init__(self, context: DeliveryContext, subscription: Subscription):
        self.context = context
        self.subscription = subscription
        broker = context.broker
        self._group = context.app_id
        pubsub, topic = subscription.pubsub, subscription.topic
        self._positions = {
            partition: broker.start_offset(self._group, pubsub, topic, partition)
            for partition in range(broker.partition_count(pubsub, topic))
        }
        self._states: dict[int, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start reading every partition."""
        for partition in self._positions:
            name = f"dapr {self.context.app_id} {self.subscription.topic}[{partition}]"
            task = asyncio.create_task(self._run(partition), name=name)
            task.add_done_callback(functools.partial(self._crashed, partition))
            self._tasks.append(task)

    def _crashed(self, partition: int, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug, not a delivery failure: say so loudly, and keep the partition busy for idle().
        self.context.log.error(
            "delivery task for %s[%d] crashed",
            self.subscription.topic,
            partition,
            exc_info=task.exception(),
        )
        self._set_state(partition, f"crashed: {task.exception()!r}")

    async def stop(self) -> None:
        """Cancel the partition tasks (in-flight deliveries are abandoned, not dead-lettered)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def busy(self) -> list[str]:
        """Partitions with a message in flight, blocked, or waiting to be read."""
        found: list[str] = []
        sub = self.subscription
        for partition, position in self._positions.items():
            where = f"{self.context.app_id}: {sub.pubsub}/{sub.topic}[{partition}]"
            state = self._states.get(partition)
            if state is not None:
                found.append(f"{where} {state}")
                continue
            waiting = len(self.context.broker.partition_log(sub.pubsub, sub.topic, partition))
            if waiting > position:
                found.append(f"{where} has {waiting - position} record(s) to deliver")
        return found

    def _set_state(self, partition: int, state: str | None) -> None:
        if state is None:
            self._states.pop(partition, None)
        else:
            self._states[partition] = state
        self.context.broker.notify_change()

    # --- the partition loop -----------------------------------------------------------------

    async def _run(self, partition: int) -> None:
        broker = self.context.broker
        sub = self.subscription
        log = broker.partition_log(sub.pubsub, sub.topic, partition)
        while True:
            await broker.wait_for(lambda: len(log) > self._positions[partition], timeout=None)
            start = self._positions[partition]
            if sub.bulk.enabled:
                self._set_state(partition, f"is collecting a bulk from offset {start}")
                batch = await self._collect(log, start)
            else:
                batch = [log[start]]
            redelivery = 0
            attempts: dict[int, int] = {}
            while True:
                self._set_state(
                    partition,
                    f"is delivering offset {start}"
                    + (f" (redelivery {redelivery})" if redelivery else ""),
                )
                if sub.bulk.enabled:
                    done = await self._handle_bulk(batch, redelivery, attempts)
                else:
                    done = await self._handle(batch[0], redelivery, attempts)
                if done:
                    break
                redelivery += 1
                self._set_state(
                    partition,
                    f"is blocked at offset {start}: redelivered {redelivery} time(s) by the broker "
                    "(retries exhausted and no dead-letter topic)",
                )
                say = (
                    self.context.log.warning
                    if _worth_logging(redelivery)
                    else self.context.log.debug
                )
                say(
                    "%s/%s[%d] offset %d failed, no dead-letter topic: the broker redelivers it "
                    "in %gs (redelivery %d)",
                    sub.pubsub,
                    sub.topic,
                    partition,
                    start,
                    broker.component_retry_interval,
                    redelivery,
                )
                await asyncio.sleep(broker.component_retry_interval)
            self._positions[partition] = start + len(batch)
            broker.commit(self._group, sub.pubsub, sub.topic, partition, start + len(batch))
            self._set_state(partition, None)

    async def _collect(self, log: list[Record], start: int) -> list[Record]:
        bulk = self.subscription.bulk
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bulk.max_await_ms / 1000
        while len(log) - start < bulk.max_messages:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await self.context.broker.wait_for(
                    lambda: len(log) - start >= bulk.max_messages, timeout=remaining
                )
            except TimeoutError:
                break
        return log[start : start + min(len(log) - start, bulk.max_messages)]

    # --- one message --------------------------------------------------------------------------

    def _decode(self, record: Record) -> _Message | None:
        metadata = consumer_metadata(record)
        sub = self.subscription
        if not sub.raw_payload_valid:
            return None  # bad rawPayload metadata: daprd cannot read the message either
        if sub.raw_payload:
            event = raw_payload_event(record.value, record.topic, record.pubsub, metadata)
            body = _json.dumps(event)
        else:
            try:
                decoded = _json.loads(record.value)
            except ValueError:
                return None
            if not isinstance(decoded, dict):
                return None
            event, body = decoded, record.value
        event_id = event.get("id")
        return _Message(
            record, metadata, event, body, event_id if _json.is_text(event_id) else None
        )

    def _result(
        self,
        record: Record,
        event_id: str | None,
        reason: ResultReason,
        attempts: int,
        *,
        dead_letter_topic: str | None = None,
    ) -> None:
        outcome: ResultOutcome
        if reason == "success":
            outcome = "delivered"
        elif dead_letter_topic is not None:
            outcome = "dead_lettered"
        else:
            outcome = "dropped"
        self.context.record_result(
            MessageResult(
                app_id=self.context.app_id,
                pubsub=record.pubsub,
                topic=self.subscription.topic,
                partition=record.partition,
                offset=record.offset,
                event_id=event_id,
                outcome=outcome,
                reason=reason,
                dead_letter_topic=dead_letter_topic,
                attempts=attempts,
            )
        )

    def _dead_letter(self, record: Record, metadata: Mapping[str, str]) -> bool:
        """Republish the original bytes with the original metadata; False if that failed."""
        topic = self.subscription.dead_letter_topic
        assert topic is not None
        try:
            self.context.publish(record.pubsub, topic, record.value, metadata)
        except Exception as exc:  # noqa: BLE001 - a failed DLQ publish is reported, then retried
            self.context.log.error(
                "failed to send %s/%s offset %d to dead-letter topic %s: %s",
                record.pubsub,
                record.topic,
                record.offset,
                topic,
                exc,
            )
            return False
        self.context.log.warning(
            "sent %s/%s[%d] offset %d to dead-letter topic %s",
            record.pubsub,
            record.topic,
            record.partition,
            record.offset,
            topic,
        )
        return True

    def _drop(
        self,
        record: Record,
        metadata: Mapping[str, str],
        event_id: str | None,
        reason: ResultReason,
        attempts: int,
        *,
        to_dlq: bool = True,
    ) -> None:
        """A message daprd drops: to the dead-letter topic if there is one (best effort)."""
        sent = (
            to_dlq
            and self.subscription.dead_letter_topic is not None
            and self._dead_letter(record, metadata)
        )
        self._result(
            record,
            event_id,
            reason,
            attempts,
            dead_letter_topic=self.subscription.dead_letter_topic if sent else None,
        )

    async def _handle(self, record: Record, redelivery: int, attempts: dict[int, int]) -> bool:
        """Process one message; True once it is acknowledged (delivered, dropped, dead-lettered)."""
        context, sub = self.context, self.subscription
        message = self._decode(record)
        if message is None:
            say = context.log.error if _worth_logging(redelivery) else context.log.debug
            say(
                "error deserializing cloud event in pubsub %s and topic %s (offset %d)",
                record.pubsub,
                sub.topic,
                record.offset,
            )
            metadata = consumer_metadata(record)
            if sub.dead_letter_topic is not None and self._dead_letter(record, metadata):
                self._result(
                    record, None, "undecodable", 0, dead_letter_topic=sub.dead_letter_topic
                )
                return True
            return False
        now = datetime.now(timezone.utc)
        if has_expired(message.event, now):
            context.log.warning(
                "dropping expired pub/sub event %s as of %s",
                message.event_id,
                message.event.get("expiration"),
            )
            self._drop(record, message.metadata, message.event_id, "expired", 0)
            return True
        try:
            route = sub.route(message.event)
        except CelError as exc:
            say = context.log.error if _worth_logging(redelivery) else context.log.debug
            say("error finding matching route for event %s: %s", message.event_id, exc)
            return False
        if route is None:
            context.log.debug("no matching route for event %s; dropping it", message.event_id)
            self._drop(record, message.metadata, message.event_id, "no_route", 0)
            return True
        message.route = route
        policy = context.retry_policy
        retries = 0
        while True:
            attempts[record.offset] = attempts.get(record.offset, 0) + 1
            outcome, status = await self._deliver(message, attempts[record.offset], redelivery)
            count = attempts[record.offset]
            if outcome == "success":
                self._result(record, message.event_id, "success", count)
                return True
            if outcome == "drop":
                not_found = status == 404
                self._drop(
                    record,
                    message.metadata,
                    message.event_id,
                    "not_found" if not_found else "drop",
                    count,
                    to_dlq=not not_found or context.dead_letter_on_404,
                )
                return True
            if (
                policy is not None
                and policy.allows_retry(retries)
                and policy.retries_status(status)
            ):
                await asyncio.sleep(policy.interval(retries))
                retries += 1
                continue
            if sub.dead_letter_topic is not None and self._dead_letter(record, message.metadata):
                self._result(
                    record,
                    message.event_id,
                    "retries_exhausted",
                    count,
                    dead_letter_topic=sub.dead_letter_topic,
                )
                return True
            return False

    def _start_span(self, message: _Message) -> Span | None:
        tracing = self.context.tracing
        if not tracing.enabled:
            return None
        return tracing.start_span(
            f"pubsub/{self.subscription.topic}",
            SpanKind.CLIENT,
            _delivery_parent(message.event, message.metadata),
            {"messaging.system": "pubsub", "messaging.destination.name": self.subscription.topic},
        )

    async def _deliver(
        self, message: _Message, attempt: int, redelivery: int
    ) -> tuple[AttemptOutcome, int | None]:
        """One request to the app for one message."""
        context = self.context
        headers = http_headers_from_metadata(message.metadata)
        span = self._start_span(message)
        if span is not None:
            for name, value in trace_headers(span).items():
                set_header(headers, name, value)
        set_header(headers, "Content-Type", CLOUD_EVENT_CONTENT_TYPE)
        if context.app_api_token is not None:
            set_header(headers, "dapr-api-token", context.app_api_token)
        status: int | None = None
        app_status: str | None = None
        error: str | None = None
        start = time.perf_counter()
        try:
            response = await context.call_app("POST", message.route, headers, message.body)
        except httpx.HTTPError as exc:
            outcome: AttemptOutcome = "retry"
            error = f"error invoking app channel: {str(exc) or type(exc).__name__}"
        else:
            status = response.status_code
            outcome, app_status, error = _app_answer(response, message.event_id)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if span is not None:
            SidecarTracing.end_span(span, status, error)
        if error is not None:
            say = context.log.warning if _worth_logging(redelivery) else context.log.debug
            say("delivery of %s to %s: %s", message.event_id, message.route, error)
        record = message.record
        context.record_attempt(
            DeliveryAttempt(
                app_id=context.app_id,
                pubsub=record.pubsub,
                topic=self.subscription.topic,
                partition=record.partition,
                offset=record.offset,
                event_id=message.event_id,
                route=message.route,
                attempt=attempt,
                redelivery=redelivery,
                status_code=status,
                app_status=app_status,
                outcome=outcome,
                error=error,
                headers=dict(headers),
                body=message.body,
                elapsed_ms=elapsed_ms,
            )
        )
        return outcome, status

    # --- bulk ---------------------------------------------------------------------------------

    async def _handle_bulk(
        self, batch: list[Record], redelivery: int, attempts: dict[int, int]
    ) -> bool:
        """Process a bulk; True once every entry is acknowledged.

        A failed bulk is redelivered whole by the broker, entries already acknowledged included.
        """
        sub = self.subscription
        now = datetime.now(timezone.utc)
        pending: dict[str, list[_Message]] = {}
        failed = False
        for record in batch:
            message = self._decode(record)
            if message is None:
                metadata = consumer_metadata(record)
                if sub.dead_letter_topic is not None and self._dead_letter(record, metadata):
                    self._result(
                        record, None, "undecodable", 0, dead_letter_topic=sub.dead_letter_topic
                    )
                else:
                    failed = True
                continue
            if has_expired(message.event, now):
                self._drop(record, message.metadata, message.event_id, "expired", 0)
                continue
            try:
                route = sub.route(message.event)
            except CelError as exc:
                self.context.log.error("error finding matching route: %s", exc)
                failed = True
                continue
            if route is None:
                self._drop(record, message.metadata, message.event_id, "no_route", 0)
                continue
            message.route = route
            message.entry_id = str(uuid.uuid4())
            pending.setdefault(route, []).append(message)
        for messages in pending.values():
            if not await self._deliver_bulk_group(messages, redelivery, attempts):
                failed = True
        return not failed

    async def _deliver_bulk_group(
        self, messages: list[_Message], redelivery: int, attempts: dict[int, int]
    ) -> bool:
        context, sub = self.context, self.subscription
        policy = context.retry_policy
        retries = 0
        remaining = list(messages)
        while True:
            outcomes = await self._deliver_bulk(remaining, redelivery, attempts)
            still: list[_Message] = []
            for message in remaining:
                outcome, status = outcomes[message.entry_id]
                count = attempts[message.record.offset]
                if outcome == "success":
                    self._result(message.record, message.event_id, "success", count)
                elif outcome == "drop":
                    not_found = status == 404
                    self._drop(
                        message.record,
                        message.metadata,
                        message.event_id,
                        "not_found" if not_found else "drop",
                        count,
                        to_dlq=not not_found or context.dead_letter_on_404,
                    )
                else:
                    still.append(message)
            remaining = still
            if not remaining:
                return True
            status = outcomes[remaining[0].entry_id][1]
            if (
                policy is not None
                and policy.allows_retry(retries)
                and policy.retries_status(status)
            ):
                await asyncio.sleep(policy.interval(retries))
                retries += 1
                continue
            break
        ok = True
        for message in remaining:
            if sub.dead_letter_topic is not None and self._dead_letter(
                message.record, message.metadata
            ):
                self._result(
                    message.record,
                    message.event_id,
                    "retries_exhausted",
                    attempts[message.record.offset],
                    dead_letter_topic=sub.dead_letter_topic,
                )
            else:
                ok = False
        return ok

    async def _deliver_bulk(
        self, messages: list[_Message], redelivery: int, attempts: dict[int, int]
    ) -> dict[str, tuple[AttemptOutcome, int | None]]:
        """One bulk request; the outcome of each entry."""
        context, sub = self.context, self.subscription
        route = messages[0].route
        envelope = _json.Struct(
            id=str(uuid.uuid4()),
            type="com.dapr.event.sent.bulk",
            topic=sub.topic,
            pubsubname=sub.pubsub,
            metadata={},
            entries=[
                _json.Struct(
                    entryId=message.entry_id,
                    event=message.event,
                    metadata=message.metadata,
                    contentType=CLOUD_EVENT_CONTENT_TYPE,
                )
                for message in messages
            ],
        )
        body = _json.dumps(envelope)
        spans = [span for span in (self._start_span(m) for m in messages) if span is not None]
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if spans:
            # daprd starts one span per entry and sends the context of the last one.
            headers.update(trace_headers(spans[-1]))
        if context.app_api_token is not None:
            headers["dapr-api-token"] = context.app_api_token
        status: int | None = None
        error: str | None = None
        statuses: dict[str, str] = {}
        try:
            response = await context.call_app("POST", route, headers, body)
        except httpx.HTTPError as exc:
            error = f"error invoking app channel: {str(exc) or type(exc).__name__}"
        else:
            status = response.status_code
            if 200 <= status <= 299:
                try:
                    answer = _json.unmarshal(response.content, _json.APP_BULK_RESPONSE, stream=True)
                except _json.GoTypeError as exc:
                    error = f"failed unmarshalling app response for bulk subscribe: {exc}"
                else:
                    for item in answer["statuses"] or []:
                        statuses[item["entryId"]] = item["status"]
            else:
                error = f"bulk delivery answered {status}"
        for span in spans:
            SidecarTracing.end_span(span, status, error)
        outcomes: dict[str, tuple[AttemptOutcome, int | None]] = {}
        for message in messages:
            attempts[message.record.offset] = attempts.get(message.record.offset, 0) + 1
            entry_status = statuses.get(message.entry_id)
            outcome: AttemptOutcome
            if status == 404:
                outcome = "drop"
            elif status is None or not 200 <= status <= 299 or error is not None:
                outcome = "retry"
            elif entry_status == "SUCCESS":
                outcome = "success"
            elif entry_status == "DROP":
                outcome = "drop"
            else:
                outcome = "retry"  # RETRY, an unknown status, or no status for the entry
            outcomes[message.entry_id] = (outcome, status)
            context.record_attempt(
                DeliveryAttempt(
                    app_id=context.app_id,
                    pubsub=message.record.pubsub,
                    topic=sub.topic,
                    partition=message.record.partition,
                    offset=message.record.offset,
                    event_id=message.event_id,
                    route=route,
                    attempt=attempts[message.record.offset],
                    redelivery=redelivery,
                    status_code=status,
                    app_status=entry_status,
                    outcome=outcome,
                    error=error,
                    headers=dict(headers),
                    body=body,
                    bulk=True,
                    entry_id=message.entry_id,
                )
            )
        return outcomes
