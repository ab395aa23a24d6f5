"""The metric catalogue, RED recorders with a cardinality guard, and the `/metrics` endpoint.

Every metric the SDK emits is declared once in `CATALOGUE`: name, type, help,
label names and buckets. Dashboards and alert rules are generated from (or
checked against) this module, so nothing can query a metric that no service
emits.

Service identity is not a label: Prometheus attaches `job` and `instance` from
the scrape target (a ServiceMonitor or scrape config names the job after the
service), and every registry exposes `target_info{service_name, service_version,
deployment_environment}` for joins.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import threading
import time
import weakref
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from prometheus_client.metrics import MetricWrapperBase
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CATALOGUE",
    "LATENCY_BUCKETS",
    "OTHER_METHOD",
    "OVERFLOW_VALUE",
    "SERIES_OVERFLOW_LABEL",
    "UNMATCHED_ROUTE",
    "LabelGuard",
    "MetricSet",
    "MetricSpec",
    "metrics_app",
]


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets, in seconds. 0.5 s is the latency SLO boundary."""
UNMATCHED_ROUTE = "<unmatched>"
"""The `route` of requests that matched no route."""
OVERFLOW_VALUE = "<other>"
"""The value a label takes once its distinct values exceed the cap."""
SERIES_OVERFLOW_LABEL = "<series>"
"""The `label` of `todo_observability_label_overflow_total` when a metric's series cap was reached."""
OTHER_METHOD = "_OTHER"
"""The `method` of requests with a non-standard HTTP method (as OTel semantic conventions say)."""
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """The declaration of one metric.

    Attributes:
        name: The exposed name; counters end in `_total`, units are suffixes (`_seconds`).
        type: counter, gauge or histogram.
        help: One sentence for the HELP line.
        labels: Label names, in order.
        buckets: Histogram bucket upper bounds.
        multiprocess_mode: How gauges aggregate across worker processes.
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    multiprocess_mode: Literal["livesum", "liveall", "max", "min", "sum", "all"] = "livesum"


HTTP_SERVER_REQUESTS = MetricSpec(
    "http_server_requests_total",
    "counter",
    "HTTP requests served, by method, route template and status code.",
    ("method", "route", "status_code"),
)
HTTP_SERVER_DURATION = MetricSpec(
    "http_server_request_duration_seconds",
    "histogram",
    "Time to serve an HTTP request, from first byte in to last byte out.",
    ("method", "route"),
)
HTTP_SERVER_IN_FLIGHT = MetricSpec(
    "http_server_requests_in_flight", "gauge", "HTTP requests being served now."
)
HTTP_CLIENT_REQUESTS = MetricSpec(
    "http_client_requests_total",
    "counter",
    "Outgoing HTTP requests, by method, server address and status code ('error' when no response came).",
    ("method", "server_address", "status_code"),
)
HTTP_CLIENT_DURATION = MetricSpec(
    "http_client_request_duration_seconds",
    "histogram",
    "Time from sending an outgoing HTTP request to its response headers.",
    ("method", "server_address"),
)
OPERATIONS = MetricSpec(
    "operations_total",
    "counter",
    "Operations measured with measured(), by operation and outcome (success or error).",
    ("operation", "outcome"),
)
OPERATION_DURATION = MetricSpec(
    "operation_duration_seconds",
    "histogram",
    "Time taken by operations measured with measured().",
    ("operation",),
)
SPANS_DROPPED = MetricSpec(
    "todo_observability_spans_dropped_total",
    "counter",
    "Finished spans that were never exported, by reason (queue_full, export_failed, exporter_unavailable).",
    ("reason",),
)
LABEL_OVERFLOW = MetricSpec(
    "todo_observability_label_overflow_total",
    "counter",
    f"Observations whose label value was replaced by {OVERFLOW_VALUE!r} by the cardinality guard "
    f"(label {SERIES_OVERFLOW_LABEL!r}: every label, the metric had its maximum of series).",
    ("metric", "label"),
)
PLUGIN_ERRORS = MetricSpec(
    "todo_observability_plugin_errors_total",
    "counter",
    "Exceptions raised by plugin hooks (they never fail a request).",
    ("hook",),
)

HEALTH_CHECK_STATUS = MetricSpec(
    "health_check_status",
    "gauge",
    "Latest result of each health check: 1 up, 0.5 degraded, 0 down.",
    ("check",),
    multiprocess_mode="min",
)
HEALTH_CHECK_DURATION = MetricSpec(
    "health_check_duration_seconds",
    "histogram",
    "Time each health check run took (cached results are not runs).",
    ("check",),
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)

MESSAGE_LATENCY_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""End-to-end message latency buckets, in seconds: a queue can hold messages for minutes."""

