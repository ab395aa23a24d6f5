"""The health engine: concurrent, time-bounded, cached, single-flight check runs, grouped into probes.

Kubernetes (and Dapr's app health checks) call the probes every few seconds on
every pod, forever. So a probe never waits longer than its slowest check's
timeout, concurrent probes share one run of each check (single flight), and a
result is reused for the check's TTL: a probe storm never multiplies the load
on a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from todo_observability.exceptions import ConfigurationError
from todo_observability.health._thread import SingleThread, StillRunning
from todo_observability.health.model import Check, CheckResult, Status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from todo_observability.metrics import MetricSet

__all__ = ["GroupReport", "HealthEngine"]

_log = logging.getLogger("todo_observability.health")
_MIN_REFRESH = 1.0
"""Seconds between background rounds at the least: a check with ttl=0 is not run in a busy loop."""
_MAX_REFRESH = 5.0
"""Seconds between background rounds at the most, so that checks added later are soon picked up."""


@dataclass(frozen=True)
class GroupReport:
    """The outcome of one probe: the group's status and each check's result."""

    group: str
    status: Status
    results: Mapping[str, CheckResult]
    reason: str | None = None

    @property
    def healthy(self) -> bool:
        """Whether the probe answers 200: UP or DEGRADED."""
        return self.status is not Status.DOWN

    def body(self, *, service: str, version: str, details: bool) -> dict[str, Any]:
        """The JSON body of the probe's response; `details=False` hides errors and details."""
        checks: dict[str, Any] = {}
        for name, result in self.results.items():
            entry: dict[str, Any] = {
                "status": result.status.value,
                "duration_ms": result.duration_ms,
            }
            if details:
                if result.error:
                    entry["error"] = result.error
                if result.details:
                    entry["details"] = dict(result.details)
            checks[name] = entry
        body: dict[str, Any] = {
            "status": self.status.value,
            "service": service,
            "version": version,
            "timestamp": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "checks": checks,
        }
        if self.reason:
            body["reason"] = self.reason
        return body


def _normalise(raw: object) -> CheckResult:
    if isinstance(raw, CheckResult):
        return raw
    if raw is None or raw is True:
        return CheckResult(Status.UP)
    if raw is False:
        return CheckResult.down("check returned False")
    raise TypeError(
        f"a health check must return a CheckResult, True, False or None, not {type(raw).__name__}"
    )


