"""A plugin: adds a field to every log line and resolves the user id from a gateway header.

Pass it to `configure(plugins=[...])`, or publish it under the `todo_observability`
entry-point group so that every service that installs it loads it.
"""

from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI

from todo_observability import configure, get_logger
from todo_observability.plugins import hookimpl

log = get_logger(__name__)
router = APIRouter()


class TeamPlugin:
    def __init__(self, team: str) -> None:
        self.team = team

    @hookimpl
    def todo_observability_enrich_log_record(self, record: MutableMapping[str, Any]) -> None:
        record["team"] = self.team

    @hookimpl
    def todo_observability_resolve_user_id(self, scope: MutableMapping[str, Any]) -> str | None:
        # The gateway in front of the service has already authenticated the caller.
        for name, value in scope["headers"]:
            if name == b"x-authenticated-user":
                return str(value.decode("latin-1"))
        return None


@router.get("/ping")
async def ping() -> dict[str, str]:
    log.info("pong")
    return {"ping": "pong"}


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(app, service_name="plugin-example", plugins=[TeamPlugin("tasks")], **overrides)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
