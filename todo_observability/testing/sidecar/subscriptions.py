"""Programmatic subscriptions: the app's `GET /dapr/subscribe` answer, read as daprd reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from todo_observability.testing.sidecar._cel import (
    CelError,
    Expression,
    UnsupportedExpressionError,
    compile_match,
)
from todo_observability.testing.sidecar._json import is_text
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


def _string(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not is_text(value):
        raise SubscriptionError(
            f"json: cannot unmarshal {type(value).__name__} into field {key} of type string"
        )
    return value


def _rules(item: Mapping[str, Any]) -> tuple[Rule, ...]:
    routes = item.get("routes") or {}
    if not isinstance(routes, dict):
        raise SubscriptionError("json: cannot unmarshal routes: not an object")
    rules: list[Rule] = []
    raw_rules = routes.get("rules") or []
    if not isinstance(raw_rules, list):
        raise SubscriptionError("json: cannot unmarshal routes.rules: not an array")
    for raw in raw_rules:
        if not isinstance(raw, dict):
            raise SubscriptionError("json: cannot unmarshal a routing rule: not an object")
        match, path = _string(raw, "match"), _string(raw, "path")
        rules.append(Rule(_path(path), compile_match(match) if match else None))
    # `routes.default` is a match-all rule after the others; it wins over a v1 `route`.
    default = _string(routes, "default")
    route = _string(item, "route")
    if default:
        rules.append(Rule(_path(default)))
    elif route:
        rules.append(Rule(_path(route)))
    return tuple(rules)


def _bulk(item: Mapping[str, Any]) -> BulkSubscribe:
    raw = item.get("bulkSubscribe")
    if raw is None:
        return BulkSubscribe()
    if not isinstance(raw, dict):
        raise SubscriptionError("json: cannot unmarshal bulkSubscribe: not an object")
    count = raw.get("maxMessagesCount") or 100
    wait = raw.get("maxAwaitDurationMs") or 1000
    return BulkSubscribe(bool(raw.get("enabled")), int(count), int(wait))


def parse_subscriptions(
    body: Any, pubsubs: Sequence[str] = ()
) -> tuple[list[Subscription], list[str]]:
    """The subscriptions in a decoded `/dapr/subscribe` answer, and warnings about skipped ones.

    Like daprd: `routes.default` is appended as a match-all rule and wins over `route`; an entry
    with no rule at all is skipped; so is one for a pub/sub component not in `pubsubs` (when
    given), and a second one for the same component and topic.

    Raises:
        SubscriptionError: the answer is not a list of subscriptions.
        UnsupportedExpressionError: a `match` the emulator cannot evaluate.
    """
    if not isinstance(body, list):
        raise SubscriptionError(
            "error deserializing topics: json: cannot unmarshal the answer into []SubscriptionJSON"
        )
    subscriptions: list[Subscription] = []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in body:
        if not isinstance(item, dict):
            raise SubscriptionError("error deserializing topics: an item is not an object")
        pubsub, topic = _string(item, "pubsubname"), _string(item, "topic")
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(is_text(v) for v in metadata.values()):
            raise SubscriptionError(
                "error deserializing topics: metadata must map strings to strings"
            )
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
                metadata=dict(metadata),
                dead_letter_topic=_string(item, "deadLetterTopic") or None,
                bulk=_bulk(item),
            )
        )
    return subscriptions, warnings
