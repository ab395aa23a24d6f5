"""The reference system's operational alerts (the SLO burn-rate alerts come from `slos`).

Metric names come from the catalogues (ours) or `thirdparty` (Dapr, Kafka exporter,
kube-state-metrics), so a rule can never query a name nothing emits. Labels follow the routing
contract of the Alertmanager configuration: `severity`, `category`, and `signal` where an
inhibition needs it (a service down silences its latency alerts, Kafka down its lag alerts, a
restarting pod its health-check alerts).
"""

from __future__ import annotations

from reference_app.common import events
from reference_app.common import metrics as app
from reference_app.ops.slos import SERVICES
from todo_observability import metrics as sdk
from todo_observability.ops.slo import Alert

NAMESPACE = "todo"
"""The Kubernetes namespace of the reference system (kube-state-metrics series are scoped to it)."""

_JOBS = f'job=~"{"|".join(SERVICES)}"'
_KAFKA_GROUPS = f'consumergroup=~"{events.RECURRING}|{events.NOTIFICATIONS}"'

SERVICE_DOWN = Alert(
    name="ServiceDown",
    expr=(
        f"up{{{_JOBS}}} == 0\nor\n"
        + "\nor\n".join(f'absent(up{{job="{job}"}})' for job in SERVICES)
    ),
    severity="critical",
    category="service",
    for_="1m",
    summary="{{ $labels.job }} is down",
    description=(
        "Prometheus cannot scrape {{ $labels.job }}, or no target of it exists at all: the "
        "service is down, crash-looping, or gone from service discovery."
    ),
)

HEALTH_CHECK_FAILING = Alert(
    name="HealthCheckFailing",
    expr=f'{sdk.HEALTH_CHECK_STATUS.name}{{{_JOBS}, check!~"database|dlq-database"}} == 0',
    severity="warning",
    category="health",
    for_="2m",
    labels={"signal": "health"},
    summary="{{ $labels.job }}: health check {{ $labels.check }} is down",
    description=(
        "The {{ $labels.check }} check of {{ $labels.job }} (pod {{ $labels.pod }}) has "
        "reported down for 2 minutes. A critical readiness check takes the pod out of its "
        "Service (/health/ready answers 503); a liveness check gets the container restarted."
    ),
)

DATABASE_UNAVAILABLE = Alert(
    name="DatabaseUnavailable",
    expr=f'{sdk.HEALTH_CHECK_STATUS.name}{{{_JOBS}, check=~"database|dlq-database"}} == 0',
    severity="critical",
    category="database",
    for_="1m",
    labels={"signal": "health"},
    summary="{{ $labels.job }} cannot reach its database ({{ $labels.check }})",
    description=(
        "The {{ $labels.check }} health check of {{ $labels.job }} (pod {{ $labels.pod }}) has "
        "failed for a minute: requests that need the database fail or wait."
    ),
)

POD_RESTARTING = Alert(
    name="PodRestarting",
    expr=(
        f'increase(kube_pod_container_status_restarts_total{{namespace="{NAMESPACE}"}}[15m]) > 2'
    ),
    severity="warning",
    category="kubernetes",
    for_="5m",
    summary="{{ $labels.pod }} ({{ $labels.container }}) is restarting",
    description=(
        "Container {{ $labels.container }} of pod {{ $labels.pod }} restarted more than twice "
        "in 15 minutes: a crash loop or a failing liveness probe."
    ),
)

KAFKA_DOWN = Alert(
    name="KafkaDown",
    expr="kafka_brokers < 1\nor\nabsent(kafka_brokers)",
    severity="critical",
    category="kafka",
    for_="2m",
    summary="Kafka has no broker",
    description=(
        "The Kafka exporter sees no broker, or is not scraped: publishing and delivery through "
        "the pubsub component stop, and the outbox grows."
    ),
)

KAFKA_CONSUMER_LAG = Alert(
    name="KafkaConsumerLagHigh",
    expr=f"sum by (consumergroup, topic) (kafka_consumergroup_lag_sum{{{_KAFKA_GROUPS}}}) > 1000",
    severity="warning",
    category="kafka",
    for_="10m",
    labels={"signal": "lag"},
    summary="{{ $labels.consumergroup }} lags on {{ $labels.topic }}",
    description=(
        "Consumer group {{ $labels.consumergroup }} is more than 1000 messages behind on "
        "{{ $labels.topic }} for 10 minutes: handlers are slow, failing into retries, or "
        "the service has too few replicas."
    ),
)

