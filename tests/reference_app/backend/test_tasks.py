"""The tasks API on SQLite and PostgreSQL: create, read, filter, change, complete, delete, validation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .conftest import Harness

pytestmark = pytest.mark.anyio


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


async def test_a_created_task_is_returned_normalised_and_read_back(backend: Harness) -> None:
    response = await backend.client.post(
        "/tasks",
        json={
            "title": "  Daily standup  ",
            "description": "15 minutes",
            "due_at": "2030-03-01T09:00:00+01:00",
            "remind_at": "2030-03-01T07:45:00Z",
            "priority": "high",
            "tags": ["Work", "work", "team"],
            "recurrence": "DAILY",
        },
        headers=backend.auth("alice"),
    )
    assert response.status_code == 201
    task = response.json()
    assert task["id"] >= 1
    assert {k: v for k, v in task.items() if k not in ("id", "created_at", "updated_at")} == {
        "user_id": "alice",
        "title": "Daily standup",
        "description": "15 minutes",
        "due_at": "2030-03-01T08:00:00Z",
        "priority": "high",
        "tags": ["Work", "team"],
        "recurrence": "DAILY",
        "remind_at": "2030-03-01T07:45:00Z",
        "completed": False,
        "completed_at": None,
        "reminder_sent_at": None,
        "recurrence_of": None,
        "email": "alice@example.org",
    }
    assert task["created_at"] == task["updated_at"]
    assert task["created_at"].endswith("Z")
    read = await backend.client.get(f"/tasks/{task['id']}", headers=backend.auth("alice"))
    assert read.status_code == 200
    assert read.json() == task


async def test_defaults_of_a_minimal_task(backend: Harness) -> None:
    task = await backend.create(title="Buy milk")
    assert (task["description"], task["priority"], task["tags"], task["due_at"]) == (
        "",
        "medium",
        [],
        None,
    )


async def test_the_list_filters_and_pages(backend: Harness) -> None:
    base = datetime(2030, 1, 1, 9, tzinfo=timezone.utc)
    specs: list[dict[str, Any]] = [
        {"title": "Standup", "due_at": _iso(base), "tags": ["work"], "priority": "high"},
        {"title": "Homework", "due_at": _iso(base + timedelta(days=1)), "tags": ["homework"]},
        {"title": "Groceries", "description": "50% off milk", "tags": ["Home", "shop"]},
        {"title": "Review", "due_at": _iso(base + timedelta(days=2)), "priority": "low"},
    ]
    ids = {spec["title"]: (await backend.create(**spec))["id"] for spec in specs}
    await backend.create("bob", title="Bob's standup", tags=["work"])
    await backend.client.post(f"/tasks/{ids['Review']}/complete", headers=backend.auth())

    async def titles(**params: Any) -> list[str]:
        response = await backend.client.get("/tasks", params=params, headers=backend.auth())
        assert response.status_code == 200, response.text
        return [task["title"] for task in response.json()]

    # By due time, tasks without one last.
    assert await titles() == ["Standup", "Homework", "Review", "Groceries"]
    assert await titles(completed="true") == ["Review"]
    assert await titles(completed="false") == ["Standup", "Homework", "Groceries"]
    assert await titles(priority="high") == ["Standup"]
    # One whole tag, whatever its case: "work" is not in "homework".
    assert await titles(tag="work") == ["Standup"]
    assert await titles(tag="HOME") == ["Groceries"]
    assert await titles(due_before=_iso(base + timedelta(days=1))) == ["Standup"]
    assert await titles(due_after=_iso(base)) == ["Homework", "Review"]
    assert await titles(due_after="2030-01-01T09:00:00+01:00") == ["Standup", "Homework", "Review"]
    assert await titles(q="STAND") == ["Standup"]
    assert await titles(q="50%") == ["Groceries"]  # a literal %, in the description
    assert await titles(q="%") == ["Groceries"]
    assert await titles(limit=2) == ["Standup", "Homework"]
    assert await titles(limit=2, offset=2) == ["Review", "Groceries"]


async def test_a_patch_changes_only_the_given_fields_and_null_clears(backend: Harness) -> None:
    task = await backend.create(
        title="Standup",
        due_at="2030-01-01T09:00:00Z",
        remind_at="2030-01-01T08:45:00Z",
        recurrence="DAILY",
        tags=["work"],
    )
    response = await backend.client.patch(
        f"/tasks/{task['id']}",
        json={"title": "Team standup", "recurrence": None, "remind_at": None, "due_at": None},
        headers=backend.auth(),
    )
    assert response.status_code == 200
    changed = response.json()
    assert changed["title"] == "Team standup"
    assert (changed["recurrence"], changed["remind_at"], changed["due_at"]) == (None, None, None)
    assert changed["tags"] == ["work"]
    assert changed["updated_at"] > task["updated_at"]


async def test_a_new_reminder_time_makes_the_reminder_due_again(backend: Harness) -> None:
    task = await backend.create(due_at="2030-01-01T09:00:00Z", remind_at="2030-01-01T08:45:00Z")
    path = f"/tasks/{task['id']}"
    await backend.client.post(f"{path}/reminder-sent", headers=backend.auth())
    same = await backend.client.patch(path, json={"title": "Renamed"}, headers=backend.auth())
    assert same.json()["reminder_sent_at"] is not None
    moved = await backend.client.patch(
        path, json={"remind_at": "2030-01-01T08:30:00Z"}, headers=backend.auth()
    )
    assert moved.json()["reminder_sent_at"] is None


async def test_a_patch_that_changes_nothing_keeps_updated_at(backend: Harness) -> None:
    task = await backend.create(title="Standup")
    response = await backend.client.patch(
        f"/tasks/{task['id']}", json={"title": "Standup"}, headers=backend.auth()
    )
    assert response.json() == task


async def test_a_deleted_task_is_gone(backend: Harness) -> None:
    task = await backend.create()
    path = f"/tasks/{task['id']}"
    deleted = await backend.client.delete(path, headers=backend.auth())
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await backend.client.get(path, headers=backend.auth())).status_code == 404
    assert (await backend.client.delete(path, headers=backend.auth())).status_code == 404


async def test_completing_twice_is_idempotent(backend: Harness) -> None:
    task = await backend.create()
    path = f"/tasks/{task['id']}/complete"
    first = await backend.client.post(path, headers=backend.auth())
    second = await backend.client.post(path, headers=backend.auth())
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["completed"] is True
    assert first.json()["completed_at"] is not None
    assert second.json() == first.json()


async def test_marking_the_reminder_sent_twice_keeps_the_first_time(backend: Harness) -> None:
    task = await backend.create(due_at="2030-01-01T09:00:00Z", remind_at="2030-01-01T08:45:00Z")
    path = f"/tasks/{task['id']}/reminder-sent"
    first = await backend.client.post(path, headers=backend.auth())
    second = await backend.client.post(path, headers=backend.auth())
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["reminder_sent_at"] is not None
    assert second.json() == first.json()


async def test_unknown_ids_are_not_found(backend: Harness) -> None:
    for method, path in [
        ("GET", "/tasks/999"),
        ("PATCH", "/tasks/999"),
        ("DELETE", "/tasks/999"),
        ("POST", "/tasks/999/complete"),
        ("POST", "/tasks/999/reminder-sent"),
    ]:
        body = {"title": "x"} if method == "PATCH" else None
        response = await backend.client.request(method, path, json=body, headers=backend.auth())
        assert (response.status_code, response.json()) == (404, {"detail": "task 999 not found"})


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ("FREQ=SOMETIMES", "FREQ"),
        ("BYHOUR=9", "FREQ"),
        ("FREQ=DAILY;BYDAY=XX", "BYDAY"),
        ("FREQ=DAILY;COLOUR=RED", "COLOUR"),
        ("FREQ=DAILY;UNTIL=20301231", "UNTIL"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20301231T000000Z", "COUNT"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
    ],
)
async def test_an_invalid_recurrence_says_which_part_is_wrong(
    backend: Harness, rule: str, part: str
) -> None:
    response = await backend.client.post(
        "/tasks",
        json={"title": "x", "due_at": "2030-01-01T09:00:00Z", "recurrence": rule},
        headers=backend.auth(),
    )
    assert response.status_code == 422
    body = response.json()
    assert body["message"].startswith(f"recurrence: invalid recurrence {rule!r}: {part}: ")
    [error] = body["detail"]
    assert error["loc"] == ["body", "recurrence"]
    assert error["msg"] == body["message"]
    assert backend.events("task-updates") == []


async def test_the_frequency_error_lists_the_valid_ones(backend: Harness) -> None:
    response = await backend.client.post(
        "/tasks", json={"title": "x", "recurrence": "FREQ=SOMETIMES"}, headers=backend.auth()
    )
    assert response.json()["message"] == (
        "recurrence: invalid recurrence 'FREQ=SOMETIMES': FREQ: 'SOMETIMES' is not one of "
        "['DAILY', 'HOURLY', 'MINUTELY', 'MONTHLY', 'SECONDLY', 'WEEKLY', 'YEARLY']"
    )


@pytest.mark.parametrize("rule", ["DAILY", "weekly", "MONTHLY", "RRULE:FREQ=WEEKLY;BYDAY=MO,WE"])
async def test_presets_and_rrules_are_accepted(backend: Harness, rule: str) -> None:
    task = await backend.create(title="x", due_at="2030-01-01T09:00:00Z", recurrence=rule)
    assert task["recurrence"] == rule


async def test_a_reminder_after_the_due_time_is_refused(backend: Harness) -> None:
    response = await backend.client.post(
        "/tasks",
        json={
            "title": "x",
            "due_at": "2030-01-01T09:00:00Z",
            "remind_at": "2030-01-01T10:00:00+01:00",  # 09:00Z: not before
        },
        headers=backend.auth(),
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        "remind_at: must be before due_at (2030-01-01T09:00:00+00:00 is not before "
        "2030-01-01T09:00:00+00:00)"
    )


async def test_a_patch_is_checked_against_the_stored_fields(backend: Harness) -> None:
    task = await backend.create(due_at="2030-01-01T09:00:00Z", remind_at="2030-01-01T08:00:00Z")
    response = await backend.client.patch(
        f"/tasks/{task['id']}", json={"due_at": "2030-01-01T07:00:00Z"}, headers=backend.auth()
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("remind_at: must be before due_at")
    unchanged = await backend.client.get(f"/tasks/{task['id']}", headers=backend.auth())
    assert unchanged.json()["due_at"] == "2030-01-01T09:00:00Z"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": ""}, "title: String should have at least 1 character"),
        ({"title": "   "}, "title: String should have at least 1 character"),
        ({"title": "x" * 201}, "title: String should have at most 200 characters"),
        (
            {"title": "x", "due_at": "2030-01-01T09:00:00"},
            "due_at: Input should have timezone info",
        ),
        (
            {"title": "x", "priority": "urgent"},
            "priority: Input should be 'low', 'medium' or 'high'",
        ),
        ({"title": "x", "tags": ["a,b"]}, "tags.0: a tag must not contain a comma"),
        ({"title": "x", "tags": ["x" * 33]}, "tags.0: String should have at most 32 characters"),
        ({"title": "nul\x00"}, "title: must not contain NUL characters"),
        ({"title": "x", "owner": "bob"}, "owner: Extra inputs are not permitted"),
        ({"title": "x", "recurrence_of": 7}, "due_at: required with recurrence_of"),
        ({}, "title: Field required"),
    ],
)
async def test_invalid_input_is_422_with_a_message_naming_the_field(
    backend: Harness, body: dict[str, Any], message: str
) -> None:
    response = await backend.client.post("/tasks", json=body, headers=backend.auth())
    assert response.status_code == 422
    assert response.json()["message"].startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": None}, "title: cannot be null; leave the field out to keep its value"),
        ({"tags": None}, "tags: cannot be null"),
        ({"completed": True}, "completed: Extra inputs are not permitted"),
    ],
)
async def test_an_invalid_patch_is_422(
    backend: Harness, body: dict[str, Any], message: str
) -> None:
    task = await backend.create()
    response = await backend.client.patch(f"/tasks/{task['id']}", json=body, headers=backend.auth())
    assert response.status_code == 422
    assert response.json()["message"].startswith(message)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "201"}, "limit: Input should be less than or equal to 200"),
        ({"due_before": "tomorrow"}, "due_before: Input should be a valid datetime"),
        ({"due_after": "2030-01-01T00:00:00"}, "due_after: Input should have timezone info"),
        ({"q": "a\x00b"}, "q: must not contain NUL characters"),
        (
            {"offset": str(2**63)},
            "offset: Input should be less than or equal to 9223372036854775807",
        ),
    ],
)
async def test_invalid_filters_are_422(
    backend: Harness, params: dict[str, str], message: str
) -> None:
    response = await backend.client.get("/tasks", params=params, headers=backend.auth())
    assert response.status_code == 422
    assert response.json()["message"].startswith(message)


@pytest.mark.parametrize("task_id", ["0", str(2**63), "seven"])
async def test_an_id_out_of_a_64_bit_range_is_422(backend: Harness, task_id: str) -> None:
    response = await backend.client.get(f"/tasks/{task_id}", headers=backend.auth())
    assert response.status_code == 422
    assert response.json()["message"].startswith("task_id: ")


@pytest.mark.parametrize(
    ("rule", "cause"),
    [
        (
            "FREQ=DAILY;BYMONTHDAY=31;BYMONTH=2",
            "BYMONTHDAY: BYMONTHDAY=31 never falls in BYMONTH=2 (February has at most 29 days)",
        ),
        (
            "FREQ=YEARLY;INTERVAL=20",
            "rule: no occurrence within 10 years after 2030-01-01T00:00:00+00:00 "
            "(INTERVAL=20 leaves none in that time): a rule must recur within 10 years",
        ),
    ],
)
async def test_a_rule_with_no_occurrence_within_the_horizon_is_refused_saying_why(
    backend: Harness, rule: str, cause: str
) -> None:
    response = await backend.client.post(
        "/tasks",
        json={"title": "x", "due_at": "2030-01-01T00:00:00Z", "recurrence": rule},
        headers=backend.auth(),
    )
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"recurrence: invalid recurrence {rule!r}: {cause}")
    assert "UNTIL" not in message
    assert backend.events("task-updates") == []


async def test_a_rule_ending_before_its_first_occurrence_is_refused(backend: Harness) -> None:
    response = await backend.client.post(
        "/tasks",
        json={
            "title": "x",
            "due_at": "2030-01-01T09:00:00Z",
            "recurrence": "FREQ=DAILY;UNTIL=20291231T000000Z",
        },
        headers=backend.auth(),
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        "recurrence: 'FREQ=DAILY;UNTIL=20291231T000000Z' has no occurrence: its UNTIL is before "
        "its first occurrence from 2030-01-01T09:00:00+00:00; set UNTIL later or remove it"
    )


async def test_a_patch_to_a_rule_with_no_occurrence_is_refused(backend: Harness) -> None:
    task = await backend.create(due_at="2030-01-01T09:00:00Z", recurrence="DAILY")
    response = await backend.client.patch(
        f"/tasks/{task['id']}",
        json={"recurrence": "FREQ=DAILY;BYMONTHDAY=31;BYMONTH=2"},
        headers=backend.auth(),
    )
    assert response.status_code == 422
    assert "never falls in BYMONTH=2" in response.json()["message"]
