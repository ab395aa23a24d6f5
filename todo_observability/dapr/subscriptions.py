"""The subscription router: `/dapr/subscribe`, message and job handlers with explicit outcomes.

    subscriptions = Subscriptions(client=dapr)

    @subscriptions.subscribe(pubsub="pubsub", topic="task-events", dead_letter_topic="task-events-dlq")
    async def on_task_event(message: Message) -> None:
        ...                                  # return: SUCCESS; raise Retry/Drop: RETRY/DROP

    subscriptions.park_dead_letters(pubsub="pubsub", topic="task-events-dlq")
    subscriptions.install(app)               # FastAPI or Starlette

Each delivery is handled in one pass: the CloudEvent is parsed and validated,
the trace context restored (DAPR.md §1.5 rule), a CONSUMER span `<topic> process`
started, duplicates acknowledged without running the handler, the handler's
outcome answered as Dapr's `{"status": ...}` (a 200 is never an accident), and
RED metrics, a log line and a failure note (for the dead-letter park) recorded.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from todo_observability._json import dumps as _dumps
from todo_observability._json import loads as _loads
from todo_observability._observability import Observability, _active_observability
from todo_observability._propagate import propagate
from todo_observability._unit import UnitOfWork, baggage_ids
from todo_observability.context import (
    RequestContext,
    _current_fields,
    _current_signals,
    new_request_id,
    valid_request_id,
)
from todo_observability.dapr._admin import admin_routes
from todo_observability.dapr._route import Route
from todo_observability.dapr.client import JOB_CONTEXT_KEY, DaprClient, job_type_of
from todo_observability.dapr.cloudevents import (
    MalformedEvent,
    decode_data,
    extract_parent,
    parse_event,
    parse_time,
)
from todo_observability.dapr.dead_letters import (
    REPLAYS_HEADER,
    DeadLetters,
    DeadLetterStore,
    FailureNote,
    InMemoryDeadLetterStore,
    Outcome,
    ParkedMessage,
    body_text,
    classify,
    now,
    park_key,
)
from todo_observability.dapr.idempotency import Claim, IdempotencyStore, InMemoryIdempotencyStore
from todo_observability.exceptions import ConfigurationError
from todo_observability.logs import _TRUSTED_CONTEXT_ATTR, _emit_trusted
from todo_observability.metrics import (
    DEAD_LETTERS,
    JOB_TRIGGER_DURATION,
    JOB_TRIGGERS,
    MESSAGING_DUPLICATES,
    MESSAGING_PROCESSED,
    MetricSet,
)
from todo_observability.propagation import _add_field
from todo_observability.tracing import _record_exception

if TYPE_CHECKING:
    from datetime import datetime

    from starlette.types import Receive, Scope, Send

    from todo_observability._signals import Signals
    from todo_observability.redaction import Redactor

__all__ = ["Job", "Message", "Subscriptions"]

_log = logging.getLogger("todo_observability.messaging")

F = TypeVar("F", bound=Callable[..., Any])

_STATUS_BODIES = {outcome: _dumps({"status": outcome.value}) for outcome in Outcome}
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message, as the handler sees it.

    Attributes:
        id: The CloudEvent id (the same on every redelivery).
        topic: The topic it was published to (for a dead letter: the origin topic).
        subscribed_topic: The topic of the subscription that received it.
        pubsub: The pub/sub component.
        data: The payload (`data`, or `data_base64` decoded; JSON parsed).
        event: The whole CloudEvent.
        headers: The delivery metadata, lower-cased (broker headers: `__key`, `__partition`, ...).
        attempt: Which delivery of this message this is, as this process saw it (1 for the first).
    """

    id: str
    topic: str
    subscribed_topic: str
    pubsub: str
    data: Any
    event: Mapping[str, Any]
    headers: Mapping[str, str]
    attempt: int

    @property
    def type(self) -> str:
        """The CloudEvent type."""
        return str(self.event.get("type", ""))

    @property
    def source(self) -> str:
        """The CloudEvent source (the publisher's app id)."""
        return str(self.event.get("source", ""))

    @property
    def time(self) -> datetime | None:
        """When it was published (CloudEvent `time`)."""
        return parse_time(self.event.get("time"))

    @property
    def is_dead_letter(self) -> bool:
        """Whether it arrived on a dead-letter topic (its topic is not the subscribed one)."""
        return self.topic != self.subscribed_topic


@dataclass(frozen=True, slots=True)
class Job:
    """One trigger of a Dapr job, as the handler sees it.

    Attributes:
        name: The job name (`reminder-42`).
        job_type: The handler's job type (`reminder`).
        data: The data given to `schedule_job`.
        attempt: Which trigger of this job this is, as this process saw it.
        scheduled_at: When it was scheduled (seconds since the epoch), when known.
    """

    name: str
    job_type: str
    data: Any
    attempt: int
    scheduled_at: float | None = None


Handler = Callable[[Message], Awaitable[None] | None]
JobHandler = Callable[[Job], Awaitable[None] | None]


