"""Shared fixtures. The SDK's own pytest plugin (todo_observability.testing) provides the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

_INSTRUMENTORS = (
    ("opentelemetry.instrumentation.sqlalchemy", "SQLAlchemyInstrumentor"),
    ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
    ("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor"),
)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop uvicorn uses."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    """Each test ends with no library instrumented: `instrument_*()` patches the whole process."""
    yield
    import importlib
    import sys

    for module, name in _INSTRUMENTORS:
        if sys.modules.get(module) is None:
            continue  # never imported: nothing instrumented
        instrumentor = getattr(importlib.import_module(module), name)()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
