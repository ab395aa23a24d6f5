"""Cancelled reminders: `reminder.cancelled` deletes the job, and nothing cancelled is e-mailed.

The notification service as conftest.py runs it (emulated sidecar, fake backend publishing on
the same broker, a real SMTP server). The fake backend publishes what the real one writes to
its outbox: on a change of `remind_at` the cancel of the old time, then the new schedule.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reference_app.notifications.app import DEAD_LETTER_TABLE_PREFIX
from tests.reference_app.notifications.conftest import (
    StartSystem,
    System,
    cancel_of,
    job_name_of,
    reminder,
)

pytestmark = pytest.mark.anyio


async def job_exists(system: System, name: str) -> bool:
    """Whether the sidecar still has job `name` (as `GET /v1.0/jobs/{name}` answers)."""
    async with system.sidecar.client() as api:
        response = await api.get(f"/v1.0/jobs/{name}")
    return response.status_code == 200


async def parked(system: System) -> dict[str, dict[str, object]]:
    response = await system.client.get("/dapr/dead-letters")
    assert response.status_code == 200, response.text
    return {entry["park_id"]: entry for entry in response.json()["parked"]}


def outcomes(system: System, topic: str = "reminders") -> list[str]:
    return [result.outcome for result in system.sidecar.results if result.topic == topic]


def written(seconds_ago: float = 0.0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)


async def test_a_changed_time_fires_only_the_new_reminder_once(start_system: StartSystem) -> None:
    system = await start_system()
    old = reminder(31, in_seconds=1.5, at=written(1).isoformat())
    await system.publish(old)
    await system.sidecar.idle()
    assert await job_exists(system, job_name_of(old))

    # remind_at moved 1.5 s later: the outbox writes the cancel, then the new schedule.
    now = written()
    new = reminder(31, in_seconds=3.0, at=now.isoformat())
    await system.cancel(cancel_of(old, at=now))
    await system.publish(new)
    assert await system.wait_for_triggers(job_name_of(new), 1) == [200]
    await system.sidecar.idle()

    assert system.triggers(job_name_of(old)) == []  # its time passed before the new one's
    [mail] = system.mailbox.received
    assert mail.message["Message-ID"] == f"<{job_name_of(new)}@todo.local>"
    assert [m.body["job"] for m in system.backend.marked] == [job_name_of(new)]
    assert outcomes(system) == ["delivered"] * 3
    [cancelled] = system.service_logs("reminder cancelled")
    assert cancelled["context"]["job"] == job_name_of(old)
    assert cancelled["context"]["reason"] == "rescheduled"
    assert system.metric("reminder_emails_total", outcome="sent") == 1


@pytest.mark.parametrize("reason", ["deleted", "completed", "cleared"])
async def test_a_cancelled_reminder_never_fires(start_system: StartSystem, reason: str) -> None:
    system = await start_system()
    doomed = reminder(32, in_seconds=1.0, at=written(1).isoformat())
    # A reminder of another task, due after the cancelled one: once it fired, so would have
    # the cancelled one.
    later = reminder(33, in_seconds=2.0, at=written(1).isoformat())
    await system.publish(doomed)
    await system.publish(later)
    await system.cancel(cancel_of(doomed, reason=reason))
    assert await system.wait_for_triggers(job_name_of(later), 1) == [200]
    await system.sidecar.idle()

    assert not await job_exists(system, job_name_of(doomed))
    assert system.triggers(job_name_of(doomed)) == []
    assert [m.message["Message-ID"] for m in system.mailbox.received] == [
        f"<{job_name_of(later)}@todo.local>"
    ]
    assert [m.task_id for m in system.backend.marked] == [33]


async def test_a_redelivered_cancel_and_a_cancel_of_no_job_are_harmless(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    scheduled = reminder(34, in_seconds=1.0, at=written(1).isoformat())
    cancel = cancel_of(scheduled, reason="deleted")
    await system.publish(scheduled)
    await system.cancel(cancel)
    await system.cancel(cancel)  # delivered again (a new event id: not deduplicated)
    await system.cancel(cancel_of(reminder(35, in_seconds=60.0)))  # never scheduled
    await system.sidecar.idle()

    assert outcomes(system) == ["delivered"] * 4
    assert len(system.service_logs("reminder cancelled")) == 3
    assert await parked(system) == {}
    assert not await job_exists(system, job_name_of(scheduled))
    assert system.mailbox.received == []


async def test_a_cancel_of_a_job_that_fired_already_changes_nothing(
    start_system: StartSystem,
) -> None:
    system = await start_system()
    scheduled = reminder(36, in_seconds=-1.0, at=written(1).isoformat())
    await system.publish(scheduled)
    assert await system.wait_for_triggers(job_name_of(scheduled), 1) == [200]
    await system.cancel(cancel_of(scheduled, reason="completed"))
    await system.sidecar.idle()

    assert outcomes(system) == ["delivered"] * 2
    assert len(system.mailbox.received) == 1
    assert [m.task_id for m in system.backend.marked] == [36]


async def test_a_schedule_arriving_after_its_cancel_stays_cancelled_across_a_restart(
    start_system: StartSystem, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'notifications.db'}"
    first = await start_system(dlq_database_url=url)
    scheduled = reminder(37, in_seconds=-1.0, at=written(5).isoformat())
    name = job_name_of(scheduled)
    await first.cancel(cancel_of(scheduled, reason="deleted", at=written(1)))
    await first.sidecar.idle()
    await first.stop()

    second = await start_system(dlq_database_url=url)
    # The schedule written before the cancel, late (a replay of the park, say).
    await second.publish(scheduled)
    await second.sidecar.idle()
    assert outcomes(second) == ["delivered"]  # acknowledged: neither retried nor parked
    assert second.triggers(name) == []
    assert not await job_exists(second, name)
    [skipped] = second.service_logs(
        "reminder not scheduled: it was cancelled after this event was written"
    )
    assert skipped["context"]["job"] == name

    # The same time set again, after the cancel: a new reminder, and it fires.
    again = {**scheduled, "at": written().isoformat()}
    await second.publish(again)
    assert await second.wait_for_triggers(name, 1) == [200]
    assert len(second.mailbox.received) == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "notifications.db")) as db:
        rows = db.execute(
            f"SELECT job, task_id, reason FROM {DEAD_LETTER_TABLE_PREFIX}cancelled_reminders"
        ).fetchall()
    assert rows == [(name, 37, "deleted")]


async def test_a_schedule_without_at_is_older_than_any_cancel(start_system: StartSystem) -> None:
    system = await start_system()
    scheduled = reminder(38, in_seconds=-1.0)  # an older publisher: no `at`
    await system.cancel(cancel_of(scheduled, reason="deleted", at=written(3600)))
    await system.publish(scheduled)
    await system.sidecar.idle()

    assert system.triggers(job_name_of(scheduled)) == []
    assert system.mailbox.received == []


async def test_a_parked_reminder_replayed_after_its_cancel_is_not_e_mailed(
    start_system: StartSystem,
) -> None:
    system = await start_system(smtp_attempts=2)
    system.mailbox.stop()
    scheduled = reminder(39, in_seconds=-1.0, at=written(1).isoformat())
    name = job_name_of(scheduled)
    await system.publish(scheduled)
    assert await system.wait_for_triggers(name, 1) == [404]  # SMTP down: parked
    assert set(await parked(system)) == {f"job/{name}"}
    await system.cancel(cancel_of(scheduled, reason="completed"))
    await system.sidecar.idle()
    system.mailbox.start()

    response = await system.client.post(f"/dapr/dead-letters/job/{name}/replay")
    assert response.status_code == 200, response.text
    assert await system.wait_for_triggers(name, 2) == [404, 200]
    await system.sidecar.idle()

    assert system.mailbox.received == []
    assert system.backend.marked == []
    assert system.service_logs("reminder cancelled; not e-mailed")
    assert await parked(system) == {}


async def test_jobs_api_refusing_the_delete_retries_the_cancel(start_system: StartSystem) -> None:
    system = await start_system()
    system.sidecar_api.failing_deletes = 1
    scheduled = reminder(40, in_seconds=2.0, at=written(1).isoformat())
    later = reminder(41, in_seconds=3.0, at=written(1).isoformat())
    await system.publish(scheduled)
    await system.publish(later)
    await system.cancel(cancel_of(scheduled, reason="deleted"))
    assert await system.wait_for_triggers(job_name_of(later), 1) == [200]
    await system.sidecar.idle()

    deliveries = [d.outcome for d in system.sidecar.deliveries if d.topic == "reminders"]
    assert deliveries == ["success", "success", "retry", "success"]
    assert system.service_logs(
        "reminder job not deleted: the Jobs API refused; the cancel is retried"
    )
    assert system.triggers(job_name_of(scheduled)) == []
    assert [m.task_id for m in system.backend.marked] == [41]
