"""The notification service in process: its sidecar, a fake backend behind its own, a real SMTP server.

Both sidecars share one `Broker`: the fake backend publishes `reminder.scheduled` the way the
real one does (from an HTTP request, so the request id and user travel as baggage), the
notification sidecar schedules and triggers the reminder jobs, and invocation of
`POST /tasks/{id}/reminder-sent` crosses back to the fake backend through the broker.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from reference_app.common.auth import DEV_JWT_SECRET, Identity, InvalidToken, Tokens
from reference_app.common.events import (
    BACKEND,
    NOTIFICATIONS,
    PUBSUB,
    REMINDER_CANCELLED,
    REMINDER_SCHEDULED,
    REMINDERS,
)
from reference_app.notifications import Settings, create_app
from tests.helpers import free_port
from todo_observability import Observability, set_user_id
from todo_observability.dapr import DaprClient
from todo_observability.testing import LogCapture, metric_value
from todo_observability.testing.sidecar import Broker, RetryPolicy, Sidecar

REQUEST_ID = "req-reminder-42"
USER_ID = "alice"
TOKENS = Tokens(DEV_JWT_SECRET)


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        content = part.get_content()
        assert isinstance(content, str)
        return content


class Mailbox:
    """A real SMTP server (aiosmtpd) on a fixed loopback port, started and stopped at will.

    Until `start()` nothing listens on `port`: connections are refused, as from a server that
    is down. `refuse` holds recipients answered `550` (a permanent refusal).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Mail] = []
        self.refuse: set[str] = set()
        self._controller: Controller | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 OK"

    def start(self) -> None:
        controller = Controller(
            self, hostname="127.0.0.1", port=self.port, server_hostname="mail.example.test"
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


# --- the fake backend ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Marked:
    """One `POST /tasks/{id}/reminder-sent` the fake backend received."""

    task_id: int
    identity: Identity
    body: Any


@dataclass
class FakeBackend:
    """Publishes reminders as backend does, and records the reminders marked sent.

    `answers` are the statuses of the next `reminder-sent` calls (then 200).
    """

    app: FastAPI = field(default_factory=FastAPI)
    marked: list[Marked] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    dapr: DaprClient | None = None

    def __post_init__(self) -> None:
        @self.app.post("/tasks/{task_id}/reminder", status_code=202)
        async def publish_reminder(task_id: int, request: Request) -> dict[str, str]:
            identity = _identity(request)
            set_user_id(identity.user_id)
            assert self.dapr is not None
            payload = await request.json()
            event_type = request.query_params.get("type", REMINDER_SCHEDULED)
            await self.dapr.publish(
                PUBSUB, REMINDERS, payload, event_type=event_type, partition_key=str(task_id)
            )
            return {"published": event_type}

        @self.app.post("/tasks/{task_id}/reminder-sent")
        async def reminder_sent(task_id: int, request: Request) -> JSONResponse:
            identity = _identity(request)
            self.marked.append(Marked(task_id, identity, await request.json()))
            status = self.answers.pop(0) if self.answers else 200
            return JSONResponse({"task_id": task_id}, status_code=status)


def _identity(request: Request) -> Identity:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise AssertionError("backend was called without a bearer token")
    try:
        return TOKENS.verify(token)
    except InvalidToken as exc:
        raise AssertionError(f"backend was called with a bad token: {exc}") from exc


# --- the system -------------------------------------------------------------------------------


class _Forward:
    """An ASGI app forwarding to `target`, set once both ends of a transport exist."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


class SidecarApi(_Forward):
    """The notification app's way to its sidecar; `failing_jobs` job schedules fail first,
    and `failing_deletes` job deletes.

    A failing call is answered as daprd does when its Scheduler cannot be reached.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failing_jobs = 0
        self.failing_deletes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        jobs = scope["type"] == "http" and "/jobs/" in scope["path"]
        if jobs and scope["method"] == "DELETE" and self.failing_deletes:
            self.failing_deletes -= 1
        elif jobs and scope["method"] == "POST" and self.failing_jobs:
            self.failing_jobs -= 1
        else:
            jobs = False
        if jobs:
            response = JSONResponse(
                {
                    "errorCode": "DAPR_SCHEDULER_SCHEDULE_JOB",
                    "message": "failed to schedule job due to: rpc error: code = Unavailable "
                    "desc = connection refused",
                },
                status_code=500,
            )
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@dataclass
class System:
    """The running notification service and everything around it."""

    app: FastAPI
    observability: Observability
    settings: Settings
    sidecar: Sidecar
    backend: FakeBackend
    backend_sidecar: Sidecar
    mailbox: Mailbox
    registry: CollectorRegistry
    logs: LogCapture
    client: httpx.AsyncClient
    backend_client: httpx.AsyncClient
    sidecar_api: SidecarApi
    stop: Callable[[], Awaitable[None]]
    """Stop the app (its lifespan ends), its sidecars and clients, as a process exit would."""

    async def publish(
        self,
        payload: dict[str, Any],
        *,
        request_id: str = REQUEST_ID,
        user_id: str = USER_ID,
    ) -> None:
        """Have the fake backend publish `payload` from a request by `user_id`."""
        await self._publish(payload, REMINDER_SCHEDULED, request_id, user_id)

    async def cancel(
        self,
        payload: dict[str, Any],
        *,
        request_id: str = REQUEST_ID,
        user_id: str = USER_ID,
    ) -> None:
        """Have the fake backend publish the `reminder.cancelled` `payload`."""
        await self._publish(payload, REMINDER_CANCELLED, request_id, user_id)

    async def _publish(
        self, payload: dict[str, Any], event_type: str, request_id: str, user_id: str
    ) -> None:
        response = await self.backend_client.post(
            f"/tasks/{payload.get('task_id', 0)}/reminder",
            params={"type": event_type},
            json=payload,
            headers={"x-request-id": request_id, **TOKENS.header(user_id)},
        )
        assert response.status_code == 202, response.text

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.registry, name, **labels)

    def triggers(self, name: str) -> list[int]:
        """The statuses the app answered to the triggers of job `name`, in order."""
        return [t.status_code or 0 for t in self.sidecar.job_triggers if t.name == name]

    async def wait_for_triggers(self, name: str, count: int, timeout: float = 10) -> list[int]:
        await self.sidecar.wait_for(lambda: len(self.triggers(name)) >= count, timeout=timeout)
        return self.triggers(name)

    def service_logs(self, message: str) -> list[dict[str, Any]]:
        return self.logs.find(service_name=NOTIFICATIONS, message=message)


