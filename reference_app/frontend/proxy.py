"""The JSON API of the page's script: each call passed on to backend's tasks API, as the user."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from reference_app.frontend.auth import SignedIn, same_origin

# Not under TYPE_CHECKING: FastAPI reads the body model of `create_task` at runtime.
from reference_app.frontend.forms import NewTask  # noqa: TC001
from reference_app.frontend.state import NO_STORE, UsesFrontend
from todo_observability import get_logger

__all__ = ["LIST_LIMIT", "api"]

log = get_logger(__name__)
LIST_LIMIT = "200"
"""Tasks asked of backend per list (its maximum; it answers 50 when not told)."""

api = APIRouter(prefix="/api")


@api.get("/tasks")
async def list_tasks(
    frontend: UsesFrontend,
    session: SignedIn,
    completed: str | None = None,
    priority: str | None = None,
    tag: str | None = None,
    due_before: str | None = None,
    due_after: str | None = None,
    q: str | None = None,
    limit: str = LIST_LIMIT,
    offset: str | None = None,
) -> Response:
    """The user's tasks, from backend's `GET /tasks` with the same filters (backend checks them)."""
    given = {
        "completed": completed,
        "priority": priority,
        "tag": tag,
        "due_before": due_before,
        "due_after": due_after,
        "q": q,
        "limit": limit,
        "offset": offset,
    }
    filters = {name: value for name, value in given.items() if value}
    tasks = await frontend.backend.list_tasks(session.token, filters)
    return JSONResponse(tasks, headers=NO_STORE)


@api.post("/tasks", status_code=201, dependencies=[Depends(same_origin)])
async def create_task(task: NewTask, frontend: UsesFrontend, session: SignedIn) -> Response:
    """Create a task with backend's `POST /tasks`; backend's Task, 201."""
    created = await frontend.backend.create_task(session.token, task.to_backend())
    log.info(
        "task created",
        extra={
            "task_id": created["id"],
            "recurrence": created.get("recurrence"),
            "due_at": created.get("due_at"),
            "remind_at": created.get("remind_at"),
        },
    )
    return JSONResponse(created, status_code=201, headers=NO_STORE)


@api.post("/tasks/{task_id}/complete", dependencies=[Depends(same_origin)])
async def complete_task(task_id: int, frontend: UsesFrontend, session: SignedIn) -> Response:
    """Complete a task with backend's `POST /tasks/{id}/complete`; backend's Task."""
    task = await frontend.backend.complete_task(session.token, task_id)
    log.info("task completed", extra={"task_id": task_id, "recurrence": task.get("recurrence")})
    return JSONResponse(task, headers=NO_STORE)
