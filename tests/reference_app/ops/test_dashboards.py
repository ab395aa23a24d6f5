"""The Grafana dashboards: generated from the catalogues, committed as generated, schema-valid."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml

from reference_app.ops import dashboards, queries, thirdparty
from reference_app.ops.catalogue import SPECS, spec_of
from todo_observability import metrics as sdk_metrics
from todo_observability.metrics import MetricSpec

SCHEMAS = Path(__file__).parent / "schemas" / "grafana"
GRAFANA = dashboards.DASHBOARDS_DIR.parent
MODELS = dashboards.build()
QUERIES = queries.queries()

EXPECTED_UIDS = {
    "service-red.json": "todo-service-red",
    "slos.json": "todo-slos",
    "kafka.json": "todo-kafka",
    "dapr.json": "todo-dapr",
    "recurring-tasks.json": "todo-recurring-tasks",
    "reminders.json": "todo-reminders",
    "health.json": "todo-health",
}

# The panels the issue names, by dashboard: every one must exist, by title.
ISSUE_PANELS = {
    "todo-service-red": [
        "Request rate",
        "Error ratio (5xx)",
        "Latency p50 / p95 / p99 vs 500 ms SLO",
    ],
    "todo-slos": [
        "SLO objectives",
        "Error budget remaining (30d)",
        "Burn rate (1h / 6h / 3d)",
    ],
    "todo-kafka": [
        "Consumer lag by service and topic",
        "Partition rebalances",
        "Throughput: produced by topic",
        "Throughput: consumed by service and topic",
        "Brokers",
        "Under-replicated partitions",
    ],
    "todo-dapr": [
        "Sidecar CPU",
        "Sidecar memory",
        "mTLS",
        "Pub/sub ingress by process_status",
        "Pub/sub egress failures",
        "Service invocation latency",
        "State store latency",
    ],
    "todo-recurring-tasks": [
        "Next-occurrence calculation time (histogram)",
        "Next-occurrence failures by reason",
        "Completion rate",
    ],
    "todo-reminders": [
        "E-mail delivery rate",
        "SMTP retries by attempt",
        "Jobs API health",
        "Dead-letter depth",
        "Delivery latency p50 / p95 / p99",
        "Failures by reason",
    ],
    "todo-health": ["Check status per service"],
}

# Labels every series may carry from the scrape, besides its own.
SCRAPE_LABELS = {"__name__", "job", "instance", "namespace", "pod"}


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    return schema


def _definition(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A validator schema for one definition of a kind schema (they have no root `$ref`)."""
    return {"$ref": f"#/definitions/{name}", "definitions": schema["definitions"]}


def _errors(schema: dict[str, Any], instance: object) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _visualisations() -> Iterator[tuple[str, dict[str, Any]]]:
    for file_name, model in MODELS.items():
        for panel in _panels(model):
            if panel["type"] != "row":
                yield f"{file_name}:{panel['title']}", panel


VISUALISATIONS = dict(_visualisations())


def _specs() -> dict[str, MetricSpec]:
    """Every metric a query may select from our side: both catalogues and the SLO rules."""
    return {**SPECS, **{spec.name: spec for spec in dashboards.RECORDING_RULES}}


def _labels_allowed(series: str | None) -> set[str] | None:
    """The labels `series` can have, or None when it is neither ours nor documented."""
    if series is None:
        return None
    found = spec_of(series, _specs())
    if found is not None:
        spec, suffix = found
        return {*spec.labels, *SCRAPE_LABELS, *(("le",) if suffix == "_bucket" else ())}
    if thirdparty.base_name(series) in thirdparty.THIRD_PARTY:
        metric = thirdparty.lookup(series)
        extra = ("le",) if series.endswith("_bucket") else ()
        return {*metric.labels, *SCRAPE_LABELS, *extra}
    return None


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _aggregations(expr: str) -> list[promql_parser.AggregateExpr]:
    found: list[promql_parser.AggregateExpr] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


