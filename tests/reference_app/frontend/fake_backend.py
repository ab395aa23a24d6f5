"""A stand-in for backend's tasks API, with the contract the frontend codes against.

`GET /tasks`, `POST /tasks` (201) and `POST /tasks/{id}/complete`, per user from the bearer
token (401 with `detail` when it is bad), 422 naming the wrong part of a recurrence rule. It
records every request and can be told to fail the next ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from reference_app.common.auth import DEV_JWT_SECRET, InvalidToken, Tokens
from reference_app.common.recurrence import InvalidRule, parse_rule


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


class TaskIn(BaseModel):
    title: str
    description: str = ""
    due_at: datetime | None = None
    priority: Literal["low", "medium", "high"] = "medium"
    tags: list[str] = []
    recurrence: str | None = None
    remind_at: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


@dataclass
class FakeBackend:
    secret: str = DEV_JWT_SECRET
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    failures: list[tuple[int, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = Tokens(self.secret)
        self.app = self._build()

    def fail_next(self, status: int, detail: Any = "injected failure") -> None:
        self.failures.append((status, detail))

    def add(self, user_id: str, title: str, **fields: Any) -> dict[str, Any]:
        now = _iso(datetime.now(timezone.utc))
        task_id = max(self.tasks, default=0) + 1
        task: dict[str, Any] = {
            "id": task_id,
            "title": title,
            "description": "",
            "due_at": None,
            "priority": "medium",
            "tags": [],
            "recurrence": None,
            "remind_at": None,
            "completed": False,
            "completed_at": None,
            "reminder_sent_at": None,
            "recurrence_of": None,
            "created_at": now,
            "updated_at": now,
            **fields,
            "user_id": user_id,
        }
        self.tasks[task_id] = task
        return task

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    @staticmethod
    def public(task: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in task.items() if key != "user_id"}

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.fake = self
        app.include_router(router)
        return app


def _fake(request: Request) -> FakeBackend:
    fake: FakeBackend = request.app.state.fake
    return fake


async def _record(request: Request) -> None:
    fake = _fake(request)
    body = await request.body()
    fake.requests.append(
        Received(
            request.method,
            request.url.path,
            request.url.query,
            dict(request.headers),
            await request.json() if body else None,
        )
    )
    if fake.failures:
        status, detail = fake.failures.pop(0)
        raise HTTPException(status, detail)


def _user(request: Request, authorization: Annotated[str, Header()] = "") -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token")
    try:
        return _fake(request).tokens.verify(token).user_id
    except InvalidToken as exc:
        raise HTTPException(401, str(exc)) from None


Fake = Annotated[FakeBackend, Depends(_fake)]
User = Annotated[str, Depends(_user)]
router = APIRouter(dependencies=[Depends(_record)])


@router.get("/tasks")
async def list_tasks(
    fake: Fake, user_id: User, completed: bool | None = None
) -> list[dict[str, Any]]:
    return [
        fake.public(task)
        for task in fake.tasks.values()
        if task["user_id"] == user_id and (completed is None or task["completed"] == completed)
    ]


@router.post("/tasks", status_code=201, response_model=None)
async def create(task: TaskIn, fake: Fake, user_id: User) -> dict[str, Any] | JSONResponse:
    if task.recurrence:
        try:
            parse_rule(task.recurrence, task.due_at or datetime.now(timezone.utc))
        except InvalidRule as exc:
            # The real backend's shape: FastAPI's error list, and a summary in `message`.
            message = f"recurrence: {exc}"
            error = {"type": "value_error", "loc": ["body", "recurrence"], "msg": message}
            return JSONResponse({"detail": [error], "message": message}, status_code=422)
    created = fake.add(
        user_id,
        task.title,
        description=task.description,
        due_at=_iso(task.due_at),
        priority=task.priority,
        tags=task.tags,
        recurrence=task.recurrence,
        remind_at=_iso(task.remind_at),
    )
    return fake.public(created)


@router.post("/tasks/{task_id}/complete")
async def complete(task_id: int, fake: Fake, user_id: User) -> dict[str, Any]:
    task = fake.tasks.get(task_id)
    if task is None or task["user_id"] != user_id:
        raise HTTPException(404, f"task {task_id} not found")
    task["completed"] = True
    task["completed_at"] = task["updated_at"] = _iso(datetime.now(timezone.utc))
    return fake.public(task)
