"""`todo_observability.ops.slo`: SLOs and alerts validated, and the Prometheus rules they become."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import slo_rules
from todo_observability.exceptions import ConfigurationError
from todo_observability.ops.slo import (
    BURN_RATE_ALERTS,
    SLO,
    WINDOWS,
    Alert,
    BurnRateAlert,
    Events,
    Latency,
    Uptime,
    prometheus_rule,
    rule_groups,
    runbook_slug,
    service_slos,
)

RUNBOOKS = "https://runbooks.example.com/alerts"
CHECKOUTS = Events(total="checkouts_total", bad='checkouts_total{outcome="failed"}')


def checkout_slo(**changes: Any) -> SLO:
    """A valid SLO on an application counter; `changes` override its fields."""
    fields: dict[str, Any] = {
        "name": "checkout",
        "objective": 0.99,
        "indicator": CHECKOUTS,
        "alert": "CheckoutBelowSLO",
        "description": "99 % of checkouts complete.",
    }
    return SLO(**{**fields, **changes})


def queue_alert(**changes: Any) -> Alert:
    """A valid plain alert; `changes` override its fields."""
    fields: dict[str, Any] = {
        "name": "QueueBacklog",
        "expr": "queue_depth > 100",
        "severity": "warning",
        "category": "messaging",
        "summary": "{{ $labels.job }}: queue backlog",
        "description": "The worker is not keeping up.",
    }
    return Alert(**{**fields, **changes})


def rules_of(group: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from group["rules"]


def records(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for rule in rules_of(group) if "record" in rule}


def burn_rate_alerts(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The group's alerting rules by severity."""
    return {rule["labels"]["severity"]: rule for rule in rules_of(group) if "alert" in rule}


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Checkout", "check_out", "1st-slo", "-checkout", "", "a b"])
def test_slo_name_must_be_lowercase_with_dashes(name: str) -> None:
    with pytest.raises(ConfigurationError, match="SLO name must be lowercase") as raised:
        checkout_slo(name=name)
    assert repr(name) in str(raised.value)


@pytest.mark.parametrize("objective", [1.0, 0.0, 1, 0, 1.5, -0.5, True, "0.99"])
def test_objective_must_be_a_float_strictly_between_0_and_1(objective: object) -> None:
    with pytest.raises(ConfigurationError, match="float between 0 and 1 exclusive") as raised:
        checkout_slo(objective=objective)
    assert f"got {objective!r}" in str(raised.value)
    assert "0.999 for 99.9 %" in str(raised.value)


@pytest.mark.parametrize("alert", ["checkout_below_slo", "checkoutBelowSLO", "Checkout-Down", ""])
def test_slo_alert_must_be_a_camel_case_name(alert: str) -> None:
    with pytest.raises(ConfigurationError, match=r"alert must be a CamelCase alert name") as raised:
        checkout_slo(alert=alert)
    assert f"got {alert!r}" in str(raised.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"by": ("job", "route-name")},
        {"by": ("1job",)},
        {"labels": {"team name": "shop"}},
        {"labels": {"signal.kind": "latency"}},
    ],
)
def test_by_and_labels_must_be_prometheus_label_names(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="is not a valid Prometheus label name"):
        checkout_slo(**changes)


def test_min_events_cannot_be_negative() -> None:
    with pytest.raises(ConfigurationError, match=r"min_events must be 0 or more, got -1\."):
        checkout_slo(min_events=-1)


@pytest.mark.parametrize("duration", ["1 hour", "60", "1H", "", "h1", "1.5h"])
def test_absent_for_must_be_a_prometheus_duration(duration: str) -> None:
    with pytest.raises(
        ConfigurationError, match="absent_for must be a Prometheus duration"
    ) as raised:
        checkout_slo(absent_for=duration)
    assert f"got {duration!r}" in str(raised.value)


@pytest.mark.parametrize("duration", ["30s", "1h30m", "2d", "500ms", "1w"])
def test_valid_durations_are_accepted(duration: str) -> None:
    assert checkout_slo(absent_for=duration).absent_for == duration
    assert queue_alert(for_=duration).for_ == duration


@pytest.mark.parametrize("name", ["queue_backlog", "queueBacklog", "Queue-Backlog", ""])
def test_alert_name_must_be_camel_case(name: str) -> None:
    with pytest.raises(ConfigurationError, match="alert name must be CamelCase") as raised:
        queue_alert(name=name)
    assert f"got {name!r}" in str(raised.value)


