"""Faults in the running reference system (real processes, the runner's own start-up).

- SMTP down: the reminder's attempts are retried, then parked; SMTP back; replay; exactly one e-mail.
- A poison `task.completed` (an invalid RRULE written by an older client): dropped with its reason,
  parked, and no crash loop.
- backend's database down: readiness 503 and a clear 503 for requests; nothing half-written.
- notification-service restarted between a reminder's e-mail and backend's update: one e-mail,
  backend told once.
- A reminder moved, a task deleted, a task completed: only the new time is e-mailed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_app import run, smtp_sink
from reference_app.common import events
from reference_app.common.auth import Tokens
from tests.health.conftest import PostgresCluster, postgres_cluster
from tests.helpers import eventually
from tests.reference_app.harness import running_system
from todo_observability.cli import main as todo_obs
from todo_observability.ops.spans import load_spans

pytestmark = pytest.mark.slow


class Running:
    def __init__(self, layout: run.Layout, system: run.System):
        self.layout = layout
        self.system = system
        self.tokens = Tokens(layout.jwt_secret)

    def url(self, app_id: str) -> str:
        return self.layout.services[app_id].url

    def backend(self, user: str = "alice") -> httpx.Client:
        return httpx.Client(
            base_url=self.url(events.BACKEND),
            headers={
                "authorization": f"Bearer {self.tokens.issue(user, email=f'{user}@todo.local')}"
            },
            timeout=20.0,
        )

    def lines(self, app_id: str) -> list[dict[str, Any]]:
        return list(run.log_lines(self.layout, app_id))

    def stop(self, app_id: str) -> None:
        """Stop a service as Kubernetes would (SIGTERM, then wait for it to exit)."""
        process = self.system.processes[app_id]
        process.terminate()
        process.wait(timeout=30)

    def start(self, app_id: str) -> None:
        """Start a stopped service again, with the runner's own environment; wait until ready."""
        run.start_service(self.system, app_id)
        eventually(lambda: _ready(self.url(app_id)), 90, f"{app_id} ready again")

    def mails(self, title: str) -> list[Path]:
        """The messages the SMTP sink kept whose text names `title`."""
        return [p for p in smtp_sink.messages(self.layout.mail) if title in p.read_text()]

    def restart_smtp_sink(self) -> None:
        self.system.start(
            "smtp-sink",
            [
                sys.executable, "-m", "reference_app.smtp_sink",
                "--port", str(self.layout.smtp_port), "--dir", str(self.layout.mail),
            ],
            run.base_env(self.layout),
        )  # fmt: skip


