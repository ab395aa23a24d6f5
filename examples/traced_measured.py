"""`@traced` opens a child span and `@measured` records RED metrics, on sync and async functions."""

import asyncio
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI

from todo_observability import configure, get_logger, measured, traced

log = get_logger(__name__)
router = APIRouter()


@traced("recurrence.next_date", attributes={"component": "recurring"})
@measured("recurrence.next_date")
def next_date(day: date, every_days: int) -> date:
    if every_days <= 0:
        raise ValueError("every_days must be positive")
    following = day + timedelta(days=every_days)
    log.info("next date computed", extra={"next": following.isoformat()})  # span_id: this span
    return following


@traced()  # span name: the function's qualified name, "send_reminder"
@measured("reminder.send")
async def send_reminder(task_id: int) -> None:
    await asyncio.sleep(0.01)  # stands in for an SMTP call


@router.post("/tasks/{task_id}/recur")
async def recur(task_id: int, every_days: int = 1) -> dict[str, Any]:
    following = next_date(date(2025, 1, 6), every_days)
    await send_reminder(task_id)
    return {"id": task_id, "next": following.isoformat()}


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(app, service_name="traced-measured-example", **overrides)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