@pytest.mark.parametrize("severity", ["page", "error", "CRITICAL", ""])
def test_alert_severity_must_be_critical_warning_or_info(severity: str) -> None:
    with pytest.raises(ConfigurationError, match="severity must be critical, warning or info"):
        queue_alert(severity=severity)


def test_alert_for_must_be_a_prometheus_duration() -> None:
    with pytest.raises(ConfigurationError, match=r"for_ must be a Prometheus duration .*'5 min'"):
        queue_alert(for_="5 min")


@pytest.mark.parametrize(
    "selector",
    ["", "5xx_total", "rate(checkouts_total[5m])", "checkouts_total{", "checkouts total"],
)
def test_events_selectors_must_be_a_metric_name_with_optional_matchers(selector: str) -> None:
    with pytest.raises(ConfigurationError, match="a selector must be a metric name") as raised:
        Events(total="checkouts_total", bad=selector)
    assert f"got {selector!r}" in str(raised.value)
    with pytest.raises(ConfigurationError, match="a selector must be a metric name"):
        Events(total=selector, bad="checkouts_total")


def test_uptime_only_measures_up() -> None:
    with pytest.raises(ConfigurationError, match="use Events for counters") as raised:
        Uptime("http_server_requests_total")
    assert "'http_server_requests_total'" in str(raised.value)


def test_latency_threshold_must_be_a_bucket_of_a_catalogued_histogram() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Latency("http_server_request_duration_seconds", 0.3)
    message = str(raised.value)
    assert "got 0.3" in message
    assert "bucket boundary of http_server_request_duration_seconds" in message
    assert "(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)" in message


def test_latency_on_a_histogram_outside_the_catalogue_accepts_any_threshold() -> None:
    latency = Latency("checkout_duration_seconds", 0.3)
    assert 'checkout_duration_seconds_bucket{le="0.3"}' in latency.errors("5m", "job")


def test_latency_reads_the_bucket_as_prometheus_client_labels_it() -> None:
    # An int threshold is the 1.0 bucket, which prometheus_client exposes as le="1.0".
    latency = Latency("http_server_request_duration_seconds", 1, 'route!="/login"')
    assert latency.errors("5m", "job") == (
        'sum by (job) (increase(http_server_request_duration_seconds_count{route!="/login"}[5m]))'
        " - sum by (job) (increase(http_server_request_duration_seconds_bucket"
        '{route!="/login", le="1.0"}[5m]))'
    )
    assert latency.totals("1h", "job, route") == (
        "sum by (job, route) "
        '(increase(http_server_request_duration_seconds_count{route!="/login"}[1h]))'
    )
    assert latency.metrics == ('http_server_request_duration_seconds_count{route!="/login"}',)


def test_rule_groups_rejects_two_slos_with_one_name() -> None:
    other = checkout_slo(alert="CheckoutSlow")
    with pytest.raises(ConfigurationError, match="SLO names must be unique") as raised:
        rule_groups([checkout_slo(), other], runbook_base=RUNBOOKS)
    assert "['checkout', 'checkout']" in str(raised.value)


@pytest.mark.parametrize(
    ("slos", "alerts"),
    [
        ([], [queue_alert(), queue_alert(expr="queue_depth > 1000")]),
        ([checkout_slo()], [queue_alert(name="CheckoutBelowSLO")]),
        ([checkout_slo(), checkout_slo(name="payment")], []),
    ],
    ids=["two-alerts", "slo-and-alert", "two-slos"],
)
def test_rule_groups_rejects_two_alerts_with_one_name(slos: list[SLO], alerts: list[Alert]) -> None:
    with pytest.raises(ConfigurationError, match="alert names must be unique, got duplicates"):
        rule_groups(slos, alerts, runbook_base=RUNBOOKS)


def test_rule_groups_interval_must_be_a_duration() -> None:
    with pytest.raises(
        ConfigurationError, match="interval must be a Prometheus duration"
    ) as raised:
        rule_groups([checkout_slo()], runbook_base=RUNBOOKS, interval="often")
    assert "'often'" in str(raised.value)


# --- the generated rules ------------------------------------------------------------------------


