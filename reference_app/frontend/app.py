"""The frontend: a sign-in page, the task page, and the JSON API the page's JavaScript calls.

Pages are rendered on the server (Jinja2); `static/app.js` posts to `/api/...` and re-renders
the lists. Every call to backend goes through Dapr service invocation with the signed-in user's
bearer token (`backend.TasksBackend`), so one click is one trace: frontend → backend →
(pub/sub) → recurring → backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
from dateutil.parser import isoparse
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from reference_app.common.auth import InvalidToken, Tokens
from reference_app.common.events import FRONTEND
from reference_app.frontend.backend import (
    BackendUnavailable,
    RequestRejected,
    SessionRejected,
    TasksBackend,
    describe_detail,
)
from reference_app.frontend.forms import MAX_REMINDER_MINUTES, NewTask, format_utc
from reference_app.frontend.settings import Settings
from todo_observability import configure, get_logger, set_user_id
from todo_observability.dapr import DaprClient
from todo_observability.health import checks

__all__ = ["SESSION_COOKIE", "Frontend", "Session", "create_app"]

log = get_logger(__name__)
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "todo_session"
"""The cookie holding the signed-in user's JWT (HttpOnly, SameSite=Lax)."""
SIGN_IN = "/"
SIGN_IN_AGAIN = "/?reason=expired"
NOTICES = {
    "expired": "Your session has ended: sign in again.",
    "signed-out": "You are signed out.",
}
NOT_SIGNED_IN = "You are not signed in, or your session has ended: sign in again."
LIST_LIMIT = "200"
"""Tasks asked of backend per list (its maximum; it answers 50 when not told)."""
RECURRENCE_PRESETS = (("DAILY", "Daily"), ("WEEKLY", "Weekly"), ("MONTHLY", "Monthly"))
NO_STORE = {"cache-control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    # Scripts and styles come from /static only: there is no inline code to inject into.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
_FAR_FUTURE = datetime.max.replace(tzinfo=timezone.utc)
_FAR_PAST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Session:
    """A signed-in user, read from the session cookie.

    Attributes:
        user_id: The user.
        email: Their e-mail address, from the token.
        token: The JWT, sent to backend as the bearer token.
    """

    user_id: str
    email: str | None
    token: str


class SignInRequired(Exception):
    """A JSON API call without a valid session: the page sends the user to sign in."""


@dataclass(frozen=True)
class Frontend:
    """What the routes share: settings, tokens, backend and templates (`app.state.frontend`).

    Attributes:
        settings: The service's settings.
        tokens: Signs and verifies the session tokens.
        backend: Backend's tasks API, through Dapr.
        templates: The Jinja2 pages.
    """

    settings: Settings
    tokens: Tokens
    backend: TasksBackend
    templates: Jinja2Templates

    def page(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        """Render the page `name` with the security and caching headers every page gets."""
        return self.templates.TemplateResponse(
            request, name, context, status_code=status_code, headers=PAGE_HEADERS
        )

    def sign_in_page(
        self,
        request: Request,
        *,
        notice: str | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        """The sign-in page; a session cookie the request still carries is cleared."""
        response = self.page(
            request,
            "signin.html",
            {"users": self.settings.demo_users, "notice": notice, "error": error},
            status_code,
        )
        if request.cookies.get(SESSION_COOKIE):
            self.clear_session_cookie(response)
        return response

    def set_session_cookie(self, response: Response, token: str) -> None:
        """Hold `token` in an HttpOnly, SameSite=Lax cookie for the session's lifetime."""
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=self.settings.session_ttl_seconds,
            path="/",
            secure=self.settings.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def clear_session_cookie(self, response: Response) -> None:
        """Tell the browser to forget the session cookie."""
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=self.settings.cookie_secure,
            httponly=True,
            samesite="lax",
        )


# --- dependencies ------------------------------------------------------------------------------


def frontend_of(request: Request) -> Frontend:
    """The `Frontend` of the app serving `request`."""
    frontend: Frontend = request.app.state.frontend
    return frontend


async def current_session(request: Request) -> Session | None:
    """The session of a valid session cookie (and the request's user id), else None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        identity = frontend_of(request).tokens.verify(token)
    except InvalidToken as exc:
        log.info("session cookie refused", extra={"reason": str(exc)})
        return None
    set_user_id(identity.user_id)
    return Session(identity.user_id, identity.email, token)


MaybeSession = Annotated[Session | None, Depends(current_session)]
UsesFrontend = Annotated[Frontend, Depends(frontend_of)]


async def require_session(session: MaybeSession) -> Session:
    """The session; without one, `SignInRequired` (a 401 the page's script acts on)."""
    if session is None:
        raise SignInRequired(NOT_SIGNED_IN)
    return session


SignedIn = Annotated[Session, Depends(require_session)]


async def same_origin(request: Request) -> None:
    """Refuse a POST that another site's page sent (the browser names it in `Origin`)."""
    # Defence in depth beside SameSite=Lax, which already keeps the cookie off such requests.
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        log.warning("cross-origin request refused", extra={"origin": origin})
        raise HTTPException(403, "Cross-origin requests are not accepted.")


# --- pages -------------------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def home(
    request: Request, frontend: UsesFrontend, session: MaybeSession, reason: str | None = None
) -> Response:
    """The task page when signed in, else the sign-in page."""
    if session is None:
        return frontend.sign_in_page(request, notice=NOTICES.get(reason or ""))
    tasks: list[Any] = []
    error, status = None, 200
    try:
        tasks = await frontend.backend.list_tasks(session.token, {"limit": LIST_LIMIT})
    except SessionRejected:
        response = RedirectResponse(SIGN_IN_AGAIN, status_code=303)
        frontend.clear_session_cookie(response)
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
        return frontend.sign_in_page(
            request, error="Choose one of the demo users.", status_code=400
        )
    set_user_id(user.user_id)
    log.info("user signed in")
    response = RedirectResponse("/", status_code=303)
    frontend.set_session_cookie(response, frontend.tokens.issue(user.user_id, email=user.email))
    return response


@pages.post("/logout", dependencies=[Depends(same_origin)])
async def logout(frontend: UsesFrontend, session: MaybeSession) -> Response:
    """Forget the session cookie, then the sign-in page."""
    if session is not None:
        log.info("user signed out")
    response = RedirectResponse(f"{SIGN_IN}?reason=signed-out", status_code=303)
    frontend.clear_session_cookie(response)
    return response


# --- the JSON API of the page's script ---------------------------------------------------------

api = APIRouter(prefix="/api")


@api.get("/tasks")
async def list_tasks(
    frontend: UsesFrontend,
    session: SignedIn,
    completed: str | None = None,
    priority: str | None = None,
    tag: str | None = None,
    due_before: str | None = None,
    due_after: str | None = None,
    q: str | None = None,
    limit: str = LIST_LIMIT,
    offset: str | None = None,
) -> Response:
    """The user's tasks, from backend's `GET /tasks` with the same filters (backend checks them)."""
    given = {
        "completed": completed,
        "priority": priority,
        "tag": tag,
        "due_before": due_before,
        "due_after": due_after,
        "q": q,
        "limit": limit,
        "offset": offset,
    }
    filters = {name: value for name, value in given.items() if value}
    tasks = await frontend.backend.list_tasks(session.token, filters)
    return JSONResponse(tasks, headers=NO_STORE)


@api.post("/tasks", status_code=201, dependencies=[Depends(same_origin)])
async def create_task(task: NewTask, frontend: UsesFrontend, session: SignedIn) -> Response:
    """Create a task with backend's `POST /tasks`; backend's Task, 201."""
    created = await frontend.backend.create_task(session.token, task.to_backend())
    log.info(
        "task created",
        extra={
            "task_id": created["id"],
            "recurrence": created.get("recurrence"),
            "due_at": created.get("due_at"),
            "remind_at": created.get("remind_at"),
        },
    )
    return JSONResponse(created, status_code=201, headers=NO_STORE)


@api.post("/tasks/{task_id}/complete", dependencies=[Depends(same_origin)])
async def complete_task(task_id: int, frontend: UsesFrontend, session: SignedIn) -> Response:
    """Complete a task with backend's `POST /tasks/{id}/complete`; backend's Task."""
    task = await frontend.backend.complete_task(session.token, task_id)
    log.info("task completed", extra={"task_id": task_id, "recurrence": task.get("recurrence")})
    return JSONResponse(task, headers=NO_STORE)


def api_error(status: int, message: str, detail: Any = None, **extra: str) -> JSONResponse:
    """An error of the JSON API: `message` for people, `detail` as given (backend's, passed on)."""
    body = {"detail": message if detail is None else detail, "message": message, **extra}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=NO_STORE)


async def on_api_error(request: Request, exc: Exception) -> Response:
    """What the JSON API answers for a missing session and for backend's refusals and failures."""
    if isinstance(exc, SignInRequired | SessionRejected):
        # The page's script sends the user to `signin`; the refused cookie goes.
        message = exc.message if isinstance(exc, SessionRejected) else NOT_SIGNED_IN
        response = api_error(401, message, signin=SIGN_IN_AGAIN)
        frontend_of(request).clear_session_cookie(response)
        return response
    if isinstance(exc, RequestRejected):
        return api_error(exc.status, exc.message, exc.detail)
    if isinstance(exc, BackendUnavailable):
        return api_error(502, exc.message)
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    message = describe_detail(errors, 422)
    log.info("request refused: invalid", extra={"errors": message})
    return api_error(422, message, errors)


# --- the app -----------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    *,
    dapr_transport: httpx.AsyncBaseTransport | None = None,
    **observability: Any,
) -> FastAPI:
    """Build the frontend app.

    Args:
        settings: The settings; by default `Settings.from_env()`.
        dapr_transport: How to reach the sidecar instead of its HTTP endpoint (tests pass
            `httpx.ASGITransport(app=sidecar.asgi)`); used by the Dapr client and the
            readiness check.
        **observability: Passed on to `todo_observability.configure` (tests give a registry,
            the memory span exporter, a log stream).

    Returns:
        The app, instrumented, with its readiness check on the Dapr sidecar.
    """
    settings = settings or Settings.from_env()
    dapr = DaprClient(
        settings.dapr_endpoint,
        api_token=settings.dapr_api_token,
        timeout=settings.backend_timeout,
        transport=dapr_transport,
    )
    # The readiness check makes a short-lived client per run unless it is given one; with an
    # injected transport it needs one of its own, closed with the app.
    probe_client = httpx.AsyncClient(transport=dapr_transport) if dapr_transport else None
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["utc"] = format_utc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info(
            "frontend started",
            extra={
                "backend_app_id": settings.backend_app_id,
                "dapr_endpoint": settings.dapr_endpoint,
                "demo_users": [user.user_id for user in settings.demo_users],
            },
        )
        try:
            yield
        finally:
            await dapr.aclose()
            if probe_client is not None:
                await probe_client.aclose()

    app = FastAPI(
        title="todo frontend", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.frontend = Frontend(
        settings=settings,
        tokens=Tokens(settings.jwt_secret, ttl_seconds=settings.session_ttl_seconds),
        backend=TasksBackend(dapr, settings.backend_app_id),
        templates=templates,
    )
    app.include_router(pages)
    app.include_router(api)
    for kind in (
        SignInRequired,
        SessionRejected,
        RequestRejected,
        BackendUnavailable,
        RequestValidationError,
    ):
        app.add_exception_handler(kind, on_api_error)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    configure(
        app,
        service_name=FRONTEND,
        health_checks=[
            checks.dapr_sidecar(
                base_url=settings.dapr_endpoint,
                api_token=settings.dapr_api_token,
                client=probe_client,
            )
        ],
        **observability,
    )
    if settings.uses_dev_secret:
        log.warning(
            "JWT_SECRET is not set: sessions are signed with the public development secret; "
            "set JWT_SECRET (the secret every service shares) outside development",
            extra={"environment": settings.environment},
        )
    return app


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
