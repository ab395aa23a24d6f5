"""The reference system's SLOs: the SDK's service SLOs, and reminder delivery."""

from __future__ import annotations

from reference_app.common import events, metrics
from todo_observability.ops.slo import SLO, Events, service_slos

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

SLOS = (*service_slos(SERVICES), REMINDER_DELIVERY)
"""Every SLO of the reference system, in the order of the rule groups."""