@dataclass
class _Subscription:
    pubsub: str
    topic: str
    route: str
    handler: Handler | None
    match: str | None = None
    dead_letter_topic: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    bulk: dict[str, Any] | None = None
    drop_on: tuple[type[BaseException], ...] = ()
    parks: bool = False
    dead_letters_elsewhere: bool = False


def _run_sync(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`handler` if it is async (also an object with an async `__call__`), else a thread runner."""
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object's async __call__, not callable()
    ):
        return handler

    async def in_thread(argument: Any) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(handler, argument)

    return in_thread


class _Attempts:
    """Delivery attempts per message key, bounded (the oldest keys forgotten first)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._counts: OrderedDict[str, int] = OrderedDict()

    def next(self, key: str) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self.limit:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)


class Subscriptions:
    """Pub/sub subscriptions, job handlers and the dead-letter park of one app.

    Args:
        client: The sidecar client (replays publish through it). Optional unless replaying.
        idempotency: Where processed message ids are remembered; in memory by
            default; None turns duplicate detection off.
        dead_letters: Where failure notes and parked messages live; in memory by default.
        app_api_token: Requests from the sidecar must carry it as `dapr-api-token`;
            by default `APP_API_TOKEN` (not checked when unset).
        route_prefix: Where delivery routes live (`<prefix>/<pubsub>/<topic>`).
        admin_path: Where the dead-letter API lives (list, show, replay, purge).
        admin_token: Bearer token the dead-letter API requires; by default
            `TODO_OBS_ADMIN_TOKEN`. Without one the API answers only outside `prod`.
        observability: Record into this; by default the one serving the request.
        max_tracked_attempts: Message keys whose delivery attempts are counted.
    """

    def __init__(
        self,
        *,
        client: DaprClient | None = None,
        idempotency: IdempotencyStore | bool | None = True,
        dead_letters: DeadLetterStore | None = None,
        app_api_token: str | None = None,
        route_prefix: str = "/dapr/events",
        admin_path: str = "/dapr/dead-letters",
        admin_token: str | None = None,
        observability: Observability | None = None,
        max_tracked_attempts: int = 10_000,
    ):
        self.client = client
        if idempotency is True:
            idempotency = InMemoryIdempotencyStore()
        self.idempotency: IdempotencyStore | None = idempotency or None
        self.dead_letter_store: DeadLetterStore = dead_letters or InMemoryDeadLetterStore()
        token = app_api_token if app_api_token is not None else os.environ.get("APP_API_TOKEN", "")
        self._app_token = token.encode("latin-1") if token else None
        self.route_prefix = "/" + route_prefix.strip("/")
        self.admin_path = "/" + admin_path.strip("/")
        self.admin_token = (
            admin_token if admin_token is not None else os.environ.get("TODO_OBS_ADMIN_TOKEN", "")
        ) or None
        self._observability = observability
        self._subscriptions: list[_Subscription] = []
        self._jobs: dict[str, JobHandler] = {}
        self._attempts = _Attempts(max_tracked_attempts)
        self._job_attempts = _Attempts(max_tracked_attempts)
        self._installed = False
        self._app: Any = None
        self._dead_letters: DeadLetters | None = None

    # -- declaring -----------------------------------------------------------------------

    def subscribe(
        self,
        pubsub: str,
        topic: str,
        *,
        dead_letter_topic: str | None = None,
        route: str | None = None,
        match: str | None = None,
        metadata: Mapping[str, str] | None = None,
        bulk: bool | Mapping[str, int] = False,
        drop_on: Sequence[type[BaseException]] = (),
        dead_letters_elsewhere: bool = False,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of `topic` on `pubsub`.

        The handler takes a `Message` (sync handlers run in a worker thread) and
        returns nothing: returning means SUCCESS; raising `Retry` or any
        unexpected exception means RETRY; raising `Drop`, a pydantic
        `ValidationError` or an instance of `drop_on` means DROP.

        Args:
            pubsub: The pub/sub component name.
            topic: The topic.
            dead_letter_topic: Where the sidecar sends messages that were dropped or
                ran out of retries (subscribe it with `park_dead_letters`).
            route: The delivery path (default `<route_prefix>/<pubsub>/<topic>[/<name>]`).
            match: A CEL rule (`event.type == "task.completed"`) routing only
                matching events here; a handler without one is the topic's default route.
            metadata: Subscription metadata (`rawPayload`, ...).
            bulk: Bulk delivery: True, or `{"maxMessagesCount": ..., "maxAwaitDurationMs": ...}`.
            drop_on: Exception types that mean the message can never succeed.
            dead_letters_elsewhere: Another service parks `dead_letter_topic`; do not
                warn that nothing here subscribes to it.

        Returns:
            The decorator; it returns the function unchanged.
        """

        def decorate(handler: F) -> F:
            name = getattr(handler, "__name__", "handler")
            path = route or f"{self.route_prefix}/{pubsub}/{topic}" + (f"/{name}" if match else "")
            self._add(
                _Subscription(
                    pubsub=pubsub,
                    topic=topic,
                    route=_absolute(path),
                    handler=_run_sync(handler),
                    match=match,
                    dead_letter_topic=dead_letter_topic,
                    metadata=dict(metadata or {}),
                    bulk=_bulk(bulk),
                    drop_on=tuple(drop_on),
                    dead_letters_elsewhere=dead_letters_elsewhere,
                )
            )
            return handler

        return decorate

    def park_dead_letters(self, pubsub: str, topic: str, *, route: str | None = None) -> None:
        """Subscribe to the dead-letter topic `topic`: every message arriving there is parked.

        It is counted in `messaging_dead_letters_total{origin_topic, reason}` with
        the reason recorded when it failed, kept with its CloudEvent, delivery
        metadata and trace context, and waits for replay or purge.
        """
        path = route or f"{self.route_prefix}/{pubsub}/{topic}"
        self._add(
            _Subscription(
                pubsub=pubsub, topic=topic, route=_absolute(path), handler=None, parks=True
            )
        )

    def job(self, job_type: str) -> Callable[[F], F]:
        """Register the decorated function as the handler of jobs of `job_type`.

        Jobs named `job_type` or `job_type-<anything>` (also `:` or `/` as the
        separator) are delivered to it as a `Job`. Return: done. Raise `Retry` (or
        any exception): the scheduler triggers it again under the job's failure
        policy. Raise `Drop`: not again.
        """
        if not job_type or any(char in job_type for char in "-:/"):
            raise ConfigurationError(
                f"job type {job_type!r} must be non-empty and hold no '-', ':' or '/'; "
                "name jobs '<type>-<id>' and register the handler for '<type>'.",
                field="job_type",
                value=job_type,
            )

        def decorate(handler: F) -> F:
            if job_type in self._jobs:
                raise ConfigurationError(
                    f"job type {job_type!r} already has a handler.",
                    field="job_type",
                    value=job_type,
                )
            self._jobs[job_type] = _run_sync(handler)
            return handler

        return decorate

    def _add(self, subscription: _Subscription) -> None:
        if self._installed:
            raise ConfigurationError(
                "subscriptions were added after install(); declare them all before installing.",
                field="subscriptions",
            )
        for other in self._subscriptions:
            if other.route == subscription.route:
                raise ConfigurationError(
                    f"route {subscription.route!r} is used by two subscriptions; give one route=.",
                    field="route",
                    value=subscription.route,
                )
            same_topic = (other.pubsub, other.topic) == (subscription.pubsub, subscription.topic)
            if same_topic and other.match is None and subscription.match is None:
                raise ConfigurationError(
                    f"{subscription.pubsub}/{subscription.topic} has two default handlers; "
                    "give all but one a match= rule.",
                    field="match",
                )
            if (
                same_topic
                and other.dead_letter_topic
                and subscription.dead_letter_topic
                and other.dead_letter_topic != subscription.dead_letter_topic
            ):
                raise ConfigurationError(
                    f"{subscription.pubsub}/{subscription.topic} names two dead-letter topics "
                    f"({other.dead_letter_topic!r}, {subscription.dead_letter_topic!r}); Dapr "
                    "allows one per subscription.",
                    field="dead_letter_topic",
                )
        self._subscriptions.append(subscription)

    def dapr_subscriptions(self) -> list[dict[str, Any]]:
        """The `GET /dapr/subscribe` answer: one entry per pub/sub topic, rules in declaration order."""
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        for sub in self._subscriptions:
            entry = entries.setdefault(
                (sub.pubsub, sub.topic),
                {"pubsubname": sub.pubsub, "topic": sub.topic, "routes": {"rules": []}},
            )
            if sub.match is not None:
                entry["routes"]["rules"].append({"match": sub.match, "path": sub.route})
            else:
                entry["routes"]["default"] = sub.route
            if sub.dead_letter_topic:
                entry["deadLetterTopic"] = sub.dead_letter_topic
            if sub.metadata:
                entry.setdefault("metadata", {}).update(sub.metadata)
            if sub.bulk is not None:
                entry["bulkSubscribe"] = sub.bulk
        for entry in entries.values():
            if not entry["routes"]["rules"]:
                del entry["routes"]["rules"]
        return list(entries.values())

    @property
    def dead_letters(self) -> DeadLetters:
        """The park: list, replay and purge parked messages."""
        if self._dead_letters is None:
            self._dead_letters = DeadLetters(
                self.dead_letter_store,
                self.client,
                self._signals().metrics,
                idempotency=self.idempotency,
            )
        return self._dead_letters

    # -- installing ----------------------------------------------------------------------

    def install(self, app: Any) -> None:
        """Add the routes to a FastAPI or Starlette app: `/dapr/subscribe`, deliveries, jobs, the park API.

        Warns (log WARNING) for each dead-letter topic that no `park_dead_letters`
        of this app subscribes to, unless `dead_letters_elsewhere=True` says
        another service does.
        """
        routes: list[Any] = [
            Route("/dapr/subscribe", _SubscribeEndpoint(self), methods=["GET"]),
            *(
                Route(sub.route, _DeliveryEndpoint(self, sub), methods=["POST"])
                for sub in self._subscriptions
            ),
        ]
        if self._jobs:
            routes.append(Route("/job/{name:path}", _JobEndpoint(self), methods=["POST"]))
        routes.extend(admin_routes(self))
        app.router.routes.extend(routes)
        self._app = app
        self._installed = True
        obs = self._own_obs() or _active_observability()
        if obs is not None:
            # Every outcome series of every topic exists at 0 from the start: rate() counts the
            # first message too, and a quiet hour after a restart is not an absent metric.
            for sub in self._subscriptions:
                for outcome in Outcome:
                    obs.metrics.child(MESSAGING_PROCESSED, sub.topic, outcome.label)
        parked = {(sub.pubsub, sub.topic) for sub in self._subscriptions if sub.parks}
        for sub in self._subscriptions:
            if (
                sub.dead_letter_topic
                and not sub.dead_letters_elsewhere
                and (sub.pubsub, sub.dead_letter_topic) not in parked
            ):
                _log.warning(
                    "dead-letter topic %s/%s of subscription %s has no subscriber here: "
                    "messages sent there are parked nowhere",
                    sub.pubsub,
                    sub.dead_letter_topic,
                    sub.topic,
                    extra={
                        _TRUSTED_CONTEXT_ATTR: {
                            "pubsub": sub.pubsub,
                            "topic": sub.topic,
                            "dead_letter_topic": sub.dead_letter_topic,
                            "fix": "call park_dead_letters(pubsub, dead_letter_topic), or pass "
                            "dead_letters_elsewhere=True when another service parks them",
                        }
                    },
                )

    # -- delivering ----------------------------------------------------------------------

    def _own_obs(self) -> Observability | None:
        """The `Observability` given, else the app's (`configure(app)`)."""
        if self._observability is not None:
            return self._observability
        obs = getattr(getattr(self._app, "state", None), "observability", None)
        return obs if isinstance(obs, Observability) else None

    def _obs(self) -> Observability | None:
        """The `Observability` given, else the app's, else the one configured last."""
        obs = self._own_obs()
        return obs if obs is not None else _active_observability()

    def _signals(self) -> Signals:
        """Where deliveries record: the given or the app's service, else the current one."""
        obs = self._own_obs()
        return _current_signals(obs.signals if obs is not None else None)

    def _authorized(self, scope: Scope) -> bool:
        """Whether a request carries the `APP_API_TOKEN` (always, when none is configured)."""
        token = self._app_token
        if token is None:
            return True
        for name, value in scope["headers"]:
            if name == b"dapr-api-token":
                return bool(value == token)
        return False

    async def _deliver(
        self, sub: _Subscription, body: bytes, headers: Mapping[str, str]
    ) -> tuple[Outcome, str]:
        """Handle one delivered message; (outcome, reason)."""
        signals = self._signals()
        metrics = signals.metrics
        event: dict[str, Any] | None
        malformed: str | None = None
        try:
            event = parse_event(body)
            data = decode_data(event)
        except MalformedEvent as exc:
            event, data, malformed = None, None, str(exc)

        origin = extract_parent(headers, event)
        parent = origin.parent
        request_id, user_id = baggage_ids(parent)
        if request_id is None:
            request_id = valid_request_id(headers.get("x-request-id")) or new_request_id()
        topic = sub.topic
        origin_topic = str(event.get("topic") or topic) if event is not None else topic
        event_id = str(event["id"]) if event is not None else ""
        with _Delivery(
            signals,
            RequestContext(request_id, user_id, signals),
            f"{topic} process",
            parent=parent,
            kind=SpanKind.CONSUMER,
            in_flight=metrics.delivery_series(topic).in_flight,
        ) as unit:
            unit.subscription, unit.event, unit.event_id = sub, event, event_id
            unit.origin_topic = origin_topic
            span = unit.span
            if span.is_recording():
                # Built only for a recorded span: an unsampled one would discard it.
                for link in origin.links:
                    span.add_link(link.context, link.attributes)
                span.set_attributes(
                    _delivery_attributes(sub, body, headers, event, event_id, origin_topic)
                )
                span.set_attribute("todo_observability.trace_parent_source", origin.source)
            unit.result = await self._process(
                sub, span, event, data, malformed, body, headers, origin_topic, event_id, metrics
            )
        return unit.result.outcome, unit.result.reason

    async def _process(
        self,
        sub: _Subscription,
        span: trace.Span,
        event: dict[str, Any] | None,
        data: Any,
        malformed: str | None,
        body: bytes,
        headers: Mapping[str, str],
        origin_topic: str,
        event_id: str,
        metrics: MetricSet,
    ) -> _Processed:
        """Park, or claim and run the handler; what happened, as one record."""
        try:
            if malformed is not None:
                if sub.parks:
                    await self._park(sub, None, body, headers, ("malformed", malformed, 1), metrics)
                    return _Processed()
                return _Processed(Outcome.DROP, "malformed", malformed)
            assert event is not None
            if sub.parks:
                await self._park(sub, event, body, headers, None, metrics)
                return _Processed()
            key = park_key(sub.pubsub, origin_topic, event_id)
            attempt = self._attempts.next(key)
            span.set_attribute("todo_observability.delivery_attempt", attempt)
            claim = await self.idempotency.claim(key) if self.idempotency else Claim.NEW
            if claim is Claim.DONE:
                self._attempts.forget(key)
                return _Processed(attempt=attempt, duplicate=True)
            if claim is Claim.BUSY:
                return _Processed(
                    Outcome.RETRY,
                    "in_progress",
                    "another delivery of this message is being processed",
                    attempt,
                )
            message = Message(
                event_id, origin_topic, sub.topic, sub.pubsub, data, event, headers, attempt
            )
            completed = False
            try:
                try:
                    await sub.handler(message)  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - any handler failure is an outcome, never a 500
                    outcome, reason, detail = classify(exc, sub.drop_on)
                    await self.dead_letter_store.note_failure(
                        key, FailureNote(outcome.value, reason, detail, attempt, now())
                    )
                    return _Processed(outcome, reason, detail, attempt, error=exc)
                if self.idempotency:
                    await self.idempotency.complete(key)
                completed = True
            finally:
                # Whatever happened (a failure, a failure to describe it, a cancellation), an
                # unfinished claim is given back: a claim left behind would answer every
                # redelivery and replay "in progress" until it times out.
                if not completed and self.idempotency:
                    await self.idempotency.release(key)
            self._attempts.forget(key)
            if attempt > 1:
                # A redelivery succeeded: its failures are moot, and a copy dead-lettered
                # earlier (a duplicate that ran out of retries) leaves the park, so nothing
                # is both processed and parked.
                await self.dead_letter_store.pop_failure(key)
                if await self.dead_letter_store.remove(key):
                    await self.dead_letters.refresh_gauge()
                    span.set_attribute("todo_observability.parked_copy_resolved", True)
            return _Processed(attempt=attempt)
        except Exception as exc:  # noqa: BLE001 - the SDK's own store failing means RETRY
            # The SDK's own stores failed (a state store down): let the sidecar try again.
            return _Processed(Outcome.RETRY, "sdk_error", f"{type(exc).__name__}: {exc}", error=exc)

    async def _park(
        self,
        sub: _Subscription,
        event: dict[str, Any] | None,
        body: bytes,
        headers: Mapping[str, str],
        malformed: tuple[str, str, int] | None,
        metrics: MetricSet,
    ) -> None:
        if event is not None:
            origin_topic = str(event.get("topic") or headers.get("__topic") or sub.topic)
            pubsub = str(event.get("pubsubname") or sub.pubsub)
            event_id = str(event["id"])
            key = park_key(pubsub, origin_topic, event_id)
            note = await self.dead_letter_store.pop_failure(key)
            reason, detail, attempts = (
                (note.reason, note.detail, note.attempt) if note else ("unrecorded", "", 0)
            )
            traceparent = event.get("traceparent") or event.get("traceid") or None
            tracestate = event.get("tracestate") or None
        else:
            import hashlib

            origin_topic = headers.get("__topic") or sub.topic
            pubsub = sub.pubsub
            event_id = "malformed-" + hashlib.sha256(body).hexdigest()[:24]
            key = park_key(pubsub, origin_topic, event_id)
            reason, detail, attempts = malformed or ("malformed", "", 0)
            traceparent = tracestate = None
        parked = ParkedMessage(
            park_id=key,
            event_id=event_id,
            pubsub=pubsub,
            origin_topic=origin_topic,
            dead_letter_topic=sub.topic,
            reason=reason,
            detail=detail,
            attempts=attempts,
            event=event,
            body=None if event is not None else body_text(body),
            metadata={k: v for k, v in headers.items() if k not in _NOT_METADATA},
            traceparent=str(traceparent) if traceparent else None,
            tracestate=str(tracestate) if tracestate else None,
            parked_at=now(),
            replays=int(replays) if (replays := headers.get(REPLAYS_HEADER, "")).isdigit() else 0,
        )
        if event is not None and self.idempotency is not None:
            # Processed meanwhile (a duplicate of it succeeded first): nothing to park.
            claim = await self.idempotency.claim(key)
            if claim is Claim.NEW:
                await self.idempotency.release(key)
            elif claim is Claim.DONE:
                trace.get_current_span().set_attribute(
                    "todo_observability.dead_letter.already_processed", True
                )
                _log.info(
                    "dead letter already processed, not parked",
                    extra={_TRUSTED_CONTEXT_ATTR: {"park_id": key, "reason": reason}},
                )
                return
        already = await self.dead_letter_store.get(key)
        if already is not None:
            # A redelivered or duplicate dead letter: keep the reason recorded first.
            kept: dict[str, Any] = {"replays": max(already.replays, parked.replays)}
            if event is not None and reason == "unrecorded":
                kept |= {
                    "reason": already.reason,
                    "detail": already.detail,
                    "attempts": already.attempts,
                }
            parked = ParkedMessage.from_dict({**parked.to_dict(), **kept})
        await self.dead_letter_store.park(parked)
        if already is None:
            metrics.child(DEAD_LETTERS, origin_topic, reason).inc()
        trace.get_current_span().set_attributes(
            {"todo_observability.dead_letter.reason": reason, "todo_observability.park_id": key}
        )
        await self.dead_letters.refresh_gauge()

    async def _park_job(
        self,
        name: str,
        job_type: str,
        data: Any,
        embedded: Mapping[str, Any],
        reason: str,
        detail: str,
        attempt: int,
        metrics: MetricSet,
    ) -> None:
        park_id = f"{_JOB_PARK_PREFIX}{name}"
        origin = f"{_JOB_PARK_PREFIX}{job_type}"
        already = await self.dead_letter_store.get(park_id)
        traceparent = embedded.get("traceparent")
        tracestate = embedded.get("tracestate")
        await self.dead_letter_store.park(
            ParkedMessage(
                park_id=park_id,
                event_id=name,
                pubsub="",
                origin_topic=origin,
                dead_letter_topic="",
                reason=reason,
                detail=detail,
                attempts=attempt,
                metadata={"job_name": name, "job_type": job_type},
                traceparent=traceparent if isinstance(traceparent, str) else None,
                tracestate=tracestate if isinstance(tracestate, str) and tracestate else None,
                parked_at=now(),
                replays=already.replays if already is not None else 0,
                kind="job",
                job_data=data,
            )
        )
        if already is None:
            metrics.child(DEAD_LETTERS, origin, reason).inc()
        trace.get_current_span().set_attributes(
            {"todo_observability.dead_letter.reason": reason, "todo_observability.park_id": park_id}
        )
        await self.dead_letters.refresh_gauge()

    async def _trigger(self, name: str, body: bytes) -> int:
        """Handle one job trigger; the HTTP status to answer (200, 404 or 500)."""
        signals = self._signals()
        job_type = name if name in self._jobs else job_type_of(name)
        try:
            payload = _loads(body) if body else None
        except ValueError:
            payload = body
        embedded: Mapping[str, Any] = {}
        if (
            isinstance(payload, dict)
            and JOB_CONTEXT_KEY in payload
            and set(payload) <= {"data", JOB_CONTEXT_KEY}
        ):
            embedded = payload[JOB_CONTEXT_KEY] or {}
            payload = payload.get("data")
        links = []
        if isinstance(traceparent := embedded.get("traceparent"), str):
            carrier = {"traceparent": traceparent}
            if isinstance(state := embedded.get("tracestate"), str):
                carrier["tracestate"] = state
            scheduled = trace.get_current_span(propagate.extract(carrier)).get_span_context()
            if scheduled.is_valid:
                links.append(Link(scheduled, {"messaging.link.source": "job_schedule"}))
        request_id = valid_request_id(embedded.get("request_id")) or new_request_id()
        user_id = embedded.get("user_id") if isinstance(embedded.get("user_id"), str) else None
        with _Trigger(
            signals,
            RequestContext(request_id, user_id, signals),
            f"{job_type} trigger",
            # A trigger starts a trace of its own, linked to the one that scheduled it.
            parent=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={"dapr.job.name": name, "dapr.job.type": job_type},
        ) as unit:
            unit.name, unit.job_type = name, job_type
            unit.result = await self._run_job(
                name, job_type, payload, embedded, self._job_attempts.next(name), signals.metrics
            )
        return unit.result.status

    async def _run_job(
        self,
        name: str,
        job_type: str,
        payload: Any,
        embedded: Mapping[str, Any],
        attempt: int,
        metrics: MetricSet,
    ) -> _Processed:
        """Run the job's handler (or park a dropped trigger); what happened, as one record."""
        handler = self._jobs.get(job_type)
        if handler is None:
            result = _Processed(
                Outcome.DROP, "no_handler", f"no handler for job type {job_type!r}", attempt
            )
        else:
            scheduled_at = embedded.get("scheduled_at")
            job = Job(
                name,
                job_type,
                payload,
                attempt,
                float(scheduled_at) if isinstance(scheduled_at, (int, float)) else None,
            )
            try:
                await handler(job)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - any handler failure is an outcome, never a 500
                outcome, reason, detail = classify(exc)
                result = _Processed(outcome, reason, detail, attempt, error=exc)
            else:
                self._job_attempts.forget(name)
                return _Processed(attempt=attempt)
        if result.outcome is Outcome.DROP:
            # Nothing is lost: a dropped trigger waits in the park for a replay.
            try:
                await self._park_job(
                    name,
                    job_type,
                    payload,
                    embedded,
                    result.reason,
                    result.detail,
                    attempt,
                    metrics,
                )
                self._job_attempts.forget(name)
            except Exception as exc:  # noqa: BLE001 - unparked, the scheduler must try again
                return _Processed(
                    Outcome.RETRY,
                    "sdk_error",
                    f"parking the dropped job failed: {type(exc).__name__}: {exc}",
                    attempt,
                    error=exc,
                )
        return result


_JOB_PARK_PREFIX = "job/"


_NOT_METADATA = frozenset(
    {"content-type", "content-length", "host", "traceparent", "tracestate", "dapr-api-token"}
)


def _absolute(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _bulk(bulk: bool | Mapping[str, int]) -> dict[str, Any] | None:
    if bulk is False:
        return None
    settings: dict[str, Any] = {"enabled": True}
    if isinstance(bulk, Mapping):
        unknown = set(bulk) - {"maxMessagesCount", "maxAwaitDurationMs"}
        if unknown:
            raise ConfigurationError(
                f"bulk= takes maxMessagesCount and maxAwaitDurationMs, not {sorted(unknown)}.",
                field="bulk",
                value=dict(bulk),
            )
        settings.update(bulk)
    return settings


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


_UNAUTHORIZED = _dumps(
    {"error": "missing or wrong dapr-api-token; the sidecar must send APP_API_TOKEN"}
)


class _SidecarEndpoint:
    """An endpoint the sidecar calls: refused (401) without `APP_API_TOKEN` when one is set."""

    def __init__(self, owner: Subscriptions):
        self.owner = owner

    async def _accept(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None after answering 401."""
        if not self.owner._authorized(scope):
            await _respond(send, 401, _UNAUTHORIZED)
            return None
        return await _read_body(receive)


class _SelfObserved(_SidecarEndpoint):
    """An endpoint that records its own span, metrics and log line: the middleware passes it through."""

    todo_observability_self_observed = True


class _DeliveryEndpoint(_SelfObserved):
    def __init__(self, owner: Subscriptions, subscription: _Subscription):
        super().__init__(owner)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._accept(scope, receive, send)
        if body is None:
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            _add_field(headers, name.decode("latin-1").lower(), value.decode("latin-1"))
        if self.subscription.bulk is not None and not headers.get("content-type", "").startswith(
            "application/cloudevents"
        ):
            await _respond(send, 200, await self._bulk(body, headers))
            return
        outcome, _reason = await self.owner._deliver(self.subscription, body, headers)
        await _respond(send, 200, _STATUS_BODIES[outcome])

    async def _bulk(self, body: bytes, headers: dict[str, str]) -> bytes:
        try:
            envelope = _loads(body)
            entries = envelope["entries"]
            assert isinstance(entries, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            # Not a bulk envelope: handle it as one (malformed) message.
            outcome, _ = await self.owner._deliver(self.subscription, body, headers)
            return _STATUS_BODIES[outcome]
        statuses = []
        for entry in entries:
            entry_id = entry.get("entryId") if isinstance(entry, dict) else None
            if not isinstance(entry_id, str):
                continue
            event = entry.get("event")
            raw = _dumps(event) if not isinstance(event, (bytes, str)) else event
            raw = raw.encode() if isinstance(raw, str) else raw
            entry_headers = {
                **headers,
                **{str(k).lower(): str(v) for k, v in (entry.get("metadata") or {}).items()},
            }
            outcome, _ = await self.owner._deliver(self.subscription, raw, entry_headers)
            statuses.append({"entryId": entry_id, "status": outcome.value})
        return _dumps({"statuses": statuses})


class _JobEndpoint(_SelfObserved):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._accept(scope, receive, send)
        if body is None:
            return
        name = scope["path_params"]["name"]
        status = await self.owner._trigger(name, body)
        await _respond(send, status, b"{}" if status == 200 else _dumps({"status": status}))


class _SubscribeEndpoint(_SidecarEndpoint):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._accept(scope, receive, send) is None:
            return
        await _respond(send, 200, _dumps(self.owner.dapr_subscriptions()))


@dataclass(frozen=True, slots=True)
class _Processed:
    """What happened to one message or job trigger."""

    outcome: Outcome = Outcome.SUCCESS
    reason: str = ""
    detail: str = ""
    attempt: int = 0
    duplicate: bool = False
    error: BaseException | None = None

    @property
    def status(self) -> int:
        """The HTTP status a job trigger answers: 200 done, 404 dropped, 500 try again."""
        if self.outcome is Outcome.SUCCESS:
            return 200
        return 404 if self.outcome is Outcome.DROP else 500


_CANCELLED = _Processed(Outcome.RETRY, "cancelled", "the delivery was cancelled")


def _mark_failure(span: trace.Span, result: _Processed, redactor: Redactor) -> None:
    span.set_attribute("error.type", result.reason)
    if result.error is not None:
        _record_exception(span, result.error, redactor)
    span.set_status(Status(StatusCode.ERROR, f"{result.outcome.value}: {result.detail}"))


class _Delivery(UnitOfWork):
    """One delivered message: messaging RED metrics, the span's outcome, one log line."""

    __slots__ = ("event", "event_id", "origin_topic", "result", "subscription")

    subscription: _Subscription
    event: dict[str, Any] | None
    event_id: str
    origin_topic: str
    result: _Processed

    def record(self, elapsed: float) -> None:
        result = getattr(self, "result", _CANCELLED)
        sub, metrics, span = self.subscription, self.signals.metrics, self.span
        topic = sub.topic
        if result.duplicate:
            metrics.child(MESSAGING_DUPLICATES, topic).inc()
        else:
            series = metrics.delivery_series(topic)
            series.processed(result.outcome.label)(1)
            series.duration.observe(elapsed)
            if result.outcome is Outcome.SUCCESS and self.event is not None:
                published = parse_time(self.event.get("time"))
                if published is not None:
                    latency = time.time() - published.timestamp()
                    if latency >= 0:
                        series.end_to_end.observe(latency)
        if span.is_recording():
            span.set_attribute("todo_observability.outcome", result.outcome.value)
            if result.duplicate:
                span.set_attribute("todo_observability.duplicate", True)
            if result.outcome is not Outcome.SUCCESS:
                _mark_failure(span, result, self.signals.redactor)
        self._log(result, elapsed)

    def _log(self, result: _Processed, elapsed: float) -> None:
        outcome, reason, error = result.outcome, result.reason, result.error
        if result.duplicate:
            level, text = logging.INFO, "duplicate message acknowledged without processing"
        elif self.subscription.parks and outcome is Outcome.SUCCESS:
            level, text = logging.WARNING, "dead letter parked"
        elif outcome is Outcome.SUCCESS:
            level, text = logging.INFO, "message processed"
        elif outcome is Outcome.DROP:
            level, text = logging.WARNING, f"message dropped ({reason})"
        elif error is not None and reason == type(error).__name__:
            level, text = logging.ERROR, f"message failed, will be retried ({reason})"
        else:
            level, text = logging.WARNING, f"message will be retried ({reason})"
        if not _log.isEnabledFor(level):
            return
        sub = self.subscription
        fields: dict[str, Any] = {
            "pubsub": sub.pubsub,
            "topic": self.origin_topic,
            "subscribed_topic": sub.topic,
            "message_id": self.event_id,
            "outcome": outcome.value,
            "attempt": result.attempt,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if reason:
            fields["reason"] = reason
            fields["detail"] = result.detail
        exc_info = (
            (type(error), error, error.__traceback__)
            if error is not None and level == logging.ERROR
            else None
        )
        # The access log's direct path: no LogRecord, no findCaller, the same line.
        if exc_info is None and not _current_fields() and _emit_trusted(_log, level, text, fields):
            return
        _log.log(level, text, exc_info=exc_info, extra={_TRUSTED_CONTEXT_ATTR: fields})


class _Trigger(UnitOfWork):
    """One job trigger: job RED metrics, the span's outcome, one log line."""

    __slots__ = ("job_type", "name", "result")

    name: str
    job_type: str
    result: _Processed

    def record(self, elapsed: float) -> None:
        result = getattr(self, "result", _CANCELLED)
        metrics, span, job_type = self.signals.metrics, self.span, self.job_type
        metrics.child(JOB_TRIGGERS, job_type, result.outcome.label).inc()
        metrics.child(JOB_TRIGGER_DURATION, job_type).observe(elapsed)
        if result.outcome is not Outcome.SUCCESS and span.is_recording():
            _mark_failure(span, result, self.signals.redactor)
        level = logging.INFO if result.outcome is Outcome.SUCCESS else logging.WARNING
        if _log.isEnabledFor(level):
            fields = {
                "job": self.name,
                "job_type": job_type,
                "outcome": result.outcome.value,
                "attempt": result.attempt,
                "duration_ms": round(elapsed * 1000, 3),
                **({"reason": result.reason, "detail": result.detail} if result.reason else {}),
            }
            _log.log(
                level,
                "job done"
                if result.outcome is Outcome.SUCCESS
                else f"job failed ({result.reason})",
                extra={_TRUSTED_CONTEXT_ATTR: fields},
            )


def _delivery_attributes(
    sub: _Subscription,
    body: bytes,
    headers: Mapping[str, str],
    event: dict[str, Any] | None,
    event_id: str,
    origin_topic: str,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka" if "__partition" in headers else "dapr",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": origin_topic,
        "messaging.destination.subscription.name": sub.topic,
        "messaging.dapr.pubsub": sub.pubsub,
        "messaging.message.body.size": len(body),
    }
    if event is not None and event_id:
        attributes["messaging.message.id"] = event_id
        attributes["cloudevents.event_id"] = event_id
        attributes["cloudevents.event_type"] = str(event.get("type", ""))
        attributes["cloudevents.event_source"] = str(event.get("source", ""))
    if partition := headers.get("__partition"):
        attributes["messaging.destination.partition.id"] = partition
    if offset := headers.get("__offset"):
        attributes["messaging.kafka.offset"] = offset
    if key := headers.get("__key"):
        attributes["messaging.kafka.message.key"] = key
    return attributes
