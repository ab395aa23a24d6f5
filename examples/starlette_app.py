"""A plain Starlette app: `configure(app)` works the same as with FastAPI."""

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from todo_observability import configure, get_logger

log = get_logger(__name__)


async def list_tasks(request: Request) -> JSONResponse:
    owner = request.path_params["owner"]
    log.info("tasks listed", extra={"owner": owner})
    return JSONResponse([{"id": 1, "owner": owner}])


def create_app(**overrides: Any) -> Starlette:
    app = Starlette(routes=[Route("/users/{owner}/tasks", list_tasks)])
    configure(app, service_name="starlette-example", **overrides)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