StartSystem = Callable[..., Awaitable[System]]


@pytest.fixture
async def start_system(
    mailbox: Mailbox,
    metrics_registry: CollectorRegistry,
    captured_logs: LogCapture,
    make_observability: Any,
) -> AsyncIterator[StartSystem]:
    """Start the system (`await start_system(**settings)`); everything is stopped after the test.

    A test may start it again after `System.stop()`: a restart, with a new app on the same
    settings (the same SMTP server, metrics registry and log capture).
    """
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> System:
            # Each system stops on its own (`System.stop`, a restart) or with the test.
            own = await stack.enter_async_context(AsyncExitStack())
            broker = Broker(component_retry_interval=0.005)
            backend = FakeBackend()
            make_observability(
                backend.app, service_name=BACKEND, registry=CollectorRegistry(), access_log=False
            )
            backend_sidecar = Sidecar(
                BACKEND, broker=broker, app_transport=httpx.ASGITransport(app=backend.app)
            )
            backend.dapr = DaprClient(
                "http://127.0.0.1:3500", transport=httpx.ASGITransport(app=backend_sidecar.asgi)
            )
            own.push_async_callback(backend.dapr.aclose)

            settings = Settings(
                **{
                    "smtp_port": mailbox.port,
                    "smtp_backoff_seconds": 0.01,
                    "smtp_timeout": 5.0,
                    **overrides,
                }
            )
            to_sidecar, to_app = SidecarApi(), _Forward()
            app = create_app(
                settings,
                dapr_transport=httpx.ASGITransport(app=to_sidecar),
                registry=metrics_registry,
                traces_exporter="memory",
                sample_ratio=1.0,
                load_plugins=False,
                log_stream=captured_logs,
            )
            observability = app.state.observability
            own.callback(observability.shutdown)
            sidecar = Sidecar(
                NOTIFICATIONS,
                broker=broker,
                app_transport=httpx.ASGITransport(app=to_app),
                # As deployed: a resiliency policy retries a message before dead-lettering it.
                retry_policy=RetryPolicy.constant(0.01, max_retries=2),
            )
            to_sidecar.target, to_app.target = sidecar.asgi, app
            await own.enter_async_context(app.router.lifespan_context(app))
            await own.enter_async_context(backend_sidecar)
            await own.enter_async_context(sidecar)
            client = await own.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            )
            backend_client = await own.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=backend.app), base_url="http://backend"
                )
            )
            return System(
                app,
                observability,
                settings,
                sidecar,
                backend,
                backend_sidecar,
                mailbox,
                metrics_registry,
                captured_logs,
                client,
                backend_client,
                to_sidecar,
                own.aclose,
            )

        yield start


def reminder(task_id: int = 42, *, in_seconds: float = 1.0, **fields: Any) -> dict[str, Any]:
    """A `reminder.scheduled` payload, due `in_seconds` from now (negative: already past)."""
    remind_at = datetime.now(timezone.utc) + timedelta(seconds=in_seconds)
    return {
        "task_id": task_id,
        "user_id": USER_ID,
        "email": "alice@example.test",
        "title": "Daily standup",
        "due_at": (remind_at + timedelta(minutes=15)).isoformat(),
        "remind_at": remind_at.isoformat(),
        **fields,
    }


def cancel_of(
    scheduled: dict[str, Any], *, reason: str = "rescheduled", at: datetime | None = None
) -> dict[str, Any]:
    """The `reminder.cancelled` payload of the reminder `scheduled`, written `at` (default now)."""
    return {
        "task_id": scheduled["task_id"],
        "user_id": scheduled["user_id"],
        "remind_at": scheduled["remind_at"],
        "reason": reason,
        "at": (at or datetime.now(timezone.utc)).isoformat(),
    }


def job_name_of(payload: dict[str, Any]) -> str:
    remind_at = datetime.fromisoformat(payload["remind_at"].replace("Z", "+00:00"))
    return f"reminder-{payload['task_id']}-{int(remind_at.timestamp())}"
