"""What the SDK scrubs: secrets by key and by shape, in messages, `extra`, exceptions and probe bodies."""

from typing import Any

from fastapi import APIRouter, FastAPI

from todo_observability import configure, get_logger
from todo_observability.health import Check

log = get_logger(__name__)
router = APIRouter()
DATABASE_URL = "postgresql://todo:s3cr3t-pw@db.internal:5432/todo"


def database() -> None:
    # A driver's error quoting the DSN it was given: the probe body shows it scrubbed.
    raise ConnectionError(f"could not connect to {DATABASE_URL}")


@router.post("/login")
async def login() -> dict[str, Any]:
    log.info("connecting to %s", DATABASE_URL)
    log.warning(
        "upstream refused",
        extra={
            "url": "https://api.example.com/v1/me?page=1&access_token=tok-123",
            "headers": {"Authorization": "Bearer tok-123", "Accept": "application/json"},
            "db_pass": "s3cr3t-pw",
        },
    )
    try:
        raise PermissionError("token=tok-123 was rejected")
    except PermissionError:
        log.exception("login failed")
    return {"ok": False}


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(
        app,
        service_name="scrubbing-example",
        health_checks=[Check("database", database)],
        **overrides,
    )
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
