"""Two small services for the demo: `tasks` calls `notify` over HTTP with the instrumented client.

Run one with `uvicorn examples.demo.services:create_tasks_app --factory` (it reads
NOTIFY_URL) or `... :create_notify_app --factory`; both are configured from the
environment (OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER, TODO_OBS_TRACES_FILE, ...).
"""

from __future__ import annotations

import os

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException

import todo_observability as obs
from todo_observability.health import checks

log = obs.get_logger("demo")


def authenticate(authorization: str = Header(default="")) -> str:
    """A stand-in for real authentication: the bearer token is the user id."""
    user = authorization.removeprefix("Bearer ").strip()
    if not user:
        raise HTTPException(status_code=401, detail="send Authorization: Bearer <user>")
    obs.set_user_id(user)
    return user


@obs.traced("tasks.next_due")
def next_due(task_id: int) -> str:
    """Some domain work worth its own span."""
    return f"2026-12-0{task_id % 9 + 1}T09:00:00Z"


def create_tasks_app() -> FastAPI:
    """The `tasks` service: completes a task and asks `notify` to tell the user."""
    app = FastAPI(title="tasks")
    notify_url = os.environ.get("NOTIFY_URL", "http://127.0.0.1:8002")

    @app.post("/tasks/{task_id}/complete")
    async def complete(task_id: int, user: str = Depends(authenticate)) -> dict[str, object]:
        with obs.bind_context(task_id=task_id):
            due = next_due(task_id)
            log.info("task completed", extra={"next_due": due})
            async with obs.create_http_client(base_url=notify_url, timeout=5) as http:
                sent = await http.post("/notifications", json={"task_id": task_id, "due": due})
            return {"task_id": task_id, "next_due": due, "notified": sent.status_code == 202}

    # Readiness depends on the notify service answering its own liveness probe; notify is one
    # of ours, so calls to it carry the request id and the user id.
    obs.configure(
        app,
        health_checks=[checks.http(f"{notify_url}/health/live", name="notify")],
        internal_hosts=[httpx.URL(notify_url).host],
    )
    return app


def create_notify_app() -> FastAPI:
    """The `notify` service: pretends to send an e-mail."""
    app = FastAPI(title="notify")

    @app.post("/notifications", status_code=202)
    @obs.measured("email.send")
    async def notify(payload: dict[str, object]) -> dict[str, str]:
        log.info("notification queued", extra={"task_id": payload.get("task_id")})
        return {"status": "queued"}

    obs.configure(app)
    return app
