"""The next occurrence of a completed recurring task: when it falls, and the task to create for it.

Pure functions over the `TaskCompleted` payload; the handler adds the outcomes,
metrics and the call to backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from reference_app.common.recurrence import RuleExhausted, next_occurrence
from todo_observability import traced

if TYPE_CHECKING:
    from reference_app.common.events import TaskCompleted

__all__ = ["Calculation", "calculate_next_occurrence", "next_task"]

SPAN_NAME = "rrule.calculate_next_occurrence"


@dataclass(frozen=True)
class Calculation:
    """Where a recurring task's series goes after a completion.

    Attributes:
        rule: The task's recurrence rule, as the event carried it.
        anchor: Where the series starts (the task's due date, else its completion time).
        after: The next occurrence is the first one strictly after this (the later of the
            due date and the completion time, so a task completed late does not create
            occurrences already past).
        next_due_at: The next occurrence, or None when the rule is exhausted.
        exhausted: Why there is no next occurrence (`COUNT reached`, `UNTIL passed`), or None.
    """

    rule: str
    anchor: datetime
    after: datetime
    next_due_at: datetime | None
    exhausted: str | None = None


def _aware(moment: datetime) -> datetime:
    """`moment` with a timezone: a naive datetime is read as UTC, as `next_occurrence` does."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@traced(SPAN_NAME)
def calculate_next_occurrence(event: TaskCompleted) -> Calculation:
    """The next occurrence of `event`'s task, in a span `rrule.calculate_next_occurrence`.

    The span carries `rrule.rule`, `rrule.anchor`, `rrule.after` and `rrule.result`
    (the next occurrence in ISO 8601, or `exhausted`). A rule that ended (COUNT,
    UNTIL) is a result, not an error; an invalid rule is (the span records it).

    Args:
        event: A completed task whose `recurrence` is set.

    Returns:
        The calculation; `next_due_at` is None when the rule is exhausted.

    Bounded CPU work (see `next_occurrence`): the handler runs it in a worker thread.

    Raises:
        InvalidRule: the rule cannot be used (the message names the part that is wrong), or
            has no occurrence within the search's bounds (the message names the bound).
    """
    rule = event.recurrence or ""
    completed_at = _aware(event.completed_at)
    due_at = _aware(event.due_at) if event.due_at is not None else None
    anchor = due_at or completed_at
    after = max(due_at, completed_at) if due_at is not None else completed_at
    span = trace.get_current_span()
    span.set_attributes(
        {"rrule.rule": rule, "rrule.anchor": anchor.isoformat(), "rrule.after": after.isoformat()}
    )
    try:
        found = next_occurrence(rule, anchor, after)
    except RuleExhausted as exc:
        span.set_attributes({"rrule.result": "exhausted", "rrule.exhausted_reason": exc.reason})
        return Calculation(rule, anchor, after, None, exc.reason)
    span.set_attribute("rrule.result", found.isoformat())
    return Calculation(rule, anchor, after, found)


def next_task(event: TaskCompleted, next_due_at: datetime) -> dict[str, Any]:
    """The body of backend's `POST /tasks` for the occurrence of `event`'s task at `next_due_at`.

    The reminder keeps its distance to the due date: a task reminded 15 minutes
    before it was due is reminded 15 minutes before its next occurrence. Without
    a due date there is no distance to keep, so no reminder is carried.
    `recurrence_of` lets backend recognise a repeat of the same request.
    """
    body: dict[str, Any] = {
        "title": event.title,
        "description": event.description,
        "priority": event.priority,
        "tags": list(event.tags),
        "recurrence": event.recurrence,
        "due_at": next_due_at.isoformat(),
        "recurrence_of": event.task_id,
    }
    if event.remind_at is not None and event.due_at is not None:
        lead = _aware(event.due_at) - _aware(event.remind_at)
        body["remind_at"] = (next_due_at - lead).isoformat()
    return body
