"""The notification service (Dapr app id `notification-service`): reminder e-mails via Dapr jobs.

`reminder.scheduled` events on `reminders` become Dapr jobs due at `remind_at`; a job's
trigger e-mails the reminder over SMTP (retried with backoff) and marks it sent on backend.
`reminder.cancelled` deletes the job; a cancelled reminder is never e-mailed.
What cannot be delivered is parked and replayed with `todo-obs dlq`.
"""

from __future__ import annotations

from reference_app.notifications.app import create_app
from reference_app.notifications.settings import Settings

__all__ = ["Settings", "create_app"]
