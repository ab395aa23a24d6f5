from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from todo_observability import measured
from todo_observability._observability import Observability
from todo_observability.metrics import CATALOGUE, LATENCY_BUCKETS, _metric_set
from todo_observability.testing import metric_value

from .helpers import client

pytestmark = pytest.mark.anyio
Factory = Callable[..., Observability]


def app_with_route() -> FastAPI:
    app = FastAPI()

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: int) -> int:
        return task_id

    return app


def test_catalogue_follows_prometheus_naming() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        if spec.type == "histogram":
            assert spec.name.endswith("_seconds"), spec.name
        assert spec.help.endswith("."), spec.name
    assert 0.5 in LATENCY_BUCKETS


def test_metric_set_is_shared_per_registry() -> None:
    registry = CollectorRegistry()
    assert _metric_set(registry) is _metric_set(registry)
    assert _metric_set(CollectorRegistry()) is not _metric_set(registry)


async def test_metrics_endpoint_serves_every_catalogued_family(make_observability: Factory) -> None:
    app = app_with_route()
    make_observability(app)
    async with client(app) as http:
        await http.get("/tasks/1")
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    for spec in CATALOGUE:
        assert f"# TYPE {spec.name} {spec.type}\n" in response.text, spec.name
    assert (
        'target_info{deployment_environment="dev",service_name="unknown_service",service_version="0.0.0"} 1.0'
        in response.text
    )


async def test_openmetrics_is_served_on_request_with_trace_exemplars(
    make_observability: Factory,
) -> None:
    app = app_with_route()
    obs = make_observability(app)
    async with client(app) as http:
        await http.get("/tasks/1")
        response = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert obs.span_exporter is not None
    [span] = obs.span_exporter.get_finished_spans()
    trace_id = f"{span.context.trace_id:032x}"
    bucket_lines = [
        line
        for line in response.text.splitlines()
        if line.startswith("http_server_request_duration_seconds_bucket") and "# {" in line
    ]
    assert bucket_lines
    assert all(f'trace_id="{trace_id}"' in line for line in bucket_lines)
    assert response.text.rstrip().endswith("# EOF")


