"""A completed recurring task gets its next occurrence, created by backend through Dapr invocation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from reference_app.common.events import BACKEND, RECURRING
from tests.reference_app.recurring.conftest import TRACE_ID, System, completed

pytestmark = pytest.mark.anyio

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("rule", "next_due_at"),
    [
        ("DAILY", datetime(2026, 11, 27, 9, tzinfo=UTC)),
        ("WEEKLY", datetime(2026, 12, 3, 9, tzinfo=UTC)),
        ("MONTHLY", datetime(2026, 12, 26, 9, tzinfo=UTC)),
        # 2026-11-26 is a Thursday: the next Monday or Wednesday is Monday the 30th.
        ("FREQ=WEEKLY;BYDAY=MO,WE", datetime(2026, 11, 30, 9, tzinfo=UTC)),
        ("RRULE:FREQ=DAILY;INTERVAL=2", datetime(2026, 11, 28, 9, tzinfo=UTC)),
    ],
)
async def test_the_next_occurrence_is_created_with_its_reminder_carried(
    system: System, rule: str, next_due_at: datetime
) -> None:
    await system.publish(completed(recurrence=rule))
    await system.settle()

    [creation] = system.backend.requests
    assert creation.status == 201
    body = creation.body
    assert at(body["due_at"]) == next_due_at
    assert at(body["remind_at"]) == next_due_at - timedelta(minutes=15)
    assert {k: body[k] for k in ("title", "description", "priority", "tags", "recurrence")} == {
        "title": "Daily standup",
        "description": "What I did, what I will do",
        "priority": "high",
        "tags": ["work", "team"],
        "recurrence": rule,
    }
    assert body["recurrence_of"] == 7
    # recurring acts for the task's owner, and says so.
    assert creation.identity is not None
    assert (creation.identity.user_id, creation.identity.email, creation.identity.actor) == (
        "alice",
        "alice@example.com",
        RECURRING,
    )
    [result] = system.results()
    assert (result.outcome, result.attempts) == ("delivered", 1)
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 1
    assert system.metric("recurring_next_occurrence_duration_seconds_count") == 1
    assert system.metric("recurring_next_occurrence_duration_seconds_sum") > 0
    assert (
        system.metric(
            "http_client_requests_total", method="POST", server_address=BACKEND, status_code="201"
        )
        == 1
    )
    assert (
        system.metric("messaging_process_messages_total", topic="task-events", outcome="success")
        == 1
    )


async def test_a_task_completed_late_recurs_after_its_completion(system: System) -> None:
    await system.publish(completed(completed_at="2026-11-29T18:00:00Z"))
    await system.settle()

    [creation] = system.backend.requests
    # The occurrences of the 27th, 28th and 29th are past: the series resumes on the 30th.
    assert at(creation.body["due_at"]) == datetime(2026, 11, 30, 9, tzinfo=UTC)


async def test_a_task_completed_early_recurs_after_its_own_due_date(system: System) -> None:
    await system.publish(completed(completed_at="2026-11-26T08:30:00Z"))
    await system.settle()

    [creation] = system.backend.requests
    # Not the task's own occurrence (09:00 today), which would recreate the completed task.
    assert at(creation.body["due_at"]) == datetime(2026, 11, 27, 9, tzinfo=UTC)


async def test_a_task_without_due_date_recurs_from_its_completion_without_reminder(
    system: System,
) -> None:
    await system.publish(completed(due_at=None, remind_at=None))
    await system.settle()

    [creation] = system.backend.requests
    assert at(creation.body["due_at"]) == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert "remind_at" not in creation.body


async def test_the_calculation_span_is_a_child_of_the_consumer_span_and_the_invoke_shares_the_trace(
    system: System,
) -> None:
    await system.publish(completed())
    await system.settle()

    spans = system.spans
    [consumer] = spans.named("task-events process")
    [calculation] = spans.named("rrule.calculate_next_occurrence")
    [invoke] = [
        s
        for s in spans.spans
        if s.kind is SpanKind.CLIENT and (s.attributes or {}).get("rpc.service") == BACKEND
    ]
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == int(TRACE_ID, 16)  # the publisher's trace continues
    assert calculation.parent is not None
    assert calculation.parent.span_id == consumer.context.span_id
    assert calculation.context.trace_id == consumer.context.trace_id
    assert calculation.attributes is not None
    assert calculation.attributes["rrule.rule"] == "DAILY"
    assert calculation.attributes["rrule.result"] == "2026-11-27T09:00:00+00:00"
    assert invoke.parent is not None
    assert invoke.parent.span_id == consumer.context.span_id
    assert invoke.context.trace_id == consumer.context.trace_id
    # ... and backend was called in that trace (through both sidecars' spans).
    [creation] = system.backend.requests
    assert creation.headers["traceparent"].split("-")[1] == TRACE_ID


async def test_log_lines_carry_the_publishers_request_id_and_user_id(system: System) -> None:
    await system.publish(completed(), request_id="req-standup-1", user_id="alice")
    await system.settle()

    [calculated] = system.logs.find(message="next occurrence calculated")
    [created] = system.logs.find(message="next occurrence created")
    [processed] = system.logs.find(message="message processed")
    for line in (calculated, created, processed):
        assert (line["request_id"], line["user_id"]) == ("req-standup-1", "alice")
        assert line["service_name"] == RECURRING
    assert calculated["context"] == {
        "task_id": 7,
        "rule": "DAILY",
        "anchor": "2026-11-26T09:00:00+00:00",
        "after": "2026-11-26T09:30:00+00:00",
        "next_due_at": "2026-11-27T09:00:00+00:00",
    }
    assert created["context"]["next_task_id"] == 100
    assert created["context"]["outcome"] == "created"
    assert created["trace_id"] == TRACE_ID
    # The ids travel on to backend as baggage.
    [creation] = system.backend.requests
    assert "request_id=req-standup-1" in creation.headers["baggage"]
    assert "user_id=alice" in creation.headers["baggage"]


async def test_a_task_that_does_not_recur_invokes_nothing(system: System) -> None:
    await system.publish(completed(recurrence=None))
    await system.settle()

    assert system.backend.requests == []
    [result] = system.results()
    assert result.outcome == "delivered"
    [line] = system.logs.find(message="completed task does not recur: nothing to create")
    assert line["context"] == {"task_id": 7}
    assert system.metric("recurring_next_occurrence_duration_seconds_count") == 0
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 0


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY;COUNT=1", "COUNT reached"),
        ("FREQ=DAILY;UNTIL=20261126T235959Z", "UNTIL passed"),
    ],
)
async def test_an_exhausted_rule_is_acknowledged_and_counted(
    system: System, rule: str, reason: str
) -> None:
    await system.publish(completed(recurrence=rule))
    await system.settle()

    assert system.backend.requests == []
    [result] = system.results()
    assert (result.outcome, result.attempts) == ("delivered", 1)
    assert system.metric("recurring_next_occurrence_failures_total", reason="rule_exhausted") == 1
    assert system.metric("recurring_next_occurrence_duration_seconds_count") == 1
    [line] = system.logs.find(
        message="recurrence rule exhausted: the series ended, no next occurrence"
    )
    assert line["level"] == "INFO"
    assert (line["context"]["rule"], line["context"]["reason"]) == (rule, reason)
    [calculation] = system.spans.named("rrule.calculate_next_occurrence")
    assert calculation.status.status_code is not StatusCode.ERROR
    assert calculation.attributes is not None
    assert calculation.attributes["rrule.result"] == "exhausted"
    assert system.results("task-events-dlq") == []


async def test_an_event_of_another_type_is_acknowledged_and_not_dead_lettered(
    system: System,
) -> None:
    await system.publish({"task_id": 7}, event_type="task.archived")
    await system.settle()

    assert system.backend.requests == []
    [result] = system.results()
    assert result.outcome == "delivered"
    assert system.results("task-events-dlq") == []
