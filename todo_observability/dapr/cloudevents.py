"""CloudEvents as Dapr delivers them: parsing, validation and the trace context they carry.

Dapr wraps every published payload in a CloudEvent 1.0 JSON envelope (DAPR.md
§1.4). Its `traceid` field holds a full W3C `traceparent` string (a legacy name),
and the delivery request carries the sidecar's own span in its `traceparent`
header (§1.5). `extract_parent` applies the consumer rule: the header when
valid, else the event's `traceparent`, else its `traceid`.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from todo_observability._json import DECODE_ERRORS as _JSON_ERRORS
from todo_observability._json import loads as _loads
from todo_observability._propagate import propagate
from todo_observability.exceptions import ObservabilityError
from todo_observability.propagation import W3CTraceState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.context import Context

__all__ = [
    "MalformedEvent",
    "TraceOrigin",
    "decode_data",
    "extract_parent",
    "parse_event",
    "parse_time",
]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TIME = re.compile(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)")
"""An RFC 3339 time: (up to the seconds, the fraction, the offset)."""
_REQUIRED = ("id", "source", "type", "specversion")


class MalformedEvent(ObservabilityError, ValueError):
    """A delivered body is not a valid CloudEvent; the message says what is wrong."""


def parse_event(body: bytes) -> dict[str, Any]:
    """The CloudEvent in `body`, validated.

    Raises:
        MalformedEvent: naming what is wrong (not JSON, not an object, a required
            attribute missing or empty, an unsupported specversion, bad data_base64).
    """
    try:
        event = _loads(body)
    except _JSON_ERRORS as exc:
        raise MalformedEvent(f"the body is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise MalformedEvent(f"the body is a JSON {type(event).__name__}, not a CloudEvent object")
    for attribute in _REQUIRED:
        value = event.get(attribute)
        if not isinstance(value, str) or not value:
            raise MalformedEvent(f"the CloudEvent attribute {attribute!r} is missing or empty")
    if event["specversion"] != "1.0":
        raise MalformedEvent(
            f"specversion {event['specversion']!r} is not supported; Dapr sends '1.0'"
        )
    return event


def decode_data(event: Mapping[str, Any]) -> Any:
    """The payload of `event`: `data`, or `data_base64` decoded (and parsed when JSON).

    Raises:
        MalformedEvent: when `data_base64` is not valid base64 or not the declared JSON.
    """
    if "data_base64" in event and "data" not in event:
        encoded = event["data_base64"]
        if not isinstance(encoded, str):
            raise MalformedEvent("data_base64 is not a string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEvent("data_base64 is not valid base64") from None
        if _is_json(event.get("datacontenttype")):
            try:
                return _loads(raw)
            except _JSON_ERRORS as exc:
                raise MalformedEvent(
                    f"data_base64 does not hold the declared JSON ({exc})"
                ) from None
        return raw
    return event.get("data")


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_time(value: object) -> datetime | None:
    """The CloudEvent `time` (RFC 3339) as an aware datetime, or None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    # Python 3.10's fromisoformat takes at most 6 fractional digits; Go writes up to 9.
    match = _TIME.fullmatch(text)
    if match and match.group(2) and len(match.group(2)) > 7:
        text = match.group(1) + match.group(2)[:7] + match.group(3)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _traceparent(value: object) -> re.Match[str] | None:
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return match


class TraceOrigin:
    """Where the consumer's parent came from, and the producer context to link.

    Attributes:
        parent: The OpenTelemetry context to start the consumer span in.
        source: `header`, `cloudevent.traceparent`, `cloudevent.traceid` or `none`.
        links: A link to the producer's context when it differs from the parent
            (made on first use: an unsampled consumer span never needs it).
    """

    __slots__ = ("_links", "_producer", "parent", "source")

    def __init__(
        self,
        parent: Context | None,
        source: str,
        links: list[Link] | None = None,
        producer: tuple[re.Match[str], object] | None = None,
    ):
        self.parent = parent
        self.source = source
        self._links = links
        self._producer = producer

    @property
    def links(self) -> list[Link]:
        """The link to the producer's span, if any (built on first use)."""
        if self._links is None:
            self._links = []
            if self._producer is not None:
                match, state = self._producer
                producer = SpanContext(
                    trace_id=int(match.group(1), 16),
                    span_id=int(match.group(2), 16),
                    is_remote=True,
                    trace_flags=TraceFlags(int(match.group(3), 16) & 1),
                    trace_state=W3CTraceState.from_header([state])
                    if isinstance(state, str) and state
                    else None,
                )
                self._links.append(Link(producer, _LINK_ATTRIBUTES))
        return self._links


def _span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def extract_parent(headers: Mapping[str, str], event: Mapping[str, Any] | None) -> TraceOrigin:
    """Apply the consumer extraction rule of DAPR.md §1.5.

    Parent: the `traceparent` header if valid; else the event's `traceparent`;
    else its `traceid`. `tracestate` comes with whichever was chosen (the header's,
    else the event's). Baggage is always read from the headers. When the header
    won and the event names another span (the producer's), that span is linked.
    """
    header = headers.get("traceparent")
    event_parent: tuple[str, re.Match[str]] | None = None
    if event is not None:
        for key in ("traceparent", "traceid"):
            match = _traceparent(event.get(key))
            if match is not None:
                event_parent = (key, match)
                break
    carrier: dict[str, str] = {}
    if baggage := headers.get("baggage"):
        carrier["baggage"] = baggage
    if _traceparent(header) is not None:
        assert header is not None
        carrier["traceparent"] = header
        if header_state := headers.get("tracestate"):
            carrier["tracestate"] = header_state
        parent = propagate.extract(carrier)
        producer = None
        if event_parent is not None:
            assert event is not None
            match = event_parent[1]
            if int(match.group(2), 16) != _span_context(parent).span_id:
                producer = (match, event.get("tracestate"))
        return TraceOrigin(parent, "header", None, producer)
    if event_parent is not None:
        assert event is not None
        carrier["traceparent"] = event_parent[1].string.strip()
        if isinstance(event_state := event.get("tracestate"), str) and event_state:
            carrier["tracestate"] = event_state
        return TraceOrigin(propagate.extract(carrier), f"cloudevent.{event_parent[0]}", [])
    if carrier:
        return TraceOrigin(propagate.extract(carrier), "none", [])
    return TraceOrigin(None, "none", [])


_LINK_ATTRIBUTES = {"messaging.link.source": "cloudevent"}
