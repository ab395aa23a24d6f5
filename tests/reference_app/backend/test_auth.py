"""Bearer tokens: what a 401 says, the user id in every log line, and another user's task is a 404."""

from __future__ import annotations

import pytest

from reference_app.common.auth import Tokens
from todo_observability.testing import LogCapture

from .conftest import Harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "missing bearer token: send 'Authorization: Bearer <token>'"),
        ("Basic YWxpY2U6cHc=", "the Authorization header must be 'Bearer <token>'"),
        ("Bearer not-a-jwt", "the token is not valid: Not enough segments"),
    ],
)
async def test_a_request_without_a_usable_token_is_401_saying_why(
    sqlite_backend: Harness, captured_logs: LogCapture, authorization: str | None, detail: str
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = await sqlite_backend.client.get("/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["www-authenticate"] == "Bearer"
    # The access line records it; the backend writes no line of its own.
    request_id = response.headers["x-request-id"]
    lines = [line for line in captured_logs.lines if line["request_id"] == request_id]
    assert [(line["logger"], line["context"]["status"]) for line in lines] == [
        ("todo_observability.access", 401)
    ]


async def test_an_expired_token_is_401(sqlite_backend: Harness) -> None:
    token = sqlite_backend.tokens.issue("alice", ttl_seconds=-60)
    response = await sqlite_backend.client.get(
        "/tasks", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "the token has expired; sign in again"}


async def test_a_token_signed_with_another_secret_is_401(sqlite_backend: Harness) -> None:
    forged = Tokens("a-different-secret-of-at-least-32-bytes!").issue("alice")
    response = await sqlite_backend.client.post(
        "/tasks", json={"title": "x"}, headers={"authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "the token is not valid: Signature verification failed"}
    assert sqlite_backend.all_events() == {topic: [] for topic in sqlite_backend.all_events()}


async def test_another_users_task_is_not_found_and_left_alone(sqlite_backend: Harness) -> None:
    task = await sqlite_backend.create("alice", title="Alice's", remind_at=None)
    bob = sqlite_backend.auth("bob")
    path = f"/tasks/{task['id']}"
    client = sqlite_backend.client
    answers = [
        await client.get(path, headers=bob),
        await client.patch(path, json={"title": "Bob's now"}, headers=bob),
        await client.post(f"{path}/complete", headers=bob),
        await client.post(f"{path}/reminder-sent", headers=bob),
        await client.delete(path, headers=bob),
    ]
    assert [answer.status_code for answer in answers] == [404] * 5
    assert answers[0].json() == {"detail": f"task {task['id']} not found"}
    assert (await client.get("/tasks", headers=bob)).json() == []
    unchanged = await client.get(path, headers=sqlite_backend.auth("alice"))
    assert unchanged.json() == task
    # Only alice's creation was announced.
    assert [e["data"]["action"] for e in sqlite_backend.events("task-updates")] == ["created"]


async def test_log_lines_carry_the_request_id_and_the_tokens_user(
    sqlite_backend: Harness, captured_logs: LogCapture
) -> None:
    response = await sqlite_backend.client.post(
        "/tasks",
        json={"title": "Daily standup"},
        headers={**sqlite_backend.auth("carol"), "X-Request-ID": "req-carol-1"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-carol-1"
    [created] = captured_logs.find(message="task created")
    assert created["request_id"] == "req-carol-1"
    assert created["user_id"] == "carol"
    assert created["context"]["task_id"] == response.json()["id"]
    assert created["context"]["origin"] == "user"
    [access] = [line for line in captured_logs.access() if line["request_id"] == "req-carol-1"]
    assert access["user_id"] == "carol"
    assert access["trace_id"] == created["trace_id"]
