"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx

from todo_observability._observability import Observability


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    """An HTTP client that calls `app` in process through ASGI."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def spans(obs: Observability) -> list[Any]:
    """The finished spans of an Observability built with the memory exporter."""
    assert obs.span_exporter is not None
    return list(obs.span_exporter.get_finished_spans())


def server_spans(obs: Observability) -> list[Any]:
    from opentelemetry.trace import SpanKind

    return [span for span in spans(obs) if span.kind is SpanKind.SERVER]


T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll `check` until it returns something truthy, and return it; fail at the deadline.

    `what` names the wait in the failure; a callable is called then (to show logs, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {described or check}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reply_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer a stdlib HTTP request with `body` as JSON."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class LoopbackServer:
    """A stdlib HTTP server on a free loopback port, serving from a thread until `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int) -> AsyncIterator[None]:
    """Serve the ASGI `app` with uvicorn on loopback `port`, in this event loop."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        # The test owns the signals; uvicorn must not install (and re-raise) its own.
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    # No log config, no log level: uvicorn would change its loggers for the rest of the session.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level=None, lifespan="off"
    )
    server = Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), f"the app on port {port} did not start"
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


def todo_obs() -> list[str]:
    """The command line that runs `todo-obs` from this environment."""
    script = Path(sys.executable).with_name("todo-obs")
    return [str(script)] if script.exists() else [sys.executable, "-m", "todo_observability.cli"]


class SilentServer:
    """A TCP server that accepts connections, holds them open, and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()
        for connection in self.accepted:
            connection.close()
