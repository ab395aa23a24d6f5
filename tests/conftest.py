"""Shared fixtures. The SDK's own pytest plugin (todo_observability.testing) provides the rest."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop uvicorn uses."""
    return "asyncio"