def _ready(url: str) -> bool:
    try:
        return run.ready(url)
    except httpx.HTTPError:
        return False  # not listening yet


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresCluster]:
    """backend's database: a real PostgreSQL, so that it can really go down."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, database: PostgresCluster
) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("system") / "data"
    with running_system(data, database_url=database.url) as (layout, system):
        yield Running(layout, system)


def test_smtp_down_parks_the_reminder_and_a_replay_delivers_it_exactly_once(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = running.system.processes["smtp-sink"]
    sink.terminate()
    sink.wait(timeout=10)
    due_at = datetime.now(timezone.utc) + timedelta(minutes=10)
    with running.backend() as backend:
        created = backend.post(
            "/tasks",
            json={
                "title": "Pay the rent",
                "due_at": due_at.isoformat(),
                "remind_at": (due_at - timedelta(minutes=10, seconds=-1)).isoformat(),
            },
        )
        assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    notifications = running.url(events.NOTIFICATIONS)

    def parked() -> list[dict[str, Any]]:
        listing = httpx.get(f"{notifications}/dapr/dead-letters", timeout=5).json()
        return [m for m in listing["parked"] if m["origin_topic"] == "job/reminder"]

    [message] = eventually(parked, 60, "the reminder to be parked")
    assert message["reason"] == "smtp_unavailable"
    attempts = [
        line["context"]["attempt"]
        for line in running.lines(events.NOTIFICATIONS)
        if line["message"] == "SMTP attempt failed"
    ]
    assert attempts[:3] == [1, 2, 3], attempts
    # Readiness follows (its results are cached for a few seconds).
    eventually(
        lambda: httpx.get(f"{notifications}/health/ready", timeout=5).status_code == 503,
        30,
        "notifications' readiness to fail",
    )

    running.restart_smtp_sink()
    eventually(lambda: run.ready(notifications), 30, "notifications ready again")
    replay = ["dlq", "--service", notifications, "replay", message["park_id"], "--wait", "2"]
    assert todo_obs(replay) == 0
    # Scheduled again and not parked again within the wait; the e-mail below is the proof.
    assert f"{message['park_id']} to job/reminder: published" in capsys.readouterr().out

    def mails() -> list[Path]:
        return [
            p for p in smtp_sink.messages(running.layout.mail) if "Pay the rent" in p.read_text()
        ]

    eventually(mails, 30, "the e-mail")
    time.sleep(2)  # nothing more may arrive
    assert len(mails()) == 1
    with running.backend() as backend:
        assert eventually(
            lambda: backend.get(f"/tasks/{task_id}").json().get("reminder_sent_at"), 30
        )
    assert parked() == []


def test_a_poison_event_is_dropped_with_its_reason_and_parked_without_a_crash_loop(
    running: Running,
) -> None:
    backend_sidecar = f"http://127.0.0.1:{running.layout.services[events.BACKEND].dapr_port}"
    poison = {
        "task_id": 999,
        "user_id": "alice",
        "title": "Written by an older client",
        "recurrence": "FREQ=SOMETIMES",
        "completed_at": datetime.now(timezone.utc).isoformat(),
    }
    response = httpx.post(
        f"{backend_sidecar}/v1.0/publish/pubsub/task-events",
        params={"metadata.cloudevent.type": "task.completed"},
        json=poison,
        timeout=10,
    )
    assert response.status_code == 204, response.text
    recurring = running.url(events.RECURRING)

    def parked() -> list[dict[str, Any]]:
        listing = httpx.get(f"{recurring}/dapr/dead-letters", timeout=5).json()
        return [m for m in listing["parked"] if m["reason"] == "invalid_rule"]

    [message] = eventually(parked, 30, "the poison event to be parked")
    assert message["origin_topic"] == "task-events"
    assert "FREQ" in message["detail"]
    time.sleep(2)
    dropped = [
        line
        for line in running.lines(events.RECURRING)
        if line["message"].startswith("message dropped")
        and line["context"].get("message_id") == message["event_id"]
    ]
    assert len(dropped) == 1  # one delivery, no retry loop
    assert running.system.processes[events.RECURRING].poll() is None
    assert run.ready(recurring)


def test_a_restart_between_the_e_mail_and_backends_update_e_mails_once_and_tells_backend_once(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    title = "Renew the passport"
    remind_at = datetime.now(timezone.utc) + timedelta(seconds=8)
    with running.backend() as backend:
        created = backend.post(
            "/tasks",
            json={
                "title": title,
                "due_at": (remind_at + timedelta(hours=1)).isoformat(),
                "remind_at": remind_at.isoformat(),
            },
        )
        assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    job = events.reminder_job(task_id, remind_at)
    notifications = running.url(events.NOTIFICATIONS)

    def lines(message: str, since: int = 0) -> list[dict[str, Any]]:
        return [
            line
            for line in running.lines(events.NOTIFICATIONS)[since:]
            if line["message"] == message and line["context"].get("job") == job
        ]

    eventually(lambda: lines("reminder scheduled"), 30, "the reminder's job to be scheduled")
    # backend goes away: the e-mail goes out, the reminder-sent update cannot succeed.
    running.stop(events.BACKEND)

    def parked() -> list[dict[str, Any]]:
        listing = httpx.get(f"{notifications}/dapr/dead-letters", timeout=5).json()
        return [m for m in listing["parked"] if m["park_id"] == f"job/{job}"]

    eventually(lambda: running.mails(title), 60, "the e-mail")
    # Triggered again while backend stays away, then parked at the last trigger.
    [message] = eventually(parked, 60, "the reminder to be parked, backend not told")
    assert message["reason"] == "backend_unavailable"

    # The pod goes in the middle of the delivery: e-mailed, backend not told.
    running.stop(events.NOTIFICATIONS)
    restarted = len(running.lines(events.NOTIFICATIONS))  # the new process's lines follow
    running.start(events.NOTIFICATIONS)
    [message] = parked()  # the park is in the service's SQLite file, as is the record of sent
    running.start(events.BACKEND)

    replay = ["dlq", "--service", notifications, "replay", message["park_id"], "--wait", "2"]
    assert todo_obs(replay) == 0
    assert f"{message['park_id']} to job/reminder: published" in capsys.readouterr().out
    with running.backend() as backend:
        eventually(
            lambda: backend.get(f"/tasks/{task_id}").json().get("reminder_sent_at"),
            30,
            "backend to be told the reminder was sent",
        )
    eventually(lambda: lines("job done", restarted), 30, "the replayed trigger to finish")
    assert len(running.mails(title)) == 1
    assert lines("reminder e-mail sent", restarted) == []
    [skipped] = lines("reminder e-mail already sent; marking it sent on backend", restarted)
    assert skipped["context"]["attempt"] == 1  # the replay's first trigger
    told = [
        line
        for line in running.lines(events.BACKEND)
        if line["logger"] == "todo_observability.access"
        and line["context"].get("path") == f"/tasks/{task_id}/reminder-sent"
    ]
    assert [line["context"]["status"] for line in told] == [200]
    assert parked() == []


def test_only_the_new_time_of_a_moved_reminder_is_e_mailed_and_no_deleted_or_completed_one(
    running: Running,
) -> None:
    now = datetime.now(timezone.utc)
    due = (now + timedelta(hours=1)).isoformat()
    old, new = now + timedelta(seconds=6), now + timedelta(seconds=14)
    with running.backend() as backend:
        moved = backend.post(
            "/tasks", json={"title": "Moved reminder", "due_at": due, "remind_at": old.isoformat()}
        ).json()
        changed = backend.patch(f"/tasks/{moved['id']}", json={"remind_at": new.isoformat()})
        assert changed.status_code == 200, changed.text
        deleted = backend.post(
            "/tasks",
            json={"title": "Deleted reminder", "due_at": due, "remind_at": old.isoformat()},
        ).json()
        assert backend.delete(f"/tasks/{deleted['id']}").status_code == 204
        completed = backend.post(
            "/tasks",
            json={"title": "Completed reminder", "due_at": due, "remind_at": old.isoformat()},
        ).json()
        assert backend.post(f"/tasks/{completed['id']}/complete").status_code == 200
        # The premise: every change was made before the old time came.
        assert datetime.now(timezone.utc) < old

        # The new time comes after every cancelled one: had one fired, its e-mail came first.
        [mail] = eventually(lambda: running.mails("Moved reminder"), 60, "the moved reminder")
        eventually(lambda: backend.get(f"/tasks/{moved['id']}").json().get("reminder_sent_at"), 30)
    assert datetime.now(timezone.utc) >= new
    assert f"Message-ID: <{events.reminder_job(moved['id'], new)}@todo.local>" in mail.read_text()
    assert running.mails("Deleted reminder") == []
    assert running.mails("Completed reminder") == []
    cancelled = {
        line["context"]["job"]: line["context"]["reason"]
        for line in running.lines(events.NOTIFICATIONS)
        if line["message"] == "reminder cancelled"
    }
    for task_id, reason in (
        (moved["id"], "rescheduled"),
        (deleted["id"], "deleted"),
        (completed["id"], "completed"),
    ):
        assert cancelled.get(events.reminder_job(task_id, old)) == reason, cancelled


def test_backend_database_down_gives_503_and_writes_nothing(
    running: Running, database: PostgresCluster
) -> None:
    backend_url = running.url(events.BACKEND)
    with running.backend() as backend:
        before = backend.get("/tasks", params={"limit": 200}).json()
        database.stop()
        try:
            created = backend.post("/tasks", json={"title": "Lost?"})
            assert created.status_code == 503, created.text
            assert "database is unavailable" in created.json()["detail"]

            def not_ready() -> bool:
                return httpx.get(f"{backend_url}/health/ready", timeout=10).status_code == 503

            eventually(not_ready, 30, "backend's readiness to fail")
        finally:
            database.start()
        eventually(lambda: run.ready(backend_url), 30, "backend ready again")
        after = backend.get("/tasks", params={"limit": 200}).json()
    assert "Lost?" not in [task["title"] for task in after]
    assert len(after) == len(before)


SCENARIO_MOVES: dict[str, tuple[str, ...]] = {
    events.FRONTEND: (
        "http_server_requests_total",
        "http_server_request_duration_seconds_count",
        "http_client_requests_total",
        "http_client_request_duration_seconds_count",
        "health_check_status",
    ),
    events.BACKEND: (
        "http_server_requests_total",
        "http_server_request_duration_seconds_count",
        "messaging_publish_messages_total",
        "messaging_publish_duration_seconds_count",
        "tasks_created_total",
        "tasks_completed_total",
        "health_check_status",
        "health_check_duration_seconds_count",
    ),
    events.RECURRING: (
        "messaging_process_messages_total",
        "messaging_process_duration_seconds_count",
        "messaging_end_to_end_latency_seconds_count",
        "http_client_requests_total",
        "recurring_next_occurrence_duration_seconds_count",
        "recurring_next_occurrences_total",
    ),
    events.NOTIFICATIONS: (
        "messaging_process_messages_total",
        "jobs_scheduled_total",
        "job_triggers_total",
        "job_trigger_duration_seconds_count",
        "reminders_scheduled_total",
        "reminder_smtp_attempts_total",
        "reminder_emails_total",
        "reminder_delivery_latency_seconds_count",
    ),
}
"""Per service, the catalogued metrics the scenario must move (sample names: `_count` of histograms)."""


def catalogued(sample: str) -> bool:
    from reference_app.common.metrics import CATALOGUE as APP_CATALOGUE
    from todo_observability.metrics import CATALOGUE

    names = {spec.name for spec in (*CATALOGUE, *APP_CATALOGUE)}
    return sample in names or sample.removesuffix("_count") in names


def test_the_page_drives_one_trace_and_the_scenario_moves_every_metric_it_should(
    running: Running, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.reference_app.frontend.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser

    require_browser()
    from playwright.sync_api import expect, sync_playwright

    frontend = running.url(events.FRONTEND)
    # The form takes whole minutes: the next minute boundary after now + 16 min puts the reminder
    # (15 min before) 60 to 120 s ahead, always in the future when the page submits.
    due = (datetime.now(timezone.utc) + timedelta(minutes=17)).replace(second=0, microsecond=0)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            page.goto(frontend)
            page.select_option("#user_id", "bob")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#signed-in-as")).to_contain_text("Signed in as bob")
            # Two tasks with a reminder: the one completed below has its reminder cancelled,
            # the other one's reminder is e-mailed.
            for title in ("Feed the cat", "Water the plants"):
                page.fill("#title", title)
                page.fill("#due_at", due.strftime("%Y-%m-%dT%H:%M"))
                page.select_option("#recurrence", "WEEKLY")
                page.fill("#remind_minutes_before", "15")
                page.get_by_role("button", name="Add task").click()
                expect(page.locator("#open-tasks li.task", has_text=title)).to_have_count(1)
            item = page.locator("#open-tasks li.task", has_text="Water the plants")
            with page.expect_response(lambda r: r.url.endswith("/complete")) as completed:
                item.get_by_role("button", name="Complete").click()
            request_id = completed.value.headers["x-request-id"]
            expect(page.locator("#status")).to_contain_text("next occurrence")
        finally:
            context.close()

    # One trace: the page's click → frontend → backend → sidecars → recurring → backend.
    line = eventually(
        lambda: next(
            (
                line
                for line in running.lines(events.FRONTEND)
                if line.get("request_id") == request_id and line.get("trace_id")
            ),
            None,
        ),
        10,
    )
    trace_id = line["trace_id"]

    def hops() -> set[tuple[str, str]]:
        spans = load_spans(running.layout.spans) if running.layout.spans.exists() else []
        return {
            (s["localEndpoint"]["serviceName"], s["name"])
            for s in spans
            if s["traceId"] == trace_id
        }

    wanted = {
        (events.FRONTEND, "POST /api/tasks/{task_id}/complete"),
        (events.BACKEND, "POST /tasks/{task_id}/complete"),
        (events.RECURRING, "pubsub/task-events"),
        (events.RECURRING, "task-events process"),
        (events.RECURRING, "rrule.calculate_next_occurrence"),
        (events.BACKEND, "POST /tasks"),
    }
    eventually(lambda: wanted <= hops(), 30, "every hop's spans")
    for service in (events.FRONTEND, events.BACKEND, events.RECURRING):
        mine = [line for line in running.lines(service) if line.get("request_id") == request_id]
        assert mine, service
        assert {line["user_id"] for line in mine if line.get("user_id")} == {"bob"}, service

    # The e-mail of the open task's reminder, then every metric the scenario should move has moved.
    eventually(
        lambda: running.mails("Feed the cat"),
        180,  # the reminder is due 60 to 120 s after the page's submit
        "bob's reminder e-mail",
    )
    for service, samples in SCENARIO_MOVES.items():
        assert all(catalogued(sample) for sample in samples), samples
        text = httpx.get(f"{running.url(service)}/metrics", timeout=5).text
        moved = {
            sample.name
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.value > 0
        }
        assert set(samples) <= moved, (service, sorted(set(samples) - moved))


def test_a_forged_baggage_from_the_browser_reaches_no_service_s_logs(running: Running) -> None:
    """The frontend is the public edge: it neither believes nor passes on identity baggage."""
    forged = {
        "baggage": "user_id=forged-admin,request_id=forged-req-123",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    frontend = running.url(events.FRONTEND)
    with httpx.Client(base_url=frontend, headers=forged, timeout=20.0) as browser:
        assert browser.get("/").status_code == 200  # anonymous: the sign-in page
        signed_in = browser.post("/login", data={"user_id": "alice"}, follow_redirects=True)
        assert signed_in.status_code == 200
        listing = browser.get("/api/tasks")  # through the sidecar to the backend
        assert listing.status_code == 200, listing.text
    request_ids = {listing.headers["x-request-id"], signed_in.headers["x-request-id"]}

    def backend_saw_the_listing() -> bool:
        return any(line.get("request_id") in request_ids for line in running.lines(events.BACKEND))

    eventually(backend_saw_the_listing, 30, "the backend's line of the listing")
    for app_id in (events.FRONTEND, events.BACKEND, events.RECURRING, events.NOTIFICATIONS):
        text = json.dumps(running.lines(app_id))
        assert "forged-admin" not in text, app_id
        assert "forged-req-123" not in text, app_id
    listing_lines = [
        line for line in running.lines(events.BACKEND) if line.get("request_id") in request_ids
    ]
    assert {line["user_id"] for line in listing_lines} == {"alice"}
