"""The reference system's two expected trace flows, for `todo-obs verify-traces`.

Derived from the spans the system really emits (`python -m reference_app`, then
`todo-obs trace data/spans.jsonl --all`); docs/operations/traces.md shows those trees.

    todo-obs verify-traces --spans data/spans.jsonl --flows reference_app.ops.flows:FLOWS
"""

from __future__ import annotations

from todo_observability.ops.traceflows import Flow, Step

__all__ = ["FLOWS", "NEXT_OCCURRENCE", "REMINDER"]

# --8<-- [start:next-occurrence]
NEXT_OCCURRENCE = Flow(
    name="task-completion-next-occurrence",
    description="Completing a recurring task makes recurring-task-service create its next "
    "occurrence on backend, in one trace.",
    steps=(
        Step("complete", "frontend", "POST /api/tasks/{task_id}/complete", "SERVER"),
        Step(
            "invoke-complete",
            "frontend",
            "POST",
            "CLIENT",
            parent=("complete",),
            tags={"rpc.service": "backend", "rpc.method": "tasks/*/complete"},
        ),
        # Through the two sidecars' CallLocal spans, whose names depend on the Dapr version.
        Step(
            "backend-complete",
            "backend",
            "POST /tasks/{task_id}/complete",
            "SERVER",
            descendant_of="invoke-complete",
        ),
        # The backend's SQL (instrument_sqlalchemy): the task marked complete and its event
        # written to the outbox, in the transaction that commits both.
        Step(
            "complete-task-row",
            "backend",
            "UPDATE *",
            "CLIENT",
            parent=("backend-complete",),
            tags={"db.statement": "UPDATE tasks SET *"},
        ),
        Step(
            "complete-outbox-row",
            "backend",
            "INSERT *",
            "CLIENT",
            parent=("backend-complete",),
            tags={"db.statement": "INSERT INTO outbox *"},
        ),
        Step("publish", "backend", "task-events publish", "PRODUCER", parent=("backend-complete",)),
        # recurring-task-service's sidecar delivering the event (DAPR.md §1.5); absent when
        # that sidecar does not trace, and then the CloudEvent's traceparent (the producer)
        # is the consumer's parent.
        Step(
            "deliver",
            "recurring-task-service",
            "pubsub/task-events",
            "CLIENT",
            parent=("publish",),
            optional=True,
        ),
        Step(
            "consume",
            "recurring-task-service",
            "task-events process",
            "CONSUMER",
            parent=("deliver", "publish"),
        ),
        Step(
            "calculate",
            "recurring-task-service",
            "rrule.calculate_next_occurrence",
            "INTERNAL",
            parent=("consume",),
        ),
        Step(
            "invoke-create",
            "recurring-task-service",
            "POST",
            "CLIENT",
            parent=("consume",),
            tags={"rpc.service": "backend", "rpc.method": "tasks"},
        ),
        Step("create-next", "backend", "POST /tasks", "SERVER", descendant_of="invoke-create"),
        Step(
            "create-next-row",
            "backend",
            "INSERT *",
            "CLIENT",
            parent=("create-next",),
            tags={"db.statement": "INSERT INTO tasks *"},
        ),
    ),
)
"""Task completion → next occurrence."""
# --8<-- [end:next-occurrence]

# --8<-- [start:reminder]
REMINDER = Flow(
    name="reminder-scheduled-email-delivered",
    description="Creating a task with a reminder schedules a Dapr job in notification-service; "
    "its trigger e-mails the reminder and marks it sent on backend (a second trace).",
    steps=(
        Step("create", "frontend", "POST /api/tasks", "SERVER"),
        Step(
            "invoke-create",
            "frontend",
            "POST",
            "CLIENT",
            parent=("create",),
            tags={"rpc.service": "backend", "rpc.method": "tasks"},
        ),
        Step("backend-create", "backend", "POST /tasks", "SERVER", descendant_of="invoke-create"),
        Step("publish", "backend", "reminders publish", "PRODUCER", parent=("backend-create",)),
        Step(
            "deliver",
            "notification-service",
            "pubsub/reminders",
            "CLIENT",
            parent=("publish",),
            optional=True,
        ),
        Step(
            "consume",
            "notification-service",
            "reminders process",
            "CONSUMER",
            parent=("deliver", "publish"),
        ),
        Step(
            "schedule", "notification-service", "reminder schedule", "PRODUCER", parent=("consume",)
        ),
        # The scheduler triggers the job without trace context: the trigger starts a new trace
        # (linked to the scheduling span, but Zipkin v2 keeps no links), found by the job name.
        Step(
            "trigger",
            "notification-service",
            "reminder trigger",
            "CONSUMER",
            follows="schedule",
            join_tag="dapr.job.name",
        ),
        # One conversation per attempt; the last one is the server accepting the e-mail.
        Step(
            "send-mail",
            "notification-service",
            "smtp send",
            "CLIENT",
            parent=("trigger",),
            tags={"network.protocol.name": "smtp"},
        ),
        # Backend is told only after SMTP accepted the e-mail.
        Step(
            "mark-sent",
            "notification-service",
            "POST",
            "CLIENT",
            parent=("trigger",),
            tags={"rpc.service": "backend", "rpc.method": "tasks/*/reminder-sent"},
        ),
        Step(
            "backend-sent",
            "backend",
            "POST /tasks/{task_id}/reminder-sent",
            "SERVER",
            descendant_of="mark-sent",
        ),
    ),
)
"""Reminder scheduled → e-mail delivered."""
# --8<-- [end:reminder]

FLOWS = (NEXT_OCCURRENCE, REMINDER)
"""Both flows, for `--flows reference_app.ops.flows:FLOWS`."""
