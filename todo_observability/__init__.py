"""todo-observability: correlated JSON logs, RED metrics and traces for Starlette/FastAPI services on Dapr.

    from fastapi import FastAPI
    import todo_observability as obs

    app = FastAPI()
    obs.configure(app, service_name="backend")

Importing the package is cheap: each name below is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from todo_observability._version import __version__

if TYPE_CHECKING:
    from todo_observability._configure import configure
    from todo_observability._observability import Observability
    from todo_observability.asgi import ObservabilityMiddleware
    from todo_observability.context import bind_context, get_request_id, get_user_id, set_user_id
    from todo_observability.exceptions import ConfigurationError, ObservabilityError
    from todo_observability.httpclient import create_http_client
    from todo_observability.instrumentation import (
        instrument_asyncpg,
        instrument_httpx,
        instrument_redis,
        instrument_sqlalchemy,
    )
    from todo_observability.logs import get_logger
    from todo_observability.operations import measured
    from todo_observability.tracing import traced

__all__ = [
    "ConfigurationError",
    "Observability",
    "ObservabilityError",
    "ObservabilityMiddleware",
    "__version__",
    "bind_context",
    "configure",
    "create_http_client",
    "get_logger",
    "get_request_id",
    "get_user_id",
    "instrument_asyncpg",
    "instrument_httpx",
    "instrument_redis",
    "instrument_sqlalchemy",
    "measured",
    "set_user_id",
    "traced",
]

_LAZY = {
    "ConfigurationError": "todo_observability.exceptions",
    "Observability": "todo_observability._observability",
    "ObservabilityError": "todo_observability.exceptions",
    "ObservabilityMiddleware": "todo_observability.asgi",
    "bind_context": "todo_observability.context",
    "configure": "todo_observability._configure",
    "create_http_client": "todo_observability.httpclient",
    "get_logger": "todo_observability.logs",
    "get_request_id": "todo_observability.context",
    "get_user_id": "todo_observability.context",
    "instrument_asyncpg": "todo_observability.instrumentation",
    "instrument_httpx": "todo_observability.instrumentation",
    "instrument_redis": "todo_observability.instrumentation",
    "instrument_sqlalchemy": "todo_observability.instrumentation",
    "measured": "todo_observability.operations",
    "set_user_id": "todo_observability.context",
    "traced": "todo_observability.tracing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'todo_observability' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
