from typing import Annotated

from fastapi import Depends, FastAPI, Header

import todo_observability as obs

app = FastAPI()
log = obs.get_logger(__name__)


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    user = authorization.removeprefix("Bearer ") or "anonymous"
    obs.set_user_id(user)  # every later log line of this request carries it
    return user


@app.get("/tasks/{task_id}")
async def get_task(task_id: int, user: Annotated[str, Depends(current_user)]) -> dict[str, int]:
    log.info("task read", extra={"task_id": task_id})  # JSON, with request_id, user_id, trace_id
    return {"id": task_id}


# Logs, /metrics, /health/*, traces, X-Request-ID. The name is a default: OTEL_SERVICE_NAME wins.
obs.configure(app, service_name="backend")
