"""Record the authenticated user from a FastAPI dependency with `set_user_id`.

The dependency is a plain `def`, so FastAPI runs it in a thread pool; the user
id still reaches every later log line of the request and its access line.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException

from todo_observability import configure, get_logger, set_user_id

log = get_logger(__name__)
router = APIRouter()

# Stands in for a real token check (a JWT library, a session store...).
TOKENS = {"token-alice": "alice", "token-bob": "bob"}


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    user = TOKENS.get(authorization.removeprefix("Bearer "))
    if user is None:
        log.warning("rejected credentials", extra={"authorization": authorization})
        raise HTTPException(status_code=401, detail="unknown token")
    set_user_id(user)
    return user


@router.get("/me/tasks")
async def my_tasks(user: Annotated[str, Depends(current_user)]) -> list[dict[str, Any]]:
    log.info("listing tasks")
    return [{"id": 1, "owner": user}]


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    configure(app, service_name="user-id-example", **overrides)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
