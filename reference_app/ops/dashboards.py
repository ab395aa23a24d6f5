"""The Grafana dashboards of the reference system, generated from the metric catalogues.

Every query is assembled from a `MetricSpec` (the SDK's `todo_observability.metrics`, the
services' `reference_app.common.metrics`, the SLO recording rules below, or a documented
third-party metric from `reference_app.ops.thirdparty`), so a renamed metric or label fails
here, at generation time, instead of leaving an empty panel in production. The committed JSON
under `reference_app/deploy/monitoring/grafana/dashboards/` is this module's output; a test
keeps the two equal. Regenerate it with:

    python -m reference_app.ops.dashboards          # rewrite the committed JSON
    python -m reference_app.ops.dashboards --check  # exit 1, listing the files that differ
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grafana_foundation_sdk.builders import (
    common as common_builders,
)
from grafana_foundation_sdk.builders import (
    dashboard as dashboard_builders,
)
from grafana_foundation_sdk.builders import (
    gauge,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from reference_app.common import metrics as app_metrics
from reference_app.ops import thirdparty
from reference_app.ops.catalogue import HISTOGRAM_SERIES
from reference_app.ops.slos import LATENCY_SLO_SECONDS, REMINDER_DELIVERY, SLOS
from todo_observability import metrics as sdk_metrics
from todo_observability.metrics import MetricSpec
from todo_observability.ops.slo import WINDOWS

if TYPE_CHECKING:
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.variants import Dataquery

__all__ = [
    "DASHBOARDS_DIR",
    "DATASOURCE_UID",
    "DELIVERY_OBJECTIVE",
    "LATENCY_SLO_SECONDS",
    "RECORDING_RULES",
    "SLO_WINDOWS",
    "build",
    "main",
    "render",
    "write",
]

DATASOURCE_UID = "prometheus"
"""The uid of the Prometheus datasource every panel uses (provisioned with this uid)."""
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
DASHBOARDS_DIR = (
    Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "grafana" / "dashboards"
)
"""Where the committed dashboard JSON lives."""

DELIVERY_OBJECTIVE = REMINDER_DELIVERY.objective
"""Reminder e-mails delivered: the SLO the delivery-rate gauge is drawn against (99 %)."""

TAG = "todo-observability"
RATE = "$__rate_interval"
RANGE = "$__range"
JOB = "$job"

# Labels a scrape adds to every series (the scrape config or ServiceMonitor names the job
# after the service; Kubernetes service discovery adds namespace and pod).
SCRAPE_LABELS = ("job", "instance", "namespace", "pod")

# --- SLO recording rules: the contract with the rules generator -------------------------------
SLO_WINDOWS = WINDOWS
"""The windows of `slo:sli_error:ratio_rate<W>`, as `todo_observability.ops.slo` records them."""
SLI_ERROR = {
    window: MetricSpec(
        f"slo:sli_error:ratio_rate{window}",
        "gauge",
        f"Share of bad events over {window}, by SLO and service.",
        ("slo", "job"),
    )
    for window in SLO_WINDOWS
}
SLO_OBJECTIVE = MetricSpec("slo:objective:ratio", "gauge", "Each SLO's objective.", ("slo",))
SLO_ERROR_BUDGET = MetricSpec(
    "slo:error_budget:ratio", "gauge", "Each SLO's error budget: 1 - objective.", ("slo",)
)
RECORDING_RULES: tuple[MetricSpec, ...] = (*SLI_ERROR.values(), SLO_OBJECTIVE, SLO_ERROR_BUDGET)
"""The SLO recording rules the dashboards read, as the SLO rules generator records them."""

# Multi-window burn-rate thresholds (Google SRE workbook, ch. 5): 2% of a 30-day budget in 1 h
# pages, 5% in 6 h pages, 10% in 3 d opens a ticket.
BURN_RATE_THRESHOLDS = {"1h": 14.4, "6h": 6.0, "3d": 1.0}


# --- PromQL from specs ------------------------------------------------------------------------


class Regex(str):
    """A label value matched as a regular expression (`=~`)."""

    __slots__ = ()


class NotEqual(str):
    """A label value that must not match (`!=`)."""

    __slots__ = ()


def _third_party(name: str) -> MetricSpec:
    metric = thirdparty.lookup(name)
    return MetricSpec(name, metric.type, f"{metric.source} metric", metric.labels)


def _labels_of(spec: MetricSpec, suffix: str) -> tuple[str, ...]:
    extra = ("le",) if suffix == "_bucket" else ()
    return (*spec.labels, *SCRAPE_LABELS, *extra)


def _series_name(spec: MetricSpec, suffix: str) -> str:
    if suffix and (spec.type != "histogram" or suffix not in HISTOGRAM_SERIES):
        raise ValueError(
            f"{spec.name!r} is a {spec.type}; only histograms have the series "
            f"_bucket, _sum and _count, got suffix {suffix!r}."
        )
    return spec.name + suffix


def _check_labels(spec: MetricSpec, suffix: str, labels: Sequence[str]) -> None:
    allowed = _labels_of(spec, suffix)
    for label in labels:
        if label not in allowed:
            raise ValueError(
                f"{spec.name}{suffix} has no label {label!r}; its labels are {allowed!r}. "
                "Fix the query or declare the label in the metric's MetricSpec."
            )


def selector(spec: MetricSpec, suffix: str = "", /, **matchers: str) -> str:
    """A vector selector of `spec`'s metric, its label names checked against the spec.

    Args:
        spec: The metric's declaration.
        suffix: `_bucket`, `_sum` or `_count` for a histogram's series, else empty.
        **matchers: Label name → value; a `Regex` value matches with `=~`, `NotEqual` with `!=`.

    Raises:
        ValueError: A label the metric does not have, or a suffix on a non-histogram.
    """
    name = _series_name(spec, suffix)
    _check_labels(spec, suffix, list(matchers))
    parts = []
    for label, value in matchers.items():
        op = "=~" if isinstance(value, Regex) else "!=" if isinstance(value, NotEqual) else "="
        parts.append(f"{label}{op}{json.dumps(str(value))}")
    return f"{name}{{{', '.join(parts)}}}" if parts else name


def _sum(by: Sequence[str], expr: str, aggregation: str = "sum") -> str:
    return f"{aggregation} by ({', '.join(by)}) ({expr})" if by else f"{aggregation}({expr})"


def rate(
    spec: MetricSpec,
    by: Sequence[str] = (),
    *,
    suffix: str = "",
    fn: str = "rate",
    window: str = RATE,
    **matchers: str,
) -> str:
    """`sum by (<by>) (<fn>(<selector>[<window>]))`, every label checked against `spec`."""
    _check_labels(spec, suffix, by)
    return _sum(by, f"{fn}({selector(spec, suffix, **matchers)}[{window}])")


def quantile(q: float, spec: MetricSpec, by: Sequence[str] = (), **matchers: str) -> str:
    """The `q` quantile of histogram `spec` over the rate interval, per `by`."""
    return f"histogram_quantile({q}, {rate(spec, ('le', *by), suffix='_bucket', **matchers)})"


def gauge_of(spec: MetricSpec, by: Sequence[str] = (), aggregation: str = "sum", **m: str) -> str:
    """`<aggregation> by (<by>) (<selector>)` for a gauge."""
    _check_labels(spec, "", by)
    return _sum(by, selector(spec, **m), aggregation)


def ratio(part: str, whole: str) -> str:
    """`part / whole`, 0 (not empty) while `part` has no series yet but `whole` has.

    Error counters often have no `status_code="5xx"` series until the first error; without the
    `or whole * 0` a healthy service would show "No data" instead of 0.
    """
    return f"({_errors_or_zero(part, whole)}) / {whole}"


def _errors_or_zero(errors: str, total: str) -> str:
    """`errors`, or 0 for every series of `total` while no error series exists yet."""
    return f"{errors} or {total} * 0"


# --- Panels -----------------------------------------------------------------------------------

Target = tuple[str, str]  # (expr, legend format)


def _targets(
    targets: Sequence[Target], *, instant: bool = False, heatmap_buckets: bool = False
) -> list[Builder[Dataquery]]:
    queries: list[Builder[Dataquery]] = []
    for index, (expr, legend) in enumerate(targets):
        query = (
            prometheus.Dataquery()
            .expr(expr)
            .legend_format(legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
        if heatmap_buckets:
            # One series per bucket, ordered by `le`, as the heatmap panel expects.
            query = query.format(PromQueryFormat.HEATMAP)
        queries.append(query.instant() if instant else query.range())
    return queries


def _thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs([])
    )


def _tooltip() -> common_builders.VizTooltipOptions:
    return (
        common_builders.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def time_series(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    line: float | None = None,
    span: int = 12,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series panel; `line` draws a dashed threshold (an SLO, a burn rate) at that value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(targets))
        .unit(unit)
        .span(span)
        .height(8)
        .legend(_legend())
        .tooltip(_tooltip())
        .line_width(1)
        .fill_opacity(10)
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if line is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (line, "red"))).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    return panel


def _reduce() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def single_stat(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: Mapping[str, tuple[str, str]] | None = None,
    span: int = 6,
) -> stat.Panel:
    """A stat panel of each series' last value, coloured by `thresholds`."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(targets, instant=True))
        .unit(unit)
        .span(span)
        .height(5)
        .reduce_options(_reduce())
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .thresholds(_thresholds(*thresholds))
    )
    if mappings:
        panel = panel.mappings([_value_map(mappings)])
    return panel


