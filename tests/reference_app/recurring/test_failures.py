"""Duplicates, poison events and backend outages: every event ends created, acknowledged or parked."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.trace import StatusCode

from tests.reference_app.recurring.conftest import MAX_RETRIES, System, SystemFactory, completed

pytestmark = pytest.mark.anyio


async def parked(system: System) -> list[dict[str, object]]:
    """The dead letters the recurring app parked, through its dead-letter API."""
    async with system.client() as client:
        response = await client.get("/dapr/dead-letters")
    assert response.status_code == 200, response.text
    messages: list[dict[str, object]] = response.json()["parked"]
    return messages


@pytest.mark.parametrize("idempotency_store", ["memory", "dapr"])
async def test_the_same_event_delivered_twice_creates_one_next_task(
    make_system: SystemFactory, idempotency_store: str
) -> None:
    system = await make_system(idempotency_store=idempotency_store)
    await system.publish(completed(), event_id="evt-standup-7")
    await system.publish(completed(), event_id="evt-standup-7")
    await system.settle()

    assert system.backend.statuses == [201]
    assert [r.outcome for r in system.results()] == ["delivered", "delivered"]
    assert system.metric("messaging_duplicate_messages_total", topic="task-events") == 1
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 1
    [duplicate] = system.logs.find(message="duplicate message acknowledged without processing")
    assert duplicate["context"]["message_id"] == "evt-standup-7"


async def test_a_repeat_under_another_event_id_is_answered_existing_by_backend(
    system: System,
) -> None:
    await system.publish(completed(), event_id="evt-1")
    await system.publish(completed(), event_id="evt-2")
    await system.settle()

    assert system.backend.statuses == [201, 200]
    assert len(system.backend.tasks) == 1
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 1
    assert system.metric("recurring_next_occurrences_total", outcome="existing") == 1
    [line] = system.logs.find(message="next occurrence already existed: repeat acknowledged")
    assert line["context"]["next_task_id"] == 100
    assert line["context"]["outcome"] == "existing"


@pytest.mark.parametrize(
    ("rule", "part"),
    [("EVERY=DAY", "EVERY"), ("FREQ=DAILY;BYDAY=XX", "BYDAY"), ("FREQ=FORTNIGHTLY", "FREQ")],
)
async def test_an_invalid_rule_is_dropped_once_and_parked_with_its_reason(
    system: System, rule: str, part: str
) -> None:
    await system.publish(completed(recurrence=rule), event_id="evt-old-client")
    await system.settle()

    assert system.backend.requests == []
    # DROP: dead-lettered at once, no retries (no crash loop), then parked.
    [result] = system.results()
    assert (result.outcome, result.reason, result.attempts) == ("dead_lettered", "drop", 1)
    [message] = await parked(system)
    assert message["event_id"] == "evt-old-client"
    assert message["reason"] == "invalid_rule"
    assert message["origin_topic"] == "task-events"
    assert part in str(message["detail"])
    assert system.metric("recurring_next_occurrence_failures_total", reason="invalid_rule") == 1
    assert (
        system.metric(
            "messaging_dead_letters_total", origin_topic="task-events", reason="invalid_rule"
        )
        == 1
    )
    [warning] = system.logs.find(
        message="invalid recurrence rule: the next occurrence cannot be calculated"
    )
    assert warning["level"] == "WARNING"
    assert (warning["context"]["rule"], warning["context"]["part"]) == (rule, part)
    [calculation] = system.spans.named("rrule.calculate_next_occurrence")
    assert calculation.status.status_code is StatusCode.ERROR


async def test_a_payload_that_does_not_validate_is_parked_as_validation(system: System) -> None:
    await system.publish({"task_id": "seven", "title": "no user, no completion time"})
    await system.settle()

    assert system.backend.requests == []
    [message] = await parked(system)
    assert message["reason"] == "validation"
    assert system.metric("recurring_next_occurrence_duration_seconds_count") == 0


async def test_backend_down_is_retried_until_it_comes_back(system: System) -> None:
    system.backend.unavailable = 2
    await system.publish(completed())
    await system.settle()

    assert system.backend.statuses == [503, 503, 201]
    [result] = system.results()
    assert (result.outcome, result.attempts) == ("delivered", 3)
    assert system.metric("recurring_next_occurrence_failures_total", reason="backend_error") == 2
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 1
    assert (
        system.metric("messaging_process_messages_total", topic="task-events", outcome="retry") == 2
    )
    retried = system.logs.find(message="message will be retried (backend_unavailable)")
    assert [line["context"]["attempt"] for line in retried] == [1, 2]
    assert await parked(system) == []


async def test_backend_unreachable_beyond_the_retries_is_parked_and_replayed_once_it_is_up(
    make_system: SystemFactory,
) -> None:
    system = await make_system(backend_up=False)
    await system.publish(completed(), event_id="evt-outage")
    await system.settle()

    [result] = system.results()
    assert (result.outcome, result.reason) == ("dead_lettered", "retries_exhausted")
    assert result.attempts == MAX_RETRIES + 1
    [message] = await parked(system)
    assert message["reason"] == "backend_unavailable"
    assert "ERR_DIRECT_INVOKE" in str(message["detail"])
    assert (
        system.metric("recurring_next_occurrence_failures_total", reason="backend_error")
        == MAX_RETRIES + 1
    )
    [line, *_] = system.logs.find(
        message="backend could not be invoked: the message will be retried"
    )
    assert line["context"]["error_code"] == "ERR_DIRECT_INVOKE"

    await system.start_backend()
    async with system.client() as client:
        response = await client.post(f"/dapr/dead-letters/{message['park_id']}/replay")
    assert response.status_code == 200, response.text
    await system.settle()

    assert system.backend.statuses == [201]
    assert await parked(system) == []
    assert system.metric("recurring_next_occurrences_total", outcome="created") == 1


async def test_a_request_backend_refuses_is_parked_with_its_answer(system: System) -> None:
    system.backend.reject_with = 422
    await system.publish(completed())
    await system.settle()

    assert system.backend.statuses == [422]  # once: a refusal is not retried
    [message] = await parked(system)
    assert message["reason"] == "backend_rejected"
    assert "title too long" in str(message["detail"])
    assert system.metric("recurring_next_occurrence_failures_total", reason="backend_rejected") == 1
    [line] = system.logs.find(
        message="backend refused the next occurrence: the message is dead-lettered"
    )
    assert (line["level"], line["context"]["status_code"]) == ("ERROR", 422)


@pytest.mark.parametrize(
    ("rule", "due_at", "cause"),
    [
        # Published before backend refused it: dateutil alone searched 3 to 6 s, on the loop.
        (
            "FREQ=DAILY;BYMONTHDAY=31;BYMONTH=2",
            "2026-11-26T09:00:00Z",
            "BYMONTHDAY=31 never falls in BYMONTH=2",
        ),
        # Not refused by a look at the parts: found by the bounded search.
        (
            "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31",
            "2026-02-01T09:00:00Z",
            "no occurrence within 10 years after 2026-11-26T09:30:00+00:00",
        ),
    ],
)
async def test_a_rule_that_never_matches_is_parked_naming_why_and_the_loop_keeps_running(
    system: System, rule: str, due_at: str, cause: str
) -> None:
    lags: list[float] = []
    running = True

    async def watch_the_loop() -> None:
        # How late a 10 ms sleep wakes up is how long the loop was kept from running.
        while running:
            began = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - began - 0.01)

    watcher = asyncio.create_task(watch_the_loop())
    try:
        await system.publish(completed(recurrence=rule, due_at=due_at), event_id="evt-feb-31")
        await system.settle()
    finally:
        running = False
        await watcher

    # Never blocked for long: half a second leaves room for a loaded machine.
    assert lags
    assert max(lags) < 0.5, max(lags)
    assert system.backend.requests == []
    [result] = system.results()
    assert (result.outcome, result.reason, result.attempts) == ("dead_lettered", "drop", 1)
    [message] = await parked(system)
    assert message["reason"] == "invalid_rule"
    assert cause in str(message["detail"])
    assert "UNTIL passed" not in str(message["detail"])
    assert system.metric("recurring_next_occurrence_failures_total", reason="invalid_rule") == 1
