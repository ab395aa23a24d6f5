"""Reminder e-mails over SMTP (aiosmtplib), with retries and exponential backoff.

A reminder is one plain-text message whose `Message-ID` is derived from its job name, so a
resend (after a replay, or a restart that forgot it was sent) is recognisable as the same
message by the recipient's mail system. A permanent refusal (a 5xx answer, or a server that
lacks what the settings ask for) is not retried; anything else is, up to `SMTP_ATTEMPTS`.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

import aiosmtplib
import anyio
from opentelemetry.trace import SpanKind, Status, StatusCode

from reference_app.common.metrics import REMINDER_SMTP_ATTEMPTS
from todo_observability import get_logger

if TYPE_CHECKING:
    from reference_app.common.events import ReminderScheduled
    from reference_app.notifications.settings import Settings
    from todo_observability import Observability

__all__ = ["SMTP_REJECTED", "SMTP_UNAVAILABLE", "DeliveryFailed", "Mailer", "compose"]

SMTP_UNAVAILABLE = "smtp_unavailable"
"""Reason: the server could not be reached, or refused for now, on every attempt."""
SMTP_REJECTED = "smtp_rejected"
"""Reason: the server refused the message for good (5xx); retrying cannot help."""

_log = get_logger(__name__)


class DeliveryFailed(Exception):
    """The e-mail was not accepted by the SMTP server.

    Attributes:
        reason: `smtp_unavailable` (the retry budget is spent) or `smtp_rejected` (a
            permanent refusal, not retried).
        detail: The last error.
        attempts: How many attempts were made.
    """

    def __init__(self, reason: str, detail: str, attempts: int):
        super().__init__(f"{reason} after {attempts} attempt(s): {detail}")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


def _format_due(moment: datetime | None) -> str:
    if moment is None:
        return "no due time"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%A %d %B %Y, %H:%M UTC")


def compose(reminder: ReminderScheduled, job_name: str, settings: Settings) -> EmailMessage:
    """The reminder e-mail: To the reminder's address, Subject `Reminder: <title>`, plain text.

    Args:
        reminder: What to remind of.
        job_name: The reminder's job name; its `Message-ID` is `<job_name@mail domain>`.
        settings: Where the sender address comes from.
    """
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = reminder.email
    message["Subject"] = f"Reminder: {reminder.title}"
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = f"<{job_name}@{settings.mail_domain}>"
    message.set_content(
        f"This is your reminder for: {reminder.title}\n"
        f"\n"
        f"Due: {_format_due(reminder.due_at)}\n"
        f"\n"
        f"-- \n"
        f"The todo app (task {reminder.task_id})\n"
    )
    return message


def _is_permanent(exc: Exception) -> bool:
    """Whether retrying `exc` is pointless: a 5xx refusal, or a missing server feature."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refusal.code >= 500 for refusal in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return False  # a 5xx greeting ("too busy") is the server being away, not a refusal
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code >= 500
    return isinstance(exc, aiosmtplib.SMTPNotSupported)


def _describe(exc: Exception) -> str:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.code} {r.message}" for r in exc.recipients) or "recipients refused"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class Mailer:
    """Sends reminder e-mails, counting and logging every attempt.

    Args:
        settings: The SMTP settings.
        observability: Where `reminder_smtp_attempts_total{attempt, outcome}` is recorded.
        sleep: Waits between attempts (tests may pass a recorder).
    """

    def __init__(
        self,
        settings: Settings,
        observability: Observability,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ):
        self.settings = settings
        self._tracer = observability.tracer
        self._metrics = observability.metrics
        self._metrics.register(REMINDER_SMTP_ATTEMPTS)
        self._sleep = sleep
        # EHLO needs a name; aiosmtplib would look up the FQDN (a DNS query) on every send.
        self._local_hostname = socket.gethostname()

    async def _attempt(self, message: EmailMessage, attempt: int) -> Exception | None:
        """One SMTP conversation; the error it ended with, or None when the server accepted."""
        settings = self.settings
        # A CLIENT span per conversation: the trace shows each attempt and the server's answer,
        # and `todo-obs verify-traces` sees the e-mail handed over, not only its aftermath.
        with self._tracer.start_as_current_span(
            "smtp send",
            kind=SpanKind.CLIENT,
            attributes={
                "network.protocol.name": "smtp",
                "server.address": settings.smtp_host,
                "server.port": settings.smtp_port,
                "smtp.attempt": attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await aiosmtplib.send(
                    message,
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username,
                    password=settings.smtp_password,
                    start_tls=settings.smtp_starttls,
                    timeout=settings.smtp_timeout,
                    local_hostname=self._local_hostname,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, _describe(exc)))
                return exc
        return None

    async def send(self, message: EmailMessage) -> int:
        """Hand `message` to the SMTP server, retrying with exponential backoff.

        Returns:
            The attempt that succeeded (1 for the first).

        Raises:
            DeliveryFailed: a permanent refusal (`smtp_rejected`), or every attempt failed
                (`smtp_unavailable`).
        """
        settings = self.settings
        attempts = settings.smtp_attempts
        server = f"{settings.smtp_host}:{settings.smtp_port}"
        for attempt in range(1, attempts + 1):
            error = await self._attempt(message, attempt)
            if error is None:
                self._metrics.child(REMINDER_SMTP_ATTEMPTS, str(attempt), "success").inc()
                _log.info(
                    "SMTP attempt succeeded", extra={"attempt": attempt, "smtp_server": server}
                )
                return attempt
            permanent = _is_permanent(error)
            detail = _describe(error)
            self._metrics.child(REMINDER_SMTP_ATTEMPTS, str(attempt), "error").inc()
            retry_in = (
                None
                if permanent or attempt == attempts
                else settings.smtp_backoff_seconds * 2 ** (attempt - 1)
            )
            _log.warning(
                "SMTP attempt failed",
                extra={
                    "attempt": attempt,
                    "max_attempts": attempts,
                    "error": detail,
                    "permanent": permanent,
                    "retry_in_seconds": retry_in,
                    "smtp_server": server,
                },
            )
            if retry_in is None:
                reason = SMTP_REJECTED if permanent else SMTP_UNAVAILABLE
                raise DeliveryFailed(reason, detail, attempt) from error
            await self._sleep(retry_in)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
