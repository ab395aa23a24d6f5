"""The probe endpoints, and the hook that flips readiness when the process is told to stop."""

from __future__ import annotations

import hmac
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from todo_observability.context import _current_signals

if TYPE_CHECKING:
    from types import FrameType

    from starlette.types import Receive, Scope, Send

    from todo_observability.health.engine import GroupReport, HealthEngine
    from todo_observability.redaction import Redactor

__all__ = ["HealthEndpoints", "chain_shutdown_signals"]


class HealthEndpoints:
    """An ASGI app answering the three probes at their configured paths.

    200 when the group is UP or DEGRADED, 503 when it is DOWN; the JSON body
    has the overall status, the service's name and version, a timestamp and
    each check's status and duration (and, when the detail policy allows, its
    error and details, scrubbed: whatever a check returns or raises, a secret in
    it never reaches the body).

    Args:
        engine: The engine that runs the checks.
        paths: Path to probe: `{"/health/live": "live", ...}`.
        service: Name shown in the body.
        version: Version shown in the body.
        details: `"full"` shows errors and details to every caller; `"authenticated"`
            only to callers sending `Authorization: Bearer <token>`.
        token: The token of the `"authenticated"` policy.
        redactor: Scrubs errors and details; by default the current service's.
    """

    def __init__(
        self,
        engine: HealthEngine,
        paths: Mapping[str, str],
        *,
        service: str,
        version: str,
        details: str = "full",
        token: str | None = None,
        redactor: Redactor | None = None,
    ):
        self.engine = engine
        self.paths = dict(paths)
        self._probes: dict[str, Callable[[], Awaitable[GroupReport]]] = {
            "live": engine.live,
            "ready": engine.ready,
            "startup": engine.startup,
        }
        self._service = service
        self._version = version
        self._details = details
        self._token = f"Bearer {token}".encode() if token else None
        self._redactor = redactor

    def _show_details(self, scope: Scope) -> bool:
        if self._details == "full":
            return True
        if self._token is None:
            return False
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the probe at `scope["path"]`."""
        if scope["method"] not in ("GET", "HEAD"):
            response = JSONResponse(
                {"error": "use GET"}, status_code=405, headers={"allow": "GET, HEAD"}
            )
            await response(scope, receive, send)
            return
        report = await self._probes[self.paths[scope["path"]]]()
        details = self._show_details(scope)
        body = report.body(service=self._service, version=self._version, details=details)
        if details:
            self._scrub(body["checks"])
        response = JSONResponse(
            body, status_code=200 if report.healthy else 503, headers={"cache-control": "no-store"}
        )
        await response(scope, receive, send)

    def _scrub(self, checks: dict[str, dict[str, Any]]) -> None:
        # Every check's, not only the built-in ones' (which scrub their own): a check of the
        # service's may fail with a driver's message quoting its DSN.
        redactor = self._redactor or _current_signals().redactor
        for entry in checks.values():
            error = entry.get("error")
            if isinstance(error, str):
                entry["error"] = redactor.scrub_text(error)
            details = entry.get("details")
            if details:
                entry["details"] = redactor.redact(details)


def chain_shutdown_signals(on_shutdown: Callable[[], None]) -> Callable[[], None]:
    """Call `on_shutdown` first when SIGTERM or SIGINT arrives, then whatever handled it before.

    Servers (uvicorn, gunicorn workers) drain in-flight requests after the
    signal and run the lifespan shutdown last; readiness must turn 503 at the
    signal, so that Kubernetes stops routing before the drain. Returns a
    function that puts the previous handlers back. Off the main thread, where
    signal handlers cannot be set, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        on_shutdown()
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        elif before != signal.SIG_IGN and signum == signal.SIGINT:
            raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, before in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, before if before is not None else signal.SIG_DFL)

    return restore
