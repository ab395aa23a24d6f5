"""A Dapr sidecar (daprd) emulator speaking the Dapr HTTP API, for local runs and tests.

```python
broker = Broker()
async with Sidecar("backend", app_transport=httpx.ASGITransport(app=app), broker=broker) as dapr:
    async with dapr.client() as client:
        await client.post("/v1.0/publish/pubsub/orders", json={"id": 1})
    await broker.idle()
    assert dapr.deliveries[0].status_code == 200
```

As a process: `todo-obs sidecar --app backend:8001:3501`. Importing this package is cheap: each
name below is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from todo_observability.testing.sidecar.broker import Broker, Record
    from todo_observability.testing.sidecar.records import (
        DeliveryAttempt,
        JobTrigger,
        MessageResult,
    )
    from todo_observability.testing.sidecar.retry import RetryPolicy
    from todo_observability.testing.sidecar.runner import SidecarSpec, run_sidecars, serve
    from todo_observability.testing.sidecar.sidecar import Sidecar
    from todo_observability.testing.sidecar.subscriptions import (
        BulkSubscribe,
        Rule,
        Subscription,
        SubscriptionError,
        UnsupportedExpressionError,
    )

__all__ = [
    "Broker",
    "BulkSubscribe",
    "DeliveryAttempt",
    "JobTrigger",
    "MessageResult",
    "Record",
    "RetryPolicy",
    "Rule",
    "Sidecar",
    "SidecarSpec",
    "Subscription",
    "SubscriptionError",
    "UnsupportedExpressionError",
    "run_sidecars",
    "serve",
]

_LAZY = {
    "Broker": "todo_observability.testing.sidecar.broker",
    "BulkSubscribe": "todo_observability.testing.sidecar.subscriptions",
    "DeliveryAttempt": "todo_observability.testing.sidecar.records",
    "JobTrigger": "todo_observability.testing.sidecar.records",
    "MessageResult": "todo_observability.testing.sidecar.records",
    "Record": "todo_observability.testing.sidecar.broker",
    "RetryPolicy": "todo_observability.testing.sidecar.retry",
    "Rule": "todo_observability.testing.sidecar.subscriptions",
    "Sidecar": "todo_observability.testing.sidecar.sidecar",
    "SidecarSpec": "todo_observability.testing.sidecar.runner",
    "Subscription": "todo_observability.testing.sidecar.subscriptions",
    "SubscriptionError": "todo_observability.testing.sidecar.subscriptions",
    "UnsupportedExpressionError": "todo_observability.testing.sidecar.subscriptions",
    "run_sidecars": "todo_observability.testing.sidecar.runner",
    "serve": "todo_observability.testing.sidecar.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(
            f"module 'todo_observability.testing.sidecar' has no attribute {name!r}"
        )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
