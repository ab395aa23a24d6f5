"""pytest fixtures for services built with todo-observability.

```python
async def test_request_is_logged(make_observability, captured_logs):
    app = FastAPI()
    obs = make_observability(app, service_name="api")
    ...
    assert captured_logs.access()[0]["context"]["status"] == 200
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from todo_observability.testing import LogCapture, SpanCapture

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from todo_observability._observability import Observability

__all__ = ["captured_logs", "captured_spans", "make_observability", "metrics_registry"]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    """Every JSON log line written during the test, parsed."""
    capture = LogCapture()
    yield capture
    capture.uninstall()


@pytest.fixture
def captured_spans() -> SpanCapture:
    """The finished spans of every `Observability` that `make_observability` builds."""
    return SpanCapture()


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    """A fresh Prometheus registry."""
    return CollectorRegistry()


@pytest.fixture
def make_observability(
    captured_logs: LogCapture, captured_spans: SpanCapture, metrics_registry: CollectorRegistry
) -> Iterator[Callable[..., Observability]]:
    """A factory calling `configure()` for tests; everything it built is shut down afterwards.

    Defaults: the `metrics_registry` fixture's registry, in-memory spans
    (in `captured_spans`), every trace kept, no entry-point plugins, and log
    lines into `captured_logs`. Keyword arguments override them.
    """
    from todo_observability._configure import configure

    built: list[Observability] = []

    def factory(app: Any = None, **kwargs: Any) -> Observability:
        kwargs.setdefault("registry", metrics_registry)
        kwargs.setdefault("traces_exporter", "memory")
        kwargs.setdefault("sample_ratio", 1.0)
        kwargs.setdefault("load_plugins", False)
        kwargs.setdefault("log_stream", captured_logs)
        obs = configure(app, **kwargs)
        if obs not in built:
            built.append(obs)
            if obs.span_exporter is not None:
                captured_spans.watch(obs)
        return obs

    yield factory
    for obs in reversed(built):
        obs.shutdown()
