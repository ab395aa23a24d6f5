"""Programmatic subscriptions: the app's `GET /dapr/subscribe` answer, read as daprd reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from todo_observability.testing.sidecar._cel import (
    CelError,
    Expression,
    UnsupportedExpressionError,
    compile_match,
)
from todo_observability.testing.sidecar._json import SUBSCRIPTIONS, GoTypeError, unmarshal
from todo_observability.testing.sidecar._strconv import parse_bool

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "BulkSubscribe",
    "CelError",
    "Rule",
    "Subscription",
    "SubscriptionError",
    "UnsupportedExpressionError",
    "parse_subscriptions",
]


class SubscriptionError(ValueError):
    """The app's subscription list cannot be read (daprd then loads none of it)."""


@dataclass(frozen=True)
class Rule:
    """A routing rule: deliver to `path` when `match` is true (no `match`: always)."""

    path: str
    match: Expression | None = None

    def matches(self, event: Any) -> bool:
        """Whether `event` goes to this rule's path.

        Raises:
            CelError: the expression could not be evaluated (a missing field).
        """
        return self.match is None or self.match.evaluate(event)


@dataclass(frozen=True)
class BulkSubscribe:
    """`bulkSubscribe`: deliver up to `max_messages` at once, waiting at most `max_await_ms`."""

    enabled: bool = False
    max_messages: int = 100
    max_await_ms: int = 1000


@dataclass(frozen=True)
class Subscription:
    """One subscription of an app, after daprd's parsing.

    Attributes:
        pubsub: The pub/sub component.
        topic: The topic.
        rules: Routing rules in order; `routes.default` (or v1 `route`) is the last, match-all.
        metadata: Subscription metadata (`rawPayload: "true"`, ...).
        dead_letter_topic: Where undeliverable messages go, on the same component.
        bulk: Bulk delivery settings.
    """

    pubsub: str
    topic: str
    rules: tuple[Rule, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    dead_letter_topic: str | None = None
    bulk: BulkSubscribe = field(default_factory=BulkSubscribe)

    @property
    def raw_payload(self) -> bool:
        """Whether messages are raw payloads that daprd wraps in a CloudEvent on delivery."""
        try:
            return parse_bool(self.metadata.get("rawPayload") or "false")
        except ValueError:
            return False

    @property
    def raw_payload_valid(self) -> bool:
        """Whether `rawPayload` is absent or a boolean Go can read (daprd cannot deliver else)."""
        try:
            parse_bool(self.metadata.get("rawPayload") or "false")
        except ValueError:
            return False
        return True

    def route(self, event: Any) -> str | None:
        """The path `event` is delivered to, or None when no rule matches.

        Raises:
            CelError: a rule could not be evaluated.
        """
        for rule in self.rules:
            if rule.matches(event):
                return rule.path
        return None

    def as_metadata(self) -> dict[str, Any]:
        """The subscription as daprd's `GET /v1.0/metadata` lists it."""
        item: dict[str, Any] = {
            "pubsubname": self.pubsub,
            "topic": self.topic,
        }
        if self.metadata:
            item["metadata"] = dict(self.metadata)
        item["rules"] = [
            {"match": str(rule.match), "path": rule.path} if rule.match else {"path": rule.path}
            for rule in self.rules
        ]
        if self.dead_letter_topic:
            item["deadLetterTopic"] = self.dead_letter_topic
        item["type"] = "PROGRAMMATIC"
        return item


def _path(path: str) -> str:
    return "/" + path.lstrip("/")


def _rules(item: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for raw in item["routes"]["rules"] or []:
        if raw is None:
            raise SubscriptionError(
                "error getting topics from app: a routing rule is null; give each rule a "
                '"path" (and optionally a "match")'
            )
        match = raw["match"].strip()
        rules.append(Rule(_path(raw["path"]), compile_match(match) if match else None))
    # `routes.default` is a match-all rule after the others; it wins over a v1 `route`.
    default, route = item["routes"]["default"], item["route"]
    if default:
        rules.append(Rule(_path(default)))
    elif route:
        rules.append(Rule(_path(route)))
    return tuple(rules)


def _bulk(item: Mapping[str, Any]) -> BulkSubscribe:
    raw = item["bulkSubscribe"]
    return BulkSubscribe(
        raw["enabled"], raw["maxMessagesCount"] or 100, raw["maxAwaitDurationMs"] or 1000
    )


def parse_subscriptions(
    body: bytes | str | Sequence[Any], pubsubs: Sequence[str] = ()
) -> tuple[list[Subscription], list[str]]:
    """The subscriptions in a `/dapr/subscribe` answer, and warnings about skipped ones.

    The body is decoded as daprd decodes it into `[]SubscriptionJSON` (keys in any letter case,
    unknown keys ignored, see `_json.unmarshal`); a list already decoded is read the same way.
    Like daprd: `routes.default` is appended as a match-all rule and wins over `route`; an entry
    with no rule at all is skipped; so is one for a pub/sub component not in `pubsubs` (when
    given), and a second one for the same component and topic.

    Raises:
        SubscriptionError: the answer is not a list of subscriptions (Go's decoding error).
        UnsupportedExpressionError: a `match` the emulator cannot evaluate.
    """
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    try:
        items = unmarshal(raw, SUBSCRIPTIONS, stream=True)
    except GoTypeError as exc:
        raise SubscriptionError(f"error getting topics from app: {exc}") from None
    subscriptions: list[Subscription] = []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in items or []:
        pubsub, topic = item["pubsubname"], item["topic"]
        rules = _rules(item)
        if not rules:
            warnings.append(f"topic {topic} has an empty routes. removing from subscriptions list")
            continue
        if pubsubs and pubsub not in pubsubs:
            warnings.append(f"pubsub {pubsub} is not found: ignoring subscription to topic {topic}")
            continue
        if (pubsub, topic) in seen:
            warnings.append(f"duplicate subscription to {pubsub}/{topic}: ignoring the second one")
            continue
        seen.add((pubsub, topic))
        subscriptions.append(
            Subscription(
                pubsub=pubsub,
                topic=topic,
                rules=rules,
                metadata=dict(item["metadata"] or {}),
                dead_letter_topic=item["deadLetterTopic"] or None,
                bulk=_bulk(item),
            )
        )
    return subscriptions, warnings
