"""The `promtool test rules` unit tests of the reference system's rules, as cases.

Each `Case` feeds input series to the rules and says when an alert must stay silent, when it
fires and with which labels; `unit_tests()` turns them into the document
`python -m reference_app.ops.rules` writes to `deploy/monitoring/prometheus/rules.test.yml`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reference_app.common import events
from reference_app.ops.alerts import NAMESPACE
from reference_app.ops.slos import SLOS
from todo_observability.ops.slo import SLO, Events, Latency, Uptime

__all__ = ["Case", "cases", "unit_tests"]


@dataclass(frozen=True)
class Case:
    """One promtool test: input series, when the alert must be silent, when it fires and how.

    Attributes:
        alert: The alert name.
        proves: What the case shows, as the test's comment.
        series: (series selector, promtool values notation) at a 1 m interval.
        silent_at: Evaluation times at which the alert must not be firing.
        fires_at: The evaluation time at which it must fire (None: never in this case).
        firing: The label sets it fires with (besides alertname), one per alert.
    """

    alert: str
    proves: str
    series: tuple[tuple[str, str], ...]
    silent_at: tuple[str, ...] = ()
    fires_at: str | None = None
    firing: tuple[Mapping[str, str], ...] = ()
    recorded: tuple[str, str, Mapping[str, str], float] | None = None
    """A recording rule's value at a time: (record, eval time, labels, value); the job `idle`
    of the same input has no traffic and must have no sample."""
    meanwhile: tuple[tuple[str, tuple[Mapping[str, str], ...]], ...] = ()
    """Other evaluation times and exactly what fires then (e.g. the page, not yet the ticket)."""


def _counter(per_minute: float, minutes: int) -> str:
    return f"0+{per_minute:g}x{minutes}"


SampleSeries = Callable[[str, float, float, int], list[tuple[str, str]]]
"""(job, good events per minute, bad events per minute, minutes) -> input series."""


def _events_series(good: str, bad: str) -> SampleSeries:
    def series(job: str, good_rate: float, bad_rate: float, minutes: int) -> list[tuple[str, str]]:
        return [
            (good.format(job=job), _counter(good_rate, minutes)),
            (bad.format(job=job), _counter(bad_rate, minutes)),
        ]

    return series


def _latency_series(histogram: str, threshold: float) -> SampleSeries:
    def series(job: str, good_rate: float, bad_rate: float, minutes: int) -> list[tuple[str, str]]:
        labels = f'job="{job}", method="GET", route="/api/tasks"'
        return [
            (f"{histogram}_count{{{labels}}}", _counter(good_rate + bad_rate, minutes)),
            (f'{histogram}_bucket{{{labels}, le="{threshold!r}"}}', _counter(good_rate, minutes)),
        ]

    return series


def _sample_series(slo: SLO) -> SampleSeries:
    indicator = slo.indicator
    if isinstance(indicator, Latency):
        return _latency_series(indicator.histogram, indicator.threshold)
    if isinstance(indicator, Events):
        name = indicator.total.split("{", 1)[0]
        good, bad = _SAMPLE_LABELS[slo.name]
        return _events_series(f"{name}{{{{{good}}}}}", f"{name}{{{{{bad}}}}}")
    raise TypeError(f"no sample series for {type(indicator).__name__}")


_SAMPLE_LABELS = {
    "http-errors": (
        'job="{job}", method="GET", route="/api/tasks", status_code="200"',
        'job="{job}", method="GET", route="/api/tasks", status_code="500"',
    ),
    "messaging-processing": (
        'job="{job}", topic="task-events", outcome="success"',
        'job="{job}", topic="task-events", outcome="drop"',
    ),
    "reminder-delivery": ('job="{job}", outcome="sent"', 'job="{job}", outcome="failed"'),
}
"""Label sets of a good and a bad event of each Events SLO, as services expose them."""


def _slo_job(slo: SLO) -> str:
    return events.NOTIFICATIONS if slo.name == "reminder-delivery" else events.BACKEND


def _slo_cases(slo: SLO) -> list[Case]:
    job = _slo_job(slo)
    labels = {"job": job, "category": "slo", "slo": slo.name, **slo.labels}
    page = {**labels, "severity": "critical", "burn": "page"}
    ticket = {**labels, "severity": "warning", "burn": "ticket"}
    budget = slo.error_budget
    if isinstance(slo.indicator, Uptime):
        instance = f'up{{job="{job}", instance="{job}:8001"}}'
        return [
            Case(
                slo.alert,
                "a target down for good pages after `for: 2m`, not before",
                ((instance, "0x30"),),
                silent_at=("1m",),
                fires_at="5m",
                firing=(page,),
            ),
            Case(
                slo.alert,
                "one failed scrape in 200 (0.5 %) keeps a ticket open once the page it caused "
                "is over; the ticket waits its `for: 15m`",
                ((instance, "1x100 0 1x300"),),
                meanwhile=(("110m", (page,)),),
                fires_at="200m",
                firing=(ticket,),
            ),
            Case(
                slo.alert,
                "a target that answers every scrape burns nothing",
                ((instance, "1x120"),),
                silent_at=("10m", "2h"),
            ),
        ]
    series = _sample_series(slo)
    rate = 100.0
    fast = min(1.0, 20 * budget)  # above 14.4x: pages
    slow = 2 * budget  # above 1x, below 6x: a ticket, no page
    # Low traffic: a few events an hour, all of them bad, stay under the guard.
    trickle = slo.min_events / 60 / 5
    cases = [
        Case(
            slo.alert,
            f"{fast:.0%} bad events at {rate:g}/min page after `for: 2m`, not before",
            tuple(series(job, rate * (1 - fast), rate * fast, 30)),
            silent_at=("2m",),
            fires_at="10m",
            firing=(page,),
        ),
        Case(
            slo.alert,
            f"{slow:.0%} bad events (2x the budget) open a ticket after `for: 15m`, no page",
            tuple(series(job, rate * (1 - slow), rate * slow, 120)),
            silent_at=("10m",),
            fires_at="60m",
            firing=(ticket,),
        ),
        Case(
            slo.alert,
            f"low traffic ({trickle * 60:g} events an hour, all bad) stays silent",
            tuple(series(job, 0, trickle, 60)),
            silent_at=("30m", "60m"),
        ),
    ]
    ratio_labels = {"slo": slo.name, "job": job}
    cases.append(
        Case(
            slo.alert,
            "the recorded error ratio is exact, and missing (not NaN) without traffic",
            (
                *series(job, rate * 0.9, rate * 0.1, 30),
                *series("idle", 0, 0, 30),
            ),
            recorded=("slo:sli_error:ratio_rate5m", "30m", ratio_labels, 0.1),
        )
    )
    return cases


def _absent_cases() -> list[Case]:
    """Every SLO's metric present for 30 minutes, then gone: silent for its window, then fires."""
    present: list[tuple[str, str]] = []
    firing = []
    for slo in SLOS:
        job = _slo_job(slo)
        if isinstance(slo.indicator, Uptime):
            samples = [(f'up{{job="{job}", instance="{job}:8001"}}', "")]
        else:
            samples = _sample_series(slo)(job, 1, 1, 30)
        present.extend((series, "1+1x30 _x90") for series, _ in samples)
        for metric in slo.indicator.metrics:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', metric.partition("{")[2]))
            firing.append({"slo": slo.name, "severity": "warning", "category": "slo", **labels})
    return [
        Case(
            "SLOMetricsAbsent",
            "metrics that vanish alert once their absence window (1h) and `for: 5m` pass",
            tuple(present),
            silent_at=("30m", "80m", "92m"),
            fires_at="100m",
            firing=tuple(firing),
        )
    ]