# --- generated == committed -------------------------------------------------------------------


def test_committed_dashboards_equal_the_generated_ones() -> None:
    assert dashboards.differences() == [], "run: python -m reference_app.ops.dashboards"
    committed = sorted(path.name for path in dashboards.DASHBOARDS_DIR.glob("*.json"))
    assert committed == sorted(EXPECTED_UIDS)


def test_rendering_is_stable_sorted_and_newline_terminated() -> None:
    model = MODELS["health.json"]
    text = dashboards.render(model)
    assert text == dashboards.render(dashboards.build()["health.json"])
    assert text.endswith("}\n")
    assert text.splitlines()[1].startswith('  "annotations"')  # sorted keys, two spaces


def test_check_reports_changed_and_stale_files_and_write_repairs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = dashboards.write(tmp_path)
    assert sorted(path.name for path in written) == sorted(EXPECTED_UIDS)
    assert dashboards.main(["--check", "--directory", str(tmp_path)]) == 0

    (tmp_path / "kafka.json").write_text("{}\n")
    (tmp_path / "renamed-long-ago.json").write_text("{}\n")
    assert dashboards.main(["--check", "--directory", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "kafka.json" in err
    assert "renamed-long-ago.json" in err
    assert "health.json" not in err

    assert dashboards.main(["--directory", str(tmp_path)]) == 0
    assert not (tmp_path / "renamed-long-ago.json").exists()
    assert dashboards.differences(tmp_path) == []


def test_module_runs_as_a_script_and_the_committed_files_pass_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reference_app.ops.dashboards", "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", sorted(EXPECTED_UIDS))
def test_dashboard_validates_against_the_grafana_dashboard_schema(file_name: str) -> None:
    assert _errors(_schema("dashboard"), MODELS[file_name]) == []


def test_dashboard_schema_rejects_a_broken_dashboard() -> None:
    broken = json.loads(json.dumps(MODELS["health.json"]))
    broken["panels"][1]["gridPos"]["w"] = "wide"
    del broken["schemaVersion"]
    errors = _errors(_schema("dashboard"), broken)
    assert any("schemaVersion" in error for error in errors)
    assert any("'wide'" in error for error in errors)


@pytest.mark.parametrize("title", sorted(VISUALISATIONS))
def test_panel_options_and_field_config_validate_against_their_kind_schema(title: str) -> None:
    panel = VISUALISATIONS[title]
    # Panel types are Grafana plugin ids ("state-timeline"); schema files drop the dash.
    kind = _schema(panel["type"].replace("-", ""))
    assert _errors(_definition(kind, "Options"), panel["options"]) == []
    if "FieldConfig" in kind["definitions"]:
        custom = panel["fieldConfig"]["defaults"].get("custom", {})
        assert _errors(_definition(kind, "FieldConfig"), custom) == []


def test_kind_schema_rejects_options_of_another_kind() -> None:
    stat_options = next(p for p in VISUALISATIONS.values() if p["type"] == "stat")["options"]
    assert _errors(_definition(_schema("timeseries"), "Options"), stat_options) != []


@pytest.mark.parametrize("title", sorted(VISUALISATIONS))
def test_every_target_validates_against_the_prometheus_query_schema(title: str) -> None:
    targets = VISUALISATIONS[title]["targets"]
    assert targets, "a panel without a query shows nothing"
    for target in targets:
        assert _errors(_schema("prometheus"), target) == []


# --- identity and datasource ------------------------------------------------------------------


def test_uids_are_unique_and_stable() -> None:
    assert {name: model["uid"] for name, model in MODELS.items()} == EXPECTED_UIDS


def test_panel_ids_are_unique_within_each_dashboard() -> None:
    for model in MODELS.values():
        ids = [panel["id"] for panel in _panels(model)]
        assert len(ids) == len(set(ids)), model["uid"]


def test_every_panel_and_query_uses_the_provisioned_datasource() -> None:
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["uid"] == dashboards.DATASOURCE_UID
    assert source["type"] == "prometheus"
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in VISUALISATIONS.values():
        assert panel["datasource"] == expected
        assert all(target["datasource"] == expected for target in panel["targets"])


def test_dashboard_provider_loads_files_from_disk() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "todo-observability.yaml").read_text()
    )
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].startswith("/")
    assert entry["allowUiUpdates"] is False


