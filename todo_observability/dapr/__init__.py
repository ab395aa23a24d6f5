"""Dapr: a traced sidecar client, subscriptions with explicit outcomes, jobs, and the dead-letter park.

Needs no Dapr package: the SDK speaks the sidecar's HTTP API. Users of the
`dapr` Python SDK's gRPC client add `todo_observability.dapr.grpc`.
"""

from todo_observability.dapr.client import DaprClient, DaprError, sidecar_endpoint
from todo_observability.dapr.cloudevents import MalformedEvent
from todo_observability.dapr.dead_letters import (
    DaprStateDeadLetterStore,
    DeadLetters,
    DeadLetterStore,
    Drop,
    InMemoryDeadLetterStore,
    Outcome,
    ParkedMessage,
    Retry,
    SqlDeadLetterStore,
)
from todo_observability.dapr.idempotency import (
    Claim,
    DaprStateIdempotencyStore,
    IdempotencyStore,
    InMemoryIdempotencyStore,
)
from todo_observability.dapr.subscriptions import Job, Message, Subscriptions

__all__ = [
    "Claim",
    "DaprClient",
    "DaprError",
    "DaprStateDeadLetterStore",
    "DaprStateIdempotencyStore",
    "DeadLetterStore",
    "DeadLetters",
    "Drop",
    "IdempotencyStore",
    "InMemoryDeadLetterStore",
    "InMemoryIdempotencyStore",
    "Job",
    "MalformedEvent",
    "Message",
    "Outcome",
    "ParkedMessage",
    "Retry",
    "SqlDeadLetterStore",
    "Subscriptions",
    "sidecar_endpoint",
]