def test_groups_are_one_per_slo_then_absent_then_alerts() -> None:
    groups = rule_groups(
        [checkout_slo(), checkout_slo(name="payment", alert="PaymentBelowSLO")],
        [queue_alert()],
        runbook_base=RUNBOOKS,
    )
    assert [group["name"] for group in groups] == [
        "slo-checkout",
        "slo-payment",
        "slo-absent",
        "alerts",
    ]
    assert all("interval" not in group for group in groups)


def test_no_slo_means_no_absent_group_and_no_alert_means_no_alerts_group() -> None:
    assert rule_groups([], runbook_base=RUNBOOKS) == []
    [alerts] = rule_groups([], [queue_alert()], runbook_base=RUNBOOKS)
    assert alerts["name"] == "alerts"
    assert [group["name"] for group in rule_groups([checkout_slo()], runbook_base=RUNBOOKS)] == [
        "slo-checkout",
        "slo-absent",
    ]


def test_interval_is_set_on_every_group() -> None:
    groups = rule_groups([checkout_slo()], [queue_alert()], runbook_base=RUNBOOKS, interval="30s")
    assert [group["interval"] for group in groups] == ["30s", "30s", "30s"]


def test_recording_rules_cover_every_window_objective_budget_and_guard() -> None:
    [group, _] = rule_groups([checkout_slo(objective=0.999)], runbook_base=RUNBOOKS)
    recorded = records(group)
    assert WINDOWS == ("5m", "30m", "1h", "6h", "3d", "30d")
    assert list(recorded) == [
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        *(f"slo:sli_error:ratio_rate{window}" for window in WINDOWS),
        "slo:sli_total:increase1h",
        "slo:sli_total:increase6h",
        "slo:sli_total:increase3d",
    ]
    assert all(rule["labels"] == {"slo": "checkout"} for rule in recorded.values())
    assert recorded["slo:objective:ratio"]["expr"] == "vector(0.999)"
    # 1 - 0.999 is 0.0010000000000000009 in floats: the budget is rounded to what was meant.
    assert recorded["slo:error_budget:ratio"]["expr"] == "vector(0.001)"
    assert recorded["slo:sli_total:increase6h"]["expr"] == (
        "sum by (job) (increase(checkouts_total[6h]))"
    )


def test_error_ratio_divides_bad_by_total_and_is_zero_without_bad_series() -> None:
    [group, _] = rule_groups([checkout_slo()], runbook_base=RUNBOOKS)
    for window in WINDOWS[:-1]:
        expr = records(group)[f"slo:sli_error:ratio_rate{window}"]["expr"]
        bad = f'sum by (job) (increase(checkouts_total{{outcome="failed"}}[{window}]))'
        total = f"sum by (job) (increase(checkouts_total[{window}]))"
        assert expr == f"(\n  ({bad})\n  or\n  ({total}) * 0\n)\n/\n({total} > 0)"


def test_the_30d_ratio_is_averaged_from_the_5m_one() -> None:
    [group, _] = rule_groups([checkout_slo()], runbook_base=RUNBOOKS)
    assert records(group)["slo:sli_error:ratio_rate30d"]["expr"] == (
        'avg_over_time(slo:sli_error:ratio_rate5m{slo="checkout"}[30d])'
    )


def test_ratios_are_computed_per_the_by_labels() -> None:
    slo = checkout_slo(by=("job", "route"))
    [group, _] = rule_groups([slo], runbook_base=RUNBOOKS)
    for name, rule in records(group).items():
        if name.startswith(("slo:sli_error:ratio_rate", "slo:sli_total")) and "30d" not in name:
            assert rule["expr"].count("sum by (job, route) (") >= 1, name
    page = burn_rate_alerts(group)["critical"]
    assert "{{ $labels.job }} {{ $labels.route }}" in page["annotations"]["summary"]


def test_the_workbook_burn_rates_are_the_defaults() -> None:
    workbook = {
        "critical": (BurnRateAlert(14.4, "1h", "5m"), BurnRateAlert(6, "6h", "30m")),
        "warning": (BurnRateAlert(1, "3d", "6h"),),
    }
    assert dict(BURN_RATE_ALERTS) == workbook


def _condition(window: str, factor: str, budget: str, slo: str = "checkout") -> str:
    return f'slo:sli_error:ratio_rate{window}{{slo="{slo}"}} > ({factor} * {budget})'


