"""The shared shape of `bind_context`, `measured` and `traced`: context managers that decorate sync and async functions."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from contextlib import AbstractContextManager

P = ParamSpec("P")
R = TypeVar("R")


class ContextDecorator:
    """Decorates sync and async functions so that every call runs inside `_fresh()`.

    Unlike `contextlib.ContextDecorator`, an async function's body (not just the
    creation of its coroutine) runs inside the block, and each call gets a
    context manager of its own, so concurrent calls never share state.
    """

    __slots__ = ()

    def _fresh(self, func: Callable[..., Any]) -> AbstractContextManager[Any]:
        """The context manager one call of `func` runs in."""
        raise NotImplementedError

    # An `async def` is typed as returning a Coroutine (not just an Awaitable), so that
    # asyncio.run(f()), create_task(f()) and TaskGroup.create_task(f()) type-check.
    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        """Wrap `func` (sync or async) so that each call runs inside the block."""
        fresh = self._fresh
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with fresh(func):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with fresh(func):
                return func(*args, **kwargs)

        return wrapper
