"""Small helpers shared by the tests."""

from __future__ import annotations

import socket
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
