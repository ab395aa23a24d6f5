"""The Prometheus metrics of the emulated sidecars (daprd's) and of their broker (kafka_exporter's).

Each emulated sidecar counts what it really does under the names and labels daprd uses, and
serves them on its own metrics port, as daprd does (`--metrics-port`, 9090 by default); the
broker is exported under the names of kafka_exporter (its port is 9308). Every registry is a
`CollectorRegistry` of its own, never prometheus_client's global one, so several sidecars (and
the app under test) share one process.

Names and labels, and where they come from (see `SOURCES`):

- dapr/dapr `docs/development/dapr-metrics.md` (the list), `pkg/diagnostics/component_monitoring.go`,
  `service_monitoring.go` and `http_monitoring.go` (the tags of each view) and
  `pkg/runtime/subscription/postman/http/http.go` (which `process_status` and `status` an
  answer of the app is counted as). A metric name is `dapr_` + the OpenCensus view name with
  `/` turned into `_`; latencies are histograms in milliseconds on daprd's default
  distribution (`LATENCY_BUCKETS_MS`); `namespace` is left out, as daprd leaves out an empty
  tag, because the local run has no Kubernetes namespace.
- danielqsj/kafka_exporter `README.md`, section "Metrics".

What only a cluster has is not emulated: mTLS and Sentry (`dapr_runtime_mtls_*`,
`dapr_sentry_*`), the kubelet's cAdvisor (`container_*`) and kube-state-metrics (`kube_*`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from todo_observability.testing.sidecar.broker import Broker
    from todo_observability.testing.sidecar.records import DeliveryAttempt, JobTrigger

__all__ = [
    "LATENCY_BUCKETS_MS",
    "SOURCES",
    "DaprMetrics",
    "KafkaExporterCollector",
    "MetricsMiddleware",
    "kafka_exporter_registry",
]

LATENCY_BUCKETS_MS = (
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300,
    400, 500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
"""daprd's default latency distribution, in milliseconds (`defaultLatencyDistribution`)."""

_DAPR_DOCS = "https://github.com/dapr/dapr/blob/master/docs/development/dapr-metrics.md"
_KAFKA_EXPORTER_DOCS = "https://github.com/danielqsj/kafka_exporter#metrics"

SOURCES: dict[str, str] = {
    "dapr_component_pubsub_ingress_count": _DAPR_DOCS,
    "dapr_component_pubsub_ingress_latencies": _DAPR_DOCS,
    "dapr_component_pubsub_egress_count": _DAPR_DOCS,
    "dapr_component_pubsub_egress_latencies": _DAPR_DOCS,
    "dapr_component_job_success_count": _DAPR_DOCS,
    "dapr_component_job_failure_count": _DAPR_DOCS,
    "dapr_component_job_latencies": _DAPR_DOCS,
    "dapr_component_state_count": _DAPR_DOCS,
    "dapr_component_state_latencies": _DAPR_DOCS,
    "dapr_http_server_request_count": _DAPR_DOCS,
    "dapr_http_server_latency": _DAPR_DOCS,
    "dapr_http_client_completed_count": _DAPR_DOCS,
    "dapr_http_client_roundtrip_latency": _DAPR_DOCS,
    "dapr_runtime_service_invocation_req_sent_total": _DAPR_DOCS,
    "dapr_runtime_service_invocation_res_recv_total": _DAPR_DOCS,
    "dapr_runtime_service_invocation_res_recv_latency_ms": _DAPR_DOCS,
    "kafka_brokers": _KAFKA_EXPORTER_DOCS,
    "kafka_topic_partitions": _KAFKA_EXPORTER_DOCS,
    "kafka_topic_partition_current_offset": _KAFKA_EXPORTER_DOCS,
    "kafka_topic_partition_oldest_offset": _KAFKA_EXPORTER_DOCS,
    "kafka_topic_partition_in_sync_replica": _KAFKA_EXPORTER_DOCS,
    "kafka_topic_partition_under_replicated_partition": _KAFKA_EXPORTER_DOCS,
    "kafka_consumergroup_current_offset": _KAFKA_EXPORTER_DOCS,
    "kafka_consumergroup_current_offset_sum": _KAFKA_EXPORTER_DOCS,
    "kafka_consumergroup_lag": _KAFKA_EXPORTER_DOCS,
    "kafka_consumergroup_lag_sum": _KAFKA_EXPORTER_DOCS,
    "kafka_consumergroup_members": _KAFKA_EXPORTER_DOCS,
}
"""Every metric the emulator serves, and the documentation its name and labels come from."""

_JOB_TRIGGER_OP = "job_trigger_op"  # component_monitoring.go JobTriggerOp

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _View:
    name: str
    documentation: str
    histogram: bool = False