async def test_metrics_path_is_configurable_and_can_be_disabled(
    make_observability: Factory,
) -> None:
    moved, disabled = app_with_route(), app_with_route()
    make_observability(moved, metrics_path="/internal/metrics")
    async with client(moved) as http:
        assert (await http.get("/internal/metrics")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404
    make_observability(disabled, metrics_path="")
    async with client(disabled) as http:
        assert (await http.get("/metrics")).status_code == 404


async def test_measured_records_outcome_and_duration(
    make_observability: Factory, metrics_registry: CollectorRegistry
) -> None:
    make_observability()

    @measured("rrule.next")
    def compute(fail: bool) -> int:
        if fail:
            raise ValueError("bad")
        return 1

    @measured("smtp.send")
    async def send() -> str:
        await asyncio.sleep(0)
        return "sent"

    assert compute(False) == 1
    with pytest.raises(ValueError, match="bad"):
        compute(True)
    assert await send() == "sent"
    with measured("block"):
        pass
    with pytest.raises(KeyError), measured("block"):
        raise KeyError("x")

    def value(name: str, **labels: str) -> float:
        return metric_value(metrics_registry, name, **labels)

    assert value("operations_total", operation="rrule.next", outcome="success") == 1
    assert value("operations_total", operation="rrule.next", outcome="error") == 1
    assert value("operations_total", operation="smtp.send", outcome="success") == 1
    assert value("operations_total", operation="block", outcome="success") == 1
    assert value("operations_total", operation="block", outcome="error") == 1
    assert value("operation_duration_seconds_count", operation="rrule.next") == 2
    assert compute.__name__ == "compute"


def test_measured_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs an operation name"):
        measured("")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required in CI: install the Debian package 'prometheus'")
        pytest.skip("promtool (Debian package prometheus) is not installed; ./dev test installs it")
    return path


async def test_promtool_check_metrics_is_clean(make_observability: Factory) -> None:
    app = app_with_route()
    obs = make_observability(app)
    obs.metrics.guard.admit("x", "y", "z")
    async with client(app) as http:
        for i in range(3):
            await http.get(f"/tasks/{i}")
        await http.get("/nowhere")
        text = (await http.get("/metrics")).text
        openmetrics = (
            await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        ).text
    result = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    # promtool reads only the classic text format; OpenMetrics goes through its strict reference parser.
    families = {family.name for family in text_string_to_metric_families(openmetrics)}  # type: ignore[no-untyped-call]
    assert {"http_server_requests", "http_server_request_duration_seconds", "target"} <= families


def test_multiprocess_mode_aggregates_workers(tmp_path: Path) -> None:
    """Two worker processes record; a third serves the sum (as under gunicorn or uvicorn --workers)."""
    worker = textwrap.dedent(
        """
        import asyncio, httpx
        from fastapi import FastAPI
        import todo_observability as t
        app = FastAPI()
        @app.get("/ping")
        async def ping() -> str:
            return "pong"
        t.configure(app, traces_exporter="none", load_plugins=False)
        async def main() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
                for _ in range(3):
                    await c.get("/ping")
                if __import__("sys").argv[1] == "serve":
                    print((await c.get("/metrics")).text)
        asyncio.run(main())
        """
    )
    script = tmp_path / "worker.py"
    script.write_text(worker)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    for _ in range(2):
        subprocess.run(
            [sys.executable, str(script), "record"], env=env, check=True, capture_output=True
        )
    served = subprocess.run(
        [sys.executable, str(script), "serve"], env=env, check=True, capture_output=True, text=True
    )
    line = next(
        line
        for line in served.stdout.splitlines()
        if line.startswith("http_server_requests_total{") and 'route="/ping"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == 9.0
    assert (
        'target_info{deployment_environment="dev",service_name="unknown_service"' in served.stdout
    )


def test_observations_on_a_registry_are_visible_to_its_reader(
    metrics_registry: CollectorRegistry,
) -> None:
    metrics = _metric_set(metrics_registry)
    counter, histogram = metrics.client_children("GET", "backend", "200")
    counter.inc()
    histogram.observe(0.2)
    assert (
        metric_value(
            metrics_registry,
            "http_client_requests_total",
            method="GET",
            server_address="backend",
            status_code="200",
        )
        == 1
    )
    assert (
        metric_value(
            metrics_registry,
            "http_client_request_duration_seconds_bucket",
            method="GET",
            server_address="backend",
            le="0.25",
        )
        == 1
    )
    assert (
        metric_value(
            metrics_registry,
            "http_client_request_duration_seconds_bucket",
            method="GET",
            server_address="backend",
            le="0.1",
        )
        == 0
    )


def test_shutdown_releases_target_info_and_the_latest_label_cap_applies(
    make_observability: Factory,
) -> None:
    from prometheus_client import REGISTRY

    first = make_observability(registry=REGISTRY, service_name="a", max_label_values=5)
    assert REGISTRY.get_target_info() == {
        "service_name": "a",
        "service_version": "0.0.0",
        "deployment_environment": "dev",
    }
    assert first.metrics.guard.max_values == 5
    first.shutdown()
    assert REGISTRY.get_target_info() is None
    second = make_observability(registry=REGISTRY, service_name="b", max_label_values=7)
    assert REGISTRY.get_target_info()["service_name"] == "b"  # type: ignore[index]
    assert second.metrics is first.metrics
    assert second.metrics.guard.max_values == 7


async def test_the_series_cap_is_configured_by_its_environment_variable(
    make_observability: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TODO_OBS_MAX_SERIES", "2")
    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    obs = make_observability(app, registry=registry)
    assert obs.metrics.guard.max_series == 2
    async with client(app) as http:
        for path in ("/items/1", "/nowhere", "/items/x", "/items/2"):
            await http.get(path)
    assert series_count(registry, "http_server_requests_total") == 2
    assert (
        metric_value(
            registry,
            "http_server_requests_total",
            method="<other>",
            route="<other>",
            status_code="<other>",
        )
        == 2
    )


def test_applications_register_their_own_metrics_beside_the_catalogue() -> None:
    from prometheus_client import CollectorRegistry

    from todo_observability.metrics import MetricSpec, _metric_set

    registry = CollectorRegistry()
    metrics = _metric_set(registry)
    spec = MetricSpec("app_things_total", "counter", "Things done, by kind.", ("kind",))
    first = metrics.register(spec)
    assert metrics.register(spec) is first
    metrics.child(spec, "a").inc()
    assert registry.get_sample_value("app_things_total", {"kind": "a"}) == 1
    with pytest.raises(ValueError, match="another declaration"):
        metrics.register(MetricSpec("app_things_total", "counter", "Other help.", ("kind",)))
    with pytest.raises(ValueError, match="another declaration"):
        metrics.register(MetricSpec("http_server_requests_total", "counter", "Mine.", ()))


def series_count(registry: CollectorRegistry, name: str) -> int:
    """Distinct label sets of the metric `name` (a histogram's buckets count as one series)."""
    for family in registry.collect():
        if family.name == name or f"{family.name}_total" == name:
            return len(
                {
                    tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                    for sample in family.samples
                    if not sample.name.endswith("_created")
                }
            )
    return 0


def test_a_flood_of_label_combinations_stays_under_the_series_cap_of_each_metric() -> None:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    metrics = _metric_set(registry)
    metrics.guard.max_series = 300
    methods = [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "CONNECT",
        "OPTIONS",
        "TRACE",
        "PATCH",
        "_OTHER",
    ]
    for route in range(60):
        for status in range(100, 130):
            for method in methods:
                counter, histogram = metrics.server_children(method, f"/r{route}", status)
                counter.inc()
                histogram.observe(0.01)
                metrics.client_children(method, f"host-{route}", str(status))[0].inc()
                metrics.operation_children(f"op-{route}-{status}", method)[0].inc()
    for name in (
        "http_server_requests_total",
        "http_server_request_duration_seconds",
        "http_client_requests_total",
        "http_client_request_duration_seconds",
        "operations_total",
        "operation_duration_seconds",
    ):
        assert series_count(registry, name) <= 300, name
    assert (
        metric_value(
            registry,
            "http_server_requests_total",
            method="<other>",
            route="<other>",
            status_code="<other>",
        )
        or 0
    ) > 0
    assert (
        metric_value(
            registry,
            "todo_observability_label_overflow_total",
            metric="http_server_requests_total",
            label="<series>",
        )
        or 0
    ) > 0
    # 18,000 combinations per metric, and the page holds a few hundred series of each.
    page = generate_latest(registry)
    assert len(page) < 2_000_000, len(page)


label_value = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


@settings(max_examples=60, deadline=None)
@given(
    max_series=st.integers(min_value=1, max_value=12),
    max_values=st.integers(min_value=1, max_value=8),
    combos=st.lists(st.tuples(label_value, label_value, label_value), max_size=120),
)
def test_the_guard_never_lets_a_metric_exceed_its_series_cap(
    max_series: int, max_values: int, combos: list[tuple[str, str, str]]
) -> None:
    from prometheus_client import Counter

    from todo_observability.metrics import OVERFLOW_VALUE, LabelGuard

    registry = CollectorRegistry()
    overflow = Counter("overflow_total", "o", ("metric", "label"), registry=registry)
    guard = LabelGuard(max_values, overflow, max_series)
    recorded: dict[tuple[str, str, str], tuple[str, ...]] = {}
    for combo in combos:
        admitted = guard.labels("m", ("x", "y", "z"), combo)
        assert admitted == (OVERFLOW_VALUE,) * 3 or all(
            value in (given_value, OVERFLOW_VALUE)
            for value, given_value in zip(admitted, combo, strict=True)
        )
        # The same combination always lands on the same series.
        assert recorded.setdefault(combo, admitted) == admitted
    assert len(set(recorded.values())) <= max_series


def test_the_direct_observer_and_increment_record_what_the_public_methods_record() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from todo_observability.metrics import HistogramObserver, increment

    def exposition(direct: bool) -> bytes:
        registry = CollectorRegistry()
        counter = Counter("c_total", "c", ["a"], registry=registry).labels("x")
        histogram = Histogram("h_seconds", "h", ["a"], registry=registry).labels("x")
        observer = HistogramObserver(histogram)
        add = increment(counter)
        for amount in (0.0, 0.005, 0.0051, 0.3, 2.5, 10.0, 11.0, float("nan")):
            if direct:
                observer.observe(amount)
                add(1)
            else:
                histogram.observe(amount)
                counter.inc()
        return b"\n".join(
            line for line in generate_latest(registry).splitlines() if b"_created" not in line
        )

    assert exposition(direct=True) == exposition(direct=False)


def test_a_topics_delivery_series_record_what_the_public_methods_record() -> None:
    from prometheus_client import generate_latest

    from todo_observability.metrics import (
        MESSAGING_END_TO_END,
        MESSAGING_IN_FLIGHT,
        MESSAGING_PROCESS_DURATION,
        MESSAGING_PROCESSED,
        MetricSet,
    )

    def exposition(direct: bool) -> bytes:
        metrics = MetricSet(CollectorRegistry())
        for outcome, seconds in (("success", 0.004), ("retry", 0.2), ("success", 7.0)):
            if direct:
                series = metrics.delivery_series("task-events")
                series.in_flight(1)
                series.processed(outcome)(1)
                series.duration.observe(seconds)
                series.end_to_end.observe(seconds * 10)
                series.in_flight(-1)
            else:
                metrics.child(MESSAGING_IN_FLIGHT, "task-events").inc()
                metrics.child(MESSAGING_PROCESSED, "task-events", outcome).inc()
                metrics.child(MESSAGING_PROCESS_DURATION, "task-events").observe(seconds)
                metrics.child(MESSAGING_END_TO_END, "task-events").observe(seconds * 10)
                metrics.child(MESSAGING_IN_FLIGHT, "task-events").dec()
        return b"\n".join(
            line
            for line in generate_latest(metrics.registry).splitlines()
            if b"_created" not in line
        )

    page = exposition(direct=True)
    assert page == exposition(direct=False)
    assert b'messaging_process_messages_total{outcome="success",topic="task-events"} 2.0' in page


async def test_the_page_is_rendered_off_the_event_loop() -> None:
    import threading

    from prometheus_client import Counter
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    from todo_observability.metrics import metrics_app

    seen: list[int] = []

    class Recorder(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            seen.append(threading.get_ident())
            yield GaugeMetricFamily("render_probe", "where the page was rendered", value=1)

    registry = CollectorRegistry()
    registry.register(Recorder())
    Counter("orders", "orders taken", registry=registry).inc()
    async with client(metrics_app(registry)) as http:
        page = await http.get("/metrics")
        openmetrics = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        only = await http.get("/metrics", params={"name[]": "orders_total"})
        zipped = await http.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert seen
    assert threading.get_ident() not in seen  # the loop's thread never rendered it
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "render_probe 1.0" in page.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert "orders_total 1.0" in only.text
    assert "render_probe" not in only.text
    # httpx decodes the body; the header says what travelled.
    assert zipped.headers["content-encoding"] == "gzip"
    assert "orders_total 1.0" in zipped.text


async def test_the_rendering_thread_stands_aside_for_the_loop_and_renders_the_same_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from prometheus_client import Counter, Histogram, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from todo_observability import metrics

    turns: list[int] = []
    monkeypatch.setattr(
        metrics, "_stand_aside", lambda seconds: turns.append(threading.get_ident())
    )
    registry = CollectorRegistry()
    requests = Counter("requests", "Requests.", ["route"], registry=registry)
    durations = Histogram("durations_seconds", "Durations.", ["route"], registry=registry)
    for route in range(100):
        requests.labels(f"/r{route}").inc(route)
        durations.labels(f"/r{route}").observe(route / 100)
    samples = sum(len(family.samples) for family in registry.collect())
    async with client(metrics.metrics_app(registry)) as http:
        page = await http.get("/metrics")
        openmetrics = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    # Every 32 samples of a family, on the rendering thread, never on the loop's.
    per_family = sum(
        len(family.samples) // metrics._SAMPLES_PER_TURN for family in registry.collect()
    )
    assert len(turns) == 2 * per_family
    assert per_family >= samples // 32 - 2
    assert threading.get_ident() not in turns
    assert page.content == generate_latest(registry)
    # The created timestamps are read at each rendering: the same value twice.
    assert openmetrics.content == generate_openmetrics(registry)  # type: ignore[no-untyped-call]


def _add_3500_samples(registry: CollectorRegistry) -> None:
    from prometheus_client import Counter, Histogram

    requests = Counter("requests", "Requests.", ["route", "status"], registry=registry)
    durations = Histogram("durations_seconds", "Durations.", ["route"], registry=registry)
    for route in range(100):
        for status in range(10):
            requests.labels(f"/r{route}", str(200 + status)).inc()
        durations.labels(f"/r{route}").observe(route / 1000)


class _Mark:
    """A collector that only notes, in `rendering`, that the render reached it."""

    def __init__(self, rendering: list[bool], value: bool) -> None:
        self.rendering = rendering
        self.value = value

    def collect(self) -> list[object]:
        self.rendering[0] = self.value
        return []


async def test_a_scrape_sets_off_no_garbage_collection() -> None:
    # prometheus_client's samples are named tuples the collector tracks: rendered with
    # collection on, 3,500 of them set off young collections, whose promotions lead to full
    # ones that hold every thread. The render pauses automatic collection.
    import gc

    from todo_observability import metrics

    rendering = [False]
    registry = CollectorRegistry()
    # Collected in the order registered: the marks bracket every family of the page.
    registry.register(_Mark(rendering, True))  # type: ignore[arg-type]
    _add_3500_samples(registry)
    registry.register(_Mark(rendering, False))  # type: ignore[arg-type]
    during_render: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and rendering[0]:
            during_render.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(seen)
    try:
        async with client(metrics.metrics_app(registry)) as http:
            for _ in range(3):
                page = await http.get("/metrics")
                assert page.status_code == 200
                assert page.text.count('requests_total{route="/r') == 1000
    finally:
        gc.callbacks.remove(seen)
    assert during_render == []
    assert gc.isenabled()


def test_collection_resumes_after_the_last_of_overlapping_renders_and_after_a_failure() -> None:
    import gc

    from todo_observability.metrics import _collection_paused

    assert gc.isenabled()
    with _collection_paused():
        assert not gc.isenabled()
        with _collection_paused():  # a second scrape at the same time
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collection_paused():
        raise RuntimeError("the render failed")
    assert gc.isenabled()


def test_a_process_that_runs_without_automatic_collection_is_left_so() -> None:
    import gc

    from todo_observability.metrics import _collection_paused

    gc.disable()
    try:
        with _collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_render_that_hangs_gives_collection_back_after_the_pause_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    import threading

    from todo_observability import metrics

    monkeypatch.setattr(metrics, "_MAX_PAUSE", 0.05)
    release = threading.Event()
    during: list[bool] = []

    class Slow:
        """A custom collector stuck on its source (a database that does not answer)."""

        def collect(self) -> list[object]:
            during.append(gc.isenabled())
            release.wait(1.0)  # well past the limit
            during.append(gc.isenabled())
            return []

    registry = CollectorRegistry()
    registry.register(Slow())  # type: ignore[arg-type]
    async with client(metrics.metrics_app(registry)) as http:
        scrape = asyncio.ensure_future(http.get("/metrics"))
        await asyncio.sleep(0.3)
        assert gc.isenabled()  # back while the render still waits
        release.set()
        assert (await scrape).status_code == 200
    assert during == [False, True]
    assert gc.isenabled()