_UP = 'up{{job="{job}", instance="{job}:8000"}}'
_HEALTH = (
    'health_check_status{{job="backend", instance="10.0.0.7:8001", namespace="todo", '
    'pod="backend-7d9f", check="{check}"}}'
)
_HEALTH_LABELS = {
    "job": "backend",
    "instance": "10.0.0.7:8001",
    "namespace": NAMESPACE,
    "pod": "backend-7d9f",
    "signal": "health",
}


def _operational_cases() -> list[Case]:
    others = [(_UP.format(job=job), "1x10") for job in (events.FRONTEND, events.RECURRING)]
    return [
        Case(
            "ServiceDown",
            "a target failing its scrapes fires after `for: 1m`",
            (
                *others,
                (_UP.format(job=events.NOTIFICATIONS), "1x10"),
                (_UP.format(job=events.BACKEND), "1 1 0x8"),
            ),
            silent_at=("1m", "2m"),
            fires_at="4m",
            firing=(
                {
                    "job": events.BACKEND,
                    "instance": f"{events.BACKEND}:8000",
                    "severity": "critical",
                    "category": "service",
                },
            ),
        ),
        Case(
            "ServiceDown",
            "a service with no target at all fires too",
            (*others, (_UP.format(job=events.BACKEND), "1x10")),
            silent_at=("0m",),
            fires_at="2m",
            firing=({"job": events.NOTIFICATIONS, "severity": "critical", "category": "service"},),
        ),
        Case(
            "HealthCheckFailing",
            "a check down for `for: 2m` fires; a degraded one (0.5) does not",
            (
                (_HEALTH.format(check="dapr-sidecar"), "1 1 0x10"),
                (_HEALTH.format(check="event-loop"), "0.5x12"),
            ),
            silent_at=("3m",),
            fires_at="6m",
            firing=(
                {
                    **_HEALTH_LABELS,
                    "check": "dapr-sidecar",
                    "severity": "warning",
                    "category": "health",
                },
            ),
        ),
        Case(
            "DatabaseUnavailable",
            "the database check down for `for: 1m` pages the database route",
            ((_HEALTH.format(check="database"), "1 1 0x10"),),
            silent_at=("2m",),
            fires_at="5m",
            firing=(
                {
                    **_HEALTH_LABELS,
                    "check": "database",
                    "severity": "critical",
                    "category": "database",
                },
            ),
        ),
        Case(
            "PodRestarting",
            "more than 2 restarts in 15 minutes fire after `for: 5m`; 2 do not",
            (
                (
                    'kube_pod_container_status_restarts_total{job="kube-state-metrics", '
                    'namespace="todo", pod="backend-7d9f", container="backend"}',
                    "0 1 2 3 4x20",
                ),
                (
                    'kube_pod_container_status_restarts_total{job="kube-state-metrics", '
                    'namespace="todo", pod="frontend-5c4b", container="frontend"}',
                    "0 1 2x20",
                ),
            ),
            silent_at=("2m", "5m"),
            fires_at="10m",
            firing=(
                {
                    "job": "kube-state-metrics",
                    "namespace": NAMESPACE,
                    "pod": "backend-7d9f",
                    "container": "backend",
                    "severity": "warning",
                    "category": "kubernetes",
                },
            ),
        ),
        Case(
            "KafkaDown",
            "no broker for `for: 2m` fires",
            (('kafka_brokers{job="kafka-exporter", instance="kafka-exporter:9308"}', "1 1 0x10"),),
            silent_at=("3m",),
            fires_at="6m",
            firing=(
                {
                    "job": "kafka-exporter",
                    "instance": "kafka-exporter:9308",
                    "severity": "critical",
                    "category": "kafka",
                },
            ),
        ),
        Case(
            "KafkaDown",
            "an exporter that is not scraped at all counts as Kafka down",
            (('up{job="backend", instance="backend:8001"}', "1x10"),),
            silent_at=("1m",),
            fires_at="4m",
            firing=({"severity": "critical", "category": "kafka"},),
        ),
        Case(
            "KafkaConsumerLagHigh",
            "lag above 1000 for `for: 10m` fires; lag of 500 does not",
            (
                (
                    'kafka_consumergroup_lag_sum{consumergroup="recurring-task-service", '
                    'topic="task-events"}',
                    "0+200x30",
                ),
                (
                    'kafka_consumergroup_lag_sum{consumergroup="notification-service", '
                    'topic="reminders"}',
                    "500x30",
                ),
            ),
            silent_at=("10m",),
            fires_at="20m",
            firing=(
                {
                    "consumergroup": events.RECURRING,
                    "topic": events.TASK_EVENTS,
                    "signal": "lag",
                    "severity": "warning",
                    "category": "kafka",
                },
            ),
        ),
        Case(
            "DaprPubsubDrops",
            "deliveries answered DROP for `for: 5m` fire; successes do not",
            (
                (
                    'dapr_component_pubsub_ingress_count{app_id="recurring-task-service", '
                    'namespace="todo", component="pubsub", topic="task-events", '
                    'process_status="drop", status="drop"}',
                    "0+1x20",
                ),
                (
                    'dapr_component_pubsub_ingress_count{app_id="notification-service", '
                    'namespace="todo", component="pubsub", topic="reminders", '
                    'process_status="success", status="success"}',
                    "0+50x20",
                ),
            ),
            silent_at=("4m",),
            fires_at="10m",
            firing=(
                {
                    "app_id": events.RECURRING,
                    "topic": events.TASK_EVENTS,
                    "severity": "warning",
                    "category": "dapr",
                },
            ),
        ),
        Case(
            "DeadLettersGrowing",
            "a message parked fires after `for: 5m`",
            (
                (
                    'messaging_dead_letters_total{job="recurring-task-service", '
                    'instance="10.0.0.8:8002", origin_topic="task-events", reason="malformed"}',
                    "0 0 1x30",
                ),
            ),
            silent_at=("1m", "5m"),
            fires_at="10m",
            firing=(
                {
                    "job": events.RECURRING,
                    "origin_topic": events.TASK_EVENTS,
                    "reason": "malformed",
                    "severity": "warning",
                    "category": "messaging",
                },
            ),
        ),
        Case(
            "ReminderFailures",
            "3 failures in 15 minutes fire after `for: 5m`; a single one does not",
            (
                (
                    'reminder_failures_total{job="notification-service", '
                    'reason="smtp_unavailable"}',
                    "0+1x30",
                ),
                (
                    'reminder_failures_total{job="notification-service", '
                    'reason="backend_rejected"}',
                    "0 1x30",
                ),
            ),
            silent_at=("5m",),
            fires_at="15m",
            firing=(
                {
                    "job": events.NOTIFICATIONS,
                    "reason": "smtp_unavailable",
                    "severity": "warning",
                    "category": "messaging",
                },
            ),
        ),
        Case(
            "NextOccurrenceFailures",
            "a next occurrence not created fires after `for: 5m`",
            (
                (
                    'recurring_next_occurrence_failures_total{job="recurring-task-service", '
                    'reason="invalid_rule"}',
                    "0 0 1x30",
                ),
            ),
            silent_at=("1m", "5m"),
            fires_at="10m",
            firing=(
                {
                    "job": events.RECURRING,
                    "reason": "invalid_rule",
                    "severity": "warning",
                    "category": "messaging",
                },
            ),
        ),
        Case(
            "OutboxBacklog",
            "more than 100 pending events for `for: 10m` fire",
            (('outbox_pending_events{job="backend", instance="10.0.0.7:8001"}', "0+20x40"),),
            silent_at=("5m", "12m"),
            fires_at="20m",
            firing=({"job": events.BACKEND, "severity": "warning", "category": "messaging"},),
        ),
        Case(
            "SpansDropped",
            "spans dropped for `for: 10m` fire",
            (
                (
                    'todo_observability_spans_dropped_total{job="backend", '
                    'instance="10.0.0.7:8001", reason="queue_full"}',
                    "0+5x30",
                ),
            ),
            silent_at=("5m",),
            fires_at="20m",
            firing=(
                {
                    "job": events.BACKEND,
                    "reason": "queue_full",
                    "severity": "info",
                    "category": "tracing",
                },
            ),
        ),
    ]