# --- queries ----------------------------------------------------------------------------------


def test_queries_cover_every_target_of_every_dashboard() -> None:
    targets = sum(len(panel["targets"]) for panel in VISUALISATIONS.values())
    assert len(QUERIES) == targets
    assert {query.dashboard for query in QUERIES} == set(EXPECTED_UIDS.values())


def test_every_metric_queried_is_in_a_catalogue_the_slo_rules_or_thirdparty() -> None:
    unknown = {
        (query.dashboard, query.panel, selector.name)
        for query in QUERIES
        for selector in _selectors(query.concrete())
        if _labels_allowed(selector.name) is None
    }
    assert unknown == set()


def test_queries_on_non_catalogue_metrics_are_documented_third_party_metrics() -> None:
    ours = _specs()
    outside = {name for query in QUERIES for name in query.metrics if spec_of(name, ours) is None}
    assert outside, "the Kafka and Dapr dashboards query third-party metrics"
    for name in outside:
        thirdparty.lookup(name)  # raises KeyError for an undocumented name


def test_matchers_use_only_labels_the_metric_has() -> None:
    wrong: list[tuple[str | None, ...]] = []
    for query in QUERIES:
        for selector in _selectors(query.concrete()):
            allowed = _labels_allowed(selector.name)
            assert allowed is not None
            wrong.extend(
                (query.panel, selector.name, matcher.name)
                for matcher in selector.matchers.matchers
                if matcher.name not in allowed
            )
    assert wrong == []


def test_aggregations_group_by_labels_the_selected_metrics_have() -> None:
    wrong: list[tuple[str | None, ...]] = []
    for query in QUERIES:
        expr = query.concrete()
        for aggregation in _aggregations(expr):
            if aggregation.modifier is None:
                continue
            inner = _selectors(str(aggregation.expr))
            allowed = set().union(*(_labels_allowed(s.name) or set() for s in inner))
            wrong.extend(
                (query.panel, label)
                for label in aggregation.modifier.labels
                if label not in allowed
            )
    assert wrong == []


def test_selector_rejects_a_label_the_metric_does_not_have() -> None:
    with pytest.raises(ValueError, match=r"has no label 'status'.*status_code"):
        dashboards.selector(sdk_metrics.HTTP_SERVER_REQUESTS, status="500")


def test_selector_rejects_histogram_series_of_a_counter() -> None:
    with pytest.raises(ValueError, match=r"only histograms have the series"):
        dashboards.selector(sdk_metrics.HTTP_SERVER_REQUESTS, "_bucket")


def test_selector_renders_equality_regex_and_negative_matchers() -> None:
    selector = dashboards.selector(
        sdk_metrics.HTTP_SERVER_REQUESTS,
        job=dashboards.Regex("$job"),
        route=dashboards.NotEqual("/health/live"),
        method="GET",
    )
    assert selector == (
        'http_server_requests_total{job=~"$job", route!="/health/live", method="GET"}'
    )


def test_recording_rules_follow_the_slo_contract() -> None:
    names = [spec.name for spec in dashboards.RECORDING_RULES]
    assert names == [
        "slo:sli_error:ratio_rate5m",
        "slo:sli_error:ratio_rate30m",
        "slo:sli_error:ratio_rate1h",
        "slo:sli_error:ratio_rate6h",
        "slo:sli_error:ratio_rate3d",
        "slo:sli_error:ratio_rate30d",
        "slo:objective:ratio",
        "slo:error_budget:ratio",
    ]
    queried = {name for query in QUERIES for name in query.metrics}
    assert set(names) <= queried, "every recording rule has a panel"