class HealthEngine:
    """Runs registered checks and answers the live, ready and startup probes.

    Args:
        metrics: Where `health_check_status{check}` and `health_check_duration_seconds{check}` go.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(self, metrics: MetricSet | None = None, *, clock: Any = time.monotonic):
        self._checks: dict[str, Check] = {}
        self._cache: dict[str, tuple[float, CheckResult]] = {}
        self._running: dict[str, asyncio.Task[CheckResult]] = {}
        self._threads: dict[str, SingleThread] = {}
        self._last: dict[str, Status] = {}
        self._metrics = metrics
        self._clock = clock
        self._startup_report: GroupReport | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.shutting_down = False

    @property
    def checks(self) -> Mapping[str, Check]:
        """The registered checks, by name."""
        return dict(self._checks)

    def add(self, *checks: Check, replace: bool = False) -> None:
        """Register checks. A name may be registered once, unless `replace` is True.

        Raises:
            ConfigurationError: the name is taken (and `replace` is False).
        """
        for check in checks:
            if replace:
                self.invalidate(check.name)
            elif check.name in self._checks:
                raise ConfigurationError(
                    f"a health check named {check.name!r} is already registered; give this one another name.",
                    field="name",
                    value=check.name,
                )
            self._checks[check.name] = check

    def invalidate(self, name: str | None = None) -> None:
        """Forget the cached result of check `name` (of every check when None): the next probe runs it."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    def start_refresh(self, interval: float | None = None) -> None:
        """Keep results warm: run the checks in the background, probes or not.

        With no `interval`, each check runs again as its result expires (its TTL),
        at most once a second; with one, every `interval` seconds. A check whose
        cached result is still fresh is not run again, so the dependency sees at
        most one call per TTL, probes or not; probes then always find a fresh
        result, and `health_check_status` is fresh for every scrape. Call it from
        a running event loop (`Observability.lifespan()` does, unless
        `health_refresh` is `off`).
        """
        if self.refreshing:
            return

        async def refresh() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:  # noqa: BLE001 - the refresh must outlive any one failure
                    _log.exception("background health refresh failed; it goes on")
                await asyncio.sleep(interval if interval is not None else self._until_stale())

        self._refresher = asyncio.ensure_future(refresh())

    @property
    def refreshing(self) -> bool:
        """Whether the background refresh runs."""
        return self._refresher is not None and not self._refresher.done()

    async def refresh(self) -> None:
        """Run, concurrently, every check whose result is stale.

        Checks only in the `startup` group are left alone once startup has passed:
        nothing asks for them any more.
        """
        started = self._startup_report is not None
        await asyncio.gather(
            *(
                self.run(check)
                for check in self._checks.values()
                if not (started and check.groups == ("startup",))
            )
        )

    def _until_stale(self) -> float:
        """Seconds until the first cached result expires, between the refresh bounds."""
        now: float = self._clock()
        expiries = [self._cache[name][0] for name in self._checks if name in self._cache]
        if len(expiries) < len(self._checks):
            return _MIN_REFRESH  # a check added since the last round
        wait = min(expiries, default=now + _MAX_REFRESH) - now
        return min(max(wait, _MIN_REFRESH), _MAX_REFRESH)

    async def stop_refresh(self) -> None:
        """Stop the background refresh, if it runs, and wait for the runs it started.

        A run is shared (probes may wait for it too), so it is not cancelled but awaited:
        it ends within its check's timeout, before the app closes what the check uses.
        """
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            running = list(self._running.values())
            if running:
                await asyncio.wait(running)

    def begin_shutdown(self) -> None:
        """From now on readiness answers 503, so that traffic stops before requests drain."""
        if not self.shutting_down:
            self.shutting_down = True
            _log.info("shutdown started: readiness now reports DOWN")

    async def run(self, check: Check) -> CheckResult:
        """The check's result: cached while fresh, else one shared run (single flight)."""
        cached = self._cache.get(check.name)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        task = self._running.get(check.name)
        if task is None:
            task = asyncio.ensure_future(self._execute(check))
            self._running[check.name] = task
            task.add_done_callback(lambda _: self._running.pop(check.name, None))
        # shield: a probe that gives up (client gone) must not cancel the run others share.
        return await asyncio.shield(task)

    async def _execute(self, check: Check) -> CheckResult:
        start = time.perf_counter()
        raw: object
        try:
            if check.is_async:
                raw = await asyncio.wait_for(check.function(), check.timeout)  # type: ignore[arg-type]
            else:
                # The thread cannot be stopped after the timeout: sync checks should bound
                # their own I/O. The probe answers on time regardless, and while the thread
                # is still blocked the check is DOWN without starting another one.
                function = cast("Callable[[], CheckResult | bool | None]", check.function)
                thread = self._threads.get(check.name)
                if thread is None:
                    thread = self._threads[check.name] = SingleThread(f"health-{check.name}")
                raw = await asyncio.wait_for(thread.run(function), check.timeout)
                if inspect.isawaitable(raw):
                    # An async callable that does not look like one (an object with an
                    # async __call__): its coroutine runs here, in what is left of the timeout.
                    left = check.timeout - (time.perf_counter() - start)
                    raw = await asyncio.wait_for(raw, max(left, 0.001))
            result = _normalise(raw)
        except (asyncio.TimeoutError, TimeoutError):
            result = CheckResult.down(f"timed out after {check.timeout:.1f} s")
        except StillRunning as exc:
            result = CheckResult.down(str(exc))
        except Exception as exc:  # noqa: BLE001 - a failing check is a DOWN result, never a 500
            result = CheckResult.down(f"{type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - start
        result = CheckResult(result.status, result.details, result.error, round(elapsed * 1000, 3))
        self._cache[check.name] = (self._clock() + check.ttl, result)
        self._record(check, result, elapsed)
        return result

    def _record(self, check: Check, result: CheckResult, elapsed: float) -> None:
        if self._metrics is not None:
            from todo_observability.metrics import HEALTH_CHECK_DURATION, HEALTH_CHECK_STATUS

            self._metrics.gauge(HEALTH_CHECK_STATUS).labels(check.name).set(result.status.gauge)
            self._metrics.histogram(HEALTH_CHECK_DURATION).labels(check.name).observe(elapsed)
        previous = self._last.get(check.name)
        if previous is not result.status:
            # Once per transition, not on every probe.
            self._last[check.name] = result.status
            level = logging.INFO if result.status is Status.UP else logging.WARNING
            _log.log(
                level,
                "health check %s is %s%s",
                check.name,
                result.status.value,
                f" (was {previous.value})" if previous is not None else "",
                extra={"check": check.name, "status": result.status.value, "error": result.error},
            )

    async def evaluate(self, group: str) -> GroupReport:
        """Run the checks of `group` concurrently and combine them.

        A critical DOWN makes the group DOWN; a non-critical DOWN, or any DEGRADED,
        makes it DEGRADED.
        """
        checks = [check for check in self._checks.values() if group in check.groups]
        results = await asyncio.gather(*(self.run(check) for check in checks))
        status = Status.UP
        for check, result in zip(checks, results, strict=True):
            if result.status is Status.DOWN and check.critical:
                status = Status.DOWN
                break
            if result.status is not Status.UP:
                status = Status.DEGRADED
        return GroupReport(group, status, {c.name: r for c, r in zip(checks, results, strict=True)})

    async def live(self) -> GroupReport:
        """Liveness: process-level checks only."""
        return await self.evaluate("live")

    async def ready(self) -> GroupReport:
        """Readiness: dependencies; DOWN as soon as shutdown begins."""
        if self.shutting_down:
            return GroupReport("ready", Status.DOWN, {}, reason="shutting down")
        return await self.evaluate("ready")

    async def startup(self) -> GroupReport:
        """Startup: DOWN until its checks pass once, then UP for the life of the process, at no cost."""
        if self._startup_report is not None:
            return self._startup_report
        report = await self.evaluate("startup")
        if report.healthy:
            self._startup_report = report
        return report
