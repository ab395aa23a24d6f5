"""The park in `DLQ_DATABASE_URL`: parked reminders outlive a restart; readiness checks the database.

Each test runs the notification service as conftest.py does (emulated sidecar, fake backend,
real SMTP server), on a real SQLite file through aiosqlite.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from reference_app.notifications.app import DEAD_LETTER_TABLE_PREFIX
from tests.reference_app.notifications.conftest import StartSystem, System, job_name_of, reminder
from todo_observability.dapr import InMemoryDeadLetterStore, SqlDeadLetterStore
from todo_observability.dapr.dead_letters import ParkedMessage

pytestmark = pytest.mark.anyio

PARK_TABLE = f"{DEAD_LETTER_TABLE_PREFIX}dead_letters"


async def parked(system: System) -> dict[str, dict[str, object]]:
    """The dead-letter park of the service, through its HTTP API."""
    response = await system.client.get("/dapr/dead-letters")
    assert response.status_code == 200, response.text
    return {entry["park_id"]: entry for entry in response.json()["parked"]}


def rows(database: Path) -> list[str]:
    """The park ids in the service's park table, read straight from the SQLite file."""
    # sqlite3's own context manager commits but does not close (3.13 warns about that).
    with contextlib.closing(sqlite3.connect(database)) as connection:
        found = connection.execute(f"SELECT park_id FROM {PARK_TABLE} ORDER BY park_id")
        return [park_id for (park_id,) in found.fetchall()]


