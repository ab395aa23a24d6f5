"""User code against the public API: `mypy --strict` must accept it, and each `assert_type` must hold.

Checked by `nox -s typecheck` (mypy --strict over tests/); never imported or run.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from fastapi import FastAPI

import todo_observability as obs
from todo_observability import Observability

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:  # never run; the checker reads this file
    assert_type = None


@obs.traced("work.async")
async def fetch(task_id: int) -> str:
    return str(task_id)


@obs.measured("work.sync")
def compute(value: float) -> float:
    return value * 2


@obs.bind_context(component="typing")
async def bound() -> int:
    return 1


async def main() -> None:
    assert_type(await fetch(1), str)
    task = asyncio.create_task(fetch(2))
    assert_type(task, "asyncio.Task[str]")
    assert_type(await bound(), int)
    assert_type(compute(1.5), float)
    with obs.measured("block"):
        pass
    with obs.bind_context(task_id=1):
        pass
    if sys.version_info >= (3, 11):
        async with asyncio.TaskGroup() as group:
            assert_type(group.create_task(fetch(3)), "asyncio.Task[str]")


app = FastAPI()
observability = obs.configure(app, service_name="typing")
assert_type(observability, Observability)
assert_type(obs.get_request_id(), "str | None")
assert_type(obs.get_user_id(), "str | None")
obs.set_user_id("alice")
log = obs.get_logger(__name__)
client = obs.create_http_client(base_url="http://backend")
assert_type(asyncio.run(fetch(4)), str)
assert_type(observability.flush(1000), bool)