def test_page_burns_14_4x_over_1h_and_5m_or_6x_over_6h_and_30m() -> None:
    [group, _] = rule_groups([checkout_slo(min_events=0)], runbook_base=RUNBOOKS)
    page = burn_rate_alerts(group)["critical"]
    assert page["alert"] == "CheckoutBelowSLO"
    assert page["for"] == "2m"
    assert page["expr"] == (
        f"(\n{_condition('1h', '14.4', '0.01')}\nand\n{_condition('5m', '14.4', '0.01')}\n)"
        "\nor\n"
        f"(\n{_condition('6h', '6', '0.01')}\nand\n{_condition('30m', '6', '0.01')}\n)"
    )
    assert page["labels"] == {
        "severity": "critical",
        "category": "slo",
        "slo": "checkout",
        "burn": "page",
    }


def test_ticket_burns_1x_over_3d_and_6h() -> None:
    [group, _] = rule_groups([checkout_slo(min_events=0)], runbook_base=RUNBOOKS)
    ticket = burn_rate_alerts(group)["warning"]
    assert ticket["alert"] == "CheckoutBelowSLO"
    assert ticket["for"] == "15m"
    assert ticket["expr"] == (
        f"(\n{_condition('3d', '1', '0.01')}\nand\n{_condition('6h', '1', '0.01')}\n)"
    )
    assert ticket["labels"] == {
        "severity": "warning",
        "category": "slo",
        "slo": "checkout",
        "burn": "ticket",
    }


def test_the_low_traffic_guard_needs_min_events_in_each_long_window() -> None:
    [group, _] = rule_groups([checkout_slo(min_events=250)], runbook_base=RUNBOOKS)
    alerts = burn_rate_alerts(group)
    guards = {
        severity: re.findall(
            r'slo:sli_total:increase(\w+)\{slo="checkout"\} >= (\d+)', rule["expr"]
        )
        for severity, rule in alerts.items()
    }
    assert guards == {"critical": [("1h", "250"), ("6h", "250")], "warning": [("3d", "250")]}
    # Each guard is and-ed into its own clause, next to the windows it guards.
    assert (
        f"{_condition('5m', '14.4', '0.01')}\nand\n"
        'slo:sli_total:increase1h{slo="checkout"} >= 250\n)' in alerts["critical"]["expr"]
    )


def test_without_min_events_no_guard_is_added() -> None:
    [group, _] = rule_groups([checkout_slo(min_events=0)], runbook_base=RUNBOOKS)
    for rule in burn_rate_alerts(group).values():
        assert "slo:sli_total" not in rule["expr"]


def test_slo_labels_are_added_to_its_alerts() -> None:
    slo = checkout_slo(labels={"signal": "latency", "team": "shop"})
    [group, _] = rule_groups([slo], runbook_base=RUNBOOKS)
    for severity, rule in burn_rate_alerts(group).items():
        assert rule["labels"]["signal"] == "latency"
        assert rule["labels"]["team"] == "shop"
        assert rule["labels"]["severity"] == severity


def test_burn_rate_annotations_name_the_slo_its_objective_and_runbook() -> None:
    [group, _] = rule_groups([checkout_slo(objective=0.995)], runbook_base=RUNBOOKS + "/")
    alerts = burn_rate_alerts(group)
    page, ticket = alerts["critical"]["annotations"], alerts["warning"]["annotations"]
    assert page["summary"] == (
        "{{ $labels.job }}: checkout SLO (99.5 %) error budget burning (page)"
    )
    assert ticket["summary"].endswith("(ticket)")
    assert page["description"].startswith("99 % of checkouts complete. ")
    assert "14.4x over 1h and 5m or 6x over 6h and 30m" in page["description"]
    assert "1x over 3d and 6h" in ticket["description"]
    # A trailing slash on runbook_base is not doubled.
    assert page["runbook_url"] == f"{RUNBOOKS}/checkout-below-slo/"
    assert ticket["runbook_url"] == page["runbook_url"]


