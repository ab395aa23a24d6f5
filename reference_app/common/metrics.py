"""The reference services' own metrics, declared like the SDK's catalogue.

Dashboards and alert rules are generated from (or checked against) `CATALOGUE` here and the
SDK's `todo_observability.metrics.CATALOGUE`. Register them with
`observability.metrics.register(spec)` and record with `observability.metrics.child(spec, ...)`.
"""

from __future__ import annotations

from todo_observability.metrics import MetricSpec

CALCULATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
DELIVERY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# backend
TASKS_CREATED = MetricSpec(
    "tasks_created_total",
    "counter",
    "Tasks created, by origin (user, or recurrence for next occurrences).",
    ("origin",),
)
TASKS_COMPLETED = MetricSpec(
    "tasks_completed_total",
    "counter",
    "Tasks marked complete, by whether they recur.",
    ("recurring",),
)
OUTBOX_PENDING = MetricSpec(
    "outbox_pending_events",
    "gauge",
    "Events written to the outbox and not yet accepted by the sidecar.",
    multiprocess_mode="max",
)
OUTBOX_PUBLISH_FAILURES = MetricSpec(
    "outbox_publish_failures_total",
    "counter",
    "Attempts to publish an outbox event that the sidecar refused or missed, by topic.",
    ("topic",),
)

# recurring-task-service
NEXT_OCCURRENCE_DURATION = MetricSpec(
    "recurring_next_occurrence_duration_seconds",
    "histogram",
    "Time to calculate a recurring task's next occurrence with dateutil.rrule.",
    buckets=CALCULATION_BUCKETS,
)
NEXT_OCCURRENCE_FAILURES = MetricSpec(
    "recurring_next_occurrence_failures_total",
    "counter",
    "Next occurrences not created, by reason (invalid_rule, rule_exhausted, backend_error).",
    ("reason",),
)
NEXT_OCCURRENCES_CREATED = MetricSpec(
    "recurring_next_occurrences_total",
    "counter",
    "Next occurrences requested from backend, by outcome (created, or existing for a repeat).",
    ("outcome",),
)

# notification-service
REMINDERS_SCHEDULED = MetricSpec(
    "reminders_scheduled_total",
    "counter",
    "Reminder jobs scheduled on the Jobs API, by outcome (success or error).",
    ("outcome",),
)
REMINDER_EMAILS = MetricSpec(
    "reminder_emails_total",
    "counter",
    "Reminder e-mails, by outcome (sent, or failed once the retry budget is spent).",
    ("outcome",),
)
REMINDER_SMTP_ATTEMPTS = MetricSpec(
    "reminder_smtp_attempts_total",
    "counter",
    "SMTP delivery attempts, by attempt number (1, 2, 3, ...) and outcome (success or error).",
    ("attempt", "outcome"),
)
REMINDER_FAILURES = MetricSpec(
    "reminder_failures_total",
    "counter",
    "Reminder failures, by reason (smtp_unavailable, smtp_rejected, backend_unavailable, backend_rejected).",
    ("reason",),
)
REMINDER_DELIVERY_LATENCY = MetricSpec(
    "reminder_delivery_latency_seconds",
    "histogram",
    "Time from a reminder's scheduled time (remind_at) to its e-mail being accepted by SMTP.",
    buckets=DELIVERY_BUCKETS,
)

CATALOGUE: tuple[MetricSpec, ...] = (
    TASKS_CREATED,
    TASKS_COMPLETED,
    OUTBOX_PENDING,
    OUTBOX_PUBLISH_FAILURES,
    NEXT_OCCURRENCE_DURATION,
    NEXT_OCCURRENCE_FAILURES,
    NEXT_OCCURRENCES_CREATED,
    REMINDERS_SCHEDULED,
    REMINDER_EMAILS,
    REMINDER_SMTP_ATTEMPTS,
    REMINDER_FAILURES,
    REMINDER_DELIVERY_LATENCY,
)
"""Every metric the reference services emit besides the SDK's."""
