"""Two services on Dapr: one trace from an HTTP request through pub/sub and back by invocation.

`backend` publishes `task.completed` when a task is completed. `recurring`
subscribes to it, computes the next occurrence and creates it by invoking
`backend`. A poison event (a rule without FREQ) is dropped with its reason and
parked from the dead-letter topic, replayable with `todo-obs dlq`.

Run each service next to its sidecar (`dapr run`, or the emulator:
`todo-obs sidecar --app backend:8001:3501 --app recurring:8002:3502`), then
`SERVICE=backend PORT=8001 DAPR_HTTP_PORT=3501 python -m examples.dapr_services`
and `SERVICE=recurring PORT=8002 DAPR_HTTP_PORT=3502 python -m examples.dapr_services`.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from todo_observability import configure, get_logger
from todo_observability.dapr import DaprClient, Drop, Message, Retry, Subscriptions

log = get_logger(__name__)


def _lifespan(dapr: DaprClient) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await dapr.aclose()

    return lifespan


def create_backend(dapr: DaprClient | None = None, **overrides: Any) -> FastAPI:
    dapr = dapr or DaprClient()
    app = FastAPI(lifespan=_lifespan(dapr))
    tasks: dict[int, dict[str, Any]] = {
        1: {"id": 1, "title": "Daily standup", "rrule": "FREQ=DAILY"}
    }

    @app.post("/tasks/{task_id}/complete")
    async def complete(task_id: int) -> dict[str, Any]:
        task = tasks[task_id]
        await dapr.publish("pubsub", "task-events", task, event_type="task.completed")
        log.info("task completed", extra={"task_id": task_id})
        return {"completed": task_id}

    @app.post("/tasks", status_code=201)
    async def create(task: dict[str, Any]) -> dict[str, Any]:
        task["id"] = max(tasks) + 1
        tasks[task["id"]] = task
        log.info("task created", extra={"task_id": task["id"]})
        return task

    configure(app, service_name="backend", **overrides)
    return app


def create_recurring(dapr: DaprClient | None = None, **overrides: Any) -> FastAPI:
    dapr = dapr or DaprClient()
    subscriptions = Subscriptions(client=dapr)

    @subscriptions.subscribe(
        "pubsub",
        "task-events",
        match='event.type == "task.completed"',
        dead_letter_topic="task-events-dlq",
    )
    async def on_completed(message: Message) -> None:
        rule = message.data.get("rrule", "")
        if "FREQ=" not in rule:
            raise Drop("invalid_rrule", f"{rule!r} has no FREQ")
        next_task = {"title": message.data["title"], "rrule": rule, "after": message.data["id"]}
        response = await dapr.invoke("backend", "tasks", json=next_task)
        if response.status_code >= 500:
            raise Retry("backend_unavailable", f"backend answered {response.status_code}")
        log.info("next occurrence created", extra={"task_id": response.json()["id"]})

    subscriptions.park_dead_letters("pubsub", "task-events-dlq")
    app = FastAPI(lifespan=_lifespan(dapr))
    subscriptions.install(app)
    configure(app, service_name="recurring", **overrides)
    return app


def main() -> None:
    """Run one service: `SERVICE=backend|recurring PORT=... DAPR_HTTP_PORT=...`."""
    import uvicorn

    service = os.environ.get("SERVICE", "backend")
    app = create_recurring() if service == "recurring" else create_backend()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")), log_config=None)


if __name__ == "__main__":
    main()