def test_job_variable_lists_services_from_the_catalogue() -> None:
    for model in MODELS.values():
        variables = model["templating"].get("list", [])
        for variable in variables:
            assert variable["name"] == "job"
            assert variable["query"] == "label_values(http_server_requests_total, job)"
        uses_job = any("$job" in query.expr for query in QUERIES if query.dashboard == model["uid"])
        assert uses_job == bool(variables), model["uid"]


# --- third-party names ------------------------------------------------------------------------


def test_thirdparty_lists_the_names_the_alert_rules_use() -> None:
    for name in (
        "kafka_consumergroup_lag_sum",
        "kafka_brokers",
        "kube_pod_container_status_restarts_total",
        "dapr_component_pubsub_ingress_count",
    ):
        assert name in thirdparty.THIRD_PARTY


def test_thirdparty_maps_histogram_series_to_their_metric() -> None:
    assert thirdparty.base_name("dapr_component_pubsub_ingress_latencies_bucket") == (
        "dapr_component_pubsub_ingress_latencies"
    )
    # A counter has no _count series of its own: the name stays, and is unknown.
    assert thirdparty.base_name("kafka_brokers_count") == "kafka_brokers_count"
    with pytest.raises(KeyError, match=r"reference_app/ops/thirdparty\.py"):
        thirdparty.lookup("kafka_consumergroup_lagg")


def test_thirdparty_names_do_not_collide_with_the_catalogues() -> None:
    assert set(thirdparty.THIRD_PARTY).isdisjoint(_specs())


# --- the issue's panels -----------------------------------------------------------------------


@pytest.mark.parametrize("uid", sorted(ISSUE_PANELS))
def test_dashboard_has_the_panels_the_issue_names(uid: str) -> None:
    (model,) = [m for m in MODELS.values() if m["uid"] == uid]
    titles = {panel["title"] for panel in _panels(model)}
    assert set(ISSUE_PANELS[uid]) <= titles


def test_latency_panels_draw_the_500_ms_slo_line() -> None:
    latency = [
        panel
        for panel in VISUALISATIONS.values()
        if panel["type"] == "timeseries"
        and any("http_server_request_duration_seconds" in t["expr"] for t in panel["targets"])
    ]
    assert len(latency) == 2
    for panel in latency:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s"
        assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "dashed"}
        steps = [step["value"] for step in defaults["thresholds"]["steps"]]
        assert dashboards.LATENCY_SLO_SECONDS in steps
    assert dashboards.LATENCY_SLO_SECONDS == 0.5


def test_red_overview_shows_p50_p95_and_p99_per_service() -> None:
    panel = VISUALISATIONS["service-red.json:Latency p50 / p95 / p99 vs 500 ms SLO"]
    exprs = [target["expr"] for target in panel["targets"]]
    assert [expr.split(",")[0] for expr in exprs] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]
    assert all("by (le, job)" in expr for expr in exprs)


def test_delivery_gauge_marks_the_99_percent_objective() -> None:
    panel = VISUALISATIONS["reminders.json:E-mail delivery rate"]
    assert panel["type"] == "gauge"
    assert panel["options"]["showThresholdMarkers"] is True
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 0.99}]
    assert (panel["fieldConfig"]["defaults"]["min"], panel["fieldConfig"]["defaults"]["max"]) == (
        0,
        1,
    )


def test_health_timeline_maps_check_values_to_states() -> None:
    panel = VISUALISATIONS["health.json:Check status per service"]
    assert panel["type"] == "state-timeline"
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert {value: option["text"] for value, option in mapping["options"].items()} == {
        "1": "Up",
        "0.5": "Degraded",
        "0": "Down",
    }
    assert "health_check_status" in panel["targets"][0]["expr"]