MESSAGING_PUBLISHED = MetricSpec(
    "messaging_publish_messages_total",
    "counter",
    "Messages published through the Dapr sidecar, by topic and outcome (success or error).",
    ("topic", "outcome"),
)
MESSAGING_PUBLISH_DURATION = MetricSpec(
    "messaging_publish_duration_seconds",
    "histogram",
    "Time the sidecar took to accept a publish.",
    ("topic",),
)
MESSAGING_PROCESSED = MetricSpec(
    "messaging_process_messages_total",
    "counter",
    "Delivered messages handled, by subscribed topic and outcome (success, retry or drop).",
    ("topic", "outcome"),
)
MESSAGING_PROCESS_DURATION = MetricSpec(
    "messaging_process_duration_seconds",
    "histogram",
    "Time the handler of a delivered message took.",
    ("topic",),
)
MESSAGING_IN_FLIGHT = MetricSpec(
    "messaging_messages_in_flight",
    "gauge",
    "Delivered messages being handled now, by subscribed topic.",
    ("topic",),
)
MESSAGING_END_TO_END = MetricSpec(
    "messaging_end_to_end_latency_seconds",
    "histogram",
    "Time from publication (the CloudEvent time) to the end of handling, by subscribed topic.",
    ("topic",),
    buckets=MESSAGE_LATENCY_BUCKETS,
)
MESSAGING_DUPLICATES = MetricSpec(
    "messaging_duplicate_messages_total",
    "counter",
    "Deliveries of a message id already processed, acknowledged without running the handler.",
    ("topic",),
)
DEAD_LETTERS = MetricSpec(
    "messaging_dead_letters_total",
    "counter",
    "Dead-lettered messages received and parked, by origin topic and the reason recorded when they failed.",
    ("origin_topic", "reason"),
)
DEAD_LETTERS_PARKED = MetricSpec(
    "messaging_dead_letters_parked",
    "gauge",
    "Messages waiting in the dead-letter store, by origin topic.",
    ("origin_topic",),
    multiprocess_mode="max",
)
DEAD_LETTER_REPLAYS = MetricSpec(
    "messaging_dead_letter_replays_total",
    "counter",
    "Parked messages republished to their origin topic, by origin topic and outcome (success or error).",
    ("origin_topic", "outcome"),
)
JOBS_SCHEDULED = MetricSpec(
    "jobs_scheduled_total",
    "counter",
    "Jobs scheduled on the Dapr Jobs API, by job type and outcome (success or error).",
    ("job_type", "outcome"),
)
JOB_TRIGGERS = MetricSpec(
    "job_triggers_total",
    "counter",
    "Job triggers handled, by job type and outcome (success, retry or drop).",
    ("job_type", "outcome"),
)
JOB_TRIGGER_DURATION = MetricSpec(
    "job_trigger_duration_seconds",
    "histogram",
    "Time the handler of a job trigger took.",
    ("job_type",),
)

CATALOGUE: tuple[MetricSpec, ...] = (
    HTTP_SERVER_REQUESTS,
    HTTP_SERVER_DURATION,
    HTTP_SERVER_IN_FLIGHT,
    HTTP_CLIENT_REQUESTS,
    HTTP_CLIENT_DURATION,
    OPERATIONS,
    OPERATION_DURATION,
    SPANS_DROPPED,
    LABEL_OVERFLOW,
    PLUGIN_ERRORS,
    HEALTH_CHECK_STATUS,
    HEALTH_CHECK_DURATION,
    MESSAGING_PUBLISHED,
    MESSAGING_PUBLISH_DURATION,
    MESSAGING_PROCESSED,
    MESSAGING_PROCESS_DURATION,
    MESSAGING_IN_FLIGHT,
    MESSAGING_END_TO_END,
    MESSAGING_DUPLICATES,
    DEAD_LETTERS,
    DEAD_LETTERS_PARKED,
    DEAD_LETTER_REPLAYS,
    JOBS_SCHEDULED,
    JOB_TRIGGERS,
    JOB_TRIGGER_DURATION,
)
"""Every metric the SDK emits."""