def test_absent_alert_watches_every_slo_metric_for_its_window() -> None:
    slos = [
        checkout_slo(absent_for="2h"),
        SLO(
            name="latency",
            objective=0.95,
            indicator=Latency("http_server_request_duration_seconds", 0.5, 'job="api"'),
            alert="LatencyAboveSLO",
            description="Fast.",
        ),
        SLO("uptime", 0.999, Uptime('up{job="api"}'), "UptimeBelowSLO", "Up.", min_events=0),
    ]
    groups = rule_groups(slos, runbook_base=RUNBOOKS)
    absent = groups[-1]
    assert absent["name"] == "slo-absent"
    [rule] = absent["rules"]
    assert rule["alert"] == "SLOMetricsAbsent"
    assert rule["expr"].split("\nor\n") == [
        'label_replace(absent_over_time(checkouts_total[2h]), "slo", "checkout", "", "")',
        "label_replace(absent_over_time("
        'http_server_request_duration_seconds_count{job="api"}[1h]), "slo", "latency", "", "")',
        'label_replace(absent_over_time(up{job="api"}[1h]), "slo", "uptime", "", "")',
    ]
    assert rule["for"] == "5m"
    assert rule["labels"] == {"severity": "warning", "category": "slo"}
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOKS}/slo-metrics-absent/"
    assert "{{ $labels.slo }}" in rule["annotations"]["summary"]


def test_a_plain_alert_becomes_a_rule_with_its_annotations_and_runbook() -> None:
    alert = queue_alert(for_="10m", labels={"signal": "lag"})
    [group] = rule_groups([], [alert], runbook_base=RUNBOOKS)
    assert group["rules"] == [
        {
            "alert": "QueueBacklog",
            "expr": "queue_depth > 100",
            "for": "10m",
            "labels": {"severity": "warning", "category": "messaging", "signal": "lag"},
            "annotations": {
                "summary": "{{ $labels.job }}: queue backlog",
                "description": "The worker is not keeping up.",
                "runbook_url": f"{RUNBOOKS}/queue-backlog/",
            },
        }
    ]


def test_uptime_counts_failed_scrapes_over_scrapes() -> None:
    uptime = Uptime('up{job="api"}')
    assert uptime.errors("1h", "job") == (
        'sum by (job) (count_over_time(up{job="api"}[1h]) - sum_over_time(up{job="api"}[1h]))'
    )
    assert uptime.totals("1h", "job") == 'sum by (job) (count_over_time(up{job="api"}[1h]))'
    assert Uptime().metrics == ("up",)


@pytest.mark.parametrize(
    ("alert", "slug"),
    [
        ("ServiceDown", "service-down"),
        ("ServiceLatencyAboveSLO", "service-latency-above-slo"),
        ("SLOMetricsAbsent", "slo-metrics-absent"),
        ("HTTPErrorsHigh", "http-errors-high"),
        ("KafkaDown", "kafka-down"),
        ("Pod5xxErrors", "pod5xx-errors"),
        ("Down", "down"),
    ],
)
def test_runbook_slug_is_the_alert_name_in_kebab_case(alert: str, slug: str) -> None:
    assert runbook_slug(alert) == slug


def test_prometheus_rule_wraps_the_groups_in_a_resource() -> None:
    groups = rule_groups([checkout_slo()], runbook_base=RUNBOOKS)
    resource = prometheus_rule(
        "shop-rules", groups, namespace="shop", labels={"role": "alert-rules"}
    )
    assert resource == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "shop-rules", "namespace": "shop", "labels": {"role": "alert-rules"}},
        "spec": {"groups": groups},
    }
    assert resource["spec"]["groups"][0] is not groups[0]  # copies: editing one leaves the other
    assert prometheus_rule("shop-rules", [])["metadata"] == {"name": "shop-rules"}


# --- service_slos -----------------------------------------------------------------------------


def test_service_slos_are_availability_latency_errors_and_messaging() -> None:
    slos = service_slos(["backend", "frontend"])
    assert [(slo.name, slo.objective, slo.alert) for slo in slos] == [
        ("availability", 0.999, "ServiceAvailabilityBelowSLO"),
        ("latency", 0.95, "ServiceLatencyAboveSLO"),
        ("http-errors", 0.99, "ServiceErrorRateAboveSLO"),
        ("messaging-processing", 0.995, "MessageProcessingBelowSLO"),
    ]
    availability, latency, errors, messaging = slos
    assert availability.indicator == Uptime('up{job=~"backend|frontend"}')
    assert availability.min_events == 0  # a scrape is not traffic: never too few to judge
    assert latency.indicator == Latency(
        "http_server_request_duration_seconds", 0.5, 'job=~"backend|frontend"'
    )
    assert latency.labels == {"signal": "latency"}
    assert errors.indicator == Events(
        total='http_server_requests_total{job=~"backend|frontend"}',
        bad='http_server_requests_total{job=~"backend|frontend", status_code=~"5.."}',
    )
    assert messaging.indicator == Events(
        total='messaging_process_messages_total{job=~"backend|frontend", outcome=~"success|drop"}',
        bad='messaging_process_messages_total{job=~"backend|frontend", outcome="drop"}',
    )
    assert (errors.min_events, messaging.min_events) == (100, 20)
    assert all(slo.by == ("job",) for slo in slos)