_VIEWS = {
    view.name: view
    for view in (
        _View(
            "dapr_component_pubsub_ingress_count",
            "The number of incoming messages arriving from the pub/sub component.",
        ),
        _View(
            "dapr_component_pubsub_ingress_latencies",
            "The consuming app event processing latency.",
            histogram=True,
        ),
        _View(
            "dapr_component_pubsub_egress_count",
            "The number of outgoing messages published to the pub/sub component.",
        ),
        _View(
            "dapr_component_pubsub_egress_latencies",
            "The latency of the response from the pub/sub component.",
            histogram=True,
        ),
        _View("dapr_component_job_success_count", "The number of successful job triggers."),
        _View("dapr_component_job_failure_count", "The number of failed job triggers."),
        _View(
            "dapr_component_job_latencies",
            "The latency of the response from the app that processed the triggered job.",
            histogram=True,
        ),
        _View(
            "dapr_component_state_count",
            "The number of operations performed on the state component.",
        ),
        _View(
            "dapr_component_state_latencies",
            "The latency of the response from the state component.",
            histogram=True,
        ),
        _View("dapr_http_server_request_count", "Number of HTTP requests started in server."),
        _View(
            "dapr_http_server_latency", "HTTP request end to end latency in server.", histogram=True
        ),
        _View("dapr_http_client_completed_count", "Count of completed requests."),
        _View(
            "dapr_http_client_roundtrip_latency",
            "Time between first byte of request headers sent to last byte of response "
            "received, or terminal error.",
            histogram=True,
        ),
        _View(
            "dapr_runtime_service_invocation_req_sent_total",
            "The number of remote service invocation requests sent.",
        ),
        _View(
            "dapr_runtime_service_invocation_res_recv_total",
            "The number of remote service invocation responses received.",
        ),
        _View(
            "dapr_runtime_service_invocation_res_recv_latency_ms",
            "The remote service invocation round trip latency.",
            histogram=True,
        ),
    )
}


