from __future__ import annotations

import asyncio
import contextvars

import pytest

from todo_observability import bind_context, get_request_id, get_user_id, set_user_id
from todo_observability.context import (
    RequestContext,
    _enter_context,
    _exit_context,
    new_request_id,
    valid_request_id,
)
from todo_observability.context import (
    _current_fields as current_fields,
)


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    "value", ["abc", "a" * 128, "req-1:2/3+4=5@x_y.z", "550e8400-e29b-41d4-a716-446655440000"]
)
def test_valid_request_ids(value: str) -> None:
    assert valid_request_id(value) == value


@pytest.mark.parametrize("value", ["", "a" * 129, "a b", "a\nb", "ü", "<x>", None])
def test_invalid_request_ids(value: str | None) -> None:
    assert valid_request_id(value) is None


def test_bind_context_nests_and_unwinds() -> None:
    with bind_context(a=1):
        with bind_context(b=2, a=3) as fields:
            assert dict(fields) == {"a": 3, "b": 2}
        assert dict(current_fields()) == {"a": 1}
    assert dict(current_fields()) == {}


def test_bind_context_decorates_sync_and_async_functions() -> None:
    @bind_context(component="sync")
    def sync() -> dict[str, object]:
        return dict(current_fields())

    async def coro_body() -> dict[str, object]:
        await asyncio.sleep(0)
        return dict(current_fields())

    coro = bind_context(component="async")(coro_body)

    async def main() -> dict[str, object]:
        return await coro()

    assert sync() == {"component": "sync"}
    assert asyncio.run(main()) == {"component": "async"}
    assert dict(current_fields()) == {}


def test_concurrent_tasks_do_not_share_bound_fields() -> None:
    @bind_context(kind="worker")
    async def worker(n: int) -> dict[str, object]:
        with bind_context(n=n):
            await asyncio.sleep(0.001 * (3 - n))
            return dict(current_fields())

    async def main() -> list[dict[str, object]]:
        return list(await asyncio.gather(*(worker(n) for n in range(3))))

    assert asyncio.run(main()) == [{"kind": "worker", "n": n} for n in range(3)]


def test_set_user_id_mutates_the_shared_request_context() -> None:
    ctx = RequestContext("r-1")
    token = _enter_context(ctx)
    try:
        contextvars.copy_context().run(set_user_id, "u-1")  # as a thread-pool worker would
        assert ctx.user_id == "u-1"
        assert (get_request_id(), get_user_id()) == ("r-1", "u-1")
    finally:
        _exit_context(token)
    assert get_request_id() is None


def test_set_user_id_outside_a_request_starts_a_context() -> None:
    def run() -> tuple[str | None, str | None]:
        set_user_id("worker-user")
        return get_request_id(), get_user_id()

    request_id, user_id = contextvars.copy_context().run(run)
    assert user_id == "worker-user"
    assert request_id is not None
    assert get_user_id() is None


def test_request_context_repr_shows_ids() -> None:
    assert repr(RequestContext("r", "u")) == "RequestContext(request_id='r', user_id='u')"
