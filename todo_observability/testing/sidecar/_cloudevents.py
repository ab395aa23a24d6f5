"""The CloudEvent envelope as daprd builds it on publish and reads it on delivery.

daprd: `pkg/runtime/pubsub/cloudevents.go` (`NewCloudEvent`, with the `cloudevent.*` metadata
overrides) and components-contrib `pubsub/envelope.go` (`NewCloudEventsEnvelope`,
`FromCloudEvent`, `FromRawPayload`, `ApplyMetadata`, `HasExpired`).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from todo_observability.testing.sidecar import _json
from todo_observability.testing.sidecar._time import format_rfc3339, parse_rfc3339

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CLOUD_EVENT_CONTENT_TYPE",
    "apply_ttl",
    "from_cloud_event",
    "has_expired",
    "is_cloud_event",
    "new_cloud_event",
    "raw_payload_event",
]

CLOUD_EVENT_CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_TYPE = "com.dapr.event.sent"
DEFAULT_SOURCE = "Dapr"
SPEC_VERSION = "1.0"

# `NewCloudEvent` decodes these metadata keys into the envelope (mapstructure: any letter case).
_OVERRIDES = (
    "cloudevent.id",
    "cloudevent.source",
    "cloudevent.type",
    "cloudevent.subject",
    "cloudevent.traceid",
    "cloudevent.traceparent",
    "cloudevent.tracestate",
)


def _is_content_type(content_type: str, expected: str) -> bool:
    # components-contrib `isContentType`: the media type before any parameters, any case.
    lowered = content_type.lower()
    return lowered == expected or lowered.split(";", 1)[0] == expected


def is_cloud_event(content_type: str) -> bool:
    """Whether daprd treats a body with this content type as an app-authored CloudEvent."""
    return _is_content_type(content_type, CLOUD_EVENT_CONTENT_TYPE)


def _overrides(metadata: Mapping[str, str], allow_subject: bool) -> dict[str, str]:
    found: dict[str, str] = {}
    lowered = {key.lower(): value for key, value in metadata.items()}
    for key in _OVERRIDES:
        if key == "cloudevent.subject" and not allow_subject:
            continue  # daprd reads cloudevent.subject since 1.17
        value = metadata.get(key, lowered.get(key))
        if value is not None:
            found[key.removeprefix("cloudevent.")] = value
    return found


def _now_rfc3339(now: datetime) -> str:
    return format_rfc3339(now.astimezone())


def new_cloud_event(
    *,
    body: bytes,
    content_type: str,
    source: str,
    topic: str,
    pubsub: str,
    traceparent: str,
    tracestate: str,
    metadata: Mapping[str, str],
    now: datetime,
    allow_subject: bool = True,
) -> dict[str, Any]:
    """The envelope daprd wraps a non-CloudEvent body in.

    `traceparent`/`tracestate` are those of daprd's span for the publish request ("" when
    tracing is off); `cloudevent.*` metadata overrides the id, source, type, subject and trace
    fields (`cloudevent.traceparent` wins over `cloudevent.traceid`, and both fields get it).
    """
    overrides = _overrides(metadata, allow_subject)
    trace_id = overrides.get("traceid", traceparent)
    if overrides.get("traceparent"):
        trace_id = overrides["traceparent"]
    content_type = content_type or "text/plain"
    event: dict[str, Any] = {
        "id": overrides.get("id") or str(uuid.uuid4()),
        "specversion": SPEC_VERSION,
        "datacontenttype": content_type,
        "source": overrides.get("source") or source or DEFAULT_SOURCE,
        "type": overrides.get("type") or DEFAULT_TYPE,
        "topic": topic,
        "pubsubname": pubsub,
        "traceid": trace_id,
        "traceparent": trace_id,
        "tracestate": overrides.get("tracestate", tracestate),
        "time": _now_rfc3339(now),
    }
    if _is_content_type(content_type, "application/json"):
        try:
            event["data"] = _json.loads(body)
        except ValueError:
            event["data"] = body.decode("utf-8", "replace")
    elif _is_content_type(content_type, "application/octet-stream"):
        event["data_base64"] = base64.b64encode(body).decode("ascii")
    else:
        # Without application/json the subscriber gets `data` as a JSON *string*.
        event["data"] = body.decode("utf-8", "replace")
    if overrides.get("subject"):
        event["subject"] = overrides["subject"]
    return event


def from_cloud_event(
    *,
    body: bytes,
    topic: str,
    pubsub: str,
    traceparent: str,
    tracestate: str,
    now: datetime,
) -> dict[str, Any]:
    """An app-authored CloudEvent, completed as daprd does.

    `traceid` and `traceparent` get daprd's span only when the event has no `traceid` (an event
    with only `traceparent` sees it overwritten); `tracestate` only when missing; `topic` and
    `pubsubname` are always set; `source`, `type`, `specversion` and `time` when missing.

    Raises:
        ValueError: the body is not a JSON object.
    """
    event = _json.loads(body)
    if not isinstance(event, dict):
        raise ValueError("a CloudEvent is a JSON object")
    if event.get("traceid") is None:
        event["traceid"] = traceparent
        event["traceparent"] = traceparent
    if event.get("tracestate") is None:
        event["tracestate"] = tracestate
    event["topic"] = topic
    event["pubsubname"] = pubsub
    defaults = {
        "source": DEFAULT_SOURCE,
        "type": DEFAULT_TYPE,
        "specversion": SPEC_VERSION,
        "time": _now_rfc3339(now),
    }
    for key, value in defaults.items():
        if event.get(key) is None:
            event[key] = value
    return event


def apply_ttl(event: dict[str, Any], metadata: Mapping[str, str], now: datetime) -> None:
    """Add `expiration` for `ttlInSeconds` metadata (Kafka has no message TTL of its own).

    daprd ignores a value that is not a positive integer.
    """
    text = metadata.get("ttlInSeconds")
    if not text:
        return
    try:
        seconds = int(text)
    except ValueError:
        return
    if seconds <= 0:
        return
    expiration = now.astimezone(timezone.utc) + timedelta(seconds=seconds)
    event["expiration"] = format_rfc3339(expiration)


def has_expired(event: Mapping[str, Any], now: datetime) -> bool:
    """Whether the event's `expiration` has passed (an unreadable one never expires)."""
    expiration = event.get("expiration")
    if not expiration:
        return False
    try:
        return parse_rfc3339(str(expiration)) < now
    except ValueError:
        return False


def raw_payload_event(
    data: bytes, topic: str, pubsub: str, metadata: Mapping[str, str]
) -> dict[str, Any]:
    """The envelope daprd builds on delivery for a `rawPayload` subscription.

    Random id, `data_base64`, `application/octet-stream`, plus the trace fields found in the
    message metadata (Kafka headers), if any.
    """
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "specversion": SPEC_VERSION,
        "datacontenttype": "application/octet-stream",
        "source": DEFAULT_SOURCE,
        "type": DEFAULT_TYPE,
        "topic": topic,
        "pubsubname": pubsub,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }
    for key in ("traceid", "traceparent", "tracestate"):
        if key in metadata:
            event[key] = metadata[key]
    return event
