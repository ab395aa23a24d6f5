"""The backend: every user's tasks, over HTTP, announcing each change on Dapr pub/sub.

Dapr app id `backend` (`reference_app.common.events.BACKEND`), default port 8001
(`python -m reference_app.backend`). The other services and the frontend rely on exactly this.

## Authentication

Every route below needs `Authorization: Bearer <JWT>` (HS256, `JWT_SECRET`, made by
`reference_app.common.auth.Tokens`). The token's subject is the user: a user sees and changes
only their own tasks, and another user's task id answers 404, never 403. The token's `email`
claim, when present, is the owner's e-mail for reminders (kept on the task). A missing,
malformed, expired or wrongly signed token answers 401 with a JSON `detail` saying which.

## HTTP API

| Request | Answer |
|---|---|
| `POST /tasks` | 201 Task. Body: `title` (1-200 characters), `description`, `due_at`, `priority` (`low`, `medium`, `high`; default `medium`), `tags` (up to 20 strings of 1-32 characters, no comma), `recurrence` (an RRULE such as `FREQ=DAILY;BYHOUR=9`, or `DAILY`, `WEEKLY`, `MONTHLY`), `remind_at` (before `due_at`), `recurrence_of` (with `due_at`). When a task with the same user, `recurrence_of` and `due_at` exists: 200 with that task, nothing created (so creating a next occurrence is idempotent, even concurrently). |
| `GET /tasks` | 200 `[Task]`, by `due_at` (tasks without one last) then id. Filters: `completed` (bool), `priority`, `tag` (one tag, case-insensitive), `due_before`, `due_after` (strict), `q` (in title or description, case-insensitive), `limit` (1-200, default 50), `offset`. |
| `GET /tasks/{id}` | 200 Task, or 404. |
| `PATCH /tasks/{id}` | 200 Task. The fields of `POST` but `recurrence_of`, each optional; `null` clears `due_at`, `remind_at` or `recurrence`. A new `remind_at` clears `reminder_sent_at`. |
| `DELETE /tasks/{id}` | 204. |
| `POST /tasks/{id}/complete` | 200 Task. Completing a completed task changes nothing and publishes nothing. |
| `POST /tasks/{id}/reminder-sent` | 200 Task with `reminder_sent_at` set (the first call's time; later calls change nothing). |

Task JSON: `id`, `user_id`, `title`, `description`, `due_at`, `priority`, `tags`, `recurrence`,
`remind_at`, `completed`, `completed_at`, `reminder_sent_at`, `recurrence_of`, `email`,
`created_at`, `updated_at`. Datetimes are ISO 8601 with a time zone (answers are in UTC,
`2026-11-26T09:00:00Z`); a datetime without one is refused.

Errors: 401 and 404 `{"detail": "..."}`; 422 `{"detail": [{"loc", "msg", "type", ...}],
"message": "recurrence: invalid recurrence 'FREQ=SOMETIMES': FREQ: ..."}` (`message` names each
wrong field, and for a recurrence the wrong part); 503 `{"detail": "the database is
unavailable; ..."}` with `Retry-After` while the database cannot be reached.

## Events

Published on the `pubsub` component through the sidecar, from a transactional outbox: the
event rows are written in the change's transaction and published right after the commit (in
the request's trace); what the sidecar refuses is retried by a background loop with backoff,
never failing the request and never lost. The CloudEvent `id` is the outbox row's uuid (the
same on every retry); the Kafka key is the task id, and one task's events keep their order.
Reminder events carry `at`, the time of the change (taken under the task's row lock): a cancel
outranks the schedules of the same reminder (`reminder_job`: task id and `remind_at` to the
second) written at or before it, so a schedule replayed late cannot bring a cancelled reminder back.

| Topic | Type | Payload | When |
|---|---|---|---|
| `task-events` | `task.completed` | `TaskCompleted` | a task is completed (once) |
| `reminders` | `reminder.scheduled` | `ReminderScheduled` | a task is created, or its `title`, `due_at` or `remind_at` change, with `remind_at` in the future, an owner e-mail known and the task not completed |
| `reminders` | `reminder.cancelled` | `ReminderCancelled` | the reminder at the old `remind_at` is off: `remind_at` moved to another second (`rescheduled`, before the new time's `reminder.scheduled`) or was cleared (`cleared`), or the task was deleted (`deleted`) or completed (`completed`) |
| `task-updates` | `task.updated` | `TaskUpdated` | `action` = `created`, `updated` (with `changed` fields), `completed`, `deleted`, `reminder_sent` |

## Settings

See `Settings` (`reference_app.backend.settings`): `DATABASE_URL` (default
`sqlite+aiosqlite:///./data/backend.db`), `JWT_SECRET`, `PORT` (8001), `HOST`, the sidecar's
`DAPR_HTTP_PORT`/`DAPR_HTTP_ENDPOINT`/`DAPR_API_TOKEN`, and the `OUTBOX_*` retry settings.

## Observability

`/metrics` (with `tasks_created_total{origin}`, `tasks_completed_total{recurring}`,
`outbox_pending_events`, `outbox_publish_failures_total{topic}`), `/health/live`,
`/health/ready` and `/health/startup` (database, Dapr sidecar, pub/sub component), JSON logs
carrying the request's `request_id` and the token's `user_id`.
"""

from __future__ import annotations

from reference_app.backend.app import create_app
from reference_app.backend.runtime import Backend
from reference_app.backend.settings import Settings
from reference_app.common.auth import DEV_JWT_SECRET

__all__ = ["DEV_JWT_SECRET", "Backend", "Settings", "create_app"]
