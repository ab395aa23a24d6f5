"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
