"""The check engine: bounded, single-flight, cached, grouped, honest."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from todo_observability.exceptions import ConfigurationError
from todo_observability.health import Check, CheckResult, HealthEngine, Status
from todo_observability.metrics import _metric_set
from todo_observability.testing import metric_value

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_hanging_check_is_down_and_the_probe_answers_on_time() -> None:
    async def hangs() -> CheckResult:
        await asyncio.sleep(3600)
        return CheckResult.up()

    engine = HealthEngine()
    engine.add(Check("db", hangs, timeout=0.2), Check("fine", lambda: True))
    start = time.perf_counter()
    report = await engine.ready()
    elapsed = time.perf_counter() - start
    assert elapsed < 0.2 + 0.3
    assert report.status is Status.DOWN
    assert report.results["db"].error == "timed out after 0.2 s"
    assert report.results["fine"].status is Status.UP


async def test_checks_run_concurrently() -> None:
    async def slow() -> None:
        await asyncio.sleep(0.2)

    engine = HealthEngine()
    engine.add(*(Check(f"slow-{i}", slow) for i in range(5)))
    start = time.perf_counter()
    report = await engine.ready()
    assert report.status is Status.UP
    assert time.perf_counter() - start < 0.2 * 2  # not 5 x 0.2 s


async def test_a_probe_storm_calls_the_dependency_once_per_ttl() -> None:
    calls = 0

    async def dependency() -> CheckResult:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return CheckResult.up()

    clock = FakeClock()
    engine = HealthEngine(clock=clock)
    engine.add(Check("db", dependency, ttl=5.0))
    reports = await asyncio.gather(*(engine.ready() for _ in range(200)))
    assert calls == 1
    assert all(report.status is Status.UP for report in reports)
    clock.now += 4.9
    await engine.ready()
    assert calls == 1  # still fresh
    clock.now += 0.2
    await asyncio.gather(*(engine.ready() for _ in range(50)))
    assert calls == 2


async def test_a_cancelled_probe_does_not_cancel_the_shared_run() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def dependency() -> None:
        started.set()
        await release.wait()

    engine = HealthEngine()
    engine.add(Check("db", dependency))
    first = asyncio.ensure_future(engine.ready())
    await started.wait()
    first.cancel()
    second = asyncio.ensure_future(engine.ready())
    await asyncio.sleep(0)
    release.set()
    assert (await second).status is Status.UP


async def test_non_critical_down_degrades_and_critical_down_fails() -> None:
    engine = HealthEngine()
    engine.add(Check("cache", lambda: False, critical=False), Check("db", lambda: True))
    report = await engine.ready()
    assert (report.status, report.healthy) == (Status.DEGRADED, True)
    engine.add(Check("broker", lambda: CheckResult.down("no leader")))
    report = await engine.ready()
    assert (report.status, report.healthy) == (Status.DOWN, False)


async def test_degraded_result_degrades_the_group() -> None:
    engine = HealthEngine()
    engine.add(Check("db", lambda: CheckResult.degraded("replica lag 12 s", lag_s=12)))
    report = await engine.ready()
    assert report.status is Status.DEGRADED
    assert report.results["db"].details == {"lag_s": 12}


async def test_sync_checks_run_in_a_thread() -> None:
    threads: list[int] = []

    def sync_check() -> bool:
        threads.append(threading.get_ident())
        return True

    engine = HealthEngine()
    engine.add(Check("sync", sync_check))
    assert (await engine.ready()).status is Status.UP
    assert threads != [threading.get_ident()]


def health_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"health-{name}"]


async def test_a_hung_sync_check_holds_one_thread_and_leaves_the_default_executor_free() -> None:
    release = threading.Event()
    calls = 0

    def hangs() -> bool:
        nonlocal calls
        calls += 1
        release.wait(60)
        return True

    clock = FakeClock()
    engine = HealthEngine(clock=clock)
    engine.add(Check("db", hangs, timeout=0.1, ttl=1.0))
    loop = asyncio.get_running_loop()
    before = threading.active_count()
    try:
        reports = []
        # More TTL periods than the loop's default executor has threads (min(32, cpus + 4)).
        for _ in range(12):
            reports.append(await engine.ready())
            clock.now += 1.0
        assert threading.active_count() <= before + 1
        assert calls == 1
        assert len(health_threads("db")) == 1
        first, *later = (report.results["db"] for report in reports)
        assert (first.status, first.error) == (Status.DOWN, "timed out after 0.1 s")
        for result in later:
            assert result.status is Status.DOWN
            assert result.error is not None
            assert result.error.startswith("still running since "), result.error
        # The loop's default executor (and so the resolver) is as free as before.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 5.0) == 42
        assert await asyncio.wait_for(loop.getaddrinfo("localhost", 80), 5.0)
    finally:
        release.set()
    for thread in health_threads("db"):
        await asyncio.to_thread(thread.join, 10.0)
    assert health_threads("db") == []
    clock.now += 1.0
    assert (await engine.ready()).status is Status.UP  # a fresh run, once the old one returned
    assert calls == 2


async def test_exceptions_and_wrong_return_values_are_down_results() -> None:
    def raises() -> None:
        raise ConnectionRefusedError("connection refused")

    engine = HealthEngine()
    engine.add(Check("db", raises), Check("odd", lambda: "yes"))  # type: ignore[arg-type,return-value]
    report = await engine.ready()
    assert report.results["db"].error == "ConnectionRefusedError: connection refused"
    assert (
        report.results["odd"].error
        == "TypeError: a health check must return a CheckResult, True, False or None, not str"
    )
    assert report.results["db"].duration_ms >= 0


def test_a_dependency_check_cannot_join_liveness() -> None:
    with pytest.raises(ConfigurationError, match="cannot be in the 'live' group") as info:
        Check("db", lambda: True, groups=("live", "ready"))
    assert "restarting every pod does not fix a database blip" in str(info.value)
    Check("event-loop", lambda: True, groups=("live",), dependency=False)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "needs a name"),
        ({"groups": ("alive",)}, "groups must be among live, ready, startup"),
        ({"groups": ()}, "groups must be among"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"ttl": -1}, "ttl >= 0"),
    ],
)
def test_invalid_registrations_are_explained(kwargs: dict[str, object], fragment: str) -> None:
    options: dict[str, object] = {"name": "db", "function": lambda: True, **kwargs}
    with pytest.raises(ConfigurationError, match=fragment):
        Check(**options)  # type: ignore[arg-type]


def test_names_are_unique() -> None:
    engine = HealthEngine()
    engine.add(Check("db", lambda: True))
    with pytest.raises(ConfigurationError, match="'db' is already registered"):
        engine.add(Check("db", lambda: False))


async def test_startup_latches_after_the_first_success() -> None:
    calls = 0
    healthy = False

    def migrations_done() -> bool:
        nonlocal calls
        calls += 1
        return healthy

    engine = HealthEngine()
    engine.add(Check("migrations", migrations_done, groups=("startup",), ttl=0))
    assert (await engine.startup()).status is Status.DOWN
    healthy = True
    assert (await engine.startup()).status is Status.UP
    healthy = False
    for _ in range(3):
        assert (await engine.startup()).status is Status.UP
    assert calls == 2  # no cost once started


async def test_readiness_is_down_once_shutdown_begins_and_liveness_is_not() -> None:
    engine = HealthEngine()
    engine.add(Check("db", lambda: True))
    assert (await engine.ready()).healthy
    engine.begin_shutdown()
    report = await engine.ready()
    assert (report.status, report.reason) == (Status.DOWN, "shutting down")
    assert (await engine.live()).healthy


async def test_metrics_and_transitions_are_recorded_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="todo_observability.health")
    registry = CollectorRegistry()
    clock = FakeClock()
    state = {"up": True}
    engine = HealthEngine(_metric_set(registry), clock=clock)
    engine.add(Check("db", lambda: state["up"], ttl=1))
    for up in (True, True, False, False, True):
        state["up"] = up
        clock.now += 2
        await engine.ready()
    assert metric_value(registry, "health_check_status", check="db") == 1.0
    assert metric_value(registry, "health_check_duration_seconds_count", check="db") == 5
    messages = [r.getMessage() for r in caplog.records if r.name == "todo_observability.health"]
    assert messages == [
        "health check db is UP",
        "health check db is DOWN (was UP)",
        "health check db is UP (was DOWN)",
    ]
    state["up"] = False
    clock.now += 2
    await engine.ready()
    assert metric_value(registry, "health_check_status", check="db") == 0.0


async def test_invalidate_forgets_cached_results() -> None:
    calls = 0

    def count() -> bool:
        nonlocal calls
        calls += 1
        return True

    engine = HealthEngine()
    engine.add(Check("a", count, ttl=60), Check("b", count, ttl=60))
    await engine.ready()
    await engine.ready()
    engine.invalidate("a")
    await engine.ready()
    engine.invalidate()
    await engine.ready()
    assert calls == 2 + 1 + 2


def test_replace_swaps_a_registered_check() -> None:
    engine = HealthEngine()
    engine.add(Check("event-loop", lambda: True, groups=("live",), dependency=False))
    tuned = Check("event-loop", lambda: False, groups=("live",), dependency=False)
    engine.add(tuned, replace=True)
    assert engine.checks["event-loop"] is tuned


async def test_an_object_with_an_async_call_is_awaited() -> None:
    class Probe:
        async def __call__(self) -> CheckResult:
            return CheckResult.degraded("slow replica")

    engine = HealthEngine()
    engine.add(Check("replica", Probe()))
    report = await engine.ready()
    assert report.results["replica"].error == "slow replica"


async def test_stopping_the_refresh_waits_for_the_runs_it_started() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow() -> bool:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()
        return True

    engine = HealthEngine()
    engine.add(Check("db", slow, ttl=60))
    engine.start_refresh()
    await asyncio.wait_for(started.wait(), 5.0)
    await engine.stop_refresh()
    # Done before the app closes what the check uses (an engine, a client).
    assert finished.is_set()
    assert not engine.refreshing


async def test_the_refresh_runs_each_check_again_as_its_result_expires() -> None:
    calls: list[str] = []

    def counted(name: str) -> Callable[[], bool]:
        def check() -> bool:
            calls.append(name)
            return True

        return check

    engine = HealthEngine()
    engine.add(Check("fast", counted("fast"), ttl=1.0), Check("slow", counted("slow"), ttl=60))
    engine.start_refresh()
    try:

        async def fast_twice() -> None:
            while calls.count("fast") < 2:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(fast_twice(), 10.0)
    finally:
        await engine.stop_refresh()
    assert calls.count("slow") == 1  # still fresh: not run again
