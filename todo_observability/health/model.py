"""The health check model: a status, a result, and a registered check."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from todo_observability.exceptions import ConfigurationError

__all__ = ["GROUPS", "Check", "CheckFunction", "CheckResult", "Status"]

GROUPS = ("live", "ready", "startup")
"""The probe groups a check can belong to."""


class Status(str, enum.Enum):
    """How healthy something is. The gauge `health_check_status` reports 1, 0.5 and 0."""

    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"

    @property
    def gauge(self) -> float:
        """The value `health_check_status{check}` takes."""
        return {Status.UP: 1.0, Status.DEGRADED: 0.5, Status.DOWN: 0.0}[self]


@dataclass(frozen=True)
class CheckResult:
    """What one run of a check found.

    Attributes:
        status: UP, DEGRADED or DOWN.
        details: Facts worth showing (versions, counts); never secrets.
        error: What went wrong, when the check is not UP.
        duration_ms: How long the run took (set by the engine).
    """

    status: Status
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_ms: float = 0.0

    @classmethod
    def up(cls, **details: Any) -> CheckResult:
        """An UP result with `details`."""
        return cls(Status.UP, details)

    @classmethod
    def degraded(cls, error: str, **details: Any) -> CheckResult:
        """A DEGRADED result: working, but something is off."""
        return cls(Status.DEGRADED, details, error)

    @classmethod
    def down(cls, error: str, **details: Any) -> CheckResult:
        """A DOWN result."""
        return cls(Status.DOWN, details, error)


CheckFunction = Callable[[], "Awaitable[CheckResult | bool | None] | CheckResult | bool | None"]
"""A check: async, or sync (run in a thread). It returns a `CheckResult`; `True` or `None`
means UP, `False` DOWN; an exception means DOWN with the exception as the error."""


@dataclass(frozen=True)
class Check:
    """A registered check.

    Attributes:
        name: Unique name, the `check` label of the health metrics.
        function: What to run.
        groups: The probes it counts for: `live`, `ready`, `startup`.
        critical: A critical DOWN makes its group DOWN; a non-critical one makes it DEGRADED.
        timeout: Seconds before a run counts as DOWN ("timed out after 2.0 s").
        ttl: Seconds a result is reused before the check runs again.
        dependency: Whether it checks something outside the process (a database, the sidecar).
            A dependency check may not be in the `live` group.
    """

    name: str
    function: CheckFunction
    groups: tuple[str, ...] = ("ready",)
    critical: bool = True
    timeout: float = 2.0
    ttl: float = 5.0
    dependency: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("a health check needs a name", field="name", value=self.name)
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ConfigurationError(
                f"health check {self.name!r}: groups must be among {', '.join(GROUPS)}, got {self.groups!r}.",
                field="groups",
                value=self.groups,
            )
        if self.dependency and "live" in self.groups:
            raise ConfigurationError(
                f"health check {self.name!r} checks a dependency and cannot be in the 'live' group: "
                "a liveness failure restarts the pod, and restarting every pod does not fix a database "
                "blip, it makes it worse. Put it in 'ready' (and 'startup'); liveness should only check "
                "the process itself (for example event-loop lag).",
                field="groups",
                value=self.groups,
            )
        if self.timeout <= 0 or self.ttl < 0:
            raise ConfigurationError(
                f"health check {self.name!r}: timeout must be > 0 and ttl >= 0 seconds, "
                f"got timeout={self.timeout!r}, ttl={self.ttl!r}.",
                field="timeout",
                value=(self.timeout, self.ttl),
            )

    @property
    def is_async(self) -> bool:
        """Whether `function` is a coroutine function (else it runs in a thread)."""
        return inspect.iscoroutinefunction(self.function)
