"""`bind_context` adds fields to every log line of a block or of a function's calls."""

from typing import Any

from fastapi import APIRouter, FastAPI

from todo_observability import bind_context, configure, get_logger

log = get_logger(__name__)
router = APIRouter()


@bind_context(component="scheduler")
async def schedule_reminder(task_id: int) -> None:
    log.info("reminder scheduled")  # context: component, task_id


@router.post("/tasks/{task_id}/complete")
async def complete_task(task_id: int) -> dict[str, Any]:
    with bind_context(task_id=task_id):
        log.info("task completed")  # context: task_id
        await schedule_reminder(task_id)
    log.info("done")  # context: {} again
    return {"id": task_id, "completed": True}


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(app, service_name="bind-context-example", **overrides)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
