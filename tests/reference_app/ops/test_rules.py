"""The generated Prometheus rules: committed as generated, clean for promtool, unit-tested per alert."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reference_app.ops import alerts, rule_tests, rules, slos, thirdparty
from reference_app.ops.catalogue import spec_of
from reference_app.ops.promql import selectors
from todo_observability.ops.slo import rule_groups

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), "promtool is missing: install the Debian package prometheus"
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_committed_files_are_what_the_generator_writes() -> None:
    assert rules.main(["--check"]) == 0, "run `python -m reference_app.ops.rules` and commit"


def test_promtool_check_rules_is_clean_on_the_rules_file_and_the_prometheus_rule(
    tmp_path: Path,
) -> None:
    checked = promtool("check", "rules", str(rules.RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    resource = yaml.safe_load(rules.PROMETHEUS_RULE.read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["namespace"] == "todo"
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": resource["spec"]["groups"]}))
    checked = promtool("check", "rules", str(extracted))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert resource["spec"]["groups"] == yaml.safe_load(rules.RULES.read_text())["groups"]


def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", rules.RULE_TESTS.name, cwd=rules.RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_fires_in_a_unit_test_and_is_silent_before_its_for() -> None:
    durations = {"m": 60, "h": 3600}

    def seconds(value: str) -> int:
        return sum(
            int(part[:-1]) * durations[part[-1]]
            for part in value.replace("h", "h ").replace("m", "m ").split()
        )

    alerting = rules.alerting_rules()
    cases = rule_tests.cases()
    for name, severity in alerting:
        fired = [
            case
            for case in cases
            if case.alert == name
            and case.fires_at
            and any(labels["severity"] == severity for labels in case.firing)
        ]
        assert fired, f"no unit test makes {name} ({severity}) fire"
        for_ = seconds(alerting[name, severity]["for"])
        quiet_before = [
            at
            for case in fired
            for at in (
                *case.silent_at,
                *(
                    when
                    for when, firing in case.meanwhile
                    if all(labels["severity"] != severity for labels in firing)
                ),
            )
            if seconds(at) < seconds(case.fires_at or "0m")
        ]
        assert quiet_before, (
            f"no unit test shows {name} ({severity}) silent before it fires (for: {for_}s)"
        )


def test_every_burn_rate_alert_has_a_low_traffic_case() -> None:
    cases = rule_tests.cases()
    for slo in slos.SLOS:
        if slo.min_events == 0:
            continue
        quiet = [c for c in cases if c.alert == slo.alert and "low traffic" in c.proves]
        assert quiet, f"{slo.alert} has no low-traffic case"
        assert all(c.fires_at is None and c.silent_at for c in quiet)


def _run_cases_against(groups: list[dict[str, object]], tmp_path: Path) -> str:
    (tmp_path / "rules.yml").write_text(rules.dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(
        rules.dump(rule_tests.unit_tests(rules.alerting_rules(), "rules.yml"))
    )
    tested = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert tested.returncode != 0, "the unit tests pass against broken rules"
    return tested.stdout + tested.stderr


def test_the_unit_tests_fail_without_the_low_traffic_guard(tmp_path: Path) -> None:
    unguarded = [dataclasses.replace(slo, min_events=0) for slo in slos.SLOS]
    report = _run_cases_against(
        rule_groups(unguarded, alerts.ALERTS, runbook_base=rules.RUNBOOKS), tmp_path
    )
    for slo in slos.SLOS:
        if slo.min_events:
            assert f"name: {slo.alert}: low traffic" in report


def test_the_unit_tests_fail_when_alerts_fire_without_waiting(tmp_path: Path) -> None:
    impatient = [dataclasses.replace(alert, for_="0m") for alert in alerts.ALERTS]
    report = _run_cases_against(
        rule_groups(slos.SLOS, impatient, runbook_base=rules.RUNBOOKS), tmp_path
    )
    for alert in alerts.ALERTS:
        assert f"alertname: {alert.name}," in report, f"{alert.name}: no test notices for: 0m"


def test_every_alert_has_severity_summary_description_and_a_runbook_page() -> None:
    slugs = rules.runbook_slugs()
    for (name, severity), rule in rules.alerting_rules().items():
        assert severity in {"critical", "warning", "info"}
        assert rule["labels"]["category"]
        assert rule["annotations"]["summary"].strip()
        assert len(rule["annotations"]["description"]) > 40
        url = rule["annotations"]["runbook_url"]
        slug = slugs[name]
        assert url == f"{rules.RUNBOOKS}/{slug}/"
        page = DOCS / "operations" / "runbooks" / f"{slug}.md"
        assert page.is_file(), f"{name}: runbook page {page.relative_to(ROOT)} is missing"
        assert page.read_text().startswith(f"# {name}"), page


def test_rules_query_only_catalogued_or_documented_metrics() -> None:
    groups = rules.groups()
    recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    for group in groups:
        for rule in group["rules"]:
            for selector in selectors(rule["expr"]):
                assert (
                    spec_of(selector.name) is not None
                    or selector.name in recorded
                    or thirdparty.base_name(selector.name) in thirdparty.THIRD_PARTY
                ), f"{rule.get('alert') or rule.get('record')}: unknown metric {selector.name}"


@pytest.mark.parametrize("severity", ["critical", "warning"])
def test_burn_rate_alerts_route_by_category_slo(severity: str) -> None:
    for slo in slos.SLOS:
        rule = rules.alerting_rules()[slo.alert, severity]
        assert rule["labels"]["category"] == "slo"
        assert rule["labels"]["slo"] == slo.name


def test_every_runbook_shows_its_rules_as_generated() -> None:
    slugs = rules.runbook_slugs()
    for (name, severity), rule in rules.alerting_rules().items():
        page = DOCS / "operations" / "runbooks" / f"{slugs[name]}.md"
        assert rule["expr"].strip() in page.read_text(), (
            f"{page.relative_to(ROOT)}: the {severity} rule of {name} differs from rules.yml"
        )


def test_the_local_prometheus_configuration_is_valid_and_loads_the_rules() -> None:
    checked = promtool("check", "config", str(rules.PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    config = yaml.safe_load(rules.PROMETHEUS_CONFIG.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {
        *slos.SERVICES,
        rules.SIDECAR_JOB,
        rules.KAFKA_EXPORTER_JOB,
    }
    # The local Alertmanager of `./dev demo`.
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]