DAPR_PUBSUB_DROPS = Alert(
    name="DaprPubsubDrops",
    expr=(
        "sum by (app_id, topic) (rate(dapr_component_pubsub_ingress_count"
        '{process_status="drop"}[5m])) > 0'
    ),
    severity="warning",
    category="dapr",
    for_="5m",
    summary="{{ $labels.app_id }} drops messages of {{ $labels.topic }}",
    description=(
        "The Dapr sidecar of {{ $labels.app_id }} reports deliveries of {{ $labels.topic }} "
        "answered DROP (or 404): they go to the dead-letter topic when one is set, and are "
        "lost otherwise."
    ),
)

DEAD_LETTERS_GROWING = Alert(
    name="DeadLettersGrowing",
    expr=(
        f"sum by (job, origin_topic, reason) (increase({sdk.DEAD_LETTERS.name}{{{_JOBS}}}[15m]))"
        " > 0"
    ),
    severity="warning",
    category="messaging",
    for_="5m",
    summary="{{ $labels.job }}: messages of {{ $labels.origin_topic }} dead-lettered",
    description=(
        "{{ $labels.job }} parked messages of {{ $labels.origin_topic }} in the last 15 "
        "minutes (reason {{ $labels.reason }}). Nothing is lost: inspect them with "
        "`todo-obs dlq list`, fix the cause, then `todo-obs dlq replay`."
    ),
)

REMINDER_FAILURES = Alert(
    name="ReminderFailures",
    expr=(
        f"sum by (job, reason) (increase({app.REMINDER_FAILURES.name}"
        f'{{job="{events.NOTIFICATIONS}"}}[15m])) >= 3'
    ),
    severity="warning",
    category="messaging",
    for_="5m",
    summary="Reminders fail: {{ $labels.reason }}",
    description=(
        "notification-service recorded 3 or more reminder failures for {{ $labels.reason }} "
        "in 15 minutes: e-mails wait in retries or end in the reminders dead-letter park."
    ),
)

NEXT_OCCURRENCE_FAILURES = Alert(
    name="NextOccurrenceFailures",
    expr=(
        # rule_exhausted is a series ending as its COUNT or UNTIL says: not a failure to page on.
        f"sum by (job, reason) (increase({app.NEXT_OCCURRENCE_FAILURES.name}"
        f'{{job="{events.RECURRING}", reason!="rule_exhausted"}}[15m])) > 0'
    ),
    severity="warning",
    category="messaging",
    for_="5m",
    summary="Next occurrences not created: {{ $labels.reason }}",
    description=(
        "recurring-task-service could not create the next occurrence of a recurring task "
        "({{ $labels.reason }}) in the last 15 minutes: a user's series stops."
    ),
)

OUTBOX_BACKLOG = Alert(
    name="OutboxBacklog",
    expr=f'max by (job) ({app.OUTBOX_PENDING.name}{{job="{events.BACKEND}"}}) > 100',
    severity="warning",
    category="messaging",
    for_="10m",
    summary="backend's outbox holds more than 100 unpublished events",
    description=(
        "More than 100 task events have waited in the backend's outbox for 10 minutes: the "
        "sidecar refuses or misses publishes (see outbox_publish_failures_total)."
    ),
)

SPANS_DROPPED = Alert(
    name="SpansDropped",
    expr=(f"sum by (job, reason) (rate({sdk.SPANS_DROPPED.name}{{{_JOBS}}}[10m])) > 0"),
    severity="info",
    category="tracing",
    for_="10m",
    summary="{{ $labels.job }} drops spans ({{ $labels.reason }})",
    description=(
        "{{ $labels.job }} has dropped finished spans for 10 minutes ({{ $labels.reason }}): "
        "traces in Zipkin are incomplete. The exporter is unreachable or its queue is too small."
    ),
)

ALERTS = (
    SERVICE_DOWN,
    HEALTH_CHECK_FAILING,
    DATABASE_UNAVAILABLE,
    POD_RESTARTING,
    KAFKA_DOWN,
    KAFKA_CONSUMER_LAG,
    DAPR_PUBSUB_DROPS,
    DEAD_LETTERS_GROWING,
    REMINDER_FAILURES,
    NEXT_OCCURRENCE_FAILURES,
    OUTBOX_BACKLOG,
    SPANS_DROPPED,
)
"""Every operational alert, in the order of the rules file."""