def cases() -> list[Case]:
    """Every unit test case: the SLOs', the absent-metric alert's and the operational alerts'."""
    found = [case for slo in SLOS for case in _slo_cases(slo)]
    return found + _absent_cases() + _operational_cases()


def _render(template: str, labels: Mapping[str, str]) -> str:
    """Render `{{ $labels.x }}` as Prometheus does; anything else must not be templated."""
    rendered = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    if "{{" in rendered:
        raise ValueError(f"cannot render {template!r} offline: only {{{{ $labels.x }}}} is known")
    return rendered


def _annotations(rule: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    return {key: _render(value, labels) for key, value in rule["annotations"].items()}


def unit_tests(
    alerting: Mapping[tuple[str, str], Mapping[str, Any]], rules_file: str = "rules.yml"
) -> dict[str, Any]:
    """The `promtool test rules` document for every case.

    Args:
        alerting: The alerting rules by alert name and severity (`rules.alerting_rules()`):
            each firing alert's expected annotations are rendered from its rule.
        rules_file: The rules file the document tests, relative to it.
    """
    tests = []
    for case in cases():
        checks: list[dict[str, Any]] = [
            {"eval_time": at, "alertname": case.alert, "exp_alerts": []} for at in case.silent_at
        ]
        expected = [*case.meanwhile, *([(case.fires_at, case.firing)] if case.fires_at else [])]
        checks.extend(
            {
                "eval_time": at,
                "alertname": case.alert,
                "exp_alerts": [
                    {
                        "exp_labels": dict(labels),
                        "exp_annotations": _annotations(
                            alerting[case.alert, labels["severity"]], labels
                        ),
                    }
                    for labels in firing
                ],
            }
            for at, firing in expected
        )
        test: dict[str, Any] = {
            "name": f"{case.alert}: {case.proves}",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series],
            "alert_rule_test": checks,
        }
        if case.recorded:
            record, at, labels, value = case.recorded
            series = _labels(record, labels)
            test["promql_expr_test"] = [
                {
                    "expr": series,
                    "eval_time": at,
                    "exp_samples": [{"labels": series, "value": value}],
                },
                # The idle job has no traffic: its ratio is missing, not NaN.
                {"expr": f'{record}{{job="idle"}}', "eval_time": at, "exp_samples": []},
            ]
        tests.append(test)
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


def _labels(record: str, labels: Mapping[str, str]) -> str:
    inside = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{record}{{{inside}}}"
