"""One thread at a time for a check's blocking work, never the event loop's default executor.

A thread cannot be cancelled. When a synchronous check hangs (a database that
accepts connections and never answers), starting a fresh thread at every TTL
piles up hung threads; with `asyncio.to_thread` they also fill the loop's
default executor, and then everything else that uses it (`loop.getaddrinfo`,
so every outgoing HTTP call) waits behind them. So each check owns a
`SingleThread`: while its previous run is still blocked, a new run is refused
at once with `StillRunning`, which the check reports as DOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SingleThread", "StillRunning"]

T = TypeVar("T")


class StillRunning(Exception):
    """The previous run of the check has not returned yet, so no new one was started.

    Attributes:
        since: Seconds the previous run has been running.
    """

    def __init__(self, since: float):
        super().__init__(
            f"still running since {since:.1f} s: the previous run has not returned, "
            "so no new one was started"
        )
        self.since = since


def _settle(future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
    if future.done():  # the caller gave up (timeout, cancelled probe)
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


class SingleThread:
    """Runs blocking functions on a daemon thread of their own, one at a time.

    Daemon, because a hung check must not keep the interpreter from exiting
    (the threads of a `ThreadPoolExecutor` are joined at exit).

    Args:
        name: The thread's name, for stack dumps.
    """

    __slots__ = ("_lock", "_name", "_started")

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._started: float | None = None

    @property
    def busy(self) -> bool:
        """Whether a run is still blocked in its thread."""
        return self._started is not None

    async def run(self, function: Callable[[], T]) -> T:
        """`function()` on a new thread, awaited on the running loop.

        Cancelling the caller (a timeout) stops the waiting, not the thread: the
        thread goes on until `function` returns, and until then every call raises.

        Raises:
            StillRunning: the previous run has not returned yet.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._started is not None:
                raise StillRunning(time.monotonic() - self._started)
            self._started = time.monotonic()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()  # as asyncio.to_thread does

        def work() -> None:
            ok = False
            outcome: object = RuntimeError("the check's thread ended without a result")
            try:
                ok, outcome = True, context.run(function)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
                outcome = exc
            finally:
                # Free before reporting, so that the caller never sees itself as still running.
                with self._lock:
                    self._started = None
                # A closed loop raises RuntimeError: nobody waits for this result any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, ok, outcome)

        try:
            threading.Thread(target=work, name=self._name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._started = None
            raise
        return await future
