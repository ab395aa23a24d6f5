"""Retry policies with the semantics of Dapr resiliency (`spec.policies.retries`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from todo_observability.exceptions import ConfigurationError
from todo_observability.testing.sidecar._time import parse_go_duration

__all__ = ["RetryPolicy"]


def _parse_status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise ConfigurationError(
                f"httpStatusCodes must look like '429,500-599', got {text!r}.",
                field="http_status_codes",
                value=text,
            ) from None
        if not 100 <= first <= last <= 599:
            raise ConfigurationError(
                f"httpStatusCodes ranges must lie within 100-599, got {part!r}.",
                field="http_status_codes",
                value=text,
            )
        ranges.append((first, last))
    return tuple(ranges)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failed delivery is retried, like a Dapr resiliency retry policy.

    `max_retries` counts retries after the first attempt: -1 retries for ever, 0 never
    retries, 3 makes at most four attempts. A sidecar without a policy makes exactly one attempt
    per message (daprd without resiliency), then the broker redelivers (see `Broker`).

    Args:
        policy: `constant` (every `duration`) or `exponential` (`initial_interval`, times
            `multiplier` after each retry, at most `max_interval`).
        duration: Seconds between retries of a constant policy (Dapr's default: 5 s).
        max_interval: Upper bound of an exponential interval (Dapr's default: 60 s).
        max_retries: Retries after the first attempt; -1 = for ever (Dapr's default).
        initial_interval: First exponential interval (Dapr's backoff starts at 0.5 s).
        multiplier: Growth of an exponential interval (Dapr's backoff: 1.5).
        randomization_factor: Jitter of each interval, as a fraction. Dapr's backoff uses 0.5;
            the emulator defaults to 0 so that tests are deterministic.
        http_status_codes: Dapr's `matching.httpStatusCodes` (`"429,500-599"`): when set, only
            these statuses are retried; errors without a status (connection refused) always are.
    """

    policy: Literal["constant", "exponential"] = "constant"
    duration: float = 5.0
    max_interval: float = 60.0
    max_retries: int = -1
    initial_interval: float = 0.5
    multiplier: float = 1.5
    randomization_factor: float = 0.0
    http_status_codes: str | None = None

    def __post_init__(self) -> None:
        if self.policy not in ("constant", "exponential"):
            raise ConfigurationError(
                f"A retry policy is 'constant' or 'exponential', got {self.policy!r}.",
                field="policy",
                value=self.policy,
            )
        if self.max_retries < -1:
            raise ConfigurationError(
                f"max_retries is -1 (for ever), 0 (no retry) or more, got {self.max_retries!r}.",
                field="max_retries",
                value=self.max_retries,
            )
        for name in ("duration", "max_interval", "initial_interval"):
            if getattr(self, name) < 0:
                raise ConfigurationError(
                    f"{name} must not be negative, got {getattr(self, name)!r}.",
                    field=name,
                    value=getattr(self, name),
                )
        if self.http_status_codes is not None:
            _parse_status_ranges(self.http_status_codes)

    @classmethod
    def constant(cls, duration: float, max_retries: int = -1) -> RetryPolicy:
        """Retry every `duration` seconds, `max_retries` times (-1: for ever)."""
        return cls("constant", duration=duration, max_retries=max_retries)

    @classmethod
    def exponential(
        cls, initial_interval: float = 0.5, max_retries: int = -1, max_interval: float = 60.0
    ) -> RetryPolicy:
        """Retry after `initial_interval`, then 1.5 times longer each time, up to `max_interval`."""
        return cls(
            "exponential",
            initial_interval=initial_interval,
            max_retries=max_retries,
            max_interval=max_interval,
        )

    @classmethod
    def parse(cls, spec: str) -> RetryPolicy:
        """A policy from a command-line spec, durations in Go syntax (`1s`, `200ms`).

        `constant:<interval>:<max retries>` or
        `exponential:<initial interval>:<max retries>[:<max interval>]`.

        Raises:
            ConfigurationError: `spec` is not one of those.
        """
        parts = spec.split(":")
        try:
            if parts[0] == "constant" and len(parts) == 3:
                return cls.constant(parse_go_duration(parts[1]), int(parts[2]))
            if parts[0] == "exponential" and len(parts) in (3, 4):
                max_interval = parse_go_duration(parts[3]) if len(parts) == 4 else 60.0
                return cls.exponential(parse_go_duration(parts[1]), int(parts[2]), max_interval)
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
        raise ConfigurationError(
            "A retry policy is 'constant:<interval>:<max retries>' or "
            f"'exponential:<initial interval>:<max retries>[:<max interval>]', got {spec!r}.",
            field="retry_policy",
            value=spec,
        )

    def allows_retry(self, retries_done: int) -> bool:
        """Whether another retry may follow `retries_done` retries."""
        return self.max_retries == -1 or retries_done < self.max_retries

    def retries_status(self, status: int | None) -> bool:
        """Whether a failure with this HTTP status is retried (`matching.httpStatusCodes`)."""
        if status is None or self.http_status_codes is None:
            return True
        return any(
            low <= status <= high for low, high in _parse_status_ranges(self.http_status_codes)
        )

    def interval(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        if self.policy == "constant":
            base = self.duration
        else:
            base = min(self.initial_interval * self.multiplier**retry, self.max_interval)
        if self.randomization_factor:
            delta = self.randomization_factor * base
            base = random.uniform(base - delta, base + delta)
        return max(base, 0.0)

    def describe(self) -> str:
        """A short description for logs: `constant 1s, 3 retries`."""
        retries = "retries for ever" if self.max_retries == -1 else f"{self.max_retries} retries"
        if self.policy == "constant":
            return f"constant {self.duration:g}s, {retries}"
        return (
            f"exponential from {self.initial_interval:g}s (max {self.max_interval:g}s), {retries}"
        )
