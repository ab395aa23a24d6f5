"""The HTTP API: routes, the bearer-token dependency, and how errors are answered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from reference_app.backend.db import UNAVAILABLE_ERRORS
from reference_app.backend.runtime import Backend
from reference_app.backend.schemas import (
    MAX_ID,
    ErrorBody,
    InvalidTask,
    Moment,
    Priority,
    TaskCreate,
    TaskOut,
    TaskUpdate,
    Text,
)
from reference_app.backend.service import TaskFilters, TaskNotFound
from reference_app.common.auth import Identity, InvalidToken
from todo_observability import get_logger, set_user_id

log = get_logger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    description="An HS256 JWT whose subject is the user (see reference_app.common.auth).",
)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token, or one that is not valid."},
    422: {"description": "Invalid input: `detail` lists each error, `message` sums them up."},
    503: {"model": ErrorBody, "description": "The database is unavailable."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such task for this user."}
}
UNREADABLE: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body cannot be read as JSON text."}
}


def get_backend(request: Request) -> Backend:
    """The service objects of the app serving the request."""
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def current_identity(
    request: Request,
    backend: BackendDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Identity:
    """The user the bearer token speaks for; every later log line of the request names them.

    Raises:
        HTTPException: 401 saying what is wrong with the token (the access log records it).
    """
    if not request.headers.get("authorization"):
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if credentials is None:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    try:
        identity = backend.tokens.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    set_user_id(identity.user_id)
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]
TaskIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.")]

router = APIRouter(tags=["tasks"], responses=ERRORS)


@router.post(
    "/tasks",
    status_code=201,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "This occurrence already existed."},
        **UNREADABLE,
    },
)
async def create_task(
    body: TaskCreate, identity: CurrentIdentity, backend: BackendDep, response: Response
) -> TaskOut:
    """Create a task (201), or get the existing occurrence of `recurrence_of` at `due_at` (200)."""
    task, created = await backend.tasks.create(identity, body)
    if not created:
        response.status_code = 200
    return TaskOut.of(task)


@router.get("/tasks", response_model=list[TaskOut])
async def list_tasks(
    identity: CurrentIdentity,
    backend: BackendDep,
    completed: bool | None = None,
    priority: Priority | None = None,
    tag: Annotated[Text | None, Query(max_length=32, description="Tasks with this tag.")] = None,
    due_before: Annotated[Moment | None, Query(description="Due strictly before.")] = None,
    due_after: Annotated[Moment | None, Query(description="Due strictly after.")] = None,
    q: Annotated[
        Text | None, Query(max_length=200, description="In the title or description.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[TaskOut]:
    """The caller's tasks, by due time (tasks without one last), filtered."""
    filters = TaskFilters(
        completed=completed,
        priority=priority,
        tag=tag.strip() if tag else None,
        due_before=due_before,
        due_after=due_after,
        q=q,
        limit=limit,
        offset=offset,
    )
    return [TaskOut.of(task) for task in await backend.tasks.find(identity, filters)]


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=NOT_FOUND)
async def get_task(task_id: TaskIdPath, identity: CurrentIdentity, backend: BackendDep) -> TaskOut:
    """One of the caller's tasks."""
    return TaskOut.of(await backend.tasks.get(identity, task_id))


@router.patch("/tasks/{task_id}", response_model=TaskOut, responses={**NOT_FOUND, **UNREADABLE})
async def update_task(
    task_id: TaskIdPath, body: TaskUpdate, identity: CurrentIdentity, backend: BackendDep
) -> TaskOut:
    """Change the fields given; `null` clears `due_at`, `remind_at` or `recurrence`."""
    return TaskOut.of(await backend.tasks.update(identity, task_id, body))


@router.delete("/tasks/{task_id}", status_code=204, responses=NOT_FOUND)
async def delete_task(task_id: TaskIdPath, identity: CurrentIdentity, backend: BackendDep) -> None:
    """Delete one of the caller's tasks."""
    await backend.tasks.delete(identity, task_id)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut, responses=NOT_FOUND)
async def complete_task(
    task_id: TaskIdPath, identity: CurrentIdentity, backend: BackendDep
) -> TaskOut:
    """Mark the task complete (again: no change, no second event)."""
    return TaskOut.of(await backend.tasks.complete(identity, task_id))


@router.post("/tasks/{task_id}/reminder-sent", response_model=TaskOut, responses=NOT_FOUND)
async def reminder_sent(
    task_id: TaskIdPath, identity: CurrentIdentity, backend: BackendDep
) -> TaskOut:
    """Record that the reminder e-mail was sent (again: no change)."""
    return TaskOut.of(await backend.tasks.reminder_sent(identity, task_id))


# -- errors ------------------------------------------------------------------------------------


def _summary(errors: list[Any]) -> str:
    """`title: String should have at least 1 character; recurrence: invalid ...`."""
    parts = []
    for error in errors:
        location = error.get("loc", ())
        field = ".".join(str(p) for p in location if p not in ("body", "query", "path")) or "body"
        message = str(error.get("msg", "invalid"))
        parts.append(message if message.startswith(f"{field}:") else f"{field}: {message}")
    return "; ".join(parts)


def _unprocessable(errors: list[Any]) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content=jsonable_encoder({"detail": errors, "message": _summary(errors)}),
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _unprocessable(list(exc.errors()))


async def _on_invalid_task(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidTask)
    return _unprocessable(exc.errors)


async def _on_not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _on_database_unavailable(request: Request, exc: Exception) -> Response:
    cause = getattr(exc, "orig", None) or exc
    log.warning(
        "database unavailable",
        extra={"error": f"{type(cause).__name__}: {' '.join(str(cause).split())[:500]}"},
    )
    return JSONResponse(
        status_code=503,
        content={"detail": "the database is unavailable; try again in a few seconds"},
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    """Add the routes and the error answers to `app`."""
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(InvalidTask, _on_invalid_task)
    app.add_exception_handler(TaskNotFound, _on_not_found)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _on_database_unavailable)