def _create(spec: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.type == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.type == "gauge":
        return Gauge(
            spec.name,
            spec.help,
            spec.labels,
            registry=registry,
            multiprocess_mode=spec.multiprocess_mode,
        )
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


def increment(child: Counter | Gauge) -> Callable[[float], None]:
    """What `child.inc(amount)` does, as one call: the `inc` of the value it holds.

    prometheus_client's `Counter.inc` and `Gauge.inc` check, on every call, that the
    metric is a labelled child (a cached child always is) and that a counter's amount
    is not negative (the SDK's never are), then add to the value under its lock: the
    checks cost more than the addition. The public method is returned for anything
    that does not hold its value that way (a gauge in `mostrecent` mode, another
    version of prometheus_client).
    """
    value = getattr(child, "_value", None)
    add = getattr(value, "inc", None)
    if add is None or getattr(child, "_is_most_recent", False):
        return child.inc
    checked: Callable[[float], None] = add
    return checked


class HistogramObserver:
    """What `Histogram.observe(amount)` of one labelled child does, with the bucket found by bisection.

    `observe(amount)` adds to the sum and to the first bucket whose upper bound is at
    least `amount`, as prometheus_client does, which checks the child and walks the
    buckets one by one on every call. With an exemplar, prometheus_client's own
    `observe` runs.

    Args:
        child: A labelled child of a Histogram.
    """

    __slots__ = ("_add_sum", "_bounds", "_buckets", "child")

    def __init__(self, child: Histogram):
        self.child = child
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        self._add_sum: Callable[[float], None] | None = getattr(total, "inc", None)
        self._bounds: list[float] = list(bounds or ())
        self._buckets: list[Callable[[float], None]] = [
            add for add in (getattr(bucket, "inc", None) for bucket in buckets or ()) if add
        ]
        if (
            self._add_sum is None
            or not self._bounds
            or len(self._buckets) != len(self._bounds)
            or self._bounds[-1] != float("inf")
        ):
            self._add_sum = None  # not the layout this was written for: the public method

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Observe `amount` (seconds, finite), with `exemplar` labels if given."""
        add_sum = self._add_sum
        if add_sum is None or exemplar is not None or amount != amount:  # NaN: as prometheus_client
            self.child.observe(amount, exemplar)
            return
        add_sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)


class LabelGuard:
    """Caps the distinct values of each label of each metric, and the series of each metric.

    The first `max_values` distinct values of a label are kept; later new
    values become `OVERFLOW_VALUE` and are counted in
    `todo_observability_label_overflow_total{metric, label}`. Capping each
    label is not enough (250 routes x 250 status codes x 10 methods is 625,000
    series, each under the cap), so a metric also keeps at most `max_series`
    label combinations: the first `max_series - 1`, then one where every label
    is `OVERFLOW_VALUE` (counted with `label="<series>"`).
    """

    def __init__(self, max_values: int, overflow: Counter, max_series: int = 1000):
        self.max_values = max_values
        self.max_series = max_series
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._series: dict[str, set[tuple[str, ...]]] = {}
        self._overflow = overflow
        self._lock = threading.Lock()

    def admit(self, metric: str, label: str, value: str) -> str:
        """The value to record for `label` of `metric`: `value`, or the overflow value."""
        seen = self._seen.get((metric, label))
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault((metric, label), set())
            if value in seen:
                return value
            if len(seen) < self.max_values:
                seen.add(value)
                return value
        self._overflow.labels(metric, label).inc()
        return OVERFLOW_VALUE

    def admit_series(self, metric: str, values: tuple[str, ...]) -> tuple[str, ...]:
        """The label values to record for `metric`: `values`, or all overflow once it is full.

        Call it with values each label's cap has admitted already.
        """
        series = self._series.get(metric)
        if series is not None and values in series:
            return values
        overflow = (OVERFLOW_VALUE,) * len(values)
        with self._lock:
            series = self._series.setdefault(metric, set())
            if values in series:
                return values
            # One series is kept back for the overflow combination, so the metric never has more.
            if len(series) < self.max_series - 1 or values == overflow:
                series.add(values)
                return values
        self._overflow.labels(metric, SERIES_OVERFLOW_LABEL).inc()
        return overflow

    def labels(
        self, metric: str, names: tuple[str, ...], values: tuple[str, ...]
    ) -> tuple[str, ...]:
        """`values` of the labels `names` of `metric`, through both caps."""
        admitted = tuple(
            self.admit(metric, name, value) for name, value in zip(names, values, strict=True)
        )
        return self.admit_series(metric, admitted)


class ServerSeries:
    """The series of one (method, route, status) of HTTP requests: count and duration.

    Attributes:
        requests: The `http_server_requests_total` child.
        count: Adds to it (see `increment`).
        duration: Observes into the `http_server_request_duration_seconds` child.
    """

    __slots__ = ("count", "duration", "requests")

    def __init__(self, requests: Counter, duration: Histogram):
        self.requests = requests
        self.count = increment(requests)
        self.duration = HistogramObserver(duration)


class DeliverySeries:
    """The series of one subscribed topic's delivered messages, each written as `ServerSeries` does.

    Attributes:
        in_flight: Adds to the `messaging_messages_in_flight` child (see `increment`).
        duration: Observes into the `messaging_process_duration_seconds` child.
        end_to_end: Observes into the `messaging_end_to_end_latency_seconds` child.
    """

    __slots__ = ("_metrics", "_processed", "_topic", "duration", "end_to_end", "in_flight")

    def __init__(self, metrics: MetricSet, topic: str):
        self._metrics, self._topic = metrics, topic
        self.in_flight = increment(metrics.child(MESSAGING_IN_FLIGHT, topic))
        self.duration = HistogramObserver(metrics.child(MESSAGING_PROCESS_DURATION, topic))
        self.end_to_end = HistogramObserver(metrics.child(MESSAGING_END_TO_END, topic))
        self._processed: dict[str, Callable[[float], None]] = {}

    def processed(self, outcome: str) -> Callable[[float], None]:
        """Adds to `messaging_process_messages_total` for `outcome` (a label value)."""
        add = self._processed.get(outcome)
        if add is None:
            add = self._processed[outcome] = increment(
                self._metrics.child(MESSAGING_PROCESSED, self._topic, outcome)
            )
        return add


class MetricSet:
    """The catalogue's metrics, created once in one registry.

    Get it with `_metric_set(registry)`: several apps in one process share a
    registry's metrics instead of failing on duplicate names.
    """

    def __init__(
        self, registry: CollectorRegistry, max_label_values: int = 200, max_series: int = 1000
    ):
        self.registry = registry
        self.by_name: dict[str, MetricWrapperBase] = {
            spec.name: _create(spec, registry) for spec in CATALOGUE
        }
        self._specs: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}
        self.guard = LabelGuard(max_label_values, self.counter(LABEL_OVERFLOW), max_series)
        # Label children cached by raw label values, so the hot path does one
        # dict lookup instead of prometheus_client's locked `labels()` per metric.
        self._server: dict[tuple[str, str, int], ServerSeries] = {}
        self._client: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._operations: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._deliveries: dict[str, DeliverySeries] = {}

    def register(self, spec: MetricSpec) -> MetricWrapperBase:
        """Create an application's own metric, declared like the catalogue's, in this registry.

        Registering the same spec again returns the existing metric; `child()` then
        works for it, with the cardinality guard. A different spec under a name
        already taken raises ValueError.
        """
        existing = self.by_name.get(spec.name)
        if existing is not None:
            if self._specs.get(spec.name, spec) != spec:
                raise ValueError(
                    f"metric {spec.name!r} is already registered with another declaration; "
                    "give each metric one MetricSpec."
                )
            return existing
        metric = self.by_name[spec.name] = _create(spec, self.registry)
        self._specs[spec.name] = spec
        return metric

    def counter(self, spec: MetricSpec) -> Counter:
        """The Counter declared by `spec`."""
        metric = self.by_name[spec.name]
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, spec: MetricSpec) -> Gauge:
        """The Gauge declared by `spec`."""
        metric = self.by_name[spec.name]
        assert isinstance(metric, Gauge)
        return metric

    def histogram(self, spec: MetricSpec) -> Histogram:
        """The Histogram declared by `spec`."""
        metric = self.by_name[spec.name]
        assert isinstance(metric, Histogram)
        return metric

    def _cache_limit(self) -> int:
        return 4 * self.guard.max_values

    def server_children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """(requests counter child, duration histogram child) for one request's labels."""
        series = self.server_series(method, route, status)
        return series.requests, series.duration.child

    def server_series(self, method: str, route: str, status: int) -> ServerSeries:
        """The series one request's labels record into, created (through the guard) once."""
        key = (method, route, status)
        series = self._server.get(key)
        if series is None:
            guard = self.guard
            route = guard.admit(HTTP_SERVER_REQUESTS.name, "route", route)
            status_code = guard.admit(HTTP_SERVER_REQUESTS.name, "status_code", str(status))
            series = ServerSeries(
                self.counter(HTTP_SERVER_REQUESTS).labels(
                    *guard.admit_series(HTTP_SERVER_REQUESTS.name, (method, route, status_code))
                ),
                self.histogram(HTTP_SERVER_DURATION).labels(
                    *guard.admit_series(HTTP_SERVER_DURATION.name, (method, route))
                ),
            )
            if len(self._server) < self._cache_limit():
                self._server[key] = series
        return series

    def client_children(self, method: str, host: str, status: str) -> tuple[Any, Any]:
        """(requests counter child, duration histogram child) for one outgoing request."""
        key = (method, host, status)
        children = self._client.get(key)
        if children is None:
            guard = self.guard
            host = guard.admit(HTTP_CLIENT_REQUESTS.name, "server_address", host)
            status = guard.admit(HTTP_CLIENT_REQUESTS.name, "status_code", status)
            children = (
                self.counter(HTTP_CLIENT_REQUESTS).labels(
                    *guard.admit_series(HTTP_CLIENT_REQUESTS.name, (method, host, status))
                ),
                self.histogram(HTTP_CLIENT_DURATION).labels(
                    *guard.admit_series(HTTP_CLIENT_DURATION.name, (method, host))
                ),
            )
            if len(self._client) < self._cache_limit():
                self._client[key] = children
        return children

    def operation_children(self, operation: str, outcome: str) -> tuple[Any, Any]:
        """(operations counter child, duration histogram child) for one operation outcome."""
        key = (operation, outcome)
        children = self._operations.get(key)
        if children is None:
            guard = self.guard
            operation = guard.admit(OPERATIONS.name, "operation", operation)
            children = (
                self.counter(OPERATIONS).labels(
                    *guard.admit_series(OPERATIONS.name, (operation, outcome))
                ),
                self.histogram(OPERATION_DURATION).labels(
                    *guard.admit_series(OPERATION_DURATION.name, (operation,))
                ),
            )
            if len(self._operations) < self._cache_limit():
                self._operations[key] = children
        return children

    def delivery_series(self, topic: str) -> DeliverySeries:
        """The series a subscribed topic's deliveries record into, created once."""
        series = self._deliveries.get(topic)
        if series is None:
            series = DeliverySeries(self, topic)
            if len(self._deliveries) < self._cache_limit():
                self._deliveries[topic] = series
        return series

    def child(self, spec: MetricSpec, *values: str) -> Any:
        """The child of `spec`'s metric for label `values`, each value admitted by the guard.

        Children are cached, so the hot path costs one dict lookup.
        """
        key = (spec.name, values)
        child = self._children.get(key)
        if child is None:
            child = self.by_name[spec.name].labels(
                *self.guard.labels(spec.name, spec.labels, values)
            )
            if len(self._children) < 4 * self._cache_limit():
                self._children[key] = child
        return child


_metric_sets: weakref.WeakKeyDictionary[CollectorRegistry, MetricSet] = weakref.WeakKeyDictionary()
_metric_sets_lock = threading.Lock()


def _metric_set(registry: CollectorRegistry | None = None) -> MetricSet:
    """The `MetricSet` of `registry` (default: prometheus_client's global registry), created once."""
    registry = DEFAULT_REGISTRY if registry is None else registry
    with _metric_sets_lock:
        metrics = _metric_sets.get(registry)
        if metrics is None:
            metrics = _metric_sets[registry] = MetricSet(registry)
        return metrics


def metrics_app(
    registry: CollectorRegistry | None = None, *, target_info: dict[str, str] | None = None
) -> ASGIApp:
    """An ASGI app serving `registry` in the Prometheus or OpenMetrics text format.

    The format follows the Accept header (OpenMetrics, with exemplars, when the
    scraper asks for it), `name[]` restricts it, and it is gzipped when the scraper
    accepts that: prometheus_client's own exposition. When `PROMETHEUS_MULTIPROC_DIR`
    is set, it serves the aggregate of every worker process instead (exemplars are not
    kept across processes), with `target_info` describing the service.

    The page is rendered on a worker thread, never on the event loop: with a thousand
    series, rendering (and gzip) takes milliseconds that requests would otherwise wait.
    Automatic garbage collection is paused while it renders (see `_collection_paused`).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if target_info:
            registry.set_target_info(target_info)
    served = DEFAULT_REGISTRY if registry is None else registry
    return _off_the_loop(make_wsgi_app(_Yielding(served)))


_SAMPLES_PER_TURN = 32
"""Samples the rendering thread formats before it hands the interpreter to the event loop."""
_TURN = 0.00005
"""How long it stands aside, in seconds: long enough for a waiting thread to take the GIL."""
_stand_aside = time.sleep
"""How it stands aside (a test replaces it to count the turns)."""

_MAX_PAUSE = 0.5
"""Seconds a render may keep collection paused; a slower one (a collector that hangs) gets it back."""
_pause_lock = threading.Lock()
_pausing = 0
_resume = False


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Automatic garbage collection paused while a page renders (nested and concurrent renders too).

    prometheus_client builds each family's samples at once, as named tuples, which the
    collector tracks and never untracks: 3,500 samples make about nine young collections a
    scrape, and each collection of the middle generation during one moves the live samples
    into the old generation, whose growth is what sets off a full collection of the
    process (tens of ms with every thread held). The samples die by reference counting
    when their family is written, so pausing for the render (milliseconds) defers no
    garbage a collection would have freed, except other threads' cycles, for as long.
    Collection resumes after `_MAX_PAUSE` whatever the render does (a custom collector
    that blocks), and a process that runs with collection disabled is left so.
    """
    global _pausing, _resume
    with _pause_lock:
        if _pausing == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausing += 1
    deadline = threading.Timer(_MAX_PAUSE, _end_pause)
    deadline.daemon = True
    deadline.start()
    try:
        yield
    finally:
        deadline.cancel()
        with _pause_lock:
            _pausing -= 1
            if _pausing == 0 and _resume:
                _resume = False
                gc.enable()


def _end_pause() -> None:
    """Give collection back to a process whose render has outlasted `_MAX_PAUSE`."""
    global _resume
    with _pause_lock:
        if _pausing and _resume:
            _resume = False  # renders still running leave it on
            gc.enable()


class _Samples(list):  # type: ignore[type-arg]
    """A family's samples that, iterated, stand aside every `_SAMPLES_PER_TURN` samples.

    A thread holding the GIL keeps it until another thread has waited a switch interval
    (5 ms) for it: the event loop would wait that long each time it wakes during a scrape.
    Standing aside briefly lets it run at once.
    """

    def __iter__(self) -> Iterator[Any]:
        for index, sample in enumerate(super().__iter__()):
            if index % _SAMPLES_PER_TURN == _SAMPLES_PER_TURN - 1:
                _stand_aside(_TURN)
            yield sample


class _Yielding:
    """A view of a registry whose families are rendered in turns with other threads."""

    __slots__ = ("_registry",)

    def __init__(self, registry: Any):
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        for metric in self._registry.collect():
            view = copy.copy(metric)  # a custom collector may give the same family each time
            view.samples = _Samples(metric.samples)
            yield view

    def restricted_registry(self, names: Iterable[str]) -> _Yielding:
        return _Yielding(self._registry.restricted_registry(names))


def _off_the_loop(wsgi_app: Callable[..., Iterable[bytes]]) -> ASGIApp:
    """prometheus_client's WSGI exposition app, served over ASGI from a worker thread."""
    import io

    import anyio.to_thread

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": scope["path"],
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": io.StringIO(),
            "wsgi.url_scheme": scope.get("scheme", "http"),
        }
        for name, value in scope["headers"]:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
            text = value.decode("latin-1")
            # Repeated fields are one comma-separated list (RFC 9110, section 5.3).
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        def render() -> bytes:
            with _collection_paused():
                return b"".join(wsgi_app(environ, start_response))

        body = await anyio.to_thread.run_sync(render)
        status, headers = started
        await send(
            {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return metrics
