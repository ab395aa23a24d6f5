"""Health probes: a readiness check on a dependency, and a process-level liveness check.

Run it with `python examples/health.py`, then `curl -i localhost:8000/health/ready`.
"""

# --8<-- [start:app]
import asyncio
import time
from typing import Any

from fastapi import FastAPI

from todo_observability import configure
from todo_observability.health import Check, CheckResult


class Queue:
    """Stands in for a dependency: a broker, a database, an SMTP relay."""

    def __init__(self) -> None:
        self.reachable = True

    async def ping(self) -> float:
        if not self.reachable:
            raise ConnectionError("queue unreachable")
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        return time.perf_counter() - start


queue = Queue()


async def queue_check() -> CheckResult:
    """DOWN when the queue cannot be reached; DEGRADED when it is slow."""
    latency = await queue.ping()  # an exception becomes DOWN with its message
    if latency > 0.5:
        return CheckResult.degraded("queue is slow", latency_ms=round(latency * 1000))
    return CheckResult.up(latency_ms=round(latency * 1000, 1))


def create_app(**overrides: Any) -> FastAPI:
    app = FastAPI()
    configure(
        app,
        service_name="health-example",
        health_checks=[
            # A dependency: readiness and startup, never liveness.
            Check("queue", queue_check, groups=("ready", "startup"), timeout=2.0, ttl=5.0),
            # Process-level: the only kind liveness may run.
            Check("process", lambda: True, groups=("live",), dependency=False),
        ],
        **overrides,
    )
    return app


# --8<-- [end:app]
def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000, log_config=None)


if __name__ == "__main__":
    main()