async def test_a_parked_reminder_survives_a_restart_and_replays_on_the_new_process(
    start_system: StartSystem, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "notifications.db"  # the lifespan creates data/
    url = f"sqlite+aiosqlite:///{database}"
    first = await start_system(dlq_database_url=url, smtp_attempts=2)
    first.mailbox.stop()
    payload = reminder(21, in_seconds=-1.0)
    name = job_name_of(payload)
    await first.publish(payload)
    assert await first.wait_for_triggers(name, 1) == [404]  # SMTP down: parked, not retried
    # And a reminders-dlq message: a payload that can never validate.
    await first.publish({"task_id": 22, "title": "no user, no address, no time"})
    await first.sidecar.idle()
    before = await parked(first)
    [message_id] = [park_id for park_id in before if park_id.startswith("pubsub/reminders/")]
    assert set(before) == {f"job/{name}", message_id}
    assert rows(database) == sorted(before)  # in the file, in tables of the service's own

    await first.stop()  # the pod goes: its memory with it
    first.mailbox.start()
    second = await start_system(dlq_database_url=url)

    after = await parked(second)
    assert set(after) == {f"job/{name}", message_id}
    assert after[f"job/{name}"]["origin_topic"] == "job/reminder"
    assert after[f"job/{name}"]["reason"] == "smtp_unavailable"
    assert after[message_id]["origin_topic"] == "reminders"
    assert after[message_id]["reason"] == "validation"

    response = await second.client.post(f"/dapr/dead-letters/job/{name}/replay")
    assert response.status_code == 200, response.text
    assert await second.wait_for_triggers(name, 1) == [200]
    await second.sidecar.idle()
    assert len(second.mailbox.received) == 1
    assert second.mailbox.received[0].message["Message-ID"] == f"<{name}@todo.local>"
    assert [m.task_id for m in second.backend.marked] == [21]
    assert set(await parked(second)) == {message_id}
    assert rows(database) == [message_id]


async def test_the_park_keeps_to_its_own_tables_in_a_database_shared_with_recurring(
    start_system: StartSystem, tmp_path: Path
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    database = tmp_path / "dead-letters.db"
    url = f"sqlite+aiosqlite:///{database}"
    # What recurring-task-service parks there, in the SDK's default tables.
    engine = create_async_engine(url)
    try:
        await SqlDeadLetterStore(engine).park(
            ParkedMessage(
                park_id="pubsub/task-events/evt-poison",
                event_id="evt-poison",
                pubsub="pubsub",
                origin_topic="task-events",
                dead_letter_topic="task-events-dlq",
                reason="validation",
            )
        )
    finally:
        await engine.dispose()
    system = await start_system(dlq_database_url=url)

    assert await parked(system) == {}
    await system.publish({"task_id": 23, "title": "no user, no address, no time"})
    await system.sidecar.idle()
    [ours] = await parked(system)
    assert ours.startswith("pubsub/reminders/")
    with contextlib.closing(sqlite3.connect(database)) as connection:
        theirs = connection.execute("SELECT park_id FROM todo_obs_dead_letters").fetchall()
    assert theirs == [("pubsub/task-events/evt-poison",)]


async def test_readiness_checks_the_dead_letter_database(
    start_system: StartSystem, tmp_path: Path
) -> None:
    system = await start_system(dlq_database_url=f"sqlite+aiosqlite:///{tmp_path / 'dlq.db'}")

    ready = await system.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"smtp", "dapr-sidecar", "dapr-jobs", "dlq-database"}
    assert checks["dlq-database"]["status"] == "UP"
    assert checks["dlq-database"]["details"]["dialect"] == "sqlite"
    assert isinstance(system.app.state.subscriptions.dead_letter_store, SqlDeadLetterStore)
    [configured] = system.service_logs("notification service configured")
    assert configured["context"]["dead_letter_store"] == "sql"


async def test_a_dead_letter_database_that_cannot_be_opened_makes_the_service_unready(
    start_system: StartSystem, tmp_path: Path
) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    system = await start_system(dlq_database_url=f"sqlite+aiosqlite:///{tmp_path}")

    ready = await system.client.get("/health/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["dlq-database"]["status"] == "DOWN"
    assert checks["smtp"]["status"] == "UP"  # only the park is missing
    live = await system.client.get("/health/live")
    assert live.status_code == 200  # a database outage never restarts the pod


async def test_without_a_dead_letter_database_the_park_is_in_memory(
    start_system: StartSystem,
) -> None:
    system = await start_system()

    assert system.settings.dlq_database_url is None
    assert isinstance(system.app.state.subscriptions.dead_letter_store, InMemoryDeadLetterStore)
    ready = await system.client.get("/health/ready")
    assert set(ready.json()["checks"]) == {"smtp", "dapr-sidecar", "dapr-jobs"}
    [configured] = system.service_logs("notification service configured")
    assert configured["context"]["dead_letter_store"] == "memory"


async def test_a_reminder_sent_before_a_restart_is_not_e_mailed_again_by_the_new_process(
    start_system: StartSystem, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "notifications.db"
    url = f"sqlite+aiosqlite:///{database}"
    first = await start_system(dlq_database_url=url, job_trigger_attempts=50)
    first.backend.answers = [503] * 50  # backend away: the reminder is never marked sent
    payload = reminder(24, in_seconds=-1.0)
    name = job_name_of(payload)
    await first.publish(payload)
    [status, *_] = await first.wait_for_triggers(name, 1)
    assert status >= 500  # e-mailed, backend not told: the job is to be triggered again
    assert len(first.mailbox.received) == 1

    await first.stop()  # the process goes between the e-mail and backend's update
    second = await start_system(dlq_database_url=url)
    # The reminder's job triggers on the new process (here: its event delivered again).
    await second.publish(payload)
    assert await second.wait_for_triggers(name, 1) == [200]
    await second.sidecar.idle()

    assert len(second.mailbox.received) == 1  # the one e-mail, from the first process
    assert [m.task_id for m in second.backend.marked] == [24]
    [skipped] = second.service_logs("reminder e-mail already sent; marking it sent on backend")
    assert skipped["context"]["job"] == name
    with contextlib.closing(sqlite3.connect(database)) as connection:
        recorded = connection.execute(
            f"SELECT job, task_id FROM {DEAD_LETTER_TABLE_PREFIX}sent_reminders"
        ).fetchall()
    assert recorded == [(name, 24)]
