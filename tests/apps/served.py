"""An app served by a real uvicorn process in tests/test_uvicorn.py (configured from the environment)."""

from __future__ import annotations

from fastapi import FastAPI

import todo_observability as obs

app = FastAPI()
log = obs.get_logger("served")


@app.get("/tasks/{task_id}")
def get_task(task_id: int) -> dict[str, int]:
    log.info("task read", extra={"task_id": task_id})
    return {"id": task_id}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("served failure")


obs.configure(app)
