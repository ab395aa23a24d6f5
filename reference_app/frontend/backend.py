"""The tasks API of backend, called only through Dapr service invocation with the user's token.

Every call is one `DaprClient.invoke`: a CLIENT span in the request's trace, client RED metrics
labelled `server_address="backend"`, and the trace context, request id and user id handed to the
sidecar. Backend's answers become values or one of three exceptions the pages and the JSON API
turn into what the user sees: sign in again (401), backend's own message (other 4xx), or "the
task service is unavailable" (5xx, or the sidecar could not deliver the call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from todo_observability import get_logger
from todo_observability.dapr import DaprError

if TYPE_CHECKING:
    import httpx

    from todo_observability.dapr import DaprClient

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "RequestRejected",
    "SessionRejected",
    "TasksBackend",
    "describe_detail",
]

log = get_logger(__name__)
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class BackendError(Exception):
    """Backend did not do what was asked; `message` is written for the user.

    Attributes:
        message: What to show on the page.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SessionRejected(BackendError):
    """Backend answered 401: the user's token is not (or no longer) accepted."""


class RequestRejected(BackendError):
    """Backend refused the request with a 4xx other than 401; its `detail` is passed on.

    Attributes:
        status: Backend's status code.
        detail: Backend's `detail`, as it sent it (a string, or FastAPI's list of errors).
    """

    def __init__(self, status: int, detail: Any, message: str | None = None):
        super().__init__(message or describe_detail(detail, status))
        self.status = status
        self.detail = detail


class BackendUnavailable(BackendError):
    """Backend failed (5xx, an unreadable answer) or the sidecar could not reach it."""


def describe_detail(detail: Any, status: int) -> str:
    """A sentence from an error `detail`: a string as is, FastAPI's error list as `field: problem`.

    Args:
        detail: The `detail` of an error body.
        status: The status it came with, named when the detail says nothing.
    """
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            where = ".".join(
                str(part)
                for index, part in enumerate(item.get("loc") or ())
                if not (index == 0 and part in _LOCATIONS)
            )
            # Backend's own messages already start with their field (`recurrence: ...`).
            named = not where or message.startswith(f"{where}:")
            parts.append(message if named else f"{where}: {message}")
        return "; ".join(parts)
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return str(detail["message"])
    return f"The task service refused the request (HTTP {status})."


def _error_body(response: httpx.Response) -> tuple[Any, str | None]:
    """(`detail`, `message`) of an error answer; backend's `message` summarises its `detail`."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500], None
    if not isinstance(body, dict):
        return body, None
    message = body.get("message")
    return body.get("detail"), message if isinstance(message, str) and message else None


class TasksBackend:
    """Backend's tasks API, reached through the frontend's Dapr sidecar.

    Args:
        dapr: The app's sidecar client.
        app_id: Backend's Dapr app id.
    """

    def __init__(self, dapr: DaprClient, app_id: str):
        self.dapr = dapr
        self.app_id = app_id

    async def list_tasks(self, token: str, filters: Mapping[str, str] | None = None) -> list[Any]:
        """The user's tasks (`GET /tasks`), narrowed by backend's `filters`."""
        tasks = await self._call("list tasks", "GET", "tasks", token, params=filters or None)
        if not isinstance(tasks, list):
            log.error(
                "backend answered a list of tasks with something else",
                extra={"action": "list tasks"},
            )
            raise BackendUnavailable("The task service answered something unexpected; try again.")
        return tasks

    async def create_task(self, token: str, task: Mapping[str, Any]) -> dict[str, Any]:
        """Create a task (`POST /tasks`); backend's Task."""
        return await self._task("create task", "POST", "tasks", token, json=dict(task))

    async def complete_task(self, token: str, task_id: int) -> dict[str, Any]:
        """Mark a task complete (`POST /tasks/{id}/complete`); backend's Task."""
        return await self._task("complete task", "POST", f"tasks/{task_id}/complete", token)

    async def _task(
        self, action: str, http_method: str, method: str, token: str, **kwargs: Any
    ) -> dict[str, Any]:
        task = await self._call(action, http_method, method, token, **kwargs)
        if not isinstance(task, dict) or "id" not in task:
            log.error("backend answered without a task", extra={"action": action})
            raise BackendUnavailable("The task service answered something unexpected; try again.")
        return task

    async def _call(
        self,
        action: str,
        http_method: str,
        method: str,
        token: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = await self.dapr.invoke(
                self.app_id,
                method,
                http_method=http_method,
                json=json,
                params=params,
                headers={"authorization": f"Bearer {token}", "accept": "application/json"},
            )
        except DaprError as exc:
            log.error(
                "backend unreachable through Dapr",
                extra={
                    "action": action,
                    "error_code": exc.error_code,
                    "status": exc.status,
                    "error": exc.detail,
                },
            )
            raise BackendUnavailable(
                f"The task service cannot be reached right now ({exc.error_code}); "
                "try again in a moment."
            ) from exc
        status = response.status_code
        if status == 401:
            detail, message = _error_body(response)
            log.warning(
                "backend refused the session",
                extra={"action": action, "detail": message or describe_detail(detail, status)},
            )
            raise SessionRejected("Your session is no longer valid: sign in again.")
        if 400 <= status < 500:
            rejected = RequestRejected(status, *_error_body(response))
            log.info(
                "backend rejected the request",
                extra={"action": action, "status": status, "detail": rejected.message},
            )
            raise rejected
        if not response.is_success:
            log.error(
                "backend failed",
                extra={"action": action, "status": status, "body": response.text[:500]},
            )
            raise BackendUnavailable(
                f"The task service failed (HTTP {status}); try again in a moment."
            )
        try:
            return response.json()
        except ValueError:
            log.error("backend answered without JSON", extra={"action": action, "status": status})
            raise BackendUnavailable(
                "The task service answered something unexpected; try again."
            ) from None