@pytest.mark.parametrize("jobs", [[], ["back end"], ['api"}'], ["a|b"], ["backend", ""]])
def test_service_slos_rejects_missing_or_odd_jobs(jobs: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="job"):
        service_slos(jobs)


# --- the example --------------------------------------------------------------------------------


def test_slo_rules_example_prints_the_groups_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    slo_rules.main()
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"groups": slo_rules.rules()}
    assert [group["name"] for group in printed["groups"]] == [
        "slo-availability",
        "slo-latency",
        "slo-http-errors",
        "slo-messaging-processing",
        "slo-checkout",
        "slo-absent",
        "alerts",
    ]
    [backlog] = printed["groups"][-1]["rules"]
    assert backlog["annotations"]["runbook_url"] == (
        "https://runbooks.example.com/alerts/payment-queue-backlog/"
    )


# --- with promtool ------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install the Debian package 'prometheus' (./dev does)"
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.mark.slow
def test_every_generated_expression_passes_promtool_check_rules(tmp_path: Path) -> None:
    slos = [
        *service_slos(["backend", "frontend"]),
        checkout_slo(by=("job", "route"), labels={"team": "shop"}),
        SLO(
            name="search-latency",
            objective=0.9,
            indicator=Latency("search_duration_seconds", 0.25, 'index="tasks"'),
            alert="SearchLatencyAboveSLO",
            description="Searches are fast.",
            min_events=0,
        ),
        SLO("uptime", 0.9995, Uptime(), "UptimeBelowSLO", "Up.", absent_for="30m"),
    ]
    groups = rule_groups(slos, [queue_alert()], runbook_base=RUNBOOKS, interval="1m")
    rules = tmp_path / "rules.yml"
    rules.write_text(json.dumps({"groups": groups}))  # JSON is YAML
    example = tmp_path / "example.yml"
    example.write_text(json.dumps({"groups": slo_rules.rules()}))

    checked = promtool("check", "rules", str(rules), str(example))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(group["rules"]) for group in groups)
    assert f"SUCCESS: {count} rules found" in checked.stdout


@pytest.mark.slow
def test_recorded_ratio_is_the_share_of_bad_events_and_missing_without_traffic(
    tmp_path: Path,
) -> None:
    groups = rule_groups([checkout_slo()], runbook_base=RUNBOOKS)
    (tmp_path / "rules.yml").write_text(json.dumps({"groups": groups}))

    def expect(window: str, job: str, value: float | None) -> dict[str, Any]:
        expr = f'slo:sli_error:ratio_rate{window}{{job="{job}"}}'
        samples = [] if value is None else [{"labels": _labels(window, job), "value": value}]
        return {"expr": expr, "eval_time": "30m", "exp_samples": samples}

    unit_tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # shop: 100 checkouts a minute, 10 of them failed.
                    {"series": 'checkouts_total{job="shop", outcome="ok"}', "values": "0+90x30"},
                    {
                        "series": 'checkouts_total{job="shop", outcome="failed"}',
                        "values": "0+10x30",
                    },
                    # calm: traffic, and not one failure yet (no failed series at all).
                    {"series": 'checkouts_total{job="calm", outcome="ok"}', "values": "0+50x30"},
                    # idle: the service is up, nobody checks out.
                    {"series": 'checkouts_total{job="idle", outcome="ok"}', "values": "0+0x30"},
                ],
                "promql_expr_test": [
                    expect("5m", "shop", 0.1),
                    expect("30m", "shop", 0.1),
                    expect("5m", "calm", 0.0),
                    expect("5m", "idle", None),
                    expect("30m", "idle", None),
                ],
            }
        ],
    }
    (tmp_path / "rules.test.yml").write_text(json.dumps(unit_tests))

    tested = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _labels(window: str, job: str) -> str:
    return f'slo:sli_error:ratio_rate{window}{{job="{job}", slo="checkout"}}'
