"""The reference system's SLOs: the SDK's service SLOs, and reminder delivery."""

from __future__ import annotations

from reference_app.common import events, metrics
from todo_observability.ops.slo import SLO, Events, Latency, service_slos

SERVICES = (events.FRONTEND, events.BACKEND, events.RECURRING, events.NOTIFICATIONS)
"""The four services, by Prometheus job (the Kubernetes Service, named after the app id)."""

REMINDER_DELIVERY = SLO(
    name="reminder-delivery",
    objective=0.99,
    indicator=Events(
        total=f'{metrics.REMINDER_EMAILS.name}{{job="{events.NOTIFICATIONS}"}}',
        bad=f'{metrics.REMINDER_EMAILS.name}{{job="{events.NOTIFICATIONS}", outcome="failed"}}',
    ),
    alert="ReminderDeliveryBelowSLO",
    description="99 % of reminder e-mails are delivered (accepted by the SMTP server).",
    # Reminders come by the handful: a page needs 20 of them in the long window, and the
    # counter is created at 0 when the service starts, so a quiet day is not an absent metric.
    min_events=20,
    absent_for="1h",
)

SERVICE_SLOS = service_slos(SERVICES)
"""The SDK's SLOs of the four services: availability, latency, HTTP errors, message processing."""

SLOS = (*SERVICE_SLOS, REMINDER_DELIVERY)
"""Every SLO of the reference system, in the order of the rule groups."""


def _latency_threshold(slos: tuple[SLO, ...]) -> float:
    [threshold] = [slo.indicator.threshold for slo in slos if isinstance(slo.indicator, Latency)]
    return threshold


LATENCY_SLO_SECONDS = _latency_threshold(SERVICE_SLOS)
"""The latency objective, in seconds (0.5: 95 % of requests within 500 ms).

Read from the latency SLO the rules are generated from, never restated, so the dashboards draw
their SLO line where the alerts measure.
"""
