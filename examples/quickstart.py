"""Quickstart: one call instruments a FastAPI app.

Run it with `python examples/quickstart.py`, or `uvicorn examples.quickstart:create_app --factory`.
"""

# --8<-- [start:app]
from typing import Any

from fastapi import APIRouter, FastAPI

from todo_observability import configure, get_logger

log = get_logger(__name__)
router = APIRouter()


@router.get("/tasks/{task_id}")
async def read_task(task_id: int) -> dict[str, Any]:
    log.info("task read", extra={"task_id": task_id})
    return {"id": task_id, "title": "Daily standup"}


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(app, service_name="quickstart", **overrides)
    return app


# --8<-- [end:app]
def main() -> None:
    import os

    import uvicorn

    # log_config=None: keep the JSON logging that configure() set up.
    port = int(os.environ.get("PORT", "8000"))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_config=None)


if __name__ == "__main__":
    main()
