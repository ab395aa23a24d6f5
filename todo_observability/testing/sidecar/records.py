"""What the emulator records for assertions: delivery attempts, message results, job triggers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from todo_observability.testing.sidecar import _json

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DeliveryAttempt", "JobTrigger", "MessageResult"]

#: daprd's `process_status` for one attempt (the label of `dapr_component_pubsub_ingress_count`).
AttemptOutcome = Literal["success", "retry", "drop"]
#: The app's answer to a job trigger.
TriggerOutcome = Literal["success", "not_found", "failure"]
#: What finally happened to a message.
ResultOutcome = Literal["delivered", "dropped", "dead_lettered"]
#: Why: the app's answer, or what daprd decided before asking it.
ResultReason = Literal[
    "success",
    "drop",
    "not_found",
    "no_route",
    "expired",
    "undecodable",
    "retries_exhausted",
]


@dataclass(frozen=True)
class DeliveryAttempt:
    """One request daprd made to the app for a message (one per entry for bulk deliveries).

    Attributes:
        app_id: The subscriber.
        pubsub: The pub/sub component.
        topic: The subscribed topic.
        partition: The record's partition.
        offset: The record's offset.
        event_id: The CloudEvent `id`, if the message was one.
        route: The path the request went to.
        attempt: 1 for the first request for this message, counting every retry and redelivery.
        redelivery: 0 on the first delivery; then how many times the broker redelivered it.
        status_code: The app's HTTP status; None when the request failed (connection refused).
        app_status: The `status` of the app's JSON answer (`SUCCESS`, `RETRY`, `DROP`, ...).
        outcome: `success`, `retry` or `drop`, as daprd counts it.
        error: Why the attempt failed, when it did.
        headers: The headers sent.
        body: The body sent.
        bulk: Whether this was a bulk delivery.
        entry_id: The bulk entry id.
        elapsed_ms: How long the request to the app took, in milliseconds.
    """

    app_id: str
    pubsub: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    route: str
    attempt: int
    redelivery: int
    status_code: int | None
    app_status: str | None
    outcome: AttemptOutcome
    error: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    bulk: bool = False
    entry_id: str | None = None
    elapsed_ms: float = 0.0

    def event(self) -> Any:
        """The body decoded as JSON (the CloudEvent, or the bulk envelope).

        Raises:
            ValueError: the body is not JSON.
        """
        return _json.loads(self.body)


@dataclass(frozen=True)
class MessageResult:
    """What became of a message for one subscriber.

    Attributes:
        app_id: The subscriber.
        pubsub: The pub/sub component.
        topic: The subscribed topic.
        partition: The record's partition.
        offset: The record's offset.
        event_id: The CloudEvent `id`, if the message was one.
        outcome: `delivered` (acknowledged by the app), `dropped`, or `dead_lettered`
            (republished to the subscription's dead-letter topic, then acknowledged).
        reason: `success`, `drop` (the app answered DROP), `not_found` (the app answered 404),
            `no_route`, `expired`, `undecodable` (not a CloudEvent, or the subscription's
            `rawPayload` metadata is not a boolean) or `retries_exhausted`.
        dead_letter_topic: Where it was republished, when it was.
        attempts: Requests made to the app for it.
    """

    app_id: str
    pubsub: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    outcome: ResultOutcome
    reason: ResultReason
    dead_letter_topic: str | None
    attempts: int


@dataclass(frozen=True)
class JobTrigger:
    """One `POST /job/{name}` daprd made to the app.

    Attributes:
        app_id: The app.
        name: The job.
        trigger: 1 for the job's first trigger, 2 for its second, ...
        attempt: 1 for the first request of this trigger, then its retries (failure policy).
        status_code: The app's HTTP status; None when the request failed.
        outcome: `success` (2xx), `not_found` (404: not triggered again, but counted as a
            failure by daprd) or `failure`.
        error: Why the request failed, when it did.
        headers: The headers sent.
        body: The body sent (the job's `data`).
        elapsed_ms: How long the request to the app took, in milliseconds.
    """

    app_id: str
    name: str
    trigger: int
    attempt: int
    status_code: int | None
    outcome: TriggerOutcome
    error: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed_ms: float = 0.0