class DaprMetrics(Collector):
    """One emulated daprd's metrics, in a registry of its own (`registry`).

    A series appears when it is first recorded, as with daprd's OpenCensus views: a failure
    series exists only after a failure.

    Args:
        app_id: The sidecar's app id (the `app_id` label of every series).
    """

    def __init__(self, app_id: str):
        self.app_id = app_id
        self._lock = threading.Lock()
        self._counts: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, list[float]]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    # --- recording ----------------------------------------------------------------------------

    def _labels(self, labels: Mapping[str, str]) -> Labels:
        return tuple(sorted({"app_id": self.app_id, **labels}.items()))

    def _count(self, name: str, labels: Mapping[str, str]) -> None:
        key = self._labels(labels)
        with self._lock:
            series = self._counts.setdefault(name, {})
            series[key] = series.get(key, 0.0) + 1

    def _observe(self, name: str, labels: Mapping[str, str], value_ms: float) -> None:
        key = self._labels(labels)
        with self._lock:
            series = self._histograms.setdefault(name, {})
            # One cumulative count per bucket, then +Inf, then the sum.
            values = series.setdefault(key, [0.0] * (len(LATENCY_BUCKETS_MS) + 2))
            for index, bound in enumerate(LATENCY_BUCKETS_MS):
                if value_ms <= bound:
                    values[index] += 1
            values[-2] += 1
            values[-1] += value_ms

    def delivery_attempt(self, attempt: DeliveryAttempt) -> None:
        """Count a delivery to the app: `dapr_component_pubsub_ingress_*`.

        `process_status` is daprd's outcome; `status` repeats it, except for an app's explicit
        DROP, which daprd counts as `status="success"` (the app handled it: it chose to drop).
        daprd counts bulk deliveries under `dapr_component_pubsub_ingress_bulk_*`, which the
        emulator does not serve.
        """
        if attempt.bulk:
            return
        status = "success" if attempt.outcome == "drop" and attempt.app_status == "DROP" else None
        labels = {
            "component": attempt.pubsub,
            "topic": attempt.topic,
            "process_status": attempt.outcome,
            "status": status or attempt.outcome,
        }
        self._count("dapr_component_pubsub_ingress_count", labels)
        if attempt.elapsed_ms > 0:
            self._observe("dapr_component_pubsub_ingress_latencies", labels, attempt.elapsed_ms)

    def publish(self, component: str, topic: str, *, success: bool, elapsed_ms: float) -> None:
        """Count a publish to the broker: `dapr_component_pubsub_egress_*`."""
        labels = {"component": component, "topic": topic, "success": str(success).lower()}
        self._count("dapr_component_pubsub_egress_count", labels)
        if elapsed_ms > 0:  # daprd records no latency of zero
            self._observe("dapr_component_pubsub_egress_latencies", labels, elapsed_ms)

    def job_trigger(self, trigger: JobTrigger) -> None:
        """Count a job trigger: a 2xx is a success; a 404 and anything else a failure."""
        success = trigger.outcome == "success"
        name = "dapr_component_job_success_count" if success else "dapr_component_job_failure_count"
        self._count(name, {"operation": _JOB_TRIGGER_OP})
        if trigger.elapsed_ms > 0:
            self._observe(
                "dapr_component_job_latencies",
                {"operation": _JOB_TRIGGER_OP, "success": str(success).lower()},
                trigger.elapsed_ms,
            )

    def http_request(self, method: str, path: str, status: int, elapsed_ms: float) -> None:
        """Count a request to the Dapr HTTP API: `dapr_http_server_*`."""
        labels = {"method": method, "path": _path_label(path), "status": str(status)}
        self._count("dapr_http_server_request_count", labels)
        self._observe("dapr_http_server_latency", labels, elapsed_ms)

    def state_operation(
        self, component: str, operation: str, *, success: bool, elapsed_ms: float
    ) -> None:
        """Count an operation on a state store: `dapr_component_state_*`."""
        labels = {"component": component, "operation": operation, "success": str(success).lower()}
        self._count("dapr_component_state_count", labels)
        if elapsed_ms > 0:
            self._observe("dapr_component_state_latencies", labels, elapsed_ms)

    def app_request(self, method: str, path: str, status: int, elapsed_ms: float) -> None:
        """Count a request this sidecar made to its app: `dapr_http_client_*`."""
        labels = {"method": method, "path": path, "status": str(status)}
        self._count("dapr_http_client_completed_count", labels)
        self._observe("dapr_http_client_roundtrip_latency", labels, elapsed_ms)

    def invocation(self, target: str, method: str, status: int, elapsed_ms: float) -> None:
        """Count a service invocation this sidecar made for its app, and its answer."""
        self._count(
            "dapr_runtime_service_invocation_req_sent_total",
            {"dst_app_id": target, "method": method},
        )
        labels = {"src_app_id": target, "method": method, "status": str(status)}
        self._count("dapr_runtime_service_invocation_res_recv_total", labels)
        self._observe("dapr_runtime_service_invocation_res_recv_latency_ms", labels, elapsed_ms)

    # --- exposition ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The recorded series (called by the registry on each scrape)."""
        with self._lock:
            counts = {name: dict(series) for name, series in self._counts.items()}
            histograms = {
                name: {key: list(values) for key, values in series.items()}
                for name, series in self._histograms.items()
            }
        for name, series in sorted(counts.items()):
            # daprd's count views are counters, most of them without the `_total` suffix.
            # prometheus_client appends `_total` to every counter it exposes, so the names
            # without it are exposed untyped: the series and their values are daprd's, and
            # PromQL's rate() and increase() treat them alike.
            kind = "counter" if name.endswith("_total") else "unknown"
            family = Metric(name.removesuffix("_total"), _VIEWS[name].documentation, kind)
            for key, value in sorted(series.items()):
                family.add_sample(name, dict(key), value)
            yield family
        for name, observed in sorted(histograms.items()):
            histogram = HistogramMetricFamily(
                name, _VIEWS[name].documentation, labels=[k for k, _ in next(iter(observed))]
            )
            for key, values in sorted(observed.items()):
                buckets = [
                    (_bound(bound), values[index]) for index, bound in enumerate(LATENCY_BUCKETS_MS)
                ]
                buckets.append(("+Inf", values[-2]))
                histogram.add_metric([v for _, v in key], buckets, values[-1])
            yield histogram


def _bound(value: float) -> str:
    return f"{value:g}"


def _path_label(path: str) -> str:
    """The `path` label daprd gives a request: the path, with a state or secret key left out."""
    parts = path.lstrip("/").split("/", 5)
    if len(parts) >= 3 and parts[1] in ("state", "secrets"):
        return "/" + "/".join(parts[:3])
    return path


def _state_operation(method: str, path: str) -> tuple[str, str] | None:
    """The store and daprd's operation name of a state API call, if it is one."""
    parts = path.split("/")  # "", "v1.0", "state", store, [key | bulk | transaction]
    if len(parts) < 4 or parts[1] != "v1.0" or parts[2] != "state" or not parts[3]:
        return None
    rest = parts[4] if len(parts) > 4 else ""
    if len(parts) == 4 and method in ("POST", "PUT"):
        return parts[3], "set"
    if len(parts) == 5 and rest == "bulk" and method in ("POST", "PUT"):
        return parts[3], "bulk_get"
    if len(parts) == 5 and rest == "transaction" and method in ("POST", "PUT"):
        return parts[3], "transaction"
    if len(parts) == 5 and method == "GET":
        return parts[3], "get"
    if len(parts) == 5 and method == "DELETE":
        return parts[3], "delete"
    return None


