"""The third-party metrics the operations pack queries, with their documented labels.

Dashboards and alert rules query metrics that neither catalogue declares: the Dapr sidecar's
and control plane's, kafka_exporter's, kube-state-metrics', the kubelet's cAdvisor's and
Prometheus' own `up`. Our services cannot emit them; every such name a query uses must be
listed here, copied from the documentation linked above its group, and a test fails on any
name that is not. Locally the sidecar emulator serves the sidecars' and the broker's under these
names (`todo_observability.testing.sidecar.metrics`), so a real Prometheus scraping `./dev demo`
checks those queries too; what only a cluster has is in `CLUSTER_ONLY`.

Histograms are listed by their base name (the `_bucket`, `_sum` and `_count` series a query
uses map back to it through `base_name()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reference_app.ops.catalogue import HISTOGRAM_SERIES

__all__ = ["CLUSTER_ONLY", "NOT_EMULATED", "THIRD_PARTY", "ThirdPartyMetric", "base_name", "lookup"]

Source = Literal[
    "dapr", "dapr-sentry", "kafka_exporter", "kube-state-metrics", "cadvisor", "prometheus"
]


@dataclass(frozen=True)
class ThirdPartyMetric:
    """One documented third-party metric.

    Attributes:
        source: The exporter that serves it.
        type: counter, gauge or histogram (histograms are queried through their series).
        labels: Its documented labels, besides the `job`/`instance`/`namespace`/`pod` a scrape adds.
    """

    source: Source
    type: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...] = ()


THIRD_PARTY: dict[str, ThirdPartyMetric] = {
    # Dapr sidecar (daprd, :9090/metrics). Names are `dapr_` + the OpenCensus view name;
    # documented in dapr/dapr docs/development/dapr-metrics.md, labels from
    # pkg/diagnostics/{component,service,http}_monitoring.go (see ../shared/design/DAPR.md §5).
    "dapr_component_pubsub_ingress_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "namespace", "component", "topic", "process_status", "status")
    ),
    "dapr_component_pubsub_ingress_latencies": ThirdPartyMetric(
        "dapr",
        "histogram",
        ("app_id", "namespace", "component", "topic", "process_status", "status"),
    ),
    "dapr_component_pubsub_egress_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "namespace", "component", "topic", "success")
    ),
    "dapr_component_pubsub_egress_latencies": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "namespace", "component", "topic", "success")
    ),
    "dapr_component_job_success_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "namespace", "operation")
    ),
    "dapr_component_job_failure_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "namespace", "operation")
    ),
    "dapr_component_job_latencies": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "namespace", "operation", "success")
    ),
    # State store operations (docs/development/dapr-metrics.md "State metrics":
    # dapr_component_state_count, dapr_component_state_latencies, in milliseconds); tagged in
    # pkg/diagnostics/component_monitoring.go with app_id, component, namespace, operation
    # (get, set, delete, bulk_get, transaction, ...) and success ("true"/"false").
    "dapr_component_state_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "namespace", "component", "operation", "success")
    ),
    "dapr_component_state_latencies": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "namespace", "component", "operation", "success")
    ),
    "dapr_http_server_request_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "method", "path", "status")
    ),
    "dapr_http_server_latency": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "method", "path", "status")
    ),
    "dapr_http_client_roundtrip_latency": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "method", "path", "status")
    ),
    "dapr_http_client_completed_count": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "method", "path", "status")
    ),
    "dapr_runtime_component_init_fail_total": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "component", "reason")
    ),
    # Service invocation: pkg/diagnostics/service_monitoring.go tags the response latency
    # with app_id, src_app_id, method and status (milliseconds).
    "dapr_runtime_service_invocation_req_sent_total": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "dst_app_id", "method")
    ),
    "dapr_runtime_service_invocation_res_recv_total": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "src_app_id", "method", "status")
    ),
    "dapr_runtime_service_invocation_res_recv_latency_ms": ThirdPartyMetric(
        "dapr", "histogram", ("app_id", "src_app_id", "method", "status")
    ),
    # mTLS, sidecar side: docs/development/dapr-metrics.md "Security" and
    # pkg/diagnostics/service_monitoring.go (runtime/mtls/* views: app_id, reason on failures).
    "dapr_runtime_mtls_init_total": ThirdPartyMetric("dapr", "counter", ("app_id",)),
    "dapr_runtime_mtls_init_fail_total": ThirdPartyMetric("dapr", "counter", ("app_id", "reason")),
    "dapr_runtime_mtls_workload_cert_rotated_total": ThirdPartyMetric(
        "dapr", "counter", ("app_id",)
    ),
    "dapr_runtime_mtls_workload_cert_rotated_fail_total": ThirdPartyMetric(
        "dapr", "counter", ("app_id", "reason")
    ),
    # mTLS, control plane: the Sentry CA, docs/development/dapr-metrics.md "Dapr Sentry
    # metrics" (pkg/sentry/monitoring/metrics.go).
    "dapr_sentry_cert_sign_request_received_total": ThirdPartyMetric("dapr-sentry", "counter"),
    "dapr_sentry_cert_sign_success_total": ThirdPartyMetric("dapr-sentry", "counter"),
    "dapr_sentry_cert_sign_failure_total": ThirdPartyMetric("dapr-sentry", "counter", ("reason",)),
    "dapr_sentry_issuercert_expiry_timestamp": ThirdPartyMetric("dapr-sentry", "gauge"),
    # kafka_exporter (danielqsj/kafka_exporter README "Metrics", port 9308); the consumer
    # group of a Dapr Kafka component is its consumerGroup, our app id.
    "kafka_brokers": ThirdPartyMetric("kafka_exporter", "gauge"),
    "kafka_topic_partitions": ThirdPartyMetric("kafka_exporter", "gauge", ("topic",)),
    "kafka_topic_partition_current_offset": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("topic", "partition")
    ),
    "kafka_topic_partition_oldest_offset": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("topic", "partition")
    ),
    "kafka_topic_partition_in_sync_replica": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("topic", "partition")
    ),
    "kafka_topic_partition_under_replicated_partition": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("topic", "partition")
    ),
    "kafka_consumergroup_current_offset": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("consumergroup", "topic", "partition")
    ),
    "kafka_consumergroup_current_offset_sum": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("consumergroup", "topic")
    ),
    "kafka_consumergroup_lag": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("consumergroup", "topic", "partition")
    ),
    "kafka_consumergroup_lag_sum": ThirdPartyMetric(
        "kafka_exporter", "gauge", ("consumergroup", "topic")
    ),
    "kafka_consumergroup_members": ThirdPartyMetric("kafka_exporter", "gauge", ("consumergroup",)),
    # kube-state-metrics, docs/metrics/workload/pod-metrics.md and deployment-metrics.md
    # (https://github.com/kubernetes/kube-state-metrics/tree/main/docs/metrics).
    "kube_pod_container_status_restarts_total": ThirdPartyMetric(
        "kube-state-metrics", "counter", ("namespace", "pod", "uid", "container")
    ),
    "kube_pod_container_status_waiting_reason": ThirdPartyMetric(
        "kube-state-metrics", "gauge", ("namespace", "pod", "uid", "container", "reason")
    ),
    "kube_pod_status_ready": ThirdPartyMetric(
        "kube-state-metrics", "gauge", ("namespace", "pod", "uid", "condition")
    ),
    "kube_deployment_status_replicas_available": ThirdPartyMetric(
        "kube-state-metrics", "gauge", ("namespace", "deployment")
    ),
    "kube_deployment_spec_replicas": ThirdPartyMetric(
        "kube-state-metrics", "gauge", ("namespace", "deployment")
    ),
    # cAdvisor through the kubelet's /metrics/cadvisor (Kubernetes docs "Metrics for
    # Kubernetes system components", cAdvisor docs/storage/prometheus.md); the Dapr sidecar
    # is the container named "daprd".
    "container_cpu_usage_seconds_total": ThirdPartyMetric(
        "cadvisor", "counter", ("namespace", "pod", "container", "cpu")
    ),
    "container_memory_working_set_bytes": ThirdPartyMetric(
        "cadvisor", "gauge", ("namespace", "pod", "container")
    ),
    # Prometheus itself: the `up` series of every scrape target
    # (https://prometheus.io/docs/concepts/jobs_instances/#automatically-generated-labels-and-time-series).
    "up": ThirdPartyMetric("prometheus", "gauge"),
}
"""Documented third-party metric names → where they come from and their labels."""

CLUSTER_ONLY: frozenset[str] = frozenset(
    name
    for name, metric in THIRD_PARTY.items()
    if metric.source in ("dapr-sentry", "kube-state-metrics", "cadvisor")
    or name.startswith("dapr_runtime_mtls_")
)
"""The third-party metrics only a cluster has: mTLS and the Sentry CA, the kubelet's cAdvisor and
kube-state-metrics. A dashboard query on them has data in a cluster only; every other one has
data from `./dev demo` (tests/reference_app/ops/test_local_monitoring.py)."""

NOT_EMULATED: frozenset[str] = frozenset({"dapr_runtime_component_init_fail_total"})
"""daprd series the sidecar emulator has no cause for: its components are in memory and never
fail to initialise (no alert or panel reads it; the runbooks do)."""


def base_name(series: str) -> str:
    """The listed name a series belongs to: a histogram's `_bucket`/`_sum`/`_count` map to it."""
    if series in THIRD_PARTY:
        return series
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and THIRD_PARTY.get(base, _NOT_HISTOGRAM).type == "histogram":
            return base
    return series


def lookup(series: str) -> ThirdPartyMetric:
    """The documented metric a queried series belongs to.

    Raises:
        KeyError: The series is not a documented third-party metric; add it to `THIRD_PARTY`
            with a link to its documentation, or fix the name.
    """
    metric = THIRD_PARTY.get(base_name(series))
    if metric is None:
        raise KeyError(
            f"{series!r} is not a documented third-party metric; add it to THIRD_PARTY in "
            "reference_app/ops/thirdparty.py with a link to its documentation, or fix the name."
        )
    return metric


_NOT_HISTOGRAM = ThirdPartyMetric("prometheus", "gauge")
