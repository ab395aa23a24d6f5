"""The Alertmanager configuration, proven with amtool and a real Alertmanager delivering to sinks.

Each end-to-end test starts `prometheus-alertmanager` (loopback, clustering off) on the committed
configuration, adapted only as `alertmanager_harness.REWRITTEN_FIELDS` lists.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import eventually
from tests.reference_app.ops.alertmanager_harness import (
    CONFIG,
    PAGERDUTY_ROUTING_KEY,
    REWRITTEN_FIELDS,
    SECRETS_DIR,
    TEST_GROUP_INTERVAL,
    TEST_GROUP_WAIT,
    Rig,
    adapted_config,
    alert,
    running_rig,
)
from todo_observability.cli import main

PAGERDUTY = "/pagerduty/v2/enqueue"
SLACK_WARNINGS = "/slack/warnings"
SLACK_SLO = "/slack/slo"
SLACK_KAFKA = "/slack/kafka"


def committed() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return config


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_rig(tmp_path) as started:
        yield started


# --- the configuration, offline -----------------------------------------------------------------


def test_amtool_check_config_is_clean() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert " - 3 inhibit rules" in result.stdout
    assert " - 7 receivers" in result.stdout


# One row per route of the tree (and the fallback): labels -> the receiver amtool resolves.
ROUTES = [
    pytest.param(
        {"category": "slo", "slo": "availability", "severity": "critical"},
        "slo-slack-and-pagerduty",
        id="slo",
    ),
    pytest.param(
        {"category": "kafka", "severity": "warning"}, "slack-todo-kafka-alerts", id="kafka"
    ),
    pytest.param(
        {"category": "kafka", "severity": "critical"},
        "kafka-slack-and-pagerduty",
        id="kafka-critical",
    ),
    pytest.param(
        {"category": "database", "severity": "warning"},
        "database-email-and-pagerduty",
        id="database",
    ),
    pytest.param(
        {"category": "service", "severity": "critical"}, "pagerduty-oncall", id="critical"
    ),
    pytest.param(
        {"category": "health", "severity": "warning"}, "slack-todo-alerts-warnings", id="warning"
    ),
    pytest.param({"category": "dapr", "severity": "info"}, "email-ops-team", id="info"),
    pytest.param({"category": "tracing"}, "slack-todo-alerts-warnings", id="no-severity-fallback"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES)
def test_amtool_routes_test_resolves_each_route(labels: dict[str, str], receiver: str) -> None:
    pairs = [f"{name}={value}" for name, value in {"alertname": "Any", **labels}.items()]
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *pairs,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_routes_test_fails_on_a_wrong_receiver() -> None:
    # The check above can fail: a critical service alert does not go to Slack.
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        "--verify.receivers=slack-todo-alerts-warnings",
        "severity=critical",
        "category=service",
    )
    assert result.returncode == 1
    assert "Expected receivers did not match" in result.stdout + result.stderr


def routes_of(route: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from routes_of(child)


def test_the_route_table_covers_every_route_and_receiver() -> None:
    config = committed()
    routed = {route["receiver"] for route in routes_of(config["route"])}
    declared = {receiver["name"] for receiver in config["receivers"]}
    tested = {param.values[1] for param in ROUTES}
    assert routed == declared == tested
    # One row per route; the root route's row is the fallback.
    assert len(ROUTES) == len(list(routes_of(config["route"])))


def test_no_route_continues() -> None:
    # The special routes own their alerts: see the header of alertmanager.yml for why.
    assert not [r for r in routes_of(committed()["route"]) if r.get("continue")]


@pytest.mark.parametrize(
    ("matcher", "group_wait", "repeat_interval"),
    [
        ('severity="critical"', "10s", "30m"),
        ('severity="warning"', "1m", "2h"),
        ('severity="info"', "5m", "12h"),
        ('category="slo"', "10s", "30m"),
        ('category="database"', "10s", "30m"),
        ('category="kafka"', "1m", "2h"),
    ],
)
def test_route_timings_follow_the_issue(
    matcher: str, group_wait: str, repeat_interval: str
) -> None:
    top = {route["matchers"][0]: route for route in committed()["route"]["routes"]}
    assert top[matcher]["group_wait"] == group_wait
    assert top[matcher]["repeat_interval"] == repeat_interval


def test_critical_kafka_alerts_page_with_critical_timings() -> None:
    kafka = next(r for r in committed()["route"]["routes"] if r["matchers"] == ['category="kafka"'])
    (critical,) = kafka["routes"]
    assert (critical["matchers"], critical["group_wait"], critical["repeat_interval"]) == (
        ['severity="critical"'],
        "10s",
        "30m",
    )


SECRET_FIELDS = {"api_url", "routing_key", "service_key", "auth_password", "smtp_auth_password"}
SECRET_FILE_FIELDS = {"api_url_file", "routing_key_file", "smtp_auth_password_file"}


def fields(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from fields(value)
    elif isinstance(node, list):
        for item in node:
            yield from fields(item)


def test_secrets_come_from_mounted_files_only() -> None:
    found = list(fields(committed()))
    assert not [key for key, _ in found if key in SECRET_FIELDS]
    files = {value for key, value in found if key in SECRET_FILE_FIELDS}
    assert files == {
        SECRETS_DIR + "slack-warnings-webhook-url",
        SECRETS_DIR + "slack-slo-webhook-url",
        SECRETS_DIR + "slack-kafka-webhook-url",
        SECRETS_DIR + "pagerduty-routing-key",
        SECRETS_DIR + "smtp-password",
    }
    # Every Slack and PagerDuty integration names its secret file.
    for receiver in committed()["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert slack["api_url_file"].startswith(SECRETS_DIR)
        for pagerduty in receiver.get("pagerduty_configs", []):
            assert pagerduty["routing_key_file"] == SECRETS_DIR + "pagerduty-routing-key"
    assert "hooks.slack.com" not in CONFIG.read_text(encoding="utf-8")


def flatten(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flatten(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from flatten(item, f"{path}[{index}]")
    else:
        yield path, node


def test_the_end_to_end_rig_changes_only_the_listed_fields(tmp_path: Path) -> None:
    before = dict(flatten(committed()))
    after = dict(
        flatten(
            adapted_config(committed(), secrets_dir=tmp_path, http_sink="http://sink", smtp_port=25)
        )
    )
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    timing = {p for p in changed if p.endswith((".group_wait", ".group_interval"))}
    secrets = {p for p in changed if str(before.get(p, "")).startswith(SECRETS_DIR)}
    assert changed - timing - secrets == {
        "global.pagerduty_url",
        "global.smtp_smarthost",
        "global.smtp_require_tls",
    }
    assert {after[p] for p in timing} == {TEST_GROUP_WAIT, TEST_GROUP_INTERVAL}
    assert {after[p] for p in secrets} == {
        str(tmp_path / before[p].rsplit("/", 1)[1]) for p in secrets
    }
    assert len(REWRITTEN_FIELDS) == 4  # secrets, PagerDuty URL, SMTP, timings: as asserted above


# --- routes, end to end -------------------------------------------------------------------------


@dataclass(frozen=True)
class Slack:
    path: str
    channel: str


@dataclass(frozen=True)
class PagerDuty:
    severity: str


@dataclass(frozen=True)
class Email:
    to: str


Delivery = Slack | PagerDuty | Email

DELIVERIES = [
    pytest.param(
        {"category": "service", "severity": "critical", "job": "backend"},
        ["pagerduty-oncall"],
        [PagerDuty("critical")],
        id="critical-pages",
    ),
    pytest.param(
        {"category": "service", "severity": "warning", "job": "frontend"},
        ["slack-todo-alerts-warnings"],
        [Slack(SLACK_WARNINGS, "#todo-alerts-warnings")],
        id="warning-to-slack",
    ),
    pytest.param(
        {"category": "dapr", "severity": "info", "job": "backend"},
        ["email-ops-team"],
        [Email("todo-ops@example.com")],
        id="info-to-ops-email",
    ),
    pytest.param(
        {"category": "slo", "slo": "availability", "severity": "critical", "job": "backend"},
        ["slo-slack-and-pagerduty"],
        [Slack(SLACK_SLO, "#todo-slo-alerts"), PagerDuty("critical")],
        id="slo-breach-to-slack-and-pagerduty",
    ),
    pytest.param(
        {"category": "slo", "slo": "latency", "severity": "warning", "job": "frontend"},
        ["slo-slack-and-pagerduty"],
        [Slack(SLACK_SLO, "#todo-slo-alerts"), PagerDuty("warning")],
        id="slow-slo-burn-pages-with-warning-severity",
    ),
    pytest.param(
        {"category": "kafka", "severity": "warning"},
        ["slack-todo-kafka-alerts"],
        [Slack(SLACK_KAFKA, "#todo-kafka-alerts")],
        id="kafka-to-slack",
    ),
    pytest.param(
        {"category": "kafka", "severity": "critical"},
        ["kafka-slack-and-pagerduty"],
        [Slack(SLACK_KAFKA, "#todo-kafka-alerts"), PagerDuty("critical")],
        id="critical-kafka-to-slack-and-pagerduty",
    ),
    pytest.param(
        {"category": "database", "severity": "critical", "job": "backend"},
        ["database-email-and-pagerduty"],
        [Email("todo-dba@example.com"), PagerDuty("critical")],
        id="database-to-dba-email-and-pagerduty",
    ),
    pytest.param(
        {"category": "tracing"},
        ["slack-todo-alerts-warnings"],
        [Slack(SLACK_WARNINGS, "#todo-alerts-warnings")],
        id="no-severity-to-slack-fallback",
    ),
]


@pytest.mark.parametrize(("labels", "receivers", "deliveries"), DELIVERIES)
def test_each_route_delivers_to_its_integrations(
    rig: Rig, labels: dict[str, str], receivers: list[str], deliveries: list[Delivery]
) -> None:
    alertname = "RouteProbe"
    rig.alertmanager.post([alert({"alertname": alertname, **labels})])
    (posted,) = rig.alertmanager.alerts(alertname=alertname)
    assert [r["name"] for r in posted["receivers"]] == receivers

    for delivery in deliveries:
        if isinstance(delivery, Slack):
            message = rig.http.wait_for(
                delivery.path, lambda r: f"`alertname={alertname}`" in r.text, "a Slack message"
            )
            assert message.body["channel"] == delivery.channel
            assert message.body["attachments"][0]["title"].startswith("[FIRING:1] RouteProbe")
        elif isinstance(delivery, PagerDuty):
            event = rig.http.wait_for(
                PAGERDUTY, lambda r: f"alertname = {alertname}" in r.text, "a PagerDuty event"
            )
            assert event.body["routing_key"] == PAGERDUTY_ROUTING_KEY
            assert event.body["event_action"] == "trigger"
            assert event.body["payload"]["severity"] == delivery.severity
            assert event.body["payload"]["group"] == labels["category"]
        else:
            mail = rig.smtp.wait_for(delivery.to, "the e-mail")
            assert alertname in str(mail["Subject"])
            assert mail["From"] == "todo-alertmanager@example.com"
    # Nothing reached an integration the receivers do not have.
    slack_paths = {d.path for d in deliveries if isinstance(d, Slack)}
    for request in rig.http.received:
        if request.path.startswith("/slack"):
            assert request.path in slack_paths
        else:
            assert any(isinstance(d, PagerDuty) for d in deliveries)
    assert {str(m["To"]) for m in rig.smtp.received} <= {
        d.to for d in deliveries if isinstance(d, Email)
    }


def test_a_resolved_page_is_sent_as_resolved(rig: Rig) -> None:
    labels = {"alertname": "ResolveProbe", "category": "service", "severity": "critical"}
    rig.alertmanager.post([alert(labels)])
    trigger = rig.http.wait_for(PAGERDUTY, lambda r: "ResolveProbe" in r.text, "the trigger")
    assert trigger.body["event_action"] == "trigger"
    rig.alertmanager.post([alert(labels, ends_at=datetime.datetime.now(datetime.timezone.utc))])
    resolve = rig.http.wait_for(
        PAGERDUTY, lambda r: r.body["event_action"] == "resolve", "the resolve event"
    )
    assert resolve.body["dedup_key"] == trigger.body["dedup_key"]


# --- inhibitions, end to end --------------------------------------------------------------------


@dataclass(frozen=True)
class Inhibition:
    source: dict[str, str]
    target: dict[str, str]
    destination: str  # the Slack webhook path the target and its witness are delivered to
    unrelated: dict[str, str] | None  # a target-like alert the `equal` labels keep active

    @property
    def witness(self) -> dict[str, str]:
        """An alert in the target's aggregation group that the rule does not target.

        Its notification is the same flush as the target's would be, so the absence of the
        target from that very notification proves the target was held back, without waiting.
        """
        labels = {k: v for k, v in self.target.items() if k != "signal"}
        return {**labels, "role": "witness"}


INHIBITIONS = [
    pytest.param(
        Inhibition(
            source={
                "alertname": "ServiceDown",
                "severity": "critical",
                "category": "service",
                "job": "backend",
            },
            target={
                "alertname": "HighLatency",
                "severity": "warning",
                "category": "service",
                "signal": "latency",
                "job": "backend",
                "role": "target",
            },
            destination=SLACK_WARNINGS,
            unrelated={
                "alertname": "HighLatency",
                "severity": "warning",
                "category": "service",
                "signal": "latency",
                "job": "frontend",
                "role": "other-job",
            },
        ),
        id="service-down-hides-its-latency-alerts",
    ),
    pytest.param(
        Inhibition(
            source={"alertname": "KafkaDown", "severity": "critical", "category": "kafka"},
            target={
                "alertname": "ConsumerLagHigh",
                "severity": "warning",
                "category": "kafka",
                "signal": "lag",
                "job": "notification-service",
                "role": "target",
            },
            destination=SLACK_KAFKA,
            unrelated=None,
        ),
        id="kafka-down-hides-consumer-lag",
    ),
    pytest.param(
        Inhibition(
            source={
                "alertname": "PodRestarting",
                "severity": "warning",
                "category": "kubernetes",
                "namespace": "todo",
                "pod": "backend-7d9f-abcde",
            },
            target={
                "alertname": "HealthCheckFailing",
                "severity": "warning",
                "category": "health",
                "signal": "health",
                "job": "backend",
                "namespace": "todo",
                "pod": "backend-7d9f-abcde",
                "role": "target",
            },
            destination=SLACK_WARNINGS,
            unrelated={
                "alertname": "HealthCheckFailing",
                "severity": "warning",
                "category": "health",
                "signal": "health",
                "job": "backend",
                "namespace": "todo",
                "pod": "backend-7d9f-fghij",
                "role": "other-pod",
            },
        ),
        id="restarting-pod-hides-its-health-alerts",
    ),
]


def state(rig: Rig, labels: Mapping[str, str]) -> dict[str, Any]:
    (found,) = rig.alertmanager.alerts(**labels)
    status: dict[str, Any] = found["status"]
    return {**status, "fingerprint": found["fingerprint"]}


@pytest.mark.parametrize("case", INHIBITIONS)
def test_inhibition_holds_the_target_back_while_the_source_fires(
    rig: Rig, case: Inhibition
) -> None:
    rig.alertmanager.post([alert(case.source)])
    # The source's own notification: it is in the store and the inhibitor has seen it.
    source_name = case.source["alertname"]
    eventually(
        lambda: next((r for r in rig.http.received if source_name in r.text), None),
        15,
        f"the {source_name} notification",
    )
    source = state(rig, case.source)

    others = [case.unrelated] if case.unrelated else []
    rig.alertmanager.post([alert(labels) for labels in [case.target, case.witness, *others]])

    target = state(rig, case.target)
    assert target["state"] == "suppressed"
    assert target["inhibitedBy"] == [source["fingerprint"]]
    assert state(rig, case.witness)["state"] == "active"
    if case.unrelated:
        assert state(rig, case.unrelated) | {"fingerprint": ""} == {
            "state": "active",
            "inhibitedBy": [],
            "silencedBy": [],
            "fingerprint": "",
        }

    flush = rig.http.wait_for(
        case.destination, lambda r: "`role=witness`" in r.text, "the witness's notification"
    )
    # Exactly the group's alerts that are not inhibited (the other pod shares the target's group).
    grouped_by = committed()["route"]["group_by"]
    expected = {"witness"} | {
        o["role"] for o in others if all(o.get(k) == case.target.get(k) for k in grouped_by)
    }
    assert set(re.findall(r"`role=([\w-]+)`", flush.text)) == expected
    assert flush.body["attachments"][0]["title"].startswith(f"[FIRING:{len(expected)}]")

    # The source resolves: the target is no longer held back and its group notifies it.
    rig.alertmanager.post(
        [alert(case.source, ends_at=datetime.datetime.now(datetime.timezone.utc))]
    )
    released = rig.http.wait_for(
        case.destination, lambda r: "`role=target`" in r.text, "the released target"
    )
    assert "`role=witness`" in released.text
    assert state(rig, case.target)["state"] == "active"


# --- todo-obs test-alerts against the real Alertmanager -----------------------------------------


def run_test_alerts(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(["test-alerts", *argv], out), out.getvalue()


def test_test_alerts_reports_each_route_and_resolves(rig: Rig) -> None:
    status, output = run_test_alerts("--alertmanager", rig.alertmanager.url, "--json")
    assert status == 0, output
    report = json.loads(output)
    assert report["version"] == "0.25.0"
    assert report["resolved"] is True
    assert {a["case"]: a["receivers"] for a in report["alerts"]} == {
        "critical": ["pagerduty-oncall"],
        "warning": ["slack-todo-alerts-warnings"],
        "info": ["email-ops-team"],
        "slo-breach": ["slo-slack-and-pagerduty"],
    }
    assert {a["state"] for a in report["alerts"]} == {"active"}
    # Resolved: the Alertmanager no longer lists them.
    assert rig.alertmanager.alerts(test_run=report["test_run"]) == []


def test_test_alerts_keep_leaves_them_firing(rig: Rig) -> None:
    status, output = run_test_alerts("--alertmanager", rig.alertmanager.url + "/", "--keep")
    assert status == 0, output
    lines = output.splitlines()
    assert lines[0].startswith(f"Alertmanager 0.25.0 at {rig.alertmanager.url}, test_run=")
    assert lines[1:5] == [
        "  critical    -> pagerduty-oncall",
        "  warning     -> slack-todo-alerts-warnings",
        "  info        -> email-ops-team",
        "  slo-breach  -> slo-slack-and-pagerduty",
    ]
    assert "kept 4 test alerts firing" in lines[5]
    test_run = lines[0].rsplit("=", 1)[1]
    firing = rig.alertmanager.alerts(test_run=test_run)
    assert sorted(a["labels"]["test_case"] for a in firing) == [
        "critical",
        "info",
        "slo-breach",
        "warning",
    ]
    # And they really notify: the critical one pages.
    event = rig.http.wait_for(
        PAGERDUTY, lambda r: f"test_run = {test_run}" in r.text, "the test page"
    )
    assert event.body["payload"]["severity"] == "critical"


def test_test_alerts_reports_a_silenced_alert(rig: Rig) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    silence = {
        "matchers": [
            {"name": "test_case", "value": "info", "isRegex": False, "isEqual": True},
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + datetime.timedelta(hours=1)).isoformat(),
        "createdBy": "tests",
        "comment": "silence the info test alert",
    }
    response = rig.alertmanager.http.post("/api/v2/silences", json=silence)
    assert response.status_code == 200, response.text
    silence_id = response.json()["silenceID"]
    status, output = run_test_alerts("--alertmanager", rig.alertmanager.url)
    assert status == 0, output
    assert f"  info        -> email-ops-team  (suppressed: silence {silence_id})" in output