def _invocation_target(path: str, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """The app id and method of an invocation request (`/v1.0/invoke/...` or `dapr-app-id`)."""
    if path.startswith("/v1.0/invoke/"):
        rest = path[len("/v1.0/invoke/") :]
        target, found, method = rest.partition("/method/")
        return (target, method) if found and target else None
    for name, value in headers:
        if name == b"dapr-app-id":
            return value.decode("latin-1"), path.lstrip("/")
    return None


class MetricsMiddleware:
    """Times every request to the Dapr HTTP API and counts it in `metrics`.

    The emulator's own control API (`/emulator/...`) is not daprd's and is not counted.
    """

    def __init__(self, app: ASGIApp, *, metrics: DaprMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then count it with its status and duration."""
        if scope["type"] != "http" or scope["path"].startswith("/emulator/"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            path: str = scope["path"]
            self.metrics.http_request(scope["method"], path, status, elapsed_ms)
            state = _state_operation(scope["method"], path)
            # A store that does not exist is no operation on a component (daprd answers 400).
            if state is not None and status != 400:
                self.metrics.state_operation(
                    state[0], state[1], success=status < 400, elapsed_ms=elapsed_ms
                )
            target = _invocation_target(path, scope["headers"])
            if target is not None:
                self.metrics.invocation(target[0], target[1], status, elapsed_ms)


class KafkaExporterCollector(Collector):
    """The broker's topics and consumer groups under kafka_exporter's names, read on each scrape.

    One broker; every partition has one replica, in sync. A consumer group is an app id; its
    members are its sidecar's consumers of the topic (one while the sidecar runs).
    """

    def __init__(self, broker: Broker):
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        """The current state of the broker (called by the registry on each scrape)."""
        brokers = GaugeMetricFamily("kafka_brokers", "Number of Brokers in the Kafka Cluster.")
        brokers.add_metric([], 1)
        yield brokers
        snapshot = self.broker.snapshot()
        partitions = GaugeMetricFamily(
            "kafka_topic_partitions", "Number of partitions for this Topic", labels=["topic"]
        )
        current = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Current Offset of a Broker at Topic/Partition",
            labels=["topic", "partition"],
        )
        oldest = GaugeMetricFamily(
            "kafka_topic_partition_oldest_offset",
            "Oldest Offset of a Broker at Topic/Partition",
            labels=["topic", "partition"],
        )
        in_sync = GaugeMetricFamily(
            "kafka_topic_partition_in_sync_replica",
            "Number of In-Sync Replicas for this Topic/Partition",
            labels=["topic", "partition"],
        )
        under_replicated = GaugeMetricFamily(
            "kafka_topic_partition_under_replicated_partition",
            "1 if Topic/Partition is under Replicated",
            labels=["topic", "partition"],
        )
        for topic, ends in sorted(snapshot.ends.items()):
            partitions.add_metric([topic], len(ends))
            for partition, end in enumerate(ends):
                labels = [topic, str(partition)]
                current.add_metric(labels, end)
                oldest.add_metric(labels, 0)
                in_sync.add_metric(labels, 1)
                under_replicated.add_metric(labels, 0)
        yield from (partitions, current, oldest, in_sync, under_replicated)

        group_offset = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "Current Offset of a ConsumerGroup at Topic/Partition",
            labels=["consumergroup", "topic", "partition"],
        )
        group_offset_sum = GaugeMetricFamily(
            "kafka_consumergroup_current_offset_sum",
            "Current Offset of a ConsumerGroup at Topic for all partitions",
            labels=["consumergroup", "topic"],
        )
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
            labels=["consumergroup", "topic", "partition"],
        )
        lag_sum = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
            labels=["consumergroup", "topic"],
        )
        members = GaugeMetricFamily(
            "kafka_consumergroup_members",
            "Amount of members in a consumer group",
            labels=["consumergroup"],
        )
        for (group, topic), committed in sorted(snapshot.committed.items()):
            ends = snapshot.ends.get(topic, [])
            offset_total = lag_total = 0
            for partition, offset in sorted(committed.items()):
                end = ends[partition] if partition < len(ends) else offset
                labels = [group, topic, str(partition)]
                group_offset.add_metric(labels, offset)
                lag.add_metric(labels, end - offset)
                offset_total += offset
                lag_total += end - offset
            group_offset_sum.add_metric([group, topic], offset_total)
            lag_sum.add_metric([group, topic], lag_total)
        for group, count in sorted(snapshot.members.items()):
            members.add_metric([group], count)
        yield from (group_offset, group_offset_sum, lag, lag_sum, members)


def kafka_exporter_registry(broker: Broker) -> CollectorRegistry:
    """A registry of its own holding `broker`'s kafka_exporter metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KafkaExporterCollector(broker))
    return registry