def _value_map(mappings: Mapping[str, tuple[str, str]]) -> ValueMap:
    return ValueMap(
        options={
            value: ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(mappings.items())
        }
    )


# --- Dashboards -------------------------------------------------------------------------------

ALL = ".*"


def _job_variable(query: str) -> dashboard_builders.QueryVariable:
    return (
        dashboard_builders.QueryVariable("job")
        .label("Service")
        .description("The service (Prometheus job = Dapr app id = service_name).")
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _dashboard(
    uid: str, title: str, description: str, *, job: bool
) -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("browser")
        .refresh("30s")
        .link(
            dashboard_builders.DashboardLink("Reference system")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    if job:
        # The services come from the catalogue's RED counter: every service serves HTTP, and
        # nothing else (Prometheus itself, exporters) does, so the list is exactly ours.
        board = board.with_variable(
            _job_variable(f"label_values({sdk_metrics.HTTP_SERVER_REQUESTS.name}, job)")
        )
    return board


def service_red() -> dashboard_builders.Dashboard:
    """Per service: request rate, 5xx ratio and p50/p95/p99 latency against the latency SLO."""
    requests = sdk_metrics.HTTP_SERVER_REQUESTS
    duration = sdk_metrics.HTTP_SERVER_DURATION
    total = rate(requests, ("job",), job=Regex(JOB))
    errors = rate(requests, ("job",), job=Regex(JOB), status_code=Regex("5.."))
    slo_ms = int(LATENCY_SLO_SECONDS * 1000)
    latency_targets = [
        (quantile(q, duration, ("job",), job=Regex(JOB)), f"{{{{job}}}} p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]
    fast = rate(duration, ("job",), suffix="_bucket", job=Regex(JOB), le=str(LATENCY_SLO_SECONDS))
    slow_total = rate(duration, ("job",), suffix="_count", job=Regex(JOB))
    return (
        _dashboard(
            "todo-service-red",
            "Services: RED overview",
            "Rate, errors and duration of every service's HTTP server, from the SDK's RED metrics.",
            job=True,
        )
        .with_row(dashboard_builders.Row("Now"))
        .with_panel(
            single_stat(
                "Request rate now",
                "Requests per second each service serves.",
                "reqps",
                [(total, "{{job}}")],
            )
        )
        .with_panel(
            single_stat(
                "Error ratio now",
                "Share of requests answered with a 5xx status.",
                "percentunit",
                [(ratio(errors, total), "{{job}}")],
                thresholds=((None, "green"), (0.001, "yellow"), (0.01, "red")),
            )
        )
        .with_panel(
            single_stat(
                f"Requests within {slo_ms} ms",
                f"Share of requests served within the {slo_ms} ms latency SLO.",
                "percentunit",
                [(f"{fast} / {slow_total}", "{{job}}")],
                thresholds=((None, "red"), (0.95, "yellow"), (0.99, "green")),
            )
        )
        .with_panel(
            single_stat(
                "In flight",
                "Requests being served now.",
                "short",
                [
                    (
                        gauge_of(sdk_metrics.HTTP_SERVER_IN_FLIGHT, ("job",), job=Regex(JOB)),
                        "{{job}}",
                    )
                ],
            )
        )
        .with_row(dashboard_builders.Row("Rate, errors, duration"))
        .with_panel(
            time_series(
                "Request rate",
                "Requests per second, per service.",
                "reqps",
                [(total, "{{job}}")],
            )
        )
        .with_panel(
            time_series(
                "Error ratio (5xx)",
                "Share of requests answered with a 5xx status, per service.",
                "percentunit",
                [(ratio(errors, total), "{{job}}")],
            )
        )
        .with_panel(
            time_series(
                f"Latency p50 / p95 / p99 vs {slo_ms} ms SLO",
                f"Request duration quantiles per service; the dashed line is the {slo_ms} ms SLO.",
                "s",
                latency_targets,
                line=LATENCY_SLO_SECONDS,
                span=24,
            )
        )
        .with_row(dashboard_builders.Row("By route"))
        .with_panel(
            time_series(
                "Request rate by route and status",
                "Requests per second by route template and status code.",
                "reqps",
                [
                    (
                        rate(requests, ("job", "route", "status_code"), job=Regex(JOB)),
                        "{{job}} {{route}} {{status_code}}",
                    )
                ],
            )
        )
        .with_panel(
            time_series(
                "p95 latency by route",
                f"95th percentile duration by route template; the dashed line is the {slo_ms} ms SLO.",
                "s",
                [(quantile(0.95, duration, ("job", "route"), job=Regex(JOB)), "{{job}} {{route}}")],
                line=LATENCY_SLO_SECONDS,
            )
        )
    )


def _burn(window: str) -> str:
    sli = selector(SLI_ERROR[window], job=Regex(JOB))
    return f"{sli} / on (slo) group_left () {SLO_ERROR_BUDGET.name}"


def slos() -> dashboard_builders.Dashboard:
    """SLO objectives, error budget remaining and multi-window burn rates."""
    budget_left = f"1 - ({_burn('30d')})"
    return (
        _dashboard(
            "todo-slos",
            "SLOs and error budgets",
            "The reference system's SLOs from the slo:* recording rules: objectives, 30-day error "
            "budget left, and burn rates over the alerting windows. "
            + " ".join(f"{slo.name}: {slo.description}" for slo in SLOS),
            job=True,
        )
        .with_row(dashboard_builders.Row("Budgets"))
        .with_panel(
            single_stat(
                "SLO objectives",
                "Each SLO's objective (share of good events).",
                "percentunit",
                [(selector(SLO_OBJECTIVE), "{{slo}}")],
                span=8,
            )
        )
        .with_panel(
            single_stat(
                "Error budget remaining (30d)",
                "Share of the 30-day error budget not yet spent, per SLO and service; below 0 the "
                "SLO is breached.",
                "percentunit",
                [(budget_left, "{{slo}} {{job}}")],
                thresholds=((None, "red"), (0.0, "orange"), (0.25, "yellow"), (0.5, "green")),
                span=16,
            )
        )
        .with_row(dashboard_builders.Row("Burn rates"))
        .with_panel(
            time_series(
                "Burn rate (1h / 6h / 3d)",
                "Error ratio divided by the error budget: 1 spends the budget in exactly 30 days. "
                "The dashed line marks 14.4, the fast-burn page threshold.",
                "x",
                [(_burn(w), f"{{{{slo}}}} {{{{job}}}} {w}") for w in BURN_RATE_THRESHOLDS],
                line=BURN_RATE_THRESHOLDS["1h"],
                span=24,
            )
        )
        .with_panel(
            time_series(
                "Error ratio by window",
                "The recorded error ratio of each SLO over every window the alerts use.",
                "percentunit",
                [
                    (selector(SLI_ERROR[w], job=Regex(JOB)), f"{{{{slo}}}} {{{{job}}}} {w}")
                    for w in ("5m", "30m", "6h")
                ],
            )
        )
        .with_panel(
            time_series(
                "Error budget remaining over time (30d)",
                "Share of the 30-day error budget left, per SLO and service.",
                "percentunit",
                [(budget_left, "{{slo}} {{job}}")],
                line=0.0,
            )
        )
    )


def kafka() -> dashboard_builders.Dashboard:
    """Consumer lag per service and topic, rebalances, throughput and broker health."""
    lag = _third_party("kafka_consumergroup_lag_sum")
    members = _third_party("kafka_consumergroup_members")
    offsets = _third_party("kafka_topic_partition_current_offset")
    consumed = _third_party("kafka_consumergroup_current_offset_sum")
    brokers = _third_party("kafka_brokers")
    under_replicated = _third_party("kafka_topic_partition_under_replicated_partition")
    in_sync = _third_party("kafka_topic_partition_in_sync_replica")
    processed = sdk_metrics.MESSAGING_PROCESSED
    internal = NotEqual("__consumer_offsets")
    return (
        _dashboard(
            "todo-kafka",
            "Kafka",
            "The pub/sub broker under Dapr, from kafka_exporter: consumer lag per service (the "
            "consumer group is the Dapr app id) and topic, rebalances, throughput, broker health.",
            job=False,
        )
        .with_row(dashboard_builders.Row("Broker health"))
        .with_panel(
            single_stat(
                "Brokers",
                "Brokers in the cluster (kafka_brokers); 0 or missing means Kafka is down.",
                "short",
                [(gauge_of(brokers, aggregation="max"), "brokers")],
                thresholds=((None, "red"), (1.0, "green")),
                span=8,
            )
        )
        .with_panel(
            single_stat(
                "Under-replicated partitions",
                "Partitions with fewer in-sync replicas than replicas.",
                "short",
                [(gauge_of(under_replicated), "partitions")],
                thresholds=((None, "green"), (1.0, "red")),
                span=8,
            )
        )
        .with_panel(
            single_stat(
                "Minimum in-sync replicas",
                "The fewest in-sync replicas of any partition of our topics.",
                "short",
                [(gauge_of(in_sync, aggregation="min", topic=internal), "replicas")],
                thresholds=((None, "red"), (1.0, "yellow"), (2.0, "green")),
                span=8,
            )
        )
        .with_row(dashboard_builders.Row("Consumers"))
        .with_panel(
            time_series(
                "Consumer lag by service and topic",
                "Messages published and not yet consumed, per consumer group (service) and topic.",
                "short",
                [(gauge_of(lag, ("consumergroup", "topic")), "{{consumergroup}} {{topic}}")],
            )
        )
        .with_panel(
            time_series(
                "Partition rebalances",
                "Changes of each consumer group's membership: every change rebalances its "
                "partitions (kafka_exporter has no rebalance counter).",
                "short",
                [(rate(members, ("consumergroup",), fn="changes"), "{{consumergroup}}")],
            )
        )
        .with_row(dashboard_builders.Row("Throughput"))
        .with_panel(
            time_series(
                "Throughput: produced by topic",
                "Messages appended per second, per topic.",
                "short",
                [(rate(offsets, ("topic",), topic=internal), "{{topic}}")],
            )
        )
        .with_panel(
            time_series(
                "Throughput: consumed by service and topic",
                "Offsets committed per second, per consumer group and topic.",
                "short",
                [(rate(consumed, ("consumergroup", "topic")), "{{consumergroup}} {{topic}}")],
            )
        )
        .with_panel(
            time_series(
                "Messages handled by topic and outcome",
                "Deliveries our handlers finished, by subscribed topic and outcome "
                "(success, retry, drop), from the SDK.",
                "short",
                [(rate(processed, ("topic", "outcome")), "{{topic}} {{outcome}}")],
                span=24,
            )
        )
    )


def dapr() -> dashboard_builders.Dashboard:
    """Sidecar resources, mTLS, pub/sub, service invocation and state store latency."""
    cpu = _third_party("container_cpu_usage_seconds_total")
    memory = _third_party("container_memory_working_set_bytes")
    ingress = _third_party("dapr_component_pubsub_ingress_count")
    egress = _third_party("dapr_component_pubsub_egress_count")
    invocation = _third_party("dapr_runtime_service_invocation_res_recv_latency_ms")
    rotated = _third_party("dapr_runtime_mtls_workload_cert_rotated_total")
    rotated_fail = _third_party("dapr_runtime_mtls_workload_cert_rotated_fail_total")
    init_fail = _third_party("dapr_runtime_mtls_init_fail_total")
    expiry = _third_party("dapr_sentry_issuercert_expiry_timestamp")
    job_failures = _third_party("dapr_component_job_failure_count")
    state = _third_party("dapr_component_state_latencies")
    publish = sdk_metrics.MESSAGING_PUBLISHED
    sidecar = "daprd"
    app = Regex(JOB)
    return (
        _dashboard(
            "todo-dapr",
            "Dapr",
            "The Dapr sidecars of the reference services (app id = service = job): resources, "
            "mTLS, pub/sub ingress and egress, service invocation, the state store.",
            job=True,
        )
        .with_row(dashboard_builders.Row("Sidecar resources"))
        .with_panel(
            time_series(
                "Sidecar CPU",
                "CPU cores used by each pod's daprd container (cAdvisor).",
                "short",
                [(rate(cpu, ("namespace", "pod"), container=sidecar), "{{pod}}")],
            )
        )
        .with_panel(
            time_series(
                "Sidecar memory",
                "Working-set memory of each pod's daprd container (cAdvisor).",
                "bytes",
                [(gauge_of(memory, ("namespace", "pod"), container=sidecar), "{{pod}}")],
            )
        )
        .with_row(dashboard_builders.Row("mTLS"))
        .with_panel(
            time_series(
                "mTLS",
                "Workload certificate rotations and failures (rotation or authenticator init), "
                "per app id.",
                "short",
                [
                    (rate(rotated, ("app_id",), fn="increase", app_id=app), "{{app_id}} rotated"),
                    (
                        rate(rotated_fail, ("app_id", "reason"), fn="increase", app_id=app),
                        "{{app_id}} rotation failed: {{reason}}",
                    ),
                    (
                        rate(init_fail, ("app_id", "reason"), fn="increase", app_id=app),
                        "{{app_id}} init failed: {{reason}}",
                    ),
                ],
            )
        )
        .with_panel(
            single_stat(
                "mTLS issuer certificate expires in",
                "Time left before the Sentry issuer/root certificate expires.",
                "s",
                [(f"{gauge_of(expiry, aggregation='min')} - time()", "expires in")],
                thresholds=((None, "red"), (7 * 86400.0, "yellow"), (30 * 86400.0, "green")),
                span=12,
            )
        )
        .with_row(dashboard_builders.Row("Pub/sub"))
        .with_panel(
            time_series(
                "Pub/sub ingress by process_status",
                "Messages the sidecar delivered to the app, by topic and outcome "
                "(success, retry, drop).",
                "short",
                [
                    (
                        rate(ingress, ("app_id", "topic", "process_status"), app_id=app),
                        "{{app_id}} {{topic}} {{process_status}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            time_series(
                "Pub/sub egress failures",
                "Publishes the broker refused (sidecar view), and publishes the app saw fail "
                "(SDK view).",
                "short",
                [
                    (
                        rate(egress, ("app_id", "topic"), app_id=app, success="false"),
                        "{{app_id}} {{topic}} (sidecar)",
                    ),
                    (
                        _errors_or_zero(
                            rate(publish, ("job", "topic"), job=app, outcome="error"),
                            rate(publish, ("job", "topic"), job=app),
                        ),
                        "{{job}} {{topic}} (app)",
                    ),
                ],
            )
        )
        .with_row(dashboard_builders.Row("Service invocation and jobs"))
        .with_panel(
            time_series(
                "Service invocation latency",
                "Round trip of service invocation calls as the caller's sidecar sees them, "
                "p50 / p95 / p99.",
                "ms",
                [
                    (
                        quantile(q, invocation, ("app_id",), app_id=app),
                        f"{{{{app_id}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
            )
        )
        .with_panel(
            time_series(
                "Jobs API trigger failures",
                "Job triggers the sidecar failed to deliver to the app.",
                "short",
                [(rate(job_failures, ("app_id",), app_id=app), "{{app_id}}")],
            )
        )
        .with_row(dashboard_builders.Row("State store"))
        .with_panel(
            time_series(
                "State store latency",
                "How long the state store takes to answer the sidecar, per operation (get, "
                "set, delete, transaction), p95 and p99: recurring-task-service keeps the ids "
                "of processed messages there.",
                "ms",
                [
                    (
                        quantile(q, state, ("app_id", "component", "operation"), app_id=app),
                        f"{{{{app_id}}}} {{{{component}}}} {{{{operation}}}} p{int(q * 100)}",
                    )
                    for q in (0.95, 0.99)
                ],
                span=24,
            )
        )
    )


def recurring_tasks() -> dashboard_builders.Dashboard:
    """Next-occurrence calculation time, failures by reason and completion rate."""
    calculation = app_metrics.NEXT_OCCURRENCE_DURATION
    failures = app_metrics.NEXT_OCCURRENCE_FAILURES
    created = app_metrics.NEXT_OCCURRENCES_CREATED
    completed = app_metrics.TASKS_COMPLETED
    completion = (
        f"{rate(created, window=RANGE, fn='increase')} / "
        f"{rate(completed, window=RANGE, fn='increase', recurring='true')}"
    )
    histogram = (
        heatmap.Panel()
        .title("Next-occurrence calculation time (histogram)")
        .description(
            "How long dateutil.rrule took to find each next occurrence: one column per "
            "interval, one cell per bucket, darker for more calculations."
        )
        .datasource(DATASOURCE)
        .targets(
            _targets(
                [(rate(calculation, ("le",), suffix="_bucket", fn="increase"), "{{le}}")],
                heatmap_buckets=True,
            )
        )
        .span(12)
        .height(8)
        .calculate(False)
        .unit("s")
    )
    return (
        _dashboard(
            "todo-recurring-tasks",
            "Recurring tasks",
            "recurring-task-service: how fast and how reliably completed recurring tasks get "
            "their next occurrence.",
            job=False,
        )
        .with_row(dashboard_builders.Row("Completion"))
        .with_panel(
            single_stat(
                "Completion rate",
                "Share of completed recurring tasks whose next occurrence was created, over the "
                "dashboard's time range.",
                "percentunit",
                [(completion, "next occurrences / completions")],
                thresholds=((None, "red"), (0.95, "yellow"), (0.99, "green")),
                span=8,
            )
        )
        .with_panel(
            time_series(
                "Completions and next occurrences",
                "Recurring tasks completed (backend) and next occurrences requested by outcome "
                "(recurring-task-service), per second.",
                "short",
                [
                    (rate(completed, recurring="true"), "completed (recurring)"),
                    (rate(created, ("outcome",)), "next occurrence {{outcome}}"),
                ],
                span=16,
            )
        )
        .with_row(dashboard_builders.Row("Calculation"))
        .with_panel(histogram)
        .with_panel(
            time_series(
                "Next-occurrence calculation p50 / p95 / p99",
                "Quantiles of the time to calculate a next occurrence.",
                "s",
                [(quantile(q, calculation), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
            )
        )
        .with_panel(
            time_series(
                "Next-occurrence failures by reason",
                "Next occurrences not created, by reason (invalid_rule, rule_exhausted, "
                "backend_error, backend_rejected).",
                "short",
                [(rate(failures, ("reason",), fn="increase"), "{{reason}}")],
                stacked=True,
                span=24,
            )
        )
    )


def reminders() -> dashboard_builders.Dashboard:
    """E-mail delivery rate against 99 %, SMTP retries, Jobs API, dead letters, latency, failures."""
    emails = app_metrics.REMINDER_EMAILS
    attempts = app_metrics.REMINDER_SMTP_ATTEMPTS
    failures = app_metrics.REMINDER_FAILURES
    latency = app_metrics.REMINDER_DELIVERY_LATENCY
    scheduled = app_metrics.REMINDERS_SCHEDULED
    jobs = sdk_metrics.JOBS_SCHEDULED
    triggers = sdk_metrics.JOB_TRIGGERS
    parked = sdk_metrics.DEAD_LETTERS_PARKED
    dead = sdk_metrics.DEAD_LETTERS
    delivered = (
        f"{rate(emails, fn='increase', window=RANGE, outcome='sent')} / "
        f"{rate(emails, fn='increase', window=RANGE)}"
    )
    delivery_gauge = (
        gauge.Panel()
        .title("E-mail delivery rate")
        .description(
            f"Share of reminder e-mails delivered over the dashboard's time range; the objective "
            f"is {DELIVERY_OBJECTIVE:.0%} (the threshold mark)."
        )
        .datasource(DATASOURCE)
        .targets(_targets([(delivered, "delivered")], instant=True))
        .unit("percentunit")
        .min(0)
        .max(1)
        .decimals(2)
        .span(6)
        .height(8)
        .reduce_options(_reduce())
        .show_threshold_markers(True)
        .show_threshold_labels(True)
        .thresholds(_thresholds((None, "red"), (DELIVERY_OBJECTIVE, "green")))
    )
    return (
        _dashboard(
            "todo-reminders",
            "Reminders",
            "notification-service: reminder jobs on the Dapr Jobs API, SMTP delivery, latency "
            "from remind_at to the mail server, failures and dead letters.",
            job=False,
        )
        .with_row(dashboard_builders.Row("Delivery"))
        .with_panel(delivery_gauge)
        .with_panel(
            time_series(
                "Delivery latency p50 / p95 / p99",
                "Time from a reminder's remind_at to its e-mail being accepted by SMTP.",
                "s",
                [(quantile(q, latency), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
                span=18,
            )
        )
        .with_panel(
            time_series(
                "SMTP retries by attempt",
                "SMTP delivery attempts by attempt number and outcome: attempts above 1 are "
                "retries.",
                "short",
                [
                    (
                        rate(attempts, ("attempt", "outcome"), fn="increase"),
                        "attempt {{attempt}} {{outcome}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            time_series(
                "Failures by reason",
                "Reminders that failed, by reason (smtp_unavailable, smtp_rejected, "
                "backend_unavailable, backend_rejected).",
                "short",
                [(rate(failures, ("reason",), fn="increase"), "{{reason}}")],
                stacked=True,
            )
        )
        .with_row(dashboard_builders.Row("Jobs API and dead letters"))
        .with_panel(
            time_series(
                "Jobs API health",
                "Reminder jobs scheduled on the Dapr Jobs API and job triggers handled, by "
                "outcome: any error or drop means reminders are being lost.",
                "short",
                [
                    (rate(scheduled, ("outcome",)), "reminders scheduled {{outcome}}"),
                    (
                        rate(jobs, ("job_type", "outcome")),
                        "{{job_type}} jobs scheduled {{outcome}}",
                    ),
                    (rate(triggers, ("job_type", "outcome")), "{{job_type}} triggers {{outcome}}"),
                ],
            )
        )
        .with_panel(
            time_series(
                "Dead-letter depth",
                "Messages parked in the dead-letter store, by origin topic, and dead letters "
                "received by reason.",
                "short",
                [
                    (
                        gauge_of(parked, ("origin_topic",), aggregation="max"),
                        "parked {{origin_topic}}",
                    ),
                    (
                        rate(dead, ("origin_topic", "reason"), fn="increase"),
                        "received {{origin_topic}} {{reason}}",
                    ),
                ],
            )
        )
    )


HEALTH_STATES = {"1": ("Up", "green"), "0.5": ("Degraded", "yellow"), "0": ("Down", "red")}


def health() -> dashboard_builders.Dashboard:
    """The status of every health check of every service, and scrape health."""
    status = sdk_metrics.HEALTH_CHECK_STATUS
    duration = sdk_metrics.HEALTH_CHECK_DURATION
    up = _third_party("up")
    job = Regex(JOB)
    timeline = (
        statetimeline.Panel()
        .title("Check status per service")
        .description("Each health check's latest result over time: up, degraded or down.")
        .datasource(DATASOURCE)
        .targets(
            _targets(
                [
                    (
                        gauge_of(status, ("job", "check"), aggregation="min", job=job),
                        "{{job}} {{check}}",
                    )
                ]
            )
        )
        .span(24)
        .height(10)
        .legend(_legend())
        .tooltip(_tooltip())
        .show_value(common.VisibilityMode.AUTO)
        .row_height(0.9)
        .merge_values(True)
        .fill_opacity(70)
        .mappings([_value_map(HEALTH_STATES)])
        .thresholds(_thresholds((None, "red"), (0.5, "yellow"), (1.0, "green")))
    )
    return (
        _dashboard(
            "todo-health",
            "Health",
            "Every service's health checks (health_check_status: 1 up, 0.5 degraded, 0 down) and "
            "whether Prometheus can scrape it.",
            job=True,
        )
        .with_row(dashboard_builders.Row("Now"))
        .with_panel(
            single_stat(
                "Scrape target up",
                "Whether Prometheus reached each service's /metrics at the last scrape.",
                "short",
                [(gauge_of(up, ("job",), aggregation="min", job=job), "{{job}}")],
                thresholds=((None, "red"), (1.0, "green")),
                mappings={"1": ("Up", "green"), "0": ("Down", "red")},
                span=12,
            )
        )
        .with_panel(
            single_stat(
                "Checks not up",
                "Health checks currently degraded or down, per service.",
                "short",
                [(f"sum by (job) ({selector(status, job=job)} < bool 1)", "{{job}}")],
                thresholds=((None, "green"), (1.0, "red")),
                span=12,
            )
        )
        .with_row(dashboard_builders.Row("Checks"))
        .with_panel(timeline)
        .with_panel(
            time_series(
                "Check duration p95",
                "95th percentile time a health check run took, per service and check.",
                "s",
                [(quantile(0.95, duration, ("job", "check"), job=job), "{{job}} {{check}}")],
                span=24,
            )
        )
    )


DASHBOARDS = {
    "service-red.json": service_red,
    "slos.json": slos,
    "kafka.json": kafka,
    "dapr.json": dapr,
    "recurring-tasks.json": recurring_tasks,
    "reminders.json": reminders,
    "health.json": health,
}
"""File name → the function that builds that dashboard."""


def _number_panels(model: dict[str, Any]) -> None:
    # Panel ids only need to be unique within a dashboard; numbering them in order keeps
    # the output stable (the SDK leaves them unset, or 0 for rows).
    panels: list[dict[str, Any]] = model.get("panels", [])
    next_id = 1
    for panel in panels:
        panel["id"] = next_id
        next_id += 1
        for nested in panel.get("panels", []):
            nested["id"] = next_id
            next_id += 1


def build() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by file name."""
    models: dict[str, dict[str, Any]] = {}
    for file_name, builder in DASHBOARDS.items():
        model = json.loads(json.dumps(builder().build(), cls=JSONEncoder))
        _number_panels(model)
        models[file_name] = model
    return models


def render(model: Mapping[str, Any]) -> str:
    """The committed text of a dashboard: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- Files ------------------------------------------------------------------------------------


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard to `directory` (created if missing); the paths written.

    JSON files in `directory` that no dashboard produces any more are removed, so a renamed
    dashboard does not linger in Grafana.
    """
    directory.mkdir(parents=True, exist_ok=True)
    models = build()
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in models:
            stale.unlink()
    written = []
    for file_name, model in models.items():
        path = directory / file_name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def differences(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """The file names in `directory` that differ from what `build()` produces (or are extra)."""
    models = build()
    differing = []
    for file_name, model in models.items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(model):
            differing.append(file_name)
    differing.extend(
        path.name for path in sorted(directory.glob("*.json")) if path.name not in models
    )
    return differing


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the committed dashboards, or with `--check` report the ones out of date."""
    parser = argparse.ArgumentParser(
        prog="python -m reference_app.ops.dashboards",
        description="Generate the reference system's Grafana dashboards from the metric catalogues.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing the files that differ from the generated ones",
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=DASHBOARDS_DIR,
        help=f"where the dashboard JSON lives (default: {DASHBOARDS_DIR})",
    )
    args = parser.parse_args(argv)
    if args.check:
        differing = differences(args.directory)
        for file_name in differing:
            print(f"out of date: {args.directory / file_name}", file=sys.stderr)
        if differing:
            print("Regenerate with: python -m reference_app.ops.dashboards", file=sys.stderr)
            return 1
        return 0
    for path in write(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
