"""The server-rendered pages: sign in, the task page, sign out."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from dateutil.parser import isoparse
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from reference_app.frontend.auth import (
    SESSION_COOKIE,
    SIGN_IN,
    SIGN_IN_AGAIN,
    MaybeSession,
    clear_session_cookie,
    same_origin,
    set_session_cookie,
)
from reference_app.frontend.backend import BackendUnavailable, RequestRejected, SessionRejected
from reference_app.frontend.forms import MAX_REMINDER_MINUTES
from reference_app.frontend.proxy import LIST_LIMIT

# Not under TYPE_CHECKING: FastAPI reads the dependencies of the routes' parameters at runtime.
from reference_app.frontend.state import Frontend, UsesFrontend  # noqa: TC001
from todo_observability import get_logger, set_user_id

__all__ = ["NOTICES", "RECURRENCE_PRESETS", "form_fields", "pages", "sign_in_page", "split_tasks"]

log = get_logger(__name__)
NOTICES = {
    "expired": "Your session has ended: sign in again.",
    "signed-out": "You are signed out.",
}
RECURRENCE_PRESETS = (("DAILY", "Daily"), ("WEEKLY", "Weekly"), ("MONTHLY", "Monthly"))
_FAR_FUTURE = datetime.max.replace(tzinfo=timezone.utc)
_FAR_PAST = datetime.min.replace(tzinfo=timezone.utc)

pages = APIRouter(include_in_schema=False)


def sign_in_page(
    frontend: Frontend,
    request: Request,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The sign-in page; a session cookie the request still carries is cleared."""
    response = frontend.page(
        request,
        "signin.html",
        {"users": frontend.settings.demo_users, "notice": notice, "error": error},
        status_code,
    )
    if request.cookies.get(SESSION_COOKIE):
        clear_session_cookie(response, frontend.settings)
    return response


@pages.get("/")
async def home(
    request: Request, frontend: UsesFrontend, session: MaybeSession, reason: str | None = None
) -> Response:
    """The task page when signed in, else the sign-in page."""
    if session is None:
        return sign_in_page(frontend, request, notice=NOTICES.get(reason or ""))
    tasks: list[Any] = []
    error, status = None, 200
    try:
        tasks = await frontend.backend.list_tasks(session.token, {"limit": LIST_LIMIT})
    except SessionRejected:
        response = RedirectResponse(SIGN_IN_AGAIN, status_code=303)
        clear_session_cookie(response, frontend.settings)
        return response
    except RequestRejected as exc:
        error, status = exc.message, exc.status
    except BackendUnavailable as exc:
        error, status = exc.message, 502
    open_tasks, completed_tasks = split_tasks(tasks)
    return frontend.page(
        request,
        "tasks.html",
        {
            "session": session,
            "open_tasks": open_tasks,
            "completed_tasks": completed_tasks,
            "error": error,
            "presets": RECURRENCE_PRESETS,
            "max_reminder": MAX_REMINDER_MINUTES,
            "now_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
        status,
    )


@pages.post("/login", dependencies=[Depends(same_origin)])
async def login(request: Request, frontend: UsesFrontend) -> Response:
    """Sign in as a demo user: the session cookie, then back to `/`."""
    requested = (await form_fields(request)).get("user_id", "")
    user = frontend.settings.demo_user(requested)
    if user is None:
        log.warning("sign-in refused: not a demo user", extra={"requested_user": requested[:64]})
        return sign_in_page(
            frontend, request, error="Choose one of the demo users.", status_code=400
        )
    set_user_id(user.user_id)
    log.info("user signed in")
    response = RedirectResponse("/", status_code=303)
    token = frontend.tokens.issue(user.user_id, email=user.email)
    set_session_cookie(response, token, frontend.settings)
    return response


@pages.post("/logout", dependencies=[Depends(same_origin)])
async def logout(frontend: UsesFrontend, session: MaybeSession) -> Response:
    """Forget the session cookie, then the sign-in page."""
    if session is not None:
        log.info("user signed out")
    response = RedirectResponse(f"{SIGN_IN}?reason=signed-out", status_code=303)
    clear_session_cookie(response, frontend.settings)
    return response


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a small `application/x-www-form-urlencoded` body (first value of each).

    Parsed here rather than with `Request.form()`, which needs python-multipart, for a form
    of one field.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > 4096:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=16)
    except ValueError:
        return {}
    return {name: values[0] for name, values in fields.items() if values}


def split_tasks(tasks: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(open tasks by due time, soonest first; completed tasks, latest first)."""
    valid = [task for task in tasks if isinstance(task, dict)]
    open_tasks = sorted(
        (task for task in valid if not task.get("completed")),
        key=lambda task: (_instant(task.get("due_at"), _FAR_FUTURE), task.get("id", 0)),
    )
    completed = sorted(
        (task for task in valid if task.get("completed")),
        key=lambda task: (_instant(task.get("completed_at"), _FAR_PAST), task.get("id", 0)),
        reverse=True,
    )
    return open_tasks, completed


def _instant(value: Any, default: datetime) -> datetime:
    if not isinstance(value, str) or not value:
        return default
    try:
        instant = isoparse(value)
    except ValueError:
        return default
    return instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)
