"""The frontend in process: sign-in, pages and the JSON API, backend reached only through Dapr."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from reference_app.common.auth import Tokens
from reference_app.frontend.auth import SESSION_COOKIE
from todo_observability.testing import LogCapture, SpanCapture, metric_value

from .conftest import SECRET, System

pytestmark = pytest.mark.anyio


def set_cookie(response: httpx.Response) -> Any:
    """The session cookie the response sets (a `Morsel`)."""
    [header] = [v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE)]
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie[SESSION_COOKIE]


def bearer(system: System, path: str) -> list[str]:
    return [r.headers.get("authorization", "") for r in system.backend.received(path)]


# --- sign-in ---------------------------------------------------------------------------------


async def test_without_a_session_the_page_offers_the_demo_users(system: System) -> None:
    response = await system.client.get("/")

    assert response.status_code == 200
    assert '<option value="alice">alice (alice@todo.local)</option>' in response.text
    assert '<option value="bob">bob (bob@todo.local)</option>' in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert system.backend.requests == []


async def test_login_sets_an_httponly_lax_cookie_holding_the_users_token(
    system: System, captured_logs: LogCapture
) -> None:
    response = await system.client.post("/login", data={"user_id": "bob"})

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = set_cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert cookie["secure"] == ""  # plain HTTP outside production
    assert int(cookie["max-age"]) == 8 * 3600
    identity = Tokens(SECRET).verify(cookie.value)
    assert (identity.user_id, identity.email) == ("bob", "bob@todo.local")
    [line] = captured_logs.find(message="user signed in")
    assert line["user_id"] == "bob"
    [access] = [a for a in captured_logs.access() if a["context"]["route"] == "/login"]
    assert access["user_id"] == "bob"


async def test_login_refuses_a_user_who_is_not_a_demo_user(
    system: System, captured_logs: LogCapture
) -> None:
    response = await system.client.post("/login", data={"user_id": "mallory"})

    assert response.status_code == 400
    assert "Choose one of the demo users." in response.text
    assert "set-cookie" not in response.headers
    [line] = captured_logs.find(message="sign-in refused: not a demo user")
    assert line["level"] == "WARNING"
    assert line["context"]["requested_user"] == "mallory"


async def test_a_post_from_another_site_is_refused(system: System) -> None:
    system.sign_in("alice")
    response = await system.client.post(
        "/api/tasks", json={"title": "x"}, headers={"origin": "https://evil.example"}
    )
    login = await system.client.post(
        "/login", data={"user_id": "alice"}, headers={"origin": "https://evil.example"}
    )

    assert (response.status_code, login.status_code) == (403, 403)
    assert system.backend.requests == []


async def test_logout_clears_the_cookie_and_says_so(
    system: System, captured_logs: LogCapture
) -> None:
    system.sign_in("alice")
    response = await system.client.post("/logout")

    assert response.status_code == 303
    assert response.headers["location"] == "/?reason=signed-out"
    assert set_cookie(response)["max-age"] == "0"
    assert captured_logs.find(message="user signed out")[0]["user_id"] == "alice"
    page = await system.client.get(response.headers["location"])
    assert "You are signed out." in page.text


# --- the task page ---------------------------------------------------------------------------


async def test_the_page_lists_the_users_open_and_completed_tasks_through_dapr(
    system: System,
) -> None:
    system.backend.add("alice", "Write the report", due_at="2026-12-02T10:00:00+00:00")
    system.backend.add(
        "alice", "Daily standup", due_at="2026-12-01T09:00:00Z", recurrence="DAILY", tags=["work"]
    )
    system.backend.add("alice", "Buy milk", completed=True, completed_at="2026-11-20T08:00:00Z")
    system.backend.add("alice", "<script>alert('x')</script>")
    system.backend.add("bob", "Bob's secret task")
    token = system.sign_in("alice")

    response = await system.client.get("/", headers={"x-request-id": "page-1"})

    assert response.status_code == 200
    page = response.text
    assert "Signed in as <strong>alice</strong> (alice@todo.local)" in page
    open_part, completed_part = page.split('id="completed-tasks"')
    # Open tasks soonest first; the completed one only under Completed; nothing of bob's.
    assert open_part.index("Daily standup") < open_part.index("Write the report")
    assert "Buy milk" not in open_part
    assert "Buy milk" in completed_part
    assert "Bob" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page  # escaped, never run
    assert "<script>alert" not in page
    assert "Due 2026-12-01 09:00 UTC" in page
    assert "&#x21bb; DAILY" in page
    assert "#work" in page
    [request] = system.backend.received("/tasks")
    assert (request.method, request.query) == ("GET", "limit=200")
    assert request.headers["authorization"] == f"Bearer {token}"
    assert request.headers["dapr-caller-app-id"] == "frontend"  # it came through the sidecars
    # The request id and the signed-in user travel with the call.
    assert request.headers["x-request-id"] == "page-1"
    assert "user_id=alice" in request.headers["baggage"].split(",")


async def test_a_session_backend_refuses_sends_the_page_to_sign_in(system: System) -> None:
    system.sign_in("alice")
    system.backend.fail_next(401, "the token has expired; sign in again")

    response = await system.client.get("/")

    assert response.status_code == 303
    assert response.headers["location"] == "/?reason=expired"
    assert set_cookie(response)["max-age"] == "0"
    page = await system.client.get(response.headers["location"])
    assert "Your session has ended: sign in again." in page.text
    assert 'action="/login"' in page.text


async def test_a_stale_cookie_shows_the_sign_in_page_and_is_cleared(
    system: System, captured_logs: LogCapture
) -> None:
    forged = Tokens("another-secret-that-is-32-bytes-long!!").issue("alice")
    system.client.cookies.set(SESSION_COOKIE, forged, domain="frontend.test")

    response = await system.client.get("/")

    assert response.status_code == 200
    assert 'action="/login"' in response.text
    assert set_cookie(response)["max-age"] == "0"
    assert system.backend.requests == []
    [line] = captured_logs.find(message="session cookie refused")
    assert "Signature verification failed" in line["context"]["reason"]


async def test_the_page_shows_that_backend_is_unavailable(system: System) -> None:
    system.sign_in("alice")
    system.backend_sidecar.set_app_down()

    response = await system.client.get("/")

    assert response.status_code == 502
    assert "The task service cannot be reached right now (ERR_DIRECT_INVOKE)" in response.text
    assert 'id="new-task"' in response.text


# --- the JSON API ----------------------------------------------------------------------------


async def test_create_turns_the_form_into_backends_task(
    system: System, captured_logs: LogCapture
) -> None:
    token = system.sign_in("alice")
    response = await system.client.post(
        "/api/tasks",
        json={
            "title": "  Daily standup at 9am ",
            "description": "",
            "due_at": "2026-12-01T09:00",
            "priority": "high",
            "tags": "work, #meetings, work, ",
            "recurrence": "DAILY",
            "remind_minutes_before": 15,
        },
    )

    assert response.status_code == 201, response.text
    task = response.json()
    assert task["title"] == "Daily standup at 9am"
    [request] = system.backend.received("/tasks")
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {token}"
    assert request.body == {
        "title": "Daily standup at 9am",
        "priority": "high",
        "tags": ["work", "meetings"],
        "recurrence": "DAILY",
        "due_at": "2026-12-01T09:00:00+00:00",
        "remind_at": "2026-12-01T08:45:00+00:00",
    }
    [line] = captured_logs.find(message="task created")
    assert line["user_id"] == "alice"
    assert line["context"]["task_id"] == task["id"]
    assert line["context"]["recurrence"] == "DAILY"


async def test_list_and_complete_through_the_api(system: System, captured_logs: LogCapture) -> None:
    task = system.backend.add("alice", "Daily standup", recurrence="DAILY")
    system.backend.add("alice", "Done already", completed=True)
    token = system.sign_in("alice")

    completed = await system.client.post(f"/api/tasks/{task['id']}/complete")
    listed = await system.client.get("/api/tasks", params={"completed": "true", "tag": ""})

    assert completed.status_code == 200
    assert completed.json()["completed"] is True
    assert listed.status_code == 200
    assert sorted(t["title"] for t in listed.json()) == ["Daily standup", "Done already"]
    [listing] = system.backend.received("/tasks")
    assert listing.query == "completed=true&limit=200"  # empty filters are not sent
    assert bearer(system, f"/tasks/{task['id']}/complete") == [f"Bearer {token}"]
    [line] = captured_logs.find(message="task completed")
    assert line["context"] == {"task_id": task["id"], "recurrence": "DAILY"}


async def test_backends_refusal_is_passed_on_with_its_message(system: System) -> None:
    system.sign_in("alice")
    bad_rule = await system.client.post(
        "/api/tasks",
        json={"title": "Broken", "due_at": "2026-12-01T09:00", "recurrence": "FREQ=DAILY;BYDAY=XX"},
    )
    missing = await system.client.post("/api/tasks/999/complete")

    assert bad_rule.status_code == 422
    body = bad_rule.json()
    # Backend's summary, once (its error already names the field), and its errors as they were.
    assert body["message"].startswith("recurrence: invalid recurrence 'FREQ=DAILY;BYDAY=XX': BYDAY")
    assert not body["message"].startswith("recurrence: recurrence:")
    assert body["detail"][0]["loc"] == ["body", "recurrence"]
    assert missing.status_code == 404
    assert missing.json()["message"] == "task 999 not found"


async def test_backends_validation_errors_are_described_field_by_field(system: System) -> None:
    system.sign_in("alice")
    system.backend.fail_next(
        422, [{"loc": ["body", "due_at"], "msg": "Input should be a valid datetime", "type": "x"}]
    )

    response = await system.client.post("/api/tasks", json={"title": "x"})

    assert response.status_code == 422
    assert response.json()["message"] == "due_at: Input should be a valid datetime"
    assert response.json()["detail"][0]["loc"] == ["body", "due_at"]


async def test_a_message_that_names_its_field_is_not_prefixed_twice(system: System) -> None:
    system.sign_in("alice")
    system.backend.fail_next(
        422,
        [
            {"loc": ["body", "remind_at"], "msg": "remind_at: must be before due_at"},
            {"loc": ["body", "tags", 0], "msg": "String should have at most 32 characters"},
        ],
    )

    response = await system.client.post("/api/tasks", json={"title": "x"})

    assert response.json()["message"] == (
        "remind_at: must be before due_at; tags.0: String should have at most 32 characters"
    )


async def test_the_frontend_checks_its_own_form_before_calling_backend(system: System) -> None:
    system.sign_in("alice")
    no_due_time = await system.client.post(
        "/api/tasks", json={"title": "Call mum", "remind_minutes_before": 10}
    )
    no_title = await system.client.post("/api/tasks", json={"title": "   "})

    assert no_due_time.status_code == 422
    assert no_due_time.json()["message"] == (
        "reminder: needs a due time; set 'Due at' or clear the reminder"
    )
    assert no_title.status_code == 422
    assert no_title.json()["message"].startswith("title: String should have at least 1 character")
    assert system.backend.requests == []


async def test_backends_401_asks_the_page_to_sign_in_again(
    system: System, captured_logs: LogCapture
) -> None:
    system.sign_in("alice")
    system.backend.fail_next(401, "the token has expired; sign in again")

    response = await system.client.get("/api/tasks")

    assert response.status_code == 401
    assert response.json()["signin"] == "/?reason=expired"
    assert response.json()["message"] == "Your session is no longer valid: sign in again."
    assert set_cookie(response)["max-age"] == "0"
    [line] = captured_logs.find(message="backend refused the session")
    assert line["level"] == "WARNING"
    assert line["context"]["detail"] == "the token has expired; sign in again"


async def test_the_api_needs_a_session(system: System) -> None:
    listed = await system.client.get("/api/tasks")
    created = await system.client.post("/api/tasks", json={"title": "x"})

    for response in (listed, created):
        assert response.status_code == 401
        assert response.json()["signin"] == "/?reason=expired"
    assert system.backend.requests == []


async def test_backend_failures_become_502_with_a_clear_message(
    system: System, captured_logs: LogCapture
) -> None:
    system.sign_in("alice")
    system.backend.fail_next(500, "database is down")
    failed = await system.client.get("/api/tasks")
    system.backend_sidecar.set_app_down()
    unreachable = await system.client.post("/api/tasks/1/complete")

    assert failed.status_code == 502
    assert failed.json()["message"] == (
        "The task service failed (HTTP 500); try again in a moment."
    )
    assert unreachable.status_code == 502
    assert unreachable.json()["message"] == (
        "The task service cannot be reached right now (ERR_DIRECT_INVOKE); try again in a moment."
    )
    [failure] = captured_logs.find(message="backend failed")
    assert failure["context"]["status"] == 500
    [dapr] = captured_logs.find(message="backend unreachable through Dapr")
    assert dapr["level"] == "ERROR"
    assert dapr["context"]["error_code"] == "ERR_DIRECT_INVOKE"
    assert dapr["context"]["action"] == "complete task"


# --- observability ---------------------------------------------------------------------------


async def test_one_trace_from_the_frontend_through_both_sidecars_to_backend(
    system: System, captured_spans: SpanCapture
) -> None:
    task = system.backend.add("alice", "Daily standup")
    system.sign_in("alice")

    response = await system.client.post(f"/api/tasks/{task['id']}/complete")

    assert response.status_code == 200
    spans = captured_spans.spans + list(system.sidecar_spans.get_finished_spans())
    by_id = {span.context.span_id: span for span in spans}

    def only(name: str, kind: SpanKind, service: str) -> Any:
        found = [
            s
            for s in spans
            if (s.name, s.kind, s.resource.attributes.get("service.name")) == (name, kind, service)
        ]
        assert len(found) == 1, [(s.name, s.kind) for s in spans]
        return found[0]

    def parent(span: Any) -> Any:
        assert span.parent is not None
        return by_id[span.parent.span_id]

    server = only("POST /api/tasks/{task_id}/complete", SpanKind.SERVER, "frontend")
    invoke = only("POST", SpanKind.CLIENT, "frontend")
    caller_sidecar = only(
        f"CallLocal/backend/tasks/{task['id']}/complete", SpanKind.CLIENT, "frontend"
    )
    callee_sidecar = only(
        f"CallLocal/backend/tasks/{task['id']}/complete", SpanKind.SERVER, "backend"
    )
    backend = only("POST /tasks/{task_id}/complete", SpanKind.SERVER, "backend")
    assert server.parent is None
    assert parent(invoke) is server
    assert parent(caller_sidecar) is invoke
    assert parent(callee_sidecar) is caller_sidecar
    assert parent(backend) is callee_sidecar
    assert len({s.context.trace_id for s in (server, invoke, backend)}) == 1
    assert invoke.attributes["rpc.service"] == "backend"
    assert (
        metric_value(
            system.registry,
            "http_client_requests_total",
            method="POST",
            server_address="backend",
            status_code="200",
        )
        == 1.0
    )


async def test_readiness_checks_the_dapr_sidecar(system: System) -> None:
    response = await system.client.get("/health/ready")

    assert response.status_code == 200
    assert response.json()["checks"]["dapr-sidecar"]["status"] == "UP"
    assert metric_value(system.registry, "health_check_status", check="dapr-sidecar") == 1.0


async def test_static_assets_are_served(system: System) -> None:
    script = await system.client.get("/static/app.js")
    style = await system.client.get("/static/style.css")

    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert 'api("POST", "/api/tasks"' in script.text
    assert style.status_code == 200
    assert "text/css" in style.headers["content-type"]
