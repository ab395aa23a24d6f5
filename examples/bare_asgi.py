"""Any ASGI app, without Starlette routing: wrap it in `ObservabilityMiddleware`.

Without routes there are no route templates, so metrics label every request
`route="<unmatched>"` and span names are just the method.
"""

from typing import Any

from starlette.types import Receive, Scope, Send

from todo_observability import ObservabilityMiddleware, configure, get_logger

log = get_logger(__name__)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    log.info("hello", extra={"path": scope["path"]})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello\n"})


def create_app(**overrides: Any) -> ObservabilityMiddleware:
    observability = configure(service_name="bare-asgi", **overrides)
    return ObservabilityMiddleware(hello, observability=observability)


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
